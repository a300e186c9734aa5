#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this).
# Installs what it needs, then runs every test of the workspace, and the
# Xen backend's tests with the `xen` feature. Tests that need /dev/kvm run
# when it exists and print a loud SKIPPED line when it does not; the Xen
# oracle tests run Xen's own verify-stream-v2 unpacked by setup.sh.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scripts/setup.sh
if [ ! -e /dev/kvm ]; then
    echo "*** /dev/kvm is missing: the KVM tests will print SKIPPED and test nothing ***"
fi
cargo test --workspace --locked
cargo test -p hvm-save --features xen --locked

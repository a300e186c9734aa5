#!/usr/bin/env bash
# The project's test command (README; .ci/run calls exactly this).
# Installs what it needs, then runs every test of the workspace, and the
# Xen backend's tests with the `xen` feature.
#
# Tests that need /dev/kvm or the Xen oracle (unpacked by setup.sh) skip when
# it is missing; each skip appends a line to $HVM_SKIP_LOG, and the count is
# printed at the end. With HVM_REQUIRE=kvm,xen-oracle,forensic-tools,chromium
# (set by .ci/run) a missing prerequisite fails instead: checked here first,
# and by each test. The forensic tools (readelf, gdb, pyelftools, volatility3,
# for the `extract` consumer tests) are installed here, not for the main job;
# Chromium (the plot screenshot test) by setup.sh only when HVM_REQUIRE names
# it.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
HVM_SETUP_FORENSIC=1 scripts/setup.sh

require=",${HVM_REQUIRE:-},"
for name in $(echo "${HVM_REQUIRE:-}" | tr ',' ' '); do
    case "$name" in
        kvm | xen-oracle | forensic-tools | chromium) ;;
        *) echo "test.sh: HVM_REQUIRE names unknown prerequisite '$name' (known: kvm, xen-oracle, forensic-tools, chromium)" >&2; exit 1 ;;
    esac
done
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    if [[ "$require" == *,kvm,* ]]; then
        echo "test.sh: HVM_REQUIRE names kvm but /dev/kvm is not usable here" >&2
        exit 1
    fi
    echo "*** /dev/kvm is missing: the KVM tests will be skipped and test nothing ***"
fi

if [[ "$require" == *,xen-oracle,* ]]; then
    oracle="${HVM_XEN_ORACLE:-$repo_root/target/xen-oracle}"
    if ! compgen -G "$oracle/usr/lib/xen-*/bin/verify-stream-v2" >/dev/null; then
        echo "test.sh: HVM_REQUIRE names xen-oracle but it is not unpacked under $oracle" >&2
        exit 1
    fi
fi

if [[ "$require" == *,chromium,* ]] && ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: HVM_REQUIRE names chromium but no chromium is on PATH" >&2
    exit 1
fi
if [[ "$require" == *,forensic-tools,* ]]; then
    if ! target/forensic-venv/bin/python3 -c 'import elftools, volatility3' 2>/dev/null \
        || ! command -v readelf >/dev/null || ! command -v gdb >/dev/null; then
        echo "test.sh: HVM_REQUIRE names forensic-tools but readelf, gdb or target/forensic-venv is missing" >&2
        exit 1
    fi
fi

skip_log="$(mktemp "${TMPDIR:-/tmp}/hvm-skips.XXXXXX")"
trap 'rm -f "$skip_log"' EXIT
export HVM_SKIP_LOG="$skip_log"

cargo test --workspace --locked
cargo test -p hvm-save --features xen --locked

skipped=$(grep -c '^SKIPPED' "$skip_log" || true)
if [ "$skipped" -gt 0 ]; then
    echo
    echo "*** $skipped test(s) SKIPPED for a missing prerequisite (they tested nothing): ***"
    sort "$skip_log" | sed 's/^/    /'
else
    echo "test.sh: 0 tests skipped"
fi

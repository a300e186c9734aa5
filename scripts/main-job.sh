#!/usr/bin/env bash
# The main job on a fresh machine: build, live-save the embedded KVM guest
# (a real VM whose memory KVM's dirty log tracks) into out/guest.img, then
# inspect and restore-check the image. Extra arguments go to hvm-save
# (e.g. --memory 2048 --working-set 256 --policy seed).
#
# Without /dev/kvm the saver's deterministic simulator stands in, and the
# script says so loudly.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
scripts/setup.sh
cargo build --release --locked -p hvm-save -p hvm-inspect -p hvm-restore-check
bin="$repo_root/target/release"
mkdir -p out
img=out/guest.img
if [ -e /dev/kvm ]; then
    source_flags=(--kvm)
else
    echo "*** /dev/kvm is missing: saving the simulated guest instead of a real one ***"
    source_flags=(--sim --workload uniform)
fi
"$bin/hvm-save" "${source_flags[@]}" --live --force -o "$img" --envelope xend "$@"
echo
"$bin/hvm-inspect" "$img"
echo
"$bin/hvm-restore-check" --expect "$img.manifest.json" "$img"

#!/usr/bin/env bash
# The main job on a fresh machine: build, live-save the embedded KVM guest
# (a real VM whose memory KVM's dirty log tracks) into out/guest.img, then
# inspect the image and prove it restores (replay, manifest, and a resume
# in a fresh KVM VM compared with an uninterrupted control run). Extra
# arguments go to hvm-save (e.g. --memory 2048 --working-set 256).
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
if [ -e /dev/kvm ]; then
    # Prove the image is the whole guest: replay it, match the manifest, then
    # resume it in a fresh VM and compare with an uninterrupted control run.
    "$bin/hvm-restore-check" --expect "$img.manifest.json" --resume "$img"
else
    "$bin/hvm-restore-check" --expect "$img.manifest.json" "$img"
fi

#!/usr/bin/env bash
# Regenerate the README's pictures under docs/img/ with `hvm-inspect plot`:
# a live save of the simulated guest (256 MiB, a 32 MiB hot set written at
# 200 000 pages/s over a 125 MB/s link it out-writes, so the default policy
# throttles it; the simulator runs on a virtual clock, so the save is the
# same every time), drawn from the image and from its `--stats` file. The
# 316 MiB image is deleted afterwards.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
cargo build --release --locked -p hvm-save -p hvm-inspect
bin="$repo_root/target/release"
out="$repo_root/docs/img"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Relative names: the pictures' titles show them.
cd "$work"
"$bin/hvm-save" --sim --live --memory 256 --workload hot-set --hot-pages 8192 \
    --dirty-rate 200000 --max-rate 125 -o hot.img --stats hot.stats.jsonl
"$bin/hvm-inspect" plot hot.img -o "$out/plot-image.svg" --force
"$bin/hvm-inspect" plot --stats hot.stats.jsonl -o "$out/plot-stats.svg" --force
echo "wrote $out/plot-image.svg and $out/plot-stats.svg"

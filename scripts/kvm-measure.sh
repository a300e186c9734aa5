#!/usr/bin/env bash
# Measure live saves of the embedded KVM guest: for a 512 MiB and a 2 GiB
# guest at two dirty rates (light: paced, heavy: flat out) and both policies,
# print passes, total pages, pages in the final round, downtime (guest stopped
# -> last byte of the stream) and total save time, as a Markdown table.
# Images go to a temporary directory and are deleted; each is first checked
# with hvm-restore-check --expect and --resume (the verdict is the last column).
#
#   scripts/kvm-measure.sh [--working-set MiB (default 64)] [--vcpus N (1)]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
ws=64
vcpus=1
while [ $# -gt 0 ]; do
    case "$1" in
        --working-set) ws="$2"; shift 2 ;;
        --vcpus) vcpus="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ ! -e /dev/kvm ]; then
    echo "SKIPPED: /dev/kvm not available" >&2
    exit 0
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo build --release --locked -q -p hvm-save -p hvm-restore-check
bin="$CARGO_TARGET_DIR/release"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "| guest | working set | rate | dirtied pages/s (pass 1) | policy | passes | total pages | final-round pages | downtime ms | save s | expect + resume |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for mem in 512 2048; do
    for rate in light heavy; do
        for policy in seed downtime; do
            img="$tmp/g.img"
            rm -f "$img" "$img.manifest.json" "$tmp/stats"
            "$bin/hvm-save" --kvm -q --memory "$mem" --vcpus "$vcpus" --working-set "$ws" \
                --rate "$rate" --policy "$policy" --warmup-ms 1000 \
                --stats "$tmp/stats" -o "$img"
            verdict=ok
            "$bin/hvm-restore-check" -q --expect "$img.manifest.json" --resume --steps 20000 "$img" \
                || verdict="FAILED ($?)"
            # Total: the passes' own durations (first pass start to last byte).
            python3 - "$tmp/stats" "$mem" "$ws" "$rate" "$policy" "$verdict" <<'PY'
import json, sys
stats, mem, ws, rate, policy, verdict = sys.argv[1:]
lines = [json.loads(l) for l in open(stats) if l.strip()]
s = lines[-1]["summary"]
total = sum(p["duration_us"] for p in lines[:-1]) / 1e6
rate1 = lines[0].get("dirty_pages_per_s") or 0
print(f"| {mem} MiB | {ws} MiB | {rate} | {rate1:,.0f} | {policy} | {s['passes']} | {s['total_sent']} | "
      f"{s['downtime_pages']} | {s['downtime_us'] / 1e3:.2f} | {total:.2f} | {verdict} |")
PY
        done
    done
done

#!/usr/bin/env bash
# Measure live saves of the embedded KVM guest (512 MiB, heavy workload)
# over a 125 MB/s and a 1000 MB/s link (--max-rate), with a 64 MiB and a
# 256 MiB working set, under the seed policy and the downtime policy with
# throttling off and auto, all in the same run. Prints one Markdown table:
# passes, pages sent, final-round pages, downtime (guest stopped -> last
# byte of the stream), throttle peak and how long the guest ran throttled,
# and the guest's progress during pre-copy (workload steps per second,
# weighted by pass length) as a share of the unthrottled downtime-policy
# run of the same link and working set, measured just before it.
# Images go to a temporary directory and are deleted; each is first checked
# with hvm-restore-check --expect and --resume (the verdict is the last
# column). Takes about 3-5 minutes on the 2-core development machine.
#
#   scripts/kvm-measure.sh [--memory MiB (default 512)] [--vcpus N (1)]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
mem=512
vcpus=1
while [ $# -gt 0 ]; do
    case "$1" in
        --memory) mem="$2"; shift 2 ;;
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
start=$SECONDS

echo "| link MB/s | working set | policy | throttle | passes | pages sent | final-round pages | downtime ms | throttle peak | throttled s | guest progress vs unthrottled | expect + resume |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for rate in 125 1000; do
    for ws in 64 256; do
        # The unthrottled downtime run first: the others' progress is
        # compared with it.
        for run in downtime:off downtime:auto seed:off; do
            policy="${run%%:*}"
            throttle="${run##*:}"
            img="$tmp/g.img"
            rm -f "$img" "$img.manifest.json" "$tmp/stats"
            args=(--policy "$policy")
            [ "$policy" = downtime ] && args+=(--throttle "$throttle")
            "$bin/hvm-save" --kvm -q --memory "$mem" --vcpus "$vcpus" --working-set "$ws" \
                --rate heavy --max-rate "$rate" "${args[@]}" --warmup-ms 1000 \
                --stats "$tmp/stats" -o "$img"
            verdict=ok
            "$bin/hvm-restore-check" -q --expect "$img.manifest.json" --resume --steps 20000 "$img" \
                || verdict="FAILED ($?)"
            python3 - "$tmp/stats" "$tmp/ref" "$rate" "$ws" "$policy" "$throttle" "$verdict" <<'PY'
import json, sys
stats, ref, rate, ws, policy, throttle, verdict = sys.argv[1:]
lines = [json.loads(l) for l in open(stats) if l.strip()]
s = lines[-1]["summary"]
pre = [p for p in lines[:-1] if p["phase"] == "pre_copy" and p.get("guest_rate") is not None]
secs = sum(p["duration_us"] for p in pre) / 1e6
steps = sum(p["guest_rate"] * p["duration_us"] / 1e6 for p in pre)
progress = steps / secs if secs > 0 else 0.0
if policy == "downtime" and throttle == "off":
    open(ref, "w").write(str(progress))
    share = "100 % (reference)"
else:
    base = float(open(ref).read() or 0)
    share = f"{100 * progress / base:.0f} %" if base > 0 else "n/a"
peak = s.get("throttle_peak_percent", 0)
print(f"| {rate} | {ws} MiB | {policy} | {throttle if policy == 'downtime' else '-'} | {s['passes']} | "
      f"{s['total_sent']:,} | {s['downtime_pages']:,} | {s['downtime_us'] / 1e3:.1f} | "
      f"{peak} % | {s.get('throttled_us', 0) / 1e6:.2f} | {share} | {verdict} |")
PY
        done
    done
done
echo
echo "($((SECONDS - start)) s, $mem MiB guest, $vcpus vCPU, heavy workload, 1 s warm-up)"

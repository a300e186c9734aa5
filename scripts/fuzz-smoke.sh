#!/usr/bin/env bash
# Build every fuzz target with the stable toolchain and run each briefly,
# starting from the golden images. `HVM_FUZZ_SECONDS` sets the time per
# target (default 15). Crashers land in fuzz/artifacts/<target>/.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root/fuzz"
export RUSTC_BOOTSTRAP=1
secs="${HVM_FUZZ_SECONDS:-15}"
cargo fuzz build -O
for target in $(cargo fuzz list); do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    cp -n "$repo_root"/tests/golden/*.img "$corpus/" 2>/dev/null || true
    cp -n "$repo_root"/tests/fuzz-regressions/"$target"/* "$corpus/" 2>/dev/null || true
    echo "fuzz: $target for ${secs}s"
    log="$(mktemp)"
    if ! cargo fuzz run -O "$target" "$corpus" -- -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 >"$log" 2>&1; then
        grep -A 25 -m 1 -E "panicked|ERROR: libFuzzer" "$log" || tail -n 40 "$log"
        echo "fuzz: $target found a crash; the input is in fuzz/artifacts/$target/ (keep it under tests/fuzz-regressions/$target/)"
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
    rm -f "$log"
done

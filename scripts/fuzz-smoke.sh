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
    echo "fuzz: $target for ${secs}s"
    cargo fuzz run -O "$target" "$corpus" -- -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 2>&1 | tail -n 3
done

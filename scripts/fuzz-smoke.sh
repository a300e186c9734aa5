#!/usr/bin/env bash
# Build every fuzz target with the stable toolchain and run each briefly,
# seeded with the golden images and the inputs kept under
# tests/fuzz-regressions/. CI runs this; it stays under ~4 minutes of fuzzing
# on 2 cores.
#
# The targets are built the way that finds what issue 11 found by hand:
#   * `cargo fuzz build` without -O: optimised, but with debug assertions and
#     overflow checks, so an offset that wraps is a crash, not a silent loop;
#   * `-s none`: the code under test is safe Rust, so AddressSanitizer would
#     only slow it and inflate RSS;
#   * `-rss_limit_mb=512`: an allocation the input cannot justify is a crash;
#   * `-timeout=10`: an input that takes 10 s (a hang) is a crash.
#
# HVM_FUZZ_SECONDS sets the time per target (default 20; the `image` target,
# which drives every binary's entry points, gets three times as long).
# Crashers land in fuzz/artifacts/<target>/; keep each under
# tests/fuzz-regressions/<target>/ with a name saying what it broke.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root/fuzz"
export RUSTC_BOOTSTRAP=1
secs="${HVM_FUZZ_SECONDS:-20}"
flags=(-s none)
cargo fuzz build "${flags[@]}"
for target in $(cargo fuzz list); do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    cp -n "$repo_root"/tests/golden/*.img "$corpus/" 2>/dev/null || true
    cp -n "$repo_root"/tests/fuzz-regressions/"$target"/* "$corpus/" 2>/dev/null || true
    t="$secs"
    if [ "$target" = image ]; then
        # Every kept input is a seed for the target that reads like the binaries.
        for d in "$repo_root"/tests/fuzz-regressions/*/; do
            cp -n "$d"* "$corpus/" 2>/dev/null || true
        done
        t=$((secs * 3))
    fi
    echo "fuzz: $target for ${t}s"
    log="$(mktemp)"
    if ! cargo fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$t" -max_len=1048576 -rss_limit_mb=512 -timeout=10 >"$log" 2>&1; then
        grep -A 25 -m 1 -E "panicked|ERROR: libFuzzer|timeout|out-of-memory" "$log" || tail -n 40 "$log"
        echo "fuzz: $target found a crash; the input is in fuzz/artifacts/$target/ (keep it under tests/fuzz-regressions/$target/)"
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log" || tail -n 3 "$log"
    rm -f "$log"
done

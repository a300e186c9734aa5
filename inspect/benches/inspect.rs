//! `cargo bench -p hvm-inspect`: the inspector against the machine's own
//! limits, measured in the same run on the same cached image.
//!
//! * `summary` (the binary, whole process) vs `cat IMAGE > /dev/null`:
//!   target ≤ 2×.
//! * `digest` (library: walk, index, hash on pinned workers) vs SHA-256 of
//!   the same bytes (`pfn ‖ page` per page) on two pinned threads with
//!   nothing else: target ≥ 80 %.
//!
//! Environment: `HVM_BENCH_MIB` guest size (default 1024), `HVM_BENCH_DIR`
//! where the image goes (default the system temp dir; it is deleted at the
//! end), `HVM_BENCH_RUNS` repetitions (median; default 5).

#[path = "support/bigimage.rs"]
mod bigimage;
#[path = "support/settings.rs"]
mod settings;

use settings::Settings;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hvm_format::image::OpenOptions;
use hvm_format::index::IndexBuilder;
use hvm_format::stream::SliceReader;
use hvm_format::{WordSize, PAGE_SIZE};
use hvm_inspect::input::no_progress;
use hvm_inspect::{report, Input};
use sha2::{Digest as _, Sha256};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up: first touches are slower on these machines
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{cmd} failed");
}

/// Two threads pinned to cores 0 and 1, each hashing half of the pages
/// (`pfn ‖ page`, one SHA-256 per 512-page range), and nothing else.
fn sha_two_pinned(data: &[u8], pages: &[(u64, u64)]) -> [u8; 32] {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let half = pages.len().div_ceil(2);
    let mut out = [0u8; 32];
    std::thread::scope(|s| {
        let hs: Vec<_> = pages
            .chunks(half.max(1))
            .enumerate()
            .map(|(w, part)| {
                let core = cores.get(w).copied();
                s.spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let mut acc = [0u8; 32];
                    for range in part.chunks(512) {
                        let mut h = Sha256::new();
                        for &(pfn, off) in range {
                            let o = off as usize;
                            h.update(pfn.to_le_bytes());
                            h.update(&data[o..o + PAGE_SIZE]);
                        }
                        let d: [u8; 32] = h.finalize().into();
                        acc.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
                    }
                    acc
                })
            })
            .collect();
        for h in hs {
            let d = h.join().expect("hash thread");
            out.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
        }
    });
    out
}

fn main() {
    let Some(Settings { mib, runs, dir }) = Settings::for_bench("inspect", 5) else {
        return;
    };
    let path = dir.join(format!("hvm-inspect-bench-{}.img", std::process::id()));
    let p = path.to_str().expect("utf-8 temp path").to_string();
    println!("writing a {mib} MiB seed image to {p}");
    bigimage::big(&p, mib).expect("write bench image");
    let len = std::fs::metadata(&path).expect("stat").len();
    let gib = len as f64 / (1u64 << 30) as f64;

    let cat = time_runs(runs, || sh(&format!("cat '{p}' > /dev/null")));
    let bin = env!("CARGO_BIN_EXE_hvm-inspect");
    let summary = time_runs(runs, || {
        let ok = Command::new(bin)
            .args(["-q", "summary", &p])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "hvm-inspect summary failed");
    });

    // The bytes the digest hashes, located once (not timed).
    let file = std::fs::File::open(&path).expect("open");
    // SAFETY: read-only map of a file this process wrote and nobody else
    // touches.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    let mut ib = IndexBuilder::new();
    let mut r = SliceReader::new(&map, WordSize::W64, 0);
    while let Some(item) = r.next().expect("bench image parses") {
        ib.item(&item);
    }
    let idx = ib.finish();
    let pages: Vec<(u64, u64)> = idx.finals.iter().map(|c| (c.pfn, c.offset)).collect();
    let hashed = pages.len() as f64 * (PAGE_SIZE + 8) as f64;

    let limit = time_runs(runs, || {
        std::hint::black_box(sha_two_pinned(&map, &pages));
    });
    let digest = time_runs(runs, || {
        let input = Input::open(&p).expect("open");
        let d = report::digest(input, OpenOptions::default(), 2, &no_progress).expect("digest");
        std::hint::black_box(d);
    });
    drop(map);
    let _ = std::fs::remove_file(&path);

    let gbs = |d: Duration, bytes: f64| bytes / d.as_secs_f64() / 1e9;
    println!(
        "image: {len} bytes ({gib:.2} GiB), {} pages; median of {runs}",
        pages.len()
    );
    println!(
        "cat IMAGE > /dev/null      {:>8.3} s  {:>6.2} GB/s",
        cat.as_secs_f64(),
        gbs(cat, len as f64)
    );
    println!(
        "hvm-inspect summary        {:>8.3} s  {:>6.2} GB/s",
        summary.as_secs_f64(),
        gbs(summary, len as f64)
    );
    println!(
        "sha256 2 pinned threads    {:>8.3} s  {:>6.2} GB/s",
        limit.as_secs_f64(),
        gbs(limit, hashed)
    );
    println!(
        "hvm-inspect digest (lib)   {:>8.3} s  {:>6.2} GB/s",
        digest.as_secs_f64(),
        gbs(digest, hashed)
    );
    let r_sum = summary.as_secs_f64() / cat.as_secs_f64();
    let r_dig = limit.as_secs_f64() / digest.as_secs_f64();
    println!(
        "summary / cat          = {r_sum:.2}x   (target <= 2.00x) {}",
        if r_sum <= 2.0 { "ok" } else { "MISSED" }
    );
    println!(
        "digest / 2-core SHA    = {:.0} %   (target >= 80 %) {}",
        r_dig * 100.0,
        if r_dig >= 0.8 { "ok" } else { "MISSED" }
    );
}

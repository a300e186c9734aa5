//! `cargo bench -p hvm-inspect --bench extract`: `extract` of a ≥ 1 GiB
//! image against copying the same file, measured in the same run on the
//! same cached image.
//!
//! * `std::fs::copy(IMAGE, OUT)` (copy_file_range: the kernel copies, no
//!   user-space pass) is the baseline;
//! * `extract --raw`, `--elf` and `--lime` through the library entry point
//!   the binary calls (walk, index, copy of each final page from the map
//!   into a 1 MiB buffer, writes): target ≥ 60 % of the copy's speed.
//!
//! Neither side fsyncs (the CLI's commit adds one fsync to both alike).
//! Environment: `HVM_BENCH_MIB` guest size (default 1024), `HVM_BENCH_DIR`
//! where the image and outputs go (default the system temp dir; deleted at
//! the end), `HVM_BENCH_RUNS` repetitions (median; default 3).

#[path = "support/bigimage.rs"]
mod bigimage;
#[path = "support/settings.rs"]
mod settings;

use settings::Settings;

use std::time::{Duration, Instant};

use hvm_format::image::OpenOptions;
use hvm_inspect::extract::{extract, Format};
use hvm_inspect::input::no_progress;
use hvm_inspect::Input;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median of `runs` timings of `f`, after one warm-up; `before` runs
/// untimed ahead of each (removing the previous output).
fn time_runs(runs: usize, mut before: impl FnMut(), mut f: impl FnMut()) -> Duration {
    before();
    f();
    median(
        (0..runs)
            .map(|_| {
                before();
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let Some(Settings { mib, runs, dir }) = Settings::for_bench("extract", 3) else {
        return;
    };
    let path = dir.join(format!("hvm-extract-bench-{}.img", std::process::id()));
    let out = dir.join(format!("hvm-extract-bench-{}.out", std::process::id()));
    let p = path.to_str().expect("utf-8 temp path").to_string();
    println!("writing a {mib} MiB seed image to {p}");
    bigimage::big(&p, mib).expect("write bench image");
    let len = std::fs::metadata(&path).expect("stat").len();
    let gib = len as f64 / (1u64 << 30) as f64;
    let clear = || {
        let _ = std::fs::remove_file(&out);
    };

    let copy = time_runs(runs, clear, || {
        std::fs::copy(&path, &out).expect("copy");
    });
    let mut results = Vec::new();
    for (name, format) in [
        ("extract --raw ", Format::Raw),
        ("extract --elf ", Format::Elf),
        ("extract --lime", Format::Lime),
    ] {
        let t = time_runs(runs, clear, || {
            let mut f = std::fs::File::create(&out).expect("create output");
            let input = Input::open(&p).expect("open");
            let r = extract(
                input,
                OpenOptions::default(),
                format,
                None,
                "out",
                &mut f,
                &no_progress,
            )
            .expect("extract");
            std::hint::black_box(r);
        });
        results.push((name, t));
    }
    clear();
    let _ = std::fs::remove_file(&path);

    let gbs = |d: Duration| len as f64 / d.as_secs_f64() / 1e9;
    println!("image: {len} bytes ({gib:.2} GiB); median of {runs}");
    println!(
        "std::fs::copy             {:>8.3} s  {:>6.2} GB/s",
        copy.as_secs_f64(),
        gbs(copy)
    );
    for (name, t) in &results {
        println!(
            "{name} (lib)      {:>8.3} s  {:>6.2} GB/s",
            t.as_secs_f64(),
            gbs(*t)
        );
    }
    for (name, t) in &results {
        let r = copy.as_secs_f64() / t.as_secs_f64();
        println!(
            "{name} / copy = {:>4.0} % of the copy's speed (target >= 60 %) {}",
            r * 100.0,
            if r >= 0.6 { "ok" } else { "MISSED" }
        );
    }
}

//! `cargo bench -p hvm-save`: the saver against its baselines, measured in
//! the same run, and the live-save table per workload and policy.
//!
//! 1. Non-live save of a 1 GiB sim guest into a new page-cache file, versus
//!    writing the same bytes in 4 MiB writes, versus the seed's pattern (a
//!    write for the count, one for the pfn array, one per page). Medians of
//!    5 runs, interleaved.
//! 2. Live saves of the 1 GiB sim guest (1 GB/s modelled link) under each
//!    workload with `--policy seed` and the default downtime policy: passes,
//!    pages sent, final-round pages and ms on the virtual clock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvm_format::stream::{Item, SliceReader};
use hvm_format::WordSize;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::{save, DowntimePolicy, Policy, SaveOptions, SeedPolicy};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fresh(dir: &Path, name: &str) -> (PathBuf, File) {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    // Start each measurement with no writeback of earlier runs in flight.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let f = File::create(&p).expect("create bench file");
    (p, f)
}

fn save_to_file(sim: &mut SimDomain, dir: &Path) -> (Duration, u64) {
    let (p, mut f) = fresh(dir, "hvm-save.img");
    let t = Instant::now();
    let o = save(
        sim,
        &mut SeedPolicy::default(),
        &SaveOptions::default(),
        &mut f,
        &mut |_| {},
    )
    .expect("save");
    drop(f);
    let d = t.elapsed();
    std::fs::remove_file(p).ok();
    (d, o.summary.stream_bytes)
}

fn chunked(image: &[u8], dir: &Path) -> Duration {
    let (p, mut f) = fresh(dir, "chunked.img");
    let t = Instant::now();
    for c in image.chunks(4 << 20) {
        f.write_all(c).expect("write");
    }
    drop(f);
    let d = t.elapsed();
    std::fs::remove_file(p).ok();
    d
}

/// The seed's syscalls: `write_exact` per field, `ratewrite` per page.
fn seed_pattern(image: &[u8], dir: &Path) -> Duration {
    let (p, mut f) = fresh(dir, "seed.img");
    let t = Instant::now();
    let mut r = SliceReader::new(image, WordSize::W64, 0);
    let mut pos = 0usize;
    while let Some(item) = r.next().expect("own image parses") {
        match item {
            Item::Batch(b) => {
                f.write_all(&image[pos..pos + 4]).expect("write");
                f.write_all(b.pfn_bytes()).expect("write");
                for page in b.page_bytes().chunks(4096) {
                    f.write_all(page).expect("write");
                }
            }
            _ => {
                let end = r.position() as usize;
                f.write_all(&image[pos..end]).expect("write");
            }
        }
        pos = r.position() as usize;
    }
    drop(f);
    let d = t.elapsed();
    std::fs::remove_file(p).ok();
    d
}

fn throughput() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let cfg = SimConfig {
        memory_mib: 1024,
        ..SimConfig::default()
    };
    // One image to replay through the baselines: exactly the saver's bytes.
    let mut image = Vec::new();
    save(
        &mut SimDomain::new(cfg.clone()).expect("sim"),
        &mut SeedPolicy::default(),
        &SaveOptions::default(),
        &mut image,
        &mut |_| {},
    )
    .expect("save");
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    // Warm-up: fault in the file-system paths and the allocator.
    chunked(&image, &dir);
    for run in 0..RUNS {
        // Rotate the order so no variant always follows the same one.
        for k in 0..3 {
            match (run + k) % 3 {
                0 => {
                    let mut sim = SimDomain::new(cfg.clone()).expect("sim");
                    let (d, n) = save_to_file(&mut sim, &dir);
                    bytes = n;
                    a.push(d);
                }
                1 => b.push(chunked(&image, &dir)),
                _ => c.push(seed_pattern(&image, &dir)),
            }
        }
    }
    assert_eq!(bytes as usize, image.len());
    let (a, b, c) = (median(a), median(b), median(c));
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!(
        "non-live save, 1 GiB sim guest -> new page-cache file ({bytes} bytes, median of {RUNS})"
    );
    println!(
        "  hvm-save (writev per batch)  {:>8.1} ms  {:>5.2} GB/s",
        a.as_secs_f64() * 1e3,
        gbs(a)
    );
    println!(
        "  same bytes, 4 MiB writes     {:>8.1} ms  {:>5.2} GB/s",
        b.as_secs_f64() * 1e3,
        gbs(b)
    );
    println!(
        "  seed pattern, write per page {:>8.1} ms  {:>5.2} GB/s",
        c.as_secs_f64() * 1e3,
        gbs(c)
    );
    println!(
        "  ratio vs 4 MiB writes: {:.2} (target >= 0.80); speed-up vs seed pattern: {:.2}x (target >= 4)",
        b.as_secs_f64() / a.as_secs_f64(),
        c.as_secs_f64() / a.as_secs_f64()
    );
}

fn live_table() {
    let workloads = vec![
        Workload::Idle,
        Workload::Uniform { rate: 20_000.0 },
        Workload::Uniform { rate: 150_000.0 },
        Workload::HotSet {
            pages: 8192,
            rate: 200_000.0,
        },
        Workload::HotSet {
            pages: 65_536,
            rate: 400_000.0,
        },
        Workload::Sweep { rate: 50_000.0 },
        Workload::Bursts {
            rate: 150_000.0,
            period: Duration::from_millis(300),
            duty: 0.3,
        },
    ];
    let describe = |w: &Workload| match w {
        Workload::Idle => "idle".to_string(),
        Workload::Uniform { rate } => format!("uniform {}k/s", rate / 1e3),
        Workload::HotSet { pages, rate } => format!("hot {}MiB {}k/s", pages / 256, rate / 1e3),
        Workload::Sweep { rate } => format!("sweep {}k/s", rate / 1e3),
        Workload::Bursts { rate, .. } => format!("bursts {}k/s 30%", rate / 1e3),
        Workload::Script(_) => "script".to_string(),
    };
    println!();
    println!("live saves, 1 GiB sim guest, 1 GB/s modelled link, dm 200 pages/s (virtual clock)");
    println!(
        "| {:<18} | {:<8} | {:>6} | {:>10} | {:>6} | {:>14} | {:>11} | {:<28} |",
        "workload",
        "policy",
        "passes",
        "pages sent",
        "factor",
        "downtime pages",
        "downtime ms",
        "stop"
    );
    println!(
        "|{:-<20}|{:-<10}|{:->8}|{:->12}|{:->8}|{:->16}|{:->13}|{:-<30}|",
        "", "", "", "", "", "", "", ""
    );
    for w in workloads {
        for which in ["seed", "downtime"] {
            let mut policy: Box<dyn Policy> = if which == "seed" {
                Box::new(SeedPolicy::default())
            } else {
                Box::new(DowntimePolicy::default())
            };
            let mut sim = SimDomain::new(SimConfig {
                memory_mib: 1024,
                workload: w.clone(),
                dm_rate: 200.0,
                ..SimConfig::default()
            })
            .expect("sim");
            let opts = SaveOptions {
                live: true,
                ..SaveOptions::default()
            };
            let o = save(
                &mut sim,
                policy.as_mut(),
                &opts,
                &mut std::io::sink(),
                &mut |_| {},
            )
            .expect("live save");
            let s = &o.summary;
            let stop = serde_json::to_string(&s.stop).unwrap_or_default();
            println!(
                "| {:<18} | {:<8} | {:>6} | {:>10} | {:>6.2} | {:>14} | {:>11.2} | {:<28} |",
                describe(&w),
                which,
                s.passes,
                s.total_sent,
                s.factor,
                s.downtime_pages,
                s.downtime_us as f64 / 1e3,
                stop.chars().take(28).collect::<String>()
            );
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: keep
    // that quick by doing nothing unless benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    throughput();
    live_table();
}

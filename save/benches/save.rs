//! `cargo bench -p hvm-save`: the saver against its baselines, measured in
//! the same run, and the live-save table per workload and policy.
//!
//! 1. Non-live save of a 1 GiB sim guest into a new page-cache file, versus
//!    writing the same bytes in 4 MiB writes, versus the seed's pattern (a
//!    write for the count, one for the pfn array, one per page). Medians of
//!    7 runs, interleaved, wall and thread-CPU time. Fair to all three: each
//!    writes a file unlinked before and after (no truncation, no dirty
//!    pages of an earlier run, no fsync in the timed region), and each reads
//!    its source from memory touched right before timing (the saver's sim is
//!    built then; the baselines' image gets a full read pass). An idle 1 GiB
//!    source read cold made the 4 MiB baseline 2-4x slower than dd on the
//!    shared 2-core machine. A fourth run, the floor, writes the same byte
//!    count from a cache-resident 64 KiB buffer: no writer can beat it, so
//!    `seed / floor` is the best ratio over the seed's pattern this machine
//!    allows.
//! 2. Live saves of the 1 GiB sim guest (1 GB/s modelled link) under each
//!    workload with `--policy seed` and the default downtime policy: passes,
//!    pages sent, final-round pages and ms on the virtual clock.
//! 3. Throttling (issue 15): a 512 MiB sim guest writing 60 000 pages/s (the
//!    KVM guest's heavy rate) into a hot 64 MiB or 256 MiB, over a 125 MB/s
//!    and a 1000 MB/s link, under the seed policy and the downtime policy
//!    with throttling off and auto: passes, pages, final round, downtime,
//!    throttle peak and duration, and the guest's progress during pre-copy
//!    as a share of the unthrottled downtime run's (the baseline, same
//!    run). `cargo bench -p hvm-save -- throttle` runs only this table,
//!    `-- live` only the second.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvm_format::stream::{Item, SliceReader};
use hvm_format::WordSize;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::policy::{StopReason, ThrottleMode};
use hvm_save::saver::Phase;
use hvm_save::{save, DowntimePolicy, Policy, SaveOptions, SeedPolicy};

const RUNS: usize = 7;

/// This thread's CPU time: immune to the other jobs sharing the 2 cores.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

fn timed(f: impl FnOnce()) -> Timing {
    let (t, c) = (Instant::now(), thread_cpu());
    f();
    Timing {
        wall: t.elapsed(),
        cpu: thread_cpu().saturating_sub(c),
    }
}

/// Read every byte of `buf` so the timed copy does not pay for cold memory.
fn warm(buf: &[u8]) {
    let mut acc = 0u64;
    for c in buf.chunks_exact(8) {
        acc = acc.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    std::hint::black_box(acc);
}

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

fn save_to_file(sim: &mut SimDomain, dir: &Path) -> (Timing, u64) {
    let (p, mut f) = fresh(dir, "hvm-save.img");
    let mut bytes = 0;
    let t = timed(|| {
        let o = save(
            sim,
            &mut SeedPolicy::default(),
            &SaveOptions::default(),
            &mut f,
            &mut |_| {},
        )
        .expect("save");
        drop(f);
        bytes = o.summary.stream_bytes;
    });
    std::fs::remove_file(p).ok();
    (t, bytes)
}

fn chunked(image: &[u8], dir: &Path) -> Timing {
    let (p, mut f) = fresh(dir, "chunked.img");
    warm(image);
    let t = timed(|| {
        for c in image.chunks(4 << 20) {
            f.write_all(c).expect("write");
        }
        drop(f);
    });
    std::fs::remove_file(p).ok();
    t
}

/// The seed's syscalls: `write_exact` per field, `ratewrite` per page.
fn seed_pattern(image: &[u8], dir: &Path) -> Timing {
    let (p, mut f) = fresh(dir, "seed.img");
    warm(image);
    let t = timed(|| {
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
    });
    std::fs::remove_file(p).ok();
    t
}

/// The fastest this machine fills a new page-cache file: the same byte
/// count written from one cache-resident 64 KiB buffer in 64 KiB writes (the
/// best block size for `dd` here), with no guest memory to read at all. No
/// writer of the image can beat it, so `seed pattern / floor` bounds every
/// "times the seed's pattern" ratio on this machine.
fn floor(len: usize, dir: &Path) -> Timing {
    let (p, mut f) = fresh(dir, "floor.img");
    let buf = vec![0x5au8; 64 << 10];
    warm(&buf);
    let t = timed(|| {
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            f.write_all(&buf[..n]).expect("write");
            left -= n;
        }
        drop(f);
    });
    std::fs::remove_file(p).ok();
    t
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
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    // Warm-up: fault in the file-system paths and the allocator.
    chunked(&image, &dir);
    for run in 0..RUNS {
        // Rotate the order so no variant always follows the same one.
        for k in 0..4 {
            match (run + k) % 4 {
                0 => {
                    let mut sim = SimDomain::new(cfg.clone()).expect("sim");
                    let (d, n) = save_to_file(&mut sim, &dir);
                    bytes = n;
                    a.push(d);
                }
                1 => b.push(chunked(&image, &dir)),
                2 => d.push(floor(image.len(), &dir)),
                _ => c.push(seed_pattern(&image, &dir)),
            }
        }
    }
    assert_eq!(bytes as usize, image.len());
    let med = |v: &[Timing]| {
        (
            median(v.iter().map(|t| t.wall).collect()),
            median(v.iter().map(|t| t.cpu).collect()),
        )
    };
    let (a, b, c, d) = (med(&a), med(&b), med(&c), med(&d));
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!(
        "non-live save, 1 GiB sim guest -> new page-cache file ({bytes} bytes, median of {RUNS})"
    );
    println!(
        "  {:<30} {:>9} {:>7}   {:>9} {:>7}",
        "", "wall ms", "GB/s", "CPU ms", "GB/s"
    );
    for (name, (w, cpu)) in [
        ("hvm-save (writev per batch)", a),
        ("same bytes, 4 MiB writes", b),
        ("seed pattern, write per page", c),
        ("floor: 64 KiB cached buffer", d),
    ] {
        println!(
            "  {name:<30} {:>9.1} {:>7.2}   {:>9.1} {:>7.2}",
            w.as_secs_f64() * 1e3,
            gbs(w),
            cpu.as_secs_f64() * 1e3,
            gbs(cpu)
        );
    }
    for (what, x, y, z, f) in [("wall", a.0, b.0, c.0, d.0), ("CPU", a.1, b.1, c.1, d.1)] {
        let vs4 = y.as_secs_f64() / x.as_secs_f64();
        let vsseed = z.as_secs_f64() / x.as_secs_f64();
        let ceiling = z.as_secs_f64() / f.as_secs_f64();
        println!(
            "  {what:>4}: vs 4 MiB writes {vs4:.2} (target >= 0.80: {}), vs seed pattern {vsseed:.2}x (target >= 4: {}); \
             floor / hvm-save {:.2}, best reachable vs seed pattern {ceiling:.2}x",
            verdict(vs4 >= 0.8),
            verdict(vsseed >= 4.0),
            f.as_secs_f64() / x.as_secs_f64(),
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
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
    let budget = Duration::from_millis(50);
    println!();
    println!("live saves, 1 GiB sim guest, 1 GB/s modelled link, dm 200 pages/s (virtual clock)");
    println!(
        "targets for the default: pages <= seed, downtime <= seed, >= 30 % fewer pages where the seed \
         ends on a cap, downtime <= {} ms where the seed's is (n/a: target does not apply)",
        budget.as_millis()
    );
    println!(
        "| {:<18} | {:<8} | {:>6} | {:>10} | {:>6} | {:>14} | {:>11} | {:<16} | {:<8} | {:<8} | {:<8} | {:<8} |",
        "workload",
        "policy",
        "passes",
        "pages sent",
        "factor",
        "downtime pages",
        "downtime ms",
        "stop",
        "pages",
        "downtime",
        "-30 %",
        "budget"
    );
    println!(
        "|{:-<20}|{:-<10}|{:->8}|{:->12}|{:->8}|{:->16}|{:->13}|{:-<18}|{:-<10}|{:-<10}|{:-<10}|{:-<10}|",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    let mut failures = 0;
    for w in workloads {
        let run = |policy: &mut dyn Policy| {
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
            save(&mut sim, policy, &opts, &mut std::io::sink(), &mut |_| {})
                .expect("live save")
                .summary
        };
        let seed = run(&mut SeedPolicy::default());
        let ours = run(&mut DowntimePolicy::new(budget));
        for (which, s) in [("seed", &seed), ("downtime", &ours)] {
            let stop = serde_json::to_value(s.stop)
                .ok()
                .and_then(|v| v.get("reason").and_then(|r| r.as_str().map(str::to_string)))
                .unwrap_or_default();
            let cols: [String; 4] = if which == "seed" {
                Default::default()
            } else {
                let capped = matches!(seed.stop, StopReason::MaxIters | StopReason::MaxFactor);
                let v = [
                    Some(s.total_sent <= seed.total_sent),
                    Some(s.downtime_us <= seed.downtime_us),
                    capped.then_some(s.total_sent as f64 <= 0.7 * seed.total_sent as f64),
                    (seed.downtime_us as u128 <= budget.as_micros())
                        .then_some(s.downtime_us as u128 <= budget.as_micros()),
                ];
                failures += v.iter().filter(|x| **x == Some(false)).count();
                v.map(|x| x.map_or("n/a", verdict).to_string())
            };
            println!(
                "| {:<18} | {:<8} | {:>6} | {:>10} | {:>6.2} | {:>14} | {:>11.2} | {:<16} | {:<8} | {:<8} | {:<8} | {:<8} |",
                describe(&w),
                which,
                s.passes,
                s.total_sent,
                s.factor,
                s.downtime_pages,
                s.downtime_us as f64 / 1e3,
                stop,
                cols[0],
                cols[1],
                cols[2],
                cols[3]
            );
        }
    }
    println!("target failures: {failures}");
}

/// Guest steps per second over the pre-copy passes, weighted by length.
fn precopy_progress(o: &hvm_save::SaveOutcome) -> f64 {
    let (mut steps, mut secs) = (0.0, 0.0);
    for p in o.passes.iter().filter(|p| p.phase == Phase::PreCopy) {
        let t = p.duration_us as f64 / 1e6;
        steps += p.guest_rate.unwrap_or(0.0) * t;
        secs += t;
    }
    if secs > 0.0 {
        steps / secs
    } else {
        0.0
    }
}

fn throttle_table() {
    let budget = Duration::from_millis(50);
    println!();
    println!(
        "throttling: 512 MiB sim guest, 60k page writes/s into a hot set (virtual clock); \
         progress = guest steps/s in pre-copy vs the unthrottled downtime run"
    );
    println!(
        "targets: throttled downtime <= {} ms, pages <= seed, no throttle where the link keeps up",
        budget.as_millis()
    );
    println!(
        "| link MB/s | working set | policy | throttle | passes | pages sent | final-round pages | downtime ms | throttle peak | throttled s | guest progress |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = 0;
    for link in [125u64, 1000] {
        for ws_mib in [64u64, 256] {
            let run = |policy: &mut dyn Policy| {
                let mut sim = SimDomain::new(SimConfig {
                    memory_mib: 512,
                    workload: Workload::HotSet {
                        pages: ws_mib * 256,
                        rate: 60_000.0,
                    },
                    link_bytes_per_sec: link * 1_000_000,
                    ..SimConfig::default()
                })
                .expect("sim");
                let opts = SaveOptions {
                    live: true,
                    max_rate: Some(link * 1_000_000),
                    ..SaveOptions::default()
                };
                save(&mut sim, policy, &opts, &mut std::io::sink(), &mut |_| {}).expect("live save")
            };
            let off = run(&mut DowntimePolicy::new(budget));
            let auto = run(&mut DowntimePolicy::new(budget).with_throttle(ThrottleMode::Auto));
            let seed = run(&mut SeedPolicy::default());
            let base = precopy_progress(&off);
            for (name, mode, o) in [
                ("downtime", "off", &off),
                ("downtime", "auto", &auto),
                ("seed", "-", &seed),
            ] {
                let s = &o.summary;
                println!(
                    "| {link} | {ws_mib} MiB | {name} | {mode} | {} | {} | {} | {:.1} | {} % | {:.2} | {:.0} % |",
                    s.passes,
                    s.total_sent,
                    s.downtime_pages,
                    s.downtime_us as f64 / 1e3,
                    s.throttle_peak_percent,
                    s.throttled_us as f64 / 1e6,
                    100.0 * precopy_progress(o) / base
                );
            }
            let a = &auto.summary;
            let ok = if off.summary.downtime_us as u128 > budget.as_micros() {
                a.downtime_us as u128 <= budget.as_micros()
                    && a.total_sent <= seed.summary.total_sent
            } else {
                a.throttle_peak_percent == 0
            };
            if !ok {
                failures += 1;
            }
            println!("  -> {link} MB/s, {ws_mib} MiB: {}", verdict(ok));
        }
    }
    println!("throttle target failures: {failures}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: keep
    // that quick by doing nothing unless benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::args().any(|a| a == "throttle") {
        throttle_table();
        return;
    }
    if std::env::args().any(|a| a == "live") {
        live_table();
        return;
    }
    throughput();
    live_table();
    throttle_table();
}

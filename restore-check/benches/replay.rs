//! Replay of a ≥ 1 GiB image from the page cache against a memcpy of the
//! same bytes into already-touched memory, measured in the same run.
//!
//! `cargo bench -p hvm-restore-check` (set `HVM_BENCH_MIB` for another
//! guest size). Prints medians and the ratio; the target is ≤ 3×.

use std::io::{BufWriter, Write as _};
use std::time::{Duration, Instant};

use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::stream::{vcpu_context_size, Writer};
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};
use hvm_restore_check::{Checker, Options};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A seed-dialect image of a `mib` MiB guest, one non-live pass in pfn
/// order, every page distinct.
fn write_image(path: &std::path::Path, mib: u64) -> u64 {
    let f = std::fs::File::create(path).unwrap();
    let mut w = Writer::new(BufWriter::with_capacity(8 << 20, f), WordSize::W64);
    let top = mib * 256;
    w.max_pfn(top - 1).unwrap();
    let pfns: Vec<u64> = (0..top - 3).filter(|p| !(0xA0..0xC0).contains(p)).collect();
    let mut buf = vec![0u8; MAX_BATCH * PAGE_SIZE];
    for chunk in pfns.chunks(MAX_BATCH) {
        for (k, pfn) in chunk.iter().enumerate() {
            let p = &mut buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
            p.fill((*pfn % 251) as u8);
            p[..8].copy_from_slice(&pfn.to_le_bytes());
        }
        let es: Vec<PfnEntry> = chunk.iter().map(|p| PfnEntry::page(*p)).collect();
        let ps: Vec<&[u8]> = buf.chunks_exact(PAGE_SIZE).take(chunk.len()).collect();
        w.batch(&es, &ps).unwrap();
    }
    w.end().unwrap();
    w.vcpu_count(1).unwrap();
    w.vcpu(&vec![0; vcpu_context_size(WordSize::W64) as usize])
        .unwrap();
    w.hvm_blob(&seed_reset_blob(0x00A2_0F12, &[CpuSeed::power_on()]))
        .unwrap();
    let pos = w.position();
    w.finish().unwrap().flush().unwrap();
    pos
}

fn main() {
    let mib: u64 = std::env::var("HVM_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.img");
    let len = write_image(&path, mib);
    let gib = len as f64 / (1u64 << 30) as f64;
    println!("image: {mib} MiB guest, {len} bytes ({gib:.2} GiB), in the page cache");

    // Baseline: memcpy of the same bytes (the mapped file, faulted in once)
    // into memory that is already touched.
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the file is private to this benchmark and not modified while
    // mapped.
    let src = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let mut dst = vec![1u8; src.len()];
    dst.copy_from_slice(&src);
    let memcpy = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                dst.copy_from_slice(&src);
                std::hint::black_box(&dst);
                t.elapsed()
            })
            .collect(),
    );
    drop(dst);

    let opts = Options::default();
    // Cold: a fresh arena per replay (what one CLI run does).
    let cold = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let r = Checker::new().check_path(&path, &opts).unwrap();
                let e = t.elapsed();
                assert!(r.restorable, "{}", r.render_text());
                e
            })
            .collect(),
    );
    // Warm: the arena reused from the previous replay.
    let mut c = Checker::new();
    let mut r = c.check_path(&path, &opts).unwrap();
    c.recycle(&mut r);
    let warm = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut r = c.check_path(&path, &opts).unwrap();
                let e = t.elapsed();
                c.recycle(&mut r);
                e
            })
            .collect(),
    );

    let per_gib = |d: Duration| d.as_secs_f64() / gib;
    println!(
        "memcpy into touched memory: {:>7.3} s ({:.3} s/GiB)",
        memcpy.as_secs_f64(),
        per_gib(memcpy)
    );
    for (name, d) in [
        ("replay, fresh arena", cold),
        ("replay, reused arena", warm),
    ] {
        println!(
            "{name:<27} {:>7.3} s ({:.3} s/GiB)  ratio {:.2}x (target <= 3x)",
            d.as_secs_f64(),
            per_gib(d),
            d.as_secs_f64() / memcpy.as_secs_f64()
        );
    }
}

//! Parse throughput of a ≥ 1 GiB in-memory image, as a ratio against a
//! memcpy of the same bytes measured in the same run.
//!
//! `cargo bench -p hvm-format` (size: `HVM_BENCH_MIB`, default 1024).
//!
//! Both paths read every byte of every page (an XOR fold of its u64 words),
//! as a consumer of the pages would, so the ratio cannot be met by walking
//! headers alone:
//!
//! * slice path: `SliceReader` over the bytes, every item, every pfn entry
//!   and every page visited (pages are borrowed, not copied);
//! * Read path: `Reader` over `&[u8]` as it would read a pipe: pages are
//!   copied into its reused batch buffer, then folded.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hvm_format::stream::{Item, Reader, SliceReader, Writer};
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};

fn image(mib: u64) -> Vec<u8> {
    let pages = mib * 256;
    let mut out = Vec::with_capacity((pages as usize) * (PAGE_SIZE + 8) + 4096);
    let mut w = Writer::new(&mut out, WordSize::W64);
    w.max_pfn(pages + 0x1F).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    let mut pfn = 0u64;
    let mut left = pages;
    while left > 0 {
        let n = left.min(MAX_BATCH as u64) as usize;
        let mut entries = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n * PAGE_SIZE);
        for _ in 0..n {
            if (0xA0..0xC0).contains(&pfn) {
                pfn = 0xC0;
            }
            page[..8].copy_from_slice(&pfn.to_le_bytes());
            page[8] = pfn as u8;
            data.extend_from_slice(&page);
            entries.push(PfnEntry::page(pfn));
            pfn += 1;
        }
        let refs: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        w.batch(&entries, &refs).unwrap();
        left -= n as u64;
    }
    w.end().unwrap();
    w.vcpu_count(1).unwrap();
    w.vcpu(&[0u8; 5168]).unwrap();
    w.hvm_blob(&[0u8; 3071]).unwrap();
    w.finish().unwrap();
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut() -> u64>(runs: usize, mut f: F) -> (Duration, u64) {
    let mut ts = Vec::new();
    let mut sink = 0;
    for _ in 0..runs {
        let t = Instant::now();
        sink ^= f();
        ts.push(t.elapsed());
    }
    (median(ts), sink)
}

/// Every page byte, XOR-folded in u64 words, with the pfn.
fn visit(item: &Item<'_>) -> u64 {
    match item {
        Item::Batch(b) => {
            let mut acc = 0u64;
            for (e, page, _) in b.pages() {
                let mut fold = 0u64;
                for w in page.chunks_exact(8) {
                    fold ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
                }
                acc = acc.wrapping_add(e.pfn().0) ^ fold;
            }
            acc
        }
        other => other.offset(),
    }
}

fn main() {
    let mib: u64 = std::env::var("HVM_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let img = image(mib);
    let gib = img.len() as f64 / (1u64 << 30) as f64;
    println!(
        "image: {} bytes ({gib:.2} GiB), {} pages",
        img.len(),
        mib * 256
    );

    let mut dst = vec![1u8; img.len()];
    let runs = 7;
    let (t_copy, _) = time(runs, || {
        dst.copy_from_slice(&img);
        black_box(&dst);
        dst[dst.len() / 2] as u64
    });
    let (t_slice, a) = time(runs, || {
        let mut r = SliceReader::new(&img, WordSize::W64, 0);
        let mut acc = 0;
        while let Some(item) = r.next().unwrap() {
            acc ^= visit(&item);
        }
        acc
    });
    let (t_read, b) = time(runs, || {
        let mut r = Reader::new(&img[..], WordSize::W64, 0);
        let mut acc = 0;
        while let Some(item) = r.next().unwrap() {
            acc ^= visit(&item);
        }
        acc
    });
    assert_eq!(a, b, "both readers must see the same stream");
    // The fold must depend on the page bytes: the image's pages carry their
    // pfn, so an all-zero fold would mean no page was read.
    assert_ne!(a, 0);
    let gbs = |t: Duration| img.len() as f64 / t.as_secs_f64() / 1e9;
    println!(
        "memcpy baseline   {:>9.1} ms  {:>7.2} GB/s",
        t_copy.as_secs_f64() * 1e3,
        gbs(t_copy)
    );
    println!(
        "slice path        {:>9.1} ms  {:>7.2} GB/s  = {:>6.0} % of memcpy speed (target >= 50 %)",
        t_slice.as_secs_f64() * 1e3,
        gbs(t_slice),
        100.0 * t_copy.as_secs_f64() / t_slice.as_secs_f64()
    );
    println!(
        "Read path         {:>9.1} ms  {:>7.2} GB/s  = {:>6.0} % of memcpy speed",
        t_read.as_secs_f64() * 1e3,
        gbs(t_read),
        100.0 * t_copy.as_secs_f64() / t_read.as_secs_f64()
    );
}

//! The memory bound the README states: for an input of N bytes, every
//! subcommand's peak heap stays within 16 MiB + 2·N, measured by a counting
//! global allocator over hostile inputs, through the library entry points
//! the `hvm-inspect` binary calls. One test function, so that no other
//! test's allocations run at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use hvm_format::dialect::Dialect;
use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::image::OpenOptions;
use hvm_format::legacy::{Tail, Writer};
use hvm_format::rules::CheckOptions;
use hvm_format::stream::{vcpu_context_size, Layout as StreamLayout};
use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
use hvm_inspect::input::no_progress;
use hvm_inspect::report::{self, ShowWhat};
use hvm_inspect::Input;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak heap above what was live before `f` ran.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

const MIB: usize = 1 << 20;

/// Every subcommand's entry point on the file at `path`; the peak of each.
fn every_subcommand(path: &Path) -> Vec<(&'static str, usize)> {
    let p = path.to_str().unwrap();
    let open = || Input::open(p).unwrap();
    let opts = OpenOptions::default();
    let mut out = Vec::new();
    out.push((
        "summary",
        peak_of(|| drop(report::summary(open(), opts, &no_progress))),
    ));
    out.push((
        "plot",
        peak_of(|| {
            if let Ok(p) = hvm_inspect::plot::image::collect(open(), opts, &no_progress) {
                drop(hvm_inspect::plot::image::render(&p));
            }
        }),
    ));
    for (name, check) in [
        ("validate", CheckOptions::default()),
        (
            "validate --strict",
            CheckOptions {
                strict: true,
                ..Default::default()
            },
        ),
    ] {
        out.push((
            name,
            peak_of(|| drop(report::validate(open(), opts, check, &no_progress))),
        ));
    }
    for (name, what) in [
        ("show hvm", ShowWhat::Hvm),
        ("show vcpu", ShowWhat::Vcpu),
        ("show page", ShowWhat::Page(0x11)),
    ] {
        out.push((
            name,
            peak_of(|| drop(report::show(open(), what, opts, &no_progress))),
        ));
    }
    out.push((
        "show pages",
        peak_of(|| {
            let mut n = 0u64;
            let r = report::show_pages_streamed(open(), opts, &no_progress, &mut |_| n += 1);
            drop(r);
        }),
    ));
    out.push((
        "digest",
        peak_of(|| drop(report::digest(open(), opts, 1, &no_progress))),
    ));
    out.push((
        "diff",
        peak_of(|| drop(hvm_inspect::diff::diff(open(), open(), opts, &no_progress))),
    ));
    for (name, format) in [
        ("extract --raw", hvm_inspect::extract::Format::Raw),
        ("extract --elf", hvm_inspect::extract::Format::Elf),
        ("extract --lime", hvm_inspect::extract::Format::Lime),
    ] {
        let mut sink = tempfile::tempfile().unwrap();
        out.push((
            name,
            peak_of(|| {
                let r = hvm_inspect::extract::extract(
                    open(),
                    opts,
                    format,
                    None,
                    "out",
                    &mut sink,
                    &no_progress,
                );
                drop(r);
            }),
        ));
    }
    out.push((
        "convert",
        peak_of(|| {
            let r = hvm_inspect::convert::convert_any(
                p,
                Path::new("out"),
                std::fs::File::open(p).unwrap(),
                OpenOptions {
                    len: open().len(),
                    ..opts
                },
                hvm_inspect::convert::Target::Xl,
                || Ok(std::io::sink()),
            );
            drop(r);
        }),
    ));
    out
}

/// A seed image (64-bit) whose first batches hold only XTAB entries:
/// `xtab_batches` × 1024 of them, 8 bytes each, no page data; then
/// `page_batches` × 1024 pages.
fn seed_image(xtab_batches: u64, page_batches: u64) -> Vec<u8> {
    let word = WordSize::W64;
    let mut w = Writer::new(Vec::new(), word, StreamLayout::of(Dialect::Seed));
    w.leading_word(0x1FFFF).unwrap();
    for b in 0..xtab_batches {
        let entries: Vec<PfnEntry> = (0..1024).map(|i| PfnEntry::xtab(b * 1024 + i)).collect();
        w.batch(&entries, &[]).unwrap();
    }
    let data = vec![0xA5u8; PAGE_SIZE];
    for b in 0..page_batches {
        // Above pfn 0x11 and the VGA hole, below max_pfn.
        let entries: Vec<PfnEntry> = (0..1024)
            .map(|i| PfnEntry::page(0x100 + b * 1024 + i))
            .collect();
        let pages: Vec<&[u8]> = (0..1024).map(|_| &data[..]).collect();
        w.batch(&entries, &pages).unwrap();
    }
    let page = vec![0x5Au8; PAGE_SIZE];
    w.batch(&[PfnEntry::page(0x11)], &[&page]).unwrap();
    w.end().unwrap();
    let ctx: Vec<u8> = (0..vcpu_context_size(word)).map(|i| i as u8).collect();
    let blob = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
    w.tail(&Tail {
        magic_pfns: (0x1FFFF, 0x1FFFD, 0x1FFFE),
        vcpus: &[&ctx],
        hvm_blob: &blob,
        shared_info_frame: 0,
        device_model: b"",
    })
    .unwrap();
    w.finish().unwrap()
}

/// A bare libxc v2 image with `n` empty records of an unknown type before
/// END (each a finding of one rule).
fn v2_many_records(n: usize) -> Vec<u8> {
    use hvm_format::v2::libxc::{DomainHeader, ImageHeader, RecordBody};
    use hvm_format::v2::writer::Writer;
    let mut w = Writer::new(Vec::new(), ImageHeader::new(3), DomainHeader::hvm(4, 17)).unwrap();
    w.record(&RecordBody::StaticDataEnd).unwrap();
    let mut s = w.finish().unwrap();
    let end = s.split_off(s.len() - 8);
    for _ in 0..n {
        s.extend_from_slice(&0x7FFF_0000u32.to_le_bytes());
        s.extend_from_slice(&0u32.to_le_bytes());
    }
    s.extend_from_slice(&end);
    s
}

/// The peak counter is process-wide: tests that measure it run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The corruption matrix under the bound: every golden image cut at 48
/// points, and with 8 bytes overwritten by `0xFF` (lengths and counts
/// become huge) at the same points and at the start of every item the
/// reader finds (each count and length field), through every subcommand.
/// Catches: any reader or report that sizes memory by a field of the input
/// (tried: a `Vec::with_capacity` of the HVM blob's length).
#[test]
fn the_corruption_matrix_stays_within_the_bound() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let mut over = Vec::new();
    let mut runs = 0;
    for name in [
        "seed64-nonlive.img",
        "seed64-live-xend.img",
        "seed32-verify.img",
        "seed64-current-hvm.img",
    ] {
        let img = std::fs::read(golden.join(name)).unwrap();
        let mut points: Vec<usize> = (1..=48).map(|k| img.len() * k / 49).collect();
        let (_, mut r) = hvm_format::image::open_slice(&img, OpenOptions::default()).unwrap();
        while let Some(item) = r.next().unwrap() {
            points.push(usize::try_from(item.offset()).unwrap());
        }
        for at in points {
            let mut flipped = img.clone();
            let end = (at + 8).min(flipped.len());
            flipped[at..end].fill(0xFF);
            for (kind, bytes) in [("cut", &img[..at]), ("0xFF", &flipped[..])] {
                let path = dir.path().join("input.img");
                std::fs::write(&path, bytes).unwrap();
                for (cmd, peak) in every_subcommand(&path) {
                    runs += 1;
                    let n = if cmd == "diff" { 2 } else { 1 } * bytes.len();
                    let bound = 16 * MIB + 2 * n;
                    if peak > bound {
                        over.push(format!(
                            "{name} {kind} at {at}: {cmd} peaked at {peak} > {bound}"
                        ));
                    }
                }
            }
        }
    }
    assert!(runs >= 4 * 50 * 2 * 13, "{runs} runs");
    assert!(over.is_empty(), "{}", over.join("\n"));
}

#[test]
fn peak_heap_is_at_most_16_mib_plus_twice_the_input() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let read = |n: &str| std::fs::read(golden.join(n)).unwrap();
    let nonlive = read("seed64-nonlive.img");
    let xend = read("seed64-live-xend.img");
    let zeros = |n: usize| vec![0u8; n];
    let mut inputs: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", zeros(4 * MIB)),
        ("nonlive", nonlive.clone()),
        ("xend", xend.clone()),
        ("seed32-verify", read("seed32-verify.img")),
        ("current-hvm", read("seed64-current-hvm.img")),
        ("nonlive + zeros", [&nonlive[..], &zeros(8 * MIB)].concat()),
        ("xend + zeros (QEVM)", [&xend[..], &zeros(8 * MIB)].concat()),
        ("xtab-heavy", seed_image(1024, 0)),
        ("v2 many records", v2_many_records(400_000)),
    ];
    for cut in [3, 2] {
        inputs.push(("nonlive cut", nonlive[..nonlive.len() / cut].to_vec()));
    }
    let mut report = Vec::new();
    let mut over = Vec::new();
    for (name, bytes) in &inputs {
        let path = dir.path().join("input.img");
        std::fs::write(&path, bytes).unwrap();
        for (cmd, peak) in every_subcommand(&path) {
            // diff reads the input twice: its N is both inputs.
            let n = if cmd == "diff" { 2 } else { 1 } * bytes.len();
            let bound = 16 * MIB + 2 * n;
            report.push(format!(
                "{name:>20} {:>9} B  {cmd:<18} peak {:>10} B",
                bytes.len(),
                peak
            ));
            // Listings and findings are capped: 400 000 records of one
            // kind cost a count, not a list (the summary took 16.9 MB
            // before its listing was capped).
            if name.starts_with("v2 many") && peak > 4 * MIB {
                over.push(format!("{name}: {cmd} peaked at {peak} > 4 MiB"));
            }
            if peak > bound {
                over.push(format!(
                    "{name} ({} bytes): {cmd} peaked at {peak} > {bound}",
                    bytes.len()
                ));
            }
        }
    }
    // An image with page data: summary and validate stay within 32 MiB
    // whatever the guest's size (here 96 MiB of pages).
    let big = seed_image(0, 24);
    let path = dir.path().join("big.img");
    std::fs::write(&path, &big).unwrap();
    drop(big);
    let p = path.to_str().unwrap();
    let opts = OpenOptions::default();
    for (cmd, peak) in [
        (
            "summary",
            peak_of(|| drop(report::summary(Input::open(p).unwrap(), opts, &no_progress))),
        ),
        (
            "validate",
            peak_of(|| {
                let check = CheckOptions::default();
                drop(report::validate(
                    Input::open(p).unwrap(),
                    opts,
                    check,
                    &no_progress,
                ))
            }),
        ),
    ] {
        report.push(format!(
            "{:>20} {cmd:<18} peak {peak:>10} B",
            "96 MiB of pages"
        ));
        if peak > 32 * MIB {
            over.push(format!("96 MiB of pages: {cmd} peaked at {peak} > 32 MiB"));
        }
    }
    println!("{}", report.join("\n"));
    assert!(over.is_empty(), "over the bound:\n{}", over.join("\n"));
}

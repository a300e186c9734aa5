//! Damaged input: every truncation point and every single-byte change in the
//! headers of small images gives `Ok` or a clean error at the right offset,
//! never a panic; hostile sizes fail without a large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hvm_format::image::{self, OpenOptions};
use hvm_format::stream::{Item, SliceReader};
use hvm_format::{ErrorKind, PfnEntry, WordSize, PAGE_SIZE};
use hvm_tests::golden::{generate, HvmEra, PassSpec, Spec};
use hvm_tests::pipeline::{exercise_read, exercise_slice};

/// Records the largest single allocation, so hostile-size tests can prove
/// nothing was sized from a claimed length.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn tiny(word: WordSize, xend: bool) -> Vec<u8> {
    generate(&Spec {
        name: "tiny",
        word,
        memory_mib: 4,
        vcpus: 2,
        passes: vec![
            PassSpec {
                modulus: 300,
                residue: 1,
            },
            PassSpec {
                modulus: 600,
                residue: 1,
            },
        ],
        xtab: vec![0x200],
        verify: true,
        xend,
        era: HvmEra::Seed,
        seed: 9,
    })
    .bytes
}

/// Offsets of every byte that is not page data (counts, pfns, vCPU records,
/// the HVM blob), for the single-byte-change matrix.
fn header_bytes(img: &[u8], word: WordSize, base: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..base).collect();
    let mut r = SliceReader::new(&img[base..], word, base as u64);
    while let Some(item) = r.next().unwrap() {
        let (start, len) = match &item {
            Item::MaxPfn { offset, .. } => (*offset, word.bytes() as u64),
            Item::Batch(b) => (b.offset, 4 + b.pfn_bytes().len() as u64),
            Item::VerifyMarker { offset }
            | Item::End { offset }
            | Item::VcpuCount { offset, .. } => (*offset, 4),
            // The first 64 bytes of each vCPU record.
            Item::Vcpu(v) => (v.offset, 68),
            // The blob's length and each record's descriptor and first bytes.
            Item::HvmBlob(h) => {
                let blob = hvm_format::hvm::HvmBlob::parse(h.bytes).unwrap();
                for rec in &blob.records {
                    let at = (h.data_offset() + rec.offset) as usize;
                    out.extend(at..(at + 8 + rec.payload.len().min(24)));
                }
                (h.offset, 4)
            }
        };
        out.extend(start as usize..(start + len) as usize);
    }
    out.extend(r.position() as usize..img.len().min(r.position() as usize + 40));
    out
}

#[test]
fn every_truncation_point_is_a_clean_error_at_the_cut() {
    for (word, xend) in [
        (WordSize::W64, false),
        (WordSize::W32, false),
        (WordSize::W64, true),
    ] {
        let img = tiny(word, xend);
        let full = exercise_slice(&img, true);
        let stream_start = if xend {
            hvm_format::envelope::parse_xend_header(&img)
                .unwrap()
                .stream_offset as usize
        } else {
            0
        };
        assert!(full.error.is_none(), "{:?}", full.error);
        // Where the legacy stream ends and (xend) the QEVM tail begins.
        let tail_start = {
            let (_, mut r) = image::open_slice(&img, OpenOptions::default()).unwrap();
            while r.next().unwrap().is_some() {}
            r.position() as usize
        };
        assert!(tail_start > stream_start && tail_start <= img.len());
        let mut silent = 0;
        for n in 0..img.len() {
            let cut = &img[..n];
            for out in [exercise_slice(cut, false), exercise_read(cut, false)] {
                let Some(e) = out.error else {
                    // Only the QEVM tail may be cut silently (it has no
                    // length); then the listing reports it.
                    assert!(
                        xend && n >= tail_start,
                        "{word} xend={xend} cut at {n} (QEVM tail from {tail_start}): no error"
                    );
                    silent += 1;
                    continue;
                };
                assert!(
                    e.offset <= n as u64,
                    "{word} cut at {n}: error past the cut: {e}"
                );
                if n < stream_start {
                    continue; // inside xend's header: the offset is the field's
                }
                // A cut inside the stream is reported as a truncation whose
                // offset plus what was available lands exactly on the cut.
                match e.kind {
                    ErrorKind::Truncated { available, .. } => {
                        assert_eq!(e.offset + available, n as u64, "{word} cut at {n}: {e}")
                    }
                    // A length refused at its own field counts what is
                    // left after the field.
                    ErrorKind::Oversized { remaining, .. }
                        if e.context.to_string().ends_with("length") =>
                    {
                        assert_eq!(e.offset + 4 + remaining, n as u64, "{word} cut at {n}: {e}")
                    }
                    ErrorKind::Oversized { remaining, .. } => {
                        assert_eq!(e.offset + remaining, n as u64, "{word} cut at {n}: {e}")
                    }
                    // Envelope sniffing and dialect checks on very short
                    // prefixes fail as invalid input, at the start.
                    ref k => assert!(
                        n < stream_start + 64 && e.offset <= stream_start as u64 + 8,
                        "{word} cut at {n}: {k:?} at {}: {e}",
                        e.offset
                    ),
                }
            }
        }
        // The xend tail's cuts are silent; nothing else is.
        assert_eq!(silent > 0, xend, "{word} xend={xend}: {silent} silent cuts");
    }
}

#[test]
fn every_single_byte_change_in_the_headers_is_handled() {
    for (word, xend) in [
        (WordSize::W64, false),
        (WordSize::W32, false),
        (WordSize::W64, true),
    ] {
        let img = tiny(word, xend);
        let base = if xend {
            hvm_format::envelope::parse_xend_header(&img)
                .unwrap()
                .stream_offset as usize
        } else {
            0
        };
        let mut changed = 0;
        for at in header_bytes(&img, word, base) {
            for v in [0x00u8, 0xFF, img[at] ^ 0x80] {
                if v == img[at] {
                    continue;
                }
                let mut bad = img.clone();
                bad[at] = v;
                for out in [exercise_slice(&bad, true), exercise_read(&bad, true)] {
                    if let Some(e) = &out.error {
                        assert!(e.offset <= bad.len() as u64, "{e}");
                    }
                    for f in &out.verdict.findings {
                        assert!(f.offset <= bad.len() as u64, "{f}");
                    }
                }
                changed += 1;
            }
        }
        assert!(
            changed > 1000,
            "the matrix must cover the headers ({changed})"
        );
    }
}

fn stream_with(word: WordSize, tail: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut img = Vec::new();
    word.write(0x7FF, &mut img);
    tail(&mut img);
    img
}

/// The reader of a known word size must fail at `want_offset` without
/// sizing anything from the claimed length (a 12-byte file is ambiguous to
/// detection, so the word size is given, as `--word` would).
fn expect_fast_failure(img: &[u8], what: &str, want_offset: u64) {
    use hvm_format::stream::Reader;
    LARGEST.store(0, Ordering::Relaxed);
    let mut r = SliceReader::new(img, WordSize::W64, 0);
    let e = loop {
        match r.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.offset, want_offset, "{what}: {e}");
    let mut r = Reader::new(img, WordSize::W64, 0);
    let e = loop {
        match r.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.offset, want_offset, "{what}: {e}");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= 2 << 20,
        "{what}: allocated {largest} bytes at once"
    );
}

#[test]
fn hostile_sizes_fail_without_large_allocations() {
    let w = WordSize::W64;
    // A batch count of 2^31 - 1, and negative counts other than -1.
    for c in [i32::MAX, 1025, -2, -20, i32::MIN] {
        let img = stream_with(w, |v| v.extend_from_slice(&c.to_le_bytes()));
        expect_fast_failure(&img, &format!("count {c}"), 8);
    }
    // nr_vcpus 2^32 - 1 with nothing behind it.
    let img = stream_with(w, |v| {
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    });
    // Refused at the count itself (at most 4096 vCPUs).
    expect_fast_failure(&img, "nr_vcpus 2^32-1", 12);
    // A vCPU record length of 2^32 - 1.
    let img = stream_with(w, |v| {
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        v.extend_from_slice(&[0; 64]);
    });
    expect_fast_failure(&img, "vcpu size 2^32-1", 20);
    // An HVM blob length of 2^32 - 1.
    let img = stream_with(w, |v| {
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        v.extend_from_slice(&[0; 64]);
    });
    // Refused at the length field.
    expect_fast_failure(&img, "hvm length 2^32-1", 16);
    // max_pfn 2^64 - 1 is only a value: the stream reads, the rules object.
    let mut img = Vec::new();
    img.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut wr = hvm_format::stream::Writer::new(Vec::new(), w);
    wr.max_pfn(0).unwrap();
    wr.batch(&[PfnEntry::page(1)], &[&[0u8; PAGE_SIZE]])
        .unwrap();
    wr.end().unwrap();
    wr.vcpu_count(0).unwrap();
    wr.hvm_blob(&[]).unwrap();
    img.extend_from_slice(&wr.finish().unwrap()[8..]);
    LARGEST.store(0, Ordering::Relaxed);
    let out = exercise_slice(&img, true);
    assert!(LARGEST.load(Ordering::Relaxed) <= 16 << 20);
    assert!(
        out.verdict
            .findings
            .iter()
            .any(|f| f.rule == "seed.xend.max-pfn"),
        "{:#?}",
        out.verdict.findings
    );
}

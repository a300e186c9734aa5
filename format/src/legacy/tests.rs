//! Every legacy layout: write → detect → read (both readers) → write
//! identical.

use super::*;
use crate::dialect::detect;
use crate::hvm::{seed_reset_blob, CpuSeed};
use crate::stream::{Reader, SliceReader};

fn page(seed: u8) -> Vec<u8> {
    (0..PAGE_SIZE)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect()
}

/// A small image of `dialect`: two batches (one with an XTAB entry), the
/// dialect's chunks and tail, one vCPU.
fn image(dialect: Dialect, word: WordSize, device_model: bool) -> Vec<u8> {
    let mut layout = Layout::of(dialect);
    layout.device_model = device_model;
    let mut w = Writer::new(Vec::new(), word, layout);
    if layout.leading_word {
        let first = if matches!(dialect, Dialect::Legacy | Dialect::Apr2007VcpuMap) {
            0x20000
        } else {
            0x1FFFF
        };
        w.leading_word(first).unwrap();
    }
    let (p1, p2, p3) = (page(3), page(5), page(7));
    if matches!(dialect, Dialect::Legacy | Dialect::Apr2007VcpuMap) {
        let mut vi = 0u32.to_le_bytes().to_vec();
        vi.extend_from_slice(&1u64.to_le_bytes());
        w.chunk(-2, &vi).unwrap();
    }
    w.batch(
        &[
            PfnEntry::page(0),
            PfnEntry::xtab(0x10),
            PfnEntry::page(0x11),
        ],
        &[&p1, &p2],
    )
    .unwrap();
    if dialect == Dialect::Legacy {
        let mut tsc = vec![0u8; 20];
        tsc[12] = 0x40;
        w.chunk(-7, &tsc).unwrap();
        let mut ident = vec![0u8; 12];
        ident[4..12].copy_from_slice(&0xFEFF_D000u64.to_le_bytes());
        w.chunk(-3, &ident).unwrap();
        let mut ts = 5u32.to_le_bytes().to_vec();
        ts.extend_from_slice(b"abcde");
        w.chunk(-18, &ts).unwrap();
    }
    w.batch(&[PfnEntry::page(0x1FFF0)], &[&p3]).unwrap();
    w.end().unwrap();
    let ctx: Vec<u8> = (0..vcpu_context_size(word)).map(|i| i as u8).collect();
    let blob = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
    // The layout decides which parts follow the terminator, and in what order.
    w.tail(&Tail {
        magic_pfns: (0x1FFFF, 0x1FFFD, 0x1FFFE),
        vcpus: &[&ctx],
        hvm_blob: &blob,
        shared_info_frame: 0x1234,
        device_model: b"QEVM\0\0\0\x01state",
    })
    .unwrap();
    w.finish().unwrap()
}

fn rewrite_slice(bytes: &[u8], word: WordSize, layout: Layout) -> (Vec<u8>, Vec<&'static str>) {
    let mut r = SliceReader::with_layout(bytes, word, 0, layout);
    let mut w = Writer::new(Vec::new(), word, layout);
    let mut names = Vec::new();
    while let Some(e) = r.next_element().unwrap() {
        names.push(e.name());
        w.element(&e).unwrap();
    }
    assert!(r.rest().is_empty(), "{} bytes left", r.rest().len());
    (w.finish().unwrap(), names)
}

fn rewrite_read(bytes: &[u8], word: WordSize, layout: Layout) -> Vec<u8> {
    let mut r = Reader::with_layout(bytes, word, 0, layout);
    let mut w = Writer::new(Vec::new(), word, layout);
    while let Some(e) = r.next_element().unwrap() {
        w.element(&e).unwrap();
    }
    w.finish().unwrap()
}

const DIALECTS: [Dialect; 7] = [
    Dialect::Seed,
    Dialect::Jan2007,
    Dialect::Mar2007,
    Dialect::Apr2007MagicPfns,
    Dialect::Apr2007NoMaxPfn,
    Dialect::Apr2007VcpuMap,
    Dialect::Legacy,
];

#[test]
fn every_dialect_round_trips_through_both_readers() {
    for dialect in DIALECTS {
        for word in [WordSize::W64, WordSize::W32] {
            let img = image(dialect, word, false);
            let layout = Layout::of(dialect);
            let (again, names) = rewrite_slice(&img, word, layout);
            assert_eq!(again, img, "{dialect:?} {word} slice");
            assert_eq!(
                rewrite_read(&img, word, layout),
                img,
                "{dialect:?} {word} read"
            );
            assert!(names.contains(&"hvm blob"), "{dialect:?}: {names:?}");
            if dialect == Dialect::Legacy {
                assert_eq!(
                    names.iter().filter(|n| **n == "magic pfns").count(),
                    1,
                    "{names:?}"
                );
                for c in ["VCPU_INFO", "TSC_INFO", "HVM_IDENT_PT", "TOOLSTACK"] {
                    assert!(names.contains(&c), "{c} missing from {names:?}");
                }
            }
        }
    }
}

#[test]
fn detection_names_every_dialect_and_word() {
    for dialect in DIALECTS {
        for word in [WordSize::W64, WordSize::W32] {
            let img = image(dialect, word, false);
            let d = detect(&img);
            assert_eq!((d.dialect, d.word), (dialect, word), "{d:#?}");
        }
    }
}

#[test]
fn legacy_device_model_record_is_part_of_the_stream() {
    let img = image(Dialect::Legacy, WordSize::W64, true);
    let mut layout = Layout::of(Dialect::Legacy);
    layout.device_model = true;
    let mut r = SliceReader::with_layout(&img, WordSize::W64, 0, layout);
    let mut dm = None;
    while let Some(e) = r.next_element().unwrap() {
        if let Element::DeviceModel(d) = e {
            dm = Some((d.offset, d.bytes.to_vec()));
        }
    }
    let (off, bytes) = dm.expect("device model record");
    assert_eq!(bytes, b"QEVM\0\0\0\x01state");
    assert_eq!(
        &img[off as usize..off as usize + 21],
        b"DeviceModelRecord0002"
    );
    assert_eq!(rewrite_slice(&img, WordSize::W64, layout).0, img);
}

#[test]
fn seed_items_skip_the_extras() {
    let img = image(Dialect::Legacy, WordSize::W64, false);
    let mut r = SliceReader::with_layout(&img, WordSize::W64, 0, Layout::of(Dialect::Legacy));
    let mut names = Vec::new();
    while let Some(i) = r.next().unwrap() {
        names.push(i.name());
    }
    assert_eq!(
        names,
        ["max_pfn", "batch", "batch", "terminator", "hvm blob"]
    );
}

#[test]
fn writer_refuses_what_the_layout_forbids() {
    let mut w = Writer::new(Vec::new(), WordSize::W64, Layout::seed());
    w.leading_word(0x1FFFF).unwrap();
    assert!(w.chunk(-7, &[0u8; 20]).is_err(), "no chunks in the seed");
    let mut w = Writer::new(Vec::new(), WordSize::W64, Layout::of(Dialect::Legacy));
    w.leading_word(0x20000).unwrap();
    assert!(w.chunk(-7, &[0u8; 19]).is_err(), "TSC_INFO is 20 bytes");
    assert!(w.chunk(-5, &[]).is_err(), "TMEM is not supported");
    w.end().unwrap();
    assert!(w.hvm_blob(&[]).is_err(), "magic pfns come first");
}

#[test]
fn hostile_chunks_are_errors_not_panics() {
    let layout = Layout::of(Dialect::Legacy);
    let mut img = 0x20000u64.to_le_bytes().to_vec();
    img.extend_from_slice(&(-2i32).to_le_bytes());
    img.extend_from_slice(&5000u32.to_le_bytes());
    let mut r = SliceReader::with_layout(&img, WordSize::W64, 0, layout);
    r.next_element().unwrap();
    let e = r.next_element().unwrap_err();
    assert!(e.to_string().contains("4095"), "{e}");
    let mut img = 0x20000u64.to_le_bytes().to_vec();
    img.extend_from_slice(&(-18i32).to_le_bytes());
    img.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut r = SliceReader::with_layout(&img, WordSize::W64, 0, layout);
    r.next_element().unwrap();
    assert!(r.next_element().is_err());
    let mut img = 0x20000u64.to_le_bytes().to_vec();
    img.extend_from_slice(&(-21i32).to_le_bytes());
    let mut r = SliceReader::with_layout(&img, WordSize::W64, 0, layout);
    r.next_element().unwrap();
    assert!(r.next_element().is_err());
}

#[test]
fn tail_refuses_fewer_contexts_than_the_vcpu_map_promised() {
    let layout = Layout::of(Dialect::Apr2007VcpuMap);
    let mut w = Writer::new(Vec::new(), WordSize::W64, layout);
    w.leading_word(0x20000).unwrap();
    let mut vi = 1u32.to_le_bytes().to_vec(); // max_vcpu_id 1
    vi.extend_from_slice(&3u64.to_le_bytes()); // vCPUs 0 and 1 online
    w.chunk(-2, &vi).unwrap();
    w.end().unwrap();
    let ctx = vec![0u8; vcpu_context_size(WordSize::W64) as usize];
    let blob = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
    let e = w
        .tail(&Tail {
            magic_pfns: (1, 2, 3),
            vcpus: &[&ctx],
            hvm_blob: &blob,
            shared_info_frame: 0,
            device_model: &[],
        })
        .unwrap_err();
    assert!(e.to_string().contains("fewer vcpu contexts"), "{e}");
    assert!(!w.is_done());
}

#[test]
fn trailing_bytes_on_a_pipe_are_counted_only_up_to_the_limit() {
    use crate::envelope::TRAILING_COUNT_LIMIT;
    use crate::image::{open_read, read_tail, Tail};
    use std::io::Read;
    let img = image(Dialect::Legacy, WordSize::W64, false);
    let tail_of = |extra: u64| {
        let input = img.as_slice().chain(std::io::repeat(0).take(extra));
        let (info, mut r) = open_read(input, Default::default()).unwrap();
        while r.next_element().unwrap().is_some() {}
        read_tail(&info, r).unwrap()
    };
    // Endless zeros after a valid image (bounded here to stay finite).
    match tail_of(TRAILING_COUNT_LIMIT + 4096) {
        Tail::Trailing { offset, len, more } => {
            assert_eq!(offset, img.len() as u64);
            assert_eq!(len, TRAILING_COUNT_LIMIT);
            assert!(more);
        }
        t => panic!("{t:?}"),
    }
    // Up to the limit the count is exact.
    match tail_of(TRAILING_COUNT_LIMIT) {
        Tail::Trailing { len, more, .. } => {
            assert_eq!(len, TRAILING_COUNT_LIMIT);
            assert!(!more);
        }
        t => panic!("{t:?}"),
    }
}

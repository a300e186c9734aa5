//! Property: any stream the grammar allows, written and read back, gives the
//! same items (through both readers), and reading then writing gives the
//! same bytes. Covers both word sizes, XTAB entries, several passes, the
//! verify resend, 1–32 vCPUs, HVM records of both eras, and the xend
//! envelope with a QEVM tail.

use hvm_format::envelope::{qevm::QevmWriter, write_qemu_tail, write_xend_header, Sxp};
use hvm_format::hvm::{BlobBuilder, HvmBlob};
use hvm_format::image::{open_read, open_slice, read_tail, slice_tail, OpenOptions, Tail};
use hvm_format::stream::{vcpu_context_size, Item, Writer};
use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
use proptest::prelude::*;

/// One item as plain data, comparable across readers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    MaxPfn(u64),
    /// Every page whole (`None`: an XTAB entry).
    Batch(Vec<(u64, Option<Vec<u8>>)>),
    Verify,
    End,
    VcpuCount(u32),
    Vcpu(Vec<u8>),
    Blob(Vec<u8>),
}

/// A QEVM section: id, instance, version, payload.
type Section = (String, u32, u32, Vec<u8>);

#[derive(Debug, Clone)]
struct Image {
    word: WordSize,
    items: Vec<Model>,
    xend: Option<(String, Vec<Section>)>,
}

/// A page whose every byte depends on its position, pfn and fill, so a
/// reader that moves, drops or repeats bytes anywhere in it is seen.
fn page_of(fill: u8, pfn: u64) -> Vec<u8> {
    let mut p: Vec<u8> = (0..PAGE_SIZE)
        .map(|i| fill ^ (i as u8).wrapping_mul(37) ^ (i >> 8) as u8 ^ pfn as u8)
        .collect();
    p[..8].copy_from_slice(&pfn.to_le_bytes());
    p
}

/// HVM record sizes of both eras: (typecode, length).
const SIZES: &[(u16, usize)] = &[
    (2, 320),
    (2, 1032),
    (3, 8),
    (4, 400),
    (5, 16),
    (5, 32),
    (6, 1024),
    (7, 16),
    (8, 8),
    (9, 4),
    (9, 8),
    (10, 52),
    (10, 56),
    (11, 15),
    (11, 24),
    (12, 1048),
    (13, 8),
    (14, 240),
    (19, 8),
    (40, 13),
];

fn blob_strategy(vcpus: u32) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..SIZES.len(), any::<u8>()), 0..8).prop_map(move |recs| {
        let mut b = BlobBuilder::new();
        let mut header = 0x5438_1286u32.to_le_bytes().to_vec();
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&[0u8; 16]);
        b.push_raw(1, 0, &header);
        for (i, (k, fill)) in recs.into_iter().enumerate() {
            let (t, len) = SIZES[k];
            b.push_raw(t, (i as u32 % vcpus) as u16, &vec![fill; len]);
        }
        b.finish()
    })
}

fn image_strategy() -> impl Strategy<Value = Image> {
    let word = prop_oneof![Just(WordSize::W64), Just(WordSize::W32)];
    let pass = prop::collection::vec((0u64..0x4000, any::<bool>(), any::<u8>()), 1..40);
    let passes = prop::collection::vec(pass, 1..4);
    let xend = prop::option::of((
        "[a-z]{1,8}",
        prop::collection::vec(
            (
                "[a-z_]{1,10}",
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            0..4,
        ),
    ));
    (
        word,
        0x3FFFu64..0x10_0000,
        passes,
        any::<bool>(),
        1u32..=32,
        xend,
    )
        .prop_flat_map(|(word, max_pfn, passes, verify, vcpus, xend)| {
            blob_strategy(vcpus).prop_map(move |blob| {
                let mut items = vec![Model::MaxPfn(max_pfn)];
                for pass in &passes {
                    // Batches of up to 7 entries, so passes span several.
                    for chunk in pass.chunks(7) {
                        items.push(Model::Batch(
                            chunk
                                .iter()
                                .map(|&(pfn, xtab, fill)| {
                                    (pfn, (!xtab).then(|| page_of(fill, pfn)))
                                })
                                .collect(),
                        ));
                    }
                }
                if verify {
                    items.push(Model::Verify);
                    items.push(Model::Batch(vec![(1, Some(page_of(9, 1))), (2, None)]));
                }
                items.push(Model::End);
                items.push(Model::VcpuCount(vcpus));
                for i in 0..vcpus {
                    items.push(Model::Vcpu(vec![i as u8; vcpu_context_size(word) as usize]));
                }
                items.push(Model::Blob(blob.clone()));
                Image {
                    word,
                    items,
                    xend: xend.clone(),
                }
            })
        })
}

fn write(img: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some((name, _)) = &img.xend {
        let cfg = Sxp::list([Sxp::atom("domain"), Sxp::entry("name", name.as_str())]);
        write_xend_header(&mut out, cfg.to_sxp_string().as_bytes()).unwrap();
    }
    let mut w = Writer::new(&mut out, img.word);
    for it in &img.items {
        match it {
            Model::MaxPfn(v) => w.max_pfn(*v).unwrap(),
            Model::Batch(es) => {
                let entries: Vec<PfnEntry> = es
                    .iter()
                    .map(|(p, d)| {
                        if d.is_some() {
                            PfnEntry::page(*p)
                        } else {
                            PfnEntry::xtab(*p)
                        }
                    })
                    .collect();
                let refs: Vec<&[u8]> = es.iter().filter_map(|(_, d)| d.as_deref()).collect();
                w.batch(&entries, &refs).unwrap();
            }
            Model::Verify => w.verify_marker().unwrap(),
            Model::End => w.end().unwrap(),
            Model::VcpuCount(n) => w.vcpu_count(*n).unwrap(),
            Model::Vcpu(b) => w.vcpu(b).unwrap(),
            Model::Blob(b) => w.hvm_blob(b).unwrap(),
        }
    }
    w.finish().unwrap();
    if let Some((_, sections)) = &img.xend {
        let mut q = QevmWriter::new(Vec::new()).unwrap();
        for (id, inst, ver, payload) in sections {
            q.section(id.as_bytes(), *inst, *ver, payload).unwrap();
        }
        write_qemu_tail(&mut out, &q.finish().unwrap()).unwrap();
    }
    out
}

fn model(item: &Item<'_>) -> Model {
    match item {
        Item::MaxPfn { value, .. } => Model::MaxPfn(*value),
        Item::Batch(b) => {
            let mut pages = b.pages();
            Model::Batch(
                b.entries()
                    .map(|e| {
                        if e.has_data() {
                            let (pe, data, _) = pages.next().unwrap();
                            assert_eq!(pe, e);
                            (e.pfn().0, Some(data.to_vec()))
                        } else {
                            (e.pfn().0, None)
                        }
                    })
                    .collect(),
            )
        }
        Item::VerifyMarker { .. } => Model::Verify,
        Item::End { .. } => Model::End,
        Item::VcpuCount { count, .. } => Model::VcpuCount(*count),
        Item::Vcpu(v) => Model::Vcpu(v.bytes.to_vec()),
        Item::HvmBlob(h) => {
            // The blob's records round-trip exactly too.
            assert_eq!(HvmBlob::parse(h.bytes).unwrap().encode(), h.bytes);
            Model::Blob(h.bytes.to_vec())
        }
    }
}

/// The tail's sections with their payloads, cut from the file where the
/// listing says they are; the listing must have read the whole tail.
fn sections(t: &Tail, file: &[u8]) -> Vec<Section> {
    match t {
        Tail::Qemu(q) => {
            assert!(q.listing.error.is_none(), "{:?}", q.listing.error);
            assert_eq!(
                q.listing.end,
                file.len() as u64,
                "the listing stopped early"
            );
            q.listing
                .sections
                .iter()
                .map(|s| {
                    let at = s.payload_offset as usize;
                    let payload = file[at..at + s.length as usize].to_vec();
                    (s.id_str(), s.instance_id, s.version_id, payload)
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn write_read_write(img in image_strategy()) {
        let bytes = write(&img);

        // Slice reader: same items, and re-writing them gives the same bytes.
        let (info, mut r) = open_slice(&bytes, OpenOptions { word: Some(img.word), ..Default::default() }).unwrap();
        let mut got = Vec::new();
        let mut rewrite = Writer::new(Vec::new(), img.word);
        while let Some(item) = r.next().unwrap() {
            got.push(model(&item));
            rewrite.item(&item).unwrap();
        }
        prop_assert_eq!(&got, &img.items);
        let tail = slice_tail(&info, &r).unwrap();
        let want_sections: Vec<Section> = img.xend.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
        prop_assert_eq!(sections(&tail, &bytes), want_sections.clone());
        let start = info.stream_offset as usize;
        let rewritten = rewrite.finish().unwrap();
        prop_assert_eq!(&bytes[start..start + rewritten.len()], &rewritten[..]);

        // Detection alone finds the word size for these well-formed images.
        let (auto, _) = open_slice(&bytes, OpenOptions::default()).unwrap();
        prop_assert_eq!(auto.word(), img.word, "{:?}", auto.detection);

        // Pipe reader: same items and tail.
        let (info, mut r) = open_read(&bytes[..], OpenOptions { word: Some(img.word), ..Default::default() }).unwrap();
        let mut got = Vec::new();
        while let Some(item) = r.next().unwrap() {
            got.push(model(&item));
        }
        prop_assert_eq!(&got, &img.items);
        prop_assert_eq!(sections(&read_tail(&info, r).unwrap(), &bytes), want_sections);
    }
}

//! Migration v2: write → read → write is byte-identical for every record
//! type and all three framings, both readers agree, and the writer refuses
//! what the spec forbids.

use std::borrow::Cow;
use std::io::Read;

use hvm_format::v2::libxc::{
    CpuidLeaf, DomainHeader, HvmParam, HvmParams, ImageHeader, MsrEntry, P2mFrames, PageData,
    PageDataEntry, PvVcpu, RecordBody, RecordType, TscInfo, X86PvInfo,
};
use hvm_format::v2::libxl::{
    EmulatorId, LibxlHeader, LibxlItem, LibxlReader, LibxlRecord, LibxlWriter,
};
use hvm_format::v2::reader::{Reader, SliceReader};
use hvm_format::v2::writer::Writer;
use hvm_format::v2::xl::XlHeader;
use hvm_format::v2::{validate_libxc, validate_libxl, validate_xl};
use hvm_format::{ErrorKind, PfnType, PAGE_SIZE};
use proptest::prelude::*;

/// A `Read` that hands out at most 7 bytes per call, like a slow pipe.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn page(fill: u8) -> Vec<u8> {
    (0..PAGE_SIZE).map(|i| fill ^ (i as u8)).collect()
}

fn pv_records() -> Vec<RecordBody<'static>> {
    let vcpu = |id: u32, n: usize| PvVcpu {
        vcpu_id: id,
        reserved: 0,
        context: Cow::Owned((0..n).map(|i| i as u8).collect()),
    };
    let mut pages = page(1);
    pages.extend(page(2));
    vec![
        RecordBody::X86PvInfo(X86PvInfo {
            guest_width: 8,
            pt_levels: 4,
            reserved1: 0,
            reserved2: 0,
        }),
        RecordBody::X86CpuidPolicy(vec![CpuidLeaf {
            leaf: 0,
            subleaf: u32::MAX,
            a: 0xd,
            b: 0x756e_6547,
            c: 0x6c65_746e,
            d: 0x4965_6e69,
        }]),
        RecordBody::X86MsrPolicy(vec![MsrEntry {
            idx: 0xce,
            flags: 0,
            val: 0x8000_0000,
        }]),
        RecordBody::StaticDataEnd,
        RecordBody::X86PvP2mFrames(P2mFrames {
            start: 0,
            end: 0x1ff,
            frames: vec![0x1234, 0x5678],
        }),
        RecordBody::PageData(PageData {
            reserved: 0,
            entries: vec![
                PageDataEntry::new(0x10, PfnType::PageTable(1)),
                PageDataEntry::xtab(0x11),
                PageDataEntry::new(0x12, PfnType::Pinned(0xC)),
                PageDataEntry::new(0x13, PfnType::Broken),
            ],
            pages: Cow::Owned(pages),
        }),
        RecordBody::X86PvVcpuBasic(vcpu(0, 13)),
        RecordBody::X86PvVcpuExtended(vcpu(0, 0)),
        RecordBody::X86PvVcpuXsave(vcpu(1, 21)),
        RecordBody::X86PvVcpuMsrs(vcpu(1, 16)),
        RecordBody::SharedInfo(Cow::Owned(page(9))),
        RecordBody::X86TscInfo(TscInfo {
            mode: 1,
            khz: 2_400_000,
            nsec: 123_456_789,
            incarnation: 3,
            reserved: 0,
        }),
        RecordBody::Toolstack(Cow::Borrowed(b"toolstack!")),
        RecordBody::Verify,
        RecordBody::Checkpoint,
        RecordBody::CheckpointDirtyPfnList(vec![1, 2, 0xFFFF_FFFF_FFFF]),
        RecordBody::Unknown {
            rtype: RecordType(0x8000_0042),
            data: Cow::Borrowed(b"opt"),
        },
    ]
}

/// HVM_CONTEXT blob: HEADER (magic 0x54381286, version 1) + END, built
/// from the descriptor layout by hand.
fn hvm_blob() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&24u32.to_le_bytes());
    b.extend_from_slice(&0x5438_1286u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0x0006_06F1u32.to_le_bytes());
    b.extend_from_slice(&2_400_000u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b
}

fn hvm_records() -> Vec<RecordBody<'static>> {
    let mut pages = page(0x55);
    pages.extend(page(0xAA));
    vec![
        RecordBody::X86CpuidPolicy(vec![CpuidLeaf {
            leaf: 1,
            subleaf: u32::MAX,
            a: 0x606f1,
            b: 0,
            c: 0x8000_0000,
            d: 0x1789_fbff,
        }]),
        RecordBody::StaticDataEnd,
        RecordBody::PageData(PageData {
            reserved: 0,
            entries: vec![
                PageDataEntry::page(0),
                PageDataEntry::xtab(0xA0),
                PageDataEntry::page(0x1FFFF),
            ],
            pages: Cow::Owned(pages),
        }),
        RecordBody::X86TscInfo(TscInfo {
            mode: 0,
            khz: 2_400_000,
            nsec: 42,
            incarnation: 0,
            reserved: 0,
        }),
        RecordBody::HvmParams(HvmParams::from_pairs([
            (HvmParam::IOREQ_PFN, 0x1FFFE),
            (HvmParam::BUFIOREQ_PFN, 0x1FFFF),
            (HvmParam::STORE_PFN, 0x1FFFD),
        ])),
        RecordBody::HvmContext(Cow::Owned(hvm_blob())),
    ]
}

fn write_libxc(image: ImageHeader, domain: DomainHeader, recs: &[RecordBody<'_>]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), image, domain).unwrap();
    for r in recs {
        w.record(r).unwrap();
    }
    w.finish().unwrap()
}

/// Read `bytes` with both readers, check they agree, and rewrite.
fn reread(bytes: &[u8]) -> (Vec<RecordBody<'static>>, Vec<u8>) {
    let mut s = SliceReader::new(bytes).unwrap();
    let mut from_slice = Vec::new();
    let mut offsets = Vec::new();
    while let Some(r) = s.next_record().unwrap() {
        offsets.push(r.offset);
        from_slice.push(r.body.into_owned());
    }
    assert!(s.remaining().is_empty());
    let mut p = Reader::new(Trickle(bytes)).unwrap();
    let mut from_pipe = Vec::new();
    while let Some(r) = p.next_record().unwrap() {
        assert_eq!(r.offset, offsets[from_pipe.len()], "record offsets agree");
        from_pipe.push(r.body.into_owned());
    }
    assert_eq!(p.offset(), bytes.len() as u64);
    assert_eq!(from_slice, from_pipe);
    assert_eq!(from_slice.last(), Some(&RecordBody::End));
    let body = &from_slice[..from_slice.len() - 1];
    let again = write_libxc(*s.image_header(), *s.domain_header(), body);
    (from_slice, again)
}

#[test]
fn every_libxc_record_type_round_trips() {
    let pv = write_libxc(
        ImageHeader::new(3),
        DomainHeader {
            domain_type: 1,
            ..DomainHeader::hvm(4, 17)
        },
        &pv_records(),
    );
    let hvm = write_libxc(
        ImageHeader::new(3),
        DomainHeader::hvm(4, 17),
        &hvm_records(),
    );
    let mut seen = std::collections::BTreeSet::new();
    for (bytes, orig) in [(pv, pv_records()), (hvm, hvm_records())] {
        assert_eq!(bytes.len() % 8, 0);
        let (read, again) = reread(&bytes);
        assert_eq!(&read[..read.len() - 1], &orig[..]);
        assert_eq!(again, bytes, "write → read → write is identical");
        seen.extend(read.iter().map(|r| r.rtype().0));
    }
    // 0x00..=0x12 and the unknown optional type.
    assert_eq!(seen.len(), 20);
    assert!((0..=0x12).all(|t| seen.contains(&t)));
}

#[test]
fn records_are_padded_with_zeros_to_eight_bytes() {
    let bytes = write_libxc(
        ImageHeader::new(3),
        DomainHeader::hvm(0, 1),
        &[
            RecordBody::StaticDataEnd,
            RecordBody::HvmContext(Cow::Borrowed(b"12345")),
        ],
    );
    // 24 + 16 header bytes, SDE (8), HVM_CONTEXT header 8 + 5 + 3 padding, END 8.
    assert_eq!(bytes.len(), 40 + 8 + 16 + 8);
    assert_eq!(&bytes[48..56], &[9, 0, 0, 0, 5, 0, 0, 0]);
    assert_eq!(&bytes[56..64], b"12345\0\0\0");
    assert_eq!(&bytes[..8], &[0xFF; 8]);
    assert_eq!(&bytes[8..12], b"XENF");
    assert!(validate_libxc(&bytes).is_empty());
}

#[test]
fn hvm_stream_passes_validation_pv_stream_fails_only_where_xen_does() {
    let hvm = write_libxc(
        ImageHeader::new(3),
        DomainHeader::hvm(4, 17),
        &hvm_records(),
    );
    assert_eq!(validate_libxc(&hvm), vec![]);
    let pv = write_libxc(
        ImageHeader::new(3),
        DomainHeader {
            domain_type: 1,
            ..DomainHeader::hvm(4, 17)
        },
        &pv_records(),
    );
    let rules: Vec<_> = validate_libxc(&pv)
        .iter()
        .filter(|f| f.severity == hvm_format::rules::Severity::Error)
        .map(|f| f.rule)
        .collect();
    assert_eq!(
        rules,
        vec![
            "v2.toolstack.deprecated",
            "v2.checkpoint-dirty-pfn-list.present",
            "v2.record.unknown-type"
        ]
    );
}

fn libxl_stream() -> Vec<u8> {
    let mut w = LibxlWriter::new(Vec::new(), LibxlHeader::new(false)).unwrap();
    w.record(&LibxlRecord::xenstore_data(
        EmulatorId::QemuUpstream,
        0,
        &[("physmap/1/start", "f0000000"), ("k", "")],
    ))
    .unwrap();
    w.libxc(ImageHeader::new(3), DomainHeader::hvm(4, 17), |x| {
        for r in hvm_records() {
            x.record(&r)?;
        }
        Ok(())
    })
    .unwrap();
    w.record(&LibxlRecord::EmulatorContext {
        emulator: EmulatorId::QemuUpstream,
        index: 0,
        data: Cow::Borrowed(b"QEVM\0\0\0\x03qemu state"),
    })
    .unwrap();
    w.record(&LibxlRecord::CheckpointEnd).unwrap();
    w.record(&LibxlRecord::CheckpointState { control_id: 7 })
        .unwrap();
    w.finish().unwrap()
}

/// Re-emit a libxl stream from what the reader yields.
fn rewrite_libxl<R: Read>(mut r: LibxlReader<R>) -> Vec<u8> {
    enum Step {
        L(LibxlRecord<'static>),
        X(ImageHeader, DomainHeader, Vec<RecordBody<'static>>),
    }
    let header = *r.header();
    let mut steps = Vec::new();
    while let Some(item) = r.next_item().unwrap() {
        match item {
            LibxlItem::Record {
                record: LibxlRecord::LibxcContext,
                ..
            } => {}
            LibxlItem::Record { record, .. } => steps.push(Step::L(record.into_owned())),
            LibxlItem::LibxcHeaders { image, domain, .. } => {
                steps.push(Step::X(image, domain, Vec::new()))
            }
            LibxlItem::Libxc(rec) => match steps.last_mut() {
                Some(Step::X(_, _, v)) => v.push(rec.body.into_owned()),
                _ => panic!("libxc record outside LIBXC_CONTEXT"),
            },
        }
    }
    let mut w = LibxlWriter::new(Vec::new(), header).unwrap();
    for s in steps {
        match s {
            Step::L(LibxlRecord::End) => {
                w.end().unwrap();
            }
            Step::L(rec) => {
                w.record(&rec).unwrap();
            }
            Step::X(image, domain, recs) => w
                .libxc(image, domain, |x| {
                    for r in &recs {
                        x.record(r)?;
                    }
                    Ok(())
                })
                .unwrap(),
        }
    }
    w.finish().unwrap()
}

#[test]
fn libxl_framing_round_trips() {
    let bytes = libxl_stream();
    assert_eq!(&bytes[..8], b"LibxlFmt");
    assert_eq!(bytes.len() % 8, 0);
    let mut r = LibxlReader::new(Trickle(&bytes)).unwrap();
    let mut kinds = Vec::new();
    let mut libxc_end_seen = false;
    while let Some(item) = r.next_item().unwrap() {
        match item {
            LibxlItem::Record { record, offset, .. } => {
                assert_eq!(offset % 8, 0);
                if let LibxlRecord::EmulatorXenstoreData { .. } = &record {
                    let pairs = record.xenstore_pairs().unwrap();
                    assert_eq!(
                        pairs,
                        vec![
                            (&b"physmap/1/start"[..], &b"f0000000"[..]),
                            (&b"k"[..], &b""[..])
                        ]
                    );
                }
                kinds.push(record.rtype().0);
            }
            LibxlItem::LibxcHeaders { offset, image, .. } => {
                assert_eq!(image.version, 3);
                assert_eq!(&bytes[offset as usize..offset as usize + 8], &[0xFF; 8]);
            }
            LibxlItem::Libxc(rec) => libxc_end_seen |= rec.body == RecordBody::End,
        }
    }
    assert!(libxc_end_seen);
    assert_eq!(kinds, vec![2, 1, 3, 4, 5, 0]);
    assert_eq!(rewrite_libxl(LibxlReader::new(&bytes[..]).unwrap()), bytes);
    let findings = validate_libxl(&bytes);
    assert_eq!(
        findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
        vec!["v2.libxl.xenstore-verifier-bug"]
    );
}

#[test]
fn xl_framing_round_trips() {
    let json = r#"{"c_info":{"type":"hvm","name":"seed"}}"#;
    let hdr = XlHeader::with_json_config(json);
    let mut file = Vec::new();
    let at = hdr.write(&mut file).unwrap();
    assert_eq!(at, 48 + 4 + json.len() as u64 + 1);
    file.extend(libxl_stream());
    assert_eq!(&file[..32], b"Xen saved domain, xl format\n \0 \r");
    assert_eq!(&file[32..36], &0x0102_0304u32.to_le_bytes());
    assert_eq!(&file[36..40], &3u32.to_le_bytes());
    assert_eq!(
        *file.get(at as usize - 1).unwrap(),
        0,
        "config keeps its trailing NUL"
    );

    let parsed = XlHeader::parse(&file).unwrap();
    assert_eq!(parsed, hdr);
    assert_eq!(parsed.config_json().unwrap(), json);
    assert!(parsed.is_stream_v2());
    let mut pipe = Trickle(&file);
    let read = XlHeader::read(&mut pipe).unwrap();
    assert_eq!(read, hdr);
    let body = rewrite_libxl(LibxlReader::with_offset(pipe, at).unwrap());
    let mut again = read.to_bytes();
    again.extend(body);
    assert_eq!(again, file);
    let errors: Vec<_> = validate_xl(&file)
        .into_iter()
        .filter(|f| f.severity == hvm_format::rules::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn writer_refuses_what_the_spec_forbids() {
    let out_of_order = |e: hvm_format::Error| matches!(e.kind, ErrorKind::OutOfOrder { .. });
    let hvm3 = || Writer::new(Vec::new(), ImageHeader::new(3), DomainHeader::hvm(4, 17)).unwrap();
    let hvm2 = || Writer::new(Vec::new(), ImageHeader::new(2), DomainHeader::hvm(4, 17)).unwrap();

    let mut w = hvm3();
    w.record(&RecordBody::StaticDataEnd).unwrap();
    w.end().unwrap();
    assert!(out_of_order(w.record(&RecordBody::Verify).unwrap_err()));
    assert!(out_of_order(w.end().unwrap_err()));

    let mut w = hvm3();
    w.record(&RecordBody::StaticDataEnd).unwrap();
    w.record(&RecordBody::HvmContext(Cow::Owned(hvm_blob())))
        .unwrap();
    let e = w
        .record(&RecordBody::HvmParams(HvmParams::from_pairs([])))
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::OutOfOrder {
                item: "HVM_PARAMS",
                after: "HVM_CONTEXT"
            }
        ),
        "{e}"
    );
    assert!(out_of_order(
        w.record(&RecordBody::StaticDataEnd).unwrap_err()
    ));
    assert!(out_of_order(
        w.record(&RecordBody::X86CpuidPolicy(vec![])).unwrap_err()
    ));

    let mut w = hvm3();
    assert!(
        out_of_order(
            w.page_data(&[PageDataEntry::page(1)], &page(0))
                .unwrap_err()
        ),
        "PAGE_DATA before STATIC_DATA_END in v3"
    );

    let mut w = hvm2();
    let before = w.offset();
    assert!(w.record(&RecordBody::StaticDataEnd).is_err());
    assert!(w.record(&RecordBody::X86MsrPolicy(vec![])).is_err());
    assert_eq!(w.offset(), before, "refused records write nothing");
    w.page_data(&[PageDataEntry::page(1)], &page(0)).unwrap();
    // PV records in an HVM stream.
    assert!(w
        .record(&RecordBody::SharedInfo(Cow::Owned(page(0))))
        .is_err());
    // PAGE_DATA content.
    assert!(w.page_data(&[], &[]).is_err());
    assert!(w.page_data(&[PageDataEntry::page(1)], &[]).is_err());
    assert!(w.page_data(&[PageDataEntry::xtab(1)], &page(0)).is_err());
    assert!(w.page_data(&[PageDataEntry(5 << 60)], &[]).is_err());
    assert!(w.page_data(&[PageDataEntry(1 << 55)], &page(0)).is_err());
    w.page_data(
        &[
            PageDataEntry::xtab(1),
            PageDataEntry::new(2, PfnType::XAlloc),
        ],
        &[],
    )
    .unwrap();
    let bytes = w.finish().unwrap();
    assert!(validate_libxc(&bytes).is_empty());
    assert!(Writer::new(Vec::new(), ImageHeader::new(4), DomainHeader::hvm(0, 1)).is_err());

    let mut l = LibxlWriter::new(Vec::new(), LibxlHeader::new(true)).unwrap();
    assert!(l.record(&LibxlRecord::LibxcContext).is_err());
    l.end().unwrap();
    assert!(out_of_order(
        l.record(&LibxlRecord::CheckpointEnd).unwrap_err()
    ));
}

// ---------------------------------------------------------------------------
// Property: arbitrary HVM record sequences

fn arb_entry() -> impl Strategy<Value = PageDataEntry> {
    let kinds = prop::sample::select(vec![0u8, 1, 2, 3, 4, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF]);
    (0u64..(1 << 52), kinds).prop_map(|(pfn, k)| PageDataEntry::new(pfn, PfnType::from_nibble(k)))
}

fn arb_body() -> impl Strategy<Value = RecordBody<'static>> {
    prop_oneof![
        (
            prop::collection::vec(arb_entry(), 1..6),
            any::<u8>(),
            any::<u32>()
        )
            .prop_map(|(entries, fill, reserved)| {
                let n = PageData::data_pages(&entries);
                let pages = (0..n)
                    .flat_map(|i| page(fill.wrapping_add(i as u8)))
                    .collect();
                RecordBody::PageData(PageData {
                    reserved,
                    entries,
                    pages: Cow::Owned(pages),
                })
            }),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
            |(mode, khz, nsec, incarnation)| {
                RecordBody::X86TscInfo(TscInfo {
                    mode,
                    khz,
                    nsec,
                    incarnation,
                    reserved: 0,
                })
            }
        ),
        prop::collection::vec((any::<u64>(), any::<u64>()), 0..5)
            .prop_map(|v| { RecordBody::HvmParams(HvmParams::from_pairs(v)) }),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|d| RecordBody::HvmContext(Cow::Owned(d))),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|d| RecordBody::Toolstack(Cow::Owned(d))),
        prop::collection::vec(any::<u64>(), 0..4).prop_map(RecordBody::CheckpointDirtyPfnList),
        Just(RecordBody::Verify),
        Just(RecordBody::Checkpoint),
        ((0x13u32..), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, d)| {
            RecordBody::Unknown {
                rtype: RecordType(t),
                data: Cow::Owned(d),
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_record_sequences_round_trip(
        cpuid in prop::collection::vec((any::<u32>(), any::<u32>()), 0..3),
        msrs in prop::collection::vec((any::<u32>(), any::<u64>()), 0..3),
        bodies in prop::collection::vec(arb_body(), 0..12),
        v3 in any::<bool>(),
    ) {
        let mut recs = Vec::new();
        if v3 {
            recs.push(RecordBody::X86CpuidPolicy(cpuid.iter().map(|&(leaf, a)| CpuidLeaf { leaf, subleaf: 0, a, b: 1, c: 2, d: 3 }).collect()));
            recs.push(RecordBody::X86MsrPolicy(msrs.iter().map(|&(idx, val)| MsrEntry { idx, flags: 0, val }).collect()));
            recs.push(RecordBody::StaticDataEnd);
        }
        // The writer refuses HVM_PARAMS after HVM_CONTEXT; keep only legal orders.
        let mut ctx_seen = false;
        for b in bodies {
            if matches!(b, RecordBody::HvmParams(_)) && ctx_seen { continue; }
            ctx_seen |= matches!(b, RecordBody::HvmContext(_));
            recs.push(b);
        }
        let bytes = write_libxc(ImageHeader::new(if v3 { 3 } else { 2 }), DomainHeader::hvm(4, 17), &recs);
        let (read, again) = reread(&bytes);
        prop_assert_eq!(&read[..read.len() - 1], &recs[..]);
        prop_assert_eq!(again, bytes);
    }
}

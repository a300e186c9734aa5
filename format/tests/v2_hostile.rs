//! Migration v2 against hostile input: lying lengths and counts fail at
//! once with offset, context and expected/found; nothing panics; the
//! validator names each defect with its rule.

use std::borrow::Cow;
use std::io::Read;

use hvm_format::rules::Severity;
use hvm_format::v2::libxc::{DomainHeader, ImageHeader, PageDataEntry, RecordBody};
use hvm_format::v2::libxl::{LibxlHeader, LibxlReader, LibxlWriter};
use hvm_format::v2::reader::{Reader, SliceReader};
use hvm_format::v2::writer::Writer;
use hvm_format::v2::xl::XlHeader;
use hvm_format::v2::{validate_libxc, validate_libxl, validate_xl};
use hvm_format::{ErrorKind, PAGE_SIZE};
use proptest::prelude::*;

fn headers(version: u32) -> Vec<u8> {
    let mut v = ImageHeader::new(version).to_bytes().to_vec();
    v.extend_from_slice(&DomainHeader::hvm(4, 17).to_bytes());
    v
}

fn rec(v: &mut Vec<u8>, rtype: u32, len: u32, body: &[u8]) {
    v.extend_from_slice(&rtype.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(body);
}

/// A reader that never ends: a pipe from /dev/zero.
struct Endless;

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0);
        Ok(buf.len())
    }
}

fn good_stream() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), ImageHeader::new(3), DomainHeader::hvm(4, 17)).unwrap();
    w.record(&RecordBody::StaticDataEnd).unwrap();
    let pages = vec![0x5Au8; PAGE_SIZE];
    w.page_data(&[PageDataEntry::page(1), PageDataEntry::xtab(2)], &pages)
        .unwrap();
    w.record(&RecordBody::HvmContext(Cow::Borrowed(b"blob")))
        .unwrap();
    w.finish().unwrap()
}

#[test]
fn body_length_near_4g_fails_at_once_in_both_readers() {
    let mut s = headers(3);
    rec(&mut s, 9, 0xFFFF_FFF9, b"tiny");
    let mut r = SliceReader::new(&s).unwrap();
    let e = r.next_raw().unwrap_err();
    assert_eq!(e.offset, 40 + 4);
    assert_eq!(e.context.to_string(), "record 0 › body_length");
    match e.kind {
        ErrorKind::Oversized {
            claimed, remaining, ..
        } => {
            assert_eq!(claimed, 0x1_0000_0000);
            assert_eq!(remaining, 4);
        }
        k => panic!("expected Oversized, got {k}"),
    }

    // A pipe that never ends: refused from the header alone, without
    // reading (or buffering) 4 GiB.
    let mut pipe = headers(3);
    rec(&mut pipe, 9, 0xFFFF_FFF9, b"");
    let mut r = Reader::new(pipe.as_slice().chain(Endless)).unwrap();
    let e = r.next_raw().unwrap_err();
    assert_eq!(e.offset, 44);
    assert!(e.to_string().contains("body_length"), "{e}");
    assert!(e.to_string().contains("4294967289"), "{e}");

    // Below the default limit, a lying length on a short pipe is a truncation.
    let mut short = headers(3);
    rec(&mut short, 9, 200 << 20, b"only this");
    let mut r = Reader::new(short.as_slice()).unwrap();
    let e = r.next_raw().unwrap_err();
    assert!(e.is_truncation(), "{e}");
    assert_eq!(e.offset, 48);
    assert!(matches!(e.kind, ErrorKind::Truncated { needed, available: 9 } if needed == 200 << 20));

    // The limit is adjustable.
    let good = good_stream();
    let mut r = Reader::new(good.as_slice().chain(Endless)).unwrap();
    r.set_max_body_len(16);
    r.next_raw().unwrap();
    let e = r.next_raw().unwrap_err();
    assert!(e.to_string().contains("at most 16"), "{e}");
}

#[test]
fn page_data_count_too_large_for_body() {
    let mut s = headers(3);
    rec(&mut s, 0x10, 0, b"");
    let mut body = Vec::new();
    body.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&0xF000_0000_0000_0001u64.to_le_bytes());
    rec(&mut s, 1, body.len() as u32, &body);
    for via_pipe in [false, true] {
        let e = if via_pipe {
            let mut r = Reader::new(s.as_slice()).unwrap();
            r.next_record().unwrap();
            r.next_record().unwrap_err()
        } else {
            let mut r = SliceReader::new(&s).unwrap();
            r.next_record().unwrap();
            r.next_record().unwrap_err()
        };
        assert_eq!(e.offset, 56);
        assert_eq!(e.context.to_string(), "record 1 › count");
        assert!(
            matches!(e.kind, ErrorKind::Oversized { claimed, remaining: 8, .. } if claimed == 0xFFFF_FFFF * 8),
            "{e}"
        );
    }
    let f = validate_libxc(&s);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].rule, "v2.page-data.count");
    assert_eq!(f[1].rule, "v2.stream.framing", "no END after it");
}

#[test]
fn page_data_pages_must_match_entries() {
    let mut s = headers(3);
    rec(&mut s, 0x10, 0, b"");
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&7u64.to_le_bytes());
    body.extend_from_slice(&[0; 8]); // 8 bytes instead of 4096
    rec(&mut s, 1, body.len() as u32, &body);
    rec(&mut s, 0, 0, b"");
    let mut r = SliceReader::new(&s).unwrap();
    r.next_record().unwrap();
    let raw = r.next_raw().unwrap().unwrap();
    assert_eq!(raw.offset, 48);
    let e = raw.parse().unwrap_err();
    assert_eq!(e.context.to_string(), "record 1 › pages");
    assert!(e.to_string().contains("4096 bytes of page data"), "{e}");
    assert!(e.to_string().contains("found 8 bytes"), "{e}");
    let rules: Vec<_> = validate_libxc(&s).iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["v2.page-data.size"]);
}

#[test]
fn bad_headers_are_refused_with_place_and_values() {
    let mut s = good_stream();
    s[3] = 0x7F;
    let e = SliceReader::new(&s).err().unwrap();
    assert_eq!(e.context.to_string(), "image header › marker");
    assert_eq!(validate_libxc(&s)[0].rule, "v2.image.marker");

    let mut s = good_stream();
    s[15] = 4;
    let e = Reader::new(s.as_slice()).err().unwrap();
    assert_eq!(e.offset, 12);
    assert!(e.to_string().contains("expected 2 or 3, found 4"), "{e}");

    let mut s = good_stream();
    s[17] = 1; // big-endian option bit
    assert!(SliceReader::new(&s).is_err());
    let f = validate_libxc(&s);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "v2.image.endianness");

    let mut s = good_stream();
    s[24 + 4] = 13; // page_shift
    assert!(SliceReader::new(&s).is_err());
    assert!(validate_libxc(&s)
        .iter()
        .any(|f| f.rule == "v2.domain.page-shift"));

    let e = SliceReader::new(&good_stream()[..30]).err().unwrap();
    assert!(e.is_truncation());
    assert_eq!(e.offset, 24);
    assert!(Reader::new(&good_stream()[..10])
        .err()
        .unwrap()
        .is_truncation());
}

#[test]
fn validator_names_each_defect() {
    let mut s = headers(2);
    rec(&mut s, 0x0D, 4, b"xxxx\0\0\0\0"); // VERIFY with a body
    rec(&mut s, 0x08, 20, &[0; 24]); // TSC_INFO too short
    rec(&mut s, 0x0A, 8, &[1, 0, 0, 0, 0, 0, 0, 0]); // HVM_PARAMS count 1, no pairs
    rec(&mut s, 0x09, 0, b""); // empty HVM_CONTEXT
    rec(&mut s, 0x11, 24, &[0; 24]); // CPUID policy in v2
    rec(&mut s, 0x02, 8, &[8, 4, 0, 0, 0, 0, 0, 0]); // PV info in an HVM stream
    rec(&mut s, 0x00, 0, b"");
    s.extend_from_slice(b"trailing bytes are not looked at");
    let f = validate_libxc(&s);
    let rules: Vec<_> = f.iter().map(|f| (f.rule, f.severity)).collect();
    assert_eq!(
        rules,
        vec![
            ("v2.record.nonempty", Severity::Error),
            ("v2.tsc-info.length", Severity::Error),
            ("v2.hvm-params.length", Severity::Error),
            ("v2.hvm-context.empty", Severity::Error),
            ("v2.record.v3-only", Severity::Error),
            ("v2.order.domain-type", Severity::Warning),
        ]
    );
    assert_eq!(
        f[1].offset,
        40 + 16 + 4,
        "points at the TSC_INFO body_length"
    );
    assert_eq!(f[1].context.to_string(), "record 1 › body_length");
    assert!(f[1].message.contains("expected 24"), "{}", f[1]);
}

#[test]
fn libxl_and_xl_hostile_inputs() {
    // LIBXC_CONTEXT must be empty.
    let mut s = LibxlHeader::new(false).to_bytes().to_vec();
    rec(&mut s, 1, 8, &[0; 8]);
    let mut r = LibxlReader::new(s.as_slice()).unwrap();
    let e = r.next_item().unwrap_err();
    assert_eq!(e.offset, 20);
    assert!(e.to_string().contains("0 for LIBXC_CONTEXT"), "{e}");

    // Not a libxl header.
    assert!(LibxlReader::new(&good_stream()[..]).is_err());
    assert_eq!(validate_libxl(&good_stream())[0].rule, "v2.libxl.ident");

    // xl: optional_data_len beyond the file, foreign byte order, unknown flag.
    let hdr = XlHeader::with_json_config("{}");
    let mut f = hdr.to_bytes();
    let w = LibxlWriter::with_offset(Vec::new(), f.len() as u64, LibxlHeader::new(false)).unwrap();
    f.extend(w.finish().unwrap());
    let mut huge = f.clone();
    huge[44..48].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let e = XlHeader::parse(&huge).unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::Oversized {
                claimed: 0xFFFF_FFF0,
                ..
            }
        ),
        "{e}"
    );
    assert!(XlHeader::read(&mut huge.as_slice())
        .unwrap_err()
        .is_truncation());
    assert_eq!(validate_xl(&huge)[0].rule, "v2.stream.framing");

    let mut be = f.clone();
    be[32..36].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    assert!(XlHeader::parse(&be)
        .unwrap_err()
        .to_string()
        .contains("byteorder"));
    assert_eq!(validate_xl(&be)[0].rule, "v2.xl.byteorder");

    let mut flag = f.clone();
    flag[36] = 7;
    assert!(XlHeader::parse(&flag).is_err());
    assert_eq!(validate_xl(&flag)[0].rule, "v2.xl.mandatory-flags");

    let mut magic = f.clone();
    magic[0] = b'x';
    assert!(XlHeader::parse(&magic)
        .unwrap_err()
        .to_string()
        .contains("magic"));

    // A config length longer than the optional data.
    let mut h = XlHeader::with_json_config("{}");
    h.optional_data[0] = 200;
    assert!(h.config().is_err());

    // xl refuses a config_len that the optional data cannot hold
    // ("Savefile truncated"): so do validate and every opener, at byte 48.
    for len in [0xFFFF_FFFFu32, 4] {
        let mut bad = f.clone();
        bad[48..52].copy_from_slice(&len.to_le_bytes());
        let v = validate_xl(&bad);
        let hit = v.iter().find(|x| x.rule == "v2.xl.config-length");
        assert_eq!(hit.map(|x| x.offset), Some(48), "{len:#x}: {v:?}");
        let e = hvm_format::image::open_any_read(&bad[..], Default::default())
            .err()
            .expect("opening refuses it");
        assert_eq!(e.offset, 48, "{e}");
    }
    // The config exactly filling the optional data is fine.
    assert!(validate_xl(&f)
        .iter()
        .all(|x| x.rule != "v2.xl.config-length"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Corrupt or truncate a good stream anywhere: every reader and the
    /// validator return (Ok or Err), never panic, never hang (each item
    /// advances the reader within the input).
    #[test]
    fn corrupted_streams_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        libxl in any::<bool>(),
    ) {
        let mut s = if libxl {
            let mut w = LibxlWriter::new(Vec::new(), LibxlHeader::new(true)).unwrap();
            w.libxc(ImageHeader::new(3), DomainHeader::hvm(0, 1), |x| {
                x.record(&RecordBody::StaticDataEnd)?;
                x.page_data(&[PageDataEntry::page(1)], &[7; PAGE_SIZE])?;
                Ok(())
            }).unwrap();
            w.finish().unwrap()
        } else {
            good_stream()
        };
        for (i, b) in edits {
            let at = i.index(s.len());
            s[at] = b;
        }
        let s = &s[..cut.index(s.len() + 1)];
        // Never hang: every item a reader yields moves it forward and stays
        // within the input, so the loops end by themselves (no cap).
        let len = s.len() as u64;
        macro_rules! drain {
            ($r:expr, $next:ident) => {{
                let mut r = $r;
                loop {
                    let before = r.offset();
                    match r.$next() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                    let after = r.offset();
                    prop_assert!(after > before, "an item at {} did not advance", before);
                    prop_assert!(after <= len, "read to {} past the input's {} bytes", after, len);
                }
            }};
        }
        if libxl {
            let _ = validate_libxl(s);
            if let Ok(r) = LibxlReader::new(s) {
                drain!(r, next_item);
            }
        } else {
            let _ = validate_libxc(s);
            if let Ok(r) = SliceReader::new(s) {
                drain!(r, next_record);
            }
            if let Ok(r) = Reader::new(s) {
                drain!(r, next_record);
            }
        }
        let _ = validate_xl(s);
    }
}

/// What follows a libxc image's END: the converter's device model record,
/// read back exactly; trailing bytes counted; a record that lies about its
/// length fails at the state's offset without allocating what it claims.
#[test]
fn after_end_reads_the_device_model_record_and_counts_the_rest() {
    use hvm_format::v2::AfterEnd;
    let image = good_stream();
    let end = image.len() as u64;
    let dm = |len: u32, data: &[u8], junk: &[u8]| {
        let mut v = image.clone();
        v.extend_from_slice(b"DeviceModelRecord0002");
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(data);
        v.extend_from_slice(junk);
        v
    };
    let drain = |r: &mut Reader<&[u8]>| while r.next_raw().unwrap().is_some() {};

    // Nothing after END; asking again is harmless.
    let mut r = Reader::new(&image[..]).unwrap();
    assert_eq!(r.after_end().unwrap(), AfterEnd::Nothing, "before END");
    drain(&mut r);
    assert_eq!(r.after_end().unwrap(), AfterEnd::Nothing);
    assert_eq!(r.after_end().unwrap(), AfterEnd::Nothing);

    // The record, then 3 stray bytes.
    let s = dm(5, b"QEVM!", b"xyz");
    let mut r = Reader::new(&s[..]).unwrap();
    drain(&mut r);
    assert_eq!(
        r.after_end().unwrap(),
        AfterEnd::DeviceModel {
            offset: end,
            data_offset: end + 25,
            data: b"QEVM!"
        }
    );
    assert_eq!(
        r.after_end().unwrap(),
        AfterEnd::Trailing {
            offset: end + 30,
            len: 3,
            more: false
        }
    );
    assert_eq!(r.after_end().unwrap(), AfterEnd::Nothing);

    // Something else entirely, shorter than the signature.
    let mut s = image.clone();
    s.extend_from_slice(b"Device");
    let mut r = Reader::new(&s[..]).unwrap();
    drain(&mut r);
    assert_eq!(
        r.after_end().unwrap(),
        AfterEnd::Trailing {
            offset: end,
            len: 6,
            more: false
        }
    );

    // A length of 4 GiB over 4 bytes of state: truncated at the state.
    let s = dm(u32::MAX, b"QEVM", b"");
    let mut r = Reader::new(&s[..]).unwrap();
    drain(&mut r);
    let e = r.after_end().unwrap_err();
    assert_eq!(e.offset, end + 25, "{e}");
    assert_eq!(e.context.to_string(), "device model record › state");
    // The length itself cut short.
    let mut s = image.clone();
    s.extend_from_slice(b"DeviceModelRecord0002\x05\x00");
    let mut r = Reader::new(&s[..]).unwrap();
    drain(&mut r);
    let e = r.after_end().unwrap_err();
    assert_eq!(e.offset, end + 21, "{e}");
    assert_eq!(e.context.to_string(), "device model record › length");
}

/// Findings are capped per rule, as in the legacy checker: 100 000 empty
/// optional records would otherwise be 100 000 findings.
#[test]
fn v2_findings_are_capped_per_rule_with_a_count_of_the_rest() {
    use hvm_format::rules::PER_RULE_CAP;
    let mut s = good_stream();
    // Drop END (an empty record of type 0, the last 8 bytes), add 100 000
    // records of an unknown type, then END again.
    let end = s.split_off(s.len() - 8);
    for _ in 0..100_000 {
        rec(&mut s, 0x7FFF_0000, 0, &[]);
    }
    s.extend_from_slice(&end);
    let f = hvm_format::v2::check_libxc(&s);
    let rule = f.kept().last().expect("findings").rule;
    let same = f.kept().iter().filter(|x| x.rule == rule).count();
    assert_eq!(same, PER_RULE_CAP, "{rule}");
    let sup = f.suppressed();
    let n = sup.iter().find(|(r, _)| r == rule).map(|(_, n)| *n);
    assert_eq!(n, Some(100_000 - PER_RULE_CAP as u64), "{sup:?}");
    assert_eq!(f.total(), f.kept().len() as u64 + n.unwrap());
    assert!(validate_libxc(&s).len() < 10 * PER_RULE_CAP);
}

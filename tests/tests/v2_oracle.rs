//! Xen's own `verify-stream-v2` (Debian xen-utils-4.17) as an external
//! oracle: what our writer produces it accepts, in libxc, libxl and xl
//! framing; what our validator rejects it rejects too.
//!
//! The tools are found under `$HVM_XEN_ORACLE` (default
//! `<workspace>/target/xen-oracle`), unpacked there by
//! `scripts/install-xen-oracle.sh`. Without them each test prints a loud
//! SKIPPED line and passes; CI installs them.

use std::borrow::Cow;
use std::io::Write;

use hvm_format::rules::Severity;
use hvm_format::v2::libxc::{
    DomainHeader, HvmParam, HvmParams, ImageHeader, PageDataEntry, RecordBody, TscInfo,
};
use hvm_format::v2::libxl::{EmulatorId, LibxlHeader, LibxlRecord, LibxlWriter};
use hvm_format::v2::writer::Writer;
use hvm_format::v2::xl::XlHeader;
use hvm_format::v2::{validate_libxc, validate_libxl, validate_xl};
use hvm_format::PAGE_SIZE;

use hvm_tests::oracle::Oracle;
use hvm_tests::oracle_or_skip;

/// HVM_CONTEXT blob by hand: descriptor (u16 type, u16 instance, u32 len)
/// HEADER (magic, version, changeset, cpuid, gtsc_khz), then END.
fn hvm_blob() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&24u32.to_le_bytes());
    b.extend_from_slice(&0x5438_1286u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0x0006_06F1u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// The libxc records of the oracle stream (headers and END excluded).
fn write_records<W: Write>(w: &mut Writer<W>) -> hvm_format::Result<()> {
    w.record(&RecordBody::StaticDataEnd)?;
    let pages: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    w.page_data(
        &[
            PageDataEntry::page(0),
            PageDataEntry::xtab(0xA0),
            PageDataEntry::page(0x1F),
        ],
        &pages,
    )?;
    w.record(&RecordBody::X86TscInfo(TscInfo {
        mode: 0,
        khz: 2_400_000,
        nsec: 1_000_000,
        incarnation: 0,
        reserved: 0,
    }))?;
    w.record(&RecordBody::HvmParams(HvmParams::from_pairs([
        (HvmParam::IOREQ_PFN, 0x1FFFE),
        (HvmParam::BUFIOREQ_PFN, 0x1FFFF),
        (HvmParam::STORE_PFN, 0x1FFFD),
    ])))?;
    w.record(&RecordBody::HvmContext(Cow::Owned(hvm_blob())))?;
    Ok(())
}

fn libxc_stream() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), ImageHeader::new(3), DomainHeader::hvm(4, 17)).unwrap();
    write_records(&mut w).unwrap();
    w.finish().unwrap()
}

fn libxl_body(w: Vec<u8>, offset: u64) -> Vec<u8> {
    let mut l = LibxlWriter::with_offset(w, offset, LibxlHeader::new(false)).unwrap();
    l.libxc(ImageHeader::new(3), DomainHeader::hvm(4, 17), |x| {
        write_records(x)
    })
    .unwrap();
    l.record(&LibxlRecord::EmulatorContext {
        emulator: EmulatorId::QemuUpstream,
        index: 0,
        data: Cow::Borrowed(b"QEVM\0\0\0\x03device state"),
    })
    .unwrap();
    l.finish().unwrap()
}

fn xl_file() -> Vec<u8> {
    let hdr = XlHeader::with_json_config(r#"{"c_info":{"type":"hvm","name":"oracle"}}"#);
    let mut f = Vec::new();
    let at = hdr.write(&mut f).unwrap();
    libxl_body(f, at)
}

fn no_errors(findings: &[hvm_format::rules::Finding]) -> bool {
    findings.iter().all(|f| f.severity != Severity::Error)
}

#[test]
fn oracle_accepts_our_streams_in_all_framings() {
    let o = oracle_or_skip!();
    let cases = [
        ("libxc", libxc_stream()),
        ("libxl", libxl_body(Vec::new(), 0)),
        ("xl", xl_file()),
    ];
    for (format, stream) in cases {
        let ours = match format {
            "libxc" => validate_libxc(&stream),
            "libxl" => validate_libxl(&stream),
            _ => validate_xl(&stream),
        };
        assert!(no_errors(&ours), "{format}: our validator: {ours:?}");
        let (code, out, err) = o.verify_stdin(format, &stream);
        assert_eq!(code, 0, "{format}: verify-stream-v2 failed:\n{out}\n{err}");
        // It really walked the records we wrote.
        for needle in [
            "Libxc Image Header: Version 3",
            "Domain Header: x86 HVM from Xen 4.17",
            "Libxc Record: Static data end",
            "Squashed 1 Page Data records together",
            "Libxc Record: TSC info, length 24",
            "Libxc Record: HVM params, length 56",
            "Libxc Record: HVM context, length 40",
            "Libxc Record: End",
        ] {
            assert!(out.contains(needle), "{format}: no {needle:?} in:\n{out}");
        }
        if format != "libxc" {
            assert!(out.contains("Libxl Record: Emulator context"), "{out}");
        }
        eprintln!("oracle accepted {format} stream of {} bytes", stream.len());
    }
}

/// Patch a stream, check that both our validator and Xen's reject it.
fn both_reject(o: &Oracle, format: &str, stream: &[u8], rule: &str, xen_says: &str) {
    let ours = match format {
        "libxc" => validate_libxc(stream),
        "libxl" => validate_libxl(stream),
        _ => validate_xl(stream),
    };
    assert!(
        ours.iter()
            .any(|f| f.rule == rule && f.severity == Severity::Error),
        "{format}: expected {rule}, got {ours:?}"
    );
    let (code, out, err) = o.verify_stdin(format, stream);
    assert_ne!(
        code, 0,
        "{format}: verify-stream-v2 accepted a stream with {rule}:\n{out}"
    );
    assert!(
        err.contains(xen_says),
        "{format}: expected {xen_says:?} from verify-stream-v2, got:\n{err}"
    );
}

#[test]
fn oracle_rejects_what_our_validator_rejects() {
    let o = oracle_or_skip!();
    let good = libxc_stream();
    // Record offsets: headers 40, STATIC_DATA_END 40..48, PAGE_DATA at 48.
    let tsc_at = 48 + 8 + 8 + 3 * 8 + 2 * PAGE_SIZE;
    assert_eq!(&good[tsc_at..tsc_at + 4], &8u32.to_le_bytes());
    let hvm_params_at = tsc_at + 8 + 24;
    let hvm_ctx_at = hvm_params_at + 8 + 56;
    assert_eq!(
        &good[hvm_ctx_at..hvm_ctx_at + 8],
        &[9, 0, 0, 0, 40, 0, 0, 0]
    );

    // Non-zero padding: shorten the HVM context by one byte (the blob's
    // last byte becomes padding) and make that padding byte non-zero.
    let mut s = good.clone();
    s[hvm_ctx_at + 4] = 39;
    s[hvm_ctx_at + 8 + 39] = 0xAA;
    both_reject(
        &o,
        "libxc",
        &s,
        "v2.record.padding",
        "Padding containing non0 bytes",
    );

    // Reserved word of TSC_INFO set.
    let mut s = good.clone();
    s[tsc_at + 8 + 20] = 1;
    both_reject(
        &o,
        "libxc",
        &s,
        "v2.tsc-info.reserved",
        "Reserved bits set in X86_TSC_INFO",
    );

    // A pfn type 5..8 in PAGE_DATA.
    let mut s = good.clone();
    s[48 + 16 + 7] = 0x60;
    both_reject(
        &o,
        "libxc",
        &s,
        "v2.page-data.pfn-type",
        "Invalid type value in pfn[0]",
    );

    // STATIC_DATA_END in a version 2 image.
    let mut s = good.clone();
    s[15] = 2;
    both_reject(
        &o,
        "libxc",
        &s,
        "v2.record.v3-only",
        "Static data end record found in v2 stream",
    );

    // HVM_PARAMS count disagreeing with its length.
    let mut s = good.clone();
    s[hvm_params_at + 8] = 4;
    both_reject(&o, "libxc", &s, "v2.hvm-params.length", "Length should be");

    // An optional (bit 31) record type: the verifier tolerates no unknown type.
    let mut s = good.clone();
    s[hvm_ctx_at + 3] = 0x80;
    both_reject(
        &o,
        "libxc",
        &s,
        "v2.record.unknown-type",
        "Unrecognised record type 0x80000009",
    );

    // Truncation inside the PAGE_DATA pages.
    both_reject(
        &o,
        "libxc",
        &good[..48 + 100],
        "v2.stream.framing",
        "Stream truncated",
    );

    // The same padding defect inside the libxl and xl framings.
    for (format, stream) in [("libxl", libxl_body(Vec::new(), 0)), ("xl", xl_file())] {
        let at = stream
            .windows(8)
            .rposition(|w| w == [9, 0, 0, 0, 40, 0, 0, 0])
            .unwrap();
        let mut s = stream.clone();
        s[at + 4] = 39;
        s[at + 8 + 39] = 0x01;
        both_reject(
            &o,
            format,
            &s,
            "v2.record.padding",
            "Padding containing non0 bytes",
        );
    }
}

//! Envelope tests on hand-built files (docs/format.md §4, §8).

use super::*;

const CONFIG: &[u8] = b"(domain (domid 3) (name hvm1) (memory 256) (image (hvm (vcpus 1))))";

/// signature | be32 len | config | fake libxc bytes | qemu tail.
fn xend_file(stream: &[u8], qevm: &[u8]) -> Vec<u8> {
    let mut f = b"LinuxGuestRecord".to_vec();
    f.extend_from_slice(&(CONFIG.len() as u32).to_be_bytes());
    f.extend_from_slice(CONFIG);
    f.extend_from_slice(stream);
    f.extend_from_slice(b"QemuDeviceModelRecord");
    f.extend_from_slice(qevm);
    f
}

#[test]
fn header_from_slice_and_pipe() {
    let file = xend_file(b"STREAM", &qevm::empty_qevm());
    let h = parse_xend_header(&file).unwrap();
    assert_eq!(h.config_text, CONFIG);
    assert_eq!(h.config_offset, 20);
    assert_eq!(h.stream_offset, 20 + CONFIG.len() as u64);
    let cfg = h.config().unwrap();
    assert_eq!(cfg.get_u64("domid"), Some(3));
    assert_eq!(cfg.get_u64("memory"), Some(256));
    assert_eq!(cfg.get_str("name"), Some("hvm1"));
    assert_eq!(
        cfg.lookup(&["image", "hvm", "vcpus"]).and_then(Sxp::as_str),
        Some("1")
    );

    // A pipe: no total length; the reader stops at the stream.
    let mut pipe = std::io::Cursor::new(file.clone());
    let h2 = read_xend_header(&mut pipe, None).unwrap();
    assert_eq!(h2, h);
    assert_eq!(pipe.position(), h.stream_offset);
}

#[test]
fn writer_matches_hand_built_bytes() {
    let mut out = Vec::new();
    let n = write_xend_header(&mut out, CONFIG).unwrap();
    out.extend_from_slice(b"STREAM");
    let m = write_qemu_tail(&mut out, &qevm::empty_qevm()).unwrap();
    assert_eq!(out, xend_file(b"STREAM", &qevm::empty_qevm()));
    assert_eq!(n, 20 + CONFIG.len() as u64);
    assert_eq!(m, 21 + 8);
    assert!(write_xend_header(&mut Vec::new(), &vec![b'x'; MAX_CONFIG_LEN as usize + 1]).is_err());
}

#[test]
fn bad_signature_shows_what_was_found() {
    let mut file = xend_file(b"", b"");
    file[..16].copy_from_slice(b"LinuxGuestRec\x00\xffd");
    let e = parse_xend_header(&file).unwrap_err();
    assert_eq!(e.offset, 0);
    let msg = e.to_string();
    assert!(msg.contains("LinuxGuestRec\\0\\xffd"), "{msg}");
    assert!(msg.contains("expected 'LinuxGuestRecord'"), "{msg}");

    let e = parse_xend_header(b"Linux").unwrap_err();
    assert!(e.is_truncation());
    let e = parse_xend_header(b"hello").unwrap_err();
    assert!(
        e.to_string()
            .contains("'hello' (5 bytes, then end of input)"),
        "{e}"
    );
}

fn with_len(len: i32, body: &[u8]) -> Vec<u8> {
    let mut f = b"LinuxGuestRecord".to_vec();
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A reader that fails the test if anyone tries to read past the header,
/// proving a hostile length is refused before reading (and allocating).
struct HeaderOnly(std::io::Cursor<Vec<u8>>);
impl Read for HeaderOnly {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(self.0.position() < 20, "read past the config length");
        let room = 20 - self.0.position() as usize;
        let n = buf.len().min(room);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn hostile_config_lengths_are_refused_before_reading() {
    for len in [i32::MAX, MAX_CONFIG_LEN as i32 + 1] {
        let mut r = HeaderOnly(std::io::Cursor::new(with_len(len, b"")));
        let e = read_xend_header(&mut r, None).unwrap_err();
        assert_eq!(e.offset, 16);
        assert!(e.to_string().contains(&len.to_string()), "{e}");
    }
    for len in [-1, i32::MIN] {
        let mut r = HeaderOnly(std::io::Cursor::new(with_len(len, b"")));
        let e = read_xend_header(&mut r, None).unwrap_err();
        assert_eq!(e.offset, 16);
        assert!(e.to_string().contains("non-negative"), "{e}");
        assert!(e.to_string().contains(&len.to_string()), "{e}");
    }
    // Within the cap but past the end of a file of known size.
    let e = parse_xend_header(&with_len(1000, b"(domain)")).unwrap_err();
    assert!(matches!(
        e.kind,
        ErrorKind::Oversized {
            claimed: 1000,
            remaining: 8,
            ..
        }
    ));
    // On a pipe the same input is a truncation at the end of what came.
    let mut pipe = &with_len(1000, b"(domain)")[..];
    let e = read_xend_header(&mut pipe, None).unwrap_err();
    assert!(e.is_truncation());
    assert_eq!(e.offset, 28);
    // Zero is structurally fine; the empty config then fails to parse.
    let h = parse_xend_header(&with_len(0, b"")).unwrap();
    assert_eq!(h.stream_offset, 20);
    assert_eq!(h.config().unwrap_err().offset, 20);
}

#[test]
fn an_unparsable_xend_config_is_refused_at_open() {
    // xend could not restore these: nesting past the parser's limit, an
    // unterminated string, invalid UTF-8 in an atom.
    let deep = [b"(".repeat(300), b")".repeat(300)].concat();
    for config in [
        &deep[..],
        b"(domain (name \"x))",
        b"(domain (name \xff\xfe))",
    ] {
        let mut f = with_len(config.len() as i32, config);
        f.extend_from_slice(&[0u8; 64]);
        let h = parse_xend_header(&f).unwrap();
        let want = h.config().unwrap_err().offset;
        let e = crate::image::open_slice(&f, Default::default())
            .err()
            .expect("open_slice refuses it");
        assert_eq!(e.offset, want, "{e}");
        assert!(e.offset >= 20, "{e}");
        let e = crate::image::open_read(&f[..], Default::default())
            .err()
            .expect("open_read refuses it");
        assert_eq!(e.offset, want, "{e}");
    }
}

#[test]
fn qevm_tail_of_endless_zeros_stops_at_the_section_cap() {
    // Zeros after the header are empty 13-byte sections, forever on a pipe.
    let head = qevm::empty_qevm();
    let endless = head.as_slice().chain(std::io::repeat(0).take(64 << 20));
    let l = qevm::list_reader(endless, 100);
    assert_eq!(l.sections.len(), qevm::MAX_SECTIONS);
    let e = l.error.expect("stopped with an error");
    let at = 100 + 8 + 13 * qevm::MAX_SECTIONS as u64;
    assert_eq!(e.offset, at, "{e}");
    assert!(e.to_string().contains("more bytes follow"), "{e}");
    // Exactly at the cap with nothing after it is a clean end.
    let mut exact = qevm::empty_qevm().to_vec();
    exact.extend(std::iter::repeat_n(0u8, 13 * qevm::MAX_SECTIONS));
    let l = qevm::list_slice(&exact, 0);
    assert_eq!(l.sections.len(), qevm::MAX_SECTIONS);
    assert!(l.error.is_none(), "{:?}", l.error);
}

#[test]
fn config_parse_errors_are_file_offsets() {
    let h = parse_xend_header(&with_len(9, b"(domain (")).unwrap();
    let e = h.config().unwrap_err();
    assert_eq!(e.offset, 29);
    assert!(e.to_string().contains("list opened at byte 8"), "{e}");
}

#[test]
fn qemu_tail_lists_sections() {
    let mut w = QevmWriter::new(Vec::new()).unwrap();
    w.section(b"timer", 0, 1, &[1, 2, 3]).unwrap();
    w.section(b"cpu", 0, 4, &[9; 10]).unwrap();
    let q = w.finish().unwrap();
    let file = xend_file(b"STREAM", &q);
    let stream_end = 20 + CONFIG.len() as u64 + 6;
    let tail = parse_qemu_tail(&file[stream_end as usize..], stream_end).unwrap();
    assert_eq!(tail.signature_offset, stream_end);
    assert_eq!(tail.qevm_offset, stream_end + 21);
    assert!(tail.listing.is_complete());
    let ids: Vec<_> = tail.listing.sections.iter().map(|s| s.id_str()).collect();
    assert_eq!(ids, ["timer", "cpu"]);
    // First section header: 8-byte QEVM header, then id_len + "timer" + 12.
    assert_eq!(tail.listing.sections[0].offset, stream_end + 21 + 8);
    assert_eq!(
        tail.listing.sections[0].payload_offset,
        stream_end + 21 + 8 + 18
    );
    assert_eq!(
        tail.listing.sections[1].payload(&file, 0),
        Some(&[9u8; 10][..])
    );
    assert_eq!(tail.listing.end, file.len() as u64);
}

#[test]
fn wrong_tail_signature_names_what_was_found() {
    let file = xend_file(b"", b"");
    let start = 20 + CONFIG.len();
    // Pretend the stream ended one byte early.
    let e = parse_qemu_tail(&file[start - 1..], start as u64 - 1).unwrap_err();
    assert_eq!(e.offset, start as u64 - 1);
    assert!(e.to_string().contains("')QemuDeviceModelRecor'"), "{e}");
    let e = parse_qemu_tail(b"", 500).unwrap_err();
    assert!(e.is_truncation());
    assert_eq!(e.offset, 500);
    let e = parse_qemu_tail(b"DeviceModelRecord0002", 7).unwrap_err();
    assert!(e.to_string().contains("DeviceModelRecord0002"), "{e}");
}

#[test]
fn sniff_each_kind() {
    let xend = xend_file(b"", b"");
    let s = sniff(&xend);
    assert_eq!(s.kind, EnvelopeKind::Xend);
    assert!(s
        .evidence
        .iter()
        .any(|e| e.contains(&format!("length {}", CONFIG.len()))));
    assert!(s.evidence.iter().any(|e| e.contains("(domain")));

    let mut xl = XL_MAGIC.to_vec();
    xl.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    xl.extend_from_slice(&3u32.to_le_bytes());
    let s = sniff(&xl);
    assert_eq!(s.kind, EnvelopeKind::Xl);
    assert!(
        s.evidence.iter().any(|e| e.contains("STREAMv2")),
        "{:?}",
        s.evidence
    );

    let mut libxl = b"LibxlFmt".to_vec();
    libxl.extend_from_slice(&2u32.to_be_bytes());
    let s = sniff(&libxl);
    assert_eq!(s.kind, EnvelopeKind::LibxlV2);
    assert!(s.evidence.iter().any(|e| e.contains("version 2")));

    let mut libxc = vec![0xFF; 8];
    libxc.extend_from_slice(b"XENF");
    libxc.extend_from_slice(&3u32.to_be_bytes());
    let s = sniff(&libxc);
    assert_eq!(s.kind, EnvelopeKind::LibxcV2);
    assert!(s.evidence.iter().any(|e| e.contains("version 3")));

    assert_eq!(
        sniff(b"LibvirtQemudSave\x02\0\0\0").kind,
        EnvelopeKind::LibvirtQemu
    );
    assert_eq!(
        sniff(b"LibvirtQemudPart\x02\0\0\0").kind,
        EnvelopeKind::LibvirtQemu
    );
    assert_eq!(sniff(b"LibvirtXMLSave\0\0").kind, EnvelopeKind::LibvirtXml);
    assert_eq!(
        sniff(b"libvirt-xml\n \0 \r\x01\0\0\0").kind,
        EnvelopeKind::LibvirtXml
    );

    // Bare 64-bit seed stream: max_pfn 0x1FFFF, first batch of 1024.
    let mut bare64 = 0x1FFFFu64.to_le_bytes().to_vec();
    bare64.extend_from_slice(&1024u32.to_le_bytes());
    let s = sniff(&bare64);
    assert_eq!(s.kind, EnvelopeKind::BareLibxc);
    assert!(s
        .evidence
        .iter()
        .any(|e| e.contains("64-bit max_pfn 0x1ffff")));

    // Bare 32-bit: the batch count sits in bytes 4–7.
    let mut bare32 = 0x1FFFFu32.to_le_bytes().to_vec();
    bare32.extend_from_slice(&1024u32.to_le_bytes());
    bare32.extend_from_slice(&[0x34, 0x12, 0, 0]);
    let s = sniff(&bare32);
    assert_eq!(s.kind, EnvelopeKind::BareLibxc);
    assert!(s.evidence.iter().any(|e| e.contains("32-bit max_pfn")));

    assert_eq!(
        sniff(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0").kind,
        EnvelopeKind::Unknown
    );
    assert_eq!(sniff(b"").kind, EnvelopeKind::Unknown);
    let s = sniff(b"LinuxGu");
    assert_eq!(s.kind, EnvelopeKind::Unknown);
    assert!(s.evidence[0].contains("prefix of the xend magic"));
    // xend refuses a max_pfn over 16 Mi, so that is not a bare stream.
    let mut huge = (32u64 << 20).to_le_bytes().to_vec();
    huge.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(sniff(&huge).kind, EnvelopeKind::Unknown);
}

#[test]
fn escape_bytes_is_readable() {
    assert_eq!(escape_bytes(b"ab\0\n\xff\\"), "ab\\0\\n\\xff\\\\");
}

#[test]
fn section_ids_are_shown_escaped() {
    let mut w = QevmWriter::new(Vec::new()).unwrap();
    w.section(b"a\xffb", 1, 2, &[]).unwrap();
    let l = qevm::list_slice(&w.finish().unwrap(), 0);
    assert_eq!(l.sections[0].id, b"a\xffb");
    assert_eq!(l.sections[0].id_str(), "a\\xffb");
}

proptest::proptest! {
    #[test]
    fn xend_header_round_trips(config in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                               stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
        let mut file = Vec::new();
        let n = write_xend_header(&mut file, &config).unwrap();
        file.extend_from_slice(&stream);
        let h = parse_xend_header(&file).unwrap();
        proptest::prop_assert_eq!(&h.config_text, &config);
        proptest::prop_assert_eq!(h.stream_offset, n);
        proptest::prop_assert_eq!(&file[n as usize..], &stream[..]);
    }

    #[test]
    fn header_reader_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
        let _ = parse_xend_header(&bytes);
        let _ = sniff(&bytes);
        let _ = parse_qemu_tail(&bytes, 0);
    }
}

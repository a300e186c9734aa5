//! The qemu-dm state file xend appends after `QemuDeviceModelRecord`.
//!
//! `qemu_savevm` of Xen's `tools/ioemu/vl.c` (@ `e2a44bc7a4`), all
//! big-endian:
//!
//! ```text
//! be32 magic 0x5145564D ("QEVM")   be32 version 1
//! { u8 id_len, id[id_len], be32 instance_id, be32 version_id,
//!   be32 length, payload[length] }*   until end of file
//! ```
//!
//! There is no section count and no end marker: the file ends where the
//! sections end. `qemu_loadvm` skips sections it does not know by their
//! length, so a listing only needs the headers.

use std::io::{self, Read, Write};

use crate::bytes::{read_full, ByteReader};
use crate::diag::Finding;
use crate::diag::{Context, Error, ErrorKind, Result};

use super::escape_bytes;

/// `QEMU_VM_FILE_MAGIC`: "QEVM".
pub const QEVM_MAGIC: u32 = 0x5145_564D;
/// `QEMU_VM_FILE_VERSION` of 2007 qemu-dm.
pub const QEVM_VERSION: u32 = 1;
/// Magic plus version.
pub(crate) const QEVM_HEADER_LEN: u64 = 8;
/// id length byte + instance + version + length, without the id.
const SECTION_FIXED_LEN: u64 = 1 + 12;
/// Sections a listing keeps. qemu-traditional writes a few dozen; the cap
/// keeps a tail of endless zeros (13-byte empty sections) from growing the
/// listing without bound.
pub(crate) const MAX_SECTIONS: usize = 4096;
/// Bytes of sections a listing reads. qemu-traditional's device state is a
/// few MiB (its largest section is the VGA memory); past this the tail is
/// refused rather than read to the end of a possibly endless pipe.
pub(crate) const MAX_QEVM_BYTES: u64 = 1 << 30;

/// One section header of a QEVM file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QevmSection {
    /// Section name (`timer`, `cpu`, `ide`, …); bytes, shown escaped.
    #[serde(serialize_with = "ser_escaped")]
    pub id: Vec<u8>,
    /// Which instance of a device (`instance_id`).
    pub instance_id: u32,
    /// The device's own state version (`version_id`).
    pub version_id: u32,
    /// Payload length.
    pub length: u32,
    /// File offset of the section header (its id length byte).
    pub offset: u64,
    /// File offset of the payload.
    pub payload_offset: u64,
}

fn ser_escaped<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&escape_bytes(b))
}

impl QevmSection {
    /// The id as text, with bytes that are not printable ASCII escaped.
    pub fn id_str(&self) -> String {
        escape_bytes(&self.id)
    }

    /// The file offset just past the payload.
    pub fn end(&self) -> u64 {
        self.payload_offset + u64::from(self.length)
    }

    /// The payload, given the file (or the part of it starting at `base`).
    pub fn payload<'a>(&self, data: &'a [u8], base: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(self.payload_offset.checked_sub(base)?).ok()?;
        let end = start.checked_add(usize::try_from(self.length).ok()?)?;
        data.get(start..end)
    }
}

/// What a permissive pass over a QEVM file found: every complete section,
/// and the error that stopped it, if any.
#[derive(Debug, serde::Serialize)]
pub struct QevmListing {
    /// Sections read completely, in file order.
    pub sections: Vec<QevmSection>,
    /// Why the listing stopped before the end of the input (bad header,
    /// truncated last section, I/O error); `None` when it reached a clean
    /// end.
    #[serde(serialize_with = "ser_error")]
    pub error: Option<Error>,
    /// File offset where the listing stopped (the end of the last complete
    /// section, or of the header).
    pub end: u64,
}

fn ser_error<S: serde::Serializer>(
    e: &Option<Error>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

impl QevmListing {
    /// Strict view: the sections, or the error.
    pub fn into_result(self) -> Result<Vec<QevmSection>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.sections),
        }
    }

    /// True when every byte up to the end of the input was accounted for.
    pub fn is_complete(&self) -> bool {
        self.error.is_none()
    }

    /// The error as a rules finding: `xend.qevm.header` (bad magic or
    /// version), `xend.qevm.truncated` (input ends inside the header or a
    /// section) or `xend.qevm.io`.
    pub fn findings(&self) -> Vec<Finding> {
        let Some(e) = &self.error else {
            return Vec::new();
        };
        let rule = match e.kind {
            ErrorKind::Truncated { .. } | ErrorKind::Oversized { .. } => "xend.qevm.truncated",
            ErrorKind::Io(_) => "xend.qevm.io",
            _ => "xend.qevm.header",
        };
        vec![Finding::error(
            rule,
            e.offset,
            e.context.clone(),
            e.kind.to_string(),
        )]
    }
}

fn qevm_ctx() -> Context {
    Context::root().field("qemu-dm state")
}

fn io_err(offset: u64, ctx: Context, e: io::Error) -> Error {
    Error::new(offset, ctx, ErrorKind::Io(e))
}

/// Read exactly `buf.len()` bytes at file offset `at`.
fn exact<R: Read>(r: &mut R, buf: &mut [u8], at: u64, ctx: &Context) -> Result<()> {
    let got = read_full(r, buf).map_err(|e| io_err(at, ctx.clone(), e.error))?;
    if got < buf.len() {
        return Err(Error::truncated(
            at + got as u64,
            ctx.clone(),
            (buf.len() - got) as u64,
            0,
        ));
    }
    Ok(())
}

/// Check the 8-byte QEVM header at file offset `base`.
pub(crate) fn check_header(header: &[u8; 8], base: u64) -> Result<()> {
    let mut h = ByteReader::new(header, base, &qevm_ctx());
    let magic: u32 = h.be("magic")?;
    let version: u32 = h.be("version")?;
    if magic != QEVM_MAGIC {
        return Err(Error::invalid(
            base,
            qevm_ctx().field("magic"),
            "0x5145564d ('QEVM')",
            format!("0x{magic:08x} ({})", escape_bytes(&header[..4])),
        ));
    }
    if version != QEVM_VERSION {
        return Err(Error::invalid(
            base + 4,
            qevm_ctx().field("version"),
            "1",
            version.to_string(),
        ));
    }
    Ok(())
}

/// List the sections of a QEVM file read from `r`, which starts at file
/// offset `base`. Payloads are skipped, not stored, so this works on a pipe
/// of any length in constant memory. Permissive: an error ends the listing
/// but keeps what came before.
pub fn list_reader<R: Read>(mut r: R, base: u64) -> QevmListing {
    let mut listing = QevmListing {
        sections: Vec::new(),
        error: None,
        end: base,
    };
    let mut header = [0u8; 8];
    if let Err(e) = exact(&mut r, &mut header, base, &qevm_ctx().field("header"))
        .and_then(|()| check_header(&header, base))
    {
        listing.error = Some(e);
        return listing;
    }
    let mut pos = base + QEVM_HEADER_LEN;
    listing.end = pos;
    loop {
        let n = listing.sections.len() as u64;
        let ctx = qevm_ctx().index("section", n);
        let read = pos - base;
        if listing.sections.len() >= MAX_SECTIONS || read > MAX_QEVM_BYTES {
            let mut one = [0u8; 1];
            match read_full(&mut r, &mut one) {
                Ok(0) => return listing,
                Ok(_) => {
                    listing.error = Some(Error::invalid(
                        pos,
                        ctx,
                        format!(
                            "at most {MAX_SECTIONS} sections and {MAX_QEVM_BYTES} bytes of QEVM state"
                        ),
                        format!("{n} sections in {read} bytes, and more bytes follow (not read)"),
                    ));
                }
                Err(e) => listing.error = Some(io_err(pos, ctx, e.error)),
            }
            return listing;
        }
        match read_section(&mut r, pos, &ctx) {
            Ok(None) => return listing,
            Ok(Some(s)) => {
                pos = s.end();
                listing.end = pos;
                listing.sections.push(s);
            }
            Err(e) => {
                listing.error = Some(e);
                return listing;
            }
        }
    }
}

fn read_section<R: Read>(r: &mut R, pos: u64, ctx: &Context) -> Result<Option<QevmSection>> {
    let mut len = [0u8; 1];
    if read_full(r, &mut len).map_err(|e| io_err(pos, ctx.clone(), e.error))? == 0 {
        return Ok(None);
    }
    let id_len = usize::from(len[0]);
    let mut id = vec![0u8; id_len];
    exact(r, &mut id, pos + 1, &ctx.field("id"))?;
    let mut fixed = [0u8; 12];
    let fixed_at = pos + 1 + id_len as u64;
    exact(r, &mut fixed, fixed_at, &ctx.field("header"))?;
    let mut f = ByteReader::new(&fixed, fixed_at, ctx);
    let section = QevmSection {
        id,
        instance_id: f.be("instance_id")?,
        version_id: f.be("version_id")?,
        length: f.be("length")?,
        offset: pos,
        payload_offset: fixed_at + 12,
    };
    let want = u64::from(section.length);
    // At most 4 GiB per section: time, not memory, and bounded per section
    // by the listing's byte cap.
    let skipped = io::copy(&mut r.take(want), &mut io::sink())
        .map_err(|e| io_err(section.payload_offset, ctx.field("payload"), e))?;
    if skipped < want {
        return Err(Error::new(
            section.payload_offset,
            ctx.field("payload"),
            ErrorKind::Oversized {
                what: "QEVM section payload",
                claimed: want,
                remaining: skipped,
            },
        ));
    }
    Ok(Some(section))
}

/// List the sections of a QEVM file held in `data`, which starts at file
/// offset `base`. Same permissive rules as [`list_reader`].
pub fn list_slice(data: &[u8], base: u64) -> QevmListing {
    list_reader(data, base)
}

/// An 8-byte QEVM file with no sections: what a saver writes when it has
/// no device model state to carry.
pub fn empty_qevm() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&QEVM_MAGIC.to_be_bytes());
    b[4..].copy_from_slice(&QEVM_VERSION.to_be_bytes());
    b
}

/// Writes a QEVM file section by section.
pub struct QevmWriter<W> {
    out: W,
    pos: u64,
}

impl<W: Write> QevmWriter<W> {
    /// Start a file: writes the magic and version.
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(&empty_qevm())
            .map_err(|e| io_err(0, qevm_ctx().field("header"), e))?;
        Ok(QevmWriter {
            out,
            pos: QEVM_HEADER_LEN,
        })
    }

    /// Append one section. The id is at most 255 bytes and the payload at
    /// most `u32::MAX` bytes, as the format's length fields allow.
    pub fn section(
        &mut self,
        id: &[u8],
        instance_id: u32,
        version_id: u32,
        payload: &[u8],
    ) -> Result<()> {
        let ctx = qevm_ctx().field("section");
        let id_len = u8::try_from(id.len()).map_err(|_| {
            Error::invalid(
                self.pos,
                ctx.field("id"),
                "an id of at most 255 bytes",
                format!("{} bytes", id.len()),
            )
        })?;
        let length = u32::try_from(payload.len()).map_err(|_| {
            Error::invalid(
                self.pos,
                ctx.field("length"),
                "a payload of at most 4294967295 bytes",
                format!("{} bytes", payload.len()),
            )
        })?;
        let mut head = Vec::with_capacity(id.len() + SECTION_FIXED_LEN as usize);
        head.push(id_len);
        head.extend_from_slice(id);
        head.extend_from_slice(&instance_id.to_be_bytes());
        head.extend_from_slice(&version_id.to_be_bytes());
        head.extend_from_slice(&length.to_be_bytes());
        self.out
            .write_all(&head)
            .and_then(|()| self.out.write_all(payload))
            .map_err(|e| io_err(self.pos, ctx, e))?;
        self.pos += head.len() as u64 + u64::from(length);
        Ok(())
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Flush and hand back the sink.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .flush()
            .map_err(|e| io_err(self.pos, qevm_ctx(), e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hand-built: header, "timer" (instance 0, version 1, 4 bytes),
    /// "ide" (instance 2, version 3, 0 bytes).
    fn sample() -> Vec<u8> {
        let mut b = vec![0x51, 0x45, 0x56, 0x4D, 0, 0, 0, 1];
        b.push(5);
        b.extend_from_slice(b"timer");
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4]);
        b.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        b.push(3);
        b.extend_from_slice(b"ide");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn lists_sections_with_file_offsets() {
        let data = sample();
        let l = list_slice(&data, 1000);
        assert!(l.is_complete(), "{:?}", l.error);
        assert_eq!(l.end, 1000 + data.len() as u64);
        assert_eq!(
            l.sections,
            vec![
                QevmSection {
                    id: b"timer".to_vec(),
                    instance_id: 0,
                    version_id: 1,
                    length: 4,
                    offset: 1008,
                    payload_offset: 1026,
                },
                QevmSection {
                    id: b"ide".to_vec(),
                    instance_id: 2,
                    version_id: 3,
                    length: 0,
                    offset: 1030,
                    payload_offset: 1046,
                },
            ]
        );
        assert_eq!(
            l.sections[0].payload(&data, 1000),
            Some(&[0xDE, 0xAD, 0xBE, 0xEF][..])
        );
        // The Read path gives the same listing.
        let r = list_reader(std::io::Cursor::new(data.clone()), 1000);
        assert_eq!(r.sections, l.sections);
    }

    #[test]
    fn writer_reproduces_hand_built_bytes() {
        let mut w = QevmWriter::new(Vec::new()).unwrap();
        w.section(b"timer", 0, 1, &[0xDE, 0xAD, 0xBE, 0xEF])
            .unwrap();
        w.section(b"ide", 2, 3, &[]).unwrap();
        assert_eq!(w.position(), sample().len() as u64);
        assert_eq!(w.finish().unwrap(), sample());
        assert_eq!(&empty_qevm(), b"QEVM\0\0\0\x01");
        let l = list_slice(&empty_qevm(), 0);
        assert!(l.is_complete() && l.sections.is_empty());
        assert!(QevmWriter::new(Vec::new())
            .unwrap()
            .section(&[b'x'; 256], 0, 0, &[])
            .is_err());
    }

    #[test]
    fn truncated_last_section_keeps_earlier_ones() {
        let mut data = sample();
        // Third section claims 100 bytes, only 10 present.
        data.push(3);
        data.extend_from_slice(b"vga");
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100]);
        let payload_at = data.len() as u64;
        data.extend_from_slice(&[0; 10]);
        let l = list_slice(&data, 0);
        assert_eq!(l.sections.len(), 2);
        assert_eq!(l.end, sample().len() as u64);
        let e = l.error.as_ref().unwrap();
        assert_eq!(e.offset, payload_at);
        assert_eq!(e.context.to_string(), "qemu-dm state › section 2 › payload");
        let f = l.findings();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].offset, payload_at);
        assert!(list_slice(&data, 0).into_result().is_err());

        // Cut inside a section header.
        let mut cut = sample();
        cut.extend_from_slice(&[9, b'a', b'b']);
        let l = list_slice(&cut, 0);
        assert_eq!(l.sections.len(), 2);
        let e = l.error.unwrap();
        assert!(e.is_truncation());
        assert_eq!(e.offset, sample().len() as u64 + 3);
    }

    #[test]
    fn bad_magic_and_version() {
        let mut data = sample();
        data[0] = b'X';
        let e = list_slice(&data, 50).error.unwrap();
        assert_eq!(e.offset, 50);
        assert!(e.to_string().contains("XEVM"), "{e}");
        let mut data = sample();
        data[7] = 2;
        let e = list_slice(&data, 0).error.unwrap();
        assert_eq!(e.offset, 4);
        let e = list_slice(b"QEV", 0).error.unwrap();
        assert!(e.is_truncation());
    }

    proptest! {
        #[test]
        fn write_then_list_round_trips(
            sections in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20), any::<u32>(), any::<u32>(),
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..8)
        ) {
            let mut w = QevmWriter::new(Vec::new()).unwrap();
            for (id, inst, ver, payload) in &sections {
                w.section(id, *inst, *ver, payload).unwrap();
            }
            let bytes = w.finish().unwrap();
            let listing = list_slice(&bytes, 7);
            prop_assert!(listing.is_complete());
            prop_assert_eq!(listing.end, 7 + bytes.len() as u64);
            prop_assert_eq!(listing.sections.len(), sections.len());
            for (s, (id, inst, ver, payload)) in listing.sections.iter().zip(&sections) {
                prop_assert_eq!(&s.id, id);
                prop_assert_eq!(s.instance_id, *inst);
                prop_assert_eq!(s.version_id, *ver);
                prop_assert_eq!(s.payload(&bytes, 7), Some(&payload[..]));
            }
        }

        #[test]
        fn listing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let l = list_slice(&bytes, 0);
            prop_assert!(l.end <= bytes.len() as u64);
        }
    }
}

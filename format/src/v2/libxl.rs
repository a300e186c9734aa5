//! libxl v2 framing (`libxl-migration-stream.pandoc` rev. 2): a 16-byte
//! big-endian header, then records framed like libxc's. LIBXC_CONTEXT is
//! empty and is followed directly by a whole libxc image up to its END.
//!
//! [`LibxlReader`] flattens the nesting into one pull sequence of
//! [`LibxlItem`]s; [`LibxlWriter::libxc`] hands a libxc [`Writer`] to a
//! closure so the libxc END cannot be forgotten.

use std::borrow::Cow;
use std::io::{IoSlice, Read, Write};

use binrw::{BinRead, BinWrite, Endian};

use super::libxc::{DomainHeader, ImageHeader, RecordType};
use super::padding_len;
use super::reader::{Record, Source};
use super::writer::Writer;
use crate::bytes::{self, le, write_all_vectored};
use crate::diag::{Context, Error, ErrorKind, Result};

/// The libxl stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(big)]
pub struct LibxlHeader {
    /// "LibxlFmt".
    pub ident: u64,
    /// 2.
    pub version: u32,
    /// Bit 0 big-endian, bit 1 legacy converted, the rest reserved.
    pub options: u32,
}

impl LibxlHeader {
    /// Encoded size.
    pub const SIZE: usize = 16;
    /// "LibxlFmt" as a big-endian u64.
    pub(crate) const IDENT: u64 = 0x4C69_6278_6C46_6D74;
    /// The only version defined.
    pub(crate) const VERSION: u32 = 2;
    /// The stream is big-endian.
    pub(crate) const OPT_BIG_ENDIAN: u32 = 1;
    /// The stream was converted from a legacy (pre-4.6) stream.
    pub(crate) const OPT_LEGACY: u32 = 2;
    /// Bits that must be zero.
    pub(crate) const OPT_RESERVED_MASK: u32 = !3;

    /// A little-endian header.
    pub fn new(legacy_converted: bool) -> Self {
        LibxlHeader {
            ident: Self::IDENT,
            version: Self::VERSION,
            options: if legacy_converted {
                Self::OPT_LEGACY
            } else {
                0
            },
        }
    }

    /// True when the legacy-converted bit is set.
    pub fn is_legacy_converted(&self) -> bool {
        self.options & Self::OPT_LEGACY != 0
    }

    /// Decode from at least [`Self::SIZE`] bytes (no checks).
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Self> {
        let ctx = Context::root().field("libxl header");
        let b = bytes.get(..Self::SIZE).ok_or_else(|| {
            Error::truncated(offset, ctx.clone(), Self::SIZE as u64, bytes.len() as u64)
        })?;
        bytes::decode(b, Endian::Big)
            .map(|(v, _)| v)
            .map_err(|e| Error::invalid(offset, ctx, "a libxl header", e.to_string()))
    }

    /// Encode (16 bytes).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut a = [0u8; Self::SIZE];
        a[..8].copy_from_slice(&self.ident.to_be_bytes());
        a[8..12].copy_from_slice(&self.version.to_be_bytes());
        a[12..].copy_from_slice(&self.options.to_be_bytes());
        a
    }

    /// What a reader needs: ident, version 2, little-endian.
    pub(crate) fn check_readable(&self, offset: u64) -> Result<()> {
        let ctx = Context::root().field("libxl header");
        if self.ident != Self::IDENT {
            return Err(Error::invalid(
                offset,
                ctx.field("ident"),
                "0x4c6962786c466d74 (\"LibxlFmt\")",
                format!("{:#x}", self.ident),
            ));
        }
        if self.version != Self::VERSION {
            return Err(Error::invalid(
                offset + 8,
                ctx.field("version"),
                "2",
                self.version.to_string(),
            ));
        }
        if self.options & Self::OPT_BIG_ENDIAN != 0 {
            return Err(Error::invalid(
                offset + 12,
                ctx.field("options"),
                "a little-endian stream (bit 0 clear)",
                format!("options {:#x}", self.options),
            ));
        }
        Ok(())
    }
}

/// A libxl record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LibxlRecordType(pub u32);

impl LibxlRecordType {
    /// libxl's `REC_TYPE_END`.
    pub(crate) const END: Self = Self(0);
    /// libxl's `REC_TYPE_LIBXC_CONTEXT`.
    pub(crate) const LIBXC_CONTEXT: Self = Self(1);
    /// libxl's `REC_TYPE_EMULATOR_XENSTORE_DATA`.
    pub(crate) const EMULATOR_XENSTORE_DATA: Self = Self(2);
    /// libxl's `REC_TYPE_EMULATOR_CONTEXT`.
    pub(crate) const EMULATOR_CONTEXT: Self = Self(3);
    /// libxl's `REC_TYPE_CHECKPOINT_END`.
    pub(crate) const CHECKPOINT_END: Self = Self(4);
    pub(crate) const CHECKPOINT_STATE: Self = Self(5);

    /// The spec's name, or `None` for an unknown type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "END",
            1 => "LIBXC_CONTEXT",
            2 => "EMULATOR_XENSTORE_DATA",
            3 => "EMULATOR_CONTEXT",
            4 => "CHECKPOINT_END",
            5 => "CHECKPOINT_STATE",
            _ => return None,
        })
    }
}

/// Which device model an emulator record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmulatorId {
    /// 0: unknown (streams converted from legacy).
    Unknown,
    /// 1: qemu-traditional.
    QemuTraditional,
    /// 2: qemu-upstream.
    QemuUpstream,
    /// Anything else (kept for round trips; invalid).
    Other(u32),
}

impl EmulatorId {
    /// The wire value.
    pub fn raw(self) -> u32 {
        match self {
            EmulatorId::Unknown => 0,
            EmulatorId::QemuTraditional => 1,
            EmulatorId::QemuUpstream => 2,
            EmulatorId::Other(v) => v,
        }
    }

    /// From the wire value.
    pub(crate) fn from_raw(v: u32) -> Self {
        match v {
            0 => EmulatorId::Unknown,
            1 => EmulatorId::QemuTraditional,
            2 => EmulatorId::QemuUpstream,
            v => EmulatorId::Other(v),
        }
    }
}

/// A typed libxl record body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LibxlRecord<'a> {
    /// An `END` record.
    End,
    /// Marker: a libxc image follows.
    LibxcContext,
    /// xenstore keys of the device model: `key\0value\0…`.
    EmulatorXenstoreData {
        /// Which device model (qemu-traditional or upstream).
        emulator: EmulatorId,
        /// The emulator's index.
        index: u32,
        /// The body after the emulator header.
        data: Cow<'a, [u8]>,
    },
    /// The device model's saved state.
    EmulatorContext {
        /// Which device model (qemu-traditional or upstream).
        emulator: EmulatorId,
        /// The emulator's index.
        index: u32,
        /// The body after the emulator header.
        data: Cow<'a, [u8]>,
    },
    /// A `CHECKPOINT_END` record.
    CheckpointEnd,
    /// COLO checkpoint control id.
    CheckpointState {
        /// The control id.
        control_id: u32,
    },
    /// A type this crate does not know, kept byte for byte.
    Unknown {
        /// The record type.
        rtype: LibxlRecordType,
        /// The body after the emulator header.
        data: Cow<'a, [u8]>,
    },
}

impl<'a> LibxlRecord<'a> {
    /// The record type.
    pub fn rtype(&self) -> LibxlRecordType {
        match self {
            LibxlRecord::End => LibxlRecordType::END,
            LibxlRecord::LibxcContext => LibxlRecordType::LIBXC_CONTEXT,
            LibxlRecord::EmulatorXenstoreData { .. } => LibxlRecordType::EMULATOR_XENSTORE_DATA,
            LibxlRecord::EmulatorContext { .. } => LibxlRecordType::EMULATOR_CONTEXT,
            LibxlRecord::CheckpointEnd => LibxlRecordType::CHECKPOINT_END,
            LibxlRecord::CheckpointState { .. } => LibxlRecordType::CHECKPOINT_STATE,
            LibxlRecord::Unknown { rtype, .. } => *rtype,
        }
    }

    /// An EMULATOR_XENSTORE_DATA body from key/value pairs.
    pub fn xenstore_data(
        emulator: EmulatorId,
        index: u32,
        pairs: &[(&str, &str)],
    ) -> LibxlRecord<'static> {
        let mut data = Vec::new();
        for (k, v) in pairs {
            data.extend_from_slice(k.as_bytes());
            data.push(0);
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
        LibxlRecord::EmulatorXenstoreData {
            emulator,
            index,
            data: Cow::Owned(data),
        }
    }

    /// The key/value pairs of an EMULATOR_XENSTORE_DATA body; `None` for
    /// another record or data not made of NUL-terminated pairs.
    pub fn xenstore_pairs(&self) -> Option<Vec<(&[u8], &[u8])>> {
        let LibxlRecord::EmulatorXenstoreData { data, .. } = self else {
            return None;
        };
        if data.is_empty() {
            return Some(Vec::new());
        }
        let inner = data.strip_suffix(&[0])?;
        let parts: Vec<&[u8]> = inner.split(|&b| b == 0).collect();
        if parts.len() % 2 != 0 {
            return None;
        }
        Some(parts.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    /// Decode a body; `offset` is the file offset of the body.
    pub fn parse(
        rtype: LibxlRecordType,
        body: &'a [u8],
        offset: u64,
        ctx: &Context,
    ) -> Result<Self> {
        let len = body.len();
        let empty = |r: LibxlRecord<'a>| -> Result<LibxlRecord<'a>> {
            if len != 0 {
                return Err(Error::invalid(
                    offset.saturating_sub(4),
                    ctx.field("body_length"),
                    format!("0 for {}", r.rtype().name().unwrap_or("?")),
                    len.to_string(),
                ));
            }
            Ok(r)
        };
        let header = |what: &str| -> Result<(EmulatorId, u32, &'a [u8])> {
            let (Some(emulator), Some(index)) = (le::<u32>(body, 0), le::<u32>(body, 4)) else {
                return Err(Error::invalid(
                    offset.saturating_sub(4),
                    ctx.field("body_length"),
                    format!("at least 8 for {what}"),
                    len.to_string(),
                ));
            };
            Ok((
                EmulatorId::from_raw(emulator),
                index,
                // `len >= 8` checked above: the data is the rest, maybe empty.
                body.get(8..).unwrap_or_default(),
            ))
        };
        Ok(match rtype {
            LibxlRecordType::END => empty(LibxlRecord::End)?,
            LibxlRecordType::LIBXC_CONTEXT => empty(LibxlRecord::LibxcContext)?,
            LibxlRecordType::CHECKPOINT_END => empty(LibxlRecord::CheckpointEnd)?,
            LibxlRecordType::EMULATOR_XENSTORE_DATA => {
                let (emulator, index, data) = header("EMULATOR_XENSTORE_DATA")?;
                LibxlRecord::EmulatorXenstoreData {
                    emulator,
                    index,
                    data: Cow::Borrowed(data),
                }
            }
            LibxlRecordType::EMULATOR_CONTEXT => {
                let (emulator, index, data) = header("EMULATOR_CONTEXT")?;
                LibxlRecord::EmulatorContext {
                    emulator,
                    index,
                    data: Cow::Borrowed(data),
                }
            }
            LibxlRecordType::CHECKPOINT_STATE => {
                let Some(control_id) = le::<u32>(body, 0).filter(|_| body.len() == 4) else {
                    return Err(Error::invalid(
                        offset.saturating_sub(4),
                        ctx.field("body_length"),
                        "4 for CHECKPOINT_STATE",
                        len.to_string(),
                    ));
                };
                LibxlRecord::CheckpointState { control_id }
            }
            rtype => LibxlRecord::Unknown {
                rtype,
                data: Cow::Borrowed(body),
            },
        })
    }

    /// Append the encoded body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LibxlRecord::End | LibxlRecord::LibxcContext | LibxlRecord::CheckpointEnd => {}
            LibxlRecord::EmulatorXenstoreData {
                emulator,
                index,
                data,
            }
            | LibxlRecord::EmulatorContext {
                emulator,
                index,
                data,
            } => {
                out.extend_from_slice(&emulator.raw().to_le_bytes());
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(data);
            }
            LibxlRecord::CheckpointState { control_id } => {
                out.extend_from_slice(&control_id.to_le_bytes())
            }
            LibxlRecord::Unknown { data, .. } => out.extend_from_slice(data),
        }
    }

    /// Copy borrowed bytes.
    pub fn into_owned(self) -> LibxlRecord<'static> {
        match self {
            LibxlRecord::End => LibxlRecord::End,
            LibxlRecord::LibxcContext => LibxlRecord::LibxcContext,
            LibxlRecord::CheckpointEnd => LibxlRecord::CheckpointEnd,
            LibxlRecord::CheckpointState { control_id } => {
                LibxlRecord::CheckpointState { control_id }
            }
            LibxlRecord::EmulatorXenstoreData {
                emulator,
                index,
                data,
            } => LibxlRecord::EmulatorXenstoreData {
                emulator,
                index,
                data: Cow::Owned(data.into_owned()),
            },
            LibxlRecord::EmulatorContext {
                emulator,
                index,
                data,
            } => LibxlRecord::EmulatorContext {
                emulator,
                index,
                data: Cow::Owned(data.into_owned()),
            },
            LibxlRecord::Unknown { rtype, data } => LibxlRecord::Unknown {
                rtype,
                data: Cow::Owned(data.into_owned()),
            },
        }
    }
}

/// One step of a libxl stream, with the libxc image inside flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibxlItem<'a> {
    /// A libxl record (LIBXC_CONTEXT included: the libxc items follow).
    Record {
        /// The emulator's index.
        index: u64,
        /// File offset where it starts.
        offset: u64,
        /// The record.
        record: LibxlRecord<'a>,
    },
    /// The headers of the libxc image after LIBXC_CONTEXT.
    LibxcHeaders {
        /// File offset where it starts.
        offset: u64,
        /// The libxc image header.
        image: ImageHeader,
        /// The libxc domain header.
        domain: DomainHeader,
    },
    /// A libxc record, up to and including the libxc END.
    Libxc(Record<'a>),
}

enum ReadState {
    Libxl,
    LibxcHeaders,
    Libxc { index: u64 },
    Done,
}

/// Pull parser of a libxl v2 stream over any `Read`.
pub struct LibxlReader<R> {
    src: Source<R>,
    header: LibxlHeader,
    state: ReadState,
    index: u64,
}

impl<R: Read> LibxlReader<R> {
    /// Read the libxl header at file offset 0.
    pub fn new(r: R) -> Result<Self> {
        Self::with_offset(r, 0)
    }

    /// Read the libxl header at file offset `offset` (after an xl header).
    pub fn with_offset(r: R, offset: u64) -> Result<Self> {
        let mut src = Source::new(r, offset);
        let b: [u8; LibxlHeader::SIZE] = src.array(&Context::root().field("libxl header"))?;
        let header = LibxlHeader::parse(&b, offset)?;
        header.check_readable(offset)?;
        Ok(LibxlReader {
            src,
            header,
            state: ReadState::Libxl,
            index: 0,
        })
    }

    /// Change the largest body accepted (default [`super::DEFAULT_MAX_BODY_LEN`]).
    pub fn set_max_body_len(&mut self, n: u32) {
        self.src.max_body = n;
    }

    /// The libxl header.
    pub fn header(&self) -> &LibxlHeader {
        &self.header
    }

    /// File offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.src.offset
    }

    /// The next item, or `None` after the libxl END.
    pub fn next_item(&mut self) -> Result<Option<LibxlItem<'_>>> {
        match self.state {
            ReadState::Done => Ok(None),
            ReadState::LibxcHeaders => {
                let offset = self.src.offset;
                let (image, domain) = self.src.libxc_headers()?;
                self.state = ReadState::Libxc { index: 0 };
                Ok(Some(LibxlItem::LibxcHeaders {
                    offset,
                    image,
                    domain,
                }))
            }
            ReadState::Libxc { index } => {
                let raw = self.src.record("record", index)?;
                let rec = raw.parse()?;
                self.state = if raw.rtype == RecordType::END.0 {
                    ReadState::Libxl
                } else {
                    ReadState::Libxc { index: index + 1 }
                };
                Ok(Some(LibxlItem::Libxc(rec)))
            }
            ReadState::Libxl => {
                let index = self.index;
                let raw = self.src.record("libxl record", index)?;
                let record = LibxlRecord::parse(
                    LibxlRecordType(raw.rtype),
                    raw.body,
                    raw.body_offset(),
                    &raw.context(),
                )?;
                let offset = raw.offset;
                self.index += 1;
                self.state = match record {
                    LibxlRecord::End => ReadState::Done,
                    LibxlRecord::LibxcContext => ReadState::LibxcHeaders,
                    _ => ReadState::Libxl,
                };
                Ok(Some(LibxlItem::Record {
                    index,
                    offset,
                    record,
                }))
            }
        }
    }

    /// After END: the bytes that follow it, `(offset, counted, more)`, or
    /// `None` when there are none (or END was not reached yet). A pipe is
    /// counted only up to [`crate::envelope::TRAILING_COUNT_LIMIT`] bytes;
    /// `more` says that bytes past the count exist.
    pub fn trailing(&mut self) -> Result<Option<(u64, u64, bool)>> {
        if !matches!(self.state, ReadState::Done) {
            return Ok(None);
        }
        let at = self.src.offset;
        let (len, more) = crate::envelope::count_rest(&mut self.src.r, 0)
            .map_err(|e| Error::new(at, Context::root().field("after END"), ErrorKind::Io(e)))?;
        self.src.offset += len;
        Ok((len > 0).then_some((at, len, more)))
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.src.r
    }
}

/// Writer of a libxl v2 stream.
pub struct LibxlWriter<W> {
    w: W,
    offset: u64,
    index: u64,
    ended: bool,
    scratch: Vec<u8>,
}

impl<W: Write> LibxlWriter<W> {
    /// Write the libxl header at file offset 0.
    pub fn new(w: W, header: LibxlHeader) -> Result<Self> {
        Self::with_offset(w, 0, header)
    }

    /// Write the libxl header at file offset `offset` (after an xl header).
    pub fn with_offset(w: W, offset: u64, header: LibxlHeader) -> Result<Self> {
        header.check_readable(offset)?;
        if header.options & LibxlHeader::OPT_RESERVED_MASK != 0 {
            return Err(Error::invalid(
                offset + 12,
                Context::root().field("libxl header").field("options"),
                "reserved option bits 0",
                format!("{:#x}", header.options),
            ));
        }
        let mut me = LibxlWriter {
            w,
            offset,
            index: 0,
            ended: false,
            scratch: Vec::new(),
        };
        let b = header.to_bytes();
        me.put(&b, Context::root().field("libxl header"))?;
        Ok(me)
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn put(&mut self, b: &[u8], ctx: Context) -> Result<()> {
        write_all_vectored(&mut self.w, &mut [IoSlice::new(b)])
            .map_err(|e| Error::new(self.offset, ctx, ErrorKind::Io(e)))?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn ctx(&self) -> Context {
        Context::root().index("libxl record", self.index)
    }

    fn emit(&mut self, record: &LibxlRecord<'_>) -> Result<u64> {
        let name = record.rtype().name().unwrap_or("unknown libxl record");
        if self.ended {
            return Err(Error::new(
                self.offset,
                self.ctx(),
                ErrorKind::OutOfOrder {
                    item: name,
                    after: "END",
                },
            ));
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&record.rtype().0.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        record.encode(&mut buf);
        let len = (buf.len() - 8) as u64;
        let Ok(len32) = u32::try_from(len) else {
            self.scratch = buf;
            return Err(Error::invalid(
                self.offset + 4,
                self.ctx().field("body_length"),
                "a body below 4 GiB",
                len.to_string(),
            ));
        };
        buf[4..8].copy_from_slice(&len32.to_le_bytes());
        buf.resize(buf.len() + padding_len(len) as usize, 0);
        let at = self.offset;
        let r = self.put(&buf, self.ctx());
        self.scratch = buf;
        r?;
        self.index += 1;
        if matches!(record, LibxlRecord::End) {
            self.ended = true;
        }
        Ok(at)
    }

    /// Write one libxl record (not LIBXC_CONTEXT: use
    /// [`libxc`](Self::libxc)); returns its file offset.
    pub fn record(&mut self, record: &LibxlRecord<'_>) -> Result<u64> {
        if matches!(record, LibxlRecord::LibxcContext) {
            return Err(Error::invalid(
                self.offset,
                self.ctx().field("type"),
                "LIBXC_CONTEXT written through LibxlWriter::libxc, with its image",
                "a bare LIBXC_CONTEXT",
            ));
        }
        self.emit(record)
    }

    /// Write LIBXC_CONTEXT and the libxc image that follows it: `body`
    /// writes the records; END is added if `body` did not write it.
    pub fn libxc<F>(&mut self, image: ImageHeader, domain: DomainHeader, body: F) -> Result<()>
    where
        F: FnOnce(&mut Writer<&mut W>) -> Result<()>,
    {
        self.emit(&LibxlRecord::LibxcContext)?;
        let mut inner = Writer::with_offset(&mut self.w, self.offset, image, domain)?;
        let r = body(&mut inner);
        let r = r.and_then(|()| if inner.is_ended() { Ok(0) } else { inner.end() });
        let end = inner.offset();
        self.offset = end;
        r.map(|_| ())
    }

    /// Write the libxl END.
    pub fn end(&mut self) -> Result<u64> {
        self.emit(&LibxlRecord::End)
    }

    /// Write END if needed, flush and return the sink.
    pub fn finish(mut self) -> Result<W> {
        if !self.ended {
            self.end()?;
        }
        let at = self.offset;
        self.w
            .flush()
            .map_err(|e| Error::new(at, Context::root(), ErrorKind::Io(e)))?;
        Ok(self.w)
    }
}

/// libxl's "toolstack" data of a −18 chunk, version 1 (`u32 version,
/// u32 count`, then per entry `u64 phys_offset, u64 start_addr, u64 size,
/// u32 namelen`, a NUL-terminated name, and on a 64-bit toolstack 4 bytes of
/// padding libxl leaked after it) as the xenstore keys libxl restores QEMU's
/// physmap from: `physmap/PHYS/start_addr`, `…/size` (hex) and `…/name`,
/// as Xen's `convert-legacy-stream` writes them. `at` is the data's offset.
pub fn physmap_keys(data: &[u8], word_bits: u32, at: u64) -> Result<Vec<(String, String)>> {
    let field = |name: &'static str| Context::root().field("toolstack").field(name);
    let bad = |off: u64, expected: &str, found: String| {
        Error::invalid(off, Context::root().field("toolstack"), expected, found)
    };
    let short = |off: usize, what: &'static str, need: usize| {
        Error::new(
            at + off as u64,
            field(what),
            ErrorKind::Truncated {
                needed: need as u64,
                available: data.len().saturating_sub(off) as u64,
            },
        )
    };
    let (Some(version), Some(count)) = (le::<u32>(data, 0), le::<u32>(data, 4)) else {
        return Err(short(0, "header", 8));
    };
    if version != 1 {
        return Err(bad(at, "libxl toolstack version 1", version.to_string()));
    }
    let pad = if word_bits == 64 { 4 } else { 0 };
    let mut keys = Vec::new();
    let mut o = 8usize;
    for _ in 0..count {
        let (Some(phys), Some(start), Some(size), Some(namelen)) = (
            le::<u64>(data, o),
            le::<u64>(data, o + 8),
            le::<u64>(data, o + 16),
            le::<u32>(data, o + 24),
        ) else {
            return Err(short(o, "physmap entry", 28));
        };
        o += 28;
        let namelen = namelen as usize;
        let name = data
            .get(o..o.saturating_add(namelen))
            .filter(|_| data.len() >= o + namelen + pad)
            .ok_or_else(|| short(o, "physmap name", namelen + pad))?;
        let Some((0, name)) = name.split_last() else {
            return Err(bad(
                at + o as u64,
                "a NUL-terminated physmap name",
                format!("{:?}", String::from_utf8_lossy(name)),
            ));
        };
        let name = std::str::from_utf8(name)
            .map_err(|_| bad(at + o as u64, "an ASCII physmap name", format!("{name:?}")))?;
        o += namelen + pad;
        let root = format!("physmap/{phys:x}");
        keys.push((format!("{root}/start_addr"), format!("{start:x}")));
        keys.push((format!("{root}/size"), format!("{size:x}")));
        keys.push((format!("{root}/name"), name.to_string()));
    }
    if o != data.len() {
        return Err(bad(
            at + o as u64,
            "the end of the toolstack data",
            format!("{} more bytes", data.len() - o),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(d: &mut Vec<u8>, phys: u64, name: &[u8], pad: usize) {
        for v in [phys, 0x1000, 0x2000] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&(name.len() as u32).to_le_bytes());
        d.extend_from_slice(name);
        d.extend(std::iter::repeat_n(0xEE, pad));
    }

    fn header(count: u32) -> Vec<u8> {
        let mut d = 1u32.to_le_bytes().to_vec();
        d.extend_from_slice(&count.to_le_bytes());
        d
    }

    #[test]
    fn physmap_keys_follow_the_word_size_and_refuse_bad_data() {
        let mut d = header(1);
        entry(&mut d, 0xF000_0000, b"vga.vram\0", 4);
        let keys = physmap_keys(&d, 64, 100).unwrap();
        assert_eq!(
            keys,
            [
                ("physmap/f0000000/start_addr".into(), "1000".into()),
                ("physmap/f0000000/size".into(), "2000".into()),
                ("physmap/f0000000/name".into(), "vga.vram".into()),
            ]
        );
        // The same bytes read as a 32-bit toolstack's: 4 bytes too many.
        let e = physmap_keys(&d, 32, 100).unwrap_err();
        assert_eq!(e.offset, 100 + 8 + 28 + 9, "{e}");
        // A count the data cannot hold: truncated at the missing entry.
        let mut d = header(u32::MAX);
        entry(&mut d, 1, b"a\0", 0);
        let e = physmap_keys(&d, 32, 0).unwrap_err();
        assert_eq!(e.offset, 8 + 28 + 2, "{e}");
        assert!(e.to_string().contains("physmap entry"), "{e}");
        // A name without its NUL.
        let mut d = header(1);
        entry(&mut d, 1, b"abc", 0);
        let e = physmap_keys(&d, 32, 0).unwrap_err();
        assert!(e.to_string().contains("NUL-terminated"), "{e}");
        // Another version.
        let mut d = 2u32.to_le_bytes().to_vec();
        d.extend_from_slice(&0u32.to_le_bytes());
        assert!(physmap_keys(&d, 64, 0)
            .unwrap_err()
            .to_string()
            .contains("version 1"));
        // Too short for the header.
        assert!(physmap_keys(&[1, 0, 0], 64, 0).is_err());
    }
}

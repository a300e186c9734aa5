//! Reading a libxc v2 image: a pull [`Reader`] over any `Read` and a
//! zero-copy [`SliceReader`] over `&[u8]`.
//!
//! Both hand out [`RawRecord`]s (type, body, padding, file offset) and parse
//! them into [`RecordBody`] on request, so a validator can look at records
//! whose bodies do not fit their layout. Memory stays bounded: the `Read`
//! reader keeps one body buffer that it reuses and only grows as bytes
//! actually arrive, and refuses bodies above a limit before reading them.

use std::io::Read;

use super::libxc::{DomainHeader, ImageHeader, RecordBody, RecordType};
use super::padding_len;
use crate::bytes::{le, read_full, read_full_at, ByteReader, Int};
use crate::diag::{slice_at, Context, Error, ErrorKind, Result};
use crate::stream::DM_RECORD_0002;

/// Largest record body the `Read`-based readers accept by default (256 MiB):
/// far above anything Xen writes (a PAGE_DATA of 1024 pages is ~4 MiB), far
/// below what a hostile 32-bit length could make us buffer.
pub const DEFAULT_MAX_BODY_LEN: u32 = 256 << 20;

/// How much a body buffer grows per read, so a lying length costs at most
/// this much memory beyond the bytes really present.
const GROW_STEP: usize = 1 << 20;

/// One record as framed on the wire, not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Name of the numbered context segment: `record` for libxc records,
    /// `libxl record` for libxl ones.
    pub scope: &'static str,
    /// Position among the records of its image, from 0.
    pub index: u64,
    /// File offset of the record header.
    pub offset: u64,
    /// The type word.
    pub rtype: u32,
    /// The body (`body_length` bytes).
    pub body: &'a [u8],
    /// The padding after the body (0–7 bytes, zero in a valid stream).
    pub padding: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// The type as a libxc record type.
    pub(crate) fn libxc_type(&self) -> RecordType {
        RecordType(self.rtype)
    }

    /// File offset of the body.
    pub(crate) fn body_offset(&self) -> u64 {
        self.offset + 8
    }

    /// File offset just past the padding.
    pub fn end_offset(&self) -> u64 {
        self.body_offset() + self.body.len() as u64 + self.padding.len() as u64
    }

    /// Context path of this record (`record 7`).
    pub(crate) fn context(&self) -> Context {
        Context::root().index(self.scope, self.index)
    }

    /// Interpret the body as a libxc record.
    pub fn parse(&self) -> Result<Record<'a>> {
        let body = RecordBody::parse(
            self.libxc_type(),
            self.body,
            self.body_offset(),
            &self.context(),
        )?;
        Ok(Record {
            index: self.index,
            offset: self.offset,
            body,
        })
    }
}

/// A parsed libxc record with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Position among the records of its image, from 0.
    pub index: u64,
    /// File offset of the record header.
    pub offset: u64,
    /// The typed body.
    pub body: RecordBody<'a>,
}

// ---------------------------------------------------------------------------
// Read-based source shared with the libxl reader

/// A `Read` with its position and one reusable buffer.
pub(crate) struct Source<R> {
    pub(crate) r: R,
    pub(crate) offset: u64,
    buf: Vec<u8>,
    pub(crate) max_body: u32,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(r: R, offset: u64) -> Self {
        Source {
            r,
            offset,
            buf: Vec::new(),
            max_body: DEFAULT_MAX_BODY_LEN,
        }
    }

    /// Read exactly `n` bytes into the buffer, growing it only as data
    /// arrives. Errors name `at` (the start of the structure) and `ctx`.
    fn fill(&mut self, n: usize, at: u64, ctx: &Context) -> Result<()> {
        let mut filled = 0;
        while filled < n {
            let end = n.min(self.buf.len().max(filled + GROW_STEP));
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            let dst = match self.buf.get_mut(filled..end) {
                Some(d) => d,
                None => break,
            };
            let want = dst.len();
            match read_full(&mut self.r, dst) {
                Ok(k) => {
                    filled += k;
                    if k < want {
                        self.offset += filled as u64;
                        return Err(Error::truncated(at, ctx.clone(), n as u64, filled as u64));
                    }
                }
                Err(e) => {
                    filled += e.got;
                    self.offset += filled as u64;
                    return Err(Error::new(self.offset, ctx.clone(), ErrorKind::Io(e.error)));
                }
            }
        }
        self.offset += n as u64;
        Ok(())
    }

    /// Read a fixed number of bytes.
    pub(crate) fn array<const N: usize>(&mut self, ctx: &Context) -> Result<[u8; N]> {
        let at = self.offset;
        self.fill(N, at, ctx)?;
        let mut a = [0u8; N];
        a.copy_from_slice(self.buf.get(..N).unwrap_or(&[0u8; N][..]));
        Ok(a)
    }

    /// Read a little-endian integer.
    pub(crate) fn le<T: Int>(&mut self, ctx: &Context) -> Result<T> {
        let at = self.offset;
        let n = std::mem::size_of::<T>();
        self.fill(n, at, ctx)?;
        // `fill` left exactly `n` bytes at the start of `buf`.
        le(&self.buf, 0)
            .ok_or_else(|| Error::truncated(at, ctx.clone(), n as u64, self.buf.len() as u64))
    }

    /// Read both libxc headers and check what a reader depends on.
    pub(crate) fn libxc_headers(&mut self) -> Result<(ImageHeader, DomainHeader)> {
        let at = self.offset;
        let b: [u8; ImageHeader::SIZE] = self.array(&Context::root().field("image header"))?;
        let image = ImageHeader::parse(&b, at)?;
        image.check_readable(at)?;
        let at = self.offset;
        let b: [u8; DomainHeader::SIZE] = self.array(&Context::root().field("domain header"))?;
        let domain = DomainHeader::parse(&b, at)?;
        check_page_shift(&domain, at)?;
        Ok((image, domain))
    }

    /// Read one `u32 type, u32 length` record with its padding.
    pub(crate) fn record(&mut self, scope: &'static str, index: u64) -> Result<RawRecord<'_>> {
        let ctx = Context::root().index(scope, index);
        let offset = self.offset;
        let h: [u8; 8] = self.array(&ctx.field("record header"))?;
        let mut hr = ByteReader::new(&h, offset, &ctx);
        let rtype: u32 = hr.le("type")?;
        let len: u32 = hr.le("body_length")?;
        if len > self.max_body {
            return Err(Error::invalid(
                offset + 4,
                ctx.field("body_length"),
                format!("at most {} (reader limit)", self.max_body),
                len.to_string(),
            ));
        }
        let total = u64::from(len) + padding_len(u64::from(len));
        self.fill(total as usize, offset + 8, &ctx.field("body"))?;
        let (body, padding) = slice_at(&self.buf, 0, total as usize, offset + 8, || {
            ctx.field("body")
        })?
        .split_at(len as usize);
        Ok(RawRecord {
            scope,
            index,
            offset,
            rtype,
            body,
            padding,
        })
    }
}

fn check_page_shift(d: &DomainHeader, at: u64) -> Result<()> {
    if d.page_shift != 12 {
        return Err(Error::invalid(
            at + 4,
            Context::root().field("domain header").field("page_shift"),
            "12",
            d.page_shift.to_string(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reader

/// Pull parser for a libxc v2 image over any `Read`.
///
/// Records borrow the reader's buffer until the next call; call
/// [`RecordBody::into_owned`] to keep one. After an error the position is
/// wherever reading stopped: a caller that wants to salvage more must know
/// where to resume (the error's offset says where the damage is).
pub struct Reader<R> {
    src: Source<R>,
    image: ImageHeader,
    domain: DomainHeader,
    index: u64,
    ended: bool,
    /// Calls of [`Reader::after_end`] that found something: the first may
    /// find the device model record, the next only trailing bytes.
    after: u8,
}

impl<R: Read> Reader<R> {
    /// Read the image and domain headers at file offset 0.
    pub fn new(r: R) -> Result<Self> {
        Self::with_offset(r, 0)
    }

    /// Read the headers of an image that starts at file offset `offset`
    /// (inside an xl or libxl file), so errors name file offsets.
    pub fn with_offset(r: R, offset: u64) -> Result<Self> {
        let mut src = Source::new(r, offset);
        let (image, domain) = src.libxc_headers()?;
        Ok(Reader {
            src,
            image,
            domain,
            index: 0,
            ended: false,
            after: 0,
        })
    }

    /// Change the largest body accepted (default [`DEFAULT_MAX_BODY_LEN`]).
    pub fn set_max_body_len(&mut self, n: u32) {
        self.src.max_body = n;
    }

    /// The image header.
    pub fn image_header(&self) -> &ImageHeader {
        &self.image
    }

    /// The domain header.
    pub fn domain_header(&self) -> &DomainHeader {
        &self.domain
    }

    /// File offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.src.offset
    }

    /// The next record as framed, or `None` after END.
    pub fn next_raw(&mut self) -> Result<Option<RawRecord<'_>>> {
        if self.ended {
            return Ok(None);
        }
        let rec = self.src.record("record", self.index)?;
        self.index += 1;
        if rec.rtype == RecordType::END.0 {
            self.ended = true;
        }
        Ok(Some(rec))
    }

    /// The next record, parsed, or `None` after END.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        match self.next_raw()? {
            Some(raw) => raw.parse().map(Some),
            None => Ok(None),
        }
    }

    /// The underlying reader, positioned after the last record read
    /// (after END: whatever follows the image).
    pub fn into_inner(self) -> R {
        self.src.r
    }

    /// After END: what follows a libxc-framed image. Xen's
    /// `convert-legacy-stream` appends an HVM guest's device model state to
    /// libxc output as the legacy stream carried it, `DeviceModelRecord0002`
    /// + u32 length + the state; anything else is trailing bytes, consumed
    ///   and counted. Call until it returns [`AfterEnd::Nothing`]: after the
    ///   device model record comes at most one [`AfterEnd::Trailing`]. Before
    ///   END this reads nothing and returns [`AfterEnd::Nothing`].
    pub fn after_end(&mut self) -> Result<AfterEnd<'_>> {
        if !self.ended || self.after >= 2 {
            return Ok(AfterEnd::Nothing);
        }
        self.after += 1;
        let at = self.src.offset;
        let ctx = Context::root().field("after END");
        let mut first = [0u8; DM_RECORD_0002.len()];
        let got = read_full_at(&mut self.src.r, &mut first, at, &ctx)?;
        self.src.offset += got as u64;
        if got == 0 {
            return Ok(AfterEnd::Nothing);
        }
        if self.after == 2 || &first[..got] != DM_RECORD_0002 {
            self.after = 2;
            let (len, more) = crate::envelope::count_rest(&mut self.src.r, got as u64)
                .map_err(|e| Error::new(at, ctx, ErrorKind::Io(e)))?;
            self.src.offset += len - got as u64;
            return Ok(AfterEnd::Trailing {
                offset: at,
                len,
                more,
            });
        }
        let ctx = Context::root().field("device model record");
        let len: u32 = self.src.le(&ctx.field("length"))?;
        let data_offset = self.src.offset;
        // Grows only as the state arrives: a hostile length costs nothing.
        self.src
            .fill(len as usize, data_offset, &ctx.field("state"))?;
        Ok(AfterEnd::DeviceModel {
            offset: at,
            data_offset,
            data: slice_at(&self.src.buf, 0, len as usize, data_offset, || {
                ctx.field("state")
            })?,
        })
    }
}

/// What follows the END record of a libxc-framed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEnd<'a> {
    /// The image ends with END.
    Nothing,
    /// `DeviceModelRecord0002` at `offset`, the state at `data_offset`.
    DeviceModel {
        /// File offset of the signature.
        offset: u64,
        /// File offset of the state's first byte.
        data_offset: u64,
        /// The device model's state.
        data: &'a [u8],
    },
    /// `len` bytes at `offset` that belong to no structure.
    Trailing {
        /// File offset of the first such byte.
        offset: u64,
        /// How many were counted.
        len: u64,
        /// More bytes follow the `len` counted: a pipe is counted only up
        /// to [`crate::envelope::TRAILING_COUNT_LIMIT`].
        more: bool,
    },
}

// ---------------------------------------------------------------------------
// SliceReader

/// Zero-copy reader over an image in memory (an mmap'd file): bodies
/// borrow the input.
pub struct SliceReader<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    image: ImageHeader,
    domain: DomainHeader,
    index: u64,
    ended: bool,
}

impl<'a> SliceReader<'a> {
    /// Read the headers at the start of `data` (file offset 0).
    pub fn new(data: &'a [u8]) -> Result<Self> {
        Self::with_offset(data, 0)
    }

    /// As [`new`](Self::new) for an image that starts at file offset `base`.
    pub fn with_offset(data: &'a [u8], base: u64) -> Result<Self> {
        let image = ImageHeader::parse(data, base)?;
        image.check_readable(base)?;
        // Image header parsed, so `data` holds its bytes; a short rest is
        // reported by the domain header's parse as a truncation.
        let dh = data.get(ImageHeader::SIZE..).unwrap_or_default();
        let domain = DomainHeader::parse(dh, base + ImageHeader::SIZE as u64)?;
        check_page_shift(&domain, base + ImageHeader::SIZE as u64)?;
        Ok(SliceReader {
            data,
            pos: ImageHeader::SIZE + DomainHeader::SIZE,
            base,
            image,
            domain,
            index: 0,
            ended: false,
        })
    }

    /// The image header.
    pub fn image_header(&self) -> &ImageHeader {
        &self.image
    }

    /// The domain header.
    pub fn domain_header(&self) -> &DomainHeader {
        &self.domain
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not yet consumed (after END: whatever follows the image).
    pub fn remaining(&self) -> &'a [u8] {
        // `pos` never passes the end of `data`: records are framed inside it.
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// The next record as framed, or `None` after END.
    pub fn next_raw(&mut self) -> Result<Option<RawRecord<'a>>> {
        if self.ended {
            return Ok(None);
        }
        let rec = frame_slice(self.data, &mut self.pos, self.base, "record", self.index)?;
        self.index += 1;
        if rec.rtype == RecordType::END.0 {
            self.ended = true;
        }
        Ok(Some(rec))
    }

    /// The next record, parsed, or `None` after END.
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>> {
        match self.next_raw()? {
            Some(raw) => raw.parse().map(Some),
            None => Ok(None),
        }
    }
}

/// Frame one record at `*pos` of `data` (whose byte 0 is at file offset
/// `base`), advancing `*pos`. A length the input cannot fill is refused
/// before anything is touched.
pub(crate) fn frame_slice<'a>(
    data: &'a [u8],
    pos: &mut usize,
    base: u64,
    scope: &'static str,
    index: u64,
) -> Result<RawRecord<'a>> {
    let ctx = Context::root().index(scope, index);
    let offset = base + *pos as u64;
    // A `pos` at or past the end leaves nothing: reported below as a
    // truncated record header at `offset`.
    let rest = data.get(*pos..).unwrap_or_default();
    let Some(h) = rest.get(..8) else {
        return Err(Error::truncated(
            offset,
            ctx.field("record header"),
            8,
            rest.len() as u64,
        ));
    };
    let mut hr = ByteReader::new(h, offset, &ctx);
    let rtype: u32 = hr.le("type")?;
    let len: u32 = hr.le("body_length")?;
    let total = u64::from(len) + padding_len(u64::from(len));
    let avail = (rest.len() - 8) as u64;
    if total > avail {
        return Err(Error::new(
            offset + 4,
            ctx.field("body_length"),
            ErrorKind::Oversized {
                what: "record body with padding",
                claimed: total,
                remaining: avail,
            },
        ));
    }
    let whole = slice_at(rest, 8, 8 + total as usize, offset + 8, || {
        ctx.field("body")
    })?;
    let (body, padding) = whole.split_at(len as usize);
    *pos += 8 + total as usize;
    Ok(RawRecord {
        scope,
        index,
        offset,
        rtype,
        body,
        padding,
    })
}

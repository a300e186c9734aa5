//! The two readers: zero-copy over a slice, buffered over any `Read`.

use std::io::Read;

use super::grammar::{oversized, Grammar, Input, Layout, RawItem, Span};
use super::item::{Batch, Chunk, DeviceModel, Element, HvmBlob, Item, MagicPfns, VcpuRecord};
use crate::bytes::read_full;
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::pfn::WordSize;

/// True for the elements later dialects added to the seed grammar.
fn is_extra(raw: &RawItem) -> bool {
    matches!(
        raw,
        RawItem::Chunk { .. }
            | RawItem::MagicPfns { .. }
            | RawItem::SharedInfoFrame { .. }
            | RawItem::DeviceModel { .. }
    )
}

/// Turn spans into an element borrowing from `store`.
fn resolve_element<'a>(raw: RawItem, word: WordSize, store: &'a [u8]) -> Element<'a> {
    let get = |s: Span| &store[s.start..s.start + s.len];
    match raw {
        RawItem::Chunk {
            offset,
            id,
            payload,
        } => Element::Chunk(Chunk {
            offset,
            id,
            payload: get(payload),
        }),
        RawItem::MagicPfns { offset, pfns } => Element::MagicPfns(MagicPfns {
            offset,
            ioreq: pfns[0],
            bufioreq: pfns[1],
            store: pfns[2],
        }),
        RawItem::SharedInfoFrame { offset, value } => Element::SharedInfoFrame { offset, value },
        RawItem::DeviceModel { offset, bytes } => Element::DeviceModel(DeviceModel {
            offset,
            data_offset: offset + 25,
            bytes: get(bytes),
        }),
        other => Element::Item(resolve(other, word, store)),
    }
}

/// Turn spans into an item borrowing from `store` (never called with the
/// extras of [`is_extra`]).
fn resolve<'a>(raw: RawItem, word: WordSize, store: &'a [u8]) -> Item<'a> {
    let get = |s: Span| &store[s.start..s.start + s.len];
    match raw {
        RawItem::MaxPfn { offset, value } => Item::MaxPfn { offset, value },
        RawItem::Batch {
            offset,
            index,
            verify,
            pfns,
            pages,
        } => Item::Batch(Batch {
            offset,
            index,
            verify,
            word,
            pfn_bytes: get(pfns),
            pages: get(pages),
        }),
        RawItem::VerifyMarker { offset } => Item::VerifyMarker { offset },
        RawItem::End { offset } => Item::End { offset },
        RawItem::VcpuCount { offset, count } => Item::VcpuCount { offset, count },
        RawItem::Vcpu {
            offset,
            index,
            bytes,
        } => Item::Vcpu(VcpuRecord {
            offset,
            index,
            bytes: get(bytes),
        }),
        RawItem::HvmBlob { offset, bytes } => Item::HvmBlob(HvmBlob {
            offset,
            bytes: get(bytes),
        }),
        // Extras are filtered out before; an empty terminator keeps this
        // total without a panic path.
        RawItem::Chunk { offset, .. }
        | RawItem::MagicPfns { offset, .. }
        | RawItem::SharedInfoFrame { offset, .. }
        | RawItem::DeviceModel { offset, .. } => Item::End { offset },
    }
}

// ---------------------------------------------------------------- slices

struct SliceInput<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
}

impl Input for SliceInput<'_> {
    fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn begin_item(&mut self) {}

    fn scalar_into(&mut self, out: &mut [u8], ctx: &dyn Fn() -> Context) -> Result<()> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = out.len();
        match rest.get(..n) {
            Some(b) => {
                out.copy_from_slice(b);
                self.pos += n;
                Ok(())
            }
            None => Err(Error::truncated(
                self.position(),
                ctx(),
                n as u64,
                rest.len() as u64,
            )),
        }
    }

    fn bulk(&mut self, len: u64, what: &'static str, ctx: &dyn Fn() -> Context) -> Result<Span> {
        let remaining = (self.data.len() - self.pos) as u64;
        if len > remaining {
            return Err(oversized(self.position(), ctx(), what, len, remaining));
        }
        let span = Span {
            start: self.pos,
            len: len as usize,
        };
        self.pos += len as usize;
        Ok(span)
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.data[span.start..span.start + span.len]
    }

    fn remaining(&self) -> Option<u64> {
        Some((self.data.len() - self.pos) as u64)
    }
}

/// Zero-copy reader over a byte slice (an mmap'd file or an in-memory
/// image): items borrow from the slice.
pub struct SliceReader<'a> {
    input: SliceInput<'a>,
    grammar: Grammar,
}

impl<'a> SliceReader<'a> {
    /// Read the stream that starts at `data[0]`. `base` is the file offset of
    /// `data[0]` (the length of any envelope before it), so errors and items
    /// report file offsets.
    pub fn new(data: &'a [u8], word: WordSize, base: u64) -> Self {
        Self::with_layout(data, word, base, Layout::seed())
    }

    /// A reader for another legacy dialect's layout.
    pub(crate) fn with_layout(data: &'a [u8], word: WordSize, base: u64, layout: Layout) -> Self {
        SliceReader {
            input: SliceInput { data, pos: 0, base },
            grammar: Grammar::new(word, layout),
        }
    }

    /// The layout being read.
    pub fn layout(&self) -> Layout {
        self.grammar.layout()
    }

    /// The next item, or `None` at the end of the stream. Elements that are
    /// not seed items (chunks, magic pfns, …) are skipped; see
    /// [`next_element`](Self::next_element).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item<'a>>> {
        loop {
            let Some(raw) = self.grammar.next(&mut self.input)? else {
                return Ok(None);
            };
            if !is_extra(&raw) {
                let data: &'a [u8] = self.input.data;
                return Ok(Some(resolve(raw, self.grammar.word(), data)));
            }
        }
    }

    /// The next element of any dialect, or `None` at the end of the stream.
    pub fn next_element(&mut self) -> Result<Option<Element<'a>>> {
        let raw = self.grammar.next(&mut self.input)?;
        let data: &'a [u8] = self.input.data;
        Ok(raw.map(|r| resolve_element(r, self.grammar.word(), data)))
    }

    /// File offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.input.position()
    }

    /// The bytes after the stream (valid once [`next`](Self::next) returned
    /// `None`): the xend qemu record, or trailing garbage.
    pub fn rest(&self) -> &'a [u8] {
        &self.input.data[self.input.pos..]
    }

    /// True once the HVM blob has been read.
    pub fn is_done(&self) -> bool {
        self.grammar.is_done()
    }
}

impl<'a> Iterator for SliceReader<'a> {
    type Item = Result<Item<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        SliceReader::next(self).transpose()
    }
}

// ---------------------------------------------------------------- Read

/// Bulk reads grow the buffer in steps of this much, so a hostile length on
/// a pipe costs at most one step beyond the bytes that really arrived.
const GROW_STEP: usize = 1 << 20;

struct ReadInput<R> {
    inner: R,
    pos: u64,
    buf: Vec<u8>,
    /// File offset where the input ends, when known (a regular file read
    /// with read(2)): lengths past it are refused before reading.
    end: Option<u64>,
}

impl<R: Read> ReadInput<R> {
    /// Fill `dst` completely; on a short read report how much arrived.
    fn fill(&mut self, dst_start: usize, len: usize) -> std::io::Result<usize> {
        read_full(&mut self.inner, &mut self.buf[dst_start..dst_start + len]).map_err(|e| e.error)
    }
}

impl<R: Read> Input for ReadInput<R> {
    fn position(&self) -> u64 {
        self.pos
    }

    fn begin_item(&mut self) {
        self.buf.clear();
    }

    fn scalar_into(&mut self, out: &mut [u8], ctx: &dyn Fn() -> Context) -> Result<()> {
        let n = out.len();
        match read_full(&mut self.inner, out) {
            Ok(got) if got < n => Err(Error::truncated(self.pos, ctx(), n as u64, got as u64)),
            Ok(_) => {
                self.pos += n as u64;
                Ok(())
            }
            Err(e) => Err(Error::new(self.pos, ctx(), ErrorKind::Io(e.error))),
        }
    }

    fn bulk(&mut self, len: u64, what: &'static str, ctx: &dyn Fn() -> Context) -> Result<Span> {
        if let Some(end) = self.end {
            let remaining = end.saturating_sub(self.pos);
            if len > remaining {
                return Err(oversized(self.pos, ctx(), what, len, remaining));
            }
        }
        let start = self.buf.len();
        let mut done: u64 = 0;
        while done < len {
            let step = (len - done).min(GROW_STEP as u64) as usize;
            let at = self.buf.len();
            self.buf.resize(at + step, 0);
            let got = self
                .fill(at, step)
                .map_err(|e| Error::new(self.pos + done, ctx(), ErrorKind::Io(e)))?;
            done += got as u64;
            if got < step {
                self.buf.truncate(at + got);
                return Err(Error::truncated(self.pos, ctx(), len, done));
            }
        }
        self.pos += len;
        Ok(Span {
            start,
            len: len as usize,
        })
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.start..span.start + span.len]
    }

    fn remaining(&self) -> Option<u64> {
        self.end.map(|e| e.saturating_sub(self.pos))
    }
}

/// Pull reader over any `Read` (a pipe works). Memory is bounded by one
/// item: a batch needs at most 8 KiB of pfns plus 4 MiB of pages, reused
/// from item to item.
pub struct Reader<R> {
    input: ReadInput<R>,
    grammar: Grammar,
}

impl<R: Read> Reader<R> {
    /// Read the stream from `inner`, whose first byte is at file offset
    /// `base`.
    pub fn new(inner: R, word: WordSize, base: u64) -> Self {
        Self::with_layout(inner, word, base, Layout::seed())
    }

    /// A reader for another legacy dialect's layout.
    pub(crate) fn with_layout(inner: R, word: WordSize, base: u64, layout: Layout) -> Self {
        Reader {
            input: ReadInput {
                inner,
                pos: base,
                buf: Vec::new(),
                end: None,
            },
            grammar: Grammar::new(word, layout),
        }
    }

    /// The layout being read.
    pub fn layout(&self) -> Layout {
        self.grammar.layout()
    }

    /// The next element of any dialect, borrowing from the reader's buffer
    /// until the next call; `None` at the end of the stream.
    pub fn next_element(&mut self) -> Result<Option<Element<'_>>> {
        let raw = self.grammar.next(&mut self.input)?;
        let word = self.grammar.word();
        Ok(raw.map(|r| resolve_element(r, word, &self.input.buf)))
    }

    /// Declare the file offset where the input ends (a regular file's
    /// length), so a length past it is refused at once as oversized, as the
    /// slice reader does, instead of being read until the input runs out.
    pub(crate) fn with_end(mut self, end: u64) -> Self {
        self.input.end = Some(end);
        self
    }

    /// The next item, borrowing from the reader's buffer until the next call.
    /// Elements that are not seed items are skipped (see
    /// [`next_element`](Self::next_element)).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Item<'_>>> {
        let raw = loop {
            match self.grammar.next(&mut self.input)? {
                None => return Ok(None),
                Some(r) if is_extra(&r) => continue,
                Some(r) => break r,
            }
        };
        let word = self.grammar.word();
        Ok(Some(resolve(raw, word, &self.input.buf)))
    }

    /// File offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.input.pos
    }

    /// True once the HVM blob has been read.
    pub fn is_done(&self) -> bool {
        self.grammar.is_done()
    }

    /// Give back the underlying reader, positioned right after the last item
    /// read (the xend qemu record follows the HVM blob).
    pub fn into_inner(self) -> R {
        self.input.inner
    }
}

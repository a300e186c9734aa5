//! The stream grammar, once, for both readers.
//!
//! The grammar asks an [`Input`] for scalars and for bulk spans; the input
//! decides whether a span is a window into an mmap'd slice or bytes appended
//! to a reused buffer. The readers then turn the spans into borrowed items.

use crate::error::{Context, Error, ErrorKind, Result};
use crate::pfn::{WordSize, LTAB_MASK, MAX_BATCH, PAGE_SIZE};

/// A run of bytes in the input's backing store (the slice, or the reader's
/// item buffer).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    pub start: usize,
    pub len: usize,
}

/// Where the grammar gets its bytes from.
pub(crate) trait Input {
    /// File offset of the next byte.
    fn position(&self) -> u64;
    /// Start a new item: bulk spans of the previous item may be discarded.
    fn begin_item(&mut self);
    /// Read exactly `N` bytes for a scalar field.
    fn scalar<const N: usize>(&mut self, ctx: &dyn Fn() -> Context) -> Result<[u8; N]>;
    /// Take `len` bytes as one span. Must fail without allocating more than
    /// the input actually provides.
    fn bulk(&mut self, len: u64, what: &'static str, ctx: &dyn Fn() -> Context) -> Result<Span>;
    /// The bytes of a span taken since the last `begin_item`.
    fn bytes(&self, span: Span) -> &[u8];
}

/// Where the grammar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    MaxPfn,
    Chunks,
    VcpuCount,
    Vcpus { next: u32, count: u32 },
    HvmBlob,
    Done,
}

/// An item whose bulk parts are still spans.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawItem {
    MaxPfn {
        offset: u64,
        value: u64,
    },
    Batch {
        offset: u64,
        index: u64,
        verify: bool,
        pfns: Span,
        pages: Span,
    },
    VerifyMarker {
        offset: u64,
    },
    End {
        offset: u64,
    },
    VcpuCount {
        offset: u64,
        count: u32,
    },
    Vcpu {
        offset: u64,
        index: u32,
        bytes: Span,
    },
    HvmBlob {
        offset: u64,
        bytes: Span,
    },
}

/// The grammar's state between items.
#[derive(Debug, Clone)]
pub(crate) struct Grammar {
    word: WordSize,
    state: State,
    batches: u64,
    verify: bool,
}

impl Grammar {
    pub fn new(word: WordSize) -> Self {
        Grammar {
            word,
            state: State::MaxPfn,
            batches: 0,
            verify: false,
        }
    }

    pub fn word(&self) -> WordSize {
        self.word
    }

    /// True once the HVM blob has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parse the next item, or `None` after the HVM blob.
    pub fn next<I: Input>(&mut self, input: &mut I) -> Result<Option<RawItem>> {
        input.begin_item();
        let offset = input.position();
        let item = match self.state {
            State::Done => return Ok(None),
            State::MaxPfn => {
                let value = self.read_word(input, &|| Context::root().field("max_pfn"))?;
                self.state = State::Chunks;
                RawItem::MaxPfn { offset, value }
            }
            State::Chunks => self.chunk(input, offset)?,
            State::VcpuCount => {
                let count =
                    u32::from_le_bytes(input.scalar(&|| Context::root().field("nr_vcpus"))?);
                self.state = if count == 0 {
                    State::HvmBlob
                } else {
                    State::Vcpus { next: 0, count }
                };
                RawItem::VcpuCount { offset, count }
            }
            State::Vcpus { next, count } => {
                let ctx = || Context::root().index("vcpu", next as u64).field("size");
                let size = u32::from_le_bytes(input.scalar(&ctx)?);
                let ctx = || Context::root().index("vcpu", next as u64).field("context");
                let bytes = input.bulk(size as u64, "vcpu context", &ctx)?;
                self.state = if next + 1 == count {
                    State::HvmBlob
                } else {
                    State::Vcpus {
                        next: next + 1,
                        count,
                    }
                };
                RawItem::Vcpu {
                    offset,
                    index: next,
                    bytes,
                }
            }
            State::HvmBlob => {
                let len = u32::from_le_bytes(
                    input.scalar(&|| Context::root().field("hvm blob").field("length"))?,
                );
                let bytes = input.bulk(len as u64, "hvm blob", &|| {
                    Context::root().field("hvm blob")
                })?;
                self.state = State::Done;
                RawItem::HvmBlob { offset, bytes }
            }
        };
        Ok(Some(item))
    }

    fn read_word<I: Input>(&self, input: &mut I, ctx: &dyn Fn() -> Context) -> Result<u64> {
        Ok(match self.word {
            WordSize::W64 => u64::from_le_bytes(input.scalar::<8>(ctx)?),
            WordSize::W32 => u32::from_le_bytes(input.scalar::<4>(ctx)?) as u64,
        })
    }

    fn chunk<I: Input>(&mut self, input: &mut I, offset: u64) -> Result<RawItem> {
        let index = self.batches;
        let ctx = || Context::root().index("batch", index).field("count");
        let count = i32::from_le_bytes(input.scalar(&ctx)?);
        match count {
            0 => {
                self.state = State::VcpuCount;
                Ok(RawItem::End { offset })
            }
            -1 => {
                self.verify = true;
                Ok(RawItem::VerifyMarker { offset })
            }
            c if c < -1 || c as usize > MAX_BATCH => Err(Error::invalid(
                offset,
                ctx(),
                format!("a batch count 1..={MAX_BATCH}, -1 (verify marker) or 0 (terminator)"),
                c.to_string(),
            )),
            c => {
                let count = c as usize;
                let wb = self.word.bytes();
                let pctx = || Context::root().index("batch", index).field("pfns");
                let pfns = input.bulk((count * wb) as u64, "pfn array", &pctx)?;
                let word = self.word;
                let with_data = input
                    .bytes(pfns)
                    .chunks_exact(wb)
                    .filter(|c| word.read(c) & LTAB_MASK == 0)
                    .count();
                let gctx = || Context::root().index("batch", index).field("pages");
                let pages = input.bulk((with_data * PAGE_SIZE) as u64, "page data", &gctx)?;
                self.batches += 1;
                Ok(RawItem::Batch {
                    offset,
                    index,
                    verify: self.verify,
                    pfns,
                    pages,
                })
            }
        }
    }
}

/// The error for a bulk field that claims more than the input holds.
pub(crate) fn oversized(
    offset: u64,
    ctx: Context,
    what: &'static str,
    claimed: u64,
    remaining: u64,
) -> Error {
    Error::new(
        offset,
        ctx,
        ErrorKind::Oversized {
            what,
            claimed,
            remaining,
        },
    )
}

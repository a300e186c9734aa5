//! The stream grammar, once, for both readers.
//!
//! The grammar asks an [`Input`] for scalars and for bulk spans; the input
//! decides whether a span is a window into an mmap'd slice or bytes appended
//! to a reused buffer. The readers then turn the spans into borrowed items.

use super::Dialect;
use crate::bytes::{le, Int};
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::pfn::{WordSize, LTAB_MASK, MAX_BATCH, PAGE_SIZE};

/// What a dialect's stream is made of beyond the seed's grammar
/// (docs/format.md §7.1–7.2). Every legacy layout is the seed grammar with a
/// different tail after the `0` terminator, so one grammar serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The dialect this layout reads.
    pub dialect: Dialect,
    /// The stream starts with a word (max_pfn, or p2m_size from Apr 5 2007).
    pub leading_word: bool,
    /// Negative chunks other than -1 may occur (-2 only, or −2…−20).
    pub chunks: ChunkSet,
    /// A u32 `shared_info_frame` ends the stream (Mar 2007; Jan 2007 from
    /// `3f44314932`).
    pub shared_info_frame: bool,
    /// `DeviceModelRecord0002` + u32 length + data follows the HVM blob
    /// (libxl, Xen 4.1–4.5); read as part of the stream.
    pub device_model: bool,
}

/// Which negative chunk types a layout allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkSet {
    /// Only -1 (the seed era).
    VerifyOnly,
    /// -1 and -2 VCPU_INFO (Apr 5–11 2007).
    VcpuInfo,
    /// Everything Xen 3.1–4.5 wrote (−1…−20).
    Legacy,
}

impl Layout {
    /// The layout of `dialect`, with the optional parts absent.
    pub fn of(dialect: Dialect) -> Layout {
        Layout {
            dialect,
            leading_word: dialect != Dialect::Apr2007NoMaxPfn,
            chunks: match dialect {
                Dialect::Apr2007VcpuMap => ChunkSet::VcpuInfo,
                Dialect::Legacy => ChunkSet::Legacy,
                _ => ChunkSet::VerifyOnly,
            },
            shared_info_frame: dialect == Dialect::Mar2007,
            device_model: false,
        }
    }

    /// The seed's layout.
    pub fn seed() -> Layout {
        Layout::of(Dialect::Seed)
    }
}

/// Payload length after the i32 of a negative chunk whose payload is fixed
/// or self-describing (`xg_save_restore.h` @ 4.5); `None` for -5/-6 (TMEM,
/// whose framing needs tmem's own structures) and unknown types.
pub(crate) fn chunk_fixed_len(id: i32) -> Option<ChunkPayload> {
    Some(match id {
        -2 => ChunkPayload::VcpuInfo,
        -3 | -4 | -8 | -10 | -11 | -14 | -15 | -16 | -17 | -19 | -20 => ChunkPayload::Fixed(12),
        -7 => ChunkPayload::Fixed(20),
        -9 | -13 => ChunkPayload::Fixed(0),
        -12 => ChunkPayload::WordLength,
        -18 => ChunkPayload::U32Length,
        _ => return None,
    })
}

/// How a negative chunk's payload is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkPayload {
    /// This many bytes.
    Fixed(usize),
    /// `i32 max_vcpu_id` then `max_id/64 + 1` u64 map words.
    VcpuInfo,
    /// A ulong length, then that many bytes (COMPRESSED_DATA).
    WordLength,
    /// A u32 length, then that many bytes (TOOLSTACK).
    U32Length,
}

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
    /// Read exactly `out.len()` bytes for a scalar field.
    fn scalar_into(&mut self, out: &mut [u8], ctx: &dyn Fn() -> Context) -> Result<()>;
    /// Read exactly `N` bytes for a scalar field.
    fn scalar<const N: usize>(&mut self, ctx: &dyn Fn() -> Context) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.scalar_into(&mut out, ctx)?;
        Ok(out)
    }
    /// Read a little-endian integer field.
    fn le<T: Int>(&mut self, ctx: &dyn Fn() -> Context) -> Result<T> {
        let mut raw = T::Raw::default();
        self.scalar_into(raw.as_mut(), ctx)?;
        Ok(T::from_le_raw(raw))
    }
    /// Take `len` bytes as one span. Must fail without allocating more than
    /// the input actually provides.
    fn bulk(&mut self, len: u64, what: &'static str, ctx: &dyn Fn() -> Context) -> Result<Span>;
    /// The bytes of a span taken since the last `begin_item`.
    fn bytes(&self, span: Span) -> &[u8];
    /// Bytes left before the end of the input, when the input knows its end.
    fn remaining(&self) -> Option<u64>;
}

/// Where the grammar is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    MaxPfn,
    Chunks,
    MagicPfns,
    VcpuCount,
    Vcpus {
        next: u32,
        count: u32,
    },
    /// Contexts without a size prefix (Apr 5–11 2007).
    BareVcpus {
        next: u32,
        count: u32,
    },
    HvmBlob,
    SharedInfoFrame,
    DeviceModel,
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
    Chunk {
        offset: u64,
        id: i32,
        payload: Span,
    },
    MagicPfns {
        offset: u64,
        pfns: [u64; 3],
    },
    SharedInfoFrame {
        offset: u64,
        value: u32,
    },
    DeviceModel {
        offset: u64,
        bytes: Span,
    },
}

/// The grammar's state between items.
#[derive(Debug, Clone)]
pub(crate) struct Grammar {
    word: WordSize,
    layout: Layout,
    state: State,
    batches: u64,
    chunks: u64,
    verify: bool,
    /// vCPUs online in the last -2 chunk's map (unprefixed contexts follow).
    vcpus_from_map: u32,
}

impl Grammar {
    pub fn new(word: WordSize, layout: Layout) -> Self {
        Grammar {
            word,
            layout,
            state: if layout.leading_word {
                State::MaxPfn
            } else {
                State::Chunks
            },
            batches: 0,
            chunks: 0,
            verify: false,
            vcpus_from_map: 0,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn word(&self) -> WordSize {
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
            State::MagicPfns => {
                let mut pfns = [0u64; 3];
                for (i, p) in pfns.iter_mut().enumerate() {
                    let name = ["ioreq_pfn", "bufioreq_pfn", "store_pfn"][i];
                    *p = input.le(&|| Context::root().field("magic pfns").field(name))?;
                }
                self.state = match self.layout.dialect {
                    Dialect::Apr2007VcpuMap if self.vcpus_from_map > 0 => State::BareVcpus {
                        next: 0,
                        count: self.vcpus_from_map,
                    },
                    Dialect::Apr2007MagicPfns | Dialect::Apr2007NoMaxPfn => State::VcpuCount,
                    _ => State::HvmBlob,
                };
                RawItem::MagicPfns { offset, pfns }
            }
            State::VcpuCount => {
                let count: u32 = input.le(&|| Context::root().field("nr_vcpus"))?;
                // Every era bounds vCPU ids below 4096 (VCPU_INFO's
                // max_vcpu_id); a larger count is damage here, not a
                // misread record thousands of bytes on.
                if count > MAX_NR_VCPUS {
                    return Err(Error::invalid(
                        offset,
                        Context::root().field("nr_vcpus"),
                        format!("at most {MAX_NR_VCPUS} vcpus"),
                        count.to_string(),
                    ));
                }
                self.state = if count == 0 {
                    self.after_vcpus()
                } else {
                    State::Vcpus { next: 0, count }
                };
                RawItem::VcpuCount { offset, count }
            }
            State::BareVcpus { next, count } => {
                let ctx = || Context::root().index("vcpu", next as u64).field("context");
                let size = crate::stream::vcpu_context_size(self.word) as u64;
                let bytes = input.bulk(size, "vcpu context", &ctx)?;
                self.state = if next + 1 == count {
                    State::HvmBlob
                } else {
                    State::BareVcpus {
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
            State::SharedInfoFrame => {
                let value: u32 = input.le(&|| Context::root().field("shared_info_frame"))?;
                self.state = if self.layout.device_model {
                    State::DeviceModel
                } else {
                    State::Done
                };
                RawItem::SharedInfoFrame { offset, value }
            }
            State::DeviceModel => {
                let ctx = || Context::root().field("device model record");
                let sig: [u8; 21] = input.scalar(&|| ctx().field("signature"))?;
                if &sig != DM_RECORD_0002 {
                    return Err(Error::invalid(
                        offset,
                        ctx().field("signature"),
                        "DeviceModelRecord0002",
                        crate::envelope::escape_bytes(&sig),
                    ));
                }
                let len: u32 = input.le(&|| ctx().field("length"))?;
                let bytes =
                    input.bulk(len as u64, "device model state", &|| ctx().field("data"))?;
                self.state = State::Done;
                RawItem::DeviceModel { offset, bytes }
            }
            State::Vcpus { next, count } => {
                let ctx = || Context::root().index("vcpu", next as u64).field("size");
                let size: u32 = input.le(&ctx)?;
                let ctx = || Context::root().index("vcpu", next as u64).field("context");
                let bytes = input.bulk(size as u64, "vcpu context", &ctx)?;
                self.state = if next + 1 == count {
                    self.after_vcpus()
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
                let len: u32 = input.le(&|| Context::root().field("hvm blob").field("length"))?;
                // A length beyond a known end is the length field's fault:
                // say so at the field, not at the blob's first byte.
                if let Some(left) = input.remaining().filter(|&left| u64::from(len) > left) {
                    return Err(oversized(
                        offset,
                        Context::root().field("hvm blob").field("length"),
                        "hvm blob",
                        u64::from(len),
                        left,
                    ));
                }
                // Where the end is unknown (a pipe), running out is blamed
                // on the same field.
                let bytes = input
                    .bulk(len as u64, "hvm blob", &|| {
                        Context::root().field("hvm blob")
                    })
                    .map_err(|mut e| {
                        if matches!(e.kind, ErrorKind::Truncated { .. }) {
                            e.offset = offset;
                            e.context = Context::root().field("hvm blob").field("length");
                        }
                        e
                    })?;
                self.state = self.after_blob_at(input);
                RawItem::HvmBlob { offset, bytes }
            }
        };
        Ok(Some(item))
    }

    /// Where a layout goes after the length-prefixed vCPU records.
    fn after_vcpus(&self) -> State {
        match self.layout.dialect {
            // Jan–Mar 2007: the blob came first.
            Dialect::Jan2007 if self.layout.shared_info_frame => State::SharedInfoFrame,
            Dialect::Jan2007 => State::Done,
            _ => State::HvmBlob,
        }
    }

    /// Where a layout goes after the HVM blob.
    fn after_blob(&self) -> State {
        match self.layout.dialect {
            Dialect::Jan2007 => State::VcpuCount,
            _ if self.layout.shared_info_frame => State::SharedInfoFrame,
            _ if self.layout.device_model => State::DeviceModel,
            _ => State::Done,
        }
    }

    /// After the HVM blob of a 3.1–4.5 stream, bytes before a known end of
    /// input can only be libxl's device model record: read it as one.
    fn after_blob_at<I: Input>(&self, input: &I) -> State {
        match self.after_blob() {
            State::Done
                if self.layout.dialect == Dialect::Legacy
                    && input
                        .remaining()
                        .is_some_and(|r| r >= DM_RECORD_0002.len() as u64 + 4) =>
            {
                State::DeviceModel
            }
            s => s,
        }
    }

    /// Where a layout goes after the `0` terminator.
    fn after_terminator(&self) -> State {
        match self.layout.dialect {
            Dialect::Jan2007 => State::HvmBlob,
            Dialect::Apr2007MagicPfns
            | Dialect::Apr2007NoMaxPfn
            | Dialect::Apr2007VcpuMap
            | Dialect::Legacy => State::MagicPfns,
            _ => State::VcpuCount,
        }
    }

    fn read_word<I: Input>(&self, input: &mut I, ctx: &dyn Fn() -> Context) -> Result<u64> {
        Ok(match self.word {
            WordSize::W64 => input.le::<u64>(ctx)?,
            WordSize::W32 => u64::from(input.le::<u32>(ctx)?),
        })
    }

    fn chunk<I: Input>(&mut self, input: &mut I, offset: u64) -> Result<RawItem> {
        let index = self.batches;
        let ctx = || Context::root().index("batch", index).field("count");
        let count: i32 = input.le(&ctx)?;
        match count {
            0 => {
                self.state = self.after_terminator();
                Ok(RawItem::End { offset })
            }
            -1 => {
                self.verify = true;
                Ok(RawItem::VerifyMarker { offset })
            }
            c if c < -1 && self.chunk_allowed(c) => self.negative_chunk(input, offset, c),
            c if c < -1 || c as usize > MAX_BATCH => Err(Error::invalid(
                offset,
                ctx(),
                match self.layout.chunks {
                    ChunkSet::VerifyOnly => format!(
                        "a batch count 1..={MAX_BATCH}, -1 (verify marker) or 0 (terminator)"
                    ),
                    ChunkSet::VcpuInfo => format!(
                        "a batch count 1..={MAX_BATCH}, -1, -2 (VCPU_INFO) or 0 (terminator)"
                    ),
                    ChunkSet::Legacy => format!(
                        "a batch count 1..={MAX_BATCH}, 0, or a chunk type -1…-20 other than -5/-6 (TMEM)"
                    ),
                },
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

impl Grammar {
    fn chunk_allowed(&self, id: i32) -> bool {
        match self.layout.chunks {
            ChunkSet::VerifyOnly => false,
            ChunkSet::VcpuInfo => id == -2,
            ChunkSet::Legacy => chunk_fixed_len(id).is_some(),
        }
    }

    fn negative_chunk<I: Input>(&mut self, input: &mut I, offset: u64, id: i32) -> Result<RawItem> {
        let index = self.chunks;
        let ctx = || Context::root().index("chunk", index).field("payload");
        let start = input.position();
        // Payloads are read as one span; the length-prefixed kinds read
        // their prefix as part of it so the span is the exact payload.
        let payload = match chunk_fixed_len(id) {
            Some(ChunkPayload::Fixed(n)) => input.bulk(n as u64, "chunk payload", &ctx)?,
            Some(ChunkPayload::VcpuInfo) => {
                let head = input.bulk(4, "VCPU_INFO max_vcpu_id", &ctx)?;
                let max_id: u32 =
                    le(input.bytes(head), 0).ok_or_else(|| Error::truncated(start, ctx(), 4, 0))?;
                if max_id > 4095 {
                    return Err(Error::invalid(
                        start,
                        ctx().field("max_vcpu_id"),
                        "0..=4095 (MAX_VCPU_ID)",
                        max_id.to_string(),
                    ));
                }
                let words = (max_id as u64 / 64) + 1;
                let map = input.bulk(words * 8, "VCPU_INFO map", &ctx)?;
                self.vcpus_from_map = input
                    .bytes(map)
                    .chunks_exact(8)
                    .map(|c| le::<u64>(c, 0).unwrap_or_default().count_ones())
                    .sum();
                Span {
                    start: head.start,
                    len: head.len + map.len,
                }
            }
            Some(ChunkPayload::WordLength) => {
                let wb = self.word.bytes();
                let head = input.bulk(wb as u64, "chunk length", &ctx)?;
                let len = self.word.read(input.bytes(head));
                let body = input.bulk(len, "chunk payload", &ctx)?;
                Span {
                    start: head.start,
                    len: head.len + body.len,
                }
            }
            Some(ChunkPayload::U32Length) => {
                let head = input.bulk(4, "chunk length", &ctx)?;
                let len: u32 =
                    le(input.bytes(head), 0).ok_or_else(|| Error::truncated(start, ctx(), 4, 0))?;
                let body = input.bulk(len as u64, "chunk payload", &ctx)?;
                Span {
                    start: head.start,
                    len: head.len + body.len,
                }
            }
            None => {
                return Err(Error::invalid(
                    offset,
                    Context::root().index("chunk", index).field("type"),
                    "a chunk type with a known payload",
                    id.to_string(),
                ))
            }
        };
        self.chunks += 1;
        Ok(RawItem::Chunk {
            offset,
            id,
            payload,
        })
    }
}

/// The most vCPUs a legacy stream can carry (vCPU ids are below 4096).
pub(crate) const MAX_NR_VCPUS: u32 = 4096;

/// The signature libxl (4.1–4.5) wrote before the device model's state.
pub const DM_RECORD_0002: &[u8; 21] = b"DeviceModelRecord0002";

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

//! Writing the legacy dialects after the seed (docs/format.md §7.1–7.2): the
//! Jan–Apr 2007 layouts and Xen 3.1–4.5's chunked stream, with its magic
//! pfns and libxl's `DeviceModelRecord0002`.
//!
//! Reading is the seed grammar parameterised by a
//! [`crate::stream::Layout`] (`stream::SliceReader::with_layout`,
//! `stream::Reader::with_layout`, `next_element`); this writer is its mirror
//! and refuses elements the layout does not allow at that point, so that
//! what it writes reads back element for element and byte for byte.

use std::io::{IoSlice, Write};

use crate::bytes::le;
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::pfn::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};
use crate::stream::Dialect;
use crate::stream::{vcpu_context_size, ChunkSet, Element, Item, Layout};

/// What the layout expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Pages,
    MagicPfns,
    VcpuCount,
    Vcpus { left: u32 },
    BareVcpus { left: u32 },
    HvmBlob,
    SharedInfoFrame,
    DeviceModel,
    Done,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Start => "the start of the stream",
            Phase::Pages => "a batch, a chunk or the terminator",
            Phase::MagicPfns => "the magic pfns",
            Phase::VcpuCount => "nr_vcpus",
            Phase::Vcpus { .. } | Phase::BareVcpus { .. } => "a vcpu context",
            Phase::HvmBlob => "the hvm blob",
            Phase::SharedInfoFrame => "shared_info_frame",
            Phase::DeviceModel => "the device model record",
            Phase::Done => "nothing (the stream is complete)",
        }
    }
}

/// What follows the terminator in any legacy layout; [`Writer::tail`]
/// writes the parts the layout has, in its order.
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    /// `(ioreq, bufioreq, store)` (layouts from 4 Apr 2007 on).
    pub magic_pfns: (u64, u64, u64),
    /// The vCPU contexts (all layouts before Xen 3.1).
    pub vcpus: &'a [&'a [u8]],
    /// The HVM context blob.
    pub hvm_blob: &'a [u8],
    /// Jan–Mar 2007's trailing `shared_info_frame`.
    pub shared_info_frame: u32,
    /// The device model's state behind `DeviceModelRecord0002` (libxl).
    pub device_model: &'a [u8],
}

/// Writer of any legacy layout. Elements must come in the layout's order.
pub struct Writer<W> {
    out: W,
    word: WordSize,
    layout: Layout,
    phase: Phase,
    pos: u64,
    /// vCPUs online in the last -2 chunk (unprefixed contexts follow).
    map_vcpus: u32,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// A writer for `layout` with toolstack word `word`.
    pub fn new(out: W, word: WordSize, layout: Layout) -> Self {
        Writer {
            out,
            word,
            layout,
            phase: if layout.leading_word {
                Phase::Start
            } else {
                Phase::Pages
            },
            pos: 0,
            map_vcpus: 0,
            scratch: Vec::with_capacity(4 + MAX_BATCH * 8),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn refuse(&self, item: &'static str) -> Error {
        Error::new(
            self.pos,
            Context::root(),
            ErrorKind::OutOfOrder {
                item,
                after: self.phase.name(),
            },
        )
    }

    fn put(&mut self, bytes: &[u8], ctx: impl Fn() -> Context) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::new(self.pos, ctx(), ErrorKind::Io(e)))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn len32(&self, n: usize, what: &'static str) -> Result<u32> {
        u32::try_from(n).map_err(|_| {
            Error::invalid(
                self.pos,
                Context::root().field(what),
                "a length under 4 GiB",
                n.to_string(),
            )
        })
    }

    /// The leading word: inclusive max_pfn (2007) or p2m_size (3.1–4.5).
    pub fn leading_word(&mut self, value: u64) -> Result<()> {
        if self.phase != Phase::Start {
            return Err(self.refuse("leading word"));
        }
        if value > self.word.max_value() {
            return Err(Error::invalid(
                self.pos,
                Context::root().field("max_pfn"),
                format!("a value that fits a {} word", self.word),
                format!("{value:#x}"),
            ));
        }
        let mut b = Vec::with_capacity(8);
        self.word.write(value, &mut b);
        self.put(&b, || Context::root().field("max_pfn"))?;
        self.phase = Phase::Pages;
        Ok(())
    }

    /// One batch (1..=1024 entries, a page per entry without type bits).
    pub fn batch(&mut self, entries: &[PfnEntry], pages: &[&[u8]]) -> Result<()> {
        if self.phase != Phase::Pages {
            return Err(self.refuse("batch"));
        }
        let with_data = entries.iter().filter(|e| e.has_data()).count();
        if entries.is_empty()
            || entries.len() > MAX_BATCH
            || pages.len() != with_data
            || pages.iter().any(|p| p.len() != PAGE_SIZE)
            || entries.iter().any(|e| e.raw() > self.word.max_value())
        {
            return Err(Error::invalid(
                self.pos,
                Context::root().field("batch"),
                format!("1..={MAX_BATCH} word-sized entries and one 4096-byte page per data entry"),
                format!("{} entries, {} pages", entries.len(), pages.len()),
            ));
        }
        let mut head = std::mem::take(&mut self.scratch);
        head.clear();
        head.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            self.word.write(e.raw(), &mut head);
        }
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(1 + pages.len());
        iov.push(IoSlice::new(&head));
        iov.extend(pages.iter().map(|p| IoSlice::new(p)));
        let total = head.len() as u64 + (pages.len() * PAGE_SIZE) as u64;
        let res = crate::bytes::write_all_vectored(&mut self.out, &mut iov);
        drop(iov);
        self.scratch = head;
        res.map_err(|e| Error::new(self.pos, Context::root().field("batch"), ErrorKind::Io(e)))?;
        self.pos += total;
        Ok(())
    }

    /// The `-1` verify marker.
    pub fn verify_marker(&mut self) -> Result<()> {
        if self.phase != Phase::Pages {
            return Err(self.refuse("verify marker"));
        }
        self.put(&(-1i32).to_le_bytes(), || {
            Context::root().field("verify marker")
        })
    }

    /// A negative chunk (−2…−20) with its payload exactly as it is stored
    /// (length prefixes included).
    pub fn chunk(&mut self, id: i32, payload: &[u8]) -> Result<()> {
        if self.phase != Phase::Pages {
            return Err(self.refuse("chunk"));
        }
        let allowed = match self.layout.chunks {
            ChunkSet::VerifyOnly => false,
            ChunkSet::VcpuInfo => id == -2,
            ChunkSet::Legacy => (-20..-1).contains(&id) && id != -5 && id != -6,
        };
        if !allowed {
            return Err(Error::invalid(
                self.pos,
                Context::root().field("chunk"),
                format!("a chunk type {} allows", self.layout.dialect.describe()),
                id.to_string(),
            ));
        }
        // Re-parse the payload with the reader's grammar so a chunk that
        // would not read back is refused here.
        let mut probe = id.to_le_bytes().to_vec();
        probe.extend_from_slice(payload);
        probe.extend_from_slice(&0i32.to_le_bytes());
        let mut layout = self.layout;
        layout.leading_word = false;
        let mut r = crate::stream::SliceReader::with_layout(&probe, self.word, self.pos, layout);
        match r.next_element()? {
            Some(Element::Chunk(c)) if c.payload.len() == payload.len() => {}
            _ => {
                return Err(Error::invalid(
                    self.pos,
                    Context::root().field("chunk").field("payload"),
                    format!("the payload layout of chunk {id}"),
                    format!("{} bytes", payload.len()),
                ))
            }
        }
        if id == -2 {
            // The payload matched chunk -2's layout above (4 + 8·n bytes).
            self.map_vcpus = payload
                .get(4..)
                .unwrap_or_default()
                .chunks_exact(8)
                .map(|c| le::<u64>(c, 0).unwrap_or_default().count_ones())
                .sum();
        }
        self.put(&probe[..4 + payload.len()], || {
            Context::root().field("chunk")
        })
    }

    /// The `0` terminator.
    pub fn end(&mut self) -> Result<()> {
        if self.phase != Phase::Pages {
            return Err(self.refuse("terminator"));
        }
        self.put(&0i32.to_le_bytes(), || Context::root().field("terminator"))?;
        self.phase = match self.layout.dialect {
            Dialect::Jan2007 => Phase::HvmBlob,
            Dialect::Apr2007MagicPfns
            | Dialect::Apr2007NoMaxPfn
            | Dialect::Apr2007VcpuMap
            | Dialect::Legacy => Phase::MagicPfns,
            _ => Phase::VcpuCount,
        };
        Ok(())
    }

    /// `u64 ioreq_pfn, bufioreq_pfn, store_pfn`.
    pub fn magic_pfns(&mut self, ioreq: u64, bufioreq: u64, store: u64) -> Result<()> {
        if self.phase != Phase::MagicPfns {
            return Err(self.refuse("magic pfns"));
        }
        let mut b = Vec::with_capacity(24);
        for v in [ioreq, bufioreq, store] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        self.put(&b, || Context::root().field("magic pfns"))?;
        self.phase = match self.layout.dialect {
            Dialect::Apr2007VcpuMap if self.map_vcpus > 0 => Phase::BareVcpus {
                left: self.map_vcpus,
            },
            Dialect::Apr2007MagicPfns | Dialect::Apr2007NoMaxPfn => Phase::VcpuCount,
            _ => Phase::HvmBlob,
        };
        Ok(())
    }

    fn after_vcpus(&self) -> Phase {
        match self.layout.dialect {
            Dialect::Jan2007 if self.layout.shared_info_frame => Phase::SharedInfoFrame,
            Dialect::Jan2007 => Phase::Done,
            _ => Phase::HvmBlob,
        }
    }

    /// `nr_vcpus` (layouts with length-prefixed contexts).
    pub fn vcpu_count(&mut self, count: u32) -> Result<()> {
        if self.phase != Phase::VcpuCount {
            return Err(self.refuse("nr_vcpus"));
        }
        self.put(&count.to_le_bytes(), || Context::root().field("nr_vcpus"))?;
        self.phase = if count == 0 {
            self.after_vcpus()
        } else {
            Phase::Vcpus { left: count }
        };
        Ok(())
    }

    /// One vCPU context: length-prefixed, or bare (Apr 5–11 2007, exactly
    /// `sizeof(vcpu_guest_context)` of the word size).
    pub fn vcpu(&mut self, context: &[u8]) -> Result<()> {
        match self.phase {
            Phase::Vcpus { left } => {
                let len = self.len32(context.len(), "vcpu")?;
                self.put(&len.to_le_bytes(), || Context::root().field("vcpu"))?;
                self.put(context, || Context::root().field("vcpu"))?;
                self.phase = if left == 1 {
                    self.after_vcpus()
                } else {
                    Phase::Vcpus { left: left - 1 }
                };
            }
            Phase::BareVcpus { left } => {
                let want = vcpu_context_size(self.word) as usize;
                if context.len() != want {
                    return Err(Error::invalid(
                        self.pos,
                        Context::root().field("vcpu"),
                        format!("{want} bytes (no size prefix in this layout)"),
                        context.len().to_string(),
                    ));
                }
                self.put(context, || Context::root().field("vcpu"))?;
                self.phase = if left == 1 {
                    Phase::HvmBlob
                } else {
                    Phase::BareVcpus { left: left - 1 }
                };
            }
            _ => return Err(self.refuse("vcpu record")),
        }
        Ok(())
    }

    /// `u32 len` + the HVM context blob.
    pub fn hvm_blob(&mut self, blob: &[u8]) -> Result<()> {
        if self.phase != Phase::HvmBlob {
            return Err(self.refuse("hvm blob"));
        }
        let len = self.len32(blob.len(), "hvm blob")?;
        self.put(&len.to_le_bytes(), || Context::root().field("hvm blob"))?;
        self.put(blob, || Context::root().field("hvm blob"))?;
        self.phase = match self.layout.dialect {
            Dialect::Jan2007 => Phase::VcpuCount,
            _ if self.layout.shared_info_frame => Phase::SharedInfoFrame,
            _ if self.layout.device_model => Phase::DeviceModel,
            _ => Phase::Done,
        };
        Ok(())
    }

    /// The trailing u32 `shared_info_frame` (Jan–Mar 2007).
    pub fn shared_info_frame(&mut self, value: u32) -> Result<()> {
        if self.phase != Phase::SharedInfoFrame {
            return Err(self.refuse("shared_info_frame"));
        }
        self.put(&value.to_le_bytes(), || {
            Context::root().field("shared_info_frame")
        })?;
        self.phase = if self.layout.device_model {
            Phase::DeviceModel
        } else {
            Phase::Done
        };
        Ok(())
    }

    /// `DeviceModelRecord0002` + u32 length + the device model's state.
    pub fn device_model(&mut self, state: &[u8]) -> Result<()> {
        if self.phase != Phase::DeviceModel {
            return Err(self.refuse("device model record"));
        }
        let len = self.len32(state.len(), "device model record")?;
        let ctx = || Context::root().field("device model record");
        self.put(b"DeviceModelRecord0002", ctx)?;
        self.put(&len.to_le_bytes(), ctx)?;
        self.put(state, ctx)?;
        self.phase = Phase::Done;
        Ok(())
    }

    /// Everything after the terminator, in the order this writer's layout
    /// puts it (magic pfns, vCPUs with or without a count, the HVM blob,
    /// `shared_info_frame`, the device model record), taking from `tail`
    /// only the parts the layout has. Callers need not know each dialect's
    /// order: the layout does.
    pub fn tail(&mut self, tail: &Tail<'_>) -> Result<()> {
        let mut vcpus = tail.vcpus.iter();
        loop {
            match self.phase {
                Phase::MagicPfns => {
                    let (ioreq, bufioreq, store) = tail.magic_pfns;
                    self.magic_pfns(ioreq, bufioreq, store)?
                }
                Phase::VcpuCount => self.vcpu_count(self.len32(tail.vcpus.len(), "nr_vcpus")?)?,
                Phase::Vcpus { .. } | Phase::BareVcpus { .. } => match vcpus.next() {
                    Some(c) => self.vcpu(c)?,
                    None => return Err(self.refuse("the tail (it has fewer vcpu contexts)")),
                },
                Phase::HvmBlob => self.hvm_blob(tail.hvm_blob)?,
                Phase::SharedInfoFrame => self.shared_info_frame(tail.shared_info_frame)?,
                Phase::DeviceModel => self.device_model(tail.device_model)?,
                Phase::Done => return Ok(()),
                Phase::Start | Phase::Pages => return Err(self.refuse("the tail")),
            }
        }
    }

    /// Write an element read from another stream, byte for byte.
    pub fn element(&mut self, e: &Element<'_>) -> Result<()> {
        match e {
            Element::Item(Item::MaxPfn { value, .. }) => self.leading_word(*value),
            Element::Item(Item::Batch(b)) => {
                let entries: Vec<PfnEntry> = b.entries().collect();
                let pages: Vec<&[u8]> = b.pages().map(|(_, p, _)| p).collect();
                self.batch(&entries, &pages)
            }
            Element::Item(Item::VerifyMarker { .. }) => self.verify_marker(),
            Element::Item(Item::End { .. }) => self.end(),
            Element::Item(Item::VcpuCount { count, .. }) => self.vcpu_count(*count),
            Element::Item(Item::Vcpu(v)) => self.vcpu(v.bytes),
            Element::Item(Item::HvmBlob(h)) => self.hvm_blob(h.bytes),
            Element::Chunk(c) => self.chunk(c.id, c.payload),
            Element::MagicPfns(m) => self.magic_pfns(m.ioreq, m.bufioreq, m.store),
            Element::SharedInfoFrame { value, .. } => self.shared_info_frame(*value),
            Element::DeviceModel(d) => self.device_model(d.bytes),
            Element::V2Record { name, .. } => Err(self.refuse(name)),
        }
    }

    /// True once the layout's last element has been written.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Flush and hand back the sink; refuses an unfinished stream.
    pub fn finish(mut self) -> Result<W> {
        if self.phase != Phase::Done {
            return Err(self.refuse("the end of the stream"));
        }
        self.out
            .flush()
            .map_err(|e| Error::new(self.pos, Context::root(), ErrorKind::Io(e)))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests;

pub mod libvirt;

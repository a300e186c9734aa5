//! The items a stream is made of, borrowed from the reader's buffer or the
//! input slice.

use crate::bytes::le;
use crate::pfn::{PfnEntry, WordSize, PAGE_SIZE};

/// One element of the stream grammar, with the file offset it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// The leading `max_pfn` word (inclusive highest pfn).
    MaxPfn {
        /// File offset of the word.
        offset: u64,
        /// The highest pfn.
        value: u64,
    },
    /// A batch of pfn entries and their pages.
    Batch(Batch<'a>),
    /// The `-1` chunk: what follows is the verify resend.
    VerifyMarker {
        /// File offset of the chunk.
        offset: u64,
    },
    /// The `0` chunk that ends the page section.
    End {
        /// File offset of the chunk.
        offset: u64,
    },
    /// `nr_vcpus`: how many vCPU records follow.
    VcpuCount {
        /// File offset of the count.
        offset: u64,
        /// The count.
        count: u32,
    },
    /// One vCPU record (`u32 size` + context bytes).
    Vcpu(VcpuRecord<'a>),
    /// The HVM context blob (`u32 len` + blob): the last item.
    HvmBlob(HvmBlob<'a>),
}

impl Item<'_> {
    /// File offset of the item's first byte.
    pub fn offset(&self) -> u64 {
        match self {
            Item::MaxPfn { offset, .. }
            | Item::VerifyMarker { offset }
            | Item::End { offset }
            | Item::VcpuCount { offset, .. } => *offset,
            Item::Batch(b) => b.offset,
            Item::Vcpu(v) => v.offset,
            Item::HvmBlob(h) => h.offset,
        }
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Item::MaxPfn { .. } => "max_pfn",
            Item::Batch(_) => "batch",
            Item::VerifyMarker { .. } => "verify marker",
            Item::End { .. } => "terminator",
            Item::VcpuCount { .. } => "nr_vcpus",
            Item::Vcpu(_) => "vcpu record",
            Item::HvmBlob(_) => "hvm blob",
        }
    }
}

/// A batch: `count`, the raw pfn words and the pages of the entries that
/// carry data, exactly as stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Offset of the count field.
    pub offset: u64,
    /// 0-based number of this batch in the stream (the verify marker does not
    /// restart the numbering).
    pub index: u64,
    /// True for batches after the verify marker.
    pub verify: bool,
    pub(crate) word: WordSize,
    pub(crate) pfn_bytes: &'a [u8],
    pub(crate) pages: &'a [u8],
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("offset", &self.offset)
            .field("index", &self.index)
            .field("verify", &self.verify)
            .field("count", &self.count())
            .field("pages", &self.page_count())
            .finish()
    }
}

impl<'a> Batch<'a> {
    /// Number of pfn entries.
    pub fn count(&self) -> usize {
        self.pfn_bytes.len() / self.word.bytes()
    }

    /// Number of entries that carry a page.
    pub fn page_count(&self) -> usize {
        self.pages.len() / PAGE_SIZE
    }

    /// The toolstack word size the pfns were written with.
    pub fn word(&self) -> WordSize {
        self.word
    }

    /// Entry `i` (panics if `i >= count()`, like slice indexing).
    pub fn entry(&self, i: usize) -> PfnEntry {
        let w = self.word.bytes();
        PfnEntry(self.word.read(&self.pfn_bytes[i * w..]))
    }

    /// The pfn entries in stream order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = PfnEntry> + 'a {
        let word = self.word;
        self.pfn_bytes
            .chunks_exact(word.bytes())
            .map(move |c| PfnEntry(word.read(c)))
    }

    /// The raw pfn array bytes.
    pub fn pfn_bytes(&self) -> &'a [u8] {
        self.pfn_bytes
    }

    /// All page data of the batch, concatenated in entry order.
    pub fn page_bytes(&self) -> &'a [u8] {
        self.pages
    }

    /// File offset of the first page of the batch.
    pub fn pages_offset(&self) -> u64 {
        self.offset + 4 + self.pfn_bytes.len() as u64
    }

    /// File offset of entry `i`'s pfn word.
    pub fn entry_offset(&self, i: usize) -> u64 {
        self.offset + 4 + (i * self.word.bytes()) as u64
    }

    /// The entries that carry data, each with its page and the page's file
    /// offset, in stream order.
    pub fn pages(&self) -> impl Iterator<Item = (PfnEntry, &'a [u8], u64)> + 'a {
        let base = self.pages_offset();
        let pages = self.pages;
        self.entries()
            .filter(|e| e.has_data())
            .enumerate()
            .map(move |(k, e)| {
                (
                    e,
                    &pages[k * PAGE_SIZE..(k + 1) * PAGE_SIZE],
                    base + (k * PAGE_SIZE) as u64,
                )
            })
    }

    /// Bytes the batch occupies in the stream.
    pub fn encoded_len(&self) -> u64 {
        4 + self.pfn_bytes.len() as u64 + self.pages.len() as u64
    }
}

/// One vCPU record: the declared size and the context bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuRecord<'a> {
    /// Offset of the size field.
    pub offset: u64,
    /// 0-based record number (the seed restorer loads record i into vCPU i).
    pub index: u32,
    /// The context bytes (`size` of them).
    pub bytes: &'a [u8],
}

impl VcpuRecord<'_> {
    /// File offset of the context bytes.
    pub fn data_offset(&self) -> u64 {
        self.offset + 4
    }
}

/// The HVM context blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmBlob<'a> {
    /// Offset of the length field.
    pub offset: u64,
    /// The blob bytes.
    pub bytes: &'a [u8],
}

impl HvmBlob<'_> {
    /// File offset of the blob's first byte (records' blob-relative offsets
    /// are added to this).
    pub fn data_offset(&self) -> u64 {
        self.offset + 4
    }
}

/// One element of any legacy dialect's stream: the seed grammar's
/// [`Item`]s plus what later dialects added (docs/format.md §7). Kept apart
/// from [`Item`] so that consumers of the seed dialect keep their exhaustive
/// matches; [`Reader::next`](super::Reader::next) yields only items,
/// `next_element` everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element<'a> {
    /// An item of the seed grammar.
    Item(Item<'a>),
    /// A negative chunk other than -1 (−2…−20), with its payload.
    Chunk(Chunk<'a>),
    /// `u64 ioreq_pfn, bufioreq_pfn, store_pfn` after the terminator (Apr
    /// 2007 on).
    MagicPfns(MagicPfns),
    /// The u32 `shared_info_frame` that ends Jan–Mar 2007 streams.
    SharedInfoFrame {
        /// File offset of the word.
        offset: u64,
        /// The frame number.
        value: u32,
    },
    /// `DeviceModelRecord0002` + u32 length + the device model's state
    /// (libxl, Xen 4.1–4.5; the xl file of Xen ≤ 4.5), or a v2 stream's
    /// EMULATOR_CONTEXT.
    DeviceModel(DeviceModel<'a>),
    /// A migration v2 record with no legacy counterpart (viewing a v2
    /// image as elements: TSC_INFO, STATIC_DATA_END, policies, …).
    V2Record {
        /// File offset of the item.
        offset: u64,
        /// The v2 record type's name.
        name: &'static str,
        /// Body length in bytes.
        len: u64,
    },
}

impl<'a> Element<'a> {
    /// File offset of the element's first byte.
    pub fn offset(&self) -> u64 {
        match self {
            Element::Item(i) => i.offset(),
            Element::Chunk(c) => c.offset,
            Element::MagicPfns(m) => m.offset,
            Element::SharedInfoFrame { offset, .. } => *offset,
            Element::DeviceModel(d) => d.offset,
            Element::V2Record { offset, .. } => *offset,
        }
    }

    /// The seed item, if this is one.
    pub fn as_item(&self) -> Option<&Item<'a>> {
        match self {
            Element::Item(i) => Some(i),
            _ => None,
        }
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Element::Item(i) => i.name(),
            Element::Chunk(c) => c.name(),
            Element::MagicPfns(_) => "magic pfns",
            Element::SharedInfoFrame { .. } => "shared_info_frame",
            Element::DeviceModel(_) => "device model record",
            Element::V2Record { name, .. } => name,
        }
    }
}

/// A negative chunk of the 3.1–4.5 stream (`XC_SAVE_ID_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Offset of the i32 chunk type.
    pub offset: u64,
    /// The chunk type (−2…−20).
    pub id: i32,
    /// The payload after the type, length prefix included where it has one.
    pub payload: &'a [u8],
}

impl Chunk<'_> {
    /// `XC_SAVE_ID_*` name (legacy.py's spelling).
    pub fn name(&self) -> &'static str {
        chunk_name(self.id)
    }

    /// The u64 value of an HVM-param chunk (`u32 pad, u64 value`), for the
    /// types that carry one.
    pub fn param_value(&self) -> Option<u64> {
        if chunk_hvm_param(self.id).is_none() || self.payload.len() != 12 {
            return None;
        }
        le(self.payload, 4)
    }

    /// Encoded length: the type plus the payload.
    pub fn encoded_len(&self) -> u64 {
        4 + self.payload.len() as u64
    }
}

/// `XC_SAVE_ID_*` name of a chunk type.
pub fn chunk_name(id: i32) -> &'static str {
    match id {
        -1 => "ENABLE_VERIFY_MODE",
        -2 => "VCPU_INFO",
        -3 => "HVM_IDENT_PT",
        -4 => "HVM_VM86_TSS",
        -5 => "TMEM",
        -6 => "TMEM_EXTRA",
        -7 => "TSC_INFO",
        -8 => "HVM_CONSOLE_PFN",
        -9 => "LAST_CHECKPOINT",
        -10 => "HVM_ACPI_IOPORTS_LOCATION",
        -11 => "HVM_VIRIDIAN",
        -12 => "COMPRESSED_DATA",
        -13 => "ENABLE_COMPRESSION",
        -14 => "HVM_GENERATION_ID_ADDR",
        -15 => "HVM_PAGING_RING_PFN",
        -16 => "HVM_MONITOR_RING_PFN",
        -17 => "HVM_SHARING_RING_PFN",
        -18 => "TOOLSTACK",
        -19 => "HVM_IOREQ_SERVER_PFN",
        -20 => "HVM_NR_IOREQ_SERVER_PAGES",
        _ => "unknown",
    }
}

/// The `HVM_PARAM_*` index a legacy HVM-param chunk sets (legacy.py's
/// table; `hvm/params.h`).
pub fn chunk_hvm_param(id: i32) -> Option<u64> {
    Some(match id {
        -3 => 12,  // IDENT_PT
        -4 => 15,  // VM86_TSS
        -8 => 17,  // CONSOLE_PFN
        -10 => 19, // ACPI_IOPORTS_LOCATION
        -11 => 9,  // VIRIDIAN
        -14 => 34, // VM_GENERATION_ID_ADDR
        -15 => 27, // PAGING_RING_PFN
        -16 => 28, // MONITOR_RING_PFN
        -17 => 29, // SHARING_RING_PFN
        -19 => 32, // IOREQ_SERVER_PFN
        -20 => 33, // NR_IOREQ_SERVER_PAGES
        _ => return None,
    })
}

/// The three magic pfns (docs/format.md §7.2: order ioreq, bufioreq, store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MagicPfns {
    /// Offset of the first u64.
    pub offset: u64,
    /// `HVM_PARAM_IOREQ_PFN`.
    pub ioreq: u64,
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub bufioreq: u64,
    /// `HVM_PARAM_STORE_PFN`.
    pub store: u64,
}

/// libxl's device model record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceModel<'a> {
    /// Offset of the `DeviceModelRecord0002` signature (or of the v2
    /// record header).
    pub offset: u64,
    /// File offset of the state's first byte.
    pub data_offset: u64,
    /// The device model's state (a QEVM file for qemu-traditional).
    pub bytes: &'a [u8],
}

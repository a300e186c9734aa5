//! The items a stream is made of, borrowed from the reader's buffer or the
//! input slice.

use crate::pfn::{PfnEntry, WordSize, PAGE_SIZE};

/// One element of the stream grammar, with the file offset it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// The leading `max_pfn` word (inclusive highest pfn).
    MaxPfn { offset: u64, value: u64 },
    /// A batch of pfn entries and their pages.
    Batch(Batch<'a>),
    /// The `-1` chunk: what follows is the verify resend.
    VerifyMarker { offset: u64 },
    /// The `0` chunk that ends the page section.
    End { offset: u64 },
    /// `nr_vcpus`: how many vCPU records follow.
    VcpuCount { offset: u64, count: u32 },
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

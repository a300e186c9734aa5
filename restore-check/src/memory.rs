//! Guest memory of a replay, in two forms.
//!
//! * [`PageTable`] + [`PageStore`]: what the check itself uses. The final
//!   copy of every pfn is a location in the input (a mapped file) or in a
//!   spool of standard input; nothing is sized by the guest. Memory is
//!   16 bytes per page copy (1/256 of the page data, kept at most twice the
//!   distinct pfns by settling as it grows), so a 64 GiB guest's image is
//!   checked in a few hundred MiB at most and a 1 GiB one in a few MiB.
//! * [`GuestMemory`]: real guest RAM, materialised from the table only when
//!   a caller needs it (`--resume`, library callers that read pages after
//!   the check). One `MAP_NORESERVE` mapping spanning the restored pfns;
//!   only 2 MiB ranges that are at least half restored are advised for
//!   transparent huge pages, so scattered pages cost 4 KiB each, not 2 MiB.
//!   The arena can be reused from one check to the next without zeroing: a
//!   pfn not written in *this* materialisation reads as the zero page.

use std::fs::File;
use std::io::{BufWriter, Write as _};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};
use sha2::{Digest as _, Sha256};

use hvm_format::digest::{parallel_digest, MemoryDigest, Sha256Digest, RANGE_PAGES};
use hvm_format::PAGE_SIZE;

/// The largest guest the checker materialises (virtual address space, not
/// RAM): 1 TiB, far above any 2007 guest and well inside a 47-bit address
/// space. The check itself has no such limit.
pub const MAX_GUEST_PAGES: u64 = 1 << 28;

/// Page data of standard input spooled to a temporary file by default before
/// the check stops: 16 GiB (a 16 GiB guest sent once). `--spool-limit`
/// raises it; a file is mapped, never spooled.
pub const DEFAULT_SPOOL_LIMIT: u64 = 16 << 30;

/// Copies recorded before the table first settles (sorts and drops
/// superseded copies): 1 MiB of table.
const SETTLE_MIN: usize = 1 << 16;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// More pages than [`MAX_GUEST_PAGES`].
    #[error("a guest of {pages} pages is larger than the {MAX_GUEST_PAGES} pages (1 TiB) the checker maps")]
    TooLarge {
        /// Pages the guest would need.
        pages: u64,
    },
    /// The kernel refused the mapping.
    #[error("mapping {bytes} bytes of guest memory failed: {source}")]
    Map {
        /// Size of the mapping asked for.
        bytes: u64,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}

/// Why page bytes could not be kept or fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writing or reading the spool of standard input failed.
    #[error("spooling standard input's pages to a temporary file: {0}")]
    Spool(#[source] std::io::Error),
    /// Standard input carries more page data than the spool may hold.
    #[error(
        "standard input carries more than {limit} bytes of page data (the spool limit); \
         give the image as a file, or raise --spool-limit"
    )]
    SpoolLimit {
        /// The limit in bytes ([`DEFAULT_SPOOL_LIMIT`] or `--spool-limit`).
        limit: u64,
    },
    /// A page the reader handed over does not lie inside the input (a
    /// broken reader invariant, reported rather than hashed as zeros).
    #[error("page of pfn {pfn:#x} at byte {offset} is not inside the input")]
    Detached {
        /// The page's pfn.
        pfn: u64,
        /// Where the reader said its bytes are.
        offset: u64,
    },
}

/// Anything that can show a restored page by pfn: the check's
/// [`FinalMemory`] and materialised [`GuestMemory`].
pub trait RestoredPages {
    /// The page of a restored pfn (`None`: never restored).
    fn page(&self, pfn: u64) -> Option<&[u8]>;

    /// SHA-256 of one page's bytes (absent pfns: `None`), for manifests that
    /// carry per-page digests.
    fn page_sha256(&self, pfn: u64) -> Option<Sha256Digest> {
        self.page(pfn).map(|p| Sha256::digest(p).into())
    }

    /// What the guest sees at `pfn`: the restored page, or zeros (the
    /// restorer's freshly populated memory) for everything else.
    fn read(&self, pfn: u64) -> &[u8] {
        self.page(pfn).unwrap_or(&ZERO_PAGE)
    }
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pfn: u64,
    at: u64,
}

/// Where the final copy of each pfn lives: locations in a [`PageStore`],
/// last copy wins.
#[derive(Debug, Default)]
pub struct PageTable {
    /// Settled prefix (`..settled`): ascending by pfn, one per pfn; then
    /// copies in stream order.
    locs: Vec<Loc>,
    settled: usize,
    /// Pfns the restorer zeroed after loading (its magic pages).
    zeroed: Vec<u64>,
}

impl PageTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a copy of `pfn` at location `at`; it supersedes earlier ones.
    pub fn record(&mut self, pfn: u64, at: u64) {
        self.locs.push(Loc { pfn, at });
        if self.locs.len() >= 2 * self.settled.max(SETTLE_MIN) {
            self.settle();
        }
    }

    /// Sort by pfn and keep the last copy of each: a stable sort keeps
    /// stream order among copies of one pfn.
    pub fn settle(&mut self) {
        if self.settled == self.locs.len() {
            return;
        }
        self.locs.sort_by_key(|l| l.pfn);
        self.locs.dedup_by(|later, kept| {
            let same = later.pfn == kept.pfn;
            if same {
                kept.at = later.at;
            }
            same
        });
        self.settled = self.locs.len();
    }

    /// Location of the final copy of `pfn`, or `None` (never restored, or
    /// zeroed after loading: see [`is_zeroed`](Self::is_zeroed)). Settles
    /// first.
    pub fn find(&mut self, pfn: u64) -> Option<u64> {
        self.settle();
        self.find_settled(pfn)
    }

    fn find_settled(&self, pfn: u64) -> Option<u64> {
        let l = &self.locs[..self.settled];
        l.binary_search_by_key(&pfn, |l| l.pfn)
            .ok()
            .map(|i| l[i].at)
    }

    /// Zero a restored page (the restorer clears the ioreq, store and
    /// buffered-ioreq pages after loading); unrestored pfns stay absent.
    pub(crate) fn zero_if_restored(&mut self, pfn: u64) -> bool {
        if self.find(pfn).is_none() {
            return false;
        }
        if !self.zeroed.contains(&pfn) {
            self.zeroed.push(pfn);
        }
        true
    }

    /// True if `pfn` was restored and then zeroed.
    pub fn is_zeroed(&self, pfn: u64) -> bool {
        self.zeroed.contains(&pfn)
    }

    /// Distinct pfns restored. Settles first.
    pub fn restored(&mut self) -> u64 {
        self.settle();
        self.locs.len() as u64
    }
}

/// Where the bytes of recorded page copies are kept while the stream is read.
pub enum PageStore<'a> {
    /// The input itself (a mapped file or a slice): a copy's location is
    /// the offset of its bytes in the input, nothing is copied.
    Input(&'a [u8]),
    /// Standard input: copies are appended to an unnamed temporary file.
    Spool(Spool),
}

/// Page copies of a stream read from a pipe, in an unnamed temporary file.
pub struct Spool {
    out: BufWriter<File>,
    len: u64,
    limit: u64,
}

impl Spool {
    /// An empty spool in `$TMPDIR` that refuses to grow past `limit` bytes.
    pub fn new(limit: u64) -> Result<Self, StoreError> {
        let f = tempfile::tempfile().map_err(StoreError::Spool)?;
        Ok(Spool {
            out: BufWriter::with_capacity(1 << 20, f),
            len: 0,
            limit,
        })
    }
}

impl<'a> PageStore<'a> {
    /// Keep one page of `pfn` (the reader's slice of it); returns its
    /// location.
    pub fn keep(&mut self, pfn: u64, offset: u64, page: &[u8]) -> Result<u64, StoreError> {
        match self {
            PageStore::Input(data) => {
                // The location is where the slice lies in the input, so it
                // cannot disagree with what was read.
                let at = (page.as_ptr() as usize).checked_sub(data.as_ptr() as usize);
                match at {
                    Some(at)
                        if page.len() == PAGE_SIZE
                            && at.checked_add(PAGE_SIZE).is_some_and(|e| e <= data.len()) =>
                    {
                        Ok(at as u64)
                    }
                    _ => Err(StoreError::Detached { pfn, offset }),
                }
            }
            PageStore::Spool(s) => {
                let at = s.len;
                let end = at
                    .checked_add(page.len() as u64)
                    .filter(|&e| e <= s.limit)
                    .ok_or(StoreError::SpoolLimit { limit: s.limit })?;
                s.out.write_all(page).map_err(StoreError::Spool)?;
                s.len = end;
                Ok(at)
            }
        }
    }

    /// The page kept at `at` (`buf` holds it for the spool).
    pub fn fetch<'b>(
        &'b mut self,
        pfn: u64,
        at: u64,
        buf: &'b mut [u8; PAGE_SIZE],
    ) -> Result<&'b [u8], StoreError> {
        match self {
            PageStore::Input(data) => usize::try_from(at)
                .ok()
                .and_then(|a| data.get(a..a.checked_add(PAGE_SIZE)?))
                .ok_or(StoreError::Detached { pfn, offset: at }),
            PageStore::Spool(s) => {
                use std::os::unix::fs::FileExt;
                s.out.flush().map_err(StoreError::Spool)?;
                s.out
                    .get_ref()
                    .read_exact_at(buf, at)
                    .map_err(StoreError::Spool)?;
                Ok(&buf[..])
            }
        }
    }

    /// Stop keeping: the bytes, readable by location.
    pub fn finish(self) -> Result<PageBytes<'a>, StoreError> {
        match self {
            PageStore::Input(d) => Ok(PageBytes::Input(d)),
            PageStore::Spool(s) => {
                if s.len == 0 {
                    return Ok(PageBytes::Input(&[]));
                }
                let f = s
                    .out
                    .into_inner()
                    .map_err(|e| StoreError::Spool(e.into_error()))?;
                // SAFETY: a read-only map of an unnamed temporary file that
                // only this process holds: nobody else can truncate or
                // write it while mapped.
                let m = unsafe { Mmap::map(&f) }.map_err(StoreError::Spool)?;
                Ok(PageBytes::Spooled(m))
            }
        }
    }
}

/// The kept page bytes after the stream.
pub enum PageBytes<'a> {
    /// The input.
    Input(&'a [u8]),
    /// The spool, mapped.
    Spooled(Mmap),
}

impl PageBytes<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            PageBytes::Input(d) => d,
            PageBytes::Spooled(m) => m,
        }
    }
}

/// The restored memory of a finished replay, without materialising it: a
/// settled [`PageTable`] over the kept bytes.
pub struct FinalMemory<'a> {
    table: PageTable,
    bytes: PageBytes<'a>,
}

impl<'a> FinalMemory<'a> {
    /// The final memory of `table` over `bytes`.
    pub fn new(mut table: PageTable, bytes: PageBytes<'a>) -> Self {
        table.settle();
        FinalMemory { table, bytes }
    }

    /// Distinct pfns restored.
    pub fn restored(&self) -> u64 {
        self.table.locs.len() as u64
    }

    /// Restored pfns in ascending order.
    pub fn pfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.table.locs.iter().map(|l| l.pfn)
    }

    /// The memory digest of the restored pages ([`hvm_format::digest`]'s
    /// definition, the one the saver's manifest uses).
    pub fn digest(&self, workers: usize) -> MemoryDigest {
        let pfns: Vec<u64> = self.pfns().collect();
        parallel_digest(&pfns, |k| self.read(pfns[k]), workers)
    }

    /// Materialise real guest RAM (reusing `arena` when it is large enough).
    pub fn materialise(&self, arena: Option<GuestMemory>) -> Result<GuestMemory, MemoryError> {
        let span = self
            .table
            .locs
            .last()
            .map_or(0, |l| l.pfn.saturating_add(1));
        let mut mem = match arena {
            Some(mut m) => {
                if m.reset(span) {
                    m
                } else {
                    drop(m); // release the old arena before mapping a new one
                    GuestMemory::new(span)?
                }
            }
            None => GuestMemory::new(span)?,
        };
        // Huge pages only where they are at least half used.
        let mut i = 0;
        let locs = &self.table.locs;
        while i < locs.len() {
            let range = locs[i].pfn / RANGE_PAGES;
            let j = i + locs[i..].partition_point(|l| l.pfn / RANGE_PAGES == range);
            if (j - i) as u64 * 2 >= RANGE_PAGES {
                mem.advise_huge(range * RANGE_PAGES, RANGE_PAGES);
            }
            i = j;
        }
        for l in locs {
            mem.write(l.pfn, self.read(l.pfn));
        }
        Ok(mem)
    }
}

impl RestoredPages for FinalMemory<'_> {
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        let at = self.table.find_settled(pfn)?;
        if self.table.is_zeroed(pfn) {
            return Some(&ZERO_PAGE);
        }
        // Locations were checked against the bytes when kept; a spool is
        // exactly as long as what was kept.
        usize::try_from(at)
            .ok()
            .and_then(|a| self.bytes.bytes().get(a..a.checked_add(PAGE_SIZE)?))
    }
}

/// Sparse guest memory indexed by pfn: real RAM, for `--resume`. A check
/// builds it with [`FinalMemory::materialise`] only when asked
/// ([`crate::Options::keep_memory`]); it spans the restored pfns, not
/// `max_pfn`.
pub struct GuestMemory {
    map: Option<MmapMut>,
    /// Pfns `0..pages` are addressable in this materialisation.
    pages: u64,
    /// Pfns the arena can hold (≥ `pages`; kept across [`reset`](Self::reset)).
    capacity: u64,
    written: Vec<u64>,
    count: u64,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("pages", &self.pages)
            .field("capacity", &self.capacity)
            .field("written", &self.count)
            .finish()
    }
}

impl GuestMemory {
    /// Memory for pfns `0..pages`, all reading as zero (no huge-page advice:
    /// see [`advise_huge`](Self::advise_huge)).
    pub fn new(pages: u64) -> Result<Self, MemoryError> {
        if pages > MAX_GUEST_PAGES {
            return Err(MemoryError::TooLarge { pages });
        }
        let bytes = pages * PAGE_SIZE as u64;
        let map = if pages == 0 {
            None
        } else {
            let m = MmapOptions::new()
                .len(bytes as usize)
                .no_reserve_swap()
                .map_anon()
                .map_err(|source| MemoryError::Map { bytes, source })?;
            Some(m)
        };
        Ok(GuestMemory {
            map,
            pages,
            capacity: pages,
            written: vec![0; pages.div_ceil(64) as usize],
            count: 0,
        })
    }

    /// Forget every page and address `0..pages` anew, reusing the arena when
    /// it is large enough (its old contents are not cleared: unwritten pfns
    /// read as zero). Returns false, changing nothing, when it is too small.
    pub fn reset(&mut self, pages: u64) -> bool {
        if pages > self.capacity {
            return false;
        }
        let words = self.pages.div_ceil(64) as usize;
        self.written[..words].fill(0);
        // Undo the previous guest's huge-page advice: this one may be sparse.
        if let Some(m) = &self.map {
            let _ = m.advise(Advice::NoHugePage);
        }
        self.pages = pages;
        self.count = 0;
        true
    }

    /// Advise pfns `first..first + n` (clipped to the mapping) for
    /// transparent huge pages: 512× fewer faults where the guest is dense.
    /// Without THP this is a no-op, so a failure is not worth reporting.
    pub fn advise_huge(&self, first: u64, n: u64) {
        let Some(m) = &self.map else { return };
        let end = first.saturating_add(n).min(self.capacity);
        if first >= end {
            return;
        }
        let (at, len) = (
            first as usize * PAGE_SIZE,
            (end - first) as usize * PAGE_SIZE,
        );
        let _ = m.advise_range(Advice::HugePage, at, len);
    }

    /// Addressable pfns (`0..pages`).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Pfns that the arena can hold without remapping.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Pfns written since creation or the last reset.
    pub fn written_count(&self) -> u64 {
        self.count
    }

    /// True if `pfn` was written.
    #[inline]
    pub(crate) fn is_written(&self, pfn: u64) -> bool {
        pfn < self.pages && self.written[(pfn >> 6) as usize] & (1 << (pfn & 63)) != 0
    }

    #[inline]
    fn slot(&self, pfn: u64) -> Option<&[u8]> {
        if pfn >= self.pages {
            return None;
        }
        let at = pfn as usize * PAGE_SIZE;
        self.map.as_ref()?.get(at..at + PAGE_SIZE)
    }

    /// Store `data` (one page) as the content of `pfn`. Returns false, storing
    /// nothing, for a pfn outside `0..pages` or data that is not one page.
    #[inline]
    pub fn write(&mut self, pfn: u64, data: &[u8]) -> bool {
        if pfn >= self.pages || data.len() != PAGE_SIZE {
            return false;
        }
        let at = pfn as usize * PAGE_SIZE;
        let Some(dst) = self
            .map
            .as_mut()
            .and_then(|m| m.get_mut(at..at + PAGE_SIZE))
        else {
            return false;
        };
        dst.copy_from_slice(data);
        let (w, b) = ((pfn >> 6) as usize, pfn & 63);
        self.count += (self.written[w] >> b & 1 == 0) as u64;
        self.written[w] |= 1 << b;
        true
    }

    /// Zero a written page in place (the restorer clears the ioreq, store
    /// and buffered-ioreq pages after loading); unwritten pfns stay absent.
    pub fn zero_if_written(&mut self, pfn: u64) -> bool {
        if !self.is_written(pfn) {
            return false;
        }
        self.write(pfn, &ZERO_PAGE)
    }

    /// The page of a written pfn.
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        if self.is_written(pfn) {
            self.slot(pfn)
        } else {
            None
        }
    }

    /// What the guest sees at `pfn`: the written page, or zeros (the
    /// restorer's freshly populated memory) for everything else.
    pub fn read(&self, pfn: u64) -> &[u8] {
        self.page(pfn).unwrap_or(&ZERO_PAGE)
    }

    /// Written pfns in ascending order.
    pub(crate) fn written_pfns(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.count as usize);
        for (wi, &w) in self.written.iter().enumerate() {
            let mut bits = w;
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                let pfn = ((wi as u64) << 6) | b;
                if pfn < self.pages {
                    out.push(pfn);
                }
                bits &= bits - 1;
            }
        }
        out
    }

    /// The memory digest of the written pages ([`hvm_format::digest`]'s
    /// definition, the one the saver's manifest uses).
    pub fn digest(&self, workers: usize) -> MemoryDigest {
        let pfns = self.written_pfns();
        parallel_digest(&pfns, |k| self.read(pfns[k]), workers)
    }

    /// SHA-256 of one page's bytes (absent pfns: `None`), for manifests that
    /// carry per-page digests.
    pub fn page_sha256(&self, pfn: u64) -> Option<Sha256Digest> {
        self.page(pfn).map(|p| Sha256::digest(p).into())
    }
}

impl RestoredPages for GuestMemory {
    fn page(&self, pfn: u64) -> Option<&[u8]> {
        GuestMemory::page(self, pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_reuse_without_stale_contents() {
        let mut m = GuestMemory::new(1000).unwrap();
        assert!(m.write(5, &[7; PAGE_SIZE]));
        assert!(m.write(999, &[9; PAGE_SIZE]));
        assert!(!m.write(1000, &[1; PAGE_SIZE]));
        assert!(!m.write(6, &[1; 100]));
        assert_eq!(m.read(5)[0], 7);
        assert_eq!(m.read(6), &ZERO_PAGE[..]);
        assert_eq!(m.written_pfns(), vec![5, 999]);
        assert!(m.write(5, &[8; PAGE_SIZE]));
        assert_eq!(m.written_count(), 2);
        assert!(m.reset(600));
        assert_eq!(m.read(5), &ZERO_PAGE[..], "stale bytes must not leak");
        assert!(m.page(5).is_none());
        assert!(!m.write(700, &[1; PAGE_SIZE]));
        assert!(!m.reset(1001));
    }

    /// Last copy wins, also across the settling that keeps the table small
    /// (three settles at this size), against a map of what was written last.
    #[test]
    fn page_table_keeps_the_last_copy_across_settles() {
        let mut t = PageTable::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 99u64;
        for at in 0..(5 * SETTLE_MIN) as u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pfn = x % 50_000;
            t.record(pfn, at);
            model.insert(pfn, at);
        }
        assert!(t.settled > 0, "the table settled while recording");
        assert!(
            t.locs.len() < 3 * SETTLE_MIN,
            "superseded copies were dropped"
        );
        assert_eq!(t.restored(), model.len() as u64);
        for (pfn, at) in &model {
            assert_eq!(t.find(*pfn), Some(*at), "pfn {pfn}");
        }
        assert_eq!(t.find(50_001), None);
        assert!(t.zero_if_restored(*model.keys().next().unwrap()));
        assert!(!t.zero_if_restored(50_001));
    }

    /// VMAs of this process's mapping `[lo, hi)` and whether each is advised
    /// for huge pages (`hg` in smaps' VmFlags).
    fn huge_flags(lo: usize, hi: usize) -> Vec<(usize, usize, bool)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut out = Vec::new();
        let mut cur: Option<(usize, usize)> = None;
        for l in smaps.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        cur = Some((a, b));
                        continue;
                    }
                }
            }
            if let (Some(flags), Some((a, b))) = (l.strip_prefix("VmFlags:"), cur) {
                if a >= lo && b <= hi {
                    out.push((a, b, flags.split_whitespace().any(|f| f == "hg")));
                }
            }
        }
        out
    }

    /// Huge pages only where a 2 MiB range is at least half restored: 64
    /// scattered pages must cost 64 small pages, not 64 huge ones.
    #[test]
    fn materialise_advises_huge_pages_only_on_dense_ranges() {
        let per = RANGE_PAGES as usize;
        // Range 0: 300 of 512 pages (dense); ranges 1..=64: one page each.
        let dense: Vec<u64> = (0..300).collect();
        let sparse: Vec<u64> = (1..=64).map(|r| r * RANGE_PAGES + 7).collect();
        let pfns: Vec<u64> = dense.iter().chain(&sparse).copied().collect();
        let mut bytes = vec![0u8; pfns.len() * PAGE_SIZE];
        let mut t = PageTable::new();
        for (k, &pfn) in pfns.iter().enumerate() {
            bytes[k * PAGE_SIZE] = pfn as u8 | 1;
            t.record(pfn, (k * PAGE_SIZE) as u64);
        }
        let fm = FinalMemory::new(t, PageBytes::Input(&bytes));
        let mem = fm.materialise(None).unwrap();
        for &pfn in &pfns {
            assert_eq!(mem.read(pfn)[0], pfn as u8 | 1);
        }
        let m = mem.map.as_ref().unwrap();
        let lo = m.as_ptr() as usize;
        let hi = lo + m.len();
        let vmas = huge_flags(lo, hi);
        let huge: Vec<(usize, usize)> = vmas
            .iter()
            .filter(|v| v.2)
            .map(|v| (v.0 - lo, v.1 - lo))
            .collect();
        assert_eq!(huge, vec![(0, per * PAGE_SIZE)], "{vmas:x?}");
    }

    #[test]
    fn oversized_guest_is_refused_before_mapping() {
        assert!(matches!(
            GuestMemory::new(MAX_GUEST_PAGES + 1),
            Err(MemoryError::TooLarge { .. })
        ));
    }
}

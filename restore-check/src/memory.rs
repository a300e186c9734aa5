//! Guest memory for a replay: one anonymous mapping covering pfns
//! `0..pages`, plus a bitmap of the pfns a batch has written.
//!
//! Why this shape (perf-notes): a fresh 4 KiB fault per page costs more than
//! the copy itself, so the arena is one `MAP_NORESERVE` mapping advised for
//! transparent huge pages, and it can be reused from one replay to the next
//! without being zeroed: a pfn never written in *this* replay reads as the
//! zero page, whatever stale bytes the arena still holds. Only pages that
//! are written cost physical memory, so a sparse 64 GiB guest is cheap.

use memmap2::{Advice, MmapMut, MmapOptions};
use sha2::{Digest as _, Sha256};

use hvm_format::digest::{parallel_digest, MemoryDigest, Sha256Digest};
use hvm_format::PAGE_SIZE;

/// The largest guest the checker maps (virtual address space, not RAM):
/// 1 TiB, far above any 2007 guest and well inside a 47-bit address space.
pub const MAX_GUEST_PAGES: u64 = 1 << 28;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// More pages than [`MAX_GUEST_PAGES`].
    #[error("a guest of {pages} pages is larger than the {MAX_GUEST_PAGES} pages (1 TiB) the checker maps")]
    TooLarge { pages: u64 },
    /// The kernel refused the mapping.
    #[error("mapping {bytes} bytes of guest memory failed: {source}")]
    Map {
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Sparse guest memory indexed by pfn.
pub struct GuestMemory {
    map: Option<MmapMut>,
    /// Pfns `0..pages` are addressable in this replay.
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
    /// Memory for pfns `0..pages`, all reading as zero.
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
            // Huge pages cut the fault count 512×; without THP this is a
            // no-op, so a failure is not worth reporting.
            let _ = m.advise(Advice::HugePage);
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
        self.pages = pages;
        self.count = 0;
        true
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
    pub fn is_written(&self, pfn: u64) -> bool {
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
    pub fn written_pfns(&self) -> Vec<u64> {
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

    #[test]
    fn oversized_guest_is_refused_before_mapping() {
        assert!(matches!(
            GuestMemory::new(MAX_GUEST_PAGES + 1),
            Err(MemoryError::TooLarge { .. })
        ));
    }
}

//! One pass over an image builds what diff, extract, digest and replay need:
//! the final copy of every pfn, the verify-pass copies, and the pre-copy
//! passes inferred from the pfn order.
//!
//! Passes are not marked in the stream. The seed scans positions
//! `0..pfn_array_size` in `permute()` order each pass, so within a pass the
//! scan position of successive pfns only grows; a pass restarts when it
//! falls back, or when a pfn repeats (which also catches streams not written
//! in permute order).

use std::collections::HashMap;

use crate::layout::{order_nr, unpermute};
use crate::stream::{Batch, Item};

/// Pfns per chunk of a [`PfnSet`].
const CHUNK_PFNS: u64 = 4096;
/// Members a chunk keeps as a list before it becomes a 512-byte bitmap.
const FEW: usize = 16;

#[derive(Debug, Clone)]
enum Chunk {
    /// Offsets within the chunk, unsorted (at most [`FEW`]).
    Few(Vec<u16>),
    /// One bit per pfn of the chunk.
    Bits(Box<[u64; (CHUNK_PFNS / 64) as usize]>),
}

/// A set of pfns whose memory follows the input, not the pfn values: dense
/// runs cost a bit per pfn (128 KiB per 4 GiB of guest), while scattered
/// pfns, which a hostile image can spread over the whole 2^60 space, cost a
/// few dozen bytes each, never a bitmap per stray pfn. A
/// [`bounded`](Self::bounded) set also caps the number of chunks, so its
/// memory is fixed whatever the input.
#[derive(Debug, Default, Clone)]
pub struct PfnSet {
    chunks: HashMap<u64, Chunk>,
    len: u64,
    max_chunks: Option<usize>,
    forgotten: u64,
}

/// Chunks a [`PassTracker`] remembers per pass: 8192 chunks of 4096 pfns, a
/// dense pass over 128 GiB of guest, in at most ~5 MiB (512-byte bitmaps
/// plus the map), whatever the number of XTAB or stray entries.
pub const PASS_CHUNKS: usize = 8192;

impl PfnSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that holds pfns of at most `max_chunks` chunks of 4096
    /// pfns; pfns of further chunks are not remembered (counted by
    /// [`forgotten`](Self::forgotten)).
    pub fn bounded(max_chunks: usize) -> Self {
        PfnSet {
            max_chunks: Some(max_chunks),
            ..Self::default()
        }
    }

    /// Insertions refused because the set was full.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Insert; true if it was not present (false also when a bounded set is
    /// full and the pfn's chunk is new: then it is not remembered).
    pub fn insert(&mut self, pfn: u64) -> bool {
        let off = (pfn % CHUNK_PFNS) as u16;
        let key = pfn / CHUNK_PFNS;
        if self
            .max_chunks
            .is_some_and(|m| self.chunks.len() >= m && !self.chunks.contains_key(&key))
        {
            self.forgotten += 1;
            return false;
        }
        let c = self
            .chunks
            .entry(key)
            .or_insert_with(|| Chunk::Few(Vec::new()));
        let fresh = match c {
            Chunk::Few(v) if v.contains(&off) => false,
            Chunk::Few(v) if v.len() < FEW => {
                v.push(off);
                true
            }
            Chunk::Few(v) => {
                let mut bits = Box::new([0u64; (CHUNK_PFNS / 64) as usize]);
                for &o in v.iter().chain([&off]) {
                    bits[(o / 64) as usize] |= 1 << (o % 64);
                }
                *c = Chunk::Bits(bits);
                true
            }
            Chunk::Bits(b) => {
                let (w, m) = ((off / 64) as usize, 1u64 << (off % 64));
                let fresh = b[w] & m == 0;
                b[w] |= m;
                fresh
            }
        };
        self.len += fresh as u64;
        fresh
    }

    /// Membership.
    pub fn contains(&self, pfn: u64) -> bool {
        let off = (pfn % CHUNK_PFNS) as u16;
        match self.chunks.get(&(pfn / CHUNK_PFNS)) {
            None => false,
            Some(Chunk::Few(v)) => v.contains(&off),
            Some(Chunk::Bits(b)) => b[(off / 64) as usize] & (1 << (off % 64)) != 0,
        }
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Remove every member (the count of forgotten ones stays).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

/// One inferred pre-copy pass (or the verify pass).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pass {
    /// 0-based pass number.
    pub number: u32,
    /// Index of its first batch.
    pub first_batch: u64,
    /// Batches in the pass.
    pub batches: u64,
    /// Entries with data.
    pub pages: u64,
    /// XTAB (or other typed) entries.
    pub typed: u64,
    /// File offset of its first batch.
    pub offset: u64,
}

/// Infers pass boundaries from a sequence of batches.
///
/// Memory is fixed: the pfns seen in the current pass are a
/// [`PfnSet::bounded`] of [`PASS_CHUNKS`] chunks, so XTAB and stray entries
/// spread over the pfn space cannot grow it. Past that bound (a pass over
/// more than 128 GiB, or entries scattered over more than 8192 chunks), a
/// repeat of a pfn that was not remembered does not start a pass; the
/// permute-order fallback still does for guests up to 16 GiB.
#[derive(Debug)]
pub struct PassTracker {
    /// Completed and current passes (the verify pass excluded).
    pub passes: Vec<Pass>,
    /// The verify pass, if the stream has one.
    pub verify: Option<Pass>,
    seen: PfnSet,
    last_pos: Option<u64>,
    permute: Option<(u64, u32)>,
}

impl Default for PassTracker {
    fn default() -> Self {
        PassTracker {
            passes: Vec::new(),
            verify: None,
            seen: PfnSet::bounded(PASS_CHUNKS),
            last_pos: None,
            permute: None,
        }
    }
}

impl PassTracker {
    /// A tracker for a stream whose `max_pfn` is `max_pfn` (None when unknown
    /// or implausible: passes are then found by repeats only).
    pub fn new(max_pfn: Option<u64>) -> Self {
        let permute = max_pfn.and_then(|m| {
            let size = m.checked_add(1)?;
            let order = order_nr(size);
            // Only a bijection (and only plausible) for 2^10 ..= 2^22 pfns.
            (10..=22).contains(&order).then_some((size, order))
        });
        PassTracker {
            permute,
            ..Default::default()
        }
    }

    /// Pfns not remembered because the per-pass set was full.
    pub fn forgotten(&self) -> u64 {
        self.seen.forgotten()
    }

    fn position(&self, pfn: u64) -> Option<u64> {
        let (size, order) = self.permute?;
        (pfn < size).then(|| unpermute(pfn, size, order))
    }

    /// Account for one batch; returns the pass number it belongs to.
    pub fn batch(&mut self, b: &Batch<'_>) -> u32 {
        if b.verify {
            let v = self.verify.get_or_insert_with(|| Pass {
                number: u32::MAX,
                first_batch: b.index,
                offset: b.offset,
                ..Default::default()
            });
            v.batches += 1;
            v.pages += b.page_count() as u64;
            v.typed += (b.count() - b.page_count()) as u64;
            return u32::MAX;
        }
        let restart = self.passes.is_empty()
            || b.entries().any(|e| {
                let pfn = e.pfn().0;
                self.seen.contains(pfn)
            })
            || match (
                self.last_pos,
                b.entries().next().and_then(|e| self.position(e.pfn().0)),
            ) {
                (Some(last), Some(first)) => first < last,
                _ => false,
            };
        if restart {
            self.seen.clear();
            self.last_pos = None;
            let number = self.passes.len() as u32;
            self.passes.push(Pass {
                number,
                first_batch: b.index,
                offset: b.offset,
                ..Default::default()
            });
        }
        for e in b.entries() {
            self.seen.insert(e.pfn().0);
        }
        if let Some(p) = b.entries().last().and_then(|e| self.position(e.pfn().0)) {
            self.last_pos = Some(p);
        }
        let cur = self.passes.last_mut().expect("a pass was pushed above");
        cur.batches += 1;
        cur.pages += b.page_count() as u64;
        cur.typed += (b.count() - b.page_count()) as u64;
        cur.number
    }
}

/// Where one copy of a page lives in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCopy {
    /// The pfn.
    pub pfn: u64,
    /// File offset of its 4096 bytes.
    pub offset: u64,
    /// Pass number ([`u32::MAX`] for the verify pass).
    pub pass: u32,
}

/// The index of an image's pages.
#[derive(Debug, Default)]
pub struct PageIndex {
    /// The final (last, non-verify) copy of each pfn, ascending by pfn.
    pub finals: Vec<PageCopy>,
    /// Verify-pass copies, ascending by pfn (last one wins).
    pub verify: Vec<PageCopy>,
    /// Pfns that appear only as typed (XTAB) entries, ascending.
    pub typed_only: Vec<u64>,
    /// Passes.
    pub passes: Vec<Pass>,
    /// The verify pass.
    pub verify_pass: Option<Pass>,
    /// Every page copy in the stream (data entries), verify included.
    pub copies: u64,
}

/// Builds a [`PageIndex`] from stream items. Memory: 24 bytes per page copy
/// while building, 24 per distinct pfn after.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    tracker: Option<PassTracker>,
    copies: Vec<PageCopy>,
    verify: Vec<PageCopy>,
    typed: Vec<u64>,
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one item.
    pub fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::MaxPfn { value, .. } => self.tracker = Some(PassTracker::new(Some(*value))),
            Item::Batch(b) => {
                let tracker = self.tracker.get_or_insert_with(|| PassTracker::new(None));
                let pass = tracker.batch(b);
                for e in b.entries().filter(|e| !e.has_data()) {
                    self.typed.push(e.pfn().0);
                }
                let dst = if b.verify {
                    &mut self.verify
                } else {
                    &mut self.copies
                };
                dst.extend(b.pages().map(|(e, _, offset)| PageCopy {
                    pfn: e.pfn().0,
                    offset,
                    pass,
                }));
            }
            _ => {}
        }
    }

    /// Finish: keep the last copy of each pfn.
    pub fn finish(self) -> PageIndex {
        let copies = (self.copies.len() + self.verify.len()) as u64;
        let last_wins = |mut v: Vec<PageCopy>| {
            // Stable sort keeps stream order among equal pfns; keep the last.
            v.sort_by_key(|c| c.pfn);
            let mut out: Vec<PageCopy> = Vec::with_capacity(v.len());
            for c in v {
                match out.last_mut() {
                    Some(l) if l.pfn == c.pfn => *l = c,
                    _ => out.push(c),
                }
            }
            out.shrink_to_fit();
            out
        };
        let finals = last_wins(self.copies);
        let mut typed = self.typed;
        typed.sort_unstable();
        typed.dedup();
        typed.retain(|p| finals.binary_search_by_key(p, |c| c.pfn).is_err());
        // No batch seen: no passes, which is the truth for such a stream.
        let tracker = self.tracker.unwrap_or_default();
        PageIndex {
            finals,
            verify: last_wins(self.verify),
            typed_only: typed,
            passes: tracker.passes,
            verify_pass: tracker.verify,
            copies,
        }
    }
}

impl PageIndex {
    /// The final copy of `pfn`.
    pub fn find(&self, pfn: u64) -> Option<PageCopy> {
        self.finals
            .binary_search_by_key(&pfn, |c| c.pfn)
            .ok()
            .map(|i| self.finals[i])
    }

    /// The verify-pass copy of `pfn`.
    pub fn find_verify(&self, pfn: u64) -> Option<PageCopy> {
        self.verify
            .binary_search_by_key(&pfn, |c| c.pfn)
            .ok()
            .map(|i| self.verify[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::permute;
    use crate::pfn::{PfnEntry, WordSize, PAGE_SIZE};
    use crate::stream::{SliceReader, Writer};

    /// A stream of three passes in permute order over 2048 pfns, the second
    /// and third re-sending a few pages, then a verify pass.
    fn live_image() -> (Vec<u8>, Vec<Vec<u64>>) {
        let size = 2048u64;
        let order = order_nr(size);
        let mut w = Writer::new(Vec::new(), WordSize::W64);
        w.max_pfn(size - 1).unwrap();
        let passes: Vec<Vec<u64>> = vec![
            (0..size)
                .map(|n| permute(n, size, order))
                .filter(|p| !(0xA0..0xC0).contains(p))
                .collect(),
            (0..size)
                .map(|n| permute(n, size, order))
                .filter(|p| p % 7 == 3 && !(0xA0..0xC0).contains(p))
                .collect(),
            (0..size)
                .map(|n| permute(n, size, order))
                .filter(|p| p % 97 == 5 && !(0xA0..0xC0).contains(p))
                .collect(),
        ];
        for (k, pass) in passes.iter().enumerate() {
            for chunk in pass.chunks(1024) {
                let entries: Vec<PfnEntry> = chunk.iter().map(|&p| PfnEntry::page(p)).collect();
                let data: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|&p| vec![(p as u8) ^ (k as u8); PAGE_SIZE])
                    .collect();
                let refs: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
                w.batch(&entries, &refs).unwrap();
            }
        }
        w.verify_marker().unwrap();
        let page = vec![0xEE; PAGE_SIZE];
        w.batch(&[PfnEntry::page(3), PfnEntry::xtab(4000)], &[&page])
            .unwrap();
        w.end().unwrap();
        w.vcpu_count(0).unwrap();
        w.hvm_blob(&[]).unwrap();
        (w.finish().unwrap(), passes)
    }

    #[test]
    fn passes_and_final_copies() {
        let (img, passes) = live_image();
        let mut b = IndexBuilder::new();
        let mut r = SliceReader::new(&img, WordSize::W64, 0);
        while let Some(item) = r.next().unwrap() {
            b.item(&item);
        }
        let idx = b.finish();
        assert_eq!(idx.passes.len(), 3, "{:?}", idx.passes);
        for (p, want) in idx.passes.iter().zip(&passes) {
            assert_eq!(p.pages, want.len() as u64);
        }
        assert_eq!(idx.verify_pass.as_ref().unwrap().pages, 1);
        let odd: Vec<u64> = idx
            .finals
            .iter()
            .map(|c| c.pfn)
            .filter(|p| *p >= 2048 || (0xA0..0xC0).contains(p))
            .collect();
        assert!(odd.is_empty(), "{odd:?}");
        assert_eq!(idx.finals.len(), 2048 - 32);
        // pfn 3 was re-sent in pass 1 (3 % 7 == 3): its final copy is there.
        let c = idx.find(3).unwrap();
        assert_eq!(c.pass, 1);
        assert_eq!(img[c.offset as usize], 3 ^ 1);
        // pfn 5 was sent in all three passes (5 % 97 == 5).
        assert_eq!(idx.find(5).unwrap().pass, 2);
        assert_eq!(idx.find_verify(3).unwrap().pass, u32::MAX);
        assert_eq!(idx.typed_only, vec![4000]);
        assert!(idx.find(0xA0).is_none());
    }

    #[test]
    fn pfn_set_dense_and_scattered_agree_with_a_btreeset() {
        let mut s = PfnSet::new();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 12345u64;
        for i in 0..20000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half dense (one chunk fills up and turns into a bitmap), half
            // scattered over the whole space.
            let pfn = if i % 2 == 0 { x % 5000 } else { x >> 4 };
            assert_eq!(s.insert(pfn), model.insert(pfn));
        }
        assert_eq!(s.len(), model.len() as u64);
        for p in model.iter().take(3000) {
            assert!(s.contains(*p));
            assert!(!s.contains(p ^ (1 << 62)) || model.contains(&(p ^ (1 << 62))));
        }
    }

    /// XTAB entries scattered one per chunk over the pfn space: the tracker's
    /// memory stays at its bound, and ordinary passes are still found.
    #[test]
    fn pass_tracker_memory_is_bounded_by_scattered_xtab_entries() {
        let mut w = Writer::new(Vec::new(), WordSize::W64);
        w.max_pfn(2047).unwrap();
        let batches = (2 * PASS_CHUNKS).div_ceil(1024) as u64;
        for b in 0..batches {
            let es: Vec<PfnEntry> = (0..1024u64)
                .map(|k| PfnEntry::xtab((b * 1024 + k) * CHUNK_PFNS))
                .collect();
            w.batch(&es, &[]).unwrap();
        }
        w.end().unwrap();
        w.vcpu_count(0).unwrap();
        w.hvm_blob(&[]).unwrap();
        let img = w.finish().unwrap();
        let mut t = PassTracker::new(Some(2047));
        let mut r = SliceReader::new(&img, WordSize::W64, 0);
        while let Some(item) = r.next().unwrap() {
            if let Item::Batch(b) = item {
                t.batch(&b);
            }
        }
        assert_eq!(t.seen.chunks.len(), PASS_CHUNKS);
        assert_eq!(t.forgotten(), batches * 1024 - PASS_CHUNKS as u64);
        assert_eq!(t.passes.len(), 1);
        assert_eq!(t.passes[0].typed, batches * 1024);
    }

    #[test]
    fn pfn_set_sparse() {
        let mut s = PfnSet::new();
        assert!(s.insert(1 << 50));
        assert!(!s.insert(1 << 50));
        assert!(s.insert(7));
        assert!(s.contains(7) && s.contains(1 << 50) && !s.contains(8));
        assert_eq!(s.len(), 2);
    }
}

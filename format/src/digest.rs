//! The one definition of "the guest's memory digest".
//!
//! The saver's manifest (memory at suspend time), `hvm-inspect digest` (the
//! final copy of every page in an image) and `hvm-restore-check` (replayed
//! memory) must agree bit for bit, so the definition lives here once:
//!
//! * guest memory is cut into 2 MiB ranges of [`RANGE_PAGES`] pfns;
//! * a range's digest is SHA-256 over `pfn as u64 LE ‖ 4096 page bytes` for
//!   each present pfn of the range in ascending order;
//! * the memory digest is SHA-256 over `range index as u64 LE ‖ range
//!   digest` for each range holding at least one page, ascending.
//!
//! Ranges are independent, so the digest hashes on several cores and a
//! mismatch is reported per range; absent pfns (holes, XTAB entries, magic
//! pages) are simply not part of it.
//!
//! A vCPU's digest is SHA-256 of its `vcpu_guest_context` bytes as stored.

use sha2::{Digest as _, Sha256};

use crate::pfn::PAGE_SIZE;

/// Pages per digest range (2 MiB).
pub const RANGE_PAGES: u64 = 512;

/// A SHA-256 value.
pub type Sha256Digest = [u8; 32];

/// Hex form of a digest, for manifests and reports.
pub fn hex(d: &Sha256Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse the hex form back (64 hex digits).
pub fn from_hex(s: &str) -> Option<Sha256Digest> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The range a pfn belongs to.
pub fn range_of(pfn: u64) -> u64 {
    pfn / RANGE_PAGES
}

/// The digest of a vCPU context.
pub fn vcpu_digest(context: &[u8]) -> Sha256Digest {
    Sha256::digest(context).into()
}

/// A memory digest with its per-range parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryDigest {
    /// `(range index, digest, pages in range)`, ascending by range.
    pub ranges: Vec<(u64, Sha256Digest, u32)>,
    /// The digest over all ranges.
    pub total: Sha256Digest,
    /// Pages covered.
    pub pages: u64,
}

impl MemoryDigest {
    /// Combine range digests (ascending by range) into the total.
    pub fn from_ranges(ranges: Vec<(u64, Sha256Digest, u32)>) -> Self {
        let mut h = Sha256::new();
        let mut pages = 0u64;
        for (idx, d, n) in &ranges {
            h.update(idx.to_le_bytes());
            h.update(d);
            pages += *n as u64;
        }
        MemoryDigest {
            ranges,
            total: h.finalize().into(),
            pages,
        }
    }

    /// Ranges whose digests differ between `self` and `other`, or that only
    /// one of them has.
    pub fn differing_ranges(&self, other: &MemoryDigest) -> Vec<u64> {
        use std::collections::BTreeMap;
        let a: BTreeMap<u64, Sha256Digest> = self.ranges.iter().map(|(i, d, _)| (*i, *d)).collect();
        let b: BTreeMap<u64, Sha256Digest> =
            other.ranges.iter().map(|(i, d, _)| (*i, *d)).collect();
        let mut out: Vec<u64> = a
            .iter()
            .filter(|(i, d)| b.get(i) != Some(d))
            .map(|(i, _)| *i)
            .chain(b.keys().filter(|i| !a.contains_key(i)).copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Builds a [`MemoryDigest`] from pages fed in ascending pfn order, one
/// thread. Feeding out of order is a caller bug and is reported by `finish`.
#[derive(Default)]
pub struct DigestBuilder {
    ranges: Vec<(u64, Sha256Digest, u32)>,
    current: Option<(u64, Sha256, u32)>,
    last_pfn: Option<u64>,
    out_of_order: bool,
}

impl DigestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the page of `pfn` (must be greater than the previous pfn).
    pub fn page(&mut self, pfn: u64, data: &[u8]) {
        debug_assert_eq!(data.len(), PAGE_SIZE);
        if self.last_pfn.is_some_and(|l| l >= pfn) {
            self.out_of_order = true;
        }
        self.last_pfn = Some(pfn);
        let r = range_of(pfn);
        if self.current.as_ref().is_none_or(|(cr, _, _)| *cr != r) {
            self.flush();
            self.current = Some((r, Sha256::new(), 0));
        }
        let (_, h, n) = self.current.as_mut().expect("current range set above");
        h.update(pfn.to_le_bytes());
        h.update(data);
        *n += 1;
    }

    fn flush(&mut self) {
        if let Some((r, h, n)) = self.current.take() {
            self.ranges.push((r, h.finalize().into(), n));
        }
    }

    /// The digest; `None` if pages came out of order.
    pub fn finish(mut self) -> Option<MemoryDigest> {
        self.flush();
        (!self.out_of_order).then(|| MemoryDigest::from_ranges(self.ranges))
    }
}

/// Digest of one range's pages, given in ascending pfn order.
pub(crate) fn range_digest<'a>(
    pages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> (Sha256Digest, u32) {
    let mut h = Sha256::new();
    let mut n = 0;
    for (pfn, data) in pages {
        h.update(pfn.to_le_bytes());
        h.update(data);
        n += 1;
    }
    (h.finalize().into(), n)
}

/// Hash pages (sorted ascending by pfn, unique) on `workers` threads, each
/// pinned to its own core when the machine has that many: unpinned threads
/// are packed onto one vCPU on the project's machines. `page` maps an index
/// of `pfns` to its bytes.
pub fn parallel_digest<'a, F>(pfns: &[u64], page: F, workers: usize) -> MemoryDigest
where
    F: Fn(usize) -> &'a [u8] + Sync,
{
    // Cut the pfn list at range boundaries into per-range index spans.
    let mut spans: Vec<(u64, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < pfns.len() {
        let r = range_of(pfns[i]);
        let mut j = i + 1;
        while j < pfns.len() && range_of(pfns[j]) == r {
            j += 1;
        }
        spans.push((r, i, j));
        i = j;
    }
    let hash_span = |&(r, a, b): &(u64, usize, usize)| {
        let (d, n) = range_digest((a..b).map(|k| (pfns[k], page(k))));
        (r, d, n)
    };
    let workers = workers.max(1).min(spans.len().max(1));
    if workers == 1 {
        return MemoryDigest::from_ranges(spans.iter().map(hash_span).collect());
    }
    // Hand out contiguous chunks of ranges (≥ 4 MiB each keeps cross-core
    // wake-ups rare) through an atomic cursor.
    let chunk = 4usize;
    let next = std::sync::atomic::AtomicUsize::new(0);
    // No core list only means no pinning; the hashes are the same.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let work = || {
        let mut out = Vec::new();
        loop {
            let start = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
            if start >= spans.len() {
                break;
            }
            for sp in &spans[start..(start + chunk).min(spans.len())] {
                out.push(hash_span(sp));
            }
        }
        out
    };
    let mut results: Vec<(u64, Sha256Digest, u32)> = std::thread::scope(|s| {
        // The calling thread is one of the workers, so a thread the host
        // cannot spawn (a low `ulimit -u`, a huge `--workers`) costs speed,
        // never the answer and never a panic: the cursor hands its share to
        // the others.
        let handles: Vec<_> = (1..workers)
            .filter_map(|w| {
                let core = cores.get(w).copied();
                let work = &work;
                std::thread::Builder::new()
                    .name(format!("digest-{w}"))
                    .spawn_scoped(s, move || {
                        if let Some(c) = core {
                            core_affinity::set_for_current(c);
                        }
                        work()
                    })
                    .ok()
            })
            .collect();
        let mut all = work();
        for h in handles {
            all.extend(h.join().expect("digest worker panicked"));
        }
        all
    });
    results.sort_unstable_by_key(|(r, _, _)| *r);
    MemoryDigest::from_ranges(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(n: u64) -> Vec<(u64, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let pfn = i * 37 + (i % 3);
                (pfn, vec![(i % 251) as u8; PAGE_SIZE])
            })
            .collect()
    }

    #[test]
    fn builder_and_parallel_agree_and_match_definition() {
        let ps = pages(3000);
        let mut b = DigestBuilder::new();
        for (pfn, d) in &ps {
            b.page(*pfn, d);
        }
        let serial = b.finish().unwrap();
        let pfns: Vec<u64> = ps.iter().map(|p| p.0).collect();
        for workers in [1, 2, 3] {
            let par = parallel_digest(&pfns, |k| &ps[k].1, workers);
            assert_eq!(par, serial, "workers={workers}");
        }
        // The definition spelled out independently for the first range.
        let mut h = Sha256::new();
        for (pfn, d) in ps.iter().filter(|(p, _)| *p < RANGE_PAGES) {
            h.update(pfn.to_le_bytes());
            h.update(d);
        }
        let first: Sha256Digest = h.finalize().into();
        assert_eq!(serial.ranges[0].1, first);
        assert_eq!(serial.pages, 3000);
    }

    #[test]
    fn a_changed_byte_names_its_range() {
        let mut ps = pages(2000);
        let pfns: Vec<u64> = ps.iter().map(|p| p.0).collect();
        let a = parallel_digest(&pfns, |k| &ps[k].1, 2);
        ps[1500].1[100] ^= 1;
        let b = parallel_digest(&pfns, |k| &ps[k].1, 2);
        assert_ne!(a.total, b.total);
        assert_eq!(a.differing_ranges(&b), vec![range_of(ps[1500].0)]);
    }

    #[test]
    fn out_of_order_is_refused() {
        let mut b = DigestBuilder::new();
        b.page(5, &[0; PAGE_SIZE]);
        b.page(4, &[0; PAGE_SIZE]);
        assert!(b.finish().is_none());
    }

    #[test]
    fn hex_round_trip() {
        let d = vcpu_digest(b"abc");
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(from_hex(&hex(&d)), Some(d));
        assert_eq!(from_hex("zz"), None);
    }
}

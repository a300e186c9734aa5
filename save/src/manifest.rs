//! The manifest: what the guest looked like at suspend time, so a restore
//! (`hvm-restore-check --expect`) or `hvm-inspect digest` can prove the
//! image reproduces it. Digests use [`hvm_format::digest`], the project's
//! one definition.

use hvm_format::digest::{parallel_digest, vcpu_digest, MemoryDigest, Sha256Digest, RANGE_PAGES};
use hvm_format::PAGE_SIZE;

use crate::domain::{Domain, DomainError};
use crate::plan::Plan;

pub use hvm_format::manifest::{Manifest, RangeDigest, VcpuDigest, MANIFEST_VERSION};

/// Pfns gathered per digest chunk: 16 ranges (32 MiB), so chunks never cut a
/// range and each hands the hashing threads ≥ 4 MiB apiece.
const CHUNK_PFNS: u64 = 16 * RANGE_PAGES;

/// Digest the pages a suspended domain's image contains (every pfn the plan
/// sends that maps), reading them through `map_batch` in ascending order.
///
/// With `pages`, also collects every page's own SHA-256 (ascending by pfn),
/// so the manifest can name a differing pfn, not only its 2 MiB range.
pub fn digest_memory<D: Domain + ?Sized>(
    domain: &mut D,
    plan: &Plan,
    workers: usize,
    mut pages: Option<&mut Vec<(u64, Sha256Digest)>>,
) -> Result<MemoryDigest, DomainError> {
    let mut ranges = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pfns: Vec<u64> = Vec::new();
    let mut start = 0;
    while start < plan.pfn_array_size {
        let end = (start + CHUNK_PFNS).min(plan.pfn_array_size);
        let want: Vec<u64> = (start..end).filter(|&n| !plan.is_skipped(n)).collect();
        pfns.clear();
        buf.clear();
        for batch in want.chunks(hvm_format::MAX_BATCH) {
            let map = domain.map_batch(batch)?;
            for (j, &pfn) in batch.iter().enumerate() {
                if let Some(p) = map.page(j) {
                    pfns.push(pfn);
                    buf.extend_from_slice(p);
                }
            }
        }
        if !pfns.is_empty() {
            let d = parallel_digest(&pfns, |k| &buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE], workers);
            ranges.extend(d.ranges);
            if let Some(out) = pages.as_deref_mut() {
                out.extend(
                    pfns.iter().enumerate().map(|(k, &pfn)| {
                        (pfn, vcpu_digest(&buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]))
                    }),
                );
            }
        }
        start = end;
    }
    Ok(MemoryDigest::from_ranges(ranges))
}

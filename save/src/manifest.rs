//! The manifest: what the guest looked like at suspend time, so a restore
//! (`hvm-restore-check --expect`) or `hvm-inspect digest` can prove the
//! image reproduces it. Digests use [`hvm_format::digest`], the project's
//! one definition.

use std::path::{Path, PathBuf};

use hvm_format::digest::{hex, parallel_digest, vcpu_digest, MemoryDigest, RANGE_PAGES};
use hvm_format::PAGE_SIZE;

use crate::domain::{Domain, DomainError};
use crate::plan::Plan;

/// Manifest format version (of this JSON, not of the image).
pub const MANIFEST_VERSION: u32 = 1;

/// Digest of one 2 MiB range of guest memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeDigest {
    /// Range index (`pfn / 512`).
    pub range: u64,
    /// Pages of the range present in the image.
    pub pages: u32,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Digest of one vCPU context as written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VcpuDigest {
    /// vCPU number (record index).
    pub vcpu: u32,
    /// SHA-256 of the context bytes, hex.
    pub sha256: String,
}

/// The manifest file's contents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The stream's `max_pfn`.
    pub max_pfn: u64,
    /// Pages in the memory digest.
    pub pages: u64,
    /// The memory digest at suspend time, hex.
    pub memory_sha256: String,
    /// Per-range digests, ascending.
    pub ranges: Vec<RangeDigest>,
    /// Per-vCPU digests.
    pub vcpus: Vec<VcpuDigest>,
    /// SHA-256 of the HVM context blob, hex.
    pub hvm_blob_sha256: String,
}

impl Manifest {
    /// Assemble from a memory digest and the records written.
    pub fn new(max_pfn: u64, memory: &MemoryDigest, vcpus: &[Vec<u8>], hvm_blob: &[u8]) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            max_pfn,
            pages: memory.pages,
            memory_sha256: hex(&memory.total),
            ranges: memory
                .ranges
                .iter()
                .map(|(r, d, n)| RangeDigest {
                    range: *r,
                    pages: *n,
                    sha256: hex(d),
                })
                .collect(),
            vcpus: vcpus
                .iter()
                .zip(0u32..)
                .map(|(c, i)| VcpuDigest {
                    vcpu: i,
                    sha256: hex(&vcpu_digest(c)),
                })
                .collect(),
            hvm_blob_sha256: hex(&vcpu_digest(hvm_blob)),
        }
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    /// The default manifest path for an image: `<image>.manifest.json`.
    pub fn default_path(image: &Path) -> PathBuf {
        let mut s = image.as_os_str().to_owned();
        s.push(".manifest.json");
        PathBuf::from(s)
    }
}

/// Pfns gathered per digest chunk: 16 ranges (32 MiB), so chunks never cut a
/// range and each hands the hashing threads ≥ 4 MiB apiece.
const CHUNK_PFNS: u64 = 16 * RANGE_PAGES;

/// Digest the pages a suspended domain's image contains (every pfn the plan
/// sends that maps), reading them through `map_batch` in ascending order.
pub fn digest_memory<D: Domain + ?Sized>(
    domain: &mut D,
    plan: &Plan,
    workers: usize,
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
        }
        start = end;
    }
    Ok(MemoryDigest::from_ranges(ranges))
}

//! The manifest `hvm-save` writes beside an image (`<image>.manifest.json`)
//! and the comparison of a replay against it.
//!
//! The JSON shape mirrors `hvm-save`'s `manifest::Manifest` (version 1)
//! field for field; this crate parses it with its own struct so that it does
//! not depend on the saver. One optional extension: a range may list
//! `page_digests` (SHA-256 of each page's 4096 bytes). Range digests can say
//! *which 2 MiB* differ but not which page; with page digests the check
//! names every differing pfn.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use hvm_format::digest::{from_hex, hex, vcpu_digest, MemoryDigest, RANGE_PAGES};

use crate::memory::GuestMemory;

/// Manifest versions this checker understands.
pub const MANIFEST_VERSION: u32 = 1;
/// Differing pfns listed in a report before the rest are only counted.
pub const PFN_LIST_CAP: usize = 4096;

/// Digest of one 2 MiB range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// Range index (`pfn / 512`).
    pub range: u64,
    /// Pages of the range present in the image.
    pub pages: u32,
    /// SHA-256 of the range ([`hvm_format::digest`]), hex.
    pub sha256: String,
    /// Optional per-page digests of the range, ascending by pfn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_digests: Option<Vec<PageDigest>>,
}

/// Digest of one page (an extension; see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageDigest {
    /// The pfn.
    pub pfn: u64,
    /// SHA-256 of its 4096 bytes, hex.
    pub sha256: String,
}

/// Digest of one vCPU context as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuDigest {
    /// vCPU number (record index).
    pub vcpu: u32,
    /// SHA-256 of the context bytes, hex.
    pub sha256: String,
}

/// The manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// The stream's `max_pfn`.
    #[serde(default)]
    pub max_pfn: Option<u64>,
    /// Pages in the memory digest.
    pub pages: u64,
    /// The memory digest at suspend time, hex.
    pub memory_sha256: String,
    /// Per-range digests, ascending.
    pub ranges: Vec<RangeDigest>,
    /// Per-vCPU digests.
    pub vcpus: Vec<VcpuDigest>,
    /// SHA-256 of the HVM context blob, hex.
    #[serde(default)]
    pub hvm_blob_sha256: Option<String>,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("not a manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this checker does not know.
    #[error("manifest version {found}, this checker understands {MANIFEST_VERSION}")]
    Version { found: u32 },
    /// A digest that is not 64 hex digits.
    #[error("{field}: expected 64 hex digits, found {value:?}")]
    Hex { field: String, value: String },
}

fn parse_hex(field: impl FnOnce() -> String, v: &str) -> Result<[u8; 32], ManifestError> {
    from_hex(v).ok_or_else(|| ManifestError::Hex {
        field: field(),
        value: v.chars().take(80).collect(),
    })
}

impl Manifest {
    /// Parse and validate manifest JSON.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_str(text)?;
        if m.version != MANIFEST_VERSION {
            return Err(ManifestError::Version { found: m.version });
        }
        parse_hex(|| "memory_sha256".into(), &m.memory_sha256)?;
        for r in &m.ranges {
            parse_hex(|| format!("ranges[{}].sha256", r.range), &r.sha256)?;
            for p in r.page_digests.iter().flatten() {
                parse_hex(|| format!("page {:#x}", p.pfn), &p.sha256)?;
            }
        }
        for v in &m.vcpus {
            parse_hex(|| format!("vcpus[{}].sha256", v.vcpu), &v.sha256)?;
        }
        if let Some(h) = &m.hvm_blob_sha256 {
            parse_hex(|| "hvm_blob_sha256".into(), h)?;
        }
        Ok(m)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes")
    }

    /// The manifest of a guest whose memory digest, vCPU contexts and HVM
    /// blob are known (the same assembly as `hvm-save`'s).
    pub fn new(max_pfn: u64, memory: &MemoryDigest, vcpus: &[&[u8]], hvm_blob: &[u8]) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            max_pfn: Some(max_pfn),
            pages: memory.pages,
            memory_sha256: hex(&memory.total),
            ranges: memory
                .ranges
                .iter()
                .map(|(r, d, n)| RangeDigest {
                    range: *r,
                    pages: *n,
                    sha256: hex(d),
                    page_digests: None,
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
            hvm_blob_sha256: Some(hex(&vcpu_digest(hvm_blob))),
        }
    }

    /// Add per-page digests to every range from `page(pfn)` (the guest's
    /// pages, `None` where absent).
    pub fn with_page_digests<'a>(mut self, page: impl Fn(u64) -> Option<&'a [u8]>) -> Self {
        for r in &mut self.ranges {
            let first = r.range * RANGE_PAGES;
            r.page_digests = Some(
                (first..first + RANGE_PAGES)
                    .filter_map(|pfn| {
                        page(pfn).map(|p| PageDigest {
                            pfn,
                            sha256: hex(&vcpu_digest(p)),
                        })
                    })
                    .collect(),
            );
        }
        self
    }

    fn memory_digest(&self) -> MemoryDigest {
        // Hex was validated by from_json; an invalid value (a hand-built
        // manifest) becomes a digest no replay can produce.
        let ranges = self
            .ranges
            .iter()
            .map(|r| (r.range, from_hex(&r.sha256).unwrap_or([0xff; 32]), r.pages))
            .collect();
        MemoryDigest::from_ranges(ranges)
    }
}

/// How one pfn differs from the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PfnDifference {
    /// Present in both, different content.
    Content,
    /// In the manifest, not restored from the image.
    Missing,
    /// Restored from the image, not in the manifest.
    Extra,
}

/// One differing 2 MiB range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeDiff {
    /// Range index.
    pub range: u64,
    /// First pfn of the range.
    pub first_pfn: u64,
    /// Pages the manifest has in it (`None`: the range is not in the manifest).
    pub expected_pages: Option<u32>,
    /// Pages the replay has in it (`None`: nothing restored there).
    pub replayed_pages: Option<u32>,
}

/// One differing vCPU or blob digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestDiff {
    /// What (e.g. `vcpu 1`, `hvm blob`).
    pub what: String,
    /// The manifest's digest (`None`: not in the manifest).
    pub expected: Option<String>,
    /// The image's digest (`None`: not in the image).
    pub replayed: Option<String>,
}

/// The result of `--expect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectReport {
    /// Memory, vCPUs and blob all equal the manifest.
    pub matches: bool,
    /// The replayed memory digest, hex.
    pub memory_sha256: String,
    /// The manifest's memory digest, hex.
    pub expected_memory_sha256: String,
    /// Pages in the replayed digest.
    pub pages: u64,
    /// Pages in the manifest.
    pub expected_pages: u64,
    /// Ranges whose digests differ.
    pub differing_ranges: Vec<RangeDiff>,
    /// True when the manifest carries page digests for every differing range,
    /// so `differing_pfns` is complete (up to the cap).
    pub pfns_resolved: bool,
    /// Differing pfns (at most [`PFN_LIST_CAP`]).
    pub differing_pfns: Vec<(u64, PfnDifference)>,
    /// Differing pfns beyond the cap.
    pub more_differing_pfns: u64,
    /// vCPU and HVM blob digests that differ.
    pub differing_digests: Vec<DigestDiff>,
}

/// Compare a replay with a manifest. `vcpus` are the image's vCPU context
/// digests in record order, `hvm_blob` the blob's digest.
pub fn compare(
    manifest: &Manifest,
    memory: &GuestMemory,
    replayed: &MemoryDigest,
    vcpus: &[[u8; 32]],
    hvm_blob: Option<[u8; 32]>,
) -> ExpectReport {
    let expected = manifest.memory_digest();
    let expected_total = from_hex(&manifest.memory_sha256);
    let mine: BTreeMap<u64, u32> = replayed.ranges.iter().map(|(r, _, n)| (*r, *n)).collect();
    let theirs: BTreeMap<u64, &RangeDigest> =
        manifest.ranges.iter().map(|r| (r.range, r)).collect();

    let mut differing_ranges = Vec::new();
    let mut differing_pfns = Vec::new();
    let mut more = 0u64;
    let mut pfns_resolved = true;
    for range in replayed.differing_ranges(&expected) {
        let t = theirs.get(&range);
        differing_ranges.push(RangeDiff {
            range,
            first_pfn: range * RANGE_PAGES,
            expected_pages: t.map(|r| r.pages),
            replayed_pages: mine.get(&range).copied(),
        });
        let pages: Option<BTreeMap<u64, &str>> = match t {
            Some(r) => r
                .page_digests
                .as_ref()
                .map(|p| p.iter().map(|d| (d.pfn, d.sha256.as_str())).collect()),
            // Not in the manifest at all: every restored page is extra.
            None => Some(BTreeMap::new()),
        };
        let Some(pages) = pages else {
            pfns_resolved = false;
            continue;
        };
        let first = range * RANGE_PAGES;
        for pfn in first..first + RANGE_PAGES {
            let got = memory.page_sha256(pfn).map(|d| hex(&d));
            let diff = match (pages.get(&pfn), got) {
                (Some(e), Some(g)) if !e.eq_ignore_ascii_case(&g) => Some(PfnDifference::Content),
                (Some(_), None) => Some(PfnDifference::Missing),
                (None, Some(_)) => Some(PfnDifference::Extra),
                _ => None,
            };
            if let Some(d) = diff {
                if differing_pfns.len() < PFN_LIST_CAP {
                    differing_pfns.push((pfn, d));
                } else {
                    more += 1;
                }
            }
        }
    }

    let mut differing_digests = Vec::new();
    let n = vcpus.len().max(manifest.vcpus.len());
    let expected_vcpus: BTreeMap<u32, &str> = manifest
        .vcpus
        .iter()
        .map(|v| (v.vcpu, v.sha256.as_str()))
        .collect();
    for i in 0..n {
        let e = u32::try_from(i)
            .ok()
            .and_then(|i| expected_vcpus.get(&i))
            .map(|s| s.to_ascii_lowercase());
        let g = vcpus.get(i).map(hex);
        if e != g {
            differing_digests.push(DigestDiff {
                what: format!("vcpu {i}"),
                expected: e,
                replayed: g,
            });
        }
    }
    if let Some(e) = &manifest.hvm_blob_sha256 {
        let g = hvm_blob.map(|d| hex(&d));
        if Some(e.to_ascii_lowercase()) != g {
            differing_digests.push(DigestDiff {
                what: "hvm blob".into(),
                expected: Some(e.clone()),
                replayed: g,
            });
        }
    }

    let memory_matches = expected_total == Some(replayed.total) && differing_ranges.is_empty();
    ExpectReport {
        matches: memory_matches && differing_digests.is_empty(),
        memory_sha256: hex(&replayed.total),
        expected_memory_sha256: manifest.memory_sha256.clone(),
        pages: replayed.pages,
        expected_pages: manifest.pages,
        differing_ranges,
        pfns_resolved,
        differing_pfns,
        more_differing_pfns: more,
        differing_digests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_savers_shape_and_refuses_bad_hex() {
        let ok = format!(
            r#"{{"version":1,"max_pfn":4095,"pages":1,"memory_sha256":"{h}",
               "ranges":[{{"range":0,"pages":1,"sha256":"{h}"}}],
               "vcpus":[{{"vcpu":0,"sha256":"{h}"}}],"hvm_blob_sha256":"{h}"}}"#,
            h = "ab".repeat(32)
        );
        let m = Manifest::from_json(&ok).unwrap();
        assert_eq!(m.ranges[0].pages, 1);
        assert_eq!(m.vcpus.len(), 1);
        let bad = ok.replacen(&"ab".repeat(32), "xyz", 1);
        assert!(matches!(
            Manifest::from_json(&bad),
            Err(ManifestError::Hex { .. })
        ));
        let v2 = ok.replace("\"version\":1", "\"version\":2");
        assert!(matches!(
            Manifest::from_json(&v2),
            Err(ManifestError::Version { found: 2 })
        ));
    }
}

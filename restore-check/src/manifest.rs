//! The manifest `hvm-save` writes beside an image (`<image>.manifest.json`)
//! and the comparison of a replay against it.
//!
//! The manifest type is [`hvm_format::manifest`], shared with the saver.

use std::collections::BTreeMap;

use serde::Serialize;

use hvm_format::digest::{from_hex, hex, MemoryDigest, RANGE_PAGES};

use crate::memory::RestoredPages;

pub use hvm_format::manifest::{
    Manifest, ManifestError, PageDigest, RangeDigest, VcpuDigest, MANIFEST_VERSION,
};
/// Differing pfns listed in a report before the rest are only counted.
pub const PFN_LIST_CAP: usize = 4096;

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
    memory: &impl RestoredPages,
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

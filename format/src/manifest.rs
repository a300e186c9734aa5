//! The manifest `hvm-save` writes beside an image (`<image>.manifest.json`):
//! what the guest looked like at suspend time, in the digests of
//! [`crate::digest`], so `hvm-restore-check --expect` and `hvm-inspect
//! digest` can prove an image reproduces it. One type for the writer and
//! every reader, so they cannot drift apart.
//!
//! Range digests say *which 2 MiB* differ; a range may also list
//! `page_digests` (SHA-256 of each page) so a check can name every
//! differing pfn.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{from_hex, hex, vcpu_digest, MemoryDigest, RANGE_PAGES};

/// Manifest format version (of this JSON, not of the image).
pub const MANIFEST_VERSION: u32 = 1;

/// The largest manifest read: 256 MiB. A manifest is a side input like the
/// image, so its size is bounded before it is read (`/dev/zero` is not a
/// manifest); range digests take ~100 bytes per 2 MiB of guest, page
/// digests ~110 bytes per page, so this covers page digests of a guest of
/// about 9 GiB and range digests of any guest.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Digest of one 2 MiB range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// Range index (`pfn / 512`).
    pub range: u64,
    /// Pages of the range present in the image.
    pub pages: u32,
    /// SHA-256 of the range ([`crate::digest`]), hex.
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
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("not a manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this checker does not know.
    #[error("manifest version {found}, this checker understands {MANIFEST_VERSION}")]
    Version {
        /// The manifest's version.
        found: u32,
    },
    /// Reading the manifest failed.
    #[error("reading the manifest: {0}")]
    Io(#[from] std::io::Error),
    /// Larger than [`MAX_MANIFEST_BYTES`] (checked before parsing).
    #[error("the manifest is larger than {MAX_MANIFEST_BYTES} bytes, the most this checker reads")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("not a manifest: the bytes are not UTF-8 (byte {offset})")]
    Utf8 {
        /// Byte offset of the first byte that is not UTF-8.
        offset: usize,
    },
    /// A digest that is not 64 hex digits.
    #[error("{field}: expected 64 hex digits, found {value:?}")]
    Hex {
        /// The field holding it.
        field: String,
        /// What it holds.
        value: String,
    },
}

fn parse_hex(field: impl FnOnce() -> String, v: &str) -> Result<[u8; 32], ManifestError> {
    from_hex(v).ok_or_else(|| ManifestError::Hex {
        field: field(),
        value: v.chars().take(80).collect(),
    })
}

impl Manifest {
    /// Read, parse and validate a manifest from `r` (a file, a pipe, a
    /// device), reading at most [`MAX_MANIFEST_BYTES`] + 1 bytes.
    pub fn read_from(r: impl std::io::Read) -> Result<Self, ManifestError> {
        Self::read_limited(r, MAX_MANIFEST_BYTES)
    }

    /// [`read_from`](Self::read_from) with the limit `max` bytes.
    pub(crate) fn read_limited(r: impl std::io::Read, max: u64) -> Result<Self, ManifestError> {
        use std::io::Read as _;
        let mut buf = Vec::new();
        r.take(max.saturating_add(1)).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            return Err(ManifestError::TooLarge);
        }
        let text = String::from_utf8(buf).map_err(|e| ManifestError::Utf8 {
            offset: e.utf8_error().valid_up_to(),
        })?;
        Self::from_json(&text)
    }

    /// [`read_from`](Self::read_from) the file at `path`.
    pub fn read_path(path: &Path) -> Result<Self, ManifestError> {
        Self::read_from(std::fs::File::open(path)?)
    }

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
    pub fn new(
        max_pfn: u64,
        memory: &MemoryDigest,
        vcpus: &[impl AsRef<[u8]>],
        hvm_blob: &[u8],
    ) -> Self {
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
                    sha256: hex(&vcpu_digest(c.as_ref())),
                })
                .collect(),
            hvm_blob_sha256: Some(hex(&vcpu_digest(hvm_blob))),
        }
    }

    /// Add per-page digests to every range from `page(pfn)` (the guest's
    /// pages, `None` where absent).
    /// Attach per-page digests given as `(pfn, SHA-256 of the page)`,
    /// ascending by pfn (what a saver computes while it digests memory).
    pub fn set_page_digests(&mut self, digests: &[(u64, crate::digest::Sha256Digest)]) {
        for r in &mut self.ranges {
            let first = r.range * RANGE_PAGES;
            let lo = digests.partition_point(|(p, _)| *p < first);
            let hi = digests.partition_point(|(p, _)| *p < first + RANGE_PAGES);
            r.page_digests = Some(
                digests[lo..hi]
                    .iter()
                    .map(|(pfn, d)| PageDigest {
                        pfn: *pfn,
                        sha256: hex(d),
                    })
                    .collect(),
            );
        }
    }

    /// Attach per-page digests computed from `page` (the bytes of a pfn,
    /// `None` for a page the image lacks): the builder form, for tests and
    /// tools that hold the pages rather than their digests.
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

    /// The memory digest the manifest's ranges describe.
    pub fn memory_digest(&self) -> MemoryDigest {
        // Hex was validated by from_json; an invalid value (a hand-built
        // manifest) becomes a digest no replay can produce.
        let ranges = self
            .ranges
            .iter()
            .map(|r| (r.range, from_hex(&r.sha256).unwrap_or([0xff; 32]), r.pages))
            .collect();
        MemoryDigest::from_ranges(ranges)
    }

    /// The default manifest path for an image: `<image>.manifest.json`.
    pub fn default_path(image: &Path) -> PathBuf {
        let mut s = image.as_os_str().to_owned();
        s.push(".manifest.json");
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_at_the_limit_before_parsing() {
        let m = Manifest::new(
            4095,
            &crate::digest::DigestBuilder::new().finish().unwrap(),
            &[[7u8; 16]],
            &[],
        );
        let json = m.to_json();
        let n = json.len() as u64;
        assert_eq!(Manifest::read_limited(json.as_bytes(), n).unwrap(), m);
        assert!(matches!(
            Manifest::read_limited(json.as_bytes(), n - 1),
            Err(ManifestError::TooLarge)
        ));
        // An endless input is cut at the limit, not read to its end.
        assert!(matches!(
            Manifest::read_limited(std::io::repeat(b' '), 1 << 20),
            Err(ManifestError::TooLarge)
        ));
        assert!(matches!(
            Manifest::read_limited(&b"{\xff}"[..], 100),
            Err(ManifestError::Utf8 { offset: 1 })
        ));
    }
}

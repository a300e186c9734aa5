//! The report: one struct rendered as text or JSON, with the verdict and the
//! exit code derived from it in one place.

use std::fmt::Write as _;

use serde::Serialize;

use hvm_format::dialect::Dialect;
use hvm_format::digest::hex;
use hvm_format::index::Pass;
use hvm_format::layout::RestoreLayout;
use hvm_format::rules::{Finding, Severity};
use hvm_format::{Error, WordSize};

use crate::manifest::{compare, ExpectReport, PfnDifference};
use crate::memory::{GuestMemory, MemoryError};
use crate::replay::{ReplayStats, Replayed, VerifyReport};
use crate::Options;

/// What the image is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageSummary {
    /// Envelope name (`xend save file`, `bare legacy libxc stream`).
    pub envelope: Option<&'static str>,
    /// Stream dialect.
    pub dialect: Option<Dialect>,
    /// Toolstack word size of the stream.
    pub word: Option<WordSize>,
    /// File offset of the libxc stream.
    pub stream_offset: Option<u64>,
    /// Total length, when known.
    pub file_len: Option<u64>,
    /// The stream's `max_pfn`.
    pub max_pfn: Option<u64>,
}

/// The configured memory the replay used.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySummary {
    /// Configured RAM in pages (the restorer's `M`).
    pub pages: Option<u64>,
    /// Where that came from (`--memory`, the xend config, `max_pfn`).
    pub source: Option<&'static str>,
    /// What the restorer derives from it.
    pub layout: Option<RestoreLayout>,
}

/// Current Xen's verdict on the HVM blob.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CurrentXen {
    /// The blob was checked (false when the image did not open).
    pub checked: bool,
    /// Would current Xen load it?
    pub loads: bool,
    /// Each record that would fail, and why (warnings included).
    pub findings: Vec<Finding>,
}

/// The result of checking one image.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The 2007 restorer would restore it, and the verify pass agrees.
    pub restorable: bool,
    /// With `--expect`: the replay equals the manifest.
    pub matches_manifest: Option<bool>,
    /// What the image is.
    pub image: ImageSummary,
    /// The configured memory.
    pub memory: MemorySummary,
    /// What the replay did.
    pub replay: ReplayStats,
    /// Inferred pre-copy passes.
    pub passes: Vec<Pass>,
    /// The 2007 restorer's findings (and stream well-formedness), then the
    /// verify comparison's, by offset.
    pub findings: Vec<Finding>,
    /// Findings beyond the per-rule cap, counted by rule.
    pub suppressed: Vec<(String, u64)>,
    /// Would current Xen load the HVM blob?
    pub current_xen: CurrentXen,
    /// The verify pass.
    pub verify: VerifyReport,
    /// Memory digest of the replay (with `--expect` or `digest`).
    pub memory_sha256: Option<String>,
    /// vCPU context digests in record order.
    pub vcpu_sha256: Vec<String>,
    /// HVM blob digest.
    pub hvm_blob_sha256: Option<String>,
    /// The comparison with the manifest.
    pub expect: Option<ExpectReport>,
    #[serde(skip)]
    guest: Option<GuestMemory>,
}

impl Report {
    /// A report for an image that could not even be opened (envelope or
    /// dialect refused).
    pub(crate) fn unopened(e: &Error, opts: &Options) -> Self {
        let f = Finding::error(
            "image.open",
            e.offset,
            e.context.clone(),
            e.kind.to_string(),
        );
        Self::refused(f, opts)
    }

    /// A report for a migration v2 image: the 2007 restorer cannot read
    /// one, and hvm-inspect can.
    pub(crate) fn v2(opts: &Options) -> Self {
        let f = Finding::error(
            "image.v2",
            0,
            hvm_format::Context::root().field("envelope"),
            "a migration v2 image, which the 2007 restorer cannot read: \
             `hvm-inspect validate` applies Xen's v2 rules to it and \
             `hvm-inspect digest` gives its memory digest"
                .to_string(),
        );
        Self::refused(f, opts)
    }

    fn refused(f: Finding, opts: &Options) -> Self {
        Report {
            restorable: false,
            matches_manifest: opts.expect.as_ref().map(|_| false),
            findings: vec![f],
            ..Default::default()
        }
    }

    /// The report of a finished replay; materialises guest memory (into
    /// `arena` when it is large enough) only with [`Options::keep_memory`].
    pub(crate) fn build(
        info: hvm_format::image::ImageInfo,
        r: Replayed<'_>,
        opts: &Options,
        arena: Option<GuestMemory>,
    ) -> Result<Self, MemoryError> {
        let mut findings = r.verdict.findings;
        findings.extend(r.verify_findings);
        findings.sort_by_key(|f| f.offset);
        let restorable = !findings.iter().any(|f| f.severity == Severity::Error)
            && r.verify.mismatching_pfns.is_empty();
        let want_digest = opts.digest || opts.expect.is_some();
        let digest = match (&r.memory, want_digest) {
            (Some(m), true) => Some(m.digest(opts.workers)),
            _ => None,
        };
        let expect = match (&opts.expect, &r.memory, &digest) {
            (Some(man), Some(mem), Some(d)) => Some(compare(man, mem, d, &r.vcpus, r.hvm_blob)),
            (Some(man), _, _) => {
                // Nothing was replayed: compare against empty memory.
                let empty = GuestMemory::new(0)?;
                let d = empty.digest(1);
                Some(compare(man, &empty, &d, &r.vcpus, r.hvm_blob))
            }
            _ => None,
        };
        let guest = match (&r.memory, opts.keep_memory) {
            (Some(m), true) => Some(m.materialise(arena)?),
            _ => None,
        };
        let (mem_pages, mem_source) = match r.verdict.memory_pages {
            Some((p, s)) => (Some(p), Some(s)),
            None => (None, None),
        };
        Ok(Report {
            restorable,
            matches_manifest: expect.as_ref().map(|e| e.matches),
            image: ImageSummary {
                envelope: Some(info.envelope.kind.name()),
                dialect: Some(info.detection.dialect),
                word: Some(info.word()),
                stream_offset: Some(info.stream_offset),
                file_len: info.file_len,
                max_pfn: r.max_pfn,
            },
            memory: MemorySummary {
                pages: mem_pages,
                source: mem_source,
                layout: mem_pages.map(RestoreLayout::from_config_pages),
            },
            replay: r.stats,
            passes: r.passes,
            findings,
            suppressed: r.verdict.suppressed,
            current_xen: CurrentXen {
                checked: true,
                loads: !r
                    .verdict
                    .current_xen
                    .iter()
                    .any(|f| f.severity == Severity::Error),
                findings: r.verdict.current_xen,
            },
            verify: r.verify,
            memory_sha256: digest.map(|d| hex(&d.total)),
            vcpu_sha256: r.vcpus.iter().map(hex).collect(),
            hvm_blob_sha256: r.hvm_blob.map(|d| hex(&d)),
            expect,
            guest,
        })
    }

    /// Restorable, and matching the manifest when one was given.
    pub fn ok(&self) -> bool {
        self.restorable && self.matches_manifest != Some(false)
    }

    /// 0 restorable (and matching), 1 not.
    pub fn exit_code(&self) -> i32 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    /// The restored guest memory (until taken; only with
    /// [`Options::keep_memory`]).
    pub fn guest_memory(&self) -> Option<&GuestMemory> {
        self.guest.as_ref()
    }

    /// Take the guest memory out (to reuse its arena or resume the guest).
    pub fn take_memory(&mut self) -> Option<GuestMemory> {
        self.guest.take()
    }

    /// Error findings' rule ids, in offset order.
    pub fn error_rules(&self) -> Vec<&'static str> {
        crate::error_rules(&self.findings)
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let i = &self.image;
        if let (Some(env), Some(d), Some(w)) = (i.envelope, i.dialect, i.word) {
            let _ = writeln!(
                s,
                "image:    {env}, {d}, {w} toolstack, stream at byte {}",
                i.stream_offset.unwrap_or(0)
            );
        }
        if let (Some(p), Some(src)) = (self.memory.pages, self.memory.source) {
            let _ = writeln!(s, "memory:   {p} pages ({} MiB) from {src}", p / 256);
        }
        let r = &self.replay;
        let _ = writeln!(
            s,
            "replay:   {} batches, {} pages copied, {} pfns restored, {} passes{}{}",
            r.batches,
            r.pages_copied,
            r.pfns_restored,
            self.passes.len(),
            if r.typed_entries > 0 {
                format!(", {} entries without data (XTAB…)", r.typed_entries)
            } else {
                String::new()
            },
            if r.pages_outside > 0 {
                format!(", {} pages outside the configured memory", r.pages_outside)
            } else {
                String::new()
            }
        );
        if !r.magic_pages_zeroed.is_empty() {
            let _ = writeln!(
                s,
                "          magic pages zeroed after loading: {}",
                pfn_list(&r.magic_pages_zeroed)
            );
        }
        let v = &self.verify;
        if v.present {
            let _ = writeln!(
                s,
                "verify:   {} pages compared, {} mismatching{}",
                v.pages_compared,
                v.mismatching_pfns.len(),
                if v.mismatching_pfns.is_empty() {
                    String::new()
                } else {
                    format!(": pfns {}", pfn_list(&v.mismatching_pfns))
                }
            );
        } else {
            let _ = writeln!(s, "verify:   no verify pass in the image");
        }
        let errors = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = self.findings.len() - errors;
        let _ = writeln!(
            s,
            "2007 restorer: {} ({errors} errors, {warnings} warnings)",
            if self.restorable {
                "restorable"
            } else {
                "NOT restorable"
            }
        );
        for f in &self.findings {
            let _ = writeln!(s, "  {f}");
        }
        for (rule, n) in &self.suppressed {
            let _ = writeln!(s, "  … and {n} more [{rule}]");
        }
        let cx = &self.current_xen;
        let failing = cx
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let _ = writeln!(
            s,
            "current Xen: {}",
            if !cx.checked {
                "not checked (the image did not open)".to_string()
            } else if cx.loads {
                "would load the HVM blob".to_string()
            } else {
                format!("would refuse the HVM blob ({failing} failing records)")
            }
        );
        for f in &cx.findings {
            let _ = writeln!(s, "  {f}");
        }
        if let Some(d) = &self.memory_sha256 {
            let _ = writeln!(s, "memory sha256: {d}");
        }
        if let Some(e) = &self.expect {
            if e.matches {
                let _ = writeln!(s, "expect:   matches the manifest ({} pages)", e.pages);
            } else {
                let _ = writeln!(
                    s,
                    "expect:   DIFFERS from the manifest: memory {} (manifest {}), {} vs {} pages",
                    e.memory_sha256, e.expected_memory_sha256, e.pages, e.expected_pages
                );
                for rd in &e.differing_ranges {
                    let _ = writeln!(
                        s,
                        "  range {} (pfns {:#x}..{:#x}): manifest {} pages, replay {} pages",
                        rd.range,
                        rd.first_pfn,
                        rd.first_pfn + hvm_format::digest::RANGE_PAGES,
                        rd.expected_pages.map_or("no".into(), |n| n.to_string()),
                        rd.replayed_pages.map_or("no".into(), |n| n.to_string()),
                    );
                }
                for (pfn, d) in &e.differing_pfns {
                    let what = match d {
                        PfnDifference::Content => "content differs",
                        PfnDifference::Missing => "in the manifest, not restored",
                        PfnDifference::Extra => "restored, not in the manifest",
                    };
                    let _ = writeln!(s, "  pfn {pfn:#x}: {what}");
                }
                if e.more_differing_pfns > 0 {
                    let _ = writeln!(s, "  … and {} more pfns", e.more_differing_pfns);
                }
                if !e.pfns_resolved {
                    let _ = writeln!(
                        s,
                        "  (the manifest has no page digests for some ranges: pfns within them cannot be named{})",
                        if v.mismatching_pfns.is_empty() {
                            String::new()
                        } else {
                            "; see the verify mismatches above".to_string()
                        }
                    );
                }
                for d in &e.differing_digests {
                    let _ = writeln!(
                        s,
                        "  {}: manifest {}, image {}",
                        d.what,
                        d.expected.as_deref().unwrap_or("none"),
                        d.replayed.as_deref().unwrap_or("none")
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "verdict:  {}",
            match (self.restorable, self.matches_manifest) {
                (true, Some(false)) => "restorable, but NOT the guest in the manifest (exit 1)",
                (true, _) => "restorable (exit 0)",
                (false, _) => "NOT restorable (exit 1)",
            }
        );
        s
    }
}

/// Pfns as a short list: runs collapsed, at most 32 items shown.
fn pfn_list(pfns: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &p in pfns {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == p => *end = p,
            _ => runs.push((p, p)),
        }
    }
    let mut out: Vec<String> = runs
        .iter()
        .take(32)
        .map(|&(a, b)| {
            if a == b {
                format!("{a:#x}")
            } else {
                format!("{a:#x}-{b:#x}")
            }
        })
        .collect();
    if runs.len() > 32 {
        out.push(format!("… ({} more runs)", runs.len() - 32));
    }
    out.join(", ")
}

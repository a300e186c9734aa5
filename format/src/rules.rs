//! Every check a restorer or a current Xen would make, as data.
//!
//! A [`Finding`] names the rule (a stable id users can grep for), how bad it
//! is, where it is, and what is wrong. `hvm-inspect validate` and
//! `hvm-restore-check` both report these; nothing re-implements them.

use crate::diag::Context;
pub use crate::diag::{Finding, Findings, Severity, PER_RULE_CAP};

// ------------------------------------------------------------ stream rules

/// True for the context of a batch's `count` field (`batch N › count`).
fn is_batch_count(ctx: &Context) -> bool {
    use crate::diag::Segment;
    matches!(
        ctx.0.as_slice(),
        [Segment::Index("batch", _), Segment::Field("count")]
    )
}

use crate::diag::Error;
use crate::hvm::load::{check_current_load, check_seed_load, CurrentLoadOptions, SeedLoadOptions};
use crate::image::Tail;
use crate::layout::{build_magic_pfns, RestoreLayout};
use crate::pfn::WordSize;
use crate::stream::{vcpu_context_size, Item};

/// xend refused a first word above this ("pfn count out of range").
pub(crate) const XEND_MAX_PFN_LIMIT: u64 = 16 * 1024 * 1024;
/// `MAX_VIRT_CPUS` of the seed era.
pub(crate) const SEED_MAX_VCPUS: u32 = 32;
/// What the restoring side looks like.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Apply the seed restorer's rules (docs/format.md §2.1) on top of
    /// well-formedness.
    pub strict: bool,
    /// xend's `max_nr_pfns`: the configured RAM in pages that the restorer
    /// bounds pfns by. `None`: derive it from the image.
    pub memory_pages: Option<u64>,
    /// Word size of the restoring toolstack (its `vcpu_guest_context` size
    /// is the only one it accepts). `None`: the stream's own.
    pub restore_word: Option<WordSize>,
    /// Word size of the hypervisor that loads the HVM blob.
    pub xen_word: WordSize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            strict: false,
            memory_pages: None,
            restore_word: None,
            xen_word: WordSize::W64,
        }
    }
}

/// The result of checking a whole image.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    /// Well-formedness and (with `strict`) the seed restorer's rules.
    pub findings: Vec<Finding>,
    /// Findings beyond the per-rule cap, counted by rule.
    pub suppressed: Vec<(String, u64)>,
    /// Would current Xen load the HVM blob (docs/format.md §5.5)?
    pub current_xen: Vec<Finding>,
    /// The configured memory (pages) the pfn checks used, and where it came
    /// from.
    pub memory_pages: Option<(u64, &'static str)>,
}

impl Verdict {
    /// Any finding of severity [`Severity::Error`].
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Would current Xen accept the HVM blob?
    pub fn current_xen_loads(&self) -> bool {
        !self
            .current_xen
            .iter()
            .any(|f| f.severity == Severity::Error)
    }
}

/// Applies the rules to stream items as they are read, in one pass and
/// bounded memory (findings are capped per rule).
#[derive(Debug)]
pub struct StreamChecker {
    opts: CheckOptions,
    word: WordSize,
    verdict: Verdict,
    /// Findings so far, capped per rule; moved into `verdict` at the end.
    findings: Findings,
    layout: Option<RestoreLayout>,
    magic: Option<(u64, u64, u64)>,
    max_pfn: Option<u64>,
    verify_markers: u32,
    nr_vcpus: u32,
}

impl StreamChecker {
    /// A checker for a stream of word size `word`. `config_memory_mib` is
    /// xend's configured memory when the image has an xend header.
    pub fn new(word: WordSize, opts: CheckOptions, config_memory_mib: Option<u64>) -> Self {
        let mut verdict = Verdict::default();
        let pages = opts
            .memory_pages
            .map(|p| (p, "--memory"))
            .or(config_memory_mib.map(|m| (m.saturating_mul(256), "the xend config's memory")));
        verdict.memory_pages = pages;
        StreamChecker {
            opts,
            word,
            layout: pages.map(|(p, _)| RestoreLayout::from_config_pages(p)),
            magic: config_memory_mib.and_then(build_magic_pfns),
            verdict,
            findings: Findings::default(),
            max_pfn: None,
            verify_markers: 0,
            nr_vcpus: 0,
        }
    }

    fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// A structural error from the reader: the stream cannot be followed
    /// past it.
    pub fn structure_error(&mut self, e: &Error) {
        let rule = match &e.kind {
            crate::diag::ErrorKind::Truncated { .. } => "stream.truncated",
            crate::diag::ErrorKind::Oversized { .. } => "stream.oversized",
            crate::diag::ErrorKind::Invalid { found, .. } if is_batch_count(&e.context) => {
                // The seed refuses j > 1024 ("Max batch size exceeded") but
                // lets j < -1 overrun its on-stack pfn array (§2.1 step 4).
                match found.parse::<i64>() {
                    Ok(j) if j < -1 => "seed.batch.negative-count",
                    _ => "seed.batch.count-range",
                }
            }
            _ => "stream.structure",
        };
        self.push(Finding::error(
            rule,
            e.offset,
            e.context.clone(),
            e.kind.to_string(),
        ));
    }

    /// What the restorer derived from the configured memory (`--memory`,
    /// the xend config, or once `max_pfn` was seen, the image), if known yet.
    pub fn layout(&self) -> Option<RestoreLayout> {
        self.layout
    }

    /// Check one item.
    pub fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::MaxPfn { offset, value } => self.max_pfn(*offset, *value),
            Item::Batch(b) => {
                for (i, e) in b.entries().enumerate() {
                    self.entry(b.index, i, b.entry_offset(i), e);
                }
            }
            Item::VerifyMarker { offset } => {
                self.verify_markers += 1;
                if self.verify_markers > 1 {
                    self.push(Finding::warning(
                        "stream.verify.repeated",
                        *offset,
                        Context::root().field("verify marker"),
                        "a second -1 verify marker (the seed writes at most one)",
                    ));
                }
            }
            Item::End { .. } => {}
            Item::VcpuCount { offset, count } => {
                self.nr_vcpus = *count;
                let ctx = Context::root().field("nr_vcpus");
                if *count == 0 {
                    self.push(Finding::error(
                        "stream.vcpu.none",
                        *offset,
                        ctx,
                        "expected at least one vcpu record, found nr_vcpus 0",
                    ));
                } else if self.opts.strict && *count > SEED_MAX_VCPUS {
                    self.push(Finding::error(
                        "seed.vcpu.count",
                        *offset,
                        ctx,
                        format!("expected at most {SEED_MAX_VCPUS} vcpus (MAX_VIRT_CPUS), found {count}"),
                    ));
                }
            }
            Item::Vcpu(v) => {
                let want = vcpu_context_size(self.word);
                let ctx = Context::root().index("vcpu", v.index as u64).field("size");
                if v.bytes.len() != want as usize {
                    self.push(Finding::error(
                        "stream.vcpu.size",
                        v.offset,
                        ctx.clone(),
                        format!(
                            "expected {want} bytes (vcpu_guest_context of a {} toolstack), found {}",
                            self.word,
                            v.bytes.len()
                        ),
                    ));
                }
                if let Some(rw) = self.opts.restore_word.filter(|w| *w != self.word) {
                    let rwant = vcpu_context_size(rw);
                    if v.bytes.len() != rwant as usize && self.opts.strict {
                        self.push(Finding::error(
                            "seed.vcpu.size",
                            v.offset,
                            ctx,
                            format!(
                                "a {rw} restoring toolstack needs {rwant}-byte contexts, found {} (\"vcpu context size dismatch!\")",
                                v.bytes.len()
                            ),
                        ));
                    }
                }
            }
            Item::HvmBlob(h) => {
                let base = h.data_offset();
                let outer = Context::root().field("hvm blob");
                let rebase = |f: Finding| Finding {
                    offset: f.offset + base,
                    context: Context(outer.0.iter().cloned().chain(f.context.0).collect()),
                    ..f
                };
                if self.opts.strict {
                    let o = SeedLoadOptions {
                        xen_word: self.opts.xen_word,
                        nr_vcpus: Some(self.nr_vcpus),
                        ..Default::default()
                    };
                    for f in check_seed_load(h.bytes, &o) {
                        self.push(rebase(f));
                    }
                } else if let Err(e) = crate::hvm::HvmBlob::parse(h.bytes) {
                    let e = e.rebase(base).within(&outer);
                    self.push(Finding::error(
                        "stream.hvm.framing",
                        e.offset,
                        e.context,
                        e.kind.to_string(),
                    ));
                } else {
                    // Well-formed framing is not enough: every Xen refuses
                    // a blob whose HEADER is missing or has the wrong magic
                    // or version, so those are well-formedness too.
                    let o = SeedLoadOptions {
                        xen_word: self.opts.xen_word,
                        ..Default::default()
                    };
                    for f in check_seed_load(h.bytes, &o).into_iter().filter(|f| {
                        matches!(
                            f.rule,
                            "seed.hvm.header-first" | "seed.hvm.magic" | "seed.hvm.version"
                        )
                    }) {
                        self.push(rebase(f));
                    }
                }
                let o = CurrentLoadOptions {
                    nr_vcpus: Some(self.nr_vcpus),
                    ..Default::default()
                };
                self.verdict.current_xen = check_current_load(h.bytes, &o)
                    .into_iter()
                    .map(rebase)
                    .collect();
            }
        }
    }

    fn max_pfn(&mut self, offset: u64, value: u64) {
        self.max_pfn = Some(value);
        if value > XEND_MAX_PFN_LIMIT {
            let f = Finding {
                rule: "seed.xend.max-pfn",
                severity: if self.opts.strict { Severity::Error } else { Severity::Warning },
                offset,
                context: Context::root().field("max_pfn"),
                message: format!(
                    "xend refuses a first word above {XEND_MAX_PFN_LIMIT:#x} (\"pfn count out of range\"), found {value:#x}"
                ),
            };
            self.push(f);
        }
        if self.layout.is_none() && value <= XEND_MAX_PFN_LIMIT {
            // No configured size: the guest the stream implies, its RAM in
            // pages without the MMIO-hole shift.
            let pages = if value >= crate::pfn::MMIO_HOLE_END {
                value + 1 - crate::pfn::MMIO_HOLE_PAGES
            } else {
                value + 1
            };
            self.verdict.memory_pages = Some((pages, "max_pfn"));
            self.layout = Some(RestoreLayout::from_config_pages(pages));
            if self.magic.is_none() {
                self.magic = build_magic_pfns(pages / 256);
            }
        }
    }

    fn entry(&mut self, batch: u64, i: usize, offset: u64, e: crate::pfn::PfnEntry) {
        if !e.has_data() {
            return; // the restorer skips typed entries without any check
        }
        let pfn = e.pfn();
        let ctx = || {
            Context::root()
                .index("batch", batch)
                .index("entry", i as u64)
                .field("pfn")
        };
        if let Some(m) = self.max_pfn {
            if pfn.0 > m && !self.opts.strict {
                self.push(Finding::warning(
                    "stream.pfn.beyond-max",
                    offset,
                    ctx(),
                    format!("expected a pfn <= max_pfn {m:#x}, found {pfn}"),
                ));
            }
        }
        if pfn.in_vga_hole() {
            self.push(Finding {
                rule: "seed.pfn.vga-hole",
                severity: if self.opts.strict {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                offset,
                context: ctx(),
                message: format!(
                    "page data for {pfn} in the VGA hole 0xa0..0xc0 (\"pfn in vga hole\")"
                ),
            });
            return;
        }
        if !self.opts.strict {
            return;
        }
        let Some(layout) = self.layout else { return };
        if pfn.0 > layout.max_pfn {
            self.push(Finding::error(
                "seed.pfn.range",
                offset,
                ctx(),
                format!("expected a pfn <= {:#x} (configured memory), found {pfn} (\"pfn out of range\")", layout.max_pfn),
            ));
        } else if !layout.populated(pfn.0) {
            self.push(Finding::error(
                "seed.pfn.unpopulated",
                offset,
                ctx(),
                format!(
                    "page data for {pfn}, which the restorer did not populate: the map fails, its 4096 bytes are not consumed and the stream desynchronises"
                ),
            ));
        }
        if let Some((a, b, c)) = self.magic {
            if [a, b, c].contains(&pfn.0) {
                self.push(Finding::warning(
                    "seed.pfn.magic",
                    offset,
                    ctx(),
                    format!(
                        "page data for the magic pfn {pfn}; the restorer zeroes it after loading"
                    ),
                ));
            }
        }
    }

    /// Check what follows the stream.
    pub fn tail(&mut self, tail: &Tail) {
        match tail {
            Tail::None | Tail::DeviceModel { .. } => {}
            Tail::Qemu(q) => {
                for f in q.listing.findings() {
                    self.push(f);
                }
            }
            Tail::Trailing { offset, len, more } => self.push(Finding::error(
                "stream.trailing-bytes",
                *offset,
                Context::root().field("after the stream"),
                format!(
                    "expected the end of the image or a device model record \
                     (QemuDeviceModelRecord, DeviceModelRecord0002), found {}",
                    if *more {
                        format!("more than {len} bytes")
                    } else {
                        format!("{len} more bytes")
                    }
                ),
            )),
        }
    }

    /// The verdict.
    pub fn finish(mut self) -> Verdict {
        self.verdict.suppressed = self.findings.suppressed();
        self.verdict.findings = self.findings.into_vec();
        self.verdict.findings.sort_by_key(|f| f.offset);
        self.verdict
    }
}

//! The report structs of `summary`, `validate`, `show` and `digest`, and
//! the visitors that fill them in one pass. Text and JSON are both rendered
//! from these (see [`crate::text`] and `docs/json-schema.md`).

use serde::Serialize;

use hvm_format::dialect::Dialect;
use hvm_format::digest::{hex, parallel_digest, vcpu_digest};
use hvm_format::envelope::{EnvelopeKind, QevmSection};
use hvm_format::hvm::{size_eras, Field, HvmBlob, HvmRecord};
use hvm_format::image::{ImageInfo, OpenOptions, Tail};
use hvm_format::index::{IndexBuilder, PageCopy, Pass, PassTracker, PfnSet};
use hvm_format::rules::{CheckOptions, Finding, Severity, StreamChecker, Verdict};
use hvm_format::stream::{Element, Item};
use hvm_format::vcpu::VcpuContext;
use hvm_format::{Context, Error, PAGE_SIZE};

use crate::input::{
    walk_read, walk_slice, Input, InspectError, Mapped, Progress, Spooled, Visit, Walked,
};

/// A format error as reported: where, in what, and what is wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorReport {
    /// Byte offset in the file.
    pub offset: u64,
    /// Context path (`batch 3 › pages`).
    pub context: String,
    /// Expected vs found.
    pub message: String,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        ErrorReport {
            offset: e.offset,
            context: e.context.to_string(),
            message: e.kind.to_string(),
        }
    }
}

/// The envelope and why it was recognised.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeReport {
    /// Kind (`xend`, `bare-libxc`, ...).
    pub kind: EnvelopeKind,
    /// Human name.
    pub name: &'static str,
    /// Observations that led to it.
    pub evidence: Vec<String>,
    /// File offset of the libxc stream.
    pub stream_offset: u64,
    /// Guest memory from xend's config, MiB.
    pub config_memory_mib: Option<u64>,
}

/// Dialect and word size, with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct DialectReport {
    /// Dialect id.
    pub dialect: hvm_format::dialect::Dialect,
    /// One-line description.
    pub description: &'static str,
    /// Toolstack word size in bits.
    pub word_bits: u32,
    /// Observations, with offsets.
    pub evidence: Vec<String>,
    /// False when detection saw only a prefix.
    pub complete: bool,
}

fn envelope_report(info: &ImageInfo) -> EnvelopeReport {
    EnvelopeReport {
        kind: info.envelope.kind,
        name: info.envelope.kind.name(),
        evidence: info.envelope.evidence.clone(),
        stream_offset: info.stream_offset,
        config_memory_mib: info.config_memory_mib(),
    }
}

fn dialect_report(info: &ImageInfo) -> DialectReport {
    let d = &info.detection;
    DialectReport {
        dialect: d.dialect,
        description: d.dialect.describe(),
        word_bits: d.word.bits(),
        evidence: d.evidence.clone(),
        complete: d.complete,
    }
}

/// One inferred pass.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PassReport {
    /// 0-based; the verify pass has none.
    pub number: Option<u32>,
    /// File offset of its first batch.
    pub offset: u64,
    /// Index of its first batch.
    pub first_batch: u64,
    /// Batches.
    pub batches: u64,
    /// Entries with a page.
    pub pages: u64,
    /// Entries without one (XTAB).
    pub typed: u64,
}

impl From<&Pass> for PassReport {
    fn from(p: &Pass) -> Self {
        PassReport {
            number: (p.number != u32::MAX).then_some(p.number),
            offset: p.offset,
            first_batch: p.first_batch,
            batches: p.batches,
            pages: p.pages,
            typed: p.typed,
        }
    }
}

/// The registers `summary` shows for a vCPU.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VcpuBrief {
    /// Record number (= vCPU id on restore).
    pub index: u32,
    /// File offset of the record's size field.
    pub offset: u64,
    /// Context size in bytes.
    pub size: u64,
    /// rip (eip on 32-bit toolstacks), rsp, rflags, cr0, cr3, cr4; absent
    /// when the record does not parse.
    pub registers: Option<BriefRegisters>,
    /// Why the record does not parse.
    pub error: Option<String>,
}

/// See [`VcpuBrief`]: the registers that say where a vCPU was and in
/// which mode, zero-extended to 64 bits.
// Each field is the register of the same name (JSON keys too): a doc line
// per field would repeat it.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BriefRegisters {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
}

fn vcpu_brief(index: u32, offset: u64, bytes: &[u8], word: hvm_format::WordSize) -> VcpuBrief {
    let (registers, error) = match VcpuContext::parse_as(word, bytes) {
        Ok(c) => (
            Some(BriefRegisters {
                rip: c.rip(),
                rsp: c.rsp(),
                rflags: c.rflags(),
                cr0: c.cr0(),
                cr3: c.cr3(),
                cr4: c.cr4(),
            }),
            None,
        ),
        Err(e) => (None, Some(e.kind.to_string())),
    };
    VcpuBrief {
        index,
        offset,
        size: bytes.len() as u64,
        registers,
        error,
    }
}

/// One HVM record in a summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordBrief {
    /// Position in the blob.
    pub index: usize,
    /// File offset of its descriptor.
    pub offset: u64,
    /// Type code.
    pub typecode: u16,
    /// Type name (`UNKNOWN` for codes no Xen defines).
    pub name: &'static str,
    /// Instance.
    pub instance: u16,
    /// Payload length.
    pub length: u64,
    /// The Xen eras that wrote this (type, length); empty: none did.
    pub eras: Vec<String>,
}

/// The HVM blob in a summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HvmBrief {
    /// File offset of the blob's length field.
    pub offset: u64,
    /// Blob length.
    pub length: u64,
    /// Records read before any framing error.
    pub records: Vec<RecordBrief>,
    /// Bytes after END.
    pub trailer: u64,
    /// Framing error, if any.
    pub error: Option<ErrorReport>,
}

fn hvm_brief(offset: u64, bytes: &[u8]) -> HvmBrief {
    let base = offset + 4;
    match HvmBlob::parse(bytes) {
        Ok(b) => HvmBrief {
            offset,
            length: bytes.len() as u64,
            records: b
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| RecordBrief {
                    index: i,
                    offset: base + r.offset,
                    typecode: r.typecode,
                    name: r.name(),
                    instance: r.instance,
                    length: r.payload.len() as u64,
                    eras: size_eras(r.typecode, r.payload.len())
                        .iter()
                        .map(|e| e.to_string())
                        .collect(),
                })
                .collect(),
            trailer: b.trailer.len() as u64,
            error: None,
        },
        Err(e) => HvmBrief {
            offset,
            length: bytes.len() as u64,
            records: Vec::new(),
            trailer: 0,
            error: Some(ErrorReport::from(&e.rebase(base))),
        },
    }
}

/// xend's qemu record.
#[derive(Debug, Clone, Serialize)]
pub struct QemuReport {
    /// File offset of `QemuDeviceModelRecord`.
    pub signature_offset: u64,
    /// File offset of the QEVM header.
    pub qevm_offset: u64,
    /// Complete sections.
    pub sections: Vec<QevmSection>,
    /// Why the listing stopped early.
    pub error: Option<ErrorReport>,
}

/// Bytes after the stream that belong to nothing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrailingReport {
    /// File offset.
    pub offset: u64,
    /// Bytes counted.
    pub length: u64,
    /// More bytes follow the `length` counted (a pipe is counted only up
    /// to `hvm_format::envelope::TRAILING_COUNT_LIMIT`).
    pub more: bool,
}

fn tail_parts(tail: Option<&Tail>) -> (Option<QemuReport>, Option<TrailingReport>) {
    match tail {
        Some(Tail::Qemu(q)) => (
            Some(QemuReport {
                signature_offset: q.signature_offset,
                qevm_offset: q.qevm_offset,
                sections: q.listing.sections.clone(),
                error: q.listing.error.as_ref().map(ErrorReport::from),
            }),
            None,
        ),
        Some(Tail::Trailing { offset, len, more }) => (
            None,
            Some(TrailingReport {
                offset: *offset,
                length: *len,
                more: *more,
            }),
        ),
        _ => (None, None),
    }
}

/// The rules' verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictReport {
    /// No finding of severity error.
    pub valid: bool,
    /// Findings of severity error.
    pub errors: u64,
    /// Findings of severity warning.
    pub warnings: u64,
    /// The findings, by offset.
    pub findings: Vec<Finding>,
    /// Findings beyond the per-rule cap, counted by rule.
    pub suppressed: Vec<Suppressed>,
    /// Would current Xen load the HVM blob? `None` when the stream ended
    /// before the blob.
    pub current_xen_loads: Option<bool>,
    /// What current Xen would say about the HVM blob.
    pub current_xen: Vec<Finding>,
    /// Configured memory the pfn checks used, and its source.
    pub memory: Option<MemoryBasis>,
}

/// Findings of one rule beyond the per-rule cap.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Suppressed {
    /// Rule id.
    pub rule: String,
    /// Findings not listed.
    pub count: u64,
}

/// The restoring domain's memory the pfn rules assumed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemoryBasis {
    /// Pages (4 KiB).
    pub pages: u64,
    /// Where the number came from (`--memory`, the xend config, max_pfn).
    pub source: &'static str,
}

impl VerdictReport {
    fn new(v: Verdict, reached_blob: bool) -> Self {
        let count = |s| v.findings.iter().filter(|f| f.severity == s).count() as u64;
        VerdictReport {
            valid: !v.has_errors(),
            errors: count(Severity::Error),
            warnings: count(Severity::Warning),
            current_xen_loads: reached_blob.then(|| v.current_xen_loads()),
            findings: v.findings,
            suppressed: v
                .suppressed
                .into_iter()
                .map(|(rule, count)| Suppressed { rule, count })
                .collect(),
            current_xen: v.current_xen,
            memory: v
                .memory_pages
                .map(|(pages, source)| MemoryBasis { pages, source }),
        }
    }
}

fn checker_for(info: &ImageInfo, opts: CheckOptions) -> Checker {
    Checker {
        inner: StreamChecker::new(info.word(), opts, info.config_memory_mib()),
        implied: !matches!(
            info.detection.dialect,
            Dialect::Seed | Dialect::Mar2007 | Dialect::Apr2007MagicPfns | Dialect::Apr2007NoMaxPfn
        ),
        vcpus_seen: 0,
    }
}

/// The rules' checker, told the vCPU count in dialects whose stream has no
/// `nr_vcpus` before the HVM blob (3.1–4.5 and v2: the CPU records name the
/// vCPUs; Apr 2007: the -2 map; Jan 2007: it comes after the blob), so the
/// current-Xen check knows which vCPU instances exist.
struct Checker {
    inner: StreamChecker,
    implied: bool,
    vcpus_seen: u32,
}

impl Checker {
    fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::Vcpu(_) => self.vcpus_seen += 1,
            Item::HvmBlob(h) if self.implied => {
                let cpus = hvm_format::hvm::HvmBlob::parse(h.bytes)
                    .map(|b| {
                        b.of_type(hvm_format::hvm::code::CPU)
                            .map(|r| u32::from(r.instance) + 1)
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                self.inner.item(&Item::VcpuCount {
                    offset: h.offset,
                    count: cpus.max(self.vcpus_seen),
                });
            }
            _ => {}
        }
        self.inner.item(item);
    }
}

/// A visitor with the rules' checker beside it, so that a subcommand that
/// reads part of an image reaches the verdict `validate` reaches: `digest`
/// or `show` of an image that `validate` calls INVALID fails too.
struct Checked<V> {
    inner: V,
    checker: Checker,
    reached_blob: bool,
}

impl<V> Checked<V> {
    fn new(info: &ImageInfo, inner: V) -> Self {
        Checked {
            inner,
            checker: checker_for(info, CheckOptions::default()),
            reached_blob: false,
        }
    }

    fn check(&mut self, item: &Item<'_>) {
        self.checker.item(item);
        self.reached_blob |= matches!(item, Item::HvmBlob(_));
    }

    /// The inner visitor and the verdict of `validate` (without --strict).
    fn finish(self, walked: &Walked) -> (V, VerdictReport) {
        let verdict = finish_checker(self.checker, walked, self.reached_blob);
        (self.inner, verdict)
    }
}

impl<V: Visit> Visit for Checked<V> {
    fn item(&mut self, item: &Item<'_>) {
        self.check(item);
        self.inner.item(item);
    }

    fn element(&mut self, e: &Element<'_>) {
        if let Element::Item(i) = e {
            self.check(i);
        }
        self.inner.element(e);
    }
}

fn finish_checker(c: Checker, walked: &Walked, reached_blob: bool) -> VerdictReport {
    let mut c = c.inner;
    if let Some(e) = &walked.error {
        c.structure_error(e);
    }
    if let Some(t) = &walked.tail {
        c.tail(t);
    }
    VerdictReport::new(c.finish(), reached_blob)
}

/// Add what Xen's `verify-stream-v2` checks (`hvm_format::v2::validate`)
/// to a v2 image's verdict, in the image's own framing.
fn v2_findings(
    name: &str,
    file: std::fs::File,
    info: &ImageInfo,
    verdict: &mut VerdictReport,
) -> Result<(), InspectError> {
    let m = crate::input::Mapped::of(name.to_string(), file)?;
    let data = m.bytes();
    let (found, at) = if info.xl.is_some() {
        (hvm_format::v2::check_xl(data), 0)
    } else {
        let at = info.stream_offset as usize;
        // The stream offset is inside the file the walk just read.
        let rest = data.get(at..).unwrap_or_default();
        let f = if rest.starts_with(b"LibxlFmt") {
            hvm_format::v2::check_libxl(rest)
        } else {
            hvm_format::v2::check_libxc(rest)
        };
        (f, at as u64)
    };
    for (rule, count) in found.suppressed() {
        verdict.suppressed.push(Suppressed { rule, count });
    }
    for mut f in found.into_vec() {
        f.offset += at;
        match f.severity {
            hvm_format::rules::Severity::Error => verdict.errors += 1,
            hvm_format::rules::Severity::Warning => verdict.warnings += 1,
            hvm_format::rules::Severity::Info => {}
        }
        verdict.findings.push(f);
    }
    m.check()?;
    verdict.findings.sort_by_key(|f| f.offset);
    verdict.valid = verdict.errors == 0;
    Ok(())
}

// ------------------------------------------------------------------ summary

/// `hvm-inspect summary`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The image as named on the command line.
    pub file: String,
    /// Its length, when known.
    pub file_len: Option<u64>,
    /// Envelope.
    pub envelope: EnvelopeReport,
    /// Dialect and word size.
    pub dialect: DialectReport,
    /// The leading `max_pfn` word.
    pub max_pfn: Option<u64>,
    /// Pre-copy passes inferred from the pfn order.
    pub passes: Vec<PassReport>,
    /// The verify resend.
    pub verify: Option<PassReport>,
    /// Batches, verify included.
    pub batches: u64,
    /// Page copies, verify included.
    pub pages: u64,
    /// Bytes of page data.
    pub page_bytes: u64,
    /// Distinct pfns with data (outside the verify pass).
    pub distinct_pfns: u64,
    /// Entries without data (XTAB and other type bits).
    pub xtab_entries: u64,
    /// `nr_vcpus` as stored.
    pub nr_vcpus: Option<u32>,
    /// Each vCPU record.
    pub vcpus: Vec<VcpuBrief>,
    /// The HVM blob.
    pub hvm: Option<HvmBrief>,
    /// xend's qemu record and its QEVM sections.
    pub qemu: Option<QemuReport>,
    /// Bytes after the stream that belong to nothing.
    pub trailing: Option<TrailingReport>,
    /// The error that stopped the reader (the rest is unknown).
    pub stream_error: Option<ErrorReport>,
    /// The rules' verdict (well-formedness; no `--strict`).
    pub verdict: VerdictReport,
    /// Negative chunks of the later dialects (−2…−20), in stream order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkReport>,
    /// Chunks past the first [`MAX_LISTED`], counted, not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub chunks_not_listed: u64,
    /// The magic pfns after the terminator (Apr 2007 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magic_pfns: Option<MagicPfnsReport>,
    /// Jan–Mar 2007's trailing `shared_info_frame`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_info_frame: Option<u32>,
    /// libxl's `DeviceModelRecord0002` (or a v2 EMULATOR_CONTEXT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_model: Option<DeviceModelReport>,
    /// Migration v2 records without a legacy counterpart, in stream order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v2_records: Vec<V2RecordReport>,
    /// v2 records past the first [`MAX_LISTED`], counted, not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub v2_records_not_listed: u64,
}

/// One negative chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkReport {
    /// File offset of the chunk type.
    pub offset: u64,
    /// The chunk type (−2…−20).
    pub id: i32,
    /// `XC_SAVE_ID_*` name.
    pub name: &'static str,
    /// Payload bytes (after the type).
    pub payload_len: u64,
    /// The HVM param value, for the HVM-param chunks.
    pub value: Option<u64>,
}

/// The magic pfns.
#[derive(Debug, Clone, Serialize)]
pub struct MagicPfnsReport {
    /// File offset.
    pub offset: u64,
    /// `HVM_PARAM_IOREQ_PFN`.
    pub ioreq: u64,
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub bufioreq: u64,
    /// `HVM_PARAM_STORE_PFN`.
    pub store: u64,
}

/// libxl's device model record.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceModelReport {
    /// File offset of the signature.
    pub offset: u64,
    /// Bytes of device model state.
    pub len: u64,
    /// True when the state is a QEVM file (qemu-traditional).
    pub qevm: bool,
}

/// The extras of the later dialects, collected by every visitor that
/// reports them.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub chunks: Vec<ChunkReport>,
    pub chunks_not_listed: u64,
    pub magic_pfns: Option<MagicPfnsReport>,
    pub shared_info_frame: Option<u32>,
    pub device_model: Option<DeviceModelReport>,
    pub v2_records: Vec<V2RecordReport>,
    pub v2_records_not_listed: u64,
}

/// Chunks and v2 records a summary lists; past this they are counted. Each
/// takes 8 bytes of input and more than 32 of report: an image of millions
/// of them would otherwise grow the summary beyond the input's size.
pub const MAX_LISTED: usize = 4096;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A v2 record without a legacy counterpart.
#[derive(Debug, Clone, Serialize)]
pub struct V2RecordReport {
    /// File offset of the record header.
    pub offset: u64,
    /// The record type's name.
    pub name: &'static str,
    /// Body length.
    pub len: u64,
}

impl Extras {
    /// Record `e` if it is an extra; true if it was.
    pub(crate) fn element(&mut self, e: &Element<'_>) -> bool {
        match e {
            Element::Item(_) => return false,
            Element::V2Record { .. } if self.v2_records.len() >= MAX_LISTED => {
                self.v2_records_not_listed += 1
            }
            Element::V2Record { offset, name, len } => self.v2_records.push(V2RecordReport {
                offset: *offset,
                name,
                len: *len,
            }),
            Element::Chunk(_) if self.chunks.len() >= MAX_LISTED => self.chunks_not_listed += 1,
            Element::Chunk(c) => self.chunks.push(ChunkReport {
                offset: c.offset,
                id: c.id,
                name: c.name(),
                payload_len: c.payload.len() as u64,
                value: c.param_value(),
            }),
            Element::MagicPfns(m) => {
                self.magic_pfns = Some(MagicPfnsReport {
                    offset: m.offset,
                    ioreq: m.ioreq,
                    bufioreq: m.bufioreq,
                    store: m.store,
                })
            }
            Element::SharedInfoFrame { value, .. } => self.shared_info_frame = Some(*value),
            Element::DeviceModel(d) => {
                self.device_model = Some(DeviceModelReport {
                    offset: d.offset,
                    len: d.bytes.len() as u64,
                    qevm: d.bytes.starts_with(b"QEVM"),
                })
            }
        }
        true
    }
}

struct SummaryVisit {
    checker: Checker,
    tracker: Option<PassTracker>,
    distinct: PfnSet,
    word: hvm_format::WordSize,
    max_pfn: Option<u64>,
    batches: u64,
    pages: u64,
    xtab: u64,
    nr_vcpus: Option<u32>,
    vcpus: Vec<VcpuBrief>,
    hvm: Option<HvmBrief>,
    extras: Extras,
}

impl Visit for SummaryVisit {
    fn element(&mut self, e: &Element<'_>) {
        if !self.extras.element(e) {
            if let Element::Item(i) = e {
                self.item(i);
            }
        }
    }

    fn item(&mut self, item: &Item<'_>) {
        self.checker.item(item);
        match item {
            Item::MaxPfn { value, .. } => {
                self.max_pfn = Some(*value);
                self.tracker = Some(PassTracker::new(Some(*value)));
            }
            Item::Batch(b) => {
                self.tracker
                    .get_or_insert_with(|| PassTracker::new(None))
                    .batch(b);
                self.batches += 1;
                let pages = b.page_count() as u64;
                self.pages += pages;
                self.xtab += b.count() as u64 - pages;
                if !b.verify {
                    for e in b.entries().filter(|e| e.has_data()) {
                        self.distinct.insert(e.pfn().0);
                    }
                }
            }
            Item::VcpuCount { count, .. } => self.nr_vcpus = Some(*count),
            Item::Vcpu(v) => self
                .vcpus
                .push(vcpu_brief(v.index, v.offset, v.bytes, self.word)),
            Item::HvmBlob(h) => self.hvm = Some(hvm_brief(h.offset, h.bytes)),
            Item::VerifyMarker { .. } | Item::End { .. } => {}
        }
    }
}

/// Summarise an image in one streaming pass and bounded memory.
pub fn summary(
    input: Input,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<Summary, InspectError> {
    let name = input.name().to_string();
    let file_len = input.len();
    // A regular file's length lets oversized fields fail at once.
    let opts = OpenOptions {
        len: input.len(),
        ..opts
    };
    let (walked, mut v) = walk_read(&name, input.into_read(), opts, progress, |info| {
        SummaryVisit {
            checker: checker_for(info, CheckOptions::default()),
            tracker: None,
            distinct: PfnSet::new(),
            word: info.word(),
            max_pfn: None,
            batches: 0,
            pages: 0,
            xtab: 0,
            nr_vcpus: None,
            vcpus: Vec::new(),
            hvm: None,
            extras: Extras::default(),
        }
    })?;
    let (qemu, trailing) = tail_parts(walked.tail.as_ref());
    if let Some(Tail::DeviceModel {
        offset, len, qevm, ..
    }) = walked.tail
    {
        v.extras
            .device_model
            .get_or_insert(DeviceModelReport { offset, len, qevm });
    }
    let tracker = v.tracker.unwrap_or_default();
    let verdict = finish_checker(v.checker, &walked, v.hvm.is_some());
    Ok(Summary {
        file: name,
        file_len: file_len.or(walked.info.file_len),
        envelope: envelope_report(&walked.info),
        dialect: dialect_report(&walked.info),
        max_pfn: v.max_pfn,
        passes: tracker.passes.iter().map(PassReport::from).collect(),
        verify: tracker.verify.as_ref().map(PassReport::from),
        batches: v.batches,
        pages: v.pages,
        page_bytes: v.pages * PAGE_SIZE as u64,
        distinct_pfns: v.distinct.len(),
        xtab_entries: v.xtab,
        nr_vcpus: v.nr_vcpus,
        vcpus: v.vcpus,
        hvm: v.hvm,
        qemu,
        trailing,
        stream_error: walked.error.as_ref().map(ErrorReport::from),
        verdict,
        chunks: v.extras.chunks,
        chunks_not_listed: v.extras.chunks_not_listed,
        magic_pfns: v.extras.magic_pfns,
        shared_info_frame: v.extras.shared_info_frame,
        device_model: v.extras.device_model,
        v2_records: v.extras.v2_records,
        v2_records_not_listed: v.extras.v2_records_not_listed,
    })
}

// ----------------------------------------------------------------- validate

/// `hvm-inspect validate`.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// The image as named.
    pub file: String,
    /// Were the seed restorer's rules applied?
    pub strict: bool,
    /// Word size the stream was read with, when it could be opened.
    pub word_bits: Option<u32>,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: VerdictReport,
}

struct CheckVisit(Checker, bool);

impl Visit for CheckVisit {
    fn item(&mut self, item: &Item<'_>) {
        self.0.item(item);
        self.1 |= matches!(item, Item::HvmBlob(_));
    }
}

/// Check an image against the rules; every problem, not only the first.
pub fn validate(
    input: Input,
    opts: OpenOptions,
    check: CheckOptions,
    progress: Progress<'_>,
) -> Result<Validation, InspectError> {
    let name = input.name().to_string();
    // A v2 image on a pipe is spooled (up to --spool-limit), so that it
    // gets verify-stream-v2's checks exactly as the same image in a file:
    // one verdict, whatever the input is.
    let input = input.spool_if_v2()?;
    let file = input.file_handle();
    // A regular file's length lets oversized fields fail at once.
    let opts = OpenOptions {
        len: input.len(),
        ..opts
    };
    match walk_read(&name, input.into_read(), opts, progress, |info| {
        CheckVisit(checker_for(info, check), false)
    }) {
        Ok((walked, v)) => {
            let mut verdict = finish_checker(v.0, &walked, v.1);
            if walked.info.detection.dialect == Dialect::V2 {
                // Every v2 input is a file here (spooled if it was a pipe).
                let file = file.ok_or_else(|| InspectError::Io {
                    path: name.clone(),
                    source: std::io::Error::other("a v2 image that was not spooled"),
                })?;
                v2_findings(&name, file, &walked.info, &mut verdict)?;
            }
            Ok(Validation {
                file: name,
                strict: check.strict,
                word_bits: Some(walked.info.word().bits()),
                verdict,
            })
        }
        // An image that cannot even be opened is invalid, not an I/O
        // failure: report the reason as the one finding.
        Err(InspectError::Image { source, .. })
            if !matches!(source.kind, hvm_format::ErrorKind::Io(_)) =>
        {
            let mut c =
                StreamChecker::new(opts.word.unwrap_or(hvm_format::WordSize::W64), check, None);
            c.structure_error(&source);
            Ok(Validation {
                file: name,
                strict: check.strict,
                word_bits: None,
                verdict: VerdictReport::new(c.finish(), false),
            })
        }
        Err(e) => Err(e),
    }
}

// --------------------------------------------------------------------- show

/// One record with every field.
#[derive(Debug, Clone, Serialize)]
pub struct RecordDetail {
    /// Summary line data.
    #[serde(flatten)]
    pub brief: RecordBrief,
    /// Layout the fields were decoded with (`raw` when none fits).
    pub layout: &'static str,
    /// Every field in layout order.
    pub fields: Vec<Field>,
}

/// `hvm-inspect show hvm`.
#[derive(Debug, Clone, Serialize)]
pub struct ShowHvm {
    /// The image.
    pub file: String,
    /// File offset of the blob's length field.
    pub offset: Option<u64>,
    /// Blob length.
    pub length: Option<u64>,
    /// Every record.
    pub records: Vec<RecordDetail>,
    /// Bytes after END.
    pub trailer: u64,
    /// Framing or stream error.
    pub error: Option<ErrorReport>,
}

/// One vCPU with every field.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuDetail {
    /// Record number.
    pub index: u32,
    /// File offset of the size field.
    pub offset: u64,
    /// Context size.
    pub size: u64,
    /// Every field, padding included, in offset order.
    pub fields: Vec<Field>,
    /// Why it does not parse.
    pub error: Option<String>,
}

/// `hvm-inspect show vcpu`.
#[derive(Debug, Clone, Serialize)]
pub struct ShowVcpu {
    /// The image.
    pub file: String,
    /// Toolstack word size.
    pub word_bits: u32,
    /// Each record.
    pub vcpus: Vec<VcpuDetail>,
    /// The error that stopped the reader.
    pub error: Option<ErrorReport>,
}

/// One pfn entry in `show pages`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PageEntry {
    /// Batch number.
    pub batch: u64,
    /// Entry in the batch.
    pub entry: usize,
    /// The pfn (type bits removed).
    pub pfn: u64,
    /// Type name (`NOTAB` for pages, `XTAB`, ...).
    pub kind: String,
    /// File offset of the page data (none for typed entries).
    pub offset: Option<u64>,
    /// Inferred pass; none for the verify pass.
    pub pass: Option<u32>,
    /// In the verify resend.
    pub verify: bool,
}

/// `hvm-inspect show pages`.
#[derive(Debug, Clone, Serialize)]
pub struct ShowPages {
    /// The image.
    pub file: String,
    /// Every pfn entry in stream order.
    pub entries: Vec<PageEntry>,
    /// The error that stopped the reader.
    pub error: Option<ErrorReport>,
}

/// One copy of a page in `show page`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PageCopyReport {
    /// File offset of the 4096 bytes.
    pub offset: u64,
    /// Inferred pass; none for the verify pass.
    pub pass: Option<u32>,
    /// The bytes, hex.
    pub hex: String,
    /// Text only: the bytes.
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// `hvm-inspect show page PFN`.
#[derive(Debug, Clone, Serialize)]
pub struct ShowPage {
    /// The image.
    pub file: String,
    /// The pfn asked for.
    pub pfn: u64,
    /// Copies of it in the stream (verify included).
    pub copies: u64,
    /// The final copy (what a restore leaves in memory).
    #[serde(rename = "final")]
    pub final_copy: Option<PageCopyReport>,
    /// The verify-pass copy, when there is one.
    pub verify: Option<PageCopyReport>,
    /// Does the verify copy differ from the final one?
    pub verify_differs: Option<bool>,
    /// The error that stopped the reader.
    pub error: Option<ErrorReport>,
}

/// Which part `show` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShowWhat {
    /// HVM records.
    Hvm,
    /// vCPU contexts.
    Vcpu,
    /// Pfn entries.
    Pages,
    /// One page.
    Page(u64),
}

/// Any `show` report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Show {
    /// `show hvm`.
    Hvm(ShowHvm),
    /// `show vcpu`.
    Vcpu(ShowVcpu),
    /// `show pages`.
    Pages(ShowPages),
    /// `show page PFN`.
    Page(ShowPage),
}

impl Show {
    /// The image stopped being readable before the part was shown whole.
    pub fn is_damaged(&self) -> bool {
        match self {
            Show::Hvm(x) => x.error.is_some(),
            Show::Vcpu(x) => x.error.is_some(),
            Show::Pages(x) => x.error.is_some(),
            Show::Page(x) => x.error.is_some(),
        }
    }
}

/// Where `show pages` hands each entry as it is read.
pub(crate) type PageSink<'a> = &'a mut dyn FnMut(&PageEntry);

#[derive(Default)]
struct ShowVisit<'a> {
    /// `show pages` streams its entries here instead of keeping them.
    each: Option<PageSink<'a>>,
    what: Option<ShowWhat>,
    word: Option<hvm_format::WordSize>,
    tracker: Option<PassTracker>,
    hvm: Option<(u64, Vec<u8>)>,
    vcpus: Vec<VcpuDetail>,
    entries: Vec<PageEntry>,
    copies: u64,
    final_copy: Option<PageCopyReport>,
    verify_copy: Option<PageCopyReport>,
}

fn kind_name(k: hvm_format::PfnType) -> String {
    match k {
        hvm_format::PfnType::Normal => "page".into(),
        hvm_format::PfnType::XTab => "XTAB".into(),
        other => format!("type {:#x}", other.nibble()),
    }
}

fn copy_report(offset: u64, pass: Option<u32>, bytes: &[u8]) -> PageCopyReport {
    PageCopyReport {
        offset,
        pass,
        hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        bytes: bytes.to_vec(),
    }
}

impl Visit for ShowVisit<'_> {
    fn item(&mut self, item: &Item<'_>) {
        let Some(what) = self.what else { return };
        match (what, item) {
            (ShowWhat::Pages | ShowWhat::Page(_), Item::MaxPfn { value, .. }) => {
                self.tracker = Some(PassTracker::new(Some(*value)))
            }
            (ShowWhat::Pages | ShowWhat::Page(_), Item::Batch(b)) => {
                let pass = self
                    .tracker
                    .get_or_insert_with(|| PassTracker::new(None))
                    .batch(b);
                let pass = (pass != u32::MAX).then_some(pass);
                if what == ShowWhat::Pages {
                    let mut k = 0u64;
                    for (i, e) in b.entries().enumerate() {
                        let offset = e.has_data().then(|| {
                            let o = b.pages_offset() + k * PAGE_SIZE as u64;
                            k += 1;
                            o
                        });
                        let entry = PageEntry {
                            batch: b.index,
                            entry: i,
                            pfn: e.pfn().0,
                            kind: kind_name(e.kind()),
                            offset,
                            pass,
                            verify: b.verify,
                        };
                        match &mut self.each {
                            Some(f) => (*f)(&entry),
                            None => self.entries.push(entry),
                        }
                    }
                } else if let ShowWhat::Page(pfn) = what {
                    for (e, data, offset) in b.pages() {
                        if e.pfn().0 == pfn {
                            self.copies += 1;
                            let r = copy_report(offset, pass, data);
                            if b.verify {
                                self.verify_copy = Some(r);
                            } else {
                                self.final_copy = Some(r);
                            }
                        }
                    }
                }
            }
            (ShowWhat::Vcpu, Item::Vcpu(v)) => {
                let word = self.word.unwrap_or(hvm_format::WordSize::W64);
                let (fields, error) = match VcpuContext::parse_as(word, v.bytes) {
                    Ok(c) => (c.fields(), None),
                    Err(e) => (Vec::new(), Some(e.kind.to_string())),
                };
                self.vcpus.push(VcpuDetail {
                    index: v.index,
                    offset: v.offset,
                    size: v.bytes.len() as u64,
                    fields,
                    error,
                });
            }
            (ShowWhat::Hvm, Item::HvmBlob(h)) => self.hvm = Some((h.offset, h.bytes.to_vec())),
            _ => {}
        }
    }
}

fn record_details(offset: u64, bytes: &[u8]) -> (Vec<RecordDetail>, u64, Option<ErrorReport>) {
    let brief = hvm_brief(offset, bytes);
    let Ok(blob) = HvmBlob::parse(bytes) else {
        return (Vec::new(), 0, brief.error);
    };
    let details = blob
        .records
        .iter()
        .zip(brief.records)
        .map(|(r, b)| {
            let rec: HvmRecord = r.decode();
            RecordDetail {
                brief: b,
                layout: if rec.body.is_raw() { "raw" } else { "typed" },
                fields: rec.fields(),
            }
        })
        .collect();
    (details, brief.trailer, None)
}

/// List one part of an image in full (`show pages` kept in memory: see
/// [`show_pages_streamed`] for a listing of any length).
pub fn show(
    input: Input,
    what: ShowWhat,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<(Show, VerdictReport), InspectError> {
    show_with(input, what, opts, progress, None)
}

/// `show pages` with each entry handed to `each` as it is read, so that
/// the listing of an image of any length takes constant memory; the
/// returned report has no entries.
pub fn show_pages_streamed(
    input: Input,
    opts: OpenOptions,
    progress: Progress<'_>,
    each: PageSink<'_>,
) -> Result<(ShowPages, VerdictReport), InspectError> {
    let (file, walked, v, verdict) = walk_show(input, ShowWhat::Pages, opts, progress, Some(each))?;
    let pages = ShowPages {
        file,
        entries: v.entries,
        error: walked.error.as_ref().map(ErrorReport::from),
    };
    Ok((pages, verdict))
}

/// The walk behind every `show`: the name, what the walk found, the
/// visitor's harvest and `validate`'s verdict.
fn walk_show<'a>(
    input: Input,
    what: ShowWhat,
    opts: OpenOptions,
    progress: Progress<'_>,
    each: Option<PageSink<'a>>,
) -> Result<(String, Walked, ShowVisit<'a>, VerdictReport), InspectError> {
    let name = input.name().to_string();
    // A regular file's length lets oversized fields fail at once.
    let opts = OpenOptions {
        len: input.len(),
        ..opts
    };
    let (walked, c) = walk_read(&name, input.into_read(), opts, progress, |info| {
        Checked::new(
            info,
            ShowVisit {
                each,
                what: Some(what),
                word: Some(info.word()),
                ..Default::default()
            },
        )
    })?;
    let (v, verdict) = c.finish(&walked);
    Ok((name, walked, v, verdict))
}

fn show_with(
    input: Input,
    what: ShowWhat,
    opts: OpenOptions,
    progress: Progress<'_>,
    each: Option<PageSink<'_>>,
) -> Result<(Show, VerdictReport), InspectError> {
    let (name, walked, v, verdict) = walk_show(input, what, opts, progress, each)?;
    let error = walked.error.as_ref().map(ErrorReport::from);
    let show = match what {
        ShowWhat::Hvm => {
            let (offset, length) = match &v.hvm {
                Some((o, b)) => (Some(*o), Some(b.len() as u64)),
                None => (None, None),
            };
            let (records, trailer, herr) = match &v.hvm {
                Some((o, b)) => record_details(*o, b),
                None => (Vec::new(), 0, None),
            };
            Show::Hvm(ShowHvm {
                file: name,
                offset,
                length,
                records,
                trailer,
                error: error.or(herr),
            })
        }
        ShowWhat::Vcpu => Show::Vcpu(ShowVcpu {
            file: name,
            word_bits: walked.info.word().bits(),
            vcpus: v.vcpus,
            error,
        }),
        ShowWhat::Pages => Show::Pages(ShowPages {
            file: name,
            entries: v.entries,
            error,
        }),
        ShowWhat::Page(pfn) => {
            let verify_differs = match (&v.final_copy, &v.verify_copy) {
                (Some(f), Some(c)) => Some(f.bytes != c.bytes),
                _ => None,
            };
            Show::Page(ShowPage {
                file: name,
                pfn,
                copies: v.copies,
                final_copy: v.final_copy,
                verify: v.verify_copy,
                verify_differs,
                error,
            })
        }
    };
    Ok((show, verdict))
}

// ------------------------------------------------------------------- digest

/// A vCPU's digest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VcpuDigest {
    /// Record number.
    pub index: u32,
    /// SHA-256 of the context bytes as stored, hex.
    pub sha256: String,
}

/// One 2 MiB range's digest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RangeDigest {
    /// Range index (pfn / 512).
    pub range: u64,
    /// Pages present in it.
    pub pages: u32,
    /// SHA-256, hex.
    pub sha256: String,
}

/// `hvm-inspect digest`.
#[derive(Debug, Clone, Serialize)]
pub struct DigestReport {
    /// The image.
    pub file: String,
    /// The definition used (`hvm_format::digest`).
    pub definition: &'static str,
    /// SHA-256 of the final guest memory, hex.
    pub memory_sha256: String,
    /// Pages covered (distinct pfns with a final copy).
    pub pages: u64,
    /// Per-range digests, ascending.
    pub ranges: Vec<RangeDigest>,
    /// Each vCPU.
    pub vcpus: Vec<VcpuDigest>,
}

/// The index and the small parts `digest` and `diff` need.
pub(crate) struct IndexVisit {
    pub index: IndexBuilder,
    pub vcpus: Vec<(u32, Vec<u8>)>,
    pub hvm: Option<(u64, Vec<u8>)>,
}

impl Visit for IndexVisit {
    fn item(&mut self, item: &Item<'_>) {
        self.index.item(item);
        match item {
            Item::Vcpu(v) => self.vcpus.push((v.index, v.bytes.to_vec())),
            Item::HvmBlob(h) => self.hvm = Some((h.offset, h.bytes.to_vec())),
            _ => {}
        }
    }
}

/// Index an image in a file read with read(2), for `diff`; a damaged
/// stream is an error here (a comparison of part of an image would be a lie).
pub(crate) fn index_file(
    f: &Spooled,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<(Walked, IndexVisit), InspectError> {
    let r = f.reader().map_err(|source| InspectError::Io {
        path: f.name().to_string(),
        source,
    })?;
    let (walked, v) = walk_read(f.name(), r, opts, progress, |_| IndexVisit {
        index: IndexBuilder::new(),
        vcpus: Vec::new(),
        hvm: None,
    })?;
    if let Some(e) = walked.error {
        return Err(InspectError::image(f.name(), e));
    }
    Ok((walked, v))
}

/// Walk a mapped image once: its index, vCPU records and HVM blob, and
/// the verdict of `validate`, for `digest` and `extract`. A damaged stream
/// is an error (naming offset, record and field): a digest or an extract
/// of part of an image would be a lie.
pub(crate) fn index_mapped(
    m: &Mapped,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<(Walked, IndexVisit, VerdictReport), InspectError> {
    let (walked, c) = walk_slice(m.name(), m.bytes(), opts, progress, |info| {
        Checked::new(
            info,
            IndexVisit {
                index: IndexBuilder::new(),
                vcpus: Vec::new(),
                hvm: None,
            },
        )
    })?;
    let (v, verdict) = c.finish(&walked);
    m.check()?; // zeros after a truncation are not the image's error
    if let Some(e) = walked.error {
        return Err(InspectError::image(m.name(), e));
    }
    Ok((walked, v, verdict))
}

/// Workers for hashing: one per available core (`parallel_digest` pins
/// them; unpinned threads would share one core).
pub fn digest_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The 4096 bytes of each final copy, in index order.
///
/// The offsets come from a walk of `data`, so each should be in range; one
/// that is not is a broken invariant, and hashing an empty page for it would
/// give a digest that is silently wrong. It is an error naming the pfn and
/// the offset instead. Checked before hashing so that the workers cannot
/// meet it.
fn final_pages<'a>(finals: &[PageCopy], data: &'a [u8]) -> Result<Vec<&'a [u8]>, Error> {
    finals.iter().map(|c| page_of(data, c)).collect()
}

/// The 4096 bytes of a final copy. Its offset comes from a walk of
/// `data`, so it is in range; one that is not is an error naming the pfn
/// and the offset, never a short or empty page.
pub(crate) fn page_of<'a>(data: &'a [u8], c: &PageCopy) -> Result<&'a [u8], Error> {
    usize::try_from(c.offset)
        .ok()
        .and_then(|o| data.get(o..o.checked_add(PAGE_SIZE)?))
        .ok_or_else(|| {
            Error::truncated(
                c.offset,
                Context::root().index("page", c.pfn),
                PAGE_SIZE as u64,
                (data.len() as u64).saturating_sub(c.offset),
            )
        })
}

/// Digest the final memory and each vCPU of an image, and the verdict of
/// `validate` on it (a digest of an image Xen would refuse is no answer).
pub fn digest(
    input: Input,
    opts: OpenOptions,
    workers: usize,
    progress: Progress<'_>,
) -> Result<(DigestReport, VerdictReport), InspectError> {
    let m = input.map()?;
    let (_, v, verdict) = index_mapped(&m, opts, progress)?;
    let idx = v.index.finish();
    let data = m.bytes();
    let pages = final_pages(&idx.finals, data).map_err(|e| InspectError::image(m.name(), e))?;
    let pfns: Vec<u64> = idx.finals.iter().map(|c| c.pfn).collect();
    // `pages` has one entry per pfn, and the digest asks only for k < pfns.len().
    let md = parallel_digest(&pfns, |k| pages[k], workers);
    m.check()?;
    let report = DigestReport {
        file: m.name().to_string(),
        definition: "hvm_format::digest v1: SHA-256 over (range index LE64 || SHA-256 over (pfn LE64 || page) per 2 MiB range)",
        memory_sha256: hex(&md.total),
        pages: md.pages,
        ranges: md
            .ranges
            .iter()
            .map(|(r, d, n)| RangeDigest {
                range: *r,
                pages: *n,
                sha256: hex(d),
            })
            .collect(),
        vcpus: v
            .vcpus
            .iter()
            .map(|(i, b)| VcpuDigest {
                index: *i,
                sha256: hex(&vcpu_digest(b)),
            })
            .collect(),
    };
    Ok((report, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_page_out_of_range_is_an_error_not_an_empty_page() {
        let data = vec![7u8; 2 * PAGE_SIZE];
        let copy = |pfn, offset| PageCopy {
            pfn,
            offset,
            pass: 0,
        };
        let ok = final_pages(&[copy(1, 0), copy(2, PAGE_SIZE as u64)], &data).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(ok.iter().all(|p| p.len() == PAGE_SIZE));
        // A page that starts inside the data but runs past its end.
        let e = final_pages(&[copy(1, 0), copy(9, PAGE_SIZE as u64 + 1)], &data).unwrap_err();
        assert_eq!(e.offset, PAGE_SIZE as u64 + 1);
        assert_eq!(e.context.to_string(), "page 9");
        assert!(e.is_truncation());
        // One whose end overflows.
        let e = final_pages(&[copy(3, u64::MAX)], &data).unwrap_err();
        assert_eq!(e.offset, u64::MAX);
    }
}

//! What a hypervisor's loader would say about a blob, as findings.
//!
//! Two loaders are modelled:
//! * [`check_seed_load`]: `hvm_load` and the per-type loaders of the seed
//!   (`e2a44bc7a4`, docs/format.md §5.2 "Load-side checks").
//! * [`check_current_load`]: current Xen (`xen/arch/x86/hvm/save.c`,
//!   docs/format.md §5.5): strict vs zero-extending length checks, the CPU
//!   compat form, the own parsers of CPU_XSAVE and CPU_MSR.
//!
//! Xen stops at the first failure; these checks go on as far as the framing
//! allows, so a report names every record a loader would trip over.
//!
//! **Offsets in findings are relative to the blob's first byte**: callers
//! that report file positions add the blob's file offset to
//! [`Finding::offset`].

use crate::bytes::le;
use crate::diag::Context;
use crate::diag::{Finding, Severity};
use crate::pfn::WordSize;

use super::framing::{record_context, DESCRIPTOR_LEN};
use super::layouts::{
    CpuMsr, CpuXsave, HVM_FILE_MAGIC, HVM_FILE_VERSION, XSAVE_HEADER_LEN, XSTATE_AREA_MIN_SIZE,
};
use super::record::{code, is_per_vcpu, size_eras, type_name};

/// `MAX_VIRT_CPUS` of the seed: the (off-by-one) bound of vCPU instances.
pub(crate) const SEED_MAX_VIRT_CPUS: u16 = 32;

/// Parameters of the seed-era loader check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedLoadOptions {
    /// Word size of the *hypervisor* that loads the blob: HEADER is 24
    /// bytes on x86_64 Xen and 20 on 32-bit Xen, and must match exactly.
    pub xen_word: WordSize,
    /// CPUID.1:EAX of the restoring host, if known (mismatch only warns).
    pub host_cpuid: Option<u32>,
    /// Changeset of the restoring Xen, if known (mismatch only warns).
    pub host_changeset: Option<u64>,
    /// vCPUs of the restoring domain, if known: instances naming a vCPU
    /// beyond them fail (`d->vcpu[i] == NULL`).
    pub nr_vcpus: Option<u32>,
}

impl Default for SeedLoadOptions {
    fn default() -> Self {
        SeedLoadOptions {
            xen_word: WordSize::W64,
            host_cpuid: None,
            host_changeset: None,
            nr_vcpus: None,
        }
    }
}

/// Parameters of the current-Xen loader check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CurrentLoadOptions {
    /// CPUID.1:EAX of the restoring host, if known (mismatch only warns).
    pub host_cpuid: Option<u32>,
    /// vCPUs of the restoring domain, if known.
    pub nr_vcpus: Option<u32>,
}

/// Payload length the seed's loader requires for a type code (HEADER by
/// the hypervisor's word size); `None` for codes without a loader.
pub(crate) fn seed_length(typecode: u16, xen_word: WordSize) -> Option<usize> {
    Some(match typecode {
        code::HEADER => match xen_word {
            WordSize::W64 => 24,
            WordSize::W32 => 20,
        },
        code::CPU => 320,
        code::PIC => 8,
        code::IOAPIC => 400,
        code::LAPIC => 16,
        code::LAPIC_REGS => 1024,
        code::PCI_IRQ => 16,
        code::ISA_IRQ => 8,
        code::PCI_LINK => 4,
        code::PIT => 52,
        code::RTC => 15,
        code::HPET => 1048,
        code::PMTIMER => 8,
        _ => return None,
    })
}

/// How current Xen checks a type's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CurrentCheck {
    /// `hvm_load_entry`: length must equal the struct size.
    Strict(usize),
    /// `hvm_load_entry_zeroextend`: length ≤ struct size, rest zero-filled.
    ZeroExtend(usize),
    /// CPU: zero-extend against 1032, compat form 1016, `_hvm_hw_fix_cpu`.
    Cpu,
    /// CPU_XSAVE's own variable-length parser.
    Xsave,
    /// CPU_MSR's own variable-length parser.
    Msr,
}

/// How current Xen checks a type code; `None`: no handler (HEADER after the
/// first record, END, undefined codes).
pub(crate) fn current_check(typecode: u16) -> Option<CurrentCheck> {
    use CurrentCheck::*;
    Some(match typecode {
        code::CPU => Cpu,
        code::PIC => Strict(8),
        code::IOAPIC => Strict(400),
        code::LAPIC => ZeroExtend(32),
        code::LAPIC_REGS => Strict(1024),
        code::PCI_IRQ => Strict(16),
        code::ISA_IRQ => Strict(8),
        code::PCI_LINK => Strict(8),
        code::PIT => Strict(56),
        code::RTC => ZeroExtend(24),
        code::HPET => Strict(1048),
        code::PMTIMER => Strict(8),
        code::MTRR => Strict(240),
        code::VIRIDIAN_DOMAIN => ZeroExtend(32),
        code::CPU_XSAVE => Xsave,
        code::VIRIDIAN_VCPU => ZeroExtend(216),
        code::VMCE_VCPU => ZeroExtend(32),
        code::TSC_ADJUST => Strict(8),
        code::CPU_MSR => Msr,
        _ => return None,
    })
}

/// One descriptor as the loaders see it.
struct Desc<'a> {
    index: usize,
    offset: usize,
    typecode: u16,
    instance: u16,
    length: u32,
    /// `None` when the payload runs past the blob.
    payload: Option<&'a [u8]>,
}

impl Desc<'_> {
    fn ctx(&self) -> Context {
        record_context(self.index, self.typecode)
    }
    fn name(&self) -> &'static str {
        type_name(self.typecode).unwrap_or("UNKNOWN")
    }
    fn length_offset(&self) -> u64 {
        self.offset as u64 + 4
    }
    fn payload_offset(&self) -> u64 {
        (self.offset + DESCRIPTOR_LEN) as u64
    }
    fn next(&self) -> usize {
        self.offset + DESCRIPTOR_LEN + self.length as usize
    }
}

/// Read the descriptor at `pos`; `None` if fewer than 8 bytes remain.
fn desc_at(blob: &[u8], pos: usize, index: usize) -> Option<Desc<'_>> {
    let d = blob.get(pos..pos.checked_add(DESCRIPTOR_LEN)?)?;
    let length = le::<u32>(d, 4)?;
    let start = pos + DESCRIPTOR_LEN;
    let payload = start
        .checked_add(length as usize)
        .and_then(|end| blob.get(start..end));
    Some(Desc {
        index,
        offset: pos,
        typecode: le::<u16>(d, 0)?,
        instance: le::<u16>(d, 2)?,
        length,
        payload,
    })
}

fn era_hint(typecode: u16, len: usize) -> String {
    match size_eras(typecode, len) {
        [] => " (no Xen release wrote this size)".to_string(),
        eras => {
            let s: Vec<String> = eras.iter().map(|e| e.to_string()).collect();
            format!(" (the size of Xen {})", s.join(", "))
        }
    }
}

fn out_of_data(rule: &'static str, blob: &[u8], pos: usize, index: usize) -> Finding {
    Finding::error(
        rule,
        pos as u64,
        Context::root().index("hvm record", index as u64),
        format!(
            "blob ends before END: expected an 8-byte descriptor, found {} bytes",
            blob.len().saturating_sub(pos)
        ),
    )
}

fn trailing(rule: &'static str, blob: &[u8], pos: usize) -> Option<Finding> {
    (pos < blob.len()).then(|| Finding {
        rule,
        severity: Severity::Info,
        offset: pos as u64,
        context: Context::root().field("after END"),
        message: format!("{} bytes after END are ignored", blob.len() - pos),
    })
}

fn truncated_payload(rule: &'static str, blob: &[u8], d: &Desc) -> Finding {
    Finding::error(
        rule,
        d.length_offset(),
        d.ctx().field("length"),
        format!(
            "{} payload of {} bytes runs past the blob: expected at most {}, found {}",
            d.name(),
            d.length,
            blob.len().saturating_sub(d.offset + DESCRIPTOR_LEN),
            d.length
        ),
    )
}

/// Checks common to both eras on the HEADER payload.
fn check_header_values(
    out: &mut Vec<Finding>,
    d: &Desc,
    p: &[u8],
    rules: [&'static str; 3],
    host_cpuid: Option<u32>,
) {
    let [magic_rule, version_rule, cpuid_rule] = rules;
    if let Some(magic) = le::<u32>(p, 0) {
        if magic != HVM_FILE_MAGIC {
            out.push(Finding::error(
                magic_rule,
                d.payload_offset(),
                d.ctx().field("magic"),
                format!("expected magic 0x{HVM_FILE_MAGIC:08x}, found 0x{magic:08x}"),
            ));
        }
    }
    if let Some(version) = le::<u32>(p, 4) {
        if version != HVM_FILE_VERSION {
            out.push(Finding::error(
                version_rule,
                d.payload_offset() + 4,
                d.ctx().field("version"),
                format!("expected version {HVM_FILE_VERSION}, found {version}"),
            ));
        }
    }
    if let (Some(host), Some(saved)) = (host_cpuid, le::<u32>(p, 16)) {
        if host != saved {
            out.push(Finding::warning(
                cpuid_rule,
                d.payload_offset() + 16,
                d.ctx().field("cpuid"),
                format!("saved on CPUID.1:EAX 0x{saved:08x}, restoring host has 0x{host:08x}"),
            ));
        }
    }
}

/// Rule ids of the checks both loaders make, one set per era.
struct CommonRules {
    header_first: &'static str,
    header_length: &'static str,
    header_values: [&'static str; 3],
    truncated: &'static str,
    missing_end: &'static str,
    trailing: &'static str,
}

const SEED_RULES: CommonRules = CommonRules {
    header_first: "seed.hvm.header-first",
    header_length: "seed.hvm.header-length",
    header_values: ["seed.hvm.magic", "seed.hvm.version", "seed.hvm.cpuid"],
    truncated: "seed.hvm.truncated",
    missing_end: "seed.hvm.missing-end",
    trailing: "seed.hvm.trailing-bytes",
};

const CURRENT_RULES: CommonRules = CommonRules {
    header_first: "xen.hvm.header-first",
    header_length: "xen.hvm.header-length",
    header_values: ["xen.hvm.magic", "xen.hvm.version", "xen.hvm.cpuid"],
    truncated: "xen.hvm.truncated",
    missing_end: "xen.hvm.missing-end",
    trailing: "xen.hvm.trailing-bytes",
};

/// What every loader does first: the blob must open with a HEADER of
/// `header_len` bytes whose magic and version match. Returns the first
/// descriptor and its payload, or `None` (with the finding) when the walk
/// cannot go on.
fn check_header<'a>(
    out: &mut Vec<Finding>,
    blob: &'a [u8],
    rules: &CommonRules,
    header_len: usize,
    length_message: impl Fn(u32) -> String,
    host_cpuid: Option<u32>,
) -> Option<(Desc<'a>, &'a [u8])> {
    let Some(h) = desc_at(blob, 0, 0) else {
        out.push(Finding::error(
            rules.header_first,
            0,
            Context::root().index("hvm record", 0),
            format!(
                "expected a HEADER descriptor, found a blob of {} bytes",
                blob.len()
            ),
        ));
        return None;
    };
    if h.typecode != code::HEADER {
        out.push(Finding::error(
            rules.header_first,
            0,
            h.ctx().field("typecode"),
            format!(
                "expected HEADER (1) first, found {} ({})",
                h.name(),
                h.typecode
            ),
        ));
    } else if h.length as usize != header_len {
        out.push(Finding::error(
            rules.header_length,
            h.length_offset(),
            h.ctx().field("length"),
            length_message(h.length),
        ));
    }
    let Some(hp) = h.payload else {
        out.push(truncated_payload(rules.truncated, blob, &h));
        return None;
    };
    if h.typecode == code::HEADER {
        check_header_values(out, &h, hp, rules.header_values, host_cpuid);
    }
    Some((h, hp))
}

/// Every record after the first up to END, each handed to `record` before
/// its payload's presence is checked; stops at END (noting trailing bytes),
/// at the end of the blob, or at a truncated payload.
fn check_records<'a>(
    out: &mut Vec<Finding>,
    blob: &'a [u8],
    rules: &CommonRules,
    first: &Desc<'a>,
    mut record: impl FnMut(&mut Vec<Finding>, &Desc<'a>),
) {
    let mut pos = first.next();
    let mut index = 1;
    loop {
        let Some(d) = desc_at(blob, pos, index) else {
            out.push(out_of_data(rules.missing_end, blob, pos, index));
            return;
        };
        if d.typecode == code::END {
            // END's length is not checked; whatever follows is ignored.
            let after = d.payload.map(|p| d.offset + DESCRIPTOR_LEN + p.len());
            out.extend(trailing(rules.trailing, blob, after.unwrap_or(pos + 8)));
            return;
        }
        record(out, &d);
        if d.payload.is_none() {
            out.push(truncated_payload(rules.truncated, blob, &d));
            return;
        }
        pos = d.next();
        index += 1;
    }
}

/// Would the seed's Xen (`e2a44bc7a4`) load this blob?
///
/// Rules: `seed.hvm.header-first`, `seed.hvm.header-length`,
/// `seed.hvm.magic`, `seed.hvm.version`, `seed.hvm.cpuid` (warning),
/// `seed.hvm.changeset` (warning), `seed.hvm.typecode-range`,
/// `seed.hvm.no-handler`, `seed.hvm.exact-length`, `seed.hvm.truncated`,
/// `seed.hvm.vcpu-instance`, `seed.hvm.pic-instance`, `seed.hvm.missing-end`,
/// `seed.hvm.trailing-bytes` (info).
pub fn check_seed_load(blob: &[u8], opts: &SeedLoadOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    let header_len = seed_length(code::HEADER, opts.xen_word).unwrap_or(24);
    let length_message = |found| {
        format!(
            "expected {header_len} bytes for {}-bit Xen, found {found}",
            opts.xen_word.bits()
        )
    };
    let Some((h, hp)) = check_header(
        &mut out,
        blob,
        &SEED_RULES,
        header_len,
        length_message,
        opts.host_cpuid,
    ) else {
        return out;
    };
    if h.typecode == code::HEADER {
        if let (Some(host), Some(saved)) = (opts.host_changeset, le::<u64>(hp, 8)) {
            if host != saved {
                out.push(Finding::warning(
                    "seed.hvm.changeset",
                    h.payload_offset() + 8,
                    h.ctx().field("changeset"),
                    format!("saved by changeset 0x{saved:x}, restoring Xen is 0x{host:x}"),
                ));
            }
        }
    }
    check_records(&mut out, blob, &SEED_RULES, &h, |out, d| {
        if d.typecode > code::SEED_MAX {
            out.push(Finding::error(
                "seed.hvm.typecode-range",
                d.offset as u64,
                d.ctx().field("typecode"),
                format!(
                    "expected typecode ≤ {}, found {}",
                    code::SEED_MAX,
                    d.typecode
                ),
            ));
        } else if d.typecode == code::HEADER {
            out.push(Finding::error(
                "seed.hvm.no-handler",
                d.offset as u64,
                d.ctx().field("typecode"),
                "a second HEADER: hvm_load reads HEADER itself and has no handler for it",
            ));
        } else if let Some(want) = seed_length(d.typecode, opts.xen_word) {
            if d.length as usize != want {
                out.push(Finding::error(
                    "seed.hvm.exact-length",
                    d.length_offset(),
                    d.ctx().field("length"),
                    format!(
                        "{} must be exactly {want} bytes, found {}{}",
                        d.name(),
                        d.length,
                        era_hint(d.typecode, d.length as usize)
                    ),
                ));
            }
            seed_instance(out, d, opts.nr_vcpus);
        }
    });
    out
}

fn seed_instance(out: &mut Vec<Finding>, d: &Desc, nr_vcpus: Option<u32>) {
    let ctx = d.ctx().field("instance");
    match d.typecode {
        code::CPU | code::LAPIC | code::LAPIC_REGS => {
            if d.instance > SEED_MAX_VIRT_CPUS {
                out.push(Finding::error(
                    "seed.hvm.vcpu-instance",
                    d.offset as u64 + 2,
                    ctx,
                    format!(
                        "expected a vcpu id ≤ {SEED_MAX_VIRT_CPUS}, found {}",
                        d.instance
                    ),
                ));
            } else if d.instance == SEED_MAX_VIRT_CPUS {
                out.push(Finding::error(
                    "seed.hvm.vcpu-instance",
                    d.offset as u64 + 2,
                    ctx,
                    format!(
                        "vcpu id {} passes the seed's `> MAX_VIRT_CPUS` check (off by one) \
                         but names no vCPU: d->vcpu[32] is read past the array",
                        d.instance
                    ),
                ));
            } else if let Some(n) = nr_vcpus.filter(|&n| u32::from(d.instance) >= n) {
                out.push(Finding::error(
                    "seed.hvm.vcpu-instance",
                    d.offset as u64 + 2,
                    ctx,
                    format!("expected a vcpu id < {n}, found {}", d.instance),
                ));
            }
        }
        code::PIC if d.instance > 1 => out.push(Finding::error(
            "seed.hvm.pic-instance",
            d.offset as u64 + 2,
            ctx,
            format!("expected PIC instance 0 or 1, found {}", d.instance),
        )),
        _ => {}
    }
}

/// Would current Xen (`xen/arch/x86/hvm/save.c` at HEAD) load this blob?
///
/// Rules: `xen.hvm.header-first`, `xen.hvm.header-length`, `xen.hvm.magic`,
/// `xen.hvm.version`, `xen.hvm.cpuid` (warning), `xen.hvm.gtsc-khz`
/// (warning), `xen.hvm.unknown-type`, `xen.hvm.strict-length`,
/// `xen.hvm.zero-extend-length`, `xen.hvm.zero-extended` (info/warning),
/// `xen.hvm.cpu-layout`, `xen.hvm.cpu-compat` (info),
/// `xen.hvm.xsave-length`, `xen.hvm.xsave-state`, `xen.hvm.msr-length`,
/// `xen.hvm.msr-reserved`, `xen.hvm.vcpu-instance`, `xen.hvm.pic-instance`,
/// `xen.hvm.truncated`, `xen.hvm.missing-end`, `xen.hvm.trailing-bytes`
/// (info).
///
/// Host-dependent checks (XSAVE features and area size of the host, which
/// MSRs the host accepts) are not modelled.
pub fn check_current_load(blob: &[u8], opts: &CurrentLoadOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    let length_message = |found| {
        format!(
            "hvm_get_entry is strict: expected 24 bytes, found {found}{}",
            era_hint(code::HEADER, found as usize)
        )
    };
    let Some((h, hp)) = check_header(
        &mut out,
        blob,
        &CURRENT_RULES,
        24,
        length_message,
        opts.host_cpuid,
    ) else {
        return out;
    };
    let mut seed_cpu_seen = false;
    check_records(&mut out, blob, &CURRENT_RULES, &h, |out, d| {
        match current_check(d.typecode) {
            None => out.push(Finding::error(
                "xen.hvm.unknown-type",
                d.offset as u64,
                d.ctx().field("typecode"),
                format!(
                    "no loader for typecode {} (expected 2..={}{})",
                    d.typecode,
                    code::CURRENT_MAX,
                    if d.typecode == code::HEADER {
                        "; HEADER is only read first"
                    } else {
                        ""
                    }
                ),
            )),
            Some(check) => {
                if d.payload.is_some() {
                    current_length(out, d, check);
                }
                current_instance(out, d, opts.nr_vcpus);
            }
        }
        if d.typecode == code::CPU && d.length == 320 {
            seed_cpu_seen = true;
        }
    });

    // A 2007 header's padding bytes are read as gtsc_khz.
    if h.typecode == code::HEADER && h.length == 24 && seed_cpu_seen {
        if let Some(tail) = le::<u32>(hp, 20).filter(|&t| t != 0) {
            out.push(Finding::warning(
                "xen.hvm.gtsc-khz",
                h.payload_offset() + 20,
                h.ctx().field("gtsc_khz"),
                format!(
                    "bytes 20..24 were padding in 2007 but are taken as gtsc_khz: \
                     expected 0 (no TSC scaling), found {tail} kHz"
                ),
            ));
        }
    }
    out
}

fn current_length(out: &mut Vec<Finding>, d: &Desc, check: CurrentCheck) {
    let len = d.length as usize;
    let at = d.length_offset();
    let ctx = || d.ctx().field("length");
    let name = d.name();
    match check {
        CurrentCheck::Strict(want) if len != want => out.push(Finding::error(
            "xen.hvm.strict-length",
            at,
            ctx(),
            format!(
                "{name} is loaded strictly: expected {want} bytes, found {len}{}",
                era_hint(d.typecode, len)
            ),
        )),
        CurrentCheck::Strict(_) => {}
        CurrentCheck::ZeroExtend(max) if len > max => out.push(Finding::error(
            "xen.hvm.zero-extend-length",
            at,
            ctx(),
            format!("{name} may be at most {max} bytes, found {len}"),
        )),
        CurrentCheck::ZeroExtend(max) if len < max => {
            let known = !size_eras(d.typecode, len).is_empty();
            out.push(Finding {
                rule: "xen.hvm.zero-extended",
                severity: if known {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                offset: at,
                context: ctx(),
                message: format!(
                    "{name} of {len} bytes is zero-extended to {max}{}",
                    era_hint(d.typecode, len)
                ),
            });
        }
        CurrentCheck::ZeroExtend(_) => {}
        CurrentCheck::Cpu => match len {
            1032 | 1024 => {}
            1016 => out.push(Finding {
                rule: "xen.hvm.cpu-compat",
                severity: Severity::Info,
                offset: at,
                context: ctx(),
                message: "1016-byte CPU record loaded through the compat path: \
                          tsc and pending_event move, msr_tsc_aux = 0"
                    .into(),
            }),
            n if n > 1032 => out.push(Finding::error(
                "xen.hvm.zero-extend-length",
                at,
                ctx(),
                format!("CPU may be at most 1032 bytes (or the 1016 compat form), found {n}"),
            )),
            n => out.push(Finding::error(
                "xen.hvm.cpu-layout",
                at,
                ctx(),
                format!(
                    "a {n}-byte CPU record is accepted but zero-extended into the \
                     1032-byte layout, whose fields sit elsewhere{}: the record needs \
                     translation",
                    era_hint(code::CPU, n)
                ),
            )),
        },
        CurrentCheck::Xsave => {
            let min = XSAVE_HEADER_LEN + XSTATE_AREA_MIN_SIZE;
            if len < min {
                out.push(Finding::error(
                    "xen.hvm.xsave-length",
                    at,
                    ctx(),
                    format!("CPU_XSAVE must hold at least {min} bytes, found {len}"),
                ));
            } else if let Some(x) = d.payload.and_then(CpuXsave::decode) {
                xsave_state(out, d, &x);
            }
        }
        CurrentCheck::Msr => {
            if len < 24 {
                out.push(Finding::error(
                    "xen.hvm.msr-length",
                    at,
                    ctx(),
                    format!("CPU_MSR must hold at least one MSR (24 bytes), found {len}"),
                ));
                return;
            }
            let count = d.payload.and_then(|p| le::<u32>(p, 0)).unwrap_or(0);
            let want = 8 + 16 * u64::from(count);
            if want != len as u64 {
                out.push(Finding::error(
                    "xen.hvm.msr-length",
                    at,
                    ctx(),
                    format!("count {count} needs {want} bytes, found {len}"),
                ));
            } else if let Some(m) = d.payload.and_then(CpuMsr::decode) {
                for (i, msr) in m.msrs.iter().enumerate() {
                    if msr.rsvd != 0 {
                        out.push(Finding::error(
                            "xen.hvm.msr-reserved",
                            d.payload_offset() + 8 + 16 * i as u64 + 4,
                            d.ctx().index("msr", i as u64).field("_rsvd"),
                            format!(
                                "MSR 0x{:x}: expected _rsvd 0, found 0x{:x}",
                                msr.index, msr.rsvd
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// The host-independent part of `validate_xstate`.
fn xsave_state(out: &mut Vec<Finding>, d: &Desc, x: &CpuXsave) {
    const X87: u64 = 1;
    const SSE: u64 = 1 << 1;
    const YMM: u64 = 1 << 2;
    let valid_xcr0 = |v: u64| v & X87 != 0 && (v & YMM == 0 || v & SSE != 0);
    let bv = x.xstate_bv().unwrap_or(0);
    let mut problems = Vec::new();
    if !valid_xcr0(x.xcr0) {
        problems.push(format!("xcr0 0x{:x} is not a valid XCR0", x.xcr0));
    }
    if !valid_xcr0(x.xcr0_accum) {
        problems.push(format!(
            "xcr0_accum 0x{:x} is not a valid XCR0",
            x.xcr0_accum
        ));
    }
    if x.xcr0 & !x.xcr0_accum != 0 {
        problems.push(format!(
            "xcr0 0x{:x} has bits outside xcr0_accum 0x{:x}",
            x.xcr0, x.xcr0_accum
        ));
    }
    if bv & !x.xcr0_accum != 0 {
        problems.push(format!(
            "xstate_bv 0x{bv:x} has bits outside xcr0_accum 0x{:x}",
            x.xcr0_accum
        ));
    }
    if !problems.is_empty() {
        out.push(Finding::error(
            "xen.hvm.xsave-state",
            d.payload_offset(),
            d.ctx(),
            format!("inconsistent xsave state: {}", problems.join("; ")),
        ));
    }
}

fn current_instance(out: &mut Vec<Finding>, d: &Desc, nr_vcpus: Option<u32>) {
    let ctx = d.ctx().field("instance");
    if is_per_vcpu(d.typecode) {
        if let Some(n) = nr_vcpus.filter(|&n| u32::from(d.instance) >= n) {
            out.push(Finding::error(
                "xen.hvm.vcpu-instance",
                d.offset as u64 + 2,
                ctx,
                format!("domain has no vcpu{}: expected < {n}", d.instance),
            ));
        }
    } else if d.typecode == code::PIC && d.instance > 1 {
        out.push(Finding::error(
            "xen.hvm.pic-instance",
            d.offset as u64 + 2,
            ctx,
            format!("expected PIC instance 0 or 1, found {}", d.instance),
        ));
    }
}

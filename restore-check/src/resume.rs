//! `--resume`: load an image into a fresh KVM VM and prove it runs on.
//!
//! The VM is built from the image alone: RAM from the replay, each vCPU from
//! its libxc context and HVM records (CPU, LAPIC, LAPIC_REGS) in either
//! era's layouts (the 2007 320-byte CPU record or the 3.1-on register file,
//! all three LAPIC layouts, both PIT layouts), the PICs, IOAPIC and PIT from
//! their records, and what the records cannot hold (CPUID, other MSRs, xsave
//! beyond FXSAVE, events) from a fresh vCPU of this host
//! ([`Vm::template_state`]); see `hvm_save::backend::kvm::xen_state`. A
//! record it needs but cannot decode, a CPU record that contradicts the
//! vCPU context, or all vCPUs down is a refusal (exit 1), named.
//!
//! For an image of hvm-save's built-in KVM workload, the workload's
//! parameters are read from its descriptor page (pfn 1, in the image's RAM)
//! and cross-checked with the registers; the resumed guest runs to
//! (furthest vCPU's step + N, checked) and its memory digest and
//! architectural state are compared with an uninterrupted control run of
//! the same workload to the same step. An image whose registers are the
//! workload's but whose descriptor is gone cannot be compared and fails.
//! Any other image resumes and runs for a bounded time; it passes, as "not
//! compared", only when every vCPU that was loaded up moved (RIP or a
//! general-purpose register) and `--expect` was not given.

use std::time::{Duration, Instant};

use hvm_format::hvm::{code, HvmBlob, PitSeed, RecordBody};
use hvm_format::image::{self, OpenOptions};
use hvm_format::pfn::MMIO_HOLE_START;
use hvm_format::stream::Item;
use hvm_format::vcpu::VcpuContext;
use hvm_format::PAGE_SIZE;
use hvm_guest::{RestoreOptions, VcpuState, Vm, VmConfig, WorkloadRegs};
use hvm_save::backend::kvm::xen_state::{self, CpuRecord, DeviceRecords, VcpuRecords};
use hvm_save::backend::kvm::{WorkloadDescriptor, DESCRIPTOR_PFN};
use serde::Serialize;

use crate::memory::GuestMemory;

/// How to resume.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    /// Workload steps to run past the furthest vCPU's step at save time.
    pub steps: u64,
    /// Limit for each run (resumed and control).
    pub timeout: Duration,
    /// How long an image of another guest runs.
    pub foreign_run: Duration,
    /// The caller expects a comparison (`--expect` was given): an image
    /// that can only be run, not compared, then fails instead of passing.
    pub expect_comparable: bool,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            steps: 100_000,
            timeout: Duration::from_secs(30),
            foreign_run: Duration::from_secs(1),
            expect_comparable: false,
        }
    }
}

/// What kind of guest the image held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GuestKind {
    /// hvm-save's built-in KVM workload: compared with a control run.
    BuiltInWorkload,
    /// Anything else: resumed and run for a bounded time, not compared.
    Other,
}

/// The outcome of a resume.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// Which guest.
    pub kind: GuestKind,
    /// vCPUs resumed.
    pub vcpus: usize,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Each vCPU's step at save time (built-in workload).
    pub saved_steps: Vec<u64>,
    /// The step both runs stopped at.
    pub target_step: Option<u64>,
    /// Non-zero pages loaded.
    pub pages_loaded: u64,
    /// MSRs KVM refused, as (vCPU, index).
    pub msrs_rejected: Vec<(usize, u32)>,
    /// Building the VM from the image, ms.
    pub restore_ms: f64,
    /// Running the resumed guest, ms.
    pub run_ms: f64,
    /// Everything that differs from the control run, or is missing; for
    /// another guest, what made its run fail.
    pub differences: Vec<String>,
    /// For another guest: what the image lacks or contradicts, which a
    /// built-in workload image would fail on but a foreign one may well have.
    pub notes: Vec<String>,
    /// True only for a built-in workload image whose resumed run equals the
    /// control run.
    pub matches: bool,
}

impl ResumeReport {
    /// 0 when the resumed guest matched its control run (or, for another
    /// guest, ran its bounded time without failing), else 1.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            GuestKind::BuiltInWorkload if self.matches => 0,
            GuestKind::Other if self.differences.is_empty() => 0,
            _ => 1,
        }
    }

    /// Human-readable lines.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let kind = match self.kind {
            GuestKind::BuiltInWorkload => "hvm-save's built-in KVM workload",
            GuestKind::Other => "not the built-in workload (no descriptor page): run only",
        };
        s.push_str(&format!(
            "resume:   {kind}; {} vCPU(s), {} MiB, {} pages loaded in {:.1} ms\n",
            self.vcpus, self.memory_mib, self.pages_loaded, self.restore_ms
        ));
        if let Some(t) = self.target_step {
            s.push_str(&format!(
                "          saved at steps {:?}, resumed and control runs to step {t} ({:.1} ms)\n",
                self.saved_steps, self.run_ms
            ));
        } else {
            s.push_str(&format!("          ran for {:.1} ms\n", self.run_ms));
        }
        if !self.msrs_rejected.is_empty() {
            s.push_str(&format!(
                "          MSRs refused by KVM: {:x?}\n",
                self.msrs_rejected
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        for d in &self.differences {
            s.push_str(&format!("  differs: {d}\n"));
        }
        let verdict = match (self.kind, self.exit_code()) {
            (GuestKind::BuiltInWorkload, 0) => "resumed guest matches the uninterrupted run",
            (GuestKind::BuiltInWorkload, _) => "resumed guest does NOT match",
            (GuestKind::Other, 0) => "resumed and ran (not compared)",
            (GuestKind::Other, _) => "resume failed",
        };
        s.push_str(&format!(
            "resume verdict: {verdict} (exit {})\n",
            self.exit_code()
        ));
        s
    }
}

/// Why a resume could not be attempted at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// /dev/kvm is missing.
    #[error("/dev/kvm is not available: --resume needs KVM")]
    NoKvm,
    /// The image cannot be resumed (unreadable parts, sizes KVM cannot take).
    #[error("cannot resume: {0}")]
    Image(String),
    /// `--steps` past the save point does not fit a step count, or is 0
    /// (no step run is no evidence).
    #[error("--steps {steps} past step {saved}: {why}")]
    Steps {
        /// The `--steps` asked for.
        steps: u64,
        /// The workload step the image was saved at.
        saved: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// KVM refused to build or run the VM.
    #[error("KVM: {0}")]
    Kvm(#[from] hvm_guest::Error),
}

/// The records an image holds, as the resume needs them.
struct Parsed {
    max_pfn: u64,
    contexts: Vec<VcpuContext>,
    vcpu_records: Vec<VcpuRecords>,
    devices: DeviceRecords,
    /// Records a resume of a foreign guest can do without.
    missing: Vec<String>,
    /// Records the resume needs and cannot load: always a failure.
    unloadable: Vec<String>,
}

/// The seed-era types every blob must hold once (per-vCPU types checked
/// separately).
const DEVICE_TYPES: [(u16, u16); 10] = [
    (code::HEADER, 0),
    (code::PIC, 0),
    (code::PIC, 1),
    (code::IOAPIC, 0),
    (code::PCI_IRQ, 0),
    (code::ISA_IRQ, 0),
    (code::PCI_LINK, 0),
    (code::PIT, 0),
    (code::RTC, 0),
    (code::HPET, 0),
];

fn parse(data: &[u8]) -> Result<Parsed, ResumeError> {
    let bad = |e: hvm_format::Error| ResumeError::Image(e.to_string());
    let (_, mut reader) = image::open_slice(data, OpenOptions::default()).map_err(bad)?;
    let mut max_pfn = None;
    let mut contexts = Vec::new();
    let mut blob: Option<&[u8]> = None;
    while let Some(item) = reader.next().map_err(bad)? {
        match item {
            Item::MaxPfn { value, .. } => max_pfn = Some(value),
            Item::Vcpu(v) => contexts.push(VcpuContext::parse(v.bytes).map_err(bad)?),
            Item::HvmBlob(b) => blob = Some(b.bytes),
            _ => {}
        }
    }
    let max_pfn = max_pfn.ok_or_else(|| ResumeError::Image("no max_pfn".into()))?;
    let blob = blob.ok_or_else(|| ResumeError::Image("no HVM context blob".into()))?;
    let n = contexts.len();
    if n == 0 || n > hvm_guest::layout::MAX_VCPUS {
        return Err(ResumeError::Image(format!(
            "{n} vCPU contexts; a KVM resume takes 1 to {}",
            hvm_guest::layout::MAX_VCPUS
        )));
    }
    let mut p = parse_blob(blob, n)?;
    p.max_pfn = max_pfn;
    p.contexts = contexts;
    Ok(p)
}

/// The records of an HVM blob for `n` vCPUs, in either era's layouts.
/// Records the resume needs but cannot load (a length no layout it knows
/// has, or an instance past the vCPUs) are listed in `unloadable`, by name.
fn parse_blob(blob: &[u8], n: usize) -> Result<Parsed, ResumeError> {
    let blob = HvmBlob::parse(blob).map_err(|e| ResumeError::Image(e.to_string()))?;
    let mut vcpu_records = vec![VcpuRecords::default(); n];
    let mut devices = DeviceRecords::default();
    let mut missing = Vec::new();
    let mut unloadable = Vec::new();
    let present = |t: u16, i: u16| {
        blob.records
            .iter()
            .any(|r| r.typecode == t && r.instance == i)
    };
    let name = |t: u16| hvm_format::hvm::type_name(t).unwrap_or("?");
    for (t, i) in DEVICE_TYPES.into_iter().chain([(code::PMTIMER, 0)]) {
        if !present(t, i) {
            missing.push(format!("HVM record {} instance {i} is missing", name(t)));
        }
    }
    for v in 0..n as u16 {
        for t in [code::CPU, code::LAPIC, code::LAPIC_REGS] {
            if !present(t, v) {
                missing.push(format!("HVM record {} of vCPU {v} is missing", name(t)));
            }
        }
    }
    for raw in &blob.records {
        let rec = raw.decode();
        let i = usize::from(rec.instance);
        let per_vcpu = matches!(raw.typecode, code::CPU | code::LAPIC | code::LAPIC_REGS);
        let slot = vcpu_records.get_mut(i);
        if per_vcpu && slot.is_none() {
            unloadable.push(format!(
                "HVM record {} instance {i}: the image has {n} vCPU context(s)",
                name(raw.typecode)
            ));
            continue;
        }
        match (rec.body, slot) {
            (RecordBody::CpuSeed(c), Some(v)) => v.cpu = Some(CpuRecord::Seed(c)),
            (RecordBody::CpuCompat(c), Some(v)) => {
                v.cpu = Some(CpuRecord::Full(Box::new(c.common.clone())))
            }
            (RecordBody::Cpu(c), Some(v)) => {
                v.cpu = Some(CpuRecord::Full(Box::new(c.common.clone())))
            }
            (RecordBody::LapicSeed(l), Some(v)) => v.apic_base_msr = Some(l.apic_base_msr),
            (RecordBody::LapicTdt(l), Some(v)) => v.apic_base_msr = Some(l.apic_base_msr),
            (RecordBody::Lapic(l), Some(v)) => v.apic_base_msr = Some(l.apic_base_msr),
            (RecordBody::LapicRegs(l), Some(v)) => v.lapic_regs = Some(*l),
            (RecordBody::Pic(p), _) => {
                if let Some(slot) = devices.pic.get_mut(i) {
                    *slot = Some(p);
                }
            }
            (RecordBody::Ioapic(io), _) => devices.ioapic = Some(*io),
            (RecordBody::PitSeed(p), _) => devices.pit = Some(p),
            (RecordBody::Pit(p), _) => {
                devices.pit = Some(PitSeed {
                    channels: p.channels,
                    speaker_data_on: p.speaker_data_on,
                })
            }
            (RecordBody::Raw { typecode, payload }, _) if LOADED_TYPES.contains(&typecode) => {
                unloadable.push(format!(
                    "HVM record {} instance {i} ({} bytes at blob offset {}): no layout \
                     of this record that --resume can load has this length",
                    name(typecode),
                    payload.len(),
                    raw.payload_offset()
                ));
            }
            _ => {}
        }
    }
    Ok(Parsed {
        max_pfn: 0,
        contexts: Vec::new(),
        vcpu_records,
        devices,
        missing,
        unloadable,
    })
}

/// The record types `--resume` loads into KVM; one it cannot decode is a
/// refusal, not something to drop.
const LOADED_TYPES: [u16; 6] = [
    code::CPU,
    code::LAPIC,
    code::LAPIC_REGS,
    code::PIC,
    code::IOAPIC,
    code::PIT,
];

/// What the libxc context and the CPU record both hold must agree: control
/// registers in every era, and RIP/RSP (a 3.1-on record's register file is
/// what Xen loads, over the context).
fn cross_check(p: &Parsed, out: &mut Vec<String>) {
    for (i, (ctx, recs)) in p.contexts.iter().zip(&p.vcpu_records).enumerate() {
        if let Some(c) = &recs.cpu {
            let ctx_crs = (ctx.cr0(), ctx.cr3(), ctx.cr4());
            let rec_crs = c.control_registers();
            if ctx_crs != rec_crs {
                out.push(format!(
                    "vCPU {i}: control registers (cr0, cr3, cr4) in the vCPU context \
                     {ctx_crs:x?} disagree with the CPU record {rec_crs:x?}"
                ));
            }
            if let CpuRecord::Full(_) = c {
                let x = ctx.registers();
                let ctx_ip = (x.rip, x.rsp);
                let rec_ip = c.rip_rsp();
                if ctx_ip != rec_ip {
                    out.push(format!(
                        "vCPU {i}: (rip, rsp) in the vCPU context {ctx_ip:x?} disagree \
                         with the CPU record {rec_ip:x?}"
                    ));
                }
            }
        }
    }
}

/// Why the loaded vCPUs cannot give evidence of running: every one is down.
fn all_down(states: &[VcpuState]) -> Option<String> {
    let down = states
        .iter()
        .filter(|s| s.mp_state.mp_state == kvm_bindings::KVM_MP_STATE_UNINITIALIZED)
        .count();
    (down == states.len()).then(|| {
        format!(
            "all {down} vCPU(s) are down (no loadable CPU record): nothing would run, \
             so nothing can be shown"
        )
    })
}

/// Evidence that vCPU `i` ran: its RIP or a general-purpose register moved
/// from what was loaded. A vCPU that was loaded down is not asked.
fn ran(i: usize, loaded: &VcpuState, after: &VcpuState) -> Option<String> {
    if loaded.mp_state.mp_state == kvm_bindings::KVM_MP_STATE_UNINITIALIZED {
        return None;
    }
    let gprs = |r: &kvm_bindings::kvm_regs| {
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip,
        ]
    };
    (gprs(&loaded.regs) == gprs(&after.regs)).then(|| {
        format!(
            "vCPU {i}: no evidence it ran: RIP {:#x} and every general-purpose register \
             are as loaded",
            loaded.regs.rip
        )
    })
}

/// Whether every vCPU's registers carry the built-in workload's fixed
/// addresses (mailbox in r9, doorbell in r14): the image says it is that
/// workload's even when its descriptor page is gone.
fn looks_like_workload(states: &[VcpuState]) -> bool {
    !states.is_empty()
        && states.iter().enumerate().all(|(i, s)| {
            s.regs.r9 == hvm_guest::layout::mailbox_gpa(i)
                && s.regs.r14 == hvm_guest::layout::doorbell_gpa(i)
        })
}

/// The step both runs go to: `steps` past the furthest saved step, checked.
fn target_step(saved: &[u64], steps: u64) -> Result<u64, ResumeError> {
    let saved = saved.iter().copied().max().unwrap_or(0);
    let err = |why| ResumeError::Steps { steps, saved, why };
    if steps == 0 {
        return Err(err("0 steps run is no evidence that the guest runs on"));
    }
    let t = saved
        .checked_add(steps)
        .ok_or_else(|| err("the target step overflows a u64"))?;
    if t >= UNREACHABLE_TARGET {
        return Err(err(
            "the target step is past what the workload can count to",
        ));
    }
    Ok(t)
}

/// Targets at or past this are how a run without a step target is told
/// (the foreign-guest run sets it).
const UNREACHABLE_TARGET: u64 = u64::MAX / 2;

struct Outcome {
    digest: [u8; 32],
    vcpus: Vec<VcpuState>,
}

fn outcome(vm: &Vm) -> Result<Outcome, ResumeError> {
    Ok(Outcome {
        digest: vm.memory_digest(),
        vcpus: vm.capture()?.0,
    })
}

/// Resumes the image in `data` whose replayed memory is `memory`: rebuild
/// the guest's state from the records, screen it, load it into a fresh VM,
/// then run it (`run_foreign` or `run_workload`).
pub fn resume_image(
    data: &[u8],
    memory: &GuestMemory,
    opts: &ResumeOptions,
) -> Result<ResumeReport, ResumeError> {
    if !hvm_guest::HostInfo::kvm_available() {
        return Err(ResumeError::NoKvm);
    }
    let rebuilt = rebuild(data)?;
    let descriptor = memory
        .page(DESCRIPTOR_PFN)
        .and_then(WorkloadDescriptor::decode)
        .filter(|d| d.workloads.len() == rebuilt.states.len());
    let mut report = screen(&rebuilt, descriptor.is_some(), opts)?;
    // A refused image is not run: nothing it did could make it pass.
    if !report.differences.is_empty() {
        return Ok(report);
    }
    let Some(vm) = load(&rebuilt, memory, &mut report)? else {
        return Ok(report);
    };
    match descriptor {
        None => run_foreign(vm, &rebuilt.states, opts, &mut report)?,
        Some(desc) => run_workload(vm, &desc, &rebuilt, opts, &mut report)?,
    }
    Ok(report)
}

/// The guest's state as KVM will take it, rebuilt from the image's records.
struct Rebuilt {
    parsed: Parsed,
    /// Guest RAM in pages, rounded up to 2 MiB.
    ram_pages: u64,
    config: VmConfig,
    states: Vec<VcpuState>,
    vm_state: hvm_guest::VmState,
}

/// Step 1: parse the records and translate them into KVM's vCPU and VM
/// state, on top of a fresh VM's (what the image does not say stays at
/// power-on values).
fn rebuild(data: &[u8]) -> Result<Rebuilt, ResumeError> {
    let parsed = parse(data)?;
    let pages = parsed.max_pfn + 1;
    if parsed.max_pfn >= MMIO_HOLE_START {
        return Err(ResumeError::Image(format!(
            "max_pfn {:#x} reaches Xen's MMIO hole; a KVM resume takes guests below 3840 MiB",
            parsed.max_pfn
        )));
    }
    let two_mib = 512;
    let ram_pages = pages.div_ceil(two_mib) * two_mib;
    let n = parsed.contexts.len();
    let config = VmConfig::new(ram_pages * PAGE_SIZE as u64, n);
    let (templates, vm_template) = Vm::template_state(n)?;
    let states: Vec<VcpuState> = parsed
        .contexts
        .iter()
        .zip(&parsed.vcpu_records)
        .zip(&templates)
        .map(|((ctx, recs), t)| xen_state::vcpu_state_from_xen(t, ctx, recs))
        .collect();
    let vm_state = xen_state::vm_state_from_xen(&vm_template, &parsed.devices);
    Ok(Rebuilt {
        parsed,
        ram_pages,
        config,
        states,
        vm_state,
    })
}

/// Step 2: what kind of guest this is, and every reason to refuse it
/// before it runs. A step target that cannot be reached is the caller's
/// error, found here, before any run.
fn screen(
    rebuilt: &Rebuilt,
    has_descriptor: bool,
    opts: &ResumeOptions,
) -> Result<ResumeReport, ResumeError> {
    let Rebuilt { parsed, states, .. } = rebuilt;
    // What no image may have, whoever's guest it is.
    let mut refusals = parsed.unloadable.clone();
    cross_check(parsed, &mut refusals);
    refusals.extend(all_down(states));

    let kind = if has_descriptor || looks_like_workload(states) {
        GuestKind::BuiltInWorkload
    } else {
        GuestKind::Other
    };
    let mut report = ResumeReport {
        kind,
        vcpus: states.len(),
        memory_mib: rebuilt.ram_pages / 256,
        saved_steps: Vec::new(),
        target_step: None,
        pages_loaded: 0,
        msrs_rejected: Vec::new(),
        restore_ms: 0.0,
        run_ms: 0.0,
        differences: Vec::new(),
        notes: Vec::new(),
        matches: false,
    };
    match kind {
        GuestKind::BuiltInWorkload => report.differences = parsed.missing.clone(),
        GuestKind::Other => report.notes = parsed.missing.clone(),
    }
    report.differences.extend(refusals);
    if kind == GuestKind::BuiltInWorkload && !has_descriptor {
        report.differences.push(format!(
            "the vCPU registers are the built-in workload's (mailbox and doorbell addresses \
             in r9/r14), but its descriptor page (pfn {DESCRIPTOR_PFN}) is missing or \
             unreadable: the run cannot be compared with a control run"
        ));
    }
    if kind == GuestKind::Other && opts.expect_comparable {
        report.differences.push(
            "not the built-in workload (no descriptor page), so the run cannot be compared, \
             but a comparison was expected (--expect)"
                .into(),
        );
    }
    if has_descriptor {
        let saved: Vec<u64> = states.iter().map(|s| s.regs.r8).collect();
        target_step(&saved, opts.steps)?;
    }
    Ok(report)
}

/// Step 3: a fresh VM holding the replayed memory and the rebuilt state.
/// `None` (with the reason in the report) when KVM refuses that state: the
/// image's failure to resume, not an error of the checker.
fn load(
    rebuilt: &Rebuilt,
    memory: &GuestMemory,
    report: &mut ResumeReport,
) -> Result<Option<Vm>, ResumeError> {
    let t0 = Instant::now();
    let written = memory.written_pfns();
    let built = Vm::from_state(
        rebuilt.config.clone(),
        written
            .iter()
            .filter(|&&p| p < rebuilt.ram_pages)
            .map(|&p| (p, memory.read(p))),
        &rebuilt.states,
        &rebuilt.vm_state,
        RestoreOptions::default(),
    );
    report.restore_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (vm, restore) = match built {
        Ok(x) => x,
        Err(e @ (hvm_guest::Error::Kvm { .. } | hvm_guest::Error::Config(_))) => {
            report
                .differences
                .push(format!("KVM refused the state rebuilt from the image: {e}"));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    report.pages_loaded = restore.pages_copied;
    report.msrs_rejected = restore.msrs_rejected;
    Ok(Some(vm))
}

/// Step 4, another guest: let it run, see that every vCPU parks cleanly,
/// and that every vCPU that was loaded up moved.
/// Never a match: without a control run there is nothing to compare with.
fn run_foreign(
    vm: Vm,
    states: &[VcpuState],
    opts: &ResumeOptions,
    report: &mut ResumeReport,
) -> Result<(), ResumeError> {
    let t = Instant::now();
    vm.set_target(UNREACHABLE_TARGET)?;
    vm.resume();
    std::thread::sleep(opts.foreign_run);
    if let Err(e) = vm.pause_timeout(opts.timeout) {
        report
            .differences
            .push(format!("the resumed guest did not pause: {e}"));
    } else if let Err(e) = vm.set_target(UNREACHABLE_TARGET) {
        // Setting a target reports a vCPU that stopped on a failure.
        report
            .differences
            .push(format!("the resumed guest failed: {e}"));
    } else {
        match vm.capture() {
            Ok((after, _)) => report.differences.extend(
                states
                    .iter()
                    .zip(&after)
                    .enumerate()
                    .filter_map(|(i, (a, b))| ran(i, a, b)),
            ),
            Err(e) => report
                .differences
                .push(format!("the resumed guest's state cannot be read: {e}")),
        }
    }
    report.run_ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = vm.shutdown();
    Ok(())
}

/// Step 4, the built-in workload: its registers must carry the descriptor's
/// parameters; it runs to the target step, must show it ran, and must end
/// exactly where a control run from power-on ends.
fn run_workload(
    vm: Vm,
    desc: &WorkloadDescriptor,
    rebuilt: &Rebuilt,
    opts: &ResumeOptions,
    report: &mut ResumeReport,
) -> Result<(), ResumeError> {
    let states = &rebuilt.states;
    // The registers must be this workload's: parameters in rsi/rdi/r10/r11.
    for (i, (st, w)) in states.iter().zip(&desc.workloads).enumerate() {
        let want = w.initial_regs(i);
        let got = WorkloadRegs::from_kvm(&st.regs);
        let params = |r: &WorkloadRegs| (r.rsi, r.rdi, r.r9, r.r10, r.r11, r.r14);
        if params(&want) != params(&got) {
            report.differences.push(format!(
                "vCPU {i}: workload parameters in the registers {:x?} differ from the \
                 descriptor page's {:x?}",
                params(&got),
                params(&want)
            ));
        }
    }
    report.saved_steps = states.iter().map(|s| s.regs.r8).collect();
    let target = target_step(&report.saved_steps, opts.steps)?;
    report.target_step = Some(target);

    let t = Instant::now();
    let resumed = vm
        .run_until_step(target, opts.timeout)
        .map_err(|e| e.to_string())
        .and_then(|()| outcome(&vm).map_err(|e| e.to_string()));
    report.run_ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = vm.shutdown();
    let got = match resumed {
        Ok(o) => o,
        Err(e) => {
            report.differences.push(format!(
                "the resumed guest did not reach step {target}: {e}"
            ));
            return Ok(());
        }
    };
    // Evidence: every vCPU's step counter (r8) moved past its saved step.
    for (i, (st, saved)) in got.vcpus.iter().zip(&report.saved_steps).enumerate() {
        if st.regs.r8 <= *saved {
            report.differences.push(format!(
                "vCPU {i}: no evidence it ran: step counter {} not past its saved step {saved}",
                st.regs.r8
            ));
        }
    }

    let control = Vm::new(rebuilt.config.clone(), &desc.workloads)?;
    control.write_page(DESCRIPTOR_PFN, &desc.encode())?;
    control.run_until_step(target, opts.timeout)?;
    let want = outcome(&control)?;
    control.shutdown()?;

    if want.digest != got.digest {
        report
            .differences
            .push("memory digest differs from the control run".into());
    }
    for (i, (a, b)) in want.vcpus.iter().zip(&got.vcpus).enumerate() {
        report.differences.extend(
            a.architectural_diff(b)
                .into_iter()
                .map(|d| format!("vCPU {i}: {d}")),
        );
    }
    report.matches = report.differences.is_empty();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvm_format::hvm::translate::to_current;

    fn golden(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden")
            .join(format!("{name}.img"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The blob and the vCPU contexts of an image.
    fn blob_and_contexts(data: &[u8]) -> (Vec<u8>, Vec<VcpuContext>) {
        let (_, mut r) = image::open_slice(data, OpenOptions::default()).unwrap();
        let (mut blob, mut ctxs) = (Vec::new(), Vec::new());
        while let Some(item) = r.next().unwrap() {
            match item {
                Item::HvmBlob(b) => blob = b.bytes.to_vec(),
                Item::Vcpu(v) => ctxs.push(VcpuContext::parse(v.bytes).unwrap()),
                _ => {}
            }
        }
        (blob, ctxs)
    }

    fn blank() -> VcpuState {
        VcpuState {
            regs: Default::default(),
            sregs: Default::default(),
            fpu: Default::default(),
            xsave: None,
            xcrs: None,
            debugregs: Default::default(),
            lapic: None,
            msrs: Vec::new(),
            mp_state: Default::default(),
            events: Default::default(),
            cpuid: Vec::new(),
        }
    }

    #[test]
    fn seed_records_are_loaded_as_seed() {
        let p = parse(&golden("seed64-nonlive")).unwrap();
        assert!(p.unloadable.is_empty(), "{:?}", p.unloadable);
        assert!(matches!(p.vcpu_records[0].cpu, Some(CpuRecord::Seed(_))));
        assert!(p.vcpu_records[0].apic_base_msr.is_some());
        assert!(p.vcpu_records[0].lapic_regs.is_some());
        assert!(p.devices.pit.is_some());
        let mut out = Vec::new();
        cross_check(&p, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    /// The same image's blob in today's layouts (the project's translation)
    /// loads the same vCPU: CPU, LAPIC and PIT records are not dropped.
    #[test]
    fn current_records_are_loaded_not_dropped() {
        let data = golden("seed64-nonlive");
        let (blob, ctxs) = blob_and_contexts(&data);
        let seed = parse_blob(&blob, ctxs.len()).unwrap();
        let cur = to_current(&blob, &ctxs).unwrap().blob;
        let mut p = parse_blob(&cur, ctxs.len()).unwrap();
        assert!(p.unloadable.is_empty(), "{:?}", p.unloadable);
        assert!(p.missing.is_empty(), "{:?}", p.missing);
        let r = &p.vcpu_records[0];
        assert!(matches!(r.cpu, Some(CpuRecord::Full(_))));
        assert_eq!(r.apic_base_msr, seed.vcpu_records[0].apic_base_msr);
        let pit = |d: &DeviceRecords| d.pit.as_ref().map(|p| p.channels.clone());
        assert!(pit(&p.devices).is_some());
        assert_eq!(pit(&p.devices), pit(&seed.devices));
        p.contexts = ctxs.clone();
        let mut out = Vec::new();
        cross_check(&p, &mut out);
        assert!(out.is_empty(), "{out:?}");

        // The record's register file is loaded, and the vCPU is up.
        let regs = ctxs[0].registers();
        let want_rip = regs.rip;
        // A context of zeros: what is loaded must come from the record.
        let ctx_zero = VcpuContext::from_registers(
            hvm_format::WordSize::W64,
            &hvm_format::vcpu::VcpuRegisters::default(),
        )
        .unwrap();
        let st = xen_state::vcpu_state_from_xen(&blank(), &ctx_zero, r);
        assert_eq!(st.regs.rip, want_rip);
        assert_eq!(st.regs.rsp, regs.rsp);
        assert_eq!(st.sregs.cr0, regs.cr0);
        assert_eq!(st.mp_state.mp_state, kvm_bindings::KVM_MP_STATE_RUNNABLE);
        assert!(all_down(&[st]).is_none());
    }

    #[test]
    fn a_record_of_no_loadable_length_is_refused_by_name() {
        let data = golden("seed64-nonlive");
        let (blob, ctxs) = blob_and_contexts(&data);
        let parsed = HvmBlob::parse(&blob).unwrap();
        for victim in [code::CPU, code::LAPIC, code::PIT] {
            let mut out = Vec::new();
            for r in &parsed.records {
                let mut rec = r.to_owned_record();
                if r.typecode == victim {
                    rec.payload.truncate(rec.payload.len() - 4);
                }
                rec.encode_into(&mut out);
            }
            let p = parse_blob(&out, ctxs.len()).unwrap();
            let name = hvm_format::hvm::type_name(victim).unwrap();
            assert!(
                p.unloadable
                    .iter()
                    .any(|u| u.contains(&format!("HVM record {name} instance 0"))),
                "{name}: {:?}",
                p.unloadable
            );
        }
    }

    /// The golden current-era image's CPU records are filler: they contradict
    /// the vCPU contexts, which names why the image is refused.
    #[test]
    fn golden_current_image_is_refused_with_a_named_reason() {
        let p = parse(&golden("seed64-current-hvm")).unwrap();
        assert!(p.unloadable.is_empty(), "{:?}", p.unloadable);
        assert!(p
            .vcpu_records
            .iter()
            .all(|r| matches!(r.cpu, Some(CpuRecord::Full(_)))));
        let mut out = Vec::new();
        cross_check(&p, &mut out);
        assert!(
            out.iter()
                .any(|d| d.contains("vCPU 0") && d.contains("CPU record")),
            "{out:?}"
        );
    }

    #[test]
    fn steps_are_checked() {
        assert_eq!(target_step(&[10, 40], 5).unwrap(), 45);
        assert!(matches!(
            target_step(&[10], u64::MAX),
            Err(ResumeError::Steps { .. })
        ));
        assert!(target_step(&[10], 0).is_err());
        assert!(target_step(&[0], UNREACHABLE_TARGET).is_err());
        let e = target_step(&[7], 18_446_744_073_709_551_615).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn evidence_of_running() {
        let mut loaded = blank();
        loaded.mp_state.mp_state = kvm_bindings::KVM_MP_STATE_RUNNABLE;
        loaded.regs.rip = 0x1000;
        let same = loaded.clone();
        assert!(ran(0, &loaded, &same).unwrap().contains("no evidence"));
        let mut moved = loaded.clone();
        moved.regs.rip = 0x1002;
        assert!(ran(0, &loaded, &moved).is_none());
        let mut counted = loaded.clone();
        counted.regs.rcx = 5;
        assert!(ran(0, &loaded, &counted).is_none());
        let mut down = loaded.clone();
        down.mp_state.mp_state = kvm_bindings::KVM_MP_STATE_UNINITIALIZED;
        assert!(ran(0, &down, &down).is_none());
        assert!(all_down(&[down.clone(), down.clone()]).is_some());
        assert!(all_down(&[down, loaded]).is_none());
    }

    #[test]
    fn workload_registers_are_recognised_without_the_descriptor() {
        let w = hvm_guest::Workload {
            seed: 1,
            base_page: 512,
            pages: 10,
            writes_per_step: 1,
            spin: 0,
        };
        let mut states = Vec::new();
        for i in 0..2 {
            let mut s = blank();
            s.regs = w.initial_regs(i).to_kvm(0x1000, 2);
            states.push(s);
        }
        assert!(looks_like_workload(&states));
        states[1].regs.r14 ^= 8;
        assert!(!looks_like_workload(&states));
        assert!(!looks_like_workload(&[]));
    }

    fn report(kind: GuestKind, matches: bool, differences: &[&str]) -> ResumeReport {
        ResumeReport {
            kind,
            vcpus: 1,
            memory_mib: 8,
            saved_steps: vec![],
            target_step: None,
            pages_loaded: 0,
            msrs_rejected: vec![],
            restore_ms: 0.0,
            run_ms: 0.0,
            differences: differences.iter().map(|s| s.to_string()).collect(),
            notes: vec![],
            matches,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(report(GuestKind::BuiltInWorkload, true, &[]).exit_code(), 0);
        assert_eq!(
            report(GuestKind::BuiltInWorkload, false, &[]).exit_code(),
            1
        );
        assert_eq!(
            report(GuestKind::BuiltInWorkload, false, &["x"]).exit_code(),
            1
        );
        assert_eq!(report(GuestKind::Other, false, &[]).exit_code(), 0);
        let r = report(GuestKind::Other, false, &["vCPU 0: no evidence it ran"]);
        assert_eq!(r.exit_code(), 1);
        assert!(r.render_text().contains("resume failed"));
    }
}

//! `--resume`: load an image into a fresh KVM VM and prove it runs on.
//!
//! The VM is built from the image alone: RAM from the replay, each vCPU from
//! its libxc context and HVM records (CPU, LAPIC, LAPIC_REGS), the PICs,
//! IOAPIC and PIT from their records, and what the 2007 records cannot hold
//! (CPUID, other MSRs, xsave beyond FXSAVE, events) from a fresh vCPU of
//! this host ([`Vm::template_state`]); see `hvm_save::backend::kvm::xen_state`.
//!
//! For an image of hvm-save's built-in KVM workload, the workload's
//! parameters are read from its descriptor page (pfn 1, in the image's RAM)
//! and cross-checked with the registers; the resumed guest runs to
//! (furthest vCPU's step + N) and its memory digest and architectural state
//! are compared with an uninterrupted control run of the same workload to
//! the same step. Any other image resumes and runs for a bounded time; it
//! is reported as not compared.

use std::time::{Duration, Instant};

use hvm_format::hvm::{code, HvmBlob, RecordBody};
use hvm_format::image::{self, OpenOptions};
use hvm_format::pfn::MMIO_HOLE_START;
use hvm_format::stream::Item;
use hvm_format::vcpu::VcpuContext;
use hvm_format::PAGE_SIZE;
use hvm_guest::{RestoreOptions, VcpuState, Vm, VmConfig, WorkloadRegs};
use hvm_save::backend::kvm::xen_state::{self, DeviceRecords, VcpuRecords};
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
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            steps: 100_000,
            timeout: Duration::from_secs(30),
            foreign_run: Duration::from_secs(1),
        }
    }
}

/// What kind of guest the image held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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
pub enum ResumeError {
    /// /dev/kvm is missing.
    #[error("/dev/kvm is not available: --resume needs KVM")]
    NoKvm,
    /// The image cannot be resumed (unreadable parts, sizes KVM cannot take).
    #[error("cannot resume: {0}")]
    Image(String),
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
    missing: Vec<String>,
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
    let blob = HvmBlob::parse(blob).map_err(bad)?;
    let n = contexts.len();
    if n == 0 || n > hvm_guest::layout::MAX_VCPUS {
        return Err(ResumeError::Image(format!(
            "{n} vCPU contexts; a KVM resume takes 1 to {}",
            hvm_guest::layout::MAX_VCPUS
        )));
    }
    let mut vcpu_records = vec![VcpuRecords::default(); n];
    let mut devices = DeviceRecords::default();
    let mut missing = Vec::new();
    let present = |t: u16, i: u16| {
        blob.records
            .iter()
            .any(|r| r.typecode == t && r.instance == i)
    };
    for (t, i) in DEVICE_TYPES.into_iter().chain([(code::PMTIMER, 0)]) {
        if !present(t, i) {
            missing.push(format!(
                "HVM record {} instance {i} is missing",
                hvm_format::hvm::type_name(t).unwrap_or("?")
            ));
        }
    }
    for v in 0..n as u16 {
        for t in [code::CPU, code::LAPIC, code::LAPIC_REGS] {
            if !present(t, v) {
                missing.push(format!(
                    "HVM record {} of vCPU {v} is missing",
                    hvm_format::hvm::type_name(t).unwrap_or("?")
                ));
            }
        }
    }
    for raw in &blob.records {
        let rec = raw.decode();
        let i = usize::from(rec.instance);
        match rec.body {
            RecordBody::CpuSeed(c) => {
                if let Some(v) = vcpu_records.get_mut(i) {
                    v.cpu = Some(*c);
                }
            }
            RecordBody::LapicSeed(l) => {
                if let Some(v) = vcpu_records.get_mut(i) {
                    v.lapic = Some(l);
                }
            }
            RecordBody::LapicRegs(l) => {
                if let Some(v) = vcpu_records.get_mut(i) {
                    v.lapic_regs = Some(*l);
                }
            }
            RecordBody::Pic(p) => {
                if let Some(slot) = devices.pic.get_mut(i) {
                    *slot = Some(p);
                }
            }
            RecordBody::Ioapic(io) => devices.ioapic = Some(*io),
            RecordBody::PitSeed(p) => devices.pit = Some(p),
            _ => {}
        }
    }
    Ok(Parsed {
        max_pfn,
        contexts,
        vcpu_records,
        devices,
        missing,
    })
}

/// Control registers must agree between the libxc context and the CPU record.
fn cross_check(p: &Parsed, out: &mut Vec<String>) {
    for (i, (ctx, recs)) in p.contexts.iter().zip(&p.vcpu_records).enumerate() {
        if let Some(c) = &recs.cpu {
            let ctx_crs = (ctx.cr0(), ctx.cr3(), ctx.cr4());
            let rec_crs = (c.cr0, c.cr3, c.cr4);
            if ctx_crs != rec_crs {
                out.push(format!(
                    "vCPU {i}: control registers (cr0, cr3, cr4) in the vCPU context \
                     {ctx_crs:x?} disagree with the CPU record {rec_crs:x?}"
                ));
            }
        }
    }
}

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

/// Resumes the image in `data` whose replayed memory is `memory`.
pub fn resume_image(
    data: &[u8],
    memory: &GuestMemory,
    opts: &ResumeOptions,
) -> Result<ResumeReport, ResumeError> {
    if !hvm_guest::HostInfo::kvm_available() {
        return Err(ResumeError::NoKvm);
    }
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
    let mut differences = parsed.missing.clone();
    cross_check(&parsed, &mut differences);

    let (templates, vm_template) = Vm::template_state(n)?;
    let states: Vec<VcpuState> = parsed
        .contexts
        .iter()
        .zip(&parsed.vcpu_records)
        .zip(&templates)
        .map(|((ctx, recs), t)| xen_state::vcpu_state_from_xen(t, ctx, recs))
        .collect();
    let vm_state = xen_state::vm_state_from_xen(&vm_template, &parsed.devices);

    let descriptor = memory
        .page(DESCRIPTOR_PFN)
        .and_then(WorkloadDescriptor::decode)
        .filter(|d| d.workloads.len() == n);
    let t0 = Instant::now();
    let written = memory.written_pfns();
    let built = Vm::from_state(
        config.clone(),
        written
            .iter()
            .filter(|&&p| p < ram_pages)
            .map(|&p| (p, memory.read(p))),
        &states,
        &vm_state,
        RestoreOptions::default(),
    );
    let mut report = ResumeReport {
        kind: if descriptor.is_some() {
            GuestKind::BuiltInWorkload
        } else {
            GuestKind::Other
        },
        vcpus: n,
        memory_mib: ram_pages / 256,
        saved_steps: Vec::new(),
        target_step: None,
        pages_loaded: 0,
        msrs_rejected: Vec::new(),
        restore_ms: t0.elapsed().as_secs_f64() * 1e3,
        run_ms: 0.0,
        differences: Vec::new(),
        notes: Vec::new(),
        matches: false,
    };
    match report.kind {
        GuestKind::BuiltInWorkload => report.differences = differences,
        GuestKind::Other => report.notes = differences,
    }
    let (vm, restore) = match built {
        Ok(x) => x,
        // KVM refusing the state the image describes is the image's failure
        // to resume, not an error of the checker.
        Err(e @ (hvm_guest::Error::Kvm { .. } | hvm_guest::Error::Config(_))) => {
            report
                .differences
                .push(format!("KVM refused the state rebuilt from the image: {e}"));
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    report.pages_loaded = restore.pages_copied;
    report.msrs_rejected = restore.msrs_rejected;

    let Some(desc) = descriptor else {
        // Another guest: let it run, then see that every vCPU parks cleanly.
        let t = Instant::now();
        vm.set_target(u64::MAX / 2)?;
        vm.resume();
        std::thread::sleep(opts.foreign_run);
        if let Err(e) = vm.pause_timeout(opts.timeout) {
            report
                .differences
                .push(format!("the resumed guest did not pause: {e}"));
        } else if let Err(e) = vm.set_target(u64::MAX / 2) {
            // Setting a target reports a vCPU that stopped on a failure.
            report
                .differences
                .push(format!("the resumed guest failed: {e}"));
        }
        report.run_ms = t.elapsed().as_secs_f64() * 1e3;
        let _ = vm.shutdown();
        return Ok(report);
    };

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
    let target = report.saved_steps.iter().copied().max().unwrap_or(0) + opts.steps;
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
            return Ok(report);
        }
    };

    let control = Vm::new(config, &desc.workloads)?;
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
    Ok(report)
}

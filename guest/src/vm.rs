//! The VM: memory slots, vCPU threads, run control, state capture and restore.
//!
//! Each vCPU has its own thread that owns the `KVM_RUN` loop. The host controls it through a
//! small state machine (pause flag, target step) and kicks it out of `KVM_RUN` with a real-time
//! signal whose handler sets `kvm_run.immediate_exit`. A vCPU's state is read or written only
//! while its thread is parked, i.e. outside `KVM_RUN` with any pending MMIO completed.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_config,
    kvm_run, kvm_segment, kvm_userspace_memory_region, kvm_xsave, CpuId, Msrs, Xsave,
    KVM_CAP_DIRTY_LOG_RING, KVM_CAP_DIRTY_LOG_RING_ACQ_REL, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    KVM_DIRTY_LOG_INITIALLY_SET, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_MAX_CPUID_ENTRIES,
    KVM_MP_STATE_RUNNABLE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use sha2::{Digest, Sha256};

use crate::dirty::{DirtyLog, DirtyMechanism, DirtyMode};
use crate::error::{Error, Result};
use crate::host::HostInfo;
use crate::layout::{self, PAGE_SIZE};
use crate::state::{RestoreOptions, VcpuState, VmState};
use crate::workload::{self, Program, Workload};

/// How often a pause re-sends its kick until the vCPU reports.
const KICK_INTERVAL: Duration = Duration::from_millis(2);
/// Default limit for pause and shutdown waits.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default dirty ring: 65 536 entries per vCPU (1 MiB), capped by the host's maximum.
pub(crate) const DEFAULT_RING_ENTRIES: u32 = 65536;

/// How to build a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// RAM size in bytes: a multiple of 2 MiB, at most 4 GiB.
    pub ram_bytes: u64,
    /// Number of vCPUs (1 or 2).
    pub vcpus: usize,
    /// Dirty-logging mechanism.
    pub dirty: DirtyMode,
    /// Entries per vCPU dirty ring (power of two), when the ring is used.
    pub ring_entries: u32,
    /// Create the in-kernel irqchip and PIT when the host has them.
    pub irqchip: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            ram_bytes: layout::DEFAULT_RAM,
            vcpus: 1,
            dirty: DirtyMode::Auto,
            ring_entries: DEFAULT_RING_ENTRIES,
            irqchip: true,
        }
    }
}

impl VmConfig {
    /// A config with `ram_bytes` of RAM and `vcpus` vCPUs, other fields default.
    pub fn new(ram_bytes: u64, vcpus: usize) -> Self {
        VmConfig {
            ram_bytes,
            vcpus,
            ..VmConfig::default()
        }
    }
}

/// How long a pause took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseStats {
    /// From the request until every vCPU was parked.
    pub latency: Duration,
    /// Signals sent.
    pub kicks: u32,
}

/// What a restore could not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// (vCPU, MSR index) pairs that KVM_SET_MSRS rejected.
    pub msrs_rejected: Vec<(usize, u32)>,
    /// Pages copied (non-zero).
    pub pages_copied: u64,
    /// All-zero pages skipped.
    pub zero_pages_skipped: u64,
    /// Time spent copying memory.
    pub copy_time: Duration,
}

/// An anonymous host mapping backing a memory slot.
struct GuestMem {
    ptr: *mut u8,
    len: usize,
    leak: AtomicBool,
}

// SAFETY: the mapping is plain memory shared with KVM; concurrent guest writes are inherent,
// and host access goes through raw-pointer copies, never references to guest-mutable memory.
unsafe impl Send for GuestMem {}
// SAFETY: as above.
unsafe impl Sync for GuestMem {}

impl GuestMem {
    fn new(len: usize) -> Result<GuestMem> {
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::os("mmap of guest memory"));
        }
        Ok(GuestMem {
            ptr: p as *mut u8,
            len,
            leak: AtomicBool::new(false),
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > self.len as u64) {
            return Err(Error::Config(format!(
                "write of {} bytes at {offset:#x} outside a {:#x}-byte slot",
                data.len(),
                self.len
            )));
        }
        // SAFETY: bounds checked above; source and the guest mapping do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset as usize), data.len())
        };
        Ok(())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|e| e > self.len as u64) {
            return Err(Error::Config(format!(
                "read of {} bytes at {offset:#x} outside a {:#x}-byte slot",
                out.len(),
                self.len
            )));
        }
        // SAFETY: bounds checked above; destination and the guest mapping do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add(offset as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    fn read_u64(&self, offset: u64) -> u64 {
        if offset + 8 > self.len as u64 {
            return 0;
        }
        // SAFETY: in bounds (checked), 8-aligned by construction of the mailbox offsets; the
        // guest writes this word concurrently, so read it volatile.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset as usize) as *const u64) }
    }

    fn write_u64(&self, offset: u64, v: u64) {
        if offset + 8 > self.len as u64 {
            return;
        }
        // SAFETY: as in `read_u64`.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset as usize) as *mut u64, v) }
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        if self.leak.load(Ordering::SeqCst) {
            // A vCPU thread did not stop: leave its memory mapped rather than pull it away.
            return;
        }
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

thread_local! {
    /// This thread's kvm_run, for the kick signal handler.
    static RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let _ = RUN_PTR.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is this thread's kvm_run mapping, set while the thread owns
            // its vCPU and cleared before the vCPU is dropped.
            unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*p).immediate_exit), 1) };
        }
    });
}

/// The real-time signal that kicks vCPU threads out of KVM_RUN.
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    static FAILED: AtomicBool = AtomicBool::new(false);
    ONCE.call_once(|| {
        // SAFETY: installs an async-signal-safe handler (one volatile store) for our private
        // real-time signal; the sigaction struct is fully initialised.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut())
        };
        if r != 0 {
            FAILED.store(true, Ordering::SeqCst);
        }
    });
    if FAILED.load(Ordering::SeqCst) {
        return Err(Error::os("sigaction for the vCPU kick signal"));
    }
    Ok(())
}

fn set_immediate_exit(run: *mut kvm_run, v: u8) {
    // SAFETY: `run` is the calling thread's own vCPU kvm_run mapping (see RUN_PTR).
    unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), v) };
}

#[derive(Debug, Default)]
struct Ctl {
    pause: bool,
    quit: bool,
    parked: bool,
    target: u64,
    stopped_at: Option<u64>,
    failure: Option<String>,
}

struct VcpuShared {
    index: usize,
    fd: Mutex<VcpuFd>,
    ctl: Mutex<Ctl>,
    cv: Condvar,
    pause: AtomicBool,
    exits: AtomicU64,
}

impl VcpuShared {
    fn ctl(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn fd(&self) -> MutexGuard<'_, VcpuFd> {
        self.fd.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct VcpuHandle {
    shared: Arc<VcpuShared>,
    thread: Option<JoinHandle<()>>,
}

enum Outcome {
    Doorbell(u64),
    Kicked,
    RingFull,
    Fail(String),
}

fn vcpu_thread(sh: Arc<VcpuShared>, dirty: Arc<DirtyLog>) {
    let run_ptr = sh.fd().get_kvm_run() as *mut kvm_run;
    RUN_PTR.with(|c| c.set(run_ptr));
    let doorbell = layout::doorbell_gpa(sh.index);
    loop {
        {
            let mut c = sh.ctl();
            loop {
                if c.quit {
                    c.parked = true;
                    sh.cv.notify_all();
                    RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
                    return;
                }
                let at_target = c.stopped_at.is_some_and(|s| s >= c.target);
                if c.pause || at_target || c.failure.is_some() {
                    if !c.parked {
                        c.parked = true;
                        sh.cv.notify_all();
                    }
                    c = sh.cv.wait(c).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                break;
            }
            c.parked = false;
        }
        let mut fd = sh.fd();
        set_immediate_exit(run_ptr, 0);
        if sh.pause.load(Ordering::SeqCst) {
            continue;
        }
        let outcome = match fd.run() {
            Ok(VcpuExit::MmioWrite(addr, data)) if addr == doorbell => {
                let mut b = [0u8; 8];
                let n = data.len().min(8);
                b[..n].copy_from_slice(&data[..n]);
                Outcome::Doorbell(u64::from_le_bytes(b))
            }
            Ok(VcpuExit::Unsupported(r)) if r == kvm_bindings::KVM_EXIT_DIRTY_RING_FULL => {
                Outcome::RingFull
            }
            Ok(VcpuExit::Intr) => Outcome::Kicked,
            Ok(other) => Outcome::Fail(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Outcome::Kicked,
            Err(e) => Outcome::Fail(format!("KVM_RUN: {e}")),
        };
        sh.exits.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Doorbell(step) => {
                // Complete the MMIO write before anyone reads state: KVM finishes an
                // instruction that exited to userspace only on the next KVM_RUN.
                set_immediate_exit(run_ptr, 1);
                let done = fd.run();
                set_immediate_exit(run_ptr, 0);
                let mut c = sh.ctl();
                match done {
                    Err(e) if e.errno() == libc::EINTR => c.stopped_at = Some(step),
                    Ok(VcpuExit::Intr) => c.stopped_at = Some(step),
                    other => {
                        c.failure = Some(format!("completing the doorbell MMIO: {other:?}"));
                    }
                }
                sh.cv.notify_all();
            }
            Outcome::Kicked => {}
            Outcome::RingFull => {
                drop(fd);
                if let Err(e) = dirty.on_ring_full() {
                    sh.ctl().failure = Some(format!("harvesting a full dirty ring: {e}"));
                }
            }
            Outcome::Fail(msg) => {
                let mut c = sh.ctl();
                c.failure = Some(msg);
                sh.cv.notify_all();
            }
        }
    }
}

/// A KVM virtual machine running the built-in workload (or a restored image of one).
pub struct Vm {
    vcpus: Vec<VcpuHandle>,
    dirty: Arc<DirtyLog>,
    vm: Arc<VmFd>,
    kvm: Kvm,
    ram: Arc<GuestMem>,
    sys: Arc<GuestMem>,
    config: VmConfig,
    info: HostInfo,
    program: Program,
    irqchip: bool,
    msr_index: Vec<u32>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .field("dirty", &self.dirty)
            .field("irqchip", &self.irqchip)
            .finish_non_exhaustive()
    }
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl Vm {
    /// Builds a VM running `workloads` (one per vCPU), parked at step 0 before its first
    /// instruction. `config.vcpus` must equal `workloads.len()`.
    pub fn new(config: VmConfig, workloads: &[Workload]) -> Result<Vm> {
        if workloads.len() != config.vcpus {
            return Err(Error::Config(format!(
                "{} vCPUs but {} workloads",
                config.vcpus,
                workloads.len()
            )));
        }
        for w in workloads {
            w.validate(config.ram_bytes / PAGE_SIZE)?;
        }
        let mut vm = Vm::build(config)?;
        for (i, w) in workloads.iter().enumerate() {
            vm.setup_fresh_vcpu(i, w)?;
        }
        vm.start_threads()?;
        Ok(vm)
    }

    /// Builds a fresh VM from saved state: RAM pages (gfn, 4096 bytes; all-zero pages are
    /// skipped since fresh memory is zero), vCPU states and device state. The system slot
    /// (page tables, code, mailboxes) is rebuilt, since the workload keeps its state in
    /// registers and RAM; each mailbox's progress is set from the vCPU's step counter (r8).
    /// The vCPUs start paused with target 0.
    ///
    /// Restore order (one that proved faithful): per vCPU cpuid, mp_state, regs, sregs, xsave,
    /// xcrs, debugregs, lapic, msrs (one by one), events; then PIT2, clock, irqchips.
    pub fn from_state<'a, I>(
        config: VmConfig,
        pages: I,
        vcpus: &[VcpuState],
        vm_state: &VmState,
        opts: RestoreOptions,
    ) -> Result<(Vm, RestoreReport)>
    where
        I: IntoIterator<Item = (u64, &'a [u8])>,
    {
        if vcpus.len() != config.vcpus {
            return Err(Error::Config(format!(
                "{} vCPUs configured but {} states given",
                config.vcpus,
                vcpus.len()
            )));
        }
        let mut vm = Vm::build(config)?;
        let mut report = RestoreReport::default();
        let t = Instant::now();
        let ram_pages = vm.ram_pages();
        for (gfn, data) in pages {
            if data.len() != PAGE_SIZE as usize || gfn >= ram_pages {
                return Err(Error::Config(format!(
                    "page {gfn:#x} of {} bytes does not fit {ram_pages} pages of RAM",
                    data.len()
                )));
            }
            if is_zero(data) {
                report.zero_pages_skipped += 1;
                continue;
            }
            vm.ram.write(gfn * PAGE_SIZE, data)?;
            report.pages_copied += 1;
        }
        report.copy_time = t.elapsed();
        for (i, st) in vcpus.iter().enumerate() {
            let rejected = vm.load_vcpu(i, st, opts)?;
            report
                .msrs_rejected
                .extend(rejected.into_iter().map(|m| (i, m)));
            vm.sys.write_u64(
                layout::MAILBOX_OFFSET + i as u64 * PAGE_SIZE + layout::MAILBOX_PROGRESS,
                st.regs.r8,
            );
        }
        vm.load_vm_state(vm_state)?;
        vm.start_threads()?;
        Ok((vm, report))
    }

    fn build(config: VmConfig) -> Result<Vm> {
        if config.ram_bytes == 0
            || config.ram_bytes > layout::MAX_RAM
            || config.ram_bytes % (2 << 20) != 0
        {
            return Err(Error::Config(format!(
                "RAM must be a non-zero multiple of 2 MiB up to 4 GiB, not {:#x}",
                config.ram_bytes
            )));
        }
        if config.vcpus == 0 || config.vcpus > layout::MAX_VCPUS {
            return Err(Error::Config(format!(
                "1 to {} vCPUs, not {}",
                layout::MAX_VCPUS,
                config.vcpus
            )));
        }
        install_kick_handler()?;
        let kvm = Kvm::new().map_err(Error::kvm("open /dev/kvm"))?;
        let info = HostInfo::probe(&kvm);
        let vm = Arc::new(kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?);

        let mechanism = match config.dirty {
            DirtyMode::Auto if info.manual_dirty_log_protect & 1 != 0 => {
                DirtyMechanism::ManualProtect
            }
            DirtyMode::Auto => DirtyMechanism::GetDirtyLog,
            DirtyMode::Force(m) => m,
        };
        let mut ring_bytes = 0usize;
        match mechanism {
            DirtyMechanism::GetDirtyLog => {}
            DirtyMechanism::ManualProtect => {
                if info.manual_dirty_log_protect & 1 == 0 {
                    return Err(Error::Config(
                        "host lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2".into(),
                    ));
                }
                let mut cap = kvm_bindings::kvm_enable_cap {
                    cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                    ..Default::default()
                };
                cap.args[0] = u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
                    | (info.manual_dirty_log_protect as u64
                        & u64::from(KVM_DIRTY_LOG_INITIALLY_SET));
                vm.enable_cap(&cap)
                    .map_err(Error::kvm("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)"))?;
            }
            DirtyMechanism::Ring => {
                let (cap_id, max) = if info.dirty_ring_acq_rel_bytes > 0 {
                    (
                        KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
                        info.dirty_ring_acq_rel_bytes,
                    )
                } else {
                    (KVM_CAP_DIRTY_LOG_RING, info.dirty_ring_bytes)
                };
                if max <= 0 {
                    return Err(Error::Config("host lacks KVM_CAP_DIRTY_LOG_RING".into()));
                }
                if !config.ring_entries.is_power_of_two() {
                    return Err(Error::Config("ring_entries must be a power of two".into()));
                }
                ring_bytes = (config.ring_entries as usize * 16).min(max as usize);
                let mut cap = kvm_bindings::kvm_enable_cap {
                    cap: cap_id,
                    ..Default::default()
                };
                cap.args[0] = ring_bytes as u64;
                vm.enable_cap(&cap)
                    .map_err(Error::kvm("KVM_ENABLE_CAP(DIRTY_LOG_RING)"))?;
            }
        }

        let irqchip = config.irqchip && info.irqchip;
        if irqchip {
            vm.create_irq_chip()
                .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
            if info.pit2 {
                let pit = kvm_pit_config {
                    flags: KVM_PIT_SPEAKER_DUMMY,
                    ..Default::default()
                };
                vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
            }
        }

        let ram = Arc::new(GuestMem::new(config.ram_bytes as usize)?);
        let sys = Arc::new(GuestMem::new(layout::SYS_SIZE as usize)?);
        let ram_region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: config.ram_bytes,
            userspace_addr: ram.ptr as u64,
        };
        let sys_region = kvm_userspace_memory_region {
            slot: 1,
            flags: 0,
            guest_phys_addr: layout::SYS_BASE,
            memory_size: layout::SYS_SIZE,
            userspace_addr: sys.ptr as u64,
        };
        // SAFETY: both mappings live as long as the VM (fields dropped after the VM fd and
        // the vCPU threads) and do not overlap.
        unsafe {
            vm.set_user_memory_region(ram_region)
                .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION(ram)"))?;
            vm.set_user_memory_region(sys_region)
                .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION(sys)"))?;
        }
        let dirty = Arc::new(DirtyLog::new(mechanism, vm.clone(), ram_region));
        let program = workload::assemble()?;
        write_system_slot(&sys, &program)?;
        let msr_index = kvm
            .get_msr_index_list()
            .map_err(Error::kvm("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .to_vec();

        let mut vcpus = Vec::with_capacity(config.vcpus);
        for i in 0..config.vcpus {
            let fd = vm
                .create_vcpu(i as u64)
                .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
            if mechanism == DirtyMechanism::Ring {
                dirty.map_ring(fd.as_raw_fd(), ring_bytes)?;
            }
            vcpus.push(VcpuHandle {
                shared: Arc::new(VcpuShared {
                    index: i,
                    fd: Mutex::new(fd),
                    // Parked from the start: the thread enters KVM_RUN only once it sees
                    // `pause` cleared, so state may be read before it first runs.
                    ctl: Mutex::new(Ctl {
                        pause: true,
                        parked: true,
                        ..Ctl::default()
                    }),
                    cv: Condvar::new(),
                    pause: AtomicBool::new(true),
                    exits: AtomicU64::new(0),
                }),
                thread: None,
            });
        }
        Ok(Vm {
            vcpus,
            dirty,
            vm,
            kvm,
            ram,
            sys,
            config,
            info,
            program,
            irqchip,
            msr_index,
        })
    }

    fn setup_fresh_vcpu(&mut self, i: usize, w: &Workload) -> Result<()> {
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        for e in cpuid.as_mut_slice() {
            match e.function {
                1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((i as u32) << 24),
                0xb | 0x1f => e.edx = i as u32,
                _ => {}
            }
        }
        let sh = self.vcpus[i].shared.clone();
        let fd = sh.fd();
        fd.set_cpuid2(&cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        if self.irqchip {
            // What firmware would leave behind: LAPIC software-enabled, LINT0 ExtINT, LINT1
            // NMI. It also makes the LAPIC's state differ from KVM's reset state, so a restore
            // that forgets the LAPIC is caught.
            let mut lapic = fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?;
            set_lapic_reg(&mut lapic, 0xf0, 0x1ff);
            set_lapic_reg(&mut lapic, 0x350, 0x700);
            set_lapic_reg(&mut lapic, 0x360, 0x400);
            fd.set_lapic(&lapic).map_err(Error::kvm("KVM_SET_LAPIC"))?;
            // APs of an in-kernel irqchip wait for INIT/SIPI; ours start directly.
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        }
        let mut sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
        sregs.cs = segment(0x33, 0xb, true);
        let data = segment(0x2b, 0x3, false);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 = 0x8001_0033;
        sregs.cr3 = layout::SYS_BASE + layout::PML4_OFFSET;
        sregs.cr4 = 0x20;
        sregs.efer = 0x500;
        fd.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
        let regs = w.initial_regs(i).to_kvm(self.program.entry, 2);
        fd.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;
        Ok(())
    }

    fn start_threads(&mut self) -> Result<()> {
        for h in &mut self.vcpus {
            let sh = h.shared.clone();
            let dirty = self.dirty.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{}", sh.index))
                .spawn(move || vcpu_thread(sh, dirty))
                .map_err(|source| Error::Os {
                    op: "spawning a vCPU thread",
                    source,
                })?;
            h.thread = Some(t);
        }
        Ok(())
    }

    /// The state of fresh vCPUs and devices of this host's KVM (a minimal VM of `vcpus` vCPUs,
    /// captured before its first instruction): defaults for what a Xen image does not carry
    /// (CPUID, most MSRs, xsave layout) when building a [`VcpuState`] from Xen's records.
    pub fn template_state(vcpus: usize) -> Result<(Vec<VcpuState>, VmState)> {
        let ws: Vec<Workload> = (0..vcpus).map(|i| Workload::new(1, i as u64, 1)).collect();
        let vm = Vm::new(VmConfig::new(2 << 20, vcpus), &ws)?;
        vm.capture()
    }

    /// What this host's KVM is and offers.
    pub fn host_info(&self) -> &HostInfo {
        &self.info
    }

    /// The configuration the VM was built with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Whether the in-kernel irqchip and PIT exist.
    pub fn has_irqchip(&self) -> bool {
        self.irqchip
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Guest RAM in pages.
    pub fn ram_pages(&self) -> u64 {
        self.config.ram_bytes / PAGE_SIZE
    }

    /// The assembled workload (entry point, rip at every stop).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The log-dirty interface for RAM.
    pub fn dirty_log(&self) -> &DirtyLog {
        &self.dirty
    }

    /// The raw VM fd, for callers that need an ioctl this crate does not wrap.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    /// The host address and length of guest RAM. Dereferencing it is the caller's `unsafe`:
    /// the guest writes it concurrently while running.
    pub fn ram_mapping(&self) -> (*mut u8, usize) {
        (self.ram.ptr, self.ram.len)
    }

    /// Copies page `gfn` of RAM into `out` (4096 bytes).
    pub fn read_page(&self, gfn: u64, out: &mut [u8]) -> Result<()> {
        if out.len() != PAGE_SIZE as usize {
            return Err(Error::Config("page buffers are 4096 bytes".into()));
        }
        self.ram.read(gfn.saturating_mul(PAGE_SIZE), out)
    }

    /// Writes page `gfn` of RAM (not seen by dirty logging: host writes never are).
    pub fn write_page(&self, gfn: u64, data: &[u8]) -> Result<()> {
        if data.len() != PAGE_SIZE as usize {
            return Err(Error::Config("page buffers are 4096 bytes".into()));
        }
        self.ram.write(gfn.saturating_mul(PAGE_SIZE), data)
    }

    /// SHA-256 over every non-zero RAM page as (gfn little-endian u64, page). Zero pages are
    /// left out, so the digest does not depend on how many zero pages a restore copied.
    /// Meaningful only while the vCPUs are parked.
    pub fn memory_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for gfn in 0..self.ram_pages() {
            if self.ram.read(gfn * PAGE_SIZE, &mut buf).is_err() {
                break;
            }
            if is_zero(&buf) {
                continue;
            }
            h.update(gfn.to_le_bytes());
            h.update(&buf);
        }
        h.finalize().into()
    }

    /// The step counter vCPU `i` last published in its mailbox.
    pub fn progress(&self, i: usize) -> u64 {
        self.sys
            .read_u64(layout::MAILBOX_OFFSET + i as u64 * PAGE_SIZE + layout::MAILBOX_PROGRESS)
    }

    /// The step at which vCPU `i` last reported reaching its target, if it has.
    pub fn stopped_at(&self, i: usize) -> Option<u64> {
        self.vcpus.get(i).and_then(|h| h.shared.ctl().stopped_at)
    }

    /// KVM_RUN exits of vCPU `i` so far.
    pub fn exits(&self, i: usize) -> u64 {
        self.vcpus
            .get(i)
            .map_or(0, |h| h.shared.exits.load(Ordering::Relaxed))
    }

    /// Sets every vCPU's target step (without resuming).
    pub fn set_target(&self, step: u64) -> Result<()> {
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            if let Some(f) = &c.failure {
                return Err(Error::VcpuFailed {
                    vcpu: h.shared.index,
                    reason: f.clone(),
                });
            }
            let done = c.stopped_at.unwrap_or(0).max(self.progress(h.shared.index));
            if done > step {
                return Err(Error::RunState(format!(
                    "vCPU {} is already at step {done}, past {step}",
                    h.shared.index
                )));
            }
            self.sys.write_u64(
                layout::MAILBOX_OFFSET + h.shared.index as u64 * PAGE_SIZE + layout::MAILBOX_TARGET,
                step,
            );
            c.target = step;
            h.shared.cv.notify_all();
        }
        Ok(())
    }

    /// Lets every vCPU run (towards its target).
    pub fn resume(&self) {
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            h.shared.pause.store(false, Ordering::SeqCst);
            c.pause = false;
            h.shared.cv.notify_all();
        }
    }

    /// Kicks every vCPU out of KVM_RUN and waits until all are parked.
    pub fn pause(&self) -> Result<PauseStats> {
        self.pause_timeout(DEFAULT_TIMEOUT)
    }

    /// [`Vm::pause`] with an explicit limit.
    pub fn pause_timeout(&self, timeout: Duration) -> Result<PauseStats> {
        let start = Instant::now();
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            h.shared.pause.store(true, Ordering::SeqCst);
            c.pause = true;
        }
        // Kick every vCPU at once, then wait for each, re-kicking the ones that have not
        // parked every KICK_INTERVAL.
        let mut kicks = 0;
        for h in &self.vcpus {
            if !h.shared.ctl().parked {
                kicks += self.kick(h);
            }
        }
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            while !c.parked {
                if start.elapsed() > timeout {
                    return Err(Error::Timeout {
                        what: format!("vCPU {} to pause", h.shared.index),
                        waited: start.elapsed(),
                    });
                }
                let (g, t) = h
                    .shared
                    .cv
                    .wait_timeout(c, KICK_INTERVAL)
                    .unwrap_or_else(|p| p.into_inner());
                c = g;
                if t.timed_out() && !c.parked {
                    kicks += self.kick(h);
                }
            }
        }
        Ok(PauseStats {
            latency: start.elapsed(),
            kicks,
        })
    }

    fn kick(&self, h: &VcpuHandle) -> u32 {
        match &h.thread {
            Some(t) => {
                // SAFETY: the thread is alive (it exits only on quit, which pause never sets),
                // so its pthread_t is valid; the signal's handler is installed.
                unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
                1
            }
            None => 0,
        }
    }

    /// Waits until every vCPU reports reaching `step`.
    pub fn wait_for_step(&self, step: u64, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            loop {
                if let Some(f) = &c.failure {
                    return Err(Error::VcpuFailed {
                        vcpu: h.shared.index,
                        reason: f.clone(),
                    });
                }
                if c.stopped_at == Some(step) && c.parked {
                    break;
                }
                let left = timeout
                    .checked_sub(start.elapsed())
                    .ok_or_else(|| Error::Timeout {
                        what: format!(
                            "vCPU {} to reach step {step} (at {})",
                            h.shared.index,
                            self.progress(h.shared.index)
                        ),
                        waited: start.elapsed(),
                    })?;
                c = h
                    .shared
                    .cv
                    .wait_timeout(c, left.min(Duration::from_millis(50)))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        Ok(())
    }

    /// Runs every vCPU to exactly `step` and leaves it parked there (state readable).
    pub fn run_until_step(&self, step: u64, timeout: Duration) -> Result<()> {
        self.set_target(step)?;
        self.resume();
        self.wait_for_step(step, timeout)
    }

    fn ensure_parked(&self) -> Result<()> {
        for h in &self.vcpus {
            if !h.shared.ctl().parked {
                return Err(Error::RunState(format!(
                    "vCPU {} is running; pause it first",
                    h.shared.index
                )));
            }
        }
        Ok(())
    }

    /// Captures vCPU `i`'s state. The vCPU must be parked (paused or at its target).
    pub fn capture_vcpu(&self, i: usize) -> Result<VcpuState> {
        self.ensure_parked()?;
        let h = self
            .vcpus
            .get(i)
            .ok_or_else(|| Error::Config(format!("no vCPU {i}")))?;
        let fd = h.shared.fd();
        let xsave = if self.info.xsave {
            Some(get_xsave(&fd, self.info.xsave2_size)?)
        } else {
            None
        };
        let xcrs = if self.info.xcrs {
            Some(fd.get_xcrs().map_err(Error::kvm("KVM_GET_XCRS"))?)
        } else {
            None
        };
        let lapic = if self.irqchip {
            Some(fd.get_lapic().map_err(Error::kvm("KVM_GET_LAPIC"))?)
        } else {
            None
        };
        Ok(VcpuState {
            regs: fd.get_regs().map_err(Error::kvm("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?,
            fpu: fd.get_fpu().map_err(Error::kvm("KVM_GET_FPU"))?,
            xsave,
            xcrs,
            debugregs: fd
                .get_debug_regs()
                .map_err(Error::kvm("KVM_GET_DEBUGREGS"))?,
            lapic,
            msrs: get_msrs(&fd, &self.msr_index)?,
            mp_state: fd.get_mp_state().map_err(Error::kvm("KVM_GET_MP_STATE"))?,
            events: fd
                .get_vcpu_events()
                .map_err(Error::kvm("KVM_GET_VCPU_EVENTS"))?,
            cpuid: fd
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(Error::kvm("KVM_GET_CPUID2"))?
                .as_slice()
                .to_vec(),
        })
    }

    /// Captures the per-VM device state.
    pub(crate) fn capture_vm_state(&self) -> Result<VmState> {
        let mut st = VmState::default();
        if self.irqchip {
            let chip = |id: u32| -> Result<kvm_irqchip> {
                let mut c = kvm_irqchip {
                    chip_id: id,
                    ..Default::default()
                };
                self.vm
                    .get_irqchip(&mut c)
                    .map_err(Error::kvm("KVM_GET_IRQCHIP"))?;
                Ok(c)
            };
            st.pic_master = Some(chip(0)?);
            st.pic_slave = Some(chip(1)?);
            st.ioapic = Some(chip(2)?);
            if self.info.pit2 {
                st.pit2 = Some(self.vm.get_pit2().map_err(Error::kvm("KVM_GET_PIT2"))?);
            }
        }
        if self.info.adjust_clock > 0 {
            st.clock = Some(self.vm.get_clock().map_err(Error::kvm("KVM_GET_CLOCK"))?);
        }
        Ok(st)
    }

    /// Captures every vCPU and the VM devices. The vCPUs must be parked.
    pub fn capture(&self) -> Result<(Vec<VcpuState>, VmState)> {
        let vcpus = (0..self.vcpus.len())
            .map(|i| self.capture_vcpu(i))
            .collect::<Result<Vec<_>>>()?;
        Ok((vcpus, self.capture_vm_state()?))
    }

    fn load_vcpu(&self, i: usize, st: &VcpuState, opts: RestoreOptions) -> Result<Vec<u32>> {
        let h = self
            .vcpus
            .get(i)
            .ok_or_else(|| Error::Config(format!("no vCPU {i}")))?;
        let fd = h.shared.fd();
        let cpuid = CpuId::from_entries(&st.cpuid)
            .map_err(|e| Error::Config(format!("cpuid entries: {e:?}")))?;
        fd.set_cpuid2(&cpuid)
            .map_err(Error::kvm("KVM_SET_CPUID2"))?;
        if !opts.skip_mp_state {
            fd.set_mp_state(st.mp_state)
                .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
        }
        fd.set_regs(&st.regs).map_err(Error::kvm("KVM_SET_REGS"))?;
        if !opts.skip_sregs {
            fd.set_sregs(&st.sregs)
                .map_err(Error::kvm("KVM_SET_SREGS"))?;
        }
        match &st.xsave {
            Some(words) => set_xsave(&fd, words, self.info.xsave2_size)?,
            None => fd.set_fpu(&st.fpu).map_err(Error::kvm("KVM_SET_FPU"))?,
        }
        if let (Some(x), true) = (&st.xcrs, self.info.xcrs) {
            fd.set_xcrs(x).map_err(Error::kvm("KVM_SET_XCRS"))?;
        }
        fd.set_debug_regs(&st.debugregs)
            .map_err(Error::kvm("KVM_SET_DEBUGREGS"))?;
        if let (Some(l), true, false) = (&st.lapic, self.irqchip, opts.skip_lapic) {
            fd.set_lapic(l).map_err(Error::kvm("KVM_SET_LAPIC"))?;
        }
        let mut rejected = Vec::new();
        if !opts.skip_msrs {
            // One by one: KVM_SET_MSRS stops at the first MSR it rejects.
            for m in &st.msrs {
                let one = Msrs::from_entries(std::slice::from_ref(m))
                    .map_err(|e| Error::Config(format!("msr entries: {e:?}")))?;
                match fd.set_msrs(&one) {
                    Ok(1) => {}
                    _ => rejected.push(m.index),
                }
            }
        }
        fd.set_vcpu_events(&st.events)
            .map_err(Error::kvm("KVM_SET_VCPU_EVENTS"))?;
        Ok(rejected)
    }

    fn load_vm_state(&self, st: &VmState) -> Result<()> {
        if let (Some(p), true) = (&st.pit2, self.irqchip && self.info.pit2) {
            self.vm.set_pit2(p).map_err(Error::kvm("KVM_SET_PIT2"))?;
        }
        if let (Some(c), true) = (&st.clock, self.info.adjust_clock > 0) {
            // Only the clock value is meaningful to set; the flags KVM reports (e.g.
            // TSC_STABLE) are rejected on input.
            let c = kvm_clock_data {
                clock: c.clock,
                ..Default::default()
            };
            self.vm.set_clock(&c).map_err(Error::kvm("KVM_SET_CLOCK"))?;
        }
        if self.irqchip {
            for c in [&st.pic_master, &st.pic_slave, &st.ioapic]
                .into_iter()
                .flatten()
            {
                self.vm
                    .set_irqchip(c)
                    .map_err(Error::kvm("KVM_SET_IRQCHIP"))?;
            }
        }
        Ok(())
    }

    /// Stops the vCPU threads (kicking them as often as needed) and waits for them.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_threads(DEFAULT_TIMEOUT)
    }

    fn stop_threads(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        for h in &self.vcpus {
            let mut c = h.shared.ctl();
            c.quit = true;
            c.pause = true;
            h.shared.pause.store(true, Ordering::SeqCst);
            h.shared.cv.notify_all();
        }
        let mut stuck = false;
        for h in &mut self.vcpus {
            if let Some(t) = h.thread.take() {
                while !t.is_finished() && start.elapsed() < timeout {
                    // SAFETY: the thread has not finished, so its pthread_t is valid.
                    unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
                    h.shared.cv.notify_all();
                    std::thread::sleep(Duration::from_millis(1));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    stuck = true;
                }
            }
        }
        if stuck {
            self.ram.leak.store(true, Ordering::SeqCst);
            self.sys.leak.store(true, Ordering::SeqCst);
            return Err(Error::Timeout {
                what: "vCPU threads to stop".into(),
                waited: start.elapsed(),
            });
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.stop_threads(DEFAULT_TIMEOUT);
    }
}

/// Whether a page is all zero; folds u64 words (8× fewer steps than bytes, even unoptimized).
pub fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits at alignment boundaries.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words.iter().fold(0u64, |a, &w| a | w) == 0
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (k, b) in v.to_le_bytes().iter().enumerate() {
        if let Some(r) = l.regs.get_mut(off + k) {
            *r = *b as libc::c_char;
        }
    }
}

/// Writes page tables (identity map of 0..5 GiB with 2 MiB pages, user-accessible), the code
/// and zeroed mailboxes into the system slot.
fn write_system_slot(sys: &GuestMem, program: &Program) -> Result<()> {
    const P_RW_US: u64 = 0x7;
    const PS: u64 = 0x80;
    let pdpt = layout::SYS_BASE + layout::PDPT_OFFSET;
    sys.write(layout::PML4_OFFSET, &(pdpt | P_RW_US).to_le_bytes())?;
    for i in 0..layout::PD_COUNT {
        let pd = layout::SYS_BASE + layout::PD_OFFSET + i * PAGE_SIZE;
        sys.write(layout::PDPT_OFFSET + i * 8, &(pd | P_RW_US).to_le_bytes())?;
        let mut table = Vec::with_capacity(4096);
        for j in 0..512u64 {
            let gpa = (i << 30) | (j << 21);
            table.extend_from_slice(&(gpa | P_RW_US | PS).to_le_bytes());
        }
        sys.write(layout::PD_OFFSET + i * PAGE_SIZE, &table)?;
    }
    sys.write(layout::CODE_OFFSET, &program.code)
}

fn get_xsave(fd: &VcpuFd, xsave2_size: i32) -> Result<Vec<u32>> {
    let base = std::mem::size_of::<kvm_xsave>();
    if xsave2_size as usize > base {
        let fam = (xsave2_size as usize - base).div_ceil(4);
        let mut x = Xsave::new(fam).map_err(|e| Error::Config(format!("xsave buffer: {e:?}")))?;
        // SAFETY: `x` was sized from KVM_CAP_XSAVE2, as the ioctl requires.
        unsafe { fd.get_xsave2(&mut x) }.map_err(Error::kvm("KVM_GET_XSAVE2"))?;
        let mut words = x.as_fam_struct_ref().xsave.region.to_vec();
        words.extend_from_slice(x.as_slice());
        Ok(words)
    } else {
        let x = fd.get_xsave().map_err(Error::kvm("KVM_GET_XSAVE"))?;
        Ok(x.region.to_vec())
    }
}

fn set_xsave(fd: &VcpuFd, words: &[u32], xsave2_size: i32) -> Result<()> {
    let base = std::mem::size_of::<kvm_xsave>();
    if xsave2_size as usize > base {
        let fam = (xsave2_size as usize - base).div_ceil(4);
        let mut x = Xsave::new(fam).map_err(|e| Error::Config(format!("xsave buffer: {e:?}")))?;
        // SAFETY: we only write the fixed `region` array, never the FAM length.
        let region = unsafe { &mut x.as_mut_fam_struct().xsave.region };
        let n = words.len().min(region.len());
        region[..n].copy_from_slice(&words[..n]);
        let extra = words.get(region.len()..).unwrap_or(&[]);
        let slice = x.as_mut_slice();
        let n = extra.len().min(slice.len());
        slice[..n].copy_from_slice(&extra[..n]);
        // SAFETY: `x` was sized from KVM_CAP_XSAVE2, as the ioctl requires.
        unsafe { fd.set_xsave2(&x) }.map_err(Error::kvm("KVM_SET_XSAVE2"))
    } else {
        // SAFETY: all-zero kvm_xsave is valid.
        let mut x: kvm_xsave = unsafe { std::mem::zeroed() };
        let n = words.len().min(x.region.len());
        x.region[..n].copy_from_slice(&words[..n]);
        // SAFETY: the host's xsave area is at most 4096 bytes (no larger KVM_CAP_XSAVE2), so
        // KVM reads only `region`.
        unsafe { fd.set_xsave(&x) }.map_err(Error::kvm("KVM_SET_XSAVE"))
    }
}

fn get_msrs(fd: &VcpuFd, index: &[u32]) -> Result<Vec<kvm_msr_entry>> {
    let entries: Vec<kvm_msr_entry> = index
        .iter()
        .map(|&i| kvm_msr_entry {
            index: i,
            ..Default::default()
        })
        .collect();
    let mut msrs =
        Msrs::from_entries(&entries).map_err(|e| Error::Config(format!("msr list: {e:?}")))?;
    let n = fd.get_msrs(&mut msrs).map_err(Error::kvm("KVM_GET_MSRS"))?;
    let mut out: Vec<kvm_msr_entry> = msrs.as_slice().iter().take(n).copied().collect();
    if n < entries.len() {
        // KVM stops at the first MSR it cannot read: read the rest one by one, skipping those.
        for e in &entries[n..] {
            let mut one = Msrs::from_entries(std::slice::from_ref(e))
                .map_err(|e| Error::Config(format!("msr list: {e:?}")))?;
            if let Ok(1) = fd.get_msrs(&mut one) {
                out.extend_from_slice(one.as_slice());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_can_be_shared_with_a_saver_thread() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vm>();
    }

    #[test]
    fn zero_page_test() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        assert!(!is_zero(&p[1..]));
        p[4095] = 0;
        p[0] = 0x80;
        assert!(!is_zero(&p));
    }
}

//! The KVM backend: a real guest ([`hvm_guest::Vm`] running the built-in
//! workload) behind [`Domain`].
//!
//! * Memory: KVM RAM is one slot at guest-physical 0, so pfn = gfn. RAM is
//!   limited to 3840 MiB, below Xen's MMIO hole, so no pfn needs moving.
//!   `nr_pages` is reported as `xc_hvm_build` would (`mem*256 - 0x20`) with
//!   standard VGA, which makes the seed's `max_pfn` the last RAM page.
//! * Magic pfns: the top 3 pages of RAM, as `xc_hvm_build` laid them out.
//!   The workload never writes them, nor the VGA hole (its working set
//!   starts at 1 MiB), so skipping them loses nothing.
//! * Log-dirty: KVM's dirty log of the RAM slot (manual protect where
//!   offered), peeked and cleaned like Xen's shadow ops.
//! * Suspend: the vCPUs are kicked out of `KVM_RUN` and parked, any pending
//!   MMIO completed ([`Vm::pause`]); resume lets them run on.
//! * vCPU and HVM state: [`xen_state`] maps KVM state into the 2007 records.
//! * Throttle: [`throttle::Throttler`] parks the vCPUs for a share of each
//!   10 ms slice; stopped before a suspend, lifted when dropped. Guest
//!   progress is the workload's step counters, summed over vCPUs.
//! * No device model: `--envelope xend` gets an empty QEVM file.
//! * The workload's parameters travel in guest RAM: a descriptor page at
//!   pfn [`DESCRIPTOR_PFN`] written before the guest starts ([`WorkloadDescriptor`]),
//!   so a resume can rebuild the uninterrupted control run from the image alone.

pub mod throttle;
pub mod xen_state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hvm_format::pfn::{MMIO_HOLE_START, VGA_HOLE_END, VGA_HOLE_START};
use hvm_format::PAGE_SIZE;
use hvm_guest::{DirtyMode, HostInfo, PauseStats, VcpuState, Vm, VmConfig, VmState, Workload};

use crate::domain::{
    DirtyBitmap, DirtyStats, Domain, DomainError, DomainInfo, DomainResult, HvmParam, PageMap,
    PlatformInfo,
};
use crate::plan::MagicPfns;

/// Largest guest: everything below Xen's MMIO hole.
pub const MAX_MEMORY_MIB: u64 = (MMIO_HOLE_START * PAGE_SIZE as u64) >> 20;
/// The pfn of the workload descriptor page.
pub const DESCRIPTOR_PFN: u64 = 1;
/// First pfn of the working set (1 MiB: above the VGA hole and the BIOS area).
pub const WORKING_SET_BASE: u64 = 0x100;
/// Magic at the start of the descriptor page.
pub const DESCRIPTOR_MAGIC: &[u8; 8] = b"HVMGWKL1";
/// A step target no run reaches: while live, the pause, not the workload,
/// ends the run.
const UNREACHABLE_STEP: u64 = u64::MAX / 2;

/// What the built-in workload runs, as stored in the descriptor page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadDescriptor {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// One stream per vCPU.
    pub workloads: Vec<Workload>,
}

impl WorkloadDescriptor {
    /// The page: magic, memory, vCPU count, then per vCPU seed, base page,
    /// pages, writes per step, spin (little-endian u64s).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        let mut words: Vec<u64> = vec![self.memory_mib, self.workloads.len() as u64];
        for w in &self.workloads {
            words.extend([w.seed, w.base_page, w.pages, w.writes_per_step, w.spin]);
        }
        p[..8].copy_from_slice(DESCRIPTOR_MAGIC);
        for (i, w) in words.iter().enumerate() {
            p[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        p
    }

    /// Reads a descriptor page; `None` if the page is not one (an image of
    /// some other guest).
    pub fn decode(page: &[u8]) -> Option<WorkloadDescriptor> {
        if page.get(..8)? != DESCRIPTOR_MAGIC {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            let b = page.get(8 + 8 * i..16 + 8 * i)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        let memory_mib = word(0)?;
        let n = word(1)?;
        if n == 0 || n > hvm_guest::layout::MAX_VCPUS as u64 {
            return None;
        }
        let workloads = (0..n as usize)
            .map(|v| {
                let b = 2 + 5 * v;
                Some(Workload {
                    seed: word(b)?,
                    base_page: word(b + 1)?,
                    pages: word(b + 2)?,
                    writes_per_step: word(b + 3)?,
                    spin: word(b + 4)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(WorkloadDescriptor {
            memory_mib,
            workloads,
        })
    }
}

/// How to build the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmConfig {
    /// Memory in MiB (multiple of 2, at most [`MAX_MEMORY_MIB`]).
    pub memory_mib: u64,
    /// 1 or 2 vCPUs.
    pub vcpus: usize,
    /// Working set over all vCPUs, MiB (split evenly between them).
    pub working_set_mib: u64,
    /// Qword writes per workload step.
    pub writes_per_step: u64,
    /// Pacing loop iterations per step (0 = flat out).
    pub spin: u64,
    /// PRNG seed of vCPU 0 (vCPU i uses seed + i).
    pub seed: u64,
    /// Dirty-log mechanism.
    pub dirty: DirtyMode,
}

impl Default for KvmConfig {
    fn default() -> Self {
        KvmConfig {
            memory_mib: 512,
            vcpus: 1,
            working_set_mib: 64,
            writes_per_step: 1,
            spin: 0,
            seed: 0x5eed_2007,
            dirty: DirtyMode::Auto,
        }
    }
}

impl KvmConfig {
    /// The magic pfns of this guest.
    pub fn magic(&self) -> MagicPfns {
        MagicPfns::xc_hvm_build(self.memory_mib)
    }

    /// The workload streams, checked to stay clear of the descriptor, the
    /// VGA hole and the magic pages.
    pub fn workloads(&self) -> Result<Vec<Workload>, DomainError> {
        let bad = |m: String| DomainError::refused("kvm", m);
        if self.memory_mib < 4 || self.memory_mib % 2 != 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(bad(format!(
                "memory must be an even number of MiB from 4 to {MAX_MEMORY_MIB}, not {}",
                self.memory_mib
            )));
        }
        if !(1..=hvm_guest::layout::MAX_VCPUS).contains(&self.vcpus) {
            return Err(bad(format!("1 or 2 vCPUs, not {}", self.vcpus)));
        }
        let total = self.working_set_mib * 256;
        let per = total / self.vcpus as u64;
        let limit = self.magic().bufioreq;
        if per == 0 || WORKING_SET_BASE + total > limit {
            return Err(bad(format!(
                "a working set of {} MiB does not fit between 1 MiB and the magic pages of a \
                 {} MiB guest (at most {} MiB)",
                self.working_set_mib,
                self.memory_mib,
                (limit - WORKING_SET_BASE) / 256
            )));
        }
        Ok((0..self.vcpus as u64)
            .map(|i| Workload {
                seed: self.seed.wrapping_add(i),
                base_page: WORKING_SET_BASE + i * per,
                pages: per,
                writes_per_step: self.writes_per_step.max(1),
                spin: self.spin,
            })
            .collect())
    }
}

/// A page buffer for `map_batch`: guest pages are copied out (the guest may
/// write them concurrently, so no reference into guest memory is handed out).
struct Pages<'a> {
    buf: &'a [u8],
    present: Vec<bool>,
}

impl PageMap for Pages<'_> {
    fn page(&self, j: usize) -> Option<&[u8]> {
        if !*self.present.get(j)? {
            return None;
        }
        self.buf.get(j * PAGE_SIZE..(j + 1) * PAGE_SIZE)
    }
}

/// The KVM guest as a [`Domain`].
pub struct KvmDomain {
    vm: Arc<Vm>,
    /// Runs while the guest is throttled; dropping it lifts the throttle.
    throttler: Option<throttle::Throttler>,
    cfg: KvmConfig,
    magic: MagicPfns,
    ram_pages: u64,
    suspended: bool,
    captured: Option<(Vec<VcpuState>, VmState)>,
    guest_bm: hvm_guest::DirtyBitmap,
    buf: Vec<u8>,
    epoch: Instant,
    last_pause: Option<PauseStats>,
    throttle_level: u8,
}

impl std::fmt::Debug for KvmDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmDomain")
            .field("cfg", &self.cfg)
            .field("suspended", &self.suspended)
            .finish_non_exhaustive()
    }
}

fn guest_err(call: &'static str) -> impl FnOnce(hvm_guest::Error) -> DomainError {
    move |e| DomainError::refused(call, e.to_string())
}

impl KvmDomain {
    /// Builds the guest, writes the descriptor page and leaves the vCPUs
    /// parked at step 0. Fails with [`DomainError::Unavailable`] where
    /// /dev/kvm cannot be opened.
    pub fn new(cfg: KvmConfig) -> Result<KvmDomain, DomainError> {
        if !HostInfo::kvm_available() {
            return Err(DomainError::Unavailable(format!(
                "{} is not available (missing, or no permission): the KVM backend needs it",
                hvm_guest::host::KVM_DEVICE
            )));
        }
        let workloads = cfg.workloads()?;
        let vm_cfg = VmConfig {
            dirty: cfg.dirty,
            ..VmConfig::new(cfg.memory_mib << 20, cfg.vcpus)
        };
        let vm = Vm::new(vm_cfg, &workloads).map_err(guest_err("kvm: building the VM"))?;
        let desc = WorkloadDescriptor {
            memory_mib: cfg.memory_mib,
            workloads,
        };
        vm.write_page(DESCRIPTOR_PFN, &desc.encode())
            .map_err(guest_err("kvm: writing the descriptor"))?;
        let ram_pages = vm.ram_pages();
        Ok(KvmDomain {
            magic: cfg.magic(),
            vm: Arc::new(vm),
            throttler: None,
            cfg,
            ram_pages,
            suspended: false,
            captured: None,
            guest_bm: hvm_guest::DirtyBitmap::new(ram_pages),
            buf: vec![0; hvm_format::MAX_BATCH * PAGE_SIZE],
            epoch: Instant::now(),
            last_pause: None,
            throttle_level: 0,
        })
    }

    /// Lets the workload run with no reachable target (until paused).
    pub fn start(&mut self) -> Result<(), DomainError> {
        self.vm
            .set_target(UNREACHABLE_STEP)
            .map_err(guest_err("kvm: start"))?;
        self.vm.resume();
        self.suspended = false;
        self.captured = None;
        Ok(())
    }

    /// The guest.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The configuration.
    pub fn config(&self) -> &KvmConfig {
        &self.cfg
    }

    /// Steps each vCPU has published so far.
    pub fn progress(&self) -> Vec<u64> {
        (0..self.vm.vcpu_count())
            .map(|i| self.vm.progress(i))
            .collect()
    }

    /// How long the last suspend took to park the vCPUs.
    pub fn last_pause(&self) -> Option<PauseStats> {
        self.last_pause
    }

    /// The state captured at suspend (vCPUs, devices).
    pub fn captured(&self) -> Option<&(Vec<VcpuState>, VmState)> {
        self.captured.as_ref()
    }

    /// Stops the vCPU threads (and the throttle's).
    pub fn shutdown(mut self) -> Result<(), DomainError> {
        self.throttler = None;
        let vm = Arc::try_unwrap(self.vm)
            .map_err(|_| DomainError::refused("kvm: shutdown", "the VM is still shared"))?;
        vm.shutdown().map_err(guest_err("kvm: shutdown"))
    }

    /// The throttle in force, percent (0 when none).
    pub fn throttle(&self) -> u8 {
        self.throttle_level
    }

    fn capture(&mut self) -> DomainResult<&(Vec<VcpuState>, VmState)> {
        if !self.suspended {
            return Err(DomainError::refused(
                "xc_vcpu_getcontext",
                "the guest is running; suspend it first",
            ));
        }
        if self.captured.is_none() {
            self.captured = Some(self.vm.capture().map_err(guest_err("kvm: capture"))?);
        }
        self.captured
            .as_ref()
            .ok_or_else(|| DomainError::refused("kvm: capture", "no state"))
    }

    /// Copies the guest's dirty bitmap (gfn = pfn) into the saver's.
    fn copy_bitmap(&self, into: &mut DirtyBitmap) {
        into.clear_all();
        let src = self.guest_bm.words();
        let dst = into.words_mut();
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
        // Clears bits beyond `len` (the saver's bitmap may be shorter).
        into.merge(&DirtyBitmap::new(0));
    }
}

impl Domain for KvmDomain {
    fn platform(&mut self) -> DomainResult<PlatformInfo> {
        Ok(PlatformInfo {
            max_mfn: u64::MAX >> 12,
            // Standard VGA: no Cirrus VRAM in nr_pages to subtract.
            stdvga: true,
        })
    }

    fn info(&mut self) -> DomainResult<DomainInfo> {
        Ok(DomainInfo {
            // As xc_hvm_build: RAM less the VGA hole; the seed adds it back.
            nr_pages: self.ram_pages - (VGA_HOLE_END - VGA_HOLE_START),
            max_memkb: self.cfg.memory_mib * 1024,
            nr_online_vcpus: self.vm.vcpu_count() as u32,
            suspended: self.suspended,
            paused: false,
        })
    }

    fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64> {
        Ok(match param {
            HvmParam::StorePfn => self.magic.store,
            HvmParam::IoreqPfn => self.magic.ioreq,
            HvmParam::BufIoreqPfn => self.magic.bufioreq,
        })
    }

    fn log_dirty_enable(&mut self) -> DomainResult<()> {
        let log = self.vm.dirty_log();
        log.enable().map_err(guest_err("log-dirty enable"))?;
        // Start from a clean slate (manual protect's INITIALLY_SET reports
        // every page; the first pass sends everything anyway).
        log.clean(&mut self.guest_bm)
            .map_err(guest_err("log-dirty enable"))?;
        Ok(())
    }

    fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()> {
        self.vm
            .dirty_log()
            .peek(&mut self.guest_bm)
            .map_err(guest_err("log-dirty peek"))?;
        self.copy_bitmap(into);
        Ok(())
    }

    fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats> {
        let st = self
            .vm
            .dirty_log()
            .clean(&mut self.guest_bm)
            .map_err(guest_err("log-dirty clean"))?;
        self.copy_bitmap(into);
        Ok(DirtyStats {
            // KVM's dirty log counts dirty pages, not write faults.
            fault_count: None,
            dirty_count: st.dirty_pages,
        })
    }

    fn log_dirty_off(&mut self) -> DomainResult<()> {
        self.vm
            .dirty_log()
            .disable()
            .map_err(guest_err("log-dirty off"))
    }

    fn dm_dirty_init(&mut self, _len: u64) -> DomainResult<()> {
        // No device model: nothing but the guest writes its memory.
        Ok(())
    }

    fn dm_flip(&mut self, _active: usize) -> DomainResult<()> {
        Ok(())
    }

    fn dm_take(
        &mut self,
        _which: usize,
        _into: &mut DirtyBitmap,
        _clear: bool,
    ) -> DomainResult<()> {
        Ok(())
    }

    fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>> {
        if pfns.len() > hvm_format::MAX_BATCH {
            return Err(DomainError::refused(
                "xc_map_foreign_batch",
                format!("{} pfns in one batch", pfns.len()),
            ));
        }
        let mut present = Vec::with_capacity(pfns.len());
        for (j, &pfn) in pfns.iter().enumerate() {
            let dst = &mut self.buf[j * PAGE_SIZE..(j + 1) * PAGE_SIZE];
            present.push(pfn < self.ram_pages && self.vm.read_page(pfn, dst).is_ok());
        }
        Ok(Box::new(Pages {
            buf: &self.buf,
            present,
        }))
    }

    fn request_suspend(&mut self) -> DomainResult<bool> {
        if self.suspended {
            return Ok(true);
        }
        // The throttle thread must not resume what the suspend parks, nor
        // let the guest run between its last park and the suspend's.
        if let Some(t) = self.throttler.take() {
            t.stop_holding();
        }
        let st = self
            .vm
            .pause()
            .map_err(guest_err("suspend (pausing the vCPUs)"))?;
        self.last_pause = Some(st);
        self.suspended = true;
        self.captured = None;
        Ok(true)
    }

    fn unpause(&mut self) -> DomainResult<()> {
        Ok(())
    }

    fn resume(&mut self) -> DomainResult<()> {
        self.vm.resume();
        self.suspended = false;
        self.captured = None;
        Ok(())
    }

    fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>> {
        let (vcpus, _) = self.capture()?;
        let st = vcpus
            .get(vcpu as usize)
            .ok_or_else(|| DomainError::refused("xc_vcpu_getcontext", format!("no vCPU {vcpu}")))?;
        Ok(xen_state::vcpu_context(st).into_bytes())
    }

    fn hvm_context(&mut self) -> DomainResult<Vec<u8>> {
        let (vcpus, vm) = self.capture()?;
        Ok(xen_state::hvm_blob(vcpus, vm))
    }

    fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>> {
        // No device model: the xend envelope gets an empty QEVM file.
        Ok(None)
    }

    fn now(&mut self) -> Duration {
        self.epoch.elapsed()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
        let percent = percent.min(crate::domain::MAX_THROTTLE);
        if percent == 0 {
            self.throttler = None;
            self.throttle_level = 0;
            return Ok(());
        }
        if self.suspended {
            return Err(DomainError::refused(
                "set_throttle",
                "the guest is suspended",
            ));
        }
        if self.throttler.is_none() {
            let t =
                throttle::Throttler::start(self.vm.clone()).map_err(|source| DomainError::Io {
                    call: "set_throttle (starting the throttle thread)",
                    source,
                })?;
            self.throttler = Some(t);
        }
        if let Some(t) = &self.throttler {
            t.set(percent)
                .map_err(|m| DomainError::refused("set_throttle", m))?;
        }
        self.throttle_level = percent;
        Ok(())
    }

    fn guest_progress(&mut self) -> Option<u64> {
        Some(self.progress().iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_round_trips_and_rejects_other_pages() {
        let cfg = KvmConfig {
            vcpus: 2,
            spin: 7,
            ..KvmConfig::default()
        };
        let d = WorkloadDescriptor {
            memory_mib: 512,
            workloads: cfg.workloads().unwrap(),
        };
        let page = d.encode();
        assert_eq!(WorkloadDescriptor::decode(&page), Some(d.clone()));
        assert_eq!(d.workloads[1].base_page, WORKING_SET_BASE + 64 * 128);
        assert_eq!(WorkloadDescriptor::decode(&[0u8; 4096]), None);
        assert_eq!(WorkloadDescriptor::decode(&page[..20]), None);
        let mut many = page.clone();
        many[16..24].copy_from_slice(&9u64.to_le_bytes());
        assert_eq!(WorkloadDescriptor::decode(&many), None);
    }

    #[test]
    fn working_set_must_clear_the_magic_pages() {
        let ok = KvmConfig {
            memory_mib: 64,
            working_set_mib: 62,
            ..KvmConfig::default()
        };
        let w = ok.workloads().unwrap();
        assert!(w[0].base_page + w[0].pages <= ok.magic().bufioreq);
        let too_big = KvmConfig {
            memory_mib: 64,
            working_set_mib: 63,
            ..KvmConfig::default()
        };
        assert!(too_big.workloads().is_err());
        let odd = KvmConfig {
            memory_mib: 5000,
            ..KvmConfig::default()
        };
        assert!(odd.workloads().is_err());
    }
}

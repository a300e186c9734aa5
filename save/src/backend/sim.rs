//! A deterministic simulated HVM guest implementing [`Domain`] completely.
//!
//! Memory is laid out as `xc_hvm_build` @ `e2a44bc7a4` did: `mem*256 - 0x20`
//! RAM pages at pfns 0–0x9F and from 0xC0, pfns from 0xF0000 moved up by
//! 0x10000, the ioreq/store/bufioreq pages at the top of RAM below 4 GiB.
//! Each page starts with its pfn and a write counter, so a page sent for
//! the wrong pfn or a stale copy cannot go unnoticed.
//!
//! Time is virtual: mapping a batch costs the time the batch takes on a link
//! of [`SimConfig::link_bytes_per_sec`], sleeps cost what they ask, and the
//! guest and its device model write pages at their configured rates as the
//! clock moves. Same config, same run, bit for bit, in well under real time.
//!
//! Throttling ([`Domain::set_throttle`]) is modelled as a fluid share of the
//! CPU: at `p` % the guest gets `100 − p` % of each virtual nanosecond, so
//! its writes (the workload's rates are per second of guest CPU time) and
//! its progress ([`Domain::guest_progress`]: one step per microsecond of
//! guest CPU time) slow down by the same factor. The device model is not
//! throttled (its DMA is not the vCPUs' doing).

use std::time::Duration;

use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::pfn::{
    MMIO_HOLE_END, MMIO_HOLE_PAGES, MMIO_HOLE_START, VGA_HOLE_END, VGA_HOLE_START,
};
use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
use hvm_format::{WordSize, PAGE_SIZE};

use crate::domain::{
    DirtyBitmap, DirtyStats, Domain, DomainError, DomainInfo, DomainResult, HvmParam, PageMap,
    PlatformInfo,
};
use crate::plan::{MagicPfns, CIRRUS_VRAM_PAGES};

/// How the simulated guest writes its memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Writes nothing.
    Idle,
    /// `rate` page writes per second, each to a uniformly random RAM page.
    Uniform {
        /// Page writes per second.
        rate: f64,
    },
    /// `rate` writes per second to random pages of a fixed set of `pages`.
    HotSet {
        /// Size of the working set.
        pages: u64,
        /// Page writes per second.
        rate: f64,
    },
    /// `rate` writes per second walking RAM in ascending order, wrapping.
    Sweep {
        /// Page writes per second.
        rate: f64,
    },
    /// Uniform writes at `rate`, but only for `duty` of every `period`.
    Bursts {
        /// Page writes per second while bursting.
        rate: f64,
        /// Burst period.
        period: Duration,
        /// Fraction of each period spent bursting (0..=1).
        duty: f64,
    },
    /// Test schedule: at the first log-dirty peek of pre-copy pass `k`
    /// (1-based), write the pfns of entry `k-1`.
    Script(Vec<Vec<u64>>),
}

impl Workload {
    /// Short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Uniform { .. } => "uniform",
            Workload::HotSet { .. } => "hot-set",
            Workload::Sweep { .. } => "sweep",
            Workload::Bursts { .. } => "bursts",
            Workload::Script(_) => "script",
        }
    }
}

/// The simulated guest.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Memory in MiB (as given to `xc_hvm_build`).
    pub memory_mib: u64,
    /// vCPUs online.
    pub vcpus: u32,
    /// Guest writes.
    pub workload: Workload,
    /// Device-model (DMA) page writes per second, logged only in qemu-dm's
    /// bitmaps, never in the hypervisor's dirty log.
    pub dm_rate: f64,
    /// RAM pages that fail to map (sent as XTAB).
    pub unmappable: u64,
    /// Standard VGA instead of Cirrus (Cirrus holds 0x800 VRAM pages while
    /// qemu-dm runs).
    pub stdvga: bool,
    /// Modelled send bandwidth, bytes per second.
    pub link_bytes_per_sec: u64,
    /// Time from a suspend request until the guest stops (it runs, and
    /// dirties pages, until then), however often the saver polls.
    pub suspend_latency: Duration,
    /// Report "paused" on the first poll after a suspend request (exercises
    /// the seed's unpause-and-retry branch).
    pub paused_once: bool,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            memory_mib: 256,
            vcpus: 1,
            workload: Workload::Idle,
            dm_rate: 0.0,
            unmappable: 0,
            stdvga: false,
            link_bytes_per_sec: 1_000_000_000,
            suspend_latency: Duration::from_millis(20),
            paused_once: false,
            seed: 0x5eed_2007,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    /// The guest stops at `at_ns` on the virtual clock.
    SuspendPending {
        at_ns: u64,
        paused: bool,
    },
    Suspended,
}

/// The simulated domain.
pub struct SimDomain {
    cfg: SimConfig,
    mem: Vec<u8>,
    ram_pages: u64,
    top_pfn: u64,
    magic: MagicPfns,
    unmappable: DirtyBitmap,
    clock_ns: u64,
    /// Virtual CPU time the guest has had: equal to `clock_ns` while
    /// running unthrottled, less under a throttle, frozen while suspended.
    guest_ns: u64,
    throttle: u8,
    guest_writes: u64,
    dm_writes: u64,
    rng: u64,
    sweep: u64,
    log_dirty: Option<DirtyBitmap>,
    faults: u64,
    dm: Option<[DirtyBitmap; 2]>,
    dm_active: usize,
    state: RunState,
    cleans: usize,
    script_done: usize,
    resumes: u32,
    calls: Vec<&'static str>,
}

/// Index of a RAM page → its pfn under `xc_hvm_build`'s layout.
pub fn ram_index_to_pfn(i: u64) -> u64 {
    let mut pfn = if i < VGA_HOLE_START {
        i
    } else {
        i + (VGA_HOLE_END - VGA_HOLE_START)
    };
    if pfn >= MMIO_HOLE_START {
        pfn += MMIO_HOLE_PAGES;
    }
    pfn
}

/// A pfn → its RAM index, `None` in a hole.
pub fn pfn_to_ram_index(pfn: u64) -> Option<u64> {
    if pfn < VGA_HOLE_START {
        Some(pfn)
    } else if pfn < VGA_HOLE_END || (MMIO_HOLE_START..MMIO_HOLE_END).contains(&pfn) {
        None
    } else if pfn < MMIO_HOLE_START {
        Some(pfn - (VGA_HOLE_END - VGA_HOLE_START))
    } else {
        Some(pfn - (VGA_HOLE_END - VGA_HOLE_START) - MMIO_HOLE_PAGES)
    }
}

impl SimDomain {
    /// Build the guest: every RAM page holds its pfn and a zero counter.
    pub fn new(cfg: SimConfig) -> Result<Self, DomainError> {
        if cfg.memory_mib < 2 || cfg.memory_mib > 64 * 1024 {
            return Err(DomainError::refused(
                "sim",
                format!("memory {} MiB outside 2..=65536", cfg.memory_mib),
            ));
        }
        if cfg.vcpus == 0 || cfg.vcpus > 32 {
            return Err(DomainError::refused(
                "sim",
                format!("{} vCPUs outside 1..=32", cfg.vcpus),
            ));
        }
        let ram_pages = cfg.memory_mib * 256 - (VGA_HOLE_END - VGA_HOLE_START);
        let top_pfn = ram_index_to_pfn(ram_pages - 1);
        // Fallible: a size the host cannot hold is refused, not an abort.
        let bytes = ram_pages as usize * PAGE_SIZE;
        let mut mem = Vec::new();
        mem.try_reserve_exact(bytes).map_err(|_| {
            DomainError::refused(
                "sim",
                format!(
                    "cannot allocate {} MiB of guest memory on this host",
                    cfg.memory_mib
                ),
            )
        })?;
        mem.resize(bytes, 0);
        for (i, page) in mem.chunks_exact_mut(PAGE_SIZE).enumerate() {
            page[..8].copy_from_slice(&ram_index_to_pfn(i as u64).to_le_bytes());
        }
        let mut unmappable = DirtyBitmap::new(top_pfn + 1);
        let k = cfg.unmappable.min(ram_pages / 2);
        for j in 0..k {
            unmappable.set(ram_index_to_pfn((j + 1) * ram_pages / (k + 1)));
        }
        let magic = MagicPfns::xc_hvm_build(cfg.memory_mib);
        Ok(SimDomain {
            rng: cfg.seed | 1,
            cfg,
            mem,
            ram_pages,
            top_pfn,
            magic,
            unmappable,
            clock_ns: 0,
            guest_ns: 0,
            throttle: 0,
            guest_writes: 0,
            dm_writes: 0,
            sweep: 0,
            log_dirty: None,
            faults: 0,
            dm: None,
            dm_active: 0,
            state: RunState::Running,
            cleans: 0,
            script_done: 0,
            resumes: 0,
            calls: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// RAM pages (`nr_pages` without VRAM).
    pub fn ram_pages(&self) -> u64 {
        self.ram_pages
    }

    /// Highest RAM pfn.
    pub fn top_pfn(&self) -> u64 {
        self.top_pfn
    }

    /// The magic pfns.
    pub fn magic(&self) -> MagicPfns {
        self.magic
    }

    /// The page of `pfn` as the guest sees it now (`None` in a hole).
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        let i = pfn_to_ram_index(pfn).filter(|&i| i < self.ram_pages)? as usize;
        self.mem.get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE)
    }

    /// True if `pfn` is one of the pages that fail to map.
    pub fn is_unmappable(&self, pfn: u64) -> bool {
        self.unmappable.test(pfn)
    }

    /// True while log-dirty mode is on.
    pub fn log_dirty_enabled(&self) -> bool {
        self.log_dirty.is_some()
    }

    /// True once the guest has acknowledged a suspend (and not resumed).
    pub fn is_suspended(&self) -> bool {
        self.state == RunState::Suspended
    }

    /// True when not suspended and no suspend is pending.
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// How often [`Domain::resume`] was called.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// Every `Domain` call made so far, by name.
    pub fn calls(&self) -> &[&'static str] {
        &self.calls
    }

    /// Guest page writes so far.
    pub fn guest_writes(&self) -> u64 {
        self.guest_writes
    }

    /// The throttle in force, percent.
    pub fn throttle(&self) -> u8 {
        self.throttle
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic and cheap.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Write one page: bump its counter and stamp a byte, log it.
    fn write_pfn(&mut self, pfn: u64, by_dm: bool) {
        let Some(i) = pfn_to_ram_index(pfn).filter(|&i| i < self.ram_pages) else {
            return;
        };
        let r = self.next_rand();
        let base = i as usize * PAGE_SIZE;
        let ctr =
            u64::from_le_bytes(self.mem[base + 8..base + 16].try_into().expect("8 bytes")) + 1;
        self.mem[base + 8..base + 16].copy_from_slice(&ctr.to_le_bytes());
        let off = 16 + (r % (PAGE_SIZE as u64 - 16)) as usize;
        self.mem[base + off] = (r >> 56) as u8;
        if by_dm {
            if let Some(dm) = self.dm.as_mut() {
                dm[self.dm_active].set(pfn);
            }
        } else if let Some(ld) = self.log_dirty.as_mut() {
            ld.set(pfn);
            self.faults += 1;
        }
    }

    fn guest_writes_due(&self, t_ns: u64) -> u64 {
        let per_s = |rate: f64, active_ns: u64| (active_ns as f64 * rate / 1e9) as u64;
        match &self.cfg.workload {
            Workload::Idle | Workload::Script(_) => 0,
            Workload::Uniform { rate }
            | Workload::HotSet { rate, .. }
            | Workload::Sweep { rate } => per_s(*rate, t_ns),
            Workload::Bursts { rate, period, duty } => {
                let p = period.as_nanos().max(1) as u64;
                let on = (p as f64 * duty.clamp(0.0, 1.0)) as u64;
                let active = t_ns / p * on + (t_ns % p).min(on);
                per_s(*rate, active)
            }
        }
    }

    fn guest_target(&mut self) -> u64 {
        let ram = self.ram_pages;
        match self.cfg.workload.clone() {
            Workload::HotSet { pages, .. } => {
                let set = pages.clamp(1, ram);
                let base = ram / 4;
                let idx = base + self.next_rand() % set;
                ram_index_to_pfn(idx % ram)
            }
            Workload::Sweep { .. } => {
                let idx = self.sweep % ram;
                self.sweep += 1;
                ram_index_to_pfn(idx)
            }
            _ => ram_index_to_pfn(self.next_rand() % ram),
        }
    }

    /// Move the virtual clock, letting guest and device model write.
    fn advance(&mut self, d: Duration) {
        let t1 = self.clock_ns + d.as_nanos() as u64;
        // A pending suspend takes effect at its time, not at the next poll.
        let run_until = match self.state {
            RunState::SuspendPending { at_ns, .. } => t1.min(at_ns.max(self.clock_ns)),
            _ => t1,
        };
        if self.state != RunState::Suspended {
            let ran = run_until.saturating_sub(self.clock_ns);
            self.guest_ns += if self.throttle == 0 {
                ran
            } else {
                (ran as u128 * u128::from(100 - self.throttle) / 100) as u64
            };
            let due = self.guest_writes_due(self.guest_ns);
            while self.guest_writes < due {
                let pfn = self.guest_target();
                self.write_pfn(pfn, false);
                self.guest_writes += 1;
            }
            let dm_due = (run_until as f64 * self.cfg.dm_rate / 1e9) as u64;
            while self.dm_writes < dm_due {
                let pfn = ram_index_to_pfn(self.next_rand() % self.ram_pages);
                self.write_pfn(pfn, true);
                self.dm_writes += 1;
            }
        }
        self.clock_ns = t1;
        self.settle_suspend();
    }

    /// A pending suspend whose time has come becomes a stopped guest.
    fn settle_suspend(&mut self) {
        if let RunState::SuspendPending { at_ns, .. } = self.state {
            if self.clock_ns >= at_ns {
                self.state = RunState::Suspended;
            }
        }
    }

    fn apply_script(&mut self) {
        let Workload::Script(s) = &self.cfg.workload else {
            return;
        };
        if self.state != RunState::Running || self.script_done > self.cleans {
            return;
        }
        let pfns = s.get(self.cleans).cloned().unwrap_or_default();
        self.script_done = self.cleans + 1;
        for pfn in pfns {
            self.write_pfn(pfn, false);
        }
    }

    fn vram_pages(&self) -> u64 {
        if !self.cfg.stdvga && self.state != RunState::Suspended {
            CIRRUS_VRAM_PAGES
        } else {
            0
        }
    }
}

struct SimPages<'a> {
    pages: Vec<Option<&'a [u8]>>,
}

impl PageMap for SimPages<'_> {
    fn page(&self, j: usize) -> Option<&[u8]> {
        self.pages.get(j).copied().flatten()
    }
}

impl Domain for SimDomain {
    fn platform(&mut self) -> DomainResult<PlatformInfo> {
        self.calls.push("platform");
        Ok(PlatformInfo {
            max_mfn: 0x10_0000 * 64, // a 256 GiB host
            stdvga: self.cfg.stdvga,
        })
    }

    fn info(&mut self) -> DomainResult<DomainInfo> {
        self.calls.push("info");
        self.settle_suspend();
        let mut paused = false;
        if let RunState::SuspendPending {
            at_ns,
            paused: true,
        } = self.state
        {
            paused = true;
            self.state = RunState::SuspendPending {
                at_ns,
                paused: false,
            };
        }
        Ok(DomainInfo {
            nr_pages: self.ram_pages + self.vram_pages(),
            max_memkb: self.cfg.memory_mib * 1024,
            nr_online_vcpus: self.cfg.vcpus,
            suspended: self.state == RunState::Suspended,
            paused,
        })
    }

    fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64> {
        self.calls.push("hvm_param");
        Ok(match param {
            HvmParam::StorePfn => self.magic.store,
            HvmParam::IoreqPfn => self.magic.ioreq,
            HvmParam::BufIoreqPfn => self.magic.bufioreq,
        })
    }

    fn log_dirty_enable(&mut self) -> DomainResult<()> {
        self.calls.push("log_dirty_enable");
        if self.log_dirty.is_some() {
            return Err(DomainError::refused("log_dirty_enable", "already enabled"));
        }
        self.log_dirty = Some(DirtyBitmap::new(self.top_pfn + 1));
        self.faults = 0;
        Ok(())
    }

    fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()> {
        self.calls.push("log_dirty_peek");
        self.apply_script();
        let ld = self
            .log_dirty
            .as_ref()
            .ok_or_else(|| DomainError::refused("log_dirty_peek", "log-dirty is off"))?;
        into.copy_from(ld);
        Ok(())
    }

    fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats> {
        self.calls.push("log_dirty_clean");
        self.apply_script();
        let faults = self.faults;
        let ld = self
            .log_dirty
            .as_mut()
            .ok_or_else(|| DomainError::refused("log_dirty_clean", "log-dirty is off"))?;
        into.copy_from(ld);
        let dirty = ld.count();
        ld.clear_all();
        self.faults = 0;
        self.cleans += 1;
        Ok(DirtyStats {
            fault_count: Some(faults),
            dirty_count: dirty,
        })
    }

    fn log_dirty_off(&mut self) -> DomainResult<()> {
        self.calls.push("log_dirty_off");
        self.log_dirty = None;
        Ok(())
    }

    fn dm_dirty_init(&mut self, len: u64) -> DomainResult<()> {
        self.calls.push("dm_dirty_init");
        self.dm = Some([DirtyBitmap::new(len), DirtyBitmap::new(len)]);
        self.dm_active = 0;
        Ok(())
    }

    fn dm_flip(&mut self, active: usize) -> DomainResult<()> {
        self.calls.push("dm_flip");
        if active > 1 || self.dm.is_none() {
            return Err(DomainError::refused("dm_flip", "no such buffer"));
        }
        self.dm_active = active;
        Ok(())
    }

    fn dm_take(&mut self, which: usize, into: &mut DirtyBitmap, clear: bool) -> DomainResult<()> {
        self.calls.push("dm_take");
        let b = self
            .dm
            .as_mut()
            .and_then(|d| d.get_mut(which))
            .ok_or_else(|| DomainError::refused("dm_take", "no such buffer"))?;
        into.merge(b);
        if clear {
            b.clear_all();
        }
        Ok(())
    }

    fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>> {
        self.calls.push("map_batch");
        let wire = pfns.len() as u64 * (PAGE_SIZE as u64 + 8);
        let ns = wire as u128 * 1_000_000_000 / self.cfg.link_bytes_per_sec.max(1) as u128;
        self.advance(Duration::from_nanos(ns as u64));
        let this: &'a SimDomain = self;
        let pages = pfns
            .iter()
            .map(|&pfn| {
                if this.unmappable.test(pfn) {
                    None
                } else {
                    this.page(pfn)
                }
            })
            .collect();
        Ok(Box::new(SimPages { pages }))
    }

    fn request_suspend(&mut self) -> DomainResult<bool> {
        self.calls.push("request_suspend");
        if self.state == RunState::Running {
            self.state = RunState::SuspendPending {
                at_ns: self.clock_ns + self.cfg.suspend_latency.as_nanos() as u64,
                paused: self.cfg.paused_once,
            };
            self.settle_suspend();
        }
        Ok(true)
    }

    fn unpause(&mut self) -> DomainResult<()> {
        self.calls.push("unpause");
        Ok(())
    }

    fn resume(&mut self) -> DomainResult<()> {
        self.calls.push("resume");
        self.state = RunState::Running;
        self.resumes += 1;
        Ok(())
    }

    fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>> {
        self.calls.push("vcpu_context");
        if vcpu >= self.cfg.vcpus {
            return Err(DomainError::refused(
                "vcpu_context",
                format!("no vCPU {vcpu}"),
            ));
        }
        let v = u64::from(vcpu);
        let regs = VcpuRegisters {
            rax: self.guest_writes,
            rbx: self.clock_ns,
            rcx: v,
            rip: 0x0010_0000 + 0x40 * v,
            rsp: 0x0009_F000 - 0x1000 * v,
            rflags: 0x202,
            cs: 0x10,
            ss: 0x18,
            ds: 0x18,
            es: 0x18,
            cr0: 0x8005_0033,
            cr3: 0x0010_1000,
            cr4: 0x6F0,
            ..Default::default()
        };
        VcpuContext::from_registers(WordSize::W64, &regs)
            .map(|c| c.into_bytes())
            .map_err(|e| DomainError::refused("vcpu_context", e.to_string()))
    }

    fn hvm_context(&mut self) -> DomainResult<Vec<u8>> {
        self.calls.push("hvm_context");
        let cpus = vec![CpuSeed::power_on(); self.cfg.vcpus as usize];
        // CPUID.1:EAX of a 2007 Core 2 (family 6, model 15, stepping 6).
        Ok(seed_reset_blob(0x0000_06F6, &cpus))
    }

    fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>> {
        self.calls.push("device_model_state");
        // A QEVM file with one section holding the DMA write count.
        let mut q = Vec::new();
        q.extend_from_slice(&crate::xend::QEVM_MAGIC.to_be_bytes());
        q.extend_from_slice(&crate::xend::QEVM_VERSION.to_be_bytes());
        let id = b"sim-dm";
        q.push(id.len() as u8);
        q.extend_from_slice(id);
        q.extend_from_slice(&0u32.to_be_bytes());
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&8u32.to_be_bytes());
        q.extend_from_slice(&self.dm_writes.to_be_bytes());
        Ok(Some(q))
    }

    fn now(&mut self) -> Duration {
        Duration::from_nanos(self.clock_ns)
    }

    fn sleep(&mut self, d: Duration) {
        self.advance(d);
    }

    fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
        self.calls.push("set_throttle");
        if percent > crate::domain::MAX_THROTTLE {
            return Err(DomainError::refused(
                "set_throttle",
                format!("{percent} % is over {} %", crate::domain::MAX_THROTTLE),
            ));
        }
        self.throttle = percent;
        Ok(())
    }

    fn guest_progress(&mut self) -> Option<u64> {
        Some(self.guest_ns / 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> SimDomain {
        SimDomain::new(SimConfig {
            memory_mib: 8,
            workload: Workload::Uniform { rate: 100_000.0 },
            ..SimConfig::default()
        })
        .unwrap()
    }

    /// The guest stops `suspend_latency` after the request whether the
    /// saver polls every millisecond or once: polling often must not make
    /// the simulated guest stop sooner (nor later).
    #[test]
    fn suspend_latency_is_time_not_polls() {
        let (mut often, mut once) = (busy(), busy());
        for d in [&mut often, &mut once] {
            d.sleep(Duration::from_millis(3));
            assert!(d.request_suspend().unwrap());
        }
        let mut first_seen = None;
        for ms in 1..=30u64 {
            often.sleep(Duration::from_millis(1));
            if often.info().unwrap().suspended && first_seen.is_none() {
                first_seen = Some(ms);
            }
        }
        once.sleep(Duration::from_millis(30));
        assert!(once.info().unwrap().suspended);
        assert_eq!(first_seen, Some(20));
        assert_eq!(often.guest_writes(), once.guest_writes());
        // 100k writes/s for 3 ms + 20 ms.
        assert_eq!(once.guest_writes(), 2300);
    }

    /// A throttle scales the guest's writes and progress by the share of
    /// CPU it leaves; lifting it restores the full rate.
    #[test]
    fn throttle_scales_writes_and_progress() {
        let mut d = busy();
        d.sleep(Duration::from_millis(10));
        assert_eq!((d.guest_writes(), d.guest_progress()), (1000, Some(10_000)));
        d.set_throttle(75).unwrap();
        d.sleep(Duration::from_millis(100));
        assert_eq!((d.guest_writes(), d.guest_progress()), (3500, Some(35_000)));
        d.set_throttle(0).unwrap();
        d.sleep(Duration::from_millis(10));
        assert_eq!((d.guest_writes(), d.guest_progress()), (4500, Some(45_000)));
        assert!(d.set_throttle(100).is_err());
        assert_eq!(d.throttle(), 0);
    }
}

//! The Xen backend: a real HVM domain behind [`Domain`](crate::domain::Domain), built with cargo
//! feature `xen` (GPL-3.0-only dependencies; see `docs/xen-backend.md`).
//!
//! What the `xenctrl` crate wraps is used through it (domain info, pause,
//! unpause, physinfo); what it lacks — log-dirty control, vCPU context, HVM
//! params, the HVM context blob, suspend and resume, batch foreign mapping
//! with per-page errors — is bound in `ffi` the way that crate binds its
//! own calls: libxenctrl, libxenguest and libxenforeignmemory are loaded at
//! run time with `libloading`. The `xenforeignmemory` crate maps page by
//! page when a whole batch cannot be mapped at once.
//!
//! Mapping Xen's answers onto the trait is in [`convert`](crate::backend::xen::convert), which builds and
//! is tested without the feature. Modern Xen has no qemu-dm shared dirty
//! bitmaps: for a live save the device model is told over QMP to report
//! its DMA writes into Xen's own log-dirty bitmap ([`qmp`](crate::backend::qmp)), so the
//! `dm_*` buffers stay empty and those pages arrive through CLEAN.

pub mod convert;
#[cfg(feature = "xen")]
mod ffi;

pub use convert::SuspendMethod;

use crate::domain::{Domain, DomainError};

/// How to drive one Xen domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenConfig {
    /// The domain to save.
    pub domid: u32,
    /// How the saver's suspend is done.
    pub suspend: SuspendMethod,
    /// The guest uses standard VGA, not Cirrus. Xen does not say (the VGA
    /// model is a device-model option); Cirrus is libxl's default, and it
    /// decides the seed's 0x800-page VRAM adjustment of a live save.
    pub stdvga: bool,
    /// The device model's QMP socket, told to log its DMA writes during a
    /// live save; `None` skips that (only safe for a domain without
    /// emulated DMA). Default: libxl's socket for the domain.
    pub qmp: Option<std::path::PathBuf>,
    /// Where the device model writes its state for `--envelope xend`
    /// (libxl's `/var/lib/xen/qemu-save.DOMID` by default, a path QEMU is
    /// set up to write); read back and removed.
    pub dm_state_file: std::path::PathBuf,
}

impl XenConfig {
    /// Domain `domid` with the defaults: shutdown-suspend, Cirrus, libxl's
    /// QMP socket.
    pub fn new(domid: u32) -> Self {
        XenConfig {
            domid,
            suspend: SuspendMethod::default(),
            stdvga: false,
            qmp: Some(super::qmp::libxl_socket(domid)),
            dm_state_file: format!("/var/lib/xen/qemu-save.{domid}").into(),
        }
    }
}

/// Open the domain `cfg` names; in a build without feature `xen` this is an
/// error saying how to get one.
pub fn open(cfg: XenConfig) -> Result<Box<dyn Domain>, DomainError> {
    #[cfg(feature = "xen")]
    {
        Ok(Box::new(XenDomain::open(cfg)?))
    }
    #[cfg(not(feature = "xen"))]
    {
        let _ = cfg;
        Err(convert::not_built())
    }
}

#[cfg(feature = "xen")]
pub use imp::XenDomain;

#[cfg(feature = "xen")]
mod imp {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use xenforeignmemory::XenForeignMem;

    use super::convert::{self, RawDomInfo, SuspendMethod};
    use super::ffi::{XenHandles, XenLibs};
    use super::XenConfig;
    use crate::backend::qmp::Qmp;
    use crate::domain::{
        DirtyBitmap, DirtyStats, Domain, DomainError, DomainInfo, DomainResult, HvmParam, PageMap,
        PlatformInfo,
    };

    /// A running Xen HVM domain.
    pub struct XenDomain {
        cfg: XenConfig,
        xc: xenctrl::XenControl,
        handles: XenHandles,
        /// Opened on first need: page-by-page mapping when a batch fails whole.
        single: Option<XenForeignMem>,
        log_dirty_on: bool,
        /// The device model's QMP session, once needed.
        qmp: Option<Qmp>,
        /// The device model logs its DMA writes for us.
        dm_logging: bool,
        /// We stopped the device model to save its state.
        dm_stopped: bool,
        paused_by_us: bool,
        start: Instant,
        /// The credit scheduler's parameters before we throttled, restored
        /// when the throttle is lifted or the domain dropped.
        sched_before: Option<convert::SchedCredit>,
    }

    /// The largest device model state read back (QEMU's is a few MiB plus
    /// its VGA RAM).
    const MAX_DM_STATE: u64 = 256 << 20;

    fn xc_err(call: &'static str) -> impl FnOnce(xenctrl::error::XcError) -> DomainError {
        move |e| DomainError::refused(call, e.to_string())
    }

    impl XenDomain {
        /// Load the Xen libraries, open the control and foreign-memory
        /// interfaces, and check that `cfg.domid` is a live HVM domain.
        /// Where no Xen runs this fails with a message saying so.
        pub fn open(cfg: XenConfig) -> Result<Self, DomainError> {
            let libs = XenLibs::load()?;
            convert::check_privcmd(&convert::PRIVCMD_PATHS.map(Path::new))?;
            let xc = xenctrl::XenControl::new_default().map_err(|e| {
                DomainError::Unavailable(format!(
                    "cannot open the Xen control interface (xc_interface_open: {e}): \
                     is this a Xen dom0, run as root?"
                ))
            })?;
            let handles = XenHandles::open(libs)?;
            let mut d = XenDomain {
                cfg,
                xc,
                handles,
                single: None,
                log_dirty_on: false,
                qmp: None,
                dm_logging: false,
                dm_stopped: false,
                paused_by_us: false,
                start: Instant::now(),
                sched_before: None,
            };
            d.raw_info()?;
            Ok(d)
        }

        /// The device model's QMP session, connected on first use.
        fn device_model(&mut self, path: &Path) -> Result<&mut Qmp, DomainError> {
            let q = match self.qmp.take() {
                Some(q) => q,
                None => Qmp::connect(path, Duration::from_secs(5))?,
            };
            Ok(self.qmp.insert(q))
        }

        /// The configuration.
        pub fn config(&self) -> &XenConfig {
            &self.cfg
        }

        fn raw_info(&mut self) -> DomainResult<RawDomInfo> {
            let info = self
                .xc
                .domain_getinfolist(self.cfg.domid)
                .map_err(xc_err("xc_domain_getinfolist"))?;
            let raw = info.map(|i| RawDomInfo {
                domain: u32::from(i.domain),
                flags: i.flags,
                tot_pages: i.tot_pages,
                max_pages: i.max_pages,
                nr_online_vcpus: i.nr_online_vcpus,
            });
            convert::check_domain(raw.as_ref(), self.cfg.domid)?;
            raw.ok_or_else(|| DomainError::refused("xc_domain_getinfolist", "no answer"))
        }
    }

    impl Drop for XenDomain {
        fn drop(&mut self) {
            // The saver turns log-dirty off on every path; this only covers
            // a caller that drops the domain half-way.
            if self.log_dirty_on {
                let _ = self
                    .handles
                    .logdirty(self.cfg.domid, convert::SHADOW_OP_OFF);
            }
            // Likewise the throttle: the domain's own cap comes back.
            if let Some(sc) = self.sched_before.take() {
                let _ = self.handles.sched_credit_set(self.cfg.domid, sc);
            }
        }
    }

    /// Page `pfn` mapped alone through the `xenforeignmemory` crate, copied
    /// out with volatile reads and unmapped at once; `None` if it did not
    /// map. The crate hands the mapping out as `&mut [u8]`: it is only
    /// used for its address, never read through.
    fn copy_single(fm: &XenForeignMem, domid: u32, pfn: u64) -> Option<Vec<u8>> {
        let p = fm.map(domid, libc::PROT_READ, pfn).ok()?;
        let ok = p.len() == hvm_format::PAGE_SIZE;
        let base = std::ptr::NonNull::new(p.as_mut_ptr());
        // SAFETY: `p` is a live, page-aligned mapping of one page (checked
        // length), unmapped only below, after the copy.
        let copied = unsafe { convert::CopiedBatch::copy_from(base.filter(|_| ok), &[0]) };
        let _ = fm.unmap(p);
        ok.then(|| copied.page(0).map(<[u8]>::to_vec))?
    }

    impl Domain for XenDomain {
        fn platform(&mut self) -> DomainResult<PlatformInfo> {
            let p = self.xc.physinfo().map_err(xc_err("xc_physinfo"))?;
            Ok(PlatformInfo {
                max_mfn: p.max_mfn,
                stdvga: self.cfg.stdvga,
            })
        }

        fn info(&mut self) -> DomainResult<DomainInfo> {
            let raw = self.raw_info()?;
            Ok(convert::domain_info(
                &raw,
                self.cfg.suspend,
                self.paused_by_us,
            ))
        }

        fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64> {
            self.handles.hvm_param_get(self.cfg.domid, param as u32)
        }

        fn log_dirty_enable(&mut self) -> DomainResult<()> {
            self.handles
                .logdirty(self.cfg.domid, convert::SHADOW_OP_ENABLE_LOGDIRTY)?;
            self.log_dirty_on = true;
            Ok(())
        }

        fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()> {
            let len = into.len();
            self.handles
                .logdirty_bitmap(
                    self.cfg.domid,
                    convert::SHADOW_OP_PEEK,
                    len,
                    |src, valid| convert::copy_dirty_bits(src, valid, into),
                )
                .map(|_| ())
        }

        fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats> {
            let len = into.len();
            self.handles
                .logdirty_bitmap(
                    self.cfg.domid,
                    convert::SHADOW_OP_CLEAN,
                    len,
                    |src, valid| convert::copy_dirty_bits(src, valid, into),
                )
                .map(|(_, stats)| stats)
        }

        fn log_dirty_off(&mut self) -> DomainResult<()> {
            // The device model first: it stops reporting into a log that is
            // about to go away.
            if self.dm_logging {
                if let Some(q) = self.qmp.as_mut() {
                    q.set_global_dirty_log(false)?;
                }
                self.dm_logging = false;
            }
            // Only undo what this run did: log-dirty enabled by another tool
            // (a migration in progress) is not ours to end.
            if self.log_dirty_on {
                self.handles
                    .logdirty(self.cfg.domid, convert::SHADOW_OP_OFF)?;
                self.log_dirty_on = false;
            }
            Ok(())
        }

        // Modern Xen has no qemu-dm shared dirty bitmaps; QEMU reports its
        // DMA writes into Xen's own log-dirty bitmap (HVMOP_modified_memory)
        // once told to over QMP, as libxl does for a live migration. The
        // two "buffers" therefore exist and stay empty: those pages come
        // back through CLEAN.
        fn dm_dirty_init(&mut self, _len: u64) -> DomainResult<()> {
            let Some(path) = self.cfg.qmp.clone() else {
                return Ok(());
            };
            let explain = |e: DomainError| {
                DomainError::Unavailable(format!(
                    "a live save needs the device model to log its DMA writes \
                     (xen-set-global-dirty-log): {e}; save without --live, or \
                     name the socket with --xen-qmp (--xen-qmp none only for a \
                     domain without emulated DMA)"
                ))
            };
            self.device_model(&path)
                .and_then(|q| q.set_global_dirty_log(true))
                .map_err(explain)?;
            self.dm_logging = true;
            Ok(())
        }

        fn dm_flip(&mut self, active: usize) -> DomainResult<()> {
            if active > 1 {
                return Err(DomainError::refused("dm_flip", "no such buffer"));
            }
            Ok(())
        }

        fn dm_take(
            &mut self,
            which: usize,
            _into: &mut DirtyBitmap,
            _clear: bool,
        ) -> DomainResult<()> {
            if which > 1 {
                return Err(DomainError::refused("dm_take", "no such buffer"));
            }
            Ok(())
        }

        fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>> {
            let XenDomain {
                cfg,
                handles,
                single,
                ..
            } = self;
            // Every page is copied out before the mapping goes; pages that
            // failed are XTAB, even when that is all of them (the seed).
            let whole = match handles.map_batch(cfg.domid, pfns) {
                Ok(m) => return Ok(Box::new(m.copy_out())),
                Err(e) => e,
            };
            // The batch failed as a whole (e.g. no room for one large
            // mapping): map page by page; a page that fails is XTAB.
            let fm: &'a XenForeignMem =
                match single {
                    Some(f) => f,
                    None => single.insert(XenForeignMem::new().map_err(|e| {
                        DomainError::refused("xenforeignmemory_open", e.to_string())
                    })?),
                };
            let pages: Vec<Option<Vec<u8>>> = pfns
                .iter()
                .map(|&pfn| copy_single(fm, cfg.domid, pfn))
                .collect();
            // The batch mapping itself failed and so did every page: that is
            // the seed's "map batch failed", not a batch of XTAB entries.
            if pages.iter().all(Option::is_none) {
                return Err(whole);
            }
            Ok(Box::new(convert::CopiedBatch::from_pages(pages)))
        }

        fn request_suspend(&mut self) -> DomainResult<bool> {
            match self.cfg.suspend {
                SuspendMethod::Shutdown => self
                    .handles
                    .shutdown(self.cfg.domid, convert::SHUTDOWN_SUSPEND)?,
                SuspendMethod::Pause => {
                    self.xc
                        .domain_pause(self.cfg.domid)
                        .map_err(xc_err("xc_domain_pause"))?;
                    self.paused_by_us = true;
                }
            }
            Ok(true)
        }

        fn unpause(&mut self) -> DomainResult<()> {
            self.xc
                .domain_unpause(self.cfg.domid)
                .map_err(xc_err("xc_domain_unpause"))
        }

        fn resume(&mut self) -> DomainResult<()> {
            if self.dm_stopped {
                if let Some(q) = self.qmp.as_mut() {
                    q.cont()?;
                }
                self.dm_stopped = false;
            }
            match self.cfg.suspend {
                // Not cooperative: the guest never saw the suspend.
                SuspendMethod::Shutdown => self.handles.resume(self.cfg.domid, false),
                SuspendMethod::Pause => {
                    if self.paused_by_us {
                        self.unpause()?;
                        self.paused_by_us = false;
                    }
                    Ok(())
                }
            }
        }

        fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>> {
            let raw = self.handles.vcpu_getcontext(self.cfg.domid, vcpu)?;
            convert::seed_vcpu_record(&raw, convert::toolstack_word())
        }

        fn hvm_context(&mut self) -> DomainResult<Vec<u8>> {
            self.handles.hvm_getcontext(self.cfg.domid)
        }

        /// As libxl does: `stop` the device model, have it write its state
        /// (`xen-save-devices-state`), read that back. A failed save
        /// `cont`s it in [`Domain::resume`].
        fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>> {
            let Some(path) = self.cfg.qmp.clone() else {
                return Ok(None);
            };
            let file = self.cfg.dm_state_file.clone();
            self.dm_stopped = true;
            let q = self.device_model(&path)?;
            Ok(Some(q.save_devices_state(&file, MAX_DM_STATE)?))
        }

        fn now(&mut self) -> Duration {
            self.start.elapsed()
        }

        fn sleep(&mut self, d: Duration) {
            std::thread::sleep(d);
        }

        /// The credit scheduler's cap ([`convert::throttled_cap`]); the
        /// domain's own weight and cap are restored when lifted (and on
        /// drop). A domain on another scheduler cannot be throttled.
        fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
            let domid = self.cfg.domid;
            if percent == 0 {
                if let Some(sc) = self.sched_before.take() {
                    if let Err(e) = self.handles.sched_credit_set(domid, sc) {
                        self.sched_before = Some(sc);
                        return Err(e);
                    }
                }
                return Ok(());
            }
            let before = match self.sched_before {
                Some(sc) => sc,
                None => self.handles.sched_credit_get(domid).map_err(|e| {
                    DomainError::Unavailable(format!(
                        "the domain's credit-scheduler cap cannot be read ({e}): \
                         is it on the credit scheduler?"
                    ))
                })?,
            };
            let vcpus = self.raw_info()?.nr_online_vcpus;
            let cap = convert::throttled_cap(before.cap, vcpus, percent);
            self.sched_before = Some(before);
            self.handles.sched_credit_set(
                domid,
                convert::SchedCredit {
                    weight: before.weight,
                    cap,
                },
            )
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_bound_symbol_resolves() {
            // Building with the feature needs libxen-dev (headers for
            // bindgen, libxenctrl.so to link), so the libraries are here:
            // this proves every library and symbol we dlopen exists.
            if let Err(e) = XenLibs::load() {
                panic!("{e}");
            }
        }

        #[test]
        fn open_fails_cleanly_without_xen() {
            if convert::PRIVCMD_PATHS.iter().any(|p| Path::new(p).exists()) {
                eprintln!("skipped: this machine has a Xen control interface");
                return;
            }
            let e = match XenDomain::open(XenConfig::new(1)) {
                Ok(_) => panic!("opened a Xen domain without /dev/xen/privcmd"),
                Err(e) => e,
            };
            assert!(matches!(e, DomainError::Unavailable(_)), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("cannot open the Xen control interface (/dev/xen/privcmd missing)")
                    && msg.contains("is this a Xen dom0?"),
                "{msg}"
            );
            // The boxed entry point the CLI uses says the same.
            let e = super::super::open(super::super::XenConfig::new(1))
                .err()
                .map(|e| e.to_string());
            assert_eq!(e.as_deref(), Some(msg.as_str()));
        }
    }
}

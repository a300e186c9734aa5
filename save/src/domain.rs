//! The hypervisor boundary: everything the saver asks of a running HVM guest.
//!
//! The calls mirror what `xc_hvm_save` @ `e2a44bc7a4` asked of libxc
//! (`xc_domain_getinfo`, `xc_get_hvm_param`, `xc_shadow_control` with
//! ENABLE_LOGDIRTY / PEEK / CLEAN / OFF, qemu-dm's shared dirty bitmaps,
//! `xc_map_foreign_batch`, the suspend callback, `xc_vcpu_getcontext`,
//! `xc_domain_hvm_getcontext`) so that a Xen backend is a thin binding and a
//! KVM backend maps each call onto its own mechanism (dirty-log ioctls, its
//! own memory slots, its vCPU state translated to Xen's records).
//!
//! Time goes through the domain too ([`Domain::now`], [`Domain::sleep`]):
//! a real backend uses the wall clock, the simulator a virtual one, which is
//! what makes simulated runs deterministic and fast.

use std::time::Duration;

use hvm_format::PAGE_SIZE;

/// What a backend call failed with. The saver adds which call it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The hypervisor (or its emulation) refused the operation.
    #[error("{call}: {message}")]
    Refused {
        /// The call, named after its libxc counterpart.
        call: &'static str,
        /// The reason given.
        message: String,
    },
    /// An OS-level failure (ioctl, mmap).
    #[error("{call}: {source}")]
    Io {
        /// The call, named after its libxc counterpart.
        call: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The backend is not available on this machine or build.
    #[error("{0}")]
    Unavailable(String),
}

impl DomainError {
    /// A refusal of `call` with a reason.
    pub fn refused(call: &'static str, message: impl Into<String>) -> Self {
        DomainError::Refused {
            call,
            message: message.into(),
        }
    }
}

/// Result of a backend call.
pub type DomainResult<T> = Result<T, DomainError>;

/// `xc_dominfo_t`, reduced to what the saver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainInfo {
    /// Pages the domain owns now (`tot_pages`): the base of `max_pfn`.
    pub nr_pages: u64,
    /// Configured maximum memory in KiB (`max_memkb`).
    pub max_memkb: u64,
    /// vCPUs online; the seed writes contexts for vCPUs `0..nr_online_vcpus`.
    pub nr_online_vcpus: u32,
    /// The domain has shut down with reason "suspend": the state is final.
    pub suspended: bool,
    /// The domain is paused (not suspended): the seed unpauses and re-tests.
    pub paused: bool,
}

/// Facts about the host and the domain's device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo {
    /// Highest machine frame: the seed refuses domains claiming more.
    pub max_mfn: u64,
    /// The guest uses the standard VGA model, not Cirrus: decides the
    /// 0x800-page VRAM adjustment of a live save (docs/format.md §3).
    pub stdvga: bool,
}

/// HVM parameters the saver reads (`hvm/params.h` @ `e2a44bc7a4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HvmParam {
    /// `HVM_PARAM_STORE_PFN` (1): the xenstore ring page.
    StorePfn = 1,
    /// `HVM_PARAM_IOREQ_PFN` (5): the synchronous ioreq page.
    IoreqPfn = 5,
    /// `HVM_PARAM_BUFIOREQ_PFN` (6): the buffered ioreq page.
    BufIoreqPfn = 6,
}

/// `xc_shadow_op_stats_t`: counters returned by a CLEAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirtyStats {
    /// Write faults taken since the last clean, where the hypervisor counts
    /// them (Xen's shadow op does); `None` where it does not (KVM's dirty
    /// log reports pages, not faults), rather than a number that only
    /// repeats `dirty_count`.
    pub fault_count: Option<u64>,
    /// Pages found dirty since the last clean.
    pub dirty_count: u64,
}

/// A bitmap over pfns `0..len`, one bit per page, in `u64` words (the
/// layout Xen's shadow ops and qemu-dm's shared bitmaps use on x86_64).
#[derive(Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    len: u64,
}

impl std::fmt::Debug for DirtyBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyBitmap")
            .field("len", &self.len)
            .field("set", &self.count())
            .finish()
    }
}

impl DirtyBitmap {
    /// All clear, covering `len` pfns.
    pub fn new(len: u64) -> Self {
        DirtyBitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// Number of pfns covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when it covers no pfn.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit of `pfn`; pfns beyond the end read as clear.
    #[inline]
    pub fn test(&self, pfn: u64) -> bool {
        self.words
            .get((pfn / 64) as usize)
            .is_some_and(|w| w >> (pfn % 64) & 1 == 1)
    }

    /// Set the bit of `pfn` (ignored beyond the end).
    #[inline]
    pub fn set(&mut self, pfn: u64) {
        if pfn < self.len {
            if let Some(w) = self.words.get_mut((pfn / 64) as usize) {
                *w |= 1 << (pfn % 64);
            }
        }
    }

    /// Clear the bit of `pfn`.
    #[inline]
    pub fn clear(&mut self, pfn: u64) {
        if let Some(w) = self.words.get_mut((pfn / 64) as usize) {
            *w &= !(1 << (pfn % 64));
        }
    }

    /// Set every bit (`memset(to_send, 0xff, BITMAP_SIZE)`).
    pub fn fill(&mut self) {
        self.words.iter_mut().for_each(|w| *w = u64::MAX);
        self.trim();
    }

    /// Clear every bit.
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// `self |= other` over the common length.
    pub fn merge(&mut self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
        self.trim();
    }

    /// Copy `other` into `self` over the common length, clearing the rest.
    pub fn copy_from(&mut self, other: &DirtyBitmap) {
        self.clear_all();
        self.merge(other);
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Set pfns in ascending order.
    pub fn iter_set(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as u64;
                    w &= w - 1;
                    i as u64 * 64 + b
                })
            })
        })
    }

    /// The words, for backends that fill them from a hypervisor call.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    fn trim(&mut self) {
        let tail = self.len % 64;
        if tail != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << tail) - 1;
            }
        }
    }
}

/// Pages of one `map_batch` call. Entry `j` is `None` when pfn `j` failed to
/// map: the seed's privcmd rewrote such entries to XTAB in place, so they go
/// out without data.
pub trait PageMap {
    /// Page `j` of the batch (4096 bytes), or `None` if it did not map (the
    /// saver sends it as XTAB). The bytes must not change while borrowed: a
    /// backend whose pages are live mappings of a running guest copies them
    /// out first (see the Xen backend's `CopiedBatch`).
    fn page(&self, j: usize) -> Option<&[u8]>;
}

impl PageMap for Vec<Option<&[u8]>> {
    fn page(&self, j: usize) -> Option<&[u8]> {
        self.get(j)
            .copied()
            .flatten()
            .filter(|p| p.len() == PAGE_SIZE)
    }
}

/// The hypervisor boundary. Every call may fail; the saver turns log-dirty
/// off and resumes the guest it suspended whatever fails.
///
/// Calls come in the seed's order: `platform`, `info`, the HVM params,
/// `log_dirty_enable` (live), `dm_dirty_init` (live), then passes of
/// `log_dirty_peek` + `map_batch`, `log_dirty_clean`, `dm_flip`/`dm_take`
/// (and `set_throttle` between passes when the policy throttles),
/// `suspend` + `info` (the retry loop), `vcpu_context`, `hvm_context`,
/// `device_model_state`, and `log_dirty_off` / `resume` at the end.
pub trait Domain {
    /// Host facts (`get_platform_info`) and the VGA model.
    fn platform(&mut self) -> DomainResult<PlatformInfo>;
    /// `xc_domain_getinfo`.
    fn info(&mut self) -> DomainResult<DomainInfo>;
    /// `xc_get_hvm_param`.
    fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64>;

    /// `XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`: start tracking writes.
    fn log_dirty_enable(&mut self) -> DomainResult<()>;
    /// `XEN_DOMCTL_SHADOW_OP_PEEK`: copy the dirty bits into `into`
    /// without clearing them.
    fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()>;
    /// `XEN_DOMCTL_SHADOW_OP_CLEAN`: copy the dirty bits into `into`
    /// (replacing its contents), clear them, and return the counters.
    fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats>;
    /// `XEN_DOMCTL_SHADOW_OP_OFF`. Must be safe to call when not enabled.
    fn log_dirty_off(&mut self) -> DomainResult<()>;

    /// `init_qemu_maps`: the device model starts logging its own writes to
    /// guest memory (DMA) into two bitmaps of `len` bits; buffer 0 is active.
    fn dm_dirty_init(&mut self, len: u64) -> DomainResult<()>;
    /// `qemu_flip_buffer`: the device model logs into buffer `active` from
    /// now on.
    fn dm_flip(&mut self, active: usize) -> DomainResult<()>;
    /// Merge buffer `which` into `into`; with `clear` also zero it (the seed
    /// clears the buffer it took after a flip, not the active one at the
    /// end).
    fn dm_take(&mut self, which: usize, into: &mut DirtyBitmap, clear: bool) -> DomainResult<()>;

    /// `xc_map_foreign_batch(PROT_READ)`: map `pfns` read-only. A whole
    /// failure is an error; a page that fails alone is `None` in the result.
    fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>>;

    /// The suspend callback (xend's `suspend` request through xc_save):
    /// ask the guest to suspend. `false` means the request was refused.
    /// Completion is observed through [`info`](Self::info).
    fn request_suspend(&mut self) -> DomainResult<bool>;
    /// `xc_domain_unpause`, used by the suspend retry loop.
    fn unpause(&mut self) -> DomainResult<()>;
    /// Undo a suspend after a failed save: the guest runs on.
    fn resume(&mut self) -> DomainResult<()>;

    /// `xc_vcpu_getcontext`: the `vcpu_guest_context` bytes of `vcpu`
    /// (5168 for a 64-bit toolstack).
    fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>>;
    /// `xc_domain_hvm_getcontext`: the HVM context blob (bytes used).
    fn hvm_context(&mut self) -> DomainResult<Vec<u8>>;
    /// The device model's saved state (a QEVM file) for the xend envelope,
    /// or `None` when the backend has no device model.
    fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>>;

    /// Current time on the domain's clock.
    fn now(&mut self) -> Duration;
    /// Wait on the domain's clock (the seed's `usleep`s, the rate limiter).
    fn sleep(&mut self, d: Duration);

    /// Slow the running guest down so pre-copy can catch up with it: its
    /// vCPUs sleep for `percent` (at most [`MAX_THROTTLE`]) of each short
    /// period; 0 lifts the throttle. Backends that cannot throttle refuse
    /// any level but 0 with [`DomainError::Unavailable`], and the saver then
    /// goes on without. A backend lifts its throttle when it is dropped too.
    fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
        if percent == 0 {
            Ok(())
        } else {
            Err(DomainError::Unavailable(
                "this backend cannot throttle the guest".into(),
            ))
        }
    }

    /// A counter of the work the guest has done so far (the KVM workload's
    /// steps, the simulator's modelled steps), to report what a throttle
    /// cost it; `None` where the backend cannot see one.
    fn guest_progress(&mut self) -> Option<u64> {
        None
    }
}

/// The most a guest is throttled: QEMU's `max-cpu-throttle` (its vCPUs
/// still run 1 % of the time, so the guest never stops entirely).
pub const MAX_THROTTLE: u8 = 99;

impl<D: Domain + ?Sized> Domain for Box<D> {
    fn platform(&mut self) -> DomainResult<PlatformInfo> {
        (**self).platform()
    }
    fn info(&mut self) -> DomainResult<DomainInfo> {
        (**self).info()
    }
    fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64> {
        (**self).hvm_param(param)
    }
    fn log_dirty_enable(&mut self) -> DomainResult<()> {
        (**self).log_dirty_enable()
    }
    fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()> {
        (**self).log_dirty_peek(into)
    }
    fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats> {
        (**self).log_dirty_clean(into)
    }
    fn log_dirty_off(&mut self) -> DomainResult<()> {
        (**self).log_dirty_off()
    }
    fn dm_dirty_init(&mut self, len: u64) -> DomainResult<()> {
        (**self).dm_dirty_init(len)
    }
    fn dm_flip(&mut self, active: usize) -> DomainResult<()> {
        (**self).dm_flip(active)
    }
    fn dm_take(&mut self, which: usize, into: &mut DirtyBitmap, clear: bool) -> DomainResult<()> {
        (**self).dm_take(which, into, clear)
    }
    fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>> {
        (**self).map_batch(pfns)
    }
    fn request_suspend(&mut self) -> DomainResult<bool> {
        (**self).request_suspend()
    }
    fn unpause(&mut self) -> DomainResult<()> {
        (**self).unpause()
    }
    fn resume(&mut self) -> DomainResult<()> {
        (**self).resume()
    }
    fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>> {
        (**self).vcpu_context(vcpu)
    }
    fn hvm_context(&mut self) -> DomainResult<Vec<u8>> {
        (**self).hvm_context()
    }
    fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>> {
        (**self).device_model_state()
    }
    fn now(&mut self) -> Duration {
        (**self).now()
    }
    fn sleep(&mut self, d: Duration) {
        (**self).sleep(d)
    }
    fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
        (**self).set_throttle(percent)
    }
    fn guest_progress(&mut self) -> Option<u64> {
        (**self).guest_progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_ops() {
        let mut b = DirtyBitmap::new(130);
        b.set(0);
        b.set(64);
        b.set(129);
        b.set(130); // beyond the end: ignored
        assert_eq!(b.count(), 3);
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 64, 129]);
        b.clear(64);
        assert!(!b.test(64) && b.test(129) && !b.test(1000));
        b.fill();
        assert_eq!(b.count(), 130, "fill stops at len");
        let mut c = DirtyBitmap::new(130);
        c.set(7);
        b.copy_from(&c);
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![7]);
    }
}

//! Fault injection: a [`Domain`] wrapper that fails one chosen call, so tests
//! can prove every failure path leaves the guest running, log-dirty off and
//! no image behind.

use std::time::Duration;

use crate::domain::{
    DirtyBitmap, DirtyStats, Domain, DomainError, DomainInfo, DomainResult, HvmParam, PageMap,
    PlatformInfo,
};

/// Wraps a domain; call number `fail_at` (0-based, over all fallible calls)
/// fails with an injected error. Calls are counted either way.
pub struct Faulty<D> {
    /// The real domain.
    pub inner: D,
    /// Which call fails (`None`: none).
    pub fail_at: Option<u64>,
    calls: u64,
    failed: Option<&'static str>,
}

impl<D: Domain> Faulty<D> {
    /// Wrap `inner`, failing call `fail_at`.
    pub fn new(inner: D, fail_at: Option<u64>) -> Self {
        Faulty {
            inner,
            fail_at,
            calls: 0,
            failed: None,
        }
    }

    /// Fallible calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The call that was failed, if one was.
    pub fn failed(&self) -> Option<&'static str> {
        self.failed
    }

    fn gate(&mut self, name: &'static str) -> DomainResult<()> {
        let n = self.calls;
        self.calls += 1;
        if Some(n) == self.fail_at {
            self.failed = Some(name);
            return Err(DomainError::refused(name, "injected fault"));
        }
        Ok(())
    }
}

impl<D: Domain> Domain for Faulty<D> {
    fn platform(&mut self) -> DomainResult<PlatformInfo> {
        self.gate("platform")?;
        self.inner.platform()
    }
    fn info(&mut self) -> DomainResult<DomainInfo> {
        self.gate("info")?;
        self.inner.info()
    }
    fn hvm_param(&mut self, param: HvmParam) -> DomainResult<u64> {
        self.gate("hvm_param")?;
        self.inner.hvm_param(param)
    }
    fn log_dirty_enable(&mut self) -> DomainResult<()> {
        self.gate("log_dirty_enable")?;
        self.inner.log_dirty_enable()
    }
    fn log_dirty_peek(&mut self, into: &mut DirtyBitmap) -> DomainResult<()> {
        self.gate("log_dirty_peek")?;
        self.inner.log_dirty_peek(into)
    }
    fn log_dirty_clean(&mut self, into: &mut DirtyBitmap) -> DomainResult<DirtyStats> {
        self.gate("log_dirty_clean")?;
        self.inner.log_dirty_clean(into)
    }
    fn log_dirty_off(&mut self) -> DomainResult<()> {
        self.gate("log_dirty_off")?;
        self.inner.log_dirty_off()
    }
    fn dm_dirty_init(&mut self, len: u64) -> DomainResult<()> {
        self.gate("dm_dirty_init")?;
        self.inner.dm_dirty_init(len)
    }
    fn dm_flip(&mut self, active: usize) -> DomainResult<()> {
        self.gate("dm_flip")?;
        self.inner.dm_flip(active)
    }
    fn dm_take(&mut self, which: usize, into: &mut DirtyBitmap, clear: bool) -> DomainResult<()> {
        self.gate("dm_take")?;
        self.inner.dm_take(which, into, clear)
    }
    fn map_batch<'a>(&'a mut self, pfns: &[u64]) -> DomainResult<Box<dyn PageMap + 'a>> {
        self.gate("map_batch")?;
        self.inner.map_batch(pfns)
    }
    fn request_suspend(&mut self) -> DomainResult<bool> {
        self.gate("request_suspend")?;
        self.inner.request_suspend()
    }
    fn unpause(&mut self) -> DomainResult<()> {
        self.gate("unpause")?;
        self.inner.unpause()
    }
    fn resume(&mut self) -> DomainResult<()> {
        self.gate("resume")?;
        self.inner.resume()
    }
    fn vcpu_context(&mut self, vcpu: u32) -> DomainResult<Vec<u8>> {
        self.gate("vcpu_context")?;
        self.inner.vcpu_context(vcpu)
    }
    fn hvm_context(&mut self) -> DomainResult<Vec<u8>> {
        self.gate("hvm_context")?;
        self.inner.hvm_context()
    }
    fn device_model_state(&mut self) -> DomainResult<Option<Vec<u8>>> {
        self.gate("device_model_state")?;
        self.inner.device_model_state()
    }
    fn now(&mut self) -> Duration {
        self.inner.now()
    }
    fn sleep(&mut self, d: Duration) {
        self.inner.sleep(d)
    }
    fn set_throttle(&mut self, percent: u8) -> DomainResult<()> {
        // Lifting is cleanup: it must reach the backend even after the
        // injected failure, as the saver's other cleanup calls do.
        if percent > 0 {
            self.gate("set_throttle")?;
        }
        self.inner.set_throttle(percent)
    }
    fn guest_progress(&mut self) -> Option<u64> {
        self.inner.guest_progress()
    }
}

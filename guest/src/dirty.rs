//! Log-dirty over KVM's three mechanisms, behind Xen's semantics.
//!
//! Xen's log-dirty has `enable`, `peek` (read without clearing), `clean` (read and reset) and
//! `disable`. KVM offers:
//! - classic `KVM_GET_DIRTY_LOG`: reading clears and re-protects, so `peek` accumulates into a
//!   host-side bitmap that the next `clean` hands out;
//! - manual protect (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`, with INITIALLY_SET when offered):
//!   `KVM_GET_DIRTY_LOG` only reads (a true peek) and `KVM_CLEAR_DIRTY_LOG` re-protects exactly the
//!   pages we were told about;
//! - the dirty ring (`KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]`): per-vCPU rings of dirtied gfns,
//!   harvested while the guest runs (also by the vCPU thread when its ring fills) into the
//!   host-side bitmap, then `KVM_RESET_DIRTY_RINGS`.
//!
//! Only slot 0 (RAM) is logged. Host writes into guest memory are not seen by any mechanism.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_clear_dirty_log, kvm_dirty_gfn, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::errno;

use crate::error::{Error, Result};

/// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`; kvm-ioctls has no wrapper.
const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xC018_AEC0;
/// `_IO(KVMIO, 0xc7)`; kvm-ioctls has no wrapper.
const KVM_RESET_DIRTY_RINGS: libc::c_ulong = 0xAEC7;
const KVM_DIRTY_GFN_F_DIRTY: u32 = 1;
const KVM_DIRTY_GFN_F_RESET: u32 = 2;

/// Which mechanism a VM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DirtyMechanism {
    /// `KVM_GET_DIRTY_LOG`, clearing on read.
    GetDirtyLog,
    /// `KVM_GET_DIRTY_LOG` + `KVM_CLEAR_DIRTY_LOG` with manual protect.
    ManualProtect,
    /// Per-vCPU dirty rings.
    Ring,
}

/// What the VM configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirtyMode {
    /// Manual protect when offered, else classic. (The ring must be asked for: it changes how
    /// vCPUs exit.)
    #[default]
    Auto,
    /// Exactly this mechanism; VM creation fails if the host lacks it.
    Force(DirtyMechanism),
}

/// A dirty bitmap: one bit per guest page, bit `gfn % 64` of word `gfn / 64`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    pages: u64,
}

impl DirtyBitmap {
    /// An empty bitmap for `pages` pages.
    pub fn new(pages: u64) -> Self {
        DirtyBitmap {
            words: vec![0; pages.div_ceil(64) as usize],
            pages,
        }
    }
    /// Pages covered.
    pub fn pages(&self) -> u64 {
        self.pages
    }
    /// The words, for bulk consumers (the saver's to_send/to_skip).
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    /// Mutable words.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }
    /// Whether `gfn` is dirty (false beyond the end).
    pub fn get(&self, gfn: u64) -> bool {
        self.words
            .get((gfn / 64) as usize)
            .is_some_and(|w| w & (1 << (gfn % 64)) != 0)
    }
    /// Marks `gfn` dirty (ignored beyond the end).
    pub fn set(&mut self, gfn: u64) {
        if gfn < self.pages {
            if let Some(w) = self.words.get_mut((gfn / 64) as usize) {
                *w |= 1 << (gfn % 64);
            }
        }
    }
    /// Number of dirty pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }
    /// The dirty gfns in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(i as u64 * 64 + u64::from(b))
            })
        })
    }
    fn or_words(&mut self, other: &[u64]) {
        for (a, b) in self.words.iter_mut().zip(other) {
            *a |= *b;
        }
    }
    fn resize_to(&mut self, pages: u64) {
        self.pages = pages;
        self.words.clear();
        self.words.resize(pages.div_ceil(64) as usize, 0);
    }
}

/// What one `peek` or `clean` cost and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    /// The mechanism that reported these pages.
    pub mechanism: DirtyMechanism,
    /// Pages reported dirty.
    pub dirty_pages: u64,
    /// Ring entries harvested (ring only).
    pub ring_entries: u64,
    /// Time in the fetch ioctl(s) or ring walk.
    pub fetch_time: Duration,
    /// Time re-protecting (CLEAR_DIRTY_LOG or RESET_DIRTY_RINGS).
    pub reprotect_time: Duration,
    /// Whole call.
    pub total: Duration,
}

/// One vCPU's mapped dirty ring.
struct Ring {
    gfns: *mut kvm_dirty_gfn,
    entries: u32,
    next: u32,
    map_len: usize,
}

// SAFETY: the ring mapping is shared memory owned by this struct until drop; all access goes
// through the `DirtyLog` mutex and atomics on the flag words.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map_ring`.
        unsafe {
            libc::munmap(self.gfns as *mut libc::c_void, self.map_len);
        }
    }
}

struct Inner {
    enabled: bool,
    /// Host-side accumulation (classic and ring).
    acc: DirtyBitmap,
    rings: Vec<Ring>,
    /// Number of ring-full exits seen.
    ring_full_exits: u64,
}

/// The log-dirty state of one VM's RAM slot.
pub struct DirtyLog {
    mechanism: DirtyMechanism,
    vm: Arc<VmFd>,
    region: kvm_userspace_memory_region,
    pages: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyLog")
            .field("mechanism", &self.mechanism)
            .field("pages", &self.pages)
            .finish()
    }
}

impl DirtyLog {
    pub(crate) fn new(
        mechanism: DirtyMechanism,
        vm: Arc<VmFd>,
        region: kvm_userspace_memory_region,
    ) -> Self {
        let pages = region.memory_size / crate::layout::PAGE_SIZE;
        DirtyLog {
            mechanism,
            vm,
            region,
            pages,
            inner: Mutex::new(Inner {
                enabled: false,
                acc: DirtyBitmap::new(pages),
                rings: Vec::new(),
                ring_full_exits: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Maps vCPU `fd`'s ring (ring mechanism only), right after the vCPU is created.
    pub(crate) fn map_ring(&self, fd: libc::c_int, ring_bytes: usize) -> Result<()> {
        let page = 4096i64;
        // SAFETY: maps the vCPU's ring region at the offset KVM defines; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                (kvm_bindings::KVM_DIRTY_LOG_PAGE_OFFSET as i64) * page,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::os("mmap of the dirty ring"));
        }
        let entries = (ring_bytes / std::mem::size_of::<kvm_dirty_gfn>()) as u32;
        self.lock().rings.push(Ring {
            gfns: p as *mut kvm_dirty_gfn,
            entries,
            next: 0,
            map_len: ring_bytes,
        });
        Ok(())
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> DirtyMechanism {
        self.mechanism
    }

    /// Pages covered (RAM pages).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether logging is on.
    pub fn is_enabled(&self) -> bool {
        self.lock().enabled
    }

    /// Ring-full exits handled so far.
    pub fn ring_full_exits(&self) -> u64 {
        self.lock().ring_full_exits
    }

    fn set_slot_flags(&self, flags: u32) -> Result<()> {
        let mut r = self.region;
        r.flags = flags;
        // SAFETY: re-registers slot 0 with the same host mapping (owned by the VM for its
        // lifetime), changing only the flags.
        unsafe { self.vm.set_user_memory_region(r) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))
    }

    /// Starts logging. With manual protect and INITIALLY_SET every page starts dirty (Xen's
    /// first pass sends everything anyway); otherwise every page is write-protected now.
    pub fn enable(&self) -> Result<()> {
        let mut g = self.lock();
        if g.enabled {
            return Ok(());
        }
        self.set_slot_flags(KVM_MEM_LOG_DIRTY_PAGES)?;
        g.acc.clear();
        g.enabled = true;
        Ok(())
    }

    /// Stops logging and drops what was accumulated.
    pub fn disable(&self) -> Result<()> {
        let mut g = self.lock();
        if !g.enabled {
            return Ok(());
        }
        if self.mechanism == DirtyMechanism::Ring {
            let mut scratch = DirtyBitmap::new(self.pages);
            self.harvest_locked(&mut g, &mut scratch)?;
        }
        self.set_slot_flags(0)?;
        g.acc.clear();
        g.enabled = false;
        Ok(())
    }

    /// Reads the dirty set without resetting it (Xen's PEEK).
    pub fn peek(&self, out: &mut DirtyBitmap) -> Result<CleanStats> {
        self.fetch(out, false)
    }

    /// Reads the dirty set and resets it (Xen's CLEAN): pages written after this call show up
    /// in the next one.
    pub fn clean(&self, out: &mut DirtyBitmap) -> Result<CleanStats> {
        self.fetch(out, true)
    }

    /// Harvests full rings from a vCPU thread (ring-full exit).
    pub(crate) fn on_ring_full(&self) -> Result<()> {
        let mut g = self.lock();
        g.ring_full_exits += 1;
        let mut acc = std::mem::take(&mut g.acc);
        let r = self.harvest_locked(&mut g, &mut acc);
        g.acc = acc;
        r.map(|_| ())
    }

    fn fetch(&self, out: &mut DirtyBitmap, reset: bool) -> Result<CleanStats> {
        let start = Instant::now();
        let mut g = self.lock();
        if !g.enabled {
            return Err(Error::RunState("dirty logging is not enabled".into()));
        }
        out.resize_to(self.pages);
        let mut stats = CleanStats {
            mechanism: self.mechanism,
            dirty_pages: 0,
            ring_entries: 0,
            fetch_time: Duration::ZERO,
            reprotect_time: Duration::ZERO,
            total: Duration::ZERO,
        };
        match self.mechanism {
            DirtyMechanism::GetDirtyLog => {
                let t = Instant::now();
                let words = self.get_dirty_log()?;
                stats.fetch_time = t.elapsed();
                g.acc.or_words(&words);
                out.or_words(g.acc.words());
                if reset {
                    g.acc.clear();
                }
            }
            DirtyMechanism::ManualProtect => {
                let t = Instant::now();
                let words = self.get_dirty_log()?;
                stats.fetch_time = t.elapsed();
                out.or_words(&words);
                if reset {
                    let t = Instant::now();
                    self.clear_dirty_log(&words)?;
                    stats.reprotect_time = t.elapsed();
                }
            }
            DirtyMechanism::Ring => {
                let mut acc = std::mem::take(&mut g.acc);
                let r = self.harvest_locked(&mut g, &mut acc);
                g.acc = acc;
                let (entries, walk, reprotect) = r?;
                stats.ring_entries = entries;
                stats.fetch_time = walk;
                stats.reprotect_time = reprotect;
                out.or_words(g.acc.words());
                if reset {
                    g.acc.clear();
                }
            }
        }
        stats.dirty_pages = out.count();
        stats.total = start.elapsed();
        Ok(stats)
    }

    fn get_dirty_log(&self) -> Result<Vec<u64>> {
        self.vm
            .get_dirty_log(self.region.slot, self.region.memory_size as usize)
            .map_err(Error::kvm("KVM_GET_DIRTY_LOG"))
    }

    fn clear_dirty_log(&self, words: &[u64]) -> Result<()> {
        let mut bitmap = words.to_vec();
        // SAFETY: an all-zero kvm_clear_dirty_log is valid; fields are set below.
        let mut arg: kvm_clear_dirty_log = unsafe { std::mem::zeroed() };
        arg.slot = self.region.slot;
        arg.first_page = 0;
        arg.num_pages = self.pages as u32;
        arg.__bindgen_anon_1.dirty_bitmap = bitmap.as_mut_ptr() as *mut libc::c_void;
        // SAFETY: the ioctl reads `num_pages` bits from `bitmap`, which holds a full slot's
        // worth of words and outlives the call.
        let ret = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&*self.vm),
                KVM_CLEAR_DIRTY_LOG as _,
                &arg,
            )
        };
        if ret < 0 {
            return Err(Error::Kvm {
                op: "KVM_CLEAR_DIRTY_LOG",
                source: errno::Error::last(),
            });
        }
        Ok(())
    }

    /// Walks every ring, marks harvested entries for reset, then resets the rings (which
    /// re-protects those pages). Returns (entries, walk time, reset time).
    fn harvest_locked(
        &self,
        g: &mut Inner,
        acc: &mut DirtyBitmap,
    ) -> Result<(u64, Duration, Duration)> {
        let t = Instant::now();
        let mut total = 0u64;
        let slot = self.region.slot;
        for ring in g.rings.iter_mut() {
            loop {
                let idx = (ring.next & (ring.entries - 1)) as usize;
                // SAFETY: idx < entries, inside the ring mapping; the flags word is an aligned
                // u32 shared with the kernel, accessed atomically.
                let e = unsafe { ring.gfns.add(idx) };
                // SAFETY: as above; `flags` is the first field of kvm_dirty_gfn.
                let flags = unsafe { &*(std::ptr::addr_of_mut!((*e).flags) as *const AtomicU32) };
                if flags.load(Ordering::Acquire) & KVM_DIRTY_GFN_F_DIRTY == 0 {
                    break;
                }
                // SAFETY: the kernel published this entry (DIRTY seen with acquire).
                let (eslot, offset) = unsafe { ((*e).slot, (*e).offset) };
                if eslot & 0xffff == slot {
                    acc.set(offset);
                }
                flags.store(KVM_DIRTY_GFN_F_RESET, Ordering::Release);
                ring.next = ring.next.wrapping_add(1);
                total += 1;
            }
        }
        let walk = t.elapsed();
        let t = Instant::now();
        if total > 0 {
            fence(Ordering::SeqCst);
            // SAFETY: KVM_RESET_DIRTY_RINGS takes no argument.
            let ret = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&*self.vm),
                    KVM_RESET_DIRTY_RINGS as _,
                    0,
                )
            };
            if ret < 0 {
                return Err(Error::Kvm {
                    op: "KVM_RESET_DIRTY_RINGS",
                    source: errno::Error::last(),
                });
            }
        }
        Ok((total, walk, t.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bits_and_iteration() {
        let mut b = DirtyBitmap::new(130);
        for g in [0, 63, 64, 129, 130, 1000] {
            b.set(g);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(b.count(), 4);
        assert!(b.get(129) && !b.get(130) && !b.get(5000));
        b.clear();
        assert_eq!(b.count(), 0);
    }
}

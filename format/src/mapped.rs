//! Read-only maps of image files that survive the file shrinking underneath.
//!
//! `hvm-inspect digest` and `hvm-restore-check` map the image so pages are
//! hashed and compared where they lie. If another process truncates the file
//! meanwhile, touching a page past the new end raises SIGBUS, which used to
//! kill them with exit 135 and no message. Checking the length first cannot
//! help: the file can shrink between the check and the access. So, as
//! EFL's `eina_mmap_safety` and the `memmap2` docs' "catching SIGBUS" do,
//! a SIGBUS handler looks the faulting address up among the live
//! [`GuardedMap`]s, replaces the rest of that mapping with zero pages (so
//! the access, and every later one, completes) and records the offset. The
//! reader finishes on zeros and then asks [`GuardedMap::shrunk_at`]: the
//! caller turns that into an I/O error naming the offset, never a verdict.
//! A SIGBUS at any other address restores the previous disposition and
//! faults again, exactly as without this module.
//!
//! This is shared by both binaries' readers, which is why it lives in the
//! format crate; it is Linux-only like the rest of the tools.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use memmap2::Mmap;

/// Maps that can be guarded at once.
const SLOTS: usize = 64;
/// `fault` of a slot whose mapping never faulted.
const NO_FAULT: u64 = u64::MAX;

struct Slot {
    used: AtomicBool,
    base: AtomicUsize,
    len: AtomicUsize,
    fault: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // one initializer per array element
const EMPTY: Slot = Slot {
    used: AtomicBool::new(false),
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    fault: AtomicU64::new(NO_FAULT),
};
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // Only atomics and mmap/sigaction (system calls) here: async-signal-safe.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for s in &TABLE {
        let base = s.base.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        if base == 0 || addr < base || addr - base >= len {
            continue;
        }
        let from = addr & !(page - 1);
        // SAFETY: `from..base + len` lies inside a mapping that a live
        // GuardedMap owns (its slot is cleared before it is unmapped) and
        // that is only ever read; replacing it with anonymous zero pages
        // keeps every reference into it valid and readable.
        let r = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                base + len - from,
                libc::PROT_READ,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            s.fault.fetch_min((from - base) as u64, Ordering::AcqRel);
            return;
        }
    }
    // Not one of ours (or the kernel refused): let the previous disposition
    // (usually the default, which ends the process) take the repeated fault.
    // SAFETY: restoring a disposition read from the kernel, or the default.
    unsafe {
        match PREVIOUS.get() {
            Some(prev) => libc::sigaction(libc::SIGBUS, prev, std::ptr::null_mut()),
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                0
            }
        };
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            PAGE.store(p as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // has the SA_SIGINFO signature and only does async-signal-safe work.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &sa, &mut prev) == 0 {
                let _ = PREVIOUS.set(prev);
            }
        }
    });
}

/// A read-only map of a whole file, guarded against the file shrinking.
pub struct GuardedMap {
    map: Option<Mmap>,
    slot: Option<usize>,
}

impl std::fmt::Debug for GuardedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedMap")
            .field("len", &self.bytes().len())
            .field("shrunk_at", &self.shrunk_at())
            .finish()
    }
}

impl GuardedMap {
    /// Map `file` (an empty file maps to no bytes).
    pub fn map(file: &File) -> io::Result<Self> {
        install();
        if file.metadata()?.len() == 0 {
            return Ok(GuardedMap {
                map: None,
                slot: None,
            });
        }
        // SAFETY: read-only and private to this process. A truncation by
        // another process while it is mapped is caught by the SIGBUS guard
        // registered below and reported by `shrunk_at`; nothing writes
        // through the map.
        let map = unsafe { Mmap::map(file) }?;
        let slot = TABLE
            .iter()
            .position(|s| {
                s.used
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("more than 64 images mapped at once"))?;
        let s = &TABLE[slot];
        s.fault.store(NO_FAULT, Ordering::Release);
        s.len.store(map.len(), Ordering::Release);
        s.base.store(map.as_ptr() as usize, Ordering::Release);
        Ok(GuardedMap {
            map: Some(map),
            slot: Some(slot),
        })
    }

    /// The file's bytes as mapped.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Where the file was found to have shrunk while mapped: the offset of
    /// the first page that could not be read. From there on the bytes read
    /// as zeros, so anything computed from them must be discarded.
    pub fn shrunk_at(&self) -> Option<u64> {
        let f = TABLE[self.slot?].fault.load(Ordering::Acquire);
        (f != NO_FAULT).then_some(f)
    }

    /// An error naming the offset if part of the map could not be read;
    /// `file` is the mapped file, whose length now tells a truncation from
    /// a device that failed to read (both raise SIGBUS).
    pub fn check(&self, file: &File) -> io::Result<()> {
        let Some(offset) = self.shrunk_at() else {
            return Ok(());
        };
        let why = match file.metadata() {
            Ok(m) if m.len() < self.bytes().len() as u64 => {
                format!("the file shrank to {} bytes while it was read", m.len())
            }
            _ => "the device failed to read it".to_string(),
        };
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the bytes from offset {offset} on could not be read: {why}"),
        ))
    }

    /// Advise the kernel (errors ignored: advice is optional).
    pub fn advise_sequential(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::Sequential);
        }
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let s = &TABLE[slot];
            s.base.store(0, Ordering::Release);
            s.len.store(0, Ordering::Release);
            s.used.store(false, Ordering::Release);
        }
        // The map (possibly partly replaced by zero pages) is unmapped here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A file truncated while mapped reads as zeros past the cut instead of
    /// killing the process, and the offset is reported; bytes before the cut
    /// are unchanged.
    #[test]
    fn a_file_that_shrinks_under_the_map_reports_the_offset() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
        f.write_all(&data).unwrap();
        let m = GuardedMap::map(&f).unwrap();
        assert_eq!(m.bytes()[700_000], data[700_000]);
        assert_eq!(m.shrunk_at(), None);
        f.set_len(100 * 1024).unwrap();
        let at = 512_000; // a page boundary past the cut
        assert_eq!(std::hint::black_box(m.bytes())[at + 5], 0);
        assert_eq!(m.shrunk_at(), Some(at as u64));
        assert_eq!(m.bytes()[1000], data[1000]);
        // An earlier page past the cut lowers the reported offset.
        assert_eq!(std::hint::black_box(m.bytes())[200 * 1024], 0);
        assert_eq!(m.shrunk_at(), Some(200 * 1024));
        let e = m.check(&f).unwrap_err().to_string();
        assert!(
            e.contains("offset 204800") && e.contains("shrank to 102400 bytes"),
            "{e}"
        );
        drop(m);
        // The slot is free again: a fresh map of the short file is clean.
        let m2 = GuardedMap::map(&f).unwrap();
        assert_eq!(m2.bytes().len(), 100 * 1024);
        assert_eq!(m2.shrunk_at(), None);
        assert!(m2.check(&f).is_ok());
    }
}

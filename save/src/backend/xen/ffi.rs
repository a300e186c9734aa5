//! The calls the `xenctrl` and `xenforeignmemory` crates do not wrap, bound
//! the way those crates bind theirs: libxenctrl, libxenguest and
//! libxenforeignmemory are opened with `libloading` at run time and each
//! symbol is looked up by name. Prototypes are those of Xen 4.17's
//! `xenctrl.h`, `xenguest.h` and `xenforeignmemory.h` (Debian's
//! `libxen-dev`); unlike the crates' `fn` types they are declared
//! `extern "C"`, which is what the libraries are.
//!
//! All `unsafe` of the Xen backend lives here.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::io;
use std::ptr::{self, NonNull};

use libloading::os::unix::Symbol as RawSymbol;
use libloading::{library_filename, Library, Symbol};

use super::convert;
use crate::domain::{DirtyStats, DomainError};

/// `struct xc_hypercall_buffer` (`xenctrl.h`): libxenctrl's handle on memory
/// it may pass to the hypervisor. Laid out field by field as in C.
#[repr(C)]
struct XcHypercallBuffer {
    hbuf: *mut c_void,
    param_shadow: *mut XcHypercallBuffer,
    dir: c_int,
    ubuf: *mut c_void,
    sz: usize,
}

/// `struct xen_domctl_shadow_op_stats`.
#[repr(C)]
#[derive(Default)]
struct ShadowOpStats {
    fault_count: u32,
    dirty_count: u32,
}

type FnInterfaceOpen = unsafe extern "C" fn(*mut c_void, *mut c_void, c_uint) -> *mut c_void;
type FnInterfaceClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type FnLogdirtyControl = unsafe extern "C" fn(
    xch: *mut c_void,
    domid: u32,
    sop: c_uint,
    dirty_bitmap: *mut XcHypercallBuffer,
    pages: c_ulong,
    mode: c_uint,
    stats: *mut ShadowOpStats,
) -> i64;
type FnBufferAllocPages =
    unsafe extern "C" fn(*mut c_void, *mut XcHypercallBuffer, c_int) -> *mut c_void;
type FnBufferFreePages = unsafe extern "C" fn(*mut c_void, *mut XcHypercallBuffer, c_int);
type FnVcpuGetcontext = unsafe extern "C" fn(*mut c_void, u32, u32, *mut c_void) -> c_int;
type FnHvmParamGet = unsafe extern "C" fn(*mut c_void, u32, u32, *mut u64) -> c_int;
type FnHvmGetcontext = unsafe extern "C" fn(*mut c_void, u32, *mut u8, u32) -> c_int;
type FnDomainShutdown = unsafe extern "C" fn(*mut c_void, u32, c_int) -> c_int;
type FnDomainResume = unsafe extern "C" fn(*mut c_void, u32, c_int) -> c_int;
type FnFmemOpen = unsafe extern "C" fn(*mut c_void, c_uint) -> *mut c_void;
type FnFmemClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type FnSchedCredit = unsafe extern "C" fn(*mut c_void, u32, *mut convert::SchedCredit) -> c_int;
type FnFmemMap = unsafe extern "C" fn(
    fmem: *mut c_void,
    dom: u32,
    prot: c_int,
    pages: usize,
    arr: *const c_ulong,
    err: *mut c_int,
) -> *mut c_void;
type FnFmemUnmap = unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> c_int;

/// The symbols, resolved; the libraries stay loaded as long as this lives.
pub(super) struct XenLibs {
    interface_open: RawSymbol<FnInterfaceOpen>,
    interface_close: RawSymbol<FnInterfaceClose>,
    logdirty_control: RawSymbol<FnLogdirtyControl>,
    buffer_alloc_pages: RawSymbol<FnBufferAllocPages>,
    buffer_free_pages: RawSymbol<FnBufferFreePages>,
    vcpu_getcontext: RawSymbol<FnVcpuGetcontext>,
    hvm_param_get: RawSymbol<FnHvmParamGet>,
    hvm_getcontext: RawSymbol<FnHvmGetcontext>,
    domain_shutdown: RawSymbol<FnDomainShutdown>,
    domain_resume: RawSymbol<FnDomainResume>,
    sched_credit_get: RawSymbol<FnSchedCredit>,
    sched_credit_set: RawSymbol<FnSchedCredit>,
    fmem_open: RawSymbol<FnFmemOpen>,
    fmem_close: RawSymbol<FnFmemClose>,
    fmem_map: RawSymbol<FnFmemMap>,
    fmem_unmap: RawSymbol<FnFmemUnmap>,
    // Declared last: dropped after the raw symbols that point into them.
    _ctrl: Library,
    _guest: Library,
    _fmem: Library,
}

fn load_lib(base: &str) -> Result<Library, DomainError> {
    let name = library_filename(base);
    // SAFETY: loading a Xen tools library runs only its ELF constructors,
    // which set up nothing beyond the library's own state.
    unsafe { Library::new(&name) }.map_err(|e| {
        DomainError::Unavailable(format!(
            "cannot load {} ({e}): install Xen's tools (Debian: libxen-dev)",
            name.to_string_lossy()
        ))
    })
}

fn sym<T: Copy>(lib: &Library, name: &str) -> Result<RawSymbol<T>, DomainError> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    // SAFETY: every `T` used with this is the prototype of `name` in Xen
    // 4.17's public headers; the symbol is only called through that type.
    let s: Symbol<T> = unsafe { lib.get(&cname) }.map_err(|e| {
        DomainError::Unavailable(format!(
            "{name} not found in the Xen libraries ({e}): Xen 4.16 or later is needed"
        ))
    })?;
    // SAFETY: the raw symbol is stored next to the `Library` it came from
    // and dropped before it (field order of `XenLibs`).
    Ok(unsafe { s.into_raw() })
}

impl XenLibs {
    /// Load libxenctrl, libxenguest and libxenforeignmemory and resolve
    /// every symbol the backend calls, so a missing one fails at open.
    pub(super) fn load() -> Result<Self, DomainError> {
        let ctrl = load_lib("xenctrl")?;
        let guest = load_lib("xenguest")?;
        let fmem = load_lib("xenforeignmemory")?;
        Ok(XenLibs {
            interface_open: sym(&ctrl, "xc_interface_open")?,
            interface_close: sym(&ctrl, "xc_interface_close")?,
            logdirty_control: sym(&ctrl, "xc_logdirty_control")?,
            buffer_alloc_pages: sym(&ctrl, "xc__hypercall_buffer_alloc_pages")?,
            buffer_free_pages: sym(&ctrl, "xc__hypercall_buffer_free_pages")?,
            vcpu_getcontext: sym(&ctrl, "xc_vcpu_getcontext")?,
            hvm_param_get: sym(&ctrl, "xc_hvm_param_get")?,
            hvm_getcontext: sym(&ctrl, "xc_domain_hvm_getcontext")?,
            domain_shutdown: sym(&ctrl, "xc_domain_shutdown")?,
            domain_resume: sym(&guest, "xc_domain_resume")?,
            sched_credit_get: sym(&ctrl, "xc_sched_credit_domain_get")?,
            sched_credit_set: sym(&ctrl, "xc_sched_credit_domain_set")?,
            fmem_open: sym(&fmem, "xenforeignmemory_open")?,
            fmem_close: sym(&fmem, "xenforeignmemory_close")?,
            fmem_map: sym(&fmem, "xenforeignmemory_map")?,
            fmem_unmap: sym(&fmem, "xenforeignmemory_unmap")?,
            _ctrl: ctrl,
            _guest: guest,
            _fmem: fmem,
        })
    }
}

/// A page-aligned hypercall buffer for the dirty bitmap.
struct BitmapBuffer {
    hb: Box<XcHypercallBuffer>,
    pages: usize,
}

/// Open handles on libxenctrl and libxenforeignmemory (our own: the crates
/// keep theirs private), closed on drop.
pub(super) struct XenHandles {
    libs: XenLibs,
    xch: NonNull<c_void>,
    fmem: NonNull<c_void>,
    bitmap: Option<BitmapBuffer>,
}

fn last_os(call: &'static str) -> DomainError {
    DomainError::Io {
        call,
        source: io::Error::last_os_error(),
    }
}

fn check(call: &'static str, rc: c_int) -> Result<(), DomainError> {
    if rc < 0 {
        Err(last_os(call))
    } else {
        Ok(())
    }
}

impl XenHandles {
    pub(super) fn open(libs: XenLibs) -> Result<Self, DomainError> {
        // SAFETY: null loggers ask libxenctrl for its default (stderr)
        // logger; flags 0 is a normal, reentrant handle.
        let xch = unsafe { (libs.interface_open)(ptr::null_mut(), ptr::null_mut(), 0) };
        let xch = NonNull::new(xch).ok_or_else(|| last_os("xc_interface_open"))?;
        // SAFETY: as above for libxenforeignmemory's open.
        let fmem = unsafe { (libs.fmem_open)(ptr::null_mut(), 0) };
        let Some(fmem) = NonNull::new(fmem) else {
            let e = last_os("xenforeignmemory_open");
            // SAFETY: `xch` was opened just above and is not used again.
            unsafe { (libs.interface_close)(xch.as_ptr()) };
            return Err(e);
        };
        Ok(XenHandles {
            libs,
            xch,
            fmem,
            bitmap: None,
        })
    }

    /// `xc_logdirty_control` for ops without a bitmap (ENABLE_LOGDIRTY, OFF).
    pub(super) fn logdirty(&mut self, domid: u32, op: u32) -> Result<(), DomainError> {
        let call = if op == convert::SHADOW_OP_OFF {
            "xc_logdirty_control(OFF)"
        } else {
            "xc_logdirty_control(ENABLE_LOGDIRTY)"
        };
        // SAFETY: a null bitmap and null stats are what libxenguest's own
        // saver passes for these ops; no memory of ours is written.
        let rc = unsafe {
            (self.libs.logdirty_control)(
                self.xch.as_ptr(),
                domid,
                op,
                ptr::null_mut(),
                0,
                0,
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            Err(last_os(call))
        } else {
            Ok(())
        }
    }

    fn bitmap_buffer(&mut self, pages: usize) -> Result<&mut BitmapBuffer, DomainError> {
        if self.bitmap.as_ref().is_some_and(|b| b.pages < pages) {
            self.free_bitmap();
        }
        if self.bitmap.is_none() {
            let nr = c_int::try_from(pages).map_err(|_| {
                DomainError::refused("xc_hypercall_buffer_alloc_pages", "bitmap too large")
            })?;
            let mut hb = Box::new(XcHypercallBuffer {
                hbuf: ptr::null_mut(),
                param_shadow: ptr::null_mut(),
                dir: 0,
                ubuf: usize::MAX as *mut c_void,
                sz: 0,
            });
            // SAFETY: `hb` is initialised as DECLARE_HYPERCALL_BUFFER does
            // and boxed, so its address is stable while libxenctrl holds it.
            let p = unsafe { (self.libs.buffer_alloc_pages)(self.xch.as_ptr(), &mut *hb, nr) };
            if p.is_null() {
                return Err(last_os("xc_hypercall_buffer_alloc_pages"));
            }
            self.bitmap = Some(BitmapBuffer { hb, pages });
        }
        self.bitmap
            .as_mut()
            .ok_or_else(|| DomainError::refused("xc_hypercall_buffer_alloc_pages", "no buffer"))
    }

    fn free_bitmap(&mut self) {
        if let Some(mut b) = self.bitmap.take() {
            // SAFETY: `b` was allocated by `buffer_alloc_pages` on this
            // handle with this page count and is not used afterwards.
            unsafe {
                (self.libs.buffer_free_pages)(self.xch.as_ptr(), &mut *b.hb, b.pages as c_int)
            };
        }
    }

    /// CLEAN or PEEK into the bitmap buffer; `f` reads the words Xen wrote
    /// and how many pfns it processed. Returns the op's counters.
    pub(super) fn logdirty_bitmap<R>(
        &mut self,
        domid: u32,
        op: u32,
        len: u64,
        f: impl FnOnce(&[u64], u64) -> R,
    ) -> Result<(R, DirtyStats), DomainError> {
        let call = if op == convert::SHADOW_OP_CLEAN {
            "xc_logdirty_control(CLEAN)"
        } else {
            "xc_logdirty_control(PEEK)"
        };
        let pages = convert::bitmap_buffer_pages(len);
        let pfns =
            c_ulong::try_from(len).map_err(|_| DomainError::refused(call, "too many pfns"))?;
        let xch = self.xch.as_ptr();
        let logdirty = *self.libs.logdirty_control;
        let buf = self.bitmap_buffer(pages)?;
        let words = pages * hvm_format::PAGE_SIZE / 8;
        let mut stats = ShadowOpStats::default();
        // SAFETY: the buffer holds `pages` pages, enough for `len` bits
        // (bitmap_buffer_pages); `stats` outlives the call.
        let rc = unsafe { logdirty(xch, domid, op, &mut *buf.hb, pfns, 0, &mut stats) };
        if rc < 0 {
            return Err(last_os(call));
        }
        // SAFETY: `hbuf` points at `pages` page-aligned pages that Xen has
        // finished writing; `words` u64s cover exactly them, and the slice
        // lives only during `f`, while `self` is borrowed.
        let src = unsafe { std::slice::from_raw_parts(buf.hb.hbuf as *const u64, words) };
        let r = f(src, rc as u64);
        Ok((
            r,
            convert::dirty_stats(stats.fault_count, stats.dirty_count),
        ))
    }

    /// `xc_vcpu_getcontext` into a buffer larger than any
    /// `vcpu_guest_context_any_t` (5168 bytes on x86).
    pub(super) fn vcpu_getcontext(
        &mut self,
        domid: u32,
        vcpu: u32,
    ) -> Result<Vec<u8>, DomainError> {
        let mut words = vec![0u64; 1024];
        // SAFETY: 8 KiB, 8-byte aligned, more than the 5168 bytes libxenctrl
        // copies out.
        let rc = unsafe {
            (self.libs.vcpu_getcontext)(self.xch.as_ptr(), domid, vcpu, words.as_mut_ptr().cast())
        };
        check("xc_vcpu_getcontext", rc)?;
        Ok(words.iter().flat_map(|w| w.to_le_bytes()).collect())
    }

    /// `xc_hvm_param_get`.
    pub(super) fn hvm_param_get(&mut self, domid: u32, param: u32) -> Result<u64, DomainError> {
        let mut v = 0u64;
        // SAFETY: `v` is a valid u64 out-parameter.
        let rc = unsafe { (self.libs.hvm_param_get)(self.xch.as_ptr(), domid, param, &mut v) };
        check("xc_hvm_param_get", rc)?;
        Ok(v)
    }

    /// `xc_domain_hvm_getcontext`: size query, then the blob.
    pub(super) fn hvm_getcontext(&mut self, domid: u32) -> Result<Vec<u8>, DomainError> {
        let call = "xc_domain_hvm_getcontext";
        // SAFETY: a null buffer of size 0 asks for the size only.
        let size =
            unsafe { (self.libs.hvm_getcontext)(self.xch.as_ptr(), domid, ptr::null_mut(), 0) };
        let size = u32::try_from(size).map_err(|_| last_os(call))?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` holds exactly `size` bytes.
        let rc =
            unsafe { (self.libs.hvm_getcontext)(self.xch.as_ptr(), domid, buf.as_mut_ptr(), size) };
        if rc < 0 {
            return Err(last_os(call));
        }
        convert::hvm_blob(buf, i64::from(rc))
    }

    /// `xc_domain_shutdown`.
    pub(super) fn shutdown(&mut self, domid: u32, reason: u32) -> Result<(), DomainError> {
        // SAFETY: plain integer arguments on an open handle.
        let rc = unsafe { (self.libs.domain_shutdown)(self.xch.as_ptr(), domid, reason as c_int) };
        check("xc_domain_shutdown", rc)
    }

    /// `xc_sched_credit_domain_get`. Fails (EINVAL) when the domain is not
    /// on the credit scheduler.
    pub(super) fn sched_credit_get(
        &mut self,
        domid: u32,
    ) -> Result<convert::SchedCredit, DomainError> {
        let mut sc = convert::SchedCredit::default();
        // SAFETY: `sc` is a valid `struct xen_domctl_sched_credit`
        // out-parameter (`repr(C)`, two u16s).
        let rc = unsafe { (self.libs.sched_credit_get)(self.xch.as_ptr(), domid, &mut sc) };
        check("xc_sched_credit_domain_get", rc)?;
        Ok(sc)
    }

    /// `xc_sched_credit_domain_set`.
    pub(super) fn sched_credit_set(
        &mut self,
        domid: u32,
        mut sc: convert::SchedCredit,
    ) -> Result<(), DomainError> {
        // SAFETY: as above; libxenctrl only reads the struct.
        let rc = unsafe { (self.libs.sched_credit_set)(self.xch.as_ptr(), domid, &mut sc) };
        check("xc_sched_credit_domain_set", rc)
    }

    /// `xc_domain_resume`; `fast` = cooperative (the guest knew it suspended).
    pub(super) fn resume(&mut self, domid: u32, fast: bool) -> Result<(), DomainError> {
        // SAFETY: plain integer arguments on an open handle.
        let rc = unsafe { (self.libs.domain_resume)(self.xch.as_ptr(), domid, c_int::from(fast)) };
        check("xc_domain_resume", rc)
    }

    /// `xenforeignmemory_map(PROT_READ)` of `pfns`, with one error per page.
    pub(super) fn map_batch(
        &self,
        domid: u32,
        pfns: &[u64],
    ) -> Result<BatchMapping<'_>, DomainError> {
        let arr: Vec<c_ulong> = pfns.iter().map(|&p| p as c_ulong).collect();
        let mut err = vec![0 as c_int; pfns.len()];
        if arr.is_empty() {
            return Ok(BatchMapping {
                handles: self,
                addr: None,
                err,
            });
        }
        // SAFETY: `arr` and `err` hold `pages` entries each; the mapping
        // returned is owned by the `BatchMapping` and unmapped on its drop.
        let addr = unsafe {
            (self.libs.fmem_map)(
                self.fmem.as_ptr(),
                domid,
                libc::PROT_READ,
                arr.len(),
                arr.as_ptr(),
                err.as_mut_ptr(),
            )
        };
        let addr =
            NonNull::new(addr.cast::<u8>()).ok_or_else(|| last_os("xenforeignmemory_map"))?;
        Ok(BatchMapping {
            handles: self,
            addr: Some(addr),
            err,
        })
    }
}

impl Drop for XenHandles {
    fn drop(&mut self) {
        self.free_bitmap();
        // SAFETY: both handles were opened in `open`, every mapping and
        // buffer borrowed from them is gone (they borrow `self`), and they
        // are not used after this.
        unsafe {
            (self.libs.fmem_close)(self.fmem.as_ptr());
            (self.libs.interface_close)(self.xch.as_ptr());
        }
    }
}

/// One batch mapped read-only; pages with a non-zero error are never read.
pub(super) struct BatchMapping<'a> {
    handles: &'a XenHandles,
    addr: Option<NonNull<u8>>,
    err: Vec<c_int>,
}

impl BatchMapping<'_> {
    /// The batch's pages copied out of the mapping (volatile reads; the
    /// guest may be writing them), failed pages as `None`. Never a slice
    /// into the mapping.
    pub(super) fn copy_out(&self) -> convert::CopiedBatch {
        // SAFETY: `addr` is the page-aligned mapping of `err.len()` pages
        // made by `map_batch`, live while `&self` is; pages with a zero
        // error mapped and are readable.
        unsafe { convert::CopiedBatch::copy_from(self.addr, &self.err) }
    }
}

impl Drop for BatchMapping<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.addr {
            // SAFETY: `a` came from `xenforeignmemory_map` on this handle for
            // `err.len()` pages, and no slice of it outlives `self`.
            unsafe {
                (self.handles.libs.fmem_unmap)(
                    self.handles.fmem.as_ptr(),
                    a.as_ptr().cast(),
                    self.err.len(),
                )
            };
        }
    }
}

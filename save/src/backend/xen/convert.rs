//! Pure conversions between what libxenctrl hands back and what the
//! [`Domain`](crate::domain::Domain) trait promises. Nothing here touches a
//! hypervisor, so all of it is built and unit-tested without the `xen`
//! feature; the binding in `ffi.rs` only moves bytes in and out.

use std::path::Path;

use hvm_format::vcpu::{context_size, VcpuContext};
use hvm_format::{WordSize, PAGE_SIZE};

use crate::domain::{DirtyBitmap, DirtyStats, DomainError, DomainInfo};

/// `XEN_DOMINF_hvm_guest` (`xen/include/public/domctl.h`).
pub const DOMINF_HVM_GUEST: u32 = 1 << 1;
/// `XEN_DOMINF_dying`.
pub const DOMINF_DYING: u32 = 1 << 0;
/// `XEN_DOMINF_shutdown`: the domain has finished shutting down.
pub const DOMINF_SHUTDOWN: u32 = 1 << 2;
/// `XEN_DOMINF_paused`: paused by the toolstack (`xc_domain_pause`).
pub const DOMINF_PAUSED: u32 = 1 << 3;
/// `XEN_DOMINF_shutdownshift`: where the shutdown code sits in `flags`.
pub const DOMINF_SHUTDOWN_SHIFT: u32 = 16;
/// `XEN_DOMINF_shutdownmask`.
pub const DOMINF_SHUTDOWN_MASK: u32 = 0xff;
/// `SHUTDOWN_suspend` (`xen/include/public/sched.h`).
pub const SHUTDOWN_SUSPEND: u32 = 2;

/// `XEN_DOMCTL_SHADOW_OP_OFF`.
pub const SHADOW_OP_OFF: u32 = 0;
/// `XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`.
pub const SHADOW_OP_ENABLE_LOGDIRTY: u32 = 2;
/// `XEN_DOMCTL_SHADOW_OP_CLEAN`: copy the dirty bits out and clear them.
pub const SHADOW_OP_CLEAN: u32 = 11;
/// `XEN_DOMCTL_SHADOW_OP_PEEK`: copy the dirty bits out, keep them.
pub const SHADOW_OP_PEEK: u32 = 12;

/// Where the Linux privcmd driver shows up in a dom0 (the modern node, then
/// the xenfs one libxencall falls back to).
pub const PRIVCMD_PATHS: [&str; 2] = ["/dev/xen/privcmd", "/proc/xen/privcmd"];

/// How the saver's "suspend" is carried out on a real Xen domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuspendMethod {
    /// `xc_domain_shutdown(SHUTDOWN_suspend)`: what libxl does for an HVM
    /// guest without PV drivers, and what the seed's info loop waits for
    /// (shutdown with reason suspend). Undone by `xc_domain_resume(fast=0)`.
    #[default]
    Shutdown,
    /// `xc_domain_pause`: nothing in the guest or in a watching `xl` notices;
    /// undone by `xc_domain_unpause`.
    Pause,
}

/// The fields of `xc_domaininfo_t` (`struct xen_domctl_getdomaininfo`) the
/// saver needs, copied out so the mapping can be tested without Xen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawDomInfo {
    /// `domain`: which domain Xen answered for (getinfolist returns the next
    /// existing one when the asked-for domain is gone).
    pub domain: u32,
    /// `flags`: `XEN_DOMINF_*` and the shutdown code.
    pub flags: u32,
    /// `tot_pages`.
    pub tot_pages: u64,
    /// `max_pages`.
    pub max_pages: u64,
    /// `nr_online_vcpus`.
    pub nr_online_vcpus: u32,
}

impl RawDomInfo {
    /// Shutdown finished with reason "suspend".
    pub fn is_suspended(&self) -> bool {
        self.flags & DOMINF_SHUTDOWN != 0
            && (self.flags >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK == SHUTDOWN_SUSPEND
    }
}

/// Refuse a getinfolist answer that is not about a live HVM domain `domid`.
pub fn check_domain(raw: Option<&RawDomInfo>, domid: u32) -> Result<(), DomainError> {
    let call = "xc_domain_getinfolist";
    match raw {
        Some(r) if r.domain == domid => {
            if r.flags & DOMINF_DYING != 0 {
                Err(DomainError::refused(
                    call,
                    format!("domain {domid} is dying"),
                ))
            } else if r.flags & DOMINF_HVM_GUEST == 0 {
                Err(DomainError::refused(
                    call,
                    format!(
                        "domain {domid} is not an HVM guest (this saver writes HVM images only)"
                    ),
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(DomainError::refused(call, format!("no domain {domid}"))),
    }
}

/// `xc_domaininfo_t` → [`DomainInfo`].
///
/// With [`SuspendMethod::Pause`] a domain this run paused counts as
/// suspended and not as paused: otherwise the seed's retry loop would
/// unpause it again.
pub fn domain_info(raw: &RawDomInfo, method: SuspendMethod, paused_by_us: bool) -> DomainInfo {
    let paused = raw.flags & DOMINF_PAUSED != 0;
    let suspended = match method {
        SuspendMethod::Shutdown => raw.is_suspended(),
        SuspendMethod::Pause => raw.is_suspended() || (paused_by_us && paused),
    };
    DomainInfo {
        nr_pages: raw.tot_pages,
        max_memkb: raw.max_pages.saturating_mul(PAGE_SIZE as u64 / 1024),
        nr_online_vcpus: raw.nr_online_vcpus,
        suspended,
        paused: paused && !suspended,
    }
}

/// Pages of the hypercall buffer that holds a dirty bitmap of `len` pfns
/// (one bit per pfn in `unsigned long` words).
pub fn bitmap_buffer_pages(len: u64) -> usize {
    let bytes = len.div_ceil(64) * 8;
    bytes.div_ceil(PAGE_SIZE as u64).max(1) as usize
}

/// Copy the bits Xen wrote (`valid` pfns: the count a CLEAN/PEEK returns)
/// from its `unsigned long` words into `into`, replacing its contents. Bits
/// past `valid` are whatever the buffer held before and are not trusted.
pub fn copy_dirty_bits(src: &[u64], valid: u64, into: &mut DirtyBitmap) {
    let n = valid.min(into.len()).min(src.len() as u64 * 64);
    let full = (n / 64) as usize;
    let tail = n % 64;
    let dst = into.words_mut();
    dst.iter_mut().for_each(|w| *w = 0);
    for (d, s) in dst.iter_mut().zip(src).take(full) {
        *d = *s;
    }
    if tail != 0 {
        if let (Some(d), Some(s)) = (dst.get_mut(full), src.get(full)) {
            *d = s & ((1u64 << tail) - 1);
        }
    }
}

/// `xen_domctl_shadow_op_stats` → [`DirtyStats`].
pub fn dirty_stats(fault_count: u32, dirty_count: u32) -> DirtyStats {
    DirtyStats {
        fault_count: Some(u64::from(fault_count)),
        dirty_count: u64::from(dirty_count),
    }
}

/// The seed stream's vCPU record from what `xc_vcpu_getcontext` filled.
///
/// An HVM domain is never a 32-bit PV "compat" domain, so Xen always fills
/// the x86_64 `vcpu_guest_context` (5168 bytes) at the start of the
/// `vcpu_guest_context_any_t` buffer. A 64-bit toolstack streams it as is;
/// a 32-bit one (2800-byte records, docs/format.md §6) gets the same register
/// state re-encoded, failing if a value does not fit 32 bits.
pub fn seed_vcpu_record(raw: &[u8], toolstack: WordSize) -> Result<Vec<u8>, DomainError> {
    let call = "xc_vcpu_getcontext";
    let size = context_size(WordSize::W64);
    let bytes = raw.get(..size).ok_or_else(|| {
        DomainError::refused(
            call,
            format!("context buffer of {} bytes, need {size}", raw.len()),
        )
    })?;
    let ctx = VcpuContext::parse_as(WordSize::W64, bytes)
        .map_err(|e| DomainError::refused(call, e.to_string()))?;
    match toolstack {
        WordSize::W64 => Ok(ctx.into_bytes()),
        WordSize::W32 => VcpuContext::from_registers(WordSize::W32, &ctx.registers())
            .map(VcpuContext::into_bytes)
            .map_err(|e| DomainError::refused(call, e.to_string())),
    }
}

/// The word size of this toolstack: it fixes the vCPU record size.
pub fn toolstack_word() -> WordSize {
    if cfg!(target_pointer_width = "64") {
        WordSize::W64
    } else {
        WordSize::W32
    }
}

/// The HVM context blob from `xc_domain_hvm_getcontext`'s buffer and return
/// value: Xen reports the bytes it used (`h->cur`), which the stream carries
/// as `hvm_rec_size`.
pub fn hvm_blob(mut buf: Vec<u8>, ret: i64) -> Result<Vec<u8>, DomainError> {
    let call = "xc_domain_hvm_getcontext";
    let used =
        usize::try_from(ret).map_err(|_| DomainError::refused(call, format!("returned {ret}")))?;
    if used == 0 || used > buf.len() {
        return Err(DomainError::refused(
            call,
            format!("used {used} bytes of a {}-byte buffer", buf.len()),
        ));
    }
    buf.truncate(used);
    Ok(buf)
}

/// Offset of page `j` in a batch mapping, or `None` when
/// `xenforeignmemory_map` reported an error for it (the page is then sent
/// as XTAB, as the seed's privcmd rewrote it in place).
pub fn batch_page_offset(err: &[i32], j: usize) -> Option<usize> {
    (*err.get(j)? == 0).then(|| j * PAGE_SIZE)
}

/// The pages of one batch, copied out of a foreign mapping of a guest that
/// may still be running (a live pass): the guest writes them while we read,
/// so they are never handed out as `&[u8]` into the mapping (a reference
/// whose bytes change under it is undefined behaviour in Rust's model).
/// Each page is read once with volatile word loads, as rust-vmm's
/// `vm-memory` reads guest memory, into memory we own; a page that failed
/// to map is `None` and goes out as XTAB, as in the seed, even when every
/// page of the batch failed.
#[derive(Debug, Clone, Default)]
pub struct CopiedBatch {
    data: Vec<u8>,
    mapped: Vec<bool>,
}

impl CopiedBatch {
    /// Copies the pages of a batch mapping at `base` whose per-page errors
    /// are `err` (0 = mapped). `base` is `None` when nothing was mapped.
    ///
    /// # Safety
    ///
    /// When `base` is `Some`, it must point to a mapping of `err.len()`
    /// pages, 8-byte aligned (foreign mappings are page-aligned), every
    /// page `j` with `err[j] == 0` readable for the duration of the call.
    pub unsafe fn copy_from(base: Option<std::ptr::NonNull<u8>>, err: &[i32]) -> CopiedBatch {
        let mut out = CopiedBatch {
            data: vec![0; err.len() * PAGE_SIZE],
            mapped: vec![false; err.len()],
        };
        let Some(base) = base else {
            return out;
        };
        for j in 0..err.len() {
            let Some(off) = batch_page_offset(err, j) else {
                continue;
            };
            let dst = &mut out.data[off..off + PAGE_SIZE];
            for (k, word) in dst.chunks_exact_mut(8).enumerate() {
                // SAFETY: page `j` is mapped and readable (the caller's
                // contract); `off + 8k + 8 <= (j + 1) * PAGE_SIZE` stays in
                // it, and the address is 8-byte aligned as `base` is.
                let v = unsafe {
                    std::ptr::read_volatile(base.as_ptr().add(off + 8 * k).cast::<u64>())
                };
                word.copy_from_slice(&v.to_ne_bytes());
            }
            out.mapped[j] = true;
        }
        out
    }

    /// A batch of `n` pages where page `j` is `pages[j]` (for callers that
    /// map and copy page by page).
    pub fn from_pages(pages: Vec<Option<Vec<u8>>>) -> CopiedBatch {
        let mut out = CopiedBatch {
            data: vec![0; pages.len() * PAGE_SIZE],
            mapped: vec![false; pages.len()],
        };
        for (j, p) in pages.into_iter().enumerate() {
            if let Some(p) = p.filter(|p| p.len() == PAGE_SIZE) {
                out.data[j * PAGE_SIZE..(j + 1) * PAGE_SIZE].copy_from_slice(&p);
                out.mapped[j] = true;
            }
        }
        out
    }

    /// Pages in the batch.
    pub fn len(&self) -> usize {
        self.mapped.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.mapped.is_empty()
    }
}

impl crate::domain::PageMap for CopiedBatch {
    fn page(&self, j: usize) -> Option<&[u8]> {
        if !*self.mapped.get(j)? {
            return None;
        }
        self.data.get(j * PAGE_SIZE..(j + 1) * PAGE_SIZE)
    }
}

/// Fail clearly where no Xen control interface exists, before libxenctrl
/// gets a chance to log its own, vaguer complaint.
pub fn check_privcmd(paths: &[&Path]) -> Result<(), DomainError> {
    if paths.iter().any(|p| p.exists()) {
        return Ok(());
    }
    let first = paths
        .first()
        .map_or("/dev/xen/privcmd".into(), |p| p.display().to_string());
    Err(DomainError::Unavailable(format!(
        "cannot open the Xen control interface ({first} missing): is this a Xen dom0?"
    )))
}

/// The error `--xen` gives in a build without the feature.
pub fn not_built() -> DomainError {
    DomainError::Unavailable(
        "this hvm-save was built without Xen support: rebuild with `--features xen` \
         (the resulting binary is GPL-3.0, as xenctrl and xenforeignmemory are GPL-3.0-only)"
            .into(),
    )
}

/// `struct xen_domctl_sched_credit` (`public/domctl.h`): the credit
/// scheduler's weight and cap of a domain.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedCredit {
    /// Relative share of CPU time against other domains.
    pub weight: u16,
    /// Most CPU the domain may use, in percent of one physical CPU; 0 is
    /// no cap.
    pub cap: u16,
}

/// The credit cap that throttles a domain by `percent`: what it may use
/// now (its `original` cap, or all of its `vcpus` when uncapped) times
/// `100 − percent` %, at least 1 (0 would mean no cap at all).
pub fn throttled_cap(original: u16, vcpus: u32, percent: u8) -> u16 {
    let full = if original == 0 {
        u64::from(vcpus.max(1)) * 100
    } else {
        u64::from(original)
    };
    let keep = 100 - u64::from(percent.min(crate::domain::MAX_THROTTLE));
    (full * keep / 100).clamp(1, u64::from(u16::MAX)) as u16
}

#[cfg(test)]
mod tests {
    #[test]
    fn throttled_cap_scales_what_the_domain_may_use() {
        use super::throttled_cap;
        // Uncapped, 2 vCPUs: 200 % of a CPU is the base.
        assert_eq!(throttled_cap(0, 2, 20), 160);
        assert_eq!(throttled_cap(0, 2, 99), 2);
        assert_eq!(throttled_cap(0, 1, 0), 100);
        // An existing cap is scaled, never raised.
        assert_eq!(throttled_cap(50, 4, 50), 25);
        // Never 0 (no cap), however hard the throttle.
        assert_eq!(throttled_cap(1, 1, 99), 1);
        assert_eq!(throttled_cap(0, 0, 200), 1);
    }

    /// A hand-made "mapping" of 3 pages (8-byte aligned, as foreign
    /// mappings are page-aligned), each page distinct in every word.
    fn hand_made(pages: usize) -> Vec<u64> {
        (0..pages * PAGE_SIZE / 8)
            .map(|k| 0x0101_0101_0101_0101u64.wrapping_mul(k as u64 + 1))
            .collect()
    }

    #[test]
    fn copied_batch_copies_mapped_pages_and_leaves_failed_ones_xtab() {
        use crate::domain::PageMap;
        let mut mem = hand_made(3);
        let base = std::ptr::NonNull::new(mem.as_mut_ptr().cast::<u8>());
        // SAFETY: `mem` holds 3 pages, is 8-byte aligned and outlives the call.
        let b = unsafe { CopiedBatch::copy_from(base, &[0, -14, 0]) };
        let bytes: Vec<u8> = mem.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b.page(0), Some(&bytes[..PAGE_SIZE]));
        assert_eq!(b.page(1), None);
        assert_eq!(b.page(2), Some(&bytes[2 * PAGE_SIZE..]));
        assert_eq!(b.page(3), None);
        // The copy is ours: the guest writing its page afterwards does not
        // change what is sent.
        mem[0] = !mem[0];
        assert_eq!(b.page(0), Some(&bytes[..PAGE_SIZE]));
    }

    /// A batch whose every page failed to map is a batch of XTAB entries,
    /// as in the seed, not an error.
    #[test]
    fn a_batch_of_only_failed_pages_is_all_xtab() {
        use crate::domain::PageMap;
        let mut mem = hand_made(2);
        let base = std::ptr::NonNull::new(mem.as_mut_ptr().cast::<u8>());
        // SAFETY: as above; no page is read since none mapped.
        let b = unsafe { CopiedBatch::copy_from(base, &[-1, -1]) };
        assert_eq!(b.len(), 2);
        assert!((0..2).all(|j| b.page(j).is_none()));
        // SAFETY: no mapping at all.
        let none = unsafe { CopiedBatch::copy_from(None, &[-1, -1, -1]) };
        assert_eq!(none.len(), 3);
        assert!((0..3).all(|j| none.page(j).is_none()));
        let single = CopiedBatch::from_pages(vec![None, Some(vec![7; PAGE_SIZE])]);
        assert_eq!(single.page(0), None);
        assert_eq!(single.page(1), Some(&[7u8; PAGE_SIZE][..]));
    }

    use super::*;
    use hvm_format::vcpu::{VcpuRegisters, SIZE_X86_32, SIZE_X86_64, VGCF_ONLINE};

    fn raw(flags: u32) -> RawDomInfo {
        RawDomInfo {
            domain: 7,
            flags,
            tot_pages: 0x1_0000,
            max_pages: 0x1_0100,
            nr_online_vcpus: 2,
        }
    }

    fn suspend_flags() -> u32 {
        DOMINF_HVM_GUEST | DOMINF_SHUTDOWN | (SHUTDOWN_SUSPEND << DOMINF_SHUTDOWN_SHIFT)
    }

    #[test]
    fn domain_info_running() {
        let i = domain_info(&raw(DOMINF_HVM_GUEST), SuspendMethod::Shutdown, false);
        assert_eq!(
            i,
            DomainInfo {
                nr_pages: 0x1_0000,
                max_memkb: 0x1_0100 * 4,
                nr_online_vcpus: 2,
                suspended: false,
                paused: false,
            }
        );
    }

    #[test]
    fn domain_info_suspend_shutdown_only_with_reason_suspend() {
        let s = domain_info(&raw(suspend_flags()), SuspendMethod::Shutdown, false);
        assert!(s.suspended && !s.paused);
        // Shutdown for poweroff (code 0) or crash (3) is not a suspend.
        for code in [0u32, 3] {
            let f = DOMINF_HVM_GUEST | DOMINF_SHUTDOWN | (code << DOMINF_SHUTDOWN_SHIFT);
            assert!(!domain_info(&raw(f), SuspendMethod::Shutdown, false).suspended);
        }
        // The code without the shutdown flag: still shutting down.
        let f = DOMINF_HVM_GUEST | (SHUTDOWN_SUSPEND << DOMINF_SHUTDOWN_SHIFT);
        assert!(!domain_info(&raw(f), SuspendMethod::Shutdown, false).suspended);
    }

    #[test]
    fn domain_info_pause_method() {
        let f = DOMINF_HVM_GUEST | DOMINF_PAUSED;
        // Paused by someone else: the seed's loop sees "paused".
        let other = domain_info(&raw(f), SuspendMethod::Pause, false);
        assert!(other.paused && !other.suspended);
        // Paused by us: final, and not reported as paused (no unpause).
        let ours = domain_info(&raw(f), SuspendMethod::Pause, true);
        assert!(ours.suspended && !ours.paused);
        // We asked but Xen does not show it paused yet.
        let pending = domain_info(&raw(DOMINF_HVM_GUEST), SuspendMethod::Pause, true);
        assert!(!pending.suspended && !pending.paused);
        // Under the shutdown method a pause never counts as suspended.
        let sh = domain_info(&raw(f), SuspendMethod::Shutdown, true);
        assert!(sh.paused && !sh.suspended);
    }

    #[test]
    fn check_domain_refusals() {
        assert!(check_domain(Some(&raw(DOMINF_HVM_GUEST)), 7).is_ok());
        let e = check_domain(Some(&raw(DOMINF_HVM_GUEST)), 6).unwrap_err();
        assert!(e.to_string().contains("no domain 6"), "{e}");
        let e = check_domain(None, 7).unwrap_err();
        assert!(e.to_string().contains("no domain 7"), "{e}");
        let e = check_domain(Some(&raw(0)), 7).unwrap_err();
        assert!(e.to_string().contains("not an HVM guest"), "{e}");
        let e = check_domain(Some(&raw(DOMINF_HVM_GUEST | DOMINF_DYING)), 7).unwrap_err();
        assert!(e.to_string().contains("dying"), "{e}");
    }

    #[test]
    fn bitmap_buffer_sizes() {
        assert_eq!(bitmap_buffer_pages(0), 1);
        assert_eq!(bitmap_buffer_pages(1), 1);
        // One page holds 32768 bits.
        assert_eq!(bitmap_buffer_pages(32768), 1);
        assert_eq!(bitmap_buffer_pages(32769), 2);
        // 4 GiB guest with the MMIO shift: max_pfn 0x10FFFF.
        assert_eq!(bitmap_buffer_pages(0x11_0000), 34);
    }

    #[test]
    fn dirty_bits_follow_xen_word_layout() {
        // pfn n is bit n%64 of word n/64 (x86_64 unsigned long, LSB first).
        let src = [1u64 | 1 << 63, 0, 1 << 2, u64::MAX];
        let mut into = DirtyBitmap::new(200);
        into.set(100); // stale content must go
        copy_dirty_bits(&src, 200, &mut into);
        assert_eq!(
            into.iter_set().collect::<Vec<_>>(),
            [vec![0, 63, 130], (192..200).collect()].concat()
        );
    }

    #[test]
    fn dirty_bits_beyond_valid_are_dropped() {
        let src = [u64::MAX; 4];
        let mut into = DirtyBitmap::new(256);
        // Xen processed only 70 pfns (the guest's p2m is smaller).
        copy_dirty_bits(&src, 70, &mut into);
        assert_eq!(into.count(), 70);
        assert!(into.test(69) && !into.test(70));
        // A buffer shorter than the bitmap: the rest reads clear.
        copy_dirty_bits(&src[..1], 256, &mut into);
        assert_eq!(into.count(), 64);
        // Nothing valid: all clear.
        copy_dirty_bits(&src, 0, &mut into);
        assert_eq!(into.count(), 0);
    }

    #[test]
    fn stats_widen() {
        assert_eq!(
            dirty_stats(u32::MAX, 3),
            DirtyStats {
                fault_count: Some(u32::MAX as u64),
                dirty_count: 3
            }
        );
    }

    fn xen_buffer(regs: &VcpuRegisters) -> Vec<u8> {
        // What Xen leaves in a vcpu_guest_context_any_t buffer (we pass a
        // larger, zeroed one): the x86_64 context, then untouched bytes.
        let mut buf = VcpuContext::from_registers(WordSize::W64, regs)
            .unwrap()
            .into_bytes();
        buf.resize(8192, 0xAA);
        buf
    }

    fn regs() -> VcpuRegisters {
        VcpuRegisters {
            rax: 0x1234,
            rip: 0xFFF0,
            rsp: 0x7000,
            rflags: 0x2,
            cs: 0xF000,
            cr0: 0x6000_0010,
            online: true,
            ..Default::default()
        }
    }

    #[test]
    fn vcpu_record_64_is_xens_bytes() {
        let buf = xen_buffer(&regs());
        let rec = seed_vcpu_record(&buf, WordSize::W64).unwrap();
        assert_eq!(rec.len(), SIZE_X86_64);
        assert_eq!(rec[..], buf[..SIZE_X86_64]);
        // rip at 520 + 128 in the x86_64 layout (docs/format.md §6).
        assert_eq!(rec[648..656], 0xFFF0u64.to_le_bytes());
        let back = VcpuContext::parse(&rec).unwrap();
        assert_eq!(back.flags() & VGCF_ONLINE, VGCF_ONLINE);
        assert_eq!(back.registers(), regs());
    }

    #[test]
    fn vcpu_record_32_reencodes() {
        let rec = seed_vcpu_record(&xen_buffer(&regs()), WordSize::W32).unwrap();
        assert_eq!(rec.len(), SIZE_X86_32);
        // eax at 516 + 24, eip at 516 + 32 in the i386 layout.
        assert_eq!(rec[540..544], 0x1234u32.to_le_bytes());
        assert_eq!(rec[548..552], 0xFFF0u32.to_le_bytes());
        let wide = VcpuRegisters { r8: 1, ..regs() };
        let e = seed_vcpu_record(&xen_buffer(&wide), WordSize::W32).unwrap_err();
        assert!(e.to_string().contains("xc_vcpu_getcontext"), "{e}");
    }

    #[test]
    fn vcpu_record_short_buffer() {
        let e = seed_vcpu_record(&[0u8; 2800], WordSize::W64).unwrap_err();
        assert!(e.to_string().contains("need 5168"), "{e}");
    }

    #[test]
    fn hvm_blob_is_the_used_prefix() {
        let buf: Vec<u8> = (0..=255).collect();
        assert_eq!(hvm_blob(buf.clone(), 100).unwrap(), buf[..100]);
        assert_eq!(hvm_blob(buf.clone(), 256).unwrap(), buf);
        for bad in [-1i64, 0, 257] {
            assert!(hvm_blob(buf.clone(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_errors_become_missing_pages() {
        let err = [0, -14, 0, 1];
        assert_eq!(batch_page_offset(&err, 0), Some(0));
        assert_eq!(batch_page_offset(&err, 1), None);
        assert_eq!(batch_page_offset(&err, 2), Some(2 * 4096));
        assert_eq!(batch_page_offset(&err, 3), None);
        assert_eq!(batch_page_offset(&err, 4), None);
    }

    #[test]
    fn privcmd_probe() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("privcmd");
        let e = check_privcmd(&[&missing]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("cannot open the Xen control interface"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("{} missing", missing.display())),
            "{msg}"
        );
        assert!(msg.contains("is this a Xen dom0?"), "{msg}");
        std::fs::write(&missing, b"").unwrap();
        assert!(check_privcmd(&[Path::new("/nonexistent/x"), &missing]).is_ok());
    }

    #[test]
    fn not_built_names_the_feature_and_licence() {
        let m = not_built().to_string();
        assert!(m.contains("--features xen") && m.contains("GPL-3.0"), "{m}");
    }
}

//! `vcpu_guest_context_t`: the per-vCPU record of the libxc stream.
//!
//! The record is the C struct as compiled into the *toolstack*, so its size
//! says the toolstack's word size: 5168 bytes for x86_64 tools, 2800 for
//! i386 tools (docs/format.md §6). For an HVM guest Xen fills only `flags`,
//! `user_regs` and `ctrlreg[]` (plus the FPU image and debug registers from
//! the stored state); everything else is normally zero.
//!
//! ```text
//!  x86_64 (5168)                         i386 (2800)
//!     0 fpu_ctxt[512]                       0 fpu_ctxt[512]
//!   512 flags u64                         512 flags u32
//!   520 user_regs (200)                   516 user_regs (68)
//!   720 trap_ctxt[256] × 16               584 trap_ctxt[256] × 8
//!  4816 ldt_base ldt_ents gdt_frames[16]  2632 ldt_base ldt_ents gdt_frames[16]
//!  4960 gdt_ents kernel_ss kernel_sp      2704 gdt_ents kernel_ss kernel_sp
//!  4984 ctrlreg[8]                        2716 ctrlreg[8]
//!  5048 debugreg[8]                       2748 debugreg[8]
//!  5112 callbacks vm_assist               2780 callbacks (cs, eip) vm_assist
//!  5144 fs_base gs_base_kernel gs_base_user
//! ```
//!
//! [`VcpuContext`] keeps the raw bytes (so an image round-trips byte for
//! byte, padding included) next to a typed view ([`VcpuLayout`]).

mod fields;
mod layout;

use std::io::Read;

use binrw::Endian;

pub(crate) use fields::field_specs;
pub use fields::{Field, FieldKind, FieldSpec, FieldValue};
pub use layout::{
    CpuUserRegs32, CpuUserRegs64, TrapInfo32, TrapInfo64, VcpuGuestContext32, VcpuGuestContext64,
    FPU_CTXT_SIZE, SIZE_X86_32, SIZE_X86_64,
};

use crate::bytes;
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::WordSize;

/// `VGCF_i387_valid`: `fpu_ctxt` holds a valid FXSAVE image.
pub(crate) const VGCF_I387_VALID: u64 = 1 << 0;
/// `VGCF_in_kernel` (PV only).
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_failsafe_disables_events` (PV only).
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `VGCF_syscall_disables_events` (PV only).
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `VGCF_online`: the vCPU is up.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// `VGCF_in_syscall` (PV only).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// Size of the record for a toolstack word size.
pub const fn context_size(word: WordSize) -> usize {
    match word {
        WordSize::W64 => SIZE_X86_64,
        WordSize::W32 => SIZE_X86_32,
    }
}

/// The word size whose record has this size, if any.
pub(crate) fn word_size_for(size: u64) -> Option<WordSize> {
    match size {
        s if s == SIZE_X86_64 as u64 => Some(WordSize::W64),
        s if s == SIZE_X86_32 as u64 => Some(WordSize::W32),
        _ => None,
    }
}

fn size_ctx() -> Context {
    Context::root().field("vcpu context").field("size")
}

/// Check a declared record size (the u32 `rec_size` in front of each
/// context) before reading or allocating anything.
///
/// With `word` known, the size must be exactly that layout's, as the seed
/// restorer demands ("vcpu context size dismatch"); otherwise either size is
/// accepted and tells the word size. Errors are at offset 0: the caller
/// rebases to the position of the size field.
pub(crate) fn check_size(declared: u64, word: Option<WordSize>) -> Result<WordSize> {
    match (word, word_size_for(declared)) {
        (Some(w), Some(found)) if w == found => Ok(w),
        (None, Some(found)) => Ok(found),
        (Some(w), _) => Err(Error::invalid(
            0,
            size_ctx(),
            format!(
                "{} (vcpu_guest_context of a {}-bit toolstack)",
                context_size(w),
                w.bits()
            ),
            declared.to_string(),
        )),
        (None, None) => Err(Error::invalid(
            0,
            size_ctx(),
            format!("{SIZE_X86_64} (x86_64 toolstack) or {SIZE_X86_32} (i386 toolstack)"),
            declared.to_string(),
        )),
    }
}

/// The typed view of a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuLayout {
    /// 5168-byte record of an x86_64 toolstack.
    X86_64(Box<VcpuGuestContext64>),
    /// 2800-byte record of an i386 toolstack.
    X86_32(Box<VcpuGuestContext32>),
}

/// Register state of one vCPU in plain form: what a save backend captures
/// and what [`VcpuContext::from_registers`] turns into a record.
///
/// Names are the 64-bit ones; for an i386 layout the low halves are used
/// and `r8`–`r15` and the fs/gs bases must be zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuRegisters {
    /// `rax` as the vCPU holds it.
    pub rax: u64,
    /// `rbx` as the vCPU holds it.
    pub rbx: u64,
    /// `rcx` as the vCPU holds it.
    pub rcx: u64,
    /// `rdx` as the vCPU holds it.
    pub rdx: u64,
    /// `rsi` as the vCPU holds it.
    pub rsi: u64,
    /// `rdi` as the vCPU holds it.
    pub rdi: u64,
    /// `rbp` as the vCPU holds it.
    pub rbp: u64,
    /// `rsp` as the vCPU holds it.
    pub rsp: u64,
    /// `r8` as the vCPU holds it.
    pub r8: u64,
    /// `r9` as the vCPU holds it.
    pub r9: u64,
    /// `r10` as the vCPU holds it.
    pub r10: u64,
    /// `r11` as the vCPU holds it.
    pub r11: u64,
    /// `r12` as the vCPU holds it.
    pub r12: u64,
    /// `r13` as the vCPU holds it.
    pub r13: u64,
    /// `r14` as the vCPU holds it.
    pub r14: u64,
    /// `r15` as the vCPU holds it.
    pub r15: u64,
    /// `rip` as the vCPU holds it.
    pub rip: u64,
    /// `rflags` as the vCPU holds it.
    pub rflags: u64,
    /// `cs` as the vCPU holds it.
    pub cs: u16,
    /// `ss` as the vCPU holds it.
    pub ss: u16,
    /// `ds` as the vCPU holds it.
    pub ds: u16,
    /// `es` as the vCPU holds it.
    pub es: u16,
    /// `fs` as the vCPU holds it.
    pub fs: u16,
    /// `gs` as the vCPU holds it.
    pub gs: u16,
    /// `cr0` as the vCPU holds it.
    pub cr0: u64,
    /// `cr2` as the vCPU holds it.
    pub cr2: u64,
    /// `cr3` as the vCPU holds it.
    pub cr3: u64,
    /// `cr4` as the vCPU holds it.
    pub cr4: u64,
    /// DR0..DR7 as `debugreg[]` holds them (DR4/DR5 normally zero).
    pub debugreg: [u64; 8],
    /// Xen leaves these zero for an HVM vCPU (the bases live in the HVM CPU
    /// record); a faithful backend passes zero.
    pub fs_base: u64,
    /// `gs_base_kernel` as the vCPU holds it.
    pub gs_base_kernel: u64,
    /// `gs_base_user` as the vCPU holds it.
    pub gs_base_user: u64,
    /// FXSAVE image.
    pub fpu: [u8; FPU_CTXT_SIZE],
    /// Sets `VGCF_i387_valid` (Xen: the vCPU has used its FPU).
    pub i387_valid: bool,
    /// Sets `VGCF_online` (Xen: the vCPU is not down).
    pub online: bool,
}

impl Default for VcpuRegisters {
    /// All zero, FPU valid and vCPU online: what Xen reports for a running
    /// HVM vCPU before any register is filled in.
    fn default() -> Self {
        VcpuRegisters {
            rax: 0,
            rbx: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            rbp: 0,
            rsp: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            rip: 0,
            rflags: 0,
            cs: 0,
            ss: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            debugreg: [0; 8],
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            fpu: [0; FPU_CTXT_SIZE],
            i387_valid: true,
            online: true,
        }
    }
}

/// One `vcpu_guest_context_t`: the raw bytes and their typed view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuContext {
    raw: Vec<u8>,
    typed: VcpuLayout,
}

fn binrw_error(e: binrw::Error, ctx: &Context) -> Error {
    // Only reachable if a layout's size and its binrw struct disagree; map
    // it anyway rather than panic.
    Error::invalid(0, ctx.clone(), "a well-formed vcpu context", e.to_string())
}

fn narrow(value: u64, name: &'static str) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        Error::invalid(
            0,
            Context::root().field("vcpu context").field(name),
            "a value that fits the 32-bit layout",
            format!("0x{value:x}"),
        )
    })
}

impl VcpuContext {
    /// Parse a record whose length tells the layout (5168 or 2800 bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let word = check_size(bytes.len() as u64, None)?;
        Self::parse_as(word, bytes)
    }

    /// Parse a record that must have the layout of `word`.
    pub fn parse_as(word: WordSize, bytes: &[u8]) -> Result<Self> {
        check_size(bytes.len() as u64, Some(word))?;
        let ctx = Context::root().field("vcpu context");
        let typed = match word {
            WordSize::W64 => VcpuLayout::X86_64(Box::new(
                bytes::decode::<VcpuGuestContext64>(bytes, Endian::Little)
                    .map_err(|e| binrw_error(e, &ctx))?
                    .0,
            )),
            WordSize::W32 => VcpuLayout::X86_32(Box::new(
                bytes::decode::<VcpuGuestContext32>(bytes, Endian::Little)
                    .map_err(|e| binrw_error(e, &ctx))?
                    .0,
            )),
        };
        Ok(VcpuContext {
            raw: bytes.to_vec(),
            typed,
        })
    }

    /// Read exactly one record of `word`'s layout from a stream. A short
    /// read is a truncation error at offset 0 (caller rebases).
    pub fn read_from<R: Read>(r: &mut R, word: WordSize) -> Result<Self> {
        let size = context_size(word);
        let mut buf = Vec::with_capacity(size);
        r.take(size as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::new(0, Context::root().field("vcpu context"), ErrorKind::Io(e)))?;
        if buf.len() < size {
            return Err(Error::truncated(
                buf.len() as u64,
                Context::root().field("vcpu context"),
                (size - buf.len()) as u64,
                0,
            ));
        }
        Self::parse_as(word, &buf)
    }

    /// Build from a typed x86_64 record.
    pub fn from_x86_64(ctx: VcpuGuestContext64) -> Self {
        let mut raw = Vec::with_capacity(SIZE_X86_64);
        bytes::encode(&ctx, Endian::Little, &mut raw);
        VcpuContext {
            raw,
            typed: VcpuLayout::X86_64(Box::new(ctx)),
        }
    }

    /// Build from a typed i386 record.
    pub(crate) fn from_x86_32(ctx: VcpuGuestContext32) -> Self {
        let mut raw = Vec::with_capacity(SIZE_X86_32);
        bytes::encode(&ctx, Endian::Little, &mut raw);
        VcpuContext {
            raw,
            typed: VcpuLayout::X86_32(Box::new(ctx)),
        }
    }

    /// The record Xen's `arch_get_info_guest` produces for an HVM vCPU with
    /// this live state: `flags` from `i387_valid`/`online`, `user_regs` and
    /// `ctrlreg[0,2,3,4]` from the registers, FPU image and debug registers
    /// from the stored state, everything else zero.
    ///
    /// For the i386 layout every value must fit in 32 bits and `r8`–`r15`
    /// and the fs/gs bases must be zero; otherwise an error names the field.
    pub fn from_registers(word: WordSize, regs: &VcpuRegisters) -> Result<Self> {
        let flags = if regs.i387_valid { VGCF_I387_VALID } else { 0 }
            | if regs.online { VGCF_ONLINE } else { 0 };
        match word {
            WordSize::W64 => {
                let mut c = VcpuGuestContext64 {
                    fpu_ctxt: regs.fpu,
                    flags,
                    ..Default::default()
                };
                let u = &mut c.user_regs;
                u.r15 = regs.r15;
                u.r14 = regs.r14;
                u.r13 = regs.r13;
                u.r12 = regs.r12;
                u.rbp = regs.rbp;
                u.rbx = regs.rbx;
                u.r11 = regs.r11;
                u.r10 = regs.r10;
                u.r9 = regs.r9;
                u.r8 = regs.r8;
                u.rax = regs.rax;
                u.rcx = regs.rcx;
                u.rdx = regs.rdx;
                u.rsi = regs.rsi;
                u.rdi = regs.rdi;
                u.rip = regs.rip;
                u.cs = regs.cs;
                u.rflags = regs.rflags;
                u.rsp = regs.rsp;
                u.ss = regs.ss;
                u.es = regs.es;
                u.ds = regs.ds;
                u.fs = regs.fs;
                u.gs = regs.gs;
                c.ctrlreg[0] = regs.cr0;
                c.ctrlreg[2] = regs.cr2;
                c.ctrlreg[3] = regs.cr3;
                c.ctrlreg[4] = regs.cr4;
                c.debugreg = regs.debugreg;
                c.fs_base = regs.fs_base;
                c.gs_base_kernel = regs.gs_base_kernel;
                c.gs_base_user = regs.gs_base_user;
                Ok(Self::from_x86_64(c))
            }
            WordSize::W32 => {
                for (name, v) in [
                    ("r8", regs.r8),
                    ("r9", regs.r9),
                    ("r10", regs.r10),
                    ("r11", regs.r11),
                    ("r12", regs.r12),
                    ("r13", regs.r13),
                    ("r14", regs.r14),
                    ("r15", regs.r15),
                    ("fs_base", regs.fs_base),
                    ("gs_base_kernel", regs.gs_base_kernel),
                    ("gs_base_user", regs.gs_base_user),
                ] {
                    if v != 0 {
                        return Err(Error::invalid(
                            0,
                            Context::root().field("vcpu context").field(name),
                            "0 (the i386 layout has no such field)",
                            format!("0x{v:x}"),
                        ));
                    }
                }
                let mut c = VcpuGuestContext32 {
                    fpu_ctxt: regs.fpu,
                    flags: flags as u32,
                    ..Default::default()
                };
                let u = &mut c.user_regs;
                u.ebx = narrow(regs.rbx, "ebx")?;
                u.ecx = narrow(regs.rcx, "ecx")?;
                u.edx = narrow(regs.rdx, "edx")?;
                u.esi = narrow(regs.rsi, "esi")?;
                u.edi = narrow(regs.rdi, "edi")?;
                u.ebp = narrow(regs.rbp, "ebp")?;
                u.eax = narrow(regs.rax, "eax")?;
                u.eip = narrow(regs.rip, "eip")?;
                u.cs = regs.cs;
                u.eflags = narrow(regs.rflags, "eflags")?;
                u.esp = narrow(regs.rsp, "esp")?;
                u.ss = regs.ss;
                u.es = regs.es;
                u.ds = regs.ds;
                u.fs = regs.fs;
                u.gs = regs.gs;
                c.ctrlreg[0] = narrow(regs.cr0, "cr0")?;
                c.ctrlreg[2] = narrow(regs.cr2, "cr2")?;
                c.ctrlreg[3] = narrow(regs.cr3, "cr3")?;
                c.ctrlreg[4] = narrow(regs.cr4, "cr4")?;
                const DR_NAMES: [&str; 8] =
                    ["dr0", "dr1", "dr2", "dr3", "dr4", "dr5", "dr6", "dr7"];
                for (i, (dst, src)) in c.debugreg.iter_mut().zip(regs.debugreg).enumerate() {
                    *dst = narrow(src, DR_NAMES.get(i).copied().unwrap_or("debugreg"))?;
                }
                Ok(Self::from_x86_32(c))
            }
        }
    }

    /// The register state in plain form (inverse of
    /// [`from_registers`](Self::from_registers) for the fields it fills).
    pub fn registers(&self) -> VcpuRegisters {
        let mut fpu = [0u8; FPU_CTXT_SIZE];
        fpu.copy_from_slice(self.fpu_ctxt());
        VcpuRegisters {
            rax: self.rax(),
            rbx: self.rbx(),
            rcx: self.rcx(),
            rdx: self.rdx(),
            rsi: self.rsi(),
            rdi: self.rdi(),
            rbp: self.rbp(),
            rsp: self.rsp(),
            r8: self.r8(),
            r9: self.r9(),
            r10: self.r10(),
            r11: self.r11(),
            r12: self.r12(),
            r13: self.r13(),
            r14: self.r14(),
            r15: self.r15(),
            rip: self.rip(),
            rflags: self.rflags(),
            cs: self.cs() as u16,
            ss: self.ss() as u16,
            ds: self.ds() as u16,
            es: self.es() as u16,
            fs: self.fs() as u16,
            gs: self.gs() as u16,
            cr0: self.cr0(),
            cr2: self.cr2(),
            cr3: self.cr3(),
            cr4: self.cr4(),
            debugreg: std::array::from_fn(|i| self.debugreg(i)),
            fs_base: self.fs_base(),
            gs_base_kernel: self.gs_base_kernel(),
            gs_base_user: self.gs_base_user(),
            fpu,
            i387_valid: self.flags() & VGCF_I387_VALID != 0,
            online: self.flags() & VGCF_ONLINE != 0,
        }
    }

    /// The record exactly as it was read or built.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The record's bytes, consuming it.
    pub fn into_bytes(self) -> Vec<u8> {
        self.raw
    }

    /// Size in bytes (5168 or 2800).
    pub fn size(&self) -> usize {
        self.raw.len()
    }

    /// The toolstack word size this layout belongs to.
    pub fn word_size(&self) -> WordSize {
        match self.typed {
            VcpuLayout::X86_64(_) => WordSize::W64,
            VcpuLayout::X86_32(_) => WordSize::W32,
        }
    }

    /// The typed view.
    pub fn layout(&self) -> &VcpuLayout {
        &self.typed
    }

    /// Every field with its value, padding included, in offset order.
    pub fn fields(&self) -> Vec<Field> {
        field_specs(self.word_size())
            .iter()
            .filter_map(|s| {
                Some(Field {
                    name: s.name.clone(),
                    value: s.read(&self.raw)?,
                })
            })
            .collect()
    }

    /// The FXSAVE image.
    pub fn fpu_ctxt(&self) -> &[u8; FPU_CTXT_SIZE] {
        match &self.typed {
            VcpuLayout::X86_64(c) => &c.fpu_ctxt,
            VcpuLayout::X86_32(c) => &c.fpu_ctxt,
        }
    }

    /// `flags` (`VGCF_*`).
    pub fn flags(&self) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.flags,
            VcpuLayout::X86_32(c) => c.flags.into(),
        }
    }

    /// `ctrlreg[n]` (CR0..CR7); 0 for `n >= 8`.
    pub fn ctrlreg(&self, n: usize) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.ctrlreg.get(n).copied().unwrap_or(0),
            VcpuLayout::X86_32(c) => c.ctrlreg.get(n).copied().map_or(0, u64::from),
        }
    }

    /// `debugreg[n]` (DR0..DR7); 0 for `n >= 8`.
    pub fn debugreg(&self, n: usize) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.debugreg.get(n).copied().unwrap_or(0),
            VcpuLayout::X86_32(c) => c.debugreg.get(n).copied().map_or(0, u64::from),
        }
    }

    /// CR0.
    pub fn cr0(&self) -> u64 {
        self.ctrlreg(0)
    }
    /// CR2 (last page-fault address).
    pub fn cr2(&self) -> u64 {
        self.ctrlreg(2)
    }
    /// CR3 (page-table base).
    pub fn cr3(&self) -> u64 {
        self.ctrlreg(3)
    }
    /// CR4.
    pub fn cr4(&self) -> u64 {
        self.ctrlreg(4)
    }

    /// `fs_base`; 0 for the i386 layout, which has none.
    pub fn fs_base(&self) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.fs_base,
            VcpuLayout::X86_32(_) => 0,
        }
    }
    /// `gs_base_kernel`; 0 for the i386 layout.
    pub(crate) fn gs_base_kernel(&self) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.gs_base_kernel,
            VcpuLayout::X86_32(_) => 0,
        }
    }
    /// `gs_base_user`; 0 for the i386 layout.
    pub(crate) fn gs_base_user(&self) -> u64 {
        match &self.typed {
            VcpuLayout::X86_64(c) => c.gs_base_user,
            VcpuLayout::X86_32(_) => 0,
        }
    }
}

/// Accessors for `user_regs` fields that both layouts have, widened to u64.
macro_rules! common_regs {
    ($($(#[$doc:meta])* $name:ident => $f64:ident, $f32:ident;)*) => {
        impl VcpuContext {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> u64 {
                    match &self.typed {
                        VcpuLayout::X86_64(c) => u64::from(c.user_regs.$f64),
                        VcpuLayout::X86_32(c) => u64::from(c.user_regs.$f32),
                    }
                }
            )*
        }
    };
}

common_regs! {
    /// RAX / EAX.
    rax => rax, eax;
    /// RBX / EBX.
    rbx => rbx, ebx;
    /// RCX / ECX.
    rcx => rcx, ecx;
    /// RDX / EDX.
    rdx => rdx, edx;
    /// RSI / ESI.
    rsi => rsi, esi;
    /// RDI / EDI.
    rdi => rdi, edi;
    /// RBP / EBP.
    rbp => rbp, ebp;
    /// RSP / ESP.
    rsp => rsp, esp;
    /// RIP / EIP.
    rip => rip, eip;
    /// RFLAGS / EFLAGS.
    rflags => rflags, eflags;
    /// `user_regs.error_code`.
    error_code => error_code, error_code;
    /// `user_regs.entry_vector`.
    entry_vector => entry_vector, entry_vector;
    /// `user_regs.saved_upcall_mask`.
    saved_upcall_mask => saved_upcall_mask, saved_upcall_mask;
}

/// Accessors for registers only the x86_64 layout has (0 on i386).
macro_rules! regs64_only {
    ($($name:ident),*) => {
        impl VcpuContext {
            $(
                #[doc = concat!("`", stringify!($name), "`; 0 for the i386 layout, which has none.")]
                pub fn $name(&self) -> u64 {
                    match &self.typed {
                        VcpuLayout::X86_64(c) => c.user_regs.$name,
                        VcpuLayout::X86_32(_) => 0,
                    }
                }
            )*
        }
    };
}

regs64_only!(r8, r9, r10, r11, r12, r13, r14, r15);

/// Segment selector accessors (u16 in both layouts, widened like the rest).
macro_rules! selectors {
    ($($name:ident),*) => {
        impl VcpuContext {
            $(
                #[doc = concat!("The `", stringify!($name), "` selector.")]
                pub fn $name(&self) -> u64 {
                    match &self.typed {
                        VcpuLayout::X86_64(c) => u64::from(c.user_regs.$name),
                        VcpuLayout::X86_32(c) => u64::from(c.user_regs.$name),
                    }
                }
            )*
        }
    };
}

selectors!(cs, ss, ds, es, fs, gs);

#[cfg(test)]
mod tests;

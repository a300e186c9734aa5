//! The two C layouts of `vcpu_guest_context_t` as binrw records.
//!
//! Every byte of the record is a field here, padding included, so that
//! writing a parsed record gives back the input byte for byte. Names follow
//! Xen's headers (`xen/include/public/arch-x86/xen*.h` @ `e2a44bc7a4`);
//! Xen's unnamed alignment holes get a `_pad` name.

use binrw::{BinRead, BinWrite};

/// Size of `vcpu_guest_context_t` compiled for an x86_64 toolstack.
pub const SIZE_X86_64: usize = 5168;
/// Size of `vcpu_guest_context_t` compiled for an i386 toolstack.
pub const SIZE_X86_32: usize = 2800;
/// Entries of `trap_ctxt[]` (one per interrupt vector).
pub(crate) const TRAP_ENTRIES: usize = 256;
/// Entries of `gdt_frames[]`.
pub(crate) const GDT_FRAMES: usize = 16;
/// Size of the FXSAVE image at the start of both layouts.
pub const FPU_CTXT_SIZE: usize = 512;

/// `struct trap_info` of an x86_64 toolstack (16 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct TrapInfo64 {
    pub vector: u8,
    pub flags: u8,
    pub cs: u16,
    /// Alignment hole before the 8-byte `address`.
    pub _pad: [u8; 4],
    pub address: u64,
}

/// `struct trap_info` of an i386 toolstack (8 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct TrapInfo32 {
    pub vector: u8,
    pub flags: u8,
    pub cs: u16,
    pub address: u32,
}

/// `struct cpu_user_regs` of an x86_64 toolstack (200 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct CpuUserRegs64 {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: [u8; 2],
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u8; 6],
    pub es: u16,
    pub _pad3: [u8; 6],
    pub ds: u16,
    pub _pad4: [u8; 6],
    pub fs: u16,
    pub _pad5: [u8; 6],
    pub gs: u16,
    pub _pad6: [u8; 6],
}

/// `struct cpu_user_regs` of an i386 toolstack (68 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct CpuUserRegs32 {
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub esi: u32,
    pub edi: u32,
    pub ebp: u32,
    pub eax: u32,
    pub error_code: u16,
    pub entry_vector: u16,
    pub eip: u32,
    pub cs: u16,
    pub saved_upcall_mask: u8,
    pub _pad0: u8,
    pub eflags: u32,
    pub esp: u32,
    pub ss: u16,
    pub _pad1: [u8; 2],
    pub es: u16,
    pub _pad2: [u8; 2],
    pub ds: u16,
    pub _pad3: [u8; 2],
    pub fs: u16,
    pub _pad4: [u8; 2],
    pub gs: u16,
    pub _pad5: [u8; 2],
}

/// `vcpu_guest_context_t` of an x86_64 toolstack (5168 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, PartialEq, Eq)]
#[brw(little)]
pub struct VcpuGuestContext64 {
    /// FXSAVE image (`struct { char x[512]; }`).
    pub fpu_ctxt: [u8; FPU_CTXT_SIZE],
    /// `VGCF_*` bits.
    pub flags: u64,
    pub user_regs: CpuUserRegs64,
    pub trap_ctxt: [TrapInfo64; TRAP_ENTRIES],
    pub ldt_base: u64,
    pub ldt_ents: u64,
    pub gdt_frames: [u64; GDT_FRAMES],
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    /// CR0..CR7; an HVM vCPU has CR0, CR2, CR3, CR4 filled in.
    pub ctrlreg: [u64; 8],
    pub debugreg: [u64; 8],
    pub event_callback_eip: u64,
    pub failsafe_callback_eip: u64,
    pub syscall_callback_eip: u64,
    pub vm_assist: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}

impl Default for VcpuGuestContext64 {
    fn default() -> Self {
        VcpuGuestContext64 {
            fpu_ctxt: [0; FPU_CTXT_SIZE],
            flags: 0,
            user_regs: CpuUserRegs64::default(),
            trap_ctxt: [TrapInfo64::default(); TRAP_ENTRIES],
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: [0; GDT_FRAMES],
            gdt_ents: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            ctrlreg: [0; 8],
            debugreg: [0; 8],
            event_callback_eip: 0,
            failsafe_callback_eip: 0,
            syscall_callback_eip: 0,
            vm_assist: 0,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
        }
    }
}

/// `vcpu_guest_context_t` of an i386 toolstack (2800 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, PartialEq, Eq)]
#[brw(little)]
pub struct VcpuGuestContext32 {
    /// FXSAVE image.
    pub fpu_ctxt: [u8; FPU_CTXT_SIZE],
    /// `VGCF_*` bits.
    pub flags: u32,
    pub user_regs: CpuUserRegs32,
    pub trap_ctxt: [TrapInfo32; TRAP_ENTRIES],
    pub ldt_base: u32,
    pub ldt_ents: u32,
    pub gdt_frames: [u32; GDT_FRAMES],
    pub gdt_ents: u32,
    pub kernel_ss: u32,
    pub kernel_sp: u32,
    /// CR0..CR7.
    pub ctrlreg: [u32; 8],
    pub debugreg: [u32; 8],
    pub event_callback_cs: u32,
    pub event_callback_eip: u32,
    pub failsafe_callback_cs: u32,
    pub failsafe_callback_eip: u32,
    pub vm_assist: u32,
}

impl Default for VcpuGuestContext32 {
    fn default() -> Self {
        VcpuGuestContext32 {
            fpu_ctxt: [0; FPU_CTXT_SIZE],
            flags: 0,
            user_regs: CpuUserRegs32::default(),
            trap_ctxt: [TrapInfo32::default(); TRAP_ENTRIES],
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: [0; GDT_FRAMES],
            gdt_ents: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            ctrlreg: [0; 8],
            debugreg: [0; 8],
            event_callback_cs: 0,
            event_callback_eip: 0,
            failsafe_callback_cs: 0,
            failsafe_callback_eip: 0,
            vm_assist: 0,
        }
    }
}

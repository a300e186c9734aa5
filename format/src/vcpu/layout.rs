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
    /// `trap_info.vector`.
    pub vector: u8,
    /// `trap_info.flags`.
    pub flags: u8,
    /// `trap_info.cs`.
    pub cs: u16,
    /// Alignment hole before the 8-byte `address`.
    pub _pad: [u8; 4],
    /// `trap_info.address`.
    pub address: u64,
}

/// `struct trap_info` of an i386 toolstack (8 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct TrapInfo32 {
    /// `trap_info.vector`.
    pub vector: u8,
    /// `trap_info.flags`.
    pub flags: u8,
    /// `trap_info.cs`.
    pub cs: u16,
    /// `trap_info.address`.
    pub address: u32,
}

/// `struct cpu_user_regs` of an x86_64 toolstack (200 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct CpuUserRegs64 {
    /// `cpu_user_regs.r15`.
    pub r15: u64,
    /// `cpu_user_regs.r14`.
    pub r14: u64,
    /// `cpu_user_regs.r13`.
    pub r13: u64,
    /// `cpu_user_regs.r12`.
    pub r12: u64,
    /// `cpu_user_regs.rbp`.
    pub rbp: u64,
    /// `cpu_user_regs.rbx`.
    pub rbx: u64,
    /// `cpu_user_regs.r11`.
    pub r11: u64,
    /// `cpu_user_regs.r10`.
    pub r10: u64,
    /// `cpu_user_regs.r9`.
    pub r9: u64,
    /// `cpu_user_regs.r8`.
    pub r8: u64,
    /// `cpu_user_regs.rax`.
    pub rax: u64,
    /// `cpu_user_regs.rcx`.
    pub rcx: u64,
    /// `cpu_user_regs.rdx`.
    pub rdx: u64,
    /// `cpu_user_regs.rsi`.
    pub rsi: u64,
    /// `cpu_user_regs.rdi`.
    pub rdi: u64,
    /// `cpu_user_regs.error_code`.
    pub error_code: u32,
    /// `cpu_user_regs.entry_vector`.
    pub entry_vector: u32,
    /// `cpu_user_regs.rip`.
    pub rip: u64,
    /// `cpu_user_regs.cs`.
    pub cs: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad0: [u8; 2],
    /// `cpu_user_regs.saved_upcall_mask`.
    pub saved_upcall_mask: u8,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad1: [u8; 3],
    /// `cpu_user_regs.rflags`.
    pub rflags: u64,
    /// `cpu_user_regs.rsp`.
    pub rsp: u64,
    /// `cpu_user_regs.ss`.
    pub ss: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad2: [u8; 6],
    /// `cpu_user_regs.es`.
    pub es: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad3: [u8; 6],
    /// `cpu_user_regs.ds`.
    pub ds: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad4: [u8; 6],
    /// `cpu_user_regs.fs`.
    pub fs: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad5: [u8; 6],
    /// `cpu_user_regs.gs`.
    pub gs: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad6: [u8; 6],
}

/// `struct cpu_user_regs` of an i386 toolstack (68 bytes).
#[derive(BinRead, BinWrite, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[brw(little)]
pub struct CpuUserRegs32 {
    /// `cpu_user_regs.ebx`.
    pub ebx: u32,
    /// `cpu_user_regs.ecx`.
    pub ecx: u32,
    /// `cpu_user_regs.edx`.
    pub edx: u32,
    /// `cpu_user_regs.esi`.
    pub esi: u32,
    /// `cpu_user_regs.edi`.
    pub edi: u32,
    /// `cpu_user_regs.ebp`.
    pub ebp: u32,
    /// `cpu_user_regs.eax`.
    pub eax: u32,
    /// `cpu_user_regs.error_code`.
    pub error_code: u16,
    /// `cpu_user_regs.entry_vector`.
    pub entry_vector: u16,
    /// `cpu_user_regs.eip`.
    pub eip: u32,
    /// `cpu_user_regs.cs`.
    pub cs: u16,
    /// `cpu_user_regs.saved_upcall_mask`.
    pub saved_upcall_mask: u8,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad0: u8,
    /// `cpu_user_regs.eflags`.
    pub eflags: u32,
    /// `cpu_user_regs.esp`.
    pub esp: u32,
    /// `cpu_user_regs.ss`.
    pub ss: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad1: [u8; 2],
    /// `cpu_user_regs.es`.
    pub es: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad2: [u8; 2],
    /// `cpu_user_regs.ds`.
    pub ds: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad3: [u8; 2],
    /// `cpu_user_regs.fs`.
    pub fs: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub _pad4: [u8; 2],
    /// `cpu_user_regs.gs`.
    pub gs: u16,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
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
    /// `vcpu_guest_context_t.user_regs`.
    pub user_regs: CpuUserRegs64,
    /// `vcpu_guest_context_t.trap_ctxt`.
    pub trap_ctxt: [TrapInfo64; TRAP_ENTRIES],
    /// `vcpu_guest_context_t.ldt_base`.
    pub ldt_base: u64,
    /// `vcpu_guest_context_t.ldt_ents`.
    pub ldt_ents: u64,
    /// `vcpu_guest_context_t.gdt_frames`.
    pub gdt_frames: [u64; GDT_FRAMES],
    /// `vcpu_guest_context_t.gdt_ents`.
    pub gdt_ents: u64,
    /// `vcpu_guest_context_t.kernel_ss`.
    pub kernel_ss: u64,
    /// `vcpu_guest_context_t.kernel_sp`.
    pub kernel_sp: u64,
    /// CR0..CR7; an HVM vCPU has CR0, CR2, CR3, CR4 filled in.
    pub ctrlreg: [u64; 8],
    /// `vcpu_guest_context_t.debugreg`.
    pub debugreg: [u64; 8],
    /// `vcpu_guest_context_t.event_callback_eip`.
    pub event_callback_eip: u64,
    /// `vcpu_guest_context_t.failsafe_callback_eip`.
    pub failsafe_callback_eip: u64,
    /// `vcpu_guest_context_t.syscall_callback_eip`.
    pub syscall_callback_eip: u64,
    /// `vcpu_guest_context_t.vm_assist`.
    pub vm_assist: u64,
    /// `vcpu_guest_context_t.fs_base`.
    pub fs_base: u64,
    /// `vcpu_guest_context_t.gs_base_kernel`.
    pub gs_base_kernel: u64,
    /// `vcpu_guest_context_t.gs_base_user`.
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
    /// `vcpu_guest_context_t.user_regs`.
    pub user_regs: CpuUserRegs32,
    /// `vcpu_guest_context_t.trap_ctxt`.
    pub trap_ctxt: [TrapInfo32; TRAP_ENTRIES],
    /// `vcpu_guest_context_t.ldt_base`.
    pub ldt_base: u32,
    /// `vcpu_guest_context_t.ldt_ents`.
    pub ldt_ents: u32,
    /// `vcpu_guest_context_t.gdt_frames`.
    pub gdt_frames: [u32; GDT_FRAMES],
    /// `vcpu_guest_context_t.gdt_ents`.
    pub gdt_ents: u32,
    /// `vcpu_guest_context_t.kernel_ss`.
    pub kernel_ss: u32,
    /// `vcpu_guest_context_t.kernel_sp`.
    pub kernel_sp: u32,
    /// CR0..CR7.
    pub ctrlreg: [u32; 8],
    /// `vcpu_guest_context_t.debugreg`.
    pub debugreg: [u32; 8],
    /// `vcpu_guest_context_t.event_callback_cs`.
    pub event_callback_cs: u32,
    /// `vcpu_guest_context_t.event_callback_eip`.
    pub event_callback_eip: u32,
    /// `vcpu_guest_context_t.failsafe_callback_cs`.
    pub failsafe_callback_cs: u32,
    /// `vcpu_guest_context_t.failsafe_callback_eip`.
    pub failsafe_callback_eip: u32,
    /// `vcpu_guest_context_t.vm_assist`.
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

//! The C structs of Xen's `public/hvm/save.h`, one Rust struct per layout
//! that ever shipped with a distinct size, byte-exact (padding kept as
//! fields so that encoding reproduces the input).
//!
//! Seed-era layouts (`e2a44bc7a4`, April 2007) carry the `Seed` suffix where
//! the current struct differs; layouts without a suffix are current Xen's.

use super::fields::{hvm_struct, member, push_bits, Field, FieldSource};
use crate::bytes::le;

/// `struct hvm_save_header`. 24 bytes on x86_64 Xen of every era, 20 on
/// 32-bit Xen of 2007 (no tail). The four tail bytes are padding up to 3.4
/// (uninitialised stack, arbitrary) and `gtsc_khz` from 4.0; keeping them as
/// one field preserves them byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `HVM_FILE_MAGIC` = 0x54381286.
    pub magic: u32,
    /// `HVM_FILE_VERSION` = 1.
    pub version: u32,
    /// Xen changeset; 0 in practice in 2007 (see docs/format.md §5.2).
    pub changeset: u64,
    /// CPUID.1:EAX of the saving host.
    pub cpuid: u32,
    /// Bytes 20..24: padding before 4.0, `gtsc_khz` from 4.0; `None` for the
    /// 20-byte header of 32-bit Xen.
    pub tail: Option<u32>,
}

/// `HVM_FILE_MAGIC`.
pub(crate) const HVM_FILE_MAGIC: u32 = 0x5438_1286;
/// `HVM_FILE_VERSION`.
pub(crate) const HVM_FILE_VERSION: u32 = 1;

impl Header {
    /// Decode a 20- or 24-byte header; other lengths are not a header layout.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() != 20 && b.len() != 24 {
            return None;
        }
        Some(Header {
            magic: le(b, 0)?,
            version: le(b, 4)?,
            changeset: le(b, 8)?,
            cpuid: le(b, 16)?,
            tail: if b.len() == 24 {
                Some(le(b, 20)?)
            } else {
                None
            },
        })
    }

    /// Encode to 24 or 20 bytes (by `tail`).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.changeset.to_le_bytes());
        out.extend_from_slice(&self.cpuid.to_le_bytes());
        if let Some(t) = self.tail {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }

    /// Payload length of this header.
    pub fn len(&self) -> usize {
        if self.tail.is_some() {
            24
        } else {
            20
        }
    }

    /// Always false; a header is never empty (clippy's `len` companion).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FieldSource for Header {
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        self.magic.push_fields(&member(prefix, "magic"), out);
        self.version.push_fields(&member(prefix, "version"), out);
        self.changeset
            .push_fields(&member(prefix, "changeset"), out);
        self.cpuid.push_fields(&member(prefix, "cpuid"), out);
        if let Some(t) = self.tail {
            // One name for both meanings: the bytes cannot tell the eras apart.
            t.push_fields(&member(prefix, "gtsc_khz_or_pad"), out);
        }
    }
}

hvm_struct! {
    /// Seed-era `struct hvm_hw_cpu` (320 bytes): segment state, control
    /// registers and MSRs only; the GPRs and FPU travel in the libxc vCPU
    /// contexts in this era.
    pub struct CpuSeed(320) {
        /// `hvm_hw_cpu.eip`.
        pub eip: u64,
        /// `hvm_hw_cpu.esp`.
        pub esp: u64,
        /// `hvm_hw_cpu.eflags`.
        pub eflags: u64,
        /// `hvm_hw_cpu.cr0`.
        pub cr0: u64,
        /// `hvm_hw_cpu.cr3`.
        pub cr3: u64,
        /// `hvm_hw_cpu.cr4`.
        pub cr4: u64,
        /// `hvm_hw_cpu.cs_sel`.
        pub cs_sel: u32,
        /// `hvm_hw_cpu.ds_sel`.
        pub ds_sel: u32,
        /// `hvm_hw_cpu.es_sel`.
        pub es_sel: u32,
        /// `hvm_hw_cpu.fs_sel`.
        pub fs_sel: u32,
        /// `hvm_hw_cpu.gs_sel`.
        pub gs_sel: u32,
        /// `hvm_hw_cpu.ss_sel`.
        pub ss_sel: u32,
        /// `hvm_hw_cpu.tr_sel`.
        pub tr_sel: u32,
        /// `hvm_hw_cpu.ldtr_sel`.
        pub ldtr_sel: u32,
        /// `hvm_hw_cpu.cs_limit`.
        pub cs_limit: u32,
        /// `hvm_hw_cpu.ds_limit`.
        pub ds_limit: u32,
        /// `hvm_hw_cpu.es_limit`.
        pub es_limit: u32,
        /// `hvm_hw_cpu.fs_limit`.
        pub fs_limit: u32,
        /// `hvm_hw_cpu.gs_limit`.
        pub gs_limit: u32,
        /// `hvm_hw_cpu.ss_limit`.
        pub ss_limit: u32,
        /// `hvm_hw_cpu.tr_limit`.
        pub tr_limit: u32,
        /// `hvm_hw_cpu.ldtr_limit`.
        pub ldtr_limit: u32,
        /// `hvm_hw_cpu.idtr_limit`.
        pub idtr_limit: u32,
        /// `hvm_hw_cpu.gdtr_limit`.
        pub gdtr_limit: u32,
        /// `hvm_hw_cpu.cs_base`.
        pub cs_base: u64,
        /// `hvm_hw_cpu.ds_base`.
        pub ds_base: u64,
        /// `hvm_hw_cpu.es_base`.
        pub es_base: u64,
        /// `hvm_hw_cpu.fs_base`.
        pub fs_base: u64,
        /// `hvm_hw_cpu.gs_base`.
        pub gs_base: u64,
        /// `hvm_hw_cpu.ss_base`.
        pub ss_base: u64,
        /// `hvm_hw_cpu.tr_base`.
        pub tr_base: u64,
        /// `hvm_hw_cpu.ldtr_base`.
        pub ldtr_base: u64,
        /// `hvm_hw_cpu.idtr_base`.
        pub idtr_base: u64,
        /// `hvm_hw_cpu.gdtr_base`.
        pub gdtr_base: u64,
        /// `hvm_hw_cpu.cs_arbytes`.
        pub cs_arbytes: u32,
        /// `hvm_hw_cpu.ds_arbytes`.
        pub ds_arbytes: u32,
        /// `hvm_hw_cpu.es_arbytes`.
        pub es_arbytes: u32,
        /// `hvm_hw_cpu.fs_arbytes`.
        pub fs_arbytes: u32,
        /// `hvm_hw_cpu.gs_arbytes`.
        pub gs_arbytes: u32,
        /// `hvm_hw_cpu.ss_arbytes`.
        pub ss_arbytes: u32,
        /// `hvm_hw_cpu.tr_arbytes`.
        pub tr_arbytes: u32,
        /// `hvm_hw_cpu.ldtr_arbytes`.
        pub ldtr_arbytes: u32,
        /// `hvm_hw_cpu.sysenter_cs`.
        pub sysenter_cs: u32,
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub padding0: u32,
        /// `hvm_hw_cpu.sysenter_esp`.
        pub sysenter_esp: u64,
        /// `hvm_hw_cpu.sysenter_eip`.
        pub sysenter_eip: u64,
        /// `hvm_hw_cpu.shadow_gs`.
        pub shadow_gs: u64,
        /// `hvm_hw_cpu.flags`.
        pub flags: u64,
        /// `hvm_hw_cpu.msr_lstar`.
        pub msr_lstar: u64,
        /// `hvm_hw_cpu.msr_star`.
        pub msr_star: u64,
        /// `hvm_hw_cpu.msr_cstar`.
        pub msr_cstar: u64,
        /// `hvm_hw_cpu.msr_syscall_mask`.
        pub msr_syscall_mask: u64,
        /// `hvm_hw_cpu.msr_efer`.
        pub msr_efer: u64,
        /// `hvm_hw_cpu.tsc`.
        pub tsc: u64,
    }
}

impl CpuSeed {
    /// The architectural power-on state of an x86 CPU as Xen's HVM vCPUs
    /// start (real mode at F000:FFF0), for building reset-state blobs.
    pub fn power_on() -> CpuSeed {
        CpuSeed {
            eip: 0xFFF0,
            esp: 0,
            eflags: 0x2,
            cr0: 0x6000_0010,
            cr3: 0,
            cr4: 0,
            cs_sel: 0xF000,
            ds_sel: 0,
            es_sel: 0,
            fs_sel: 0,
            gs_sel: 0,
            ss_sel: 0,
            tr_sel: 0,
            ldtr_sel: 0,
            cs_limit: 0xFFFF,
            ds_limit: 0xFFFF,
            es_limit: 0xFFFF,
            fs_limit: 0xFFFF,
            gs_limit: 0xFFFF,
            ss_limit: 0xFFFF,
            tr_limit: 0xFFFF,
            ldtr_limit: 0xFFFF,
            idtr_limit: 0xFFFF,
            gdtr_limit: 0xFFFF,
            cs_base: 0xFFFF_0000,
            ds_base: 0,
            es_base: 0,
            fs_base: 0,
            gs_base: 0,
            ss_base: 0,
            tr_base: 0,
            ldtr_base: 0,
            idtr_base: 0,
            gdtr_base: 0,
            cs_arbytes: 0x9B,
            ds_arbytes: 0x93,
            es_arbytes: 0x93,
            fs_arbytes: 0x93,
            gs_arbytes: 0x93,
            ss_arbytes: 0x93,
            tr_arbytes: 0x8B,
            ldtr_arbytes: 0x82,
            sysenter_cs: 0,
            padding0: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            shadow_gs: 0,
            flags: 0,
            msr_lstar: 0,
            msr_star: 0,
            msr_cstar: 0,
            msr_syscall_mask: 0,
            msr_efer: 0,
            tsc: 0,
        }
    }
}

hvm_struct! {
    /// The first 1000 bytes of `struct hvm_hw_cpu` from 3.1 on, shared by the
    /// compat (1016) and current (1032) forms: FPU image, GPRs, control and
    /// debug registers, segments and MSRs up to `msr_efer`.
    pub struct CpuCommon(1000) {
        /// `hvm_hw_cpu.fpu_regs`.
        pub fpu_regs: [u8; 512],
        /// `hvm_hw_cpu.rax`.
        pub rax: u64,
        /// `hvm_hw_cpu.rbx`.
        pub rbx: u64,
        /// `hvm_hw_cpu.rcx`.
        pub rcx: u64,
        /// `hvm_hw_cpu.rdx`.
        pub rdx: u64,
        /// `hvm_hw_cpu.rbp`.
        pub rbp: u64,
        /// `hvm_hw_cpu.rsi`.
        pub rsi: u64,
        /// `hvm_hw_cpu.rdi`.
        pub rdi: u64,
        /// `hvm_hw_cpu.rsp`.
        pub rsp: u64,
        /// `hvm_hw_cpu.r8`.
        pub r8: u64,
        /// `hvm_hw_cpu.r9`.
        pub r9: u64,
        /// `hvm_hw_cpu.r10`.
        pub r10: u64,
        /// `hvm_hw_cpu.r11`.
        pub r11: u64,
        /// `hvm_hw_cpu.r12`.
        pub r12: u64,
        /// `hvm_hw_cpu.r13`.
        pub r13: u64,
        /// `hvm_hw_cpu.r14`.
        pub r14: u64,
        /// `hvm_hw_cpu.r15`.
        pub r15: u64,
        /// `hvm_hw_cpu.rip`.
        pub rip: u64,
        /// `hvm_hw_cpu.rflags`.
        pub rflags: u64,
        /// `hvm_hw_cpu.cr0`.
        pub cr0: u64,
        /// `hvm_hw_cpu.cr2`.
        pub cr2: u64,
        /// `hvm_hw_cpu.cr3`.
        pub cr3: u64,
        /// `hvm_hw_cpu.cr4`.
        pub cr4: u64,
        /// `hvm_hw_cpu.dr0`.
        pub dr0: u64,
        /// `hvm_hw_cpu.dr1`.
        pub dr1: u64,
        /// `hvm_hw_cpu.dr2`.
        pub dr2: u64,
        /// `hvm_hw_cpu.dr3`.
        pub dr3: u64,
        /// `hvm_hw_cpu.dr6`.
        pub dr6: u64,
        /// `hvm_hw_cpu.dr7`.
        pub dr7: u64,
        /// `hvm_hw_cpu.cs_sel`.
        pub cs_sel: u32,
        /// `hvm_hw_cpu.ds_sel`.
        pub ds_sel: u32,
        /// `hvm_hw_cpu.es_sel`.
        pub es_sel: u32,
        /// `hvm_hw_cpu.fs_sel`.
        pub fs_sel: u32,
        /// `hvm_hw_cpu.gs_sel`.
        pub gs_sel: u32,
        /// `hvm_hw_cpu.ss_sel`.
        pub ss_sel: u32,
        /// `hvm_hw_cpu.tr_sel`.
        pub tr_sel: u32,
        /// `hvm_hw_cpu.ldtr_sel`.
        pub ldtr_sel: u32,
        /// `hvm_hw_cpu.cs_limit`.
        pub cs_limit: u32,
        /// `hvm_hw_cpu.ds_limit`.
        pub ds_limit: u32,
        /// `hvm_hw_cpu.es_limit`.
        pub es_limit: u32,
        /// `hvm_hw_cpu.fs_limit`.
        pub fs_limit: u32,
        /// `hvm_hw_cpu.gs_limit`.
        pub gs_limit: u32,
        /// `hvm_hw_cpu.ss_limit`.
        pub ss_limit: u32,
        /// `hvm_hw_cpu.tr_limit`.
        pub tr_limit: u32,
        /// `hvm_hw_cpu.ldtr_limit`.
        pub ldtr_limit: u32,
        /// `hvm_hw_cpu.idtr_limit`.
        pub idtr_limit: u32,
        /// `hvm_hw_cpu.gdtr_limit`.
        pub gdtr_limit: u32,
        /// `hvm_hw_cpu.cs_base`.
        pub cs_base: u64,
        /// `hvm_hw_cpu.ds_base`.
        pub ds_base: u64,
        /// `hvm_hw_cpu.es_base`.
        pub es_base: u64,
        /// `hvm_hw_cpu.fs_base`.
        pub fs_base: u64,
        /// `hvm_hw_cpu.gs_base`.
        pub gs_base: u64,
        /// `hvm_hw_cpu.ss_base`.
        pub ss_base: u64,
        /// `hvm_hw_cpu.tr_base`.
        pub tr_base: u64,
        /// `hvm_hw_cpu.ldtr_base`.
        pub ldtr_base: u64,
        /// `hvm_hw_cpu.idtr_base`.
        pub idtr_base: u64,
        /// `hvm_hw_cpu.gdtr_base`.
        pub gdtr_base: u64,
        /// `hvm_hw_cpu.cs_arbytes`.
        pub cs_arbytes: u32,
        /// `hvm_hw_cpu.ds_arbytes`.
        pub ds_arbytes: u32,
        /// `hvm_hw_cpu.es_arbytes`.
        pub es_arbytes: u32,
        /// `hvm_hw_cpu.fs_arbytes`.
        pub fs_arbytes: u32,
        /// `hvm_hw_cpu.gs_arbytes`.
        pub gs_arbytes: u32,
        /// `hvm_hw_cpu.ss_arbytes`.
        pub ss_arbytes: u32,
        /// `hvm_hw_cpu.tr_arbytes`.
        pub tr_arbytes: u32,
        /// `hvm_hw_cpu.ldtr_arbytes`.
        pub ldtr_arbytes: u32,
        /// `hvm_hw_cpu.sysenter_cs`.
        pub sysenter_cs: u64,
        /// `hvm_hw_cpu.sysenter_esp`.
        pub sysenter_esp: u64,
        /// `hvm_hw_cpu.sysenter_eip`.
        pub sysenter_eip: u64,
        /// `hvm_hw_cpu.shadow_gs`.
        pub shadow_gs: u64,
        /// `hvm_hw_cpu.msr_flags`.
        pub msr_flags: u64,
        /// `hvm_hw_cpu.msr_lstar`.
        pub msr_lstar: u64,
        /// `hvm_hw_cpu.msr_star`.
        pub msr_star: u64,
        /// `hvm_hw_cpu.msr_cstar`.
        pub msr_cstar: u64,
        /// `hvm_hw_cpu.msr_syscall_mask`.
        pub msr_syscall_mask: u64,
        /// `hvm_hw_cpu.msr_efer`.
        pub msr_efer: u64,
    }
}

/// `pending_event` of `hvm_hw_cpu`: a u32 that is also a bitfield struct
/// (`pending_vector:8, pending_type:3, pending_error_valid:1,
/// pending_reserved:19, pending_valid:1`). Listed both ways, as the C union.
#[derive(Debug, Clone, Copy, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct PendingEvent(pub u32);

impl FieldSource for PendingEvent {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        self.0.push_fields(name, out);
        let w = u64::from(self.0);
        let base = name.strip_suffix("pending_event").unwrap_or(name);
        for (n, shift, bits) in [
            ("pending_vector", 0, 8),
            ("pending_type", 8, 3),
            ("pending_error_valid", 11, 1),
            ("pending_reserved", 12, 19),
            ("pending_valid", 31, 1),
        ] {
            push_bits(out, format!("{base}{n}"), w, shift, bits);
        }
    }
}

/// Current `struct hvm_hw_cpu` (1032 bytes, Xen 4.7 on).
#[derive(Debug, Clone, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct Cpu {
    /// Everything up to `msr_efer`.
    pub common: CpuCommon,
    /// `hvm_hw_cpu.msr_tsc_aux`.
    pub msr_tsc_aux: u64,
    /// `hvm_hw_cpu.tsc`.
    pub tsc: u64,
    /// `hvm_hw_cpu.pending_event`.
    pub pending_event: PendingEvent,
    /// `hvm_hw_cpu.error_code`.
    pub error_code: u32,
    /// `XEN_X86_FPU_INITIALISED` (bit 0).
    pub flags: u32,
    /// Padding in Xen's layout, kept so that encoding is byte-exact.
    pub pad0: u32,
}

impl Cpu {
    /// Payload size.
    pub const SIZE: usize = 1032;
}

impl FieldSource for Cpu {
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        self.common.push_fields(prefix, out);
        self.msr_tsc_aux
            .push_fields(&member(prefix, "msr_tsc_aux"), out);
        self.tsc.push_fields(&member(prefix, "tsc"), out);
        self.pending_event
            .push_fields(&member(prefix, "pending_event"), out);
        self.error_code
            .push_fields(&member(prefix, "error_code"), out);
        self.flags.push_fields(&member(prefix, "flags"), out);
        self.pad0.push_fields(&member(prefix, "pad0"), out);
    }
}

/// `struct hvm_hw_cpu_compat` (1016 bytes, Xen 3.1–3.4): no `msr_tsc_aux`,
/// no `flags`. Current Xen still loads it (`_hvm_hw_fix_cpu`).
#[derive(Debug, Clone, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct CpuCompat {
    /// Everything up to `msr_efer`.
    pub common: CpuCommon,
    /// `hvm_hw_cpu_compat.tsc`.
    pub tsc: u64,
    /// `hvm_hw_cpu_compat.pending_event`.
    pub pending_event: PendingEvent,
    /// `hvm_hw_cpu_compat.error_code`.
    pub error_code: u32,
}

impl CpuCompat {
    /// Payload size.
    pub const SIZE: usize = 1016;
}

impl FieldSource for CpuCompat {
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        self.common.push_fields(prefix, out);
        self.tsc.push_fields(&member(prefix, "tsc"), out);
        self.pending_event
            .push_fields(&member(prefix, "pending_event"), out);
        self.error_code
            .push_fields(&member(prefix, "error_code"), out);
    }
}

/// Byte 4 of `hvm_hw_vpic`: `init_state:4, priority_add:4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct PicInit(pub u8);

impl PicInit {
    /// ICW initialisation progress (0 = none in progress).
    pub fn init_state(self) -> u8 {
        self.0 & 0xF
    }
    /// IR line with highest priority.
    pub fn priority_add(self) -> u8 {
        self.0 >> 4
    }
}

impl FieldSource for PicInit {
    /// Lists the C bitfields under their own names (the byte has no name in C).
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        let base = name.strip_suffix("init").unwrap_or("");
        let w = u64::from(self.0);
        push_bits(out, format!("{base}init_state"), w, 0, 4);
        push_bits(out, format!("{base}priority_add"), w, 4, 4);
    }
}

/// Byte 5 of `hvm_hw_vpic`: seven one-bit flags (bit 7 unused, kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct PicMode(pub u8);

/// Bit names of [`PicMode`], bit 0 first.
pub(crate) const PIC_MODE_BITS: [&str; 7] = [
    "readsel_isr",
    "poll",
    "auto_eoi",
    "rotate_on_auto_eoi",
    "special_fully_nested_mode",
    "special_mask_mode",
    "is_master",
];

impl PicMode {
    /// Is this the master PIC (not programmable, set by Xen)?
    pub fn is_master(self) -> bool {
        self.0 & 0x40 != 0
    }
}

impl FieldSource for PicMode {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        let base = name.strip_suffix("mode").unwrap_or("");
        let w = u64::from(self.0);
        for (bit, n) in PIC_MODE_BITS.iter().enumerate() {
            push_bits(out, format!("{base}{n}"), w, bit as u32, 1);
        }
        push_bits(out, format!("{base}mode_bit7_unused"), w, 7, 1);
    }
}

hvm_struct! {
    /// `struct hvm_hw_vpic` (8 bytes, unchanged since 2007): one 8259.
    pub struct Pic(8) {
        /// `hvm_hw_vpic.irr`.
        pub irr: u8,
        /// `hvm_hw_vpic.imr`.
        pub imr: u8,
        /// `hvm_hw_vpic.isr`.
        pub isr: u8,
        /// `hvm_hw_vpic.irq_base`.
        pub irq_base: u8,
        /// `hvm_hw_vpic.init`.
        pub init: PicInit,
        /// `hvm_hw_vpic.mode`.
        pub mode: PicMode,
        /// `hvm_hw_vpic.elcr`.
        pub elcr: u8,
        /// `hvm_hw_vpic.int_output`.
        pub int_output: u8,
    }
}

/// `union vioapic_redir_entry`: one IOAPIC pin as a u64 with bitfields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct RedirEntry(pub u64);

impl RedirEntry {
    /// The `mask` bit: pin masked.
    pub const MASK: u64 = 1 << 16;

    /// Interrupt vector (bits 0–7).
    pub fn vector(self) -> u8 {
        self.0 as u8
    }
    /// Is the pin masked?
    pub fn masked(self) -> bool {
        self.0 & Self::MASK != 0
    }
    /// Destination APIC id (byte 7).
    pub fn dest_id(self) -> u8 {
        (self.0 >> 56) as u8
    }
}

impl FieldSource for RedirEntry {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        for (n, shift, bits) in [
            ("vector", 0, 8),
            ("delivery_mode", 8, 3),
            ("dest_mode", 11, 1),
            ("delivery_status", 12, 1),
            ("polarity", 13, 1),
            ("remote_irr", 14, 1),
            ("trig_mode", 15, 1),
            ("mask", 16, 1),
            ("reserve", 17, 7),
            ("reserved", 24, 32),
            ("dest_id", 56, 8),
        ] {
            push_bits(out, member(name, n), self.0, shift, bits);
        }
    }
}

/// `VIOAPIC_NUM_PINS`: 16 ISA + 32 PCI pins, in every era.
pub(crate) const VIOAPIC_NUM_PINS: usize = 48;

hvm_struct! {
    /// `struct hvm_hw_vioapic` (400 bytes, unchanged since 2007).
    pub struct Ioapic(400) {
        /// `hvm_hw_vioapic.base_address`.
        pub base_address: u64,
        /// `hvm_hw_vioapic.ioregsel`.
        pub ioregsel: u32,
        /// `hvm_hw_vioapic.id`.
        pub id: u32,
        /// `hvm_hw_vioapic.redirtbl`.
        pub redirtbl: [RedirEntry; 48],
    }
}

hvm_struct! {
    /// Seed-era `struct hvm_hw_lapic` (16 bytes, up to 4.0).
    pub struct LapicSeed(16) {
        /// `hvm_hw_lapic.apic_base_msr`.
        pub apic_base_msr: u64,
        /// `VLAPIC_SW_DISABLED` (1) / `VLAPIC_HW_DISABLED` (2).
        pub disabled: u32,
        /// `hvm_hw_lapic.timer_divisor`.
        pub timer_divisor: u32,
    }
}

hvm_struct! {
    /// `struct hvm_hw_lapic` of Xen 4.1–4.20 (24 bytes, adds the TSC deadline).
    pub struct LapicTdt(24) {
        /// `hvm_hw_lapic.apic_base_msr`.
        pub apic_base_msr: u64,
        /// `hvm_hw_lapic.disabled`.
        pub disabled: u32,
        /// `hvm_hw_lapic.timer_divisor`.
        pub timer_divisor: u32,
        /// `hvm_hw_lapic.tdt_msr`.
        pub tdt_msr: u64,
    }
}

hvm_struct! {
    /// Current `struct hvm_hw_lapic` (32 bytes, Xen 4.21: `pending_esr` and
    /// tail padding).
    pub struct Lapic(32) {
        /// `hvm_hw_lapic.apic_base_msr`.
        pub apic_base_msr: u64,
        /// `hvm_hw_lapic.disabled`.
        pub disabled: u32,
        /// `hvm_hw_lapic.timer_divisor`.
        pub timer_divisor: u32,
        /// `hvm_hw_lapic.tdt_msr`.
        pub tdt_msr: u64,
        /// `hvm_hw_lapic.pending_esr`.
        pub pending_esr: u32,
        /// `hvm_hw_lapic.tail_pad`.
        pub tail_pad: u32,
    }
}

/// `struct hvm_hw_lapic_regs`: the 4 KiB APIC page's first 1 KiB, where
/// every register sits in its own 16-byte slot.
#[derive(Debug, Clone, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
#[brw(little)]
pub struct LapicRegs {
    /// `hvm_hw_lapic_regs.data`.
    pub data: [u8; 1024],
}

impl LapicRegs {
    /// Payload size.
    pub const SIZE: usize = 1024;

    /// The 32-bit register at byte offset `reg` (e.g. 0x20 = APIC ID);
    /// `None` past the page.
    pub fn reg(&self, reg: usize) -> Option<u32> {
        le(&self.data, reg)
    }

    /// Store the 32-bit register at byte offset `reg` (ignored past the page).
    pub(crate) fn set_reg(&mut self, reg: usize, value: u32) {
        if let Some(b) = self.data.get_mut(reg..reg + 4) {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Architectural names of the local APIC registers by offset.
fn apic_reg_name(off: usize) -> Option<&'static str> {
    Some(match off {
        0x020 => "id",
        0x030 => "version",
        0x080 => "tpr",
        0x090 => "apr",
        0x0A0 => "ppr",
        0x0B0 => "eoi",
        0x0C0 => "rrd",
        0x0D0 => "ldr",
        0x0E0 => "dfr",
        0x0F0 => "svr",
        0x100..=0x170 => {
            return Some(
                [
                    "isr0", "isr1", "isr2", "isr3", "isr4", "isr5", "isr6", "isr7",
                ][(off - 0x100) / 16],
            )
        }
        0x180..=0x1F0 => {
            return Some(
                [
                    "tmr0", "tmr1", "tmr2", "tmr3", "tmr4", "tmr5", "tmr6", "tmr7",
                ][(off - 0x180) / 16],
            )
        }
        0x200..=0x270 => {
            return Some(
                [
                    "irr0", "irr1", "irr2", "irr3", "irr4", "irr5", "irr6", "irr7",
                ][(off - 0x200) / 16],
            )
        }
        0x280 => "esr",
        0x2F0 => "lvt_cmci",
        0x300 => "icr_lo",
        0x310 => "icr_hi",
        0x320 => "lvt_timer",
        0x330 => "lvt_thermal",
        0x340 => "lvt_pmc",
        0x350 => "lvt_lint0",
        0x360 => "lvt_lint1",
        0x370 => "lvt_error",
        0x380 => "timer_icr",
        0x390 => "timer_ccr",
        0x3E0 => "timer_dcr",
        _ => return None,
    })
}

impl FieldSource for LapicRegs {
    /// One 32-bit field per 16-byte slot (named architecturally where the
    /// slot is a register), plus the slot's upper 12 bytes when any is
    /// non-zero, so that every byte of the page shows up in a listing.
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        for (i, slot) in self.data.chunks_exact(16).enumerate() {
            let off = i * 16;
            let name = match apic_reg_name(off) {
                Some(n) => format!("{n}@0x{off:03x}"),
                None => format!("reg@0x{off:03x}"),
            };
            le::<u32>(slot, 0)
                .unwrap_or_default()
                .push_fields(&member(prefix, &name), out);
            let hi = &slot[4..];
            if hi.iter().any(|&b| b != 0) {
                u8::push_slice(hi, &member(prefix, &format!("{name}+4")), out);
            }
        }
    }
}

hvm_struct! {
    /// `struct hvm_hw_pci_irqs` (16 bytes): 128 virtual PCI INTx wires,
    /// bit `device*4 + INTx`.
    pub struct PciIrq(16) {
        /// `hvm_hw_pci_irqs.i`.
        pub i: [u64; 2],
    }
}

hvm_struct! {
    /// `struct hvm_hw_isa_irqs` (8 bytes): 16 ISA IRQ wires in a u64.
    pub struct IsaIrq(8) {
        /// `hvm_hw_isa_irqs.i`.
        pub i: u64,
    }
}

hvm_struct! {
    /// Seed-era `struct hvm_hw_pci_link` (4 bytes): link → GSI routes.
    pub struct PciLinkSeed(4) {
        /// `hvm_hw_pci_link.route`.
        pub route: [u8; 4],
    }
}

hvm_struct! {
    /// `struct hvm_hw_pci_link` since 3.1 (8 bytes, padded to ×8).
    pub struct PciLink(8) {
        /// `hvm_hw_pci_link.route`.
        pub route: [u8; 4],
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub pad0: [u8; 4],
    }
}

hvm_struct! {
    /// `struct hvm_hw_pit_channel` (16 bytes, unchanged since 2007).
    pub struct PitChannel(16) {
        /// Can be 65536.
        pub count: u32,
        /// `hvm_hw_pit_channel.latched_count`.
        pub latched_count: u16,
        /// `hvm_hw_pit_channel.count_latched`.
        pub count_latched: u8,
        /// `hvm_hw_pit_channel.status_latched`.
        pub status_latched: u8,
        /// `hvm_hw_pit_channel.status`.
        pub status: u8,
        /// `hvm_hw_pit_channel.read_state`.
        pub read_state: u8,
        /// `hvm_hw_pit_channel.write_state`.
        pub write_state: u8,
        /// `hvm_hw_pit_channel.write_latch`.
        pub write_latch: u8,
        /// `hvm_hw_pit_channel.rw_mode`.
        pub rw_mode: u8,
        /// `hvm_hw_pit_channel.mode`.
        pub mode: u8,
        /// `hvm_hw_pit_channel.bcd`.
        pub bcd: u8,
        /// `hvm_hw_pit_channel.gate`.
        pub gate: u8,
    }
}

hvm_struct! {
    /// Seed-era `struct hvm_hw_pit` (52 bytes).
    pub struct PitSeed(52) {
        /// `hvm_hw_pit.channels`.
        pub channels: [PitChannel; 3],
        /// `hvm_hw_pit.speaker_data_on`.
        pub speaker_data_on: u32,
    }
}

hvm_struct! {
    /// `struct hvm_hw_pit` since 3.1 (56 bytes, padded to ×8).
    pub struct Pit(56) {
        /// `hvm_hw_pit.channels`.
        pub channels: [PitChannel; 3],
        /// `hvm_hw_pit.speaker_data_on`.
        pub speaker_data_on: u32,
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub pad0: u32,
    }
}

/// `RTC_CMOS_SIZE`: the RTC's 14 clock/status registers.
pub(crate) const RTC_CMOS_SIZE: usize = 14;

hvm_struct! {
    /// Seed-era `struct hvm_hw_rtc` (15 bytes: the reason seed blobs are
    /// unaligned after RTC).
    pub struct RtcSeed(15) {
        /// `hvm_hw_rtc.cmos_data`.
        pub cmos_data: [u8; 14],
        /// `hvm_hw_rtc.cmos_index`.
        pub cmos_index: u8,
    }
}

hvm_struct! {
    /// `struct hvm_hw_rtc` of 3.1–4.13 (16 bytes, padded to ×8).
    pub struct RtcPadded(16) {
        /// `hvm_hw_rtc.cmos_data`.
        pub cmos_data: [u8; 14],
        /// `hvm_hw_rtc.cmos_index`.
        pub cmos_index: u8,
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub pad0: u8,
    }
}

hvm_struct! {
    /// Current `struct hvm_hw_rtc` (24 bytes, 4.14 on: offset from host time).
    pub struct Rtc(24) {
        /// `hvm_hw_rtc.cmos_data`.
        pub cmos_data: [u8; 14],
        /// `hvm_hw_rtc.cmos_index`.
        pub cmos_index: u8,
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub pad0: u8,
        /// `hvm_hw_rtc.rtc_offset`.
        pub rtc_offset: i64,
    }
}

hvm_struct! {
    /// One HPET comparator of `struct hvm_hw_hpet`.
    pub struct HpetTimer(32) {
        /// `hvm_hw_hpet.config`.
        pub config: u64,
        /// `hvm_hw_hpet.cmp`.
        pub cmp: u64,
        /// `hvm_hw_hpet.fsb`.
        pub fsb: u64,
        /// `hvm_hw_hpet.res4`.
        pub res4: u64,
    }
}

hvm_struct! {
    /// `struct hvm_hw_hpet` (1048 bytes, unchanged since 2007). The reserved
    /// u64 arrays are kept as bytes so listings stay readable.
    pub struct Hpet(1048) {
        /// `hvm_hw_hpet.capability`.
        pub capability: u64,
        /// `hvm_hw_hpet.res0`.
        pub res0: u64,
        /// `hvm_hw_hpet.config`.
        pub config: u64,
        /// `hvm_hw_hpet.res1`.
        pub res1: u64,
        /// `hvm_hw_hpet.isr`.
        pub isr: u64,
        /// `u64 res2[25]`.
        pub res2: [u8; 200],
        /// `hvm_hw_hpet.mc64`.
        pub mc64: u64,
        /// `hvm_hw_hpet.res3`.
        pub res3: u64,
        /// `hvm_hw_hpet.timers`.
        pub timers: [HpetTimer; 3],
        /// `u64 res5[84]`.
        pub res5: [u8; 672],
        /// `hvm_hw_hpet.period`.
        pub period: [u64; 3],
    }
}

hvm_struct! {
    /// `struct hvm_hw_pmtimer` (8 bytes, unchanged since 2007).
    pub struct PmTimer(8) {
        /// `hvm_hw_pmtimer.tmr_val`.
        pub tmr_val: u32,
        /// `hvm_hw_pmtimer.pm1a_sts`.
        pub pm1a_sts: u16,
        /// `hvm_hw_pmtimer.pm1a_en`.
        pub pm1a_en: u16,
    }
}

hvm_struct! {
    /// `struct hvm_hw_mtrr` (240 bytes, 3.3 on).
    pub struct Mtrr(240) {
        /// `hvm_hw_mtrr.msr_pat_cr`.
        pub msr_pat_cr: u64,
        /// Base/mask pairs of the 8 variable MTRRs.
        pub msr_mtrr_var: [u64; 16],
        /// `hvm_hw_mtrr.msr_mtrr_fixed`.
        pub msr_mtrr_fixed: [u64; 11],
        /// `hvm_hw_mtrr.msr_mtrr_cap`.
        pub msr_mtrr_cap: u64,
        /// `hvm_hw_mtrr.msr_mtrr_def_type`.
        pub msr_mtrr_def_type: u64,
    }
}

hvm_struct! {
    /// `struct hvm_viridian_domain_context` (32 bytes, 4.6 on).
    pub struct ViridianDomain(32) {
        /// `hvm_viridian_domain_context.hypercall_gpa`.
        pub hypercall_gpa: u64,
        /// `hvm_viridian_domain_context.guest_os_id`.
        pub guest_os_id: u64,
        /// `hvm_viridian_domain_context.time_ref_count`.
        pub time_ref_count: u64,
        /// `hvm_viridian_domain_context.reference_tsc`.
        pub reference_tsc: u64,
    }
}

hvm_struct! {
    /// `struct hvm_viridian_vcpu_context` (216 bytes, 4.13 on).
    pub struct ViridianVcpu(216) {
        /// `hvm_viridian_vcpu_context.vp_assist_msr`.
        pub vp_assist_msr: u64,
        /// `hvm_viridian_vcpu_context.apic_assist_pending`.
        pub apic_assist_pending: u8,
        /// Padding in Xen's layout, kept so that encoding is byte-exact.
        pub pad: [u8; 7],
        /// `hvm_viridian_vcpu_context.simp_msr`.
        pub simp_msr: u64,
        /// `hvm_viridian_vcpu_context.sint_msr`.
        pub sint_msr: [u64; 16],
        /// `hvm_viridian_vcpu_context.stimer_config_msr`.
        pub stimer_config_msr: [u64; 4],
        /// `hvm_viridian_vcpu_context.stimer_count_msr`.
        pub stimer_count_msr: [u64; 4],
    }
}

hvm_struct! {
    /// `struct hvm_vmce_vcpu` (32 bytes, 4.10 on).
    pub struct VmceVcpu(32) {
        /// `hvm_vmce_vcpu.caps`.
        pub caps: u64,
        /// `hvm_vmce_vcpu.mci_ctl2_bank0`.
        pub mci_ctl2_bank0: u64,
        /// `hvm_vmce_vcpu.mci_ctl2_bank1`.
        pub mci_ctl2_bank1: u64,
        /// `hvm_vmce_vcpu.mcg_ext_ctl`.
        pub mcg_ext_ctl: u64,
    }
}

hvm_struct! {
    /// `struct hvm_tsc_adjust` (8 bytes, 4.3 on).
    pub struct TscAdjust(8) {
        /// `hvm_tsc_adjust.tsc_adjust`.
        pub tsc_adjust: u64,
    }
}

/// `struct hvm_hw_cpu_xsave` (4.1 on): a 24-byte header and an XSAVE area of
/// whatever size the saving host's features needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuXsave {
    /// Ignored by loaders.
    pub xfeature_mask: u64,
    /// `hvm_hw_cpu_xsave.xcr0`.
    pub xcr0: u64,
    /// `hvm_hw_cpu_xsave.xcr0_accum`.
    pub xcr0_accum: u64,
    /// Legacy 512-byte region, 64-byte XSAVE header, then components.
    pub save_area: Vec<u8>,
}

/// Size of [`CpuXsave`]'s fixed header.
pub(crate) const XSAVE_HEADER_LEN: usize = 24;
/// Legacy FXSAVE region + XSAVE header: the smallest area a loader takes
/// (`XSTATE_AREA_MIN_SIZE`).
pub(crate) const XSTATE_AREA_MIN_SIZE: usize = 512 + 64;

impl CpuXsave {
    /// Decode; `None` if shorter than the fixed header.
    pub fn decode(b: &[u8]) -> Option<CpuXsave> {
        Some(CpuXsave {
            xfeature_mask: le(b, 0)?,
            xcr0: le(b, 8)?,
            xcr0_accum: le(b, 16)?,
            save_area: b.get(XSAVE_HEADER_LEN..)?.to_vec(),
        })
    }

    /// Append the payload.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.xfeature_mask.to_le_bytes());
        out.extend_from_slice(&self.xcr0.to_le_bytes());
        out.extend_from_slice(&self.xcr0_accum.to_le_bytes());
        out.extend_from_slice(&self.save_area);
    }

    /// `xsave_hdr.xstate_bv` (save area bytes 512..520), if present.
    pub fn xstate_bv(&self) -> Option<u64> {
        le(&self.save_area, 512)
    }
}

impl FieldSource for CpuXsave {
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        self.xfeature_mask
            .push_fields(&member(prefix, "xfeature_mask"), out);
        self.xcr0.push_fields(&member(prefix, "xcr0"), out);
        self.xcr0_accum
            .push_fields(&member(prefix, "xcr0_accum"), out);
        let a = &self.save_area;
        match (a.get(..512), a.get(512..576), a.get(576..)) {
            (Some(fpu), Some(hdr), Some(ext)) => {
                u8::push_slice(fpu, &member(prefix, "save_area.fpu_sse"), out);
                for (i, n) in ["xstate_bv", "xcomp_bv"].iter().enumerate() {
                    le::<u64>(hdr, i * 8)
                        .unwrap_or_default()
                        .push_fields(&member(prefix, &format!("save_area.xsave_hdr.{n}")), out);
                }
                u8::push_slice(
                    &hdr[16..],
                    &member(prefix, "save_area.xsave_hdr.reserved"),
                    out,
                );
                if !ext.is_empty() {
                    u8::push_slice(ext, &member(prefix, "save_area.extended"), out);
                }
            }
            _ => u8::push_slice(a, &member(prefix, "save_area"), out),
        }
    }
}

hvm_struct! {
    /// `struct hvm_one_msr`: one MSR of a CPU_MSR record.
    pub struct HvmOneMsr(16) {
        /// `hvm_one_msr.index`.
        pub index: u32,
        /// Must be zero for current Xen to load the record.
        pub rsvd: u32,
        /// `hvm_one_msr.val`.
        pub val: u64,
    }
}

/// `struct hvm_msr` (4.5 on): `u32 count`, 4 bytes of alignment padding,
/// then `count` MSRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMsr {
    /// `hvm_msr.count`.
    pub count: u32,
    /// Alignment padding before the array (kept for byte exactness).
    pub pad: u32,
    /// `hvm_msr.msrs`.
    pub msrs: Vec<HvmOneMsr>,
}

impl CpuMsr {
    /// Decode when the length is exactly `8 + 16 × count`; other lengths
    /// have no layout and stay raw.
    pub fn decode(b: &[u8]) -> Option<CpuMsr> {
        let count = le(b, 0)?;
        let pad = le(b, 4)?;
        let rest = b.get(8..)?;
        if rest.len() as u64 != u64::from(count) * 16 {
            return None;
        }
        let msrs = rest
            .chunks_exact(16)
            // Each chunk is 16 bytes: every field is in range.
            .map(|c| HvmOneMsr {
                index: le(c, 0).unwrap_or_default(),
                rsvd: le(c, 4).unwrap_or_default(),
                val: le(c, 8).unwrap_or_default(),
            })
            .collect();
        Some(CpuMsr { count, pad, msrs })
    }

    /// Append the payload.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.pad.to_le_bytes());
        for m in &self.msrs {
            out.extend_from_slice(&m.index.to_le_bytes());
            out.extend_from_slice(&m.rsvd.to_le_bytes());
            out.extend_from_slice(&m.val.to_le_bytes());
        }
    }
}

impl FieldSource for CpuMsr {
    fn push_fields(&self, prefix: &str, out: &mut Vec<Field>) {
        self.count.push_fields(&member(prefix, "count"), out);
        self.pad.push_fields(&member(prefix, "pad"), out);
        HvmOneMsr::push_slice(&self.msrs, &member(prefix, "msr"), out);
    }
}

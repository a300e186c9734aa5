//! KVM vCPU and device state ↔ the 2007 (`e2a44bc7a4`) records: the libxc
//! `vcpu_guest_context` and the seed-era HVM blob.
//!
//! What the 2007 records carry, and so what travels through an image:
//!
//! | KVM state | 2007 record |
//! |---|---|
//! | GPRs, rip, rflags, segment selectors | `vcpu_guest_context.user_regs` |
//! | CR0, CR2, CR3, CR4 | `ctrlreg[]` (and CR0/3/4 again in CPU) |
//! | DR0–3, DR6, DR7 | `debugreg[]` |
//! | x87/SSE state (FXSAVE image) | `fpu_ctxt` (xsave's legacy area) |
//! | segment bases/limits/attributes, GDTR, IDTR | CPU |
//! | EFER, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_* , TSC | CPU |
//! | APIC base, LAPIC register page | LAPIC, LAPIC_REGS |
//! | PIC master/slave, IOAPIC (24 of 48 pins), PIT | PIC, IOAPIC, PIT |
//!
//! What they cannot hold, rebuilt on resume from [`Vm::template_state`]
//! (a fresh vCPU of the resuming host): CPUID, every other MSR (PAT, MTRRs,
//! misc enables, kvmclock…), xsave components beyond x87/SSE (AVX…), XCR0,
//! pending vCPU events, the PIC's `init4`/`last_irr`/`elcr_mask`, the
//! IOAPIC's `irr`, the PIT's load times, kvmclock. KVM has no in-kernel RTC,
//! HPET or ACPI PM timer: those records carry their reset state. The TSC is
//! written but not restored (it cannot be on hosts without TSC control).
//!
//! [`Vm::template_state`]: hvm_guest::Vm::template_state

use hvm_format::hvm::{
    code, seed_reset_records, CpuCommon, CpuSeed, HvmRecord, Ioapic, LapicRegs, LapicSeed, Pic,
    PicInit, PicMode, PitChannel, PitSeed, RecordBody, RedirEntry,
};
use hvm_format::vcpu::{VcpuContext, VcpuRegisters, FPU_CTXT_SIZE};
use hvm_format::WordSize;
use hvm_guest::{VcpuState, VmState};
use kvm_bindings::{
    kvm_irqchip, kvm_msr_entry, kvm_pic_state, kvm_pit_channel_state, kvm_segment,
    KVM_MP_STATE_RUNNABLE,
};

/// MSRs the seed's CPU record holds (indices from the Intel SDM, vol. 4).
pub mod msr {
    /// `IA32_TIME_STAMP_COUNTER`.
    pub const TSC: u32 = 0x10;
    /// `IA32_SYSENTER_CS`.
    pub const SYSENTER_CS: u32 = 0x174;
    /// `IA32_SYSENTER_ESP`.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// `IA32_SYSENTER_EIP`.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// `IA32_STAR`: SYSCALL's segment selectors.
    pub const STAR: u32 = 0xC000_0081;
    /// `IA32_LSTAR`: 64-bit SYSCALL entry point.
    pub const LSTAR: u32 = 0xC000_0082;
    /// `IA32_CSTAR`: compatibility-mode SYSCALL entry point.
    pub const CSTAR: u32 = 0xC000_0083;
    /// `IA32_FMASK`: RFLAGS bits SYSCALL clears.
    pub const SYSCALL_MASK: u32 = 0xC000_0084;
    /// `IA32_KERNEL_GS_BASE`: what SWAPGS swaps in.
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
}

/// `VLAPIC_SW_DISABLED` / `VLAPIC_HW_DISABLED` of Xen's `hvm_hw_lapic`.
const VLAPIC_SW_DISABLED: u32 = 1;
const VLAPIC_HW_DISABLED: u32 = 2;
/// APIC base MSR: global enable.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// SVR: APIC software enable.
const APIC_SVR_ENABLE: u32 = 1 << 8;

/// CPUID.1:EAX of a captured vCPU (the HEADER's `cpuid`).
pub fn cpuid_1_eax(st: &VcpuState) -> u32 {
    st.cpuid
        .iter()
        .find(|e| e.function == 1 && e.index == 0)
        .map_or(0, |e| e.eax)
}

fn msr_value(st: &VcpuState, index: u32) -> u64 {
    st.msrs
        .iter()
        .find(|m| m.index == index)
        .map_or(0, |m| m.data)
}

fn set_msr(msrs: &mut Vec<kvm_msr_entry>, index: u32, data: u64) {
    match msrs.iter_mut().find(|m| m.index == index) {
        Some(m) => m.data = data,
        None => msrs.push(kvm_msr_entry {
            index,
            reserved: 0,
            data,
        }),
    }
}

/// The FXSAVE image of a vCPU: the legacy area of its xsave state, or one
/// assembled from `kvm_fpu` on hosts without xsave.
pub fn fxsave_image(st: &VcpuState) -> [u8; FPU_CTXT_SIZE] {
    let mut out = [0u8; FPU_CTXT_SIZE];
    if let Some(words) = &st.xsave {
        for (dst, w) in out.chunks_exact_mut(4).zip(words.iter()) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        return out;
    }
    let f = &st.fpu;
    out[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    out[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    out[4] = f.ftwx;
    out[6..8].copy_from_slice(&f.last_opcode.to_le_bytes());
    out[8..16].copy_from_slice(&f.last_ip.to_le_bytes());
    out[16..24].copy_from_slice(&f.last_dp.to_le_bytes());
    out[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    for (i, r) in f.fpr.iter().enumerate() {
        out[32 + 16 * i..48 + 16 * i].copy_from_slice(r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        out[160 + 16 * i..176 + 16 * i].copy_from_slice(r);
    }
    out
}

/// Xen's `arch_get_info_guest` for an HVM vCPU, from KVM state.
pub fn vcpu_context(st: &VcpuState) -> VcpuContext {
    let r = &st.regs;
    let s = &st.sregs;
    let regs = VcpuRegisters {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rbp: r.rbp,
        rsp: r.rsp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
        cs: s.cs.selector,
        ss: s.ss.selector,
        ds: s.ds.selector,
        es: s.es.selector,
        fs: s.fs.selector,
        gs: s.gs.selector,
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        debugreg: [
            st.debugregs.db[0],
            st.debugregs.db[1],
            st.debugregs.db[2],
            st.debugregs.db[3],
            0,
            0,
            st.debugregs.dr6,
            st.debugregs.dr7,
        ],
        fpu: fxsave_image(st),
        i387_valid: true,
        online: st.mp_state.mp_state == KVM_MP_STATE_RUNNABLE,
        ..VcpuRegisters::default()
    };
    // 64-bit layout: every value fits, so this cannot fail; fall back to an
    // all-zero record rather than panic should the format crate ever refuse.
    VcpuContext::from_registers(WordSize::W64, &regs)
        .unwrap_or_else(|_| VcpuContext::from_x86_64(Default::default()))
}

/// VMX access-rights bytes (Xen's `arbytes`) of a KVM segment.
pub fn arbytes(s: &kvm_segment) -> u32 {
    u32::from(s.type_ & 0xF)
        | u32::from(s.s & 1) << 4
        | u32::from(s.dpl & 3) << 5
        | u32::from(s.present & 1) << 7
        | u32::from(s.avl & 1) << 12
        | u32::from(s.l & 1) << 13
        | u32::from(s.db & 1) << 14
        | u32::from(s.g & 1) << 15
        | u32::from(s.unusable & 1) << 16
}

fn segment_from(sel: u32, base: u64, limit: u32, ar: u32) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector: sel as u16,
        type_: (ar & 0xF) as u8,
        s: (ar >> 4 & 1) as u8,
        dpl: (ar >> 5 & 3) as u8,
        present: (ar >> 7 & 1) as u8,
        avl: (ar >> 12 & 1) as u8,
        l: (ar >> 13 & 1) as u8,
        db: (ar >> 14 & 1) as u8,
        g: (ar >> 15 & 1) as u8,
        unusable: (ar >> 16 & 1) as u8,
        padding: 0,
    }
}

/// The seed's CPU record from KVM state.
pub fn cpu_record(st: &VcpuState) -> CpuSeed {
    let s = &st.sregs;
    let r = &st.regs;
    CpuSeed {
        eip: r.rip,
        esp: r.rsp,
        eflags: r.rflags,
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        cs_sel: u32::from(s.cs.selector),
        ds_sel: u32::from(s.ds.selector),
        es_sel: u32::from(s.es.selector),
        fs_sel: u32::from(s.fs.selector),
        gs_sel: u32::from(s.gs.selector),
        ss_sel: u32::from(s.ss.selector),
        tr_sel: u32::from(s.tr.selector),
        ldtr_sel: u32::from(s.ldt.selector),
        cs_limit: s.cs.limit,
        ds_limit: s.ds.limit,
        es_limit: s.es.limit,
        fs_limit: s.fs.limit,
        gs_limit: s.gs.limit,
        ss_limit: s.ss.limit,
        tr_limit: s.tr.limit,
        ldtr_limit: s.ldt.limit,
        idtr_limit: u32::from(s.idt.limit),
        gdtr_limit: u32::from(s.gdt.limit),
        cs_base: s.cs.base,
        ds_base: s.ds.base,
        es_base: s.es.base,
        fs_base: s.fs.base,
        gs_base: s.gs.base,
        ss_base: s.ss.base,
        tr_base: s.tr.base,
        ldtr_base: s.ldt.base,
        idtr_base: s.idt.base,
        gdtr_base: s.gdt.base,
        cs_arbytes: arbytes(&s.cs),
        ds_arbytes: arbytes(&s.ds),
        es_arbytes: arbytes(&s.es),
        fs_arbytes: arbytes(&s.fs),
        gs_arbytes: arbytes(&s.gs),
        ss_arbytes: arbytes(&s.ss),
        tr_arbytes: arbytes(&s.tr),
        ldtr_arbytes: arbytes(&s.ldt),
        sysenter_cs: msr_value(st, msr::SYSENTER_CS) as u32,
        padding0: 0,
        sysenter_esp: msr_value(st, msr::SYSENTER_ESP),
        sysenter_eip: msr_value(st, msr::SYSENTER_EIP),
        shadow_gs: msr_value(st, msr::KERNEL_GS_BASE),
        flags: 0,
        msr_lstar: msr_value(st, msr::LSTAR),
        msr_star: msr_value(st, msr::STAR),
        msr_cstar: msr_value(st, msr::CSTAR),
        msr_syscall_mask: msr_value(st, msr::SYSCALL_MASK),
        msr_efer: s.efer,
        tsc: msr_value(st, msr::TSC),
    }
}

fn lapic_reg(regs: &[u8], off: usize) -> u32 {
    regs.get(off..off + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The LAPIC register page as bytes (KVM's `kvm_lapic_state` is exactly the
/// 1 KiB Xen saves).
fn lapic_bytes(st: &VcpuState) -> Option<[u8; LapicRegs::SIZE]> {
    let l = st.lapic.as_ref()?;
    let mut out = [0u8; LapicRegs::SIZE];
    for (d, s) in out.iter_mut().zip(l.regs.iter()) {
        *d = *s as u8;
    }
    Some(out)
}

/// Xen's timer divisor from the divide configuration register.
fn timer_divisor(dcr: u32) -> u32 {
    let v = (dcr & 3) | ((dcr & 8) >> 1);
    if v == 7 {
        1
    } else {
        2 << v
    }
}

/// LAPIC and LAPIC_REGS of a vCPU, when KVM has an in-kernel LAPIC.
pub fn lapic_records(st: &VcpuState) -> Option<(LapicSeed, LapicRegs)> {
    let data = lapic_bytes(st)?;
    let base = st.sregs.apic_base;
    let svr = lapic_reg(&data, 0xF0);
    let mut disabled = 0;
    if svr & APIC_SVR_ENABLE == 0 {
        disabled |= VLAPIC_SW_DISABLED;
    }
    if base & APIC_BASE_ENABLE == 0 {
        disabled |= VLAPIC_HW_DISABLED;
    }
    Some((
        LapicSeed {
            apic_base_msr: base,
            disabled,
            timer_divisor: timer_divisor(lapic_reg(&data, 0x3E0)),
        },
        LapicRegs { data },
    ))
}

fn pic_state(c: &kvm_irqchip) -> kvm_pic_state {
    // SAFETY: `kvm_irqchip`'s union is plain integers; every bit pattern of
    // the PIC view is valid, whichever chip KVM filled in.
    unsafe { c.chip.pic }
}

/// Xen's `hvm_hw_vpic` from KVM's PIC state.
pub fn pic_record(c: &kvm_irqchip, master: bool) -> Pic {
    let p = pic_state(c);
    let mode = (p.read_reg_select & 1)
        | (p.poll & 1) << 1
        | (p.auto_eoi & 1) << 2
        | (p.rotate_on_auto_eoi & 1) << 3
        | (p.special_fully_nested_mode & 1) << 4
        | (p.special_mask & 1) << 5
        | u8::from(master) << 6;
    Pic {
        irr: p.irr,
        imr: p.imr,
        isr: p.isr,
        irq_base: p.irq_base,
        init: PicInit((p.init_state & 0xF) | (p.priority_add & 0xF) << 4),
        mode: PicMode(mode),
        elcr: p.elcr,
        int_output: 0,
    }
}

/// Xen's `hvm_hw_vioapic` from KVM's IOAPIC (24 pins; Xen's other 24 masked).
pub fn ioapic_record(c: &kvm_irqchip) -> Ioapic {
    // SAFETY: as in `pic_state`: the IOAPIC view is plain integers.
    let io = unsafe { c.chip.ioapic };
    let mut redirtbl = [RedirEntry(RedirEntry::MASK); 48];
    for (d, s) in redirtbl.iter_mut().zip(io.redirtbl.iter()) {
        // SAFETY: `bits` is the u64 view of the same 8 bytes.
        *d = RedirEntry(unsafe { s.bits });
    }
    Ioapic {
        base_address: io.base_address,
        ioregsel: io.ioregsel,
        id: io.id,
        redirtbl,
    }
}

fn pit_channel(c: &kvm_pit_channel_state) -> PitChannel {
    PitChannel {
        count: c.count,
        latched_count: c.latched_count,
        count_latched: c.count_latched,
        status_latched: c.status_latched,
        status: c.status,
        read_state: c.read_state,
        write_state: c.write_state,
        write_latch: c.write_latch,
        rw_mode: c.rw_mode,
        mode: c.mode,
        bcd: c.bcd,
        gate: c.gate,
    }
}

/// The seed-era HVM blob records of a captured KVM guest: HEADER, CPU per
/// running vCPU, then the devices. Devices KVM does not emulate in the
/// kernel keep Xen's reset state.
pub fn hvm_records(vcpus: &[VcpuState], vm: &VmState) -> Vec<HvmRecord> {
    let cpuid = vcpus.first().map_or(0, cpuid_1_eax);
    let cpus: Vec<CpuSeed> = vcpus.iter().map(cpu_record).collect();
    let mut records = seed_reset_records(cpuid, &cpus);
    // Xen saves CPU only for vCPUs that are up.
    records.retain(|r| {
        r.typecode() != code::CPU
            || vcpus
                .get(usize::from(r.instance))
                .is_some_and(|v| v.mp_state.mp_state == KVM_MP_STATE_RUNNABLE)
    });
    for r in &mut records {
        let i = usize::from(r.instance);
        match &mut r.body {
            RecordBody::Pic(p) => {
                let chip = if i == 0 {
                    &vm.pic_master
                } else {
                    &vm.pic_slave
                };
                if let Some(c) = chip {
                    *p = pic_record(c, i == 0);
                }
            }
            RecordBody::Ioapic(io) => {
                if let Some(c) = &vm.ioapic {
                    **io = ioapic_record(c);
                }
            }
            RecordBody::LapicSeed(l) => {
                if let Some((seed, _)) = vcpus.get(i).and_then(lapic_records) {
                    *l = seed;
                }
            }
            RecordBody::LapicRegs(l) => {
                if let Some((_, regs)) = vcpus.get(i).and_then(lapic_records) {
                    **l = regs;
                }
            }
            RecordBody::PitSeed(p) => {
                if let Some(pit) = &vm.pit2 {
                    *p = PitSeed {
                        channels: [
                            pit_channel(&pit.channels[0]),
                            pit_channel(&pit.channels[1]),
                            pit_channel(&pit.channels[2]),
                        ],
                        speaker_data_on: 0,
                    };
                }
            }
            _ => {}
        }
    }
    records
}

/// The encoded seed-era blob of [`hvm_records`].
pub fn hvm_blob(vcpus: &[VcpuState], vm: &VmState) -> Vec<u8> {
    hvm_format::hvm::encode_records(&hvm_records(vcpus, vm), &[])
}

/// A vCPU's CPU record in either era's layout.
#[derive(Debug, Clone)]
pub enum CpuRecord {
    /// The 2007 320-byte record: segments, control registers and MSRs; the
    /// GPRs and FPU travel in the libxc vCPU context.
    Seed(Box<CpuSeed>),
    /// The record of Xen 3.1 on (compat 1016 and current 1032 bytes): the
    /// whole register file, which Xen's `hvm_load` loads over whatever
    /// `xc_vcpu_setcontext` set.
    Full(Box<CpuCommon>),
}

impl CpuRecord {
    /// (cr0, cr3, cr4) as the record holds them.
    pub fn control_registers(&self) -> (u64, u64, u64) {
        match self {
            CpuRecord::Seed(c) => (c.cr0, c.cr3, c.cr4),
            CpuRecord::Full(c) => (c.cr0, c.cr3, c.cr4),
        }
    }

    /// (rip, rsp) as the record holds them.
    pub fn rip_rsp(&self) -> (u64, u64) {
        match self {
            CpuRecord::Seed(c) => (c.eip, c.esp),
            CpuRecord::Full(c) => (c.rip, c.rsp),
        }
    }
}

/// The records of one vCPU found in a blob, in whichever era's layout.
#[derive(Debug, Clone, Default)]
pub struct VcpuRecords {
    /// The CPU record, if the blob has one for this vCPU.
    pub cpu: Option<CpuRecord>,
    /// `apic_base_msr` of the LAPIC record (the only field of any of its
    /// three layouts that KVM's state has a place for).
    pub apic_base_msr: Option<u64>,
    /// The LAPIC_REGS record (the APIC's register page).
    pub lapic_regs: Option<LapicRegs>,
}

/// Segments, descriptor tables and the MSRs every era's CPU record holds
/// under the same field names.
macro_rules! load_segments_and_msrs {
    ($st:expr, $c:expr) => {{
        let c = $c;
        let s = &mut $st.sregs;
        s.cs = segment_from(c.cs_sel, c.cs_base, c.cs_limit, c.cs_arbytes);
        s.ds = segment_from(c.ds_sel, c.ds_base, c.ds_limit, c.ds_arbytes);
        s.es = segment_from(c.es_sel, c.es_base, c.es_limit, c.es_arbytes);
        s.fs = segment_from(c.fs_sel, c.fs_base, c.fs_limit, c.fs_arbytes);
        s.gs = segment_from(c.gs_sel, c.gs_base, c.gs_limit, c.gs_arbytes);
        s.ss = segment_from(c.ss_sel, c.ss_base, c.ss_limit, c.ss_arbytes);
        s.tr = segment_from(c.tr_sel, c.tr_base, c.tr_limit, c.tr_arbytes);
        s.ldt = segment_from(c.ldtr_sel, c.ldtr_base, c.ldtr_limit, c.ldtr_arbytes);
        s.gdt.base = c.gdtr_base;
        s.gdt.limit = c.gdtr_limit as u16;
        s.idt.base = c.idtr_base;
        s.idt.limit = c.idtr_limit as u16;
        s.efer = c.msr_efer;
        let m = &mut $st.msrs;
        set_msr(m, msr::SYSENTER_CS, u64::from(c.sysenter_cs));
        set_msr(m, msr::SYSENTER_ESP, c.sysenter_esp);
        set_msr(m, msr::SYSENTER_EIP, c.sysenter_eip);
        set_msr(m, msr::KERNEL_GS_BASE, c.shadow_gs);
        set_msr(m, msr::LSTAR, c.msr_lstar);
        set_msr(m, msr::STAR, c.msr_star);
        set_msr(m, msr::CSTAR, c.msr_cstar);
        set_msr(m, msr::SYSCALL_MASK, c.msr_syscall_mask);
        set_msr(m, 0xC000_0080, c.msr_efer);
    }};
}

/// Loads a 512-byte FXSAVE image into xsave's legacy area (and XSTATE_BV's
/// x87|SSE bits so it is used), and into kvm_fpu.
fn load_fxsave(st: &mut VcpuState, fx: &[u8; FPU_CTXT_SIZE]) {
    if let Some(words) = st.xsave.as_mut() {
        for (w, b) in words.iter_mut().zip(fx.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if let Some(bv) = words.get_mut(512 / 4) {
            *bv |= 3;
        }
    }
    let f = &mut st.fpu;
    let u16_at = |o: usize| u16::from_le_bytes([fx[o], fx[o + 1]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fx[o..o + 8]);
        u64::from_le_bytes(b)
    };
    f.fcw = u16_at(0);
    f.fsw = u16_at(2);
    f.ftwx = fx[4];
    f.last_opcode = u16_at(6);
    f.last_ip = u64_at(8);
    f.last_dp = u64_at(16);
    f.mxcsr = u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]);
    for (i, reg) in f.fpr.iter_mut().enumerate() {
        reg.copy_from_slice(&fx[32 + 16 * i..48 + 16 * i]);
    }
    for (i, reg) in f.xmm.iter_mut().enumerate() {
        reg.copy_from_slice(&fx[160 + 16 * i..176 + 16 * i]);
    }
}

/// Rebuilds a vCPU's KVM state from its libxc context and HVM records, on
/// top of `template` (a fresh vCPU of this host) for what the records do
/// not hold. A 3.1-on CPU record's register file wins over the context, as
/// in Xen (`hvm_load` runs after `xc_vcpu_setcontext`). Without a CPU record
/// the vCPU stays down, as in Xen's `hvm_load`: it is not made runnable.
pub fn vcpu_state_from_xen(
    template: &VcpuState,
    ctx: &VcpuContext,
    recs: &VcpuRecords,
) -> VcpuState {
    let mut st = template.clone();
    let x = ctx.registers();
    let r = &mut st.regs;
    (r.rax, r.rbx, r.rcx, r.rdx) = (x.rax, x.rbx, x.rcx, x.rdx);
    (r.rsi, r.rdi, r.rsp, r.rbp) = (x.rsi, x.rdi, x.rsp, x.rbp);
    (r.r8, r.r9, r.r10, r.r11) = (x.r8, x.r9, x.r10, x.r11);
    (r.r12, r.r13, r.r14, r.r15) = (x.r12, x.r13, x.r14, x.r15);
    r.rip = x.rip;
    r.rflags = x.rflags;
    let s = &mut st.sregs;
    // The libxc context's control registers are what xc_vcpu_setcontext
    // loads; a seed CPU record's copies are only cross-checked by callers.
    s.cr0 = x.cr0;
    s.cr2 = x.cr2;
    s.cr3 = x.cr3;
    s.cr4 = x.cr4;
    st.debugregs.db = [x.debugreg[0], x.debugreg[1], x.debugreg[2], x.debugreg[3]];
    st.debugregs.dr6 = x.debugreg[6];
    st.debugregs.dr7 = x.debugreg[7];
    load_fxsave(&mut st, &x.fpu);

    match &recs.cpu {
        Some(CpuRecord::Seed(c)) => {
            load_segments_and_msrs!(st, &**c);
            // The TSC is not restorable on every host: leave the template's
            // (fresh) value rather than jump the clock.
            st.mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
        }
        Some(CpuRecord::Full(c)) => {
            let r = &mut st.regs;
            (r.rax, r.rbx, r.rcx, r.rdx) = (c.rax, c.rbx, c.rcx, c.rdx);
            (r.rsi, r.rdi, r.rsp, r.rbp) = (c.rsi, c.rdi, c.rsp, c.rbp);
            (r.r8, r.r9, r.r10, r.r11) = (c.r8, c.r9, c.r10, c.r11);
            (r.r12, r.r13, r.r14, r.r15) = (c.r12, c.r13, c.r14, c.r15);
            r.rip = c.rip;
            r.rflags = c.rflags;
            let s = &mut st.sregs;
            (s.cr0, s.cr2, s.cr3, s.cr4) = (c.cr0, c.cr2, c.cr3, c.cr4);
            st.debugregs.db = [c.dr0, c.dr1, c.dr2, c.dr3];
            st.debugregs.dr6 = c.dr6;
            st.debugregs.dr7 = c.dr7;
            load_fxsave(&mut st, &c.fpu_regs);
            load_segments_and_msrs!(st, &**c);
            st.mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
        }
        None => {
            // hvm_load leaves a vCPU without CPU record down.
            st.mp_state.mp_state = kvm_bindings::KVM_MP_STATE_UNINITIALIZED;
        }
    }
    if let Some(base) = recs.apic_base_msr {
        st.sregs.apic_base = base;
        set_msr(&mut st.msrs, 0x1B, base);
    }
    if let (Some(regs), Some(kl)) = (&recs.lapic_regs, st.lapic.as_mut()) {
        for (d, s) in kl.regs.iter_mut().zip(regs.data.iter()) {
            *d = *s as libc::c_char;
        }
    }
    st
}

fn pic_into(c: &mut kvm_irqchip, p: &Pic) {
    let mut s = pic_state(c);
    s.irr = p.irr;
    s.imr = p.imr;
    s.isr = p.isr;
    s.irq_base = p.irq_base;
    s.init_state = p.init.init_state();
    s.priority_add = p.init.priority_add();
    let m = p.mode.0;
    s.read_reg_select = m & 1;
    s.poll = m >> 1 & 1;
    s.auto_eoi = m >> 2 & 1;
    s.rotate_on_auto_eoi = m >> 3 & 1;
    s.special_fully_nested_mode = m >> 4 & 1;
    s.special_mask = m >> 5 & 1;
    s.elcr = p.elcr;
    c.chip.pic = s;
}

/// The device records of a blob that map onto KVM's in-kernel devices.
#[derive(Debug, Clone, Default)]
pub struct DeviceRecords {
    /// The master and slave PIC records.
    pub pic: [Option<Pic>; 2],
    /// The IOAPIC record.
    pub ioapic: Option<Ioapic>,
    /// The PIT record.
    pub pit: Option<PitSeed>,
}

/// Rebuilds the VM's device state from HVM records over `template`.
pub fn vm_state_from_xen(template: &VmState, d: &DeviceRecords) -> VmState {
    let mut st = template.clone();
    if let (Some(c), Some(p)) = (st.pic_master.as_mut(), &d.pic[0]) {
        pic_into(c, p);
    }
    if let (Some(c), Some(p)) = (st.pic_slave.as_mut(), &d.pic[1]) {
        pic_into(c, p);
    }
    if let (Some(c), Some(io)) = (st.ioapic.as_mut(), &d.ioapic) {
        // SAFETY: plain-integer union view, as in `pic_state`.
        let mut s = unsafe { c.chip.ioapic };
        s.base_address = io.base_address;
        s.ioregsel = io.ioregsel;
        s.id = io.id;
        for (dst, src) in s.redirtbl.iter_mut().zip(io.redirtbl.iter()) {
            dst.bits = src.0;
        }
        c.chip.ioapic = s;
    }
    if let (Some(p), Some(x)) = (st.pit2.as_mut(), &d.pit) {
        for (dst, src) in p.channels.iter_mut().zip(x.channels.iter()) {
            dst.count = src.count;
            dst.latched_count = src.latched_count;
            dst.count_latched = src.count_latched;
            dst.status_latched = src.status_latched;
            dst.status = src.status;
            dst.read_state = src.read_state;
            dst.write_state = src.write_state;
            dst.write_latch = src.write_latch;
            dst.rw_mode = src.rw_mode;
            dst.mode = src.mode;
            dst.bcd = src.bcd;
            dst.gate = src.gate;
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbytes_round_trip_and_match_xen_power_on() {
        let cs = segment_from(0xF000, 0xFFFF_0000, 0xFFFF, 0x9B);
        assert_eq!((cs.type_, cs.s, cs.dpl, cs.present), (0xB, 1, 0, 1));
        assert_eq!(arbytes(&cs), 0x9B);
        // A 64-bit CPL-3 code segment: L, G, DPL 3, type 0xB.
        let long = kvm_segment {
            selector: 0x33,
            type_: 0xB,
            present: 1,
            dpl: 3,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        assert_eq!(arbytes(&long), 0xA0FB);
        let back = segment_from(0x33, 0, 0, arbytes(&long));
        assert_eq!(arbytes(&back), 0xA0FB);
    }

    #[test]
    fn timer_divisor_follows_xen() {
        assert_eq!(timer_divisor(0b0000), 2);
        assert_eq!(timer_divisor(0b0011), 16);
        assert_eq!(timer_divisor(0b1000), 32);
        assert_eq!(timer_divisor(0b1011), 1);
    }
}

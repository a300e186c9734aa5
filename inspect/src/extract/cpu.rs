//! One vCPU's register state for a core file, merged from the two places a
//! save image keeps it: the libxc vCPU record (`vcpu_guest_context`, of
//! the seed era: general registers, RIP, RFLAGS, selectors, control
//! registers) and the HVM `CPU` record (`hvm_hw_cpu`, every era: segment
//! limits, bases and attributes, GDT/IDT, the shadow GS base; from 3.1 on
//! also the general registers). Where both hold a register the vCPU record
//! wins, so the core shows what `hvm-inspect show vcpu` shows; without a
//! vCPU record (Xen 3.1 on, and migration v2) the CPU record gives all.

use hvm_format::hvm::{CpuCommon, CpuSeed, HvmBlob, RecordBody};
use hvm_format::vcpu::VcpuContext;
use hvm_format::WordSize;

/// A segment register as QEMU's dump keeps it: `flags` is bits 8–23 of a
/// descriptor's high word (type at 8, S 12, DPL 13–14, P 15, AVL 20, L 21,
/// D/B 22, G 23), QEMU's own form.
// Each field is the register part of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u32,
    pub limit: u32,
    pub flags: u32,
    pub base: u64,
}

/// Where a vCPU's registers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The vCPU record and the HVM CPU record.
    VcpuAndCpuRecord,
    /// The vCPU record alone (the blob has no CPU record for this vCPU).
    VcpuRecord,
    /// The HVM CPU record alone.
    CpuRecord,
}

/// Registers of one vCPU, 64-bit names (a 32-bit toolstack's values are
/// zero-extended).
// Each field is the register of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuState {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub ldt: Segment,
    pub tr: Segment,
    /// Base and limit only.
    pub gdt: Segment,
    /// Base and limit only.
    pub idt: Segment,
    /// CR0..CR4 (CR1 is always 0).
    pub cr: [u64; 5],
    /// `MSR_KERNEL_GS_BASE` (the CPU record's `shadow_gs`).
    pub kernel_gs_base: u64,
}

/// Seed-era attributes are VMX access rights (`vmx_vmcs_save` stored the
/// VMCS field: AVL/L/D/B/G in bits 12–15); from 3.1 on they are Xen's
/// `segment_attributes` (the same four bits at 8–11). Both become QEMU's
/// descriptor-flags form.
fn flags_vmx(ar: u32) -> u32 {
    ((ar & 0xFF) << 8) | ((ar & 0xF000) << 8)
}

fn flags_xen(ar: u32) -> u32 {
    ((ar & 0xFF) << 8) | ((ar & 0xF00) << 12)
}

macro_rules! segments {
    ($s:ident, $c:ident, $conv:ident) => {
        $s.cs = seg($c.cs_sel, $c.cs_limit, $conv($c.cs_arbytes), $c.cs_base);
        $s.ds = seg($c.ds_sel, $c.ds_limit, $conv($c.ds_arbytes), $c.ds_base);
        $s.es = seg($c.es_sel, $c.es_limit, $conv($c.es_arbytes), $c.es_base);
        $s.fs = seg($c.fs_sel, $c.fs_limit, $conv($c.fs_arbytes), $c.fs_base);
        $s.gs = seg($c.gs_sel, $c.gs_limit, $conv($c.gs_arbytes), $c.gs_base);
        $s.ss = seg($c.ss_sel, $c.ss_limit, $conv($c.ss_arbytes), $c.ss_base);
        $s.tr = seg($c.tr_sel, $c.tr_limit, $conv($c.tr_arbytes), $c.tr_base);
        $s.ldt = seg(
            $c.ldtr_sel,
            $c.ldtr_limit,
            $conv($c.ldtr_arbytes),
            $c.ldtr_base,
        );
        $s.gdt = seg(0, $c.gdtr_limit, 0, $c.gdtr_base);
        $s.idt = seg(0, $c.idtr_limit, 0, $c.idtr_base);
        $s.kernel_gs_base = $c.shadow_gs;
    };
}

fn seg(selector: u32, limit: u32, flags: u32, base: u64) -> Segment {
    Segment {
        selector,
        limit,
        flags,
        base,
    }
}

impl CpuState {
    fn from_seed(c: &CpuSeed) -> Self {
        let mut s = CpuState {
            rip: c.eip,
            rsp: c.esp,
            rflags: c.eflags,
            cr: [c.cr0, 0, 0, c.cr3, c.cr4],
            ..Default::default()
        };
        segments!(s, c, flags_vmx);
        s
    }

    fn from_common(c: &CpuCommon) -> Self {
        let mut s = CpuState {
            rax: c.rax,
            rbx: c.rbx,
            rcx: c.rcx,
            rdx: c.rdx,
            rsi: c.rsi,
            rdi: c.rdi,
            rsp: c.rsp,
            rbp: c.rbp,
            r8: c.r8,
            r9: c.r9,
            r10: c.r10,
            r11: c.r11,
            r12: c.r12,
            r13: c.r13,
            r14: c.r14,
            r15: c.r15,
            rip: c.rip,
            rflags: c.rflags,
            cr: [c.cr0, 0, c.cr2, c.cr3, c.cr4],
            ..Default::default()
        };
        segments!(s, c, flags_xen);
        s
    }

    /// Overlay what the vCPU record holds. `with_bases`: take the segment
    /// bases from it too (only without a CPU record: Xen leaves them zero
    /// in an HVM vCPU's record).
    fn overlay(&mut self, v: &VcpuContext, with_bases: bool) {
        let r = v.registers();
        self.rax = r.rax;
        self.rbx = r.rbx;
        self.rcx = r.rcx;
        self.rdx = r.rdx;
        self.rsi = r.rsi;
        self.rdi = r.rdi;
        self.rsp = r.rsp;
        self.rbp = r.rbp;
        self.r8 = r.r8;
        self.r9 = r.r9;
        self.r10 = r.r10;
        self.r11 = r.r11;
        self.r12 = r.r12;
        self.r13 = r.r13;
        self.r14 = r.r14;
        self.r15 = r.r15;
        self.rip = r.rip;
        self.rflags = r.rflags;
        self.cs.selector = r.cs.into();
        self.ds.selector = r.ds.into();
        self.es.selector = r.es.into();
        self.fs.selector = r.fs.into();
        self.gs.selector = r.gs.into();
        self.ss.selector = r.ss.into();
        self.cr = [r.cr0, 0, r.cr2, r.cr3, r.cr4];
        if with_bases {
            self.fs.base = r.fs_base;
            self.gs.base = r.gs_base_user;
            self.kernel_gs_base = r.gs_base_kernel;
        }
    }
}

/// One vCPU for the core: its id (vCPU record number or CPU record
/// instance) and registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    /// vCPU id.
    pub id: u32,
    /// Which records the registers came from.
    pub source: Source,
    /// The registers.
    pub state: CpuState,
}

/// Every vCPU of an image, ascending by id: the union of the vCPU records
/// (`(record number, context bytes)`) and the CPU records of the HVM blob.
/// A record that does not parse is left out and named in the returned
/// warnings (the walk has already reported the image's structure).
pub fn vcpus(
    records: &[(u32, Vec<u8>)],
    word: WordSize,
    blob: Option<&[u8]>,
) -> (Vec<Vcpu>, Vec<String>) {
    use std::collections::BTreeMap;
    let mut warnings = Vec::new();
    let mut cpu: BTreeMap<u32, CpuState> = BTreeMap::new();
    if let Some(b) = blob {
        match HvmBlob::parse(b) {
            Ok(blob) => {
                for r in blob.of_type(hvm_format::hvm::code::CPU) {
                    let s = match r.decode().body {
                        RecordBody::CpuSeed(c) => CpuState::from_seed(&c),
                        RecordBody::CpuCompat(c) => CpuState::from_common(&c.common),
                        RecordBody::Cpu(c) => CpuState::from_common(&c.common),
                        _ => {
                            warnings.push(format!(
                                "HVM CPU record {} has an unknown size ({} bytes): not used",
                                r.instance,
                                r.payload.len()
                            ));
                            continue;
                        }
                    };
                    cpu.insert(r.instance.into(), s);
                }
            }
            Err(e) => warnings.push(format!("HVM blob: {e}: its CPU records are not used")),
        }
    }
    let mut out: BTreeMap<u32, Vcpu> = cpu
        .iter()
        .map(|(id, s)| {
            (
                *id,
                Vcpu {
                    id: *id,
                    source: Source::CpuRecord,
                    state: s.clone(),
                },
            )
        })
        .collect();
    for (id, bytes) in records {
        match VcpuContext::parse_as(word, bytes) {
            Ok(ctx) => {
                let v = out.entry(*id).or_insert_with(|| Vcpu {
                    id: *id,
                    source: Source::VcpuRecord,
                    state: CpuState::default(),
                });
                let has_cpu = v.source == Source::CpuRecord;
                v.state.overlay(&ctx, !has_cpu);
                if has_cpu {
                    v.source = Source::VcpuAndCpuRecord;
                }
            }
            Err(e) => warnings.push(format!("vcpu record {id}: {e}: not used")),
        }
    }
    (out.into_values().collect(), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_forms_map_to_qemu_flags() {
        // A 64-bit ring-0 code segment: type B, S, P; L and G.
        assert_eq!(flags_vmx(0xA09B), 0x00A0_9B00);
        assert_eq!(flags_xen(0xA9B), 0x00A0_9B00);
        // VMX's "unusable" bit 16 is not a descriptor bit.
        assert_eq!(flags_vmx(0x1_0000), 0);
    }
}

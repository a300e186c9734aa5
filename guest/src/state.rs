//! vCPU and VM state as KVM's raw structs, and their byte serialization.
//!
//! The fields are public raw kvm-bindings structs so that the saver can map them into Xen's
//! `vcpu_guest_context` and HVM records. The byte form is a small tagged format:
//!
//! ```text
//! magic[8] ("HVMGVCP1" or "HVMGVMS1") | u32 section count | { u32 tag | u32 len | len bytes }*
//! ```
//!
//! Structs load zero-padded or truncated to the current size; unknown tags are skipped so newer
//! writers stay readable.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
};

use crate::error::{Error, Result};
use crate::pod::Pod;

const VCPU_MAGIC: &[u8; 8] = b"HVMGVCP1";
const VM_MAGIC: &[u8; 8] = b"HVMGVMS1";

mod tag {
    pub const REGS: u32 = 1;
    pub const SREGS: u32 = 2;
    pub const FPU: u32 = 3;
    pub const XSAVE: u32 = 4;
    pub const XCRS: u32 = 5;
    pub const DEBUGREGS: u32 = 6;
    pub const LAPIC: u32 = 7;
    pub const MSRS: u32 = 8;
    pub const MP_STATE: u32 = 9;
    pub const EVENTS: u32 = 10;
    pub const CPUID: u32 = 11;
    pub const PIC_MASTER: u32 = 20;
    pub const PIC_SLAVE: u32 = 21;
    pub const IOAPIC: u32 = 22;
    pub const PIT2: u32 = 23;
    pub const CLOCK: u32 = 24;
}

/// Everything KVM holds about one vCPU that a faithful resume needs.
#[derive(Clone)]
pub struct VcpuState {
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// Legacy FPU/SSE view; restored only when `xsave` is absent.
    pub fpu: kvm_fpu,
    /// The xsave area as KVM returns it (4096 bytes, or KVM_CAP_XSAVE2 bytes), in u32 words.
    pub xsave: Option<Vec<u32>>,
    /// Extended control registers (XCR0); absent without KVM_CAP_XCRS.
    pub xcrs: Option<kvm_xcrs>,
    /// DR0–DR3, DR6, DR7.
    pub debugregs: kvm_debugregs,
    /// Absent without an in-kernel irqchip.
    pub lapic: Option<kvm_lapic_state>,
    /// (index, value) of every MSR in KVM_GET_MSR_INDEX_LIST that read back.
    pub msrs: Vec<kvm_msr_entry>,
    /// Runnable, halted or waiting for SIPI.
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts and NMIs, so none is lost or doubled.
    pub events: kvm_vcpu_events,
    /// The CPUID the vCPU was given; the resumed vCPU must see the same.
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("cr3", &format_args!("{:#x}", self.sregs.cr3))
            .field("msrs", &self.msrs.len())
            .field("cpuid", &self.cpuid.len())
            .field("mp_state", &self.mp_state.mp_state)
            .finish_non_exhaustive()
    }
}

/// Per-VM device state: the in-kernel PICs, IOAPIC, PIT and kvmclock.
#[derive(Clone, Default)]
pub struct VmState {
    /// Master 8259 PIC (absent without an in-kernel irqchip, as are the others).
    pub pic_master: Option<kvm_irqchip>,
    /// Slave 8259 PIC.
    pub pic_slave: Option<kvm_irqchip>,
    /// The IOAPIC.
    pub ioapic: Option<kvm_irqchip>,
    /// The in-kernel PIT (KVM_CAP_PIT2).
    pub pit2: Option<kvm_pit_state2>,
    /// kvmclock, so guest time continues instead of jumping.
    pub clock: Option<kvm_clock_data>,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("irqchip", &self.pic_master.is_some())
            .field("pit2", &self.pit2.is_some())
            .field("clock", &self.clock.map(|c| c.clock))
            .finish()
    }
}

/// Parts of the state to leave out on load: diagnostics and negative controls, proving that a
/// comparison notices when they are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Leave the special registers at their reset values.
    pub skip_sregs: bool,
    /// Leave the LAPIC at its reset state.
    pub skip_lapic: bool,
    /// Leave the vCPU in its initial MP state.
    pub skip_mp_state: bool,
    /// Restore no MSRs.
    pub skip_msrs: bool,
}

/// LAPIC register offsets excluded from comparisons: timer current count (0x390) changes with
/// time, not with the guest's progress.
const LAPIC_VOLATILE: &[usize] = &[0x390];

impl VcpuState {
    /// Differences in architectural state that must be equal between a resumed run and an
    /// uninterrupted one stopped at the same point: GPRs, rip, rflags, control registers,
    /// segments, descriptor tables, EFER, APIC base, mp_state and LAPIC registers. The TSC is
    /// left out: it cannot be restored on hosts without TSC control.
    pub fn architectural_diff(&self, other: &VcpuState) -> Vec<String> {
        let mut d = Vec::new();
        if self.regs.as_bytes() != other.regs.as_bytes() {
            d.push(format!(
                "regs differ (rip {:#x} vs {:#x}, r8 {} vs {})",
                self.regs.rip, other.regs.rip, self.regs.r8, other.regs.r8
            ));
        }
        let (a, b) = (&self.sregs, &other.sregs);
        let sregs_eq = a.cs.as_bytes_cmp() == b.cs.as_bytes_cmp()
            && a.ds.as_bytes_cmp() == b.ds.as_bytes_cmp()
            && a.es.as_bytes_cmp() == b.es.as_bytes_cmp()
            && a.ss.as_bytes_cmp() == b.ss.as_bytes_cmp()
            && a.fs.as_bytes_cmp() == b.fs.as_bytes_cmp()
            && a.gs.as_bytes_cmp() == b.gs.as_bytes_cmp()
            && a.tr.as_bytes_cmp() == b.tr.as_bytes_cmp()
            && a.cr0 == b.cr0
            && a.cr3 == b.cr3
            && a.cr4 == b.cr4
            && a.efer == b.efer
            && a.apic_base == b.apic_base
            && (a.gdt.base, a.gdt.limit) == (b.gdt.base, b.gdt.limit)
            && (a.idt.base, a.idt.limit) == (b.idt.base, b.idt.limit);
        if !sregs_eq {
            d.push(format!(
                "sregs differ (cr0 {:#x} vs {:#x}, cs.sel {:#x} vs {:#x}, efer {:#x} vs {:#x})",
                a.cr0, b.cr0, a.cs.selector, b.cs.selector, a.efer, b.efer
            ));
        }
        if self.mp_state.mp_state != other.mp_state.mp_state {
            d.push(format!(
                "mp_state {} vs {}",
                self.mp_state.mp_state, other.mp_state.mp_state
            ));
        }
        match (&self.lapic, &other.lapic) {
            (Some(x), Some(y)) => {
                let bx = x.as_bytes();
                let by = y.as_bytes();
                let diff: Vec<usize> = (0..bx.len().min(by.len()) / 16)
                    .map(|i| i * 16)
                    .filter(|o| !LAPIC_VOLATILE.contains(o))
                    .filter(|&o| bx.get(o..o + 4) != by.get(o..o + 4))
                    .collect();
                if !diff.is_empty() {
                    d.push(format!("lapic registers differ at {diff:x?}"));
                }
            }
            (None, None) => {}
            _ => d.push("lapic present on one side only".into()),
        }
        d
    }

    /// Serializes to the tagged byte format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = SectionWriter::new(VCPU_MAGIC);
        w.section(tag::REGS, self.regs.as_bytes());
        w.section(tag::SREGS, self.sregs.as_bytes());
        w.section(tag::FPU, self.fpu.as_bytes());
        if let Some(x) = &self.xsave {
            let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.section(tag::XSAVE, &bytes);
        }
        if let Some(x) = &self.xcrs {
            w.section(tag::XCRS, x.as_bytes());
        }
        w.section(tag::DEBUGREGS, self.debugregs.as_bytes());
        if let Some(l) = &self.lapic {
            w.section(tag::LAPIC, l.as_bytes());
        }
        let msrs: Vec<u8> = self
            .msrs
            .iter()
            .flat_map(|m| {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&m.index.to_le_bytes());
                b[8..].copy_from_slice(&m.data.to_le_bytes());
                b
            })
            .collect();
        w.section(tag::MSRS, &msrs);
        w.section(tag::MP_STATE, self.mp_state.as_bytes());
        w.section(tag::EVENTS, self.events.as_bytes());
        let cpuid: Vec<u8> = self
            .cpuid
            .iter()
            .flat_map(|e| e.as_bytes().to_vec())
            .collect();
        w.section(tag::CPUID, &cpuid);
        w.finish()
    }

    /// Parses the tagged byte format; never panics on malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<VcpuState> {
        let sections = parse_sections(bytes, VCPU_MAGIC, "vcpu state")?;
        let get = |t: u32| sections.iter().find(|s| s.0 == t).map(|s| s.2);
        let need = |t: u32, name: &str| {
            get(t).ok_or_else(|| Error::State {
                offset: bytes.len(),
                context: format!("vcpu state › {name}"),
                expected: format!("a section with tag {t}"),
                found: "end of input".into(),
            })
        };
        let msrs_bytes = need(tag::MSRS, "msrs")?;
        if msrs_bytes.len() % 16 != 0 {
            let off = sections
                .iter()
                .find(|s| s.0 == tag::MSRS)
                .map_or(0, |s| s.1);
            return Err(Error::State {
                offset: off,
                context: "vcpu state › msrs".into(),
                expected: "a multiple of 16 bytes".into(),
                found: format!("{} bytes", msrs_bytes.len()),
            });
        }
        let msrs = msrs_bytes
            .chunks_exact(16)
            .map(|c| kvm_msr_entry {
                index: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                reserved: 0,
                data: u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
            })
            .collect();
        let esz = std::mem::size_of::<kvm_cpuid_entry2>();
        let cpuid = need(tag::CPUID, "cpuid")?
            .chunks_exact(esz)
            .map(kvm_cpuid_entry2::from_bytes_lenient)
            .collect();
        let xsave = get(tag::XSAVE).map(|b| {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        });
        Ok(VcpuState {
            regs: kvm_regs::from_bytes_lenient(need(tag::REGS, "regs")?),
            sregs: kvm_sregs::from_bytes_lenient(need(tag::SREGS, "sregs")?),
            fpu: kvm_fpu::from_bytes_lenient(need(tag::FPU, "fpu")?),
            xsave,
            xcrs: get(tag::XCRS).map(kvm_xcrs::from_bytes_lenient),
            debugregs: kvm_debugregs::from_bytes_lenient(need(tag::DEBUGREGS, "debugregs")?),
            lapic: get(tag::LAPIC).map(kvm_lapic_state::from_bytes_lenient),
            msrs,
            mp_state: kvm_mp_state::from_bytes_lenient(need(tag::MP_STATE, "mp_state")?),
            events: kvm_vcpu_events::from_bytes_lenient(need(tag::EVENTS, "events")?),
            cpuid,
        })
    }
}

impl VmState {
    /// Serializes to the tagged byte format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = SectionWriter::new(VM_MAGIC);
        let chips = [
            (tag::PIC_MASTER, &self.pic_master),
            (tag::PIC_SLAVE, &self.pic_slave),
            (tag::IOAPIC, &self.ioapic),
        ];
        for (t, c) in chips {
            if let Some(c) = c {
                w.section(t, c.as_bytes());
            }
        }
        if let Some(p) = &self.pit2 {
            w.section(tag::PIT2, p.as_bytes());
        }
        if let Some(c) = &self.clock {
            w.section(tag::CLOCK, c.as_bytes());
        }
        w.finish()
    }

    /// Parses the tagged byte format; never panics on malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<VmState> {
        let sections = parse_sections(bytes, VM_MAGIC, "vm state")?;
        let get = |t: u32| sections.iter().find(|s| s.0 == t).map(|s| s.2);
        Ok(VmState {
            pic_master: get(tag::PIC_MASTER).map(kvm_irqchip::from_bytes_lenient),
            pic_slave: get(tag::PIC_SLAVE).map(kvm_irqchip::from_bytes_lenient),
            ioapic: get(tag::IOAPIC).map(kvm_irqchip::from_bytes_lenient),
            pit2: get(tag::PIT2).map(kvm_pit_state2::from_bytes_lenient),
            clock: get(tag::CLOCK).map(kvm_clock_data::from_bytes_lenient),
        })
    }
}

/// Byte comparison of a segment register ignoring the `padding` byte.
trait SegCmp {
    fn as_bytes_cmp(&self) -> (u64, u32, u16, [u8; 8]);
}

impl SegCmp for kvm_bindings::kvm_segment {
    fn as_bytes_cmp(&self) -> (u64, u32, u16, [u8; 8]) {
        (
            self.base,
            self.limit,
            self.selector,
            [
                self.type_,
                self.present,
                self.dpl,
                self.db,
                self.s,
                self.l,
                self.g,
                self.avl,
            ],
        )
    }
}

struct SectionWriter {
    out: Vec<u8>,
    count: u32,
}

impl SectionWriter {
    fn new(magic: &[u8; 8]) -> Self {
        let mut out = magic.to_vec();
        out.extend_from_slice(&0u32.to_le_bytes());
        SectionWriter { out, count: 0 }
    }
    fn section(&mut self, tag: u32, bytes: &[u8]) {
        self.out.extend_from_slice(&tag.to_le_bytes());
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.out.extend_from_slice(bytes);
        self.count += 1;
    }
    fn finish(mut self) -> Vec<u8> {
        self.out[8..12].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// (tag, offset of the payload, payload).
type Section<'a> = (u32, usize, &'a [u8]);

fn parse_sections<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &str) -> Result<Vec<Section<'a>>> {
    let bad = |offset: usize, context: String, expected: String, found: String| Error::State {
        offset,
        context,
        expected,
        found,
    };
    let head = bytes.get(..12).ok_or_else(|| {
        bad(
            0,
            what.to_string(),
            "12-byte header".into(),
            format!("{} bytes", bytes.len()),
        )
    })?;
    if &head[..8] != magic {
        return Err(bad(
            0,
            format!("{what} › magic"),
            format!("{:?}", String::from_utf8_lossy(magic)),
            format!("{:02x?}", &head[..8]),
        ));
    }
    let count = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let mut off = 12usize;
    // Each section needs at least 8 header bytes: bound the loop and the allocation by input.
    let max = (bytes.len() - 12) / 8;
    if count as usize > max {
        return Err(bad(
            8,
            format!("{what} › section count"),
            format!("at most {max}"),
            count.to_string(),
        ));
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let ctx = || format!("{what} › section {i}");
        let h = bytes.get(off..off + 8).ok_or_else(|| {
            bad(
                off,
                ctx(),
                "8-byte section header".into(),
                "end of input".into(),
            )
        })?;
        let tag = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let start = off + 8;
        let payload = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                bad(
                    start,
                    format!("{} (tag {tag})", ctx()),
                    format!("{len} payload bytes"),
                    format!("{} left", bytes.len().saturating_sub(start)),
                )
            })?;
        out.push((tag, start, payload));
        off = start + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VcpuState {
        // SAFETY-free construction through the lenient loader: zeroed structs.
        let mut s = VcpuState {
            regs: kvm_regs::from_bytes_lenient(&[]),
            sregs: kvm_sregs::from_bytes_lenient(&[]),
            fpu: kvm_fpu::from_bytes_lenient(&[]),
            xsave: Some(vec![7; 1024]),
            xcrs: None,
            debugregs: kvm_debugregs::from_bytes_lenient(&[]),
            lapic: Some(kvm_lapic_state::from_bytes_lenient(&[1; 1024])),
            msrs: vec![kvm_msr_entry {
                index: 0xc000_0080,
                reserved: 0,
                data: 0x500,
            }],
            mp_state: kvm_mp_state::from_bytes_lenient(&[]),
            events: kvm_vcpu_events::from_bytes_lenient(&[]),
            cpuid: vec![kvm_cpuid_entry2::from_bytes_lenient(&[3; 40])],
        };
        s.regs.rip = 0x1234;
        s.regs.r8 = 99;
        s.sregs.cr0 = 0x8001_0033;
        s
    }

    #[test]
    fn vcpu_state_round_trips() {
        let s = sample();
        let b = s.to_bytes();
        let t = VcpuState::from_bytes(&b).expect("parse");
        assert_eq!(t.to_bytes(), b);
        assert!(s.architectural_diff(&t).is_empty());
        assert_eq!(t.msrs[0].data, 0x500);
        assert_eq!(t.regs.rip, 0x1234);
    }

    #[test]
    fn diff_notices_regs_sregs_and_lapic() {
        let s = sample();
        let mut t = s.clone();
        t.regs.r8 += 1;
        t.sregs.cr4 = 0x20;
        if let Some(l) = t.lapic.as_mut() {
            l.regs[0xf0] = 0;
        }
        let d = s.architectural_diff(&t);
        assert_eq!(d.len(), 3, "{d:?}");
    }

    #[test]
    fn truncated_and_corrupt_input_is_an_error() {
        let b = sample().to_bytes();
        for cut in [0, 5, 11, 12, 19, b.len() - 1] {
            assert!(VcpuState::from_bytes(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(VcpuState::from_bytes(&bad).is_err());
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(VcpuState::from_bytes(&huge).is_err());
        let mut long_len = b;
        long_len[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        match VcpuState::from_bytes(&long_len) {
            Err(Error::State { offset, .. }) => assert_eq!(offset, 20),
            other => panic!("expected a state error, got {other:?}"),
        }
    }

    #[test]
    fn vm_state_round_trips() {
        let v = VmState {
            pic_master: Some(kvm_irqchip::from_bytes_lenient(&[5; 64])),
            pic_slave: None,
            ioapic: None,
            pit2: Some(kvm_pit_state2::from_bytes_lenient(&[9; 16])),
            clock: Some(kvm_clock_data::from_bytes_lenient(&[1; 8])),
        };
        let b = v.to_bytes();
        let w = VmState::from_bytes(&b).expect("parse");
        assert_eq!(w.to_bytes(), b);
        assert!(w.pic_slave.is_none());
    }
}

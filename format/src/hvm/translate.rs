//! Translation of an HVM context blob of an older era into the record
//! layouts current Xen's loaders accept (docs/format.md §5.3–5.5).
//!
//! A seed-era blob cannot simply be re-framed: its 320-byte CPU record would
//! be zero-extended into an unrelated layout, and PIT (52) and PCI_LINK (4)
//! fail current Xen's strict length checks. In that era the GPRs, FPU, CR2
//! and debug registers travelled in the libxc vCPU contexts, so the 1032-byte
//! CPU record is assembled from both. Every change is reported as a note;
//! what has no translation is an error, never dropped.

use binrw::{BinRead, BinWrite, Endian};

use super::layouts::{
    Cpu, CpuCommon, CpuSeed, Lapic, LapicSeed, LapicTdt, PendingEvent, Pit, PitSeed, Rtc,
    RtcPadded, RtcSeed, HVM_FILE_MAGIC,
};
use super::load::{check_current_load, CurrentLoadOptions};
use super::record::{code, type_name};
use super::{HvmBlob, OwnedRecord};
use crate::bytes;
use crate::diag::Severity;
use crate::diag::{Context, Error, Result};
use crate::vcpu::VcpuContext;

/// `XEN_X86_FPU_INITIALISED`: the vCPU's FPU state in the record is live.
const XEN_X86_FPU_INITIALISED: u32 = 1;

/// The translated blob and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// A blob in current layouts (HEADER … END).
    pub blob: Vec<u8>,
    /// One line per change, naming the record.
    pub notes: Vec<String>,
}

fn encode<T: for<'a> BinWrite<Args<'a> = ()>>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    bytes::encode(v, Endian::Little, &mut out);
    out
}

fn decode<T: for<'a> BinRead<Args<'a> = ()>>(b: &[u8], at: u64, what: &'static str) -> Result<T> {
    bytes::decode(b, Endian::Little)
        .map(|(v, _)| v)
        .map_err(|e| {
            Error::invalid(
                at,
                Context::root().field("hvm blob").field(what),
                format!("a decodable {what} record"),
                e.to_string(),
            )
        })
}

/// The 1032-byte CPU record of vCPU `instance` from the seed's 320-byte
/// record and that vCPU's libxc context.
fn cpu_from_seed(s: &CpuSeed, ctx: &VcpuContext) -> Cpu {
    let r = ctx.registers();
    let dr = r.debugreg;
    Cpu {
        common: CpuCommon {
            fpu_regs: r.fpu,
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rbp: r.rbp,
            rsi: r.rsi,
            rdi: r.rdi,
            // The hypervisor's eip/esp/eflags (the CPU record) are the
            // authority; the context's copies came from the same VMCS.
            rsp: s.esp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: s.eip,
            rflags: s.eflags,
            cr0: s.cr0,
            cr2: r.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            dr0: dr[0],
            dr1: dr[1],
            dr2: dr[2],
            dr3: dr[3],
            dr6: dr[6],
            dr7: dr[7],
            cs_sel: s.cs_sel,
            ds_sel: s.ds_sel,
            es_sel: s.es_sel,
            fs_sel: s.fs_sel,
            gs_sel: s.gs_sel,
            ss_sel: s.ss_sel,
            tr_sel: s.tr_sel,
            ldtr_sel: s.ldtr_sel,
            cs_limit: s.cs_limit,
            ds_limit: s.ds_limit,
            es_limit: s.es_limit,
            fs_limit: s.fs_limit,
            gs_limit: s.gs_limit,
            ss_limit: s.ss_limit,
            tr_limit: s.tr_limit,
            ldtr_limit: s.ldtr_limit,
            idtr_limit: s.idtr_limit,
            gdtr_limit: s.gdtr_limit,
            cs_base: s.cs_base,
            ds_base: s.ds_base,
            es_base: s.es_base,
            fs_base: s.fs_base,
            gs_base: s.gs_base,
            ss_base: s.ss_base,
            tr_base: s.tr_base,
            ldtr_base: s.ldtr_base,
            idtr_base: s.idtr_base,
            gdtr_base: s.gdtr_base,
            cs_arbytes: s.cs_arbytes,
            ds_arbytes: s.ds_arbytes,
            es_arbytes: s.es_arbytes,
            fs_arbytes: s.fs_arbytes,
            gs_arbytes: s.gs_arbytes,
            ss_arbytes: s.ss_arbytes,
            tr_arbytes: s.tr_arbytes,
            ldtr_arbytes: s.ldtr_arbytes,
            sysenter_cs: u64::from(s.sysenter_cs),
            sysenter_esp: s.sysenter_esp,
            sysenter_eip: s.sysenter_eip,
            shadow_gs: s.shadow_gs,
            msr_flags: s.flags,
            msr_lstar: s.msr_lstar,
            msr_star: s.msr_star,
            msr_cstar: s.msr_cstar,
            msr_syscall_mask: s.msr_syscall_mask,
            msr_efer: s.msr_efer,
        },
        msr_tsc_aux: 0,
        tsc: s.tsc,
        pending_event: PendingEvent(0),
        error_code: 0,
        flags: XEN_X86_FPU_INITIALISED,
        pad0: 0,
    }
}

/// Translate `blob` into current layouts. `vcpus[i]` is the libxc context
/// of vCPU `i` (the seed era's GPRs and FPU); it is needed only for 320-byte
/// CPU records. The result passes [`check_current_load`] or this fails.
pub fn to_current(blob: &[u8], vcpus: &[VcpuContext]) -> Result<Translation> {
    let parsed = HvmBlob::parse(blob)?;
    let mut t = Translator {
        parsed: &parsed,
        vcpus,
        notes: Vec::new(),
        cpus: 0,
    };
    let mut out = Vec::with_capacity(blob.len() + 1024 * vcpus.len());
    for rec in &parsed.records {
        let payload = t.record(rec)?;
        OwnedRecord {
            typecode: rec.typecode,
            instance: rec.instance,
            payload,
        }
        .encode_into(&mut out);
    }
    let mut notes = t.notes;
    if !parsed.trailer.is_empty() {
        notes.push(format!(
            "{} bytes after END dropped (no loader reads them)",
            parsed.trailer.len()
        ));
    }
    check_translated(&out, t.cpus)?;
    Ok(Translation { blob: out, notes })
}

/// The translated blob must load in current Xen: its first error, if any,
/// is this translation's error.
fn check_translated(out: &[u8], cpus: u32) -> Result<()> {
    let findings = check_current_load(
        out,
        &CurrentLoadOptions {
            host_cpuid: None,
            nr_vcpus: (cpus > 0).then_some(cpus),
        },
    );
    if let Some(f) = findings.iter().find(|f| f.severity == Severity::Error) {
        return Err(Error::invalid(
            f.offset,
            f.context.clone(),
            "a blob current Xen loads after translation",
            format!("{}: {}", f.rule, f.message),
        ));
    }
    Ok(())
}

/// One blob's translation under way: the notes so far and the CPU records
/// rebuilt (the vCPU count the result is checked with).
struct Translator<'p, 'a, 'v> {
    parsed: &'p HvmBlob<'a>,
    vcpus: &'v [VcpuContext],
    notes: Vec<String>,
    cpus: u32,
}

impl Translator<'_, '_, '_> {
    /// The current payload of one record: kept, padded or rebuilt by its
    /// type and length; an unknown layout is an error.
    fn record(&mut self, rec: &super::RawRecord<'_>) -> Result<Vec<u8>> {
        let at = rec.payload_offset();
        let name = type_name(rec.typecode).unwrap_or("UNKNOWN");
        let len = rec.payload.len();
        Ok(match (rec.typecode, len) {
            (code::END, _) => rec.payload.to_vec(),
            (code::HEADER, 20 | 24) => self.header(rec)?,
            (code::CPU, 320) => self.cpu_seed(rec)?,
            (code::CPU, 1016 | 1024 | 1032) => rec.payload.to_vec(),
            (code::CPU, n) => {
                return Err(Error::invalid(
                    at,
                    Context::root()
                        .field("hvm blob")
                        .index("CPU", rec.instance.into()),
                    "a CPU record of 320, 1016, 1024 or 1032 bytes",
                    format!("{n} bytes (no translation known)"),
                ))
            }
            (code::PIT, 52) => {
                let p: PitSeed = decode(rec.payload, at, "PIT")?;
                self.notes.push("PIT: 52 → 56 bytes (tail padding)".into());
                encode(&Pit {
                    channels: p.channels,
                    speaker_data_on: p.speaker_data_on,
                    pad0: 0,
                })
            }
            (code::PCI_LINK, 4) => {
                self.notes
                    .push("PCI_LINK: 4 → 8 bytes (tail padding)".into());
                let mut v = rec.payload.to_vec();
                v.extend_from_slice(&[0; 4]);
                v
            }
            (code::RTC, 15 | 16) => self.rtc(rec)?,
            (code::LAPIC, 16 | 24) => self.lapic(rec)?,
            (t, _) if t <= code::CURRENT_MAX => rec.payload.to_vec(),
            (t, _) => {
                return Err(Error::invalid(
                    at,
                    Context::root().field("hvm blob").field(name),
                    format!("a type code current Xen loads (0..={})", code::CURRENT_MAX),
                    t.to_string(),
                ))
            }
        })
    }

    /// HEADER: 32-bit Xen's 20 bytes gain a zero gtsc_khz; the seed's
    /// uninitialised tail padding is cleared so it does not read as one.
    fn header(&mut self, rec: &super::RawRecord<'_>) -> Result<Vec<u8>> {
        let mut h = rec.payload.to_vec();
        if h.get(0..4) != Some(&HVM_FILE_MAGIC.to_le_bytes()[..]) {
            return Err(Error::invalid(
                rec.payload_offset(),
                Context::root()
                    .field("hvm blob")
                    .field("HEADER")
                    .field("magic"),
                format!("{HVM_FILE_MAGIC:#x}"),
                format!("{:02x?}", h.get(0..4)),
            ));
        }
        if rec.payload.len() == 20 {
            h.extend_from_slice(&0u32.to_le_bytes());
            self.notes
                .push("HEADER: 20 → 24 bytes (32-bit Xen), gtsc_khz 0".into());
        } else if h.get(20..24) != Some(&[0u8; 4][..]) && rec_era_is_seed(self.parsed) {
            h[20..24].copy_from_slice(&[0; 4]);
            self.notes.push(
                "HEADER: the 2007 tail padding (uninitialised bytes) would read as gtsc_khz; set to 0".into(),
            );
        }
        Ok(h)
    }

    /// The seed's 320-byte CPU record, completed from its vCPU's libxc
    /// context into the 1032-byte layout.
    fn cpu_seed(&mut self, rec: &super::RawRecord<'_>) -> Result<Vec<u8>> {
        let at = rec.payload_offset();
        let seed: CpuSeed = decode(rec.payload, at, "CPU")?;
        let ctx = self.vcpus.get(rec.instance as usize).ok_or_else(|| {
            Error::invalid(
                at,
                Context::root().field("hvm blob").index("CPU", rec.instance.into()),
                "a libxc vCPU context for this vCPU (its GPRs and FPU are not in a 320-byte CPU record)",
                format!("{} vCPU contexts", self.vcpus.len()),
            )
        })?;
        let vr = ctx.registers();
        if vr.rip != seed.eip || vr.rsp != seed.esp {
            self.notes.push(format!(
                "CPU {}: the vCPU context's rip/rsp ({:#x}/{:#x}) differ from the CPU record's eip/esp ({:#x}/{:#x}); the CPU record's are kept",
                rec.instance, vr.rip, vr.rsp, seed.eip, seed.esp
            ));
        }
        self.cpus += 1;
        self.notes.push(format!(
            "CPU {}: 320 → 1032 bytes: segments, control registers and MSRs from the CPU record; GPRs, FPU (FXSAVE), CR2 and DR0–7 from vCPU context {}; flags FPU_INITIALISED",
            rec.instance, rec.instance
        ));
        Ok(encode(&cpu_from_seed(&seed, ctx)))
    }

    /// RTC of 15 (seed) or 16 bytes: the CMOS kept, rtc_offset 0.
    fn rtc(&mut self, rec: &super::RawRecord<'_>) -> Result<Vec<u8>> {
        let (at, len) = (rec.payload_offset(), rec.payload.len());
        let (cmos_data, cmos_index) = if len == 15 {
            let r: RtcSeed = decode(rec.payload, at, "RTC")?;
            (r.cmos_data, r.cmos_index)
        } else {
            let r: RtcPadded = decode(rec.payload, at, "RTC")?;
            (r.cmos_data, r.cmos_index)
        };
        self.notes
            .push(format!("RTC: {len} → 24 bytes, rtc_offset 0"));
        Ok(encode(&Rtc {
            cmos_data,
            cmos_index,
            pad0: 0,
            rtc_offset: 0,
        }))
    }

    /// LAPIC of 16 (seed) or 24 bytes: extended with tdt_msr (if absent)
    /// and pending_esr, both 0.
    fn lapic(&mut self, rec: &super::RawRecord<'_>) -> Result<Vec<u8>> {
        let (at, len) = (rec.payload_offset(), rec.payload.len());
        let (base, disabled, divisor, tdt) = if len == 16 {
            let l: LapicSeed = decode(rec.payload, at, "LAPIC")?;
            (l.apic_base_msr, l.disabled, l.timer_divisor, 0)
        } else {
            let l: LapicTdt = decode(rec.payload, at, "LAPIC")?;
            (l.apic_base_msr, l.disabled, l.timer_divisor, l.tdt_msr)
        };
        self.notes.push(format!(
            "LAPIC {}: {len} → 32 bytes{}, pending_esr 0",
            rec.instance,
            if len == 16 { ", tdt_msr 0" } else { "" }
        ));
        Ok(encode(&Lapic {
            apic_base_msr: base,
            disabled,
            timer_divisor: divisor,
            tdt_msr: tdt,
            pending_esr: 0,
            tail_pad: 0,
        }))
    }
}

/// True when the blob is of the seed era (a 320-byte CPU record or the
/// seed's PIT), whose HEADER tail bytes are uninitialised padding.
fn rec_era_is_seed(b: &HvmBlob<'_>) -> bool {
    b.records.iter().any(|r| {
        (r.typecode == code::CPU && r.payload.len() == 320)
            || (r.typecode == code::PIT && r.payload.len() == 52)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hvm::{seed_reset_blob, CpuSeed, RecordBody};
    use crate::pfn::WordSize;
    use crate::vcpu::VcpuRegisters;

    fn context(word: WordSize) -> VcpuContext {
        let mut fpu = [0u8; 512];
        fpu[0] = 0x7F; // FCW low byte
        fpu[160] = 0xAB; // XMM0
        let regs = VcpuRegisters {
            rax: 0x1111,
            rbx: 0x2222,
            r15: if word == WordSize::W64 { 0x1515 } else { 0 },
            rip: 0xFFF0,
            cr2: 0xDEAD_0000,
            fpu,
            i387_valid: true,
            online: true,
            ..Default::default()
        };
        VcpuContext::from_registers(word, &regs).unwrap()
    }

    #[test]
    fn seed_blob_becomes_loadable_and_keeps_the_state() {
        let mut cpu = CpuSeed::power_on();
        cpu.tsc = 0x1234_5678;
        cpu.msr_efer = 0x500;
        let blob = seed_reset_blob(0x6FB, &[cpu.clone()]);
        // The seed blob itself is refused by current Xen (PIT, PCI_LINK).
        assert!(check_current_load(&blob, &CurrentLoadOptions::default())
            .iter()
            .any(|f| f.severity == Severity::Error));
        for word in [WordSize::W64, WordSize::W32] {
            let t = to_current(&blob, &[context(word)]).unwrap();
            let parsed = HvmBlob::parse(&t.blob).unwrap();
            let cpu_rec = parsed.of_type(code::CPU).next().unwrap();
            assert_eq!(cpu_rec.payload.len(), 1032);
            let RecordBody::Cpu(c) = cpu_rec.decode().body else {
                panic!("not a current CPU record: {:?}", cpu_rec.decode());
            };
            assert_eq!(c.common.rax, 0x1111);
            assert_eq!(c.common.rbx, 0x2222);
            assert_eq!(c.common.rip, 0xFFF0);
            assert_eq!(c.common.cr2, 0xDEAD_0000);
            assert_eq!(c.common.cs_base, 0xFFFF_0000);
            assert_eq!(c.common.msr_efer, 0x500);
            assert_eq!(c.tsc, 0x1234_5678);
            assert_eq!(c.common.fpu_regs[160], 0xAB);
            assert_eq!(c.flags, XEN_X86_FPU_INITIALISED);
            for (t, want) in [
                (code::PIT, 56),
                (code::PCI_LINK, 8),
                (code::RTC, 24),
                (code::LAPIC, 32),
                (code::HEADER, 24),
            ] {
                assert_eq!(parsed.of_type(t).next().unwrap().payload.len(), want, "{t}");
            }
            for n in [
                "CPU 0: 320 → 1032",
                "PIT: 52 → 56",
                "PCI_LINK: 4 → 8",
                "RTC: 15 → 24",
            ] {
                assert!(t.notes.iter().any(|x| x.contains(n)), "{n}: {:?}", t.notes);
            }
            // The RTC's CMOS bytes and the PIC records survive untouched.
            let old = HvmBlob::parse(&blob).unwrap();
            assert_eq!(
                &parsed.of_type(code::RTC).next().unwrap().payload[..15],
                old.of_type(code::RTC).next().unwrap().payload
            );
            assert_eq!(
                parsed
                    .of_type(code::PIC)
                    .map(|r| r.payload)
                    .collect::<Vec<_>>(),
                old.of_type(code::PIC)
                    .map(|r| r.payload)
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn missing_context_and_unknown_sizes_are_errors() {
        let blob = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
        let e = to_current(&blob, &[]).unwrap_err();
        assert!(e.to_string().contains("vCPU context"), "{e}");
        let mut odd = Vec::new();
        for r in HvmBlob::parse(&blob).unwrap().records {
            let mut o = r.to_owned_record();
            if o.typecode == code::CPU {
                o.payload.resize(1008, 0);
            }
            o.encode_into(&mut odd);
        }
        let e = to_current(&odd, &[context(WordSize::W64)]).unwrap_err();
        assert!(e.to_string().contains("1008"), "{e}");
    }
}

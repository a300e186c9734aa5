//! Typed HVM records: decoding by (typecode, length), exact re-encoding,
//! names, the Xen eras a size belongs to, and generic field listings.

use std::fmt;

use binrw::Endian;

use super::fields::{Field, FieldSource};
use super::layouts::*;
use crate::bytes;

/// `struct hvm_save_descriptor` type codes, with Xen's names.
pub mod code {
    /// `HVM_SAVE_CODE(END)`.
    pub(crate) const END: u16 = 0;
    /// `HVM_SAVE_CODE(HEADER)`.
    pub const HEADER: u16 = 1;
    /// `HVM_SAVE_CODE(CPU)`.
    pub const CPU: u16 = 2;
    /// `HVM_SAVE_CODE(PIC)`.
    pub const PIC: u16 = 3;
    /// `HVM_SAVE_CODE(IOAPIC)`.
    pub const IOAPIC: u16 = 4;
    /// `HVM_SAVE_CODE(LAPIC)`.
    pub const LAPIC: u16 = 5;
    /// `HVM_SAVE_CODE(LAPIC_REGS)`.
    pub const LAPIC_REGS: u16 = 6;
    /// `HVM_SAVE_CODE(PCI_IRQ)`.
    pub const PCI_IRQ: u16 = 7;
    /// `HVM_SAVE_CODE(ISA_IRQ)`.
    pub const ISA_IRQ: u16 = 8;
    /// `HVM_SAVE_CODE(PCI_LINK)`.
    pub const PCI_LINK: u16 = 9;
    /// `HVM_SAVE_CODE(PIT)`.
    pub const PIT: u16 = 10;
    /// `HVM_SAVE_CODE(RTC)`.
    pub const RTC: u16 = 11;
    /// `HVM_SAVE_CODE(HPET)`.
    pub const HPET: u16 = 12;
    /// `HVM_SAVE_CODE(PMTIMER)`.
    pub const PMTIMER: u16 = 13;
    /// 3.3 on.
    pub(crate) const MTRR: u16 = 14;
    /// `VIRIDIAN` from 3.4, renamed `VIRIDIAN_DOMAIN` in 4.2.
    pub(crate) const VIRIDIAN_DOMAIN: u16 = 15;
    /// 4.1 on, variable length.
    pub(crate) const CPU_XSAVE: u16 = 16;
    /// 4.2 on.
    pub(crate) const VIRIDIAN_VCPU: u16 = 17;
    /// 4.2 on.
    pub(crate) const VMCE_VCPU: u16 = 18;
    /// 4.3 on.
    pub(crate) const TSC_ADJUST: u16 = 19;
    /// 4.5 on, variable length.
    pub(crate) const CPU_MSR: u16 = 20;
    /// `HVM_SAVE_CODE_MAX` of the seed (`e2a44bc7a4`).
    pub(crate) const SEED_MAX: u16 = 13;
    /// `HVM_SAVE_CODE_MAX` of current Xen.
    pub(crate) const CURRENT_MAX: u16 = 20;
}

/// Xen's name for a type code (`"LAPIC_REGS"`), or `None` for codes no Xen
/// release defined (21, the Amazon-reserved 22–34, anything above).
pub fn type_name(typecode: u16) -> Option<&'static str> {
    const NAMES: [&str; 21] = [
        "END",
        "HEADER",
        "CPU",
        "PIC",
        "IOAPIC",
        "LAPIC",
        "LAPIC_REGS",
        "PCI_IRQ",
        "ISA_IRQ",
        "PCI_LINK",
        "PIT",
        "RTC",
        "HPET",
        "PMTIMER",
        "MTRR",
        "VIRIDIAN_DOMAIN",
        "CPU_XSAVE",
        "VIRIDIAN_VCPU",
        "VMCE_VCPU",
        "TSC_ADJUST",
        "CPU_MSR",
    ];
    NAMES.get(usize::from(typecode)).copied()
}

/// True for types saved once per vCPU (instance = vcpu_id).
pub(crate) fn is_per_vcpu(typecode: u16) -> bool {
    matches!(
        typecode,
        code::CPU
            | code::LAPIC
            | code::LAPIC_REGS
            | code::MTRR
            | code::CPU_XSAVE
            | code::VIRIDIAN_VCPU
            | code::VMCE_VCPU
            | code::TSC_ADJUST
            | code::CPU_MSR
    )
}

/// A point in Xen's history at which some record size changed, in order.
/// Sizes are those of x86_64 Xen unless a [`SizeEra`] note says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Era {
    /// The seed, `e2a44bc7a4` (April 2007).
    Seed2007,
    /// The unreleased weeks between the seed and 3.1 (12 Apr – 2 May 2007)
    /// in which records changed one commit at a time; both the old and the
    /// new size of a record occur in it.
    Xen31Dev,
    /// Xen 3.1.
    Xen3_1,
    /// Xen 3.3.
    Xen3_3,
    /// Xen 3.4.
    Xen3_4,
    /// Xen 4.0.
    Xen4_0,
    /// Xen 4.1.
    Xen4_1,
    /// Xen 4.2.
    Xen4_2,
    /// Xen 4.3.
    Xen4_3,
    /// Xen 4.5.
    Xen4_5,
    /// Xen 4.6.
    Xen4_6,
    /// Xen 4.7.
    Xen4_7,
    /// Xen 4.10.
    Xen4_10,
    /// Xen 4.13.
    Xen4_13,
    /// Xen 4.14.
    Xen4_14,
    /// Xen 4.21.
    Xen4_21,
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::Seed2007 => "seed (2007)",
            Era::Xen31Dev => "3.1-dev (Apr 2007)",
            Era::Xen3_1 => "3.1",
            Era::Xen3_3 => "3.3",
            Era::Xen3_4 => "3.4",
            Era::Xen4_0 => "4.0",
            Era::Xen4_1 => "4.1",
            Era::Xen4_2 => "4.2",
            Era::Xen4_3 => "4.3",
            Era::Xen4_5 => "4.5",
            Era::Xen4_6 => "4.6",
            Era::Xen4_7 => "4.7",
            Era::Xen4_10 => "4.10",
            Era::Xen4_13 => "4.13",
            Era::Xen4_14 => "4.14",
            Era::Xen4_21 => "4.21",
        })
    }
}

/// A span of Xen history in which a (typecode, length) was what Xen wrote:
/// from `since` up to but excluding `until` (`None`: still current).
/// From docs/format.md §5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SizeEra {
    /// The first release that wrote this size.
    pub since: Era,
    /// The first release that no longer did; `None` while current.
    pub until: Option<Era>,
    /// Qualification, e.g. "32-bit Xen only".
    pub note: &'static str,
}

impl fmt::Display for SizeEra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.until {
            Some(u) => write!(f, "{} – before {}", self.since, u)?,
            None => write!(f, "{} – current", self.since)?,
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

/// A [`SizeEra`] literal (a struct expression, so `&[..]` of it is promoted
/// to a `'static` slice).
macro_rules! span {
    ($since:expr, $until:expr, $note:expr $(,)?) => {
        SizeEra {
            since: $since,
            until: $until,
            note: $note,
        }
    };
}

/// The eras in which Xen wrote a record of this type and payload length.
/// Empty: no Xen release wrote that size (the record is foreign or damaged).
pub fn size_eras(typecode: u16, len: usize) -> &'static [SizeEra] {
    use Era::*;
    const ALL: &[SizeEra] = &[span!(Seed2007, None, "")];
    match (typecode, len) {
        (code::END, 0) => ALL,
        (code::HEADER, 24) => &[span!(
            Seed2007,
            None,
            "x86_64 Xen in 2007, all Xen from 3.1; bytes 20..24 are padding before 4.0, gtsc_khz from 4.0",
        )],
        (code::HEADER, 20) => &[span!(Seed2007, Some(Xen31Dev), "32-bit Xen only")],
        (code::CPU, 320) => &[span!(Seed2007, Some(Xen31Dev), "")],
        (code::CPU, 1008) => &[span!(Xen31Dev, Some(Xen3_1), "unreleased")],
        (code::CPU, 1016) => &[span!(
            Xen3_1,
            Some(Xen4_0),
            "compat form, still loaded by 4.2 and later",
        )],
        (code::CPU, 1024) => &[span!(Xen4_0, Some(Xen4_7), "")],
        (code::CPU, 1032) => &[span!(Xen4_7, None, "")],
        (code::PIC, 8) | (code::IOAPIC, 400) | (code::LAPIC_REGS, 1024) => ALL,
        (code::PCI_IRQ, 16) | (code::ISA_IRQ, 8) | (code::HPET, 1048) => ALL,
        (code::PMTIMER, 8) => ALL,
        (code::LAPIC, 16) => &[span!(Seed2007, Some(Xen4_1), "")],
        (code::LAPIC, 24) => &[span!(Xen4_1, Some(Xen4_21), "")],
        (code::LAPIC, 32) => &[span!(Xen4_21, None, "")],
        (code::PCI_LINK, 4) | (code::PIT, 52) | (code::RTC, 15) => {
            &[span!(Seed2007, Some(Xen31Dev), "")]
        }
        (code::PCI_LINK, 8) | (code::PIT, 56) => &[span!(Xen31Dev, None, "")],
        (code::RTC, 16) => &[span!(Xen31Dev, Some(Xen4_14), "")],
        (code::RTC, 24) => &[span!(Xen4_14, None, "")],
        (code::MTRR, 240) => &[span!(Xen3_3, None, "")],
        (code::VIRIDIAN_DOMAIN, 16) => &[span!(Xen3_4, Some(Xen4_5), "")],
        (code::VIRIDIAN_DOMAIN, 24) => &[span!(Xen4_5, Some(Xen4_6), "")],
        (code::VIRIDIAN_DOMAIN, 32) => &[span!(Xen4_6, None, "")],
        (code::CPU_XSAVE, n) if n >= XSAVE_HEADER_LEN => &[span!(Xen4_1, None, "variable")],
        (code::VIRIDIAN_VCPU, 8) => &[span!(Xen4_2, Some(Xen4_7), "")],
        (code::VIRIDIAN_VCPU, 16) => &[span!(Xen4_7, Some(Xen4_13), "")],
        (code::VIRIDIAN_VCPU, 152) => &[span!(Xen4_13, Some(Xen4_13), "4.13 development only")],
        (code::VIRIDIAN_VCPU, 216) => &[span!(Xen4_13, None, "")],
        (code::VMCE_VCPU, 8) => &[span!(Xen4_2, Some(Xen4_3), "")],
        (code::VMCE_VCPU, 24) => &[span!(Xen4_3, Some(Xen4_10), "")],
        (code::VMCE_VCPU, 32) => &[span!(Xen4_10, None, "")],
        (code::TSC_ADJUST, 8) => &[span!(Xen4_3, None, "")],
        (code::CPU_MSR, n) if n >= 8 && (n - 8) % 16 == 0 => &[span!(Xen4_5, None, "variable")],
        _ => &[],
    }
}

/// The payload of one HVM record, typed where its (typecode, length) names
/// a known layout, raw otherwise. Decoding never fails: anything unknown,
/// damaged or of an unlisted size is [`RecordBody::Raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordBody {
    /// END with length 0.
    End,
    /// A [`Header`] record.
    Header(Header),
    /// A [`CpuSeed`] record.
    CpuSeed(Box<CpuSeed>),
    /// A [`CpuCompat`] record.
    CpuCompat(Box<CpuCompat>),
    /// A [`Cpu`] record.
    Cpu(Box<Cpu>),
    /// A [`Pic`] record.
    Pic(Pic),
    /// A [`Ioapic`] record.
    Ioapic(Box<Ioapic>),
    /// A [`LapicSeed`] record.
    LapicSeed(LapicSeed),
    /// A [`LapicTdt`] record.
    LapicTdt(LapicTdt),
    /// A [`Lapic`] record.
    Lapic(Lapic),
    /// A [`LapicRegs`] record.
    LapicRegs(Box<LapicRegs>),
    /// A [`PciIrq`] record.
    PciIrq(PciIrq),
    /// A [`IsaIrq`] record.
    IsaIrq(IsaIrq),
    /// A [`PciLinkSeed`] record.
    PciLinkSeed(PciLinkSeed),
    /// A [`PciLink`] record.
    PciLink(PciLink),
    /// A [`PitSeed`] record.
    PitSeed(PitSeed),
    /// A [`Pit`] record.
    Pit(Pit),
    /// A [`RtcSeed`] record.
    RtcSeed(RtcSeed),
    /// A [`RtcPadded`] record.
    RtcPadded(RtcPadded),
    /// A [`Rtc`] record.
    Rtc(Rtc),
    /// A [`Hpet`] record.
    Hpet(Box<Hpet>),
    /// A [`PmTimer`] record.
    PmTimer(PmTimer),
    /// A [`Mtrr`] record.
    Mtrr(Box<Mtrr>),
    /// A [`ViridianDomain`] record.
    ViridianDomain(ViridianDomain),
    /// A [`CpuXsave`] record.
    CpuXsave(CpuXsave),
    /// A [`ViridianVcpu`] record.
    ViridianVcpu(Box<ViridianVcpu>),
    /// A [`VmceVcpu`] record.
    VmceVcpu(VmceVcpu),
    /// A [`TscAdjust`] record.
    TscAdjust(TscAdjust),
    /// A [`CpuMsr`] record.
    CpuMsr(CpuMsr),
    /// Unknown type, or a known type with a length no known layout has.
    Raw {
        /// The descriptor's type code.
        typecode: u16,
        /// The payload as found.
        payload: Vec<u8>,
    },
}

fn read<T>(b: &[u8]) -> Option<T>
where
    T: for<'a> binrw::BinRead<Args<'a> = ()>,
{
    let (v, used) = bytes::decode(b, Endian::Little).ok()?;
    // Only exact lengths reach here; a short read would be a layout bug.
    (used == b.len()).then_some(v)
}

fn write<T>(v: &T, out: &mut Vec<u8>)
where
    T: for<'a> binrw::BinWrite<Args<'a> = ()>,
{
    bytes::encode(v, Endian::Little, out);
}

impl RecordBody {
    /// Decode a payload by (typecode, length). Never fails.
    pub fn decode(typecode: u16, b: &[u8]) -> RecordBody {
        Self::decode_typed(typecode, b).unwrap_or_else(|| RecordBody::Raw {
            typecode,
            payload: b.to_vec(),
        })
    }

    fn decode_typed(typecode: u16, b: &[u8]) -> Option<RecordBody> {
        use RecordBody as R;
        Some(match (typecode, b.len()) {
            (code::END, 0) => R::End,
            (code::HEADER, 20 | 24) => R::Header(Header::decode(b)?),
            (code::CPU, CpuSeed::SIZE) => R::CpuSeed(Box::new(read(b)?)),
            (code::CPU, CpuCompat::SIZE) => R::CpuCompat(Box::new(read(b)?)),
            (code::CPU, Cpu::SIZE) => R::Cpu(Box::new(read(b)?)),
            (code::PIC, Pic::SIZE) => R::Pic(read(b)?),
            (code::IOAPIC, Ioapic::SIZE) => R::Ioapic(Box::new(read(b)?)),
            (code::LAPIC, LapicSeed::SIZE) => R::LapicSeed(read(b)?),
            (code::LAPIC, LapicTdt::SIZE) => R::LapicTdt(read(b)?),
            (code::LAPIC, Lapic::SIZE) => R::Lapic(read(b)?),
            (code::LAPIC_REGS, LapicRegs::SIZE) => R::LapicRegs(Box::new(read(b)?)),
            (code::PCI_IRQ, PciIrq::SIZE) => R::PciIrq(read(b)?),
            (code::ISA_IRQ, IsaIrq::SIZE) => R::IsaIrq(read(b)?),
            (code::PCI_LINK, PciLinkSeed::SIZE) => R::PciLinkSeed(read(b)?),
            (code::PCI_LINK, PciLink::SIZE) => R::PciLink(read(b)?),
            (code::PIT, PitSeed::SIZE) => R::PitSeed(read(b)?),
            (code::PIT, Pit::SIZE) => R::Pit(read(b)?),
            (code::RTC, RtcSeed::SIZE) => R::RtcSeed(read(b)?),
            (code::RTC, RtcPadded::SIZE) => R::RtcPadded(read(b)?),
            (code::RTC, Rtc::SIZE) => R::Rtc(read(b)?),
            (code::HPET, Hpet::SIZE) => R::Hpet(Box::new(read(b)?)),
            (code::PMTIMER, PmTimer::SIZE) => R::PmTimer(read(b)?),
            (code::MTRR, Mtrr::SIZE) => R::Mtrr(Box::new(read(b)?)),
            (code::VIRIDIAN_DOMAIN, ViridianDomain::SIZE) => R::ViridianDomain(read(b)?),
            (code::CPU_XSAVE, _) => R::CpuXsave(CpuXsave::decode(b)?),
            (code::VIRIDIAN_VCPU, ViridianVcpu::SIZE) => R::ViridianVcpu(Box::new(read(b)?)),
            (code::VMCE_VCPU, VmceVcpu::SIZE) => R::VmceVcpu(read(b)?),
            (code::TSC_ADJUST, TscAdjust::SIZE) => R::TscAdjust(read(b)?),
            (code::CPU_MSR, _) => R::CpuMsr(CpuMsr::decode(b)?),
            _ => return None,
        })
    }

    /// Append the payload bytes: exactly the bytes it was decoded from.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        use RecordBody as R;
        match self {
            R::End => {}
            R::Header(h) => h.encode(out),
            R::CpuSeed(v) => write(&**v, out),
            R::CpuCompat(v) => write(&**v, out),
            R::Cpu(v) => write(&**v, out),
            R::Pic(v) => write(v, out),
            R::Ioapic(v) => write(&**v, out),
            R::LapicSeed(v) => write(v, out),
            R::LapicTdt(v) => write(v, out),
            R::Lapic(v) => write(v, out),
            R::LapicRegs(v) => write(&**v, out),
            R::PciIrq(v) => write(v, out),
            R::IsaIrq(v) => write(v, out),
            R::PciLinkSeed(v) => write(v, out),
            R::PciLink(v) => write(v, out),
            R::PitSeed(v) => write(v, out),
            R::Pit(v) => write(v, out),
            R::RtcSeed(v) => write(v, out),
            R::RtcPadded(v) => write(v, out),
            R::Rtc(v) => write(v, out),
            R::Hpet(v) => write(&**v, out),
            R::PmTimer(v) => write(v, out),
            R::Mtrr(v) => write(&**v, out),
            R::ViridianDomain(v) => write(v, out),
            R::CpuXsave(v) => v.encode(out),
            R::ViridianVcpu(v) => write(&**v, out),
            R::VmceVcpu(v) => write(v, out),
            R::TscAdjust(v) => write(v, out),
            R::CpuMsr(v) => v.encode(out),
            R::Raw { payload, .. } => out.extend_from_slice(payload),
        }
    }

    /// The payload bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// The descriptor type code this body is written with.
    pub(crate) fn typecode(&self) -> u16 {
        use RecordBody as R;
        match self {
            R::End => code::END,
            R::Header(_) => code::HEADER,
            R::CpuSeed(_) | R::CpuCompat(_) | R::Cpu(_) => code::CPU,
            R::Pic(_) => code::PIC,
            R::Ioapic(_) => code::IOAPIC,
            R::LapicSeed(_) | R::LapicTdt(_) | R::Lapic(_) => code::LAPIC,
            R::LapicRegs(_) => code::LAPIC_REGS,
            R::PciIrq(_) => code::PCI_IRQ,
            R::IsaIrq(_) => code::ISA_IRQ,
            R::PciLinkSeed(_) | R::PciLink(_) => code::PCI_LINK,
            R::PitSeed(_) | R::Pit(_) => code::PIT,
            R::RtcSeed(_) | R::RtcPadded(_) | R::Rtc(_) => code::RTC,
            R::Hpet(_) => code::HPET,
            R::PmTimer(_) => code::PMTIMER,
            R::Mtrr(_) => code::MTRR,
            R::ViridianDomain(_) => code::VIRIDIAN_DOMAIN,
            R::CpuXsave(_) => code::CPU_XSAVE,
            R::ViridianVcpu(_) => code::VIRIDIAN_VCPU,
            R::VmceVcpu(_) => code::VMCE_VCPU,
            R::TscAdjust(_) => code::TSC_ADJUST,
            R::CpuMsr(_) => code::CPU_MSR,
            R::Raw { typecode, .. } => *typecode,
        }
    }

    /// Payload length in bytes, without encoding.
    pub fn len(&self) -> usize {
        use RecordBody as R;
        match self {
            R::End => 0,
            R::Header(h) => h.len(),
            R::CpuSeed(_) => CpuSeed::SIZE,
            R::CpuCompat(_) => CpuCompat::SIZE,
            R::Cpu(_) => Cpu::SIZE,
            R::Pic(_) => Pic::SIZE,
            R::Ioapic(_) => Ioapic::SIZE,
            R::LapicSeed(_) => LapicSeed::SIZE,
            R::LapicTdt(_) => LapicTdt::SIZE,
            R::Lapic(_) => Lapic::SIZE,
            R::LapicRegs(_) => LapicRegs::SIZE,
            R::PciIrq(_) => PciIrq::SIZE,
            R::IsaIrq(_) => IsaIrq::SIZE,
            R::PciLinkSeed(_) => PciLinkSeed::SIZE,
            R::PciLink(_) => PciLink::SIZE,
            R::PitSeed(_) => PitSeed::SIZE,
            R::Pit(_) => Pit::SIZE,
            R::RtcSeed(_) => RtcSeed::SIZE,
            R::RtcPadded(_) => RtcPadded::SIZE,
            R::Rtc(_) => Rtc::SIZE,
            R::Hpet(_) => Hpet::SIZE,
            R::PmTimer(_) => PmTimer::SIZE,
            R::Mtrr(_) => Mtrr::SIZE,
            R::ViridianDomain(_) => ViridianDomain::SIZE,
            R::CpuXsave(x) => XSAVE_HEADER_LEN + x.save_area.len(),
            R::ViridianVcpu(_) => ViridianVcpu::SIZE,
            R::VmceVcpu(_) => VmceVcpu::SIZE,
            R::TscAdjust(_) => TscAdjust::SIZE,
            R::CpuMsr(m) => 8 + 16 * m.msrs.len(),
            R::Raw { payload, .. } => payload.len(),
        }
    }

    /// True only for an END (or raw) body without payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when no typed layout matched.
    pub fn is_raw(&self) -> bool {
        matches!(self, RecordBody::Raw { .. })
    }

    /// Xen's name of the type (`"CPU"`), `"UNKNOWN"` for undefined codes.
    pub fn name(&self) -> &'static str {
        type_name(self.typecode()).unwrap_or("UNKNOWN")
    }

    /// The eras whose Xen wrote this type with this length.
    pub fn eras(&self) -> &'static [SizeEra] {
        size_eras(self.typecode(), self.len())
    }

    /// Every field in layout order; a raw body lists as one `payload` byte
    /// field.
    pub fn fields(&self) -> Vec<Field> {
        use RecordBody as R;
        let mut out = Vec::new();
        let o = &mut out;
        match self {
            R::End => {}
            R::Header(v) => v.push_fields("", o),
            R::CpuSeed(v) => v.push_fields("", o),
            R::CpuCompat(v) => v.push_fields("", o),
            R::Cpu(v) => v.push_fields("", o),
            R::Pic(v) => v.push_fields("", o),
            R::Ioapic(v) => v.push_fields("", o),
            R::LapicSeed(v) => v.push_fields("", o),
            R::LapicTdt(v) => v.push_fields("", o),
            R::Lapic(v) => v.push_fields("", o),
            R::LapicRegs(v) => v.push_fields("", o),
            R::PciIrq(v) => v.push_fields("", o),
            R::IsaIrq(v) => v.push_fields("", o),
            R::PciLinkSeed(v) => v.push_fields("", o),
            R::PciLink(v) => v.push_fields("", o),
            R::PitSeed(v) => v.push_fields("", o),
            R::Pit(v) => v.push_fields("", o),
            R::RtcSeed(v) => v.push_fields("", o),
            R::RtcPadded(v) => v.push_fields("", o),
            R::Rtc(v) => v.push_fields("", o),
            R::Hpet(v) => v.push_fields("", o),
            R::PmTimer(v) => v.push_fields("", o),
            R::Mtrr(v) => v.push_fields("", o),
            R::ViridianDomain(v) => v.push_fields("", o),
            R::CpuXsave(v) => v.push_fields("", o),
            R::ViridianVcpu(v) => v.push_fields("", o),
            R::VmceVcpu(v) => v.push_fields("", o),
            R::TscAdjust(v) => v.push_fields("", o),
            R::CpuMsr(v) => v.push_fields("", o),
            R::Raw { payload, .. } => u8::push_slice(payload, "payload", o),
        }
        out
    }
}

/// One record with its instance: what a blob holds, typed. The owned form
/// writers and translators work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvmRecord {
    /// vcpu_id for per-vCPU types, 0/1 for PIC, 0 otherwise.
    pub instance: u16,
    /// The payload, typed where (typecode, length) names a layout.
    pub body: RecordBody,
}

impl HvmRecord {
    /// A record of the given instance.
    pub(crate) fn new(instance: u16, body: RecordBody) -> Self {
        HvmRecord { instance, body }
    }

    /// Decode a payload by (typecode, length). Never fails.
    pub fn decode(typecode: u16, instance: u16, payload: &[u8]) -> Self {
        HvmRecord::new(instance, RecordBody::decode(typecode, payload))
    }

    /// Descriptor type code.
    pub fn typecode(&self) -> u16 {
        self.body.typecode()
    }

    /// Xen's name of the type.
    pub fn name(&self) -> &'static str {
        self.body.name()
    }

    /// Eras whose Xen wrote this size.
    pub fn eras(&self) -> &'static [SizeEra] {
        self.body.eras()
    }

    /// Every field in layout order.
    pub fn fields(&self) -> Vec<Field> {
        self.body.fields()
    }

    /// Append descriptor and payload.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.typecode().to_le_bytes());
        out.extend_from_slice(&self.instance.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        self.body.encode_into(out);
        let len = (out.len() - start - super::DESCRIPTOR_LEN) as u32;
        out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    }
}

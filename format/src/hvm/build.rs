//! Writing blobs the way Xen's `hvm_save` does: HEADER first, then types in
//! ascending code, instances ascending, END last.

use super::layouts::*;
use super::record::{code, HvmRecord, RecordBody};

/// Collects records in any order and writes them in Xen's order.
///
/// Records of equal (typecode, instance) keep the order they were added in.
/// An END added explicitly is written last (its payload kept); otherwise an
/// empty END is appended.
#[derive(Debug, Clone, Default)]
pub struct BlobBuilder {
    records: Vec<HvmRecord>,
}

impl BlobBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a typed or raw record.
    pub fn push(&mut self, record: HvmRecord) -> &mut Self {
        self.records.push(record);
        self
    }

    /// Add a record given as raw bytes (kept raw if no layout matches).
    pub fn push_raw(&mut self, typecode: u16, instance: u16, payload: &[u8]) -> &mut Self {
        self.push(HvmRecord::decode(typecode, instance, payload))
    }

    /// The records in the order [`finish`](Self::finish) writes them,
    /// END included.
    pub(crate) fn ordered(&self) -> Vec<&HvmRecord> {
        let rank = |t: u16| match t {
            code::HEADER => (0u32, 0u16),
            code::END => (2, 0),
            t => (1, t),
        };
        let mut v: Vec<&HvmRecord> = self.records.iter().collect();
        // Stable: equal keys keep insertion order.
        v.sort_by_key(|r| (rank(r.typecode()), r.instance));
        v
    }

    /// Encode the blob.
    pub fn finish(&self) -> Vec<u8> {
        let ordered = self.ordered();
        let mut out = Vec::new();
        for r in &ordered {
            r.encode_into(&mut out);
        }
        if ordered.last().map(|r| r.typecode()) != Some(code::END) {
            HvmRecord::new(0, RecordBody::End).encode_into(&mut out);
        }
        out
    }
}

/// Xen's `VLAPIC_VERSION` of 2007: version 0x14, 6 LVT entries (max LVT 5).
const VLAPIC_VERSION: u32 = 0x0005_0014;
/// An LVT entry's mask bit.
const APIC_LVT_MASKED: u32 = 1 << 16;
/// `VLAPIC_SW_DISABLED`: SVR's enable bit is clear after reset.
const VLAPIC_SW_DISABLED: u32 = 1;

/// The APIC register page of a vCPU after reset: ID, version, flat DFR,
/// SVR 0xFF (software-disabled), every LVT masked.
fn lapic_regs_reset(vcpu_id: u16) -> LapicRegs {
    let mut r = LapicRegs { data: [0; 1024] };
    r.set_reg(0x20, u32::from(vcpu_id) << 24);
    r.set_reg(0x30, VLAPIC_VERSION);
    r.set_reg(0xE0, 0xFFFF_FFFF);
    r.set_reg(0xF0, 0xFF);
    for lvt in (0x320..=0x370).step_by(16) {
        r.set_reg(lvt, APIC_LVT_MASKED);
    }
    r
}

fn pic_reset(master: bool) -> Pic {
    Pic {
        irr: 0,
        imr: 0xFF,
        isr: 0,
        irq_base: if master { 0x08 } else { 0x70 },
        init: PicInit(0),
        mode: PicMode(if master { 0x40 } else { 0 }),
        elcr: 0,
        int_output: 0,
    }
}

fn pit_channel_reset(gate: bool) -> PitChannel {
    PitChannel {
        count: 0x1_0000,
        latched_count: 0,
        count_latched: 0,
        status_latched: 0,
        status: 0,
        read_state: 0,
        write_state: 0,
        write_latch: 0,
        rw_mode: 0,
        mode: 3,
        bcd: 0,
        gate: u8::from(gate),
    }
}

/// HPET main counter period of Xen 3.x: 16 ns (62.5 MHz), in femtoseconds.
const HPET_PERIOD_FS: u64 = 16_000_000;
/// Timer N capable of 64-bit and periodic mode.
const HPET_TN_CAPS: u64 = (1 << 5) | (1 << 4);

fn hpet_reset() -> Hpet {
    let timer = HpetTimer {
        config: HPET_TN_CAPS,
        cmp: u64::MAX,
        fsb: 0,
        res4: 0,
    };
    Hpet {
        // Vendor 0x8086, legacy-route capable, 64-bit counter, 3 timers, rev 1.
        capability: 0x8086_A201 | (HPET_PERIOD_FS << 32),
        res0: 0,
        config: 0,
        res1: 0,
        isr: 0,
        res2: [0; 200],
        mc64: 0,
        res3: 0,
        timers: [timer.clone(), timer.clone(), timer],
        res5: [0; 672],
        period: [0; 3],
    }
}

/// The records of a seed-era (`e2a44bc7a4`, x86_64 Xen) blob for a guest in
/// reset state with one vCPU per entry of `cpus` (vcpu_id = index, vCPU 0
/// the BSP), in the order `hvm_save` writes them. Devices hold their
/// power-on state; `cpuid` is CPUID.1:EAX of the "saving host"; the
/// HEADER's tail padding is zero and `changeset` 0 as real builds wrote.
pub fn seed_reset_records(cpuid: u32, cpus: &[CpuSeed]) -> Vec<HvmRecord> {
    let n = u16::try_from(cpus.len()).unwrap_or(u16::MAX);
    let mut v = vec![HvmRecord::new(
        0,
        RecordBody::Header(Header {
            magic: HVM_FILE_MAGIC,
            version: HVM_FILE_VERSION,
            changeset: 0,
            cpuid,
            tail: Some(0),
        }),
    )];
    for (i, cpu) in (0..n).zip(cpus) {
        v.push(HvmRecord::new(
            i,
            RecordBody::CpuSeed(Box::new(cpu.clone())),
        ));
    }
    v.push(HvmRecord::new(0, RecordBody::Pic(pic_reset(true))));
    v.push(HvmRecord::new(1, RecordBody::Pic(pic_reset(false))));
    v.push(HvmRecord::new(
        0,
        RecordBody::Ioapic(Box::new(Ioapic {
            base_address: 0xFEC0_0000,
            ioregsel: 0,
            id: 0,
            redirtbl: [RedirEntry(RedirEntry::MASK); VIOAPIC_NUM_PINS],
        })),
    ));
    for i in 0..n {
        v.push(HvmRecord::new(
            i,
            RecordBody::LapicSeed(LapicSeed {
                // APIC enabled at the default base; bit 8 marks the BSP.
                apic_base_msr: if i == 0 { 0xFEE0_0900 } else { 0xFEE0_0800 },
                disabled: VLAPIC_SW_DISABLED,
                timer_divisor: 2,
            }),
        ));
    }
    for i in 0..n {
        v.push(HvmRecord::new(
            i,
            RecordBody::LapicRegs(Box::new(lapic_regs_reset(i))),
        ));
    }
    v.push(HvmRecord::new(0, RecordBody::PciIrq(PciIrq { i: [0; 2] })));
    v.push(HvmRecord::new(0, RecordBody::IsaIrq(IsaIrq { i: 0 })));
    v.push(HvmRecord::new(
        0,
        RecordBody::PciLinkSeed(PciLinkSeed { route: [0; 4] }),
    ));
    v.push(HvmRecord::new(
        0,
        RecordBody::PitSeed(PitSeed {
            channels: [
                pit_channel_reset(true),
                pit_channel_reset(true),
                pit_channel_reset(false),
            ],
            speaker_data_on: 0,
        }),
    ));
    let mut cmos = [0u8; RTC_CMOS_SIZE];
    cmos[7] = 0x01; // day of month (BCD)
    cmos[8] = 0x01; // month (BCD)
    cmos[10] = 0x26; // register A: 32.768 kHz divider, 1024 Hz rate
    cmos[11] = 0x02; // register B: 24-hour mode, BCD
    cmos[13] = 0x80; // register D: valid RAM and time
    v.push(HvmRecord::new(
        0,
        RecordBody::RtcSeed(RtcSeed {
            cmos_data: cmos,
            cmos_index: 0,
        }),
    ));
    v.push(HvmRecord::new(0, RecordBody::Hpet(Box::new(hpet_reset()))));
    v.push(HvmRecord::new(
        0,
        RecordBody::PmTimer(PmTimer {
            tmr_val: 0,
            pm1a_sts: 0,
            pm1a_en: 0,
        }),
    ));
    v.push(HvmRecord::new(0, RecordBody::End));
    v
}

/// The encoded seed-era reset blob of [`seed_reset_records`]: 3071 bytes
/// for one vCPU, 1384 more per further vCPU (docs/format.md §5.2).
pub fn seed_reset_blob(cpuid: u32, cpus: &[CpuSeed]) -> Vec<u8> {
    super::encode_records(&seed_reset_records(cpuid, cpus), &[])
}

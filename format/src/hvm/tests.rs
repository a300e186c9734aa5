//! Cross-cutting tests of the hvm module: sizes from docs/format.md §5,
//! byte-exact round trips of every layout, builder order and load rules.

use proptest::prelude::*;

use super::load::*;
use super::*;
use crate::pfn::WordSize;
use crate::rules::{Finding, Severity};

/// Deterministic, non-trivial filler so that every byte position differs.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn raw(t: u16, i: u16, p: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    OwnedRecord {
        typecode: t,
        instance: i,
        payload: p.to_vec(),
    }
    .encode_into(&mut v);
    v
}

/// Every (typecode, length) with a typed layout.
const TYPED_SIZES: &[(u16, usize)] = &[
    (code::HEADER, 24),
    (code::HEADER, 20),
    (code::CPU, 320),
    (code::CPU, 1016),
    (code::CPU, 1032),
    (code::PIC, 8),
    (code::IOAPIC, 400),
    (code::LAPIC, 16),
    (code::LAPIC, 24),
    (code::LAPIC, 32),
    (code::LAPIC_REGS, 1024),
    (code::PCI_IRQ, 16),
    (code::ISA_IRQ, 8),
    (code::PCI_LINK, 4),
    (code::PCI_LINK, 8),
    (code::PIT, 52),
    (code::PIT, 56),
    (code::RTC, 15),
    (code::RTC, 16),
    (code::RTC, 24),
    (code::HPET, 1048),
    (code::PMTIMER, 8),
    (code::MTRR, 240),
    (code::VIRIDIAN_DOMAIN, 32),
    (code::CPU_XSAVE, 24),
    (code::CPU_XSAVE, 600),
    (code::CPU_XSAVE, 601),
    (code::CPU_XSAVE, 832),
    (code::VIRIDIAN_VCPU, 216),
    (code::VMCE_VCPU, 32),
    (code::TSC_ADJUST, 8),
];

#[test]
fn every_typed_layout_round_trips_exactly() {
    for (n, &(t, len)) in TYPED_SIZES.iter().enumerate() {
        let p = pattern(len, n as u8);
        let body = RecordBody::decode(t, &p);
        assert!(!body.is_raw(), "type {t} len {len} stayed raw");
        assert_eq!(body.typecode(), t);
        assert_eq!(body.len(), len, "type {t} len {len}");
        assert_eq!(body.encode(), p, "type {t} len {len}");
        assert!(!body.fields().is_empty());
        assert!(!body.eras().is_empty(), "type {t} len {len} has no era");
        assert_eq!(body.name(), type_name(t).unwrap());
    }
}

#[test]
fn cpu_msr_round_trips_and_odd_lengths_stay_raw() {
    let mut p = 3u32.to_le_bytes().to_vec();
    p.extend(pattern(4 + 48, 7));
    let b = RecordBody::decode(code::CPU_MSR, &p);
    let RecordBody::CpuMsr(m) = &b else {
        panic!("not typed: {b:?}")
    };
    assert_eq!(m.msrs.len(), 3);
    assert_eq!(b.encode(), p);
    // Count claims 3 but only 2 MSRs follow; CPU of 321 bytes; unknown code.
    for (t, p) in [
        (code::CPU_MSR, p[..p.len() - 16].to_vec()),
        (code::CPU, pattern(321, 1)),
        (code::CPU_XSAVE, pattern(23, 1)),
        (code::END, vec![1]),
        (21, pattern(13, 2)),
        (0xFFFF, vec![]),
    ] {
        let b = RecordBody::decode(t, &p);
        assert!(b.is_raw(), "type {t} len {} decoded", p.len());
        assert_eq!(b.encode(), p);
        assert_eq!(b.typecode(), t);
    }
    assert_eq!(RecordBody::decode(21, &[1]).name(), "UNKNOWN");
}

#[test]
fn fields_sit_at_the_documented_offsets() {
    // Seed CPU: sysenter_esp @240, tsc @312, cs_base @120.
    let mut p = vec![0u8; 320];
    p[240..248].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    p[312..320].copy_from_slice(&42u64.to_le_bytes());
    p[120..128].copy_from_slice(&0xFFFF_0000u64.to_le_bytes());
    let RecordBody::CpuSeed(c) = RecordBody::decode(code::CPU, &p) else {
        panic!()
    };
    assert_eq!(c.sysenter_esp, 0x1122_3344_5566_7788);
    assert_eq!(c.tsc, 42);
    assert_eq!(c.cs_base, 0xFFFF_0000);

    // Current CPU: rip @640, tsc @1008, flags @1024; compat: tsc @1000.
    let mut p = vec![0u8; 1032];
    p[640..648].copy_from_slice(&0xFFF0u64.to_le_bytes());
    p[1008..1016].copy_from_slice(&7u64.to_le_bytes());
    p[1016..1020].copy_from_slice(&0x8000_0B0Eu32.to_le_bytes());
    p[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    let body = RecordBody::decode(code::CPU, &p);
    let RecordBody::Cpu(c) = &body else { panic!() };
    assert_eq!((c.common.rip, c.tsc, c.flags), (0xFFF0, 7, 1));
    let f = body.fields();
    let get = |n: &str| f.iter().find(|x| x.name == n).unwrap().value.clone();
    assert_eq!(get("rip"), FieldValue::uint(0xFFF0, 64));
    assert_eq!(get("pending_vector"), FieldValue::uint(0x0E, 8));
    assert_eq!(get("pending_type"), FieldValue::uint(3, 3));
    assert_eq!(get("pending_error_valid"), FieldValue::uint(1, 1));
    assert_eq!(get("pending_valid"), FieldValue::uint(1, 1));
    let mut p = vec![0u8; 1016];
    p[1000..1008].copy_from_slice(&9u64.to_le_bytes());
    let RecordBody::CpuCompat(c) = RecordBody::decode(code::CPU, &p) else {
        panic!()
    };
    assert_eq!(c.tsc, 9);

    // HEADER tail (uninitialised padding in 2007) is kept and listed.
    let mut h = pattern(24, 3);
    h[0..4].copy_from_slice(&0x5438_1286u32.to_le_bytes());
    let body = RecordBody::decode(code::HEADER, &h);
    let RecordBody::Header(hd) = &body else {
        panic!()
    };
    assert_eq!(hd.magic, HVM_FILE_MAGIC);
    assert_eq!(
        hd.tail,
        Some(u32::from_le_bytes(h[20..24].try_into().unwrap()))
    );
    assert_eq!(body.fields().len(), 5);
    assert_eq!(RecordBody::decode(code::HEADER, &h[..20]).fields().len(), 4);

    // RTC 24: rtc_offset is signed at 16.
    let mut p = vec![0u8; 24];
    p[16..24].copy_from_slice(&(-5i64).to_le_bytes());
    let RecordBody::Rtc(r) = RecordBody::decode(code::RTC, &p) else {
        panic!()
    };
    assert_eq!(r.rtc_offset, -5);
}

#[test]
fn pic_and_ioapic_bitfields_are_listed() {
    // PIC: init_state 5, priority_add 0xA, poll + is_master, bit 7 set.
    let p = [1, 2, 3, 0x08, 0xA5, 0b1100_0010, 0x20, 1];
    let body = RecordBody::decode(code::PIC, &p);
    let f = body.fields();
    let get = |n: &str| f.iter().find(|x| x.name == n).unwrap().value.clone();
    assert_eq!(get("irq_base"), FieldValue::uint(8, 8));
    assert_eq!(get("init_state"), FieldValue::uint(5, 4));
    assert_eq!(get("priority_add"), FieldValue::uint(0xA, 4));
    assert_eq!(get("poll"), FieldValue::uint(1, 1));
    assert_eq!(get("readsel_isr"), FieldValue::uint(0, 1));
    assert_eq!(get("is_master"), FieldValue::uint(1, 1));
    assert_eq!(get("mode_bit7_unused"), FieldValue::uint(1, 1));
    assert_eq!(get("elcr"), FieldValue::uint(0x20, 8));
    assert_eq!(body.encode(), p);

    // IOAPIC pin 2: vector 0x31, lowest-priority (1), level, masked, dest 3.
    let mut p = vec![0u8; 400];
    let entry: u64 = 0x31 | (1 << 8) | (1 << 15) | (1 << 16) | (3 << 56);
    p[16 + 16..16 + 24].copy_from_slice(&entry.to_le_bytes());
    let body = RecordBody::decode(code::IOAPIC, &p);
    let f = body.fields();
    let get = |n: &str| f.iter().find(|x| x.name == n).unwrap().value.clone();
    assert_eq!(get("redirtbl[2].vector"), FieldValue::uint(0x31, 8));
    assert_eq!(get("redirtbl[2].delivery_mode"), FieldValue::uint(1, 3));
    assert_eq!(get("redirtbl[2].trig_mode"), FieldValue::uint(1, 1));
    assert_eq!(get("redirtbl[2].mask"), FieldValue::uint(1, 1));
    assert_eq!(get("redirtbl[2].dest_id"), FieldValue::uint(3, 8));
    assert_eq!(get("redirtbl[1].mask"), FieldValue::uint(0, 1));
    // 3 header fields + 48 pins × 11 bitfields.
    assert_eq!(f.len(), 3 + 48 * 11);
}

#[test]
fn seed_reset_blob_has_the_sizes_of_format_notes() {
    let one = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
    assert_eq!(one.len(), 3071);
    let two = seed_reset_blob(0x6FB, &[CpuSeed::power_on(), CpuSeed::power_on()]);
    assert_eq!(two.len(), 4455);

    let blob = HvmBlob::parse(&two).unwrap();
    assert!(blob.trailer.is_empty());
    let order: Vec<(u16, u16, usize)> = blob
        .records
        .iter()
        .map(|r| (r.typecode, r.instance, r.payload.len()))
        .collect();
    assert_eq!(
        order,
        vec![
            (1, 0, 24),
            (2, 0, 320),
            (2, 1, 320),
            (3, 0, 8),
            (3, 1, 8),
            (4, 0, 400),
            (5, 0, 16),
            (5, 1, 16),
            (6, 0, 1024),
            (6, 1, 1024),
            (7, 0, 16),
            (8, 0, 8),
            (9, 0, 4),
            (10, 0, 52),
            (11, 0, 15),
            (12, 0, 1048),
            (13, 0, 8),
            (0, 0, 0),
        ]
    );
    let typed = blob.decode_all();
    assert!(typed.iter().all(|r| !r.body.is_raw()));
    let RecordBody::Header(h) = &typed[0].body else {
        panic!()
    };
    assert_eq!(
        (h.magic, h.version, h.changeset, h.cpuid),
        (0x5438_1286, 1, 0, 0x6FB)
    );
    let RecordBody::LapicSeed(l0) = &typed[6].body else {
        panic!()
    };
    let RecordBody::LapicSeed(l1) = &typed[7].body else {
        panic!()
    };
    assert_eq!(
        (l0.apic_base_msr, l1.apic_base_msr),
        (0xFEE0_0900, 0xFEE0_0800)
    );
    let RecordBody::Pic(slave) = &typed[4].body else {
        panic!()
    };
    assert_eq!(slave.irq_base, 0x70);
    assert!(!slave.mode.is_master());
    let RecordBody::Ioapic(io) = &typed[5].body else {
        panic!()
    };
    assert_eq!(io.base_address, 0xFEC0_0000);
    assert!(io.redirtbl.iter().all(|e| e.masked()));
    let RecordBody::LapicRegs(regs) = &typed[9].body else {
        panic!()
    };
    assert_eq!(regs.reg(0x20), Some(1 << 24));

    assert_eq!(
        check_seed_load(&two, &SeedLoadOptions::default()),
        Vec::<Finding>::new()
    );
}

#[test]
fn builder_sorts_into_xen_order() {
    let want = seed_reset_blob(1, &[CpuSeed::power_on(), CpuSeed::power_on()]);
    let mut recs = seed_reset_records(1, &[CpuSeed::power_on(), CpuSeed::power_on()]);
    recs.reverse();
    recs.retain(|r| r.typecode() != code::END);
    let mut b = BlobBuilder::new();
    for r in recs {
        b.push(r);
    }
    assert_eq!(b.finish(), want);

    // Raw unknown record sorts by code; explicit END with payload stays last.
    let mut b = BlobBuilder::new();
    b.push_raw(0, 0, &[1, 2])
        .push_raw(30, 0, &[9])
        .push_raw(3, 1, &[0; 8])
        .push_raw(3, 0, &[0; 8])
        .push_raw(1, 0, &[0; 24]);
    let out = b.finish();
    let parsed = HvmBlob::parse(&out).unwrap();
    let order: Vec<(u16, u16)> = parsed
        .records
        .iter()
        .map(|r| (r.typecode, r.instance))
        .collect();
    assert_eq!(order, vec![(1, 0), (3, 0), (3, 1), (30, 0), (0, 0)]);
    assert_eq!(parsed.records[4].payload, &[1, 2]);
}

fn seed_blob() -> Vec<u8> {
    seed_reset_blob(0x6FB, &[CpuSeed::power_on()])
}

/// Offsets of records in the 1-vCPU seed blob.
fn offset_of(blob: &[u8], typecode: u16, instance: u16) -> usize {
    HvmBlob::parse(blob)
        .unwrap()
        .records
        .iter()
        .find(|r| r.typecode == typecode && r.instance == instance)
        .unwrap()
        .offset as usize
}

fn rules_of(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|x| x.rule).collect()
}

fn replace_record(blob: &[u8], typecode: u16, instance: u16, new: &[u8]) -> Vec<u8> {
    let parsed = HvmBlob::parse(blob).unwrap();
    let mut out = Vec::new();
    for r in &parsed.records {
        if r.typecode == typecode && r.instance == instance {
            out.extend_from_slice(new);
        } else {
            out.extend(raw(r.typecode, r.instance, r.payload));
        }
    }
    out
}

fn insert_before_end(blob: &[u8], rec: &[u8]) -> Vec<u8> {
    let mut out = blob[..blob.len() - 8].to_vec();
    out.extend_from_slice(rec);
    out.extend_from_slice(&blob[blob.len() - 8..]);
    out
}

#[test]
fn seed_rules_fire_on_crafted_blobs() {
    let good = seed_blob();
    let o = SeedLoadOptions::default();
    let check = |b: &[u8], o: &SeedLoadOptions| check_seed_load(b, o);

    // 32-bit Xen wants a 20-byte HEADER.
    let w32 = SeedLoadOptions {
        xen_word: WordSize::W32,
        ..o
    };
    let f = check(&good, &w32);
    assert_eq!(rules_of(&f), vec!["seed.hvm.header-length"]);
    assert_eq!(f[0].offset, 4);
    let short_header = replace_record(&good, 1, 0, &raw(1, 0, &good[8..28]));
    assert!(check(&short_header, &w32).is_empty());
    assert_eq!(
        rules_of(&check(&short_header, &o)),
        vec!["seed.hvm.header-length"]
    );

    // HEADER not first.
    let mut b = good.clone();
    b[0] = 2;
    let f = check(&b, &o);
    assert_eq!(f[0].rule, "seed.hvm.header-first");
    assert_eq!(f[0].context.to_string(), "hvm record 0 › CPU › typecode");

    // Magic, version.
    let mut b = good.clone();
    b[8] ^= 1;
    b[12] = 2;
    assert_eq!(
        rules_of(&check(&b, &o)),
        vec!["seed.hvm.magic", "seed.hvm.version"]
    );
    assert_eq!(check(&b, &o)[1].offset, 12);

    // cpuid and changeset only warn.
    let f = check(
        &good,
        &SeedLoadOptions {
            host_cpuid: Some(0x906EA),
            host_changeset: Some(0xABC),
            ..o
        },
    );
    assert_eq!(rules_of(&f), vec!["seed.hvm.cpuid", "seed.hvm.changeset"]);
    assert!(f.iter().all(|x| x.severity == Severity::Warning));
    assert!(check(
        &good,
        &SeedLoadOptions {
            host_cpuid: Some(0x6FB),
            host_changeset: Some(0),
            ..o
        }
    )
    .is_empty());

    // Typecode beyond 13, a second HEADER.
    let b = insert_before_end(&good, &raw(14, 0, &[0; 240]));
    let f = check(&b, &o);
    assert_eq!(rules_of(&f), vec!["seed.hvm.typecode-range"]);
    assert_eq!(f[0].offset as usize, good.len() - 8);
    let b = insert_before_end(&good, &raw(1, 0, &good[8..32]));
    assert_eq!(rules_of(&check(&b, &o)), vec!["seed.hvm.no-handler"]);

    // Lengths must be exact: PIT 56 (the 3.1 size) is refused.
    let pit = offset_of(&good, 10, 0);
    let b = replace_record(&good, 10, 0, &raw(10, 0, &[0; 56]));
    let f = check(&b, &o);
    assert_eq!(rules_of(&f), vec!["seed.hvm.exact-length"]);
    assert_eq!(f[0].offset as usize, pit + 4);
    assert!(f[0].message.contains("3.1"), "{}", f[0].message);

    // vCPU instances: 33 > 32, 32 off by one, 1 with a 1-vCPU domain.
    for (inst, nr) in [(33u16, None), (32, None), (1, Some(1))] {
        let cpu = offset_of(&good, 2, 0);
        let mut b = good.clone();
        b[cpu + 2..cpu + 4].copy_from_slice(&inst.to_le_bytes());
        let f = check(&b, &SeedLoadOptions { nr_vcpus: nr, ..o });
        assert_eq!(rules_of(&f), vec!["seed.hvm.vcpu-instance"], "{inst}");
        assert_eq!(f[0].offset as usize, cpu + 2);
    }
    let mut b = good.clone();
    let cpu = offset_of(&good, 2, 0);
    b[cpu + 2] = 31;
    assert!(check(&b, &o).is_empty());

    // PIC instance 2.
    let pic = offset_of(&good, 3, 1);
    let mut b = good.clone();
    b[pic + 2] = 2;
    assert_eq!(rules_of(&check(&b, &o)), vec!["seed.hvm.pic-instance"]);

    // No END; a payload running past the end; bytes after END.
    let f = check(&good[..good.len() - 8], &o);
    assert_eq!(rules_of(&f), vec!["seed.hvm.missing-end"]);
    assert_eq!(f[0].offset as usize, good.len() - 8);
    let f = check(&good[..good.len() - 12], &o);
    assert_eq!(rules_of(&f), vec!["seed.hvm.truncated"]);
    let mut b = good.clone();
    b.extend([1, 2, 3]);
    let f = check(&b, &o);
    assert_eq!(rules_of(&f), vec!["seed.hvm.trailing-bytes"]);
    assert_eq!(f[0].severity, Severity::Info);
    assert!(check(&[], &o)[0].rule == "seed.hvm.header-first");
}

#[test]
fn hostile_lengths_fail_fast_in_rules() {
    let good = seed_blob();
    let rtc = offset_of(&good, 11, 0);
    let mut b = good.clone();
    b[rtc + 4..rtc + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let f = check_seed_load(&b, &SeedLoadOptions::default());
    let last = f.last().unwrap();
    assert_eq!(last.rule, "seed.hvm.truncated");
    assert_eq!(last.offset as usize, rtc + 4);
    let f = check_current_load(&b, &CurrentLoadOptions::default());
    let last = f.last().unwrap();
    assert_eq!(last.rule, "xen.hvm.truncated");
    assert_eq!(last.offset as usize, rtc + 4);
    let e = HvmBlob::parse(&b).unwrap_err();
    assert_eq!(e.offset as usize, rtc + 4);
    assert_eq!(e.context.to_string(), "hvm record 11 › RTC › length");
}

/// A blob as current Xen (HEAD) would write it for one vCPU.
fn current_blob() -> Vec<u8> {
    let mut b = BlobBuilder::new();
    let mut header = vec![0u8; 24];
    header[0..4].copy_from_slice(&HVM_FILE_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&1u32.to_le_bytes());
    header[20..24].copy_from_slice(&2_000_000u32.to_le_bytes());
    b.push_raw(code::HEADER, 0, &header);
    for (t, len) in [
        (code::CPU, 1032),
        (code::LAPIC, 32),
        (code::LAPIC_REGS, 1024),
        (code::MTRR, 240),
        (code::VIRIDIAN_VCPU, 216),
        (code::VMCE_VCPU, 32),
        (code::TSC_ADJUST, 8),
        (code::IOAPIC, 400),
        (code::PCI_IRQ, 16),
        (code::ISA_IRQ, 8),
        (code::PCI_LINK, 8),
        (code::PIT, 56),
        (code::RTC, 24),
        (code::HPET, 1048),
        (code::PMTIMER, 8),
        (code::VIRIDIAN_DOMAIN, 32),
    ] {
        b.push_raw(t, 0, &pattern(len, t as u8));
    }
    b.push_raw(code::PIC, 0, &[0; 8])
        .push_raw(code::PIC, 1, &[0; 8]);
    let mut xsave = vec![0u8; 600];
    xsave[8..16].copy_from_slice(&3u64.to_le_bytes());
    xsave[16..24].copy_from_slice(&7u64.to_le_bytes());
    xsave[24 + 512..24 + 520].copy_from_slice(&3u64.to_le_bytes());
    b.push_raw(code::CPU_XSAVE, 0, &xsave);
    let mut msr = 1u32.to_le_bytes().to_vec();
    msr.extend([0; 4]);
    msr.extend(0x48u32.to_le_bytes());
    msr.extend([0; 4]);
    msr.extend(5u64.to_le_bytes());
    b.push_raw(code::CPU_MSR, 0, &msr);
    b.finish()
}

#[test]
fn current_rules_accept_a_current_blob() {
    let good = current_blob();
    let parsed = HvmBlob::parse(&good).unwrap();
    // HEADER, 16 fixed-size types, 2 PICs, CPU_XSAVE, CPU_MSR, END.
    assert_eq!(parsed.records.len(), 22);
    assert!(parsed.decode_all().iter().all(|r| !r.body.is_raw()));
    let o = CurrentLoadOptions {
        host_cpuid: Some(0),
        nr_vcpus: Some(1),
    };
    assert_eq!(check_current_load(&good, &o), Vec::<Finding>::new());
}

#[test]
fn current_rules_reject_a_seed_blob_naming_each_record() {
    let mut seed = seed_blob();
    // Non-zero 2007 padding in the header's tail.
    seed[8 + 20] = 0x55;
    let f = check_current_load(&seed, &CurrentLoadOptions::default());
    let mut got: Vec<(&str, String)> = f.iter().map(|x| (x.rule, x.context.to_string())).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "xen.hvm.cpu-layout",
                "hvm record 1 › CPU › length".to_string()
            ),
            (
                "xen.hvm.gtsc-khz",
                "hvm record 0 › HEADER › gtsc_khz".to_string()
            ),
            (
                "xen.hvm.strict-length",
                "hvm record 10 › PIT › length".to_string()
            ),
            (
                "xen.hvm.strict-length",
                "hvm record 9 › PCI_LINK › length".to_string()
            ),
            (
                "xen.hvm.zero-extended",
                "hvm record 11 › RTC › length".to_string()
            ),
            (
                "xen.hvm.zero-extended",
                "hvm record 5 › LAPIC › length".to_string()
            ),
        ]
    );
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    assert_eq!(errors, 3);
    // Zero padding: no gtsc warning.
    let f = check_current_load(&seed_blob(), &CurrentLoadOptions::default());
    assert!(!rules_of(&f).contains(&"xen.hvm.gtsc-khz"));
}

#[test]
fn current_rules_fire_on_crafted_blobs() {
    let good = current_blob();
    let o = CurrentLoadOptions::default();
    let one = |b: &[u8]| rules_of(&check_current_load(b, &o));

    // Header: not first, 20 bytes, bad magic/version, cpuid warning.
    let mut b = good.clone();
    b[0] = 3;
    assert_eq!(one(&b)[0], "xen.hvm.header-first");
    let b = replace_record(&good, 1, 0, &raw(1, 0, &good[8..28]));
    assert_eq!(one(&b), vec!["xen.hvm.header-length"]);
    let mut b = good.clone();
    b[9] ^= 0xFF;
    b[12] = 0;
    assert_eq!(one(&b), vec!["xen.hvm.magic", "xen.hvm.version"]);
    let f = check_current_load(
        &good,
        &CurrentLoadOptions {
            host_cpuid: Some(1),
            ..o
        },
    );
    assert_eq!(rules_of(&f), vec!["xen.hvm.cpuid"]);

    // Unknown types: 21 and a second HEADER.
    assert_eq!(
        one(&insert_before_end(&good, &raw(21, 0, &[0; 8]))),
        vec!["xen.hvm.unknown-type"]
    );
    assert_eq!(
        one(&insert_before_end(&good, &raw(1, 0, &good[8..32]))),
        vec!["xen.hvm.unknown-type"]
    );

    // Strict and zero-extend lengths.
    let b = replace_record(&good, code::MTRR, 0, &raw(code::MTRR, 0, &[0; 232]));
    assert_eq!(one(&b), vec!["xen.hvm.strict-length"]);
    let b = replace_record(
        &good,
        code::VMCE_VCPU,
        0,
        &raw(code::VMCE_VCPU, 0, &[0; 40]),
    );
    assert_eq!(one(&b), vec!["xen.hvm.zero-extend-length"]);
    let b = replace_record(
        &good,
        code::VMCE_VCPU,
        0,
        &raw(code::VMCE_VCPU, 0, &[0; 24]),
    );
    let f = check_current_load(&b, &o);
    assert_eq!(rules_of(&f), vec!["xen.hvm.zero-extended"]);
    assert_eq!(f[0].severity, Severity::Info);
    let b = replace_record(
        &good,
        code::VMCE_VCPU,
        0,
        &raw(code::VMCE_VCPU, 0, &[0; 20]),
    );
    assert_eq!(check_current_load(&b, &o)[0].severity, Severity::Warning);

    // CPU: compat 1016 and 1024 load, 1040 too long, 1008 mis-laid.
    let b = replace_record(&good, code::CPU, 0, &raw(code::CPU, 0, &[0; 1016]));
    let f = check_current_load(&b, &o);
    assert_eq!(rules_of(&f), vec!["xen.hvm.cpu-compat"]);
    assert_eq!(f[0].severity, Severity::Info);
    let b = replace_record(&good, code::CPU, 0, &raw(code::CPU, 0, &[0; 1024]));
    assert!(one(&b).is_empty());
    let b = replace_record(&good, code::CPU, 0, &raw(code::CPU, 0, &[0; 1040]));
    assert_eq!(one(&b), vec!["xen.hvm.zero-extend-length"]);
    let b = replace_record(&good, code::CPU, 0, &raw(code::CPU, 0, &[0; 1008]));
    assert_eq!(one(&b), vec!["xen.hvm.cpu-layout"]);

    // CPU_XSAVE: too short; xstate_bv outside xcr0_accum; xcr0 without x87.
    let xs = offset_of(&good, code::CPU_XSAVE, 0);
    let b = replace_record(
        &good,
        code::CPU_XSAVE,
        0,
        &raw(code::CPU_XSAVE, 0, &[0; 599]),
    );
    assert_eq!(one(&b), vec!["xen.hvm.xsave-length"]);
    let mut b = good.clone();
    b[xs + 8 + 24 + 512] = 0xF;
    assert_eq!(one(&b), vec!["xen.hvm.xsave-state"]);
    let mut b = good.clone();
    b[xs + 8 + 8] = 2;
    assert_eq!(one(&b), vec!["xen.hvm.xsave-state"]);

    // CPU_MSR: empty, count mismatch, reserved bits.
    let msr = offset_of(&good, code::CPU_MSR, 0);
    let b = replace_record(&good, code::CPU_MSR, 0, &raw(code::CPU_MSR, 0, &[0; 8]));
    assert_eq!(one(&b), vec!["xen.hvm.msr-length"]);
    let mut b = good.clone();
    b[msr + 8] = 2;
    assert_eq!(one(&b), vec!["xen.hvm.msr-length"]);
    let mut b = good.clone();
    b[msr + 8 + 12] = 1;
    let f = check_current_load(&b, &o);
    assert_eq!(rules_of(&f), vec!["xen.hvm.msr-reserved"]);
    assert_eq!(f[0].offset as usize, msr + 8 + 12);

    // Instances.
    let lapic = offset_of(&good, code::LAPIC, 0);
    let mut b = good.clone();
    b[lapic + 2] = 4;
    let f = check_current_load(
        &b,
        &CurrentLoadOptions {
            nr_vcpus: Some(2),
            ..o
        },
    );
    assert_eq!(rules_of(&f), vec!["xen.hvm.vcpu-instance"]);
    let pic = offset_of(&good, code::PIC, 1);
    let mut b = good.clone();
    b[pic + 2] = 9;
    assert_eq!(one(&b), vec!["xen.hvm.pic-instance"]);

    // Framing.
    assert_eq!(one(&good[..good.len() - 8]), vec!["xen.hvm.missing-end"]);
    let mut b = good.clone();
    b.push(0);
    assert_eq!(one(&b), vec!["xen.hvm.trailing-bytes"]);
}

/// A record of either era: a known (typecode, length), or anything at all.
fn arb_record() -> impl Strategy<Value = (u16, u16, Vec<u8>)> {
    let known = (0..TYPED_SIZES.len(), any::<u16>(), any::<u8>()).prop_map(|(i, inst, seed)| {
        let (t, len) = TYPED_SIZES[i];
        (t, inst, pattern(len, seed))
    });
    let anything = (
        1u16..40,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    prop_oneof![known, anything]
}

proptest! {
    #[test]
    fn arbitrary_sequences_round_trip(
        recs in proptest::collection::vec(arb_record(), 0..12),
        trailer in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes = Vec::new();
        for (t, i, p) in &recs {
            bytes.extend(raw(*t, *i, p));
        }
        bytes.extend(raw(0, 0, &[]));
        bytes.extend(&trailer);

        let blob = HvmBlob::parse(&bytes).unwrap();
        prop_assert_eq!(blob.records.len(), recs.len() + 1);
        for (r, (t, i, p)) in blob.records.iter().zip(&recs) {
            prop_assert_eq!((r.typecode, r.instance, r.payload), (*t, *i, p.as_slice()));
        }
        prop_assert_eq!(blob.trailer, trailer.as_slice());
        prop_assert_eq!(blob.encode(), bytes.clone());

        // Through the typed form and back.
        let typed = blob.decode_all();
        prop_assert_eq!(encode_records(&typed, blob.trailer), bytes.clone());
        for (r, t) in blob.records.iter().zip(&typed) {
            prop_assert_eq!(OwnedRecord::from(t), r.to_owned_record());
        }
    }

    #[test]
    fn parsing_and_rules_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = HvmBlob::parse(&bytes);
        let _ = check_seed_load(&bytes, &SeedLoadOptions::default());
        let _ = check_current_load(&bytes, &CurrentLoadOptions { host_cpuid: Some(1), nr_vcpus: Some(1) });
    }
}

//! Damaged images are diagnosed where the damage is (issue 11, item 2).
//!
//! A 64-bit-toolstack seed image with several batches has one field broken
//! at a time. Detection must still read it with 64-bit words, and the first
//! error of `hvm-inspect validate` (the library entry point the binary
//! calls) and of `hvm-restore-check` must sit at the damaged bytes and name
//! the damaged field. Before detection preferred the reading that explains
//! the most, each of these was read as a 32-bit stream without max_pfn that
//! ends at byte 8.

use hvm_format::image::{open_slice, OpenOptions};
use hvm_format::stream::{Item, SliceReader};
use hvm_format::WordSize;
use hvm_inspect::report::validate;
use hvm_inspect::Input;
use hvm_tests::golden::{generate, HvmEra, PassSpec, Spec};

/// Offsets of the seed image's fields, from reading it with the right word
/// size forced (independently of detection).
#[derive(Debug, Default)]
struct Layout {
    batches: Vec<u64>,
    end: u64,
    nr_vcpus: u64,
    vcpus: Vec<u64>,
    blob: u64,
}

/// A 4 MiB guest: max_pfn 0x3FF fits a batch count, so a 32-bit reading
/// without max_pfn can run on through the 64-bit stream. That is the shape
/// the old detection misread (issue 11 reproduced it with `hvm-save --sim
/// --memory 4`).
fn spec(passes: usize) -> Spec {
    Spec {
        name: "damaged-seed64",
        word: WordSize::W64,
        memory_mib: 4,
        vcpus: 2,
        // Every pass sends every page: one full batch per pass.
        passes: vec![
            PassSpec {
                modulus: 1,
                residue: 0,
            };
            passes
        ],
        xtab: vec![],
        verify: false,
        xend: false,
        era: HvmEra::Seed,
        seed: 11,
    }
}

/// Three passes of one batch each: damage to the last batch is 7.7 MiB in.
fn seed_image() -> Vec<u8> {
    generate(&spec(3)).bytes
}

fn layout(img: &[u8]) -> Layout {
    let mut l = Layout::default();
    let mut r = SliceReader::new(img, WordSize::W64, 0);
    while let Some(item) = r.next().expect("the seed image reads") {
        match item {
            Item::Batch(b) => l.batches.push(b.offset),
            Item::End { offset } => l.end = offset,
            Item::VcpuCount { offset, .. } => l.nr_vcpus = offset,
            Item::Vcpu(v) => l.vcpus.push(v.offset),
            Item::HvmBlob(h) => l.blob = h.offset,
            _ => {}
        }
    }
    l
}

fn put_u32(img: &mut [u8], at: u64, v: u32) {
    let at = at as usize;
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// `hvm-inspect validate` of `img` as a file: word size and first error.
fn validate_file(img: &[u8]) -> (Option<u32>, Option<hvm_format::rules::Finding>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), img).unwrap();
    let input = Input::open(f.path().to_str().unwrap()).unwrap();
    let v = validate(
        input,
        OpenOptions::default(),
        Default::default(),
        &hvm_inspect::input::no_progress,
    )
    .unwrap();
    let first = v
        .verdict
        .findings
        .iter()
        .find(|f| f.severity == hvm_format::rules::Severity::Error)
        .cloned();
    (v.word_bits, first)
}

/// One damaged-field class: where to write what, and the first error
/// expected there.
struct Damage {
    name: &'static str,
    at: u64,
    value: u32,
    rule: &'static str,
    context: String,
}

fn damages(l: &Layout) -> Vec<Damage> {
    let last = l.batches.len() - 1;
    vec![
        Damage {
            name: "batch count 1025",
            at: l.batches[last],
            value: 1025,
            rule: "seed.batch.count-range",
            context: format!("batch {last} › count"),
        },
        Damage {
            name: "batch count -5",
            at: l.batches[last],
            value: (-5i32) as u32,
            rule: "seed.batch.negative-count",
            context: format!("batch {last} › count"),
        },
        Damage {
            name: "vcpu record size 5000",
            at: l.vcpus[1],
            value: 5000,
            rule: "stream.vcpu.size",
            context: "vcpu 1 › size".into(),
        },
        Damage {
            name: "huge nr_vcpus",
            at: l.nr_vcpus,
            value: 0x7FFF_FFFF,
            rule: "stream.structure",
            context: "nr_vcpus".into(),
        },
        Damage {
            name: "bad HVM header magic",
            // u32 blob length, then the HEADER record's 8-byte descriptor.
            at: l.blob + 4 + 8,
            value: 0xDEAD_BEEF,
            rule: "seed.hvm.magic",
            context: "hvm blob › hvm record 0 › HEADER › magic".into(),
        },
        Damage {
            name: "HVM blob length 0xFFFFFFF0",
            at: l.blob,
            value: 0xFFFF_FFF0,
            rule: "stream.oversized",
            context: "hvm blob › length".into(),
        },
    ]
}

/// Each class in the last batch of a three-batch image (7.7 MiB in) and in
/// the only batch of a one-batch image.
#[test]
fn each_damaged_field_is_diagnosed_at_its_bytes_with_64_bit_words() {
    let three = seed_image();
    let l = layout(&three);
    assert_eq!(l.batches.len(), 3, "{l:?}");
    assert!(l.batches[2] > 7 << 20, "damage must be MBs in: {l:?}");
    check_damages(&three);
    check_damages(&generate(&spec(1)).bytes);
}

fn check_damages(img: &[u8]) {
    let l = layout(img);
    for dmg in damages(&l) {
        let mut d = img.to_vec();
        put_u32(&mut d, dmg.at, dmg.value);
        let name = format!("{} ({} batches)", dmg.name, l.batches.len());
        // Detection itself.
        let (info, _) = open_slice(&d, OpenOptions::default()).unwrap();
        let det = &info.detection;
        assert_eq!(det.word, WordSize::W64, "{name}: {det:#?}");
        // `hvm-inspect validate`.
        let (bits, first) = validate_file(&d);
        let first = first.unwrap_or_else(|| panic!("{name}: no error"));
        assert_eq!(bits, Some(64), "{name}");
        assert_eq!(
            (first.offset, first.rule, first.context.to_string()),
            (dmg.at, dmg.rule, dmg.context.clone()),
            "{name}: {first:?}"
        );
        restore_check_agrees(&name, &d, dmg.at);
        assert!(
            det.evidence
                .iter()
                .any(|e| e.starts_with("rejected: 32-bit words")),
            "{name}: the evidence must say where the other readings stopped: {det:#?}"
        );
    }
}

/// `hvm-restore-check` opens images the same way (and `--resume` through
/// `open_slice` too): its first error is at the same bytes, from the mmap
/// and the pipe path alike.
#[cfg(target_os = "linux")]
fn restore_check_agrees(name: &str, img: &[u8], at: u64) {
    use hvm_restore_check::{check_read, check_slice, Options};
    let opts = Options {
        workers: 1,
        ..Options::default()
    };
    for (how, report) in [
        ("slice", check_slice(img, &opts).unwrap()),
        ("pipe", check_read(img, &opts).unwrap()),
    ] {
        assert!(!report.restorable, "{name} ({how})");
        let first = report
            .findings
            .iter()
            .find(|f| f.severity == hvm_format::rules::Severity::Error)
            .unwrap_or_else(|| panic!("{name} ({how}): no error"));
        assert_eq!(first.offset, at, "{name} ({how}): {first:?}");
    }
}

#[cfg(not(target_os = "linux"))]
fn restore_check_agrees(_: &str, _: &[u8], _: u64) {}

/// Every cut after the page data of a one-batch image: 64-bit words, and
/// the first error at the structure the cut falls in (the vCPU size field,
/// its context, the blob's length...), never at byte 8. Every cut in the
/// first 8 bytes of each structure, and every 61st byte inside them.
#[test]
fn every_truncation_after_the_page_data_is_read_with_64_bit_words() {
    let img = generate(&spec(1)).bytes;
    let l = layout(&img);
    assert_eq!(l.batches.len(), 1, "{l:?}");
    // Where a truncation error is reported: the field the cut falls in.
    let mut starts = vec![l.end, l.nr_vcpus];
    for v in &l.vcpus {
        starts.extend([*v, v + 4]);
    }
    starts.push(l.blob);
    let mut cuts = 0;
    for cut in l.end..img.len() as u64 {
        let want = *starts.iter().filter(|s| **s <= cut).max().unwrap();
        if cut - want >= 8 && cut % 61 != 0 {
            continue;
        }
        cuts += 1;
        let (bits, first) = validate_file(&img[..cut as usize]);
        let first = first.unwrap_or_else(|| panic!("cut {cut}: no error"));
        assert_eq!(bits, Some(64), "cut {cut}: {first:?}");
        assert!(
            matches!(first.rule, "stream.truncated" | "stream.oversized") && first.offset == want,
            "cut {cut}: expected a truncation at byte {want}, found {first:?}"
        );
    }
    assert!(cuts > 150, "{cuts}");
}

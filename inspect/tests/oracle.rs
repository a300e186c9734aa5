//! Xen's own tools as the oracle for `convert` (docs/format.md §9):
//!
//! * every golden image, converted to libxc, libxl and xl, passes
//!   `verify-stream-v2`, keeps its memory digest, and its HVM blob passes
//!   current Xen's load rules;
//! * 3.1–4.5 legacy images written by our legacy writer go through Xen's
//!   `convert-legacy-stream`, and our v2 reader reads its output back to the
//!   same memory digest, HVM blob and magic pfns — and to the same digest as
//!   our own `convert` of the same image.
//!
//! The tools are found under `$HVM_XEN_ORACLE` (default
//! `<workspace>/target/xen-oracle`, unpacked by
//! `scripts/install-xen-oracle.sh`). Without them each test prints a loud
//! SKIPPED line and passes.

use std::path::{Path, PathBuf};

use hvm_format::dialect::Dialect;
use hvm_format::hvm::load::{check_current_load, CurrentLoadOptions};
use hvm_format::hvm::translate::to_current;
use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::image::{open_any_read, OpenOptions};
use hvm_format::legacy::Writer;
use hvm_format::rules::Severity;
use hvm_format::stream::{vcpu_context_size, Element, Item, Layout};
use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
use hvm_inspect::convert::{convert, Target};
use hvm_inspect::input::no_progress;
use hvm_inspect::report::digest;
use hvm_inspect::Input;

use hvm_tests::oracle_or_skip;

fn memory_digest(path: &Path) -> (String, u64) {
    let (d, _verdict) = digest(
        Input::open(path.to_str().unwrap()).unwrap(),
        OpenOptions::default(),
        1,
        &no_progress,
    )
    .unwrap();
    (d.memory_sha256, d.pages)
}

/// The HVM blob and magic pfns of any image, read with our readers.
fn blob_and_magic(path: &Path) -> (Vec<u8>, Option<[u64; 3]>) {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let (_, mut r) = open_any_read(
        f,
        OpenOptions {
            len: Some(len),
            ..Default::default()
        },
    )
    .unwrap();
    let (mut blob, mut magic) = (Vec::new(), None);
    while let Some(e) = r.next_element().unwrap() {
        match e {
            Element::Item(Item::HvmBlob(h)) => blob = h.bytes.to_vec(),
            Element::MagicPfns(m) => magic = Some([m.ioreq, m.bufioreq, m.store]),
            _ => {}
        }
    }
    (blob, magic)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("golden")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hvm-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn converted_golden_images_pass_verify_stream_v2() {
    let o = oracle_or_skip!();
    let mut goldens: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    goldens.sort();
    assert!(goldens.len() >= 4, "{goldens:?}");
    for g in &goldens {
        let want = memory_digest(g);
        for (target, format) in [
            (Target::Libxc, "libxc"),
            (Target::Libxl, "libxl"),
            (Target::Xl, "xl"),
        ] {
            let name = g.file_stem().unwrap().to_string_lossy();
            let out = tmp(&format!("{name}.{format}"));
            let rep = convert(
                Input::open(g.to_str().unwrap()).unwrap(),
                &out,
                target,
                OpenOptions::default(),
            )
            .unwrap();
            let seed_cpu = hvm_format::hvm::HvmBlob::parse(&blob_and_magic(g).0)
                .unwrap()
                .of_type(hvm_format::hvm::code::CPU)
                .any(|r| r.payload.len() == 320);
            assert_eq!(
                rep.translations.iter().any(|t| t.contains("320 → 1032")),
                seed_cpu,
                "{rep:#?}"
            );
            let (code, log) = o.run(
                "verify-stream-v2",
                &["-v", "-f", format, "-i", out.to_str().unwrap()],
            );
            eprintln!("verify-stream-v2 -f {format} {name}: exit {code}");
            assert_eq!(code, 0, "{name} {format}:\n{log}");
            assert_eq!(memory_digest(&out), want, "{name} {format}");
            let (blob, magic) = blob_and_magic(&out);
            let findings = check_current_load(&blob, &CurrentLoadOptions::default());
            assert!(
                findings.iter().all(|f| f.severity != Severity::Error),
                "{name}: {findings:#?}"
            );
            assert!(magic.is_some(), "{name} {format}: HVM_PARAMS");
        }
    }
}

fn page(seed: u64) -> Vec<u8> {
    (0..PAGE_SIZE as u64)
        .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
        .collect()
}

/// A Xen 4.x HVM stream by our legacy writer: p2m_size, -2, batches of up
/// to 1024 pages (XTAB entries included), HVM-param chunks, TSC_INFO, the
/// magic pfns, a current-layout blob and `DeviceModelRecord0002`.
fn legacy_image(word: WordSize, device_model: &[u8]) -> (Vec<u8>, Vec<u8>) {
    legacy_image_with(word, device_model, None)
}

/// libxl's toolstack data (−18 payload, length prefix included): version 1
/// physmap entries, each name followed by the 4 padding bytes a 64-bit
/// libxl leaked.
fn toolstack(word: WordSize, entries: &[(u64, u64, u64, &str)]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&1u32.to_le_bytes());
    d.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for &(phys, start, size, name) in entries {
        for v in [phys, start, size] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        d.extend_from_slice(name.as_bytes());
        d.push(0);
        if word == WordSize::W64 {
            d.extend_from_slice(&[0xAB; 4]);
        }
    }
    let mut p = (d.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(&d);
    p
}

/// [`legacy_image`] with a −18 TOOLSTACK chunk before the terminator.
fn legacy_image_with(
    word: WordSize,
    device_model: &[u8],
    toolstack: Option<&[u8]>,
) -> (Vec<u8>, Vec<u8>) {
    let mut layout = Layout::of(Dialect::Legacy);
    layout.device_model = true;
    let mut w = Writer::new(Vec::new(), word, layout);
    w.leading_word(0x8000).unwrap();
    let mut vi = 1u32.to_le_bytes().to_vec();
    vi.extend_from_slice(&3u64.to_le_bytes());
    w.chunk(-2, &vi).unwrap();
    let pfns: Vec<u64> = (0..0x7000u64)
        .filter(|p| !(0xA0..0xC0).contains(p))
        .collect();
    for (n, chunk) in pfns.chunks(1000).enumerate() {
        let mut entries: Vec<PfnEntry> = chunk.iter().map(|&p| PfnEntry::page(p)).collect();
        entries.push(PfnEntry::xtab(0x7100 + n as u64));
        let pages: Vec<Vec<u8>> = chunk.iter().map(|&p| page(p * 7 + 1)).collect();
        let refs: Vec<&[u8]> = pages.iter().map(|p| &p[..]).collect();
        w.batch(&entries, &refs).unwrap();
    }
    let param = |v: u64| {
        let mut b = vec![0u8; 12];
        b[4..].copy_from_slice(&v.to_le_bytes());
        b
    };
    w.chunk(-3, &param(0xFEFF_D000)).unwrap();
    w.chunk(-4, &param(0xFEFF_A000)).unwrap();
    w.chunk(-11, &param(1)).unwrap();
    let mut tsc = vec![0u8; 20];
    tsc[12..16].copy_from_slice(&2_400_000u32.to_le_bytes());
    w.chunk(-7, &tsc).unwrap();
    if let Some(t) = toolstack {
        w.chunk(-18, t).unwrap();
    }
    w.end().unwrap();
    w.magic_pfns(0x7FFF, 0x7FFD, 0x7FFE).unwrap();
    let regs = VcpuRegisters {
        rax: 42,
        rip: 0x10_0000,
        ..Default::default()
    };
    let ctxs: Vec<VcpuContext> = (0..2)
        .map(|_| VcpuContext::from_registers(word, &regs).unwrap())
        .collect();
    assert_eq!(ctxs[0].size(), vcpu_context_size(word) as usize);
    let cpus = [CpuSeed::power_on(), CpuSeed::power_on()];
    let blob = to_current(&seed_reset_blob(0x6FB, &cpus), &ctxs)
        .unwrap()
        .blob;
    w.hvm_blob(&blob).unwrap();
    w.device_model(device_model).unwrap();
    (w.finish().unwrap(), blob)
}

#[test]
fn convert_legacy_stream_reads_our_legacy_writer_and_we_read_its_output() {
    let o = oracle_or_skip!();
    let qevm = b"QEVM\0\0\0\x01\x03cpu\0\0\0\0\0\0\0\x01\0\0\0\0".to_vec();
    for word in [WordSize::W64, WordSize::W32] {
        let (img, blob) = legacy_image(word, &qevm);
        let src = tmp(&format!("legacy{}.img", word.bits()));
        std::fs::write(&src, &img).unwrap();
        let want = memory_digest(&src);
        assert_eq!(want.1, 0x7000 - 0x20, "pages of the legacy image");
        let w = word.bits().to_string();
        for (fmt, extra) in [("libxc", vec![]), ("libxl", vec!["-f", "libxl"])] {
            let out = tmp(&format!("xen-{fmt}-{w}.v2"));
            let mut args = vec![
                "-v",
                "-i",
                src.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "-w",
                &w,
                "-g",
                "hvm",
            ];
            args.extend(extra.iter());
            let (code, log) = o.run("convert-legacy-stream", &args);
            eprintln!("convert-legacy-stream -w {w} ({fmt}): exit {code}");
            assert_eq!(code, 0, "{log}");
            let (code, log) = o.run(
                "verify-stream-v2",
                &["-f", fmt, "-i", out.to_str().unwrap()],
            );
            assert_eq!(code, 0, "{log}");
            // Our v2 reader: same memory, same HVM records, same magic pfns.
            assert_eq!(memory_digest(&out), want, "{fmt} {w}");
            let (got_blob, magic) = blob_and_magic(&out);
            assert_eq!(got_blob, blob, "{fmt} {w}");
            assert_eq!(magic, Some([0x7FFF, 0x7FFD, 0x7FFE]), "{fmt} {w}");
            // And our own converter agrees on the memory.
            let ours = tmp(&format!("ours-{fmt}-{w}.v2"));
            let target = if fmt == "libxl" {
                Target::Libxl
            } else {
                Target::Libxc
            };
            let rep = convert(
                Input::open(src.to_str().unwrap()).unwrap(),
                &ours,
                target,
                OpenOptions::default(),
            )
            .unwrap();
            assert_eq!(rep.dialect, Dialect::Legacy);
            assert_eq!(rep.xtab_dropped, 29, "{rep:#?}");
            assert!(
                rep.hvm_params.contains(&(12, 0xFEFF_D000)) && rep.hvm_params.contains(&(9, 1)),
                "{rep:#?}"
            );
            let (code, log) = o.run(
                "verify-stream-v2",
                &["-f", fmt, "-i", ours.to_str().unwrap()],
            );
            assert_eq!(code, 0, "ours {fmt} {w}: {log}");
            assert_eq!(memory_digest(&ours), want, "ours {fmt} {w}");
        }
    }
}

#[test]
fn convert_legacy_stream_refuses_the_seed_dialect_which_we_convert() {
    let o = oracle_or_skip!();
    let g = golden_dir().join("seed64-nonlive.img");
    let out = tmp("seed-by-xen.v2");
    let (code, _) = o.run(
        "convert-legacy-stream",
        &[
            "-i",
            g.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-w",
            "64",
            "-g",
            "hvm",
        ],
    );
    eprintln!("convert-legacy-stream on the seed dialect: exit {code}");
    assert_ne!(
        code, 0,
        "docs/format.md §7.4: Xen's converter cannot read the seed"
    );
}

/// v2 → v2: every golden image, converted to every framing and reframed
/// into every other, passes
/// `verify-stream-v2`, keeps the memory digest, the HVM blob and the magic
/// pfns byte for byte (the libxc records are copied, not rewritten).
#[test]
fn reframed_v2_images_pass_verify_stream_v2() {
    let o = oracle_or_skip!();
    let formats = [
        (Target::Libxc, "libxc"),
        (Target::Libxl, "libxl"),
        (Target::Xl, "xl"),
    ];
    // Every golden image, whatever is added later: the README's claim is
    // about all of them.
    let mut goldens: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".img"))
        .collect();
    goldens.sort();
    assert_eq!(goldens.len(), 4, "{goldens:?}");
    for golden in &goldens {
        let g = golden_dir().join(golden);
        let want = memory_digest(&g);
        for (from, from_name) in formats {
            let src = tmp(&format!("{golden}.{from_name}"));
            convert(
                Input::open(g.to_str().unwrap()).unwrap(),
                &src,
                from,
                OpenOptions::default(),
            )
            .unwrap();
            let (blob, magic) = blob_and_magic(&src);
            for (to, to_name) in formats {
                let out = tmp(&format!("{golden}.{from_name}.{to_name}"));
                let rep = convert(
                    Input::open(src.to_str().unwrap()).unwrap(),
                    &out,
                    to,
                    OpenOptions::default(),
                )
                .unwrap();
                assert!(rep.translations[0].contains("copied unchanged"), "{rep:#?}");
                let (code, log) = o.run(
                    "verify-stream-v2",
                    &["-v", "-f", to_name, "-i", out.to_str().unwrap()],
                );
                assert_eq!(code, 0, "{golden} {from_name} → {to_name}:\n{log}");
                assert_eq!(
                    memory_digest(&out),
                    want,
                    "{golden} {from_name} → {to_name}"
                );
                assert_eq!(blob_and_magic(&out), (blob.clone(), magic));
            }
        }
    }
}

/// libxl's physmap in a −18 TOOLSTACK chunk becomes the same
/// EMULATOR_XENSTORE_DATA record, byte for byte, in our `convert --to libxl`
/// and in Xen's `convert-legacy-stream -f libxl`, for both toolstack word
/// sizes (the 64-bit padding quirk included); libxc framing has no place
/// for it and our converter says so.
#[test]
fn toolstack_physmap_converts_as_xen_converts_it() {
    use hvm_format::v2::libxl::{LibxlItem, LibxlReader, LibxlRecord};
    let o = oracle_or_skip!();
    let qevm = b"QEVM\0\0\0\x03state".to_vec();
    let xenstore = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let mut r = LibxlReader::new(&bytes[..]).unwrap();
        let mut found = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            if let LibxlItem::Record {
                record: record @ LibxlRecord::EmulatorXenstoreData { .. },
                ..
            } = item
            {
                found.push(record.into_owned());
            }
        }
        found
    };
    for word in [WordSize::W64, WordSize::W32] {
        let ts = toolstack(
            word,
            &[
                (0xF000_0000, 0x7F80_0000, 0x80_0000, "vga.vram"),
                (0xF100_0000, 0x7F00_0000, 0x1_0000, "vga.rom"),
            ],
        );
        let (img, _) = legacy_image_with(word, &qevm, Some(&ts));
        let w = word.bits().to_string();
        let src = tmp(&format!("toolstack{w}.img"));
        std::fs::write(&src, &img).unwrap();
        let theirs = tmp(&format!("toolstack{w}.xen.libxl"));
        let (code, log) = o.run(
            "convert-legacy-stream",
            &[
                "-i",
                src.to_str().unwrap(),
                "-o",
                theirs.to_str().unwrap(),
                "-w",
                &w,
                "-g",
                "hvm",
                "-f",
                "libxl",
            ],
        );
        assert_eq!(code, 0, "{log}");
        let ours = tmp(&format!("toolstack{w}.ours.libxl"));
        let rep = convert(
            Input::open(src.to_str().unwrap()).unwrap(),
            &ours,
            Target::Libxl,
            OpenOptions::default(),
        )
        .unwrap();
        assert!(
            rep.translations
                .iter()
                .any(|t| t.contains("2 libxl physmap entries")),
            "{rep:#?}"
        );
        let (a, b) = (xenstore(&theirs), xenstore(&ours));
        assert_eq!(a.len(), 1, "Xen's output: {a:?}");
        assert_eq!(a, b, "{w}-bit");
        let LibxlRecord::EmulatorXenstoreData { data, .. } = &b[0] else {
            unreachable!()
        };
        assert!(
            data.starts_with(b"physmap/f0000000/start_addr\x007f800000\x00"),
            "{:?}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(memory_digest(&ours), memory_digest(&theirs));
        // libxc framing: refused, at the chunk, and nothing left behind.
        let libxc = tmp(&format!("toolstack{w}.ours.libxc"));
        let e = convert(
            Input::open(src.to_str().unwrap()).unwrap(),
            &libxc,
            Target::Libxc,
            OpenOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("-18 TOOLSTACK") && e.contains("--to libxl"),
            "{e}"
        );
        assert!(!libxc.exists());
    }
}

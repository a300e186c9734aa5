//! Every subcommand on every legacy dialect and envelope (xl and libvirt
//! headers of Xen ≤ 4.5 included): detection names the dialect and word
//! size without flags, and the reports see the dialect's own elements.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hvm_format::dialect::Dialect;
use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::legacy::libvirt::LibvirtHeader;
use hvm_format::legacy::{Tail, Writer};
use hvm_format::stream::{vcpu_context_size, Layout};
use hvm_format::v2::XlHeader;
use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
use serde_json::Value;

fn page(seed: u8) -> Vec<u8> {
    (0..PAGE_SIZE)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect()
}

/// The same guest memory (pfns 0, 0x11, 0x1FFF0) in `dialect`'s layout.
fn image(dialect: Dialect, word: WordSize, device_model: bool) -> Vec<u8> {
    let mut layout = Layout::of(dialect);
    layout.device_model = device_model;
    layout.shared_info_frame |= dialect == Dialect::Jan2007;
    let mut w = Writer::new(Vec::new(), word, layout);
    let chunked = matches!(dialect, Dialect::Legacy | Dialect::Apr2007VcpuMap);
    if layout.leading_word {
        w.leading_word(if chunked { 0x20000 } else { 0x1FFFF })
            .unwrap();
    }
    if chunked {
        let mut vi = 0u32.to_le_bytes().to_vec();
        vi.extend_from_slice(&1u64.to_le_bytes());
        w.chunk(-2, &vi).unwrap();
    }
    let (p1, p2, p3) = (page(3), page(5), page(7));
    w.batch(
        &[
            PfnEntry::page(0),
            PfnEntry::xtab(0x10),
            PfnEntry::page(0x11),
        ],
        &[&p1, &p2],
    )
    .unwrap();
    if dialect == Dialect::Legacy {
        let mut ident = vec![0u8; 12];
        ident[4..12].copy_from_slice(&0xFEFF_D000u64.to_le_bytes());
        w.chunk(-3, &ident).unwrap();
    }
    w.batch(&[PfnEntry::page(0x1FFF0)], &[&p3]).unwrap();
    w.end().unwrap();
    let ctx: Vec<u8> = (0..vcpu_context_size(word)).map(|i| i as u8).collect();
    let blob = seed_reset_blob(0x6FB, &[CpuSeed::power_on()]);
    // The layout decides which parts follow the terminator, and in what order.
    w.tail(&Tail {
        magic_pfns: (0x1FFFF, 0x1FFFD, 0x1FFFE),
        vcpus: &[&ctx],
        hvm_blob: &blob,
        shared_info_frame: 0xFEE,
        device_model: b"QEVM\0\0\0\x01",
    })
    .unwrap();
    w.finish().unwrap()
}

fn xl_legacy(stream: &[u8]) -> Vec<u8> {
    let mut h = XlHeader::with_json_config("{\"c_info\":{}}");
    h.mandatory_flags = XlHeader::FLAG_JSON;
    let mut v = h.to_bytes();
    v.extend_from_slice(stream);
    v
}

fn libvirt(stream: &[u8]) -> Vec<u8> {
    let h = LibvirtHeader {
        version: 2,
        unused: [0; 10],
        xml: b"<domain type='xen'><name>old</name></domain>\0".to_vec(),
    };
    let mut v = h.to_bytes();
    v.extend_from_slice(stream);
    v
}

struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("hvm-dialects-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
        .args(args)
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

const DIALECTS: [(Dialect, &str); 7] = [
    (Dialect::Seed, "seed"),
    (Dialect::Jan2007, "jan2007"),
    (Dialect::Mar2007, "mar2007"),
    (Dialect::Apr2007MagicPfns, "apr2007-magic-pfns"),
    (Dialect::Apr2007NoMaxPfn, "apr2007-no-max-pfn"),
    (Dialect::Apr2007VcpuMap, "apr2007-vcpu-map"),
    (Dialect::Legacy, "legacy"),
];

#[test]
fn every_subcommand_reads_every_dialect() {
    let dir = Dir::new("all");
    let reference = dir.write("seed.img", &image(Dialect::Seed, WordSize::W64, false));
    let want_digest = json(&run(&["--json", "digest", &reference]));
    // LiME: the pages and their addresses, compactly (no registers).
    let reference_lime = dir.0.join("seed.lime");
    let o = run(&[
        "extract",
        &reference,
        "--lime",
        reference_lime.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(2), "{o:?}");
    let want_lime = std::fs::read(&reference_lime).unwrap();
    assert_eq!(
        want_lime.len(),
        3 * (32 + PAGE_SIZE),
        "three runs of one page"
    );
    for (dialect, tag) in DIALECTS {
        for word in [WordSize::W64, WordSize::W32] {
            let f = dir.write(
                &format!("{tag}-{}.img", word.bits()),
                &image(dialect, word, false),
            );
            let o = run(&["--json", "summary", &f]);
            assert_ne!(o.status.code(), Some(2), "{tag}: {o:?}");
            let s = json(&o);
            assert_eq!(s["dialect"]["word_bits"], word.bits(), "{tag}: {s:#}");
            assert_eq!(s["pages"], 3, "{tag}: {s:#}");
            assert!(s["stream_error"].is_null(), "{tag}: {s:#}");
            assert!(s["hvm"].is_object(), "{tag}: {s:#}");
            if dialect == Dialect::Legacy {
                assert_eq!(s["chunks"][0]["name"], "VCPU_INFO", "{s:#}");
                assert_eq!(s["chunks"][1]["value"], 0xFEFF_D000u64, "{s:#}");
            }
            if dialect != Dialect::Seed
                && dialect != Dialect::Jan2007
                && dialect != Dialect::Mar2007
            {
                assert_eq!(s["magic_pfns"]["store"], 0x1FFFE, "{tag}: {s:#}");
            }
            // The same memory in every dialect: the same digest.
            let d = json(&run(&["--json", "digest", &f]));
            assert_eq!(d["memory"], want_digest["memory"], "{tag}: {d:#}");
            for args in [
                vec!["validate", f.as_str()],
                vec!["show", "hvm", f.as_str()],
                vec!["show", "vcpu", f.as_str()],
                vec!["show", "pages", f.as_str()],
                vec!["show", "page", "0x11", f.as_str()],
            ] {
                let o = run(&args);
                assert_ne!(o.status.code(), Some(2), "{tag} {args:?}: {o:?}");
                assert!(!o.stdout.is_empty(), "{tag} {args:?}");
            }
            let o = run(&["--json", "diff", &reference, &f]);
            let d = json(&o);
            for k in ["changed", "only_a", "only_b"] {
                assert_eq!(d["memory"][k]["pages"], 0, "{tag} {k}: {d:#}");
            }
            assert_eq!(d["memory"]["same"], 3, "{tag}: {d:#}");
            // The same memory extracted: byte for byte the seed image's.
            let lime = dir.0.join(format!("{tag}-{}.lime", word.bits()));
            let o = run(&["extract", &f, "--lime", lime.to_str().unwrap()]);
            assert_ne!(o.status.code(), Some(2), "{tag}: {o:?}");
            assert!(std::fs::read(&lime).unwrap() == want_lime, "{tag}: extract");
        }
    }
}

#[test]
fn xl_and_libvirt_headers_of_xen_4_5() {
    let dir = Dir::new("xl");
    let stream = image(Dialect::Legacy, WordSize::W64, true);
    for (name, bytes) in [("xl", xl_legacy(&stream)), ("libvirt", libvirt(&stream))] {
        let f = dir.write(&format!("{name}.img"), &bytes);
        let s = json(&run(&["--json", "summary", &f]));
        assert_eq!(s["dialect"]["dialect"], "legacy", "{name}: {s:#}");
        assert_eq!(s["device_model"]["qevm"], true, "{name}: {s:#}");
        assert!(s["trailing"].is_null(), "{name}: {s:#}");
        assert_eq!(s["pages"], 3, "{name}: {s:#}");
        // From standard input too.
        let o = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
            .args(["--json", "summary", "-"])
            .stdin(std::fs::File::open(Path::new(&f)).unwrap())
            .output()
            .unwrap();
        assert_eq!(json(&o)["device_model"]["len"], 8, "{name}");
    }
}

#[test]
fn every_subcommand_reads_v2_in_every_framing() {
    let dir = Dir::new("v2");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/seed64-live-xend.img");
    let golden = golden.to_str().unwrap();
    let want = json(&run(&["--json", "digest", golden]));
    let old = json(&run(&["--json", "summary", golden]));
    let mut dm_len = None;
    for to in ["libxc", "libxl", "xl"] {
        let out = dir.0.join(format!("c.{to}"));
        let out = out.to_str().unwrap();
        let o = run(&["--json", "convert", golden, "-o", out, "--to", to]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let c = json(&o);
        assert!(c["translations"].as_array().unwrap().len() >= 6, "{c:#}");
        let s = json(&run(&["--json", "summary", out]));
        assert_eq!(s["dialect"]["dialect"], "v2", "{to}: {s:#}");
        assert_eq!(s["verdict"]["valid"], true, "{to}: {s:#}");
        assert_eq!(s["verdict"]["current_xen_loads"], true, "{to}: {s:#}");
        assert_eq!(s["pages"], old["pages"], "{to}");
        assert_eq!(s["distinct_pfns"], old["distinct_pfns"], "{to}");
        // libxl framing carries the state as EMULATOR_CONTEXT; libxc
        // framing has no emulator record, so it follows END as
        // DeviceModelRecord0002 (as Xen's converter writes it) and is read
        // back from there.
        assert_eq!(s["device_model"]["qevm"], true, "{to}: {s:#}");
        assert_eq!(s["trailing"], Value::Null, "{to}: {s:#}");
        // The same state in every framing.
        let len = s["device_model"]["len"].as_u64().unwrap();
        assert!(len > 0, "{to}: {s:#}");
        assert_eq!(*dm_len.get_or_insert(len), len, "{to}");
        // Bytes after the image are an error at their offset, on the file
        // and through a pipe.
        let bytes = std::fs::read(out).unwrap();
        let junk = dir.write(&format!("junk.{to}"), &[&bytes[..], b"junk!"].concat());
        for path in [junk.as_str(), "-"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"));
            cmd.args(["--json", "validate", path]);
            let o = if path == "-" {
                cmd.stdin(std::fs::File::open(&junk).unwrap())
                    .output()
                    .unwrap()
            } else {
                cmd.output().unwrap()
            };
            assert_eq!(o.status.code(), Some(1), "{to} {path}: {o:?}");
            let v = json(&o);
            let f = v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["rule"] == "stream.trailing-bytes")
                .unwrap_or_else(|| panic!("{to} {path}: {v:#}"));
            assert_eq!(f["offset"], bytes.len() as u64, "{to} {path}: {f:#}");
        }
        let d = json(&run(&["--json", "digest", out]));
        assert_eq!(d["memory_sha256"], want["memory_sha256"], "{to}");
        let v = run(&["validate", out]);
        assert_eq!(v.status.code(), Some(0), "{to}: {v:?}");
        for args in [
            vec!["show", "hvm", out],
            vec!["show", "pages", out],
            vec!["show", "page", "0x10", out],
        ] {
            let o = run(&args);
            assert_eq!(o.status.code(), Some(0), "{to} {args:?}: {o:?}");
        }
        // Memory is the same; the CPU records changed layout, so diff says
        // "different" (exit 1) with no memory difference.
        let o = run(&["--json", "diff", golden, out]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let d = json(&o);
        for k in ["changed", "only_a", "only_b"] {
            assert_eq!(d["memory"][k]["pages"], 0, "{to} {k}: {d:#}");
        }
    }
}

/// `convert` of a v2 image re-frames it: the result is byte for byte what
/// converting the original legacy image straight into that framing gives
/// (xl output from a non-xl source aside: its header's config is new), on
/// files and through a pipe. What cannot be carried is an error that leaves
/// no output behind.
#[test]
fn convert_reframes_v2_between_framings() {
    let dir = Dir::new("reframe");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/seed64-live-xend.img");
    let golden = golden.to_str().unwrap();
    let fresh = |to: &str| {
        let out = dir.0.join(format!("fresh.{to}"));
        let o = run(&["convert", golden, "-o", out.to_str().unwrap(), "--to", to]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        std::fs::read(out).unwrap()
    };
    let framings = ["libxc", "libxl", "xl"];
    let direct: Vec<Vec<u8>> = framings.iter().map(|t| fresh(t)).collect();
    for (i, from) in framings.iter().enumerate() {
        let src = dir.write(&format!("src.{from}"), &direct[i]);
        for (j, to) in framings.iter().enumerate() {
            for path in [src.as_str(), "-"] {
                let out = dir.0.join(format!("{from}.{to}"));
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"));
                // The same output twice (file, then pipe): replacing it needs --force.
                cmd.args([
                    "convert",
                    path,
                    "-o",
                    out.to_str().unwrap(),
                    "--to",
                    to,
                    "--force",
                ]);
                if path == "-" {
                    cmd.stdin(std::fs::File::open(&src).unwrap());
                }
                let o = cmd.output().unwrap();
                assert_eq!(o.status.code(), Some(0), "{from} → {to} ({path}): {o:?}");
                let got = std::fs::read(&out).unwrap();
                if *to != "xl" || *from == "xl" {
                    assert!(got == direct[j], "{from} → {to} ({path}) differs");
                } else {
                    // Same libxl stream after a different xl header.
                    let tail = |b: &[u8]| {
                        b[b.windows(8).position(|w| w == b"LibxlFmt").unwrap()..].to_vec()
                    };
                    assert_eq!(tail(&got), tail(&direct[j]), "{from} → {to}");
                }
            }
        }
    }
    // Junk after a libxc END: refused at its offset, nothing left behind.
    let junk = dir.write("junk.libxc", &[&direct[0][..], b"junk!"].concat());
    let out = dir.0.join("junk.libxl");
    let o = run(&[
        "convert",
        &junk,
        "-o",
        out.to_str().unwrap(),
        "--to",
        "libxl",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("at byte {}", direct[0].len())),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_prefix_without_the_tail_and_a_round_first_word_reads_as_xen_4() {
    // More than the 8 MiB detection prefix, no -2 chunk: only the leading
    // round page count tells 3.1–4.5 from the seed.
    let dir = Dir::new("prefix");
    let mut layout = Layout::of(Dialect::Legacy);
    layout.device_model = true;
    let mut w = Writer::new(Vec::new(), WordSize::W64, layout);
    w.leading_word(0x1000).unwrap();
    let p = page(9);
    for b in 0..3u64 {
        let entries: Vec<PfnEntry> = (b * 1024..(b + 1) * 1024).map(PfnEntry::page).collect();
        let pages: Vec<&[u8]> = entries.iter().map(|_| &p[..]).collect();
        w.batch(&entries, &pages).unwrap();
    }
    w.end().unwrap();
    w.magic_pfns(0xFFF, 0xFFD, 0xFFE).unwrap();
    w.hvm_blob(&seed_reset_blob(0x6FB, &[CpuSeed::power_on()]))
        .unwrap();
    w.device_model(b"QEVM\0\0\0\x01").unwrap();
    let img = w.finish().unwrap();
    assert!(img.len() > 8 << 20);
    let f = dir.write("big.img", &img);
    let o = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
        .args(["--json", "summary", "-"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    let s = json(&o);
    assert_eq!(s["dialect"]["dialect"], "legacy", "{s:#}");
    assert_eq!(s["pages"], 3072, "{s:#}");
    // The record after the stream, which the prefix could not show, is
    // read as the device model, not as trailing bytes; the file agrees.
    assert_eq!(s["trailing"], Value::Null, "{s:#}");
    assert_eq!(s["device_model"]["len"], 8, "{s:#}");
    assert_eq!(s["device_model"]["qevm"], true, "{s:#}");
    let from_file = json(&run(&["--json", "summary", &f]));
    assert_eq!(from_file["device_model"], s["device_model"]);
    let v = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
        .args(["validate", "-"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    // A record cut short, or followed by junk, is an error at its offset.
    let cut = dir.write("cut.img", &img[..img.len() - 3]);
    let junk = dir.write("junk.img", &[&img[..], b"!!"].concat());
    for (path, at) in [(&cut, img.len() - 8), (&junk, img.len())] {
        let o = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
            .args(["--json", "summary", "-"])
            .stdin(std::fs::File::open(path).unwrap())
            .output()
            .unwrap();
        let s = json(&o);
        assert_eq!(s["stream_error"]["offset"], at as u64, "{path}: {s:#}");
    }
}

#[test]
fn validate_applies_the_v2_verifier_rules_to_v2_input() {
    let dir = Dir::new("v2bad");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/seed32-verify.img");
    let out = dir.0.join("c.libxl");
    let o = run(&[
        "convert",
        golden.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--to",
        "libxl",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mut bytes = std::fs::read(&out).unwrap();
    // libxl header 16 + LIBXC_CONTEXT record 8, image header 24, then the
    // domain header's reserved u16 at +6.
    let at = 16 + 8 + 24 + 6;
    assert_eq!(&bytes[16 + 8 + 8..16 + 8 + 12], b"XENF");
    bytes[at] = 1;
    let bad = dir.write("bad.libxl", &bytes);
    let o = run(&["--json", "validate", &bad]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v = json(&o);
    let hit = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["rule"] == "v2.domain.reserved" && f["offset"] == at as u64);
    assert!(hit, "{v:#}");
}

/// One verdict on typed entries: the 2007 restorer skips an L1TAB entry
/// (no data follows it), validate accepts it, and so must convert, which
/// drops it like XTAB. A pfn PAGE_DATA cannot carry is refused at the
/// input's entry, not at an offset into the output.
#[test]
fn convert_agrees_with_validate_on_typed_entries_and_names_input_offsets() {
    let dir = Dir::new("typed");
    let img = image(Dialect::Seed, WordSize::W64, false);
    let xtab = 0xF000_0010u64.to_le_bytes();
    let at = img.windows(8).position(|w| w == xtab).unwrap();
    let mut l1 = img.clone();
    l1[at..at + 8].copy_from_slice(&0x1000_0010u64.to_le_bytes());
    let l1 = dir.write("l1tab.img", &l1);
    let o = run(&["--json", "validate", &l1]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = dir.0.join("l1tab.libxc");
    let o = run(&["convert", &l1, "-o", out.to_str().unwrap(), "--to", "libxc"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 typed entries"),
        "{o:?}"
    );
    // pfn 0x11 (the entry after the XTAB one) moved above 2^28.
    let mut big = img.clone();
    big[at + 8..at + 16].copy_from_slice(&0x1_0000_0011u64.to_le_bytes());
    let big = dir.write("big.img", &big);
    let out = dir.0.join("big.libxc");
    let o = run(&[
        "convert",
        &big,
        "-o",
        out.to_str().unwrap(),
        "--to",
        "libxc",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("at byte {} ", at + 8)), "{err}");
    assert!(!out.exists());
}

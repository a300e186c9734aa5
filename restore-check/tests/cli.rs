//! The binary: exit codes, JSON, standard input, --expect, --memory.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{page, Img};
use hvm_format::digest::DigestBuilder;
use hvm_restore_check::Manifest;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvm-restore-check"))
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let o = bin().args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(&dir, "clean.img", &Img::simple(4, Img::ram(4)).build());
    let (code, out, _) = run(&[clean.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict:  restorable (exit 0)"), "{out}");

    let (code, out, _) = run(&[clean.as_os_str(), "--json".as_ref()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["restorable"], true);
    assert_eq!(v["replay"]["pfns_restored"], Img::ram(4).count());

    // Pfns above a 2 MiB configured guest: "pfn out of range".
    let (code, out, _) = run(&[clean.as_os_str(), "--memory".as_ref(), "2".as_ref()]);
    assert_eq!(code, 1);
    assert!(out.contains("seed.pfn.range"), "{out}");

    // Usage and I/O errors.
    let (code, _, err) = run(&["/nonexistent/image".as_ref()]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&[clean.as_os_str(), "--memory".as_ref(), "lots".as_ref()]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&[]);
    assert_eq!(code, 2);
    let junk = write(&dir, "bad.json", b"{\"version\": 1}");
    let (code, _, err) = run(&[clean.as_os_str(), "--expect".as_ref(), junk.as_os_str()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("manifest"), "{err}");
}

#[test]
fn expect_names_the_missed_pfn() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = Img::simple(4, Img::ram(4));
    img.passes.push(vec![(0x300, Some(page(0x300, 1)))]);
    let mut truth = img.final_memory();
    truth.insert(0x301, page(0x301, 1)); // dirtied, never resent
    let mut d = DigestBuilder::new();
    for (pfn, p) in &truth {
        d.page(*pfn, p);
    }
    let vc: Vec<&[u8]> = img.vcpus.iter().map(|v| v.as_slice()).collect();
    let m = Manifest::new(img.max_pfn, &d.finish().unwrap(), &vc, &img.blob)
        .with_page_digests(|pfn| truth.get(&pfn).map(|p| p.as_slice()));
    let image = write(&dir, "g.img", &img.build());
    let man = write(&dir, "g.img.manifest.json", m.to_json().as_bytes());
    let (code, out, _) = run(&[image.as_os_str(), "--expect".as_ref(), man.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pfn 0x301: content differs"), "{out}");
    assert!(out.contains("NOT the guest in the manifest"), "{out}");

    // The same manifest against the truth-complete image matches.
    img.passes[1].push((0x301, Some(page(0x301, 1))));
    let fixed = write(&dir, "f.img", &img.build());
    let (code, out, _) = run(&[fixed.as_os_str(), "--expect".as_ref(), man.as_os_str()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn standard_input_works() {
    let mut img = Img::simple(4, Img::ram(4));
    let bad = 0x222;
    let mut resend: Vec<(u64, Vec<u8>)> = img.final_memory().into_iter().collect();
    for (pfn, d) in &mut resend {
        if *pfn == bad {
            d[0] ^= 1;
        }
    }
    img.verify = Some(resend);
    let bytes = img.build();
    let mut child = bin()
        .args(["-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The checker may stop reading early on a broken image; ignore EPIPE.
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verify"]["mismatching_pfns"], serde_json::json!([bad]));
}

/// A migration v2 image is named as such, on a file and through a pipe,
/// with the tool that reads it; current Xen's verdict is "not checked",
/// not a refusal with no failing record.
#[test]
fn v2_images_are_named_and_pointed_elsewhere() {
    use hvm_format::v2::libxc::{DomainHeader, ImageHeader, PageDataEntry, RecordBody};
    let mut w =
        hvm_format::v2::Writer::new(Vec::new(), ImageHeader::new(3), DomainHeader::hvm(4, 17))
            .unwrap();
    w.record(&RecordBody::StaticDataEnd).unwrap();
    w.page_data(&[PageDataEntry::page(1)], &page(1, 0)).unwrap();
    let bytes = w.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "v2.libxc", &bytes);
    for stdin in [false, true] {
        let mut cmd = bin();
        cmd.arg(if stdin {
            "-".as_ref()
        } else {
            file.as_os_str()
        });
        cmd.arg("--json");
        if stdin {
            cmd.stdin(std::fs::File::open(&file).unwrap());
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["findings"][0]["rule"], "image.v2", "{v:#}");
        assert!(v["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("hvm-inspect validate"));
        assert_eq!(v["current_xen"]["checked"], false, "{v:#}");
        let text = bin().arg(&file).output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("current Xen: not checked"), "{text}");
    }
}

/// A side input is bounded like the image: `--expect /dev/zero` is refused
/// after the manifest limit, not read until memory runs out.
#[test]
fn an_endless_manifest_is_refused_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(&dir, "clean.img", &Img::simple(4, Img::ram(4)).build());
    let (code, _, err) = run(&[clean.as_os_str(), "--expect".as_ref(), "/dev/zero".as_ref()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("larger than 268435456 bytes"), "{err}");
}

/// The command line checks without materialising guest memory: a 64 MiB
/// guest's image is checked in far less than 64 MiB (peak RSS by
/// `/usr/bin/time`; without `--digest` the image's pages are not even read,
/// so the page cache does not count either).
#[test]
fn the_check_does_not_hold_guest_memory() {
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        println!("SKIPPED: /usr/bin/time not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = write(&dir, "g.img", &Img::simple(64, Img::ram(64)).build());
    let o = Command::new(time)
        .args(["-f", "maxrss=%M"])
        .arg(env!("CARGO_BIN_EXE_hvm-restore-check"))
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in {err}"));
    assert!(kib < 40 << 10, "peak RSS {kib} KiB for a 64 MiB guest");
}

/// A damaged image under `--resume` is a verdict about the image (exit 1,
/// with the check's report), never a bare "cannot resume" with exit 2.
/// Catches: resuming (or bailing out) before looking at the check's verdict.
#[test]
fn resume_of_a_damaged_image_is_refused_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let good = Img::simple(4, Img::ram(4)).build();
    let cut = write(&dir, "cut.img", &good[..good.len() / 2]);
    let (code, out, err) = run(&[cut.as_os_str(), "--resume".as_ref()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("NOT restorable"), "{out}");
    assert!(out.contains("resume: refused"), "{out}");
    let (code, out, _) = run(&[cut.as_os_str(), "--resume".as_ref(), "--json".as_ref()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["check"]["restorable"], false);
    assert_eq!(v["resume"]["resumed"], false);
}

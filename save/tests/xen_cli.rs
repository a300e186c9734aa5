//! `hvm-save --xen DOMID` where it cannot work: built without feature `xen`
//! it says how to get Xen support; built with it on a machine that is not
//! a Xen dom0 it says so. Either way: exit code 2, no panic, and nothing
//! left in the output directory (no image, no temporary file, no manifest).

use std::path::Path;
use std::process::Command;

fn run_xen_save(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hvm-save"))
        .args(["--xen", "1", "--live", "-o"])
        .arg(dir.join("guest.img"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_failure(code: i32, stderr: &str, dir: &Path, expect: &[&str]) {
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[cfg(not(feature = "xen"))]
#[test]
fn without_the_feature_xen_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_xen_save(dir.path());
    assert_clean_failure(
        code,
        &stderr,
        dir.path(),
        &["built without Xen support", "--features xen", "GPL-3.0"],
    );
}

#[cfg(feature = "xen")]
#[test]
fn with_the_feature_but_no_xen_fails_cleanly() {
    if ["/dev/xen/privcmd", "/proc/xen/privcmd"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        eprintln!("skipped: this machine has a Xen control interface");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_xen_save(dir.path());
    assert_clean_failure(
        code,
        &stderr,
        dir.path(),
        &["cannot open the Xen control interface (/dev/xen/privcmd missing): is this a Xen dom0?"],
    );
}

/// `--xen-qmp` belongs to `--xen`: alone it is a usage error naming both.
#[test]
fn xen_qmp_needs_xen() {
    let out = Command::new(env!("CARGO_BIN_EXE_hvm-save"))
        .args(["--sim", "--xen-qmp", "none", "-o", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--xen-qmp") && stderr.contains("--xen <DOMID>"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

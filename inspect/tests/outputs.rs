//! Nothing lost: `hvm-inspect convert` never deletes, truncates or
//! overwrites what it was not told to with `--force`, its write errors name
//! the output, and reports on a closed or full standard output are errors,
//! never a silent exit 0 or a panic.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvm-inspect"))
}

fn golden(name: &str) -> PathBuf {
    hvm_tests::golden::golden_dir().join(name)
}

/// A scratch directory with a good image and a damaged one (cut inside
/// its page data).
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.img");
    std::fs::copy(golden("seed64-nonlive.img"), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let damaged = dir.path().join("damaged.img");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    (dir, good, damaged)
}

fn convert(input: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// The write end of a FIFO whose every reader has gone: any write gets
/// EPIPE, deterministically.
pub fn closed_pipe(dir: &Path) -> std::fs::File {
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Opened read-write, the FIFO has a reader while the writer opens.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(reader);
    writer
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Names in `dir` (hidden ones too), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_convert_deletes_nothing_and_an_existing_file_needs_force() {
    let (dir, _, damaged) = scratch();
    let precious = dir.path().join("p.xl");
    std::fs::write(&precious, b"PRECIOUS\n").unwrap();
    // Without --force: refused before anything is read.
    let o = convert(&damaged, &precious, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    // With --force, a failed conversion leaves the old file alone.
    let o = convert(&damaged, &precious, &["--force"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read(&precious).unwrap(), b"PRECIOUS\n");
    assert_eq!(names(dir.path()), ["damaged.img", "good.img", "p.xl"]);
}

#[test]
fn the_input_is_refused_as_output_under_any_name() {
    let (dir, good, _) = scratch();
    let before = std::fs::read(&good).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let hard = dir.path().join("hard");
    std::fs::hard_link(&good, &hard).unwrap();
    for out in [good.clone(), link, hard, dir.path().join("./good.img")] {
        let o = convert(&good, &out, &["--force"]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: {}",
            out.display(),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("same file as the input"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read(&good).unwrap(), before);
    // Standard output appended to the input.
    let o = bin()
        .args(["convert", "-", "-o", "-"])
        .stdin(std::fs::File::open(&good).unwrap())
        .stdout(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&good)
                .unwrap(),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read(&good).unwrap(), before);
}

#[test]
fn a_symbolic_link_is_kept_and_its_target_replaced_only_on_success() {
    let (dir, good, damaged) = scratch();
    let target = dir.path().join("target.xl");
    std::fs::write(&target, b"PRECIOUS\n").unwrap();
    let link = dir.path().join("link.xl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = convert(&damaged, &link, &["--force"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"PRECIOUS\n");
    let o = convert(&good, &link, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    let out = std::fs::read(&target).unwrap();
    assert!(out.starts_with(b"Xen saved domain"), "an xl file");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn devices_and_directories_are_refused_and_dash_is_stdout() {
    let (dir, good, damaged) = scratch();
    let o = convert(&damaged, Path::new("/dev/null"), &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("character device"), "{}", stderr(&o));
    assert!(Path::new("/dev/null")
        .metadata()
        .unwrap()
        .file_type()
        .is_char_device());
    let o = convert(&good, dir.path(), &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A device node of our own (root only): still there afterwards.
    let node = dir.path().join("node");
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let o = convert(&damaged, &node, &["--force"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(node.metadata().unwrap().file_type().is_char_device());
    } else {
        eprintln!("skipped the mknod case: not root");
    }
    // `-o -`: the stream on stdout, the report on stderr, no file named -.
    let o = bin()
        .current_dir(dir.path())
        .args(["convert", "good.img", "-o", "-", "--to", "libxc"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        o.stdout.starts_with(b"\xff\xff\xff\xff\xff\xff\xff\xff"),
        "a v2 image"
    );
    assert!(stderr(&o).contains("good.img"), "{}", stderr(&o));
    assert!(!dir.path().join("-").exists());
}

#[test]
fn stale_temporaries_of_a_killed_run_are_removed_and_reported() {
    let (dir, good, _) = scratch();
    let mut c = Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let stale = dir.path().join(format!(".out.xl.hvm-tmp.{dead}"));
    std::fs::write(&stale, b"partial").unwrap();
    let o = convert(&good, &dir.path().join("out.xl"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stale.exists());
    assert!(stderr(&o).contains("killed"), "{}", stderr(&o));
    assert_eq!(names(dir.path()), ["damaged.img", "good.img", "out.xl"]);
}

#[test]
fn a_signal_leaves_nothing_behind() {
    let (dir, good, _) = scratch();
    // Standard input that never ends keeps the conversion running.
    let mut child = bin()
        .current_dir(dir.path())
        .args(["convert", "-", "-o", "out.xl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut si = child.stdin.take().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::io::Write::write_all(&mut si, &bytes[..4096]).unwrap();
    // Until the temporary exists.
    for _ in 0..200 {
        if names(dir.path()).iter().any(|n| n.contains("hvm-tmp")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(names(dir.path()).iter().any(|n| n.contains("hvm-tmp")));
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(1), "died of SIGHUP");
    assert_eq!(names(dir.path()), ["damaged.img", "good.img"]);
}

#[test]
fn a_full_disk_names_the_output_and_keeps_nothing() {
    let (dir, good, _) = scratch();
    let Some(mnt) = hvm_tests::tmpfs::small(dir.path(), "64k") else {
        return;
    };
    let old = mnt.join("old.xl");
    std::fs::write(&old, b"PRECIOUS\n").unwrap();
    let o = convert(&good, &old, &["--force"]);
    let listing = names(&mnt);
    hvm_tests::tmpfs::unmount(&mnt);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("old.xl") && err.contains("No space"), "{err}");
    assert!(
        !err.contains("good.img"),
        "names the output, not the input: {err}"
    );
    assert_eq!(listing, ["old.xl"], "no temporary left");
}

#[test]
fn reports_on_a_full_or_closed_stdout() {
    let good = golden("seed64-nonlive.img");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = bin()
        .arg("summary")
        .arg(&good)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("standard output"), "{}", stderr(&o));
    // A reader that went away: quiet, by SIGPIPE, as Unix tools end.
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("show")
        .arg("pages")
        .arg(&good)
        .stdout(closed_pipe(dir.path()))
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(13), "{:?} {}", o.status, stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn digest_workers_are_bounded() {
    let good = golden("seed64-nonlive.img");
    for w in ["0", "100000"] {
        let o = bin()
            .args(["digest", "--workers", w])
            .arg(&good)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{w}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    let o = bin()
        .args(["digest", "--workers", "3"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

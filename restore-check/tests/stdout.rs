//! The report on a closed or full standard output: never a panic
//! (`println!` panics, exit 101), never exit 0 with the report lost.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::Img;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvm-restore-check"))
}

/// The write end of a FIFO whose every reader has gone: any write gets
/// EPIPE, deterministically.
fn closed_pipe(dir: &Path) -> std::fs::File {
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(reader);
    writer
}

#[test]
fn full_stdout_exits_2_with_one_line_and_a_closed_one_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("clean.img");
    std::fs::write(&img, Img::simple(4, Img::ram(4)).build()).unwrap();
    for json in [false, true] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut c = bin();
        c.arg(&img).stdout(full);
        if json {
            c.arg("--json");
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("standard output"), "{err}");
        let o = bin()
            .arg(&img)
            .stdout(closed_pipe(dir.path()))
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(13), "{:?}", o.status);
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::remove_file(dir.path().join("fifo")).unwrap();
    }
}

//! Exactly what the binaries run, on arbitrary bytes: the image open and
//! dialect detection path, `hvm-inspect summary`, `validate`, `digest` and
//! `convert`, and `hvm-restore-check`'s replay, each from a regular file or
//! slice and from a pipe (a `Read` that is not a file, with short reads).
//! A panic, an overflow (the targets are built with overflow checks), a
//! hang (`-timeout`) or an allocation the input cannot justify
//! (`-rss_limit_mb`) is a crash. This is the target that would have found
//! issue 11's 12-byte hang.
#![no_main]

use std::io::{Read, Write};
use std::path::Path;

use hvm_format::image::{
    open_any_read, open_read, open_slice, read_any_tail, read_tail, slice_tail, OpenOptions,
};
use hvm_format::rules::CheckOptions;
use hvm_inspect::convert::{convert_any, Target};
use hvm_inspect::input::no_progress;
use hvm_inspect::report::{digest, summary, validate};
use hvm_inspect::Input;
use libfuzzer_sys::fuzz_target;

/// A pipe-like reader: short reads of varying size, never more than asked.
struct Pipe<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 4093 + 17;
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn pipe(data: &[u8]) -> Pipe<'_> {
    Pipe { data, step: 0 }
}

/// Read elements until the end (true) or the first error (false).
fn drained(mut next: impl FnMut() -> hvm_format::Result<bool>) -> bool {
    loop {
        match next() {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => return false,
        }
    }
}

/// The open path by itself, as every consumer starts it.
fn open_paths(data: &[u8]) {
    if let Ok((info, mut r)) = open_slice(data, OpenOptions::default()) {
        while let Ok(Some(_)) = r.next_element() {}
        if r.is_done() {
            let _ = slice_tail(&info, &r);
        }
    }
    if let Ok((info, mut r)) = open_read(pipe(data), OpenOptions::default()) {
        if drained(|| r.next_element().map(|e| e.is_some())) {
            let _ = read_tail(&info, r);
        }
    }
    if let Ok((info, mut r)) = open_any_read(pipe(data), OpenOptions::default()) {
        if drained(|| r.next_element().map(|e| e.is_some())) {
            let _ = read_any_tail(&info, r);
        }
    }
}

/// `hvm-inspect summary`, `validate` and `digest` of `path` (a regular
/// file, or `/dev/fd/N` of a pipe).
fn inspect(path: &str) {
    let open = || Input::open(path).expect("the fuzz input opens");
    let _ = summary(open(), OpenOptions::default(), &no_progress);
    let _ = validate(
        open(),
        OpenOptions::default(),
        CheckOptions::default(),
        &no_progress,
    );
    let _ = validate(
        open(),
        OpenOptions::default(),
        CheckOptions {
            strict: true,
            ..CheckOptions::default()
        },
        &no_progress,
    );
    let _ = digest(open(), OpenOptions::default(), 1, &no_progress);
}

/// `hvm-inspect summary` and `validate` reading a real pipe, as `-` does.
fn inspect_pipe(data: &[u8]) {
    for command in 0..2 {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let owned = data.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = writer.write_all(&owned);
        });
        {
            use std::os::fd::AsRawFd;
            let path = format!("/dev/fd/{}", reader.as_raw_fd());
            let input = Input::open(&path).expect("the pipe opens");
            if command == 0 {
                let _ = summary(input, OpenOptions::default(), &no_progress);
            } else {
                let _ = validate(
                    input,
                    OpenOptions::default(),
                    CheckOptions::default(),
                    &no_progress,
                );
            }
        }
        // Drain what the command left so the feeder never blocks.
        let mut reader = reader;
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        feeder.join().expect("feeder");
    }
}

fn restore_check(data: &[u8]) {
    let opts = hvm_restore_check::Options {
        workers: 1,
        digest: true,
        ..Default::default()
    };
    let _ = hvm_restore_check::check_slice(data, &opts);
    let _ = hvm_restore_check::check_read(pipe(data), &opts);
}

fn convert(data: &[u8]) {
    for target in [Target::Libxc, Target::Libxl, Target::Xl] {
        let opts = OpenOptions {
            len: Some(data.len() as u64),
            ..OpenOptions::default()
        };
        let _ = convert_any("fuzz", Path::new("-"), data, opts, target, || {
            Ok(std::io::sink())
        });
        let _ = convert_any(
            "fuzz",
            Path::new("-"),
            pipe(data),
            OpenOptions::default(),
            target,
            || Ok(std::io::sink()),
        );
    }
}

thread_local! {
    static FILE: tempfile::NamedTempFile = tempfile::NamedTempFile::new().expect("temp file");
}

fuzz_target!(|data: &[u8]| {
    open_paths(data);
    FILE.with(|f| {
        std::fs::write(f.path(), data).expect("write the fuzz input");
        inspect(f.path().to_str().expect("utf-8 temp path"));
    });
    inspect_pipe(data);
    restore_check(data);
    convert(data);
});

//! Inputs the fuzzers found, and the hostile inputs of issue 11, kept as
//! regression tests (named after what they broke) under
//! `tests/fuzz-regressions/<target>/`. Each must pass the same checks as its
//! fuzz target ([`hvm_tests::agree`]): two readers of one input agree on the
//! items and on the first error's offset and kind, and no entry point the
//! binaries use panics or runs longer than the fuzzers' per-input timeout.

use std::time::Duration;

use hvm_tests::agree::{legacy_readers_agree, v2_readers_agree};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-regressions")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Run `f` on its own thread; a hang is a failure after the fuzzers'
/// per-input timeout, not a test run that never ends.
fn within_timeout(name: &str, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: {what} did not finish in 10 s")
        }
    }
}

#[test]
fn stream_regressions_both_readers_agree() {
    let cases = inputs("stream");
    assert!(!cases.is_empty());
    for (name, data) in cases {
        if let Err(why) = legacy_readers_agree(&data) {
            panic!("{name}: {why}");
        }
    }
}

#[test]
fn v2_regressions_both_readers_agree() {
    let cases = inputs("v2");
    assert!(!cases.is_empty());
    for (name, data) in cases {
        if let Err(why) = v2_readers_agree(&data) {
            panic!("{name}: {why}");
        }
    }
}

/// The `image` target's entry points, on every kept input: detection and
/// both readers, `hvm-inspect validate` (the library call the binary
/// makes), and `hvm-restore-check`'s mmap and pipe paths.
#[test]
fn image_regressions_finish_without_panic() {
    let cases = inputs("image");
    assert!(!cases.is_empty());
    for (name, data) in cases {
        let data = std::sync::Arc::new(data);
        let d = data.clone();
        within_timeout(&name, "the readers", move || {
            if let Err(why) = legacy_readers_agree(&d) {
                panic!("readers disagree: {why}");
            }
        });
        let d = data.clone();
        within_timeout(&name, "hvm-inspect validate", move || {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), &*d).unwrap();
            let input = hvm_inspect::Input::open(f.path().to_str().unwrap()).unwrap();
            let _ = hvm_inspect::report::validate(
                input,
                Default::default(),
                Default::default(),
                &hvm_inspect::input::no_progress,
            );
        });
        #[cfg(target_os = "linux")]
        within_timeout(&name, "hvm-restore-check", move || {
            let opts = hvm_restore_check::Options {
                workers: 1,
                ..Default::default()
            };
            let _ = hvm_restore_check::check_slice(&data, &opts);
            let _ = hvm_restore_check::check_read(&data[..], &opts);
        });
    }
}

/// Issue 11 item 1: a -12 chunk whose 64-bit length wraps the detector's
/// offset back to the start. Release builds looped and allocated until
/// killed, debug builds panicked with an overflow.
#[test]
fn fuzz_hang_wrapping_chunk_length_is_an_error() {
    let data = inputs("image")
        .into_iter()
        .find(|(n, _)| n == "hang_wrapping_chunk_length")
        .expect("kept")
        .1;
    assert_eq!(data, b"\xf4\xff\xff\xff\xf4\xff\xff\xff\xff\xff\xff\xff");
    within_timeout("hang_wrapping_chunk_length", "validate", move || {
        let det = hvm_format::dialect::detect(&data);
        assert!(!det.complete, "{det:?}");
        let o = hvm_tests::pipeline::exercise_slice(&data, false);
        assert!(o.error.is_some());
    });
}

/// Found by the `image` target: a max_pfn below 255 implies a guest of
/// 0 MiB, whose magic pfns `(mem >> 12) - 1` underflowed in the rules
/// (debug: overflow panic; release: pfns near 2^64).
#[test]
fn fuzz_overflow_magic_pfns_of_max_pfn_16() {
    let data = inputs("image")
        .into_iter()
        .find(|(n, _)| n == "overflow_magic_pfns_of_max_pfn_16")
        .expect("kept")
        .1;
    assert_eq!(data[..8], 0x10u64.to_le_bytes());
    let o = hvm_tests::pipeline::exercise_slice(&data, true);
    assert!(
        o.error.is_some(),
        "the image is truncated in a vCPU context"
    );
    assert!(
        !o.verdict
            .findings
            .iter()
            .any(|f| f.rule == "seed.pfn.magic"),
        "a 0 MiB guest has no magic pfns: {:?}",
        o.verdict.findings
    );
}

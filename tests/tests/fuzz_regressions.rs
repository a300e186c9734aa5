//! Inputs the fuzzers found, kept as regression tests (named `fuzz_*` after
//! what they broke). Each must pass the same checks as the fuzz target.

use hvm_tests::pipeline::{exercise_read, exercise_slice};

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

#[test]
fn stream_regressions_both_readers_agree() {
    let cases = inputs("stream");
    assert!(!cases.is_empty());
    for (name, data) in cases {
        let a = exercise_slice(&data, true);
        let b = exercise_read(&data, true);
        assert_eq!(
            a.error.as_ref().map(|e| e.to_string()).is_some(),
            b.error.is_some(),
            "{name}: slice {:?} vs read {:?}",
            a.error.as_ref().map(|e| e.to_string()),
            b.error.as_ref().map(|e| e.to_string())
        );
        assert_eq!(
            a.items,
            b.items,
            "{name}: slice {:?} vs read {:?}",
            a.error.map(|e| e.to_string()),
            b.error.map(|e| e.to_string())
        );
    }
}

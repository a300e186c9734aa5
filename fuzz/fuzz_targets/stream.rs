//! The whole read pipeline (envelope, dialect, stream items, rules, index,
//! vCPU contexts, HVM records, tail) over arbitrary bytes, through both the
//! mmap and the pipe reader. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let a = hvm_tests::pipeline::exercise_slice(data, true);
    let b = hvm_tests::pipeline::exercise_read(data, true);
    // Both readers must agree on whether the image is readable.
    if data.len() < hvm_format::image::PREFIX_LEN {
        assert_eq!(a.error.is_some(), b.error.is_some(), "{:?} vs {:?}", a.error, b.error);
        assert_eq!(a.items, b.items);
    }
});

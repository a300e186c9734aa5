//! The whole read pipeline (envelope, dialect, stream items, rules, index,
//! vCPU contexts, HVM records, tail) over arbitrary bytes, through both the
//! mmap and the pipe reader. Any panic is a bug, and both readers must read
//! the same items and stop at the same error (offset and kind).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = hvm_tests::agree::legacy_readers_agree(data) {
        panic!("the slice and pipe readers disagree: {why}");
    }
});

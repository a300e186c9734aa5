//! Migration stream v2 readers (slice and pipe) and the validators. The
//! `Reader` (any `Read`) and the `SliceReader` must decode the same records
//! and stop with the same error (offset and kind).
#![no_main]

use hvm_format::v2::{validate_libxc, validate_libxl, validate_xl, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = hvm_tests::agree::v2_readers_agree(data) {
        panic!("v2 readers disagree: {why}");
    }
    if let Ok(mut r) = Reader::new(data) {
        while let Ok(Some(_)) = r.next_record() {}
        // What follows END: at most a device model record, then trailing
        // bytes, then nothing.
        for _ in 0..3 {
            match r.after_end() {
                Ok(hvm_format::v2::AfterEnd::Nothing) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(matches!(
            r.after_end(),
            Ok(hvm_format::v2::AfterEnd::Nothing) | Err(_)
        ));
    }
    let _ = (
        validate_libxc(data),
        validate_libxl(data),
        validate_xl(data),
    );
});

//! Migration stream v2 readers (slice and pipe) and the validators.
#![no_main]

use hvm_format::v2::{validate_libxc, validate_libxl, validate_xl, Reader, SliceReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = SliceReader::new(data) {
        while let Ok(Some(_)) = r.next_record() {}
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

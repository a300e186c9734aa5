//! `hvm-inspect convert` on arbitrary bytes, into every framing: a legacy
//! image is translated, a v2 image re-framed; bad input must be an error,
//! never a panic or an allocation the input cannot justify.
#![no_main]

use std::path::Path;

use hvm_format::image::OpenOptions;
use hvm_inspect::convert::{convert_any, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for target in [Target::Libxc, Target::Libxl, Target::Xl] {
        let opts = OpenOptions {
            len: Some(data.len() as u64),
            ..OpenOptions::default()
        };
        let _ = convert_any("fuzz", Path::new("-"), data, opts, target, || {
            Ok(std::io::sink())
        });
    }
});

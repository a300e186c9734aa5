//! HVM blob framing, typed decoding, field listing and both load-rule sets
//! over arbitrary bytes; a blob that parses must re-encode exactly.
#![no_main]

use hvm_format::hvm::load::{check_current_load, check_seed_load, CurrentLoadOptions, SeedLoadOptions};
use hvm_format::hvm::HvmBlob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = HvmBlob::parse(data) {
        assert_eq!(blob.encode(), data);
        for r in &blob.records {
            let typed = r.decode();
            let _ = typed.fields();
            let mut out = Vec::new();
            typed.encode_into(&mut out);
            assert_eq!(&out[8..], r.payload, "typed re-encoding of {}", r.name());
        }
    }
    let _ = check_seed_load(data, &SeedLoadOptions::default());
    let _ = check_current_load(data, &CurrentLoadOptions::default());
});

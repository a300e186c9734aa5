//! The whole read pipeline over untrusted bytes, as the inspector and the
//! restore checker run it: open (envelope, dialect), every item, the rules,
//! the index, the vCPU contexts, the HVM records and their fields, the tail.
//! Corruption tests and fuzz targets drive it; it must never panic.

use hvm_format::hvm::HvmBlob;
use hvm_format::image::{open_read, open_slice, read_tail, slice_tail, OpenOptions};
use hvm_format::index::IndexBuilder;
use hvm_format::rules::{CheckOptions, StreamChecker, Verdict};
use hvm_format::stream::Item;
use hvm_format::vcpu::VcpuContext;
use hvm_format::Error;

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The first hard error (open, structure, tail), if any.
    pub error: Option<Error>,
    /// Items read before it.
    pub items: u64,
    /// The rules' verdict over what was read.
    pub verdict: Verdict,
}

fn consume(item: &Item<'_>, checker: &mut StreamChecker, index: &mut IndexBuilder) {
    checker.item(item);
    index.item(item);
    match item {
        Item::Vcpu(v) => {
            if let Ok(ctx) = VcpuContext::parse(v.bytes) {
                let _ = (ctx.rip(), ctx.fields().len());
            }
        }
        Item::HvmBlob(h) => {
            if let Ok(blob) = HvmBlob::parse(h.bytes) {
                for r in &blob.records {
                    let _ = r.decode().fields();
                }
                assert_eq!(blob.encode(), h.bytes, "HVM blob re-encoding must be exact");
            }
        }
        _ => {}
    }
}

/// Run the pipeline over an mmap-style slice.
pub fn exercise_slice(data: &[u8], strict: bool) -> Outcome {
    let opts = CheckOptions {
        strict,
        ..Default::default()
    };
    let (info, mut r) = match open_slice(data, OpenOptions::default()) {
        Ok(x) => x,
        Err(e) => {
            return Outcome {
                error: Some(e),
                items: 0,
                verdict: Verdict::default(),
            }
        }
    };
    let mut checker = StreamChecker::new(info.word(), opts, info.config_memory_mib());
    let mut index = IndexBuilder::new();
    let mut items = 0;
    let mut error = None;
    loop {
        match r.next() {
            Ok(Some(item)) => {
                items += 1;
                consume(&item, &mut checker, &mut index);
            }
            Ok(None) => {
                match slice_tail(&info, &r) {
                    Ok(t) => checker.tail(&t),
                    Err(e) => error = Some(e),
                }
                break;
            }
            Err(e) => {
                checker.structure_error(&e);
                error = Some(e);
                break;
            }
        }
    }
    let _ = index.finish();
    Outcome {
        error,
        items,
        verdict: checker.finish(),
    }
}

/// Run the pipeline over a `Read` (the pipe path).
pub fn exercise_read(data: &[u8], strict: bool) -> Outcome {
    let opts = CheckOptions {
        strict,
        ..Default::default()
    };
    let (info, mut r) = match open_read(data, OpenOptions::default()) {
        Ok(x) => x,
        Err(e) => {
            return Outcome {
                error: Some(e),
                items: 0,
                verdict: Verdict::default(),
            }
        }
    };
    let mut checker = StreamChecker::new(info.word(), opts, info.config_memory_mib());
    let mut index = IndexBuilder::new();
    let mut items = 0;
    let mut error = None;
    loop {
        match r.next() {
            Ok(Some(item)) => {
                items += 1;
                consume(&item, &mut checker, &mut index);
            }
            Ok(None) => {
                match read_tail(&info, r) {
                    Ok(t) => checker.tail(&t),
                    Err(e) => error = Some(e),
                }
                break;
            }
            Err(e) => {
                checker.structure_error(&e);
                error = Some(e);
                break;
            }
        }
    }
    let _ = index.finish();
    Outcome {
        error,
        items,
        verdict: checker.finish(),
    }
}

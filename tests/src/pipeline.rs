//! The whole read pipeline over untrusted bytes, as the inspector and the
//! restore checker run it: open (envelope, dialect), every item, the rules,
//! the index, the vCPU contexts, the HVM records and their fields, the tail.
//! Corruption tests and fuzz targets drive it; it must never panic.

use hvm_format::hvm::HvmBlob;
use hvm_format::image::{open_read, open_slice, read_tail, slice_tail, OpenOptions};
use hvm_format::index::IndexBuilder;
use hvm_format::rules::{CheckOptions, StreamChecker, Verdict};
use hvm_format::stream::{Item, SliceReader};
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

/// Pull every item from `$reader`, feed the consumers, then the tail: one
/// body for both readers, whose items borrow differently (slice vs buffer).
macro_rules! drive {
    ($info:expr, $reader:expr, $opts:expr, $tail:expr) => {{
        let info = $info;
        let mut r = $reader;
        let mut checker = StreamChecker::new(info.word(), $opts, info.config_memory_mib());
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
                    match $tail(&info, r) {
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
    }};
}

fn failed(e: Error) -> Outcome {
    Outcome {
        error: Some(e),
        items: 0,
        verdict: Verdict::default(),
    }
}

fn options(strict: bool) -> CheckOptions {
    CheckOptions {
        strict,
        ..Default::default()
    }
}

/// Run the pipeline over an mmap-style slice.
pub fn exercise_slice(data: &[u8], strict: bool) -> Outcome {
    match open_slice(data, OpenOptions::default()) {
        Ok((info, r)) => drive!(
            info,
            r,
            options(strict),
            |i, r: SliceReader<'_>| slice_tail(i, &r)
        ),
        Err(e) => failed(e),
    }
}

/// Run the pipeline over a `Read` (the pipe path).
pub fn exercise_read(data: &[u8], strict: bool) -> Outcome {
    match open_read(data, OpenOptions::default()) {
        Ok((info, r)) => drive!(info, r, options(strict), read_tail),
        Err(e) => failed(e),
    }
}

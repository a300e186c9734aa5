//! The properties the fuzz targets assert, as functions, so that every
//! crasher kept under `tests/fuzz-regressions/` is checked by exactly the
//! same code in `tests/tests/fuzz_regressions.rs`.
//!
//! Two readers of the same bytes must agree on more than "error or not":
//! the same items, and an error at the same offset of the same kind.

use hvm_format::v2;
use hvm_format::{Error, ErrorKind};

use crate::pipeline::{exercise_read, exercise_slice, Outcome};

/// An error's offset and kind, the part two readers must agree on
/// (messages may word the same fault differently).
pub(crate) fn error_key(e: &Error) -> (u64, std::mem::Discriminant<ErrorKind>) {
    (e.offset, std::mem::discriminant(&e.kind))
}

fn outcome_key(o: &Outcome) -> (u64, Option<(u64, std::mem::Discriminant<ErrorKind>)>) {
    (o.items, o.error.as_ref().map(error_key))
}

/// The mmap reader and the pipe reader decode `data` alike: the same item
/// count and the same first error (offset and kind). Images longer than
/// the detection prefix are exempt: the pipe reader cannot see their end
/// when it detects.
pub fn legacy_readers_agree(data: &[u8]) -> Result<(), String> {
    if data.len() >= hvm_format::image::PREFIX_LEN {
        return Ok(());
    }
    let a = exercise_slice(data, true);
    let b = exercise_read(data, true);
    if outcome_key(&a) == outcome_key(&b) {
        Ok(())
    } else {
        Err(format!(
            "slice: {} items, {:?}; read: {} items, {:?}",
            a.items, a.error, b.items, b.error
        ))
    }
}

/// The v2 `Reader` (any `Read`) and `SliceReader` decode `data` alike:
/// the same headers, the same records in the same order, and the same end
/// (END, or an error at the same offset of the same kind).
pub fn v2_readers_agree(data: &[u8]) -> Result<(), String> {
    let (mut s, mut r) = match (v2::SliceReader::new(data), v2::Reader::new(data)) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(a), Err(b)) if error_key(&a) == error_key(&b) => return Ok(()),
        (a, b) => return Err(format!("headers: slice {:?}, read {:?}", a.err(), b.err())),
    };
    if s.image_header() != r.image_header() || s.domain_header() != r.domain_header() {
        return Err("headers differ".into());
    }
    loop {
        match (s.next_record(), r.next_record()) {
            (Ok(None), Ok(None)) => return Ok(()),
            (Ok(Some(a)), Ok(Some(b))) if a == b => {}
            (Err(a), Err(b)) if same_v2_error(&a, &b) => return Ok(()),
            (a, b) => return Err(format!("slice {a:?}, read {b:?}")),
        }
    }
}

/// The v2 `Reader` cannot know where its input ends, so where the
/// `SliceReader` refuses a length field at once (`Oversized { claimed,
/// remaining }`) the `Reader` runs out in the body it announced:
/// `Truncated` with the same two numbers, at most one record header (8
/// bytes) further on. And the `Reader` buffers bodies, so it refuses one
/// above its limit ([`v2::DEFAULT_MAX_BODY_LEN`]) where the slice, which
/// borrows, refuses it only when it does not fit: the same length field
/// either way. Every other error must match exactly.
fn same_v2_error(slice: &Error, read: &Error) -> bool {
    match (&slice.kind, &read.kind) {
        (ErrorKind::Oversized { claimed, .. }, ErrorKind::Invalid { expected, .. })
            if expected.contains("reader limit") =>
        {
            read.offset == slice.offset && *claimed > u64::from(v2::DEFAULT_MAX_BODY_LEN)
        }
        (
            ErrorKind::Oversized {
                claimed, remaining, ..
            },
            ErrorKind::Truncated { needed, available },
        ) => {
            claimed == needed
                && remaining == available
                && read.offset >= slice.offset
                && read.offset - slice.offset <= 8
        }
        _ => error_key(slice) == error_key(read),
    }
}

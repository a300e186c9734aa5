//! The HVM context blob that `xc_domain_hvm_getcontext` returns and the
//! libxc stream carries last (docs/format.md §5).
//!
//! ```text
//! blob   = record* END trailer
//! record = u16 typecode | u16 instance | u32 length | payload[length]
//!          (little-endian, no padding or alignment between records)
//! ```
//!
//! Layers:
//! * [`HvmBlob`] / [`RawRecord`]: zero-copy framing with blob-relative
//!   offsets; exact re-encoding including bytes after END.
//! * [`HvmRecord`] / [`RecordBody`]: payloads typed by (typecode, length) —
//!   the 2007 seed sizes, the current ones and the sizes in between whose
//!   layout is known; everything else stays raw. Each lists its
//!   [`fields`](RecordBody::fields) and the [`eras`](size_eras) that wrote
//!   its size.
//! * [`BlobBuilder`], [`seed_reset_blob`]: writing blobs in Xen's order.
//! * [`load`]: what the seed's `hvm_load` and current Xen's loaders would
//!   say about a blob, as [`Finding`](crate::rules::Finding)s.
//!
//! Every offset this module reports is relative to the blob's first byte;
//! callers that know where the blob sits in a file add that (see
//! [`Error::rebase`](crate::Error::rebase)).

mod build;
mod framing;
pub mod layouts;
pub mod load;
mod record;
pub mod translate;

/// The field listing, shared with [`crate::vcpu`]; kept at its old path.
pub use crate::fields;
pub use build::{seed_reset_blob, seed_reset_records, BlobBuilder};
pub use fields::{Field, FieldSource, FieldValue};
pub(crate) use framing::DESCRIPTOR_LEN;
pub use framing::{encode_records, HvmBlob, OwnedRecord, RawRecord};
pub use layouts::*;
pub use record::{code, size_eras, type_name, Era, HvmRecord, RecordBody, SizeEra};

#[cfg(test)]
mod tests;

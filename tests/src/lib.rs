//! Cross-crate test support.
//!
//! * [`golden`]: the generator of the committed golden images under
//!   `tests/golden/` and of the facts a reader must decode from them.
//! * [`oracle`]: Xen's own verify-stream-v2 and convert-legacy-stream.
//! * [`prereq`]: what a test does when `/dev/kvm` or the oracle is missing:
//!   skip and count, or fail under `HVM_REQUIRE`.
//! * [`agree`]: what the fuzz targets assert about two readers of one input.
//! * [`pipeline`]: the whole read pipeline over untrusted bytes, for the
//!   corruption tests and the fuzz targets.
//! * [`manual`]: each CLI's `--completions` and `--man` checked against its
//!   `--help`.
//!
//! The tests themselves live in `tests/tests/`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod agree;
pub mod golden;
pub mod manual;
pub mod oracle;
pub mod pipeline;
pub mod prereq;
pub mod tmpfs;

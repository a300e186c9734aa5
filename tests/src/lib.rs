//! Cross-crate test support.
//!
//! * [`golden`]: the generator of the committed golden images under
//!   `tests/golden/` and of the facts a reader must decode from them.
//!
//! The tests themselves live in `tests/tests/`.

pub mod golden;

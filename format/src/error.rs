//! The crate's error type, kept at its old path: it lives in [`crate::diag`].

pub use crate::diag::{chain_message, Context, Error, ErrorKind, Result, Segment};

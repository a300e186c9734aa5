//! Diagnostics: the error type every parser and writer returns, and the
//! findings every check reports.
//!
//! The lowest layer of the crate: it uses nothing else from it, and every
//! other module may use it.

mod error;
mod finding;

pub(crate) use error::slice_at;
pub use error::{chain_message, Context, Error, ErrorKind, Result, Segment};
pub use finding::{Finding, Findings, Severity, PER_RULE_CAP};

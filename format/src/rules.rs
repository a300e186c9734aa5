//! Every check a restorer or a current Xen would make, as data.
//!
//! A [`Finding`] names the rule (a stable id users can grep for), how bad it
//! is, where it is, and what is wrong. `hvm-inspect validate` and
//! `hvm-restore-check` both report these; nothing re-implements them.

use crate::error::Context;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; no restorer cares.
    Info,
    /// A restorer would warn, or the image is odd but loads.
    Warning,
    /// A restorer would refuse the image (or restore it wrongly).
    Error,
}

/// One problem found in an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `seed.batch.count-range` or `xen.hvm.strict-length`.
    pub rule: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// Byte offset in the file.
    pub offset: u64,
    /// Where in the structure.
    #[serde(serialize_with = "ser_context")]
    pub context: Context,
    /// What is wrong, with expected and found values.
    pub message: String,
}

fn ser_context<S: serde::Serializer>(c: &Context, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(c)
}

impl Finding {
    /// A finding of severity [`Severity::Error`].
    pub fn error(
        rule: &'static str,
        offset: u64,
        context: Context,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            rule,
            severity: Severity::Error,
            offset,
            context,
            message: message.into(),
        }
    }

    /// A finding of severity [`Severity::Warning`].
    pub fn warning(
        rule: &'static str,
        offset: u64,
        context: Context,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            rule,
            severity: Severity::Warning,
            offset,
            context,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{sev}[{}] at byte {} (0x{:x}), {}: {}",
            self.rule, self.offset, self.offset, self.context, self.message
        )
    }
}

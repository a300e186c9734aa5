//! A finding: one rule a restorer would apply, broken by an image.
//!
//! Findings are data, not errors: a check goes on after one, and the
//! reports list them all. They live here, below the codec, so that
//! decoders that also check (the QEVM tail, the HVM load rules, v2
//! validation) can report them without importing the analysis layer.

use std::collections::HashMap;

use super::error::Context;

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
    pub(crate) fn warning(
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

/// Findings kept per rule before the rest are only counted.
pub const PER_RULE_CAP: usize = 64;

/// Findings capped per rule: past [`PER_RULE_CAP`] of one rule the rest
/// are only counted, so a hostile image of millions of identical faults
/// costs a count, not a list.
#[derive(Debug, Default)]
pub struct Findings {
    kept: Vec<Finding>,
    per_rule: HashMap<&'static str, u64>,
}

impl Findings {
    /// Keep `f` if its rule is under the cap; count it either way.
    pub fn push(&mut self, f: Finding) {
        let n = self.per_rule.entry(f.rule).or_insert(0);
        *n += 1;
        if *n as usize <= PER_RULE_CAP {
            self.kept.push(f);
        }
    }

    /// Findings pushed, kept or not.
    pub fn total(&self) -> u64 {
        self.per_rule.values().sum()
    }

    /// The findings kept, in the order found.
    pub fn kept(&self) -> &[Finding] {
        &self.kept
    }

    /// Findings beyond the cap, counted by rule, sorted by rule.
    pub fn suppressed(&self) -> Vec<(String, u64)> {
        let mut sup: Vec<(String, u64)> = self
            .per_rule
            .iter()
            .filter(|(_, n)| **n as usize > PER_RULE_CAP)
            .map(|(r, n)| (r.to_string(), n - PER_RULE_CAP as u64))
            .collect();
        sup.sort();
        sup
    }

    /// The findings kept.
    pub fn into_vec(self) -> Vec<Finding> {
        self.kept
    }
}

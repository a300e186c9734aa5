//! # hvm-inspect
//!
//! The offline inspector for Xen HVM save images: what `hvm-inspect` prints,
//! as a library. Every subcommand builds a report struct in one pass over
//! the image and renders it as text ([`text`], 80 columns) or JSON
//! ([`json`], schema [`SCHEMA`], documented in `docs/json-schema.md`).
//!
//! The layers, outermost first:
//!
//! * [`report`]: `summary`, `validate`, `show`, `digest` — report structs
//!   and the functions that fill them.
//! * [`diff`]: `diff A B` — memory, vCPU and HVM record differences.
//! * [`convert`]: any legacy dialect into migration v2 (libxc, libxl, xl).
//! * [`text`]: the text renderers.
//! * [`input`]: files, standard input, mapping, and the one walk over a
//!   stream's items every report is built from.
//!
//! All knowledge of the format (parsing, rules, the index, the digest)
//! lives in `hvm-format`; nothing here re-implements it.

pub mod convert;
pub mod diff;
pub mod input;
mod reframe;
pub mod report;
pub mod text;

pub use input::{Input, InspectError};

/// The JSON schema id every `--json` report carries in its `schema` field.
/// Bumped on any incompatible change (a field removed, renamed or retyped).
pub const SCHEMA: &str = "hvm-inspect/1";

/// JSON rendering.
pub mod json {
    use serde::Serialize;

    /// Every JSON report: the schema id, the command, then its fields.
    #[derive(Serialize)]
    struct Tagged<'a, T: Serialize> {
        schema: &'static str,
        command: &'a str,
        #[serde(flatten)]
        report: &'a T,
    }

    /// `report` as pretty JSON tagged with [`super::SCHEMA`] and `command`,
    /// newline-terminated.
    pub fn render<T: Serialize>(command: &str, report: &T) -> String {
        let tagged = Tagged {
            schema: super::SCHEMA,
            command,
            report,
        };
        // Report structs hold only strings, numbers, options and vectors:
        // serialisation cannot fail.
        let mut s = serde_json::to_string_pretty(&tagged)
            .unwrap_or_else(|e| format!("{{\"schema\":\"{}\",\"error\":\"{e}\"}}", super::SCHEMA));
        s.push('\n');
        s
    }
}

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
//! * [`extract`]: guest memory as a raw file, an ELF core or LiME.
//! * [`plot`]: SVG pictures of an image's passes and of `hvm-save --stats`.
//! * [`text`]: the text renderers.
//! * [`input`]: files, standard input, mapping, and the one walk over a
//!   stream's items every report is built from.
//!
//! All knowledge of the format (parsing, rules, the index, the digest)
//! lives in `hvm-format`; nothing here re-implements it.

#![warn(missing_docs)]
// The inspector reads images through hvm-format's safe API; the one map it
// needs is hvm-format's guarded one.
#![forbid(unsafe_code)]

pub mod convert;
pub mod diff;
pub mod extract;
pub mod input;
pub mod plot;
mod reframe;
pub mod report;
mod target;
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

    /// Where the entries go in a rendered `show pages` report.
    const ENTRIES: &str = "\n  \"entries\": [";

    /// `show pages` as JSON in pieces, so the listing streams: the head
    /// (up to the entries' opening bracket), each entry, then the tail.
    /// Together they are exactly [`render`] of the whole report.
    pub fn pages_head(file: &str) -> String {
        let s = render(
            "show pages",
            &crate::report::ShowPages {
                file: file.to_string(),
                entries: Vec::new(),
                error: None,
            },
        );
        match s.find(ENTRIES) {
            Some(i) => s[..i + ENTRIES.len()].to_string(),
            None => s,
        }
    }

    /// Entry number `index` (from 0) of [`pages_head`]'s listing.
    pub fn page_entry(index: u64, e: &crate::report::PageEntry) -> String {
        let one = serde_json::to_string_pretty(e).unwrap_or_default();
        let mut s = String::from(if index == 0 { "\n" } else { ",\n" });
        for (i, line) in one.lines().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str("    ");
            s.push_str(line);
        }
        s
    }

    /// The rest after `count` entries: `p`'s fields after the entries.
    pub fn pages_tail(p: &crate::report::ShowPages, count: u64) -> String {
        let s = render("show pages", p);
        let rest = match s.find(ENTRIES) {
            // After "[" comes "]" of the empty list in `p`.
            Some(i) => &s[i + ENTRIES.len()..],
            None => "",
        };
        if count == 0 {
            rest.to_string()
        } else {
            format!("\n  {rest}")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{ErrorReport, PageEntry, ShowPages};

    /// The streamed `show pages` JSON is byte for byte the whole report's.
    #[test]
    fn show_pages_json_in_pieces_is_the_whole_report() {
        let entry = |i: usize| PageEntry {
            batch: 1,
            entry: i,
            pfn: 0x40 + i as u64,
            kind: "page".into(),
            offset: Some(4096 * i as u64),
            pass: (i > 0).then_some(2),
            verify: i == 2,
        };
        for n in [0, 1, 3] {
            for error in [
                None,
                Some(ErrorReport {
                    offset: 9,
                    context: "batch 1".into(),
                    message: "bad \"quote\"".into(),
                }),
            ] {
                let p = ShowPages {
                    file: "a \"entries\": [ b".into(),
                    entries: (0..n).map(entry).collect(),
                    error,
                };
                let whole = super::json::render("show pages", &p);
                let mut pieces = super::json::pages_head(&p.file);
                for (i, e) in p.entries.iter().enumerate() {
                    pieces.push_str(&super::json::page_entry(i as u64, e));
                }
                let empty = ShowPages {
                    entries: Vec::new(),
                    ..p.clone()
                };
                pieces.push_str(&super::json::pages_tail(&empty, n as u64));
                assert_eq!(pieces, whole, "{n} entries");
            }
        }
    }
}

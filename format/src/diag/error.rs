//! One error type for every parser and writer in the crate.
//!
//! A user staring at a broken image needs three things: *where* (the byte
//! offset in the file), *what* (a context path such as
//! `batch 17 › entry 3 › pfn`) and *why* (expected vs found). Every error
//! carries all three, so the binaries can print one line that is enough to
//! open a hex editor at the right place.

use std::fmt;

/// One step of a context path: `batch 17`, `entry 3`, `pfn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A named field or section (`pfn`, `count`, `hvm blob`).
    Field(&'static str),
    /// A numbered element of a repeated structure (`batch 17`).
    Index(&'static str, u64),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Field(name) => f.write_str(name),
            Segment::Index(name, i) => write!(f, "{name} {i}"),
        }
    }
}

/// Where in the image's structure an error occurred, outermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context(pub Vec<Segment>);

impl Context {
    /// The empty path (top level of the stream).
    pub fn root() -> Self {
        Context(Vec::new())
    }

    /// This path with a named field appended.
    pub fn field(&self, name: &'static str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Field(name));
        Context(v)
    }

    /// This path with a numbered element appended.
    pub fn index(&self, name: &'static str, i: u64) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(name, i));
        Context(v)
    }

    /// Build a path from a list of segments.
    pub fn from_segments(segments: impl IntoIterator<Item = Segment>) -> Self {
        Context(segments.into_iter().collect())
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("stream");
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" › ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// What went wrong, independent of where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended inside a structure.
    #[error("unexpected end of input: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the structure needed from here.
        needed: u64,
        /// Bytes the input had left.
        available: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("expected {expected}, found {found}")]
    Invalid {
        /// What the format allows, in words.
        expected: String,
        /// What the input holds.
        found: String,
    },
    /// A length or count that the remaining input cannot possibly fill;
    /// refused before any allocation.
    #[error("{what} of {claimed} bytes exceeds the {remaining} bytes left in the input")]
    Oversized {
        /// What the length or count is of.
        what: &'static str,
        /// The bytes it claims.
        claimed: u64,
        /// The bytes left in the input.
        remaining: u64,
    },
    /// The writer was asked to emit an item the stream grammar does not allow
    /// at this point.
    #[error("out of order: {item} cannot follow {after}")]
    OutOfOrder {
        /// The item asked for.
        item: &'static str,
        /// The item written last.
        after: &'static str,
    },
    /// Bytes follow the structure where the format says it ends.
    #[error("{count} trailing bytes after the end of the image")]
    TrailingBytes {
        /// How many.
        count: u64,
    },
    /// An underlying I/O error that is not an end of input.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An error with the byte offset and context path where it happened.
#[derive(Debug, thiserror::Error)]
#[error("at byte {offset} (0x{offset:x}), {context}: {kind}")]
pub struct Error {
    /// Offset from the start of the input (the file, not the libxc part).
    pub offset: u64,
    /// Where in the structure.
    pub context: Context,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}

impl Error {
    /// Create an error.
    pub fn new(offset: u64, context: Context, kind: ErrorKind) -> Self {
        Error {
            offset,
            context,
            kind,
        }
    }

    /// A field holds a disallowed value.
    pub fn invalid(
        offset: u64,
        context: Context,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::new(
            offset,
            context,
            ErrorKind::Invalid {
                expected: expected.into(),
                found: found.into(),
            },
        )
    }

    /// The input ended early.
    pub fn truncated(offset: u64, context: Context, needed: u64, available: u64) -> Self {
        Error::new(offset, context, ErrorKind::Truncated { needed, available })
    }

    /// Shift the offset, for errors found inside a sub-slice (an HVM record
    /// parsed from its blob) that must report the position in the file.
    pub fn rebase(mut self, base: u64) -> Self {
        self.offset += base;
        self
    }

    /// Prefix the context path, for errors found by a nested parser.
    pub fn within(mut self, outer: &Context) -> Self {
        let mut v = outer.0.clone();
        v.append(&mut self.context.0);
        self.context = Context(v);
        self
    }

    /// True when the input simply ended early (useful to tell a truncated
    /// image from a corrupted one).
    pub fn is_truncation(&self) -> bool {
        matches!(self.kind, ErrorKind::Truncated { .. })
    }
}

/// `data[start..end]`, or a truncation error at `offset` naming `context`.
///
/// For ranges the caller has already checked against the input: a miss is a
/// broken invariant, and it must surface as an error that says where, not
/// as silently empty (or short) data.
pub(crate) fn slice_at(
    data: &[u8],
    start: usize,
    end: usize,
    offset: u64,
    context: impl FnOnce() -> Context,
) -> Result<&[u8]> {
    data.get(start..end).ok_or_else(|| {
        Error::truncated(
            offset,
            context(),
            end.saturating_sub(start) as u64,
            data.len().saturating_sub(start) as u64,
        )
    })
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_offset_path_and_values() {
        let ctx = Context::root()
            .index("batch", 17)
            .index("entry", 3)
            .field("pfn");
        let e = Error::invalid(4242, ctx, "pfn < 0x20000", "0x30000");
        assert_eq!(
            e.to_string(),
            "at byte 4242 (0x1092), batch 17 › entry 3 › pfn: expected pfn < 0x20000, found 0x30000"
        );
    }

    #[test]
    fn slice_at_is_an_error_where_the_range_is_not_in_the_data() {
        let d = [1u8, 2, 3, 4];
        assert_eq!(slice_at(&d, 1, 3, 0, Context::root).unwrap(), &[2, 3]);
        let e = slice_at(&d, 2, 9, 77, || Context::root().field("body")).unwrap_err();
        assert_eq!((e.offset, e.context.to_string()), (77, "body".to_string()));
        assert!(matches!(
            e.kind,
            ErrorKind::Truncated {
                needed: 7,
                available: 2
            }
        ));
        // A start past the end is an error too, not an empty slice.
        assert!(slice_at(&d, 5, 5, 0, Context::root).is_err());
    }

    #[test]
    fn rebase_and_within_compose() {
        let inner = Error::truncated(10, Context::root().field("length"), 8, 2);
        let e = inner.rebase(100).within(&Context::root().field("hvm blob"));
        assert_eq!(e.offset, 110);
        assert_eq!(e.context.to_string(), "hvm blob › length");
        assert!(e.is_truncation());
    }
}

/// An error and its sources as one line, for a binary's last word.
///
/// The errors here print their source inside their own message (`at byte N,
/// context: kind`), and also expose it as [`std::error::Error::source`] for
/// callers that walk the chain; printing every link (anyhow's `{:#}`) would
/// repeat each cause. This joins the links with `": "` and drops a link
/// whose text the line already holds.
pub fn chain_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn chain_message_names_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = Error::new(8, Context::root().index("batch", 0), ErrorKind::Io(io));
        let line = chain_message(&e);
        assert_eq!(line, "at byte 8 (0x8), batch 0: I/O error: broken pipe");
        // A context above it that does not repeat it is kept in front.
        #[derive(Debug, thiserror::Error)]
        #[error("writing the image")]
        struct Outer(#[source] Error);
        let line = chain_message(&Outer(e));
        assert_eq!(
            line,
            "writing the image: at byte 8 (0x8), batch 0: I/O error: broken pipe"
        );
    }
}

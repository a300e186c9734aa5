//! The s-expressions xend stores as a saved domain's configuration.
//!
//! xend wrote `sxp.to_string(dominfo.sxpr())`: one line, lists in
//! parentheses separated by single spaces, strings made only of
//! `[A-Za-z0-9.\-_:/~]` (or exactly `@`) bare, every other string as
//! Python 2 `repr()`. Its reader (`xen/xend/sxp.py`) also accepts `#`
//! comments, double-quoted strings, octal and `\x` escapes; [`Sxp::parse`]
//! accepts the same, and reports errors with the byte offset in the text.
//!
//! Strings are bytes, as in Python 2: a `\xff` escape is one byte 0xFF.

use std::fmt;

use crate::diag::{Context, Error, Result};

/// Deepest list nesting accepted; a real config nests about five levels.
/// The cap keeps hostile input from exhausting the stack (on drop or print).
pub(crate) const MAX_DEPTH: usize = 256;

/// One s-expression: a string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sxp {
    /// A string (xend makes no difference between bare and quoted ones).
    Atom(Vec<u8>),
    /// A parenthesised list.
    List(Vec<Sxp>),
}

fn ctx() -> Context {
    Context::root().field("xend config")
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Characters that end a bare atom in xend's reader (besides whitespace and
/// `#`); all but the parentheses then start an atom of their own.
fn is_separator(c: u8) -> bool {
    b"{}()<>[]!;".contains(&c)
}

fn is_printable(c: u8) -> bool {
    (0x20..0x7F).contains(&c) || is_space(c)
}

/// Ctrl-D: xend's reader treats it as the end of the text.
const EOT: u8 = 0x04;

impl Sxp {
    /// A string value.
    pub fn atom(s: impl Into<Vec<u8>>) -> Self {
        Sxp::Atom(s.into())
    }

    /// A list value.
    pub fn list(items: impl IntoIterator<Item = Sxp>) -> Self {
        Sxp::List(items.into_iter().collect())
    }

    /// A `(key value)` pair, the shape of every scalar in a domain config:
    /// `Sxp::entry("memory", "512")`.
    pub fn entry(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Sxp::List(vec![Sxp::Atom(key.into()), Sxp::Atom(value.into())])
    }

    /// Parse a text holding exactly one s-expression (surrounding
    /// whitespace and comments allowed). xend itself took the first value
    /// and ignored the rest; a second value is an error here because a
    /// saved config never has one.
    pub fn parse(text: &[u8]) -> Result<Sxp> {
        let mut p = Parser { text, pos: 0 };
        let first = p.value()?.ok_or_else(|| {
            Error::invalid(p.pos as u64, ctx(), "an s-expression", "end of input")
        })?;
        if let Some(start) = p.skip_blank() {
            return Err(Error::invalid(
                start as u64,
                ctx(),
                "end of input after the first s-expression",
                format!("'{}'", escape_char(p.text.get(start).copied().unwrap_or(0))),
            ));
        }
        Ok(first)
    }

    /// Parse every s-expression of a text, in order.
    pub fn parse_all(text: &[u8]) -> Result<Vec<Sxp>> {
        let mut p = Parser { text, pos: 0 };
        let mut out = Vec::new();
        while let Some(v) = p.value()? {
            out.push(v);
        }
        Ok(out)
    }

    /// The string, if this is an atom.
    pub(crate) fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Sxp::Atom(a) => Some(a),
            Sxp::List(_) => None,
        }
    }

    /// The string as UTF-8, if this is an atom and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_atom()?).ok()
    }

    /// The elements, if this is a list.
    pub(crate) fn as_list(&self) -> Option<&[Sxp]> {
        match self {
            Sxp::List(l) => Some(l),
            Sxp::Atom(_) => None,
        }
    }

    /// The element name: the first atom of a list (`domain` for
    /// `(domain …)`).
    pub fn name(&self) -> Option<&str> {
        self.as_list()?.first()?.as_str()
    }

    /// Child lists named `key`: `(key …)` elements after the name.
    pub fn children<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Sxp> + 'a {
        self.as_list()
            // An atom has no children: that is the answer, not a lost error.
            .unwrap_or(&[])
            .iter()
            .skip(1)
            .filter(move |c| c.name() == Some(key))
    }

    /// The first child list named `key`, whole (`(image (hvm …))`).
    pub fn child(&self, key: &str) -> Option<&Sxp> {
        self.as_list()?
            .iter()
            .skip(1)
            .find(|c| c.name() == Some(key))
    }

    /// The value of the first child named `key`: for `(memory 512)`,
    /// `get("memory")` is the atom `512` (xend's `child_value`).
    pub fn get(&self, key: &str) -> Option<&Sxp> {
        self.child(key)?.as_list()?.get(1)
    }

    /// [`get`](Self::get) as a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// [`get`](Self::get) as a decimal integer (how xend wrote numbers).
    pub(crate) fn get_u64(&self, key: &str) -> Option<u64> {
        self.get_str(key)?.parse().ok()
    }

    /// Follow child names and return the last one's value:
    /// `lookup(&["image", "hvm", "device_model"])`.
    pub fn lookup(&self, path: &[&str]) -> Option<&Sxp> {
        let (last, parents) = path.split_last()?;
        let mut node = self;
        for p in parents {
            node = node.child(p)?;
        }
        node.get(last)
    }

    /// The one-line form xend wrote (also what [`fmt::Display`] gives).
    ///
    /// One deliberate difference: xend wrote an empty string as nothing at
    /// all (so it vanished on reload); this writes `''`.
    pub fn to_sxp_string(&self) -> String {
        self.to_string()
    }
}

/// True when xend's `atomp` lets the string go out bare.
pub fn is_bare_atom(s: &[u8]) -> bool {
    if s == b"@" {
        return true;
    }
    !s.is_empty()
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b".-_:/~".contains(&c))
}

fn escape_char(c: u8) -> String {
    let mut s = String::new();
    push_repr_char(&mut s, c, b'\'');
    s
}

fn push_repr_char(out: &mut String, c: u8, quote: u8) {
    match c {
        b'\\' => out.push_str("\\\\"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        c if c == quote => {
            out.push('\\');
            out.push(char::from(c));
        }
        0x20..=0x7E => out.push(char::from(c)),
        _ => out.push_str(&format!("\\x{c:02x}")),
    }
}

/// Python 2 `repr()` of a byte string: single quotes unless the string
/// holds `'` and no `"`.
pub fn python_repr(s: &[u8]) -> String {
    let quote = if s.contains(&b'\'') && !s.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(char::from(quote));
    for &c in s {
        push_repr_char(&mut out, c, quote);
    }
    out.push(char::from(quote));
    out
}

impl fmt::Display for Sxp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sxp::Atom(a) if is_bare_atom(a) => {
                // Bare atoms are ASCII by construction.
                f.write_str(std::str::from_utf8(a).map_err(|_| fmt::Error)?)
            }
            Sxp::Atom(a) => f.write_str(&python_repr(a)),
            Sxp::List(items) => {
                f.write_str("(")?;
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied().filter(|&c| c != EOT)
    }

    /// Skip whitespace and comments; the offset of the next significant
    /// byte, or `None` at the end.
    fn skip_blank(&mut self) -> Option<usize> {
        while let Some(c) = self.peek() {
            if is_space(c) {
                self.pos += 1;
            } else if c == b'#' {
                while let Some(c) = self.peek() {
                    self.pos += 1;
                    if c == b'\n' {
                        break;
                    }
                }
            } else {
                return Some(self.pos);
            }
        }
        None
    }

    /// The next value, or `None` at the end of the text. Lists are built
    /// with an explicit stack, so nesting costs heap, not call depth.
    fn value(&mut self) -> Result<Option<Sxp>> {
        // Open lists: (offset of '(', elements so far).
        let mut stack: Vec<(usize, Vec<Sxp>)> = Vec::new();
        loop {
            let Some(start) = self.skip_blank() else {
                return match stack.last() {
                    None => Ok(None),
                    Some((open, _)) => Err(Error::invalid(
                        self.pos as u64,
                        ctx(),
                        format!("')' closing the list opened at byte {open}"),
                        "end of input",
                    )),
                };
            };
            let c = self.text.get(start).copied().unwrap_or(0);
            let done = match c {
                b'(' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(Error::invalid(
                            start as u64,
                            ctx(),
                            format!("lists nested at most {MAX_DEPTH} deep"),
                            "a deeper list",
                        ));
                    }
                    self.pos += 1;
                    stack.push((start, Vec::new()));
                    None
                }
                b')' => {
                    self.pos += 1;
                    match stack.pop() {
                        Some((_, items)) => Some(Sxp::List(items)),
                        None => {
                            return Err(Error::invalid(
                                start as u64,
                                ctx(),
                                "an s-expression",
                                "')' without a matching '('",
                            ))
                        }
                    }
                }
                b'"' | b'\'' => Some(Sxp::Atom(self.string(c)?)),
                c if is_printable(c) => Some(Sxp::Atom(self.bare_atom())),
                c => {
                    return Err(Error::invalid(
                        start as u64,
                        ctx(),
                        "a printable character",
                        format!("byte 0x{c:02x}"),
                    ))
                }
            };
            if let Some(v) = done {
                match stack.last_mut() {
                    Some((_, items)) => items.push(v),
                    None => return Ok(Some(v)),
                }
            }
        }
    }

    fn bare_atom(&mut self) -> Vec<u8> {
        let start = self.pos;
        self.pos += 1;
        while let Some(c) = self.peek() {
            if is_space(c) || c == b'#' || is_separator(c) {
                break;
            }
            self.pos += 1;
        }
        // Called at a byte `peek` returned, and `pos` stops at the end:
        // the range is inside `text`.
        self.text.get(start..self.pos).unwrap_or_default().to_vec()
    }

    fn string(&mut self, delim: u8) -> Result<Vec<u8>> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        let unterminated = |pos: usize| {
            Error::invalid(
                pos as u64,
                ctx(),
                format!(
                    "{} closing the string opened at byte {open}",
                    char::from(delim)
                ),
                "end of input",
            )
        };
        loop {
            let Some(c) = self.text.get(self.pos).copied() else {
                return Err(unterminated(self.pos));
            };
            self.pos += 1;
            if c == delim {
                return Ok(out);
            }
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let esc_at = self.pos - 1;
            let Some(e) = self.text.get(self.pos).copied() else {
                return Err(unterminated(self.pos));
            };
            self.pos += 1;
            match e {
                b'a' => out.push(0x07),
                b'b' => out.push(0x08),
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'v' => out.push(0x0B),
                b'f' => out.push(0x0C),
                b'r' => out.push(b'\r'),
                b'\\' | b'\'' | b'"' => out.push(e),
                b'x' => {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < 2 {
                        let Some(d) = self
                            .text
                            .get(self.pos)
                            .and_then(|&d| char::from(d).to_digit(16))
                        else {
                            break;
                        };
                        v = v * 16 + d;
                        self.pos += 1;
                        n += 1;
                    }
                    if n == 0 {
                        return Err(Error::invalid(
                            esc_at as u64,
                            ctx(),
                            "hex digits after \\x",
                            format!(
                                "'{}'",
                                escape_char(self.text.get(self.pos).copied().unwrap_or(0))
                            ),
                        ));
                    }
                    // Two hex digits never exceed 0xFF.
                    out.push(v as u8);
                }
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    let mut n = 1;
                    while n < 3 {
                        match self.text.get(self.pos) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                self.pos += 1;
                                n += 1;
                            }
                            _ => break,
                        }
                    }
                    let byte = u8::try_from(v).map_err(|_| {
                        Error::invalid(
                            esc_at as u64,
                            ctx(),
                            "an octal escape of at most \\377",
                            format!("\\{v:o}"),
                        )
                    })?;
                    out.push(byte);
                }
                // Python keeps unknown escapes as written.
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const XEND: &str = "(domain (domid 7) (on_crash restart) (uuid 4a2c8e0e-1b0e-46b7-9c8f-000000000001) (vcpus 1) (name 'hvm guest') (memory 512) (maxmem 512) (image (hvm (kernel /usr/lib/xen/boot/hvmloader) (device_model /usr/lib/xen/bin/qemu-dm) (pae 1) (acpi 1) (apic 1) (boot c))) (device (vbd (uname file:/srv/hvm.img) (dev hda:disk) (mode w))) (start_time 1175500000.12) (cpu_weight 256) (bootloader_args '') (on_xend_start ignore) (state -b----))";

    #[test]
    fn parses_xend_config_and_looks_up_values() {
        let c = Sxp::parse(XEND.as_bytes()).unwrap();
        assert_eq!(c.name(), Some("domain"));
        assert_eq!(c.get_u64("domid"), Some(7));
        assert_eq!(c.get_u64("memory"), Some(512));
        assert_eq!(c.get_str("name"), Some("hvm guest"));
        assert_eq!(c.get_str("bootloader_args"), Some(""));
        assert_eq!(c.get_str("state"), Some("-b----"));
        assert_eq!(
            c.lookup(&["image", "hvm", "device_model"])
                .and_then(Sxp::as_str),
            Some("/usr/lib/xen/bin/qemu-dm")
        );
        assert_eq!(
            c.lookup(&["device", "vbd", "dev"]).and_then(Sxp::as_str),
            Some("hda:disk")
        );
        assert_eq!(c.get("nothing"), None);
        assert_eq!(c.children("device").count(), 1);
    }

    #[test]
    fn prints_xend_form_byte_for_byte() {
        let c = Sxp::parse(XEND.as_bytes()).unwrap();
        assert_eq!(c.to_sxp_string(), XEND);
    }

    #[test]
    fn builds_a_config_the_way_xend_printed_it() {
        let c = Sxp::list([
            Sxp::atom("domain"),
            Sxp::entry("domid", "3"),
            Sxp::entry("name", "my guest"),
            Sxp::entry("memory", "256"),
            Sxp::list([
                Sxp::atom("image"),
                Sxp::list([Sxp::atom("hvm"), Sxp::entry("pae", "1")]),
            ]),
        ]);
        assert_eq!(
            c.to_sxp_string(),
            "(domain (domid 3) (name 'my guest') (memory 256) (image (hvm (pae 1))))"
        );
        assert_eq!(c.get_u64("memory"), Some(256));
    }

    #[test]
    fn writer_quotes_like_python_repr() {
        let cases: [(&[u8], &str); 9] = [
            (b"abc", "abc"),
            (b"@", "@"),
            (b"/a/b.c:d-e_f~", "/a/b.c:d-e_f~"),
            (b"two words", "'two words'"),
            (b"it's", "\"it's\""),
            (b"both ' and \"", "'both \\' and \"'"),
            (b"tab\there\nnl\\", "'tab\\there\\nnl\\\\'"),
            (b"\x00\x7f\xff", "'\\x00\\x7f\\xff'"),
            (b"", "''"),
        ];
        for (atom, want) in cases {
            assert_eq!(Sxp::atom(atom).to_string(), want, "{atom:?}");
            assert_eq!(
                Sxp::parse(want.as_bytes()).unwrap(),
                Sxp::atom(atom),
                "{want}"
            );
        }
    }

    #[test]
    fn reader_accepts_what_xend_read() {
        let v = Sxp::parse(b" # comment\n(a \"d q\" 'x\\101\\x41\\q' (b)#c\n)").unwrap();
        assert_eq!(
            v,
            Sxp::list([
                Sxp::atom("a"),
                Sxp::atom("d q"),
                Sxp::atom(&b"xAA\\q"[..]),
                Sxp::list([Sxp::atom("b")]),
            ])
        );
        // Separators end atoms and begin new ones, as in xend's reader.
        assert_eq!(
            Sxp::parse(b"(a;b<c)").unwrap(),
            Sxp::list([Sxp::atom("a"), Sxp::atom(";b"), Sxp::atom("<c")])
        );
        assert_eq!(Sxp::parse_all(b"(a) b ()").unwrap().len(), 3);
        assert_eq!(
            Sxp::parse(b"(a)\x04garbage").unwrap(),
            Sxp::list([Sxp::atom("a")])
        );
    }

    fn err_at(text: &[u8]) -> (u64, String) {
        let e = Sxp::parse(text).unwrap_err();
        (e.offset, e.to_string())
    }

    #[test]
    fn errors_name_the_byte_offset() {
        let (off, msg) = err_at(b"(domain (name 'x)");
        assert_eq!(off, 17);
        assert!(msg.contains("string opened at byte 14"), "{msg}");
        let (off, msg) = err_at(b"(domain (memory 5)");
        assert_eq!(off, 18);
        assert!(msg.contains("list opened at byte 0"), "{msg}");
        let (off, _) = err_at(b"(a))");
        assert_eq!(off, 3);
        let (off, msg) = err_at(b"(a \x01)");
        assert_eq!(off, 3);
        assert!(msg.contains("0x01"), "{msg}");
        let (off, _) = err_at(b"('\\xZZ')");
        assert_eq!(off, 2);
        let (off, _) = err_at(b"('\\777')");
        assert_eq!(off, 2);
        let (off, msg) = err_at(b"(a) (b)");
        assert_eq!(off, 4);
        assert!(msg.contains("end of input after"), "{msg}");
        let (off, _) = err_at(b"   ");
        assert_eq!(off, 3);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = vec![b'('; 100_000];
        let (off, msg) = err_at(&text);
        assert_eq!(off, MAX_DEPTH as u64);
        assert!(msg.contains("nested"), "{msg}");
        let ok = format!("{}{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Sxp::parse(ok.as_bytes()).is_ok());
    }

    fn arb_sxp() -> impl Strategy<Value = Sxp> {
        let leaf = prop_oneof![
            "[a-z0-9._:/~-]{1,8}".prop_map(Sxp::atom),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Sxp::Atom),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Sxp::List)
        })
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(v in arb_sxp()) {
            let text = v.to_string();
            prop_assert!(text.is_ascii());
            prop_assert!(!text.contains('\n'));
            let back = Sxp::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Sxp::parse(&bytes);
            let _ = Sxp::parse_all(&bytes);
        }
    }
}

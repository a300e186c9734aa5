//! The module graph of `hvm-format` and `hvm-inspect` has no cycle, and
//! `hvm-format`'s layers depend only downward: diag → codec → analysis.
//!
//! The graph is read from the sources, not from the compiler: every path
//! that starts with `crate::` (or `$crate::`, or `super::` that climbs to
//! the crate root), in `use` lines and in bodies alike, is an edge from the
//! file's module to the module the path names. A node is a *top-level*
//! module (`stream`, `hvm`, …): its submodules may use one another and
//! their parent freely, which is how Rust modules are built, so only edges
//! between different top-level modules count. Left out on purpose:
//! comments (doc links are not dependencies), `#[cfg(test)]` items and
//! `tests.rs` files (tests may reach anywhere), and the crate root
//! `lib.rs`, which only declares and re-exports. A path through a root
//! re-export (`crate::WordSize`) is followed to the module `lib.rs`
//! re-exports it from; a name that resolves to nothing fails the test,
//! so an edge cannot go unseen.
//!
//! `hvm-inspect` is read from `../inspect/src`, next to this crate in the
//! workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `hvm-format`'s layers, lowest first. A module may use its own layer
/// and those below it, never one above.
const FORMAT_LAYERS: &[(&str, &[&str])] = &[
    ("diag", &["diag", "error", "bytes"]),
    (
        "codec",
        &[
            "pfn", "layout", "fields", "envelope", "stream", "legacy", "vcpu", "hvm", "v2",
        ],
    ),
    (
        "analysis",
        &[
            "rules", "index", "digest", "dialect", "image", "manifest", "mapped",
        ],
    ),
];

/// An edge and where it was seen (`file:line`), for the failure message.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn format_modules_form_no_cycle() {
    let g = graph(&src_dir("."));
    assert_acyclic("hvm-format", &g);
}

#[test]
fn format_layers_depend_only_downward() {
    let g = graph(&src_dir("."));
    let rank = |m: &str| {
        FORMAT_LAYERS
            .iter()
            .position(|(_, ms)| ms.contains(&m))
            .unwrap_or_else(|| panic!("module `{m}` is in no layer of FORMAT_LAYERS: place it"))
    };
    let mut bad = Vec::new();
    for (from, tos) in &g {
        for (to, at) in tos {
            let (rf, rt) = (rank(from), rank(to));
            if rt > rf {
                bad.push(format!(
                    "{from} ({}) uses {to} ({}) at {at}",
                    FORMAT_LAYERS[rf].0, FORMAT_LAYERS[rt].0
                ));
            }
        }
    }
    // Every module in the graph was placed by `rank` above; the diag
    // layer must also exist and use nothing outside itself.
    assert!(g.contains_key("diag"), "no diag module found");
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn inspect_modules_form_no_cycle() {
    let g = graph(&src_dir("../inspect"));
    assert!(g.contains_key("convert"), "inspect's sources were not read");
    assert_acyclic("hvm-inspect", &g);
}

/// The parser itself must see the edges it claims to: a grouped import,
/// a `super::` that climbs to the root, a root re-export, and not a
/// commented-out or test-only one.
#[test]
fn reader_sees_the_paths_rust_has() {
    let root = "pub mod a;\npub mod b;\npub mod c;\npub use c::Thing;\n";
    let reexports = root_reexports(root);
    let mods: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{b::X, self as _};\n// use crate::c::Y;\n\
                fn f() { super::c::g(); }\n#[cfg(test)]\nmod tests { use crate::c::Z; }\n\
                fn h() -> crate::Thing { make() }\n";
    let found = edges_of(&strip(text), &["a".into()], &mods, &reexports, root, "a.rs");
    let names: BTreeSet<&str> = found.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["b", "c"].into_iter().collect());
    let only_test = "#[cfg(test)]\nmod tests {\n use crate::b::X;\n}\n";
    assert!(edges_of(only_test, &["a".into()], &mods, &reexports, root, "a.rs").is_empty());
}

/// Prints the graphs `docs/architecture.md` describes:
/// `cargo test -p hvm-format --test layers -- --ignored --nocapture`.
#[test]
#[ignore = "prints the module graphs; run by hand"]
fn print_graphs() {
    for dir in [".", "../inspect"] {
        println!("{dir}:");
        for (from, tos) in graph(&src_dir(dir)) {
            let tos: Vec<&str> = tos.keys().map(String::as_str).collect();
            println!("  {from} → {}", tos.join(", "));
        }
    }
}

fn src_dir(crate_dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(crate_dir)
        .join("src")
}

fn assert_acyclic(name: &str, g: &Graph) {
    if let Some(cycle) = find_cycle(g) {
        let mut lines = Vec::new();
        for w in cycle.windows(2) {
            lines.push(format!("  {} → {}   ({})", w[0], w[1], g[&w[0]][&w[1]]));
        }
        panic!(
            "{name}: import cycle {}\n{}",
            cycle.join(" → "),
            lines.join("\n")
        );
    }
}

/// A cycle as a closed list of modules (first = last), if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    // 0 = unseen, 1 = on the current path, 2 = done.
    fn visit(
        g: &Graph,
        n: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flat_map(|t| t.keys()) {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = path.iter().position(|p| p == m).unwrap();
                    let mut c = path[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(g, m, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, n, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The crate's module graph, between top-level modules.
fn graph(src: &Path) -> Graph {
    let root = strip(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let reexports = root_reexports(&root);
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut mods: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(src, f).first().cloned())
        .collect();
    // Modules written inline in lib.rs (`pub mod json { … }`).
    let inline = inline_modules(&drop_test_items(&root));
    mods.extend(inline.iter().map(|(n, _)| n.clone()));
    let mut g = Graph::new();
    for m in &mods {
        g.entry(m.clone()).or_default();
    }
    let mut add = |from: &str, text: &str, modpath: &[String], file: &str| {
        for (to, at) in edges_of(text, modpath, &mods, &reexports, &root, file) {
            if to != from {
                g.entry(from.to_string())
                    .or_default()
                    .entry(to)
                    .or_insert(at);
            }
        }
    };
    for f in &files {
        let path = module_path(src, f);
        if path.is_empty() || path.last().map(String::as_str) == Some("tests") {
            continue;
        }
        let text = strip(&std::fs::read_to_string(f).unwrap());
        let name = f.strip_prefix(src).unwrap().display().to_string();
        add(&path[0], &text, &path, &name);
    }
    for (name, body) in &inline {
        add(name, body, std::slice::from_ref(name), "lib.rs");
    }
    g
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `stream/reader.rs` → `[stream, reader]`; `stream/mod.rs` → `[stream]`;
/// `lib.rs` and `main.rs` (the roots) → `[]`.
fn module_path(src: &Path, f: &Path) -> Vec<String> {
    let rel = f.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// `pub use m::{A, B};` / `pub use m::A;` in the root: name → module.
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in root.split(';') {
        let s = stmt.trim();
        let Some(rest) = s.strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest
            .trim_start_matches("crate::")
            .trim_start_matches("self::");
        let Some((m, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for n in names.split(',') {
            let n = n.trim();
            let n = n.rsplit(" as ").next().unwrap().trim();
            let n = n.rsplit("::").next().unwrap().trim();
            if !n.is_empty() {
                out.insert(n.to_string(), m.trim().to_string());
            }
        }
    }
    out
}

/// `mod name { … }` blocks at the top of the root file.
fn inline_modules(root: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = root.as_bytes();
    let mut i = 0;
    while let Some(k) = root[i..].find("mod ") {
        let at = i + k;
        i = at + 4;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let name: String = root[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = root[i + name.len()..].trim_start();
        if after.starts_with('{') {
            let open = root.len() - after.len();
            let close = matching(root, open);
            out.push((name, root[open + 1..close].to_string()));
            i = close;
        }
    }
    out
}

/// Every other top-level module `text` names, with the first `file:line`.
fn edges_of(
    text: &str,
    modpath: &[String],
    mods: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
    root: &str,
    file: &str,
) -> Vec<(String, String)> {
    let text = drop_test_items(text);
    let mut out: Vec<(String, String)> = Vec::new();
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let starts = |w: &str| text[i..].starts_with(w) && (i == 0 || !ident(b[i - 1]));
        let (names, end) = if starts("crate::") {
            first_segments(&text, i + "crate::".len())
        } else if starts("super::") {
            let mut j = i;
            let mut ups = 0;
            while text[j..].starts_with("super::") {
                ups += 1;
                j += "super::".len();
            }
            if ups < modpath.len() {
                i = j;
                continue; // stays inside this top-level module
            }
            first_segments(&text, j)
        } else {
            i += 1;
            continue;
        };
        let line = text[..i].matches('\n').count() + 1;
        for n in names {
            let target = if mods.contains(&n) {
                n
            } else if let Some(m) = reexports.get(&n) {
                m.clone()
            } else if defined_in_root(root, &n) {
                continue; // an item of the root itself
            } else {
                panic!("{file}:{line}: `{n}` names no module and no root re-export");
            };
            if !out.iter().any(|(m, _)| *m == target) {
                out.push((target, format!("{file}:{line}")));
            }
        }
        i = end.max(i + 1);
    }
    out
}

fn defined_in_root(root: &str, name: &str) -> bool {
    [
        "fn ",
        "const ",
        "static ",
        "struct ",
        "enum ",
        "type ",
        "trait ",
        "macro_rules! ",
    ]
    .iter()
    .any(|k| {
        root.match_indices(&format!("{k}{name}")).any(|(at, _)| {
            let end = at + k.len() + name.len();
            !root[end..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// After `crate::` at `at`: the first segment, or each entry's first
/// segment of a `{ … }` group. Returns them and where the path ends.
fn first_segments(text: &str, at: usize) -> (Vec<String>, usize) {
    let word = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if text[at..].starts_with('{') {
        let close = matching(text, at);
        let mut names = Vec::new();
        let inner = &text[at + 1..close];
        let mut depth = 0;
        let mut start = 0;
        for (k, c) in inner
            .char_indices()
            .chain(std::iter::once((inner.len(), ',')))
        {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let w = word(&inner[start..k]);
                    if !w.is_empty() && w != "self" {
                        names.push(w);
                    }
                    start = k + 1;
                }
                _ => {}
            }
        }
        (names, close + 1)
    } else {
        let w = word(&text[at..]);
        let end = at + w.len();
        (vec![w], end)
    }
}

/// Index of the `}` matching the `{` at `open`.
fn matching(text: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (k, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + k;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces after byte {open}")
}

/// Blank out each item under `#[cfg(test)]` (to its `;` or its closing
/// brace), keeping line numbers.
fn drop_test_items(text: &str) -> String {
    let mut s = text.to_string();
    while let Some(at) = s.find("#[cfg(test)]") {
        let body = at + "#[cfg(test)]".len();
        let semi = s[body..].find(';').map(|k| body + k);
        let brace = s[body..].find('{').map(|k| body + k);
        let end = match (semi, brace) {
            (Some(x), Some(y)) if x < y => x,
            (_, Some(y)) => matching(&s, y),
            (Some(x), None) => x,
            (None, None) => s.len() - 1,
        };
        let blank: String = s[at..=end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        s.replace_range(at..=end, &blank);
    }
    s
}

/// Comments, string and char literals blanked out (their newlines kept),
/// so that neither a doc link nor a message mentioning `crate::` counts,
/// and braces inside strings do not unbalance the item scanner.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
            && matches!(c.get(i + 1), Some('#') | Some('"'))
        {
            // raw string r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            for &ch in &c[i..j] {
                if ch == '\n' {
                    out.push('\n');
                }
            }
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                if c[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            out.push_str("\"\"");
            for &ch in &c[i..j.min(c.len())] {
                if ch == '\n' {
                    out.push('\n');
                }
            }
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

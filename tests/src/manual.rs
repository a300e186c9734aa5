//! Checks of a tool's `--completions` and `--man` against its `--help`.
//!
//! `--help` is the independent witness: the subcommands and long options
//! it lists (for the tool and, recursively, every subcommand) must all be in
//! the bash completion script and in the man page, and the page must be
//! the tool's own. Each CLI's `tests/manual.rs` calls [`check`] on its
//! binary.

use std::path::Path;
use std::process::{Command, Output};

/// What `--help` shows: every subcommand path (`["show", "page"]`) and
/// every long option (`--strict`), of the tool and its subcommands.
#[derive(Debug, Default)]
pub struct Surface {
    /// Subcommand paths, depth first; clap's `help` left out.
    pub subcommands: Vec<Vec<String>>,
    /// Long options, without repeats.
    pub options: Vec<String>,
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// Read the surface from `bin [path] --help`, recursively.
pub fn surface(bin: &Path) -> Surface {
    let mut s = Surface::default();
    walk(bin, &[], &mut s);
    s
}

fn walk(bin: &Path, path: &[String], s: &mut Surface) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = run(bin, &args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    let mut section = "";
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        let t = line.trim_start();
        // A command starts two columns in, an option two or six (without
        // a short form); deeper lines continue their text.
        let indent = line.len() - t.len();
        if indent != 2 && !(indent == 6 && t.starts_with("--")) {
            continue;
        }
        match section {
            "Commands:" => {
                let name = t.split_whitespace().next().unwrap_or_default();
                if name != "help" {
                    let mut p = path.to_vec();
                    p.push(name.to_string());
                    s.subcommands.push(p.clone());
                    walk(bin, &p, s);
                }
            }
            "Options:" | "Arguments:" => {
                // The option's spec, before the two spaces that start its help.
                let spec = t.split("  ").next().unwrap_or_default();
                for word in spec.split([' ', ',', '=']) {
                    if let Some(long) = word.strip_prefix("--") {
                        let opt = format!("--{long}");
                        if !s.options.contains(&opt) {
                            s.options.push(opt);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// `text` with dashes as roff writes them.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

/// Check `bin`'s completions and man page against its `--help`; `name` is
/// the tool's name. Returns the surface so a caller can check it is the
/// one it expects.
pub fn check(bin: &Path, name: &str) -> Surface {
    let s = surface(bin);
    assert!(
        s.options.iter().any(|o| o == "--completions") && s.options.iter().any(|o| o == "--man"),
        "{name} --help lists --completions and --man: {s:?}"
    );

    // Bash completion, with no other argument even where the tool needs
    // an image.
    let out = run(bin, &["--completions", "bash"]);
    assert!(out.status.success(), "{name} --completions bash: {out:?}");
    let bash = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        bash.contains("complete -F _") && bash.contains(name),
        "{bash}"
    );
    for p in &s.subcommands {
        let sub = p.last().expect("non-empty path");
        assert!(
            bash.contains(sub.as_str()),
            "{name}: subcommand {p:?} missing from bash completion"
        );
    }
    for o in &s.options {
        assert!(
            bash.contains(o.as_str()),
            "{name}: {o} missing from bash completion"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(bin, &["--completions", shell]);
        assert!(
            out.status.success(),
            "{name} --completions {shell}: {out:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(name),
            "{shell}"
        );
    }

    // The man page: roff, titled with this tool's name, every option and
    // every subcommand by its full name.
    let out = run(bin, &["--man"]);
    assert!(out.status.success(), "{name} --man: {out:?}");
    let man = String::from_utf8(out.stdout).expect("utf-8");
    let th = format!(".TH {} 1 ", name.to_uppercase());
    assert!(
        man.starts_with(&th),
        "{name} --man starts with {th:?}:\n{man}"
    );
    assert!(
        man.contains("\n.SH NAME\n") && man.contains("\n.SH OPTIONS\n"),
        "{man}"
    );
    for o in &s.options {
        let r = roff(o);
        assert!(
            man.contains(&format!("\\fB{r}\\fR")),
            "{name}: {o} missing from the man page"
        );
    }
    for p in &s.subcommands {
        let full = roff(&format!("{name} {}", p.join(" ")));
        assert!(
            man.contains(&format!("\\fB{full}\\fR")),
            "{name}: {p:?} missing from the man page"
        );
    }

    // Exclusive: they refuse other arguments, as a usage error.
    for args in [&["--man", "x"][..], &["--completions", "bash", "--man"]] {
        let out = run(bin, args);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{name} {args:?} printed {out:?}");
    }
    s
}

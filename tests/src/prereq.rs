//! Prerequisites of tests (`/dev/kvm`, the Xen oracle, Chromium): skip
//! loudly, or fail.
//!
//! A skipped test passes in libtest's eyes, and libtest swallows what a
//! passing test prints, so a skip is made visible twice: each one appends
//! a line to the file `HVM_SKIP_LOG` names (scripts/test.sh counts them and
//! prints the count at the end), and when `HVM_REQUIRE` (a comma-separated
//! list, e.g. `kvm,xen-oracle,forensic-tools`; `.ci/run` sets it) names the missing
//! prerequisite the test panics instead, so a broken setup cannot pass.

use std::io::Write;

/// `/dev/kvm`.
pub const KVM: &str = "kvm";
/// Xen's verify-stream-v2 / convert-legacy-stream under target/xen-oracle.
pub const XEN_ORACLE: &str = "xen-oracle";
/// A headless `chromium` on PATH (renders `hvm-inspect plot`'s SVGs);
/// scripts/setup.sh installs Debian's only when `HVM_REQUIRE` names it.
pub const CHROMIUM: &str = "chromium";
/// binutils' readelf, gdb, and pyelftools and volatility3 in
/// target/forensic-venv (`HVM_SETUP_FORENSIC=1 scripts/setup.sh`): the
/// consumers `hvm-inspect extract`'s outputs are checked with.
pub const FORENSIC_TOOLS: &str = "forensic-tools";
/// Every prerequisite `HVM_REQUIRE` may name.
pub const KNOWN: [&str; 4] = [KVM, XEN_ORACLE, FORENSIC_TOOLS, CHROMIUM];

/// The prerequisites `require` (HVM_REQUIRE's value) names. An unknown
/// name is an error: a typo must not quietly turn a requirement off.
pub(crate) fn parse_require(require: &str) -> Result<Vec<&str>, String> {
    require
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if KNOWN.contains(&s) {
                Ok(s)
            } else {
                Err(format!(
                    "HVM_REQUIRE names {s:?}; known prerequisites are {KNOWN:?}"
                ))
            }
        })
        .collect()
}

/// Whether the environment's `HVM_REQUIRE` names `prereq`. Panics on an
/// unknown name in it.
pub fn required(prereq: &str) -> bool {
    let v = std::env::var("HVM_REQUIRE").unwrap_or_default();
    match parse_require(&v) {
        Ok(names) => names.contains(&prereq),
        Err(e) => panic!("{e}"),
    }
}

/// The missing `prereq` of `test`, for `why`: panics when `HVM_REQUIRE`
/// names it; otherwise prints a loud SKIPPED line and appends it to the
/// file `HVM_SKIP_LOG` names (an unwritable log is a failure too: the
/// count would be wrong).
pub fn skip(prereq: &str, test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why} (prerequisite {prereq})");
    if required(prereq) {
        panic!("{line}, but HVM_REQUIRE names {prereq}: this test must run here");
    }
    eprintln!("\n*** {line} ***\n");
    println!("{line}");
    if let Some(path) = std::env::var_os("HVM_SKIP_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("HVM_SKIP_LOG {}: {e}", path.to_string_lossy()));
        // One write of one line: appends from parallel tests do not interleave.
        f.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("HVM_SKIP_LOG {}: {e}", path.to_string_lossy()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_lists_parse_and_typos_are_errors() {
        assert_eq!(parse_require("").unwrap(), Vec::<&str>::new());
        assert_eq!(
            parse_require("kvm, xen-oracle").unwrap(),
            vec!["kvm", "xen-oracle"]
        );
        assert_eq!(parse_require("kvm").unwrap(), vec!["kvm"]);
        assert_eq!(
            parse_require("kvm,xen-oracle,chromium").unwrap(),
            vec!["kvm", "xen-oracle", "chromium"]
        );
        assert!(parse_require("kvm,xen_oracle").is_err());
        assert!(parse_require("all").is_err());
    }
}

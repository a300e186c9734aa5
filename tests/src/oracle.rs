//! Xen's own Python tools as an external oracle (docs/format.md §9):
//! `verify-stream-v2` and `convert-legacy-stream` from Debian's
//! xen-utils-4.17, unpacked (never installed) by
//! `scripts/install-xen-oracle.sh` into `target/xen-oracle`, or wherever
//! `HVM_XEN_ORACLE` points.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The unpacked tools.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// `…/usr/lib/xen-4.x/bin`.
    pub bin: PathBuf,
    /// What `PYTHONPATH` must be for the `xen.migration` package.
    pub pythonpath: PathBuf,
}

impl Oracle {
    /// Find the tools, or `None` when they are not unpacked.
    pub fn find() -> Option<Oracle> {
        let dir = std::env::var_os("HVM_XEN_ORACLE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join("target")
                    .join("xen-oracle")
            });
        let mut xens: Vec<PathBuf> = std::fs::read_dir(dir.join("usr").join("lib"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("xen-"))
            .map(|e| e.path())
            .collect();
        xens.sort();
        let xen = xens.pop()?;
        let bin = xen.join("bin");
        let pythonpath = xen.join("lib").join("python");
        (bin.join("verify-stream-v2").is_file()
            && bin.join("convert-legacy-stream").is_file()
            && pythonpath.join("xen").join("migration").is_dir())
        .then_some(Oracle { bin, pythonpath })
    }

    /// Run `tool ARGS…`; returns (exit code, stdout + stderr).
    pub fn run(&self, tool: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new("python3")
            .arg(self.bin.join(tool))
            .args(args)
            .env("PYTHONPATH", &self.pythonpath)
            .output()
            .expect("python3 runs");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Run `verify-stream-v2 -v -f FORMAT` on `stream` through standard
    /// input; returns (exit code, stdout, stderr).
    pub fn verify_stdin(&self, format: &str, stream: &[u8]) -> (i32, String, String) {
        let mut child = Command::new("python3")
            .arg(self.bin.join("verify-stream-v2"))
            .args(["-v", "-f", format])
            .env("PYTHONPATH", &self.pythonpath)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = stream.to_vec();
        // A separate writer thread: the verifier may stop reading early.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().expect("verify-stream-v2 finishes");
        feeder.join().expect("feeder thread");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The oracle, or skip the test ([`crate::prereq::skip`]: a loud SKIPPED
/// line and the skip log, or a failure when `HVM_REQUIRE` names
/// `xen-oracle`) and return from it.
#[macro_export]
macro_rules! oracle_or_skip {
    () => {
        match $crate::oracle::Oracle::find() {
            Some(o) => o,
            None => {
                $crate::prereq::skip(
                    $crate::prereq::XEN_ORACLE,
                    concat!(module_path!(), " line ", line!()),
                    "Xen oracle not installed (run scripts/install-xen-oracle.sh)",
                );
                return;
            }
        }
    };
}

//! What every inspector bench reads from its command line and environment.

use std::path::PathBuf;

/// `HVM_BENCH_MIB` (guest size, default 1024), `HVM_BENCH_RUNS` (median
/// over this many, default `runs`), `HVM_BENCH_DIR` (scratch files,
/// default the system temp dir).
pub struct Settings {
    pub mib: u64,
    pub runs: usize,
    pub dir: PathBuf,
}

impl Settings {
    /// `None` when `cargo bench` was given a filter that does not name
    /// `bench` (it passes `--bench`; any other word is a filter).
    pub fn for_bench(bench: &str, runs: usize) -> Option<Settings> {
        if std::env::args()
            .skip(1)
            .any(|a| !a.starts_with('-') && !bench.contains(a.as_str()))
        {
            return None;
        }
        let var = |name: &str| std::env::var(name).ok();
        Some(Settings {
            mib: var("HVM_BENCH_MIB")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1024),
            runs: var("HVM_BENCH_RUNS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(runs),
            dir: var("HVM_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        })
    }
}

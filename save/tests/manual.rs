//! `hvm-save --completions SHELL` and `--man` cover every option `--help`
//! lists, and need no backend or output.

use std::path::Path;

#[test]
fn completions_and_man_page_cover_every_option_without_a_backend() {
    let s = hvm_tests::manual::check(Path::new(env!("CARGO_BIN_EXE_hvm-save")), "hvm-save");
    for o in [
        "--sim",
        "--kvm",
        "--live",
        "--output",
        "--force",
        "--policy",
        "--envelope",
    ] {
        assert!(s.options.iter().any(|q| q == o), "{o} in {s:?}");
    }
}

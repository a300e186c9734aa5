//! `hvm-restore-check --completions SHELL` and `--man` cover every option
//! `--help` lists, and need no image although the check requires one.

use std::path::Path;

#[test]
fn completions_and_man_page_cover_every_option_without_an_image() {
    let bin = Path::new(env!("CARGO_BIN_EXE_hvm-restore-check"));
    let s = hvm_tests::manual::check(bin, "hvm-restore-check");
    for o in [
        "--expect",
        "--resume",
        "--steps",
        "--spool-limit",
        "--xen-word",
    ] {
        assert!(s.options.iter().any(|q| q == o), "{o} in {s:?}");
    }
    assert!(s.subcommands.is_empty(), "{s:?}");
}

//! `hvm-inspect --completions SHELL` and `--man` cover every subcommand and
//! option `--help` lists, and need no image.

use std::path::Path;

#[test]
fn completions_and_man_page_cover_every_subcommand_and_option() {
    let s = hvm_tests::manual::check(Path::new(env!("CARGO_BIN_EXE_hvm-inspect")), "hvm-inspect");
    // The witness read the real surface, so the checks were not vacuous.
    for p in [
        &["convert"][..],
        &["show", "page"],
        &["validate"],
        &["diff"],
    ] {
        assert!(s.subcommands.iter().any(|q| q == p), "{p:?} in {s:?}");
    }
    for o in [
        "--json",
        "--strict",
        "--to",
        "--force",
        "--workers",
        "--spool-limit",
    ] {
        assert!(s.options.iter().any(|q| q == o), "{o} in {s:?}");
    }
}

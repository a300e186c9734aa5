//! # hvm-cli
//!
//! The edge every hvm command-line tool shares with the operating system,
//! kept in one place so the promise of the README holds for all of them: a
//! failed or interrupted run leaves nothing behind and never overwrites what
//! the user did not name with `--force`.
//!
//! * [`output`]: every file a tool writes (images, converted images,
//!   manifests, stats): atomic, 0600, refusing to overwrite, refusing a
//!   target that is an input or another output of the same run, cleaning up
//!   the temporaries of killed runs.
//! * [`stdout`]: reports on standard output whose write errors are errors
//!   (a full disk exits 2; a closed pipe ends the run quietly, by SIGPIPE).
//! * [`signal`]: INT, TERM and HUP as a cancel flag, or as "remove my
//!   temporaries and die".
//! * [`bounded`]: writes to pipes and sockets that honour the cancel flag
//!   and time out when the reader stops reading.
//! * [`manual`]: `--completions SHELL` and `--man`, generated from each
//!   tool's clap definition ([`manual::parse`] replaces `Parser::parse`).

#![warn(missing_docs)]
pub mod bounded;
pub mod manual;
pub mod output;
pub mod signal;
pub mod stdout;

pub use output::{AtomicFile, OutputError, Outputs};

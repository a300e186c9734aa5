//! Reports on standard output and messages on standard error.
//!
//! `println!` panics when standard output is closed or full, and ignoring
//! the error instead exits 0 with the report lost. Here a write error is an
//! error: a reader that went away (EPIPE, `| head`) ends the run quietly by
//! SIGPIPE, as Unix tools do; any other (a full disk) is one line on stderr
//! and exit status 2 ([`Failure`]).

use std::io::{self, Write};

/// Writing the report failed.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct Failure(#[from] pub io::Error);

impl Failure {
    /// True when the reader went away: not worth a message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Write `bytes` to standard output and flush.
pub fn write(bytes: &[u8]) -> Result<(), Failure> {
    let mut so = io::stdout().lock();
    so.write_all(bytes)?;
    so.flush()?;
    Ok(())
}

/// End the process as a Unix tool whose reader went away: by SIGPIPE
/// (status 141 in the shell), without a message.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default action and raising the signal is how a
    // process ends "by SIGPIPE"; nothing else runs afterwards.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Report a failed report write and return the exit status (2), or end
/// the run quietly for a closed pipe.
pub fn fail(program: &str, f: &Failure) -> u8 {
    if f.is_broken_pipe() {
        die_of_sigpipe();
    }
    warn(format_args!("{program}: {f}"));
    2
}

/// One line on standard error; a closed or full stderr is ignored (there is
/// nowhere left to report it, and it must not turn a finished run into a
/// panic).
pub fn warn(msg: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(msg).and_then(|_| e.write_all(b"\n"));
}

//! Where the image goes: a file written atomically, stdout, or a TCP peer.
//!
//! A file goes through [`hvm_cli::output`]: written under a temporary name
//! beside its target (mode 0600 from creation: images hold guest secrets),
//! fsync'd, and only then given its name, together with its manifest and
//! stats. An image that is not complete never carries the target's name,
//! and a failed save leaves nothing behind.
//!
//! Standard output and TCP are written through [`hvm_cli::bounded::Bounded`]:
//! a reader that stops reading fails the save after the I/O timeout, and
//! INT, TERM and HUP end a blocked write. A TCP save that fails or is
//! cancelled is closed with a reset (`SO_LINGER` 0), so the receiver sees
//! "connection reset", never a normal end of stream.

use std::io::{self, IoSlice, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hvm_cli::bounded::Bounded;
pub use hvm_cli::output::{commit_all, AtomicFile, OutputError};

/// Any destination of an image.
#[derive(Debug)]
pub enum Sink {
    /// `-o FILE`.
    File(AtomicFile),
    /// `-o -`: a duplicate of descriptor 1 (unbuffered), and, when it is a
    /// regular file, where the image started in it.
    Stdout(Bounded<std::fs::File>, Option<u64>),
    /// `--to HOST:PORT`.
    Tcp(Bounded<TcpStream>),
}

impl Sink {
    /// An atomic file (refusing an existing one without `force`).
    pub fn file(path: &Path, force: bool) -> Result<Self, OutputError> {
        AtomicFile::create(path, force).map(Sink::File)
    }

    /// Standard output (a pipe or a file the shell opened); a write makes
    /// no progress for at most `timeout`, and `cancel` ends it. A regular
    /// file is cut back to where the image started if the save fails.
    pub fn stdout(cancel: Option<Arc<AtomicBool>>, timeout: Duration) -> io::Result<Self> {
        use std::io::Seek;
        use std::os::fd::AsFd;
        let mut f = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        // SAFETY: F_GETFL on the descriptor just duplicated.
        let append = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) } & libc::O_APPEND != 0;
        let start = match f.metadata() {
            // `>>`: the image starts at the end, wherever the offset is.
            Ok(m) if m.is_file() && append => Some(m.len()),
            Ok(m) if m.is_file() => f.stream_position().ok(),
            _ => None,
        };
        Ok(Sink::Stdout(Bounded::new(f, cancel, timeout), start))
    }

    /// A TCP connection to `addr` (`HOST:PORT`), each address tried for at
    /// most `timeout`; writes bounded as for [`stdout`](Self::stdout).
    pub fn tcp(addr: &str, cancel: Option<Arc<AtomicBool>>, timeout: Duration) -> io::Result<Self> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Ok(Sink::Tcp(Bounded::new(s, cancel, timeout))),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to")))
    }

    /// The image is complete: make it durable and visible.
    pub fn commit(self) -> Result<(), OutputError> {
        self.commit_with(Vec::new())
    }

    /// [`commit`](Self::commit) together with `with` (manifest, stats),
    /// which are renamed before the image. For a stream, `with` is
    /// committed after the stream ended cleanly.
    pub fn commit_with(self, mut with: Vec<AtomicFile>) -> Result<(), OutputError> {
        let stream = |e| OutputError::Io {
            op: "finishing",
            path: "the image stream".into(),
            source: e,
        };
        match self {
            Sink::File(f) => {
                with.push(f);
                return commit_all(with);
            }
            Sink::Stdout(mut s, _) => s.flush().map_err(stream)?,
            Sink::Tcp(mut t) => {
                t.flush().map_err(stream)?;
                t.get_ref()
                    .shutdown(std::net::Shutdown::Write)
                    .map_err(stream)?;
            }
        }
        commit_all(with)
    }

    /// The save failed: remove the partial file (or cut standard output,
    /// when it is a file, back to where the image started); reset the
    /// connection so the receiver cannot take the partial stream for a
    /// finished one.
    pub fn abort(self) {
        match &self {
            Sink::Tcp(t) => reset_on_close(t.get_ref()),
            Sink::Stdout(s, Some(start)) => {
                let _ = s.get_ref().set_len(*start);
            }
            _ => {}
        }
        drop(self);
    }
}

/// `SO_LINGER` 0: closing sends a reset, not a FIN.
fn reset_on_close(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s, _) => s.write(buf),
            Sink::Tcp(t) => t.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write_vectored(bufs),
            Sink::Stdout(s, _) => s.write_vectored(bufs),
            Sink::Tcp(t) => t.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s, _) => s.flush(),
            Sink::Tcp(t) => t.flush(),
        }
    }
}

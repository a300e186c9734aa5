//! Writes to pipes and sockets that a signal or a stalled reader cannot
//! block forever.
//!
//! A blocking write(2) to a pipe whose reader stopped reading, or to a TCP
//! peer that stopped acknowledging, sleeps until the reader moves: SIGINT
//! and SIGTERM only set a flag, and the write restarts. [`Bounded`] waits in
//! poll(2) in slices of at most 100 ms, checks the cancel flag between
//! them, fails with `TimedOut` after `timeout` without progress, and then
//! writes only what cannot block: a socket with `MSG_DONTWAIT`, a pipe in
//! `O_NONBLOCK` mode (set while the writer lives, the old flags restored
//! when it is dropped). Regular files and terminals are written as they are.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the descriptor is, which decides how to write without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A socket: `send(MSG_DONTWAIT)`.
    Socket,
    /// A pipe or FIFO: one page at a time after poll.
    Pipe,
    /// Anything else: written directly.
    Other,
}

impl Kind {
    /// The kind of an open descriptor.
    pub fn of(fd: RawFd) -> Kind {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat fills the buffer we own; read only on success.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return Kind::Other;
        }
        // SAFETY: fstat succeeded.
        let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
        match mode {
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFIFO => Kind::Pipe,
            _ => Kind::Other,
        }
    }
}

/// The longest a write waits before looking at the cancel flag again.
const SLICE: Duration = Duration::from_millis(100);

/// A writer over a pipe or socket bounded by a cancel flag and a timeout.
#[derive(Debug)]
pub struct Bounded<F: AsRawFd> {
    inner: F,
    kind: Kind,
    cancel: Option<Arc<AtomicBool>>,
    timeout: Duration,
    /// A pipe's file status flags before `O_NONBLOCK` was added.
    restore: Option<libc::c_int>,
}

impl<F: AsRawFd> Drop for Bounded<F> {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: F_SETFL on the descriptor `inner` still owns.
            unsafe {
                libc::fcntl(self.inner.as_raw_fd(), libc::F_SETFL, flags);
            }
        }
    }
}

impl<F: AsRawFd + Write> Bounded<F> {
    /// Wrap `inner`; `timeout` is the longest a write may make no progress.
    pub fn new(inner: F, cancel: Option<Arc<AtomicBool>>, timeout: Duration) -> Self {
        let fd = inner.as_raw_fd();
        let mut kind = Kind::of(fd);
        let mut restore = None;
        if kind == Kind::Pipe {
            // SAFETY: F_GETFL/F_SETFL on an open descriptor.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags >= 0
                // SAFETY: as above.
                && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == 0
            {
                restore = Some(flags);
            } else {
                // Cannot be made non-blocking: written as it is.
                kind = Kind::Other;
            }
        }
        Bounded {
            inner,
            kind,
            cancel,
            timeout,
            restore,
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &F {
        &self.inner
    }

    /// What the descriptor was found to be.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Wait until `fd` is writable, the flag is set or the timeout passes.
    fn wait(&self) -> io::Result<()> {
        let start = Instant::now();
        loop {
            if self.cancelled() {
                return Err(io::Error::other("interrupted by a signal"));
            }
            let left = self.timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no progress for {} s: the receiver stopped reading (--io-timeout)",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            let mut p = libc::pollfd {
                fd: self.inner.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.min(SLICE).as_millis().max(1) as libc::c_int;
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Writable, or an error/hangup the write itself will report.
            if r > 0 {
                return Ok(());
            }
        }
    }
}

impl<F: AsRawFd + Write> Write for Bounded<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.kind == Kind::Other {
            return self.inner.write(buf);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let fd = self.inner.as_raw_fd();
        loop {
            self.wait()?;
            // SAFETY: `buf` is valid for the length passed; the fd is open
            // for as long as `inner` lives.
            let n = unsafe {
                match self.kind {
                    Kind::Socket => libc::send(
                        fd,
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    ),
                    _ => libc::write(fd, buf.as_ptr().cast(), buf.len()),
                }
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if self.kind == Kind::Other {
            return self.inner.write_vectored(bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.write(first)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.kind == Kind::Other {
            return self.inner.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_peer_that_stops_reading_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut w = Bounded::new(a, None, Duration::from_millis(300));
        assert_eq!(w.kind(), Kind::Socket);
        let start = Instant::now();
        let buf = vec![0u8; 1 << 20];
        let e = loop {
            if let Err(e) = w.write(&buf) {
                break e;
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let t = start.elapsed();
        assert!(t < Duration::from_secs(5), "{t:?}");
    }

    #[test]
    fn the_cancel_flag_ends_a_blocked_write() {
        let (a, _b) = UnixStream::pair().unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let mut w = Bounded::new(a, Some(flag.clone()), Duration::from_secs(3600));
        let f = flag.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            f.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        let e = w.write_all(&vec![0u8; 64 << 20]).unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("signal"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    fn flags(fd: RawFd) -> libc::c_int {
        // SAFETY: F_GETFL on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_GETFL) }
    }

    /// A pipe end borrowed, so the test sees its flags after the writer.
    struct Borrowed<'a>(&'a std::process::ChildStdin);

    impl AsRawFd for Borrowed<'_> {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    impl Write for Borrowed<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_pipe_nobody_reads_times_out_and_keeps_its_flags() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let si = child.stdin.take().unwrap();
        let before = flags(si.as_raw_fd());
        let mut w = Bounded::new(Borrowed(&si), None, Duration::from_millis(300));
        assert_eq!(w.kind(), Kind::Pipe);
        assert_ne!(flags(si.as_raw_fd()) & libc::O_NONBLOCK, 0);
        let start = Instant::now();
        let e = w.write_all(&vec![0u8; 16 << 20]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(w);
        assert_eq!(flags(si.as_raw_fd()), before, "flags restored");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_reading_pipe_gets_every_byte() {
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let si = child.stdin.take().unwrap();
        let mut so = child.stdout.take().unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7) as u8).collect();
        let want = data.clone();
        let r = std::thread::spawn(move || {
            let mut got = Vec::new();
            io::Read::read_to_end(&mut so, &mut got).unwrap();
            got
        });
        let mut w = Bounded::new(si, None, Duration::from_secs(10));
        assert_eq!(w.kind(), Kind::Pipe);
        w.write_all(&data).unwrap();
        let fd = w.get_ref().as_raw_fd();
        assert_ne!(
            flags(fd) & libc::O_NONBLOCK,
            0,
            "non-blocking while writing"
        );
        drop(w);
        assert_eq!(r.join().unwrap(), want);
        child.wait().unwrap();
    }

    #[test]
    fn a_reading_peer_gets_every_byte() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let want = data.clone();
        let r = std::thread::spawn(move || {
            let mut got = Vec::new();
            io::Read::read_to_end(&mut b, &mut got).unwrap();
            got
        });
        let mut w = Bounded::new(a, None, Duration::from_secs(10));
        w.write_all(&data).unwrap();
        drop(w);
        assert_eq!(r.join().unwrap(), want);
    }
}

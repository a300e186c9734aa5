//! Where the image goes: a file written atomically, stdout, or a TCP peer.
//!
//! A file is written under a temporary name in the destination's directory
//! (mode 0600 from creation: images hold guest secrets), fsync'd, and only
//! then given its name — by a hard link that fails if the name exists, or a
//! rename with `force`. An image that is not complete never carries the
//! destination's name, and a failed save leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file that appears under its name only when [`commit`](Self::commit)ted.
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    force: bool,
}

impl AtomicFile {
    /// Start writing `dest`. Fails at once if `dest` exists and `force` is
    /// not set, so a long save does not end in a refusal.
    pub fn create(dest: &Path, force: bool) -> io::Result<Self> {
        if !force && dest.symlink_metadata().is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists (use --force to replace it)", dest.display()),
            ));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} names no file", dest.display()),
                )
            })?
            .to_string_lossy()
            .into_owned();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let pid = std::process::id();
        let mut last = None;
        for n in 0..100u32 {
            let tmp = dir.join(format!(".{name}.hvm-save.{pid}.{n}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        dest: dest.to_path_buf(),
                        tmp,
                        file: Some(file),
                        force,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name")))
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("image already committed"))
    }

    /// fsync, then give the file its name (and fsync the directory).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("image already committed"))?;
        file.sync_all()?;
        drop(file);
        if self.force {
            std::fs::rename(&self.tmp, &self.dest)?;
        } else {
            std::fs::hard_link(&self.tmp, &self.dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} appeared during the save (use --force to replace it)",
                            self.dest.display()
                        ),
                    )
                } else {
                    e
                }
            })?;
            std::fs::remove_file(&self.tmp)?;
        }
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Nothing left to clean up.
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.file()?.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

/// Any destination of an image.
#[derive(Debug)]
pub enum Sink {
    /// `-o FILE`.
    File(AtomicFile),
    /// `-o -`.
    Stdout(io::Stdout),
    /// `--to HOST:PORT`.
    Tcp(TcpStream),
}

impl Sink {
    /// An atomic file.
    pub fn file(path: &Path, force: bool) -> io::Result<Self> {
        AtomicFile::create(path, force).map(Sink::File)
    }

    /// Standard output (a pipe or a file the shell opened).
    pub fn stdout() -> Self {
        Sink::Stdout(io::stdout())
    }

    /// A TCP connection to `addr` (`HOST:PORT`).
    pub fn tcp(addr: &str) -> io::Result<Self> {
        TcpStream::connect(addr).map(Sink::Tcp)
    }

    /// The image is complete: make it durable and visible.
    pub fn commit(self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.commit(),
            Sink::Stdout(mut s) => s.flush(),
            Sink::Tcp(mut t) => {
                t.flush()?;
                t.shutdown(std::net::Shutdown::Write)
            }
        }
    }

    /// The save failed: remove the partial file; close the connection.
    pub fn abort(self) {
        drop(self);
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s) => s.write(buf),
            Sink::Tcp(t) => t.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write_vectored(bufs),
            Sink::Stdout(s) => s.write_vectored(bufs),
            Sink::Tcp(t) => t.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
            Sink::Tcp(t) => t.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_is_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"abc").unwrap();
        assert!(!dest.exists(), "not visible before commit");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = AtomicFile::create(&dest, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.write_all(b"xyz").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"xyz");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn name_appearing_during_save_is_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let f = AtomicFile::create(&dest, false).unwrap();
        std::fs::write(&dest, b"theirs").unwrap();
        assert!(f.commit().is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

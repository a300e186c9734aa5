//! Every file a tool writes goes through [`Outputs::create`].
//!
//! A file is written under a temporary name beside its target
//! (`.NAME.hvm-tmp.PID`, mode 0600 from creation: images hold guest
//! secrets), fsync'd, and only then given its name — by a hard link that
//! fails if the name exists, or with `--force` by swapping names with the
//! old file (RENAME_EXCHANGE, so a failure later in the same commit can swap
//! it back; a plain rename where the filesystem cannot) — and the directory
//! is fsync'd. A file that is not complete never carries the target's name,
//! and a failure removes the temporary and nothing else.
//!
//! Before anything is written, the target is checked: an existing file needs
//! `--force`; a directory, device node, FIFO or socket is refused (standard
//! output is named `-`, not `/dev/stdout`); a target that is the same file as
//! an input or another output of the run is refused, compared by device and
//! inode after following symbolic links, so `-o x --manifest ./x` or `-o
//! link-to-input` are caught whatever their spelling. A symbolic link is
//! followed: the file it names is replaced, the link is kept.
//!
//! A run killed by SIGKILL cannot clean up: its temporary carries its PID,
//! and the next run writing the same target removes it once that PID is
//! gone, and says so.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an output could not be written. Every variant names the path the
/// user gave for the output that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The operating system refused an operation on the output.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "creating a temporary for", …).
        op: &'static str,
        /// The output as named.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The target exists and `--force` was not given.
    #[error("{} exists (use --force to replace it)", path.display())]
    Exists {
        /// The output as named.
        path: PathBuf,
    },
    /// The target is not a regular file.
    #[error("{} is {kind}, not a regular file: refusing to replace it (use - for standard output)", path.display())]
    NotRegular {
        /// The output as named.
        path: PathBuf,
        /// "a directory", "a character device", …
        kind: &'static str,
    },
    /// The target is the same file as an input or another output.
    #[error("{} is the same file as the {role} {}", path.display(), other.display())]
    Same {
        /// The output as named.
        path: PathBuf,
        /// What the other file is ("input", "image", "manifest", …).
        role: String,
        /// The other file as named.
        other: PathBuf,
    },
    /// The target is a symbolic link to nothing.
    #[error("{} is a symbolic link to a missing file: refusing to guess where to write", path.display())]
    Dangling {
        /// The output as named.
        path: PathBuf,
    },
    /// The target names a directory, not a file (`dir/`, `..`).
    #[error("{} names no file", path.display())]
    NoName {
        /// The output as named.
        path: PathBuf,
    },
    /// Giving the finished files their names failed part way.
    #[error("committing {}: {source}; {kept}", path.display())]
    Commit {
        /// The output whose rename failed.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
        /// What the failure left in place, in words.
        kept: String,
    },
}

impl OutputError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        OutputError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A file's identity: its inode when it exists, else the directory's inode
/// and the name it will get there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Inode(u64, u64),
    New(u64, u64, OsString),
}

#[derive(Debug)]
struct Claim {
    key: Key,
    role: String,
    path: PathBuf,
}

/// The inputs and outputs of one run: no output may be the same file as
/// another input or output.
#[derive(Debug, Default)]
pub struct Outputs {
    claims: Vec<Claim>,
    stale: Vec<PathBuf>,
}

impl Outputs {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record an input by name (`-` and names that cannot be opened are
    /// skipped: reading them reports its own error).
    pub fn input(&mut self, role: &str, path: &Path) {
        if path.as_os_str() == "-" {
            self.input_fd(role, path, libc::STDIN_FILENO);
            return;
        }
        if let Ok(m) = std::fs::metadata(path) {
            self.claim(Key::Inode(m.dev(), m.ino()), role, path);
        }
    }

    /// Record an input by open descriptor (standard input, or a file
    /// already opened).
    pub(crate) fn input_fd(&mut self, role: &str, path: &Path, fd: i32) {
        if let Some((dev, ino, _)) = fstat(fd) {
            self.claim(Key::Inode(dev, ino), role, path);
        }
    }

    /// Standard output is an output of the run: refuse it when the shell
    /// made it one of the inputs (`convert x -o - >> x` would read what it
    /// writes).
    pub fn stdout(&mut self, role: &str) -> Result<(), OutputError> {
        let path = Path::new("-");
        if let Some((dev, ino, regular)) = fstat(libc::STDOUT_FILENO) {
            if regular {
                let key = Key::Inode(dev, ino);
                self.check(&key, Path::new("standard output"))?;
                self.claim(key, role, path);
            }
        }
        Ok(())
    }

    /// Check `path` as the output `role` and start writing it atomically.
    /// Stale temporaries of killed runs for the same target are removed
    /// (see [`take_stale`](Self::take_stale)).
    pub fn create(
        &mut self,
        role: &str,
        path: &Path,
        force: bool,
    ) -> Result<AtomicFile, OutputError> {
        let (target, key, existed) = self.resolve(path, force)?;
        self.claim(key, role, path);
        let (dir, name) = split(&target).ok_or_else(|| OutputError::NoName {
            path: path.to_path_buf(),
        })?;
        self.stale.extend(clean_stale(&dir, &name));
        AtomicFile::create_in(&dir, &name, target.clone(), path, force, existed)
    }

    /// The stale temporaries removed so far (each once), for the tool to
    /// report.
    pub fn take_stale(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.stale)
    }

    fn claim(&mut self, key: Key, role: &str, path: &Path) {
        self.claims.push(Claim {
            key,
            role: role.to_string(),
            path: path.to_path_buf(),
        });
    }

    fn check(&self, key: &Key, path: &Path) -> Result<(), OutputError> {
        match self.claims.iter().find(|c| c.key == *key) {
            Some(c) => Err(OutputError::Same {
                path: path.to_path_buf(),
                role: c.role.clone(),
                other: c.path.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The file to write (a symbolic link resolved), its identity, and
    /// whether it exists.
    fn resolve(&self, path: &Path, force: bool) -> Result<(PathBuf, Key, bool), OutputError> {
        match std::fs::symlink_metadata(path) {
            Ok(lm) => {
                let target = if lm.file_type().is_symlink() {
                    std::fs::canonicalize(path).map_err(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            OutputError::Dangling {
                                path: path.to_path_buf(),
                            }
                        } else {
                            OutputError::io("resolving", path, e)
                        }
                    })?
                } else {
                    path.to_path_buf()
                };
                let m =
                    std::fs::metadata(&target).map_err(|e| OutputError::io("checking", path, e))?;
                if !m.file_type().is_file() {
                    return Err(OutputError::NotRegular {
                        path: path.to_path_buf(),
                        kind: kind(&m.file_type()),
                    });
                }
                let key = Key::Inode(m.dev(), m.ino());
                self.check(&key, path)?;
                if !force {
                    return Err(OutputError::Exists {
                        path: path.to_path_buf(),
                    });
                }
                Ok((target, key, true))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (dir, name) = split(path).ok_or_else(|| OutputError::NoName {
                    path: path.to_path_buf(),
                })?;
                let d = std::fs::metadata(&dir)
                    .map_err(|e| OutputError::io("opening the directory of", path, e))?;
                if !d.is_dir() {
                    return Err(OutputError::io(
                        "opening the directory of",
                        path,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                let key = Key::New(d.dev(), d.ino(), name);
                self.check(&key, path)?;
                Ok((path.to_path_buf(), key, false))
            }
            Err(e) => Err(OutputError::io("checking", path, e)),
        }
    }
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// `(dev, ino, is a regular file)` of an open descriptor.
fn fstat(fd: i32) -> Option<(u64, u64, bool)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we own; we read it only
    // when the call succeeded.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some((
        st.st_dev as u64,
        st.st_ino as u64,
        st.st_mode & libc::S_IFMT == libc::S_IFREG,
    ))
}

/// The directory (`.` for a bare name) and the file name of `path`.
fn split(path: &Path) -> Option<(PathBuf, OsString)> {
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some((dir, name))
}

/// The temporary-name prefixes of `name`: this module's, and the one
/// hvm-save used before it.
fn temp_prefixes(name: &OsStr) -> [Vec<u8>; 2] {
    let mut a = b".".to_vec();
    a.extend_from_slice(name.as_bytes());
    let mut b = a.clone();
    a.extend_from_slice(b".hvm-tmp.");
    b.extend_from_slice(b".hvm-save.");
    [a, b]
}

/// The PID in a temporary's name after its prefix: `PID` or `PID.N`.
fn temp_pid(rest: &[u8]) -> Option<i32> {
    let (pid, tail) = match rest.iter().position(|&c| c == b'.') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(pid) || !(tail.is_empty() || digits(tail)) {
        return None;
    }
    std::str::from_utf8(pid)
        .ok()?
        .parse()
        .ok()
        .filter(|&p| p > 0)
}

/// True unless `pid` is certainly gone.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Remove the temporaries for `name` in `dir` whose writer is gone; return
/// their paths.
fn clean_stale(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let me = std::process::id() as i32;
    let prefixes = temp_prefixes(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let f = e.file_name();
        let b = f.as_bytes();
        let Some(pid) = prefixes
            .iter()
            .find_map(|p| b.strip_prefix(p.as_slice()).and_then(temp_pid))
        else {
            continue;
        };
        if pid == me || alive(pid) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let p = e.path();
        if std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// A file that appears under its name only when committed
/// ([`AtomicFile::commit`] or [`commit_all`]); dropped, it leaves nothing.
#[derive(Debug)]
pub struct AtomicFile {
    /// Where it is renamed to (a symbolic link resolved).
    dest: PathBuf,
    /// The name the user gave, for messages.
    shown: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    force: bool,
    existed: bool,
    /// After an exchange: `tmp` names the file `dest` replaced.
    holds_old: bool,
}

impl AtomicFile {
    /// Start writing `dest`, without the checks of [`Outputs::create`]
    /// except the refusal of an existing name without `force` (done at
    /// once, so a long run does not end in a refusal).
    pub fn create(dest: &Path, force: bool) -> Result<Self, OutputError> {
        Outputs::new().create("output", dest, force)
    }

    fn create_in(
        dir: &Path,
        name: &OsStr,
        dest: PathBuf,
        shown: &Path,
        force: bool,
        existed: bool,
    ) -> Result<Self, OutputError> {
        let pid = std::process::id();
        let mut last = None;
        for n in 0..100u32 {
            let mut t = temp_prefixes(name)[0].clone();
            t.extend_from_slice(pid.to_string().as_bytes());
            if n > 0 {
                t.extend_from_slice(format!(".{n}").as_bytes());
            }
            let tmp = dir.join(OsStr::from_bytes(&t));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(file) => {
                    crate::signal::register_temporary(&tmp);
                    return Ok(AtomicFile {
                        dest,
                        shown: shown.to_path_buf(),
                        tmp,
                        file: Some(file),
                        force,
                        existed,
                        holds_old: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(OutputError::io("creating a temporary for", shown, e)),
            }
        }
        Err(OutputError::io(
            "creating a temporary for",
            shown,
            last.unwrap_or_else(|| io::Error::other("no free temporary name")),
        ))
    }

    /// The temporary path being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The output as the user named it.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("output already committed"))
    }

    /// An I/O error of this output, naming it (kinds kept, so callers can
    /// still retry `Interrupted`).
    fn named(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::Interrupted {
            return e;
        }
        io::Error::new(e.kind(), format!("writing {}: {e}", self.shown.display()))
    }

    fn sync(&mut self) -> Result<(), OutputError> {
        let shown = self.shown.clone();
        let f = self.file.as_mut().ok_or_else(|| {
            OutputError::io("writing", &shown, io::Error::other("already committed"))
        })?;
        f.flush()
            .and_then(|_| f.sync_all())
            .map_err(|e| OutputError::io("writing", &shown, e))
    }

    /// Give the synced temporary its name.
    fn publish(&mut self) -> io::Result<()> {
        self.file.take();
        if self.force && self.existed {
            // Swap the names: the temporary now holds the old file, so a
            // failure of a later output of the run can swap them back, and
            // success (the drop) removes it.
            match exchange(&self.tmp, &self.dest) {
                Ok(()) => {
                    self.holds_old = true;
                    return Ok(());
                }
                Err(e) if !unsupported(&e) => return Err(e),
                Err(_) => std::fs::rename(&self.tmp, &self.dest)?,
            }
        } else if self.force {
            std::fs::rename(&self.tmp, &self.dest)?;
        } else {
            std::fs::hard_link(&self.tmp, &self.dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} appeared during the run (use --force to replace it)",
                            self.shown.display()
                        ),
                    )
                } else {
                    e
                }
            })?;
            let _ = std::fs::remove_file(&self.tmp);
        }
        crate::signal::unregister_temporary(&self.tmp);
        self.tmp = PathBuf::new();
        Ok(())
    }

    /// Take back a [`publish`](Self::publish) because another output of
    /// the run failed: true if the target is as it was before the run.
    fn undo(&mut self) -> bool {
        if self.holds_old {
            // The new file goes back under the temporary name; the drop
            // removes it.
            return exchange(&self.tmp, &self.dest).is_ok();
        }
        if self.existed {
            return false;
        }
        std::fs::remove_file(&self.dest).is_ok()
    }

    /// fsync, then give the file its name (and fsync the directory).
    pub fn commit(self) -> Result<(), OutputError> {
        commit_all(vec![self])
    }
}

/// Swap the names `a` and `b` atomically (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths relative to the working
    // directory; the call only renames.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The filesystem or kernel cannot exchange names, or the target went
/// away during the run: fall back to rename (whose own error then counts).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOENT)
    )
}

/// Commit several outputs of one run together: every file is synced first
/// (where a full disk shows), then renamed in the order given — put the
/// image last, after its manifest and stats. If a rename fails, the outputs
/// already renamed are taken back (new ones removed, replaced ones swapped
/// back where the filesystem can exchange names); the error says what, if
/// anything, could not be taken back.
pub fn commit_all(mut files: Vec<AtomicFile>) -> Result<(), OutputError> {
    for f in files.iter_mut() {
        f.sync()?;
    }
    for i in 0..files.len() {
        if let Err(e) = files[i].publish() {
            let mut kept = Vec::new();
            for g in files[..i].iter_mut() {
                if !g.undo() {
                    kept.push(g.shown.display().to_string());
                }
            }
            let kept = if kept.is_empty() {
                "nothing was written".to_string()
            } else {
                format!(
                    "{} could not be taken back (now the new version); nothing else was written",
                    kept.join(", ")
                )
            };
            return Err(OutputError::Commit {
                path: files[i].shown.clone(),
                source: e,
                kept,
            });
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in &files {
        if let Some((d, _)) = split(&f.dest) {
            if !dirs.contains(&d) {
                if let Ok(h) = File::open(&d) {
                    let _ = h.sync_all();
                }
                dirs.push(d);
            }
        }
    }
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
            crate::signal::unregister_temporary(&self.tmp);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.file()?.write(buf);
        r.map_err(|e| self.named(e))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let r = self.file()?.write_vectored(bufs);
        r.map_err(|e| self.named(e))
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.file()?.flush();
        r.map_err(|e| self.named(e))
    }
}

/// Seeking lets a sparse output (a raw memory image) leave holes where
/// nothing is written.
impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let r = self.file()?.seek(pos);
        r.map_err(|e| self.named(e))
    }
}

impl AtomicFile {
    /// Set the temporary's length (a sparse file's final hole is made this
    /// way, without writing zeros).
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        let r = self.file()?.set_len(len);
        r.map_err(|e| self.named(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

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
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.write_all(b"xyz").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"xyz");
        assert_eq!(count(dir.path()), 1);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(count(dir.path()), 0);
    }

    #[test]
    fn name_appearing_during_the_run_is_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let f = AtomicFile::create(&dest, false).unwrap();
        std::fs::write(&dest, b"theirs").unwrap();
        assert!(f.commit().is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        assert_eq!(count(dir.path()), 1);
    }

    #[test]
    fn same_file_under_another_spelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let mut o = Outputs::new();
        o.input("input", &input);
        for p in [input.clone(), link, dir.path().join(".").join("in")] {
            let e = o.create("output", &p, true).unwrap_err();
            assert!(
                matches!(e, OutputError::Same { .. }),
                "{}: {e}",
                p.display()
            );
        }
        // Two outputs that do not exist yet, spelt differently.
        let a = dir.path().join("new");
        let b = dir.path().join("sub/../new");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let _img = o.create("image", &a, false).unwrap();
        let e = o.create("manifest", &b, false).unwrap_err();
        assert!(
            matches!(e, OutputError::Same { ref role, .. } if role == "image"),
            "{e}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), b"precious");
    }

    #[test]
    fn symbolic_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut f = Outputs::new().create("output", &link, true).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let e = Outputs::new()
            .create("output", &dangling, true)
            .unwrap_err();
        assert!(matches!(e, OutputError::Dangling { .. }), "{e}");
    }

    #[test]
    fn non_regular_targets_are_refused_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let e = Outputs::new()
            .create("output", dir.path(), true)
            .unwrap_err();
        assert!(
            matches!(
                e,
                OutputError::NotRegular { .. } | OutputError::NoName { .. }
            ),
            "{e}"
        );
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let e = Outputs::new().create("output", &sub, true).unwrap_err();
        assert!(
            matches!(
                e,
                OutputError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
        let e = Outputs::new()
            .create("output", Path::new("/dev/null"), true)
            .unwrap_err();
        assert!(
            matches!(
                e,
                OutputError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{e}"
        );
        let missing = dir.path().join("missing/x");
        let e = Outputs::new().create("output", &missing, true).unwrap_err();
        assert!(e.to_string().contains("missing/x"), "{e}");
    }

    #[test]
    fn stale_temporaries_of_dead_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A PID that is certainly gone: a child that has been reaped.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let stale = [
            dir.path().join(format!(".img.hvm-tmp.{dead}")),
            dir.path().join(format!(".img.hvm-save.{dead}.0")),
        ];
        let live = dir
            .path()
            .join(format!(".img.hvm-tmp.{}", std::process::id()));
        let other = dir.path().join(format!(".other.hvm-tmp.{dead}"));
        for p in stale.iter().chain([&live, &other]) {
            std::fs::write(p, b"partial").unwrap();
        }
        let mut o = Outputs::new();
        let f = o.create("image", &dir.path().join("img"), false).unwrap();
        let mut removed = o.take_stale();
        removed.sort();
        let mut want = stale.to_vec();
        want.sort();
        assert_eq!(removed, want);
        assert!(live.exists() && other.exists());
        drop(f);
        assert!(
            live.exists(),
            "a live run's temporary is not ours to remove"
        );
    }

    #[test]
    fn temp_pid_parses_only_our_names() {
        assert_eq!(temp_pid(b"123"), Some(123));
        assert_eq!(temp_pid(b"123.4"), Some(123));
        assert_eq!(temp_pid(b"123x"), None);
        assert_eq!(temp_pid(b"0"), None);
        assert_eq!(temp_pid(b"99999999999"), None);
        assert_eq!(temp_pid(b""), None);
    }

    #[test]
    fn a_failed_commit_swaps_replaced_files_back() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("m"), b"old manifest").unwrap();
        std::fs::write(b.join("i"), b"old image").unwrap();
        let mut o = Outputs::new();
        let mut m = o.create("manifest", &a.join("m"), true).unwrap();
        let mut i = o.create("image", &b.join("i"), true).unwrap();
        m.write_all(b"new manifest").unwrap();
        i.write_all(b"new image").unwrap();
        // The image's directory vanishes: its rename must fail.
        std::fs::remove_dir_all(&b).unwrap();
        let e = commit_all(vec![m, i]).unwrap_err();
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert_eq!(std::fs::read(a.join("m")).unwrap(), b"old manifest");
        assert_eq!(count(&a), 1, "no temporary, no backup left");
        // And a successful replacement leaves no old copy behind.
        let mut m = Outputs::new()
            .create("manifest", &a.join("m"), true)
            .unwrap();
        m.write_all(b"newer").unwrap();
        m.commit().unwrap();
        assert_eq!(std::fs::read(a.join("m")).unwrap(), b"newer");
        assert_eq!(count(&a), 1);
    }

    #[test]
    fn a_failed_commit_undoes_the_files_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outputs::new();
        let mut m = o.create("manifest", &dir.path().join("m"), false).unwrap();
        let mut i = o.create("image", &dir.path().join("i"), false).unwrap();
        m.write_all(b"{}").unwrap();
        i.write_all(b"img").unwrap();
        // Someone takes the image's name during the run.
        std::fs::write(dir.path().join("i"), b"theirs").unwrap();
        let e = commit_all(vec![m, i]).unwrap_err();
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert!(!dir.path().join("m").exists(), "the manifest was undone");
        assert_eq!(std::fs::read(dir.path().join("i")).unwrap(), b"theirs");
        assert_eq!(count(dir.path()), 1);
    }
}

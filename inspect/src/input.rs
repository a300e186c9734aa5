//! Where an image's bytes come from, and one walk over its items.
//!
//! `summary`, `validate` and `show` stream the image through
//! [`hvm_format::stream::Reader`] with read(2) into a reused buffer: memory
//! stays bounded and, unlike an mmap, the page cache pages read do not count
//! against the process's resident set. `digest`, `diff` and `extract` need
//! the final copy of every page in pfn order, so they map the file;
//! standard input is first spooled to an unnamed temporary file for them.

use std::fs::File;
use std::io::{self, Read};

use hvm_format::image::{
    is_v2, open_any_read, open_slice, read_any_tail, slice_tail, ImageInfo, OpenOptions, Tail,
};
use hvm_format::mapped::GuardedMap;
use hvm_format::stream::{Element, Item};
use hvm_format::{Error, ErrorKind};

/// Errors that stop a subcommand before it has a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The path as the user gave it (`-` for standard input).
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The image is not readable as a supported stream.
    #[error("{path}: {source}")]
    Image {
        /// The path as the user gave it.
        path: String,
        /// Offset, context and expected/found.
        source: Error,
    },
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// An output was refused or could not be committed (it names itself).
    #[error(transparent)]
    Output(#[from] hvm_cli::OutputError),
    /// Writing an output failed (the message names the output).
    #[error("{0}")]
    Write(io::Error),
    /// An input other than an image (`plot --stats`'s file) does not
    /// parse; the message names the file, line and field.
    #[error("{0}")]
    BadInput(String),
}

impl InspectError {
    /// Exit status: 1 when the image is at fault, 2 for usage and I/O.
    pub fn exit_code(&self) -> u8 {
        match self {
            InspectError::Image { source, .. } if !matches!(source.kind, ErrorKind::Io(_)) => 1,
            InspectError::BadInput(_) => 1,
            _ => 2,
        }
    }

    /// Wrap a format error for `path`.
    pub fn image(path: &str, source: Error) -> Self {
        InspectError::Image {
            path: path.to_string(),
            source,
        }
    }
}

/// Called with the number of bytes consumed so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A progress callback that does nothing.
pub fn no_progress(_: u64) {}

/// Most bytes of a pipe that are spooled to a temporary file (for `digest`
/// and `diff`, which need random access) unless the caller raises it: an
/// endless pipe must not fill the disk.
pub const DEFAULT_SPOOL_LIMIT: u64 = 1 << 30;

/// An image named on the command line: a file, or `-` for standard input.
pub struct Input {
    name: String,
    file: Option<File>,
    len: Option<u64>,
    spool_limit: u64,
    /// Bytes already taken from a pipe to look at, put back in front of it.
    pending: Option<Box<dyn Read>>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("spool_limit", &self.spool_limit)
            .finish_non_exhaustive()
    }
}

/// How much of a pipe is looked at to tell a v2 image.
const V2_PEEK: u64 = 64 << 10;

/// Copy `src` to an unnamed temporary file, refusing more than `limit`
/// bytes: `(file, length)`.
fn spool(name: &str, src: Box<dyn Read>, limit: u64) -> Result<(File, u64), InspectError> {
    let io = |source| InspectError::Io {
        path: name.to_string(),
        source,
    };
    let mut t = tempfile::tempfile().map_err(io)?;
    let n = io::copy(&mut src.take(limit.saturating_add(1)), &mut t).map_err(io)?;
    if n > limit {
        return Err(InspectError::Usage(format!(
            "{name}: more than {limit} bytes; a pipe is copied to a temporary file \
             for random access, and at most --spool-limit bytes (default \
             {DEFAULT_SPOOL_LIMIT}); raise it or give a regular file"
        )));
    }
    // Read from the start, like a file just opened.
    io::Seek::rewind(&mut t).map_err(io)?;
    Ok((t, n))
}

impl Input {
    /// Open `name` (`-` is standard input).
    pub fn open(name: &str) -> Result<Self, InspectError> {
        if name == "-" {
            return Ok(Input {
                name: name.to_string(),
                file: None,
                len: None,
                spool_limit: DEFAULT_SPOOL_LIMIT,
                pending: None,
            });
        }
        let io = |source| InspectError::Io {
            path: name.to_string(),
            source,
        };
        let file = File::open(name).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(io::Error::other("is a directory")));
        }
        Ok(Input {
            name: name.to_string(),
            len: meta.is_file().then_some(meta.len()),
            file: Some(file),
            spool_limit: DEFAULT_SPOOL_LIMIT,
            pending: None,
        })
    }

    /// Spool at most `bytes` of a pipe when a report needs random access
    /// (default [`DEFAULT_SPOOL_LIMIT`]).
    pub fn with_spool_limit(mut self, bytes: u64) -> Self {
        self.spool_limit = bytes;
        self
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes, when known (not for pipes).
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// True for a known-empty file.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// True for standard input.
    pub(crate) fn is_stdin(&self) -> bool {
        self.file.is_none()
    }

    /// A second handle on a regular file's image (for a check that needs
    /// random access after a sequential walk); `None` for a pipe.
    pub(crate) fn file_handle(&self) -> Option<File> {
        self.len?;
        self.file.as_ref()?.try_clone().ok()
    }

    /// A pipe (or FIFO, or device) whose first bytes start a migration v2
    /// image, spooled to an unnamed temporary file (at most the spool
    /// limit), so that v2's random-access checks see it as they see a
    /// named file; any other input is returned unchanged, its peeked bytes
    /// put back in front.
    pub(crate) fn spool_if_v2(self) -> Result<Input, InspectError> {
        if self.len.is_some() {
            return Ok(self);
        }
        let name = self.name.clone();
        let spool_limit = self.spool_limit;
        let io = |source| InspectError::Io {
            path: name.clone(),
            source,
        };
        let mut src = self.source();
        // Enough for the v2 marker behind an xl or libvirt header.
        let mut head = Vec::new();
        (&mut src)
            .take(V2_PEEK)
            .read_to_end(&mut head)
            .map_err(io)?;
        let rest: Box<dyn Read> = Box::new(io::Cursor::new(head.clone()).chain(src));
        if !hvm_format::image::is_v2(&head) {
            return Ok(Input {
                name,
                file: None,
                len: None,
                spool_limit,
                pending: Some(rest),
            });
        }
        let (file, len) = spool(&name, rest, spool_limit)?;
        Ok(Input {
            name,
            file: Some(file),
            len: Some(len),
            spool_limit,
            pending: None,
        })
    }

    /// The bytes of a non-regular input, in order.
    fn source(self) -> Box<dyn Read> {
        match (self.pending, self.file) {
            (Some(p), _) => p,
            (None, Some(f)) => Box::new(f),
            (None, None) => Box::new(io::stdin().lock()),
        }
    }

    /// A sequential reader over the image.
    pub(crate) fn into_read(self) -> Box<dyn Read> {
        if self.pending.is_some() {
            return self.source();
        }
        match self.file {
            Some(f) => Box::new(f),
            None => Box::new(io::stdin().lock()),
        }
    }

    /// The image as a file that can be read at any offset. Standard input
    /// and other inputs that are not regular files (a FIFO, a character
    /// device) are spooled to an unnamed temporary file first, at most the
    /// spool limit: a longer input is refused rather than copied to an end
    /// that may never come.
    pub(crate) fn into_file(self) -> Result<Spooled, InspectError> {
        let name = self.name.clone();
        let file = match (self.pending.is_none(), &self.file, self.len) {
            (true, Some(_), Some(_)) => self.file.expect("checked above"),
            _ => {
                let limit = self.spool_limit;
                spool(&name, self.source(), limit)?.0
            }
        };
        Ok(Spooled { name, file })
    }

    /// Map the image for random access (standard input is spooled to an
    /// unnamed temporary file first).
    pub fn map(self) -> Result<Mapped, InspectError> {
        let Spooled { name, file } = self.into_file()?;
        Mapped::of(name, file)
    }
}

impl Mapped {
    /// Map `file`, an image named `name`, guarded against truncation.
    pub fn of(name: String, file: File) -> Result<Mapped, InspectError> {
        let io = |source| InspectError::Io {
            path: name.clone(),
            source,
        };
        // A file truncated underneath reads as zeros from the cut instead
        // of raising SIGBUS; `Mapped::check` turns that into an error.
        let map = GuardedMap::map(&file).map_err(io)?;
        Ok(Mapped { name, map, file })
    }
}

/// An image in a file readable at any offset, read with read(2) and
/// pread(2) only: unlike pages of a map, what it reads never counts against
/// the process's resident set (`diff` of two huge images stays small).
#[derive(Debug)]
pub struct Spooled {
    name: String,
    file: File,
}

impl Spooled {
    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file, positioned at its start.
    pub fn reader(&self) -> io::Result<&File> {
        use std::io::Seek;
        let mut f = &self.file;
        f.rewind()?;
        Ok(f)
    }

    /// Read `buf.len()` bytes at `offset`.
    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }
}

/// A whole image in memory (mapped).
#[derive(Debug)]
pub struct Mapped {
    name: String,
    map: GuardedMap,
    file: File,
}

impl Mapped {
    /// The bytes. If the file shrinks while mapped, they read as zeros from
    /// the cut on: call [`check`](Self::check) before trusting anything
    /// computed from them.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// An I/O error naming the offset if the file shrank while it was read
    /// (another process truncated it), so nothing computed from the zeros
    /// that replaced its end is reported.
    pub fn check(&self) -> Result<(), InspectError> {
        self.map
            .check(&self.file)
            .map_err(|source| InspectError::Io {
                path: self.name.clone(),
                source,
            })
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Something that consumes stream items as they are read.
pub(crate) trait Visit {
    /// One item, in stream order.
    fn item(&mut self, item: &Item<'_>);

    /// One element of any dialect, in stream order: seed items go to
    /// [`item`](Self::item); visitors that report the later dialects'
    /// chunks, magic pfns and device model record override this.
    fn element(&mut self, e: &Element<'_>) {
        if let Element::Item(i) = e {
            self.item(i);
        }
    }
}

/// What a walk found besides the items.
#[derive(Debug)]
pub(crate) struct Walked {
    /// Envelope, dialect and word size.
    pub info: ImageInfo,
    /// The error that stopped the stream reader, if any.
    pub error: Option<Error>,
    /// What follows the stream (absent after an error).
    pub tail: Option<Tail>,
}

struct Counting<'p, R> {
    inner: R,
    done: u64,
    reported: u64,
    progress: Progress<'p>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 16 << 20 {
            self.reported = self.done;
            (self.progress)(self.done);
        }
        Ok(n)
    }
}

/// Open and walk an image from a `Read`, feeding every item to the visitor
/// that `make` builds once the word size is known. A reader error ends the
/// walk and is returned in [`Walked::error`]; only an image that cannot be
/// opened at all is an `Err`.
pub(crate) fn walk_read<R: Read, V: Visit>(
    name: &str,
    r: R,
    opts: OpenOptions,
    progress: Progress<'_>,
    make: impl FnOnce(&ImageInfo) -> V,
) -> Result<(Walked, V), InspectError> {
    let counting = Counting {
        inner: r,
        done: 0,
        reported: 0,
        progress,
    };
    let (info, mut reader) =
        open_any_read(counting, opts).map_err(|e| InspectError::image(name, e))?;
    let mut v = make(&info);
    let mut error = None;
    loop {
        match reader.next_element() {
            Ok(Some(e)) => v.element(&e),
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let tail = if error.is_none() {
        match read_any_tail(&info, reader) {
            Ok(t) => Some(t),
            Err(e) => {
                error = Some(e);
                None
            }
        }
    } else {
        None
    };
    Ok((Walked { info, error, tail }, v))
}

/// [`walk_read`] over an image in memory; items borrow from `data`.
pub(crate) fn walk_slice<V: Visit>(
    name: &str,
    data: &[u8],
    opts: OpenOptions,
    progress: Progress<'_>,
    make: impl FnOnce(&ImageInfo) -> V,
) -> Result<(Walked, V), InspectError> {
    if is_v2(data) {
        // v2 records are re-framed into elements through a buffer; page
        // offsets still point into `data`.
        let opts = OpenOptions {
            len: Some(data.len() as u64),
            ..opts
        };
        return walk_read(name, data, opts, progress, make);
    }
    let (info, mut reader) = open_slice(data, opts).map_err(|e| InspectError::image(name, e))?;
    let mut v = make(&info);
    let mut error = None;
    let mut reported = 0u64;
    loop {
        match reader.next_element() {
            Ok(Some(e)) => {
                v.element(&e);
                let at = reader.position();
                if at - reported >= 16 << 20 {
                    reported = at;
                    progress(at);
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let tail = if error.is_none() {
        match slice_tail(&info, &reader) {
            Ok(t) => Some(t),
            Err(e) => {
                error = Some(e);
                None
            }
        }
    } else {
        None
    };
    Ok((Walked { info, error, tail }, v))
}

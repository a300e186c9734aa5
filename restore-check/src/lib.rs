//! # hvm-restore-check
//!
//! Prove, offline, that a Xen HVM save image restores to the guest it came
//! from: replay it with the 2007 restorer's semantics,
//! apply the restorer's rules and current Xen's HVM load rules
//! ([`hvm_format::rules`]), compare the verify pass page by page, and with a
//! manifest from `hvm-save` compare memory, 2 MiB ranges and vCPUs.
//!
//! Layers, outermost first:
//!
//! * [`Checker`] / [`check_path`], [`check_slice`], [`check_read`]: open an
//!   image (mmap'd file, or any `Read` such as standard input, whose pages
//!   are spooled to a temporary file up to [`Options::spool_limit`]) and
//!   produce a [`Report`]. Guest memory is never materialised for the check
//!   itself: the final copy of each pfn is a location in the input, so a
//!   1 GiB image is checked in a few MiB besides the page cache. Only
//!   [`Options::keep_memory`] (what `--resume` needs) builds guest RAM.
//! * [`report`]: the report, its verdict and exit code, text rendering;
//!   `serde` gives the JSON.
//! * [`replay::Replayer`]: items in, the final memory and findings out.
//! * [`memory`]: the page table over the input, and the sparse, reusable
//!   guest memory arena it materialises into.
//! * [`manifest`]: the saver's manifest and the comparison with it.
//! * `resume` (Linux): load the image into a fresh KVM VM and compare its
//!   run with an uninterrupted control run.

#![warn(missing_docs)]
pub mod manifest;
pub mod memory;
pub mod replay;
pub mod report;
#[cfg(target_os = "linux")]
pub mod resume;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use hvm_format::image::{self, ImageInfo, OpenOptions};
use hvm_format::mapped::GuardedMap;
use hvm_format::rules::{CheckOptions, Finding};
use hvm_format::{Error, ErrorKind, WordSize};

use memory::{PageStore, Spool};

pub use manifest::{ExpectReport, Manifest};
pub use memory::{GuestMemory, MemoryError, RestoredPages, StoreError, DEFAULT_SPOOL_LIMIT};
pub use replay::{Replayed, Replayer};
pub use report::Report;

/// What to check against.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configured guest size in MiB that the 2007 restorer bounded pfns
    /// by (xend's `memory`). `None`: the xend config's, else what `max_pfn`
    /// implies.
    pub memory_mib: Option<u64>,
    /// Force the stream's word size instead of detecting it.
    pub word: Option<WordSize>,
    /// Word size of the restoring toolstack (`None`: the stream's own).
    pub restore_word: Option<WordSize>,
    /// Word size of the hypervisor that loads the HVM blob.
    pub xen_word: WordSize,
    /// Compare with this manifest.
    pub expect: Option<Manifest>,
    /// Compute the memory digest even without a manifest.
    pub digest: bool,
    /// Threads for hashing memory.
    pub workers: usize,
    /// Materialise the restored guest memory into the report
    /// ([`Report::guest_memory`], [`Report::take_memory`]): what `--resume`
    /// and library callers that read pages afterwards need. The check never
    /// needs it; without it, memory does not grow with the guest. The
    /// command line sets it only for `--resume`.
    pub keep_memory: bool,
    /// Page data of standard input spooled to a temporary file before the
    /// check stops with an error ([`DEFAULT_SPOOL_LIMIT`]).
    pub spool_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memory_mib: None,
            word: None,
            restore_word: None,
            xen_word: WordSize::W64,
            expect: None,
            digest: false,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_memory: true,
            spool_limit: DEFAULT_SPOOL_LIMIT,
        }
    }
}

impl Options {
    fn check_options(&self) -> CheckOptions {
        CheckOptions {
            strict: true,
            memory_pages: self.memory_mib.map(|m| m.saturating_mul(256)),
            restore_word: self.restore_word,
            xen_word: self.xen_word,
        }
    }
}

/// Why a check could not run to a verdict (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Reading the input failed.
    #[error("reading the image: {0}")]
    Io(#[source] std::io::Error),
    /// The reader hit an I/O error at a position.
    #[error("reading the image: {0}")]
    Read(#[source] Error),
    /// Guest memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Page bytes could not be kept (spool of standard input).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reusable checker: keeps its guest-memory arena from one image to the next
/// (a second materialisation of the same size touches no fresh memory).
#[derive(Debug, Default)]
pub struct Checker {
    arena: Option<GuestMemory>,
}

fn is_io(e: &Error) -> bool {
    matches!(e.kind, ErrorKind::Io(_))
}

impl Checker {
    /// A checker without an arena yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give the arena of a finished report back for reuse.
    pub fn recycle(&mut self, report: &mut Report) {
        if let Some(m) = report.take_memory() {
            self.arena = Some(m);
        }
    }

    /// Check an image held in memory (an mmap'd file).
    pub fn check_slice(&mut self, data: &[u8], opts: &Options) -> Result<Report, CheckError> {
        if image::is_v2(data) {
            return Ok(Report::v2(opts));
        }
        let (info, mut reader) = match image::open_slice(
            data,
            OpenOptions {
                word: opts.word,
                ..Default::default()
            },
        ) {
            Ok(x) => x,
            Err(e) => return Ok(Report::unopened(&e, opts)),
        };
        let mut rp = self.replayer(&info, opts, PageStore::Input(data));
        let mut failed = false;
        loop {
            match reader.next() {
                Ok(Some(item)) => rp.item(&item)?,
                Ok(None) => break,
                Err(e) => {
                    rp.structure_error(&e);
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            match image::slice_tail(&info, &reader) {
                Ok(t) => rp.tail(&t),
                Err(e) => rp.structure_error(&e),
            }
        }
        self.report(info, rp, opts)
    }

    /// Check an image from any reader (standard input): memory is one batch
    /// plus the detection prefix plus the page table; page bytes go to a
    /// spool of at most [`Options::spool_limit`] bytes.
    pub fn check_read<R: Read>(&mut self, mut r: R, opts: &Options) -> Result<Report, CheckError> {
        let mut prefix = Vec::new();
        (&mut r)
            .take(1 << 16)
            .read_to_end(&mut prefix)
            .map_err(|e| {
                CheckError::Read(Error::new(0, hvm_format::Context::root(), ErrorKind::Io(e)))
            })?;
        if image::is_v2(&prefix) {
            return Ok(Report::v2(opts));
        }
        let (info, mut reader) = match image::open_read(
            std::io::Cursor::new(prefix).chain(r),
            OpenOptions {
                word: opts.word,
                ..Default::default()
            },
        ) {
            Ok(x) => x,
            Err(e) if is_io(&e) => return Err(CheckError::Read(e)),
            Err(e) => return Ok(Report::unopened(&e, opts)),
        };
        let spool = Spool::new(opts.spool_limit)?;
        let mut rp = self.replayer(&info, opts, PageStore::Spool(spool));
        let mut failed = false;
        loop {
            match reader.next() {
                Ok(Some(item)) => rp.item(&item)?,
                Ok(None) => break,
                Err(e) if is_io(&e) => return Err(CheckError::Read(e)),
                Err(e) => {
                    rp.structure_error(&e);
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            match image::read_tail(&info, reader) {
                Ok(t) => rp.tail(&t),
                Err(e) if is_io(&e) => return Err(CheckError::Read(e)),
                Err(e) => rp.structure_error(&e),
            }
        }
        self.report(info, rp, opts)
    }

    fn report(
        &mut self,
        info: ImageInfo,
        rp: Replayer<'_>,
        opts: &Options,
    ) -> Result<Report, CheckError> {
        let replayed = rp.finish()?;
        let arena = if opts.keep_memory {
            self.arena.take()
        } else {
            None
        };
        Ok(Report::build(info, replayed, opts, arena)?)
    }

    /// Check the image at `path`; `-` is standard input. Regular files are
    /// mapped, everything else is streamed.
    pub fn check_path(&mut self, path: &Path, opts: &Options) -> Result<Report, CheckError> {
        if path.as_os_str() == "-" {
            return self.check_read(std::io::stdin().lock(), opts);
        }
        let file = File::open(path).map_err(CheckError::Io)?;
        let meta = file.metadata().map_err(CheckError::Io)?;
        if !meta.is_file() {
            return self.check_read(file, opts);
        }
        // A file that shrinks while mapped reads as zeros from the cut on
        // (not SIGBUS): the report built from them is discarded for an error
        // naming the offset.
        let map = GuardedMap::map(&file).map_err(CheckError::Io)?;
        map.advise_sequential();
        let report = self.check_slice(map.bytes(), opts);
        map.check(&file).map_err(CheckError::Io)?;
        report
    }

    fn replayer<'a>(
        &mut self,
        info: &ImageInfo,
        opts: &Options,
        store: PageStore<'a>,
    ) -> Replayer<'a> {
        Replayer::new(
            info.word(),
            opts.check_options(),
            info.config_memory_mib(),
            store,
        )
    }
}

/// Check an image in memory with a fresh arena.
pub fn check_slice(data: &[u8], opts: &Options) -> Result<Report, CheckError> {
    Checker::new().check_slice(data, opts)
}

/// Check an image from a reader with a fresh arena.
pub fn check_read<R: Read>(r: R, opts: &Options) -> Result<Report, CheckError> {
    Checker::new().check_read(r, opts)
}

/// Check the image at `path` (`-`: standard input) with a fresh arena.
pub fn check_path(path: &Path, opts: &Options) -> Result<Report, CheckError> {
    Checker::new().check_path(path, opts)
}

/// Findings of severity error, for callers that want just the rule ids.
pub fn error_rules(findings: &[Finding]) -> Vec<&'static str> {
    findings
        .iter()
        .filter(|f| f.severity == hvm_format::rules::Severity::Error)
        .map(|f| f.rule)
        .collect()
}

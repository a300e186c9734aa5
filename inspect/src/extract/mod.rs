//! `extract`: an image's guest memory out to the forensic tools, as a
//! sparse raw file ([`raw`]), an ELF core ([`elf`]) or LiME ([`lime`]).
//!
//! The memory is what Xen's restorer leaves: the final (last, non-verify)
//! copy of every pfn, found by the same index `digest` uses
//! ([`hvm_format::index`]); verify-pass copies are compared by the
//! restorer, not written, so they are not part of it. The image is mapped
//! (a pipe is spooled first, at most `--spool-limit` bytes) and pages are
//! copied from the map in ascending pfn order through a bounded buffer:
//! memory is the index (24 bytes per page copy) and [`BUFFER`], never the
//! pages. A damaged image is an error before anything is written.

pub mod cpu;
pub mod elf;
pub mod lime;
pub mod raw;

use std::io::{self, Seek, SeekFrom, Write};

use hvm_format::image::OpenOptions;
use hvm_format::index::PageCopy;
use hvm_format::{Error, PAGE_SIZE};
use serde::Serialize;

use crate::input::{Input, InspectError, Mapped, Progress};
use crate::report::{index_mapped, page_of, VerdictReport};

/// Bytes of pages gathered before one write.
pub const BUFFER: usize = 1 << 20;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Sparse file, offset = guest physical address.
    Raw,
    /// ELF64 core for x86-64.
    Elf,
    /// LiME (one range header per run of present pages).
    Lime,
}

/// A physical address range `[start, end)`, both page-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e} (an address is decimal or 0x-prefixed hex)"))
}

impl std::str::FromStr for PhysRange {
    type Err = String;

    /// `START-END`: START inclusive, END exclusive, each decimal or 0x-hex
    /// and a multiple of 4096.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s}: expected START-END"))?;
        let (start, end) = (parse_addr(a.trim())?, parse_addr(b.trim())?);
        let page = PAGE_SIZE as u64;
        if start % page != 0 || end % page != 0 {
            return Err(format!(
                "{s}: START and END must be multiples of 4096 (END is exclusive)"
            ));
        }
        if end <= start {
            return Err(format!("{s}: END must be above START (END is exclusive)"));
        }
        Ok(PhysRange { start, end })
    }
}

impl PhysRange {
    /// The pfns `[first, end)` the range covers.
    fn pfns(&self) -> (u64, u64) {
        let page = PAGE_SIZE as u64;
        (self.start / page, self.end / page)
    }
}

/// Where an extract goes: a file that can be written at any offset and cut
/// to a length ([`hvm_cli::AtomicFile`] for the CLI).
pub trait Sink: Write + Seek {
    /// Set the file's length (holes are not written).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for std::fs::File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

impl Sink for hvm_cli::AtomicFile {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        hvm_cli::AtomicFile::set_len(self, len)
    }
}

/// One vCPU in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VcpuReport {
    /// vCPU id.
    pub id: u32,
    /// Which records its registers came from.
    pub source: cpu::Source,
    /// Instruction pointer, as written to the core.
    pub rip: u64,
    /// Stack pointer, as written to the core.
    pub rsp: u64,
    /// CR3 (the page-table root tools walk from), as written to the QEMU note.
    pub cr3: u64,
}

/// `hvm-inspect extract`.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// The image.
    pub file: String,
    /// The output as named.
    pub output: String,
    /// Output format.
    pub format: Format,
    /// The `--range` asked for.
    pub range: Option<PhysRange>,
    /// Pages written (present pfns in the range).
    pub pages: u64,
    /// Contiguous runs of present pfns (PT_LOADs, LiME ranges).
    pub runs: u64,
    /// Length of the output file.
    pub output_len: u64,
    /// vCPUs in the core's notes (`--elf`; listed for every format).
    pub vcpus: Vec<VcpuReport>,
    /// Records left out of the notes and why, or that no page was written.
    pub warnings: Vec<String>,
}

/// Runs of consecutive pfns: `(first pfn, pages)`.
pub fn runs(pages: &[PageCopy]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for c in pages {
        match out.last_mut() {
            Some((first, n)) if first.checked_add(*n) == Some(c.pfn) => *n += 1,
            _ => out.push((c.pfn, 1)),
        }
    }
    out
}

/// Pages written through one bounded buffer: consecutive writes are
/// gathered, a jump (a hole in a raw file) flushes and seeks.
pub(crate) struct Gather<'s, S: Sink> {
    out: &'s mut S,
    buf: Vec<u8>,
    /// Output offset of `buf[0]`.
    at: u64,
    /// The sink's position.
    pos: u64,
}

impl<'s, S: Sink> Gather<'s, S> {
    /// Start writing at the sink's offset `pos` (where it stands).
    pub(crate) fn new(out: &'s mut S, pos: u64) -> Self {
        Gather {
            out,
            buf: Vec::with_capacity(BUFFER),
            at: pos,
            pos,
        }
    }

    /// Write `bytes` at output offset `offset`.
    pub(crate) fn put(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = self.at.checked_add(self.buf.len() as u64);
        if end != Some(offset) || self.buf.len() + bytes.len() > BUFFER {
            self.flush()?;
            self.at = offset;
        }
        if bytes.len() >= BUFFER {
            self.seek_to(offset)?;
            self.out.write_all(bytes)?;
            self.pos = offset.saturating_add(bytes.len() as u64);
            self.at = self.pos;
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        if self.pos != offset {
            self.out.seek(SeekFrom::Start(offset))?;
            self.pos = offset;
        }
        Ok(())
    }

    /// Write what is gathered.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.seek_to(self.at)?;
        self.out.write_all(&self.buf)?;
        // A page at the top of the 64-bit space ends at 2^64: the write
        // has already failed there (no file is that long); never wrap.
        self.pos = self.at.saturating_add(self.buf.len() as u64);
        self.at = self.pos;
        self.buf.clear();
        Ok(())
    }

    /// Flush, and hand the sink back.
    pub(crate) fn finish(mut self) -> io::Result<&'s mut S> {
        self.flush()?;
        Ok(self.out)
    }
}

/// Why a write failed, kept apart from the image's errors so that the
/// message names the output.
pub(crate) enum Failure {
    Image(Error),
    Write(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Write(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Image(e)
    }
}

/// What a format writer needs: the map, the final copies in the range
/// (ascending by pfn), their runs, and the vCPUs.
pub(crate) struct Memory<'a> {
    pub data: &'a [u8],
    pub pages: &'a [PageCopy],
    pub runs: &'a [(u64, u64)],
    pub vcpus: &'a [cpu::Vcpu],
}

impl Memory<'_> {
    /// Every page in pfn order, with its bytes.
    pub(crate) fn for_each_page(
        &self,
        mut f: impl FnMut(&PageCopy, &[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        for c in self.pages {
            f(c, page_of(self.data, c)?)?;
        }
        Ok(())
    }
}

/// Extract `input`'s memory in `format` into `out` (already created; the
/// caller commits it on success), limited to `range`. The verdict of
/// `validate` comes back beside the report: an invalid image is extracted
/// (its memory is what it is), and the caller says so.
pub fn extract<S: Sink>(
    input: Input,
    opts: OpenOptions,
    format: Format,
    range: Option<PhysRange>,
    output: &str,
    out: &mut S,
    progress: Progress<'_>,
) -> Result<(ExtractReport, VerdictReport), InspectError> {
    let m = input.map()?;
    let (walked, v, verdict) = index_mapped(&m, opts, progress)?;
    let idx = v.index.finish();
    let pages: &[PageCopy] = match range {
        None => &idx.finals,
        Some(r) => {
            let (a, b) = r.pfns();
            let lo = idx.finals.partition_point(|c| c.pfn < a);
            let hi = idx.finals.partition_point(|c| c.pfn < b);
            &idx.finals[lo..hi]
        }
    };
    let runs = runs(pages);
    let (vcpus, warnings) = cpu::vcpus(
        &v.vcpus,
        walked.info.word(),
        v.hvm.as_ref().map(|(_, b)| b.as_slice()),
    );
    let mem = Memory {
        data: m.bytes(),
        pages,
        runs: &runs,
        vcpus: &vcpus,
    };
    let written = match format {
        Format::Raw => raw::write(&mem, out),
        Format::Elf => elf::write(&mem, out),
        Format::Lime => lime::write(&mem, out),
    };
    // A file truncated underneath reads as zeros: not the image's memory.
    m.check()?;
    let output_len = written.map_err(|f| failure(&m, output, f))?;
    let mut warnings = warnings;
    if pages.is_empty() {
        warnings.push(match range {
            Some(_) => "no page of the image lies in the range: the output holds no memory".into(),
            None => "the image holds no page: the output holds no memory".into(),
        });
    }
    Ok((
        ExtractReport {
            file: m.name().to_string(),
            output: output.to_string(),
            format,
            range,
            pages: pages.len() as u64,
            runs: runs.len() as u64,
            output_len,
            vcpus: vcpus
                .iter()
                .map(|v| VcpuReport {
                    id: v.id,
                    source: v.source,
                    rip: v.state.rip,
                    rsp: v.state.rsp,
                    cr3: v.state.cr[3],
                })
                .collect(),
            warnings,
        },
        verdict,
    ))
}

fn failure(m: &Mapped, output: &str, f: Failure) -> InspectError {
    match f {
        Failure::Image(e) => InspectError::image(m.name(), e),
        Failure::Write(e) => {
            let msg = e.to_string();
            // hvm_cli's AtomicFile already names its output.
            if msg.starts_with("writing ") {
                InspectError::Write(e)
            } else {
                InspectError::Write(io::Error::new(e.kind(), format!("writing {output}: {e}")))
            }
        }
    }
}

/// The report as text.
pub fn render(r: &ExtractReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let fmt = match r.format {
        Format::Raw => "raw (sparse, offset = guest physical address)",
        Format::Elf => "ELF64 core (x86-64)",
        Format::Lime => "LiME",
    };
    let _ = writeln!(s, "file              {}", r.file);
    let _ = writeln!(s, "output            {}", r.output);
    let _ = writeln!(s, "format            {fmt}");
    if let Some(g) = r.range {
        let _ = writeln!(
            s,
            "range             {:#x}-{:#x} (end exclusive)",
            g.start, g.end
        );
    }
    let _ = writeln!(
        s,
        "pages             {} ({} MiB) in {} runs",
        r.pages,
        r.pages.saturating_mul(PAGE_SIZE as u64) >> 20,
        r.runs
    );
    let _ = writeln!(s, "output length     {} bytes", r.output_len);
    let _ = writeln!(s, "vcpus             {}", r.vcpus.len());
    for v in &r.vcpus {
        let src = match v.source {
            cpu::Source::VcpuAndCpuRecord => "vcpu + CPU record",
            cpu::Source::VcpuRecord => "vcpu record",
            cpu::Source::CpuRecord => "CPU record",
        };
        let _ = writeln!(
            s,
            "  {:<3} rip {:#018x}  rsp {:#018x}  cr3 {:#x}  ({src})",
            v.id, v.rip, v.rsp, v.cr3
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning           {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(pfn: u64) -> PageCopy {
        PageCopy {
            pfn,
            offset: 0,
            pass: 0,
        }
    }

    /// Gathered writes land at their offsets, holes between them are
    /// skipped (read back as zeros), and a page at the top of the 64-bit
    /// space is an I/O error, never a wrapped offset or a panic.
    #[test]
    fn gather_writes_at_offsets_and_skips_holes() {
        let mut f = tempfile::tempfile().unwrap();
        let mut g = Gather::new(&mut f, 0);
        g.put(0, &[1; 4096]).unwrap();
        g.put(4096, &[2; 4096]).unwrap();
        g.put(5 * 4096, &[3; 4096]).unwrap();
        g.put(6 * 4096, &vec![4; BUFFER]).unwrap();
        g.finish().unwrap();
        let mut got = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got.len(), 6 * 4096 + BUFFER);
        assert!(got[..4096].iter().all(|b| *b == 1));
        assert!(got[4096..8192].iter().all(|b| *b == 2));
        assert!(got[8192..5 * 4096].iter().all(|b| *b == 0));
        assert!(got[5 * 4096..6 * 4096].iter().all(|b| *b == 3));
        assert!(got[6 * 4096..].iter().all(|b| *b == 4));
        let mut f = tempfile::tempfile().unwrap();
        let mut g = Gather::new(&mut f, 0);
        g.put(u64::MAX - 4095, &[5; 4096]).unwrap();
        assert!(g.finish().is_err());
    }

    #[test]
    fn runs_split_at_every_gap() {
        let p: Vec<PageCopy> = [0, 1, 2, 4, 5, 9, u64::MAX].into_iter().map(copy).collect();
        assert_eq!(runs(&p), vec![(0, 3), (4, 2), (9, 1), (u64::MAX, 1)]);
        assert_eq!(runs(&[]), vec![]);
    }

    #[test]
    fn ranges_parse_page_aligned_with_exclusive_end() {
        let r: PhysRange = "0x1000-0x3000".parse().unwrap();
        assert_eq!((r.start, r.end), (0x1000, 0x3000));
        assert_eq!(r.pfns(), (1, 3));
        let r: PhysRange = "0-8192".parse().unwrap();
        assert_eq!(r.pfns(), (0, 2));
        for bad in [
            "0x1000",
            "0x1001-0x2000",
            "0x2000-0x1000",
            "0x1000-0x1000",
            "x-0x1000",
        ] {
            assert!(bad.parse::<PhysRange>().is_err(), "{bad}");
        }
    }
}

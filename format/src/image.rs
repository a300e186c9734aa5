//! Opening an image: envelope, dialect, then a stream reader positioned at
//! the libxc stream with file offsets, for a whole file in memory (mmap) or
//! for any `Read` (standard input).
//!
//! Consumers call [`open_slice`] or [`open_read`], pull items from the
//! reader, then ask for the [`Tail`] (xend's qemu record, or trailing bytes).

use std::io::{Chain, Cursor, Read};

use crate::dialect::{self, Detection, Dialect};
use crate::envelope::{self, EnvelopeKind, QemuTail, Sniffed, XendHeader};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::pfn::WordSize;
use crate::stream::{Reader, SliceReader};

/// How much of a pipe is buffered for sniffing and dialect detection.
pub const PREFIX_LEN: usize = 8 << 20;

/// Caller overrides for what detection would decide.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Force the toolstack word size.
    pub word: Option<WordSize>,
    /// The input's total length when known (a regular file read with
    /// read(2) rather than mapped): detection then knows whether it saw the
    /// whole image, and oversized lengths are refused at once.
    pub len: Option<u64>,
}

/// What was found around and about the stream.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The envelope and why.
    pub envelope: Sniffed,
    /// xend's header, for xend files.
    pub xend: Option<XendHeader>,
    /// File offset of the libxc stream.
    pub stream_offset: u64,
    /// Dialect and word size, with evidence.
    pub detection: Detection,
    /// Total file length, when known.
    pub file_len: Option<u64>,
}

impl ImageInfo {
    /// The word size the stream is read with.
    pub fn word(&self) -> WordSize {
        self.detection.word
    }

    /// The configured guest memory in MiB from xend's config, if any.
    pub fn config_memory_mib(&self) -> Option<u64> {
        let cfg = self.xend.as_ref()?.config().ok()?;
        cfg.get_u64("memory")
    }
}

/// What follows the stream.
#[derive(Debug)]
pub enum Tail {
    /// Nothing: the file ends with the HVM blob.
    None,
    /// xend's `QemuDeviceModelRecord` and its QEVM sections.
    Qemu(QemuTail),
    /// Bytes that belong to no structure, at a file offset.
    Trailing { offset: u64, len: u64 },
}

fn check_dialect(det: &Detection, at: u64) -> Result<()> {
    match det.dialect {
        Dialect::Seed | Dialect::Mar2007 => Ok(()),
        other => Err(Error::invalid(
            at,
            Context::root().field("dialect"),
            "the seed dialect (e2a44bc7a4) or a layout compatible with it",
            format!(
                "{} — reading this dialect is not supported yet",
                other.describe()
            ),
        )),
    }
}

fn unsupported_envelope(kind: EnvelopeKind) -> Error {
    Error::invalid(
        0,
        Context::root().field("envelope"),
        "an xend save file or a bare legacy libxc stream",
        format!("{} — not supported yet", kind.name()),
    )
}

/// Open an image held in memory. The reader borrows from `data`.
pub fn open_slice(data: &[u8], opts: OpenOptions) -> Result<(ImageInfo, SliceReader<'_>)> {
    let sniffed = envelope::sniff(data);
    let xend = match sniffed.kind {
        EnvelopeKind::Xend => Some(envelope::parse_xend_header(data)?),
        EnvelopeKind::BareLibxc | EnvelopeKind::Unknown => None,
        EnvelopeKind::LibxcV2 => None,
        other => return Err(unsupported_envelope(other)),
    };
    let stream_offset = xend.as_ref().map_or(0, |x| x.stream_offset);
    let stream = &data[stream_offset as usize..];
    let mut detection = dialect::detect(stream);
    if let Some(w) = opts.word {
        detection.word = w;
        detection
            .evidence
            .push(format!("word size forced to {w} by the caller"));
    }
    if detection.dialect == Dialect::V2 {
        return Err(unsupported_envelope(EnvelopeKind::LibxcV2));
    }
    check_dialect(&detection, stream_offset)?;
    let reader = SliceReader::new(stream, detection.word, stream_offset);
    Ok((
        ImageInfo {
            envelope: sniffed,
            xend,
            stream_offset,
            detection,
            file_len: Some(data.len() as u64),
        },
        reader,
    ))
}

/// The tail after a [`SliceReader`] that has returned `None`.
pub fn slice_tail(info: &ImageInfo, reader: &SliceReader<'_>) -> Result<Tail> {
    let rest = reader.rest();
    let at = reader.position();
    if info.xend.is_some() {
        return Ok(Tail::Qemu(envelope::parse_qemu_tail(rest, at)?));
    }
    Ok(if rest.is_empty() {
        Tail::None
    } else if rest.starts_with(b"QemuDeviceModelRecord") {
        Tail::Qemu(envelope::parse_qemu_tail(rest, at)?)
    } else {
        Tail::Trailing {
            offset: at,
            len: rest.len() as u64,
        }
    })
}

/// The input of a streaming reader: the buffered prefix, then the rest.
pub type PrefixedRead<R> = Chain<Cursor<Vec<u8>>, R>;

/// Open an image from any `Read` (a pipe). The first [`PREFIX_LEN`] bytes are
/// buffered for detection; the evidence says when it saw only a prefix.
pub fn open_read<R: Read>(
    mut r: R,
    opts: OpenOptions,
) -> Result<(ImageInfo, Reader<PrefixedRead<R>>)> {
    let mut prefix = Vec::new();
    (&mut r)
        .take(PREFIX_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::new(0, Context::root(), ErrorKind::Io(e)))?;
    let whole = prefix.len() < PREFIX_LEN || opts.len == Some(prefix.len() as u64);
    let sniffed = envelope::sniff(&prefix);
    let mut cur = Cursor::new(prefix);
    let xend = match sniffed.kind {
        EnvelopeKind::Xend => {
            let total = opts.len.or(whole.then(|| cur.get_ref().len() as u64));
            Some(envelope::read_xend_header(&mut cur, total)?)
        }
        EnvelopeKind::BareLibxc | EnvelopeKind::Unknown => None,
        other => return Err(unsupported_envelope(other)),
    };
    let stream_offset = xend.as_ref().map_or(0, |x| x.stream_offset);
    let mut detection = dialect::detect(&cur.get_ref()[stream_offset as usize..]);
    if !whole {
        detection.evidence.push(format!(
            "detection saw only the first {} MiB (a pipe)",
            PREFIX_LEN >> 20
        ));
    }
    if let Some(w) = opts.word {
        detection.word = w;
        detection
            .evidence
            .push(format!("word size forced to {w} by the caller"));
    }
    if detection.dialect == Dialect::V2 {
        return Err(unsupported_envelope(EnvelopeKind::LibxcV2));
    }
    check_dialect(&detection, stream_offset)?;
    let file_len = opts.len.or(whole.then(|| cur.get_ref().len() as u64));
    let mut reader = Reader::new(cur.chain(r), detection.word, stream_offset);
    if let Some(end) = file_len {
        reader = reader.with_end(end);
    }
    Ok((
        ImageInfo {
            envelope: sniffed,
            xend,
            stream_offset,
            detection,
            file_len,
        },
        reader,
    ))
}

/// The tail after a streaming [`Reader`] that has returned `None`; consumes
/// the rest of the input.
pub fn read_tail<R: Read>(info: &ImageInfo, reader: Reader<R>) -> Result<Tail> {
    let at = reader.position();
    let mut r = reader.into_inner();
    if info.xend.is_some() {
        return Ok(Tail::Qemu(envelope::read_qemu_tail(&mut r, at)?));
    }
    let mut first = [0u8; 21];
    let mut got = 0;
    while got < first.len() {
        match r.read(&mut first[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::new(at, Context::root(), ErrorKind::Io(e))),
        }
    }
    if got == 0 {
        return Ok(Tail::None);
    }
    if &first[..got] == b"QemuDeviceModelRecord" {
        let mut chained = (&first[..]).chain(r);
        return Ok(Tail::Qemu(envelope::read_qemu_tail(&mut chained, at)?));
    }
    let rest = std::io::copy(&mut r, &mut std::io::sink())
        .map_err(|e| Error::new(at, Context::root(), ErrorKind::Io(e)))?;
    Ok(Tail::Trailing {
        offset: at,
        len: got as u64 + rest,
    })
}

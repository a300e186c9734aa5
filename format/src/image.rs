//! Opening an image: envelope (xend, xl, libvirt's libxl driver, bare),
//! dialect (every legacy layout of docs/format.md §7), then a stream reader
//! positioned at the libxc stream with file offsets, for a whole file in
//! memory (mmap) or for any `Read` (standard input). Migration v2 images are
//! read by [`crate::v2`]; [`open_any_read`] finds one inside its envelope
//! and presents it as the same elements.
//!
//! Consumers call [`open_slice`] or [`open_read`], pull items from the
//! reader, then ask for the [`Tail`] (xend's qemu record, or trailing bytes).
//!
//! The open and detection functions take offsets and lengths from the
//! input; each denies `clippy::arithmetic_side_effects`, so they use
//! checked arithmetic only and `clippy -D warnings` keeps it so.

use std::io::{Chain, Cursor, Read};

use crate::bytes::{le, read_full_at};
use crate::dialect::{self, Detection, Dialect};
use crate::envelope::{self, EnvelopeKind, QemuTail, Sniffed, XendHeader, LIBVIRT_LIBXL_MAGIC};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::legacy::libvirt::LibvirtHeader;
use crate::pfn::WordSize;
use crate::stream::DM_RECORD_0002;
use crate::stream::{
    Batch, DeviceModel, Element, HvmBlob, Item, Layout, MagicPfns, Reader, SliceReader,
};
use crate::v2::XlHeader;
use crate::v2::{AfterEnd, LibxlItem, LibxlRecord, RecordBody};

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
    /// xl's header, for xl files of Xen ≤ 4.5 (a legacy stream follows).
    pub xl: Option<XlHeader>,
    /// libvirt's libxl driver header.
    pub libvirt: Option<LibvirtHeader>,
    /// File offset of the libxc stream.
    pub stream_offset: u64,
    /// Dialect and word size, with evidence.
    pub detection: Detection,
    /// The layout the stream is read with (dialect and optional parts).
    pub layout: Layout,
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
#[non_exhaustive]
pub enum Tail {
    /// Nothing: the file ends with the HVM blob.
    None,
    /// xend's `QemuDeviceModelRecord` and its QEVM sections.
    Qemu(QemuTail),
    /// Bytes that belong to no structure, at a file offset.
    Trailing {
        /// File offset of the first such byte.
        offset: u64,
        /// How many were counted.
        len: u64,
        /// More bytes follow the `len` counted: a pipe is counted only up
        /// to [`envelope::TRAILING_COUNT_LIMIT`].
        more: bool,
    },
    /// libxl's `DeviceModelRecord0002` after a bare 3.x–4.5 stream read
    /// through a pipe, where the detection prefix could not see it (a stream
    /// read whole yields it as an [`Element::DeviceModel`]). The state is
    /// counted, not kept.
    DeviceModel {
        /// File offset of the signature.
        offset: u64,
        /// File offset of the state's first byte.
        data_offset: u64,
        /// Bytes of state.
        len: u64,
        /// The state is a QEVM file (qemu-traditional).
        qevm: bool,
    },
}

#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
fn check_dialect(det: &Detection, at: u64) -> Result<()> {
    match det.dialect {
        Dialect::V2 => Err(Error::invalid(
            at,
            Context::root().field("dialect"),
            "a legacy libxc stream (v2 images are read by hvm_format::v2)",
            "a migration v2 stream".to_string(),
        )),
        _ => Ok(()),
    }
}

fn unsupported_envelope(kind: EnvelopeKind) -> Error {
    Error::invalid(
        0,
        Context::root().field("envelope"),
        "an xend, xl or libvirt (libxl driver) save file, or a bare legacy libxc stream",
        match kind {
            EnvelopeKind::LibvirtQemu => {
                "a libvirt QEMU driver save file (a QEMU/KVM guest, not Xen)".to_string()
            }
            EnvelopeKind::LibxcV2 | EnvelopeKind::LibxlV2 => {
                format!("{} — read it with hvm_format::v2", kind.name())
            }
            other => other.name().to_string(),
        },
    )
}

/// The headers before the stream, read from the start of the file.
struct Headers {
    xend: Option<XendHeader>,
    xl: Option<XlHeader>,
    libvirt: Option<LibvirtHeader>,
    stream_offset: u64,
}

#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
fn read_headers<R: Read>(
    r: &mut R,
    sniffed: &Sniffed,
    prefix: &[u8],
    total: Option<u64>,
) -> Result<Headers> {
    let mut h = Headers {
        xend: None,
        xl: None,
        libvirt: None,
        stream_offset: 0,
    };
    match sniffed.kind {
        EnvelopeKind::Xend => {
            let x = envelope::read_xend_header(r, total)?;
            // xend parsed the config before anything else and refused the
            // file when it could not (bad nesting, an unterminated string,
            // invalid UTF-8): so does every reader here, at the config's
            // offset, rather than calling such an image valid.
            x.config()?;
            h.stream_offset = x.stream_offset;
            h.xend = Some(x);
        }
        EnvelopeKind::Xl => {
            let x = XlHeader::read(r)?;
            x.checked_config()?;
            h.stream_offset = x.encoded_len();
            if x.is_stream_v2() {
                return Err(unsupported_envelope(EnvelopeKind::LibxlV2));
            }
            h.xl = Some(x);
        }
        EnvelopeKind::LibvirtXml if prefix.starts_with(LIBVIRT_LIBXL_MAGIC) => {
            let l = LibvirtHeader::read(r, total)?;
            h.stream_offset = l.encoded_len();
            h.libvirt = Some(l);
        }
        EnvelopeKind::BareLibxc | EnvelopeKind::Unknown => {}
        other => return Err(unsupported_envelope(other)),
    }
    Ok(h)
}

/// Detection that never reached the tail (a prefix, or a damaged stream)
/// guesses the seed when it saw no negative chunk; a leading word that is a round page count
/// (p2m_size) rather than an inclusive max pfn points to Xen 3.1–4.5.
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
fn refine_prefix_guess(det: &mut Detection, stream: &[u8]) {
    if det.complete || det.dialect != Dialect::Seed {
        return;
    }
    let Some(first) = stream.get(..det.word.bytes()).map(|b| det.word.read(b)) else {
        return;
    };
    if first != 0 && first & 0xFF == 0 {
        det.dialect = Dialect::Legacy;
        det.evidence.push(format!(
            "the tail was not reached; first word {first:#x} is a round page count (p2m_size), so Xen 3.1–4.5 rather than the seed's inclusive max_pfn"
        ));
    }
}

/// The layout to read `det`'s dialect with, deciding the optional parts
/// (libxl's device model record, Jan 2007's shared_info_frame) from the
/// envelope and, when the whole stream is at hand, from what follows it.
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
fn layout_for(det: &mut Detection, h: &Headers, stream: Option<&[u8]>) -> Layout {
    let mut layout = Layout::of(det.dialect);
    if det.dialect == Dialect::Legacy && (h.xl.is_some() || h.libvirt.is_some()) {
        layout.device_model = true;
        det.evidence
            .push("xl/libvirt envelope: DeviceModelRecord0002 follows the stream".into());
        return layout;
    }
    let Some(data) = stream else {
        return layout;
    };
    if !matches!(det.dialect, Dialect::Legacy | Dialect::Jan2007) {
        return layout;
    }
    let mut r = SliceReader::with_layout(data, det.word, 0, layout);
    while let Ok(Some(_)) = r.next_element() {}
    if !r.is_done() {
        return layout;
    }
    let rest = r.rest();
    if det.dialect == Dialect::Legacy && rest.starts_with(b"DeviceModelRecord0002") {
        layout.device_model = true;
        det.evidence.push(format!(
            "DeviceModelRecord0002 at stream byte {} (libxl's device model record)",
            r.position()
        ));
    }
    if det.dialect == Dialect::Jan2007
        && (rest.len() == 4
            || rest
                .get(4..)
                .is_some_and(|t| t.starts_with(b"QemuDeviceModelRecord")))
    {
        layout.shared_info_frame = true;
        det.evidence.push(format!(
            "a u32 shared_info_frame follows the vcpu records at stream byte {}",
            r.position()
        ));
    }
    layout
}

/// Open an image held in memory. The reader borrows from `data`.
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
pub fn open_slice(data: &[u8], opts: OpenOptions) -> Result<(ImageInfo, SliceReader<'_>)> {
    let sniffed = envelope::sniff(data);
    let mut cur = data;
    let h = read_headers(&mut cur, &sniffed, data, Some(data.len() as u64))?;
    // A stream offset at the end leaves nothing to detect; the reader then
    // reports the truncation at that offset.
    let stream = data.get(h.stream_offset as usize..).unwrap_or_default();
    let mut detection = dialect::detect(stream);
    if let Some(w) = opts.word {
        detection.word = w;
        detection
            .evidence
            .push(format!("word size forced to {w} by the caller"));
    }
    check_dialect(&detection, h.stream_offset)?;
    refine_prefix_guess(&mut detection, stream);
    let layout = layout_for(&mut detection, &h, Some(stream));
    let reader = SliceReader::with_layout(stream, detection.word, h.stream_offset, layout);
    Ok((
        ImageInfo {
            envelope: sniffed,
            xend: h.xend,
            xl: h.xl,
            libvirt: h.libvirt,
            stream_offset: h.stream_offset,
            detection,
            layout,
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
            more: false,
        }
    })
}

/// The input of a streaming reader: the buffered prefix, then the rest.
pub type PrefixedRead<R> = Chain<Cursor<Vec<u8>>, R>;

/// Open an image from any `Read` (a pipe). The first [`PREFIX_LEN`] bytes are
/// buffered for detection; the evidence says when it saw only a prefix.
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
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
    let total = opts.len.or(whole.then_some(prefix.len() as u64));
    let mut cur = Cursor::new(prefix);
    let h = {
        // The headers look only at the first bytes for the libvirt magic:
        // copy those, not the whole prefix (8 MiB more of heap).
        let p = cur.get_ref();
        let head = p[..p.len().min(LIBVIRT_LIBXL_MAGIC.len())].to_vec();
        read_headers(&mut cur, &sniffed, &head, total)?
    };
    // As in `open_slice`: an empty stream is reported by the reader.
    let stream = cur
        .get_ref()
        .get(h.stream_offset as usize..)
        .unwrap_or_default();
    let mut detection = dialect::detect(stream);
    if !whole {
        detection.evidence.push(format!(
            "detection saw only the first {} MiB of the {}; the reader confirms the tail",
            PREFIX_LEN >> 20,
            if opts.len.is_some() { "file" } else { "pipe" }
        ));
    }
    if let Some(w) = opts.word {
        detection.word = w;
        detection
            .evidence
            .push(format!("word size forced to {w} by the caller"));
    }
    check_dialect(&detection, h.stream_offset)?;
    // Same as the slice path: a file read whole must be read the same way
    // whether it was mapped or piped.
    refine_prefix_guess(&mut detection, stream);
    let layout = layout_for(&mut detection, &h, whole.then_some(stream));
    let file_len = total;
    let mut reader = Reader::with_layout(cur.chain(r), detection.word, h.stream_offset, layout);
    if let Some(end) = file_len {
        reader = reader.with_end(end);
    }
    Ok((
        ImageInfo {
            envelope: sniffed,
            xend: h.xend,
            xl: h.xl,
            libvirt: h.libvirt,
            stream_offset: h.stream_offset,
            detection,
            layout,
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
    let got = read_full_at(&mut r, &mut first, at, &Context::root())?;
    if got == 0 {
        return Ok(Tail::None);
    }
    if &first[..got] == b"QemuDeviceModelRecord" {
        let mut chained = (&first[..]).chain(r);
        return Ok(Tail::Qemu(envelope::read_qemu_tail(&mut chained, at)?));
    }
    if info.detection.dialect == Dialect::Legacy && first[..got] == DM_RECORD_0002[..] {
        return read_device_model_tail(&mut r, at);
    }
    let (len, more) = envelope::count_rest(&mut r, got as u64)
        .map_err(|e| Error::new(at, Context::root(), ErrorKind::Io(e)))?;
    Ok(Tail::Trailing {
        offset: at,
        len,
        more,
    })
}

// ------------------------------------------------------------------ v2

/// `DeviceModelRecord0002` (already read, at `at`), then u32 length and
/// the state, counted in fixed steps; nothing may follow.
fn read_device_model_tail<R: Read>(r: &mut R, at: u64) -> Result<Tail> {
    let ctx = Context::root().field("device model record");
    let io = |off: u64, e: std::io::Error| Error::new(off, ctx.clone(), ErrorKind::Io(e));
    let mut len = [0u8; 4];
    let got = read_full_at(r, &mut len, at + 21, &ctx)?;
    if got < 4 {
        return Err(Error::truncated(
            at + 21,
            ctx.field("length"),
            4,
            got as u64,
        ));
    }
    let len = u64::from(le::<u32>(&len, 0).unwrap_or_default());
    let data_offset = at + 25;
    let mut head = [0u8; 4];
    let mut state = r.take(len);
    let seen = read_full_at(
        &mut state,
        &mut head[..len.min(4) as usize],
        data_offset,
        &ctx,
    )?;
    let rest = std::io::copy(&mut state, &mut std::io::sink()).map_err(|e| io(data_offset, e))?;
    let have = seen as u64 + rest;
    if have < len {
        return Err(Error::truncated(data_offset, ctx.field("state"), len, have));
    }
    let (after, more) = envelope::count_rest(r, 0).map_err(|e| io(data_offset + len, e))?;
    if more {
        return Err(Error::invalid(
            data_offset + len,
            Context::root().field("after the device model record"),
            "the end of the image",
            format!("more than {after} bytes"),
        ));
    }
    if after > 0 {
        return Err(Error::new(
            data_offset + len,
            Context::root().field("after the device model record"),
            ErrorKind::TrailingBytes { count: after },
        ));
    }
    Ok(Tail::DeviceModel {
        offset: at,
        data_offset,
        len,
        qevm: &head[..] == b"QEVM",
    })
}

/// A migration v2 image (bare libxc, libxl, or inside an xl or libvirt
/// header) seen as the legacy [`Element`]s, so every consumer of legacy
/// streams (summary, the index, the digest) reads it unchanged: PAGE_DATA is
/// a batch whose pages keep their file offsets, HVM_CONTEXT the HVM blob,
/// VERIFY the verify marker, HVM_PARAMS the magic pfns and EMULATOR_CONTEXT
/// the device model record.
pub struct V2Elements<R> {
    src: V2Source<R>,
    /// Legacy-form pfn words of the current PAGE_DATA.
    pfns: Vec<u8>,
    batches: u64,
    verify: bool,
    /// What followed a libxc-framed image's END, once looked at.
    after_end: Option<Tail>,
}

enum V2Source<R> {
    Libxc(crate::v2::Reader<R>, bool),
    Libxl(crate::v2::LibxlReader<R>),
}

impl<R: Read> V2Elements<R> {
    /// File offset of the next byte.
    pub fn position(&self) -> u64 {
        match &self.src {
            V2Source::Libxc(r, _) => r.offset(),
            V2Source::Libxl(r) => r.offset(),
        }
    }

    /// The next element, or `None` after the final END.
    pub fn next_element(&mut self) -> Result<Option<Element<'_>>> {
        let V2Elements {
            src,
            pfns,
            batches,
            verify,
            after_end,
        } = self;
        let rec = match src {
            V2Source::Libxc(r, done) => {
                if *done {
                    if after_end.is_some() {
                        return Ok(None);
                    }
                    // Xen's converter appends the device model state after
                    // END; anything else there is trailing bytes.
                    return Ok(match r.after_end()? {
                        AfterEnd::Nothing => {
                            *after_end = Some(Tail::None);
                            None
                        }
                        AfterEnd::Trailing { offset, len, more } => {
                            *after_end = Some(Tail::Trailing { offset, len, more });
                            None
                        }
                        AfterEnd::DeviceModel {
                            offset,
                            data_offset,
                            data,
                        } => Some(Element::DeviceModel(DeviceModel {
                            offset,
                            data_offset,
                            bytes: data,
                        })),
                    });
                }
                match r.next_record()? {
                    Some(rec) => {
                        *done = matches!(rec.body, RecordBody::End);
                        rec
                    }
                    None => return Ok(None),
                }
            }
            V2Source::Libxl(r) => match r.next_item()? {
                None => return Ok(None),
                Some(LibxlItem::LibxcHeaders { offset, .. }) => {
                    return Ok(Some(Element::V2Record {
                        offset,
                        name: "libxc image and domain headers",
                        len: 40,
                    }))
                }
                Some(LibxlItem::Libxc(rec)) => rec,
                Some(LibxlItem::Record { offset, record, .. }) => {
                    return Ok(Some(match record {
                        LibxlRecord::EmulatorContext { data, .. } => {
                            let bytes: &[u8] = match data {
                                std::borrow::Cow::Borrowed(b) => b,
                                std::borrow::Cow::Owned(_) => &[],
                            };
                            Element::DeviceModel(DeviceModel {
                                offset,
                                data_offset: offset + 16,
                                bytes,
                            })
                        }
                        other => Element::V2Record {
                            offset,
                            name: other.rtype().name().unwrap_or("libxl UNKNOWN"),
                            len: 0,
                        },
                    }));
                }
            },
        };
        v2_element(rec, pfns, batches, verify).map(Some)
    }
}

/// The v2 readers lend bodies from their buffer; an owned body would mean
/// they changed, and must not turn into empty data silently.
fn not_borrowed(offset: u64) -> Error {
    Error::invalid(
        offset,
        Context::root().field("v2 record"),
        "a body borrowed from the reader's buffer",
        "an owned copy",
    )
}

/// One libxc record as an element.
fn v2_element<'a>(
    rec: crate::v2::Record<'a>,
    pfns: &'a mut Vec<u8>,
    batches: &mut u64,
    verify: &mut bool,
) -> Result<Element<'a>> {
    let offset = rec.offset;
    let body_at = offset + 8;
    Ok(match rec.body {
        RecordBody::PageData(p) => {
            pfns.clear();
            for (i, e) in p.entries.iter().enumerate() {
                let pfn = e.pfn().0;
                let nib = e.type_nibble();
                // The legacy model carries data only for untyped entries.
                if pfn >= 1 << 28 || (nib != 0 && e.has_data()) {
                    return Err(Error::invalid(
                        body_at + 8 + 8 * i as u64,
                        Context::root()
                            .index("record", rec.index)
                            .index("pfn", i as u64),
                        "an HVM pfn below 2^28 of type NOTAB, XTAB, XALLOC or BROKEN",
                        format!("{e}"),
                    ));
                }
                let word = (u64::from(nib) << 28) | pfn;
                pfns.extend_from_slice(&word.to_le_bytes());
            }
            let std::borrow::Cow::Borrowed(pages) = p.pages else {
                return Err(not_borrowed(offset));
            };
            let index = *batches;
            *batches += 1;
            Element::Item(Item::Batch(Batch {
                offset: body_at + 4,
                index,
                verify: *verify,
                word: WordSize::W64,
                pfn_bytes: &pfns[..],
                pages,
            }))
        }
        RecordBody::Verify => {
            *verify = true;
            Element::Item(Item::VerifyMarker { offset })
        }
        RecordBody::HvmContext(b) => {
            let std::borrow::Cow::Borrowed(bytes) = b else {
                return Err(not_borrowed(offset));
            };
            Element::Item(Item::HvmBlob(HvmBlob {
                offset: body_at - 4,
                bytes,
            }))
        }
        RecordBody::End => Element::Item(Item::End { offset }),
        RecordBody::HvmParams(ref ps) => {
            let get = |i| ps.params.iter().find(|p| p.index == i).map(|p| p.value);
            match (
                get(crate::v2::HvmParam::IOREQ_PFN),
                get(crate::v2::HvmParam::BUFIOREQ_PFN),
                get(crate::v2::HvmParam::STORE_PFN),
            ) {
                (Some(ioreq), Some(bufioreq), Some(store)) => Element::MagicPfns(MagicPfns {
                    offset: body_at,
                    ioreq,
                    bufioreq,
                    store,
                }),
                _ => Element::V2Record {
                    offset,
                    name: "HVM_PARAMS",
                    len: 8 + 16 * ps.params.len() as u64,
                },
            }
        }
        other => Element::V2Record {
            offset,
            name: other.rtype().name().unwrap_or("UNKNOWN"),
            len: other.encoded_len(),
        },
    })
}

/// A reader of any image: a legacy stream, or a v2 image seen as elements.
pub enum AnyReader<R> {
    /// Every legacy dialect (the sniffed prefix, then [`open_read`]'s).
    Legacy(Reader<PrefixedRead<PrefixedRead<R>>>),
    /// Migration v2 (libxc, libxl, xl).
    V2(V2Elements<PrefixedRead<R>>),
}

impl<R: Read> AnyReader<R> {
    /// The next element, or `None` at the end of the stream.
    pub fn next_element(&mut self) -> Result<Option<Element<'_>>> {
        match self {
            AnyReader::Legacy(r) => r.next_element(),
            AnyReader::V2(r) => r.next_element(),
        }
    }

    /// File offset of the next unread byte.
    pub fn position(&self) -> u64 {
        match self {
            AnyReader::Legacy(r) => r.position(),
            AnyReader::V2(r) => r.position(),
        }
    }
}

/// True when `prefix` starts a migration v2 image in any framing (bare
/// libxc, libxl, xl with STREAMv2, or libvirt's libxl header before one).
pub fn is_v2(prefix: &[u8]) -> bool {
    v2_start(prefix).is_some()
}

/// Where the v2 image in `p` (a file's first bytes) starts, past an xl or
/// libvirt header, and whether it is libxl-framed; `None` when `p` starts
/// no v2 image.
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
pub fn v2_start(p: &[u8]) -> Option<(u64, bool)> {
    let at = |o: usize| -> Option<(u64, bool)> {
        let rest = p.get(o..)?;
        if rest.starts_with(b"LibxlFmt") {
            Some((o as u64, true))
        } else if rest.get(..8) == Some(&[0xFF; 8][..]) && rest.get(8..12) == Some(b"XENF") {
            Some((o as u64, false))
        } else {
            None
        }
    };
    if p.starts_with(&XlHeader::MAGIC) {
        let opt = le::<u32>(p, 44)? as usize;
        return at(XlHeader::FIXED_SIZE.checked_add(opt)?);
    }
    if p.starts_with(LIBVIRT_LIBXL_MAGIC) {
        let xml = le::<u32>(p, 20)? as usize;
        return at(LibvirtHeader::FIXED_SIZE.checked_add(xml)?);
    }
    at(0)
}

/// Open any image from a `Read`: legacy dialects as [`open_read`], v2
/// images (any framing) as [`V2Elements`].
#[deny(clippy::arithmetic_side_effects)] // offsets from the input: checked
pub fn open_any_read<R: Read>(mut r: R, opts: OpenOptions) -> Result<(ImageInfo, AnyReader<R>)> {
    let mut prefix = Vec::new();
    (&mut r)
        .take(1 << 16)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::new(0, Context::root(), ErrorKind::Io(e)))?;
    let Some((start, libxl)) = v2_start(&prefix) else {
        let (info, reader) = open_read(Cursor::new(prefix).chain(r), opts)?;
        return Ok((info, AnyReader::Legacy(reader)));
    };
    let sniffed = envelope::sniff(&prefix);
    let total = opts.len;
    let mut cur = Cursor::new(prefix);
    let (mut xl, mut libvirt) = (None, None);
    if sniffed.kind == EnvelopeKind::Xl {
        let x = XlHeader::read(&mut cur)?;
        x.checked_config()?;
        xl = Some(x);
    } else if sniffed.kind == EnvelopeKind::LibvirtXml {
        libvirt = Some(LibvirtHeader::read(&mut cur, total)?);
    }
    cur.set_position(start);
    let input: PrefixedRead<R> = cur.chain(r);
    let src = if libxl {
        V2Source::Libxl(crate::v2::LibxlReader::with_offset(input, start)?)
    } else {
        V2Source::Libxc(crate::v2::Reader::with_offset(input, start)?, false)
    };
    let framing = match (&xl, libxl) {
        (Some(_), _) => "xl",
        (None, true) => "libxl",
        (None, false) => "libxc",
    };
    let detection = Detection {
        dialect: Dialect::V2,
        word: WordSize::W64,
        evidence: vec![format!(
            "migration v2 ({framing} framing) at byte {start}: {}",
            if libxl {
                "'LibxlFmt' header"
            } else {
                "all-ones marker and 'XENF'"
            }
        )],
        complete: true,
    };
    Ok((
        ImageInfo {
            envelope: sniffed,
            xend: None,
            xl,
            libvirt,
            stream_offset: start,
            detection,
            layout: Layout::of(Dialect::V2),
            file_len: total,
        },
        AnyReader::V2(V2Elements {
            src,
            pfns: Vec::with_capacity(8 * 1024),
            batches: 0,
            verify: false,
            after_end: None,
        }),
    ))
}

/// The tail after an [`AnyReader`] that returned `None`: for v2, bytes
/// after the final END (a libxc image's appended device model state was
/// already an element).
pub fn read_any_tail<R: Read>(info: &ImageInfo, reader: AnyReader<R>) -> Result<Tail> {
    match reader {
        AnyReader::Legacy(r) => read_tail(info, r),
        AnyReader::V2(V2Elements {
            src: V2Source::Libxc(..),
            after_end,
            ..
        }) => Ok(after_end.unwrap_or(Tail::None)),
        AnyReader::V2(V2Elements {
            src: V2Source::Libxl(r),
            ..
        }) => {
            let at = r.offset();
            let (rest, more) = envelope::count_rest(&mut r.into_inner(), 0).map_err(|e| {
                Error::new(at, Context::root().field("after END"), ErrorKind::Io(e))
            })?;
            Ok(if rest == 0 {
                Tail::None
            } else {
                Tail::Trailing {
                    offset: at,
                    len: rest,
                    more,
                }
            })
        }
    }
}

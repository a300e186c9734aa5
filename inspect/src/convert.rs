//! `hvm-inspect convert IMAGE -o OUT --to libxc|libxl|xl`: any readable
//! legacy image into a migration v2 stream current Xen restores; a v2
//! image is re-framed instead (the private `reframe` module).
//!
//! One streaming pass with read(2) into the reader's reused buffer: page
//! batches become PAGE_DATA records as they arrive (one vectored write
//! each), so memory stays at one batch plus the small parts kept for the
//! end (vCPU contexts, the HVM blob, the device model's state). The HVM blob
//! is translated into current layouts by `hvm_format::hvm::translate`, the
//! magic pfns become HVM_PARAMS (synthesised from xc_hvm_build's layout
//! where the stream never carried them), XTAB entries are dropped and the
//! device model's state becomes libxl's EMULATOR_CONTEXT. Every such change
//! is listed in the report; what has no v2 equivalent is an error.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::Path;

use hvm_format::dialect::Dialect;
use hvm_format::hvm::translate;
use hvm_format::image::{is_v2, open_read, ImageInfo, OpenOptions, PrefixedRead};
use hvm_format::pfn::{PfnType, MMIO_HOLE_START};
use hvm_format::stream::{chunk_hvm_param, chunk_name, Element, Item, Reader, DM_RECORD_0002};
use hvm_format::v2::libxc::{
    DomainHeader, HvmParam, HvmParams, ImageHeader, PageDataEntry, RecordBody, TscInfo,
};
use hvm_format::v2::libxl::{EmulatorId, LibxlHeader, LibxlRecord, LibxlWriter};
use hvm_format::v2::writer::Writer;
use hvm_format::v2::xl::XlHeader;
use hvm_format::vcpu::VcpuContext;
use hvm_format::{Context, Error, ErrorKind};

use hvm_cli::output::{AtomicFile, Outputs};

use crate::input::{Input, InspectError};
use crate::target::{emulator_id, xl_config_json};
pub use crate::target::{ConvertReport, Target};

/// The largest device model state carried (qemu-dm's file is a few MiB,
/// its Cirrus VRAM 8 MiB).
pub(crate) const MAX_EMULATOR_STATE: u64 = 256 << 20;

/// Parts kept until the end of the stream.
#[derive(Default)]
struct Kept {
    max_pfn: Option<u64>,
    vcpus: Vec<Vec<u8>>,
    /// File offset of the blob's first byte, and the blob.
    blob: Option<(u64, Vec<u8>)>,
    magic: Option<[u64; 3]>,
    params: Vec<(u64, u64)>,
    tsc: Option<TscInfo>,
    /// libxl's physmap from a −18 TOOLSTACK chunk, as xenstore keys, and
    /// the chunk's offset.
    xenstore: Vec<(String, String)>,
    toolstack_at: Option<u64>,
    device_model: Option<Vec<u8>>,
    compressed: bool,
    /// Typed entries other than XTAB (L1TAB…XALLOC) dropped.
    typed_dropped: u64,
}

fn bad(at: u64, what: &'static str, expected: &str, found: String) -> Error {
    Error::invalid(at, Context::root().field(what), expected, found)
}

/// Stream the page section into `w` and keep the rest.
fn pages<R: Read, W: Write>(
    reader: &mut Reader<R>,
    w: &mut Writer<W>,
    rep: &mut ConvertReport,
    kept: &mut Kept,
) -> hvm_format::Result<()> {
    let mut entries: Vec<PageDataEntry> = Vec::with_capacity(1024);
    let mut batch_no = 0u64;
    while let Some(e) = reader.next_element()? {
        match e {
            Element::Item(Item::MaxPfn { value, .. }) => kept.max_pfn = Some(value),
            Element::Item(Item::Batch(b)) => {
                entries.clear();
                batch_no += 1;
                for (i, e) in b.entries().enumerate() {
                    match e.kind() {
                        PfnType::Normal if e.pfn().0 < 1 << 28 => {
                            entries.push(PageDataEntry::from_legacy(e))
                        }
                        // PAGE_DATA keeps 28 pfn bits of a legacy entry:
                        // a larger pfn would land on another page. Refused
                        // here, at the input's entry.
                        PfnType::Normal => {
                            return Err(Error::invalid(
                                b.entry_offset(i),
                                Context::root()
                                    .index("batch", batch_no - 1)
                                    .index("entry", i as u64)
                                    .field("pfn"),
                                "an HVM pfn below 2^28",
                                format!("{}", e.pfn()),
                            ))
                        }
                        PfnType::XTab => rep.xtab_dropped += 1,
                        // The 2007 restorer skipped every typed entry (no
                        // data follows one) and validate accepts them; in
                        // v2 a typed HVM entry means something else or is
                        // refused, so it is dropped like XTAB, and said.
                        _ => kept.typed_dropped += 1,
                    }
                }
                if entries.is_empty() {
                    continue;
                }
                w.page_data(&entries, b.page_bytes())?;
                rep.page_records += 1;
                let n = b.page_count() as u64;
                rep.pages += n;
                if b.verify {
                    rep.verify_pages += n;
                }
            }
            Element::Item(Item::VerifyMarker { .. }) => {
                w.record(&RecordBody::Verify)?;
                rep.translations.push(
                    "-1 verify marker → VERIFY record (the resend that follows is compared, not loaded)"
                        .into(),
                );
            }
            Element::Item(Item::End { .. } | Item::VcpuCount { .. }) => {}
            Element::Item(Item::Vcpu(v)) => kept.vcpus.push(v.bytes.to_vec()),
            Element::Item(Item::HvmBlob(h)) => kept.blob = Some((h.data_offset(), h.bytes.to_vec())),
            Element::MagicPfns(m) => kept.magic = Some([m.ioreq, m.bufioreq, m.store]),
            Element::SharedInfoFrame { value, .. } => rep.translations.push(format!(
                "shared_info_frame {value:#x} dropped (an HVM guest's shared info is not restored from the stream)"
            )),
            Element::DeviceModel(d) => kept.device_model = Some(d.bytes.to_vec()),
            Element::V2Record { offset, name, .. } => {
                return Err(bad(
                    offset,
                    "record",
                    "a legacy stream (the input is already migration v2)",
                    name.to_string(),
                ))
            }
            Element::Chunk(c) => {
                let name = chunk_name(c.id);
                if let (Some(idx), Some(v)) = (chunk_hvm_param(c.id), c.param_value()) {
                    kept.params.push((idx, v));
                    rep.translations
                        .push(format!("{} {name} → HVM_PARAMS[{idx}] = {v:#x}", c.id));
                    continue;
                }
                match c.id {
                    -2 => rep.translations.push(format!(
                        "-2 VCPU_INFO dropped: the HVM context names the vCPUs ({} payload bytes)",
                        c.payload.len()
                    )),
                    -7 => {
                        let p = c.payload;
                        let u32_at = |o: usize| {
                            p.get(o..o + 4)
                                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                        };
                        let nsec = p
                            .get(4..12)
                            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                        let t = TscInfo {
                            mode: u32_at(0),
                            khz: u32_at(12),
                            nsec,
                            incarnation: u32_at(16),
                            reserved: 0,
                        };
                        rep.translations.push(format!(
                            "-7 TSC_INFO → X86_TSC_INFO (mode {}, {} kHz)",
                            t.mode, t.khz
                        ));
                        kept.tsc = Some(t);
                    }
                    -9 => rep
                        .translations
                        .push("-9 LAST_CHECKPOINT dropped (a Remus marker)".into()),
                    -13 => kept.compressed = true,
                    -18 if c.payload.len() == 4 => rep
                        .translations
                        .push("-18 TOOLSTACK (empty) dropped".into()),
                    -18 => {
                        let data = c.payload.get(4..).unwrap_or_default();
                        let keys = hvm_format::v2::libxl::physmap_keys(data, rep.word_bits, c.offset + 8)?;
                        rep.translations.push(format!(
                            "-18 TOOLSTACK: {} libxl physmap entries → EMULATOR_XENSTORE_DATA physmap/* keys",
                            keys.len() / 3
                        ));
                        kept.xenstore.extend(keys);
                        kept.toolstack_at = Some(c.offset);
                    }
                    _ => {
                        return Err(bad(
                            c.offset,
                            "chunk",
                            "a chunk with a migration v2 equivalent",
                            format!("{} {name} ({} bytes): no translation", c.id, c.payload.len()),
                        ))
                    }
                }
            }
        }
    }
    if kept.typed_dropped > 0 {
        rep.translations.push(format!(
            "{} typed entries (L1TAB…XALLOC, no data) dropped: the 2007 restorer skipped them",
            kept.typed_dropped
        ));
    }
    if kept.compressed {
        return Err(bad(
            reader.position(),
            "chunk",
            "an uncompressed stream",
            "-13 ENABLE_COMPRESSION (Remus): compressed pages cannot be converted".into(),
        ));
    }
    Ok(())
}

/// HVM_PARAMS, TSC_INFO and HVM_CONTEXT, after the pages.
fn tail_records<W: Write>(
    info: &ImageInfo,
    w: &mut Writer<W>,
    rep: &mut ConvertReport,
    kept: &Kept,
) -> hvm_format::Result<()> {
    let at = w.offset();
    if let Some(t) = kept.tsc {
        w.record(&RecordBody::X86TscInfo(t))?;
    }
    let [ioreq, bufioreq, store] = match kept.magic {
        Some(m) => {
            rep.translations.push(format!(
                "magic pfns → HVM_PARAMS IOREQ_PFN {:#x}, BUFIOREQ_PFN {:#x}, STORE_PFN {:#x}",
                m[0], m[1], m[2]
            ));
            m
        }
        None => {
            // xc_hvm_build (2007): the top three pages of RAM below 4 GiB.
            let (top, why) = match (info.config_memory_mib(), kept.max_pfn) {
                (Some(mib), _) => (
                    (mib.saturating_mul(256)).min(MMIO_HOLE_START),
                    format!("xend's memory {mib} MiB"),
                ),
                (None, Some(m)) => (
                    m.saturating_add(1).min(MMIO_HOLE_START),
                    format!("max_pfn {m:#x}"),
                ),
                (None, None) => {
                    return Err(bad(
                        at,
                        "magic pfns",
                        "magic pfns, a max_pfn or xend's memory",
                        "none of them".into(),
                    ))
                }
            };
            let ioreq = top.saturating_sub(1);
            let m = [ioreq, ioreq.saturating_sub(2), ioreq.saturating_sub(1)];
            rep.translations.push(format!(
                "HVM_PARAMS synthesised from xc_hvm_build's layout ({why}): IOREQ_PFN {:#x}, BUFIOREQ_PFN {:#x}, STORE_PFN {:#x}",
                m[0], m[1], m[2]
            ));
            m
        }
    };
    let mut params = kept.params.clone();
    params.extend([
        (HvmParam::IOREQ_PFN, ioreq),
        (HvmParam::BUFIOREQ_PFN, bufioreq),
        (HvmParam::STORE_PFN, store),
    ]);
    rep.hvm_params = params.clone();
    w.record(&RecordBody::HvmParams(HvmParams::from_pairs(
        params.iter().copied(),
    )))?;
    let (blob_at, blob) = kept
        .blob
        .as_ref()
        .ok_or_else(|| bad(at, "hvm blob", "an HVM context blob", "none".into()))?;
    let vcpus = kept
        .vcpus
        .iter()
        .map(|b| VcpuContext::parse_as(info.word(), b))
        .collect::<hvm_format::Result<Vec<_>>>()?;
    let t = translate::to_current(blob, &vcpus).map_err(|e| e.rebase(*blob_at))?;
    if !kept.vcpus.is_empty() {
        rep.translations.push(format!(
            "{} libxc vCPU context(s) folded into the CPU records (HVM v2 streams carry registers only in HVM_CONTEXT)",
            kept.vcpus.len()
        ));
    }
    rep.translations.extend(t.notes);
    w.record(&RecordBody::HvmContext(Cow::Borrowed(&t.blob)))?;
    Ok(())
}

/// The libxc records: STATIC_DATA_END, the pages, then the tail records.
fn body<R: Read, W: Write>(
    info: &ImageInfo,
    w: &mut Writer<W>,
    rep: &mut ConvertReport,
    kept: &mut Kept,
    reader: &mut Reader<R>,
) -> hvm_format::Result<()> {
    w.record(&RecordBody::StaticDataEnd)?;
    pages(reader, w, rep, kept)?;
    tail_records(info, w, rep, kept)
}

/// The device model's state that follows the stream: libxl's record (read
/// with the stream) or xend's `QemuDeviceModelRecord` + QEVM to EOF.
fn emulator_state<R: Read>(
    info: &ImageInfo,
    reader: Reader<R>,
    kept: &mut Kept,
) -> hvm_format::Result<Option<(Vec<u8>, &'static str)>> {
    if let Some(d) = kept.device_model.take() {
        return Ok(Some((d, "DeviceModelRecord0002")));
    }
    let at = reader.position();
    let mut r = reader.into_inner();
    let io = |e| Error::new(at, Context::root().field("qemu tail"), ErrorKind::Io(e));
    let mut rest = Vec::new();
    (&mut r).take(21).read_to_end(&mut rest).map_err(io)?;
    if rest == b"QemuDeviceModelRecord" {
        // List the QEVM sections as they are read (validate's listing, with
        // its caps), keeping the bytes: a broken or endless tail fails at
        // its own offset without being read to the end first.
        let mut tee = Tee {
            r: (&mut r).take(MAX_EMULATOR_STATE + 1),
            kept: Vec::new(),
        };
        let listing = hvm_format::envelope::qevm::list_reader(&mut tee, at + 21);
        if let Some(e) = listing.error {
            return Err(e);
        }
        tee.read_to_end(&mut Vec::new()).map_err(io)?;
        rest.append(&mut tee.kept);
    } else {
        (&mut r)
            .take(MAX_EMULATOR_STATE + 1)
            .read_to_end(&mut rest)
            .map_err(io)?;
    }
    if rest.is_empty() {
        return Ok(None);
    }
    // On a pipe the reader cannot know that libxl's record follows.
    if let Some(r) = rest.strip_prefix(b"DeviceModelRecord0002") {
        let len = r
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize);
        return match (len, r.get(4..)) {
            (Some(n), Some(state)) if state.len() == n => {
                Ok(Some((state.to_vec(), "DeviceModelRecord0002")))
            }
            _ => Err(bad(
                at,
                "device model record",
                "u32 length + exactly that many bytes to the end",
                format!("{} bytes after the signature", r.len()),
            )),
        };
    }
    let Some(state) = rest.strip_prefix(b"QemuDeviceModelRecord") else {
        return Err(bad(
            at,
            "trailing bytes",
            "nothing, or xend's QemuDeviceModelRecord",
            format!("{} unrecognised bytes", rest.len()),
        ));
    };
    if state.len() as u64 > MAX_EMULATOR_STATE {
        return Err(Error::new(
            at + 21,
            Context::root().field("qemu tail"),
            ErrorKind::Oversized {
                what: "device model state",
                claimed: state.len() as u64,
                remaining: MAX_EMULATOR_STATE,
            },
        ));
    }
    let _ = info;
    // The state in place: no second copy of what may be megabytes.
    rest.drain(..21);
    Ok(Some((rest, "QemuDeviceModelRecord")))
}

/// A reader that keeps a copy of what is read through it.
struct Tee<R> {
    r: R,
    kept: Vec<u8>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The xl config for a converted image: what the old image says about the
/// domain (name and memory from xend's config, when there is one).
fn xl_config(info: &ImageInfo) -> String {
    let name = info
        .xend
        .as_ref()
        .and_then(|x| x.config().ok())
        .and_then(|c| c.get_str("name").map(str::to_string))
        .unwrap_or_else(|| "converted".into());
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    xl_config_json(&name, info.config_memory_mib().unwrap_or(0))
}

struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn write_vectored(&mut self, b: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where a conversion writes: a file through [`hvm_cli::output`] (atomic,
/// 0600, checked against the input), or standard output (`-o -`).
#[derive(Debug)]
pub enum Destination {
    /// `-o FILE`: named only once the conversion succeeded.
    File(AtomicFile),
    /// `-o -`.
    Stdout(std::io::Stdout),
}

impl Destination {
    /// Check `out` against the input `input` and the rules of
    /// [`hvm_cli::output`], and start writing it. `outputs` collects the
    /// stale temporaries removed, for the caller to report.
    pub fn open(
        outputs: &mut Outputs,
        input: &str,
        out: &Path,
        force: bool,
    ) -> Result<Self, InspectError> {
        outputs.input("input", Path::new(input));
        if out.as_os_str() == "-" {
            outputs.stdout("output")?;
            return Ok(Destination::Stdout(std::io::stdout()));
        }
        Ok(Destination::File(outputs.create("output", out, force)?))
    }
}

/// A destination that remembers its first write error, so a failed
/// conversion names the output that failed, not the input it was reading.
struct Recording {
    dest: Destination,
    error: Option<std::io::Error>,
}

impl Recording {
    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        r.map_err(|e| {
            if self.error.is_none() {
                let named = match self.dest {
                    // Already "writing OUT: …".
                    Destination::File(_) => std::io::Error::new(e.kind(), e.to_string()),
                    Destination::Stdout(_) => {
                        std::io::Error::new(e.kind(), format!("writing to standard output: {e}"))
                    }
                };
                self.error = Some(named);
            }
            e
        })
    }
}

impl Write for Recording {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let r = match &mut self.dest {
            Destination::File(f) => f.write(b),
            Destination::Stdout(s) => s.write(b),
        };
        self.note(r)
    }
    fn write_vectored(&mut self, b: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let r = match &mut self.dest {
            Destination::File(f) => f.write_vectored(b),
            Destination::Stdout(s) => s.write_vectored(b),
        };
        self.note(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = match &mut self.dest {
            Destination::File(f) => f.flush(),
            Destination::Stdout(s) => s.flush(),
        };
        self.note(r)
    }
}

/// Convert `input` into the file `out` (`-`: standard output), replacing
/// it as `--force` would: atomically, never the input itself, and only if
/// the conversion succeeds. [`convert_to`] leaves the checks to the caller.
pub fn convert(
    input: Input,
    out: &Path,
    target: Target,
    opts: OpenOptions,
) -> Result<ConvertReport, InspectError> {
    let name = input.name().to_string();
    let dest = Destination::open(&mut Outputs::new(), &name, out, true)?;
    convert_to(input, out, dest, target, opts)
}

/// Convert `input` into `dest` (named `out` in the report) with `target`
/// framing. A file destination gets its name only if the conversion
/// succeeds; on failure its temporary is removed and nothing else.
pub fn convert_to(
    input: Input,
    out: &Path,
    dest: Destination,
    target: Target,
    opts: OpenOptions,
) -> Result<ConvertReport, InspectError> {
    let name = input.name().to_string();
    let opts = OpenOptions {
        len: input.len(),
        ..opts
    };
    let mut sink = Recording { dest, error: None };
    let s = &mut sink;
    let r = convert_any(&name, out, input.into_read(), opts, target, move || Ok(s));
    let r = match (r, sink.error.take()) {
        (Err(_), Some(e)) => Err(InspectError::Write(e)),
        (r, _) => r,
    }?;
    match sink.dest {
        Destination::File(f) => f.commit()?,
        Destination::Stdout(mut s) => s.flush().map_err(|e| {
            InspectError::Write(std::io::Error::new(
                e.kind(),
                format!("writing to standard output: {e}"),
            ))
        })?,
    }
    Ok(r)
}

/// [`convert`] from any reader into the sink `open` gives once the input
/// has opened (`out` only names the output in the report): any dialect,
/// v2 images re-framed.
pub fn convert_any<R: Read, W: Write>(
    name: &str,
    out: &Path,
    mut read: R,
    opts: OpenOptions,
    target: Target,
    open: impl FnOnce() -> Result<W, InspectError>,
) -> Result<ConvertReport, InspectError> {
    let mut prefix = Vec::new();
    (&mut read)
        .take(1 << 16)
        .read_to_end(&mut prefix)
        .map_err(|e| InspectError::image(name, Error::new(0, Context::root(), ErrorKind::Io(e))))?;
    let read = std::io::Cursor::new(prefix).chain(read);
    if is_v2(read.get_ref().0.get_ref()) {
        return reframe_stream(name, out, read, opts.len, open()?, target);
    }
    let (info, reader) = open_read(read, opts).map_err(|e| InspectError::image(name, e))?;
    convert_stream(name, out, info, reader, open()?, target)
}

/// [`convert`] of a migration v2 image (any framing) into another framing:
/// the libxc records are copied unchanged ([`crate::reframe`]).
pub(crate) fn reframe_stream<R: Read, W: Write>(
    name: &str,
    out: &Path,
    input: std::io::Chain<std::io::Cursor<Vec<u8>>, R>,
    total: Option<u64>,
    sink: W,
    target: Target,
) -> Result<ConvertReport, InspectError> {
    let img = |e| InspectError::image(name, e);
    let mut rep = ConvertReport::new(name, out, target, Dialect::V2, 64);
    let prefix = input.get_ref().0.get_ref().clone();
    let mut sink = Counting { inner: sink, n: 0 };
    crate::reframe::reframe(input, &prefix, total, &mut sink, target, &mut rep).map_err(img)?;
    sink.flush()
        .map_err(|e| img(Error::new(sink.n, Context::root(), ErrorKind::Io(e))))?;
    rep.bytes_written = sink.n;
    Ok(rep)
}

/// [`convert`] from an opened reader into any sink.
pub(crate) fn convert_stream<R: Read, W: Write>(
    name: &str,
    out: &Path,
    info: ImageInfo,
    mut reader: Reader<PrefixedRead<R>>,
    sink: W,
    target: Target,
) -> Result<ConvertReport, InspectError> {
    let img = |e| InspectError::image(name, e);
    let mut rep = ConvertReport::new(
        name,
        out,
        target,
        info.detection.dialect,
        info.word().bits(),
    );
    let mut kept = Kept::default();
    let mut sink = Counting { inner: sink, n: 0 };
    let image = ImageHeader::new(3);
    let domain = DomainHeader::hvm(0, 0);
    match target {
        Target::Libxc => {
            let mut w = Writer::new(&mut sink, image, domain).map_err(img)?;
            body(&info, &mut w, &mut rep, &mut kept, &mut reader).map_err(img)?;
            if let Some(at) = kept.toolstack_at {
                return Err(img(bad(
                    at,
                    "chunk",
                    "no libxl state (libxc framing has no emulator records: use --to libxl or xl)",
                    "-18 TOOLSTACK with libxl's physmap".into(),
                )));
            }
            w.end().map_err(img)?;
            drop(w);
            if let Some((state, from)) = emulator_state(&info, reader, &mut kept).map_err(img)? {
                let at = sink.n;
                let ctx = || Context::root().field("device model record");
                let len = u32::try_from(state.len()).unwrap_or(u32::MAX);
                for part in [&DM_RECORD_0002[..], &len.to_le_bytes(), &state] {
                    sink.write_all(part)
                        .map_err(|e| img(Error::new(at, ctx(), ErrorKind::Io(e))))?;
                }
                rep.translations.push(format!(
                    "{from} ({} bytes) appended after END as DeviceModelRecord0002 (as convert-legacy-stream does for libxc output)",
                    state.len()
                ));
            }
        }
        Target::Libxl | Target::Xl => {
            let offset = if target == Target::Xl {
                let h = XlHeader::with_json_config(&xl_config(&info));
                rep.translations.push(
                    "xl header with a JSON config synthesised from the old image (name, memory)"
                        .into(),
                );
                h.write(&mut sink).map_err(img)?
            } else {
                0
            };
            let mut lw =
                LibxlWriter::with_offset(&mut sink, offset, LibxlHeader::new(true)).map_err(img)?;
            lw.libxc(image, domain, |w| {
                body(&info, w, &mut rep, &mut kept, &mut reader)
            })
            .map_err(img)?;
            if !kept.xenstore.is_empty() {
                let pairs: Vec<(&str, &str)> = kept
                    .xenstore
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                lw.record(&LibxlRecord::xenstore_data(EmulatorId::Unknown, 0, &pairs))
                    .map_err(img)?;
            }
            if let Some((state, from)) = emulator_state(&info, reader, &mut kept).map_err(img)? {
                let emulator = emulator_id(&state);
                rep.translations.push(format!(
                    "{from} ({} bytes) → EMULATOR_CONTEXT ({})",
                    state.len(),
                    if emulator == EmulatorId::QemuTraditional {
                        "qemu-traditional: a QEVM file"
                    } else {
                        "emulator unknown"
                    }
                ));
                lw.record(&LibxlRecord::EmulatorContext {
                    emulator,
                    index: 0,
                    data: Cow::Owned(state),
                })
                .map_err(img)?;
            }
            lw.finish().map_err(img)?;
        }
    }
    sink.flush()
        .map_err(|e| img(Error::new(sink.n, Context::root(), ErrorKind::Io(e))))?;
    rep.bytes_written = sink.n;
    Ok(rep)
}

/// The report as text.
pub fn render(r: &ConvertReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{} → {} ({:?})", r.input, r.output, r.target);
    let _ = writeln!(
        o,
        "dialect      {} ({}-bit toolstack)",
        r.dialect.describe(),
        r.word_bits
    );
    let _ = writeln!(
        o,
        "pages        {} in {} PAGE_DATA records ({} verify), {} XTAB entries dropped",
        r.pages, r.page_records, r.verify_pages, r.xtab_dropped
    );
    let params: Vec<String> = r
        .hvm_params
        .iter()
        .map(|(i, v)| format!("{i}={v:#x}"))
        .collect();
    let _ = writeln!(o, "hvm params   {}", params.join(" "));
    let _ = writeln!(o, "written      {} bytes", r.bytes_written);
    let _ = writeln!(o, "translations {}", r.translations.len());
    for t in &r.translations {
        let _ = writeln!(o, "  - {t}");
    }
    o
}

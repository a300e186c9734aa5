//! What wraps the libxc stream in a file.
//!
//! The seed's toolstack is xend (`XendCheckpoint.py` @ `e2a44bc7a4`,
//! docs/format.md §4). An `xm save` file is:
//!
//! ```text
//!   0  "LinuxGuestRecord"           16 bytes, no NUL
//!  16  be i32 config length         big-endian, signed (struct "!i")
//!  20  config                       SXP text, one line: (domain (domid N) …)
//!  20+n libxc stream                no length: it ends where its grammar ends
//!      "QemuDeviceModelRecord"      21 bytes, no NUL, no length
//!      qemu-dm state to EOF         a QEVM v1 file (see [`qevm`])
//! ```
//!
//! A bare libxc stream (what `xc_save` writes to a file by hand) has no
//! envelope at all. [`sniff`] tells these apart and names the later
//! envelopes (xl, libxl v2, libxc v2, libvirt) by their magic, with the
//! evidence. Readers work on any `Read` so a pipe can be inspected; the
//! libxc stream itself is parsed by [`crate::stream`], this module only
//! says where it starts and checks what follows it.

pub mod qevm;
pub mod sxp;

use std::io::{Read, Write};

use crate::bytes::{be, le, read_full_at};
use crate::diag::{Context, Error, ErrorKind, Result};

pub use qevm::{QevmListing, QevmSection, QevmWriter};
pub use sxp::Sxp;

/// xend's `SIGNATURE`, first in every xend save file (HVM too).
pub(crate) const XEND_SIGNATURE: &[u8; 16] = b"LinuxGuestRecord";
/// xend's `QEMU_SIGNATURE`, between the libxc stream and the qemu-dm state.
pub(crate) const QEMU_SIGNATURE: &[u8; 21] = b"QemuDeviceModelRecord";
/// Signature plus config length.
pub(crate) const XEND_HEADER_LEN: u64 = 20;
/// Largest config accepted. Real xend configs are a few KiB; the cap stops
/// a hostile length before any read or allocation.
pub(crate) const MAX_CONFIG_LEN: u32 = 4 << 20;
/// `struct save_file_header` magic of xl (docs/format.md §8.2), 32 bytes.
pub(crate) const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
/// libxl v2 stream header ident, big-endian u64 "LibxlFmt".
pub(crate) const LIBXL_MAGIC: &[u8; 8] = b"LibxlFmt";
/// libxc v2 image header: u64 marker of all ones …
pub(crate) const LIBXC_V2_MARKER: &[u8; 8] = &[0xFF; 8];
/// … then u32 id "XENF" (big-endian).
pub(crate) const LIBXC_V2_ID: &[u8; 4] = b"XENF";
/// libvirt's QEMU driver save file.
pub(crate) const LIBVIRT_QEMU_MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// libvirt's QEMU driver save file still being written.
pub(crate) const LIBVIRT_QEMU_PARTIAL_MAGIC: &[u8; 16] = b"LibvirtQemudPart";
/// libvirt XML save magic, recognised by name as the project asks.
pub(crate) const LIBVIRT_XML_MAGIC: &[u8; 14] = b"LibvirtXMLSave";
/// libvirt's libxl driver save file (`LIBXL_SAVE_MAGIC`).
pub(crate) const LIBVIRT_LIBXL_MAGIC: &[u8; 16] = b"libvirt-xml\n \0 \r";
/// Prefix length that lets [`sniff`] see every magic and the start of a
/// bare stream's first batch.
pub const SNIFF_LEN: usize = 64;
/// xend refused a first word above this as "pfn count out of range".
const XEND_MAX_PFN_LIMIT: u64 = 16 * 1024 * 1024;

/// Show bytes the way Python shows a byte string, without the quotes:
/// printable ASCII as is, `\\`, `\n`, `\r`, `\t`, `\0`, others `\xNN`.
pub(crate) fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0 => s.push_str("\\0"),
            0x20..=0x7E => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// Which envelope a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// xend: `LinuxGuestRecord`, config, libxc stream, qemu tail.
    Xend,
    /// A legacy libxc stream with nothing around it.
    BareLibxc,
    /// xl's save file header.
    Xl,
    /// A libxl v2 stream (`LibxlFmt`).
    LibxlV2,
    /// A libxc v2 image (all-ones marker + `XENF`).
    LibxcV2,
    /// libvirt QEMU driver save (`LibvirtQemudSave` / `…Part`).
    LibvirtQemu,
    /// libvirt XML save (`LibvirtXMLSave`, or the libxl driver's
    /// `libvirt-xml` header).
    LibvirtXml,
    /// Nothing recognised.
    Unknown,
}

impl EnvelopeKind {
    /// Short human name.
    pub fn name(self) -> &'static str {
        match self {
            EnvelopeKind::Xend => "xend save file",
            EnvelopeKind::BareLibxc => "bare legacy libxc stream",
            EnvelopeKind::Xl => "xl save file",
            EnvelopeKind::LibxlV2 => "libxl migration stream v2",
            EnvelopeKind::LibxcV2 => "libxc migration stream v2",
            EnvelopeKind::LibvirtQemu => "libvirt QEMU save file",
            EnvelopeKind::LibvirtXml => "libvirt XML save file",
            EnvelopeKind::Unknown => "unknown",
        }
    }
}

/// The result of [`sniff`]: what the file is and why we think so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sniffed {
    /// The verdict.
    pub kind: EnvelopeKind,
    /// One line per observation that led to it.
    pub evidence: Vec<String>,
}

/// Say what envelope the first bytes of a file belong to
/// ([`SNIFF_LEN`] bytes are enough; fewer work with less evidence).
pub fn sniff(prefix: &[u8]) -> Sniffed {
    let mut ev = Vec::new();
    let kind = sniff_into(prefix, &mut ev);
    Sniffed { kind, evidence: ev }
}

fn sniff_into(p: &[u8], ev: &mut Vec<String>) -> EnvelopeKind {
    if p.starts_with(XEND_SIGNATURE) {
        ev.push("bytes 0–15 are xend's signature 'LinuxGuestRecord'".into());
        if let Some(len) = be::<u32>(p, 16) {
            let len = len as i32;
            ev.push(format!("bytes 16–19: big-endian config length {len}"));
        }
        if let Some(cfg) = p.get(20..) {
            if cfg.starts_with(b"(domain") {
                ev.push("config text starts '(domain'".into());
            }
        }
        return EnvelopeKind::Xend;
    }
    if p.starts_with(XL_MAGIC) {
        ev.push("bytes 0–31 are xl's 'Xen saved domain, xl format' magic".into());
        match le::<u32>(p, 32) {
            Some(0x0102_0304) => ev.push("byteorder 0x01020304 read little-endian".into()),
            Some(0x0403_0201) => ev.push("byteorder 0x01020304 written big-endian".into()),
            Some(v) => ev.push(format!("byteorder word 0x{v:08x} is not 0x01020304")),
            None => {}
        }
        if let Some(flags) = le::<u32>(p, 36) {
            ev.push(format!(
                "mandatory flags 0x{flags:x}{}",
                if flags & 2 != 0 {
                    " (STREAMv2: a libxl v2 stream follows)"
                } else {
                    " (legacy libxc stream follows)"
                }
            ));
        }
        return EnvelopeKind::Xl;
    }
    if p.starts_with(LIBXL_MAGIC) {
        ev.push("bytes 0–7 are the libxl v2 ident 'LibxlFmt'".into());
        if let Some(v) = be::<u32>(p, 8) {
            ev.push(format!("big-endian version {v}"));
        }
        return EnvelopeKind::LibxlV2;
    }
    if p.starts_with(LIBXC_V2_MARKER) && p.get(8..12) == Some(LIBXC_V2_ID) {
        ev.push("bytes 0–7 are all ones and bytes 8–11 'XENF': libxc v2 image header".into());
        if let Some(v) = be::<u32>(p, 12) {
            ev.push(format!("big-endian version {v}"));
        }
        return EnvelopeKind::LibxcV2;
    }
    for (magic, kind, what) in [
        (
            &LIBVIRT_QEMU_MAGIC[..],
            EnvelopeKind::LibvirtQemu,
            "'LibvirtQemudSave'",
        ),
        (
            &LIBVIRT_QEMU_PARTIAL_MAGIC[..],
            EnvelopeKind::LibvirtQemu,
            "'LibvirtQemudPart' (save not finished)",
        ),
        (
            &LIBVIRT_XML_MAGIC[..],
            EnvelopeKind::LibvirtXml,
            "'LibvirtXMLSave'",
        ),
        (
            &LIBVIRT_LIBXL_MAGIC[..],
            EnvelopeKind::LibvirtXml,
            "libvirt's libxl driver magic 'libvirt-xml'",
        ),
    ] {
        if p.starts_with(magic) {
            ev.push(format!("file starts with libvirt magic {what}"));
            return kind;
        }
    }
    sniff_bare(p, ev)
}

/// A legacy stream has no magic: it starts with `max_pfn` (a word) and then
/// a batch count in -1..=1024 (or the 0 terminator).
fn sniff_bare(p: &[u8], ev: &mut Vec<String>) -> EnvelopeKind {
    for (name, magic) in [
        ("xend", &XEND_SIGNATURE[..]),
        ("xl", &XL_MAGIC[..]),
        ("libxl v2", &LIBXL_MAGIC[..]),
    ] {
        if p.len() < magic.len() && !p.is_empty() && magic.starts_with(p) {
            ev.push(format!(
                "only {} bytes, a prefix of the {name} magic",
                p.len()
            ));
            return EnvelopeKind::Unknown;
        }
    }
    let count_ok = |c: i32| (-1..=1024).contains(&c);
    if let (Some(max_pfn), Some(count)) = (le::<u64>(p, 0), le::<u32>(p, 8)) {
        let count = count as i32;
        if max_pfn >> 32 == 0 && max_pfn > 0 && max_pfn <= XEND_MAX_PFN_LIMIT && count_ok(count) {
            ev.push(format!(
                "no envelope magic; bytes 0–7 read as a 64-bit max_pfn 0x{max_pfn:x} \
                 (upper half zero, at most 16 Mi)"
            ));
            ev.push(format!("bytes 8–11: first batch count {count}"));
            return EnvelopeKind::BareLibxc;
        }
    }
    if let (Some(max_pfn), Some(count)) = (le::<u32>(p, 0), le::<u32>(p, 4)) {
        let count = count as i32;
        if max_pfn > 0 && u64::from(max_pfn) <= XEND_MAX_PFN_LIMIT && count_ok(count) && count != 0
        {
            ev.push(format!(
                "no envelope magic; bytes 0–3 read as a 32-bit max_pfn 0x{max_pfn:x}"
            ));
            ev.push(format!("bytes 4–7: first batch count {count}"));
            return EnvelopeKind::BareLibxc;
        }
    }
    ev.push(format!(
        "no known magic, and the first bytes ({}) do not read as max_pfn + batch count",
        escape_bytes(p.get(..16).unwrap_or(p))
    ));
    EnvelopeKind::Unknown
}

/// The part of an xend file before the libxc stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XendHeader {
    /// The config exactly as stored (normally SXP text).
    pub config_text: Vec<u8>,
    /// File offset of the config text (always 20).
    pub config_offset: u64,
    /// File offset where the libxc stream starts.
    pub stream_offset: u64,
}

impl XendHeader {
    /// Parse the config as SXP; errors carry file offsets.
    pub fn config(&self) -> Result<Sxp> {
        Sxp::parse(&self.config_text).map_err(|e| e.rebase(self.config_offset))
    }

    /// The config text, if it is UTF-8 (xend wrote ASCII).
    pub fn config_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.config_text).ok()
    }
}

fn io_error(offset: u64, ctx: Context, e: std::io::Error) -> Error {
    Error::new(offset, ctx, ErrorKind::Io(e))
}

/// Bytes after an image that are counted before the count stops. What
/// follows a stream may be an endless pipe: past this the reports say "more
/// than N bytes follow" instead of reading to an end that may never come.
pub const TRAILING_COUNT_LIMIT: u64 = 64 << 20;

/// Read and count what is left of `r` after `already` bytes were read,
/// up to [`TRAILING_COUNT_LIMIT`] in all: `(count, more)`, where `count`
/// includes `already` and `more` says that bytes past the count exist and
/// were not read.
pub(crate) fn count_rest<R: Read>(r: &mut R, already: u64) -> std::io::Result<(u64, bool)> {
    let limit = TRAILING_COUNT_LIMIT.saturating_sub(already);
    let n = std::io::copy(&mut r.take(limit + 1), &mut std::io::sink())?;
    Ok(if n > limit {
        (already + limit, true)
    } else {
        (already + n, false)
    })
}

/// Read and check a fixed signature at file offset `at`. A short input
/// that is a prefix of the signature is a truncation; anything else that
/// differs is shown escaped.
fn expect_signature<R: Read>(
    r: &mut R,
    sig: &[u8],
    at: u64,
    ctx: Context,
    what: &str,
) -> Result<()> {
    let mut buf = vec![0u8; sig.len()];
    let got = read_full_at(r, &mut buf, at, &ctx)?;
    // `read_full_at` returns at most `buf.len()`.
    let found = buf.get(..got).unwrap_or_default();
    if found == sig {
        return Ok(());
    }
    if sig.starts_with(found) {
        return Err(Error::truncated(
            at + got as u64,
            ctx,
            (sig.len() - got) as u64,
            0,
        ));
    }
    let tail = if got < sig.len() {
        format!(" ({got} bytes, then end of input)")
    } else {
        String::new()
    };
    Err(Error::invalid(
        at,
        ctx,
        format!("'{}' ({what})", escape_bytes(sig)),
        format!("'{}'{tail}", escape_bytes(found)),
    ))
}

/// Read the xend header (signature, config length, config) from `r`,
/// which is at the start of the file. `total_len` is the file size when
/// known (not for a pipe); it lets a config length past the end be refused
/// before reading. On success `r` is positioned at the libxc stream.
pub fn read_xend_header<R: Read>(r: &mut R, total_len: Option<u64>) -> Result<XendHeader> {
    let root = Context::root().field("xend header");
    expect_signature(
        r,
        XEND_SIGNATURE,
        0,
        root.field("signature"),
        "xend's save signature",
    )?;
    let len_ctx = root.field("config length");
    let mut len_bytes = [0u8; 4];
    let got = read_full_at(r, &mut len_bytes, 16, &len_ctx)?;
    if got < 4 {
        return Err(Error::truncated(
            16 + got as u64,
            len_ctx,
            (4 - got) as u64,
            0,
        ));
    }
    let len: i32 = be(&len_bytes, 0).unwrap_or_default();
    let len = u32::try_from(len).map_err(|_| {
        Error::invalid(
            16,
            len_ctx.clone(),
            "a non-negative big-endian config length",
            len.to_string(),
        )
    })?;
    if len > MAX_CONFIG_LEN {
        return Err(Error::invalid(
            16,
            len_ctx,
            format!("a config length of at most {MAX_CONFIG_LEN} bytes"),
            len.to_string(),
        ));
    }
    if let Some(total) = total_len {
        let remaining = total.saturating_sub(XEND_HEADER_LEN);
        if u64::from(len) > remaining {
            return Err(Error::new(
                16,
                len_ctx,
                ErrorKind::Oversized {
                    what: "xend config",
                    claimed: len.into(),
                    remaining,
                },
            ));
        }
    }
    // Grows with the data actually read, never to `len` up front.
    let mut config_text = Vec::new();
    let cfg_ctx = root.field("config");
    r.take(u64::from(len))
        .read_to_end(&mut config_text)
        .map_err(|e| io_error(XEND_HEADER_LEN, cfg_ctx.clone(), e))?;
    let got = config_text.len() as u64;
    if got < u64::from(len) {
        return Err(Error::truncated(
            XEND_HEADER_LEN + got,
            cfg_ctx,
            u64::from(len) - got,
            0,
        ));
    }
    Ok(XendHeader {
        config_text,
        config_offset: XEND_HEADER_LEN,
        stream_offset: XEND_HEADER_LEN + u64::from(len),
    })
}

/// [`read_xend_header`] over a whole file in memory.
pub fn parse_xend_header(data: &[u8]) -> Result<XendHeader> {
    let mut r = data;
    read_xend_header(&mut r, Some(data.len() as u64))
}

/// Write the xend header for `config_text` (normally
/// [`Sxp::to_sxp_string`] of the domain config). Returns bytes written.
pub fn write_xend_header<W: Write>(out: &mut W, config_text: &[u8]) -> Result<u64> {
    let ctx = Context::root().field("xend header");
    let len = u32::try_from(config_text.len())
        .ok()
        .filter(|&l| l <= MAX_CONFIG_LEN)
        .ok_or_else(|| {
            Error::invalid(
                16,
                ctx.field("config length"),
                format!("a config of at most {MAX_CONFIG_LEN} bytes"),
                format!("{} bytes", config_text.len()),
            )
        })?;
    out.write_all(XEND_SIGNATURE)
        .and_then(|()| out.write_all(&len.to_be_bytes()))
        .and_then(|()| out.write_all(config_text))
        .map_err(|e| io_error(0, ctx, e))?;
    Ok(XEND_HEADER_LEN + u64::from(len))
}

/// Write what xend puts after the libxc stream: `QemuDeviceModelRecord`
/// and the qemu-dm state (a QEVM file; [`qevm::empty_qevm`] when there is
/// none). Returns bytes written.
pub fn write_qemu_tail<W: Write>(out: &mut W, qevm: &[u8]) -> Result<u64> {
    out.write_all(QEMU_SIGNATURE)
        .and_then(|()| out.write_all(qevm))
        .map_err(|e| io_error(0, Context::root().field("qemu tail"), e))?;
    Ok(QEMU_SIGNATURE.len() as u64 + qevm.len() as u64)
}

/// What follows the libxc stream in an xend file.
#[derive(Debug, serde::Serialize)]
pub struct QemuTail {
    /// File offset of `QemuDeviceModelRecord`.
    pub signature_offset: u64,
    /// File offset of the QEVM file.
    pub qevm_offset: u64,
    /// Its sections (permissive: a damaged last section is in `error`).
    pub listing: QevmListing,
}

/// Check `QemuDeviceModelRecord` at file offset `offset` (the end of the
/// libxc stream). Errors name what was found instead, escaped.
pub(crate) fn read_qemu_signature<R: Read>(r: &mut R, offset: u64) -> Result<()> {
    expect_signature(
        r,
        QEMU_SIGNATURE,
        offset,
        Context::root().field("qemu tail").field("signature"),
        "xend's device model record after the libxc stream",
    )
}

/// Read the tail from `r`, positioned right after the libxc stream at file
/// offset `offset`: the signature (strict) then the QEVM listing
/// (permissive, payloads skipped).
pub(crate) fn read_qemu_tail<R: Read>(r: &mut R, offset: u64) -> Result<QemuTail> {
    read_qemu_signature(r, offset)?;
    let qevm_offset = offset + QEMU_SIGNATURE.len() as u64;
    Ok(QemuTail {
        signature_offset: offset,
        qevm_offset,
        listing: qevm::list_reader(r, qevm_offset),
    })
}

/// [`read_qemu_tail`] over the bytes from the end of the stream to EOF.
pub(crate) fn parse_qemu_tail(data: &[u8], offset: u64) -> Result<QemuTail> {
    let mut r = data;
    read_qemu_tail(&mut r, offset)
}

#[cfg(test)]
mod tests;

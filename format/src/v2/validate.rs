//! The checks of Xen's `verify-stream-v2` (`VerifyLibxc`, `VerifyLibxl`,
//! docs/format.md §8.1) as [`Finding`]s.
//!
//! Severity [`Error`](crate::rules::Severity::Error) is reserved for what the
//! Xen 4.17 verifier rejects, so "no errors here" and "`verify-stream-v2`
//! exits 0" agree. What the verifier lets through but a restorer or `xl`
//! would mind (HVM_PARAMS after HVM_CONTEXT, records of the other domain
//! type, a foreign xl byte order) are warnings, except xl header problems
//! that make `xl` refuse the file, which are errors. Unlike the verifier,
//! which stops at the first problem, every independent problem is reported;
//! a framing error (truncation, a length the input cannot fill) ends the
//! walk.

use super::libxc::{DomainHeader, DomainType, ImageHeader, PageDataEntry, RecordType};
use super::libxl::{EmulatorId, LibxlHeader, LibxlRecordType};
use super::reader::{frame_slice, RawRecord};
use super::xl::XlHeader;
use crate::bytes::le;
use crate::diag::{Context, Error};
use crate::diag::{Finding, Findings};
use crate::pfn::PAGE_SIZE;

fn framing(e: Error) -> Finding {
    Finding::error(
        "v2.stream.framing",
        e.offset,
        e.context.clone(),
        e.kind.to_string(),
    )
}

/// Checks of the image header. Returns whether the rest of the stream can
/// be interpreted (the verifier gives up otherwise).
pub(crate) fn check_image_header(h: &ImageHeader, offset: u64, out: &mut Findings) -> bool {
    let ctx = Context::root().field("image header");
    let before = out.total();
    if h.marker != ImageHeader::MARKER {
        out.push(Finding::error(
            "v2.image.marker",
            offset,
            ctx.field("marker"),
            format!("expected {:#x}, found {:#x}", ImageHeader::MARKER, h.marker),
        ));
    }
    if h.id != ImageHeader::ID {
        out.push(Finding::error(
            "v2.image.id",
            offset + 8,
            ctx.field("id"),
            format!("expected 0x58454e46 (\"XENF\"), found {:#x}", h.id),
        ));
    }
    if !(2..=3).contains(&h.version) {
        out.push(Finding::error(
            "v2.image.version",
            offset + 12,
            ctx.field("version"),
            format!("expected 2 or 3, found {}", h.version),
        ));
    }
    let fatal = out.total() > before;
    if h.options & ImageHeader::OPT_RESERVED_MASK != 0 {
        out.push(Finding::error(
            "v2.image.options-reserved",
            offset + 16,
            ctx.field("options"),
            format!("expected reserved option bits 0, found {:#x}", h.options),
        ));
    }
    if h.reserved1 != 0 || h.reserved2 != 0 {
        out.push(Finding::error(
            "v2.image.reserved",
            offset + 18,
            ctx.field("reserved"),
            format!(
                "expected 0, found {:#06x}:{:#010x}",
                h.reserved1, h.reserved2
            ),
        ));
    }
    if h.is_big_endian() {
        out.push(Finding::error(
            "v2.image.endianness",
            offset + 16,
            ctx.field("options"),
            "expected a little-endian stream, found options bit 0 set (big-endian); not validated further",
        ));
        return false;
    }
    !fatal
}

/// Checks of the domain header.
pub(crate) fn check_domain_header(h: &DomainHeader, offset: u64, out: &mut Findings) {
    let ctx = Context::root().field("domain header");
    if !matches!(h.kind(), DomainType::X86Pv | DomainType::X86Hvm) {
        out.push(Finding::error(
            "v2.domain.type",
            offset,
            ctx.field("type"),
            format!(
                "expected 1 (x86 PV) or 2 (x86 HVM), found {}",
                h.domain_type
            ),
        ));
    }
    if h.page_shift != 12 {
        out.push(Finding::error(
            "v2.domain.page-shift",
            offset + 4,
            ctx.field("page_shift"),
            format!("expected 12, found {}", h.page_shift),
        ));
    }
    if h.reserved != 0 {
        out.push(Finding::error(
            "v2.domain.reserved",
            offset + 6,
            ctx.field("reserved"),
            format!("expected 0, found {:#x}", h.reserved),
        ));
    }
}

/// Checks of one libxc record, as `VerifyLibxc.verify_record` makes them,
/// for an image of the given version.
pub(crate) fn check_record(rec: &RawRecord<'_>, version: u32, out: &mut Findings) {
    let rtype = rec.libxc_type();
    let Some(name) = rtype.name() else {
        let optional = if rtype.is_optional() {
            " (optional bit 31 set, but the verifier tolerates no unknown type)"
        } else {
            ""
        };
        out.push(Finding::error(
            "v2.record.unknown-type",
            rec.offset,
            rec.context(),
            format!("unrecognised record type {:#x}{optional}", rtype.0),
        ));
        return;
    };
    let r = RecordCheck {
        rec,
        name,
        ctx: rec.context(),
        at: rec.body_offset(),
        body: rec.body,
        len: rec.body.len() as u64,
        version,
    };
    if rec.padding.iter().any(|&b| b != 0) {
        r.err(
            out,
            "v2.record.padding",
            r.at + r.len,
            format!(
                "expected zero padding, found {:02x?} after the {name} body",
                rec.padding
            ),
        );
    }
    r.by_type(rtype, out);
}

/// A known libxc record under check, with what every per-type check needs
/// to place its findings.
struct RecordCheck<'a, 'b> {
    rec: &'a RawRecord<'b>,
    name: &'static str,
    ctx: Context,
    /// Offset of the body.
    at: u64,
    body: &'b [u8],
    len: u64,
    version: u32,
}

impl RecordCheck<'_, '_> {
    /// The checks of the record's type, as the verifier's per-type methods.
    fn by_type(&self, rtype: RecordType, out: &mut Findings) {
        match rtype {
            RecordType::END | RecordType::VERIFY | RecordType::CHECKPOINT => {
                self.exact(out, "v2.record.nonempty", 0);
            }
            RecordType::STATIC_DATA_END => {
                self.exact(out, "v2.record.nonempty", 0);
                self.v3_only(out);
            }
            RecordType::PAGE_DATA => check_page_data(self.rec, out),
            RecordType::X86_PV_INFO if self.exact(out, "v2.pv-info.length", 8) => self.pv_info(out),
            RecordType::X86_PV_P2M_FRAMES if self.len < 8 || self.len % 8 != 0 => {
                self.err(
                    out,
                    "v2.p2m-frames.length",
                    self.rec.offset + 4,
                    format!(
                        "expected a length of at least 8 and a multiple of 8, found {}",
                        self.len
                    ),
                );
            }
            RecordType::X86_PV_VCPU_BASIC
            | RecordType::X86_PV_VCPU_EXTENDED
            | RecordType::X86_PV_VCPU_XSAVE
            | RecordType::X86_PV_VCPU_MSRS => self.pv_vcpu(out),
            RecordType::SHARED_INFO => {
                self.exact(out, "v2.shared-info.length", PAGE_SIZE as u64);
            }
            RecordType::X86_TSC_INFO if self.exact(out, "v2.tsc-info.length", 24) => {
                self.reserved32(out, "v2.tsc-info.reserved", 20);
            }
            RecordType::HVM_CONTEXT if self.len == 0 => {
                self.err(
                    out,
                    "v2.hvm-context.empty",
                    self.rec.offset + 4,
                    "expected a non-empty HVM context, found length 0".into(),
                );
            }
            RecordType::HVM_PARAMS => self.hvm_params(out),
            RecordType::TOOLSTACK => self.err(
                out,
                "v2.toolstack.deprecated",
                self.rec.offset,
                "TOOLSTACK record found (deprecated; the verifier fails on it)".into(),
            ),
            RecordType::CHECKPOINT_DIRTY_PFN_LIST => self.err(
                out,
                "v2.checkpoint-dirty-pfn-list.present",
                self.rec.offset,
                "CHECKPOINT_DIRTY_PFN_LIST is a COLO back-channel record, not valid in a saved stream"
                    .into(),
            ),
            RecordType::X86_CPUID_POLICY => self.policy(out, 24),
            RecordType::X86_MSR_POLICY => self.policy(out, 16),
            _ => {}
        }
    }

    /// An error at `off`, in the record's context.
    fn err(&self, out: &mut Findings, rule: &'static str, off: u64, msg: String) {
        out.push(Finding::error(rule, off, self.ctx.clone(), msg))
    }

    /// A record whose body has one valid length; false (with an error on
    /// `body_length`) when it has another, so its fields are not read.
    fn exact(&self, out: &mut Findings, rule: &'static str, want: u64) -> bool {
        if self.len != want {
            out.push(Finding::error(
                rule,
                self.rec.offset + 4,
                self.ctx.field("body_length"),
                format!("expected {want} for {}, found {}", self.name, self.len),
            ));
            false
        } else {
            true
        }
    }

    /// A record type that version 2 streams may not carry.
    fn v3_only(&self, out: &mut Findings) {
        if self.version < 3 {
            out.push(Finding::error(
                "v2.record.v3-only",
                self.rec.offset,
                self.ctx.field("type"),
                format!(
                    "{} found in a version {} stream (needs version 3)",
                    self.name, self.version
                ),
            ));
        }
    }

    /// A reserved 32-bit field at `off` into the body must be 0.
    fn reserved32(&self, out: &mut Findings, rule: &'static str, off: usize) {
        let v = le::<u32>(self.body, off).unwrap_or_default();
        if v != 0 {
            self.err(
                out,
                rule,
                self.at + off as u64,
                format!("expected reserved 0, found {v:#x}"),
            );
        }
    }

    /// X86_PV_INFO (8 bytes, checked): guest width, paging levels, reserved.
    fn pv_info(&self, out: &mut Findings) {
        let (body, at) = (self.body, self.at);
        let (width, levels) = (body[0], body[1]);
        if width != 4 && width != 8 {
            self.err(
                out,
                "v2.pv-info.width",
                at,
                format!("expected guest width 4 or 8, found {width}"),
            );
        }
        if levels != 3 && levels != 4 {
            self.err(
                out,
                "v2.pv-info.levels",
                at + 1,
                format!("expected 3 or 4 page-table levels, found {levels}"),
            );
        }
        if body[2..].iter().any(|&b| b != 0) {
            self.err(
                out,
                "v2.pv-info.reserved",
                at + 2,
                format!("expected reserved bytes 0, found {:02x?}", &body[2..]),
            );
        }
    }

    /// The PV vCPU records: a vCPU id and reserved word, then the context.
    fn pv_vcpu(&self, out: &mut Findings) {
        if self.len < 8 {
            self.err(
                out,
                "v2.pv-vcpu.length",
                self.rec.offset + 4,
                format!(
                    "expected at least 8 bytes for {}, found {}",
                    self.name, self.len
                ),
            );
            return;
        }
        if self.len == 8 {
            out.push(Finding::warning(
                "v2.pv-vcpu.empty",
                self.at,
                self.ctx.clone(),
                format!("{} with no context bytes", self.name),
            ));
        }
        self.reserved32(out, "v2.pv-vcpu.reserved", 4);
    }

    /// HVM_PARAMS: a count and reserved word, then 16 bytes per parameter.
    fn hvm_params(&self, out: &mut Findings) {
        let len = self.len;
        if len < 8 {
            self.err(
                out,
                "v2.hvm-params.length",
                self.rec.offset + 4,
                format!("expected at least 8 bytes, found {len}"),
            );
            return;
        }
        let count = u64::from(le::<u32>(self.body, 0).unwrap_or_default());
        self.reserved32(out, "v2.hvm-params.reserved", 4);
        if count == 0 {
            out.push(Finding::warning(
                "v2.hvm-params.empty",
                self.at,
                self.ctx.clone(),
                "HVM_PARAMS with no parameters",
            ));
        }
        let want = 8 + 16 * count;
        if len != want {
            self.err(
                out,
                "v2.hvm-params.length",
                self.rec.offset + 4,
                format!("expected 8 + 16·{count} = {want} bytes, found {len}"),
            );
        }
    }

    /// The CPUID and MSR policies (version 3): whole entries of `unit` bytes.
    fn policy(&self, out: &mut Findings, unit: u64) {
        self.v3_only(out);
        if self.len < unit || self.len % unit != 0 {
            self.err(
                out,
                "v2.policy.length",
                self.rec.offset + 4,
                format!(
                    "expected a non-zero multiple of {unit} for {}, found {}",
                    self.name, self.len
                ),
            );
        }
    }
}

fn check_page_data(rec: &RawRecord<'_>, out: &mut Findings) {
    let ctx = rec.context();
    let body = rec.body;
    let at = rec.body_offset();
    let len = body.len() as u64;
    if len <= 8 {
        out.push(Finding::error(
            "v2.page-data.length",
            rec.offset + 4,
            ctx.field("body_length"),
            format!("expected more than 8 bytes, found {len}"),
        ));
        return;
    }
    let count = u64::from(le::<u32>(body, 0).unwrap_or_default());
    let reserved = le::<u32>(body, 4).unwrap_or_default();
    if reserved != 0 {
        out.push(Finding::error(
            "v2.page-data.reserved",
            at + 4,
            ctx.field("reserved"),
            format!("expected 0, found {reserved:#x}"),
        ));
    }
    if 8 * count > len - 8 {
        out.push(Finding::error(
            "v2.page-data.count",
            at,
            ctx.field("count"),
            format!(
                "expected at most {} pfns in a {len}-byte body, found count {count}",
                (len - 8) / 8
            ),
        ));
        return;
    }
    let mut with_data = 0u64;
    let (mut bad_res, mut bad_type) = (None, None);
    let (mut n_res, mut n_type) = (0u64, 0u64);
    for (i, c) in body
        // `count <= (len - 8) / 8` checked above: the range is in the body.
        .get(8..8 + 8 * count as usize)
        .unwrap_or_default()
        .chunks_exact(8)
        .enumerate()
    {
        let e = PageDataEntry(le(c, 0).unwrap_or_default());
        if e.reserved_bits() != 0 {
            n_res += 1;
            bad_res.get_or_insert((i, e));
        }
        if !e.has_valid_type() {
            n_type += 1;
            bad_type.get_or_insert((i, e));
        }
        if e.has_data() {
            with_data += 1;
        }
    }
    if let Some((i, e)) = bad_res {
        out.push(Finding::error(
            "v2.page-data.pfn-reserved",
            at + 8 + 8 * i as u64,
            ctx.index("pfn", i as u64),
            format!(
                "expected bits 52–59 clear, found {:#018x} ({n_res} pfns affected)",
                e.raw()
            ),
        ));
    }
    if let Some((i, e)) = bad_type {
        out.push(Finding::error(
            "v2.page-data.pfn-type",
            at + 8 + 8 * i as u64,
            ctx.index("pfn", i as u64),
            format!("expected a type other than 5–8, found type {} in {:#018x} ({n_type} pfns affected)", e.type_nibble(), e.raw()),
        ));
    }
    let want = 8 + 8 * count + PAGE_SIZE as u64 * with_data;
    if len != want {
        out.push(Finding::error(
            "v2.page-data.size",
            rec.offset + 4,
            ctx.field("body_length"),
            format!("expected 8 + 8·{count} + 4096·{with_data} = {want}, found {len}"),
        ));
    }
}

/// Warnings the verifier does not give but a restorer would care about.
struct Order {
    domain: DomainType,
    hvm_context: bool,
}

impl Order {
    fn check(&mut self, rec: &RawRecord<'_>, out: &mut Findings) {
        let t = rec.libxc_type();
        if t == RecordType::HVM_PARAMS && self.hvm_context {
            out.push(Finding::warning(
                "v2.order.hvm-params-after-context",
                rec.offset,
                rec.context(),
                "HVM_PARAMS after HVM_CONTEXT (the spec requires it before)",
            ));
        }
        if t == RecordType::HVM_CONTEXT {
            self.hvm_context = true;
        }
        let pv_only = (0x02..=0x07).contains(&t.0) || t == RecordType::X86_PV_VCPU_MSRS;
        let hvm_only = t == RecordType::HVM_CONTEXT || t == RecordType::HVM_PARAMS;
        if (pv_only && self.domain == DomainType::X86Hvm)
            || (hvm_only && self.domain == DomainType::X86Pv)
        {
            out.push(Finding::warning(
                "v2.order.domain-type",
                rec.offset,
                rec.context(),
                format!(
                    "{t} in an {:?} stream; Xen's restorer refuses it",
                    self.domain
                ),
            ));
        }
    }
}

/// Validate a libxc image starting at `*pos` of `data` (byte 0 at file
/// offset `base`), advancing `*pos` past its END. Returns false when the
/// walk had to stop before END.
pub(crate) fn libxc_at(data: &[u8], pos: &mut usize, base: u64, out: &mut Findings) -> bool {
    let at = base + *pos as u64;
    // Nothing left is reported by the header parse as a truncation at `at`.
    let rest = data.get(*pos..).unwrap_or_default();
    let image = match ImageHeader::parse(rest, at) {
        Ok(h) => h,
        Err(e) => {
            out.push(framing(e));
            return false;
        }
    };
    if !check_image_header(&image, at, out) {
        return false;
    }
    let dat = at + ImageHeader::SIZE as u64;
    // The image header parsed, so `rest` holds it; a short rest is the
    // domain header parse's truncation at `dat`.
    let domain = match DomainHeader::parse(rest.get(ImageHeader::SIZE..).unwrap_or_default(), dat) {
        Ok(h) => h,
        Err(e) => {
            out.push(framing(e));
            return false;
        }
    };
    check_domain_header(&domain, dat, out);
    *pos += ImageHeader::SIZE + DomainHeader::SIZE;
    let mut order = Order {
        domain: domain.kind(),
        hvm_context: false,
    };
    let mut index = 0;
    loop {
        let rec = match frame_slice(data, pos, base, "record", index) {
            Ok(r) => r,
            Err(e) => {
                out.push(framing(e));
                return false;
            }
        };
        index += 1;
        check_record(&rec, image.version, out);
        order.check(&rec, out);
        if rec.rtype == RecordType::END.0 {
            return true;
        }
    }
}

/// Validate a bare libxc v2 image (what `verify-stream-v2 -f libxc`
/// checks). Bytes after END are not looked at.
pub fn validate_libxc(data: &[u8]) -> Vec<Finding> {
    check_libxc(data).into_vec()
}

/// [`validate_libxc`], with the count of findings past the per-rule cap.
pub fn check_libxc(data: &[u8]) -> Findings {
    let mut out = Findings::default();
    let mut pos = 0;
    libxc_at(data, &mut pos, 0, &mut out);
    out
}

/// A libxl stream from `pos`: its header, then its records, the libxc
/// image inside LIBXC_CONTEXT included.
pub(crate) fn libxl_at(data: &[u8], pos: &mut usize, base: u64, out: &mut Findings) {
    if !libxl_header_at(data, pos, base, out) {
        return;
    }
    let mut index = 0;
    loop {
        let rec = match frame_slice(data, pos, base, "libxl record", index) {
            Ok(r) => r,
            Err(e) => return out.push(framing(e)),
        };
        index += 1;
        let len = rec.body.len();
        let t = LibxlRecordType(rec.rtype);
        let Some(name) = t.name() else {
            out.push(Finding::error(
                "v2.libxl.unknown-type",
                rec.offset,
                rec.context(),
                format!("unrecognised libxl record type {:#x}", rec.rtype),
            ));
            continue;
        };
        if rec.padding.iter().any(|&b| b != 0) {
            out.push(Finding::error(
                "v2.record.padding",
                rec.body_offset() + len as u64,
                rec.context(),
                format!(
                    "expected zero padding, found {:02x?} after the {name} body",
                    rec.padding
                ),
            ));
        }
        match t {
            LibxlRecordType::END => {
                if len != 0 {
                    libxl_nonempty(&rec, name, out);
                }
                return;
            }
            LibxlRecordType::LIBXC_CONTEXT => {
                if len != 0 {
                    libxl_nonempty(&rec, name, out);
                }
                if !libxc_at(data, pos, base, out) {
                    return;
                }
            }
            _ => check_libxl_record(&rec, t, name, out),
        }
    }
}

/// The libxl header at `pos`; false when the records cannot be read
/// (wrong identity or version, big-endian). Moves `pos` past it.
fn libxl_header_at(data: &[u8], pos: &mut usize, base: u64, out: &mut Findings) -> bool {
    let at = base + *pos as u64;
    let ctx = Context::root().field("libxl header");
    // Nothing left is reported by the header parse as a truncation at `at`.
    let hdr = match LibxlHeader::parse(data.get(*pos..).unwrap_or_default(), at) {
        Ok(h) => h,
        Err(e) => {
            out.push(framing(e));
            return false;
        }
    };
    if hdr.ident != LibxlHeader::IDENT {
        out.push(Finding::error(
            "v2.libxl.ident",
            at,
            ctx.field("ident"),
            format!(
                "expected {:#x} (\"LibxlFmt\"), found {:#x}",
                LibxlHeader::IDENT,
                hdr.ident
            ),
        ));
        return false;
    }
    if hdr.version != LibxlHeader::VERSION {
        out.push(Finding::error(
            "v2.libxl.version",
            at + 8,
            ctx.field("version"),
            format!("expected 2, found {}", hdr.version),
        ));
        return false;
    }
    if hdr.options & LibxlHeader::OPT_RESERVED_MASK != 0 {
        out.push(Finding::error(
            "v2.libxl.options-reserved",
            at + 12,
            ctx.field("options"),
            format!("expected reserved option bits 0, found {:#x}", hdr.options),
        ));
    }
    if hdr.options & LibxlHeader::OPT_BIG_ENDIAN != 0 {
        out.push(Finding::error(
            "v2.libxl.endianness",
            at + 12,
            ctx.field("options"),
            "expected a little-endian stream, found options bit 0 set; not validated further",
        ));
        return false;
    }
    *pos += LibxlHeader::SIZE;
    true
}

/// The checks of a libxl record other than END and LIBXC_CONTEXT, whose
/// effect on the walk [`libxl_at`] handles.
fn check_libxl_record(
    rec: &RawRecord<'_>,
    t: LibxlRecordType,
    name: &'static str,
    out: &mut Findings,
) {
    let len = rec.body.len();
    match t {
        LibxlRecordType::CHECKPOINT_END if len != 0 => {
            libxl_nonempty(rec, name, out);
        }
        LibxlRecordType::CHECKPOINT_STATE if len == 0 => {
            out.push(Finding::error(
                "v2.libxl.checkpoint-state-empty",
                rec.offset + 4,
                rec.context().field("body_length"),
                "expected a non-empty CHECKPOINT_STATE, found length 0",
            ));
        }
        LibxlRecordType::EMULATOR_CONTEXT => {
            libxl_emulator(rec, name, out);
        }
        LibxlRecordType::EMULATOR_XENSTORE_DATA if libxl_emulator(rec, name, out) && len > 8 => {
            libxl_xenstore(rec, out);
        }
        _ => {}
    }
}

/// A libxl record that must be empty is not.
fn libxl_nonempty(rec: &RawRecord<'_>, name: &str, out: &mut Findings) {
    out.push(Finding::error(
        "v2.libxl.nonempty",
        rec.offset + 4,
        rec.context().field("body_length"),
        format!("expected an empty {name}, found length {}", rec.body.len()),
    ))
}

/// The emulator header of EMULATOR_* records; false when the body is too
/// short to hold it.
fn libxl_emulator(rec: &RawRecord<'_>, name: &str, out: &mut Findings) -> bool {
    let len = rec.body.len();
    let rctx = rec.context();
    if len < 8 {
        out.push(Finding::error(
            "v2.libxl.emulator-length",
            rec.offset + 4,
            rctx.field("body_length"),
            format!("expected at least 8 bytes for {name}, found {len}"),
        ));
        return false;
    }
    let id = le::<u32>(rec.body, 0).unwrap_or_default();
    if let EmulatorId::Other(v) = EmulatorId::from_raw(id) {
        out.push(Finding::error(
            "v2.libxl.emulator-id",
            rec.body_offset(),
            rctx.field("emulator_id"),
            format!("expected emulator id 0, 1 or 2, found {v:#x}"),
        ));
    }
    true
}

/// EMULATOR_XENSTORE_DATA of more than 8 bytes: NUL-terminated key/value
/// pairs, and a warning that Xen 4.17's verifier rejects it anyway.
fn libxl_xenstore(rec: &RawRecord<'_>, out: &mut Findings) {
    let rctx = rec.context();
    // Guarded by `len > 8`: never empty.
    let data = rec.body.get(8..).unwrap_or_default();
    if data.last() != Some(&0) {
        out.push(Finding::error(
            "v2.libxl.xenstore-nul",
            rec.body_offset() + 8,
            rctx.field("data"),
            "expected NUL-terminated key/value strings, found no final NUL",
        ));
    } else if data.iter().filter(|&&b| b == 0).count() % 2 != 0 {
        out.push(Finding::error(
            "v2.libxl.xenstore-pairs",
            rec.body_offset() + 8,
            rctx.field("data"),
            "expected an even number of strings (key, value, …), found an odd number",
        ));
    } else {
        out.push(Finding::warning(
            "v2.libxl.xenstore-verifier-bug",
            rec.body_offset() + 8,
            rctx.field("data"),
            "valid, but Xen 4.17's verify-stream-v2 rejects every non-empty EMULATOR_XENSTORE_DATA (Python 3 bytes/str bug)",
        ));
    }
}

/// Validate a libxl v2 image (`verify-stream-v2 -f libxl`), including the
/// libxc image inside its LIBXC_CONTEXT.
pub fn validate_libxl(data: &[u8]) -> Vec<Finding> {
    check_libxl(data).into_vec()
}

/// [`validate_libxl`], with the count of findings past the per-rule cap.
pub fn check_libxl(data: &[u8]) -> Findings {
    let mut out = Findings::default();
    let mut pos = 0;
    libxl_at(data, &mut pos, 0, &mut out);
    out
}

/// Validate an xl save file (`verify-stream-v2 -f xl`) plus what `xl`
/// itself refuses: a foreign byte order and unknown mandatory flags.
pub fn validate_xl(data: &[u8]) -> Vec<Finding> {
    check_xl(data).into_vec()
}

/// [`validate_xl`], with the count of findings past the per-rule cap.
pub fn check_xl(data: &[u8]) -> Findings {
    let mut out = Findings::default();
    let hdr = match XlHeader::parse_lenient(data) {
        Ok(h) => h,
        Err(e) => {
            out.push(framing(e));
            return out;
        }
    };
    let ctx = Context::root().field("xl header");
    if hdr.byteorder != XlHeader::BYTEORDER {
        out.push(Finding::error(
            "v2.xl.byteorder",
            32,
            ctx.field("byteorder"),
            format!(
                "expected 0x01020304 (little-endian host), found {:#010x}; xl refuses the file",
                hdr.byteorder
            ),
        ));
    }
    let unknown = hdr.mandatory_flags & !XlHeader::KNOWN_MANDATORY;
    if unknown != 0 {
        out.push(Finding::error(
            "v2.xl.mandatory-flags",
            36,
            ctx.field("mandatory_flags"),
            format!(
                "expected only bits 0 (JSON) and 1 (STREAMv2), found {:#x}; xl refuses the file",
                hdr.mandatory_flags
            ),
        ));
    }
    // xl reads `config_len` and the config out of the optional data and
    // refuses the file ("Savefile truncated") when they do not fit.
    if let Err(e) = hdr.checked_config() {
        out.push(Finding::error(
            "v2.xl.config-length",
            e.offset,
            e.context.clone(),
            format!("{}; xl refuses the file", e.kind),
        ));
    }
    let mut pos = hdr.encoded_len() as usize;
    if hdr.mandatory_flags & XlHeader::FLAG_STREAM_V2 != 0 {
        libxl_at(data, &mut pos, 0, &mut out);
    } else {
        libxc_at(data, &mut pos, 0, &mut out);
    }
    out
}

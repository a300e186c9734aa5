//! `convert` of a migration v2 image into another v2 framing.
//!
//! libxc, libxl and xl framing differ only in what wraps the libxc records
//! (and where an HVM guest's device model state lives: an EMULATOR_CONTEXT
//! record, or `DeviceModelRecord0002` after a bare libxc END as Xen's
//! `convert-legacy-stream` writes it). So the libxc image headers and
//! records are copied unchanged, in one streaming pass, and only the
//! wrapping is rewritten. A libxl record the target framing cannot carry is
//! an error, as in [`crate::convert`].

use std::borrow::Cow;
use std::io::{Read, Write};

use hvm_format::image::v2_start;
use hvm_format::legacy::libvirt::LibvirtHeader;
use hvm_format::stream::DM_RECORD_0002;
use hvm_format::v2::libxc::{DomainHeader, ImageHeader, RecordBody};
use hvm_format::v2::libxl::{LibxlHeader, LibxlItem, LibxlReader, LibxlRecord, LibxlWriter};
use hvm_format::v2::reader::Reader;
use hvm_format::v2::writer::Writer;
use hvm_format::v2::xl::XlHeader;
use hvm_format::v2::AfterEnd;
use hvm_format::{Context, Error, ErrorKind, Result};

use crate::target::{emulator_id, xl_config_json, ConvertReport, Target};

/// Where the libxc records come from.
enum Source<R> {
    /// A bare libxc image; what follows its END is read with
    /// [`Reader::after_end`].
    Libxc(Reader<R>),
    /// A libxl stream (possibly inside an xl or libvirt header).
    Libxl(LibxlReader<R>),
}

/// libxl records other than LIBXC_CONTEXT and END, in stream order (a
/// libxc source's appended device model state as an EMULATOR_CONTEXT).
type Extras = Vec<LibxlRecord<'static>>;

/// Records and pages copied.
#[derive(Default, Clone, Copy)]
struct Copied {
    records: u64,
    page_records: u64,
    pages: u64,
}

impl Copied {
    /// Copy one libxc record into `w`; false at the source's END, which is
    /// not copied (`w` writes its own).
    fn put<W: Write>(&mut self, w: &mut Writer<W>, body: &RecordBody<'_>) -> Result<bool> {
        if matches!(body, RecordBody::End) {
            return Ok(false);
        }
        if let RecordBody::PageData(p) = body {
            self.page_records += 1;
            self.pages += p.entries.iter().filter(|e| e.has_data()).count() as u64;
        }
        w.record(body)?;
        self.records += 1;
        Ok(true)
    }
}

/// Reframe the v2 image in `input` (its first bytes are `prefix`) into
/// `sink` with `target` framing.
pub(crate) fn reframe<R: Read, W: Write>(
    input: R,
    prefix: &[u8],
    total: Option<u64>,
    sink: &mut W,
    target: Target,
    rep: &mut ConvertReport,
) -> Result<()> {
    let Some((start, libxl)) = v2_start(prefix) else {
        return Err(Error::invalid(
            0,
            Context::root().field("envelope"),
            "a migration v2 image",
            "something else",
        ));
    };
    let mut input = input;
    // The wrapping in front of the image.
    let mut xl = None;
    if prefix.starts_with(&XlHeader::MAGIC) {
        let x = XlHeader::read(&mut input)?;
        // What xl refuses is refused here too, at its input offset.
        x.checked_config()?;
        xl = Some(x);
    } else if start > 0 {
        let h = LibvirtHeader::read(&mut input, total)?;
        rep.translations.push(format!(
            "libvirt header dropped ({} bytes of domain XML)",
            h.xml.len()
        ));
    }
    let framing = match (&xl, libxl) {
        (Some(_), _) => "xl",
        (None, true) => "libxl",
        (None, false) => "libxc",
    };
    let mut src = if libxl {
        Source::Libxl(LibxlReader::with_offset(input, start)?)
    } else {
        Source::Libxc(Reader::with_offset(input, start)?)
    };
    let legacy_converted = match &src {
        Source::Libxl(r) => r.header().is_legacy_converted(),
        // Only legacy conversion writes a libxc image with the device
        // model's state after END; plain libxc images carry no libxl state.
        Source::Libxc(_) => true,
    };
    rep.translations.push(format!(
        "{framing} framing → {}: libxc image headers and records copied unchanged",
        match target {
            Target::Libxc => "libxc",
            Target::Libxl => "libxl",
            Target::Xl => "xl",
        }
    ));

    match target {
        Target::Libxc => {
            let (image, domain, before) = headers(&mut src)?;
            let mut w = Writer::new(&mut *sink, image, domain)?;
            let copied = pump_from(&mut src, &mut w)?;
            w.end()?;
            let at = w.offset();
            drop(w);
            count(rep, copied);
            if let Some(record) = before.first() {
                return Err(not_in_libxc(record, at));
            }
            let mut state = None;
            for record in after(&mut src)? {
                match record {
                    LibxlRecord::EmulatorContext { index: 0, data, .. } if state.is_none() => {
                        state = Some(data)
                    }
                    other => return Err(not_in_libxc(&other, at)),
                }
            }
            if let Some(state) = state {
                let len = u32::try_from(state.len()).unwrap_or(u32::MAX);
                for part in [&DM_RECORD_0002[..], &len.to_le_bytes(), &state] {
                    sink.write_all(part).map_err(|e| {
                        Error::new(
                            at,
                            Context::root().field("device model record"),
                            ErrorKind::Io(e),
                        )
                    })?;
                }
                rep.translations.push(format!(
                    "EMULATOR_CONTEXT ({} bytes) appended after END as DeviceModelRecord0002",
                    state.len()
                ));
            }
        }
        Target::Libxl | Target::Xl => {
            let offset = if target == Target::Xl {
                let h = match xl.take() {
                    Some(h) => {
                        rep.translations.push("xl header copied".into());
                        h
                    }
                    None => {
                        rep.translations.push(
                            "xl header with a minimal JSON config (the v2 image names no domain)"
                                .into(),
                        );
                        XlHeader::with_json_config(&xl_config_json("converted", 0))
                    }
                };
                h.write(&mut *sink)?
            } else {
                if xl.is_some() {
                    rep.translations
                        .push("xl header dropped (its domain config)".into());
                }
                0
            };
            let mut lw =
                LibxlWriter::with_offset(&mut *sink, offset, LibxlHeader::new(legacy_converted))?;
            let (image, domain, before) = headers(&mut src)?;
            for r in &before {
                lw.record(r)?;
            }
            let mut copied = Copied::default();
            lw.libxc(image, domain, |w| {
                copied = pump_from(&mut src, w)?;
                Ok(())
            })?;
            count(rep, copied);
            for r in after(&mut src)? {
                if let LibxlRecord::EmulatorContext { data, emulator, .. } = &r {
                    rep.translations.push(format!(
                        "EMULATOR_CONTEXT ({} bytes, {emulator:?})",
                        data.len()
                    ));
                }
                lw.record(&r)?;
            }
            lw.finish()?;
        }
    }
    Ok(())
}

fn count(rep: &mut ConvertReport, c: Copied) {
    rep.pages += c.pages;
    rep.page_records += c.page_records;
    rep.translations.push(format!(
        "{} libxc records copied ({} PAGE_DATA, {} pages)",
        c.records, c.page_records, c.pages
    ));
}

/// Read up to the libxc image headers; libxl records before them are kept.
fn headers<R: Read>(src: &mut Source<R>) -> Result<(ImageHeader, DomainHeader, Extras)> {
    let mut before = Extras::new();
    match src {
        Source::Libxc(r) => Ok((*r.image_header(), *r.domain_header(), before)),
        Source::Libxl(r) => loop {
            let at = r.offset();
            match r.next_item()? {
                Some(LibxlItem::LibxcHeaders { image, domain, .. }) => {
                    return Ok((image, domain, before))
                }
                Some(LibxlItem::Record {
                    record: LibxlRecord::LibxcContext,
                    ..
                }) => {}
                Some(LibxlItem::Record { record, .. }) => {
                    check_carried(&record, at, before.len())?;
                    before.push(record.into_owned());
                }
                Some(LibxlItem::Libxc(_)) | None => {
                    return Err(Error::invalid(
                        at,
                        Context::root().field("libxl stream"),
                        "LIBXC_CONTEXT and a libxc image",
                        "none before the end",
                    ))
                }
            }
        },
    }
}

/// The libxc records after the headers, into `w`, borrowed from the
/// reader's buffer (one vectored write per PAGE_DATA, no copy).
fn pump_from<R: Read, W: Write>(src: &mut Source<R>, w: &mut Writer<W>) -> Result<Copied> {
    let mut c = Copied::default();
    match src {
        Source::Libxc(r) => {
            while let Some(rec) = r.next_record()? {
                if !c.put(w, &rec.body)? {
                    break;
                }
            }
        }
        Source::Libxl(r) => {
            while let Some(LibxlItem::Libxc(rec)) = r.next_item()? {
                if !c.put(w, &rec.body)? {
                    break;
                }
            }
        }
    }
    Ok(c)
}

/// The libxl records after the libxc image, up to END. A libxc source's
/// appended device model state becomes an EMULATOR_CONTEXT whose emulator
/// is told by the state's magic (QEVM: qemu-traditional).
fn after<R: Read>(src: &mut Source<R>) -> Result<Extras> {
    let mut records = Extras::new();
    match src {
        Source::Libxc(r) => {
            if let AfterEnd::DeviceModel { data, .. } = r.after_end()? {
                records.push(LibxlRecord::EmulatorContext {
                    emulator: emulator_id(data),
                    index: 0,
                    data: Cow::Owned(data.to_vec()),
                });
            }
            if let AfterEnd::Trailing { offset, len, more } = r.after_end()? {
                return Err(Error::invalid(
                    offset,
                    Context::root().field("after END"),
                    "the end of the image or a device model record",
                    format!("{}{len} more bytes", if more { "more than " } else { "" }),
                ));
            }
        }
        Source::Libxl(r) => loop {
            let at = r.offset();
            match r.next_item()? {
                None
                | Some(LibxlItem::Record {
                    record: LibxlRecord::End,
                    ..
                }) => {
                    // validate calls bytes after END an error: so does
                    // convert, at their input offset.
                    if let Some((offset, len, more)) = r.trailing()? {
                        return Err(Error::invalid(
                            offset,
                            Context::root().field("after END"),
                            "the end of the image",
                            if more {
                                format!("more than {len} bytes")
                            } else {
                                format!("{len} more bytes")
                            },
                        ));
                    }
                    break;
                }
                Some(LibxlItem::Record { record, .. }) => {
                    check_carried(&record, at, records.len())?;
                    records.push(record.into_owned());
                }
                Some(_) => {
                    return Err(Error::invalid(
                        at,
                        Context::root().field("libxl stream"),
                        "libxl records after the libxc image",
                        "a second libxc image",
                    ))
                }
            }
        },
    }
    Ok(records)
}

fn not_in_libxc(record: &LibxlRecord<'_>, at: u64) -> Error {
    Error::invalid(
        at,
        Context::root().field("libxl record"),
        "only one EMULATOR_CONTEXT (libxc framing has nowhere else for libxl state)",
        record
            .rtype()
            .name()
            .unwrap_or("an unknown record")
            .to_string(),
    )
}

/// libxl records a reframed image may carry: emulator state only
/// (checkpoint records belong to a live Remus/COLO stream).
/// Most libxl records carried around the libxc image. libxl writes one
/// xenstore-data and one context record per emulator (at most two); the cap
/// stops a stream of millions of tiny records from costing memory out of
/// proportion to its bytes (each is held until the output is written).
const MAX_CARRIED: usize = 64;

/// `record`, found at `at`, can be carried into the output, and `carried`
/// records are already held.
fn check_carried(record: &LibxlRecord<'_>, at: u64, carried: usize) -> Result<()> {
    if carried >= MAX_CARRIED {
        return Err(Error::invalid(
            at,
            Context::root().field("libxl record"),
            format!("at most {MAX_CARRIED} emulator records"),
            format!("record {}", carried + 1),
        ));
    }
    match record {
        LibxlRecord::EmulatorXenstoreData { .. } | LibxlRecord::EmulatorContext { .. } => Ok(()),
        other => Err(Error::invalid(
            at,
            Context::root().field("libxl record"),
            "END, LIBXC_CONTEXT, EMULATOR_XENSTORE_DATA or EMULATOR_CONTEXT",
            other
                .rtype()
                .name()
                .unwrap_or("an unknown record")
                .to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hvm_format::dialect::Dialect;
    use hvm_format::v2::libxc::PageDataEntry;
    use hvm_format::v2::libxl::EmulatorId;

    use super::*;

    fn libxl_image(after: &[LibxlRecord<'_>]) -> Vec<u8> {
        let mut lw = LibxlWriter::new(Vec::new(), LibxlHeader::new(false)).unwrap();
        lw.libxc(ImageHeader::new(3), DomainHeader::hvm(0, 0), |w| {
            w.record(&RecordBody::StaticDataEnd)?;
            w.page_data(&[PageDataEntry::page(5)], &[7u8; 4096])?;
            w.record(&RecordBody::HvmContext(Cow::Borrowed(&[0u8; 8])))?;
            Ok(())
        })
        .unwrap();
        for r in after {
            lw.record(r).unwrap();
        }
        lw.finish().unwrap()
    }

    fn run(input: &[u8], target: Target) -> Result<Vec<u8>> {
        let mut rep = ConvertReport::new("in", Path::new("out"), target, Dialect::V2, 64);
        let mut out = Vec::new();
        reframe(
            input,
            input,
            Some(input.len() as u64),
            &mut out,
            target,
            &mut rep,
        )?;
        Ok(out)
    }

    /// Catches: holding every carried record however many there are.
    #[test]
    fn carried_records_are_capped_at_their_offset() {
        let xs = LibxlRecord::xenstore_data(EmulatorId::QemuUpstream, 0, &[("k", "v")]);
        let ok = libxl_image(&vec![xs.clone(); MAX_CARRIED]);
        assert_eq!(run(&ok, Target::Libxl).unwrap(), ok);
        let img = libxl_image(&vec![xs; MAX_CARRIED + 1]);
        let e = run(&img, Target::Libxl).unwrap_err();
        assert!(e.to_string().contains("at most 64 emulator records"), "{e}");
        assert!(e.offset > 0 && e.offset < img.len() as u64, "{e}");
    }

    #[test]
    fn libxl_state_is_kept_where_it_fits_and_refused_where_it_does_not() {
        let xs = LibxlRecord::xenstore_data(EmulatorId::QemuUpstream, 0, &[("k", "v")]);
        let ctx = LibxlRecord::EmulatorContext {
            emulator: EmulatorId::QemuUpstream,
            index: 0,
            data: Cow::Borrowed(b"upstream state"),
        };
        let img = libxl_image(&[xs, ctx.clone()]);
        // libxl → libxl is the identity: emulator ids, indexes, order.
        assert_eq!(run(&img, Target::Libxl).unwrap(), img);
        // libxc framing has no place for xenstore data.
        let e = run(&img, Target::Libxc).unwrap_err();
        assert!(e.to_string().contains("EMULATOR_XENSTORE_DATA"), "{e}");
        // The emulator context alone goes after END, and comes back.
        let img = libxl_image(&[ctx]);
        let libxc = run(&img, Target::Libxc).unwrap();
        let tail = [
            &b"DeviceModelRecord0002"[..],
            &14u32.to_le_bytes(),
            b"upstream state",
        ]
        .concat();
        assert!(libxc.ends_with(&tail));
        let back = run(&libxc, Target::Libxl).unwrap();
        let mut r = LibxlReader::new(&back[..]).unwrap();
        let mut state = None;
        while let Some(item) = r.next_item().unwrap() {
            if let LibxlItem::Record {
                record: LibxlRecord::EmulatorContext { data, emulator, .. },
                ..
            } = item
            {
                // No magic to tell the emulator by: libxl decides from the
                // domain's config, as for any legacy-converted stream.
                assert_eq!(emulator, EmulatorId::Unknown);
                state = Some(data.into_owned());
            }
        }
        assert_eq!(state.as_deref(), Some(&b"upstream state"[..]));
        assert!(r.header().is_legacy_converted());
        // Checkpoint records belong to a live stream: refused everywhere.
        let img = libxl_image(&[LibxlRecord::CheckpointEnd]);
        for t in [Target::Libxc, Target::Libxl, Target::Xl] {
            let e = run(&img, t).unwrap_err();
            assert!(e.to_string().contains("CHECKPOINT_END"), "{e}");
        }
    }
}

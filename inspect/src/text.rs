//! Text renderers: every report in 80 columns, long values wrapped.

use std::fmt::Write as _;

use hvm_format::hvm::FieldValue;
use hvm_format::rules::{Finding, Severity};

use crate::diff::{DiffReport, FieldDiff, PfnRanges};
use crate::report::{
    DigestReport, ErrorReport, PageCopyReport, PageEntry, Show, ShowHvm, ShowPage, ShowPages,
    ShowVcpu, Summary, Validation, VerdictReport,
};

/// The width every line fits in.
pub(crate) const WIDTH: usize = 80;

/// Append `text` word-wrapped: the first line after `first` (already
/// counted as `first.len()` columns), continuation lines indented by
/// `indent` spaces. Words longer than a line are cut.
fn wrap(out: &mut String, first: &str, indent: usize, text: &str) {
    let mut col = first.chars().count();
    out.push_str(first);
    let mut line_has_word = false;
    for word in text.split_whitespace() {
        let mut word: String = word.to_string();
        loop {
            let w = word.chars().count();
            let space = usize::from(line_has_word);
            if col + space + w <= WIDTH {
                if line_has_word {
                    out.push(' ');
                }
                out.push_str(&word);
                col += space + w;
                line_has_word = true;
                break;
            }
            if line_has_word || col > indent {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                col = indent;
                line_has_word = false;
                continue;
            }
            // A word longer than the line: cut it.
            let room = WIDTH.saturating_sub(col).max(1);
            let head: String = word.chars().take(room).collect();
            let tail: String = word.chars().skip(room).collect();
            out.push_str(&head);
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
            word = tail;
            if word.is_empty() {
                break;
            }
        }
    }
    out.push('\n');
}

/// `label` padded to a column, then `value` wrapped under it.
fn kv(out: &mut String, label: &str, value: &str) {
    wrap(out, &format!("{label:<16}  "), 18, value);
}

fn evidence(out: &mut String, lines: &[String]) {
    for l in lines {
        wrap(out, "  - ", 4, l);
    }
}

fn sev(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn finding(out: &mut String, f: &Finding) {
    let _ = writeln!(
        out,
        "  {}[{}] at {:#x} ({})",
        sev(f.severity),
        f.rule,
        f.offset,
        f.offset
    );
    wrap(out, "      in ", 6, &f.context.to_string());
    wrap(out, "      ", 6, &f.message);
}

fn error_report(out: &mut String, what: &str, e: &ErrorReport) {
    let _ = writeln!(out, "{what} at {:#x} ({})", e.offset, e.offset);
    wrap(out, "  in ", 4, &e.context);
    wrap(out, "  ", 2, &e.message);
}

fn verdict(out: &mut String, v: &VerdictReport, strict: bool) {
    let state = if v.valid { "valid" } else { "INVALID" };
    let plural = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    kv(
        out,
        "verdict",
        &format!(
            "{state}{} ({}, {})",
            if strict {
                " under the seed restorer's rules"
            } else {
                ""
            },
            plural(v.errors, "error"),
            plural(v.warnings, "warning")
        ),
    );
    if let Some(m) = &v.memory {
        kv(
            out,
            "  memory",
            &format!(
                "{} pages ({} MiB) from {}",
                m.pages,
                m.pages / 256,
                m.source
            ),
        );
    }
    for f in &v.findings {
        finding(out, f);
    }
    for s in &v.suppressed {
        wrap(
            out,
            "  ",
            4,
            &format!("... and {} more [{}] findings not listed", s.count, s.rule),
        );
    }
    let errs = v
        .current_xen
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let state = match v.current_xen_loads {
        None => "not checked: the stream ends before the HVM blob".to_string(),
        Some(true) => format!(
            "would load the HVM blob ({} notes)",
            v.current_xen.len() - errs
        ),
        Some(false) => format!("would refuse the HVM blob ({errs} errors)"),
    };
    kv(out, "current Xen", &state);
    for f in &v.current_xen {
        finding(out, f);
    }
}

fn hex_or_none(v: Option<u64>) -> String {
    v.map_or("-".into(), |x| format!("{x:#x}"))
}

/// `summary` as text: one section after another, in the order of the image.
pub fn summary(s: &Summary) -> String {
    let mut o = String::new();
    summary_framing(&mut o, s);
    summary_chunks(&mut o, s);
    summary_passes(&mut o, s);
    summary_vcpus(&mut o, s);
    summary_hvm(&mut o, s);
    summary_tail(&mut o, s);
    if let Some(e) = &s.stream_error {
        error_report(&mut o, "stream stops", e);
    }
    verdict(&mut o, &s.verdict, false);
    o
}

/// Where the stream sits in the file and which dialect it speaks.
fn summary_framing(o: &mut String, s: &Summary) {
    kv(o, "file", &s.file);
    if let Some(n) = s.file_len {
        kv(o, "  size", &format!("{n} bytes ({} MiB)", n >> 20));
    }
    kv(o, "envelope", s.envelope.name);
    evidence(o, &s.envelope.evidence);
    if let Some(m) = s.envelope.config_memory_mib {
        kv(o, "  config memory", &format!("{m} MiB"));
    }
    kv(
        o,
        "  stream at",
        &format!(
            "{:#x} ({})",
            s.envelope.stream_offset, s.envelope.stream_offset
        ),
    );
    kv(o, "dialect", s.dialect.description);
    kv(
        o,
        "word size",
        &format!("{}-bit toolstack", s.dialect.word_bits),
    );
    evidence(o, &s.dialect.evidence);
    kv(o, "max_pfn", &hex_or_none(s.max_pfn));
}

/// The chunks before the pages, and what they tell about the guest.
fn summary_chunks(o: &mut String, s: &Summary) {
    if !s.chunks.is_empty() {
        kv(
            o,
            "chunks",
            &(s.chunks.len() as u64 + s.chunks_not_listed).to_string(),
        );
        for c in &s.chunks {
            let value = c.value.map_or(String::new(), |v| format!(" = {v:#x}"));
            let _ = writeln!(
                o,
                "  {:>4} {:<26} at {:#x}, {} bytes{value}",
                c.id, c.name, c.offset, c.payload_len
            );
        }
        if s.chunks_not_listed > 0 {
            let _ = writeln!(o, "  … {} more, not listed", s.chunks_not_listed);
        }
    }
    if let Some(m) = &s.magic_pfns {
        kv(
            o,
            "magic pfns",
            &format!(
                "ioreq {:#x}, bufioreq {:#x}, store {:#x} (at {:#x})",
                m.ioreq, m.bufioreq, m.store, m.offset
            ),
        );
    }
    if let Some(f) = s.shared_info_frame {
        kv(o, "shared_info", &format!("frame {f:#x}"));
    }
    if let Some(d) = &s.device_model {
        kv(
            o,
            "device model",
            &format!(
                "DeviceModelRecord0002 at {:#x}, {} bytes{}",
                d.offset,
                d.len,
                if d.qevm { " (QEVM)" } else { "" }
            ),
        );
    }
}

/// The pre-copy passes as a table, then the page totals.
fn summary_passes(o: &mut String, s: &Summary) {
    kv(
        o,
        "passes",
        &format!(
            "{}{}",
            s.passes.len(),
            if s.verify.is_some() { " + verify" } else { "" }
        ),
    );
    if !s.passes.is_empty() || s.verify.is_some() {
        let _ = writeln!(
            o,
            "  {:<8} {:>14} {:>10} {:>10} {:>10} {:>8}",
            "pass", "offset", "1st batch", "batches", "pages", "xtab"
        );
        for p in s.passes.iter().chain(s.verify.iter()) {
            let name = p.number.map_or("verify".to_string(), |n| n.to_string());
            let _ = writeln!(
                o,
                "  {:<8} {:>14} {:>10} {:>10} {:>10} {:>8}",
                name,
                format!("{:#x}", p.offset),
                p.first_batch,
                p.batches,
                p.pages,
                p.typed
            );
        }
    }
    kv(o, "batches", &s.batches.to_string());
    kv(
        o,
        "pages",
        &format!(
            "{} copies, {} bytes ({} MiB)",
            s.pages,
            s.page_bytes,
            s.page_bytes >> 20
        ),
    );
    kv(o, "distinct pfns", &s.distinct_pfns.to_string());
    kv(o, "xtab entries", &s.xtab_entries.to_string());
    kv(
        o,
        "verify pass",
        &s.verify
            .as_ref()
            .map_or("absent".into(), |v| format!("present, {} pages", v.pages)),
    );
}

/// Each vCPU's key registers, or why its record could not be read.
fn summary_vcpus(o: &mut String, s: &Summary) {
    kv(
        o,
        "vcpus",
        &s.nr_vcpus.map_or("-".into(), |n| n.to_string()),
    );
    let ip = if s.dialect.word_bits == 32 {
        "eip"
    } else {
        "rip"
    };
    for v in &s.vcpus {
        match &v.registers {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "  {:<3} {ip} {:#018x}  rsp {:#018x}  rflags {:#010x}",
                    v.index, r.rip, r.rsp, r.rflags
                );
                let _ = writeln!(
                    o,
                    "      cr0 {:#010x}  cr3 {:#018x}  cr4 {:#010x}",
                    r.cr0, r.cr3, r.cr4
                );
            }
            None => wrap(
                o,
                &format!("  {:<3} ", v.index),
                6,
                &format!(
                    "{} bytes at {:#x}: {}",
                    v.size,
                    v.offset,
                    v.error.as_deref().unwrap_or("unreadable")
                ),
            ),
        }
    }
}

/// The HVM blob's records, each with the Xen eras that wrote its size.
fn summary_hvm(o: &mut String, s: &Summary) {
    match &s.hvm {
        None => kv(o, "hvm blob", "-"),
        Some(h) => {
            kv(
                o,
                "hvm blob",
                &format!(
                    "{} records, {} bytes at {:#x}",
                    h.records.len(),
                    h.length,
                    h.offset
                ),
            );
            let _ = writeln!(
                o,
                "  {:>3} {:<16} {:>4} {:>6}  era of this size",
                "#", "record", "inst", "length"
            );
            for r in &h.records {
                let era = if r.eras.is_empty() {
                    "no Xen wrote this size".to_string()
                } else {
                    r.eras.join("; ")
                };
                wrap(
                    o,
                    &format!(
                        "  {:>3} {:<16} {:>4} {:>6}  ",
                        r.index, r.name, r.instance, r.length
                    ),
                    36,
                    &era,
                );
            }
            if h.trailer > 0 {
                kv(o, "  after END", &format!("{} bytes", h.trailer));
            }
            if let Some(e) = &h.error {
                error_report(o, "  hvm framing error", e);
            }
        }
    }
}

/// What follows the HVM blob: the qemu record and stray bytes.
fn summary_tail(o: &mut String, s: &Summary) {
    if let Some(q) = &s.qemu {
        kv(
            o,
            "qemu tail",
            &format!(
                "QemuDeviceModelRecord at {:#x}, {} QEVM sections",
                q.signature_offset,
                q.sections.len()
            ),
        );
        for sec in &q.sections {
            wrap(
                o,
                "  ",
                4,
                &format!(
                    "{} instance {} version {}: {} bytes at {:#x}",
                    sec.id_str(),
                    sec.instance_id,
                    sec.version_id,
                    sec.length,
                    sec.payload_offset
                ),
            );
        }
    }
    if let Some(t) = &s.trailing {
        kv(
            o,
            "trailing bytes",
            &format!(
                "{}{} at {:#x}",
                if t.more { "more than " } else { "" },
                t.length,
                t.offset
            ),
        );
    }
}

/// `validate` as text.
pub fn validation(v: &Validation) -> String {
    let mut o = String::new();
    kv(&mut o, "file", &v.file);
    verdict(&mut o, &v.verdict, v.strict);
    o
}

fn field_line(out: &mut String, name: &str, v: &FieldValue) {
    let value = v.to_string();
    let head = format!("    {name:<30} ");
    if head.len() + value.len() <= WIDTH {
        out.push_str(&head);
        out.push_str(&value);
        out.push('\n');
        return;
    }
    // Long byte arrays: 32 bytes (64 hex digits) per line.
    let _ = writeln!(out, "    {name}");
    let chars: Vec<char> = value.chars().collect();
    for chunk in chars.chunks(64) {
        let s: String = chunk.iter().collect();
        let _ = writeln!(out, "      {s}");
    }
}

fn show_hvm(h: &ShowHvm) -> String {
    let mut o = String::new();
    kv(&mut o, "file", &h.file);
    kv(
        &mut o,
        "hvm blob",
        &match (h.offset, h.length) {
            (Some(off), Some(len)) => {
                format!("{len} bytes at {off:#x}, {} records", h.records.len())
            }
            _ => "not reached".into(),
        },
    );
    for r in &h.records {
        let b = &r.brief;
        let _ = writeln!(
            o,
            "record {} {} (type {}) instance {}: {} bytes at {:#x}, {}",
            b.index, b.name, b.typecode, b.instance, b.length, b.offset, r.layout
        );
        for e in &b.eras {
            wrap(&mut o, "  era: ", 7, e);
        }
        for f in &r.fields {
            field_line(&mut o, &f.name, &f.value);
        }
    }
    if h.trailer > 0 {
        kv(&mut o, "after END", &format!("{} bytes", h.trailer));
    }
    if let Some(e) = &h.error {
        error_report(&mut o, "error", e);
    }
    o
}

fn show_vcpu(v: &ShowVcpu) -> String {
    let mut o = String::new();
    kv(&mut o, "file", &v.file);
    kv(
        &mut o,
        "word size",
        &format!("{}-bit toolstack", v.word_bits),
    );
    for c in &v.vcpus {
        let _ = writeln!(o, "vcpu {}: {} bytes at {:#x}", c.index, c.size, c.offset);
        if let Some(e) = &c.error {
            wrap(&mut o, "  ", 2, e);
        }
        for f in &c.fields {
            field_line(&mut o, &f.name, &f.value);
        }
    }
    if let Some(e) = &v.error {
        error_report(&mut o, "stream stops", e);
    }
    o
}

fn show_pages(p: &ShowPages) -> String {
    let mut o = pages_head(&p.file);
    for e in &p.entries {
        o.push_str(&page_line(e));
    }
    o.push_str(&pages_tail(p));
    o
}

/// `show pages` in pieces, so the listing streams: the head...
pub fn pages_head(file: &str) -> String {
    let mut o = String::new();
    kv(&mut o, "file", file);
    let _ = writeln!(
        o,
        "{:>7} {:>5} {:>12} {:<8} {:>16} {:>6}",
        "batch", "entry", "pfn", "kind", "data offset", "pass"
    );
    o
}

/// ...one line per entry...
pub fn page_line(e: &PageEntry) -> String {
    let pass = if e.verify {
        "verify".to_string()
    } else {
        e.pass.map_or("-".into(), |n| n.to_string())
    };
    format!(
        "{:>7} {:>5} {:>12} {:<8} {:>16} {:>6}\n",
        e.batch,
        e.entry,
        format!("{:#x}", e.pfn),
        e.kind,
        hex_or_none(e.offset),
        pass
    )
}

/// ...and what stopped the reader, if anything.
pub fn pages_tail(p: &ShowPages) -> String {
    let mut o = String::new();
    if let Some(e) = &p.error {
        error_report(&mut o, "stream stops", e);
    }
    o
}

/// `hexdump -C` layout: 16 bytes a line, repeated lines collapsed to `*`.
fn hexdump(out: &mut String, base: u64, bytes: &[u8]) {
    let mut prev: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if prev == Some(line) {
            if !starred {
                out.push_str("*\n");
                starred = true;
            }
            continue;
        }
        starred = false;
        prev = Some(line);
        let _ = write!(out, "{:08x}  ", base + (i * 16) as u64);
        for (k, b) in line.iter().enumerate() {
            let _ = write!(out, "{b:02x} ");
            if k == 7 {
                out.push(' ');
            }
        }
        out.push_str(" |");
        for b in line {
            out.push(if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '.'
            });
        }
        out.push_str("|\n");
    }
    let _ = writeln!(out, "{:08x}", base + bytes.len() as u64);
}

fn copy_header(out: &mut String, what: &str, c: &PageCopyReport) {
    let pass = c
        .pass
        .map_or("verify pass".to_string(), |n| format!("pass {n}"));
    let _ = writeln!(
        out,
        "{what} at {:#x} ({pass}), offsets are file offsets:",
        c.offset
    );
}

fn show_page(p: &ShowPage) -> String {
    let mut o = String::new();
    kv(&mut o, "file", &p.file);
    kv(
        &mut o,
        "pfn",
        &format!("{:#x}: {} copies in the stream", p.pfn, p.copies),
    );
    match &p.final_copy {
        Some(c) => {
            copy_header(&mut o, "final copy", c);
            hexdump(&mut o, c.offset, &c.bytes);
        }
        None => kv(&mut o, "final copy", "none (not in the image)"),
    }
    if let Some(v) = &p.verify {
        if p.verify_differs == Some(false) {
            kv(
                &mut o,
                "verify copy",
                &format!("at {:#x}, identical to the final copy", v.offset),
            );
        } else {
            copy_header(&mut o, "verify copy (differs)", v);
            hexdump(&mut o, v.offset, &v.bytes);
        }
    }
    if let Some(e) = &p.error {
        error_report(&mut o, "stream stops", e);
    }
    o
}

/// `show` as text.
pub fn show(s: &Show) -> String {
    match s {
        Show::Hvm(h) => show_hvm(h),
        Show::Vcpu(v) => show_vcpu(v),
        Show::Pages(p) => show_pages(p),
        Show::Page(p) => show_page(p),
    }
}

/// `digest` as text.
pub fn digest(d: &DigestReport) -> String {
    let mut o = String::new();
    kv(&mut o, "file", &d.file);
    let _ = writeln!(o, "memory  {}", d.memory_sha256);
    let _ = writeln!(
        o,
        "        {} pages in {} ranges of 2 MiB",
        d.pages,
        d.ranges.len()
    );
    for v in &d.vcpus {
        let _ = writeln!(o, "vcpu {:<2} {}", v.index, v.sha256);
    }
    o
}

/// How many pfn ranges the text form lists per category.
const MAX_TEXT_RANGES: usize = 16;

fn ranges(out: &mut String, what: &str, r: &PfnRanges) {
    if r.pages == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {what}: {} pages in {} ranges",
        r.pages,
        r.ranges.len()
    );
    let list: Vec<String> = r
        .ranges
        .iter()
        .take(MAX_TEXT_RANGES)
        .map(|x| {
            if x.first == x.last {
                format!("{:#x}", x.first)
            } else {
                format!("{:#x}-{:#x}", x.first, x.last)
            }
        })
        .collect();
    wrap(out, "    ", 4, &list.join(" "));
    if r.ranges.len() > MAX_TEXT_RANGES {
        let _ = writeln!(
            out,
            "    ... {} more ranges (--json lists all)",
            r.ranges.len() - MAX_TEXT_RANGES
        );
    }
}

fn field_diff(out: &mut String, d: &FieldDiff) {
    let show =
        |v: &Option<FieldValue>| v.as_ref().map_or("(absent)".to_string(), |v| v.to_string());
    if let (Some(FieldValue::Bytes(a)), Some(FieldValue::Bytes(b))) = (&d.a, &d.b) {
        let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
        let first = a.iter().zip(b).position(|(x, y)| x != y);
        let mut msg = format!("{n} of {} bytes differ", a.len().min(b.len()));
        if let Some(f) = first {
            let _ = write!(msg, ", first at +{f}");
        }
        if a.len() != b.len() {
            let _ = write!(msg, "; lengths {} vs {}", a.len(), b.len());
        }
        let _ = writeln!(out, "    {:<24} {msg}", d.field);
        return;
    }
    let (a, b) = (show(&d.a), show(&d.b));
    let line = format!("    {:<24} {a} -> {b}", d.field);
    if line.chars().count() <= WIDTH {
        let _ = writeln!(out, "{line}");
    } else {
        let _ = writeln!(out, "    {}", d.field);
        wrap(out, "      a: ", 9, &a);
        wrap(out, "      b: ", 9, &b);
    }
}

/// `diff` as text.
pub fn diff(d: &DiffReport) -> String {
    let mut o = String::new();
    kv(&mut o, "a", &d.a);
    kv(&mut o, "b", &d.b);
    kv(&mut o, "result", if d.same { "same" } else { "different" });
    let m = &d.memory;
    kv(
        &mut o,
        "memory",
        &format!(
            "{} changed, {} only in a, {} only in b, {} same",
            m.changed.pages, m.only_a.pages, m.only_b.pages, m.same
        ),
    );
    ranges(&mut o, "changed", &m.changed);
    ranges(&mut o, "only in a", &m.only_a);
    ranges(&mut o, "only in b", &m.only_b);
    kv(
        &mut o,
        "vcpus",
        &format!(
            "{} in a, {} in b, {} differ",
            d.vcpus_a,
            d.vcpus_b,
            d.vcpus.len()
        ),
    );
    for v in &d.vcpus {
        match v.only_in {
            Some(side) => {
                let _ = writeln!(o, "  vcpu {} only in {side}", v.index);
            }
            None => {
                let _ = writeln!(o, "  vcpu {}: {} fields differ", v.index, v.fields.len());
                for f in &v.fields {
                    field_diff(&mut o, f);
                }
            }
        }
    }
    kv(
        &mut o,
        "hvm records",
        &format!(
            "{} in a, {} in b, {} differ",
            d.hvm_records_a,
            d.hvm_records_b,
            d.hvm.len()
        ),
    );
    if d.hvm_bytes_differ {
        kv(&mut o, "  hvm blob", "unparseable; the bytes differ");
    }
    for r in &d.hvm {
        match r.only_in {
            Some(side) => {
                let _ = writeln!(o, "  {} instance {} only in {side}", r.name, r.instance);
            }
            None => {
                let lens = if r.length_a != r.length_b {
                    format!(
                        ", length {} -> {}",
                        r.length_a.map_or("-".into(), |x| x.to_string()),
                        r.length_b.map_or("-".into(), |x| x.to_string())
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "  {} instance {}: {} fields differ{lens}",
                    r.name,
                    r.instance,
                    r.fields.len()
                );
                for f in &r.fields {
                    field_diff(&mut o, f);
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_fits_80_columns_and_keeps_every_word() {
        let words: Vec<String> = (0..200).map(|i| format!("w{}", i * 7919)).collect();
        let long = "x".repeat(200);
        let text = format!("{} {long}", words.join(" "));
        let mut out = String::new();
        wrap(&mut out, "label:    ", 6, &text);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(out.lines().skip(1).all(|l| l.starts_with("      ")));
        let joined: String = out.split_whitespace().collect::<Vec<_>>().join("");
        assert_eq!(joined, format!("label:{}{long}", words.join("")));
    }

    #[test]
    fn hexdump_collapses_repeats_like_hexdump_c() {
        let mut page = vec![0u8; 4096];
        page[17] = b'A';
        let mut out = String::new();
        hexdump(&mut out, 0x1000, &page);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("00001000  00 00"));
        assert!(lines[1].starts_with("00001010  00 41 00"));
        assert!(lines[1].ends_with("|.A..............|"));
        assert!(lines[2].starts_with("00001020  00"));
        assert_eq!(lines[3], "*");
        assert_eq!(lines[4], "00002000");
        assert!(lines.iter().all(|l| l.len() <= WIDTH));
    }
}

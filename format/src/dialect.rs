//! Which Xen era wrote a legacy libxc stream, and with which word size.
//!
//! The legacy streams carry no magic and no version (docs/format.md), so
//! detection walks the stream under each hypothesis (64- and 32-bit words,
//! with or without a leading word) skipping page data, and then classifies
//! what follows the `0` terminator. Every conclusion comes with the evidence
//! that led to it, so a user can check it with a hex editor.
//!
//! When no hypothesis reaches a known tail (a damaged or truncated image),
//! the reading that explains the most of the input wins: the one whose walk
//! got furthest before its first contradiction. Readings that explain
//! nothing real (an empty page section that leads nowhere, a 64-bit max_pfn
//! with upper bytes set, pfn words with bits above 32) count as explaining
//! no bytes. The evidence lists where every hypothesis stopped.
//!
//! Every offset, length and count here comes from untrusted input, so all
//! arithmetic on them is checked (`checked_add`/`checked_mul`; a sum that
//! would overflow is an input that runs past any end). The module denies
//! `clippy::arithmetic_side_effects` so that `clippy -D warnings` keeps it
//! that way.
#![deny(clippy::arithmetic_side_effects)]

use crate::bytes::le;
use crate::pfn::{WordSize, LTAB_MASK, MAX_BATCH, PAGE_SIZE};
use crate::stream::vcpu_context_size;

/// `HVM_FILE_MAGIC` of every era.
pub(crate) const HVM_FILE_MAGIC: u32 = 0x5438_1286;
const QEMU_SIGNATURE: &[u8] = b"QemuDeviceModelRecord";
use crate::stream::DM_RECORD_0002;

pub use crate::stream::Dialect;

/// The result of detection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detection {
    /// The layout.
    pub dialect: Dialect,
    /// The toolstack word size (v2 streams: 64).
    pub word: WordSize,
    /// Why: one line per observation, with offsets.
    pub evidence: Vec<String>,
    /// False when the input ended before the evidence was conclusive (e.g. a
    /// prefix of a pipe).
    pub complete: bool,
}

/// How far a walk of the page section got.
#[derive(Debug, Default)]
struct Walk {
    /// Offset of the byte after the `0` terminator, if reached.
    tail: Option<usize>,
    batches: u64,
    pages: u64,
    verify: bool,
    negative: Vec<(usize, i32)>,
    /// The -2 chunk's vCPU count (popcount of the map), if seen.
    vcpus_from_map: Option<u32>,
    /// Why the walk stopped early.
    failure: Option<String>,
    /// True if the walk ran off the end of the input (not a contradiction).
    ran_out: bool,
    /// Offset of the item the walk stopped at (its error, or the item that
    /// ran off the end); the tail's offset when it got there.
    stopped_at: usize,
    /// Pfn words with bits above 32 set (impossible in every legacy era).
    wide_pfns: u64,
    /// Offset of the first batch with such a pfn word.
    first_wide: Option<usize>,
}

fn rd_word(d: &[u8], at: usize, w: WordSize) -> Option<u64> {
    d.get(at..at.checked_add(w.bytes())?).map(|b| w.read(b))
}

/// `a + b` for offsets; `None` (past every end) on overflow.
fn add(a: usize, b: usize) -> Option<usize> {
    a.checked_add(b)
}

/// `a * b` for sizes; `None` (past every end) on overflow.
fn mul(a: usize, b: usize) -> Option<usize> {
    a.checked_mul(b)
}

/// A length read from the input as a `usize` (`None` if it cannot be one).
fn len_of(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}

/// Payload bytes after the i32 of a legacy negative chunk, where fixed.
/// `None`: the input ends before the payload's length is known, or the
/// length is past any possible end.
fn chunk_payload(
    d: &[u8],
    at: usize,
    id: i32,
    w: WordSize,
) -> Option<Result<(usize, Option<u32>), String>> {
    Some(Ok(match id {
        -2 => {
            let max_id = le::<u32>(d, at)?;
            if max_id > 4095 {
                return Some(Err(format!("VCPU_INFO max_vcpu_id {max_id} > 4095")));
            }
            // max_id ≤ 4095: at most 64 words, no overflow below.
            let words = len_of(u64::from(max_id / 64))?.checked_add(1)?;
            let mut online = 0u32;
            let map = add(at, 4)?;
            for k in 0..words {
                let bits = le::<u64>(d, add(map, mul(8, k)?)?)?.count_ones();
                online = online.checked_add(bits)?;
            }
            (add(4, mul(8, words)?)?, Some(online))
        }
        -3 | -4 | -8 | -10 | -11 | -14 | -15 | -16 | -17 | -19 | -20 => (12, None),
        -7 => (20, None),
        -9 | -13 => (0, None),
        -12 => (add(w.bytes(), len_of(rd_word(d, at, w)?)?)?, None),
        -18 => (add(4, len_of(u64::from(le::<u32>(d, at)?))?)?, None),
        _ => return Some(Err(format!("chunk type {id} has no known fixed layout"))),
    }))
}

/// Walk batches from `start` under word size `w`, skipping page data.
fn walk(d: &[u8], start: usize, w: WordSize) -> Walk {
    let mut k = Walk::default();
    let mut at = start;
    loop {
        k.stopped_at = at;
        let Some(count) = le::<u32>(d, at).map(|c| c as i32) else {
            k.ran_out = true;
            return k;
        };
        let here = at;
        // `rd_u32` succeeded, so `here + 4` is within the input.
        let Some(next) = add(here, 4) else {
            k.ran_out = true;
            return k;
        };
        at = next;
        match count {
            0 => {
                k.tail = Some(at);
                k.stopped_at = at;
                return k;
            }
            -1 => k.verify = true,
            c if c < -1 => {
                match chunk_payload(d, at, c, w) {
                    None => {
                        k.negative.push((here, c));
                        k.ran_out = true;
                        return k;
                    }
                    Some(Err(why)) => {
                        k.failure = Some(format!("at byte {here}: {why}"));
                        return k;
                    }
                    Some(Ok((len, map))) => {
                        // Only chunks that parse are evidence of an era:
                        // damage is not a Xen 3.1 chunk.
                        k.negative.push((here, c));
                        if map.is_some() {
                            k.vcpus_from_map = map;
                        }
                        // A length past any end stops the walk like a
                        // truncation: the next read finds no bytes.
                        match add(at, len) {
                            Some(next) if next <= d.len() => at = next,
                            _ => {
                                k.ran_out = true;
                                return k;
                            }
                        }
                    }
                }
            }
            c if c.unsigned_abs() as usize > MAX_BATCH => {
                k.failure = Some(format!("at byte {here}: batch count {c} > {MAX_BATCH}"));
                return k;
            }
            c => {
                // 1 ≤ c ≤ MAX_BATCH here.
                let n = c.unsigned_abs() as usize;
                let mut data = 0usize;
                let mut wide = false;
                for i in 0..n {
                    let Some(p) = mul(i, w.bytes())
                        .and_then(|o| add(at, o))
                        .and_then(|o| rd_word(d, o, w))
                    else {
                        k.ran_out = true;
                        return k;
                    };
                    if p >> 32 != 0 {
                        k.wide_pfns = k.wide_pfns.saturating_add(1);
                        wide = true;
                    }
                    if p & LTAB_MASK == 0 {
                        data = data.saturating_add(1);
                    }
                }
                if wide && k.first_wide.is_none() {
                    k.first_wide = Some(here);
                }
                let end = mul(n, w.bytes())
                    .and_then(|pfns| Some((pfns, mul(data, PAGE_SIZE)?)))
                    .and_then(|(pfns, pages)| add(add(at, pfns)?, pages));
                match end {
                    Some(end) if end <= d.len() => at = end,
                    _ => {
                        k.ran_out = true;
                        return k;
                    }
                }
                k.batches = k.batches.saturating_add(1);
                k.pages = k.pages.saturating_add(data as u64);
            }
        }
    }
}

/// The HVM blob starting at `at` (`u32 len` + blob): its end if it looks like
/// one (HEADER first with the magic), and the first CPU record's length.
fn hvm_blob_at(d: &[u8], at: usize) -> Option<(usize, Option<u32>)> {
    let len = len_of(u64::from(le::<u32>(d, at)?))?;
    let body = add(at, 4)?;
    let end = add(body, len)?;
    let blob = d.get(body..end)?;
    let code = le::<u16>(blob, 0)?;
    let hlen = le::<u32>(blob, 4)?;
    if code != 1 || !(hlen == 20 || hlen == 24) || le::<u32>(blob, 8)? != HVM_FILE_MAGIC {
        return None;
    }
    // Find the first CPU record (typecode 2) for era evidence.
    let mut p = 0usize;
    let mut cpu = None;
    while let Some(h) = blob.get(p..add(p, 8)?) {
        let t = le::<u16>(h, 0)?;
        let l = le::<u32>(h, 4)?;
        if t == 2 {
            cpu = Some(l);
            break;
        }
        if t == 0 {
            break;
        }
        p = add(add(p, 8)?, len_of(u64::from(l))?)?;
    }
    Some((end, cpu))
}

/// vCPU records `{u32 size, ctxt}` × n at `at`: their end, if every size is a
/// known `vcpu_guest_context` size.
fn vcpus_at(d: &[u8], at: usize) -> Option<(usize, u32, u32)> {
    let n = le::<u32>(d, at)?;
    if n == 0 || n > 4096 {
        return None;
    }
    let mut p = add(at, 4)?;
    let mut size0 = 0;
    for i in 0..n {
        let s = le::<u32>(d, p)?;
        if s != 5168 && s != 2800 {
            return None;
        }
        if i == 0 {
            size0 = s;
        }
        p = add(add(p, 4)?, len_of(u64::from(s))?)?;
        if p > d.len() {
            return None;
        }
    }
    Some((p, n, size0))
}

/// What follows the stream: nothing, the xend qemu record, or libxl's.
fn after_stream(d: &[u8], at: usize) -> Option<&'static str> {
    let rest = d.get(at..)?;
    if rest.is_empty() {
        Some("end of input")
    } else if rest.starts_with(QEMU_SIGNATURE) {
        Some("QemuDeviceModelRecord")
    } else if rest.starts_with(DM_RECORD_0002) {
        Some("DeviceModelRecord0002")
    } else {
        None
    }
}

fn cpu_era(len: Option<u32>) -> String {
    match len {
        Some(320) => "first CPU record is 320 bytes (seed era, before 833623e78a)".into(),
        Some(1008) => "first CPU record is 1008 bytes (mid-April 2007)".into(),
        Some(1016) => "first CPU record is 1016 bytes (Xen 3.1 – 3.4)".into(),
        Some(1024) => "first CPU record is 1024 bytes (Xen 4.0 – 4.6)".into(),
        Some(1032) => "first CPU record is 1032 bytes (Xen ≥ 4.7)".into(),
        Some(n) => format!("first CPU record is {n} bytes (no known era)"),
        None => "the blob has no CPU record".into(),
    }
}

/// Classify what follows the `0` terminator at `t` (the offset after it).
fn classify_tail(
    d: &[u8],
    t: usize,
    w: WordSize,
    k: &Walk,
    ev: &mut Vec<String>,
) -> Option<Dialect> {
    let term = t.saturating_sub(4);
    // Seed / Mar 2007: vCPU records then the blob.
    if let Some((p, n, size)) = vcpus_at(d, t) {
        if let Some((end, cpu)) = hvm_blob_at(d, p) {
            ev.push(format!(
                "after the terminator at byte {term}: nr_vcpus {n}, vcpu record size {size} ({}), then the HVM blob at byte {p}",
                if size == vcpu_context_size(w) { "matches the word size" } else { "does NOT match the word size" }
            ));
            ev.push(cpu_era(cpu));
            if let Some(what) = after_stream(d, end) {
                ev.push(format!("the stream ends at byte {end}, followed by {what}"));
                return Some(Dialect::Seed);
            }
            if let Some(what) = add(end, 4).and_then(|e| after_stream(d, e)) {
                ev.push(format!(
                    "4 bytes (u32 shared_info_frame {:#x}) follow the blob at byte {end}, then {what}",
                    le::<u32>(d, end)?
                ));
                return Some(Dialect::Mar2007);
            }
            ev.push(format!(
                "the stream ends at byte {end}; unrecognised bytes follow"
            ));
            return Some(Dialect::Seed);
        }
    }
    // Jan 2007: the blob, then the vCPU records.
    if let Some((p, cpu)) = hvm_blob_at(d, t) {
        if let Some((_, n, _)) = vcpus_at(d, p) {
            ev.push(format!(
                "after the terminator: the HVM blob at byte {t}, then {n} vcpu records (Jan–Mar 2007 order)"
            ));
            ev.push(cpu_era(cpu));
            return Some(Dialect::Jan2007);
        }
        // Xen 3.1 with no magic pfns does not exist; fall through.
    }
    // Three u64 magic pfns.
    let magic: Option<[u64; 3]> = (|| {
        Some([
            le::<u64>(d, t)?,
            le::<u64>(d, add(t, 8)?)?,
            le::<u64>(d, add(t, 16)?)?,
        ])
    })();
    if let Some(m) = magic {
        if m.iter().all(|&p| p < (1 << 40)) {
            let p = add(t, 24)?;
            if let Some((_, cpu)) = hvm_blob_at(d, p) {
                ev.push(format!(
                    "after the terminator: magic pfns ioreq {:#x}, bufioreq {:#x}, store {:#x}, then the HVM blob at byte {p}",
                    m[0], m[1], m[2]
                ));
                ev.push(cpu_era(cpu));
                return Some(Dialect::Legacy);
            }
            if let Some((p2, n, _)) = vcpus_at(d, p) {
                if hvm_blob_at(d, p2).is_some() {
                    ev.push(format!("after the terminator: three u64 magic pfns, then {n} length-prefixed vcpu records"));
                    return Some(Dialect::Apr2007MagicPfns);
                }
            }
            if let Some(n) = k.vcpus_from_map {
                let size = vcpu_context_size(w) as usize;
                let p2 = add(p, mul(len_of(u64::from(n))?, size)?)?;
                if hvm_blob_at(d, p2).is_some() {
                    ev.push(format!(
                        "after the terminator: magic pfns, then {n} unprefixed {size}-byte vcpu contexts (from the -2 chunk's map)"
                    ));
                    return Some(Dialect::Apr2007VcpuMap);
                }
            }
        }
    }
    None
}

/// One hypothesis's reading of the input.
struct Reading {
    /// Its verdict, evidence included.
    detection: Detection,
    /// Tie-breaking score among readings of the same standing.
    score: i32,
    /// Bytes of input the reading explains before its first contradiction
    /// (0 for an implausible reading).
    explained: usize,
    /// One line for the other readings' evidence: where it stopped.
    outcome: String,
}

fn hypothesis_name(w: WordSize, leading: bool) -> String {
    format!(
        "{w} words {} leading max_pfn",
        if leading { "with" } else { "without" }
    )
}

/// Read `d` under one hypothesis.
fn read_as(d: &[u8], w: WordSize, leading: bool) -> Reading {
    let start = if leading { w.bytes() } else { 0 };
    let k = walk(d, start, w);
    let mut ev = Vec::new();
    let first = if leading { rd_word(d, 0, w) } else { None };
    if leading {
        if let Some(first) = first {
            ev.push(first_word_evidence(first, w));
        }
    } else {
        ev.push("the stream starts directly with a batch (no leading max_pfn)".into());
    }
    ev.push(format!(
        "{} word walk: {} batches, {} pages{}{}",
        w,
        k.batches,
        k.pages,
        if k.verify { ", a -1 verify marker" } else { "" },
        if k.negative.is_empty() {
            String::new()
        } else {
            format!(
                ", negative chunks {}",
                k.negative
                    .iter()
                    .map(|(o, c)| format!("{c}@{o}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    ));
    if k.wide_pfns > 0 {
        ev.push(format!(
            "{} pfn words have bits above 32 set (implausible)",
            k.wide_pfns
        ));
    }
    let mut explained = k.stopped_at;
    let (score, dialect, complete, mut outcome): (i32, _, _, _) = if let Some(t) = k.tail {
        match classify_tail(d, t, w, &k, &mut ev) {
            Some(dl) => {
                let dl = if !leading && dl == Dialect::Apr2007MagicPfns {
                    Dialect::Apr2007NoMaxPfn
                } else {
                    dl
                };
                let score = if leading { 100 } else { 90 };
                (score, dl, true, format!("a complete {dl} stream"))
            }
            None => {
                let term = t.saturating_sub(4);
                ev.push(format!(
                    "the bytes after the terminator at byte {term} match no known tail"
                ));
                (
                    10,
                    guess_from_chunks(&k, first),
                    false,
                    format!("terminator at byte {term}, then bytes that match no known tail"),
                )
            }
        }
    } else if let Some(f) = &k.failure {
        ev.push(format!("walk failed {f}"));
        (
            5,
            guess_from_chunks(&k, first),
            false,
            format!("failed {f}"),
        )
    } else {
        ev.push("the input ended before the terminator (prefix only)".into());
        let score = if leading { 40 } else { 30 };
        (
            score,
            guess_from_chunks(&k, first),
            false,
            format!("ran out of input in the item at byte {}", k.stopped_at),
        )
    };
    // Batches that parsed are evidence too: a damaged 64-bit image
    // still walks many batches before the damage, while the wrong
    // word size stumbles at once.
    let batches = i32::try_from(k.batches.min(20)).unwrap_or(20);
    let wide = i32::try_from(k.wide_pfns.min(10)).unwrap_or(10);
    let mut score = score
        .saturating_sub(wide.saturating_mul(5))
        .saturating_add(batches);
    if let Some(at) = k.first_wide {
        // Nothing from the first implausible pfn word on is explained.
        explained = explained.min(at);
        outcome.push_str(&format!("; pfn words with bits above 32 from byte {at}"));
    }
    if k.tail.is_some() && k.batches == 0 && k.negative.is_empty() && !complete {
        // An empty page section that leads nowhere explains nothing.
        score = score.saturating_sub(5);
        explained = 0;
        outcome.push_str(" (an empty page section: implausible)");
    }
    // A 64-bit max_pfn always has zero upper bytes (no 16 TiB guests);
    // in a 32-bit stream those bytes are the first chunk value.
    if leading && w == WordSize::W64 && le::<u64>(d, 0).is_some_and(|v| v >> 32 != 0) {
        ev.push("bytes 4–7 are not zero, impossible for a 64-bit max_pfn".into());
        score = score.saturating_sub(30);
        explained = 0;
        outcome.push_str(" (bytes 4–7 of max_pfn are not zero: implausible)");
    }
    Reading {
        detection: Detection {
            dialect,
            word: w,
            evidence: ev,
            complete,
        },
        score,
        explained,
        outcome,
    }
}

/// Detect the dialect of the libxc stream in `d` (which starts at the first
/// byte after any envelope). `d` may be a prefix of the stream (a pipe); the
/// result then says `complete: false` when the tail was not reached.
pub fn detect(d: &[u8]) -> Detection {
    if d.get(..8) == Some(&[0xFF; 8][..]) && d.get(8..12) == Some(&b"XENF"[..]) {
        return Detection {
            dialect: Dialect::V2,
            word: WordSize::W64,
            evidence: vec![
                "bytes 0–11: marker 0xFFFFFFFFFFFFFFFF and \"XENF\" (v2 image header)".into(),
            ],
            complete: true,
        };
    }
    let mut readings = Vec::with_capacity(4);
    for w in [WordSize::W64, WordSize::W32] {
        for leading in [true, false] {
            readings.push((hypothesis_name(w, leading), read_as(d, w, leading)));
        }
    }
    // A reading that reaches a known tail wins on its score. Otherwise
    // (a damaged or truncated image) the one that explains the most bytes
    // before its first contradiction wins, the score breaking ties; the
    // first of equals (64-bit, leading max_pfn) is kept.
    let rank = |r: &Reading| {
        if r.detection.complete {
            (1u8, usize::MAX, r.score)
        } else {
            (0u8, r.explained, r.score)
        }
    };
    let mut best = 0usize;
    for (i, (_, r)) in readings.iter().enumerate() {
        if rank(r) > rank(&readings[best].1) {
            best = i;
        }
    }
    if readings[best].1.detection.complete {
        return readings.swap_remove(best).1.detection;
    }
    let others: Vec<String> = readings
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, (name, r))| format!("{name}: {}", r.outcome))
        .collect();
    let (name, chosen) = readings.swap_remove(best);
    let mut det = chosen.detection;
    det.evidence.push(format!(
        "no reading reaches a known tail; {name} explains the most: {} bytes, then {}",
        chosen.explained, chosen.outcome
    ));
    for o in others {
        det.evidence.push(format!("rejected: {o}"));
    }
    det
}

/// The dialect of a reading that reached no known tail. Only the legacy
/// writers emit chunks other than -1 (the Apr 5–11 2007 streams also had
/// -2, but their tail decides that case); but a leading word that is an
/// inclusive max pfn (`…FF`) is the seed's, whose damaged count may look
/// like a chunk. Xen 3.1–4.5 wrote a page count (p2m_size) there.
fn guess_from_chunks(k: &Walk, first: Option<u64>) -> Dialect {
    if k.negative.is_empty() || first.is_some_and(|v| v & 0xFF == 0xFF) {
        Dialect::Seed
    } else {
        Dialect::Legacy
    }
}

fn first_word_evidence(v: u64, w: WordSize) -> String {
    let kind = if v & 0xFF == 0xFF {
        "an inclusive max pfn (seed-era max_pfn)"
    } else if v & 0xFF == 0 {
        "a page count (p2m_size of Xen ≥ 3.1)"
    } else {
        "neither a round count nor an inclusive max"
    };
    format!(
        "bytes 0–{}: first word {v:#x} looks like {kind}",
        w.bytes().saturating_sub(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pfn::PfnEntry;
    use crate::stream::Writer;

    fn blob() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&24u32.to_le_bytes());
        b.extend_from_slice(&HVM_FILE_MAGIC.to_le_bytes());
        b.extend_from_slice(&[0u8; 20]);
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&320u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 320]);
        b.extend_from_slice(&[0u8; 8]);
        b
    }

    fn seed(word: WordSize) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), word);
        w.max_pfn(0x1FFFF).unwrap();
        let page = vec![0u8; PAGE_SIZE];
        w.batch(&[PfnEntry::page(1), PfnEntry::page(2)], &[&page, &page])
            .unwrap();
        w.end().unwrap();
        w.vcpu_count(1).unwrap();
        w.vcpu(&vec![0u8; vcpu_context_size(word) as usize])
            .unwrap();
        w.hvm_blob(&blob()).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn seed_both_words() {
        for word in [WordSize::W64, WordSize::W32] {
            let d = detect(&seed(word));
            assert_eq!(
                (d.dialect, d.word, d.complete),
                (Dialect::Seed, word, true),
                "{d:#?}"
            );
            assert!(d.evidence.iter().any(|e| e.contains("320 bytes")), "{d:#?}");
        }
    }

    #[test]
    fn mar2007_trailing_frame() {
        let mut img = seed(WordSize::W64);
        img.extend_from_slice(&0x1234u32.to_le_bytes());
        img.extend_from_slice(QEMU_SIGNATURE);
        let d = detect(&img);
        assert_eq!(d.dialect, Dialect::Mar2007, "{d:#?}");
    }

    #[test]
    fn legacy_with_magic_pfns_and_chunks() {
        let mut img = Vec::new();
        img.extend_from_slice(&0x20000u64.to_le_bytes());
        // -2 VCPU_INFO: max id 0, map 1
        img.extend_from_slice(&(-2i32).to_le_bytes());
        img.extend_from_slice(&0u32.to_le_bytes());
        img.extend_from_slice(&1u64.to_le_bytes());
        // a batch of one page
        img.extend_from_slice(&1u32.to_le_bytes());
        img.extend_from_slice(&5u64.to_le_bytes());
        img.extend_from_slice(&[0u8; PAGE_SIZE]);
        // -7 TSC_INFO
        img.extend_from_slice(&(-7i32).to_le_bytes());
        img.extend_from_slice(&[0u8; 20]);
        img.extend_from_slice(&0u32.to_le_bytes());
        for p in [0x1FFFFu64, 0x1FFFD, 0x1FFFE] {
            img.extend_from_slice(&p.to_le_bytes());
        }
        let b = blob();
        img.extend_from_slice(&(b.len() as u32).to_le_bytes());
        img.extend_from_slice(&b);
        let d = detect(&img);
        assert_eq!(
            (d.dialect, d.word),
            (Dialect::Legacy, WordSize::W64),
            "{d:#?}"
        );
    }

    #[test]
    fn prefix_of_a_seed_stream_is_incomplete_but_right_word() {
        let img = seed(WordSize::W32);
        let d = detect(&img[..100]);
        assert!(!d.complete);
        assert_eq!(d.word, WordSize::W32, "{d:#?}");
    }

    #[test]
    fn v2_header() {
        let mut img = u64::MAX.to_be_bytes().to_vec();
        img.extend_from_slice(b"XENF");
        assert_eq!(detect(&img).dialect, Dialect::V2);
    }

    /// Issue 11 item 1: a -12 chunk whose length wraps the offset back to
    /// the start looped forever (release) or overflowed (debug).
    #[test]
    fn wrapping_chunk_length_ends_the_walk() {
        let d = b"\xf4\xff\xff\xff\xf4\xff\xff\xff\xff\xff\xff\xff";
        let det = detect(d);
        assert!(!det.complete, "{det:#?}");
        for w in [WordSize::W64, WordSize::W32] {
            for start in [0, w.bytes()] {
                let k = walk(d, start, w);
                assert!(k.tail.is_none() && k.negative.len() <= 1, "{k:?}");
            }
        }
    }

    /// Read with 32-bit words and max_pfn, a 64-bit stream's max_pfn upper
    /// half is a `0` terminator at byte 4: an empty page section that
    /// leads nowhere explains nothing, so it cannot outrank (or tie) a
    /// 64-bit reading that fails at its first batch.
    #[test]
    fn an_empty_page_section_that_leads_nowhere_explains_nothing() {
        let mut img = seed(WordSize::W64);
        img[8..12].copy_from_slice(&1025u32.to_le_bytes());
        let r = read_as(&img, WordSize::W32, true);
        assert_eq!(r.explained, 0, "{}", r.outcome);
        assert!(r.outcome.contains("implausible"), "{}", r.outcome);
        let r64 = read_as(&img, WordSize::W64, true);
        assert_eq!(r64.explained, 8, "{}", r64.outcome);
        let d = detect(&img);
        assert_eq!(d.word, WordSize::W64, "{d:#?}");
        assert!(
            d.evidence
                .iter()
                .any(|e| e.contains("64-bit words with leading max_pfn explains the most: 8 bytes")),
            "{d:#?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..64 {
            let g: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = detect(&g);
        }
    }
}

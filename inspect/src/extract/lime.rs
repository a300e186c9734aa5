//! `--lime`: the LiME format (Linux Memory Extractor): for each run of
//! present pages a 32-byte range header, then the run's bytes. The header
//! (LiME's `lime_mem_range_header`, packed, little-endian):
//!
//! | offset | field      | value                               |
//! |--------|------------|-------------------------------------|
//! | 0      | `magic`    | u32 `0x4C694D45` ("EMiL" on disk)   |
//! | 4      | `version`  | u32 1                               |
//! | 8      | `s_addr`   | u64 first physical address          |
//! | 16     | `e_addr`   | u64 last physical address, inclusive|
//! | 24     | `reserved` | 8 zero bytes                        |
//!
//! (docs/extract.md cites the source.)

use binrw::BinWrite;
use hvm_format::PAGE_SIZE;

use super::raw::address;
use super::{Failure, Gather, Memory, Sink};

/// LiME's magic.
pub const LIME_MAGIC: u32 = 0x4C69_4D45;
/// The format version every reader knows.
pub const LIME_VERSION: u32 = 1;

/// `lime_mem_range_header`.
#[derive(BinWrite)]
#[bw(little)]
struct RangeHeader {
    magic: u32,
    version: u32,
    s_addr: u64,
    e_addr: u64,
    reserved: [u8; 8],
}

/// Size of a range header.
pub const HEADER_LEN: u64 = 32;

/// Write every run with its header; the file's length.
pub(crate) fn write<S: Sink>(m: &Memory<'_>, out: &mut S) -> Result<u64, Failure> {
    let mut g = Gather::new(out, 0);
    let mut at = 0u64;
    let mut rest = m.pages;
    for &(first, n) in m.runs {
        let (run, after) = rest.split_at((n as usize).min(rest.len()));
        rest = after;
        let (Some(a), Some(z)) = (run.first(), run.last()) else {
            continue;
        };
        debug_assert_eq!(a.pfn, first);
        // Both are real pfns' addresses; the last byte of the last page
        // fits since an address is at most 2^64 - 4096.
        let s_addr = address(a.pfn, a.offset)?;
        let e_addr = address(z.pfn, z.offset)? + (PAGE_SIZE as u64 - 1);
        let mut h = std::io::Cursor::new(Vec::with_capacity(HEADER_LEN as usize));
        RangeHeader {
            magic: LIME_MAGIC,
            version: LIME_VERSION,
            s_addr,
            e_addr,
            reserved: [0; 8],
        }
        .write(&mut h)
        .map_err(|e| Failure::Write(std::io::Error::other(e.to_string())))?;
        g.put(at, h.get_ref())?;
        at += HEADER_LEN;
        for c in run {
            g.put(at, crate::report::page_of(m.data, c)?)?;
            at += PAGE_SIZE as u64;
        }
    }
    g.finish()?;
    Ok(at)
}

//! Page frame numbers, the pfn words of a batch and the constants of the
//! guest physical layout that every dialect shares.

use crate::bytes::le;
use std::fmt;

/// Size of a guest page in every Xen dialect (PAGE_SHIFT 12).
pub const PAGE_SIZE: usize = 4096;
/// `MAX_BATCH_SIZE` of `xg_save_restore.h`: at most this many pfns a batch.
pub const MAX_BATCH: usize = 1024;
/// `XEN_DOMCTL_PFINFO_LTAB_MASK`: the type nibble in bits 28–31 of the low
/// 32 bits of a pfn word.
pub(crate) const LTAB_MASK: u64 = 0xF000_0000;
/// `XEN_DOMCTL_PFINFO_XTAB`: a page the saver could not map.
pub const XTAB: u64 = 0xF000_0000;
/// First pfn of the VGA hole (640 KiB), never populated in an HVM guest.
pub const VGA_HOLE_START: u64 = 0xA0;
/// One past the last pfn of the VGA hole (768 KiB).
pub const VGA_HOLE_END: u64 = 0xC0;
/// First pfn of the MMIO hole below 4 GiB (`HVM_BELOW_4G_RAM_END`).
pub const MMIO_HOLE_START: u64 = 0xF0000;
/// One past the last pfn of the MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x10_0000;
/// Pages in the MMIO hole (`HVM_BELOW_4G_MMIO_LENGTH` >> 12).
pub const MMIO_HOLE_PAGES: u64 = MMIO_HOLE_END - MMIO_HOLE_START;

/// The toolstack's C `unsigned long`: the width of `max_pfn` and of every
/// pfn word. The format carries no indicator; detection infers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WordSize {
    /// i386 toolstack: 4-byte words, 2800-byte vCPU contexts.
    #[serde(rename = "32")]
    W32,
    /// x86_64 toolstack: 8-byte words, 5168-byte vCPU contexts.
    #[serde(rename = "64")]
    W64,
}

impl WordSize {
    /// Width of one word in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            WordSize::W32 => 4,
            WordSize::W64 => 8,
        }
    }

    /// Width in bits, for display.
    pub const fn bits(self) -> u32 {
        match self {
            WordSize::W32 => 32,
            WordSize::W64 => 64,
        }
    }

    /// Largest value a word can hold.
    pub(crate) const fn max_value(self) -> u64 {
        match self {
            WordSize::W32 => u32::MAX as u64,
            WordSize::W64 => u64::MAX,
        }
    }

    /// Decode one little-endian word from the start of `b`, which callers
    /// cut to at least [`bytes`](Self::bytes) bytes (a shorter `b` reads
    /// as 0).
    #[inline]
    pub fn read(self, b: &[u8]) -> u64 {
        match self {
            WordSize::W32 => le::<u32>(b, 0).map_or(0, u64::from),
            WordSize::W64 => le::<u64>(b, 0).unwrap_or_default(),
        }
    }

    /// Append `v` as one little-endian word (truncated to the width).
    pub fn write(self, v: u64, out: &mut Vec<u8>) {
        match self {
            WordSize::W32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            WordSize::W64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

impl fmt::Display for WordSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

/// A guest page frame number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    /// True inside the VGA hole 0xA0..0xC0 that the seed restorer refuses.
    pub(crate) fn in_vga_hole(self) -> bool {
        (VGA_HOLE_START..VGA_HOLE_END).contains(&self.0)
    }

    /// True inside the MMIO hole below 4 GiB.
    pub fn in_mmio_hole(self) -> bool {
        (MMIO_HOLE_START..MMIO_HOLE_END).contains(&self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The type nibble of a pfn word (`XEN_DOMCTL_PFINFO_*` >> 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PfnType {
    /// Ordinary page (NOTAB): 4096 bytes of data follow.
    Normal,
    /// L1TAB..L4TAB (1..4): page-table pages; PV only, no data in the seed era.
    PageTable(u8),
    /// LPINTAB (8) or a pinned page-table type (9..0xC).
    Pinned(u8),
    /// BROKEN (0xD), later Xen only.
    Broken,
    /// XALLOC (0xE), later Xen only.
    XAlloc,
    /// XTAB (0xF): the page could not be mapped; no data.
    XTab,
    /// 5..7: no meaning in any era.
    Reserved(u8),
}

impl PfnType {
    /// Classify a type nibble (0..=15).
    pub fn from_nibble(n: u8) -> Self {
        match n {
            0 => PfnType::Normal,
            1..=4 => PfnType::PageTable(n),
            8..=0xC => PfnType::Pinned(n),
            0xD => PfnType::Broken,
            0xE => PfnType::XAlloc,
            0xF => PfnType::XTab,
            _ => PfnType::Reserved(n),
        }
    }

    /// The nibble value.
    pub fn nibble(self) -> u8 {
        match self {
            PfnType::Normal => 0,
            PfnType::PageTable(n) | PfnType::Pinned(n) | PfnType::Reserved(n) => n,
            PfnType::Broken => 0xD,
            PfnType::XAlloc => 0xE,
            PfnType::XTab => 0xF,
        }
    }
}

/// One word of a batch's pfn array, exactly as stored: the pfn in the low
/// bits, the type nibble in bits 28–31 (of the low 32 bits, for both word
/// sizes), anything else preserved for a byte-exact round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PfnEntry(pub u64);

impl PfnEntry {
    /// An entry for a page that carries data.
    pub fn page(pfn: u64) -> Self {
        PfnEntry(pfn)
    }

    /// An XTAB entry: the page could not be mapped, no data follows.
    pub fn xtab(pfn: u64) -> Self {
        PfnEntry(XTAB | (pfn & !LTAB_MASK))
    }

    /// The raw word.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The pfn with the type nibble removed (bits 28–31 cleared).
    pub fn pfn(self) -> Pfn {
        Pfn(self.0 & !LTAB_MASK)
    }

    /// The type nibble.
    pub fn kind(self) -> PfnType {
        PfnType::from_nibble(((self.0 & LTAB_MASK) >> 28) as u8)
    }

    /// The seed-era rule (saver and restorer test only `pfn & 0xF0000000`):
    /// data follows exactly when the type nibble is zero.
    #[inline]
    pub fn has_data(self) -> bool {
        self.0 & LTAB_MASK == 0
    }
}

impl fmt::Display for PfnEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            PfnType::Normal => write!(f, "{}", self.pfn()),
            k => write!(f, "{} ({:?})", self.pfn(), k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtab_entry_keeps_pfn_and_has_no_data() {
        let e = PfnEntry::xtab(0x1234);
        assert_eq!(e.raw(), 0xF000_1234);
        assert_eq!(e.pfn(), Pfn(0x1234));
        assert_eq!(e.kind(), PfnType::XTab);
        assert!(!e.has_data());
        assert!(PfnEntry::page(0x1234).has_data());
    }

    #[test]
    fn type_nibble_is_in_low_word_even_for_64_bit() {
        // High bits are part of the pfn on a 64-bit toolstack.
        let e = PfnEntry(0xF000_0000_0000_0001);
        assert!(e.has_data());
        assert_eq!(e.pfn(), Pfn(0xF000_0000_0000_0001));
    }

    #[test]
    fn word_round_trip() {
        let mut v = Vec::new();
        WordSize::W32.write(0xdead_beef, &mut v);
        WordSize::W64.write(0x1_0000_0002, &mut v);
        assert_eq!(WordSize::W32.read(&v), 0xdead_beef);
        assert_eq!(WordSize::W64.read(&v[4..]), 0x1_0000_0002);
    }

    #[test]
    fn holes() {
        assert!(Pfn(0xA0).in_vga_hole() && Pfn(0xBF).in_vga_hole());
        assert!(!Pfn(0xC0).in_vga_hole() && !Pfn(0x9F).in_vga_hole());
        assert!(Pfn(0xF0000).in_mmio_hole() && !Pfn(0x100000).in_mmio_hole());
    }
}

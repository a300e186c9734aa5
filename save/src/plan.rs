//! The memory layout a save covers, derived exactly as `xc_hvm_save` @
//! `e2a44bc7a4` did (docs/format.md §3): `max_pfn` from the page count, the
//! holes and magic pages never sent, and the pseudo-random scan order.

use hvm_format::pfn::{
    MMIO_HOLE_END, MMIO_HOLE_PAGES, MMIO_HOLE_START, VGA_HOLE_END, VGA_HOLE_START,
};

/// Cirrus VRAM pages qemu-dm populates (`VGA_RAM_SIZE` 8 MiB): subtracted in
/// a live save, where qemu-dm still holds them.
pub const CIRRUS_VRAM_PAGES: u64 = 0x800;

/// The three pages `xc_hvm_build` placed at the top of RAM below 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MagicPfns {
    /// `HVM_PARAM_STORE_PFN`.
    pub store: u64,
    /// `HVM_PARAM_IOREQ_PFN`.
    pub ioreq: u64,
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub bufioreq: u64,
}

impl MagicPfns {
    /// Where `xc_hvm_build` of that era put them for a guest of `mem_mib`:
    /// ioreq is the last RAM page below 4 GiB, store and bufioreq below it.
    pub fn xc_hvm_build(mem_mib: u64) -> Self {
        let ioreq = (mem_mib << 20).min(MMIO_HOLE_START << 12) / 4096 - 1;
        MagicPfns {
            store: ioreq - 1,
            ioreq,
            bufioreq: ioreq - 2,
        }
    }

    fn contains(&self, n: u64) -> bool {
        n == self.store || n == self.ioreq || n == self.bufioreq
    }
}

/// The layout of one save.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// The first word of the stream: the highest pfn covered (inclusive).
    pub max_pfn: u64,
    /// `max_pfn + 1`: the size of every bitmap and of the scan.
    pub pfn_array_size: u64,
    /// Bits of `pfn_array_size - 1`: drives [`permute`].
    pub order_nr: u32,
    /// Pages never sent besides the holes.
    pub magic: MagicPfns,
}

impl Plan {
    /// The seed's derivation from `nr_pages` (pages the domain owns when it
    /// is computed: after the suspend of a non-live save, before the first
    /// pass of a live one).
    pub fn derive(nr_pages: u64, live: bool, stdvga: bool, magic: MagicPfns) -> Self {
        let mut max_pfn = nr_pages.saturating_sub(1);
        if live && !stdvga {
            max_pfn = max_pfn.saturating_sub(CIRRUS_VRAM_PAGES);
        }
        max_pfn += VGA_HOLE_END - VGA_HOLE_START;
        if max_pfn >= MMIO_HOLE_START {
            max_pfn += MMIO_HOLE_PAGES;
        }
        let pfn_array_size = max_pfn + 1;
        let order_nr = 64 - (pfn_array_size - 1).leading_zeros();
        Plan {
            max_pfn,
            pfn_array_size,
            order_nr,
            magic,
        }
    }

    /// True for pfns the seed never sends, not even as XTAB: the VGA hole,
    /// the MMIO hole below 4 GiB and the three magic pages.
    #[inline]
    pub fn is_skipped(&self, n: u64) -> bool {
        (VGA_HOLE_START..VGA_HOLE_END).contains(&n)
            || (MMIO_HOLE_START..MMIO_HOLE_END).contains(&n)
            || self.magic.contains(n)
    }

    /// The pfn scanned at step `i` of a pass.
    #[inline]
    pub fn permute(&self, i: u64) -> u64 {
        permute(i, self.pfn_array_size, self.order_nr)
    }

    /// All pfns in `0..pfn_array_size` that a full pass sends, ascending.
    pub fn present_pfns(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.pfn_array_size).filter(|&n| !self.is_skipped(n))
    }
}

/// The seed's scan order: rotate the `order_nr`-bit index left by 10 bits
/// (so neighbouring steps land 1024 pfns apart, sampling the dirty rate
/// across the whole guest) and repeat while the result is
/// beyond `nr`.
///
/// Below 1024 pfns the seed shifts by a negative amount (undefined in C);
/// there the order is the identity, as it is at exactly `order_nr` 10.
pub fn permute(i: u64, nr: u64, order_nr: u32) -> u64 {
    if order_nr <= 10 {
        return i;
    }
    let mask = (1u64 << order_nr) - 1;
    let mut i = i;
    // A rotation is a bijection on 0..2^order_nr and nr > 2^(order_nr-1),
    // so the cycle through i reaches a value below nr within 2^order_nr steps.
    loop {
        i = ((i >> (order_nr - 10)) | (i << 10)) & mask;
        if i < nr {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pfn_examples_from_format_notes() {
        // 512 MiB guest built by xc_hvm_build: mem*256 - 0x20 pages.
        let m = MagicPfns::xc_hvm_build(512);
        assert_eq!((m.ioreq, m.store, m.bufioreq), (0x1FFFF, 0x1FFFE, 0x1FFFD));
        let p = Plan::derive(512 * 256 - 0x20, false, false, m);
        assert_eq!(p.max_pfn, 0x1FFFF);
        assert_eq!(p.order_nr, 17);
        // 4096 MiB guest: above the hole shift.
        let p = Plan::derive(
            4096 * 256 - 0x20,
            false,
            false,
            MagicPfns::xc_hvm_build(4096),
        );
        assert_eq!(p.max_pfn, 0x10FFFF);
        // Live with Cirrus: qemu-dm's 0x800 VRAM pages are in nr_pages.
        let p = Plan::derive(512 * 256 - 0x20 + 0x800, true, false, m);
        assert_eq!(p.max_pfn, 0x1FFFF);
        let p = Plan::derive(512 * 256 - 0x20, true, true, m);
        assert_eq!(p.max_pfn, 0x1FFFF);
    }

    #[test]
    fn non_live_512m_sends_131037_pages() {
        // docs/format.md §2 example: 131 037 pages for a 512 MiB guest.
        let p = Plan::derive(512 * 256 - 0x20, false, false, MagicPfns::xc_hvm_build(512));
        assert_eq!(p.present_pfns().count(), 131_037);
    }

    #[test]
    fn permute_is_a_bijection_and_matches_rotation() {
        for nr in [1025u64, 4096, 5000, 0x20020, 131072] {
            let order = 64 - (nr - 1).leading_zeros();
            let mut seen = vec![false; nr as usize];
            for i in 0..nr {
                let n = permute(i, nr, order);
                assert!(n < nr);
                assert!(!seen[n as usize], "nr={nr} i={i} repeats {n}");
                seen[n as usize] = true;
            }
        }
        // order 17: a rotation left by 10, so step 1 lands on pfn 1024 and
        // step 0x80 (bit 7 rotated to bit 17 → bit 0) on pfn 1.
        assert_eq!(permute(1, 131072, 17), 1024);
        assert_eq!(permute(0x80, 131072, 17), 1);
    }
}

//! Guest-physical layout facts of the 2007 toolstack that the saver, the
//! inspector and the restore checker all need: the seed's `permute()` scan
//! order and the magic pfns `xc_hvm_build` placed.

use crate::pfn::{MMIO_HOLE_PAGES, MMIO_HOLE_START};

/// Bits needed for `size - 1` (the seed's `order_nr`).
pub fn order_nr(size: u64) -> u32 {
    if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros()
    }
}

/// The seed's `permute(i, nr, order_nr)`: a 10-bit rotation within
/// `order_nr` bits, repeated until the result is below `nr`.
///
/// For `order_nr < 10` the C code shifts by a negative count; x86 masks the
/// count to 5 bits, which makes every result 0. We reproduce that so the
/// scan order of tiny guests matches what the seed really did.
pub fn permute(i: u64, nr: u64, order: u32) -> u64 {
    let mask = if order >= 64 {
        u64::MAX
    } else {
        (1u64 << order) - 1
    };
    let mut i = i;
    loop {
        let shr = (order as i64 - 10).rem_euclid(32) as u32;
        // The C code works on 32-bit ints: shifts of i beyond 32 bits vanish.
        let x = i as u32;
        i = (((x >> shr) | (x << 10)) as u64) & mask;
        if i < nr {
            return i;
        }
    }
}

/// Inverse of [`permute`] for `order >= 10` (the only case where the
/// permutation is a bijection): the scan position of `pfn`.
pub(crate) fn unpermute(pfn: u64, nr: u64, order: u32) -> u64 {
    debug_assert!(order >= 10);
    let mask = (1u64 << order) - 1;
    let mut i = pfn;
    loop {
        // Rotate right by 10 within `order` bits undoes one step.
        i = ((i >> 10) | (i << (order - 10))) & mask;
        if i < nr {
            return i;
        }
    }
}

/// The magic pfns `xc_hvm_build` (@ `e2a44bc7a4`) gave a guest of `mem_mib`
/// MiB: the top three RAM pages below 4 GiB, `(ioreq, store, bufioreq)`.
/// `None` for a size no guest has (0 MiB, from a tiny `max_pfn` or an
/// xend config): the sizes come from the input, and must not wrap.
pub fn build_magic_pfns(mem_mib: u64) -> Option<(u64, u64, u64)> {
    let below_4g = mem_mib.saturating_mul(1 << 20).min(0xF000_0000);
    let ioreq = (below_4g >> 12).checked_sub(1)?;
    Some((ioreq, ioreq.checked_sub(1)?, ioreq.checked_sub(2)?))
}

/// What the seed restorer derives from xend's `max_nr_pfns` (`M`, the
/// configured RAM in pages; docs/format.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RestoreLayout {
    /// The configured maximum the restorer bounds pfns by (`pfn > M` fails).
    pub max_pfn: u64,
    /// `nr_pages` after the hole adjustments.
    pub nr_pages: u64,
    /// `(v_end >> 12) - 1` or 0xEFFFF: the ioreq page.
    pub shared_page_nr: u64,
}

impl RestoreLayout {
    /// Derive the layout from the configured RAM in pages.
    pub fn from_config_pages(m: u64) -> Self {
        let mut nr_pages = m;
        if nr_pages >= MMIO_HOLE_START {
            nr_pages -= MMIO_HOLE_PAGES;
        }
        nr_pages = nr_pages.saturating_sub(0x20);
        let v_end = (nr_pages + 0x20) << 12;
        let shared_page_nr = if v_end > 0xF000_0000 {
            0xEFFFF
        } else {
            (v_end >> 12).saturating_sub(1)
        };
        RestoreLayout {
            max_pfn: m,
            nr_pages,
            shared_page_nr,
        }
    }

    /// True if the restorer pre-populated `pfn` (so a page sent for it lands
    /// in guest memory rather than desynchronising the stream).
    pub fn populated(&self, pfn: u64) -> bool {
        let low = self.nr_pages.min(0xA0);
        if pfn < low {
            return true;
        }
        if self.nr_pages <= 0xC0 {
            return false;
        }
        let count = self.nr_pages - 0xA0;
        // Pages from 0xC0 upward; pfns >= 0xF0000 shifted up by the hole.
        let mut end = 0xC0 + count;
        if end > MMIO_HOLE_START {
            end += MMIO_HOLE_PAGES;
        }
        (0xC0..end).contains(&pfn)
            && !(MMIO_HOLE_START..MMIO_HOLE_START + MMIO_HOLE_PAGES).contains(&pfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection_and_unpermute_inverts_it() {
        for size in [1024u64, 1500, 4096, 0x20000, 0x2_0020] {
            let order = order_nr(size);
            let mut seen = vec![false; size as usize];
            for n in 0..size {
                let p = permute(n, size, order);
                assert!(!seen[p as usize], "size {size}: {p} twice");
                seen[p as usize] = true;
                assert_eq!(unpermute(p, size, order), n);
            }
        }
    }

    #[test]
    fn permute_matches_the_seed_formula_for_512_mib() {
        // 512 MiB: pfn_array_size 0x20000, order 17; N=1 → 1<<10.
        assert_eq!(order_nr(0x20000), 17);
        assert_eq!(permute(1, 0x20000, 17), 1 << 10);
        assert_eq!(permute(1 << 7, 0x20000, 17), 1);
    }

    #[test]
    fn tiny_guests_scan_pfn_zero_only() {
        assert!((0..256).all(|n| permute(n, 256, order_nr(256)) == 0));
    }

    #[test]
    fn magic_pfns_of_a_512_mib_guest() {
        assert_eq!(build_magic_pfns(512), Some((0x1FFFF, 0x1FFFE, 0x1FFFD)));
        assert_eq!(build_magic_pfns(8192), Some((0xEFFFF, 0xEFFFE, 0xEFFFD)));
        // Sizes from the input: no wrap below 1 MiB or above 2^44 MiB.
        assert_eq!(build_magic_pfns(0), None);
        assert_eq!(
            build_magic_pfns(u64::MAX),
            Some((0xEFFFF, 0xEFFFE, 0xEFFFD))
        );
    }

    #[test]
    fn restore_layout_512_mib() {
        let l = RestoreLayout::from_config_pages(0x20000);
        assert_eq!(l.nr_pages, 0x20000 - 0x20);
        assert_eq!(l.shared_page_nr, 0x1FFFF);
        assert!(l.populated(0x9F) && !l.populated(0xA0) && l.populated(0xC0));
        assert!(l.populated(0x1FFFF) && !l.populated(0x20000));
    }
}

//! `--raw`: guest physical memory as a sparse file, file offset = guest
//! physical address. A pfn with no page in the image is a hole: the
//! writer seeks over it and never writes zeros, and the file's length is
//! set (not written) to the end of the highest page, so its allocated
//! blocks are the present pages and the filesystem's metadata. Readers
//! that take a flat file (volatility3's raw layer, LibVMI's file mode, `dd
//! skip=`) see absent pages as zeros.

use hvm_format::{Context, Error, ErrorKind, PAGE_SIZE};

use super::{Failure, Gather, Memory, Sink};

/// Byte address of `pfn`'s page, or an error naming the pfn entry.
pub(crate) fn address(pfn: u64, entry_offset: u64) -> Result<u64, Error> {
    pfn.checked_mul(PAGE_SIZE as u64).ok_or_else(|| {
        Error::new(
            entry_offset,
            Context::root().index("page", pfn),
            ErrorKind::Invalid {
                expected: "a pfn whose byte address fits in 64 bits".into(),
                found: format!("pfn {pfn:#x}"),
            },
        )
    })
}

/// Write the pages at their addresses; the file's length.
pub(crate) fn write<S: Sink>(m: &Memory<'_>, out: &mut S) -> Result<u64, Failure> {
    let mut g = Gather::new(out, 0);
    let mut end = 0u64;
    m.for_each_page(|c, page| {
        let at = address(c.pfn, c.offset)?;
        g.put(at, page)?;
        // A page at the top of the address space ends at 2^64: the file
        // system refuses that length anyway; saturate rather than wrap.
        end = at.saturating_add(PAGE_SIZE as u64);
        Ok(())
    })?;
    let out = g.finish()?;
    out.set_len(end)?;
    Ok(end)
}

//! A big seed image for the benchmark and the memory measurement: a
//! non-live save of a guest with `mib` MiB of RAM (one pass in the seed's
//! permute order, VGA hole skipped, one vCPU, the seed's reset HVM blob),
//! streamed to a file in 1024-page batches so memory stays small. Shared by
//! `examples/mkimage.rs` and `benches/inspect.rs` through `#[path]`.

use std::io::{BufWriter, Write};

use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::layout::{order_nr, permute};
use hvm_format::stream::Writer;
use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};

/// Fill `page` with a pattern unique to `pfn` (no zero pages: nothing to
/// shortcut for a hash).
fn fill(page: &mut [u8], pfn: u64) {
    let mut x = pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for w in page.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// Write the image to `path`.
pub fn big(path: &str, mib: u64) -> anyhow::Result<()> {
    let size = mib * 256;
    let order = order_nr(size);
    let file = std::fs::File::create(path)?;
    let mut w = Writer::new(BufWriter::with_capacity(8 << 20, file), WordSize::W64);
    w.max_pfn(size - 1)?;
    let mut entries = Vec::with_capacity(MAX_BATCH);
    let mut buf = vec![0u8; MAX_BATCH * PAGE_SIZE];
    let flush = |w: &mut Writer<_>, entries: &mut Vec<PfnEntry>, buf: &[u8]| {
        let pages: Vec<&[u8]> = buf.chunks(PAGE_SIZE).take(entries.len()).collect();
        let r = w.batch(entries, &pages);
        entries.clear();
        r
    };
    for n in 0..size {
        let pfn = permute(n, size, order);
        if (0xA0..0xC0).contains(&pfn) {
            continue;
        }
        let k = entries.len();
        fill(&mut buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE], pfn);
        entries.push(PfnEntry::page(pfn));
        if entries.len() == MAX_BATCH {
            flush(&mut w, &mut entries, &buf)?;
        }
    }
    if !entries.is_empty() {
        flush(&mut w, &mut entries, &buf)?;
    }
    w.end()?;
    w.vcpu_count(1)?;
    let regs = VcpuRegisters {
        rip: 0x10_0000,
        rsp: 0x8_0000,
        rflags: 0x202,
        cr0: 0x8000_0011,
        cr3: 0x1000,
        cr4: 0x20,
        ..Default::default()
    };
    w.vcpu(VcpuContext::from_registers(WordSize::W64, &regs)?.as_bytes())?;
    let cpu = CpuSeed {
        eip: regs.rip,
        esp: regs.rsp,
        eflags: regs.rflags,
        cr0: regs.cr0,
        cr3: regs.cr3,
        cr4: regs.cr4,
        ..CpuSeed::power_on()
    };
    w.hvm_blob(&seed_reset_blob(0x00A2_0F12, &[cpu]))?;
    let mut out = w.finish()?;
    out.flush()?;
    Ok(())
}

//! Small seed-dialect images built with hvm-format's writer, for variants
//! the golden set does not cover (missed dirty pages, corrupted verify
//! copies, broken fields).
#![allow(dead_code)]

use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::stream::{vcpu_context_size, Writer};
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};

/// A page whose bytes depend on `(pfn, version)`.
pub fn page(pfn: u64, version: u8) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u64 ^ pfn.wrapping_mul(131) ^ (version as u64) << 4) as u8;
    }
    p
}

/// An image to build.
pub struct Img {
    pub word: WordSize,
    pub max_pfn: u64,
    /// Passes of `(pfn, page)`; `None` data means an XTAB entry.
    pub passes: Vec<Vec<(u64, Option<Vec<u8>>)>>,
    pub verify: Option<Vec<(u64, Vec<u8>)>>,
    pub vcpus: Vec<Vec<u8>>,
    pub blob: Vec<u8>,
}

impl Img {
    /// A 64-bit image of `mib` MiB whose one pass sends `pfns` (version 0).
    pub fn simple(mib: u64, pfns: impl IntoIterator<Item = u64>) -> Img {
        let word = WordSize::W64;
        Img {
            word,
            max_pfn: mib * 256 - 1,
            passes: vec![pfns.into_iter().map(|p| (p, Some(page(p, 0)))).collect()],
            verify: None,
            vcpus: vec![vec![0x5a; vcpu_context_size(word) as usize]],
            blob: seed_reset_blob(0x00A2_0F12, &[CpuSeed::power_on()]),
        }
    }

    /// Pfns a clean guest of `mib` MiB sends: RAM without the VGA hole and the
    /// three magic pages at the top.
    pub fn ram(mib: u64) -> impl Iterator<Item = u64> {
        let top = mib * 256;
        (0..top - 3).filter(|p| !(0xA0..0xC0).contains(p))
    }

    /// The memory a correct restore ends with: the last copy of each pfn.
    pub fn final_memory(&self) -> std::collections::BTreeMap<u64, Vec<u8>> {
        let mut m = std::collections::BTreeMap::new();
        for pass in &self.passes {
            for (pfn, d) in pass {
                if let Some(d) = d {
                    m.insert(*pfn, d.clone());
                }
            }
        }
        m
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, self.word);
        w.max_pfn(self.max_pfn).unwrap();
        let batch = |w: &mut Writer<&mut Vec<u8>>, items: &[(u64, Option<&[u8]>)]| {
            for chunk in items.chunks(MAX_BATCH) {
                let es: Vec<PfnEntry> = chunk
                    .iter()
                    .map(|(p, d)| {
                        if d.is_some() {
                            PfnEntry::page(*p)
                        } else {
                            PfnEntry::xtab(*p)
                        }
                    })
                    .collect();
                let ps: Vec<&[u8]> = chunk.iter().filter_map(|(_, d)| *d).collect();
                w.batch(&es, &ps).unwrap();
            }
        };
        for pass in &self.passes {
            let items: Vec<(u64, Option<&[u8]>)> =
                pass.iter().map(|(p, d)| (*p, d.as_deref())).collect();
            batch(&mut w, &items);
        }
        if let Some(v) = &self.verify {
            w.verify_marker().unwrap();
            let items: Vec<(u64, Option<&[u8]>)> =
                v.iter().map(|(p, d)| (*p, Some(d.as_slice()))).collect();
            batch(&mut w, &items);
        }
        w.end().unwrap();
        w.vcpu_count(self.vcpus.len() as u32).unwrap();
        for c in &self.vcpus {
            w.vcpu(c).unwrap();
        }
        w.hvm_blob(&self.blob).unwrap();
        w.finish().unwrap();
        out
    }
}

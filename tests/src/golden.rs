//! The golden-image generator.
//!
//! Each [`Spec`] describes a small image the way a save would have produced
//! it: word size, envelope, passes (in the seed's permute order), XTAB
//! entries, a verify resend, vCPUs and an HVM blob of either era. From a
//! spec we compute two things independently:
//!
//! * the image bytes, through `hvm_format`'s writers;
//! * the [`Facts`] a correct reader must decode, straight from the spec
//!   (never by reading the image back).
//!
//! The images and facts are committed under `tests/golden/`; tests compare
//! a fresh generation with the committed bytes (the writers must not drift)
//! and decode the committed bytes into the facts (the readers must agree).
//! They are rewritten only with `HVM_BLESS=1`.

use std::collections::BTreeMap;

use hvm_format::digest::hex;
use hvm_format::envelope::{qevm::QevmWriter, write_qemu_tail, write_xend_header, Sxp};
use hvm_format::hvm::{seed_reset_blob, BlobBuilder, CpuSeed};
use hvm_format::layout::{build_magic_pfns, order_nr, permute};
use hvm_format::stream::{vcpu_context_size, Writer};
use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Which HVM blob to put in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvmEra {
    /// The seed's record sizes (CPU 320, PIT 52, RTC 15, PCI_LINK 4, LAPIC 16).
    Seed,
    /// Today's Xen sizes (CPU 1032, LAPIC 32, RTC 24, PIT 56, MTRR, XSAVE, MSR).
    Current,
}

/// One pre-copy pass: which pfns it sends, as a filter over the scan order.
#[derive(Debug, Clone, Copy)]
pub struct PassSpec {
    /// Send pfn `p` when `p % modulus == residue`.
    pub modulus: u64,
    /// See `modulus`.
    pub residue: u64,
}

/// A golden image's description.
#[derive(Debug, Clone)]
pub struct Spec {
    /// File stem under `tests/golden/`.
    pub name: &'static str,
    /// Toolstack word size.
    pub word: WordSize,
    /// Guest RAM in MiB (sets max_pfn and the magic pfns).
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Passes in order; a later pass's copy of a pfn wins.
    pub passes: Vec<PassSpec>,
    /// Pfns that go out as XTAB entries in the first pass (unmappable).
    pub xtab: Vec<u64>,
    /// Write `-1` and a full resend of the final memory.
    pub verify: bool,
    /// Wrap in xend's envelope with a QEVM tail.
    pub xend: bool,
    /// HVM blob era.
    pub era: HvmEra,
    /// Seeds page contents.
    pub seed: u64,
}

/// What a correct reader decodes from the image: computed from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Toolstack word size, 32 or 64.
    pub word_bits: u32,
    /// Wrapped in xend's envelope.
    pub xend: bool,
    /// The stream's `max_pfn` header word.
    pub max_pfn: u64,
    /// Byte offset of the libxc stream inside the file (after any envelope).
    pub stream_offset: u64,
    /// Pages with data in each pass, in order (XTAB entries not counted).
    pub pages_per_pass: Vec<u64>,
    /// Sum of `pages_per_pass`, plus the verify pass.
    pub total_pages: u64,
    /// Page batches in the stream, verify pass included.
    pub batches: u64,
    /// Distinct pfns in the final memory.
    pub distinct_pfns: u64,
    /// XTAB (unmappable) entries.
    pub xtab_entries: u64,
    /// Pages in the verify pass, if there is one.
    pub verify_pages: Option<u64>,
    /// vCPU contexts in the stream.
    pub nr_vcpus: u32,
    /// Bytes of one vCPU context (5168 or 2800).
    pub vcpu_size: u32,
    /// Each vCPU's instruction pointer.
    pub vcpu_rips: Vec<u64>,
    /// SHA-256 of each vCPU context's bytes, hex.
    pub vcpu_digests: Vec<String>,
    /// `(name, instance, length)` of every HVM record, END included.
    pub hvm_records: Vec<(String, u16, u32)>,
    /// Length of the HVM context blob.
    pub hvm_blob_len: u32,
    /// Names of the QEVM tail's sections (xend images).
    pub qevm_sections: Vec<String>,
    /// The memory digest of the final memory, computed from its definition.
    pub memory_digest: String,
    /// Length of the whole file.
    pub file_len: u64,
}

/// A generated image with its facts.
#[derive(Debug, Clone)]
pub struct Golden {
    /// What the generator was asked for.
    pub spec: Spec,
    /// The image as the writers produce it.
    pub bytes: Vec<u8>,
    /// What a reader must decode from `bytes`.
    pub facts: Facts,
}

/// The committed golden set.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "seed64-nonlive",
            word: WordSize::W64,
            memory_mib: 8,
            vcpus: 1,
            passes: vec![PassSpec {
                modulus: 61,
                residue: 0,
            }],
            xtab: vec![],
            verify: false,
            xend: false,
            era: HvmEra::Seed,
            seed: 1,
        },
        Spec {
            name: "seed64-live-xend",
            word: WordSize::W64,
            memory_mib: 8,
            vcpus: 2,
            passes: vec![
                PassSpec {
                    modulus: 37,
                    residue: 1,
                },
                PassSpec {
                    modulus: 111,
                    residue: 38,
                },
                PassSpec {
                    modulus: 333,
                    residue: 75,
                },
            ],
            xtab: vec![0x300, 0x301],
            verify: false,
            xend: true,
            era: HvmEra::Seed,
            seed: 2,
        },
        Spec {
            name: "seed32-verify",
            word: WordSize::W32,
            memory_mib: 8,
            vcpus: 1,
            passes: vec![
                PassSpec {
                    modulus: 97,
                    residue: 3,
                },
                PassSpec {
                    modulus: 194,
                    residue: 3,
                },
            ],
            xtab: vec![0x7F0],
            verify: true,
            xend: false,
            era: HvmEra::Seed,
            seed: 3,
        },
        Spec {
            name: "seed64-current-hvm",
            word: WordSize::W64,
            memory_mib: 8,
            vcpus: 2,
            passes: vec![PassSpec {
                modulus: 128,
                residue: 7,
            }],
            xtab: vec![],
            verify: false,
            xend: true,
            era: HvmEra::Current,
            seed: 4,
        },
    ]
}

/// The page contents of `pfn` as sent in pass `pass`: a deterministic
/// pattern, with every fifth page all zero (zero pages are common).
pub fn page(seed: u64, pfn: u64, pass: usize) -> Vec<u8> {
    if pfn % 5 == 0 {
        return vec![0; PAGE_SIZE];
    }
    let mut x = seed ^ (pfn.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ ((pass as u64) << 56) | 1;
    let mut out = Vec::with_capacity(PAGE_SIZE);
    while out.len() < PAGE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The registers of vCPU `i` in a golden image (long mode, distinct values).
pub fn registers(i: u32) -> VcpuRegisters {
    let k = i as u64;
    VcpuRegisters {
        rax: 0x1111_0000 + k,
        rbx: 0x2222_0000 + k,
        rcx: 0x3333_0000 + k,
        rdx: 0x4444_0000 + k,
        rsi: 0x5555,
        rdi: 0x6666,
        rbp: 0x7000 + k,
        rsp: 0x8000 + 0x100 * k,
        rip: 0x0010_0000 + 0x40 * k,
        rflags: 0x202,
        cs: 0x10,
        ss: 0x18,
        ds: 0x18,
        es: 0x18,
        cr0: 0x8000_0011,
        cr3: 0x1000,
        cr4: 0x20,
        ..VcpuRegisters::default()
    }
}

fn cpu_record(i: u32) -> CpuSeed {
    let r = registers(i);
    CpuSeed {
        eip: r.rip,
        esp: r.rsp,
        eflags: r.rflags,
        cr0: r.cr0,
        cr3: r.cr3,
        cr4: r.cr4,
        cs_sel: 0x10,
        cs_base: 0,
        cs_limit: 0xFFFF_FFFF,
        cs_arbytes: 0xA09B,
        msr_efer: 0x500,
        ..CpuSeed::power_on()
    }
}

/// Deterministic filler for current-era record payloads.
fn filler(len: usize, tag: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect()
}

/// A blob with today's record sizes and a HEADER Xen would accept.
fn current_blob(vcpus: u32) -> Vec<u8> {
    let mut b = BlobBuilder::new();
    let mut header = Vec::new();
    header.extend_from_slice(&0x5438_1286u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&0x00A2_0F12u32.to_le_bytes());
    header.extend_from_slice(&2_000_000u32.to_le_bytes());
    b.push_raw(1, 0, &header);
    for v in 0..vcpus as u16 {
        b.push_raw(2, v, &filler(1032, 2));
        b.push_raw(5, v, &filler(32, 5));
        b.push_raw(6, v, &filler(1024, 6));
        b.push_raw(14, v, &filler(240, 14));
        // CPU_XSAVE: {xfeature_mask, xcr0, xcr0_accum} = x87|SSE, the
        // 512-byte legacy area, then the xsave header (xstate_bv 3).
        let mut xs = Vec::new();
        for v in [3u64, 3, 3] {
            xs.extend_from_slice(&v.to_le_bytes());
        }
        xs.extend_from_slice(&filler(512, 16));
        xs.extend_from_slice(&3u64.to_le_bytes());
        xs.extend_from_slice(&[0u8; 56]);
        b.push_raw(16, v, &xs);
        // CPU_MSR: count 1, pad, {index, rsvd, val}.
        let mut msr = Vec::new();
        msr.extend_from_slice(&1u32.to_le_bytes());
        msr.extend_from_slice(&0u32.to_le_bytes());
        msr.extend_from_slice(&0xC000_0103u32.to_le_bytes());
        msr.extend_from_slice(&0u32.to_le_bytes());
        msr.extend_from_slice(&7u64.to_le_bytes());
        b.push_raw(20, v, &msr);
    }
    b.push_raw(3, 0, &filler(8, 3));
    b.push_raw(3, 1, &filler(8, 4));
    b.push_raw(4, 0, &filler(400, 4));
    b.push_raw(7, 0, &filler(16, 7));
    b.push_raw(8, 0, &filler(8, 8));
    b.push_raw(9, 0, &filler(8, 9));
    b.push_raw(10, 0, &filler(56, 10));
    b.push_raw(11, 0, &filler(24, 11));
    b.push_raw(12, 0, &filler(1048, 12));
    b.push_raw(13, 0, &filler(8, 13));
    b.finish()
}

/// Record list of a blob, computed from the bytes' framing (used for the
/// facts; the framing is trivial and independent of hvm-format's parser).
fn records_of(blob: &[u8]) -> Vec<(String, u16, u32)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 8 <= blob.len() {
        let t = u16::from_le_bytes([blob[p], blob[p + 1]]);
        let inst = u16::from_le_bytes([blob[p + 2], blob[p + 3]]);
        let len = u32::from_le_bytes(blob[p + 4..p + 8].try_into().unwrap());
        let name = hvm_format::hvm::type_name(t).unwrap_or("UNKNOWN");
        out.push((name.to_string(), inst, len));
        p += 8 + len as usize;
        if t == 0 {
            break;
        }
    }
    out
}

/// Generate one image and its facts.
pub fn generate(spec: &Spec) -> Golden {
    let pages_total = spec.memory_mib * 256;
    let max_pfn = pages_total - 1;
    let size = max_pfn + 1;
    let order = order_nr(size);
    let (ioreq, store, bufioreq) =
        build_magic_pfns(spec.memory_mib).expect("golden guests have at least 1 MiB");
    let skip = |p: u64| (0xA0..0xC0).contains(&p) || p == ioreq || p == store || p == bufioreq;
    let scan: Vec<u64> = (0..size).map(|n| permute(n, size, order)).collect();

    let mut out = Vec::new();
    let mut qevm_sections = Vec::new();
    if spec.xend {
        let config = Sxp::list([
            Sxp::atom("domain"),
            Sxp::entry("domid", "7"),
            Sxp::entry("name", format!("golden-{}", spec.name)),
            Sxp::entry("memory", spec.memory_mib.to_string()),
            Sxp::entry("vcpus", spec.vcpus.to_string()),
            Sxp::list([
                Sxp::atom("image"),
                Sxp::list([Sxp::atom("hvm"), Sxp::entry("stdvga", "0")]),
            ]),
        ]);
        write_xend_header(&mut out, config.to_sxp_string().as_bytes()).unwrap();
    }
    let stream_offset = out.len() as u64;

    let mut final_mem: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut pages_per_pass = Vec::new();
    let mut batches = 0u64;
    let mut xtab_entries = 0u64;
    let mut verify_pages = None;
    {
        let mut w = Writer::new(&mut out, spec.word);
        w.max_pfn(max_pfn).unwrap();
        for (k, pass) in spec.passes.iter().enumerate() {
            let mut entries: Vec<(PfnEntry, Option<Vec<u8>>)> = Vec::new();
            for &p in &scan {
                if skip(p) {
                    continue;
                }
                if k == 0 && spec.xtab.contains(&p) {
                    entries.push((PfnEntry::xtab(p), None));
                } else if p % pass.modulus == pass.residue && !spec.xtab.contains(&p) {
                    let data = page(spec.seed, p, k);
                    final_mem.insert(p, data.clone());
                    entries.push((PfnEntry::page(p), Some(data)));
                }
            }
            pages_per_pass.push(entries.iter().filter(|e| e.1.is_some()).count() as u64);
            xtab_entries += entries.iter().filter(|e| e.1.is_none()).count() as u64;
            for chunk in entries.chunks(MAX_BATCH) {
                let es: Vec<PfnEntry> = chunk.iter().map(|e| e.0).collect();
                let ps: Vec<&[u8]> = chunk.iter().filter_map(|e| e.1.as_deref()).collect();
                w.batch(&es, &ps).unwrap();
                batches += 1;
            }
        }
        if spec.verify {
            w.verify_marker().unwrap();
            let resend: Vec<(u64, &Vec<u8>)> = scan
                .iter()
                .filter_map(|p| final_mem.get_key_value(p).map(|(k, v)| (*k, v)))
                .collect();
            for chunk in resend.chunks(MAX_BATCH) {
                let es: Vec<PfnEntry> = chunk.iter().map(|e| PfnEntry::page(e.0)).collect();
                let ps: Vec<&[u8]> = chunk.iter().map(|e| e.1.as_slice()).collect();
                w.batch(&es, &ps).unwrap();
                batches += 1;
            }
            verify_pages = Some(resend.len() as u64);
        }
        w.end().unwrap();
        w.vcpu_count(spec.vcpus).unwrap();
        for i in 0..spec.vcpus {
            let ctx = VcpuContext::from_registers(spec.word, &registers(i)).unwrap();
            w.vcpu(ctx.as_bytes()).unwrap();
        }
        let blob = match spec.era {
            HvmEra::Seed => seed_reset_blob(
                0x00A2_0F12,
                &(0..spec.vcpus).map(cpu_record).collect::<Vec<_>>(),
            ),
            HvmEra::Current => current_blob(spec.vcpus),
        };
        w.hvm_blob(&blob).unwrap();
        w.finish().unwrap();
    }
    if spec.xend {
        let mut q = QevmWriter::new(Vec::new()).unwrap();
        for (id, inst, ver, len) in [
            ("timer", 0u32, 1u32, 24usize),
            ("cpu", 0, 4, 96),
            ("cirrus_vga", 0, 2, 300),
        ] {
            q.section(id.as_bytes(), inst, ver, &filler(len, id.len() as u8))
                .unwrap();
            qevm_sections.push(id.to_string());
        }
        write_qemu_tail(&mut out, &q.finish().unwrap()).unwrap();
    }

    let blob = match spec.era {
        HvmEra::Seed => seed_reset_blob(
            0x00A2_0F12,
            &(0..spec.vcpus).map(cpu_record).collect::<Vec<_>>(),
        ),
        HvmEra::Current => current_blob(spec.vcpus),
    };
    let facts = Facts {
        word_bits: spec.word.bits(),
        xend: spec.xend,
        max_pfn,
        stream_offset,
        total_pages: pages_per_pass.iter().sum::<u64>() + verify_pages.unwrap_or(0),
        pages_per_pass,
        batches,
        distinct_pfns: final_mem.len() as u64,
        xtab_entries,
        verify_pages,
        nr_vcpus: spec.vcpus,
        vcpu_size: vcpu_context_size(spec.word),
        vcpu_rips: (0..spec.vcpus).map(|i| registers(i).rip).collect(),
        vcpu_digests: (0..spec.vcpus)
            .map(|i| {
                let ctx = VcpuContext::from_registers(spec.word, &registers(i)).unwrap();
                hex(&Sha256::digest(ctx.as_bytes()).into())
            })
            .collect(),
        hvm_records: records_of(&blob),
        hvm_blob_len: blob.len() as u32,
        qevm_sections,
        memory_digest: memory_digest_by_definition(&final_mem),
        file_len: out.len() as u64,
    };
    Golden {
        spec: spec.clone(),
        bytes: out,
        facts,
    }
}

/// The memory digest as `hvm_format::digest` defines it (SHA-256 over
/// `range index LE ‖ range digest` of each 2 MiB range holding pages, a
/// range digest being SHA-256 over `pfn LE ‖ page` in pfn order), computed
/// here with `sha2` directly: the facts must not come from the code the
/// readers' side of the test runs, or a bug there would cancel out.
pub(crate) fn memory_digest_by_definition(pages: &BTreeMap<u64, Vec<u8>>) -> String {
    let mut ranges: BTreeMap<u64, Sha256> = BTreeMap::new();
    for (pfn, data) in pages {
        let h = ranges.entry(pfn / 512).or_default();
        h.update(pfn.to_le_bytes());
        h.update(data);
    }
    let mut total = Sha256::new();
    for (r, h) in ranges {
        total.update(r.to_le_bytes());
        total.update(h.finalize());
    }
    hex(&total.finalize().into())
}

/// Directory of the committed golden files.
pub fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// True when the bless variable asks to rewrite committed outputs.
pub fn blessing() -> bool {
    std::env::var_os("HVM_BLESS").is_some_and(|v| v == "1")
}

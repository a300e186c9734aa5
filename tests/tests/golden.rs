//! Golden images: the writers must reproduce the committed bytes, and the
//! readers must decode the committed bytes into the facts the generator
//! computed from its spec. Rewrite them with `HVM_BLESS=1`.

use hvm_format::digest::{hex, vcpu_digest, DigestBuilder};
use hvm_format::hvm::HvmBlob;
use hvm_format::image::{open_read, open_slice, read_tail, slice_tail, OpenOptions, Tail};
use hvm_format::index::IndexBuilder;
use hvm_format::rules::{CheckOptions, StreamChecker};
use hvm_format::stream::Item;
use hvm_format::vcpu::VcpuContext;
use hvm_tests::golden::{blessing, generate, golden_dir, specs, Facts};

fn read_committed(name: &str, ext: &str) -> Vec<u8> {
    let p = golden_dir().join(format!("{name}.{ext}"));
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run with HVM_BLESS=1 to create it)", p.display()))
}

#[test]
fn generator_reproduces_committed_images() {
    std::fs::create_dir_all(golden_dir()).unwrap();
    for spec in specs() {
        let g = generate(&spec);
        let facts = serde_json::to_string_pretty(&g.facts).unwrap() + "\n";
        if blessing() {
            std::fs::write(golden_dir().join(format!("{}.img", spec.name)), &g.bytes).unwrap();
            std::fs::write(
                golden_dir().join(format!("{}.facts.json", spec.name)),
                &facts,
            )
            .unwrap();
            continue;
        }
        assert!(
            read_committed(spec.name, "img") == g.bytes,
            "{}: the writers no longer produce the committed bytes (HVM_BLESS=1 to accept)",
            spec.name
        );
        assert_eq!(
            String::from_utf8(read_committed(spec.name, "facts.json")).unwrap(),
            facts,
            "{}: facts drifted",
            spec.name
        );
    }
}

/// Decodes an image's items into facts with the readers (the other side of
/// the generator's computation), whichever reader yields them.
struct Decoder {
    f: Facts,
    index: IndexBuilder,
    pages: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl Decoder {
    fn new() -> Self {
        Decoder {
            f: Facts {
                word_bits: 0,
                xend: false,
                max_pfn: 0,
                stream_offset: 0,
                pages_per_pass: vec![],
                total_pages: 0,
                batches: 0,
                distinct_pfns: 0,
                xtab_entries: 0,
                verify_pages: None,
                nr_vcpus: 0,
                vcpu_size: 0,
                vcpu_rips: vec![],
                vcpu_digests: vec![],
                hvm_records: vec![],
                hvm_blob_len: 0,
                qevm_sections: vec![],
                memory_digest: String::new(),
                file_len: 0,
            },
            index: IndexBuilder::new(),
            pages: Default::default(),
        }
    }

    fn feed(&mut self, item: &Item<'_>) {
        let f = &mut self.f;
        self.index.item(item);
        match item {
            Item::MaxPfn { value, .. } => f.max_pfn = *value,
            Item::Batch(b) => {
                f.batches += 1;
                f.total_pages += b.page_count() as u64;
                f.xtab_entries += (b.count() - b.page_count()) as u64;
                if !b.verify {
                    for (e, data, _) in b.pages() {
                        self.pages.insert(e.pfn().0, data.to_vec());
                    }
                }
            }
            Item::VcpuCount { count, .. } => f.nr_vcpus = *count,
            Item::Vcpu(v) => {
                f.vcpu_size = v.bytes.len() as u32;
                let ctx = VcpuContext::parse(v.bytes).unwrap();
                // RIP where Xen's vcpu_guest_context has it (user_regs at
                // 520 or 516, rip at +128 or eip at +32), read without the
                // context code: a misplaced field in it would otherwise
                // cancel out between the writer and the parser.
                let raw = match v.bytes.len() {
                    5168 => u64::from_le_bytes(v.bytes[648..656].try_into().unwrap()),
                    2800 => u64::from(u32::from_le_bytes(v.bytes[548..552].try_into().unwrap())),
                    n => panic!("vCPU context of {n} bytes"),
                };
                assert_eq!(raw, ctx.rip(), "RIP at Xen's offset vs the parser's");
                f.vcpu_rips.push(ctx.rip());
                f.vcpu_digests.push(hex(&vcpu_digest(v.bytes)));
            }
            Item::HvmBlob(h) => {
                f.hvm_blob_len = h.bytes.len() as u32;
                let blob = HvmBlob::parse(h.bytes).unwrap();
                f.hvm_records = blob
                    .records
                    .iter()
                    .map(|r| (r.name().to_string(), r.instance, r.payload.len() as u32))
                    .collect();
            }
            _ => {}
        }
    }

    fn finish(self) -> Facts {
        let mut f = self.f;
        let idx = self.index.finish();
        f.pages_per_pass = idx.passes.iter().map(|p| p.pages).collect();
        f.verify_pages = idx.verify_pass.as_ref().map(|p| p.pages);
        f.distinct_pfns = idx.finals.len() as u64;
        let mut d = DigestBuilder::new();
        for (pfn, data) in &self.pages {
            d.page(*pfn, data);
        }
        f.memory_digest = hex(&d.finish().unwrap().total);
        f
    }
}

fn sections(t: &Tail) -> Vec<String> {
    match t {
        Tail::Qemu(q) => q.listing.sections.iter().map(|s| s.id_str()).collect(),
        _ => vec![],
    }
}

#[test]
fn committed_images_decode_to_their_facts_through_both_readers() {
    for spec in specs() {
        let bytes = read_committed(spec.name, "img");
        let want: Facts = serde_json::from_slice(&read_committed(spec.name, "facts.json")).unwrap();

        // The mmap path.
        let (info, mut r) = open_slice(&bytes, OpenOptions::default()).unwrap();
        let mut dec = Decoder::new();
        while let Some(item) = r.next().unwrap() {
            dec.feed(&item);
        }
        let mut got = dec.finish();
        got.word_bits = info.word().bits();
        got.xend = info.xend.is_some();
        got.stream_offset = info.stream_offset;
        got.qevm_sections = sections(&slice_tail(&info, &r).unwrap());
        got.file_len = bytes.len() as u64;
        assert_eq!(got, want, "{} (slice reader)", spec.name);
        assert!(
            info.detection.complete,
            "{}: {:?}",
            spec.name, info.detection
        );

        // The pipe path, decoded into the same facts; the items it yields,
        // written again, are byte-identical to the stream part of the file.
        let (info, mut r) = open_read(&bytes[..], OpenOptions::default()).unwrap();
        let mut dec = Decoder::new();
        let mut w = hvm_format::stream::Writer::new(Vec::new(), info.word());
        while let Some(item) = r.next().unwrap() {
            dec.feed(&item);
            w.item(&item).unwrap();
        }
        let rewritten = w.finish().unwrap();
        let mut got = dec.finish();
        got.word_bits = info.word().bits();
        got.xend = info.xend.is_some();
        got.stream_offset = info.stream_offset;
        got.qevm_sections = sections(&read_tail(&info, r).unwrap());
        got.file_len = bytes.len() as u64;
        assert_eq!(got, want, "{} (pipe reader)", spec.name);
        let start = info.stream_offset as usize;
        assert_eq!(
            &bytes[start..start + rewritten.len()],
            &rewritten[..],
            "{}",
            spec.name
        );
    }
}

#[test]
fn committed_images_pass_validation() {
    for spec in specs() {
        let bytes = read_committed(spec.name, "img");
        let (info, mut r) = open_slice(&bytes, OpenOptions::default()).unwrap();
        let mut c = StreamChecker::new(
            info.word(),
            CheckOptions {
                strict: true,
                ..Default::default()
            },
            info.config_memory_mib(),
        );
        while let Some(item) = r.next().unwrap() {
            c.item(&item);
        }
        c.tail(&slice_tail(&info, &r).unwrap());
        let v = c.finish();
        // Seed-era blobs load only on the seed's Xen, current ones only on
        // today's: the strict (seed) rules must reject exactly the latter.
        let current_era = spec.name.contains("current");
        if current_era {
            assert!(
                v.findings.iter().any(|f| f.rule == "seed.hvm.exact-length"),
                "{}: {:#?}",
                spec.name,
                v.findings
            );
            assert!(
                v.findings.iter().all(|f| f.rule.starts_with("seed.hvm.")),
                "{:#?}",
                v.findings
            );
        } else {
            assert!(!v.has_errors(), "{}: {:#?}", spec.name, v.findings);
        }
        assert_eq!(
            v.current_xen_loads(),
            current_era,
            "{}: {:#?}",
            spec.name,
            v.current_xen
        );
    }
}

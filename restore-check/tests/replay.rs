//! Library-level checks: golden images restore, broken variants fail with
//! the right rule, missed dirty pages and corrupted verify copies are named
//! by pfn.

mod common;

use common::{page, Img};
use hvm_format::digest::{hex, vcpu_digest, DigestBuilder, RANGE_PAGES};
use hvm_format::WordSize;
use hvm_restore_check::manifest::PfnDifference;
use hvm_restore_check::{check_read, check_slice, Checker, Manifest, Options};
use hvm_tests::golden::{generate, specs, HvmEra};

fn digest_opts() -> Options {
    Options {
        digest: true,
        ..Options::default()
    }
}

/// The manifest of the guest's true memory (`pages`), built here from the
/// digest definition, not from the replay.
fn manifest_of(
    max_pfn: u64,
    pages: &std::collections::BTreeMap<u64, Vec<u8>>,
    vcpus: &[Vec<u8>],
    blob: &[u8],
    with_pages: bool,
) -> Manifest {
    let mut d = DigestBuilder::new();
    for (pfn, p) in pages {
        d.page(*pfn, p);
    }
    let vc: Vec<&[u8]> = vcpus.iter().map(|v| v.as_slice()).collect();
    let m = Manifest::new(max_pfn, &d.finish().unwrap(), &vc, blob);
    if with_pages {
        m.with_page_digests(|pfn| pages.get(&pfn).map(|p| p.as_slice()))
    } else {
        m
    }
}

#[test]
fn golden_images_replay_to_their_facts() {
    for spec in specs() {
        let g = generate(&spec);
        let r = check_slice(&g.bytes, &digest_opts()).unwrap();
        let name = spec.name;
        assert_eq!(
            r.memory_sha256.as_deref(),
            Some(g.facts.memory_digest.as_str()),
            "{name}"
        );
        assert_eq!(r.vcpu_sha256, g.facts.vcpu_digests, "{name}");
        assert_eq!(r.replay.pfns_restored, g.facts.distinct_pfns, "{name}");
        assert_eq!(r.replay.typed_entries, g.facts.xtab_entries, "{name}");
        assert_eq!(r.image.max_pfn, Some(g.facts.max_pfn), "{name}");
        assert_eq!(
            r.verify.present.then_some(r.verify.pages_compared),
            g.facts.verify_pages,
            "{name}"
        );
        assert!(r.verify.mismatching_pfns.is_empty(), "{name}");
        match spec.era {
            HvmEra::Seed => {
                assert!(r.restorable, "{name}: {}", r.render_text());
                assert_eq!(r.exit_code(), 0);
                // Seed-era blobs need translation for today's Xen (§5.5).
                assert!(!r.current_xen.loads, "{name}");
                let failing: Vec<_> = r.current_xen.findings.iter().map(|f| f.rule).collect();
                assert!(
                    failing.contains(&"xen.hvm.strict-length"),
                    "{name}: {failing:?}"
                );
            }
            HvmEra::Current => {
                // The 2007 restorer's Xen cannot load today's record sizes.
                assert!(!r.restorable, "{name}");
                assert!(
                    r.error_rules().iter().any(|r| r.starts_with("seed.hvm.")),
                    "{name}"
                );
                assert!(r.current_xen.loads, "{name}: {:?}", r.current_xen.findings);
            }
        }
    }
}

#[test]
fn clean_image_matches_the_manifest_of_its_true_memory() {
    let img = Img::simple(4, Img::ram(4));
    let bytes = img.build();
    let m = manifest_of(
        img.max_pfn,
        &img.final_memory(),
        &img.vcpus,
        &img.blob,
        false,
    );
    let opts = Options {
        expect: Some(m),
        ..Options::default()
    };
    let r = check_slice(&bytes, &opts).unwrap();
    assert!(r.restorable, "{}", r.render_text());
    assert_eq!(r.matches_manifest, Some(true), "{}", r.render_text());
    assert_eq!(r.exit_code(), 0);
}

/// Pass 0 sends everything; the guest then dirties `dirty` but the final
/// pass resends only `resent`.
fn missed_dirty_image(
    dirty: &[u64],
    resent: &[u64],
) -> (Img, std::collections::BTreeMap<u64, Vec<u8>>) {
    let mut img = Img::simple(4, Img::ram(4));
    img.passes
        .push(resent.iter().map(|&p| (p, Some(page(p, 1)))).collect());
    let mut truth = img.final_memory();
    for &p in dirty {
        truth.insert(p, page(p, 1));
    }
    (img, truth)
}

#[test]
fn missed_dirty_page_fails_expect_naming_its_pfn() {
    let missed = 0x2f3;
    let (img, truth) = missed_dirty_image(&[0x200, missed, 0x301], &[0x200, 0x301]);
    let bytes = img.build();
    let m = manifest_of(img.max_pfn, &truth, &img.vcpus, &img.blob, true);
    let opts = Options {
        expect: Some(m.clone()),
        ..Options::default()
    };
    let r = check_slice(&bytes, &opts).unwrap();
    assert!(r.restorable, "the image itself is well-formed");
    assert_eq!(r.matches_manifest, Some(false));
    assert_eq!(r.exit_code(), 1);
    let e = r.expect.as_ref().unwrap();
    let ranges: Vec<u64> = e.differing_ranges.iter().map(|d| d.range).collect();
    assert_eq!(ranges, vec![missed / RANGE_PAGES]);
    assert!(e.pfns_resolved);
    assert_eq!(e.differing_pfns, vec![(missed, PfnDifference::Content)]);
    assert!(r.render_text().contains("pfn 0x2f3: content differs"));

    // Without page digests the range is still named, the pfn cannot be.
    let mut bare = m;
    for rd in &mut bare.ranges {
        rd.page_digests = None;
    }
    let opts = Options {
        expect: Some(bare),
        ..Options::default()
    };
    let r = check_slice(&bytes, &opts).unwrap();
    let e = r.expect.as_ref().unwrap();
    assert_eq!(e.differing_ranges.len(), 1);
    assert!(!e.pfns_resolved && e.differing_pfns.is_empty());
}

#[test]
fn missing_page_and_vcpu_difference_are_reported() {
    let img = Img::simple(4, Img::ram(4).filter(|&p| p != 0x123));
    let mut truth = img.final_memory();
    truth.insert(0x123, page(0x123, 0));
    let mut vcpus = img.vcpus.clone();
    vcpus[0][100] ^= 1;
    let m = manifest_of(img.max_pfn, &truth, &vcpus, &img.blob, true);
    let opts = Options {
        expect: Some(m),
        ..Options::default()
    };
    let r = check_slice(&img.build(), &opts).unwrap();
    let e = r.expect.as_ref().unwrap();
    assert_eq!(e.differing_pfns, vec![(0x123, PfnDifference::Missing)]);
    let what: Vec<&str> = e
        .differing_digests
        .iter()
        .map(|d| d.what.as_str())
        .collect();
    assert_eq!(what, vec!["vcpu 0"]);
    assert_eq!(
        e.differing_digests[0].replayed,
        Some(hex(&vcpu_digest(&img.vcpus[0])))
    );
}

#[test]
fn corrupted_verify_page_is_reported_by_pfn() {
    let mut img = Img::simple(4, Img::ram(4));
    let bad = 0x3a1;
    let mut resend: Vec<(u64, Vec<u8>)> = img.final_memory().into_iter().collect();
    for (pfn, d) in &mut resend {
        if *pfn == bad {
            d[777] ^= 0x40;
        }
    }
    img.verify = Some(resend);
    let r = check_slice(&img.build(), &Options::default()).unwrap();
    assert!(r.verify.present);
    assert_eq!(r.verify.pages_compared, Img::ram(4).count() as u64);
    assert_eq!(r.verify.mismatching_pfns, vec![bad]);
    assert_eq!(r.verify.mismatches[0].first_difference, 777);
    assert!(r.verify.mismatches[0].restored);
    assert_eq!(r.error_rules(), vec!["restore.verify.mismatch"]);
    assert!(!r.restorable);
    assert!(r.render_text().contains("pfns 0x3a1"));
}

#[test]
fn verify_copy_of_a_never_restored_page_compares_against_zeros() {
    let mut img = Img::simple(4, Img::ram(4).filter(|&p| p != 0x50 && p != 0x51));
    img.verify = Some(vec![(0x50, vec![0; 4096]), (0x51, page(0x51, 0))]);
    let r = check_slice(&img.build(), &Options::default()).unwrap();
    assert_eq!(r.verify.mismatching_pfns, vec![0x51]);
    assert!(!r.verify.mismatches[0].restored);
}

#[test]
fn later_copy_wins() {
    let (img, _) = missed_dirty_image(&[], &[0x200]);
    let r = check_slice(&img.build(), &Options::default()).unwrap();
    let mem = r.guest_memory().unwrap();
    assert_eq!(mem.read(0x200), page(0x200, 1).as_slice());
    assert_eq!(mem.read(0x201), page(0x201, 0).as_slice());
    assert_eq!(r.passes.len(), 2);
}

fn rules_of(bytes: &[u8], opts: &Options) -> Vec<&'static str> {
    check_slice(bytes, opts).unwrap().error_rules()
}

#[test]
fn broken_variants_fail_with_their_rule() {
    let img = Img::simple(4, Img::ram(4));
    let clean = img.build();
    let o = Options::default();
    assert!(rules_of(&clean, &o).is_empty());

    // Batch bounds: the first count field sits after the 8-byte max_pfn.
    // (A broken first count also defeats word-size detection, so the word
    // is given, as a user would with --word.)
    let w64 = Options {
        word: Some(WordSize::W64),
        ..Options::default()
    };
    let mut b = clean.clone();
    b[8..12].copy_from_slice(&1025i32.to_le_bytes());
    assert_eq!(rules_of(&b, &w64), vec!["seed.batch.count-range"]);
    b[8..12].copy_from_slice(&(-2i32).to_le_bytes());
    assert_eq!(rules_of(&b, &w64), vec!["seed.batch.negative-count"]);

    // Pfns beyond the configured memory.
    let small = Options {
        memory_mib: Some(2),
        ..Options::default()
    };
    let r = check_slice(&clean, &small).unwrap();
    assert!(
        r.error_rules().contains(&"seed.pfn.range"),
        "{:?}",
        r.error_rules()
    );
    assert!(r.replay.pages_outside > 0);

    // A page in the VGA hole.
    let vga = Img::simple(4, Img::ram(4).chain([0xA5]));
    assert!(rules_of(&vga.build(), &o).contains(&"seed.pfn.vga-hole"));

    // A 32-bit restoring toolstack cannot take 64-bit vCPU contexts.
    let w32 = Options {
        restore_word: Some(WordSize::W32),
        ..Options::default()
    };
    assert_eq!(rules_of(&clean, &w32), vec!["seed.vcpu.size"]);

    // HVM header magic and version, a record length.
    let blob_at = clean.len() - img.blob.len();
    let mut m = clean.clone();
    m[blob_at + 8] ^= 0xff; // HEADER payload: magic @0
    let got = rules_of(&m, &w64);
    assert!(got.contains(&"seed.hvm.magic"), "{got:?}");
    let mut v = clean.clone();
    v[blob_at + 12] = 2; // version @4
    assert!(rules_of(&v, &w64).contains(&"seed.hvm.version"));

    // Truncation.
    assert_eq!(
        rules_of(&clean[..clean.len() - 10], &w64),
        vec!["stream.oversized"]
    );
    assert_eq!(rules_of(&clean[..20], &w64), vec!["stream.oversized"]);
}

#[test]
fn stream_from_a_reader_equals_the_slice_path() {
    let mut img = Img::simple(4, Img::ram(4));
    img.verify = Some(img.final_memory().into_iter().collect());
    let bytes = img.build();
    let a = check_slice(&bytes, &digest_opts()).unwrap();
    let b = check_read(std::io::Cursor::new(&bytes), &digest_opts()).unwrap();
    assert_eq!(a.memory_sha256, b.memory_sha256);
    assert_eq!(a.verify, b.verify);
    assert_eq!(a.error_rules(), b.error_rules());
    assert!(b.restorable);
}

#[test]
fn reused_arena_does_not_leak_the_previous_guest() {
    let big = Img::simple(8, Img::ram(8)).build();
    let small_img = Img::simple(
        4,
        (0..0x300).filter(|p| p % 3 == 0 && !(0xA0..0xC0).contains(p)),
    );
    let small = small_img.build();
    let fresh = check_slice(&small, &digest_opts()).unwrap();
    let mut c = Checker::new();
    let mut r = c.check_slice(&big, &digest_opts()).unwrap();
    c.recycle(&mut r);
    let reused = c.check_slice(&small, &digest_opts()).unwrap();
    assert_eq!(fresh.memory_sha256, reused.memory_sha256);
    assert_eq!(reused.replay.pfns_restored, fresh.replay.pfns_restored);
    assert_eq!(reused.guest_memory().unwrap().read(1), &[0u8; 4096][..]);
}

fn index_only(o: Options) -> Options {
    Options {
        keep_memory: false,
        ..o
    }
}

/// The check without guest memory reports exactly what the materialising
/// one does, for every golden image and for live images with repeats and a
/// verify pass that catches a missed page, from a slice and from a pipe.
#[test]
fn index_only_check_reports_what_the_materialised_one_does() {
    let mut images: Vec<Vec<u8>> = specs().iter().map(|s| generate(s).bytes).collect();
    let (mut live, _) = missed_dirty_image(&[], &[0x200, 0x2f3]);
    let mut v: Vec<(u64, Vec<u8>)> = live.final_memory().into_iter().collect();
    v.iter_mut().find(|(p, _)| *p == 0x2f3).unwrap().1[9] ^= 1;
    live.verify = Some(v);
    images.push(live.build());
    for bytes in &images {
        let full = check_slice(bytes, &digest_opts()).unwrap();
        let lean = check_slice(bytes, &index_only(digest_opts())).unwrap();
        let piped = check_read(std::io::Cursor::new(bytes), &index_only(digest_opts())).unwrap();
        assert!(lean.guest_memory().is_none() && piped.guest_memory().is_none());
        let json = |r: &hvm_restore_check::Report| serde_json::to_string(r).unwrap();
        assert_eq!(json(&full), json(&lean));
        assert_eq!(json(&full), json(&piped));
    }
    let last = check_read(
        std::io::Cursor::new(images.last().unwrap()),
        &index_only(digest_opts()),
    )
    .unwrap();
    assert_eq!(last.verify.mismatching_pfns, vec![0x2f3]);
    assert_eq!(last.verify.mismatches[0].first_difference, 9);
    assert!(last.verify.mismatches[0].restored);
}

/// Nothing is sized by `max_pfn`: a 16 TiB guest (beyond the 1 TiB the
/// checker can materialise) with a few pages is checked, and its memory
/// digest is that of the same pages in a small guest.
#[test]
fn a_huge_max_pfn_costs_nothing_until_pages_arrive() {
    let pfns = [1u64, 2, 0x1000, 0x2000];
    let mut huge = Img::simple(4, pfns);
    huge.max_pfn = (1 << 32) - 1;
    let small = Img::simple(64, pfns);
    let opts = index_only(Options {
        memory_mib: Some(16 << 20),
        ..digest_opts()
    });
    let h = check_slice(&huge.build(), &opts).unwrap();
    let s = check_slice(&small.build(), &digest_opts()).unwrap();
    assert_eq!(h.replay.pfns_restored, 4);
    assert_eq!(h.memory_sha256, s.memory_sha256);
    assert!(h.memory_sha256.is_some());
}

/// A pipe's pages are spooled up to the stated limit, then the check stops
/// with an error that names it.
#[test]
fn the_spool_of_a_pipe_stops_at_its_limit() {
    let img = Img::simple(4, (0x10..0x20).collect::<Vec<_>>()).build();
    let at = |pages: u64| Options {
        spool_limit: pages * 4096,
        ..digest_opts()
    };
    assert!(check_read(std::io::Cursor::new(&img), &at(16)).is_ok());
    let e = check_read(std::io::Cursor::new(&img), &at(15)).unwrap_err();
    assert!(
        matches!(
            e,
            hvm_restore_check::CheckError::Store(hvm_restore_check::StoreError::SpoolLimit {
                limit: 61440
            })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--spool-limit"), "{e}");
}

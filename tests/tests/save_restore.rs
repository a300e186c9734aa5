//! The saver and the restore checker against each other: images of the
//! simulated guest, for several workloads and both policies, replay to
//! exactly the memory the saver's manifest recorded at suspend time; an
//! image whose final copy of a page is stale (a dirtied page the final pass
//! missed) fails `--expect` in that page's range, and with the verify resend
//! the checker names the pfn.
#![cfg(target_os = "linux")]

use std::time::Duration;

use hvm_format::index::IndexBuilder;
use hvm_format::stream::SliceReader;
use hvm_format::WordSize;
use hvm_restore_check::{check_slice, Options};
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::manifest::Manifest;
use hvm_save::policy::{DowntimePolicy, Policy, SeedPolicy};
use hvm_save::saver::{save, SaveOptions};

fn sim_image(
    workload: Workload,
    policy: &mut dyn Policy,
    debug: bool,
    page_digests: bool,
) -> (Vec<u8>, Manifest) {
    let mut sim = SimDomain::new(SimConfig {
        memory_mib: 16,
        vcpus: 2,
        workload,
        unmappable: 3,
        ..SimConfig::default()
    })
    .expect("sim config");
    let opts = SaveOptions {
        live: true,
        debug,
        manifest: true,
        page_digests,
        ..SaveOptions::default()
    };
    let mut image = Vec::new();
    let out = save(&mut sim, policy, &opts, &mut image, &mut |_| {}).expect("sim save");
    (image, out.manifest.expect("manifest asked for"))
}

fn expect(manifest: &Manifest) -> Options {
    Options {
        expect: Some(manifest.clone()),
        ..Options::default()
    }
}

#[test]
fn sim_images_replay_to_their_manifest() {
    let workloads = [
        Workload::Idle,
        Workload::Uniform { rate: 20_000.0 },
        Workload::HotSet {
            pages: 512,
            rate: 100_000.0,
        },
        Workload::Sweep { rate: 30_000.0 },
    ];
    for w in workloads {
        let policies: [Box<dyn Policy>; 2] = [
            Box::new(SeedPolicy::default()),
            Box::new(DowntimePolicy::new(Duration::from_millis(50))),
        ];
        for mut p in policies {
            let (image, manifest) = sim_image(w.clone(), p.as_mut(), false, false);
            let r = check_slice(&image, &expect(&manifest)).expect("check runs");
            assert!(r.ok(), "{w:?} / {}: {}", p.name(), r.render_text());
            assert_eq!(r.matches_manifest, Some(true));
        }
    }
}

/// The file offset of the final copy of some pfn sent in the last pass.
fn last_pass_page(image: &[u8]) -> (u64, u64) {
    let mut r = SliceReader::new(image, WordSize::W64, 0);
    let mut b = IndexBuilder::new();
    while let Some(item) = r.next().unwrap() {
        b.item(&item);
    }
    let idx = b.finish();
    let last = idx.passes.len() as u32 - 1;
    let c = idx
        .finals
        .iter()
        .rev()
        .find(|c| c.pass == last)
        .or_else(|| idx.finals.last())
        .copied()
        .expect("pages");
    (c.pfn, c.offset)
}

#[test]
fn a_stale_final_copy_fails_expect_in_its_range_and_the_verify_pass_names_it() {
    // Without a verify pass: the range of the stale page differs.
    let (mut image, manifest) = sim_image(
        Workload::Uniform { rate: 20_000.0 },
        &mut SeedPolicy::default(),
        false,
        false,
    );
    let (pfn, offset) = last_pass_page(&image);
    image[offset as usize + 17] ^= 0x5A;
    let r = check_slice(&image, &expect(&manifest)).unwrap();
    assert!(!r.ok());
    assert_eq!(r.exit_code(), 1);
    let e = r.expect.as_ref().expect("expect report");
    let ranges: Vec<u64> = e.differing_ranges.iter().map(|d| d.range).collect();
    assert_eq!(
        ranges,
        vec![hvm_format::digest::range_of(pfn)],
        "{}",
        r.render_text()
    );

    // With the verify resend (--debug), the checker names the pfn itself.
    let (mut image, manifest) = sim_image(
        Workload::Uniform { rate: 20_000.0 },
        &mut SeedPolicy::default(),
        true,
        false,
    );
    let (pfn, offset) = last_pass_page(&image);
    image[offset as usize + 17] ^= 0x5A;
    let r = check_slice(&image, &expect(&manifest)).unwrap();
    assert!(!r.ok());
    assert!(
        r.verify.mismatching_pfns.contains(&pfn),
        "pfn {pfn:#x} not named: {}",
        r.render_text()
    );
}

#[test]
fn with_page_digests_the_manifest_check_names_the_stale_pfn() {
    let (mut image, manifest) = sim_image(
        Workload::HotSet {
            pages: 512,
            rate: 100_000.0,
        },
        &mut DowntimePolicy::default(),
        false,
        true,
    );
    let (pfn, offset) = last_pass_page(&image);
    image[offset as usize + 100] ^= 1;
    let r = check_slice(&image, &expect(&manifest)).unwrap();
    let e = r.expect.as_ref().expect("expect report");
    assert!(e.pfns_resolved, "{}", r.render_text());
    let named: Vec<u64> = e.differing_pfns.iter().map(|(p, _)| *p).collect();
    assert_eq!(named, vec![pfn], "{}", r.render_text());
}

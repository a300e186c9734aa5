//! Live saves of the real KVM guest (hvm-save's `kvm` backend) under light,
//! heavy and non-converging workloads with both policies; every image must
//! pass `hvm-restore-check --expect` (manifest) and `--resume` (a fresh VM
//! built from the image runs on exactly like an uninterrupted control run).
//! Negative controls must fail the resume: the final round's pages dropped,
//! the vCPU control registers dropped, one HVM record dropped.
//!
//! Every wait has a limit. Without /dev/kvm each test is skipped (counted by
//! scripts/test.sh), or fails when `HVM_REQUIRE` names `kvm`.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use hvm_format::hvm::{code, HvmBlob};
use hvm_format::image::{self, OpenOptions};
use hvm_format::stream::{Item, Writer};
use hvm_format::vcpu::VcpuContext;
use hvm_guest::HostInfo;
use hvm_restore_check::resume::{resume_image, GuestKind, ResumeOptions, ResumeReport};
use hvm_restore_check::{Checker, Manifest, Options};
use hvm_save::backend::kvm::{KvmConfig, KvmDomain, DESCRIPTOR_PFN};
use hvm_save::policy::StopReason;
use hvm_save::saver::Phase;
use hvm_save::{DowntimePolicy, Event, Policy, SaveOptions, SeedPolicy};

fn kvm_or_skip(test: &str) -> bool {
    if HostInfo::kvm_available() {
        let kind = if HostInfo::is_kvm_pvm() {
            "kvm_pvm software hypervisor (not VMX/SVM)"
        } else {
            "hardware KVM"
        };
        println!("{test}: /dev/kvm is {kind}");
        true
    } else {
        hvm_tests::prereq::skip(hvm_tests::prereq::KVM, test, "/dev/kvm not available");
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Light,
    Heavy,
    NonConverging,
}

fn config(load: Load) -> (KvmConfig, Option<u64>) {
    match load {
        // Paced: a few thousand writes per second into 8 MiB.
        Load::Light => (
            KvmConfig {
                memory_mib: 64,
                vcpus: 1,
                working_set_mib: 8,
                spin: 100_000,
                ..KvmConfig::default()
            },
            None,
        ),
        // Flat out on two vCPUs over 32 MiB.
        Load::Heavy => (
            KvmConfig {
                memory_mib: 128,
                vcpus: 2,
                working_set_mib: 32,
                spin: 0,
                ..KvmConfig::default()
            },
            None,
        ),
        // Flat out over 16 MiB while the link is limited to 40 MB/s: each
        // round takes long enough for the guest to dirty its whole working
        // set again, so rounds never shrink.
        Load::NonConverging => (
            KvmConfig {
                memory_mib: 64,
                vcpus: 1,
                working_set_mib: 16,
                spin: 0,
                ..KvmConfig::default()
            },
            Some(40_000_000),
        ),
    }
}

struct Saved {
    image: Vec<u8>,
    manifest: Manifest,
    summary: hvm_save::SaveSummary,
    /// Pass number of each batch, in stream order.
    batch_iters: Vec<u32>,
    final_iter: u32,
}

fn save(load: Load, seed_policy: bool) -> Saved {
    let (cfg, max_rate) = config(load);
    let mut dom = KvmDomain::new(cfg).expect("build the KVM guest");
    dom.start().expect("start the workload");
    // Let the workload touch its working set before the save.
    let t = Instant::now();
    while dom.progress().iter().any(|&p| p < 2000) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "workload made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut policy: Box<dyn Policy> = if seed_policy {
        Box::new(SeedPolicy::default())
    } else {
        Box::new(DowntimePolicy::new(Duration::from_millis(50)))
    };
    let opts = SaveOptions {
        live: true,
        manifest: true,
        max_rate,
        ..SaveOptions::default()
    };
    let mut image = Vec::new();
    let mut batch_iters = Vec::new();
    let mut final_iter = 0;
    let outcome = hvm_save::save(
        &mut dom,
        policy.as_mut(),
        &opts,
        &mut image,
        &mut |e| match e {
            Event::BatchWritten { iter, .. } => batch_iters.push(*iter),
            Event::PassStarted {
                iter,
                phase: Phase::Final,
            } => final_iter = *iter,
            _ => {}
        },
    )
    .expect("live save");
    let pause = dom.last_pause().map(|p| p.latency);
    dom.shutdown().expect("shut the guest down");
    let s = &outcome.summary;
    println!(
        "{load:?} / {}: {} passes, {} pages, final round {} pages, downtime {:.2} ms (pause {pause:?}), stop {:?}",
        s.policy,
        s.passes,
        s.total_sent,
        s.downtime_pages,
        s.downtime_us as f64 / 1e3,
        s.stop
    );
    let manifest = Manifest::from_json(&outcome.manifest.expect("manifest").to_json())
        .expect("manifest parses");
    Saved {
        image,
        manifest,
        summary: outcome.summary,
        batch_iters,
        final_iter,
    }
}

fn check_expect(s: &Saved) -> hvm_restore_check::Report {
    let opts = Options {
        expect: Some(s.manifest.clone()),
        ..Options::default()
    };
    Checker::new()
        .check_slice(&s.image, &opts)
        .expect("check runs")
}

fn resume(image: &[u8], timeout: Duration) -> ResumeReport {
    let mut report = Checker::new()
        .check_slice(image, &Options::default())
        .expect("check runs");
    let mem = report.take_memory().expect("memory replayed");
    let opts = ResumeOptions {
        steps: 50_000,
        timeout,
        ..ResumeOptions::default()
    };
    let r = resume_image(image, &mem, &opts).expect("resume runs");
    print!("{}", r.render_text());
    r
}

fn save_check_resume(load: Load, seed_policy: bool) -> Saved {
    let s = save(load, seed_policy);
    let report = check_expect(&s);
    assert!(
        report.ok(),
        "{load:?}: --expect failed:\n{}",
        report.render_text()
    );
    assert_eq!(report.matches_manifest, Some(true));
    let r = resume(&s.image, Duration::from_secs(30));
    assert_eq!(r.kind, GuestKind::BuiltInWorkload);
    assert!(r.matches, "{load:?}: resume differs: {:?}", r.differences);
    assert_eq!(r.exit_code(), 0);
    s
}

#[test]
fn light_workload_both_policies() {
    if !kvm_or_skip("light_workload_both_policies") {
        return;
    }
    for seed in [true, false] {
        save_check_resume(Load::Light, seed);
    }
}

#[test]
fn heavy_workload_both_policies() {
    if !kvm_or_skip("heavy_workload_both_policies") {
        return;
    }
    for seed in [true, false] {
        let s = save_check_resume(Load::Heavy, seed);
        assert_eq!(s.summary.vcpus, 2);
    }
}

/// Rewrites an image item by item.
fn rewrite(
    image: &[u8],
    mut keep_batch: impl FnMut(u64) -> bool,
    mut vcpu: impl FnMut(&[u8]) -> Vec<u8>,
    mut blob: impl FnMut(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let (info, mut reader) = image::open_slice(image, OpenOptions::default()).unwrap();
    let mut w = Writer::new(Vec::new(), info.word());
    while let Some(item) = reader.next().unwrap() {
        match item {
            Item::Batch(b) if !keep_batch(b.index) => {}
            Item::Vcpu(v) => w.vcpu(&vcpu(v.bytes)).unwrap(),
            Item::HvmBlob(b) => w.hvm_blob(&blob(b.bytes)).unwrap(),
            other => w.item(&other).unwrap(),
        }
    }
    w.finish().unwrap()
}

#[test]
fn non_converging_workload_and_negative_controls() {
    if !kvm_or_skip("non_converging_workload_and_negative_controls") {
        return;
    }
    let seed = save_check_resume(Load::NonConverging, true);
    assert!(
        matches!(
            seed.summary.stop,
            StopReason::MaxIters | StopReason::MaxFactor
        ),
        "the seed policy should give up, not converge: {:?}",
        seed.summary.stop
    );
    let s = save_check_resume(Load::NonConverging, false);
    assert!(
        s.summary.downtime_pages > 100,
        "a non-converging guest leaves a large final round, got {}",
        s.summary.downtime_pages
    );

    // 1. Without the final round's pages.
    let final_batches: Vec<u64> = s
        .batch_iters
        .iter()
        .enumerate()
        .filter(|(_, &it)| it == s.final_iter)
        .map(|(i, _)| i as u64)
        .collect();
    assert!(!final_batches.is_empty());
    let img = rewrite(
        &s.image,
        |i| !final_batches.contains(&i),
        |v| v.to_vec(),
        |b| b.to_vec(),
    );
    let r = resume(&img, Duration::from_secs(30));
    assert!(!r.matches && r.exit_code() == 1);
    assert!(
        r.differences.iter().any(|d| d.contains("memory digest")),
        "{:?}",
        r.differences
    );
    assert!(!check_expect(&Saved {
        image: img,
        ..s_clone(&s)
    })
    .ok());

    // 2. Without the vCPU control registers (ctrlreg[] zeroed).
    let img = rewrite(
        &s.image,
        |_| true,
        |v| {
            let mut c = v.to_vec();
            c[4984..5048].fill(0);
            assert_eq!(VcpuContext::parse(&c).unwrap().cr0(), 0);
            c
        },
        |b| b.to_vec(),
    );
    let r = resume(&img, Duration::from_secs(5));
    assert!(!r.matches && r.exit_code() == 1, "{:?}", r.differences);

    // 3. Without vCPU 0's CPU record: Xen leaves that vCPU down.
    let img = rewrite(
        &s.image,
        |_| true,
        |v| v.to_vec(),
        |b| {
            let parsed = HvmBlob::parse(b).unwrap();
            let mut out = Vec::new();
            let mut dropped = 0;
            for r in &parsed.records {
                if r.typecode == code::CPU && r.instance == 0 {
                    dropped += 1;
                    continue;
                }
                r.to_owned_record().encode_into(&mut out);
            }
            assert_eq!(dropped, 1);
            out
        },
    );
    let r = resume(&img, Duration::from_secs(3));
    assert!(!r.matches && r.exit_code() == 1);
    assert!(
        r.differences.iter().any(|d| d.contains("CPU of vCPU 0")),
        "{:?}",
        r.differences
    );
}

/// An image of some other guest: the built-in workload's image without its
/// descriptor page (every copy of pfn 1 dropped). It must still resume and
/// run for a bounded time, reported as not compared.
#[test]
fn image_without_descriptor_runs_bounded_and_is_not_compared() {
    if !kvm_or_skip("image_without_descriptor_runs_bounded_and_is_not_compared") {
        return;
    }
    let s = save(Load::Light, false);
    let (info, mut reader) = image::open_slice(&s.image, OpenOptions::default()).unwrap();
    let mut w = Writer::new(Vec::new(), info.word());
    let mut dropped = 0;
    while let Some(item) = reader.next().unwrap() {
        match item {
            Item::Batch(b) => {
                let mut entries = Vec::new();
                let mut pages = Vec::new();
                for (e, page, _) in b.pages() {
                    if e.pfn().0 == DESCRIPTOR_PFN {
                        dropped += 1;
                        continue;
                    }
                    entries.push(e);
                    pages.push(page);
                }
                if !entries.is_empty() {
                    w.batch(&entries, &pages).unwrap();
                }
            }
            other => w.item(&other).unwrap(),
        }
    }
    assert!(dropped >= 1);
    let img = w.finish().unwrap();
    let t = Instant::now();
    let r = resume(&img, Duration::from_secs(10));
    assert_eq!(r.kind, GuestKind::Other);
    assert!(!r.matches, "another guest is never compared");
    assert!(r.target_step.is_none());
    assert_eq!(r.exit_code(), 0, "{:?}", r.differences);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the run must be bounded"
    );
}

fn s_clone(s: &Saved) -> Saved {
    Saved {
        image: Vec::new(),
        manifest: s.manifest.clone(),
        summary: s.summary.clone(),
        batch_iters: s.batch_iters.clone(),
        final_iter: s.final_iter,
    }
}

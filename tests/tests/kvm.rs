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

use hvm_format::hvm::translate::to_current;
use hvm_format::hvm::{code, HvmBlob};
use hvm_format::image::{self, OpenOptions};
use hvm_format::stream::{Item, Writer};
use hvm_format::vcpu::VcpuContext;
use hvm_guest::HostInfo;
use hvm_restore_check::resume::{
    resume_image, GuestKind, ResumeError, ResumeOptions, ResumeReport,
};
use hvm_restore_check::{Checker, Manifest, Options};
use hvm_save::backend::kvm::{KvmConfig, KvmDomain, DESCRIPTOR_PFN};
use hvm_save::policy::{StopReason, ThrottleMode};
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
    /// Flat out over 16 MiB on a 20 MB/s link: the guest out-writes the
    /// link by a wide margin even when the machine is loaded, so only a
    /// throttle brings the final round within the budget.
    Outpacing,
}

/// The link of [`Load::Outpacing`], bytes per second.
const OUTPACING_RATE: u64 = 20_000_000;

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
        Load::Outpacing => (
            KvmConfig {
                memory_mib: 64,
                vcpus: 1,
                working_set_mib: 16,
                spin: 0,
                ..KvmConfig::default()
            },
            Some(OUTPACING_RATE),
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
    let policy: Box<dyn Policy> = if seed_policy {
        Box::new(SeedPolicy::default())
    } else {
        Box::new(DowntimePolicy::new(Duration::from_millis(50)))
    };
    save_with(load, policy)
}

fn save_with(load: Load, mut policy: Box<dyn Policy>) -> Saved {
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
    assert_eq!(
        dom.throttle(),
        0,
        "the throttle is lifted when the save ends"
    );
    dom.shutdown().expect("shut the guest down");
    let s = &outcome.summary;
    println!(
        "{load:?} / {}: {} passes, {} pages, final round {} pages, downtime {:.2} ms (pause {pause:?}), stop {:?}, throttle peak {} % for {} us",
        s.policy,
        s.passes,
        s.total_sent,
        s.downtime_pages,
        s.downtime_us as f64 / 1e3,
        s.stop,
        s.throttle_peak_percent,
        s.throttled_us
    );
    for p in &outcome.passes {
        println!(
            "  pass {} {:?}: sent {} dirty {:?} throttle {} % guest {:?} steps/s",
            p.iter, p.phase, p.sent, p.dirty_now, p.throttle_percent, p.guest_rate
        );
    }
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
    check_and_resume(load, &s);
    s
}

/// `hvm-restore-check --expect` and `--resume` on a saved image.
fn check_and_resume(load: Load, s: &Saved) {
    let report = check_expect(s);
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
}

/// Pages a final round may hold to fit `budget` on `rate` bytes/s.
fn budget_pages(budget: Duration, rate: u64) -> u64 {
    (budget.as_secs_f64() * rate as f64 / (hvm_format::PAGE_SIZE as f64 + 8.0)) as u64
}

/// Issue 15: a guest that out-writes its link. Throttled (downtime policy,
/// `--throttle auto`), the final round fits the 50 ms budget's pages and
/// the image passes `--expect` and `--resume`; with the throttle off the
/// same guest's final round is far over the budget. What is asserted is
/// page counts and the throttle's engagement, not milliseconds: the
/// machine is shared, and the downtime in ms is the measurement table's.
#[test]
fn throttled_save_meets_the_budget_and_resumes() {
    if !kvm_or_skip("throttled_save_meets_the_budget_and_resumes") {
        return;
    }
    let budget = Duration::from_millis(50);
    let pages = budget_pages(budget, OUTPACING_RATE);
    let auto = DowntimePolicy::new(budget).with_throttle(ThrottleMode::Auto);
    let t = save_with(Load::Outpacing, Box::new(auto));
    check_and_resume(Load::Outpacing, &t);
    let s = &t.summary;
    assert!(s.throttle_peak_percent >= 20, "{s:?}");
    assert!(s.throttled_us > 0, "{s:?}");
    assert!(
        matches!(s.stop, StopReason::DowntimeReached { .. }),
        "the throttle brought the predicted final round within budget: {s:?}"
    );
    assert!(
        s.downtime_pages <= pages,
        "{} > {pages}: {s:?}",
        s.downtime_pages
    );

    let off = DowntimePolicy::new(budget).with_throttle(ThrottleMode::Off);
    let u = save_with(Load::Outpacing, Box::new(off));
    check_and_resume(Load::Outpacing, &u);
    let s = &u.summary;
    assert_eq!(s.throttle_peak_percent, 0, "{s:?}");
    assert!(
        s.downtime_pages > pages,
        "{} <= {pages}: {s:?}",
        s.downtime_pages
    );
}

/// A guest the link keeps up with is never throttled, even with
/// `--throttle auto`.
#[test]
fn converging_save_is_never_throttled() {
    if !kvm_or_skip("converging_save_is_never_throttled") {
        return;
    }
    let auto = DowntimePolicy::new(Duration::from_millis(50)).with_throttle(ThrottleMode::Auto);
    let s = save_with(Load::Light, Box::new(auto));
    check_and_resume(Load::Light, &s);
    assert_eq!(s.summary.throttle_peak_percent, 0, "{:?}", s.summary);
    assert_eq!(s.summary.throttled_us, 0);
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

    // 2. Without the vCPU control registers: ctrlreg[] zeroed in the
    //    context and cr0/cr3/cr4 in the CPU record, consistently, so no
    //    static cross-check sees it and only the run can.
    let img = rewrite(
        &s.image,
        |_| true,
        |v| {
            let mut c = v.to_vec();
            c[4984..5048].fill(0);
            assert_eq!(VcpuContext::parse(&c).unwrap().cr0(), 0);
            c
        },
        |b| with_cpu_records(b, |p| p[24..48].fill(0)),
    );
    let r = resume(&img, Duration::from_secs(5));
    assert!(!r.matches && r.exit_code() == 1, "{:?}", r.differences);
    assert!(
        !r.differences.iter().any(|d| d.contains("disagree")),
        "caught before the run: {:?}",
        r.differences
    );

    // 3. The workload's PRNG state (rbx) changed in every vCPU context: a
    //    consistent image that runs, and runs into different memory.
    let img = rewrite(
        &s.image,
        |_| true,
        |v| {
            let mut c = VcpuContext::parse(v).unwrap();
            let mut regs = c.registers();
            regs.rbx ^= 0x5A5A_0000_0001;
            c = VcpuContext::from_registers(c.word_size(), &regs).unwrap();
            c.as_bytes().to_vec()
        },
        |b| b.to_vec(),
    );
    let r = resume(&img, Duration::from_secs(30));
    assert!(!r.matches && r.exit_code() == 1, "{:?}", r.differences);
    assert!(r.target_step.is_some(), "it must have run");
    assert!(
        r.differences.iter().any(|d| d.contains("memory digest")),
        "{:?}",
        r.differences
    );

    // 4. Without vCPU 0's CPU record: Xen leaves that vCPU down.
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

/// `blob` with `f` applied to every CPU record's payload.
fn with_cpu_records(blob: &[u8], mut f: impl FnMut(&mut Vec<u8>)) -> Vec<u8> {
    let parsed = HvmBlob::parse(blob).unwrap();
    let mut out = Vec::new();
    for r in &parsed.records {
        let mut rec = r.to_owned_record();
        if r.typecode == code::CPU {
            f(&mut rec.payload);
        }
        rec.encode_into(&mut out);
    }
    out
}

/// The vCPU contexts of an image.
fn contexts(image: &[u8]) -> Vec<VcpuContext> {
    let (_, mut reader) = image::open_slice(image, OpenOptions::default()).unwrap();
    let mut out = Vec::new();
    while let Some(item) = reader.next().unwrap() {
        if let Item::Vcpu(v) = item {
            out.push(VcpuContext::parse(v.bytes).unwrap());
        }
    }
    out
}

/// The built-in workload's image with its HVM blob rewritten in today's
/// record layouts by the project's translation (1032-byte CPU with the
/// register file, 24-byte LAPIC, 56-byte PIT): it must resume and match
/// the control run, as the 2007 layouts do.
#[test]
fn current_era_records_resume_and_match() {
    if !kvm_or_skip("current_era_records_resume_and_match") {
        return;
    }
    let s = save(Load::Heavy, false);
    let ctxs = contexts(&s.image);
    let img = rewrite(
        &s.image,
        |_| true,
        |v| v.to_vec(),
        |b| {
            let t = to_current(b, &ctxs).expect("translation");
            let p = HvmBlob::parse(&t.blob).unwrap();
            let cpus: Vec<usize> = p
                .records
                .iter()
                .filter(|r| r.typecode == code::CPU)
                .map(|r| r.payload.len())
                .collect();
            assert_eq!(cpus, vec![1032; ctxs.len()], "today's CPU layout");
            t.blob
        },
    );
    let r = resume(&img, Duration::from_secs(30));
    assert_eq!(r.kind, GuestKind::BuiltInWorkload);
    assert!(r.matches, "{:?}", r.differences);
    assert_eq!(r.exit_code(), 0);
    assert!(r.target_step.is_some());
}

/// The golden current-era image: its CPU records (filler) contradict its
/// vCPU contexts, so it is refused with that reason before any run.
#[test]
fn golden_current_image_is_refused_with_a_reason() {
    if !kvm_or_skip("golden_current_image_is_refused_with_a_reason") {
        return;
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/seed64-current-hvm.img");
    let img = std::fs::read(p).unwrap();
    let r = resume(&img, Duration::from_secs(5));
    assert_eq!(r.exit_code(), 1);
    assert!(
        r.differences
            .iter()
            .any(|d| d.starts_with("vCPU 0:") && d.contains("CPU record")),
        "{:?}",
        r.differences
    );
    assert_eq!(r.run_ms, 0.0, "a refused image is not run");
}

/// `--steps` past the save point that overflows is an error, not a wrap.
#[test]
fn steps_that_overflow_are_refused() {
    if !kvm_or_skip("steps_that_overflow_are_refused") {
        return;
    }
    let s = save(Load::Light, false);
    let mut report = Checker::new()
        .check_slice(&s.image, &Options::default())
        .expect("check runs");
    let mem = report.take_memory().expect("memory replayed");
    let opts = ResumeOptions {
        steps: u64::MAX,
        ..ResumeOptions::default()
    };
    let e = resume_image(&s.image, &mem, &opts).unwrap_err();
    assert!(matches!(e, ResumeError::Steps { .. }), "{e}");
}

/// The built-in workload's image without its descriptor page (every copy of
/// pfn 1 dropped) is still recognised by its registers, and since it cannot
/// be compared it fails, naming the page (it used to pass as "not
/// compared", exit 0).
#[test]
fn image_without_descriptor_is_recognised_and_fails() {
    if !kvm_or_skip("image_without_descriptor_is_recognised_and_fails") {
        return;
    }
    let s = save(Load::Light, false);
    let img = without_descriptor(&s.image);
    let r = resume(&img, Duration::from_secs(10));
    assert_eq!(r.kind, GuestKind::BuiltInWorkload);
    assert!(!r.matches);
    assert_eq!(r.exit_code(), 1, "{:?}", r.differences);
    assert!(
        r.differences
            .iter()
            .any(|d| d.contains("descriptor page (pfn 1)")),
        "{:?}",
        r.differences
    );
}

/// `image` without any copy of the descriptor page (pfn 1).
fn without_descriptor(image: &[u8]) -> Vec<u8> {
    let (info, mut reader) = image::open_slice(image, OpenOptions::default()).unwrap();
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
    w.finish().unwrap()
}

/// Another guest: the workload's image without its descriptor and with its
/// doorbell register pointed at ordinary memory, so nothing marks it as the
/// built-in workload. It runs, not compared, and passes only on evidence
/// that every vCPU moved; with `--expect` it fails (a comparison was asked
/// for and cannot be made).
#[test]
fn another_guest_passes_only_on_evidence_and_not_under_expect() {
    if !kvm_or_skip("another_guest_passes_only_on_evidence_and_not_under_expect") {
        return;
    }
    let s = save(Load::Heavy, false);
    let mut i = 0;
    let img = rewrite(
        &without_descriptor(&s.image),
        |_| true,
        |v| {
            let c = VcpuContext::parse(v).unwrap();
            let mut regs = c.registers();
            regs.r14 = hvm_guest::layout::mailbox_gpa(i) + 0x800;
            i += 1;
            VcpuContext::from_registers(c.word_size(), &regs)
                .unwrap()
                .as_bytes()
                .to_vec()
        },
        |b| b.to_vec(),
    );
    let r = resume(&img, Duration::from_secs(10));
    assert_eq!(r.kind, GuestKind::Other);
    assert!(r.target_step.is_none());
    assert!(r.run_ms > 0.0, "it ran");
    assert_eq!(r.exit_code(), 0, "{:?}", r.differences);

    let mut report = Checker::new()
        .check_slice(&img, &Options::default())
        .expect("check runs");
    let mem = report.take_memory().expect("memory replayed");
    let opts = ResumeOptions {
        expect_comparable: true,
        ..ResumeOptions::default()
    };
    let r = resume_image(&img, &mem, &opts).expect("resume runs");
    assert_eq!(r.exit_code(), 1, "{:?}", r.differences);
    assert!(
        r.differences.iter().any(|d| d.contains("--expect")),
        "{:?}",
        r.differences
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

/// KVM's dirty log counts pages, not write faults: the backend says so
/// (`None`) instead of repeating the page count as a fault count.
#[test]
fn kvm_clean_reports_no_fault_count() {
    use hvm_save::domain::{DirtyBitmap, Domain};
    if !kvm_or_skip("kvm_clean_reports_no_fault_count") {
        return;
    }
    let (cfg, _) = config(Load::Light);
    let mut d = KvmDomain::new(cfg).expect("domain");
    d.start().expect("start");
    d.log_dirty_enable().expect("log-dirty on");
    std::thread::sleep(Duration::from_millis(100));
    let len = d.info().unwrap().nr_pages.max(1) + 0x100;
    let mut bm = DirtyBitmap::new(len);
    let st = d.log_dirty_clean(&mut bm).expect("clean");
    assert!(st.dirty_count > 0, "the running workload dirtied pages");
    assert_eq!(st.fault_count, None);
    d.log_dirty_off().unwrap();
    d.shutdown().unwrap();
}

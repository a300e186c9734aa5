//! Tests against the real /dev/kvm: the workload against its reference model, every dirty-log
//! mechanism against the model's write sets, pause latency, and capture → fresh VM → run on
//! against an uninterrupted control run (with negative controls).
//!
//! Without /dev/kvm each test is skipped (a loud line, counted by scripts/test.sh), or fails
//! when `HVM_REQUIRE` names `kvm` (`hvm_tests::prereq`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hvm_guest::layout::PAGE_SIZE;
use hvm_guest::*;

const MIB: u64 = 1 << 20;
const WAIT: Duration = Duration::from_secs(15);

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

fn two_streams() -> [Workload; 2] {
    [
        Workload {
            seed: 0x1234_5678,
            base_page: 256,
            pages: 2000,
            writes_per_step: 2,
            spin: 0,
        },
        Workload {
            seed: 42,
            base_page: 8192,
            pages: 3000,
            writes_per_step: 1,
            spin: 10,
        },
    ]
}

/// Checks that the whole of RAM is what the model predicts: the model's pages where it wrote,
/// zero everywhere else.
fn assert_memory_matches(vm: &Vm, expected: &[Expected]) {
    let mut want = std::collections::BTreeMap::new();
    for e in expected {
        for (g, p) in &e.pages {
            assert!(
                want.insert(*g, p.clone()).is_none(),
                "streams overlap at {g}"
            );
        }
    }
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    let zero = vec![0u8; PAGE_SIZE as usize];
    for gfn in 0..vm.ram_pages() {
        vm.read_page(gfn, &mut buf).unwrap();
        let exp = want.get(&gfn).unwrap_or(&zero);
        assert!(buf == *exp, "page {gfn:#x} differs from the model");
    }
}

fn assert_regs_match(vm: &Vm, vcpu: usize, e: &Expected) {
    let st = vm.capture_vcpu(vcpu).unwrap();
    assert_eq!(WorkloadRegs::from_kvm(&st.regs), e.regs, "vCPU {vcpu} GPRs");
    assert_eq!(st.regs.rip, vm.program().after_doorbell, "vCPU {vcpu} rip");
    assert_eq!(st.regs.rflags, e.rflags, "vCPU {vcpu} rflags");
}

#[test]
fn workload_matches_reference_model() {
    if !kvm_or_skip("workload_matches_reference_model") {
        return;
    }
    let ws = two_streams();
    let vm = Vm::new(VmConfig::new(64 * MIB, 2), &ws).unwrap();
    // Step 0: the stop before any write.
    vm.run_until_step(0, WAIT).unwrap();
    for (i, w) in ws.iter().enumerate() {
        assert_regs_match(&vm, i, &w.expected_after(i, 0));
    }
    for n in [1u64, 777, 20_000] {
        vm.run_until_step(n, WAIT).unwrap();
        let exp: Vec<Expected> = ws
            .iter()
            .enumerate()
            .map(|(i, w)| w.expected_after(i, n))
            .collect();
        for (i, e) in exp.iter().enumerate() {
            assert_regs_match(&vm, i, e);
            assert_eq!(vm.progress(i), n);
        }
        assert_memory_matches(&vm, &exp);
    }
    vm.shutdown().unwrap();
}

#[test]
fn steps_per_second() {
    if !kvm_or_skip("steps_per_second") {
        return;
    }
    for (wps, spin, pages) in [
        (1u64, 0u64, 256u64),
        (1, 0, 8192),
        (4, 0, 8192),
        (1, 1000, 256),
    ] {
        let w = Workload {
            seed: 9,
            base_page: 0,
            pages,
            writes_per_step: wps,
            spin,
        };
        let vm = Vm::new(VmConfig::new(64 * MIB, 1), &[w]).unwrap();
        // Warm up until (almost surely) every page has been touched: a first touch costs a
        // fault in the outer host and, under kvm_pvm, a shadow page-table fill.
        let warm = 20 * pages / wps + 1000;
        vm.run_until_step(warm, WAIT).unwrap();
        let n = if spin > 0 { 100_000 } else { 2_000_000 };
        let t = Instant::now();
        vm.run_until_step(warm + n, WAIT).unwrap();
        let dt = t.elapsed();
        let rate = n as f64 / dt.as_secs_f64();
        println!(
            "steps/s: {rate:.3e} (writes/step {wps}, spin {spin}, working set {pages} pages, {n} steps in {dt:?}, exits {})",
            vm.exits(0)
        );
        assert!(rate > 1000.0);
        // The contents are still exactly the model's.
        assert_eq!(
            WorkloadRegs::from_kvm(&vm.capture_vcpu(0).unwrap().regs),
            w.expected_after(0, warm + n).regs
        );
    }
}

fn mechanisms(info: &HostInfo) -> Vec<DirtyMechanism> {
    let mut m = vec![DirtyMechanism::GetDirtyLog];
    if info.manual_dirty_log_protect & 1 != 0 {
        m.push(DirtyMechanism::ManualProtect);
    } else {
        println!("manual protect not offered by this host");
    }
    if info.dirty_ring_bytes > 0 || info.dirty_ring_acq_rel_bytes > 0 {
        m.push(DirtyMechanism::Ring);
    } else {
        println!("dirty ring not offered by this host");
    }
    m
}

fn window_set(ws: &[Workload], from: u64, to: u64) -> BTreeSet<u64> {
    ws.iter().flat_map(|w| w.pages_written(from, to)).collect()
}

#[test]
fn dirty_log_reports_exactly_the_pages_written() {
    if !kvm_or_skip("dirty_log_reports_exactly_the_pages_written") {
        return;
    }
    let probe = Vm::new(VmConfig::new(64 * MIB, 1), &[Workload::new(1, 0, 1)]).unwrap();
    let info = probe.host_info().clone();
    drop(probe);
    let ws = two_streams();
    for mech in mechanisms(&info) {
        // A small ring so that windows overflow it and exercise the ring-full exit.
        let cfg = VmConfig {
            dirty: DirtyMode::Force(mech),
            ring_entries: 1024,
            ..VmConfig::new(64 * MIB, 2)
        };
        let vm = Vm::new(cfg, &ws).unwrap();
        let log = vm.dirty_log();
        assert_eq!(log.mechanism(), mech);
        vm.run_until_step(1000, WAIT).unwrap();
        let t = Instant::now();
        log.enable().unwrap();
        let enable_time = t.elapsed();
        let mut bm = DirtyBitmap::default();
        let first = log.clean(&mut bm).unwrap();
        // Nothing ran since enable: either nothing or (INITIALLY_SET) everything is dirty.
        assert!(
            first.dirty_pages == 0 || first.dirty_pages == vm.ram_pages(),
            "{mech:?}: {first:?}"
        );

        // Window 1: exactly the model's write set.
        vm.run_until_step(4000, WAIT).unwrap();
        let s1 = log.clean(&mut bm).unwrap();
        let got: BTreeSet<u64> = bm.iter().collect();
        assert_eq!(got, window_set(&ws, 1000, 4000), "{mech:?} window 1");

        // Peek does not reset: twice the same, then clean hands out the same set.
        vm.run_until_step(4500, WAIT).unwrap();
        let want = window_set(&ws, 4000, 4500);
        let mut p1 = DirtyBitmap::default();
        let mut p2 = DirtyBitmap::default();
        log.peek(&mut p1).unwrap();
        log.peek(&mut p2).unwrap();
        assert_eq!(p1.iter().collect::<BTreeSet<_>>(), want, "{mech:?} peek");
        assert_eq!(p1, p2, "{mech:?} second peek");
        let s2 = log.clean(&mut bm).unwrap();
        assert_eq!(
            bm.iter().collect::<BTreeSet<_>>(),
            want,
            "{mech:?} clean after peek"
        );
        // Nothing ran: the next clean is empty.
        let s3 = log.clean(&mut bm).unwrap();
        assert_eq!(s3.dirty_pages, 0, "{mech:?} idle clean");

        // A long window while the guest runs, harvested live, then a final clean.
        vm.set_target(30_000).unwrap();
        vm.resume();
        let mut live = DirtyBitmap::default();
        let mut acc: BTreeSet<u64> = BTreeSet::new();
        let mut rounds = 0;
        while vm.stopped_at(0) != Some(30_000) || vm.stopped_at(1) != Some(30_000) {
            log.clean(&mut live).unwrap();
            acc.extend(live.iter());
            rounds += 1;
            std::thread::sleep(Duration::from_micros(300));
            assert!(rounds < 100_000, "guest did not reach 30000");
        }
        vm.wait_for_step(30_000, WAIT).unwrap();
        log.clean(&mut live).unwrap();
        acc.extend(live.iter());
        assert_eq!(acc, window_set(&ws, 4500, 30_000), "{mech:?} live window");
        log.disable().unwrap();
        println!(
            "{mech:?}: enable {enable_time:?}; clean of {} pages {:?} (fetch {:?}, reprotect {:?}, ring entries {}); \
             clean after peek {:?}; idle clean {:?}; live rounds {rounds}; ring-full exits {}",
            s1.dirty_pages, s1.total, s1.fetch_time, s1.reprotect_time, s1.ring_entries, s2.total,
            s3.total, log.ring_full_exits()
        );
        if mech == DirtyMechanism::Ring {
            assert!(
                log.ring_full_exits() > 0,
                "the 1024-entry ring never filled"
            );
        }
        vm.shutdown().unwrap();
    }
}

fn measure_pauses(vm: &Vm, rounds: usize) -> (Duration, Duration, u32) {
    vm.set_target(u64::MAX / 2).unwrap();
    vm.resume();
    let mut lat = Vec::new();
    let mut kicks = 0;
    let mut last = 0;
    for _ in 0..rounds {
        // Let every vCPU make progress (under CPU contention a thread may wait for a core).
        let t = Instant::now();
        while vm.progress(0) <= last || vm.progress(vm.vcpu_count() - 1) == 0 {
            assert!(t.elapsed() < WAIT, "no progress after resume");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        let s = vm.pause().unwrap();
        lat.push(s.latency);
        kicks += s.kicks;
        // Paused means frozen: the counter does not move while paused.
        let p = vm.progress(0);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(vm.progress(0), p);
        assert!(p > last, "no progress between pauses");
        last = p;
        // Capturing while paused works.
        vm.capture().unwrap();
        vm.resume();
    }
    vm.pause().unwrap();
    lat.sort();
    (lat[lat.len() / 2], lat[lat.len() - 1], kicks)
}

#[test]
fn pause_resume_latency() {
    if !kvm_or_skip("pause_resume_latency") {
        return;
    }
    let ws = two_streams();
    for n in [1usize, 2] {
        let vm = Vm::new(VmConfig::new(64 * MIB, n), &ws[..n]).unwrap();
        let (median, max, kicks) = measure_pauses(&vm, 30);
        println!(
            "pause latency ({n} vCPU, 30 pauses): median {median:?}, max {max:?}, {kicks} kicks"
        );
        assert!(median < Duration::from_millis(50));
        vm.shutdown().unwrap();
    }
}

/// The result of a run stopped at a step: what must be equal between control and resume.
struct Outcome {
    digest: [u8; 32],
    vcpus: Vec<VcpuState>,
}

fn outcome(vm: &Vm) -> Outcome {
    Outcome {
        digest: vm.memory_digest(),
        vcpus: vm.capture().unwrap().0,
    }
}

fn compare(a: &Outcome, b: &Outcome) -> Vec<String> {
    let mut d = Vec::new();
    if a.digest != b.digest {
        d.push("memory digest differs".to_string());
    }
    for (i, (x, y)) in a.vcpus.iter().zip(&b.vcpus).enumerate() {
        d.extend(
            x.architectural_diff(y)
                .into_iter()
                .map(|s| format!("vCPU {i}: {s}")),
        );
    }
    d
}

/// A live source: runs, is pre-copied with dirty logging while running, then paused and its
/// final dirty pages copied. Returns the page copies (final and without the final copy), the
/// vCPU and VM state (through their byte form, as a saver would store them).
struct Saved {
    pages: std::collections::BTreeMap<u64, Vec<u8>>,
    pages_without_final: std::collections::BTreeMap<u64, Vec<u8>>,
    vcpus: Vec<VcpuState>,
    vm: VmState,
    paused_at: Vec<u64>,
}

fn save_live(ws: &[Workload], cfg: &VmConfig) -> Saved {
    let vm = Vm::new(cfg.clone(), ws).unwrap();
    vm.run_until_step(2000, WAIT).unwrap();
    let log = vm.dirty_log();
    log.enable().unwrap();
    let mut bm = DirtyBitmap::default();
    log.clean(&mut bm).unwrap();
    // No reachable target while live: the pause, not the workload, ends this phase, whatever
    // the speed of the host.
    vm.set_target(u64::MAX / 2).unwrap();
    vm.resume();
    let mut pages = std::collections::BTreeMap::new();
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    // First pass: everything, while the guest runs.
    for gfn in 0..vm.ram_pages() {
        vm.read_page(gfn, &mut buf).unwrap();
        pages.insert(gfn, buf.clone());
    }
    // A few pre-copy rounds.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        log.clean(&mut bm).unwrap();
        for gfn in bm.iter() {
            vm.read_page(gfn, &mut buf).unwrap();
            pages.insert(gfn, buf.clone());
        }
    }
    // Let each vCPU write after the last round (a loaded host may starve a vCPU thread for a
    // while), so the final round has work.
    let marks: Vec<u64> = (0..vm.vcpu_count()).map(|i| vm.progress(i)).collect();
    let t = Instant::now();
    while (0..vm.vcpu_count()).any(|i| vm.progress(i) <= marks[i] + 10) {
        assert!(t.elapsed() < WAIT, "live guest made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    let pause = vm.pause().unwrap();
    let pages_without_final = pages.clone();
    let fin = log.clean(&mut bm).unwrap();
    for gfn in bm.iter() {
        vm.read_page(gfn, &mut buf).unwrap();
        pages.insert(gfn, buf.clone());
    }
    let (vcpus, vm_state) = vm.capture().unwrap();
    let paused_at: Vec<u64> = vcpus.iter().map(|v| v.regs.r8).collect();
    println!(
        "live save: paused in {:?} ({} kicks) at steps {paused_at:?}; final round {} dirty pages",
        pause.latency, pause.kicks, fin.dirty_pages
    );
    assert!(
        fin.dirty_pages > 0,
        "the final round must have work, or the negative control proves nothing"
    );
    // Through bytes, as the saver stores them.
    let vcpus = vcpus
        .iter()
        .map(|v| VcpuState::from_bytes(&v.to_bytes()).unwrap())
        .collect();
    let vm_state = VmState::from_bytes(&vm_state.to_bytes()).unwrap();
    vm.shutdown().unwrap();
    Saved {
        pages,
        pages_without_final,
        vcpus,
        vm: vm_state,
        paused_at,
    }
}

fn resume_and_run(
    cfg: &VmConfig,
    pages: &std::collections::BTreeMap<u64, Vec<u8>>,
    saved: &Saved,
    opts: RestoreOptions,
    target: u64,
    wait: Duration,
) -> hvm_guest::Result<Outcome> {
    let t = Instant::now();
    let (vm, report) = Vm::from_state(
        cfg.clone(),
        pages.iter().map(|(g, p)| (*g, p.as_slice())),
        &saved.vcpus,
        &saved.vm,
        opts,
    )?;
    println!(
        "restore: {:?} ({} pages copied, {} zero pages skipped, copy {:?}, MSRs rejected {:?})",
        t.elapsed(),
        report.pages_copied,
        report.zero_pages_skipped,
        report.copy_time,
        report.msrs_rejected
    );
    vm.run_until_step(target, wait)?;
    let o = outcome(&vm);
    vm.shutdown()?;
    Ok(o)
}

#[test]
fn capture_restore_runs_on_like_control() {
    if !kvm_or_skip("capture_restore_runs_on_like_control") {
        return;
    }
    // Paced so the live phase lasts long enough for pre-copy rounds.
    let ws = [
        Workload {
            seed: 5,
            base_page: 512,
            pages: 4000,
            writes_per_step: 2,
            spin: 3000,
        },
        Workload {
            seed: 6,
            base_page: 10_000,
            pages: 1500,
            writes_per_step: 1,
            spin: 3000,
        },
    ];
    let cfg = VmConfig::new(128 * MIB, 2);
    let saved = save_live(&ws, &cfg);
    let final_step = saved.paused_at.iter().max().copied().unwrap_or(0) + 300_000;

    let control = Vm::new(cfg.clone(), &ws).unwrap();
    control.run_until_step(final_step, WAIT).unwrap();
    let want = outcome(&control);
    control.shutdown().unwrap();
    // The control run is itself what the model says.
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(
            WorkloadRegs::from_kvm(&want.vcpus[i].regs),
            w.expected_after(i, final_step).regs
        );
    }

    let got = resume_and_run(
        &cfg,
        &saved.pages,
        &saved,
        RestoreOptions::default(),
        final_step,
        WAIT,
    )
    .unwrap();
    let diff = compare(&want, &got);
    assert!(
        diff.is_empty(),
        "resumed run differs from control: {diff:?}"
    );

    // Negative controls: each omission must be caught.
    let resume = |pages, opts, wait| resume_and_run(&cfg, pages, &saved, opts, final_step, wait);
    let no_final = resume(&saved.pages_without_final, RestoreOptions::default(), WAIT).unwrap();
    let d = compare(&want, &no_final);
    println!("without the final copy: {d:?}");
    assert!(d.iter().any(|s| s.contains("memory digest")), "{d:?}");

    let no_lapic = resume(
        &saved.pages,
        RestoreOptions {
            skip_lapic: true,
            ..RestoreOptions::default()
        },
        WAIT,
    )
    .unwrap();
    let d = compare(&want, &no_lapic);
    println!("without the LAPIC: {d:?}");
    assert!(d.iter().any(|s| s.contains("lapic")), "{d:?}");

    let no_sregs = resume(
        &saved.pages,
        RestoreOptions {
            skip_sregs: true,
            ..RestoreOptions::default()
        },
        // Expected to fail: in real mode the guest runs garbage under the emulator.
        Duration::from_secs(3),
    );
    match &no_sregs {
        Ok(o) => {
            let d = compare(&want, o);
            println!("without sregs: {d:?}");
            assert!(!d.is_empty());
        }
        Err(e) => println!("without sregs the resumed guest fails: {e}"),
    }
}

#[test]
fn dirty_log_costs_on_a_fully_dirty_slot() {
    if !kvm_or_skip("dirty_log_costs_on_a_fully_dirty_slot") {
        return;
    }
    let probe = Vm::new(VmConfig::new(64 * MIB, 1), &[Workload::new(1, 0, 1)]).unwrap();
    let info = probe.host_info().clone();
    drop(probe);
    let ram = 128 * MIB;
    let pages = ram / PAGE_SIZE;
    let w = Workload {
        seed: 3,
        base_page: 0,
        pages,
        writes_per_step: 16,
        spin: 0,
    };
    // 16 × 50 000 writes over 32 768 pages leave (almost surely) every page written. The
    // first window runs without logging, so the measured one re-dirties memory the outer host
    // has already backed.
    let steps = 50_000;
    let want = w.pages_written(2 * steps, 3 * steps);
    for mech in mechanisms(&info) {
        let cfg = VmConfig {
            dirty: DirtyMode::Force(mech),
            ..VmConfig::new(ram, 1)
        };
        let vm = Vm::new(cfg, &[w]).unwrap();
        vm.run_until_step(steps, WAIT).unwrap();
        let t = Instant::now();
        vm.run_until_step(2 * steps, WAIT).unwrap();
        let baseline = t.elapsed();
        let log = vm.dirty_log();
        let t = Instant::now();
        log.enable().unwrap();
        let enable = t.elapsed();
        let mut bm = DirtyBitmap::default();
        log.clean(&mut bm).unwrap();
        let t = Instant::now();
        vm.run_until_step(3 * steps, WAIT).unwrap();
        let run = t.elapsed();
        let mut peek = DirtyBitmap::default();
        let p = log.peek(&mut peek).unwrap();
        let c = log.clean(&mut bm).unwrap();
        assert_eq!(bm.count(), want.len() as u64, "{mech:?}");
        assert_eq!(peek, bm, "{mech:?}");
        let idle = log.clean(&mut bm).unwrap();
        assert_eq!(idle.dirty_pages, 0);
        println!(
            "{mech:?}, 128 MiB slot, {} of {pages} pages dirty: enable {enable:?}; guest window {baseline:?} without logging, {run:?} with \
             ({:.2} µs more per re-dirtied page); peek {:?}; clean {:?} (fetch {:?}, reprotect {:?}, ring entries {}); \
             idle clean {:?}; ring-full exits {}",
            c.dirty_pages,
            (run.as_secs_f64() - baseline.as_secs_f64()) * 1e6 / want.len() as f64,
            p.total,
            c.total,
            c.fetch_time,
            c.reprotect_time,
            c.ring_entries + p.ring_entries,
            idle.total,
            log.ring_full_exits()
        );
        vm.shutdown().unwrap();
    }
}

#[test]
fn four_gib_guest_runs_and_logs_above_3_gib() {
    if !kvm_or_skip("four_gib_guest_runs_and_logs_above_3_gib") {
        return;
    }
    // The working set sits just below the IOAPIC/LAPIC window (0xfec00000), high in a 4 GiB
    // slot; MAP_NORESERVE keeps the host cost to the pages touched.
    let w = Workload {
        seed: 11,
        base_page: 0xfec00 - 2048,
        pages: 2048,
        writes_per_step: 1,
        spin: 0,
    };
    let vm = Vm::new(VmConfig::new(4 << 30, 1), &[w]).unwrap();
    assert_eq!(vm.ram_pages(), 1 << 20);
    vm.run_until_step(5000, WAIT).unwrap();
    let log = vm.dirty_log();
    let t = Instant::now();
    log.enable().unwrap();
    let enable = t.elapsed();
    let mut bm = DirtyBitmap::default();
    log.clean(&mut bm).unwrap();
    vm.run_until_step(9000, WAIT).unwrap();
    let s = log.clean(&mut bm).unwrap();
    assert_eq!(
        bm.iter().collect::<BTreeSet<_>>(),
        w.pages_written(5000, 9000)
    );
    assert_regs_match(&vm, 0, &w.expected_after(0, 9000));
    let e = w.expected_after(0, 9000);
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    for (g, p) in &e.pages {
        vm.read_page(*g, &mut buf).unwrap();
        assert!(buf == *p, "page {g:#x}");
    }
    println!(
        "4 GiB slot, {:?}: enable {enable:?}, clean of {} pages {:?}",
        log.mechanism(),
        s.dirty_pages,
        s.total
    );
}

#[test]
fn template_state_is_a_fresh_cpl3_vcpu() {
    if !kvm_or_skip("template_state_is_a_fresh_cpl3_vcpu") {
        return;
    }
    let (v, d) = Vm::template_state(2).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].sregs.cs.selector, 0x33);
    assert_eq!(v[1].sregs.efer & 0x500, 0x500);
    assert!(!v[0].cpuid.is_empty() && !v[0].msrs.is_empty());
    // Restoring the template into a fresh VM and comparing captures is lossless.
    let (vm, _) = Vm::from_state(
        VmConfig::new(2 << 20, 2),
        std::iter::empty(),
        &v,
        &d,
        RestoreOptions::default(),
    )
    .unwrap();
    let (w, _) = vm.capture().unwrap();
    for i in 0..2 {
        assert!(v[i].architectural_diff(&w[i]).is_empty(), "vCPU {i}");
    }
}

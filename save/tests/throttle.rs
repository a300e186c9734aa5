//! Throttling on the simulated guest (issue 15): a guest that out-writes the
//! link (a hot 64 MiB at 60 000 page writes/s, twice a 125 MB/s link: the
//! KVM guest's measured rate) gets its final round within the downtime
//! budget only when throttled, for fewer pages than the seed policy; a
//! converging guest is never throttled; the throttle is lifted on success,
//! on a failure and on a cancel. The sim is deterministic, so these are
//! exact statements about its virtual clock, not timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hvm_save::backend::fault::Faulty;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::policy::{StopReason, ThrottleMode};
use hvm_save::saver::{Event, Phase};
use hvm_save::{save, DowntimePolicy, Policy, SaveError, SaveOptions, SaveOutcome, SeedPolicy};

const BUDGET: Duration = Duration::from_millis(50);

fn outpacing() -> SimDomain {
    SimDomain::new(SimConfig {
        memory_mib: 256,
        workload: Workload::HotSet {
            pages: 16_384,
            rate: 60_000.0,
        },
        link_bytes_per_sec: 125_000_000,
        ..SimConfig::default()
    })
    .unwrap()
}

fn converging() -> SimDomain {
    SimDomain::new(SimConfig {
        memory_mib: 256,
        workload: Workload::Uniform { rate: 5_000.0 },
        link_bytes_per_sec: 125_000_000,
        ..SimConfig::default()
    })
    .unwrap()
}

fn live() -> SaveOptions {
    SaveOptions {
        live: true,
        ..SaveOptions::default()
    }
}

fn policy(mode: ThrottleMode) -> DowntimePolicy {
    DowntimePolicy::new(BUDGET).with_throttle(mode)
}

fn run(d: &mut SimDomain, p: &mut dyn Policy) -> SaveOutcome {
    save(d, p, &live(), &mut std::io::sink(), &mut |_| {}).unwrap()
}

#[test]
fn throttling_meets_the_budget_where_the_link_cannot() {
    let mut d = outpacing();
    let auto = run(&mut d, &mut policy(ThrottleMode::Auto));
    assert_eq!(d.throttle(), 0, "lifted after a successful save");
    let off = run(&mut outpacing(), &mut policy(ThrottleMode::Off));
    let seed = run(&mut outpacing(), &mut SeedPolicy::default());
    let (a, o, s) = (&auto.summary, &off.summary, &seed.summary);
    let label = format!("auto {a:?}\noff {o:?}\nseed {s:?}");

    // Without a throttle no policy fits the budget here.
    assert!(o.downtime_us > BUDGET.as_micros() as u64, "{label}");
    assert!(s.downtime_us > BUDGET.as_micros() as u64, "{label}");
    assert_eq!((o.throttle_peak_percent, o.throttled_us), (0, 0), "{label}");
    // With it, the final round fits, for fewer pages than the seed sends.
    assert!(a.downtime_us <= BUDGET.as_micros() as u64, "{label}");
    assert!(
        matches!(a.stop, StopReason::DowntimeReached { .. }),
        "{label}"
    );
    assert!(a.total_sent <= s.total_sent, "{label}");
    assert!(
        a.throttle_peak_percent >= 20 && a.throttled_us > 0,
        "{label}"
    );

    // Per pass: unthrottled passes first, then 20 % and 10 % steps; the
    // guest's progress rate falls with the throttle.
    let pre: Vec<_> = auto
        .passes
        .iter()
        .filter(|p| p.phase == Phase::PreCopy)
        .collect();
    let levels: Vec<u8> = pre.iter().map(|p| p.throttle_percent).collect();
    assert_eq!(levels[0], 0, "{levels:?}");
    let first = levels.iter().position(|&l| l > 0).expect("throttled");
    assert_eq!(levels[first], 20, "{levels:?}");
    assert!(
        levels[first..]
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] + 10),
        "{levels:?}"
    );
    assert_eq!(*levels.iter().max().unwrap(), a.throttle_peak_percent);
    let full = pre[0].guest_rate.expect("the sim models progress");
    for p in &pre {
        let rate = p.guest_rate.expect("the sim models progress");
        let share = rate / full;
        let expect = 1.0 - f64::from(p.throttle_percent) / 100.0;
        assert!((share - expect).abs() < 0.01, "pass {}: {share}", p.iter);
    }
}

#[test]
fn a_converging_guest_is_never_throttled() {
    let mut d = converging();
    let auto = run(&mut d, &mut policy(ThrottleMode::Auto));
    let off = run(&mut converging(), &mut policy(ThrottleMode::Off));
    assert_eq!(auto.summary.throttle_peak_percent, 0, "{:?}", auto.summary);
    assert!(auto.passes.iter().all(|p| p.throttle_percent == 0));
    assert!(!d.calls().contains(&"set_throttle"), "{:?}", d.calls());
    // Identical to the same policy without throttling.
    assert_eq!(auto.summary, off.summary);
}

#[test]
fn the_plateau_tolerance_cuts_wasted_passes() {
    // Unthrottled, the plateau rule stops a run whose rounds barely shrink;
    // with no tolerance it runs on to the page budget's backstop.
    let tolerant = run(&mut outpacing(), &mut policy(ThrottleMode::Off));
    let mut strict = policy(ThrottleMode::Off);
    strict.shrink_tolerance = 0.0;
    let strict = run(&mut outpacing(), &mut strict);
    let (t, s) = (&tolerant.summary, &strict.summary);
    assert!(t.passes < s.passes, "{t:?}\n{s:?}");
    assert!(t.total_sent < s.total_sent, "{t:?}\n{s:?}");
}

#[test]
fn a_failure_lifts_the_throttle() {
    // Where the first throttle step falls among the domain calls (the sim
    // records each call the fault injector counts, in order).
    let mut probe = outpacing();
    run(&mut probe, &mut policy(ThrottleMode::Auto));
    let first = probe
        .calls()
        .iter()
        .position(|c| *c == "set_throttle")
        .expect("throttled") as u64;
    // Fail that call, or a later one while throttled: every way out leaves
    // the guest unthrottled, running, and log-dirty off.
    for fail_at in [first, first + 1, first + 5, first + 20] {
        let mut d = Faulty::new(outpacing(), Some(fail_at));
        let r = save(
            &mut d,
            &mut policy(ThrottleMode::Auto),
            &live(),
            &mut std::io::sink(),
            &mut |_| {},
        );
        assert!(r.is_err(), "call {fail_at} ({:?}) failed", d.failed());
        assert_eq!(d.inner.throttle(), 0, "after {:?} failed", d.failed());
        assert!(d.inner.is_running() && !d.inner.log_dirty_enabled());
        if fail_at > first {
            assert!(d.inner.calls().contains(&"set_throttle"));
        }
    }
}

#[test]
fn a_cancel_lifts_the_throttle() {
    let flag = Arc::new(AtomicBool::new(false));
    let mut d = outpacing();
    let o = SaveOptions {
        cancel: Some(flag.clone()),
        ..live()
    };
    let mut steps = 0;
    let r = save(
        &mut d,
        &mut policy(ThrottleMode::Auto),
        &o,
        &mut std::io::sink(),
        &mut |e| {
            if let Event::Throttle { percent, .. } = e {
                steps += 1;
                assert!(*percent > 0);
                if steps == 2 {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        },
    );
    assert!(matches!(r, Err(SaveError::Cancelled)), "{r:?}");
    assert_eq!(steps, 2);
    assert_eq!(d.throttle(), 0);
    assert!(d.is_running() && !d.log_dirty_enabled());
}

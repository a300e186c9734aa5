//! The default policy against `--policy seed` on every simulated workload
//! (the live-save targets), on a 256 MiB guest so it runs in
//! seconds on the virtual clock:
//!
//! * never more pages than the seed and never a longer final round;
//! * ≥ 30 % fewer pages where the seed cannot converge (it ends on a cap);
//! * the final round within `--max-downtime` wherever the seed's is.
//!
//! On the non-converging run every plateau pass leaves a final round from
//! the same spread (one pass's worth of the working set plus the suspend);
//! the seed's is its last draw. `plateau_stop_is_at_the_low_end` checks
//! that the default's pick is at the low end of every stop point it could
//! have chosen (within 2 %: the plateau rule stops once rounds shrink by
//! less than 5 %, without waiting for a perfectly flat one), which keeps it
//! within 2 % of the seed's.

use std::time::Duration;

use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::policy::StopReason;
use hvm_save::{save, DowntimePolicy, Policy, SaveOptions, SaveOutcome, SaveSummary, SeedPolicy};

fn workloads() -> Vec<(&'static str, Workload)> {
    vec![
        ("idle", Workload::Idle),
        ("uniform 5k/s", Workload::Uniform { rate: 5_000.0 }),
        ("uniform 40k/s", Workload::Uniform { rate: 40_000.0 }),
        (
            "hot 8MiB 200k/s",
            Workload::HotSet {
                pages: 2048,
                rate: 200_000.0,
            },
        ),
        (
            "hot 64MiB 400k/s",
            Workload::HotSet {
                pages: 16_384,
                rate: 400_000.0,
            },
        ),
        ("sweep 12k/s", Workload::Sweep { rate: 12_000.0 }),
        (
            "bursts 150k/s",
            Workload::Bursts {
                rate: 150_000.0,
                period: Duration::from_millis(100),
                duty: 0.3,
            },
        ),
    ]
}

fn run(w: &Workload, policy: &mut dyn Policy) -> SaveSummary {
    outcome(w, policy).summary
}

/// A live save of the 256 MiB sim under `w`.
fn outcome(w: &Workload, policy: &mut dyn Policy) -> SaveOutcome {
    let mut sim = SimDomain::new(SimConfig {
        memory_mib: 256,
        workload: w.clone(),
        dm_rate: 200.0,
        ..SimConfig::default()
    })
    .unwrap();
    let opts = SaveOptions {
        live: true,
        ..SaveOptions::default()
    };
    save(&mut sim, policy, &opts, &mut std::io::sink(), &mut |_| {}).unwrap()
}

/// How far above the seed's (or the median) stop point a plateau's final
/// round may land: the plateau's own spread is ±5 % here (see
/// `plateau_stop_is_at_the_low_end`).
const PLATEAU_SLACK: f64 = 0.02;

fn converged(s: &SaveSummary) -> bool {
    s.stop == StopReason::SmallRound
}

#[test]
fn default_policy_meets_the_targets_on_every_workload() {
    let budget = Duration::from_millis(50);
    let mut non_converging = 0;
    for (name, w) in workloads() {
        let seed = run(&w, &mut SeedPolicy::default());
        let ours = run(&w, &mut DowntimePolicy::new(budget));
        let label = format!("{name}: seed {seed:?}\n  default {ours:?}");
        assert!(ours.total_sent <= seed.total_sent, "{label}");
        assert!(ours.passes <= seed.passes, "{label}");
        if !converged(&seed) {
            non_converging += 1;
            assert!(
                (ours.total_sent as f64) <= 0.7 * seed.total_sent as f64,
                "{label}: a non-converging run must send >= 30 % fewer pages"
            );
        }
        if converged(&seed) {
            assert!(ours.downtime_us <= seed.downtime_us, "{label}");
            assert!(ours.downtime_pages <= seed.downtime_pages, "{label}");
        } else {
            // Both final rounds are draws from the plateau's spread; the
            // plateau rule's 5 % tolerance stops as soon as rounds stop
            // shrinking, not after a perfectly flat one, and may draw a
            // round up to PLATEAU_SLACK above the seed's last.
            let slack = |v: u64| v as f64 * (1.0 + PLATEAU_SLACK);
            assert!(
                ours.downtime_us as f64 <= slack(seed.downtime_us),
                "{label}"
            );
            assert!(
                ours.downtime_pages as f64 <= slack(seed.downtime_pages),
                "{label}"
            );
        }
        if seed.downtime_us as u128 <= budget.as_micros() {
            assert!(
                ours.downtime_us as u128 <= budget.as_micros(),
                "{label}: the working set allows the budget"
            );
        }
    }
    assert_eq!(non_converging, 1, "the set must keep a non-converging run");
}

/// Suspends after a fixed pass: to enumerate every stop point.
struct StopAfter(u32);

impl Policy for StopAfter {
    fn name(&self) -> &'static str {
        "stop-after"
    }
    fn after_pass(&mut self, r: &hvm_save::policy::PassReport) -> hvm_save::policy::Decision {
        match SeedPolicy::default().caps(r) {
            Some(why) => hvm_save::policy::Decision::StopAndCopy(why),
            None if r.iter >= self.0 => {
                hvm_save::policy::Decision::StopAndCopy(StopReason::MaxIters)
            }
            None => hvm_save::policy::Decision::Continue,
        }
    }
}

#[test]
fn plateau_stop_is_at_the_low_end() {
    let (_, w) = workloads()
        .into_iter()
        .find(|(n, _)| n.starts_with("hot 64MiB"))
        .unwrap();
    let seed = run(&w, &mut SeedPolicy::default());
    let ours = run(&w, &mut DowntimePolicy::default());
    assert!(!converged(&seed), "{seed:?}");
    // Every stop point after the first two passes that keeps the 30 % page
    // saving.
    let mut finals = Vec::new();
    for k in 3..seed.passes - 1 {
        let s = run(&w, &mut StopAfter(k));
        if (s.total_sent as f64) <= 0.7 * seed.total_sent as f64 {
            finals.push(s.downtime_us);
        }
    }
    assert!(finals.len() >= 5, "{finals:?}");
    finals.sort_unstable();
    let median = finals[finals.len() / 2];
    assert!(
        ours.downtime_us as f64 <= median as f64 * (1.0 + PLATEAU_SLACK),
        "default {} us, candidates {finals:?}",
        ours.downtime_us
    );
    // The spread is small: the plateau, not the stop point, sets the final
    // round, so the pages saved are not paid for in downtime.
    let (lo, hi) = (finals[0] as f64, finals[finals.len() - 1] as f64);
    assert!(hi <= lo * 1.15, "{finals:?}");
}

/// When the plateau's final round exceeds `--max-downtime`, the default
/// policy spends the suspend wait sending: a `suspending` pass appears, the
/// final round shrinks below the seed's and below the same policy's without
/// the wait (a budget it already meets), and the page saving holds.
#[test]
fn a_busted_budget_sends_while_the_guest_suspends() {
    let (_, w) = workloads()
        .into_iter()
        .find(|(n, _)| n.starts_with("hot 64MiB"))
        .unwrap();
    let seed = run(&w, &mut SeedPolicy::default());
    let relaxed = outcome(&w, &mut DowntimePolicy::new(Duration::from_secs(1)));
    let tight = outcome(&w, &mut DowntimePolicy::new(Duration::from_millis(20)));
    let waits = |o: &SaveOutcome| {
        o.passes
            .iter()
            .filter(|p| p.phase == hvm_save::saver::Phase::Suspending)
            .count()
    };
    assert_eq!(waits(&relaxed), 0, "{:?}", relaxed.summary);
    assert_eq!(waits(&tight), 1, "{:?}", tight.summary);
    let (r, t) = (&relaxed.summary, &tight.summary);
    assert!(t.downtime_pages < r.downtime_pages, "{t:?}\n{r:?}");
    assert!(t.downtime_us < seed.downtime_us, "{t:?}\n{seed:?}");
    assert!(
        (t.total_sent as f64) <= 0.7 * seed.total_sent as f64,
        "{t:?}\n{seed:?}"
    );
}

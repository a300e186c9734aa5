//! `--policy seed` on scripted dirty schedules: per-pass numbers and the stop
//! pass must be what xc_hvm_save's rules give, computed here from sets
//! without the saver's code; proptest over random schedules.

mod common;

use std::collections::BTreeSet;

use hvm_save::backend::sim::{ram_index_to_pfn, SimConfig, SimDomain, Workload};
use hvm_save::saver::Phase;
use hvm_save::{save, SaveOptions, SeedPolicy};
use proptest::prelude::*;

const MEM_MIB: u64 = 16;

/// Expected (sent, skipped) per pass and the number of pre-copy passes, by
/// the seed's rules, for a schedule where pass k's writes all land before
/// its first peek. Holes and magic pages are never sent; skipped counts them.
fn model(schedule: &[BTreeSet<u64>], size: u64, skipped_pfns: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let present = |n: &u64| !skipped_pfns.contains(n);
    let mut to_send: BTreeSet<u64> = (0..size).collect();
    let empty = BTreeSet::new();
    let mut total = 0u64;
    let mut out = Vec::new();
    for iter in 1u32.. {
        let dirty = schedule.get(iter as usize - 1).unwrap_or(&empty);
        let skip = to_send.intersection(dirty).count() as u64;
        let sent = to_send.difference(dirty).filter(|n| present(n)).count() as u64;
        total += sent;
        out.push((sent, skip));
        let stop = iter >= 29 || sent + skip < 50 || total > size * 3;
        to_send = dirty.clone();
        if stop {
            // Final round: everything dirtied in the last pre-copy pass.
            let fin = to_send.iter().filter(|n| present(n)).count() as u64;
            out.push((fin, 0));
            return out;
        }
    }
    unreachable!()
}

fn run(schedule: Vec<BTreeSet<u64>>) -> (Vec<(u64, u64, Phase)>, SimDomain, Vec<u8>) {
    let cfg = SimConfig {
        memory_mib: MEM_MIB,
        workload: Workload::Script(
            schedule
                .iter()
                .map(|s| s.iter().copied().collect())
                .collect(),
        ),
        ..SimConfig::default()
    };
    let mut sim = SimDomain::new(cfg).unwrap();
    let opts = SaveOptions {
        live: true,
        ..SaveOptions::default()
    };
    let mut image = Vec::new();
    let o = save(
        &mut sim,
        &mut SeedPolicy::default(),
        &opts,
        &mut image,
        &mut |_| {},
    )
    .unwrap();
    let passes = o
        .passes
        .iter()
        .map(|p| (p.sent, p.skipped, p.phase))
        .collect();
    (passes, sim, image)
}

fn setup() -> (u64, BTreeSet<u64>, Vec<u64>) {
    let sim = SimDomain::new(SimConfig {
        memory_mib: MEM_MIB,
        ..SimConfig::default()
    })
    .unwrap();
    // Live, Cirrus: nr_pages includes 0x800 VRAM pages, which the seed
    // subtracts again; max_pfn is the top RAM pfn.
    let size = sim.top_pfn() + 1;
    let m = sim.magic();
    let mut skipped: BTreeSet<u64> = (0xA0..0xC0).collect();
    skipped.extend([m.store, m.ioreq, m.bufioreq]);
    let ram: Vec<u64> = (0..sim.ram_pages())
        .map(ram_index_to_pfn)
        .filter(|p| !skipped.contains(p))
        .collect();
    (size, skipped, ram)
}

fn check(schedule: Vec<BTreeSet<u64>>) {
    let (size, skipped, _) = setup();
    let want = model(&schedule, size, &skipped);
    let (got, sim, image) = run(schedule);
    let got_pairs: Vec<(u64, u64)> = got.iter().map(|(s, k, _)| (*s, *k)).collect();
    assert_eq!(got_pairs, want);
    assert_eq!(got.last().map(|g| g.2), Some(Phase::Final));
    let r = common::replay(&image);
    assert_eq!(
        common::replay_digest(&r).total,
        common::sim_digest(&sim).total
    );
}

fn pick(ram: &[u64], from: usize, n: usize, stride: usize) -> BTreeSet<u64> {
    (0..n)
        .map(|i| ram[(from + i * stride) % ram.len()])
        .collect()
}

#[test]
fn shrinking_schedule_stops_on_small_round() {
    let (_, _, ram) = setup();
    let schedule = vec![
        pick(&ram, 0, 400, 7),
        pick(&ram, 100, 300, 7),
        pick(&ram, 200, 200, 11),
        pick(&ram, 50, 20, 13),
    ];
    check(schedule.clone());
    // Spelled out: pass 5 sends the 20 pages of pass 4 and nothing is
    // dirty, so 20 + 0 < 50 stops; the final round has nothing to send.
    let (got, _, _) = run(schedule);
    assert_eq!(got.len(), 6);
    assert_eq!((got[4].0, got[4].1), (20, 0));
    assert_eq!(got[5].0, 0);
}

#[test]
fn steady_dirtying_stops_at_29_iterations() {
    let (_, _, ram) = setup();
    let schedule: Vec<_> = (0..40).map(|k| pick(&ram, k * 31, 120, 17)).collect();
    check(schedule.clone());
    let (got, _, _) = run(schedule);
    assert_eq!(got.len(), 30, "29 pre-copy passes and the final round");
}

#[test]
fn heavy_dirtying_stops_at_three_times_memory() {
    let (size, _, ram) = setup();
    // Two disjoint halves dirtied in turn: every pass resends 1800 pages.
    let schedule: Vec<_> = (0..40)
        .map(|k| pick(&ram, (k % 2) * 1800, 1800, 1))
        .collect();
    check(schedule.clone());
    let (got, _, _) = run(schedule);
    let pre: u64 = got[..got.len() - 1].iter().map(|g| g.0).sum();
    assert!(pre > 3 * size && got.len() < 30, "{} passes", got.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_schedules_follow_the_seed_rules(
        spec in proptest::collection::vec((0usize..4000, 0usize..600, 1usize..40), 0..12)
    ) {
        let (_, _, ram) = setup();
        let schedule: Vec<_> = spec.iter().map(|&(from, n, stride)| pick(&ram, from, n, stride)).collect();
        check(schedule);
    }
}

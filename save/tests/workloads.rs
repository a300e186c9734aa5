//! For every workload × policy, replaying the image gives exactly the sim
//! guest's memory at suspend time, and that digest is the manifest's.

mod common;

use std::time::Duration;

use common::SendWhileSuspending;
use hvm_format::digest::hex;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::saver::Phase;
use hvm_save::{save, DowntimePolicy, Envelope, Policy, SaveOptions, SaveOutcome, SeedPolicy};

fn workloads() -> Vec<Workload> {
    vec![
        Workload::Idle,
        Workload::Uniform { rate: 30_000.0 },
        Workload::HotSet {
            pages: 1500,
            rate: 400_000.0,
        },
        Workload::Sweep { rate: 60_000.0 },
        Workload::Bursts {
            rate: 200_000.0,
            period: Duration::from_millis(40),
            duty: 0.25,
        },
    ]
}

fn check(cfg: SimConfig, policy: &mut dyn Policy, opts: &SaveOptions) -> SaveOutcome {
    let label = format!(
        "{} / {} / live={}",
        cfg.workload.name(),
        policy.name(),
        opts.live
    );
    let mut sim = SimDomain::new(cfg).unwrap();
    let mut image = Vec::new();
    let outcome = save(&mut sim, policy, opts, &mut image, &mut |_| {}).expect(&label);
    assert!(
        sim.is_suspended(),
        "{label}: guest stays suspended after success"
    );
    assert!(!sim.log_dirty_enabled(), "{label}: log-dirty off");
    let r = common::replay(&image);
    let got = common::replay_digest(&r);
    let want = common::sim_digest(&sim);
    assert_eq!(
        got.differing_ranges(&want),
        Vec::<u64>::new(),
        "{label}: replayed memory differs from the guest at suspend time"
    );
    assert_eq!(got.total, want.total, "{label}");
    let m = outcome.manifest.clone().expect("manifest asked for");
    assert_eq!(
        m.memory_sha256,
        hex(&want.total),
        "{label}: manifest digest"
    );
    assert_eq!(m.pages, want.pages);
    assert_eq!(m.vcpus.len(), r.vcpus.len());
    for (v, ctx) in m.vcpus.iter().zip(&r.vcpus) {
        assert_eq!(v.sha256, hex(&hvm_format::digest::vcpu_digest(ctx)));
        assert_eq!(ctx.len(), 5168);
    }
    assert_eq!(r.hvm_blob.len(), 3071 + 1384 * (r.vcpus.len() - 1));
    let s = &outcome.summary;
    assert_eq!(s.passes as usize, outcome.passes.len());
    assert_eq!(
        s.total_sent,
        outcome.passes.iter().map(|p| p.sent).sum::<u64>()
    );
    if opts.live {
        assert!(
            s.passes >= 2,
            "{label}: a live save has pre-copy and a final round"
        );
    }
    if opts.debug {
        assert!(r.verify_batches > 0, "{label}: verify resend present");
    }
    outcome
}

fn cfg(workload: Workload) -> SimConfig {
    SimConfig {
        memory_mib: 16,
        vcpus: 2,
        workload,
        dm_rate: 500.0,
        unmappable: 7,
        ..SimConfig::default()
    }
}

/// `--live --debug --max-rate 200` with a manifest.
fn live_debug_rate_limited() -> SaveOptions {
    SaveOptions {
        debug: true,
        max_rate: Some(200_000_000),
        ..live_with_manifest()
    }
}

fn live_with_manifest() -> SaveOptions {
    SaveOptions {
        live: true,
        manifest: true,
        ..SaveOptions::default()
    }
}

#[test]
fn every_workload_and_policy_replays_to_the_suspended_guest() {
    let opts = live_with_manifest();
    for w in workloads() {
        check(cfg(w.clone()), &mut SeedPolicy::default(), &opts);
        check(
            cfg(w.clone()),
            &mut DowntimePolicy::new(Duration::from_millis(50)),
            &opts,
        );
        check(
            cfg(w.clone()),
            &mut DowntimePolicy::new(Duration::from_millis(2)),
            &opts,
        );
    }
}

/// Sending while the guest acknowledges the suspend must still replay to
/// exactly the stopped guest (pages copied in the wait and dirtied again
/// must reach the final round), and with the same stop decisions it can only
/// shrink the final round.
#[test]
fn sending_while_suspending_replays_exactly_and_shrinks_the_final_round() {
    let opts = live_with_manifest();
    for w in workloads() {
        let busy = matches!(w, Workload::Uniform { .. } | Workload::HotSet { .. });
        let seed = check(cfg(w.clone()), &mut SeedPolicy::default(), &opts);
        let ours = check(
            cfg(w.clone()),
            &mut SendWhileSuspending(SeedPolicy::default()),
            &opts,
        );
        let label = format!(
            "{}: seed {:?}\n ours {:?}",
            w.name(),
            seed.summary,
            ours.summary
        );
        let waits: Vec<_> = ours
            .passes
            .iter()
            .filter(|p| p.phase == Phase::Suspending)
            .collect();
        assert!(waits.len() <= 1, "{label}");
        if busy {
            assert_eq!(waits.len(), 1, "{label}: a running guest makes a wait pass");
            assert!(waits[0].sent > 0, "{label}");
            assert!(
                ours.summary.downtime_pages < seed.summary.downtime_pages,
                "{label}: the final round shrinks"
            );
        }
        assert!(
            ours.summary.downtime_pages <= seed.summary.downtime_pages,
            "{label}"
        );
        // The wait pass sits between the last pre-copy pass and the final.
        let phases: Vec<Phase> = ours.passes.iter().map(|p| p.phase).collect();
        assert_eq!(phases.last(), Some(&Phase::Final), "{label}");
        if let Some(k) = phases.iter().position(|p| *p == Phase::Suspending) {
            assert_eq!(k + 2, phases.len(), "{label}");
        }
    }
    // The same with --debug and --max-rate, which share the batch path.
    let opts = live_debug_rate_limited();
    check(
        cfg(Workload::HotSet {
            pages: 1500,
            rate: 400_000.0,
        }),
        &mut SendWhileSuspending(DowntimePolicy::default()),
        &opts,
    );
}

#[test]
fn non_live_debug_and_rate_limited_saves_replay() {
    for w in workloads() {
        let opts = SaveOptions {
            live: false,
            debug: true,
            manifest: true,
            ..SaveOptions::default()
        };
        check(cfg(w.clone()), &mut SeedPolicy::default(), &opts);
        let opts = live_debug_rate_limited();
        check(cfg(w), &mut DowntimePolicy::default(), &opts);
    }
}

#[test]
#[ignore = "needs ~9 GiB of RAM and minutes in debug; run with --release --ignored"]
fn stdvga_and_big_guests_cover_the_holes() {
    // 4 GiB guest: RAM above the MMIO hole; non-live to keep it quick.
    let c = SimConfig {
        memory_mib: 4096,
        stdvga: true,
        ..SimConfig::default()
    };
    let mut sim = SimDomain::new(c).unwrap();
    let mut image = Vec::new();
    let opts = SaveOptions::default();
    save(
        &mut sim,
        &mut SeedPolicy::default(),
        &opts,
        &mut image,
        &mut |_| {},
    )
    .unwrap();
    // Compare in place (no copy of 4 GiB): a non-live save sends each pfn
    // once, so every page must equal the suspended guest's.
    let mut r = hvm_format::stream::SliceReader::new(&image, hvm_format::WordSize::W64, 0);
    let (mut pages, mut above_hole) = (0u64, 0u64);
    while let Some(item) = r.next().unwrap() {
        match item {
            hvm_format::stream::Item::MaxPfn { value, .. } => assert_eq!(value, 0x10FFFF),
            hvm_format::stream::Item::Batch(b) => {
                for (e, page, _) in b.pages() {
                    let pfn = e.pfn().0;
                    assert!(!(0xA0..0xC0).contains(&pfn) && !(0xF0000..0x100000).contains(&pfn));
                    assert_eq!(Some(page), sim.page(pfn), "pfn {pfn:#x}");
                    pages += 1;
                    above_hole += u64::from(pfn >= 0x100000);
                }
            }
            _ => {}
        }
    }
    // 4096 MiB: 0x100000 - 0x20 RAM pages less the 3 magic ones; the top
    // 0x10000 of them live above the MMIO hole.
    assert_eq!(pages, 0x100000 - 0x20 - 3);
    assert_eq!(above_hole, 0x10000);
}

#[test]
fn rate_limit_slows_the_virtual_clock() {
    let c = cfg(Workload::Idle);
    let run = |rate: Option<u64>| {
        let mut sim = SimDomain::new(c.clone()).unwrap();
        let opts = SaveOptions {
            max_rate: rate,
            ..SaveOptions::default()
        };
        let o = save(
            &mut sim,
            &mut SeedPolicy::default(),
            &opts,
            &mut std::io::sink(),
            &mut |_| {},
        )
        .unwrap();
        o.summary.downtime_us
    };
    let free = run(None);
    let limited = run(Some(50_000_000));
    // 16 MiB (16.7 MB + pfn words) at 50 MB/s ≈ 336 ms; unlimited at the
    // 1 GB/s modelled link ≈ 17 ms.
    assert!(limited > 320_000 && limited < 360_000, "{limited}");
    assert!(free > 10_000 && free < 25_000, "{free}");
}

#[test]
fn xend_envelope_wraps_the_stream() {
    let mut sim = SimDomain::new(cfg(Workload::Idle)).unwrap();
    let mut image = Vec::new();
    let opts = SaveOptions {
        envelope: Envelope::Xend {
            domid: 7,
            name: "guest".into(),
        },
        ..SaveOptions::default()
    };
    let o = save(
        &mut sim,
        &mut SeedPolicy::default(),
        &opts,
        &mut image,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(&image[..16], b"LinuxGuestRecord");
    let len = u32::from_be_bytes(image[16..20].try_into().unwrap()) as usize;
    let cfg_text = std::str::from_utf8(&image[20..20 + len]).unwrap();
    assert!(cfg_text.starts_with("(domain (domid 7) (name guest) (memory 16)"));
    let stream = &image[20 + len..20 + len + o.summary.stream_bytes as usize];
    let r = common::replay(stream);
    assert_eq!(r.vcpus.len(), 2);
    let tail = &image[20 + len + o.summary.stream_bytes as usize..];
    assert_eq!(&tail[..21], b"QemuDeviceModelRecord");
    assert_eq!(&tail[21..25], &0x5145_564Du32.to_be_bytes());
}

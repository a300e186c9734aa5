//! Fault injection at every Domain call: the guest ends up running, log-dirty
//! off, and no file left. Also cancellation (what SIGINT/SIGTERM trigger).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;

use hvm_save::backend::fault::Faulty;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::saver::Event;
use hvm_save::sink::Sink;
use hvm_save::{save, DowntimePolicy, Envelope, SaveError, SaveOptions};

fn sim() -> SimDomain {
    SimDomain::new(SimConfig {
        memory_mib: 16,
        vcpus: 2,
        workload: Workload::Uniform { rate: 20_000.0 },
        dm_rate: 1000.0,
        unmappable: 3,
        paused_once: true,
        ..SimConfig::default()
    })
    .unwrap()
}

fn opts(live: bool) -> SaveOptions {
    SaveOptions {
        live,
        debug: true,
        manifest: true,
        envelope: Envelope::Xend {
            domid: 1,
            name: "f".into(),
        },
        ..SaveOptions::default()
    }
}

#[test]
fn every_call_failing_leaves_the_guest_running_and_no_file() {
    for live in [true, false] {
        let mut clean = Faulty::new(sim(), None);
        let mut out = Vec::new();
        save(
            &mut clean,
            &mut DowntimePolicy::default(),
            &opts(live),
            &mut out,
            &mut |_| {},
        )
        .unwrap();
        let total = clean.calls();
        assert!(total > 20, "{total} calls");
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..total {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("img");
            let mut sink = Sink::file(&dest, false).unwrap();
            let mut d = Faulty::new(sim(), Some(k));
            let r = save(
                &mut d,
                &mut DowntimePolicy::default(),
                &opts(live),
                &mut sink,
                &mut |_| {},
            );
            let failed = d.failed().expect("the fault fired");
            seen.insert(failed);
            match r {
                Err(_) => {
                    sink.abort();
                    assert!(
                        !d.inner.is_suspended(),
                        "call {k} ({failed}): guest resumed"
                    );
                    assert!(
                        !d.inner.log_dirty_enabled(),
                        "call {k} ({failed}): log-dirty off"
                    );
                    assert_eq!(
                        std::fs::read_dir(dir.path()).unwrap().count(),
                        0,
                        "call {k} ({failed}): nothing left"
                    );
                }
                Ok(_) => {
                    // Only the final log-dirty OFF is tolerated, as the seed
                    // did ("Warning - couldn't disable shadow mode").
                    assert_eq!(failed, "log_dirty_off", "call {k}");
                    sink.commit().unwrap();
                    assert!(dest.exists());
                }
            }
        }
        let expect: &[&str] = if live {
            &[
                "platform",
                "info",
                "hvm_param",
                "log_dirty_enable",
                "dm_dirty_init",
                "log_dirty_peek",
                "map_batch",
                "log_dirty_clean",
                "dm_flip",
                "dm_take",
                "request_suspend",
                "unpause",
                "vcpu_context",
                "hvm_context",
                "device_model_state",
                "log_dirty_off",
            ]
        } else {
            &[
                "platform",
                "info",
                "hvm_param",
                "map_batch",
                "request_suspend",
                "unpause",
                "vcpu_context",
                "hvm_context",
                "device_model_state",
            ]
        };
        for c in expect {
            assert!(seen.contains(c), "live={live}: no fault injected at {c}");
        }
    }
}

/// The same with the suspend wait spent sending: a fault at any call inside
/// the wait (poll, CLEAN, map) still resumes the guest and leaves no file.
#[test]
fn faults_while_sending_during_the_suspend_wait() {
    let hot = || {
        SimDomain::new(SimConfig {
            memory_mib: 16,
            workload: Workload::HotSet {
                pages: 800,
                rate: 300_000.0,
            },
            dm_rate: 1000.0,
            unmappable: 3,
            ..SimConfig::default()
        })
        .unwrap()
    };
    let policy = || common::SendWhileSuspending(DowntimePolicy::default());
    let mut clean = Faulty::new(hot(), None);
    let probe = save(
        &mut clean,
        &mut policy(),
        &opts(true),
        &mut Vec::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(
        probe
            .passes
            .iter()
            .any(|p| p.phase == hvm_save::saver::Phase::Suspending),
        "{:?}",
        probe.summary
    );
    let total = clean.calls();
    let mut failed_in_wait = 0;
    for k in 0..total {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img");
        let mut sink = Sink::file(&dest, false).unwrap();
        let mut d = Faulty::new(hot(), Some(k));
        let mut waiting = false;
        let r = save(&mut d, &mut policy(), &opts(true), &mut sink, &mut |e| {
            if let Event::PassStarted { phase, .. } = e {
                waiting = *phase == hvm_save::saver::Phase::Suspending;
            }
        });
        let failed = d.failed().expect("the fault fired");
        match r {
            Err(_) => {
                failed_in_wait += u32::from(waiting);
                sink.abort();
                assert!(!d.inner.is_suspended(), "call {k} ({failed}): resumed");
                assert!(!d.inner.log_dirty_enabled(), "call {k} ({failed})");
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
            }
            Ok(_) => assert_eq!(failed, "log_dirty_off", "call {k}"),
        }
    }
    assert!(
        failed_in_wait >= 3,
        "faults inside the wait: {failed_in_wait}"
    );
}

#[test]
fn cancellation_resumes_and_turns_log_dirty_off() {
    let flag = Arc::new(AtomicBool::new(false));
    let mut d = sim();
    let o = SaveOptions {
        cancel: Some(flag.clone()),
        ..opts(true)
    };
    let mut batches = 0;
    let r = save(
        &mut d,
        &mut DowntimePolicy::default(),
        &o,
        &mut Vec::new(),
        &mut |e| {
            if let Event::BatchWritten { .. } = e {
                batches += 1;
                if batches == 3 {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        },
    );
    assert!(matches!(r, Err(SaveError::Cancelled)), "{r:?}");
    assert!(d.is_running() && !d.log_dirty_enabled());
}

#[test]
fn cancellation_after_suspend_resumes_the_guest() {
    let flag = Arc::new(AtomicBool::new(false));
    let mut d = sim();
    let o = SaveOptions {
        cancel: Some(flag.clone()),
        ..opts(true)
    };
    let r = save(
        &mut d,
        &mut DowntimePolicy::default(),
        &o,
        &mut Vec::new(),
        &mut |e| {
            if let Event::Suspended { .. } = e {
                flag.store(true, Ordering::SeqCst);
            }
        },
    );
    assert!(matches!(r, Err(SaveError::Cancelled)), "{r:?}");
    assert!(d.is_running(), "resumed");
    assert_eq!(d.resumes(), 1);
    assert!(!d.log_dirty_enabled());
}

#[test]
fn closed_writer_is_a_clean_error() {
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut d = sim();
    let r = save(
        &mut d,
        &mut DowntimePolicy::default(),
        &opts(true),
        &mut Closed,
        &mut |_| {},
    );
    assert!(r.is_err());
    assert!(d.is_running() && !d.log_dirty_enabled());
}

//! Throttling the KVM guest the way QEMU's `cpu-throttle` does: a thread
//! lets the vCPUs run for a [`TIMESLICE`], then parks them for
//! `percent / (100 − percent)` of it, so they sleep `percent` % of the
//! time. Parking is [`Vm::pause`] (kick out of `KVM_RUN`, wait until
//! parked), which takes 0.2–0.4 ms here, well inside the slice.
//!
//! The thread only ever resumes vCPUs it parked itself, and the backend
//! stops it (joins it) before it suspends the guest for good, so the two
//! never fight over the pause flag. Dropping the [`Throttler`] lifts the
//! throttle: the thread resumes what it parked and exits.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hvm_guest::Vm;

/// Running time between two pauses: QEMU's `CPU_THROTTLE_TIMESLICE_NS`.
pub const TIMESLICE: Duration = Duration::from_millis(10);
/// Longest wait for the vCPUs to park before the throttle gives up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the vCPUs sleep per [`TIMESLICE`] at `percent`.
pub fn sleep_per_slice(percent: u8) -> Duration {
    let p = u32::from(percent.min(99));
    TIMESLICE * p / (100 - p)
}

#[derive(Default)]
struct State {
    percent: u8,
    quit: bool,
    /// With `quit`: leave vCPUs the thread has parked parked.
    hold: bool,
    failure: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The throttle thread of one VM.
pub struct Throttler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Throttler {
    /// Starts the thread, unthrottled.
    pub fn start(vm: Arc<Vm>) -> std::io::Result<Throttler> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hvm-throttle".into())
            .spawn(move || run(&vm, &sh))?;
        Ok(Throttler {
            shared,
            thread: Some(thread),
        })
    }

    /// Sets the throttle; fails if the thread could not park the vCPUs
    /// earlier (it then stopped throttling).
    pub fn set(&self, percent: u8) -> Result<(), String> {
        let mut st = self.shared.lock();
        if let Some(f) = st.failure.take() {
            return Err(f);
        }
        st.percent = percent.min(99);
        self.shared.cv.notify_all();
        Ok(())
    }
}

impl Throttler {
    /// Ends the thread for a suspend: vCPUs it has parked stay parked.
    /// Resuming them only for the suspend to park them again would let the
    /// guest run, and dirty pages into the final round, in between (several
    /// ms on a loaded host, hundreds of pages at full speed).
    pub fn stop_holding(mut self) {
        {
            let mut st = self.shared.lock();
            st.quit = true;
            st.hold = true;
            self.shared.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Throttler {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.quit = true;
            st.percent = 0;
            self.shared.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits on the condition variable until `deadline`, or until `stop` says
/// the state changed enough to end the wait.
fn wait_until<'a>(
    sh: &'a Shared,
    mut st: MutexGuard<'a, State>,
    deadline: Instant,
    stop: impl Fn(&State) -> bool,
) -> MutexGuard<'a, State> {
    while !stop(&st) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if left.is_zero() {
            break;
        }
        st = sh
            .cv
            .wait_timeout(st, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    st
}

fn run(vm: &Vm, sh: &Shared) {
    let mut st = sh.lock();
    loop {
        if st.quit {
            return;
        }
        if st.percent == 0 {
            st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        // Run for a slice (a lifted throttle or quit ends it early).
        st = wait_until(sh, st, Instant::now() + TIMESLICE, |s| {
            s.quit || s.percent == 0
        });
        if st.quit || st.percent == 0 {
            continue;
        }
        let p = st.percent;
        drop(st);
        if let Err(e) = vm.pause_timeout(PAUSE_TIMEOUT) {
            vm.resume();
            st = sh.lock();
            st.failure = Some(format!("throttle: parking the vCPUs: {e}"));
            st.percent = 0;
            continue;
        }
        st = sh.lock();
        let until = Instant::now() + sleep_per_slice(p);
        st = wait_until(sh, st, until, |s| s.quit || s.percent < p);
        if st.quit && st.hold {
            return;
        }
        vm.resume();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_share_matches_the_percent() {
        assert_eq!(sleep_per_slice(0), Duration::ZERO);
        assert_eq!(sleep_per_slice(20), Duration::from_micros(2500));
        assert_eq!(sleep_per_slice(50), TIMESLICE);
        assert_eq!(sleep_per_slice(99), TIMESLICE * 99);
        assert_eq!(sleep_per_slice(200), TIMESLICE * 99);
        for p in [20u8, 30, 60, 90] {
            let s = sleep_per_slice(p).as_secs_f64();
            let share = s / (s + TIMESLICE.as_secs_f64());
            assert!((share - f64::from(p) / 100.0).abs() < 1e-6, "{p}: {share}");
        }
    }
}

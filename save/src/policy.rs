//! When to stop pre-copying and suspend, and how fast to send.
//!
//! [`SeedPolicy`] is `xc_hvm_save`'s rule set exactly. [`DowntimePolicy`]
//! (the default) keeps the seed's caps as a backstop but stops as soon as
//! the stop-and-copy round is predicted to fit the downtime budget, or as
//! soon as rounds stop shrinking (more rounds would only resend the same
//! working set).

use std::time::Duration;

use hvm_format::PAGE_SIZE;

/// `DEF_MAX_ITERS`: at most this many pre-copy passes (30 with the last).
pub const DEF_MAX_ITERS: u32 = 29;
/// `DEF_MAX_FACTOR`: never send more than this many times `pfn_array_size`.
pub const DEF_MAX_FACTOR: u64 = 3;
/// A pass with fewer than this many pages sent plus skipped ends pre-copy.
pub const SMALL_ROUND: u64 = 50;

/// What the saver knows at the end of a pre-copy pass, when the policy
/// decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// 1-based pass number (`iter`).
    pub iter: u32,
    /// Entries sent this pass, XTAB included (`sent_this_iter`).
    pub sent: u64,
    /// Pages left for a later pass because already re-dirtied
    /// (`skip_this_iter`; counts holes too, as the seed did).
    pub skipped: u64,
    /// Entries sent over all passes so far (`total_sent`).
    pub total_sent: u64,
    /// `sent_this_iter` of the previous pass (`pfn_array_size` before the
    /// first, as the seed pretends).
    pub sent_last: u64,
    /// Size of the scan (`pfn_array_size`).
    pub pfn_array_size: u64,
    /// Bytes written in this pass.
    pub bytes: u64,
    /// Time the pass took on the domain's clock.
    #[serde(with = "duration_us")]
    pub duration: Duration,
    /// Pages dirty right now (a log-dirty peek), when the policy asked for
    /// it: what the next round would send.
    pub dirty_now: Option<u64>,
}

/// Why pre-copy ended.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// Non-live save: there is no pre-copy.
    NotLive,
    /// `iter >= max_iters`.
    MaxIters,
    /// `sent + skipped < 50`.
    SmallRound,
    /// `total_sent > pfn_array_size * max_factor`.
    MaxFactor,
    /// The predicted stop-and-copy time fits the budget.
    DowntimeReached {
        /// Predicted downtime in milliseconds.
        predicted_ms: f64,
    },
    /// The dirty set no longer shrinks from round to round.
    NotShrinking {
        /// Pages dirty now over pages sent in the pass.
        ratio: f64,
    },
}

/// A policy's verdict after a pre-copy pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Run another pre-copy pass.
    Continue,
    /// Suspend and run the final round.
    StopAndCopy(StopReason),
}

/// Decides after each pre-copy pass whether to suspend.
pub trait Policy {
    /// Short name for stats and the summary.
    fn name(&self) -> &'static str;
    /// Ask the saver to peek the dirty log at the end of each pass and fill
    /// [`PassReport::dirty_now`] (one extra call per pass; the seed made none).
    fn wants_dirty_count(&self) -> bool {
        false
    }
    /// The verdict after pass `report.iter`.
    fn after_pass(&mut self, report: &PassReport) -> Decision;
}

/// `xc_hvm_save`'s stop rules. The seed also had
/// `sent_this_iter > sent_last_iter && RATE_IS_MAX()`, but `RATE_IS_MAX()`
/// was the constant 0 in this file, so that clause never fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPolicy {
    /// `max_iters` (0 on xc_save's command line means the default 29).
    pub max_iters: u32,
    /// `max_factor` (0 means the default 3).
    pub max_factor: u64,
}

impl Default for SeedPolicy {
    fn default() -> Self {
        SeedPolicy {
            max_iters: DEF_MAX_ITERS,
            max_factor: DEF_MAX_FACTOR,
        }
    }
}

impl SeedPolicy {
    /// The seed's caps, evaluated in its order.
    pub fn caps(&self, r: &PassReport) -> Option<StopReason> {
        if r.iter >= self.max_iters {
            Some(StopReason::MaxIters)
        } else if r.sent + r.skipped < SMALL_ROUND {
            Some(StopReason::SmallRound)
        } else if r.total_sent > r.pfn_array_size * self.max_factor {
            Some(StopReason::MaxFactor)
        } else {
            None
        }
    }
}

impl Policy for SeedPolicy {
    fn name(&self) -> &'static str {
        "seed"
    }

    fn after_pass(&mut self, r: &PassReport) -> Decision {
        match self.caps(r) {
            Some(why) => Decision::StopAndCopy(why),
            None => Decision::Continue,
        }
    }
}

/// The default: predict the stop-and-copy time as (pages dirty now) ×
/// (bytes per page on the wire) / (bandwidth measured over the last pass),
/// and suspend once it is within `max_downtime` — unless rounds are still
/// shrinking fast, in which case one more cheap round lowers the downtime
/// further for little traffic. Suspend regardless once the dirty set stops
/// shrinking (a working set larger than the link can drain: more rounds
/// only resend it), and never go beyond the seed's caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DowntimePolicy {
    /// Downtime budget for the final round.
    pub max_downtime: Duration,
    /// Rounds whose next round is predicted to be at least this fraction of
    /// the current one count as not shrinking.
    pub stall_ratio: f64,
    /// While the next round is predicted below this fraction of the current
    /// one, keep going even within budget: it costs less than it saves.
    pub fast_ratio: f64,
    /// The backstop.
    pub caps: SeedPolicy,
}

impl Default for DowntimePolicy {
    fn default() -> Self {
        DowntimePolicy {
            max_downtime: Duration::from_millis(50),
            stall_ratio: 0.8,
            fast_ratio: 0.5,
            caps: SeedPolicy::default(),
        }
    }
}

impl DowntimePolicy {
    /// The default policy with a downtime budget.
    pub fn new(max_downtime: Duration) -> Self {
        DowntimePolicy {
            max_downtime,
            ..Default::default()
        }
    }

    /// Predicted stop-and-copy time for `pages` at the pass's bandwidth.
    pub fn predict(r: &PassReport, pages: u64) -> Duration {
        let secs = r.duration.as_secs_f64();
        if r.bytes == 0 || secs <= 0.0 {
            // Nothing measured: no basis for a prediction beyond "free".
            return Duration::ZERO;
        }
        let bw = r.bytes as f64 / secs;
        Duration::from_secs_f64(pages as f64 * (PAGE_SIZE as f64 + 8.0) / bw)
    }
}

impl Policy for DowntimePolicy {
    fn name(&self) -> &'static str {
        "downtime"
    }

    fn wants_dirty_count(&self) -> bool {
        true
    }

    fn after_pass(&mut self, r: &PassReport) -> Decision {
        if let Some(why) = self.caps.caps(r) {
            return Decision::StopAndCopy(why);
        }
        let Some(dirty) = r.dirty_now else {
            return Decision::Continue;
        };
        let ratio = dirty as f64 / r.sent.max(1) as f64;
        if ratio >= self.stall_ratio {
            return Decision::StopAndCopy(StopReason::NotShrinking { ratio });
        }
        let predicted = Self::predict(r, dirty);
        if predicted <= self.max_downtime && ratio >= self.fast_ratio {
            return Decision::StopAndCopy(StopReason::DowntimeReached {
                predicted_ms: predicted.as_secs_f64() * 1e3,
            });
        }
        Decision::Continue
    }
}

/// Token-bucket-free limiter for `--max-rate`: after each batch, wait until
/// the bytes sent so far are no ahead of `rate` since the start. It waits on
/// the domain's clock, so the simulator stays deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimiter {
    /// Bytes per second.
    pub rate: u64,
    start: Option<Duration>,
    sent: u64,
}

impl RateLimiter {
    /// A limiter at `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        RateLimiter {
            rate: rate.max(1),
            start: None,
            sent: 0,
        }
    }

    /// Account `bytes` sent at time `now`; returns how long to wait.
    pub fn account(&mut self, now: Duration, bytes: u64) -> Duration {
        let start = *self.start.get_or_insert(now);
        self.sent += bytes;
        let due = start + Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        due.saturating_sub(now)
    }
}

mod duration_us {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(iter: u32, sent: u64, skipped: u64, total: u64) -> PassReport {
        PassReport {
            iter,
            sent,
            skipped,
            total_sent: total,
            sent_last: 0,
            pfn_array_size: 1000,
            bytes: sent * 4104,
            duration: Duration::from_millis(sent.max(1)),
            dirty_now: None,
        }
    }

    #[test]
    fn seed_caps_in_order() {
        let mut p = SeedPolicy::default();
        assert_eq!(p.after_pass(&report(1, 900, 60, 900)), Decision::Continue);
        assert_eq!(
            p.after_pass(&report(29, 900, 60, 900)),
            Decision::StopAndCopy(StopReason::MaxIters)
        );
        assert_eq!(
            p.after_pass(&report(3, 30, 19, 2000)),
            Decision::StopAndCopy(StopReason::SmallRound)
        );
        assert_eq!(p.after_pass(&report(3, 30, 20, 2000)), Decision::Continue);
        assert_eq!(
            p.after_pass(&report(3, 300, 20, 3001)),
            Decision::StopAndCopy(StopReason::MaxFactor)
        );
        assert_eq!(p.after_pass(&report(3, 300, 20, 3000)), Decision::Continue);
    }

    #[test]
    fn downtime_stops_on_stall_and_budget() {
        let mut p = DowntimePolicy::new(Duration::from_millis(50));
        // 1 page per ms on the wire: 900 dirty pages would take 900 ms.
        let mut r = report(2, 1000, 100, 2000);
        r.dirty_now = Some(900);
        assert!(matches!(
            p.after_pass(&r),
            Decision::StopAndCopy(StopReason::NotShrinking { .. })
        ));
        r.dirty_now = Some(400);
        assert_eq!(p.after_pass(&r), Decision::Continue, "420 ms > 50 ms");
        r.dirty_now = Some(40);
        // 40 pages ≈ 40 ms, but the round shrinks 25×: keep going.
        assert_eq!(p.after_pass(&r), Decision::Continue);
        r.sent = 60;
        r.bytes = 60 * 4104;
        r.duration = Duration::from_millis(60);
        // 40 of 60: shrinking slowly, and 40 ms fits the budget.
        assert!(matches!(
            p.after_pass(&r),
            Decision::StopAndCopy(StopReason::DowntimeReached { .. })
        ));
    }

    #[test]
    fn limiter_waits_for_the_rate() {
        let mut l = RateLimiter::new(1000);
        assert_eq!(l.account(Duration::ZERO, 500), Duration::from_millis(500));
        assert_eq!(
            l.account(Duration::from_millis(800), 500),
            Duration::from_millis(200)
        );
        assert_eq!(l.account(Duration::from_secs(5), 10), Duration::ZERO);
    }
}

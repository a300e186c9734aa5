//! Observers of the saver's [`Event`]s: a progress display on stderr (only
//! when it is a terminal), a JSON-lines stats file, and the summary line.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::saver::{Event, Phase, SaveSummary};

/// The one-line summary printed at the end of a save; a save that
/// throttled the guest says how much and for how long.
pub fn summary_line(s: &SaveSummary) -> String {
    let throttled = if s.throttle_peak_percent > 0 {
        format!(
            ", guest throttled up to {} % for {:.2} s",
            s.throttle_peak_percent,
            s.throttled_us as f64 / 1e6
        )
    } else {
        String::new()
    };
    format!(
        "hvm-save: {} passes, {} pages sent ({:.2}x memory), downtime {:.1} ms ({} pages), {} bytes, policy {}{throttled}",
        s.passes,
        s.total_sent,
        s.factor,
        s.downtime_us as f64 / 1e3,
        s.downtime_pages,
        s.stream_bytes,
        s.policy
    )
}

/// An indicatif bar per pass on stderr; silent when stderr is not a
/// terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    size: u64,
}

impl Progress {
    /// Draws only if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        Progress { bar: None, size: 0 }.with(enabled && std::io::stderr().is_terminal())
    }

    fn with(mut self, on: bool) -> Self {
        if on {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:40}] {percent:>3}% {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
        self
    }

    /// Feed one event.
    pub fn observe(&mut self, e: &Event<'_>) {
        let Some(bar) = &self.bar else { return };
        match e {
            Event::Started { plan, .. } => {
                self.size = plan.pfn_array_size;
                bar.set_length(plan.pfn_array_size);
            }
            Event::PassStarted { iter, phase } => {
                bar.reset();
                bar.set_length(self.size);
                bar.set_prefix(match phase {
                    Phase::PreCopy => format!("pass {iter}"),
                    Phase::Suspending => format!("suspending {iter}"),
                    Phase::Final => format!("final {iter}"),
                    Phase::Verify => format!("verify {iter}"),
                });
            }
            Event::BatchWritten { scanned, .. } => bar.set_position(*scanned),
            Event::PassEnded(p) => {
                bar.set_position(self.size);
                let rate = p
                    .dirty_pages_per_s
                    .map(|r| format!(", dirtying {r:.0} pages/s"))
                    .unwrap_or_default();
                bar.println(format!(
                    "pass {:>2} {:?}: sent {} skipped {} ({:.0} MB/s{rate})",
                    p.iter, p.phase, p.sent, p.skipped, p.mb_per_s
                ));
            }
            Event::Throttle { iter, percent } => {
                bar.println(format!("after pass {iter}: guest throttled to {percent} %"))
            }
            Event::Warning(w) => bar.println(format!("warning: {w}")),
            Event::Done(_) => bar.finish_and_clear(),
            _ => {}
        }
    }
}

/// `--stats FILE`: one JSON object per pass, then the summary.
pub struct StatsWriter<W: Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> StatsWriter<W> {
    /// Write lines to `out`.
    pub fn new(out: W) -> Self {
        StatsWriter { out, error: None }
    }

    /// Feed one event.
    pub fn observe(&mut self, e: &Event<'_>) {
        if self.error.is_some() {
            return;
        }
        let line = match e {
            Event::PassEnded(p) => serde_json::to_string(p),
            Event::Done(s) => serde_json::to_string(&serde_json::json!({ "summary": s })),
            _ => return,
        };
        let r = line
            .map_err(std::io::Error::other)
            .and_then(|l| writeln!(self.out, "{l}"));
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Flush; report the first write error.
    pub fn finish(mut self) -> std::io::Result<W> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

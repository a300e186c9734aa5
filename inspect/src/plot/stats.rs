//! `plot --stats FILE`: a live save's convergence from `hvm-save --stats`.
//!
//! The stats file is JSON lines: one object per pass, then
//! `{"summary": {...}}`. The structs here mirror what hvm-save writes
//! without depending on it (the inspector sits beside the saver, not above
//! it): every field the plot does not need is optional, unknown fields are
//! ignored, so files of older and newer savers both read. A line that does
//! not fit is an error naming its line number and field.

use std::io::BufRead;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use super::draw::{self, line_mark, swatch};
use super::DrawError;

/// A stats file that cannot be read or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file as named.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is not a pass or summary object.
    #[error("{path}: line {line}: field `{field}`: {message}")]
    Line {
        /// The file as named.
        path: String,
        /// 1-based line number.
        line: u64,
        /// The field at fault (`.` for the line as a whole).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No pass line at all.
    #[error("{path}: no pass lines (is this `hvm-save --stats` output?)")]
    Empty {
        /// The file as named.
        path: String,
    },
}

/// Kind of pass, as hvm-save names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Guest running, log-dirty on.
    PreCopy,
    /// Suspend requested, guest still running.
    Suspending,
    /// Guest suspended: the stop-and-copy round.
    Final,
    /// The `--debug` resend.
    Verify,
    /// A phase this inspector does not know (a newer saver).
    #[serde(other)]
    Other,
}

/// Why pre-copy ended: the `reason` tag and whatever figures came with it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stop {
    /// `max_iters`, `small_round`, `not_shrinking`, ...
    pub reason: String,
    /// Predicted downtime, ms, for the reasons that predict it.
    #[serde(default)]
    pub predicted_ms: Option<f64>,
    /// Dirty-set ratio, for `not_shrinking`.
    #[serde(default)]
    pub ratio: Option<f64>,
}

impl Stop {
    /// One line: the reason and its figures.
    pub fn describe(&self) -> String {
        let mut s = self.reason.replace('_', " ");
        let mut figures = Vec::new();
        if let Some(r) = self.ratio {
            figures.push(format!("ratio {r:.2}"));
        }
        if let Some(ms) = self.predicted_ms {
            figures.push(format!("predicted {ms:.1} ms"));
        }
        if !figures.is_empty() {
            s.push_str(&format!(" ({})", figures.join(", ")));
        }
        s
    }
}

/// One pass line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PassLine {
    /// 1-based pass number.
    pub iter: u32,
    /// Kind of pass (absent in the oldest files: taken as pre-copy).
    #[serde(default)]
    pub phase: Option<Phase>,
    /// Entries sent, XTAB included.
    pub sent: u64,
    /// Pages deferred because already re-dirtied.
    #[serde(default)]
    pub skipped: Option<u64>,
    /// Bytes written.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Duration on the domain's clock, µs.
    #[serde(default)]
    pub duration_us: Option<u64>,
    /// Send rate, MB/s.
    #[serde(default)]
    pub mb_per_s: Option<f64>,
    /// Pages dirtied during the pass.
    #[serde(default)]
    pub dirtied: Option<u64>,
    /// Pages dirty at the end of the pass.
    #[serde(default)]
    pub dirty_now: Option<u64>,
    /// Dirtying rate, pages/s.
    #[serde(default)]
    pub dirty_pages_per_s: Option<f64>,
    /// Why pre-copy ended after this pass, if it did.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Guest throttle during the pass, percent (0–99; newer savers).
    #[serde(default)]
    pub throttle_percent: Option<u8>,
    /// The guest's own progress, steps/s (newer savers).
    #[serde(default)]
    pub guest_rate: Option<f64>,
}

impl PassLine {
    /// The phase, pre-copy when the line has none.
    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::PreCopy)
    }

    /// Entries sent per second of the pass.
    pub fn send_rate(&self) -> Option<f64> {
        let us = self.duration_us.filter(|d| *d > 0)?;
        Some(self.sent as f64 / (us as f64 / 1e6))
    }
}

/// The summary line's object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Summary {
    /// Policy name.
    #[serde(default)]
    pub policy: Option<String>,
    /// Live save.
    #[serde(default)]
    pub live: Option<bool>,
    /// Entries sent over all passes.
    #[serde(default)]
    pub total_sent: Option<u64>,
    /// Pages sent while the guest was suspended.
    #[serde(default)]
    pub downtime_pages: Option<u64>,
    /// Downtime, µs.
    #[serde(default)]
    pub downtime_us: Option<u64>,
    /// Why pre-copy ended.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Highest throttle applied, percent (newer savers).
    #[serde(default)]
    pub throttle_peak_percent: Option<u8>,
    /// Time spent throttled, µs (newer savers).
    #[serde(default)]
    pub throttled_us: Option<u64>,
}

#[derive(Deserialize)]
struct SummaryLine {
    summary: Summary,
}

/// A parsed stats file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// The file as named.
    pub file: String,
    /// Pass lines in order.
    pub passes: Vec<PassLine>,
    /// The summary, when the file has one (a save that failed has none).
    pub summary: Option<Summary>,
}

fn line_error(path: &str, line: u64, field: String, message: String) -> StatsError {
    StatsError::Line {
        path: path.to_string(),
        line,
        field,
        message,
    }
}

/// Deserialize `v` as `T`, an error naming the field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(
    path: &str,
    line: u64,
    v: serde_json::Value,
    prefix: &str,
) -> Result<T, StatsError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = e.path().to_string();
        let field = match (prefix, field.as_str()) {
            ("", f) => f.to_string(),
            (p, ".") => p.to_string(),
            (p, f) => format!("{p}.{f}"),
        };
        line_error(path, line, field, e.into_inner().to_string())
    })
}

/// Read a stats file from `r` (named `path` in errors).
pub fn parse(path: &str, r: impl BufRead) -> Result<Stats, StatsError> {
    let mut passes = Vec::new();
    let mut summary = None;
    for (i, line) in r.lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|source| StatsError::Io {
            path: path.to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| line_error(path, n, ".".into(), format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(line_error(
                path,
                n,
                ".".into(),
                "expected a JSON object".into(),
            ));
        }
        if v.get("summary").is_some() {
            let s: SummaryLine = typed(path, n, v, "")?;
            check_percent(
                path,
                n,
                "summary.throttle_peak_percent",
                s.summary.throttle_peak_percent,
            )?;
            summary = Some(s.summary);
        } else {
            let p: PassLine = typed(path, n, v, "")?;
            check_percent(path, n, "throttle_percent", p.throttle_percent)?;
            passes.push(p);
        }
    }
    if passes.is_empty() {
        return Err(StatsError::Empty {
            path: path.to_string(),
        });
    }
    Ok(Stats {
        file: path.to_string(),
        passes,
        summary,
    })
}

fn check_percent(path: &str, line: u64, field: &str, v: Option<u8>) -> Result<(), StatsError> {
    match v {
        Some(p) if p > 99 => Err(line_error(
            path,
            line,
            field.to_string(),
            format!("{p} is not a throttle level (0–99 %)"),
        )),
        _ => Ok(()),
    }
}

/// Where pre-copy stopped: the index of the pass line that carries the
/// decision, and the decision (from the summary when no pass carries it).
pub fn stop_point(s: &Stats) -> Option<(usize, Stop)> {
    if let Some((i, p)) = s.passes.iter().enumerate().find(|(_, p)| p.stop.is_some()) {
        return p.stop.clone().map(|st| (i, st));
    }
    let st = s.summary.as_ref()?.stop.clone()?;
    // No pass carries it: it came after the last pre-copy pass.
    let i = s.passes.iter().rposition(|p| p.phase() == Phase::PreCopy)?;
    Some((i, st))
}

fn phase_color(p: Phase) -> RGBColor {
    match p {
        Phase::PreCopy | Phase::Other => draw::PRECOPY,
        Phase::Suspending => draw::SUSPENDING,
        Phase::Final => draw::FINAL,
        Phase::Verify => draw::VERIFY,
    }
}

fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::PreCopy => "pre-copy pass (guest running)",
        Phase::Suspending => "suspending (guest stopping)",
        Phase::Final => "final round (guest suspended)",
        Phase::Verify => "verify pass (--debug resend)",
        Phase::Other => "other pass",
    }
}

/// Bars up to this many get their page count written above them.
const LABELLED_BARS: usize = 40;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draw `s` as one SVG: pages sent, rates, throttle, the stop marked in each.
pub fn render(s: &Stats) -> Result<String, DrawError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, draw::SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(40);
        head.draw(&Text::new(headline(s), (20, 12), draw::axis_font()))?;
        let (sent, rest) = body.split_vertically(320);
        let (rates, throttle) = rest.split_vertically(320);
        let stop = stop_point(s);
        draw_sent(sent, s, stop.as_ref())?;
        draw_rates(rates, s, stop.as_ref())?;
        draw_throttle(throttle, s, stop.as_ref())?;
        root.present()?;
    }
    Ok(svg)
}

/// The file, the policy and the summary's figures, in one line.
fn headline(s: &Stats) -> String {
    let mut h = s.file.clone();
    if let Some(m) = &s.summary {
        if let Some(p) = &m.policy {
            h.push_str(&format!(" — policy {p}"));
        }
        if let (Some(pages), Some(us)) = (m.downtime_pages, m.downtime_us) {
            h.push_str(&format!(
                ", downtime {pages} pages / {:.2} ms",
                us as f64 / 1000.0
            ));
        }
        if let Some(t) = m.total_sent {
            h.push_str(&format!(", {t} pages sent in all"));
        }
    } else {
        h.push_str(" — no summary line (the save did not finish)");
    }
    h
}

/// The x axis: pass lines by position, labelled with their `iter`.
fn x_range(s: &Stats) -> std::ops::Range<f64> {
    -0.5..s.passes.len() as f64 - 0.5
}

fn iter_label(s: &Stats, x: f64) -> String {
    let labels: Vec<String> = s.passes.iter().map(|p| p.iter.to_string()).collect();
    draw::column_label(&labels, x)
}

type Chart<'a, 'b, Y = RangedCoordf64> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

/// A vertical line between pass `i` and the next, from `y_bottom` to
/// `y_top`, in the legend; with `with_text` the decision is written beside
/// it (on the side with room).
fn mark_stop<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, Y>,
    stop: Option<&(usize, Stop)>,
    passes: usize,
    (y_bottom, y_top): (f64, f64),
    with_text: bool,
) -> Result<(), DrawError> {
    let Some((i, st)) = stop else {
        return Ok(());
    };
    let x = *i as f64 + 0.5;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(x, y_bottom), (x, y_top)],
            draw::STOP.stroke_width(2),
        )))?
        .label("pre-copy stopped here")
        .legend(line_mark(draw::STOP));
    if with_text {
        let left_half = x < passes as f64 / 2.0;
        let (h, dx) = if left_half {
            (HPos::Left, 0.1)
        } else {
            (HPos::Right, -0.1)
        };
        chart.draw_series(std::iter::once(Text::new(
            format!("stop: {}", st.describe()),
            (x + dx, y_bottom + (y_top - y_bottom) * 0.55),
            draw::small_font()
                .color(&draw::STOP)
                .pos(Pos::new(h, VPos::Center)),
        )))?;
    }
    Ok(())
}

fn legend<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, Y>,
    at: SeriesLabelPosition,
) -> Result<(), DrawError> {
    chart
        .configure_series_labels()
        .position(at)
        .label_font(draw::small_font())
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A panel with passes along x: caption, axes, labels and fonts as every
/// panel of the stats picture has them.
fn pass_chart<'a, 'b: 'a, Y>(
    area: &'a Area<'b>,
    s: &Stats,
    caption: &str,
    y: Y,
    y_desc: &str,
) -> Result<Chart<'a, 'b, Y::CoordDescType>, DrawError>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, draw::caption_font())
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range(s), y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(s.passes.len().clamp(2, 30))
        .x_label_formatter(&|x| iter_label(s, *x))
        .y_label_formatter(&|y| draw::compact(*y))
        .x_desc("pass (hvm-save's iter)")
        .y_desc(y_desc)
        .label_style(draw::small_font())
        .axis_desc_style(draw::axis_font())
        .draw()?;
    Ok(chart)
}

/// Bars of pages sent, coloured by phase.
fn draw_sent(area: Area<'_>, s: &Stats, stop: Option<&(usize, Stop)>) -> Result<(), DrawError> {
    let max = s.passes.iter().map(|p| p.sent).max().unwrap_or(0).max(1) as f64;
    let top = max * 1.5;
    let mut chart = pass_chart(
        &area,
        s,
        "Pages sent per pass",
        0.0..top,
        "pages sent (4 KiB each, XTAB included)",
    )?;
    for phase in [
        Phase::PreCopy,
        Phase::Suspending,
        Phase::Final,
        Phase::Verify,
        Phase::Other,
    ] {
        let bars: Vec<(usize, u64)> = s
            .passes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.phase() == phase)
            .map(|(i, p)| (i, p.sent))
            .collect();
        if bars.is_empty() {
            continue;
        }
        let color = phase_color(phase);
        chart
            .draw_series(bars.iter().map(|&(i, n)| {
                Rectangle::new(
                    [(i as f64 - 0.4, 0.0), (i as f64 + 0.4, n as f64)],
                    color.filled(),
                )
            }))?
            .label(phase_label(phase))
            .legend(swatch(color));
    }
    if s.passes.len() <= LABELLED_BARS {
        chart.draw_series(s.passes.iter().enumerate().map(|(i, p)| {
            Text::new(
                p.sent.to_string(),
                (i as f64, p.sent as f64),
                draw::small_font().pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    mark_stop(&mut chart, stop, s.passes.len(), (0.0, top), true)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Dirty and send rates, pages/s, as lines with a point per pass.
fn draw_rates(area: Area<'_>, s: &Stats, stop: Option<&(usize, Stop)>) -> Result<(), DrawError> {
    let dirty: Vec<(f64, f64)> = s
        .passes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i as f64, p.dirty_pages_per_s?)))
        .collect();
    let send: Vec<(f64, f64)> = s
        .passes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i as f64, p.send_rate()?)))
        .collect();
    // Rates span decades (a short pass's dirty rate is noisy): log scale,
    // zero and non-finite rates left out.
    let plotted = |v: &f64| v.is_finite() && *v > 0.0;
    let dirty: Vec<(f64, f64)> = dirty.into_iter().filter(|p| plotted(&p.1)).collect();
    let send: Vec<(f64, f64)> = send.into_iter().filter(|p| plotted(&p.1)).collect();
    let values = || dirty.iter().chain(&send).map(|p| p.1);
    let max = values().fold(10.0, f64::max);
    let min = values().fold(max, f64::min);
    let (bottom, top) = (
        10f64.powf(min.log10().floor()),
        10f64.powf(max.log10().floor() + 2.0),
    );
    let mut chart = pass_chart(
        &area,
        s,
        "Dirty rate and send rate",
        (bottom..top).log_scale(),
        "pages per second (log scale)",
    )?;
    for (points, color, label) in [
        (
            &dirty,
            draw::DIRTY,
            "dirty rate (pages dirtied / s, pre-copy)",
        ),
        (&send, draw::SEND, "send rate (pages sent / s)"),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(line_mark(color));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    mark_stop(&mut chart, stop, s.passes.len(), (bottom, top), false)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The throttle level per pass, percent; a note when the file has none.
fn draw_throttle(area: Area<'_>, s: &Stats, stop: Option<&(usize, Stop)>) -> Result<(), DrawError> {
    let points: Vec<(f64, f64)> = s
        .passes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i as f64, f64::from(p.throttle_percent?))))
        .collect();
    let mut chart = pass_chart(
        &area,
        s,
        "Guest throttle",
        0.0..110.0,
        "throttle (% of guest time)",
    )?;
    if points.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "no throttle levels in this stats file",
            ((s.passes.len() as f64 - 1.0) / 2.0, 55.0),
            draw::axis_font().pos(Pos::new(HPos::Center, VPos::Center)),
        )))?;
    } else {
        let peak = s
            .summary
            .as_ref()
            .and_then(|m| m.throttle_peak_percent)
            .map_or(String::new(), |p| format!(", peak {p} %"));
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                draw::THROTTLE.stroke_width(2),
            ))?
            .label(format!("throttle level (%){peak}"))
            .legend(line_mark(draw::THROTTLE));
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 4, draw::THROTTLE.filled())),
        )?;
    }
    mark_stop(&mut chart, stop, s.passes.len(), (0.0, 110.0), false)?;
    // A throttle climbs to the right: its legend goes where it starts.
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Stats, StatsError> {
        parse("s.jsonl", s.as_bytes())
    }

    #[test]
    fn old_and_new_lines_parse_and_unknown_fields_are_ignored() {
        let s = parse_str(concat!(
            r#"{"iter":1,"phase":"pre_copy","sent":100,"skipped":0,"xtab":0,"bytes":409600,"duration_us":1000,"mb_per_s":409.6,"dirtied":50,"dirty_now":null,"dirty_pages_per_s":5000.0,"stop":null}"#,
            "\n\n",
            r#"{"iter":2,"phase":"pre_copy","sent":40,"duration_us":500,"throttle_percent":30,"guest_rate":null,"new_field":[1],"stop":{"reason":"not_shrinking","ratio":0.98,"predicted_ms":12.5}}"#,
            "\n",
            r#"{"iter":3,"phase":"final","sent":7}"#,
            "\n",
            r#"{"summary":{"policy":"default","stop":{"reason":"not_shrinking","ratio":0.98,"predicted_ms":12.5},"throttle_peak_percent":30,"throttled_us":10,"extra":1}}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(s.passes.len(), 3);
        assert_eq!(s.passes[0].throttle_percent, None);
        assert_eq!(s.passes[1].throttle_percent, Some(30));
        assert_eq!(s.passes[0].send_rate(), Some(100_000.0));
        assert_eq!(s.passes[2].phase(), Phase::Final);
        let (i, st) = stop_point(&s).unwrap();
        assert_eq!(i, 1);
        assert_eq!(
            st.describe(),
            "not shrinking (ratio 0.98, predicted 12.5 ms)"
        );
        assert_eq!(s.summary.unwrap().throttled_us, Some(10));
    }

    #[test]
    fn bad_lines_name_their_line_and_field() {
        let e = parse_str("{\"iter\":1,\"sent\":1}\n{\"iter\":2,\"sent\":\"x\"}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.jsonl: line 2: field `sent`: invalid type: string \"x\", expected u64"
        );
        let e = parse_str("{\"iter\":1}\n").unwrap_err().to_string();
        assert!(
            e.starts_with("s.jsonl: line 1: field `.`: missing field `sent`"),
            "{e}"
        );
        let e = parse_str("{\"iter\":1,\"sent\":1,\"throttle_percent\":100}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: field `throttle_percent`"), "{e}");
        let e = parse_str("{\"iter\":1,\"sent\":1}\n{\"summary\":{\"downtime_us\":-1}}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: field `summary.downtime_us`"), "{e}");
        let e = parse_str("{\"iter\":1,\"sent\":1}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: field `.`: not JSON"), "{e}");
        assert!(matches!(parse_str("\n"), Err(StatsError::Empty { .. })));
    }

    #[test]
    fn the_summary_places_a_stop_no_pass_carries() {
        let s = parse_str(concat!(
            "{\"iter\":1,\"phase\":\"pre_copy\",\"sent\":9}\n",
            "{\"iter\":2,\"phase\":\"pre_copy\",\"sent\":5}\n",
            "{\"iter\":3,\"phase\":\"final\",\"sent\":1}\n",
            "{\"summary\":{\"stop\":{\"reason\":\"max_iters\"}}}\n"
        ))
        .unwrap();
        assert_eq!(
            stop_point(&s).map(|(i, st)| (i, st.reason)),
            Some((1, "max_iters".into()))
        );
    }
}

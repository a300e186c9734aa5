//! `plot IMAGE`: pages sent per pass, and a memory map of pfn against pass.
//!
//! Passes are inferred by hvm-format's [`PassTracker`] exactly as `summary`
//! and `show pages` infer them, in one streaming walk of any dialect. The
//! map keeps counts per (pfn bin, pass column), never per page: at most
//! [`MAX_ROWS`] × ([`MAX_COLUMNS`] + 1) counters whatever the image, the
//! bins doubling in width as higher pfns or more passes turn up.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use hvm_format::image::OpenOptions;
use hvm_format::index::PassTracker;
use hvm_format::stream::Item;
use hvm_format::PAGE_SIZE;

use super::draw::{self, column_label, swatch};
use super::DrawError;
use crate::input::{walk_read, Input, InspectError, Progress, Visit};

/// Most pfn bins (rows) of the map: about one per pixel of its height.
pub const MAX_ROWS: usize = 512;
/// Most pass columns of the map (and bars); more passes share columns.
pub const MAX_COLUMNS: usize = 256;

/// Shares of a bin's pfns sent in a pass at which the map's colour steps
/// up, with the colours: a pass that resends a region shows at once.
pub const LEVELS: [(f64, RGBColor, &str); 4] = [
    (0.0, RGBColor(0xfd, 0xcc, 0x8a), "under 10 %"),
    (0.1, RGBColor(0xfc, 0x8d, 0x59), "10–50 %"),
    (0.5, RGBColor(0xe3, 0x4a, 0x33), "50–90 %"),
    (0.9, RGBColor(0xb3, 0x00, 0x00), "90 % or more"),
];

/// Pages with data per (pfn row, pass column), in bounded memory.
#[derive(Debug, Clone)]
pub struct PassMap {
    /// Pfns per row, a power of two.
    pfns_per_row: u64,
    /// Passes per column, a power of two.
    passes_per_column: u32,
    /// Pre-copy columns (the final round in the last), [`MAX_ROWS`] each.
    columns: Vec<Vec<u64>>,
    /// The verify pass's column.
    verify: Option<Vec<u64>>,
    /// Highest pfn with data.
    top: Option<u64>,
}

impl Default for PassMap {
    fn default() -> Self {
        PassMap {
            pfns_per_row: 1,
            passes_per_column: 1,
            columns: Vec::new(),
            verify: None,
            top: None,
        }
    }
}

/// Sum pairs of `v`'s entries into its first half; zero the rest.
fn halve(v: &mut [u64]) {
    let n = v.len();
    for i in 0..n / 2 {
        v[i] = v[2 * i].saturating_add(v[2 * i + 1]);
    }
    v[n / 2..].iter_mut().for_each(|x| *x = 0);
}

impl PassMap {
    /// Count a page of `pfn` sent in `pass` (None: the verify pass).
    pub fn add(&mut self, pass: Option<u32>, pfn: u64) {
        while pfn / self.pfns_per_row >= MAX_ROWS as u64 {
            self.pfns_per_row *= 2;
            self.columns
                .iter_mut()
                .chain(self.verify.iter_mut())
                .for_each(|c| halve(c));
        }
        let row = (pfn / self.pfns_per_row) as usize;
        let column = match pass {
            None => self.verify.get_or_insert_with(|| vec![0; MAX_ROWS]),
            Some(p) => {
                while (p / self.passes_per_column) as usize >= MAX_COLUMNS {
                    self.merge_columns();
                }
                let c = (p / self.passes_per_column) as usize;
                while self.columns.len() <= c {
                    self.columns.push(vec![0; MAX_ROWS]);
                }
                &mut self.columns[c]
            }
        };
        column[row] = column[row].saturating_add(1);
        self.top = Some(self.top.map_or(pfn, |t| t.max(pfn)));
    }

    fn merge_columns(&mut self) {
        let old = std::mem::take(&mut self.columns);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.iter_mut()
                    .zip(&b)
                    .for_each(|(x, y)| *x = x.saturating_add(*y));
            }
            self.columns.push(a);
        }
        self.passes_per_column *= 2;
    }

    /// Pfns per row.
    pub fn pfns_per_row(&self) -> u64 {
        self.pfns_per_row
    }

    /// Passes per column.
    pub fn passes_per_column(&self) -> u32 {
        self.passes_per_column
    }

    /// Rows in use: up to the highest pfn with data.
    pub fn rows(&self) -> usize {
        self.top.map_or(0, |t| (t / self.pfns_per_row) as usize + 1)
    }

    /// The pre-copy columns' counts per row (first [`rows`](Self::rows)).
    pub fn columns(&self) -> impl Iterator<Item = &[u64]> {
        self.columns.iter().map(|c| &c[..self.rows()])
    }

    /// The verify column's counts per row.
    pub fn verify(&self) -> Option<&[u64]> {
        self.verify.as_deref().map(|c| &c[..self.rows()])
    }

    /// The colour level of `count` pages in one cell (None: nothing sent).
    pub fn level(&self, count: u64) -> Option<usize> {
        if count == 0 {
            return None;
        }
        let capacity = self.pfns_per_row as f64 * f64::from(self.passes_per_column);
        let share = count as f64 / capacity;
        LEVELS.iter().rposition(|(from, _, _)| share >= *from)
    }
}

/// Everything `plot IMAGE` draws.
#[derive(Debug, Clone)]
pub struct ImagePlot {
    /// The image as named.
    pub file: String,
    /// Its dialect, in words.
    pub dialect: String,
    /// Pages with data per pass, in order; the last is the final round.
    pub passes: Vec<u64>,
    /// Pages of the verify pass.
    pub verify: Option<u64>,
    /// The memory map.
    pub map: PassMap,
}

#[derive(Default)]
struct PlotVisit {
    tracker: Option<PassTracker>,
    map: PassMap,
}

impl Visit for PlotVisit {
    fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::MaxPfn { value, .. } => self.tracker = Some(PassTracker::new(Some(*value))),
            Item::Batch(b) => {
                let pass = self
                    .tracker
                    .get_or_insert_with(|| PassTracker::new(None))
                    .batch(b);
                let pass = (pass != u32::MAX).then_some(pass);
                for e in b.entries().filter(|e| e.has_data()) {
                    self.map.add(pass, e.pfn().0);
                }
            }
            _ => {}
        }
    }
}

/// Walk `input` once and gather what [`render`] draws. A damaged stream is
/// an error (nothing is drawn from half an image).
pub fn collect(
    input: Input,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<ImagePlot, InspectError> {
    let name = input.name().to_string();
    let opts = OpenOptions {
        len: input.len(),
        ..opts
    };
    let (walked, v) = walk_read(&name, input.into_read(), opts, progress, |_| {
        PlotVisit::default()
    })?;
    if let Some(e) = walked.error {
        return Err(InspectError::image(&name, e));
    }
    let tracker = v.tracker.unwrap_or_default();
    Ok(ImagePlot {
        file: name,
        dialect: walked.info.detection.dialect.describe().to_string(),
        passes: tracker.passes.iter().map(|p| p.pages).collect(),
        verify: tracker.verify.as_ref().map(|p| p.pages),
        map: v.map,
    })
}

/// What a bar stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// Pre-copy passes (guest running).
    PreCopy,
    /// The last pass: the final round.
    Final,
    /// The verify resend.
    Verify,
}

impl BarKind {
    /// Its colour.
    pub fn color(self) -> RGBColor {
        match self {
            BarKind::PreCopy => draw::PRECOPY,
            BarKind::Final => draw::FINAL,
            BarKind::Verify => draw::VERIFY,
        }
    }
}

/// The bars: pre-copy passes grouped as the map's columns group them, then
/// the final round alone, then the verify pass. `(label, pages, kind)`.
pub fn bars(p: &ImagePlot) -> Vec<(String, u64, BarKind)> {
    let mut out = Vec::new();
    if let Some((last, pre)) = p.passes.split_last() {
        let g = p.map.passes_per_column().max(1) as usize;
        for (i, chunk) in pre.chunks(g).enumerate() {
            let first = i * g;
            let label = if chunk.len() == 1 {
                first.to_string()
            } else {
                format!("{first}–{}", first + chunk.len() - 1)
            };
            out.push((label, chunk.iter().sum(), BarKind::PreCopy));
        }
        out.push(((p.passes.len() - 1).to_string(), *last, BarKind::Final));
    }
    if let Some(v) = p.verify {
        out.push(("verify".to_string(), v, BarKind::Verify));
    }
    out
}

/// A pfn tick: the pfn in hex and the address it stands for.
fn pfn_label(pfn: u64) -> String {
    let bytes = pfn.saturating_mul(PAGE_SIZE as u64);
    let at = if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{} KiB", bytes >> 10)
    };
    let at = at.replace(".0 MiB", " MiB");
    format!("{pfn:#x} ({at})")
}

/// Bars up to this many get their page count written above them.
const LABELLED_BARS: usize = 40;

/// Draw `p` as one SVG.
pub fn render(p: &ImagePlot) -> Result<String, DrawError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, draw::SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(40);
        head.draw(&Text::new(
            format!("{} — {}", p.file, p.dialect),
            (20, 12),
            draw::axis_font(),
        ))?;
        let (top, bottom) = body.split_vertically(330);
        draw_bars(top, p)?;
        draw_map(bottom, p)?;
        root.present()?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_bars(area: Area<'_>, p: &ImagePlot) -> Result<(), DrawError> {
    let bars = bars(p);
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(&area)
        .caption("Pages sent per pass", draw::caption_font())
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..bars.len().max(1) as f64 - 0.5, 0.0..max as f64 * 1.5)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(bars.len().clamp(2, 30))
        .x_label_formatter(&|x| column_label(&labels, *x))
        .y_label_formatter(&|y| draw::compact(*y))
        .x_desc(if p.map.passes_per_column() > 1 {
            format!(
                "pass (numbered from 0 as `summary` does; {} passes per bar)",
                p.map.passes_per_column()
            )
        } else {
            "pass (numbered from 0 as `summary` does)".to_string()
        })
        .y_desc("pages sent (4 KiB each)")
        .label_style(draw::small_font())
        .axis_desc_style(draw::axis_font())
        .draw()?;
    for kind in [BarKind::PreCopy, BarKind::Final, BarKind::Verify] {
        let of_kind: Vec<(usize, u64)> = bars
            .iter()
            .enumerate()
            .filter(|(_, b)| b.2 == kind)
            .map(|(i, b)| (i, b.1))
            .collect();
        if of_kind.is_empty() {
            continue;
        }
        let color = kind.color();
        chart
            .draw_series(of_kind.iter().map(|&(i, n)| {
                Rectangle::new(
                    [(i as f64 - 0.4, 0.0), (i as f64 + 0.4, n as f64)],
                    color.filled(),
                )
            }))?
            .label(match kind {
                BarKind::PreCopy => "pre-copy pass (guest running)",
                BarKind::Final => "final round (guest suspended)",
                BarKind::Verify => "verify pass (--debug resend)",
            })
            .legend(swatch(color));
    }
    if bars.len() <= LABELLED_BARS {
        chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                b.1.to_string(),
                (i as f64, b.1 as f64),
                draw::small_font().pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(draw::small_font())
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_map(area: Area<'_>, p: &ImagePlot) -> Result<(), DrawError> {
    let (area, key) = area.split_horizontally(draw::SIZE.0 - 250);
    let map = &p.map;
    let ppc = map.passes_per_column();
    let mut columns: Vec<(String, &[u64])> = map
        .columns()
        .enumerate()
        .map(|(i, c)| {
            let first = i as u64 * u64::from(ppc);
            let label = if ppc == 1 {
                first.to_string()
            } else {
                format!("{first}–{}", first + u64::from(ppc) - 1)
            };
            (label, c)
        })
        .collect();
    if let Some(v) = map.verify() {
        columns.push(("verify".to_string(), v));
    }
    let labels: Vec<String> = columns.iter().map(|c| c.0.clone()).collect();
    let per_row = map.pfns_per_row();
    let top = (map.rows() as u64).max(1) * per_row;
    let mib = per_row * PAGE_SIZE as u64;
    let row_size = if mib >= 1 << 20 {
        format!("{} MiB", mib >> 20)
    } else {
        format!("{} KiB", mib >> 10)
    };
    let mut chart = ChartBuilder::on(&area)
        .caption(
            format!("Memory map: where each pass sent pages (1 row = {per_row} pfns = {row_size})"),
            draw::caption_font(),
        )
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(140)
        .build_cartesian_2d(-0.5..columns.len().max(1) as f64 - 0.5, 0.0..top as f64)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(columns.len().clamp(2, 30))
        .x_label_formatter(&|x| column_label(&labels, *x))
        .y_label_formatter(&|y| pfn_label(*y as u64))
        .x_desc(if ppc > 1 {
            format!("pass ({ppc} passes per column; the last pass is the final round)")
        } else {
            "pass (the last pass is the final round)".to_string()
        })
        .y_desc("pfn (guest physical address / 4 KiB)")
        .label_style(draw::small_font())
        .axis_desc_style(draw::axis_font())
        .draw()?;
    // One rectangle per run of rows of the same level in a column, so a
    // pass over all of memory is one mark, not 512.
    let mut cells: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); LEVELS.len()];
    for (x, (_, counts)) in columns.iter().enumerate() {
        let mut row = 0;
        while row < counts.len() {
            let Some(level) = map.level(counts[row]) else {
                row += 1;
                continue;
            };
            let start = row;
            while row < counts.len() && map.level(counts[row]) == Some(level) {
                row += 1;
            }
            let (lo, hi) = (start as u64 * per_row, (row as u64 * per_row).min(top));
            cells[level].push((x as f64, lo as f64, hi as f64));
        }
    }
    for (level, (_, color, _)) in LEVELS.iter().enumerate() {
        chart.draw_series(cells[level].iter().map(|&(x, lo, hi)| {
            Rectangle::new([(x - 0.45, lo), (x + 0.45, hi)], color.filled())
        }))?;
    }
    // The key sits beside the map, not over it: the map has no empty corner.
    key.draw(&Text::new(
        "share of the row's pfns",
        (10, 60),
        draw::small_font(),
    ))?;
    key.draw(&Text::new(
        "sent in the pass:",
        (10, 78),
        draw::small_font(),
    ))?;
    for (i, (_, color, label)) in LEVELS.iter().enumerate().rev() {
        let y = 110 + 24 * (LEVELS.len() - 1 - i) as i32;
        key.draw(&swatch(*color)((10, y)))?;
        key.draw(&Text::new(
            *label,
            (30, y),
            draw::small_font().pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    key.draw(&Text::new(
        "blank: not sent in that pass",
        (10, 110 + 24 * LEVELS.len() as i32),
        draw::small_font().pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_double_as_higher_pfns_arrive_and_counts_are_kept() {
        let mut m = PassMap::default();
        for pfn in 0..MAX_ROWS as u64 {
            m.add(Some(0), pfn);
        }
        assert_eq!(m.pfns_per_row(), 1);
        m.add(Some(1), MAX_ROWS as u64);
        assert_eq!(m.pfns_per_row(), 2);
        let c: Vec<&[u64]> = m.columns().collect();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].iter().sum::<u64>(), MAX_ROWS as u64);
        assert!(c[0][..MAX_ROWS / 2].iter().all(|&n| n == 2));
        assert_eq!(c[1][MAX_ROWS / 2], 1);
        assert_eq!(m.rows(), MAX_ROWS / 2 + 1);
        assert_eq!(m.level(2), Some(3));
        assert_eq!(m.level(1), Some(2));
        assert_eq!(m.level(0), None);
    }

    #[test]
    fn columns_merge_past_the_cap_and_memory_stays_bounded() {
        let mut m = PassMap::default();
        for pass in 0..(3 * MAX_COLUMNS as u32) {
            m.add(Some(pass), u64::from(pass) << 50);
        }
        m.add(None, u64::MAX);
        assert_eq!(m.passes_per_column(), 4);
        assert!(m.columns().count() <= MAX_COLUMNS);
        let total: u64 = m.columns().map(|c| c.iter().sum::<u64>()).sum();
        assert_eq!(total, 3 * MAX_COLUMNS as u64);
        assert_eq!(m.verify().map(|v| v.iter().sum::<u64>()), Some(1));
        assert!(m.rows() <= MAX_ROWS);
    }

    #[test]
    fn pfn_ticks_say_the_address() {
        assert_eq!(pfn_label(0), "0x0 (0 KiB)");
        assert_eq!(pfn_label(0x4e20), "0x4e20 (78.1 MiB)");
        assert_eq!(pfn_label(0x40000), "0x40000 (1 GiB)");
        assert_eq!(pfn_label(0x100), "0x100 (1 MiB)");
    }

    #[test]
    fn bars_put_the_final_round_and_verify_pass_last() {
        let p = ImagePlot {
            file: "x".into(),
            dialect: "d".into(),
            passes: vec![10, 5, 2],
            verify: Some(12),
            map: PassMap::default(),
        };
        let b = bars(&p);
        let kinds: Vec<_> = b.iter().map(|b| (b.0.as_str(), b.1, b.2)).collect();
        assert_eq!(
            kinds,
            [
                ("0", 10, BarKind::PreCopy),
                ("1", 5, BarKind::PreCopy),
                ("2", 2, BarKind::Final),
                ("verify", 12, BarKind::Verify)
            ]
        );
    }
}

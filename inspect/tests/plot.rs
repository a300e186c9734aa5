//! `hvm-inspect plot` end to end: the SVG parses as XML and holds the
//! expected series — one bar per pass with heights in proportion to the
//! pages the image's spec put in each pass, the final round and the verify
//! pass in their own colours, the memory map's marks where the passes sent
//! pages, the stats plot's bars, lines, throttle and stop marker — and a
//! headless Chromium renders it to a picture that is not blank.
//!
//! The expected counts come from the spec (`hvm_tests::golden` facts, or a
//! stream written here), never from reading the image back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hvm_format::layout::{order_nr, permute};
use hvm_format::stream::Writer;
use hvm_format::vcpu::VcpuContext;
use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};
use hvm_inspect::plot::draw;
use hvm_inspect::plot::image::LEVELS;
use hvm_tests::golden::{self, HvmEra, PassSpec, Spec};
use plotters::style::RGBColor;

fn run(args: &[&str], stdin: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hvm-inspect"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match stdin {
        Some(p) => c.stdin(std::fs::File::open(p).expect("open stdin file")),
        None => c.stdin(Stdio::null()),
    };
    c.output().expect("run hvm-inspect")
}

fn ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// A `<rect>` of the SVG.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// What the tests read from an SVG.
struct Svg {
    /// Every `<rect>` by fill colour, in document order.
    rects: BTreeMap<String, Vec<Rect>>,
    /// Every `<text>`'s content (trimmed) with its position.
    texts: Vec<(String, f64, f64)>,
    /// Every `<polyline>`'s stroke colour and point count.
    lines: Vec<(String, usize)>,
}

fn parse_svg(text: &str) -> Svg {
    let doc = roxmltree::Document::parse(text).expect("the SVG parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let num = |n: &roxmltree::Node<'_, '_>, a: &str| -> f64 {
        n.attribute(a)
            .unwrap_or_else(|| panic!("{a} missing"))
            .parse()
            .expect("a number")
    };
    let mut rects: BTreeMap<String, Vec<Rect>> = BTreeMap::new();
    let mut texts = Vec::new();
    let mut lines = Vec::new();
    for n in root.descendants() {
        match n.tag_name().name() {
            "rect" => rects
                .entry(n.attribute("fill").unwrap_or("").to_string())
                .or_default()
                .push(Rect {
                    x: num(&n, "x"),
                    y: num(&n, "y"),
                    w: num(&n, "width"),
                    h: num(&n, "height"),
                }),
            "text" => texts.push((
                n.text().unwrap_or("").trim().to_string(),
                num(&n, "x"),
                num(&n, "y"),
            )),
            "polyline" => lines.push((
                n.attribute("stroke").unwrap_or("").to_string(),
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count(),
            )),
            _ => {}
        }
    }
    Svg {
        rects,
        texts,
        lines,
    }
}

impl Svg {
    fn has_text(&self, t: &str) -> bool {
        self.texts.iter().any(|x| x.0 == t)
    }

    fn assert_texts(&self, want: &[&str]) {
        for t in want {
            assert!(
                self.has_text(t),
                "no text {t:?} in {:?}",
                self.texts.iter().map(|t| &t.0).collect::<Vec<_>>()
            );
        }
    }

    fn rects_of(&self, c: RGBColor) -> Vec<Rect> {
        self.rects.get(&hex(c)).cloned().unwrap_or_default()
    }

    /// The bars of the first panel: rects of the bar colours standing on
    /// one baseline, left to right, as (colour, pixel height).
    fn bars(&self, colours: &[RGBColor], panel_bottom: f64) -> Vec<(RGBColor, f64)> {
        let mut bars: Vec<(f64, RGBColor, Rect)> = colours
            .iter()
            .flat_map(|c| self.rects_of(*c).into_iter().map(move |r| (r.x, *c, r)))
            .filter(|(_, _, r)| r.y + r.h <= panel_bottom)
            .collect();
        bars.sort_by(|a, b| a.0.total_cmp(&b.0));
        let base = bars.iter().map(|b| b.2.y + b.2.h).fold(0.0, f64::max);
        for b in &bars {
            assert_eq!(b.2.y + b.2.h, base, "every bar stands on the x axis");
        }
        bars.into_iter().map(|(_, c, r)| (c, r.h)).collect()
    }

    /// The page counts written above the bars (numbers above the x axis
    /// at `base`, right of the plot's left edge `left`, where the y axis's
    /// tick labels are), left to right.
    fn bar_labels(&self, base: f64, left: f64) -> Vec<u64> {
        let mut v: Vec<(f64, u64)> = self
            .texts
            .iter()
            .filter(|t| t.2 < base && t.1 > left)
            .filter_map(|t| Some((t.1, t.0.parse().ok()?)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v.into_iter().map(|t| t.1).collect()
    }

    /// The left edge of the leftmost rect of `colours` above `panel_bottom`.
    fn left(&self, colours: &[RGBColor], panel_bottom: f64) -> f64 {
        colours
            .iter()
            .flat_map(|c| self.rects_of(*c))
            .filter(|r| r.y + r.h <= panel_bottom)
            .map(|r| r.x)
            .fold(f64::INFINITY, f64::min)
    }

    /// The bottom of the bars below `panel_bottom`.
    fn baseline(&self, colours: &[RGBColor], panel_bottom: f64) -> f64 {
        colours
            .iter()
            .flat_map(|c| self.rects_of(*c))
            .map(|r| r.y + r.h)
            .filter(|b| *b <= panel_bottom)
            .fold(0.0, f64::max)
    }
}

/// Heights in pixels are in proportion to `counts` (to the pixel).
fn assert_heights(bars: &[(RGBColor, f64)], counts: &[u64]) {
    assert_eq!(bars.len(), counts.len(), "one bar per pass: {bars:?}");
    let (hmax, cmax) = bars
        .iter()
        .zip(counts)
        .max_by_key(|(_, c)| **c)
        .map(|(b, c)| (b.1, *c as f64))
        .unwrap();
    for (i, (b, c)) in bars.iter().zip(counts).enumerate() {
        let want = hmax * *c as f64 / cmax;
        assert!(
            (b.1 - want).abs() <= 1.5,
            "bar {i}: height {} px for {c} pages, want {want:.1} px ({bars:?} for {counts:?})",
            b.1
        );
    }
}

/// The top panel ends here (pixels): the bars and their labels are above.
const BARS_BOTTOM: f64 = 370.0;

fn plot(image: &Path, out: &Path) -> Svg {
    let o = run(
        &[
            "plot",
            image.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--force",
        ],
        None,
    );
    ok(&o);
    parse_svg(&std::fs::read_to_string(out).expect("the SVG was written"))
}

fn spec() -> Spec {
    Spec {
        name: "plot-passes",
        word: WordSize::W64,
        memory_mib: 8,
        vcpus: 1,
        // Four passes of distinct sizes: a swap or a lost bar shows.
        passes: vec![
            PassSpec {
                modulus: 3,
                residue: 1,
            },
            PassSpec {
                modulus: 7,
                residue: 2,
            },
            PassSpec {
                modulus: 29,
                residue: 5,
            },
            PassSpec {
                modulus: 13,
                residue: 4,
            },
        ],
        xtab: vec![0x300],
        verify: true,
        xend: true,
        era: HvmEra::Seed,
        seed: 9,
    }
}

#[test]
fn image_bars_match_the_passes_the_spec_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let g = golden::generate(&spec());
    let img = dir.path().join("p.img");
    std::fs::write(&img, &g.bytes).unwrap();
    let svg = plot(&img, &dir.path().join("p.svg"));

    let mut counts = g.facts.pages_per_pass.clone();
    counts.push(g.facts.verify_pages.expect("the spec has a verify pass"));
    let bars = svg.bars(&[draw::PRECOPY, draw::FINAL, draw::VERIFY], BARS_BOTTOM);
    let colours: Vec<RGBColor> = bars.iter().map(|b| b.0).collect();
    assert_eq!(
        colours,
        [
            draw::PRECOPY,
            draw::PRECOPY,
            draw::PRECOPY,
            draw::FINAL,
            draw::VERIFY
        ],
        "pre-copy passes, then the final round, then the verify pass"
    );
    assert_heights(&bars, &counts);
    let base = svg.baseline(&[draw::PRECOPY], BARS_BOTTOM);
    let left = svg.left(&[draw::PRECOPY], BARS_BOTTOM);
    assert_eq!(svg.bar_labels(base, left), counts);
    svg.assert_texts(&[
        "Pages sent per pass",
        "pages sent (4 KiB each)",
        "pass (numbered from 0 as `summary` does)",
        "pre-copy pass (guest running)",
        "final round (guest suspended)",
        "verify pass (--debug resend)",
        "pfn (guest physical address / 4 KiB)",
        "pass (the last pass is the final round)",
        "verify",
        "90 % or more",
    ]);
    assert!(svg
        .texts
        .iter()
        .any(|t| t.0.starts_with("Memory map: where each pass sent pages")));
}

/// A stream with a hot set: pass 0 sends all of an 8 MiB guest, passes 1
/// and 2 only pfns `HOT`, the final round half of them.
const HOT: std::ops::Range<u64> = 1024..1088;

fn hot_image() -> Vec<u8> {
    let size = 2048u64;
    let order = order_nr(size);
    let scan: Vec<u64> = (0..size).map(|n| permute(n, size, order)).collect();
    let passes: [&dyn Fn(u64) -> bool; 3] = [&|_| true, &|p| HOT.contains(&p), &|p| {
        HOT.contains(&p) && p % 2 == 0
    }];
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out, WordSize::W64);
    w.max_pfn(size - 1).unwrap();
    let page = vec![0x5au8; PAGE_SIZE];
    for sends in passes {
        let pfns: Vec<u64> = scan.iter().copied().filter(|p| sends(*p)).collect();
        for chunk in pfns.chunks(MAX_BATCH) {
            let es: Vec<PfnEntry> = chunk.iter().map(|p| PfnEntry::page(*p)).collect();
            let ps: Vec<&[u8]> = chunk.iter().map(|_| page.as_slice()).collect();
            w.batch(&es, &ps).unwrap();
        }
    }
    w.end().unwrap();
    w.vcpu_count(1).unwrap();
    let ctx = VcpuContext::from_registers(WordSize::W64, &golden::registers(0)).unwrap();
    w.vcpu(ctx.as_bytes()).unwrap();
    w.hvm_blob(&hvm_format::hvm::seed_reset_blob(0, &[]))
        .unwrap();
    w.finish().unwrap();
    out
}

/// The memory map's marks, by column (left to right), as (top, bottom)
/// pixel extents and colour level.
fn map_columns(svg: &Svg) -> Vec<Vec<(f64, f64, usize)>> {
    let mut by_x: BTreeMap<i64, Vec<(f64, f64, usize)>> = BTreeMap::new();
    for (level, (_, c, _)) in LEVELS.iter().enumerate() {
        for r in svg.rects_of(*c) {
            if r.y >= BARS_BOTTOM {
                by_x.entry(r.x as i64)
                    .or_default()
                    .push((r.y, r.y + r.h, level));
            }
        }
    }
    by_x.into_values().collect()
}

#[test]
fn the_memory_map_shows_the_hot_set_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("hot.img");
    std::fs::write(&img, hot_image()).unwrap();
    let svg = plot(&img, &dir.path().join("hot.svg"));
    let bars = svg.bars(&[draw::PRECOPY, draw::FINAL], BARS_BOTTOM);
    assert_heights(&bars, &[2048, 64, 32]);

    let cols = map_columns(&svg);
    assert_eq!(cols.len(), 3, "one column per pass: {cols:?}");
    // Pass 0 sent every row: one mark over the whole height.
    assert_eq!(cols[0].len(), 1, "{cols:?}");
    let (top, bottom, level) = cols[0][0];
    assert_eq!(level, 3, "pass 0 sent every pfn of every row");
    let px_per_pfn = (bottom - top) / 2048.0;
    // Passes 1 and 2 sent only the hot rows: one mark each, where pfns
    // 1024..1088 are (the y axis grows upwards).
    for c in &cols[1..] {
        assert_eq!(c.len(), 1, "{cols:?}");
        let want_top = bottom - HOT.end as f64 * px_per_pfn;
        let want_bottom = bottom - HOT.start as f64 * px_per_pfn;
        assert!((c[0].0 - want_top).abs() <= 1.5, "{c:?} vs {want_top}");
        assert!(
            (c[0].1 - want_bottom).abs() <= 1.5,
            "{c:?} vs {want_bottom}"
        );
    }
    // The whole of pass 1's rows were sent (the darkest level); half of
    // each row in the final round.
    assert_eq!(cols[1][0].2, 3);
    assert_eq!(cols[2][0].2, 2);
}

#[test]
fn v2_and_standard_input_plot_the_same_passes() {
    let dir = tempfile::tempdir().unwrap();
    let g = golden::generate(&spec());
    let img = dir.path().join("p.img");
    std::fs::write(&img, &g.bytes).unwrap();
    let v2 = dir.path().join("p.v2");
    let o = run(
        &[
            "convert",
            img.to_str().unwrap(),
            "-o",
            v2.to_str().unwrap(),
            "--to",
            "libxl",
            "-q",
        ],
        None,
    );
    ok(&o);
    let legacy = plot(&img, &dir.path().join("a.svg"));
    let from_v2 = plot(&v2, &dir.path().join("b.svg"));
    let piped = run(&["plot", "-", "-o", "-"], Some(&img));
    ok(&piped);
    let piped = parse_svg(std::str::from_utf8(&piped.stdout).unwrap());
    let colours = [draw::PRECOPY, draw::FINAL, draw::VERIFY];
    let want = legacy.bars(&colours, BARS_BOTTOM);
    assert_eq!(want.len(), 5);
    assert_eq!(from_v2.bars(&colours, BARS_BOTTOM), want);
    assert_eq!(piped.bars(&colours, BARS_BOTTOM), want);
    assert_eq!(map_columns(&from_v2), map_columns(&legacy));
    assert_eq!(map_columns(&piped), map_columns(&legacy));
}

#[test]
fn outputs_follow_the_rules_and_damage_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("p.img");
    let bytes = golden::generate(&spec()).bytes;
    std::fs::write(&img, &bytes).unwrap();
    let out = dir.path().join("o.svg");
    std::fs::write(&out, "keep").unwrap();
    let (i, o) = (img.to_str().unwrap(), out.to_str().unwrap());
    let r = run(&["plot", i, "-o", o], None);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep");
    let r = run(&["plot", i, "-o", i, "--force"], None);
    assert_eq!(r.status.code(), Some(2), "never over the input");
    assert_eq!(std::fs::read(&img).unwrap(), bytes);
    ok(&run(&["plot", i, "-o", o, "--force"], None));
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("<svg"));

    // A cut image: exit 1 naming the offset, and no output.
    let cut = dir.path().join("cut.img");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let none = dir.path().join("none.svg");
    let r = run(
        &["plot", cut.to_str().unwrap(), "-o", none.to_str().unwrap()],
        None,
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("byte"));
    assert!(!none.exists());
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("hvm-tmp"))
        .collect()
}

/// Passes of a hand-written stats file: iter, phase, sent, duration (µs),
/// dirty rate, throttle.
const STATS: &str = r#"{"iter":1,"phase":"pre_copy","sent":60000,"skipped":10,"xtab":0,"bytes":245760000,"duration_us":240000,"mb_per_s":1024.0,"dirtied":9000,"dirty_now":9000,"dirty_pages_per_s":37500.0,"stop":null,"throttle_percent":0,"guest_rate":1000.0}
{"iter":2,"phase":"pre_copy","sent":9000,"skipped":0,"xtab":0,"bytes":36864000,"duration_us":36000,"mb_per_s":1024.0,"dirtied":7000,"dirty_now":7000,"dirty_pages_per_s":194444.0,"stop":null,"throttle_percent":20,"guest_rate":800.0}
{"iter":3,"phase":"pre_copy","sent":7000,"skipped":0,"xtab":0,"bytes":28672000,"duration_us":28000,"mb_per_s":1024.0,"dirtied":6800,"dirty_now":6800,"dirty_pages_per_s":242857.0,"stop":{"reason":"not_shrinking","ratio":0.97,"predicted_ms":27.2},"throttle_percent":40,"guest_rate":null}
{"iter":4,"phase":"suspending","sent":5000,"skipped":0,"xtab":0,"bytes":20480000,"duration_us":20000,"mb_per_s":1024.0,"dirtied":null,"dirty_now":null,"dirty_pages_per_s":null,"stop":null}
{"iter":5,"phase":"final","sent":1200,"skipped":0,"xtab":0,"bytes":4915200,"duration_us":4800,"mb_per_s":1024.0,"dirtied":null,"dirty_now":null,"dirty_pages_per_s":null,"stop":null}
{"summary":{"policy":"default","live":true,"passes":5,"total_sent":82200,"pfn_array_size":65536,"factor":1.25,"downtime_pages":1200,"downtime_us":4800,"stream_bytes":336691200,"stop":{"reason":"not_shrinking","ratio":0.97,"predicted_ms":27.2},"vcpus":1,"throttle_peak_percent":40,"throttled_us":64000}}
"#;

fn plot_stats(dir: &Path, name: &str, text: &str) -> (Output, PathBuf) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    let out = dir.join(format!("{name}.svg"));
    let o = run(
        &[
            "plot",
            "--stats",
            f.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    (o, out)
}

#[test]
fn stats_plot_has_every_series_and_marks_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (o, out) = plot_stats(dir.path(), "s.jsonl", STATS);
    ok(&o);
    let svg = parse_svg(&std::fs::read_to_string(&out).unwrap());
    let bars = svg.bars(&[draw::PRECOPY, draw::SUSPENDING, draw::FINAL], BARS_BOTTOM);
    let colours: Vec<RGBColor> = bars.iter().map(|b| b.0).collect();
    assert_eq!(
        colours,
        [
            draw::PRECOPY,
            draw::PRECOPY,
            draw::PRECOPY,
            draw::SUSPENDING,
            draw::FINAL
        ]
    );
    assert_heights(&bars, &[60000, 9000, 7000, 5000, 1200]);
    let base = svg.baseline(&[draw::PRECOPY], BARS_BOTTOM);
    let left = svg.left(&[draw::PRECOPY], BARS_BOTTOM);
    assert_eq!(svg.bar_labels(base, left), [60000, 9000, 7000, 5000, 1200]);
    svg.assert_texts(&[
        "Pages sent per pass",
        "Dirty rate and send rate",
        "Guest throttle",
        "pass (hvm-save's iter)",
        "pages sent (4 KiB each, XTAB included)",
        "pages per second (log scale)",
        "throttle (% of guest time)",
        "pre-copy pass (guest running)",
        "suspending (guest stopping)",
        "final round (guest suspended)",
        "dirty rate (pages dirtied / s, pre-copy)",
        "send rate (pages sent / s)",
        "throttle level (%), peak 40 %",
        "pre-copy stopped here",
        "stop: not shrinking (ratio 0.97, predicted 27.2 ms)",
    ]);
    // Lines: dirty rate over the 3 pre-copy passes, send rate over all 5,
    // throttle over the 3 passes that record it, and the stop in each of
    // the 3 panels between pass 3 and 4.
    let count = |c: RGBColor, points: usize| {
        svg.lines
            .iter()
            .filter(|l| l.0 == hex(c) && l.1 == points)
            .count()
    };
    assert_eq!(count(draw::DIRTY, 3), 1, "{:?}", svg.lines);
    assert_eq!(count(draw::SEND, 5), 1, "{:?}", svg.lines);
    assert_eq!(count(draw::THROTTLE, 3), 1, "{:?}", svg.lines);
    assert!(count(draw::STOP, 2) >= 3, "{:?}", svg.lines);
    // The stop text sits between bars 3 and 4 (from 0: 2 and 3).
    let stop = svg
        .texts
        .iter()
        .find(|t| t.0.starts_with("stop: "))
        .unwrap();
    let mut xs: Vec<f64> = svg.rects_of(draw::PRECOPY).iter().map(|r| r.x).collect();
    xs.sort_by(f64::total_cmp);
    let suspending = svg.rects_of(draw::SUSPENDING)[0].x;
    assert!(stop.1 > xs[2] && stop.1 < suspending, "{stop:?}");
}

#[test]
fn old_stats_files_plot_without_throttle_and_bad_ones_say_where() {
    let dir = tempfile::tempdir().unwrap();
    // An older saver: no throttle fields, no summary figures beyond stop.
    let old: String = STATS
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("throttle_percent");
            o.remove("guest_rate");
            if let Some(s) = o.get_mut("summary").and_then(|s| s.as_object_mut()) {
                s.remove("throttle_peak_percent");
                s.remove("throttled_us");
            }
            v.to_string() + "\n"
        })
        .collect();
    let (o, out) = plot_stats(dir.path(), "old.jsonl", &old);
    ok(&o);
    let svg = parse_svg(&std::fs::read_to_string(&out).unwrap());
    svg.assert_texts(&["no throttle levels in this stats file", "Guest throttle"]);
    assert!(!svg.lines.iter().any(|l| l.0 == hex(draw::THROTTLE)));

    let bad = STATS.replacen("\"sent\":9000", "\"sent\":\"many\"", 1);
    let (o, out) = plot_stats(dir.path(), "bad.jsonl", &bad);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.jsonl: line 2: field `sent`"), "{err}");
    assert!(!out.exists());
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

/// Render `svg` with headless Chromium into a PNG and decode it.
fn screenshot(svg: &Path, png: &Path) -> Option<(u32, u32, Vec<[u8; 3]>)> {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,900")
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    assert!(
        o.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert!(step >= 3, "an RGB(A) screenshot: {:?}", info.color_type);
    let pixels = buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Some((info.width, info.height, pixels))
}

#[test]
fn chromium_renders_both_pictures_not_blank() {
    if std::process::Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        hvm_tests::prereq::skip(
            hvm_tests::prereq::CHROMIUM,
            "chromium_renders_both_pictures_not_blank",
            "no chromium on PATH",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("hot.img");
    std::fs::write(&img, hot_image()).unwrap();
    let image_svg = dir.path().join("hot.svg");
    plot(&img, &image_svg);
    let (o, stats_svg) = plot_stats(dir.path(), "s.jsonl", STATS);
    ok(&o);
    for (svg, must) in [
        (&image_svg, [draw::PRECOPY, draw::FINAL, LEVELS[3].1]),
        (&stats_svg, [draw::PRECOPY, draw::SUSPENDING, draw::FINAL]),
    ] {
        let png = svg.with_extension("png");
        let (w, h, px) = screenshot(svg, &png).expect("chromium runs");
        assert_eq!((w, h), (1200, 900));
        let distinct: std::collections::HashSet<[u8; 3]> = px.iter().copied().collect();
        assert!(distinct.len() > 1, "{} renders blank", svg.display());
        // The series' colours are on screen (bar interiors are exact).
        for c in must {
            let n = px.iter().filter(|p| **p == [c.0, c.1, c.2]).count();
            assert!(n > 50, "{}: {n} pixels of {}", svg.display(), hex(c));
        }
    }
}

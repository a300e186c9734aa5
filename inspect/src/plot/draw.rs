//! What both pictures share: the palette, the fonts, and legend swatches.
//!
//! Legend swatches are polygons, not rectangles: every `<rect>` of a series
//! colour in the SVG is then a data mark, which is what the tests count.

use plotters::element::Polygon;
use plotters::prelude::*;
use plotters::style::RGBColor;

/// Width and height of every picture, pixels.
pub const SIZE: (u32, u32) = (1200, 900);

/// Pre-copy passes (guest running).
pub const PRECOPY: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Sent while the suspend was requested but the guest still ran.
pub const SUSPENDING: RGBColor = RGBColor(0x9e, 0x6a, 0xd6);
/// The final round (guest suspended), or a non-live save's only pass.
pub const FINAL: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// The `--debug` verify resend.
pub const VERIFY: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
/// Where pre-copy stopped.
pub const STOP: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// Dirty rate.
pub const DIRTY: RGBColor = RGBColor(0xd6, 0x27, 0x28);
/// Send rate.
pub const SEND: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// Throttle level.
pub const THROTTLE: RGBColor = RGBColor(0x8c, 0x56, 0x4b);

/// Panel captions.
pub fn caption_font() -> TextStyle<'static> {
    ("sans-serif", 22).into_font().style(FontStyle::Bold).into()
}

/// Axis descriptions.
pub fn axis_font() -> TextStyle<'static> {
    ("sans-serif", 16).into()
}

/// Tick labels, legends and notes.
pub fn small_font() -> TextStyle<'static> {
    ("sans-serif", 14).into()
}

/// A filled square legend swatch of `color` at the legend's anchor point.
pub fn swatch(color: RGBColor) -> impl Fn((i32, i32)) -> Polygon<(i32, i32)> {
    move |(x, y)| {
        Polygon::new(
            vec![(x, y - 6), (x + 12, y - 6), (x + 12, y + 6), (x, y + 6)],
            color.filled(),
        )
    }
}

/// A short line legend mark of `color`.
pub fn line_mark(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(3))
}

/// The label of tick `x` on an axis of columns labelled `labels`: the
/// column's label at whole numbers, nothing between them.
pub fn column_label(labels: &[String], x: f64) -> String {
    let r = x.round();
    if (x - r).abs() > 1e-6 || r < 0.0 {
        return String::new();
    }
    labels.get(r as usize).cloned().unwrap_or_default()
}

/// A tick value in at most five characters or so: `950`, `80 k`, `2.5 M`.
pub fn compact(v: f64) -> String {
    let (x, unit) = if v.abs() >= 1e9 {
        (v / 1e9, " G")
    } else if v.abs() >= 1e6 {
        (v / 1e6, " M")
    } else if v.abs() >= 1e4 {
        (v / 1e3, " k")
    } else {
        (v, "")
    };
    let s = format!("{x:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s}{unit}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_compact() {
        assert_eq!(super::compact(0.0), "0");
        assert_eq!(super::compact(9500.0), "9500");
        assert_eq!(super::compact(80000.0), "80 k");
        assert_eq!(super::compact(2_500_000.0), "2.5 M");
        assert_eq!(super::compact(1e9), "1 G");
    }

    #[test]
    fn only_whole_ticks_get_column_labels() {
        let l = vec!["0".to_string(), "final".to_string()];
        assert_eq!(super::column_label(&l, 1.0), "final");
        assert_eq!(super::column_label(&l, 0.5), "");
        assert_eq!(super::column_label(&l, 2.0), "");
        assert_eq!(super::column_label(&l, -1.0), "");
    }
}

//! Charts drawn on the server as inline SVG: nothing to load, nothing to run in the
//! browser, and they print.

use std::fmt::Write as _;

use super::html::esc;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// Colours that stay apart for the colour-blind (Okabe and Ito's palette).
const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
];

/// One line: its name and its points (time in ms, value).
#[derive(Debug, Clone, Default)]
pub(super) struct Series {
    pub name: String,
    pub points: Vec<(u64, f64)>,
}

/// Round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let range = (hi - lo).max(f64::EPSILON);
    let raw = range / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// `v` as a tick label, with as many decimals as the ticks' `step` needs (so that
/// neighbouring ticks never read the same).
fn number(v: f64, step: f64) -> String {
    if v.abs() >= 10_000.0 && step >= 1000.0 {
        return format!("{:.0}k", v / 1000.0);
    }
    let decimals = (0..6i32)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6);
    format!("{v:.*}", usize::try_from(decimals).unwrap_or(6))
}

/// Opens the chart's `<svg>` and draws its y axis: a grid line and a label at each of
/// `ys`, placed by `y`.
fn open_with_y_axis(out: &mut String, title: &str, ys: &[f64], y: impl Fn(f64) -> f64) {
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let tick_step = step(ys);
    for v in ys {
        let py = y(*v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
<text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            number(*v, tick_step)
        );
    }
}

/// The step between ticks (for their labels).
fn step(ticks: &[f64]) -> f64 {
    match ticks {
        [a, b, ..] => b - a,
        _ => 1.0,
    }
}

/// A time tick: the clock, with seconds when the span is short and the date when it
/// is long (UTC, as everywhere in the console).
fn clock(ms: u64, span_ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    if span_ms < 10 * 60_000 {
        format!("{h:02}:{m:02}:{sec:02}")
    } else if span_ms > 2 * 86_400_000 {
        let date = super::html::time(ms);
        date.get(5..10)
            .map_or_else(|| format!("{h:02}:{m:02}"), str::to_owned)
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// A line chart of `series` over time, `unit` on the y axis; the y range covers
/// `floor..` at least (a percentage chart passes `Some((0.0, 100.0))`).
#[allow(clippy::cast_precision_loss)] // times and values become pixels
pub(super) fn lines(
    title: &str,
    unit: &str,
    series: &[Series],
    floor: Option<(f64, f64)>,
) -> String {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut t0, mut t1, mut lo, mut hi) = (u64::MAX, 0u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(t, v) in points {
        t0 = t0.min(t);
        t1 = t1.max(t);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let mut out = format!(
        "<figure class=\"chart\"><figcaption>{} <span class=\"unit\">{}</span></figcaption>",
        esc(title),
        esc(unit)
    );
    if t0 > t1 {
        out.push_str("<p class=\"empty\">no data in this span</p></figure>");
        return out;
    }
    if let Some((f_lo, f_hi)) = floor {
        lo = lo.min(f_lo);
        hi = hi.max(f_hi);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let ys = ticks(lo, hi);
    lo = lo.min(ys.first().copied().unwrap_or(lo));
    hi = hi.max(ys.last().copied().unwrap_or(hi));
    let span_t = (t1 - t0).max(1) as f64;
    let x = |t: u64| LEFT + (t - t0) as f64 / span_t * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM);
    open_with_y_axis(&mut out, title, &ys, y);
    for i in 0..=4u64 {
        let t = t0 + (t1 - t0) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            HEIGHT - 8.0,
            clock(t, t1 - t0)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        if s.points.len() == 1 {
            let (t, v) = s.points[0];
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}</title></circle>",
                x(t),
                y(v),
                esc(&s.name)
            );
            continue;
        }
        let mut d = String::new();
        for (j, &(t, v)) in s.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                x(t),
                y(v)
            );
        }
        let _ = write!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"><title>{}</title></path>",
            esc(&s.name)
        );
    }
    out.push_str("</svg>");
    if series.len() > 1 || series.first().is_some_and(|s| !s.name.is_empty()) {
        out.push_str("<div class=\"legend\">");
        for (i, s) in series.iter().enumerate() {
            let _ = write!(
                out,
                "<span><i style=\"background:{}\"></i>{}</span>",
                PALETTE[i % PALETTE.len()],
                esc(&s.name)
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</figure>");
    out
}

/// A bar chart: one bar per label; a missing value leaves its slot empty (and says so).
#[allow(clippy::cast_precision_loss)] // counts become pixels
pub(super) fn bars(title: &str, unit: &str, bars: &[(String, Option<f64>)]) -> String {
    let mut out = format!(
        "<figure class=\"chart\"><figcaption>{} <span class=\"unit\">{}</span></figcaption>",
        esc(title),
        esc(unit)
    );
    if bars.iter().all(|(_, v)| v.is_none()) {
        out.push_str("<p class=\"empty\">no data in this span</p></figure>");
        return out;
    }
    let hi = bars.iter().filter_map(|(_, v)| *v).fold(0.0f64, f64::max);
    // All zero (no failed rollout, say): a 0..1 axis, not one whose ticks all read 0.
    let hi = if hi > 0.0 { hi } else { 1.0 };
    let ys = ticks(0.0, hi);
    let top = ys.last().copied().unwrap_or(hi).max(hi);
    let y = |v: f64| TOP + (top - v) / top * (HEIGHT - TOP - BOTTOM);
    open_with_y_axis(&mut out, title, &ys, y);
    let slot = (WIDTH - LEFT - RIGHT) / bars.len().max(1) as f64;
    let every = (bars.len() / 8).max(1);
    for (i, (label, value)) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64;
        if let Some(v) = value {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                x + slot * 0.15,
                y(*v),
                slot * 0.7,
                y(0.0) - y(*v),
                PALETTE[0],
                esc(label),
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            );
        }
        if i % every == 0 {
            let _ = write!(
                out,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                HEIGHT - 8.0,
                esc(label)
            );
        }
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        let t = ticks(31.0, 87.0);
        assert!(t.iter().all(|v| (v / 10.0).fract().abs() < 1e-9), "{t:?}");
        assert!(t.first().unwrap() >= &31.0 && t.last().unwrap() <= &87.0);
    }

    #[test]
    fn a_line_chart_draws_each_series_and_escapes_names() {
        let svg = lines(
            "GPU utilisation",
            "%",
            &[
                Series {
                    name: "GPU 0 <a>".to_owned(),
                    points: vec![(0, 10.0), (60_000, 90.0)],
                },
                Series {
                    name: "GPU 1".to_owned(),
                    points: vec![(0, 20.0), (60_000, 30.0)],
                },
            ],
            Some((0.0, 100.0)),
        );
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("GPU 0 &lt;a&gt;") && !svg.contains("<a>"));
        assert!(svg.contains(">100<") && svg.contains(">00:01:00<"));
    }

    #[test]
    fn neighbouring_ticks_never_read_the_same() {
        for (lo, hi) in [(0.0, 0.0167), (0.0, 1.0), (31.0, 87.0), (0.0, 250_000.0)] {
            let ys = ticks(lo, hi);
            let labels: Vec<String> = ys.iter().map(|v| number(*v, step(&ys))).collect();
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(labels, unique, "{lo}..{hi}");
        }
        assert_eq!(number(0.005, 0.005), "0.005");
        assert_eq!(number(50.0, 25.0), "50");
        assert_eq!(number(2.5, 2.5), "2.5");
    }

    #[test]
    fn an_all_zero_bar_chart_has_an_axis_that_reads() {
        let b = bars("failures", "%", &[("mon".to_owned(), Some(0.0))]);
        assert!(b.contains(">1.00<") && b.contains(">0.25<"), "{b}");
    }

    #[test]
    fn time_ticks_fit_the_span() {
        assert_eq!(clock(3_723_000, 60_000), "01:02:03");
        assert_eq!(clock(3_723_000, 3_600_000), "01:02");
        assert_eq!(clock(86_400_000 * 40, 86_400_000 * 30), "02-10");
    }

    #[test]
    fn charts_without_data_say_so() {
        assert!(lines("x", "", &[], None).contains("no data"));
        assert!(bars("x", "", &[("a".to_owned(), None)]).contains("no data"));
        let b = bars(
            "x",
            "",
            &[("mon".to_owned(), Some(3.0)), ("tue".to_owned(), None)],
        );
        assert_eq!(b.matches("<rect").count(), 1);
    }
}

//! Line charts as hand-written SVG: axes, ticks, grid, legend, one polyline per series.

use std::fmt::Write as _;

/// Plot area geometry.
const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// One line of a chart.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    /// Index into the palette.
    pub(crate) colour: usize,
    pub(crate) dashed: bool,
}

/// A chart to render.
#[derive(Clone, Debug)]
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) log_x: bool,
    /// `Some((lo, hi))` fixes the y range (CDFs: 0 to 1); otherwise 0 to the largest value.
    pub(crate) y_range: Option<(f64, f64)>,
    pub(crate) series: Vec<Series>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short tick label: `1.5K`, `20`, `0.25`.
pub(crate) fn tick_label(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}K", trim(format!("{:.2}", v / 1e3)))
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.4}"))
    }
}

/// Ticks at 1, 2 or 5 times a power of ten covering `[lo, hi]`, about five of them.
pub(crate) fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Powers of ten in `[lo, hi]` (with 2× and 5× when the range spans under two decades).
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut out = Vec::new();
    for e in a..=b {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

/// The plotted ranges of a chart and the mapping from data to picture coordinates.
struct Frame {
    log_x: bool,
    x: (f64, f64),
    y: (f64, f64),
}

/// Plot area width and height.
const PW: f64 = W - LEFT - RIGHT;
const PH: f64 = H - TOP - BOTTOM;

impl Frame {
    /// The ranges that hold every usable point: x to whole decades on a log axis, y from 0 (or
    /// the chart's fixed range) to the tick above the largest value.
    fn of(chart: &Chart) -> Self {
        let all: Vec<(f64, f64)> = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|p| chart.usable(p))
            .collect();
        let (mut x_lo, mut x_hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.0), hi.max(p.0))
            });
        if !x_lo.is_finite() {
            (x_lo, x_hi) = (1.0, 10.0);
        }
        if chart.log_x {
            x_lo = 10f64.powf(x_lo.log10().floor());
            x_hi = 10f64.powf(x_hi.log10().ceil());
            if x_hi <= x_lo {
                x_hi = x_lo * 10.0;
            }
        } else if x_hi <= x_lo {
            (x_lo, x_hi) = (x_lo - 1.0, x_hi + 1.0);
        }
        let y = chart.y_range.unwrap_or_else(|| {
            let top = all.iter().map(|p| p.1).fold(0.0, f64::max);
            let top = if top > 0.0 { top } else { 1.0 };
            let ticks = linear_ticks(0.0, top * 1.05);
            (
                0.0,
                ticks
                    .last()
                    .copied()
                    .filter(|&t| t >= top)
                    .unwrap_or(top * 1.1),
            )
        });
        Self {
            log_x: chart.log_x,
            x: (x_lo, x_hi),
            y,
        }
    }

    fn sx(&self, x: f64) -> f64 {
        let (lo, hi) = self.x;
        let f = if self.log_x {
            (x.log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            (x - lo) / (hi - lo)
        };
        LEFT + f * PW
    }

    fn sy(&self, y: f64) -> f64 {
        let (lo, hi) = self.y;
        TOP + PH - (y - lo) / (hi - lo) * PH
    }

    /// Grid lines and tick labels of both axes.
    fn grid(&self, s: &mut String) {
        let x_ticks = if self.log_x {
            log_ticks(self.x.0, self.x.1)
        } else {
            linear_ticks(self.x.0, self.x.1)
        };
        for t in x_ticks {
            let x = self.sx(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
                TOP + PH
            );
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + PH + 16.0,
                tick_label(t)
            );
        }
        for t in linear_ticks(self.y.0, self.y.1) {
            let y = self.sy(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                LEFT + PW
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                tick_label(t)
            );
        }
    }
}

impl Chart {
    /// Whether a point can be drawn: finite, and with a positive x on a log axis.
    fn usable(&self, &(x, y): &(f64, f64)) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0)
    }

    /// Renders the chart. Non-finite points and, on a log axis, non-positive x are skipped.
    pub(crate) fn render(&self) -> String {
        let frame = Frame::of(self);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            LEFT + PW / 2.0,
            escape(&self.title)
        );
        frame.grid(&mut s);
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + PW / 2.0,
            H - 14.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + PH / 2.0,
            TOP + PH / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            self.line(&mut s, &frame, i, series);
        }
        s.push_str("</svg>\n");
        s
    }

    /// Series `i`: its polyline (with a dot per point when there are at most 40) and its
    /// legend entry.
    fn line(&self, s: &mut String, frame: &Frame, i: usize, series: &Series) {
        let colour = COLOURS
            .get(series.colour % COLOURS.len())
            .copied()
            .unwrap_or("black");
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let (y_lo, y_hi) = frame.y;
        let pts: Vec<String> = series
            .points
            .iter()
            .filter(|p| self.usable(p))
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.sx(x), frame.sy(y.clamp(y_lo, y_hi))))
            .collect();
        if !pts.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            if pts.len() <= 40 {
                for p in &pts {
                    if let Some((x, y)) = p.split_once(',') {
                        let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
                    }
                }
            }
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + PW + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>"#,
            lx + 26.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 32.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(linear_ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = linear_ticks(0.0, 1.0);
        assert_eq!(t.len(), 6);
        assert!((t[3] - 0.6).abs() < 1e-12);
        assert_eq!(linear_ticks(3.0, 3.0), vec![3.0]);
        assert_eq!(log_ticks(1.0, 1000.0), vec![1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(1.0, 10.0), vec![1.0, 2.0, 5.0, 10.0]);
        assert_eq!(tick_label(1500.0), "1.5K");
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(2_000_000.0), "2M");
    }

    #[test]
    fn renders_escaped_balanced_svg() {
        let chart = Chart {
            title: "a <b> & c".into(),
            x_label: "nodes".into(),
            y_label: "ops/s".into(),
            log_x: true,
            y_range: None,
            series: vec![
                Series {
                    name: "secure".into(),
                    points: vec![(1.0, 5.0), (10.0, 4.0), (0.0, 1.0), (f64::NAN, 2.0)],
                    colour: 0,
                    dashed: false,
                },
                Series {
                    name: "insecure".into(),
                    points: vec![(1.0, 6.0), (10.0, 5.5)],
                    colour: 1,
                    dashed: true,
                },
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // The skipped points leave two circles per series.
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn empty_chart_still_renders() {
        let chart = Chart {
            title: "empty".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            y_range: Some((0.0, 1.0)),
            series: vec![],
        };
        let svg = chart.render();
        assert!(svg.contains("</svg>") && !svg.contains("NaN"));
    }
}

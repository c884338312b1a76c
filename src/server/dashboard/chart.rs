//! A host's runs over time as an SVG drawn on the server: how long each
//! run took (a line with a point per run) and how many resources it
//! changed (a bar per run, red when it failed). No charting service and no
//! script: the chart is markup like the rest of the page.

use std::fmt::Write as _;

use super::html::{esc, utc};

/// One run on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub started_at: u64,
    pub elapsed_ms: f64,
    pub changes: u64,
    pub failed: bool,
}

const W: f64 = 960.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 84.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The chart of `points`, oldest first.
pub fn runs(points: &[Point]) -> String {
    if points.is_empty() {
        return "<p class=\"empty\">No runs in this period.</p>".into();
    }
    let max_ms = points.iter().map(|p| p.elapsed_ms).fold(1.0, f64::max);
    let max_changes = points.iter().map(|p| p.changes).max().unwrap_or(0).max(1) as f64;
    let (first, last) = (points[0].started_at, points[points.len() - 1].started_at);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    // Runs are evenly spaced in their order, so that runs close in time
    // stay apart (the axis gives the period); one run alone sits in the
    // middle.
    let step = plot_w / (points.len().max(2) - 1) as f64;
    let x = |i: usize| {
        if points.len() == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + step * i as f64
        }
    };
    let y_ms = |ms: f64| TOP + plot_h * (1.0 - ms / max_ms);
    let bar_w = (plot_w / points.len() as f64 * 0.6).clamp(1.0, 12.0);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{} runs: duration and changes\" xmlns=\"http://www.w3.org/2000/svg\">",
        points.len()
    );
    // Axes and their scales.
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <text class=\"scale ms\" x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{ms}</text>\
         <text class=\"scale changes\" x=\"{rx}\" y=\"{ty}\">{ch} changes</text>\
         <text class=\"scale\" x=\"{LEFT}\" y=\"{ly}\">{from}</text>\
         <text class=\"scale\" x=\"{r}\" y=\"{ly}\" text-anchor=\"end\">{to}</text>",
        b = TOP + plot_h,
        r = W - RIGHT,
        tx = LEFT - 6.0,
        ty = TOP + 10.0,
        ms = esc(&format_ms(max_ms)),
        rx = W - RIGHT + 6.0,
        ch = max_changes as u64,
        ly = H - 8.0,
        from = esc(&utc(first)),
        to = esc(&utc(last)),
    );
    for (i, p) in points.iter().enumerate() {
        let h = plot_h * (p.changes as f64 / max_changes);
        let class = if p.failed { "bar failed" } else { "bar" };
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\"/>",
            x(i) - bar_w / 2.0,
            TOP + plot_h - h,
        );
    }
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y_ms(p.elapsed_ms)))
        .collect();
    let _ = write!(
        out,
        "<polyline class=\"duration\" points=\"{}\"/>",
        line.join(" ")
    );
    for (i, p) in points.iter().enumerate() {
        let _ = write!(
            out,
            "<circle class=\"run{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{} UTC: {}, {} changed{}</title></circle>",
            if p.failed { " failed" } else { "" },
            x(i),
            y_ms(p.elapsed_ms),
            esc(&utc(p.started_at)),
            esc(&format_ms(p.elapsed_ms)),
            p.changes,
            if p.failed { ", failed" } else { "" },
        );
    }
    out.push_str("</svg>");
    out
}

/// A duration as a person reads it.
pub fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: u64, ms: f64, changes: u64) -> Point {
        Point {
            started_at: t,
            elapsed_ms: ms,
            changes,
            failed: false,
        }
    }

    #[test]
    fn each_run_is_one_point_and_one_bar_inside_the_plot() {
        let svg = runs(&[p(0, 100.0, 0), p(1800, 2500.0, 3), p(3600, 50.0, 1)]);
        assert_eq!(svg.matches("<circle class=\"run\"").count(), 3);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        // The slowest run is at the top, the oldest at the left.
        assert!(svg.contains(&format!(
            "cx=\"{LEFT:.1}\" cy=\"{:.1}\"",
            H - BOTTOM - (H - TOP - BOTTOM) * 0.04
        )));
        assert!(svg.contains(&format!("cy=\"{TOP:.1}\"")));
        assert!(runs(&[]).contains("No runs"));
        assert_eq!(runs(&[p(5, 1.0, 0)]).matches("<circle").count(), 1);
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(format_ms(12.4), "12 ms");
        assert_eq!(format_ms(2500.0), "2.5 s");
        assert_eq!(format_ms(600_000.0), "10.0 min");
    }
}

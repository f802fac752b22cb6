//! The latency chart the run draws: an SVG written by hand (no plotting dependency), one panel
//! per load (each concurrency, the fixed rate, streaming TTFB), in each panel one group of
//! bars per target: p50, p99 and p99.9 on a log scale.

use std::fmt::Write as _;

/// One panel: a title and, per target, its p50, p99 and p99.9 in microseconds.
pub(crate) struct Panel {
    pub title: String,
    pub groups: Vec<(String, [f64; 3])>,
}

const WIDTH: f64 = 1120.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 90.0;
const PANEL_GAP: f64 = 24.0;
const COLORS: [&str; 3] = ["#4e79a7", "#f28e2b", "#e15759"];
const PERCENTILES: [&str; 3] = ["p50", "p99", "p99.9"];

pub(crate) fn latency_svg(title: &str, panels: &[Panel]) -> String {
    let values = panels
        .iter()
        .flat_map(|p| p.groups.iter().flat_map(|(_, v)| v.iter().copied()))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo_exp, hi_exp) = if hi > 0.0 {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| {
        let v = if v > 0.0 { v.log10() } else { lo_exp };
        TOP + plot_h * (1.0 - (v - lo_exp) / (hi_exp - lo_exp))
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Legend.
    for (i, (color, name)) in COLORS.iter().zip(PERCENTILES).enumerate() {
        let x = WIDTH / 2.0 - 120.0 + i as f64 * 90.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="36" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(svg, r#"<text x="{}" y="47">{name}</text>"#, x + 16.0);
    }
    // Decade grid lines with labels.
    let mut exp = lo_exp;
    while exp <= hi_exp {
        let v = 10f64.powf(exp);
        let gy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#ddd"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            gy + 4.0,
            duration_label(v)
        );
        exp += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency at the client (log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );

    let n = panels.len().max(1) as f64;
    let panel_w = (WIDTH - LEFT - RIGHT - PANEL_GAP * (n - 1.0)) / n;
    for (p, panel) in panels.iter().enumerate() {
        let px = LEFT + p as f64 * (panel_w + PANEL_GAP);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            px + panel_w / 2.0,
            TOP - 6.0,
            escape(&panel.title)
        );
        let groups = panel.groups.len().max(1) as f64;
        let group_w = panel_w / groups;
        let bar_w = (group_w - 12.0) / 3.0;
        for (g, (label, values)) in panel.groups.iter().enumerate() {
            let gx = px + g as f64 * group_w + 6.0;
            for (i, value) in values.iter().enumerate() {
                let top = y(*value);
                let bottom = TOP + plot_h;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"><title>{} {}: {:.1} µs</title></rect>"#,
                    gx + i as f64 * bar_w,
                    (bottom - top).max(0.0),
                    COLORS[i],
                    escape(label),
                    PERCENTILES[i],
                    value
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" transform="rotate(-35 {:.1} {:.1})">{}</text>"#,
                gx + 1.5 * bar_w,
                TOP + plot_h + 16.0,
                gx + 1.5 * bar_w,
                TOP + plot_h + 16.0,
                escape(label)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn duration_label(micros: f64) -> String {
    if micros >= 1_000_000.0 {
        format!("{} s", micros / 1_000_000.0)
    } else if micros >= 1_000.0 {
        format!("{} ms", micros / 1_000.0)
    } else {
        format!("{micros} µs")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_bar_per_percentile_and_target() {
        let panels = vec![Panel {
            title: "c=1".into(),
            groups: vec![
                ("direct".into(), [50.0, 90.0, 200.0]),
                ("aigw".into(), [80.0, 150.0, 3000.0]),
            ],
        }];
        let svg = latency_svg("t <x>", &panels);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 6 + 3);
        assert!(svg.contains("t &lt;x&gt;"));
        assert!(svg.contains("10 µs") && svg.contains("10 ms"));
    }

    #[test]
    fn empty_panels_still_draw() {
        assert!(latency_svg("none", &[]).contains("</svg>"));
    }
}

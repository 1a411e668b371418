//! The report as one self-contained HTML page: inline SVG charts (no script or style from
//! elsewhere), the report's text, and its JSON. A small inline script measures every drawn series
//! once the page is laid out and writes what it found on `<body data-rendered=…>`, which is how
//! the tests check, in a real browser, that the charts hold their series.

use std::fmt::Write as _;

use crate::report::{quantile, Report, Series};

const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const PRIORITIES: [&str; 4] = ["critical", "high", "normal", "low"];
const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// One line of a chart; `colour` indexes [`COLOURS`], the same for a limit or a priority in every chart.
struct Line<'a> {
    name: &'a str,
    colour: usize,
    points: Vec<(f64, f64)>,
}

/// The x axis: linear, or logarithmic (`log10(1 + x)`, for waits from 0 ms to minutes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    Log,
}

/// The page for one run, or several side by side (`--compare`).
pub(crate) fn html(runs: &[(Report, Series)], title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
.runs {{ display: grid; grid-template-columns: repeat({cols}, minmax(0, 1fr)); gap: 24px; }}
figure {{ margin: 0 0 18px 0; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }}
svg {{ width: 100%; height: auto; background: #fff; border: 1px solid #ddd; }}
.legend span {{ margin-right: 12px; white-space: nowrap; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
pre {{ background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }}
text {{ font: 11px system-ui, sans-serif; fill: #555; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="runs">
"#,
        title = escape(title),
        cols = runs.len().max(1)
    );
    for (report, series) in runs {
        run_section(&mut out, report, series);
    }
    out.push_str("</div>\n<h2>Report</h2>\n<pre id=\"report\">");
    let reports: Vec<Report> = runs.iter().map(|(r, _)| r.clone()).collect();
    out.push_str(&escape(&crate::report::text(&reports)));
    out.push_str("</pre>\n<script type=\"application/json\" id=\"data\">");
    out.push_str(&serde_json::to_string(&reports).unwrap_or_default().replace("</", "<\\/"));
    out.push_str("</script>\n");
    out.push_str(CHECK_SCRIPT);
    out.push_str("</body></html>\n");
    out
}

/// Writes, once laid out, every chart's series with its drawn length and point count.
const CHECK_SCRIPT: &str = r#"<script>
addEventListener('load', () => {
  const charts = [...document.querySelectorAll('figure[data-chart]')].map((f) => ({
    chart: f.dataset.chart,
    run: f.dataset.run,
    width: f.querySelector('svg').getBoundingClientRect().width,
    series: [...f.querySelectorAll('polyline[data-series]')].map((p) => ({
      name: p.dataset.series,
      points: p.points.numberOfItems,
      length: Math.round(p.getTotalLength()),
    })),
  }));
  document.body.dataset.rendered = JSON.stringify(charts);
});
</script>
"#;

fn run_section(out: &mut String, r: &Report, s: &Series) {
    let _ = writeln!(out, "<section><h2>{}</h2>", escape(&r.label));
    let util: Vec<Line<'_>> = s
        .limits
        .iter()
        .enumerate()
        .filter(|(i, _)| s.balance[*i].iter().all(Option::is_none))
        .map(|(i, name)| Line {
            name,
            colour: i,
            points: s.t.iter().zip(&s.utilisation[i]).map(|(&t, &u)| (t, (u * 100.0).min(150.0))).collect(),
        })
        .collect();
    if !util.is_empty() {
        chart(
            out,
            "utilisation",
            &r.label,
            "Utilisation per limit (% of capacity used)",
            "s",
            "%",
            &util,
            Some(100.0),
            Scale::Linear,
        );
    }
    let queue: Vec<Line<'_>> = PRIORITIES
        .iter()
        .enumerate()
        .filter(|(p, _)| s.queue[*p].iter().any(|&q| q > 0) || *p == 2)
        .map(|(p, name)| Line {
            name,
            colour: p,
            points: s.t.iter().zip(&s.queue[p]).map(|(&t, &q)| (t, f64::from(q))).collect(),
        })
        .collect();
    chart(out, "queue", &r.label, "Waiting requests per priority", "s", "", &queue, None, Scale::Linear);
    let budgets: Vec<Line<'_>> = s
        .limits
        .iter()
        .enumerate()
        .filter(|(i, _)| s.balance[*i].iter().any(Option::is_some))
        .map(|(i, name)| Line {
            name,
            colour: i,
            points: s.t.iter().zip(&s.balance[i]).filter_map(|(&t, b)| b.map(|b| (t, b as f64))).collect(),
        })
        .collect();
    if !budgets.is_empty() {
        chart(out, "budget", &r.label, "Budget balance (tokens)", "s", "", &budgets, None, Scale::Linear);
    }
    // The wait distribution: the share of admissions that waited at most x ms.
    let waits: Vec<Line<'_>> = PRIORITIES
        .iter()
        .enumerate()
        .filter(|(p, _)| !s.waits[*p].is_empty())
        .map(|(p, name)| {
            let mut w = s.waits[p].clone();
            w.sort_unstable_by(f64::total_cmp);
            let mut points = vec![(0.0, 0.0)];
            for q in 0..=100 {
                points.push((quantile(&w, f64::from(q) / 100.0), f64::from(q)));
            }
            points.dedup();
            Line { name, colour: p, points }
        })
        .collect();
    if !waits.is_empty() {
        chart(
            out,
            "waits",
            &r.label,
            "Wait before going, per priority (% of admissions that waited at most x ms; log scale)",
            "ms",
            "%",
            &waits,
            None,
            Scale::Log,
        );
    }
    out.push_str("</section>\n");
}

#[allow(clippy::too_many_arguments)]
fn chart(
    out: &mut String,
    id: &str,
    run: &str,
    caption: &str,
    x_unit: &str,
    y_unit: &str,
    lines: &[Line<'_>],
    mark: Option<f64>,
    scale: Scale,
) {
    let fx = |x: f64| if scale == Scale::Log { (1.0 + x.max(0.0)).log10() } else { x };
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let x_max = match scale {
        Scale::Linear => xs.fold(0.0, f64::max).max(1e-9),
        Scale::Log => 10f64.powf(fx(xs.fold(0.0, f64::max)).ceil().max(1.0)) - 1.0,
    };
    let y_min = ys.clone().fold(0.0, f64::min);
    let y_min = if y_min < 0.0 { -nice(-y_min) } else { 0.0 };
    let y_max = nice(ys.fold(mark.unwrap_or(1.0), f64::max).max(y_min + 1.0));
    let sx = |x: f64| LEFT + fx(x) / fx(x_max) * (W - LEFT - RIGHT);
    let sy = |y: f64| TOP + (1.0 - (y - y_min) / (y_max - y_min)) * (H - TOP - BOTTOM);
    let _ = write!(
        out,
        r#"<figure class="chart" data-chart="{id}" data-run="{run}"><figcaption>{caption}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{caption}">"#,
        run = escape(run),
        caption = escape(caption)
    );
    // Axes and ticks.
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="#999"/>"##,
        b = H - BOTTOM,
        r = W - RIGHT
    );
    for i in 0..=4 {
        let y = y_min + (y_max - y_min) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{r}" y1="{py:.1}" y2="{py:.1}" stroke="#eee"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{y}{y_unit}</text>"##,
            r = W - RIGHT,
            py = sy(y),
            tx = LEFT - 4.0,
            ty = sy(y) + 4.0,
            y = tick(y)
        );
        let x = match scale {
            Scale::Linear => x_max * f64::from(i) / 4.0,
            Scale::Log => 10f64.powf(fx(x_max) * f64::from(i) / 4.0) - 1.0,
        };
        let _ = write!(
            out,
            r#"<text x="{px:.1}" y="{ty}" text-anchor="middle">{x}{x_unit}</text>"#,
            px = sx(x),
            ty = H - BOTTOM + 16.0,
            x = tick(x)
        );
    }
    if let Some(m) = mark {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{r}" y1="{py:.1}" y2="{py:.1}" stroke="#444" stroke-dasharray="4 3"/>"##,
            r = W - RIGHT,
            py = sy(m)
        );
    }
    for l in lines {
        let mut points = String::with_capacity(l.points.len() * 12);
        for &(x, y) in &l.points {
            let _ = write!(points, "{:.1},{:.1} ", sx(x), sy(y));
        }
        let _ = write!(
            out,
            r#"<polyline data-series="{name}" fill="none" stroke="{c}" stroke-width="1.5" points="{p}"/>"#,
            name = escape(l.name),
            c = COLOURS[l.colour % COLOURS.len()],
            p = points.trim_end()
        );
    }
    out.push_str("</svg><div class=\"legend\">");
    for l in lines {
        let _ = write!(
            out,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            COLOURS[l.colour % COLOURS.len()],
            escape(l.name)
        );
    }
    out.push_str("</div></figure>\n");
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten not below `v` (ticks at quarters stay round).
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 4.0, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v * 0.999_999).unwrap_or(10.0 * p)
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let t = format!("{v:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

//! Self-contained HTML reports with inline SVG plots (no scripts, no network): latency
//! percentiles against throughput, where the knee shows, and latency and throughput over time.

use super::report::{Report, best_within};

/// A line on a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// Points in data units.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot on each point.
    pub markers: bool,
}

/// A chart's text and scales.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Vertical markers: position and label.
    pub vlines: Vec<(f64, String)>,
    /// Shaded x ranges (warm-up).
    pub shaded: Vec<(f64, f64)>,
    /// A dashed horizontal reference line and its label.
    pub hline: Option<(f64, String)>,
}

/// Colours for series, in order.
pub const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
];

const W: f64 = 760.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Axis mapping for one dimension.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        } else {
            lo = lo.min(0.0);
            if hi <= lo {
                hi = lo + 1.0;
            }
            hi *= 1.05;
        }
        Axis { lo, hi, log }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut out = Vec::new();
            let mut decade = self.lo;
            while decade <= self.hi * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let v = decade * m;
                    if v <= self.hi * 1.0001 {
                        out.push(v);
                    }
                }
                decade *= 10.0;
            }
            out
        } else {
            let raw = (self.hi - self.lo) / 6.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(mag * 10.0);
            let mut out = Vec::new();
            let mut v = (self.lo / step).ceil() * step;
            while v <= self.hi {
                out.push(v);
                v += step;
            }
            out
        }
    }
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An SVG line chart.
pub fn svg(chart: &Chart, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let mut xs: Vec<f64> = all().map(|p| p.0).collect();
    xs.extend(chart.vlines.iter().map(|v| v.0));
    let mut ys: Vec<f64> = all().map(|p| p.1).collect();
    if let Some((y, _)) = &chart.hline {
        ys.push(*y);
    }
    let xa = Axis::new(xs.into_iter(), chart.log_x);
    let ya = Axis::new(ys.into_iter(), chart.log_y);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + xa.frac(x) * pw;
    let py = |y: f64| TOP + (1.0 - ya.frac(y)) * ph;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' font-family='sans-serif' font-size='12'>\n\
         <text x='{LEFT}' y='20' font-size='15' font-weight='bold'>{}</text>\n",
        esc(chart.title)
    );
    for (a, b) in &chart.shaded {
        s.push_str(&format!(
            "<rect x='{:.1}' y='{TOP}' width='{:.1}' height='{ph}' fill='#eee'/>\n",
            px(*a),
            (px(*b) - px(*a)).max(0.0)
        ));
    }
    for t in xa.ticks() {
        let x = px(t);
        s.push_str(&format!(
            "<line x1='{x:.1}' y1='{TOP}' x2='{x:.1}' y2='{:.1}' stroke='#ddd'/><text x='{x:.1}' y='{:.1}' text-anchor='middle'>{}</text>\n",
            TOP + ph,
            TOP + ph + 16.0,
            label(t)
        ));
    }
    for t in ya.ticks() {
        let y = py(t);
        s.push_str(&format!(
            "<line x1='{LEFT}' y1='{y:.1}' x2='{:.1}' y2='{y:.1}' stroke='#ddd'/><text x='{:.1}' y='{:.1}' text-anchor='end'>{}</text>\n",
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        ));
    }
    s.push_str(&format!(
        "<rect x='{LEFT}' y='{TOP}' width='{pw}' height='{ph}' fill='none' stroke='#888'/>\n\
         <text x='{:.1}' y='{:.1}' text-anchor='middle'>{}</text>\n\
         <text transform='translate(16,{:.1}) rotate(-90)' text-anchor='middle'>{}</text>\n",
        LEFT + pw / 2.0,
        H - 8.0,
        esc(chart.x_label),
        TOP + ph / 2.0,
        esc(chart.y_label)
    ));
    for (x, text) in &chart.vlines {
        let x = px(*x);
        s.push_str(&format!(
            "<line x1='{x:.1}' y1='{TOP}' x2='{x:.1}' y2='{:.1}' stroke='#999' stroke-dasharray='2,3'/><text x='{:.1}' y='{:.1}' font-size='10' fill='#555'>{}</text>\n",
            TOP + ph,
            x + 2.0,
            TOP + 10.0,
            esc(text)
        ));
    }
    if let Some((y, text)) = &chart.hline {
        let y = py(*y);
        s.push_str(&format!(
            "<line x1='{LEFT}' y1='{y:.1}' x2='{:.1}' y2='{y:.1}' stroke='#c00' stroke-dasharray='6,4'/><text x='{:.1}' y='{:.1}' fill='#c00' font-size='11'>{}</text>\n",
            LEFT + pw,
            LEFT + 4.0,
            y - 4.0,
            esc(text)
        ));
    }
    for (k, line) in series.iter().enumerate() {
        let pts: Vec<String> = line
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_y || *y > 0.0))
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        s.push_str(&format!(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>\n",
            line.color,
            pts.join(" ")
        ));
        if line.markers {
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                s.push_str(&format!(
                    "<circle cx='{x}' cy='{y}' r='3' fill='{}'/>\n",
                    line.color
                ));
            }
        }
        let ly = TOP + 14.0 + 18.0 * k as f64;
        s.push_str(&format!(
            "<line x1='{:.1}' y1='{ly:.1}' x2='{:.1}' y2='{ly:.1}' stroke='{}' stroke-width='3'/><text x='{:.1}' y='{:.1}'>{}</text>\n",
            W - RIGHT + 12.0,
            W - RIGHT + 32.0,
            line.color,
            W - RIGHT + 38.0,
            ly + 4.0,
            esc(&line.name)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}\
         td:first-child,th:first-child{{text-align:left}}code{{background:#f4f4f4}}</style></head><body>\n{}\n</body></html>\n",
        esc(title),
        body
    )
}

/// One point per step with answers: (achieved rate, the chosen percentile in ms).
fn latency_points(r: &Report, f: fn(&super::report::Latency) -> u64) -> Vec<(f64, f64)> {
    r.steps
        .iter()
        .filter(|s| s.ok > 0)
        .map(|s| (s.achieved_rps, f(&s.latency_us) as f64 / 1000.0))
        .collect()
}

/// The single-run report.
pub fn report_page(r: &Report) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let percentile = |name: &str, color, f: fn(&super::report::Latency) -> u64| Series {
        name: name.into(),
        color,
        points: latency_points(r, f),
        markers: true,
    };
    let knee = svg(
        &Chart {
            title: "Latency percentiles against achieved throughput (one point per step)",
            x_label: "achieved requests/s",
            y_label: "latency ms (log)",
            log_x: false,
            log_y: true,
            vlines: vec![],
            shaded: vec![],
            hline: Some((10.0, "10 ms".into())),
        },
        &[
            percentile("p50", PALETTE[0], |l| l.p50),
            percentile("p90", PALETTE[1], |l| l.p90),
            percentile("p99", PALETTE[3], |l| l.p99),
            percentile("p99.9", PALETTE[4], |l| l.p999),
        ],
    );
    let step_lines: Vec<(f64, String)> = r
        .steps
        .iter()
        .map(|s| {
            let text = match (s.offered_rps, s.concurrency) {
                (Some(rate), _) => label(rate),
                (None, Some(c)) => format!("c={c}"),
                _ => String::new(),
            };
            (s.starts_at_s as f64, text)
        })
        .collect();
    let warmups: Vec<(f64, f64)> = r
        .steps
        .iter()
        .map(|s| (s.starts_at_s as f64, s.starts_at_s as f64 + r.warmup_s))
        .collect();
    let over_time = |name: &str, color, f: fn(&super::report::Tick) -> u64| Series {
        name: name.into(),
        color,
        points: r
            .timeline
            .iter()
            .filter(|t| t.ok > 0)
            .map(|t| (t.t as f64 + 0.5, ms(f(t))))
            .collect(),
        markers: false,
    };
    let latency_time = svg(
        &Chart {
            title: "Latency over time (per second; grey: warm-up; dashed: step starts)",
            x_label: "seconds since start",
            y_label: "latency ms (log)",
            log_x: false,
            log_y: true,
            vlines: step_lines.clone(),
            shaded: warmups.clone(),
            hline: None,
        },
        &[
            over_time("p50", PALETTE[0], |t| t.p50_us),
            over_time("p99", PALETTE[3], |t| t.p99_us),
            over_time("max", PALETTE[5], |t| t.max_us),
        ],
    );
    let mut rate_series = vec![
        Series {
            name: "answered/s".into(),
            color: PALETTE[2],
            points: r
                .timeline
                .iter()
                .map(|t| (t.t as f64 + 0.5, t.ok as f64))
                .collect(),
            markers: false,
        },
        Series {
            name: "errors/s".into(),
            color: PALETTE[3],
            points: r
                .timeline
                .iter()
                .map(|t| (t.t as f64 + 0.5, t.errors as f64))
                .collect(),
            markers: false,
        },
    ];
    if r.mode == "open" {
        rate_series.push(Series {
            name: "offered/s".into(),
            color: "#999",
            points: r
                .steps
                .iter()
                .flat_map(|s| {
                    let end = s.starts_at_s as f64 + r.warmup_s + r.duration_s;
                    let rate = s.offered_rps.unwrap_or(0.0);
                    [(s.starts_at_s as f64, rate), (end, rate)]
                })
                .collect(),
            markers: false,
        });
    }
    let rate_time = svg(
        &Chart {
            title: "Throughput over time",
            x_label: "seconds since start",
            y_label: "requests/s",
            log_x: false,
            log_y: false,
            vlines: step_lines,
            shaded: warmups,
            hline: None,
        },
        &rate_series,
    );
    let best = best_within(r, 10_000).map_or("none".to_string(), |s| {
        format!(
            "{:.0} requests/s (p99 {:.2} ms)",
            s.achieved_rps,
            ms(s.latency_us.p99)
        )
    });
    let body = format!(
        "<h1>pixguard bench: {}</h1>\n<p>{} at <code>{}</code>, {} loop{}, {} s per step after {} s warm-up, {} distinct requests. \
         Started {} on {}. pixguard {}.</p>\n<p><code>{}</code></p>\n\
         <p>Highest throughput with p99 ≤ 10 ms and under 1 % errors: <b>{}</b>.</p>\n{}\n{}\n{}\n\
         <h2>Steps</h2>\n<pre>{}</pre>\n",
        esc(&r.label),
        esc(&r.api),
        esc(&r.url),
        esc(&r.mode),
        r.arrivals
            .as_ref()
            .map_or(String::new(), |a| format!(" ({a} arrivals)")),
        r.duration_s,
        r.warmup_s,
        r.requests,
        esc(&r.started_at),
        esc(&r.machine),
        esc(&r.pixguard_version),
        esc(&r.command),
        best,
        knee,
        latency_time,
        rate_time,
        esc(&super::report::table(r))
    );
    page(&format!("pixguard bench: {}", r.label), &body)
}

/// Several runs on one page, with the ratio of the first to each other.
pub fn compare_page(reports: &[Report], p99_limit_us: u64, markdown: &str) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let lines = |f: fn(&super::report::Latency) -> u64| -> Vec<Series> {
        reports
            .iter()
            .enumerate()
            .map(|(k, r)| Series {
                name: r.label.clone(),
                color: PALETTE[k % PALETTE.len()],
                points: latency_points(r, f),
                markers: true,
            })
            .collect()
    };
    let limit = (ms(p99_limit_us), format!("{} ms", ms(p99_limit_us)));
    let chart = |title, f| {
        svg(
            &Chart {
                title,
                x_label: "achieved requests/s (log)",
                y_label: "latency ms (log)",
                log_x: true,
                log_y: true,
                vlines: vec![],
                shaded: vec![],
                hline: Some(limit.clone()),
            },
            &lines(f),
        )
    };
    let body = format!(
        "<h1>pixguard bench: comparison</h1>\n<pre>{}</pre>\n{}\n{}\n",
        esc(markdown),
        chart(
            "p99 latency against achieved throughput",
            |l: &super::report::Latency| l.p99
        ),
        chart(
            "p50 latency against achieved throughput",
            |l: &super::report::Latency| l.p50
        ),
    );
    page("pixguard bench: comparison", &body)
}

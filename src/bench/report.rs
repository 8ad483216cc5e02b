//! The run's results: per-step figures, the per-second timeline, the terminal table and the JSON
//! report (which `pixguard bench-compare` reads back).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::load::Recorder;
use super::part::{self, Part};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of `h` (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One step's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Offered rate, requests/s (open loop).
    pub offered_rps: Option<f64>,
    /// Connections each waiting for its answer (closed loop).
    pub concurrency: Option<usize>,
    /// Successful answers that arrived within the measured window, per second.
    pub achieved_rps: f64,
    /// Successful answers to requests intended (open loop) or sent (closed loop) in the window:
    /// the latency figures' population.
    pub ok: u64,
    /// Failures in the window by outcome (HTTP status, `grpc:Code`, `timeout`, `connect`, `io`).
    pub errors: BTreeMap<String, u64>,
    /// Successful answers of the step (warm-up included) by the model version that gave them,
    /// when the server names it (`x-model-version`, gRPC `model_version`).
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
    /// Latency of successful answers, from the intended send time (open loop) or the send (closed).
    pub latency_us: Latency,
    /// How late the open-loop scheduler released requests.
    pub scheduler_lateness_us: Option<Latency>,
    /// First second of this step in the timeline.
    pub starts_at_s: u64,
    /// A replay's speed (`--arrivals replay`): times faster than recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// A part's report: when this step began, in milliseconds from the run's start (the parts'
    /// common `--start-at`), so the merge can tell parts that did not step together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// A part's report (`--part`): the latency histogram itself ([`part::encode`]), which
    /// `pixguard bench-merge` adds to the other parts'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_hdr: Option<String>,
    /// A part's report: the scheduler lateness histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_hdr: Option<String>,
    /// What the server's own statistics counted over the window, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<super::server_stats::ServerSide>,
}

impl Step {
    /// Failures in the window.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    /// Seconds since the start of the run.
    pub t: u64,
    /// Index of the step running.
    pub step: usize,
    /// Whether this second was warm-up (not in the step's figures).
    pub warmup: bool,
    /// Successful answers intended in this second.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// A part's report: this second's latency histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_hdr: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Name of the target in tables and plots.
    pub label: String,
    /// API loaded (`v1`, `oip-http`, `oip-grpc`, `mlflow`).
    pub api: String,
    /// Target URL.
    pub url: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Arrival process (open loop).
    pub arrivals: Option<String>,
    /// Seconds of warm-up per step.
    pub warmup_s: f64,
    /// Seconds measured per step.
    pub duration_s: f64,
    /// Distinct requests cycled through.
    pub requests: usize,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// Where it ran.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// pixguard's version.
    pub pixguard_version: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Every second of the run.
    pub timeline: Vec<Tick>,
    /// Which share of a split run this generator offered (`--part`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// A merged report (`pixguard bench-merge`): how many generators' parts it adds up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generators: Option<u32>,
}

/// Folds a finished step's recorder into the report; a part's report keeps the histograms.
pub fn add_step(
    report: &mut Report,
    recorder: Recorder,
    offered_rps: Option<f64>,
    concurrency: Option<usize>,
    step_start_s: u64,
    warmup_s: f64,
) -> anyhow::Result<()> {
    let index = report.steps.len();
    let open = offered_rps.is_some();
    let keep = report.part.is_some();
    let hdr = |h: &Histogram<u64>| keep.then(|| part::encode(h)).transpose();
    report.steps.push(Step {
        offered_rps,
        concurrency,
        achieved_rps: recorder.completed as f64 / report.duration_s,
        ok: recorder.ok,
        errors: recorder.errors.clone(),
        versions: recorder.versions.clone(),
        latency_us: Latency::of(&recorder.latency),
        scheduler_lateness_us: open.then(|| Latency::of(&recorder.lateness)),
        starts_at_s: step_start_s,
        speed: None,
        started_ms: None,
        latency_hdr: hdr(&recorder.latency)?,
        lateness_hdr: if open { hdr(&recorder.lateness)? } else { None },
        server: None,
    });
    let warmup_end = step_start_s as f64 + warmup_s;
    for (t, second) in recorder.timeline {
        let l = Latency::of(&second.latency);
        report.timeline.push(Tick {
            t,
            step: index,
            warmup: (t as f64) < warmup_end,
            ok: second.ok,
            errors: second.errors,
            p50_us: l.p50,
            p99_us: l.p99,
            max_us: l.max,
            latency_hdr: hdr(&second.latency)?,
        });
    }
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The terminal table.
pub fn table(report: &Report) -> String {
    // A part's figures are its share of the load; a merged report's, every generator's.
    let whose = match (report.part, report.generators) {
        (Some(part), _) => format!(", part {part}: this generator's share"),
        (None, Some(n)) => format!(", {n} generators merged"),
        (None, None) => String::new(),
    };
    let mut out = format!(
        "{} — {} {} ({}), {} s per step after {} s warm-up{whose}\n",
        report.label, report.api, report.url, report.mode, report.duration_s, report.warmup_s
    );
    out.push_str(&format!(
        "{:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
        if report.mode == "open" {
            "offered/s"
        } else {
            "conns"
        },
        "achieved/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "late p99",
        "errors"
    ));
    for s in &report.steps {
        let load = match (s.offered_rps, s.concurrency) {
            // A replay's step: its speed, and the mean rate that makes.
            (Some(r), _) if s.speed.is_some() => {
                format!("{}× {r:.0}", s.speed.unwrap_or(1.0))
            }
            (Some(r), _) => format!("{r:.0}"),
            (None, Some(c)) => c.to_string(),
            _ => "-".into(),
        };
        let errors = if s.errors.is_empty() {
            "0".to_string()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let l = &s.latency_us;
        out.push_str(&format!(
            "{:>10} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
            load,
            s.achieved_rps,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            s.scheduler_lateness_us.map_or("-".into(), |x| ms(x.p99)),
            errors
        ));
    }
    // The server's own split, where it gave one: its time per request and where it went.
    for (k, s) in report.steps.iter().enumerate() {
        if let Some(server) = &s.server {
            out.push_str(&format!(
                "server, step {}: {} requests ({} rows in {} batches), per request {:.0} µs in \
                 the server, of which queue {:.0} µs + compute {:.0} µs\n",
                k + 1,
                server.requests,
                server.rows,
                server.batches,
                server.request_us,
                server.queue_us,
                server.compute_us
            ));
        }
    }
    // More than one version answering (a canary, a swap during the run): each one's share.
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for (version, n) in report.steps.iter().flat_map(|s| &s.versions) {
        *versions.entry(version).or_default() += n;
    }
    if versions.len() > 1 {
        let total: u64 = versions.values().sum();
        let shares: Vec<String> = versions
            .iter()
            .map(|(v, n)| format!("{v} {n} ({:.1} %)", 100.0 * *n as f64 / total as f64))
            .collect();
        out.push_str(&format!(
            "answered by version (warm-up included): {}\n",
            shares.join(", ")
        ));
    }
    out
}

/// The highest achieved rate of a step with p99 ≤ `p99_limit_us` and under 1 % failures.
pub fn best_within(report: &Report, p99_limit_us: u64) -> Option<&Step> {
    report
        .steps
        .iter()
        .filter(|s| s.ok > 0 && s.latency_us.p99 <= p99_limit_us)
        .filter(|s| (s.failed() as f64) < 0.01 * (s.ok + s.failed()) as f64)
        .max_by(|a, b| a.achieved_rps.total_cmp(&b.achieved_rps))
}

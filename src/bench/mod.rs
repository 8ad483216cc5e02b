//! `pixguard bench`: a load generator for pixguard and its peers. Open loop (constant or Poisson
//! arrivals, latency from the intended send time) or closed loop (N connections each waiting for
//! its answer), in steps, against `/v1/score`, OIP over HTTP or gRPC, or an MLflow scoring
//! server; writes a terminal table, a JSON report and an HTML report with plots.

pub mod client;
pub mod html;
pub mod load;
pub mod report;
pub mod requests;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use load::{Arrivals, Live, Shape};
use report::{Report, best_within};
use requests::Api;

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Requests released at a target rate whatever the answers do; latency from the intended
    /// send time (queueing in the generator counts).
    Open,
    /// A fixed number of connections, each sending its next request when its answer arrives.
    Closed,
}

/// Which datatypes the OIP field inputs go as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OipTypes {
    /// pixguard's fields mode (and Triton's peer): INT64 counts, `NaN` for an absent float.
    Pixguard,
    /// Whatever the server's model metadata declares for each field (read before the run), with
    /// `null` for an absent float: what MLServer's MLflow runtime takes from the MLflow signature.
    Metadata,
}

/// `pixguard bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// API to load: `v1` (POST /v1/score), `oip-http` / `oip-grpc` (Open Inference Protocol, the
    /// transaction's fields as inputs), `mlflow` (POST /invocations, one-row dataframe_split).
    #[arg(long, value_enum, default_value = "v1")]
    pub api: Api,
    /// Target base URL, http:// or https:// (TLS, the system's roots); default
    /// http://127.0.0.1:8080 (8081 for oip-grpc).
    #[arg(long)]
    pub url: Option<String>,
    /// Extra request header `Name: value`, repeatable (gRPC: metadata), e.g. `x-api-key: …` for
    /// Cloud Endpoints. Values are not written to the report.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Model name for the OIP APIs.
    #[arg(long, default_value = "pix-fraud")]
    pub model: String,
    /// OIP APIs: send the transaction's fields with pixguard's datatypes, or with those the
    /// server's model metadata declares (MLServer).
    #[arg(long, value_enum, default_value = "pixguard")]
    pub oip_types: OipTypes,
    /// Load shape.
    #[arg(long, value_enum, default_value = "open")]
    pub mode: Mode,
    /// Open loop: requests per second, one value (`5000`), a list (`1000,2000,5000`) or a range
    /// `start:end:step` (`1000:20000:1000`); one step per value.
    #[arg(long, default_value = "1000:10000:1000")]
    pub rate: String,
    /// Open loop: arrival process.
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: Arrivals,
    /// Open loop: connections, i.e. the most requests in flight; a request finding all busy waits
    /// for one, and that wait is part of its latency.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Closed loop: connections, with the same syntax as --rate (`8`, `1,2,4`, `1:16:1`).
    #[arg(long, default_value = "8")]
    pub concurrency: String,
    /// Seconds measured per step.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of unrecorded load before each step's measurement.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Stop stepping after a step whose p99 exceeds this many milliseconds or that fails over
    /// half its requests (past the knee there is nothing more to learn).
    #[arg(long, default_value_t = 1000.0)]
    pub stop_p99_ms: f64,
    /// Exit non-zero when a measured step's p99 is above this many milliseconds (a release
    /// gate; the reports are written first).
    #[arg(long)]
    pub fail_p99_ms: Option<f64>,
    /// Exit non-zero when a measured step fails more than this fraction of its requests (`0`:
    /// any failure fails the run).
    #[arg(long)]
    pub fail_error_rate: Option<f64>,
    /// Distinct synthetic transactions to cycle through (`pixguard synth`, seed --seed).
    #[arg(long, default_value_t = 10_000)]
    pub transactions: usize,
    /// Seed for the synthetic transactions and the arrival process.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Send these transactions instead (JSONL, bare or `pixguard synth` rows).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Transactions per request (`v1` only, as `{"transactions": [...]}`): rows/s is this times
    /// the request rate. For loading a GPU with millions of rows per second.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rows_per_request: u32,
    /// Per-request timeout in milliseconds (counted as a `timeout` error).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Load-generator threads (tokio workers). One core generates the load the docs quote.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Name of the target in the reports; default `<api> <url>`.
    #[arg(long)]
    pub label: Option<String>,
    /// Folder for report.json and report.html; default target/bench/<UTC time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// `pixguard bench-compare` options.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// report.json files from `pixguard bench`; the first is the one the others are compared to.
    #[arg(required = true, num_args = 2..)]
    pub reports: Vec<PathBuf>,
    /// The latency bound: each run's highest throughput with p99 at or under it is compared.
    #[arg(long, default_value_t = 10.0)]
    pub p99_ms: f64,
    /// Folder for compare.md and compare.html.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `5000`, `1,2,5` or `start:end:step` into the step values.
pub fn parse_steps(spec: &str) -> anyhow::Result<Vec<f64>> {
    let bad = || anyhow::anyhow!("{spec:?} is not a value, a list a,b,c or a range start:end:step");
    let values: Vec<f64> = if spec.contains(':') {
        let parts: Vec<f64> = spec
            .split(':')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [start, end, step] = parts[..] else {
            return Err(bad());
        };
        anyhow::ensure!(
            step > 0.0 && end >= start,
            "{spec:?}: need step > 0 and end ≥ start"
        );
        let n = ((end - start) / step + 1e-9).floor() as usize;
        anyhow::ensure!(n < 10_000, "{spec:?}: too many steps");
        (0..=n).map(|k| start + step * k as f64).collect()
    } else {
        spec.split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?
    };
    anyhow::ensure!(
        !values.is_empty() && values.iter().all(|v| v.is_finite() && *v > 0.0),
        "{spec:?}: values must be positive"
    );
    Ok(values)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{cores} cores, {cpu}")
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be > 0 and --warmup ≥ 0"
    );
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let shapes: Vec<Shape> = match args.mode {
        Mode::Open => parse_steps(&args.rate)
            .context("--rate")?
            .into_iter()
            .map(|rate| Shape::Open {
                rate,
                arrivals: args.arrivals,
                connections: args.connections,
            })
            .collect(),
        Mode::Closed => parse_steps(&args.concurrency)
            .context("--concurrency")?
            .into_iter()
            .map(|c| Shape::Closed {
                concurrency: c as usize,
            })
            .collect(),
    };
    let url = args.url.clone().unwrap_or_else(|| {
        let port = if args.api == Api::OipGrpc { 8081 } else { 8080 };
        format!("http://127.0.0.1:{port}")
    });
    let txs = requests::transactions(args.input.as_deref(), args.transactions, args.seed)?;
    anyhow::ensure!(
        args.rows_per_request == 1 || args.api == Api::V1,
        "--rows-per-request applies to --api v1 only"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let types = match args.oip_types {
        OipTypes::Pixguard => None,
        OipTypes::Metadata => Some(
            runtime
                .block_on(client::declared_input_types(
                    args.api,
                    &url,
                    &args.model,
                    &args.headers,
                ))
                .context("reading the model's metadata (--oip-types metadata)")?,
        ),
    };
    let bodies = requests::build(
        args.api,
        &args.model,
        &txs,
        args.rows_per_request as usize,
        types.as_ref(),
    )?;
    let requests_count = bodies.len();
    let target = Arc::new(client::Target::new(
        &url,
        bodies,
        Duration::from_millis(args.timeout_ms),
        &args.headers,
    )?);
    let api_name = args
        .api
        .to_possible_value()
        .map_or("?".to_string(), |v| v.get_name().to_string());
    let mut report = Report {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("{api_name} {url}")),
        api: api_name,
        url: url.clone(),
        mode: if args.mode == Mode::Open {
            "open"
        } else {
            "closed"
        }
        .into(),
        arrivals: (args.mode == Mode::Open).then(|| {
            args.arrivals
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        }),
        warmup_s: args.warmup,
        duration_s: args.duration,
        requests: requests_count,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine(),
        command: redacted_command(std::env::args()),
        pixguard_version: env!("CARGO_PKG_VERSION").into(),
        steps: Vec::new(),
        timeline: Vec::new(),
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/bench").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let step_secs = args.warmup + args.duration;
    let progress = progress_bar(&args, shapes.len() as f64 * step_secs);
    let live = Arc::new(Live::default());
    let run_start = Instant::now();
    for (k, shape) in shapes.iter().enumerate() {
        let what = match shape {
            Shape::Open { rate, .. } => format!("{rate:.0}/s"),
            Shape::Closed { concurrency } => format!("{concurrency} conns"),
        };
        progress.set_message(format!("step {}/{} {what}", k + 1, shapes.len()));
        let step_start = run_start.elapsed().as_secs();
        let recorder = runtime.block_on(async {
            let ticker = {
                let (progress, live) = (progress.clone(), live.clone());
                let base = k as f64 * step_secs;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut last = (Instant::now(), live.done.load(Ordering::Relaxed));
                    loop {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        let done = live.done.load(Ordering::Relaxed);
                        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                        last = (Instant::now(), done);
                        progress
                            .set_position(((base + started.elapsed().as_secs_f64()) * 10.0) as u64);
                        progress.set_prefix(format!(
                            "{rate:>8.0} answers/s, {} failed",
                            live.failed.load(Ordering::Relaxed)
                        ));
                    }
                })
            };
            let r = load::run_step(
                target.clone(),
                *shape,
                Duration::from_secs_f64(args.warmup),
                Duration::from_secs_f64(args.duration),
                run_start,
                args.seed.wrapping_add(k as u64),
                live.clone(),
            )
            .await;
            ticker.abort();
            r
        })?;
        let (offered, concurrency) = match shape {
            Shape::Open { rate, .. } => (Some(*rate), None),
            Shape::Closed { concurrency } => (None, Some(*concurrency)),
        };
        report::add_step(
            &mut report,
            recorder,
            offered,
            concurrency,
            step_start,
            args.warmup,
        );
        let Some(last) = report.steps.last() else {
            continue;
        };
        let failed = last.failed();
        if last.latency_us.p99 as f64 > args.stop_p99_ms * 1000.0 || failed > last.ok {
            let note = format!(
                "stopping after step {}: p99 {:.1} ms, {failed} failed of {} (--stop-p99-ms {})",
                k + 1,
                last.latency_us.p99 as f64 / 1000.0,
                failed + last.ok,
                args.stop_p99_ms
            );
            // A hidden bar (no terminal, --no-progress) prints nothing: say it on stderr.
            if progress.is_hidden() {
                eprintln!("{note}");
            } else {
                progress.println(note);
            }
            break;
        }
    }
    progress.finish_and_clear();
    runtime.shutdown_timeout(Duration::from_secs(1));

    // The files first: a closed stdout must not cost the run its results.
    let json_path = out.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = out.join("report.html");
    std::fs::write(&html_path, html::report_page(&report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    let mut text = report::table(&report);
    if let Some(best) = best_within(&report, 10_000) {
        text.push_str(&format!(
            "highest throughput with p99 ≤ 10 ms: {:.0} requests/s (p99 {:.2} ms)\n",
            best.achieved_rps,
            best.latency_us.p99 as f64 / 1000.0
        ));
    }
    text.push_str(&format!(
        "wrote {} and {}\n",
        json_path.display(),
        html_path.display()
    ));
    say(&text)?;
    gate(&report, args.fail_p99_ms, args.fail_error_rate)
}

/// The release gate: every measured step within the p99 and failure bounds given.
fn gate(report: &Report, p99_ms: Option<f64>, error_rate: Option<f64>) -> anyhow::Result<()> {
    anyhow::ensure!(!report.steps.is_empty(), "no step was measured");
    let mut breaches = Vec::new();
    for (k, step) in report.steps.iter().enumerate() {
        let p99 = step.latency_us.p99 as f64 / 1000.0;
        if let Some(bound) = p99_ms
            && p99 > bound
        {
            breaches.push(format!("step {}: p99 {p99:.2} ms > {bound} ms", k + 1));
        }
        let failed = step.failed();
        let total = failed + step.ok;
        if let Some(bound) = error_rate {
            let rate = if total == 0 {
                1.0
            } else {
                failed as f64 / total as f64
            };
            if rate > bound || total == 0 {
                breaches.push(format!(
                    "step {}: {failed} of {total} requests failed ({:.3} % > {} %) {:?}",
                    k + 1,
                    rate * 100.0,
                    bound * 100.0,
                    step.errors
                ));
            }
        }
    }
    anyhow::ensure!(breaches.is_empty(), "gate failed: {}", breaches.join("; "));
    Ok(())
}

/// The command line for the report, with `--header` values left out (they carry API keys).
fn redacted_command(args: impl Iterator<Item = String>) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            let name = arg.split(':').next().unwrap_or("");
            out.push(format!("'{name}: …'"));
            hide_next = false;
        } else if arg == "--header" {
            hide_next = true;
            out.push(arg);
        } else if let Some(value) = arg.strip_prefix("--header=") {
            let name = value.split(':').next().unwrap_or("");
            out.push(format!("--header='{name}: …'"));
        } else {
            out.push(arg);
        }
    }
    out.join(" ")
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn say(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn progress_bar(args: &BenchArgs, total_secs: f64) -> indicatif::ProgressBar {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new((total_secs * 10.0) as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>20} [{bar:30}] {elapsed}/{duration}  {prefix}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Compares reports: a Markdown table and an HTML page with the plots.
pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let reports = args
        .reports
        .iter()
        .map(|p| {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice::<Report>(&text)
                .with_context(|| format!("{} is not a pixguard bench report", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limit = (args.p99_ms * 1000.0) as u64;
    let first = best_within(&reports[0], limit).map(|s| s.achieved_rps);
    let mut md = format!(
        "| target | API | mode | highest requests/s with p99 ≤ {} ms | p50 ms | p99 ms | {} ÷ target |\n|---|---|---|---:|---:|---:|---:|\n",
        args.p99_ms, reports[0].label
    );
    for r in &reports {
        match best_within(r, limit) {
            Some(s) => {
                let ratio = first.map_or("—".into(), |f| format!("{:.1}×", f / s.achieved_rps));
                md.push_str(&format!(
                    "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} |\n",
                    r.label,
                    r.api,
                    r.mode,
                    s.achieved_rps,
                    s.latency_us.p50 as f64 / 1000.0,
                    s.latency_us.p99 as f64 / 1000.0,
                    ratio
                ));
            }
            None => md.push_str(&format!(
                "| {} | {} | {} | none of its steps | — | — | — |\n",
                r.label, r.api, r.mode
            )),
        }
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("compare.md"), &md)?;
    std::fs::write(
        args.out.join("compare.html"),
        html::compare_page(&reports, limit, &md),
    )?;
    say(&format!(
        "{md}wrote {} and {}\n",
        args.out.join("compare.md").display(),
        args.out.join("compare.html").display()
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse_steps, redacted_command};

    #[test]
    fn header_values_stay_out_of_the_report() {
        let args = [
            "pixguard",
            "bench",
            "--header",
            "x-api-key: s3cret",
            "--header=authorization: Bearer t0ken",
            "--rate",
            "5",
        ];
        let line = redacted_command(args.iter().map(|a| a.to_string()));
        assert!(
            !line.contains("s3cret") && !line.contains("t0ken"),
            "{line}"
        );
        assert!(
            line.contains("x-api-key") && line.contains("--rate 5"),
            "{line}"
        );
    }

    #[test]
    fn step_specs() {
        assert_eq!(parse_steps("5000").unwrap(), [5000.0]);
        assert_eq!(parse_steps("1, 2,5").unwrap(), [1.0, 2.0, 5.0]);
        assert_eq!(
            parse_steps("1000:3000:1000").unwrap(),
            [1000.0, 2000.0, 3000.0]
        );
        assert_eq!(parse_steps("1:16:5").unwrap(), [1.0, 6.0, 11.0, 16.0]);
        assert_eq!(parse_steps("0.5:1:0.25").unwrap(), [0.5, 0.75, 1.0]);
        for bad in [
            "", "x", "1:2", "1:2:0", "5:1:1", "0", "-3", "1,,2", "1:2:3:4",
        ] {
            assert!(parse_steps(bad).is_err(), "{bad:?} accepted");
        }
    }
}

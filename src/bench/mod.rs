//! `pixguard bench`: a load generator for pixguard and its peers. Open loop (constant or Poisson
//! arrivals, latency from the intended send time) or closed loop (N connections each waiting for
//! its answer), in steps, against `/v1/score`, OIP over HTTP or gRPC, or an MLflow scoring
//! server; writes a terminal table, a JSON report and an HTML report with plots.

mod args;
pub mod client;
pub mod html;
pub mod load;
pub mod merge;
pub mod part;
mod plan;
pub mod report;
mod reports;
pub mod requests;
pub mod server_stats;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;

pub use args::{BenchArgs, CompareArgs, MergeArgs, Mode, OipTypes, parse_steps};
use load::{Live, Shape};
use part::Part;
use report::{Report, best_within};
use requests::Api;

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
    // The figures given are the whole run's; a part offers its share of them.
    let whole = Part { index: 0, count: 1 };
    let part = args.part.unwrap_or(whole);
    let start_at = args
        .start_at
        .as_deref()
        .map(part::parse_start_at)
        .transpose()?;
    let url = args.url.clone().unwrap_or_else(|| {
        let port = if args.api == Api::OipGrpc { 8081 } else { 8080 };
        format!("http://127.0.0.1:{port}")
    });
    let mut txs = requests::transactions(args.input.as_deref(), args.transactions, args.seed)?;
    plan::order(&args, &mut txs);
    let steps = plan::steps(&args, part, &txs, args.rows_per_request as usize)?;
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
        part: args.part,
        generators: None,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/bench").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    // A gs:// folder (a Kubernetes Job's parts): written here first, uploaded at the end.
    let remote = crate::batch::remote::is_remote(&out).then(|| out.display().to_string());
    let out = match &remote {
        Some(_) => std::env::temp_dir().join(format!("pixguard-bench-{}", std::process::id())),
        None => out,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // The server's statistics around each step, when it has them (pixguard, Triton; not over
    // MLflow's API, and not from a part: every part would report the same server).
    let server_stats = (!args.no_server_stats && args.part.is_none() && args.api != Api::Mlflow)
        .then(|| server_stats::Source {
            api: args.api,
            url: url.clone(),
            model: args.model.clone(),
            headers: args.headers.clone(),
        });
    let step_secs = args.warmup + args.duration;
    let progress = progress_bar(&args, steps.len() as f64 * step_secs);
    let live = Arc::new(Live::default());
    let run_start = match start_at {
        Some(at) => {
            let at = part::instant_of(at, std::time::SystemTime::now(), Instant::now())?;
            let wait = at.saturating_duration_since(Instant::now());
            // Said on stderr too: a pod's log shows why it is idle.
            eprintln!("waiting {:.1} s for --start-at", wait.as_secs_f64());
            progress.set_message("waiting for --start-at");
            std::thread::sleep(wait);
            at
        }
        None => Instant::now(),
    };
    report.started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (k, planned) in steps.iter().enumerate() {
        let shape = &planned.shape;
        // Parts started together start each step together too: a step that drained its
        // answers early waits for the step's time (one that drained late starts at once).
        if start_at.is_some() {
            let due = run_start + Duration::from_secs_f64(k as f64 * step_secs);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let what = match shape {
            Shape::Open { rate, .. } => match planned.speed {
                Some(speed) => format!("{speed}× ({rate:.0}/s)"),
                None => format!("{rate:.0}/s"),
            },
            Shape::Closed { concurrency } => format!("{concurrency} conns"),
        };
        progress.set_message(format!("step {}/{} {what}", k + 1, steps.len()));
        let step_start = run_start.elapsed().as_secs();
        let started_ms = run_start.elapsed().as_millis() as u64;
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
            // Read as the window opens, and again after the step's last answer.
            let opened = server_stats
                .as_ref()
                .map(|s| s.open(Duration::from_secs_f64(args.warmup)));
            let r = load::run_step(
                target.clone(),
                shape.clone(),
                Duration::from_secs_f64(args.warmup),
                Duration::from_secs_f64(args.duration),
                run_start,
                // Each part its own arrivals and its own place in the transactions.
                args.seed.wrapping_add(k as u64)
                    ^ (u64::from(part.index) << 32)
                    ^ u64::from(part.index).wrapping_mul(7919),
                live.clone(),
            )
            .await;
            ticker.abort();
            let server = match (&server_stats, opened) {
                (Some(source), Some(opened)) => source.close(opened).await,
                _ => None,
            };
            r.map(|r| (r, server))
        })?;
        let (recorder, server) = recorder;
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
        )?;
        let Some(last) = report.steps.last_mut() else {
            continue;
        };
        last.server = server;
        last.speed = planned.speed;
        last.started_ms = args.part.map(|_| started_ms);
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
    let (json_path, html_path) = write_report(&report, &out)?;
    let mut text = summary(&report);
    match &remote {
        Some(uri) => {
            upload(&[&json_path, &html_path], uri)
                .with_context(|| format!("the reports stay in {} (not uploaded)", out.display()))?;
            let _ = std::fs::remove_dir_all(&out);
            text.push_str(&format!("wrote {uri}/report.json and {uri}/report.html\n"));
        }
        None => text.push_str(&format!(
            "wrote {} and {}\n",
            json_path.display(),
            html_path.display()
        )),
    }
    say(&text)?;
    gate(&report, args.fail_p99_ms, args.fail_error_rate)
}

/// Writes report.json and report.html into `out`; answers their paths.
fn write_report(report: &Report, out: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_path = out.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = out.join("report.html");
    std::fs::write(&html_path, html::report_page(report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    Ok((json_path, html_path))
}

/// The terminal table and the highest throughput within 10 ms.
fn summary(report: &Report) -> String {
    let mut text = report::table(report);
    if let Some(best) = best_within(report, 10_000) {
        text.push_str(&format!(
            "highest throughput with p99 ≤ 10 ms: {:.0} requests/s (p99 {:.2} ms)\n",
            best.achieved_rps,
            best.latency_us.p99 as f64 / 1000.0
        ));
    }
    text
}

/// Uploads `files` into the gs:// folder `uri`, under their own names.
fn upload(files: &[&std::path::Path], uri: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("report");
            let to = format!("{}/{name}", uri.trim_end_matches('/'));
            crate::batch::remote::upload(file, &to).await?;
        }
        Ok(())
    })
}

/// The release gate: every measured step within the p99 and failure bounds given.
pub(crate) fn gate(
    report: &Report,
    p99_ms: Option<f64>,
    error_rate: Option<f64>,
) -> anyhow::Result<()> {
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = args
        .reports
        .iter()
        .map(|source| runtime.block_on(reports::read_report(source)))
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
    use super::redacted_command;

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
}

//! `pixguard batch`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::batch::input::Format;
use crate::batch::remote::{self, is_remote};
use crate::batch::{Job, Summary, default_rejects};
use crate::config::{Config, DeviceChoice};
use crate::engine::Metrics;
use crate::server::models::{Models, Role};

/// Arguments of `pixguard batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// A Parquet, JSONL or CSV file, or a folder of them (Spark's part files); local or
    /// gs://bucket/path (an object, or the files under a prefix).
    #[arg(long, short)]
    pub input: PathBuf,
    /// The scores file (local or gs://): end_to_end_id, score, decision, reasons, model_version and
    /// --keep columns.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Input format (default: from the file names).
    #[arg(long, value_enum)]
    pub input_format: Option<Format>,
    /// Output format (default: from the output's extension; Parquet for a name without one).
    #[arg(long, value_enum)]
    pub output_format: Option<Format>,
    /// Where rows that are not valid transactions go (JSONL: file, row, field, reason); default:
    /// beside the output, `<output stem>.rejects.jsonl`.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Input columns to copy to the output, by dotted path (repeatable or comma-separated), e.g.
    /// `--keep label,payer.ispb`.
    #[arg(long, value_delimiter = ',')]
    pub keep: Vec<String>,
    /// model.source: a package folder, gs://bucket/prefix, models:/NAME@ALIAS or models:/NAME/VERSION.
    #[arg(long)]
    pub model: Option<String>,
    /// Where to run the model (engine.device).
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Rows per chunk: each is read, checked and scored as one engine request.
    #[arg(long, default_value_t = 16_384)]
    pub chunk_rows: usize,
    /// Threads turning rows into features (default: one per core, plus one); the model runs on the
    /// engine's workers (one replica per core on the CPU, one pipelined worker on a GPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Reasons on every row, not only on HOLD and REJECT.
    #[arg(long)]
    pub explain: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Configuration file (default: ./config.yaml when present), with PIXGUARD__* overrides.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Any other key, as `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Scores the input and prints the summary as one JSON line on stdout.
pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.chunk_rows > 0, "--chunk-rows must be at least 1");
    // Before the model loads: a name that says no format is a mistake to hear of at once.
    let output_format = output_format(args.output_format, &args.output)?;
    crate::memory::keep_freed_memory();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // As in `serve`: each engine worker computes on its own thread, so Candle's pool (and its
        // per-op /proc/cpuinfo read when unset) stays at one thread.
        // SAFETY: no other thread has started yet (the logger spawns none).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut overrides = Vec::new();
    if let Some(m) = &args.model {
        overrides.push(("model.source".to_string(), m.clone()));
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        overrides.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut config = Config::load(args.config.as_deref(), &overrides)?;
    if let Some(d) = args.device {
        config.engine.device = d;
    }
    let selected = crate::model::device::select(config.engine.device)
        .map_err(|e| anyhow::anyhow!("engine.device: {e}"))?;
    if let Some(reason) = &selected.fallback {
        tracing::warn!(%reason, "CUDA is unusable: scoring on the CPU");
    }
    let on_gpu = !selected.device.is_cpu();
    // A file is not a stream of requests: each chunk is one batch, the queue holds what the
    // workers have in hand, and the model gets a replica per core (one pipelined GPU worker).
    // One more worker than cores: a worker waits for the engine's answer while the engine
    // computes its chunk, and the spare keeps both busy (10M rows on 2 cores: median 824k
    // rows/s with 3 workers against 706k with 2, three interleaved runs each).
    let workers = args.workers.unwrap_or(cores + 1).max(1);
    config.engine.workers = if on_gpu { 1 } else { cores };
    config.engine.max_batch_size = args.chunk_rows;
    config.engine.max_queue_rows = args.chunk_rows * (workers + 2);
    config.engine.max_queue_delay_us = 0;
    config.server.max_transactions_per_request = args.chunk_rows;
    config.model.poll_interval_s = 0;
    let job = Job {
        rejects: args
            .rejects
            .clone()
            .unwrap_or_else(|| default_rejects(&args.output)),
        input: args.input,
        input_format: args.input_format,
        output: args.output,
        output_format,
        keep: args.keep,
        chunk_rows: args.chunk_rows,
        workers,
        explain: args.explain,
        progress: !args.no_progress,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("pixguard-batch-io")
        .build()
        .context("starting the async runtime")?;
    let metrics = Arc::new(Metrics::new().context("creating histograms")?);
    let source = config.model.source.clone();
    let (_models, served) = runtime.block_on(Models::start(
        Role::Champion,
        &source,
        &config,
        selected.device.clone(),
        metrics,
    ))?;
    tracing::info!(model = %source, device = %selected.description, "batch: model loaded");
    // No warm-up here: every row the engine computes is the file's.
    if let Some(monitor) = served.monitor() {
        monitor.start_observing();
    }
    // gs:// in or out: staged through a local folder, removed when the job ends.
    let staging = std::env::temp_dir().join(format!("pixguard-batch-{}", std::process::id()));
    let result = staged(job, &staging, served, &runtime);
    let _ = std::fs::remove_dir_all(&staging);
    let summary = result?;
    tracing::info!(
        rows = summary.rows,
        scored = summary.scored,
        rejected = summary.rejected,
        seconds = summary.seconds,
        rows_per_second = summary.rows_per_second as u64,
        "batch: done"
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Runs `job`, its gs:// input downloaded into `staging` first and its gs:// outputs uploaded
/// after; the summary names the URIs.
fn staged(
    mut job: Job,
    staging: &std::path::Path,
    served: crate::scoring::Served,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Summary> {
    // Staged, the input is read from a copy, but the upload would still replace the object.
    let uri = |p: &std::path::Path| p.display().to_string().trim_end_matches('/').to_string();
    for (what, path) in [("output", &job.output), ("rejects", &job.rejects)] {
        anyhow::ensure!(
            !is_remote(path) || uri(path) != uri(&job.input),
            "the {what} file {} is the input: writing it would destroy the input",
            uri(path)
        );
    }
    anyhow::ensure!(
        !is_remote(&job.output) || uri(&job.output) != uri(&job.rejects),
        "the rejects file {} is the output file: give --rejects another name",
        uri(&job.rejects)
    );
    if is_remote(&job.input) {
        let uri = job.input.display().to_string();
        job.input = runtime.block_on(remote::fetch_input(&uri, &staging.join("in")))?;
    }
    let mut uploads = Vec::new();
    // Each in a folder of its own: an output and a rejects object of the same name (in two
    // prefixes) would otherwise be staged as one file.
    for (path, folder) in [(&mut job.output, "output"), (&mut job.rejects, "rejects")] {
        if is_remote(path) {
            let uri = path.display().to_string();
            let dir = staging.join("out").join(folder);
            let local = dir.join(
                path.file_name()
                    .with_context(|| format!("{uri}: expected gs://bucket/path/file"))?,
            );
            std::fs::create_dir_all(&dir)?;
            uploads.push((local.clone(), uri));
            *path = local;
        }
    }
    let mut summary = crate::batch::run(&job, Arc::new(served), runtime.handle().clone())?;
    for (local, uri) in uploads {
        runtime.block_on(remote::upload(&local, &uri))?;
        if summary.output == local.display().to_string() {
            summary.output = uri.clone();
        }
        if summary.rejects == local.display().to_string() {
            summary.rejects = uri;
        }
    }
    Ok(summary)
}

/// The output's format: `--output-format`, else its extension's, else Parquet for a name without
/// one (Spark's default). An extension that names no format (`.tsv`, `.txt`) is refused rather
/// than written as Parquet under a name that says otherwise.
fn output_format(given: Option<Format>, output: &std::path::Path) -> anyhow::Result<Format> {
    if let Some(format) = given.or_else(|| Format::of(output)) {
        return Ok(format);
    }
    match output.extension() {
        None => Ok(Format::Parquet),
        Some(ext) => anyhow::bail!(
            "{}: cannot tell the output format from `.{}` (.parquet, .pq, .jsonl, .ndjson, .json \
             or .csv); pass --output-format",
            output.display(),
            ext.to_string_lossy()
        ),
    }
}

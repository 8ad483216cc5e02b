//! `pixguard batch`: scores files of transactions on one machine, as fast as its cores and its
//! device allow, in memory that does not grow with the file.
//!
//! One thread reads chunks of rows ([`input`]); a worker per core turns a chunk's columns into
//! transactions (rejecting bad rows with their field and reason), extracts features and hands
//! them to the served version's engine — the same [`Served`] path `serve` uses, so a file is
//! scored exactly as the API would score it; the engine batches, computes and explains on the
//! configured device. The writer (this thread) puts chunks back in input order ([`output`]).
//! Channels between the stages are bounded: at most a few chunks are in memory at once.

pub mod input;
pub mod output;
pub mod remote;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use serde::Serialize;

use crate::engine::Lane;
use crate::model::Decision;
use crate::scoring::Served;
use crate::transaction::arrow::column;
use crate::transaction::{Transaction, ValidationError};
use input::{Chunk, Data, Format, Inputs};
use output::{Encoded, Reject, Sink};

/// What to score, where to, and how.
#[derive(Debug, Clone)]
pub struct Job {
    /// A file, or a folder of files of one format.
    pub input: PathBuf,
    /// The input format; `None`: from the file names.
    pub input_format: Option<Format>,
    /// The scores file.
    pub output: PathBuf,
    /// Its format.
    pub output_format: Format,
    /// Where rows that are not valid transactions are recorded (JSONL).
    pub rejects: PathBuf,
    /// Input columns copied to the output, by dotted path.
    pub keep: Vec<String>,
    /// Rows per chunk (and per engine request).
    pub chunk_rows: usize,
    /// Worker threads (reading columns into transactions, features, encoding).
    pub workers: usize,
    /// Reasons on every row, not only on HOLD and REJECT.
    pub explain: bool,
    /// A progress bar on a terminal; otherwise a log line every few seconds.
    pub progress: bool,
}

/// How a job went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Input files read.
    pub files: usize,
    /// Rows read (scored + rejected).
    pub rows: u64,
    /// Rows scored.
    pub scored: u64,
    /// Rows in the rejects file.
    pub rejected: u64,
    /// Scored rows by decision.
    pub allow: u64,
    /// HOLD decisions.
    pub hold: u64,
    /// REJECT decisions.
    pub reject: u64,
    /// From the first chunk read to the output closed.
    pub seconds: f64,
    /// Rows read per second.
    pub rows_per_second: f64,
    /// `name:version` of the model.
    pub model_version: String,
    /// The scores file.
    pub output: String,
    /// The rejects file.
    pub rejects: String,
    /// The scored rows' drift from the model's training reference (null when monitoring is off).
    pub drift: Option<crate::monitoring::DriftSummary>,
}

/// One chunk, scored and encoded.
struct Done {
    seq: u64,
    rows: u64,
    scored: u64,
    encoded: Encoded,
    rejects: Vec<Reject>,
    decisions: [u64; 3],
}

/// Refuses an output or rejects file that is one of the input files, or that is the other:
/// creating a file truncates it, so `-i tx.jsonl -o tx.jsonl` emptied the input before a row
/// was read.
fn outputs_apart(inputs: &input::Inputs, output: &Path, rejects: &Path) -> anyhow::Result<()> {
    for (what, path) in [("output", output), ("rejects", rejects)] {
        if let Some(file) = inputs
            .files
            .iter()
            .find(|f| crate::same_file(&f.path, path))
        {
            anyhow::bail!(
                "the {what} file {} is the input file {}: writing it would destroy the input",
                path.display(),
                file.path.display()
            );
        }
    }
    if crate::same_file(output, rejects) {
        anyhow::bail!(
            "the rejects file {} is the output file: give --rejects another name",
            rejects.display()
        );
    }
    Ok(())
}

/// Checks the input, then scores it all with `served`. Bad rows go to the rejects file; a failure
/// of the job itself (a file unreadable midway, the device) stops it with an error.
pub fn run(
    job: &Job,
    served: Arc<Served>,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<Summary> {
    let inputs = input::discover(&job.input, job.input_format, &job.keep)?;
    outputs_apart(&inputs, &job.output, &job.rejects)?;
    let keep_types = keep_types(&inputs, &job.keep)?;
    let schema = output::schema(&keep_types);
    let model_version = format!("{}:{}", served.model().name, served.model().version);
    let files: Vec<String> = inputs
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();
    tracing::info!(
        files = files.len(),
        format = ?inputs.format,
        rows = ?inputs.rows(),
        model = %model_version,
        workers = job.workers,
        chunk_rows = job.chunk_rows,
        "batch: input checked, scoring"
    );
    let mut sink = Sink::create(&job.output, job.output_format, &schema)?;
    let mut rejects_out = std::io::BufWriter::new(
        std::fs::File::create(&job.rejects)
            .with_context(|| format!("creating {}", job.rejects.display()))?,
    );
    let progress = Progress::new(job.progress, &inputs);
    let started = Instant::now();
    let workers = job.workers.max(1);
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Chunk>(workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<anyhow::Result<Done>>(workers * 2);
    let mut summary = Summary {
        files: files.len(),
        model_version: model_version.clone(),
        output: job.output.display().to_string(),
        rejects: job.rejects.display().to_string(),
        ..Summary::default()
    };
    let context = Shared {
        served: &served,
        runtime: &runtime,
        schema: &schema,
        model_version: &model_version,
        files: &files,
        job,
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let reader = std::thread::Builder::new()
            .name("pixguard-batch-read".into())
            .spawn_scoped(scope, {
                let inputs = &inputs;
                // Moved in: the workers' loops end when the reader is done and drops it.
                move || input::read(inputs, job.chunk_rows, |c| chunk_tx.send(c).is_ok())
            })?;
        for i in 0..workers {
            let (rx, tx, context) = (chunk_rx.clone(), done_tx.clone(), &context);
            std::thread::Builder::new()
                .name(format!("pixguard-batch-{i}"))
                .spawn_scoped(scope, move || {
                    for chunk in rx {
                        let result = context.process(chunk);
                        let failed = result.is_err();
                        if tx.send(result).is_err() || failed {
                            break;
                        }
                    }
                })?;
        }
        drop((chunk_rx, done_tx));
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        let mut next = 0u64;
        let written = (|| -> anyhow::Result<()> {
            for done in &done_rx {
                let done = done?;
                pending.insert(done.seq, done);
                while let Some(done) = pending.remove(&next) {
                    next += 1;
                    summary.rows += done.rows;
                    summary.scored += done.scored;
                    summary.rejected += done.rejects.len() as u64;
                    summary.allow += done.decisions[0];
                    summary.hold += done.decisions[1];
                    summary.reject += done.decisions[2];
                    sink.write(done.encoded)?;
                    for r in &done.rejects {
                        serde_json::to_writer(&mut rejects_out, r)?;
                        std::io::Write::write_all(&mut rejects_out, b"\n")?;
                    }
                    progress.advance(summary.rows, started);
                }
            }
            Ok(())
        })();
        // Whatever stopped the writer, the reader and workers must stop too: closing the
        // channel ends them.
        drop(done_rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
        written?;
        read?;
        anyhow::ensure!(
            pending.is_empty(),
            "{} chunks were never written",
            pending.len()
        );
        Ok(())
    })?;
    sink.finish()?;
    std::io::Write::flush(&mut rejects_out)?;
    progress.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rows_per_second = summary.rows as f64 / summary.seconds.max(1e-9);
    if let Some(monitor) = served.monitor() {
        let report = runtime.block_on(monitor.report());
        summary.drift = report
            .window(crate::monitoring::ALL)
            .map(|w| w.summary(report.dropped_rows));
    }
    Ok(summary)
}

/// The kept columns' types, from the first file; every file must agree.
fn keep_types(inputs: &Inputs, keep: &[String]) -> anyhow::Result<Vec<(String, DataType)>> {
    let Some(first) = inputs.files.first() else {
        return Ok(Vec::new());
    };
    if keep.is_empty() {
        return Ok(Vec::new());
    }
    let Some(schema) = first.schema.clone() else {
        // JSONL has no columns (discover refuses --keep for it).
        return Ok(Vec::new());
    };
    let empty = RecordBatch::new_empty(schema);
    keep.iter()
        .map(|k| {
            let c = column(&empty, k).with_context(|| format!("--keep {k}: no such column"))?;
            Ok((k.clone(), c.data_type().clone()))
        })
        .collect()
}

/// What every worker shares.
struct Shared<'a> {
    served: &'a Served,
    runtime: &'a tokio::runtime::Handle,
    schema: &'a SchemaRef,
    model_version: &'a str,
    files: &'a [String],
    job: &'a Job,
}

impl Shared<'_> {
    /// Reads, scores and encodes one chunk.
    fn process(&self, chunk: Chunk) -> anyhow::Result<Done> {
        let file = &self.files[chunk.file];
        let mut txs: Vec<Transaction> = Vec::with_capacity(self.job.chunk_rows);
        let mut rows: Vec<u32> = Vec::with_capacity(self.job.chunk_rows);
        let mut bad: Vec<(u32, ValidationError)> = Vec::new();
        let (total, keep, ids) = match &chunk.data {
            Data::Arrow {
                batch,
                plan,
                broken,
            } => {
                plan.read(batch, &mut txs, &mut rows, &mut bad)?;
                if !broken.is_empty() {
                    let broken: BTreeMap<u32, &ValidationError> =
                        broken.iter().map(|(r, e)| (*r, e)).collect();
                    for (row, e) in &mut bad {
                        if let Some(b) = broken.get(row) {
                            *e = (*b).clone();
                        }
                    }
                }
                let keep = self.kept(batch, &rows)?;
                let ids = if bad.is_empty() {
                    None
                } else {
                    column(batch, "end_to_end_id")
                };
                (batch.num_rows(), keep, ids)
            }
            Data::Lines(text) => {
                let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
                lines.pop(); // what follows the last newline: nothing
                // A blank line holds no row: not counted, so rows = scored + rejected still holds.
                let mut blank = 0;
                for (i, line) in lines.iter().enumerate() {
                    match std::str::from_utf8(line) {
                        Err(_) => {
                            bad.push((i as u32, ValidationError::new("", "the line is not UTF-8")))
                        }
                        Ok(s) if s.trim().is_empty() => blank += 1,
                        Ok(s) => match crate::jsonl::parse_line(s) {
                            Ok(row) => {
                                txs.push(row.transaction);
                                rows.push(i as u32);
                            }
                            Err(e) => bad.push((i as u32, e)),
                        },
                    }
                }
                (lines.len() - blank, Vec::new(), None)
            }
        };
        let scores = if txs.is_empty() {
            crate::scoring::Scores {
                scores: Vec::new(),
                decisions: Vec::new(),
                reasons: Vec::new(),
                queue_us: 0,
                compute_us: 0,
                enqueued: Instant::now(),
            }
        } else {
            let features = self.served.extractor().extract(&txs);
            // A batch job waits for its turn however long the queue: no deadline to miss.
            let deadline = Instant::now() + Duration::from_secs(3600);
            self.runtime
                .block_on(self.served.score_features(
                    features,
                    deadline,
                    self.job.explain,
                    Lane::Interactive,
                ))
                .map_err(|e| anyhow::anyhow!("scoring: {e}"))?
        };
        let mut decisions = [0u64; 3];
        for d in &scores.decisions {
            decisions[match d {
                Decision::Allow => 0,
                Decision::Hold => 1,
                Decision::Reject => 2,
            }] += 1;
        }
        let encoded = output::encode(
            self.job.output_format,
            self.schema,
            self.served,
            self.model_version,
            &txs,
            &scores,
            &keep,
        )?;
        let id = |row: u32| -> Option<String> {
            let ids = ids.as_ref()?;
            let s = ids.as_string_opt::<i32>()?;
            (!s.is_null(row as usize)).then(|| s.value(row as usize).to_string())
        };
        let rejects = bad
            .into_iter()
            .map(|(row, e)| Reject {
                file: file.clone(),
                row: chunk.first_row + u64::from(row),
                end_to_end_id: id(row),
                field: e.field,
                reason: e.reason,
            })
            .collect();
        Ok(Done {
            seq: chunk.seq,
            rows: total as u64,
            scored: txs.len() as u64,
            encoded,
            rejects,
            decisions,
        })
    }

    /// The kept columns of `batch`, cut to the scored `rows`.
    fn kept(&self, batch: &RecordBatch, rows: &[u32]) -> anyhow::Result<Vec<ArrayRef>> {
        if self.job.keep.is_empty() {
            return Ok(Vec::new());
        }
        let indices = UInt32Array::from(rows.to_vec());
        self.job
            .keep
            .iter()
            .map(|k| {
                let c = column(batch, k).with_context(|| format!("--keep {k}: no such column"))?;
                Ok(arrow_select::take::take(c.as_ref(), &indices, None)?)
            })
            .collect()
    }
}

/// Progress on a terminal (a bar with rows/s and ETA) or in the log (a line every 10 s).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: std::cell::Cell<Instant>,
    total: Option<u64>,
}

impl Progress {
    fn new(enabled: bool, inputs: &Inputs) -> Progress {
        let total = inputs.rows();
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            last_log: std::cell::Cell::new(Instant::now()),
            total,
        }
    }

    fn advance(&self, rows: u64, started: Instant) {
        if let Some(bar) = &self.bar {
            bar.set_position(rows);
            return;
        }
        if self.last_log.get().elapsed() >= Duration::from_secs(10) {
            self.last_log.set(Instant::now());
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                rows,
                total = ?self.total,
                rows_per_second = (rows as f64 / secs) as u64,
                "batch: progress"
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The rejects file beside `output`: `scores.parquet` → `scores.rejects.jsonl`.
pub fn default_rejects(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("output");
    output.with_file_name(format!("{stem}.rejects.jsonl"))
}

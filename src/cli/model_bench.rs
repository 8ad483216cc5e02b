//! `pixguard model bench`: the model's forward pass alone, per batch size, on the CPU or a GPU.
//!
//! Every timing is one `score_host` call from host feature rows to host scores: on a GPU that is
//! the upload, the forward and the download, synchronised, so it is what a batch costs the server.
//! Columns: pixguard's path (fused CPU op, or the CUDA kernels); on a GPU where that time went —
//! host staging (id check, pinned buffer fill), the upload and the forward (kernels and products)
//! from CUDA events; Candle's generic ops on the same device (the plain candle-nn layers the fused
//! paths replace); and on a GPU the two-slot pipeline (batch N+1 uploaded while N computes), which
//! is how the server runs it. With a package that explains its scores, the last column is the cost
//! of reason codes per explained row: its occluded copies (one per reason group) built, scored in
//! one pass of the same path, and ranked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Tensor;
use clap::Args;

use crate::config::DeviceChoice;
use crate::features::{FeatureBatch, FeatureExtractor};
use crate::model::{DcnModel, ModelPackage, device};
use crate::synth::{Generator, SynthConfig};

/// Arguments of `pixguard model bench`.
#[derive(Debug, Args)]
pub struct ModelBenchArgs {
    /// Package folder.
    #[arg(default_value = super::DEFAULT_MODEL)]
    pub dir: PathBuf,
    /// Where to run the model.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,16,256,1024,4096,16384,65536")]
    pub batches: String,
    /// Time spent measuring each batch size (after warm-up), in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub millis: u64,
    /// On a GPU, replay the forward as CUDA graphs per batch-size bucket (`engine.cuda_graphs`).
    #[arg(long)]
    pub cuda_graphs: bool,
    /// Skip Candle's generic-op forward (slow on the CPU at large batches).
    #[arg(long)]
    pub no_candle: bool,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured batch size.
#[derive(Debug, serde::Serialize)]
struct Row {
    batch: usize,
    /// Median µs per call of pixguard's path.
    fused_us: f64,
    fused_rows_per_s: f64,
    /// Median GPU time of the forward alone (CUDA events; no copies), GPU only.
    kernels_us: Option<f64>,
    /// Median host time to check ids and fill the pinned staging buffer, GPU only.
    stage_us: Option<f64>,
    /// Median GPU time of the host→device copy (CUDA events), GPU only.
    upload_us: Option<f64>,
    candle_us: Option<f64>,
    candle_rows_per_s: Option<f64>,
    /// Mean µs per batch with two batches in flight (GPU only).
    pipelined_us: Option<f64>,
    pipelined_rows_per_s: Option<f64>,
    /// Median µs per row to explain every row of the batch (reason codes), when the package
    /// describes how.
    explain_us_per_row: Option<f64>,
    iterations: usize,
}

/// Runs the benchmark and prints the table.
pub fn run(args: ModelBenchArgs) -> anyhow::Result<()> {
    let batches = args
        .batches
        .split(',')
        .map(|b| {
            b.trim()
                .parse::<usize>()
                .map_err(|e| anyhow::anyhow!("--batches {b:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        batches.iter().all(|&b| b > 0),
        "--batches: every size must be at least 1"
    );
    let largest = batches.iter().copied().max().unwrap_or(1);
    let selected = device::select(args.device).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(reason) = &selected.fallback {
        tracing::warn!(%reason, "CUDA is unusable: benchmarking on the CPU");
    }
    let package = ModelPackage::load(&args.dir)
        .with_context(|| format!("loading model package {}", args.dir.display()))?;
    let options = crate::model::RunOptions {
        cuda_graphs: args.cuda_graphs,
    };
    let model = DcnModel::from_package_with(&package, &selected.device, options)?;
    let features = rows(&package, largest)?;
    let (nn, nc) = (features.n_numeric, features.n_categorical);
    let budget = Duration::from_millis(args.millis);
    println!(
        "model forward, {} on {}{}, host rows in → host scores out, median of each batch size",
        package.config.name,
        selected.description,
        graphs_note(&model, args.cuda_graphs)
    );
    println!(
        "{:>7} {:>12} {:>14} {:>10} {:>9} {:>11} {:>12} {:>14} {:>13} {:>14} {:>15}",
        "batch",
        "fused µs",
        "fused rows/s",
        "stage µs",
        "h2d µs",
        "kernels µs",
        "candle µs",
        "candle rows/s",
        "pipelined µs",
        "pipelined r/s",
        "explain µs/row"
    );
    let mut table = Vec::new();
    for &b in &batches {
        let (numeric, categorical) = (&features.numeric[..b * nn], &features.categorical[..b * nc]);
        let mut out = vec![0.0f32; b];
        let (mut kernel, mut stage, mut upload) = (Vec::new(), Vec::new(), Vec::new());
        let (fused_us, iterations) = median_us(budget, || {
            model.score_host(numeric, categorical, b, &mut out)?;
            if let Some(t) = last_timings(&model) {
                stage.push(t.stage_us);
                kernel.extend(t.forward_us);
                upload.extend(t.upload_us);
            }
            Ok(())
        })?;
        let (kernels_us, stage_us, upload_us) =
            (median(&mut kernel), median(&mut stage), median(&mut upload));
        let candle_us = if args.no_candle {
            None
        } else {
            let dev = model.device().clone();
            Some(
                median_us(budget, || {
                    let n = Tensor::from_slice(numeric, (b, nn), &dev)?;
                    let c = Tensor::from_slice(categorical, (b, nc), &dev)?;
                    model.forward_unfused(&n, &c)?.to_vec1::<f32>().map(drop)
                })?
                .0,
            )
        };
        let pipelined_us = pipelined(&model, numeric, categorical, b, budget)?;
        let explain_us_per_row = match model.occlusion() {
            Some(occlusion) => {
                let per_row = occlusion.groups() + 1;
                let (mut n, mut c, mut o) = (Vec::new(), Vec::new(), Vec::new());
                let (us, _) = median_us(budget, || {
                    n.clear();
                    c.clear();
                    for r in 0..b {
                        occlusion.occlude(
                            &numeric[r * nn..(r + 1) * nn],
                            &categorical[r * nc..(r + 1) * nc],
                            &mut n,
                            &mut c,
                        );
                    }
                    o.resize(b * per_row, 0.0);
                    model.logits_host(&n, &c, b * per_row, &mut o)?;
                    for r in 0..b {
                        std::hint::black_box(occlusion.reasons(&o[r * per_row..(r + 1) * per_row]));
                    }
                    Ok(())
                })?;
                Some(us / b as f64)
            }
            None => None,
        };
        let per_s = |us: f64| b as f64 / (us * 1e-6);
        let row = Row {
            batch: b,
            fused_us,
            fused_rows_per_s: per_s(fused_us),
            kernels_us,
            stage_us,
            upload_us,
            candle_us,
            candle_rows_per_s: candle_us.map(per_s),
            pipelined_us,
            pipelined_rows_per_s: pipelined_us.map(per_s),
            explain_us_per_row,
            iterations,
        };
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        println!(
            "{:>7} {:>12.1} {:>14.0} {:>10} {:>9} {:>11} {:>12} {:>14} {:>13} {:>14} {:>15}",
            b,
            row.fused_us,
            row.fused_rows_per_s,
            opt(row.stage_us, 1),
            opt(row.upload_us, 1),
            opt(row.kernels_us, 1),
            opt(row.candle_us, 1),
            opt(row.candle_rows_per_s, 0),
            opt(row.pipelined_us, 1),
            opt(row.pipelined_rows_per_s, 0),
            opt(row.explain_us_per_row, 2),
        );
        table.push(row);
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": format!("{}:{}", package.config.name, package.config.version),
            "device": selected.description,
            "rows": table,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `rows` feature rows from synthetic traffic (4,096 distinct transactions, tiled).
fn rows(package: &ModelPackage, rows: usize) -> anyhow::Result<FeatureBatch> {
    let cfg = SynthConfig {
        seed: 11,
        rows: rows.min(4096) as u64,
        ..SynthConfig::default()
    };
    let txs: Vec<_> = Generator::new(cfg)?.map(|r| r.transaction).collect();
    let extractor = FeatureExtractor::new(package.config.features.clone())?;
    let mut distinct = FeatureBatch::default();
    extractor.extract_into(&txs, &mut distinct);
    let mut all = FeatureBatch {
        rows,
        n_numeric: distinct.n_numeric,
        n_categorical: distinct.n_categorical,
        ..FeatureBatch::default()
    };
    for i in 0..rows {
        let r = i % txs.len();
        all.numeric.extend_from_slice(
            &distinct.numeric[r * distinct.n_numeric..(r + 1) * distinct.n_numeric],
        );
        all.categorical.extend_from_slice(
            &distinct.categorical[r * distinct.n_categorical..(r + 1) * distinct.n_categorical],
        );
    }
    Ok(all)
}

/// Median µs of `f` after warm-up, timing calls for about `budget` (at least 5 calls).
fn median_us(
    budget: Duration,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> anyhow::Result<(f64, usize)> {
    let warm = Instant::now();
    while warm.elapsed() < budget / 5 {
        f()?;
    }
    f()?;
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 5 || (started.elapsed() < budget && samples.len() < 100_000) {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let count = samples.len();
    let mid = median(&mut samples).unwrap_or(f64::NAN);
    Ok((mid, count))
}

fn median(samples: &mut [f64]) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied()
}

/// Where the last batch's time went, when the model runs on a GPU.
#[cfg(feature = "cuda")]
fn last_timings(model: &DcnModel) -> Option<crate::model::BatchTimings> {
    let crate::model::Runner::Cuda(gpu) = model.runner() else {
        return None;
    };
    gpu.lock().unwrap_or_else(|p| p.into_inner()).last_timings()
}

#[cfg(not(feature = "cuda"))]
fn last_timings(_model: &DcnModel) -> Option<crate::model::BatchTimings> {
    None
}

/// Whether the forward runs as CUDA graphs, when they were asked for (a failed capture turns them
/// off, and says why in the log).
fn graphs_note(model: &DcnModel, asked: bool) -> &'static str {
    match (asked, model.device().is_cuda(), model.cuda_graphs_on()) {
        (false, _, _) => "",
        (true, false, _) => " (CUDA graphs: not on a GPU)",
        (true, true, true) => " (CUDA graphs)",
        (true, true, false) => " (CUDA graphs asked for, but capture failed: kernel by kernel)",
    }
}

/// Mean µs per batch with two batches in flight, on a GPU; `None` elsewhere.
#[cfg(feature = "cuda")]
fn pipelined(
    model: &DcnModel,
    numeric: &[f32],
    categorical: &[u32],
    rows: usize,
    budget: Duration,
) -> anyhow::Result<Option<f64>> {
    let crate::model::Runner::Cuda(gpu) = model.runner() else {
        return Ok(None);
    };
    let mut gpu = gpu.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = vec![0.0f32; rows];
    let mut pass = |seconds: Duration| -> anyhow::Result<(usize, Duration)> {
        let mut in_flight = std::collections::VecDeque::new();
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < seconds || done < 5 {
            if !gpu.has_free_slot()
                && let Some(ticket) = in_flight.pop_front()
            {
                gpu.wait(ticket, &mut out)?;
                done += 1;
            }
            in_flight.push_back(gpu.submit(numeric, categorical, rows)?);
        }
        while let Some(ticket) = in_flight.pop_front() {
            gpu.wait(ticket, &mut out)?;
            done += 1;
        }
        Ok((done, started.elapsed()))
    };
    pass(budget / 5)?;
    let (done, elapsed) = pass(budget)?;
    Ok(Some(elapsed.as_secs_f64() * 1e6 / done as f64))
}

#[cfg(not(feature = "cuda"))]
fn pipelined(
    _model: &DcnModel,
    _numeric: &[f32],
    _categorical: &[u32],
    _rows: usize,
    _budget: Duration,
) -> anyhow::Result<Option<f64>> {
    Ok(None)
}

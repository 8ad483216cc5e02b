//! Turning a fetched package folder into a [`Served`] version: load and check the package, build
//! its replicas, self-test them on the serving device, start its engine, warm it up.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::Device;

use super::now;
use crate::config::Config;
use crate::engine::{Engine, Metrics};
use crate::features::FeatureBatch;
use crate::model::{DcnModel, ModelPackage, RunOptions};
use crate::monitoring::{Monitor, Setup};
use crate::registry::Target;
use crate::scoring::{Origin, Served};
use crate::transaction::Transaction;

/// Largest |score − golden| a version may show on the serving device. The fused CPU pass and the
/// GPU pass agree with PyTorch's float64 reference to ~2e-7; a changed weight or spec is orders
/// of magnitude further off.
pub const SELF_TEST_TOLERANCE: f64 = 1e-5;

/// Loads the package in `dir`, builds its replicas, self-tests them and starts their engine.
pub(super) fn build(
    role: super::Role,
    config: &Config,
    device: &Device,
    metrics: Arc<Metrics>,
    dir: &Path,
    target: &Target,
    source: &str,
) -> anyhow::Result<Served> {
    let package = ModelPackage::load(dir)?;
    let options = RunOptions {
        cuda_graphs: config.engine.cuda_graphs,
    };
    let replicas = (0..config.engine.workers)
        .map(|_| DcnModel::from_package_with(&package, device, options))
        .collect::<Result<Vec<_>, _>>()?;
    if config.engine.cuda_graphs {
        // Off on the CPU, or after a failed capture (which logged why).
        let on = replicas.iter().all(DcnModel::cuda_graphs_on);
        tracing::info!(cuda_graphs = on, "engine.cuda_graphs is set");
    }
    let extractor = crate::features::FeatureExtractor::new(package.config.features.clone())?;
    let max_error = self_test(&package, &extractor, &replicas[0])?;
    let version = target
        .registry_version
        .clone()
        .unwrap_or_else(|| package.config.version.clone());
    let priority = super::priority(role);
    let thresholds = Served::thresholds_in_force(&package, config)?;
    let monitor = if config.monitoring.enabled {
        let setup = Setup {
            model: package.config.name.clone(),
            version: version.clone(),
            role,
            reference: package.reference.clone(),
            thresholds,
        };
        Some(Arc::new(
            Monitor::start(setup, priority).context("starting the monitor")?,
        ))
    } else {
        None
    };
    let mut engine_config = config.engine.clone();
    if role == super::Role::Canary {
        engine_config.test_compute_delay_us = config.engine.test_canary_delay_us;
    }
    let mut engine = Engine::start_with(
        &engine_config,
        replicas,
        metrics,
        priority,
        monitor.as_ref().map(|m| m.tap()),
    )
    .context("starting the engine")?;
    // The canary guard compares the canary's engine latency and failures with the champion's.
    let watched = config.model.canary.is_some()
        && (config.model.canary_max_latency_ratio > 0.0
            || config.model.canary_max_error_share > 0.0)
        && matches!(role, super::Role::Champion | super::Role::Canary);
    if watched {
        engine = engine
            .with_recent_window()
            .context("the engine's last-minute window")?;
    }
    let engine = Arc::new(engine);
    let weights = package
        .flavor
        .sha256
        .get("weights")
        .cloned()
        .unwrap_or_default();
    Served::new(
        &package,
        version,
        engine,
        monitor,
        thresholds,
        config,
        Origin {
            role,
            source: source.to_string(),
            location: target.location.clone(),
            identity: target.identity.clone(),
            weights_sha256: weights,
            self_test_max_error: Some(max_error),
            loaded_at: now(),
        },
    )
}

/// Scores the package's golden rows on `model` (the serving device) and answers the largest
/// difference from the stored scores; refuses beyond [`SELF_TEST_TOLERANCE`].
fn self_test(
    package: &ModelPackage,
    extractor: &crate::features::FeatureExtractor,
    model: &DcnModel,
) -> anyhow::Result<f64> {
    let file = package.flavor.golden.as_deref().context(
        "self-test: the package names no golden rows (flavors.pixguard.golden); a version that \
         cannot prove its scores on this device is not served",
    )?;
    let path = package.dir.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("self-test: reading {}", path.display()))?;
    let mut txs = Vec::new();
    let mut expected = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("self-test: {file} line {}", i + 1))?;
        let tx = Transaction::from_json(v["transaction"].to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("self-test: {file} line {}: {e}", i + 1))?;
        let score = v["score"]
            .as_f64()
            .with_context(|| format!("self-test: {file} line {}: no score", i + 1))?;
        txs.push(tx);
        expected.push(score);
    }
    anyhow::ensure!(!txs.is_empty(), "self-test: {file} has no rows");
    let mut batch = FeatureBatch::default();
    let mut worst = (0.0f64, 0usize);
    for (start, chunk) in (0..txs.len())
        .step_by(256)
        .map(|s| (s, &txs[s..(s + 256).min(txs.len())]))
    {
        extractor.extract_into(chunk, &mut batch);
        let mut out = vec![0.0f32; chunk.len()];
        model.score_host(&batch.numeric, &batch.categorical, chunk.len(), &mut out)?;
        for (k, &s) in out.iter().enumerate() {
            // A NaN score is as far off as it gets.
            let d = (f64::from(s) - expected[start + k]).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            if d > worst.0 {
                worst = (d, start + k);
            }
        }
    }
    anyhow::ensure!(
        worst.0 <= SELF_TEST_TOLERANCE,
        "self-test failed: golden row {} ({}) scores {:.3e} away from its stored score on this \
         device (tolerance {SELF_TEST_TOLERANCE:e}): the weights, the spec or the golden file \
         do not belong together",
        worst.1 + 1,
        txs[worst.1].end_to_end_id,
        worst.0
    );
    Ok(worst.0)
}

/// Runs [`crate::server::warm_up_sizes`] batches through `served`'s engine before it takes traffic, so
/// no real request pays a warm-up: cuBLAS picks its kernels by size range, and CUDA loads each
/// kernel on its first launch (lazy loading).
pub async fn warm_up(served: &Served, config: &Config) -> anyhow::Result<()> {
    let extractor = served.extractor();
    let (nn, nc) = (extractor.n_numeric(), extractor.n_categorical());
    for rows in crate::server::warm_up_sizes(config.engine.max_batch_size)
        .into_iter()
        .flat_map(|rows| std::iter::repeat_n(rows, config.engine.workers))
    {
        let batch = FeatureBatch {
            rows,
            n_numeric: nn,
            n_categorical: nc,
            numeric: vec![0.0; rows * nn],
            categorical: vec![0; rows * nc],
        };
        served
            .engine()
            .warm_up(batch, Instant::now() + Duration::from_secs(60))
            .await
            .context("warm-up batch")?;
    }
    // Traffic from here on; the warm-up rows above were not observed.
    if let Some(monitor) = served.monitor() {
        monitor.start_observing();
    }
    Ok(())
}

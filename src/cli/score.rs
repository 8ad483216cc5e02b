//! `pixguard score` and `pixguard model inspect`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use clap::{Args, Subcommand};

use crate::config::DeviceChoice;
use crate::features::FeatureBatch;
use crate::jsonl::RowReader;
use crate::model::{Scorer, device};

/// The bundled model package, relative to the repository root.
pub const DEFAULT_MODEL: &str = "models/pix-fraud";

/// Arguments of `pixguard score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// JSONL transactions (bare, labelled synth rows, `{"transactions": [...]}` batches, or MLflow
    /// dataframe-split documents such as a package's input_example.json); `-` or absent for stdin.
    pub input: Option<PathBuf>,
    /// Model package folder (an MLflow Model with the pixguard flavor).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Transactions scored per model call.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Where to run the model (`cuda` needs the `cuda` build and a GPU).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// `pixguard model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Validate a package (digests, tensors, thresholds) and print its summary.
    Inspect {
        /// Package folder.
        #[arg(default_value = DEFAULT_MODEL)]
        dir: PathBuf,
    },
    /// Time the model's forward pass per batch size (CPU or GPU).
    Bench(super::model_bench::ModelBenchArgs),
    /// Register a package in the MLflow Model Registry as a new version (optionally under an alias).
    Publish(super::registry::PublishArgs),
    /// Point alias --to at the version alias --from points at (e.g. staging → production).
    Promote {
        #[command(flatten)]
        registry: super::registry::RegistryArgs,
        /// Alias whose version is promoted.
        #[arg(long, default_value = "staging")]
        from: String,
        /// Alias that moves.
        #[arg(long, default_value = "production")]
        to: String,
    },
    /// Point an alias back at the version it replaced last.
    Rollback {
        #[command(flatten)]
        registry: super::registry::RegistryArgs,
        /// Alias that moves back.
        #[arg(long, default_value = "production")]
        alias: String,
    },
    /// Versions of a registered model: aliases, digests, metrics, when published.
    List {
        #[command(flatten)]
        registry: super::registry::RegistryArgs,
        /// One JSON object per version instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Scores every input transaction and writes `{end_to_end_id, score, decision, model_version}` lines.
pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let selected = device::select(args.device).map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    if let Some(reason) = &selected.fallback {
        tracing::warn!(%reason, "CUDA is unusable: scoring on the CPU");
    }
    let scorer = Scorer::load(&args.model, &selected.device)
        .with_context(|| format!("loading model package {}", args.model.display()))?;
    tracing::info!(model = %scorer.model_version(), device = %selected.description, "model loaded");
    let mut reader = RowReader::new(super::open_input(args.input.as_deref())?);
    let mut out = super::open_output(args.output.as_ref(), args.input.as_deref())?;
    let (mut rows, mut features, mut total) = (Vec::new(), FeatureBatch::default(), 0usize);
    let started = Instant::now();
    let mut line = Vec::with_capacity(256);
    while reader.next_batch(args.batch.max(1), &mut rows)? {
        let txs: Vec<_> = rows.drain(..).map(|r| r.transaction).collect();
        for scored in scorer.score(&txs, &mut features)? {
            line.clear();
            serde_json::to_writer(&mut line, &scored)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        total += txs.len();
    }
    out.flush()?;
    tracing::info!(
        rows = total,
        seconds = started.elapsed().as_secs_f64(),
        "scored"
    );
    Ok(())
}

/// Runs a `pixguard model` subcommand.
pub fn model(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Inspect { dir } => {
            let scorer = Scorer::load(&dir, &Device::Cpu)
                .with_context(|| format!("loading model package {}", dir.display()))?;
            println!("{}", serde_json::to_string_pretty(&summary(&scorer))?);
            Ok(())
        }
        ModelCommand::Bench(args) => super::model_bench::run(args),
        ModelCommand::Publish(args) => super::registry::publish(args),
        ModelCommand::Promote { registry, from, to } => {
            super::registry::promote(registry, from, to)
        }
        ModelCommand::Rollback { registry, alias } => super::registry::rollback(registry, alias),
        ModelCommand::List { registry, json } => super::registry::list(registry, json),
    }
}

fn summary(scorer: &Scorer) -> serde_json::Value {
    let p = &scorer.package;
    let c = &p.config;
    let parameters: usize = c
        .expected_tensors()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let size = |name: &str| std::fs::metadata(p.dir.join(name)).map(|m| m.len()).ok();
    serde_json::json!({
        "package": p.dir.display().to_string(),
        "name": c.name,
        "version": c.version,
        "mlflow": {
            "mlflow_version": p.mlmodel.mlflow_version,
            "model_uuid": p.mlmodel.model_uuid,
            "utc_time_created": p.mlmodel.utc_time_created,
        },
        "architecture": c.architecture,
        "input_width": c.input_width(),
        "parameters": parameters,
        "features": {
            "numeric": c.features.numeric.iter().map(|f| &f.name).collect::<Vec<_>>(),
            "categorical": c.features.categorical.iter()
                .map(|f| serde_json::json!({"name": f.name, "cardinality": f.cardinality()}))
                .collect::<Vec<_>>(),
        },
        "thresholds": c.thresholds,
        "metrics": c.metrics,
        "files": {
            "model_config": {"name": p.flavor.model_config, "bytes": size(&p.flavor.model_config), "sha256": "verified"},
            "weights": {"name": p.flavor.weights, "bytes": size(&p.flavor.weights), "sha256": "verified"},
        },
    })
}

//! `pixguard features`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};

use crate::features::{FeatureExtractor, FeatureSpec, FitOptions, default_spec, fit};
use crate::jsonl::{InputRow, read_all};

/// Output format of `pixguard features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeaturesFormat {
    /// One object per line with named numeric and categorical values.
    Jsonl,
    /// A header row, then `end_to_end_id`, every numeric feature, every categorical index (and `label`).
    Csv,
}

/// Arguments of `pixguard features`.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// JSONL transactions (bare, or labelled rows from `pixguard synth`); `-` or absent for stdin.
    pub input: Option<PathBuf>,
    /// Feature spec JSON (the `features` object of a model's model.json); default: the built-in
    /// feature set with neutral statistics.
    #[arg(long, conflicts_with = "model")]
    pub spec: Option<PathBuf>,
    /// Use the feature spec of this model package (validated like `pixguard score` does).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FeaturesFormat::Jsonl)]
    pub format: FeaturesFormat,
    /// Print numeric values after transform and clip but before standardisation (absent = null/empty).
    #[arg(long)]
    pub unscaled: bool,
    /// Instead of printing rows, fit the spec's means, stds and vocabularies on the input and write
    /// the fitted spec to this file.
    #[arg(long, value_name = "FILE")]
    pub fit: Option<PathBuf>,
    /// With --fit: a token needs this many rows to enter a vocabulary.
    #[arg(long, default_value_t = FitOptions::default().min_count)]
    pub min_count: usize,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

fn load_spec(path: Option<&PathBuf>) -> anyhow::Result<FeatureSpec> {
    match path {
        None => Ok(default_spec()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("parsing feature spec {}", p.display()))
        }
    }
}

/// Reads the input and prints feature rows, or fits and writes a spec.
pub fn run(args: FeaturesArgs) -> anyhow::Result<()> {
    let spec = match &args.model {
        Some(dir) => {
            crate::model::ModelPackage::load(dir)
                .with_context(|| format!("loading model package {}", dir.display()))?
                .config
                .features
        }
        None => load_spec(args.spec.as_ref())?,
    };
    // Before reading: the whole input is read first, so the refusal should not wait for it.
    super::refuse_overwriting(args.fit.as_deref(), args.input.as_deref(), "--fit")?;
    super::refuse_overwriting(args.output.as_deref(), args.input.as_deref(), "output")?;
    let rows = read_all(super::open_input(args.input.as_deref())?)?;
    tracing::info!(rows = rows.len(), "read transactions");
    let txs: Vec<_> = rows.iter().map(|r| r.transaction.clone()).collect();

    if let Some(path) = &args.fit {
        let options = FitOptions {
            min_count: args.min_count,
            ..FitOptions::default()
        };
        let fitted = fit(&spec, &txs, options)?;
        let text = serde_json::to_string_pretty(&fitted)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), rows = txs.len(), "fitted feature spec written");
        return Ok(());
    }

    let extractor = FeatureExtractor::new(spec)?;
    let batch = extractor.extract(&txs);
    let spec = extractor.spec();
    let labelled = rows.iter().any(|r| r.label.is_some());
    let mut out = super::open_output(args.output.as_ref(), args.input.as_deref())?;
    if args.format == FeaturesFormat::Csv {
        let mut header: Vec<&str> = vec!["end_to_end_id"];
        header.extend(spec.numeric.iter().map(|f| f.name.as_str()));
        header.extend(spec.categorical.iter().map(|f| f.name.as_str()));
        if labelled {
            header.push("label");
        }
        writeln!(out, "{}", header.join(","))?;
    }
    for (i, row) in rows.iter().enumerate() {
        let numeric: Vec<Option<f64>> = if args.unscaled {
            extractor.unscaled_row(&row.transaction)
        } else {
            batch
                .numeric_row(i)
                .iter()
                .map(|&v| Some(f64::from(v)))
                .collect()
        };
        match args.format {
            FeaturesFormat::Jsonl => writeln!(
                out,
                "{}",
                jsonl_row(spec, row, &numeric, batch.categorical_row(i))
            )?,
            FeaturesFormat::Csv => writeln!(
                out,
                "{}",
                csv_row(row, &numeric, batch.categorical_row(i), labelled)
            )?,
        }
    }
    out.flush()?;
    Ok(())
}

fn jsonl_row(
    spec: &FeatureSpec,
    row: &InputRow,
    numeric: &[Option<f64>],
    categorical: &[u32],
) -> Value {
    // Widening f32 to f64 is exact, so reading a printed value back as f32 gives the model input bit for bit.
    let num: Map<String, Value> = spec
        .numeric
        .iter()
        .zip(numeric)
        .map(|(f, v)| (f.name.clone(), v.map_or(Value::Null, |x| json!(x))))
        .collect();
    let cat: Map<String, Value> = spec
        .categorical
        .iter()
        .zip(categorical)
        .map(|(f, &v)| (f.name.clone(), json!(v)))
        .collect();
    let mut obj = json!({
        "end_to_end_id": row.transaction.end_to_end_id.as_str(),
        "numeric": num,
        "categorical": cat,
    });
    if let (Some((label, fraud_type)), Some(map)) = (row.label, obj.as_object_mut()) {
        map.insert("label".into(), json!(label));
        map.insert("fraud_type".into(), json!(fraud_type));
    }
    obj
}

fn csv_row(row: &InputRow, numeric: &[Option<f64>], categorical: &[u32], labelled: bool) -> String {
    let mut cells: Vec<String> = vec![row.transaction.end_to_end_id.to_string()];
    cells.extend(
        numeric
            .iter()
            .map(|v| v.map_or(String::new(), |x| x.to_string())),
    );
    cells.extend(categorical.iter().map(u32::to_string));
    if labelled {
        cells.push(row.label.map_or(String::new(), |l| l.0.to_string()));
    }
    cells.join(",")
}

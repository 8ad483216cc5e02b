//! `pixguard synth`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, ValueEnum};

use crate::synth::{Generator, SynthConfig, write_csv, write_jsonl, write_parquet};
use crate::transaction::arrow::Layout;

/// Output format of `pixguard synth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SynthFormat {
    /// One JSON object per line: {"transaction": {...}, "label": 0|1, "fraud_type": "..."}.
    Jsonl,
    /// A header row, then the flattened transaction columns, `label` and `fraud_type`.
    Csv,
    /// Parquet (snappy): the transaction's columns (`--layout`), `label` and `fraud_type`; needs
    /// `--output`.
    Parquet,
}

/// Arguments of `pixguard synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Random seed; the same seed and options always give the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of transactions to generate.
    #[arg(long, default_value_t = 1_000)]
    pub rows: u64,
    /// Share of fraudulent transactions, in [0, 1).
    #[arg(long, default_value_t = 0.008)]
    pub fraud_rate: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SynthFormat::Jsonl)]
    pub format: SynthFormat,
    /// First local day (America/Sao_Paulo) of the generated window, YYYY-MM-DD.
    #[arg(long, default_value = "2026-10-01")]
    pub start: NaiveDate,
    /// Length of the window in days; arrivals follow hour, weekday and payday seasonality within it.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Shift the traffic away from the training distribution, as real traffic shifts (repeatable):
    /// `amounts:FACTOR` (every amount × FACTOR), `new-keys:SHARE` (that share of payee keys created
    /// in the last 3 days), `campaign:TYPOLOGY:RATE` (a fraud campaign: the typology at RATE of all
    /// payments), `night` (every payment at night). docs/monitoring.md.
    #[arg(long = "shift", value_name = "SHIFT")]
    pub shifts: Vec<crate::synth::Shift>,
    /// Parquet columns: nested structs (`payer` { `ispb`, … }) or flat dotted names (`payer.ispb`).
    #[arg(long, value_enum, default_value_t = Layout::Nested)]
    pub layout: Layout,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Generates the rows and writes them.
pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        seed: args.seed,
        rows: args.rows,
        fraud_rate: args.fraud_rate,
        start: args.start,
        days: args.days,
        shifts: args.shifts,
    };
    let generator = Generator::new(cfg)?;
    let started = Instant::now();
    let n = match args.format {
        SynthFormat::Parquet => {
            let path = args
                .output
                .as_ref()
                .filter(|p| p.as_os_str() != "-")
                .context(
                    "--format parquet needs --output FILE (Parquet is not streamed to stdout)",
                )?;
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, file);
            write_parquet(generator, out, args.layout).context("writing synthetic rows")?
        }
        format => {
            let mut out = super::open_output(args.output.as_ref(), None)?;
            match format {
                SynthFormat::Csv => write_csv(generator, &mut out),
                _ => write_jsonl(generator, &mut out),
            }
            .and_then(|n| out.flush().map(|_| n))
            .context("writing synthetic rows")?
        }
    };
    done(n, started);
    Ok(())
}

fn done(n: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        rows = n,
        seconds = secs,
        rows_per_second = (n as f64 / secs) as u64,
        "synth done"
    );
}

//! The `pixguard` command line: argument definitions and one function per subcommand.

mod batch;
mod features;
mod model_bench;
mod produce;
mod registry;
mod score;
mod serve;
mod synth;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use features::{FeaturesArgs, FeaturesFormat};
pub use score::{DEFAULT_MODEL, ModelCommand, ScoreArgs};
pub use serve::ServeArgs;
pub use synth::{SynthArgs, SynthFormat};

/// Real-time fraud scoring for Brazilian Pix payments.
#[derive(Debug, Parser)]
#[command(name = "pixguard", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter for stderr (tracing EnvFilter syntax, e.g. `info` or `pixguard=debug`); for
    /// `serve` it overrides logging.level.
    #[arg(long, global = true, env = "RUST_LOG")]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the model over HTTP (/v1/score, /healthz, /readyz, /metrics, /v1/stats) with dynamic
    /// micro-batching; configuration from config.yaml, PIXGUARD__* variables and flags.
    Serve(ServeArgs),
    /// Generate deterministic synthetic Pix traffic with labelled fraud typologies.
    Synth(SynthArgs),
    /// Print the model-input feature rows of JSONL transactions (to debug training/serving skew),
    /// or fit a feature spec's statistics on them.
    Features(FeaturesArgs),
    /// Score JSONL transactions with a model package on the CPU; writes one JSON line per payment.
    Score(ScoreArgs),
    /// Score files (Parquet, JSONL, CSV; a file or a folder) into a scores file, bad rows into a
    /// rejects file, on every core and the configured device; prints a JSON summary.
    Batch(batch::BatchArgs),
    /// Inspect model packages.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Load-test a scoring server (pixguard or a peer): open loop at target rates or closed loop
    /// at fixed concurrency; writes a table, report.json and report.html with plots.
    Bench(crate::bench::BenchArgs),
    /// Score Pix transactions from a Kafka topic (`serve` with `stream.enabled`): scores to the
    /// output topic, unscorable messages to the dead-letter topic, at least once.
    Stream(ServeArgs),
    /// Feed a Kafka topic with transactions (JSONL), at a rate or as fast as the broker takes them.
    Produce(produce::ProduceArgs),
    /// Compare `pixguard bench` reports: highest throughput within a p99 bound, ratios, plots.
    BenchCompare(crate::bench::CompareArgs),
    /// Merge the reports of a run split over generators (`pixguard bench --part I/N`) into one:
    /// their histograms added, the table, report.json and report.html of the whole load.
    BenchMerge(crate::bench::MergeArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve(args) = cli.command {
        return serve::run(args, cli.log.as_deref());
    }
    if let Command::Stream(mut args) = cli.command {
        args.set.push("stream.enabled=true".into());
        return serve::run(args, cli.log.as_deref());
    }
    crate::logging::init(cli.log.as_deref().unwrap_or("info"), false);
    match cli.command {
        Command::Serve(_) | Command::Stream(_) => Ok(()),
        Command::Produce(args) => produce::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Features(args) => features::run(args),
        Command::Score(args) => score::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Model(command) => score::model(command),
        Command::Bench(args) => crate::bench::run(args),
        Command::BenchCompare(args) => crate::bench::compare(args),
        Command::BenchMerge(args) => crate::bench::merge::run(args),
    }
}

/// Opens `path` for reading, or stdin for `None` or `-`.
/// A byte order mark before the first line is skipped (`crate::jsonl::skip_bom`).
fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn BufRead>> {
    let (mut input, name): (Box<dyn BufRead>, _) = match path {
        Some(p) if p.as_os_str() != "-" => {
            let file = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            (
                Box::new(BufReader::with_capacity(1 << 20, file)),
                p.display().to_string(),
            )
        }
        _ => (
            Box::new(BufReader::new(io::stdin().lock())),
            "stdin".to_string(),
        ),
    };
    crate::jsonl::skip_bom(&mut input).with_context(|| format!("reading {name}"))?;
    Ok(input)
}

/// Opens `path` for writing, or stdout for `None` or `-`; refused when it is the file `reads`
/// (the command's input), which creating it would empty before a row is read.
fn open_output(path: Option<&PathBuf>, reads: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    refuse_overwriting(path.map(PathBuf::as_path), reads, "output")?;
    match path {
        None => Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            io::stdout().lock(),
        ))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            io::stdout().lock(),
        ))),
        Some(p) => {
            let file = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Ok(Box::new(BufWriter::with_capacity(1 << 20, file)))
        }
    }
}

/// Refuses to write `what` (`output`, `--fit`) to `path` when it is the input file `reads`.
fn refuse_overwriting(path: Option<&Path>, reads: Option<&Path>, what: &str) -> anyhow::Result<()> {
    if let (Some(path), Some(input)) = (path, reads)
        && path.as_os_str() != "-"
        && crate::same_file(path, input)
    {
        anyhow::bail!(
            "the {what} file {} is the input file {}: writing it would destroy the input",
            path.display(),
            input.display()
        );
    }
    Ok(())
}

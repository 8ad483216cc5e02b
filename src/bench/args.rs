//! What `pixguard bench`, `pixguard bench-compare` and `pixguard bench-merge` take on the command
//! line, and the step lists (`5000`, `1,2,5`, `start:end:step`) they expand.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::load::Arrivals;
use super::part::Part;
use super::requests::Api;

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
    /// `start:end:step` (`1000:20000:1000`); one step per value. Default 1000:10000:1000.
    #[arg(long)]
    pub rate: Option<String>,
    /// Open loop: arrival process; `replay` sends the transactions at their own `accepted_at`
    /// times (sorted), at --speed.
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: Arrivals,
    /// --arrivals replay: times faster than recorded, with the same syntax as --rate (`1`,
    /// `1,2,4`, `1:10:1`); one step per value, the recording played again until the step ends.
    /// Default 1.
    #[arg(long)]
    pub speed: Option<String>,
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
    /// Send these transactions instead (JSONL: bare, `pixguard synth` rows, or decision-log
    /// records with their inputs, whose shadow copies are skipped).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Transactions per request (`v1` as `{"transactions": [...]}`, the OIP as `[N, 1]` tensors;
    /// not `mlflow`): rows/s is this times the request rate. For loading a GPU with millions of
    /// rows per second.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rows_per_request: u32,
    /// Per-request timeout in milliseconds (counted as a `timeout` error).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Load-generator threads (tokio workers); in open loop as many schedulers, each releasing
    /// its share of the rate to its share of the connections. One core generates the load the docs
    /// quote.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Name of the target in the reports; default `<api> <url>`.
    #[arg(long)]
    pub label: Option<String>,
    /// Folder for report.json and report.html (a local path or gs://bucket/prefix); default
    /// `target/bench/<UTC time>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Offer share I of N of the load given (--rate, --connections, --concurrency are the whole
    /// run's), for a run split over N generator processes or pods; the report keeps its
    /// histograms, which `pixguard bench-merge` adds up.
    #[arg(long, value_name = "I/N")]
    pub part: Option<Part>,
    /// Start the first step at this wall-clock time (RFC 3339, or Unix seconds) and each next
    /// step one step's length after the last: the parts of a split run measure the same
    /// seconds. Refused once more than a second past, or more than an hour ahead.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not read the server's statistics around each step (`/v2/models/{m}/stats`, gRPC
    /// ModelStatistics), which split its latency into queue and compute. Read by default; not
    /// over MLflow's API nor from a --part. Against several replicas behind one URL the two reads
    /// of a step may reach different ones: a count that went back drops the step's figures.
    #[arg(long)]
    pub no_server_stats: bool,
}

/// `pixguard bench-compare` options.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// report.json files from `pixguard bench` (local, or gs://bucket/…/report.json); the first
    /// is the one the others are compared to.
    #[arg(required = true, num_args = 2..)]
    pub reports: Vec<String>,
    /// The latency bound: each run's highest throughput with p99 at or under it is compared.
    #[arg(long, default_value_t = 10.0)]
    pub p99_ms: f64,
    /// Folder for compare.md and compare.html.
    #[arg(long)]
    pub out: PathBuf,
}

/// `pixguard bench-merge` options.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The parts' reports: report.json files, folders with one per subfolder (`part-0/`,
    /// `part-1/`, …), or gs:// prefixes laid out the same way.
    #[arg(required = true, num_args = 1..)]
    pub parts: Vec<String>,
    /// Folder for the merged report.json and report.html.
    #[arg(long)]
    pub out: PathBuf,
    /// Exit non-zero when a merged step's p99 is above this many milliseconds.
    #[arg(long)]
    pub fail_p99_ms: Option<f64>,
    /// Exit non-zero when a merged step fails more than this fraction of its requests.
    #[arg(long)]
    pub fail_error_rate: Option<f64>,
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

#[cfg(test)]
mod tests {
    use super::parse_steps;

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

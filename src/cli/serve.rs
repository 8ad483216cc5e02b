//! `pixguard serve`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, DeviceChoice, LogFormat};

/// Arguments of `pixguard serve`; every flag overrides `config.yaml` and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (default: ./config.yaml when present). Environment variables
    /// PIXGUARD__SECTION__KEY override it, e.g. PIXGUARD__ENGINE__MAX_BATCH_SIZE=64.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// server.address
    #[arg(long)]
    pub address: Option<String>,
    /// server.port (0 picks a free port; the log says which)
    #[arg(long)]
    pub port: Option<u16>,
    /// server.grpc_port (0 picks a free port; the log says which)
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// model.source: a package folder, gs://bucket/prefix, models:/NAME@ALIAS or models:/NAME/VERSION
    #[arg(long)]
    pub model: Option<String>,
    /// engine.device
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// engine.workers
    #[arg(long)]
    pub workers: Option<usize>,
    /// engine.max_batch_size
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// Any other key, as `section.key=value` (repeatable), e.g. `--set engine.max_queue_rows=1024`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ServeArgs {
    fn overrides(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        };
        put("server.address", self.address.clone());
        put("server.port", self.port.map(|p| p.to_string()));
        put("server.grpc_port", self.grpc_port.map(|p| p.to_string()));
        put("model.source", self.model.clone());
        put(
            "engine.device",
            self.device.map(|d| match d {
                DeviceChoice::Auto => "auto".into(),
                DeviceChoice::Cuda => "cuda".into(),
                DeviceChoice::Cpu => "cpu".into(),
            }),
        );
        put("engine.workers", self.workers.map(|w| w.to_string()));
        put(
            "engine.max_batch_size",
            self.max_batch_size.map(|b| b.to_string()),
        );
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(out)
    }
}

/// Loads the configuration, sets up logging and serves until SIGTERM/SIGINT.
pub fn run(args: ServeArgs, log_override: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.overrides()?)?;
    if args.print_config {
        print!("{}", serde_yaml_ng::to_string(&config)?);
        // What the environment set that was ignored, beside the configuration it did not make.
        for note in &config.notes {
            eprintln!("pixguard: {note}");
        }
        return Ok(());
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Candle's CPU thread pool (and its per-op /proc/cpuinfo read when unset) follows
        // engine.threads_per_worker; the fused op itself runs on its worker thread.
        let threads = config.engine.threads_per_worker.max(1);
        // SAFETY: still single-threaded: no runtime, engine or logger has started.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    let level = log_override.unwrap_or(&config.logging.level);
    crate::logging::init(level, config.logging.format == LogFormat::Json);
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    tracing::debug!(?config, "effective configuration");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Every thread that must keep the process's priority starts before any front-end thread is
    // niced: a thread inherits its creator's nice value. The engines' threads come from the
    // spawner; Candle's CPU pool (rayon's global one) would otherwise start on first use, in
    // a model's self-test on a niced blocking thread.
    crate::threads::start_spawner().context("starting the thread spawner")?;
    if let Err(e) = rayon::ThreadPoolBuilder::new().build_global() {
        tracing::debug!(error = %e, "rayon's global pool was already started");
    }
    let nice = config.server.front_end_nice;
    crate::parallel::install(config.parse_threads(cores), nice)
        .context("starting the row threads")?;
    let runtime = runtime(&config, cores).context("starting the async runtime")?;
    let current_thread =
        runtime.handle().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
    runtime.block_on(async move {
        if current_thread {
            // That runtime runs here, on the main thread, which `on_thread_start` never sees.
            crate::threads::lower_priority(nice);
        }
        crate::server::serve(config).await
    })
}

/// The HTTP/gRPC runtime for `config` on `cores` cores.
///
/// One thread gets tokio's current-thread scheduler, whose run queue is unbounded. Under overload
/// thousands of connections are ready at once; a one-worker multi-thread runtime overflows its 256
/// local slots into the shared FIFO where the engine thread's wake-ups (scored requests) also land,
/// so an answered request waited behind most of the ready connections: accepted p99 in the
/// 250-500 ms bucket against 25-50 ms with this scheduler (docs/benchmarks.md, "overload"). The
/// Kafka source, when enabled, runs on a runtime of its own (`server::spawn_stream`).
fn runtime(config: &Config, cores: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = config.http_threads(cores);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let nice = config.server.front_end_nice;
    builder
        .enable_all()
        .thread_name("pixguard-http")
        .on_thread_start(move || crate::threads::lower_priority(nice))
        .build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_core_gets_the_current_thread_scheduler() {
        let config = Config::default();
        let flavor = |config: &Config, cores| {
            let runtime = runtime(config, cores).map_err(|e| e.to_string());
            runtime.map(|r| r.handle().runtime_flavor())
        };
        assert_eq!(flavor(&config, 1), Ok(RuntimeFlavor::CurrentThread));
        assert_eq!(flavor(&config, 4), Ok(RuntimeFlavor::MultiThread));
    }
}

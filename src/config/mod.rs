//! One typed configuration: `config.yaml`, then the OpenTelemetry SDK's `OTEL_*` variables (for
//! `traces`), then `PIXGUARD__SECTION__KEY` environment overrides, then command-line flags. An
//! unknown key anywhere is an error that names it.

use std::path::{Path, PathBuf};

mod otel;
mod overrides;
mod sections;

pub use otel::{HEADER_VARIABLES as OTLP_HEADER_VARIABLES, pairs as otel_pairs};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

pub use sections::{
    DecisionLogConfig, DecisionsConfig, DeviceChoice, EngineConfig, Librdkafka, LogFormat,
    LoggingConfig, ModelConfig, MonitoringConfig, OtlpCompression, OtlpProtocol, ServerConfig,
    StreamConfig, TracesConfig,
};

/// Everything `pixguard serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP front end.
    pub server: ServerConfig,
    /// Micro-batcher and device workers.
    pub engine: EngineConfig,
    /// Which model to serve.
    pub model: ModelConfig,
    /// Decision threshold overrides.
    pub decisions: DecisionsConfig,
    /// Scoring from Kafka (`pixguard stream`, or beside `serve` when enabled).
    pub stream: StreamConfig,
    /// Every answered decision to a Kafka topic.
    pub decision_log: DecisionLogConfig,
    /// Feature and score drift against the package's training reference.
    pub monitoring: MonitoringConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// Distributed traces (OTLP).
    pub traces: TracesConfig,
    /// Settings the environment gave that were ignored, and why: logged once logging is up.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key or value is wrong; `key` is its dotted path (empty for the whole configuration),
    /// `origin` says where it was set (`from environment PIXGUARD__ENGINE__WORKERS`).
    #[error("config{}{}: {reason} ({origin})", if key.is_empty() { "" } else { " " }, key)]
    Invalid {
        key: String,
        reason: String,
        origin: String,
    },
}

/// Prefix of environment overrides: `PIXGUARD__ENGINE__MAX_BATCH_SIZE=64`.
pub const ENV_PREFIX: &str = "PIXGUARD__";

impl Config {
    /// The HTTP runtime's thread count on a machine with `cores` cores: `server.http_threads`, or
    /// the cores the device workers and the batcher leave, at least one. A runtime thread beyond
    /// the free cores only adds context switches and work-stealing wake-ups: on one core a second
    /// one cost 29 % more CPU per gRPC call, and on two cores (a worker and the batcher beside it)
    /// one thread answered 18 % more `/v1` requests than two, with a lower p99, for single
    /// transactions and 200-row requests alike (docs/benchmarks.md). A GPU node's 1,000-row
    /// requests need several cores of JSON parsing per million rows/s; a laptop's CPU workers need
    /// theirs for the model.
    pub fn http_threads(&self, cores: usize) -> usize {
        if self.server.http_threads > 0 {
            return self.server.http_threads;
        }
        // The batcher thread is the engine's too.
        let engine = self.engine.workers * self.engine.threads_per_worker.max(1) + 1;
        cores.saturating_sub(engine).max(1)
    }

    /// The threads one large request's rows are shared over: `server.parse_threads`, or as many as
    /// the HTTP runtime has (a caller waits while they work, so they take its place on the cores).
    pub fn parse_threads(&self, cores: usize) -> usize {
        match self.server.parse_threads {
            0 => self.http_threads(cores),
            n => n,
        }
    }

    /// Builds the configuration from `file` (skipped when `None` and `config.yaml` is absent), the
    /// process environment, then `overrides` (`section.key` → value text, from CLI flags).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let env = overrides::from_environment(std::env::vars_os())?;
        Self::load_from(file, &env, overrides)
    }

    /// [`Config::load`] with an explicit environment (`PIXGUARD__…` and `OTEL_…` variables), for
    /// tests.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let default_path = Path::new("config.yaml");
        let path = file.or(default_path.exists().then_some(default_path));
        let mut origins = overrides::Origins::default();
        let mut root = match path {
            Some(p) => {
                let name = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.into(),
                    source,
                })?;
                let root =
                    serde_yaml_ng::from_str::<Value>(&text).map_err(|e| ConfigError::Invalid {
                        key: String::new(),
                        reason: e.to_string(),
                        origin: format!("from {name}"),
                    })?;
                origins.file(&root, "", &name);
                root
            }
            None => Value::Mapping(Mapping::new()),
        };
        if root.is_null() {
            root = Value::Mapping(Mapping::new());
        }
        if !root.is_mapping() {
            return Err(ConfigError::Invalid {
                key: String::new(),
                reason: "expected sections of keys (server:, engine:, ...)".into(),
                origin: format!(
                    "from {}",
                    path.map_or(String::new(), |p| p.display().to_string())
                ),
            });
        }
        let (otel_env, env): (Vec<_>, Vec<_>) = env
            .iter()
            .cloned()
            .partition(|(name, _)| name.starts_with("OTEL_"));
        let otel = otel::translate(&otel_env);
        let mut set_by: Vec<overrides::Override> = otel
            .overrides
            .into_iter()
            .map(|(key, value, origin)| overrides::Override::new(key, value, origin))
            .chain(env.iter().map(|(name, value)| {
                let key = name[ENV_PREFIX.len()..]
                    .to_ascii_lowercase()
                    .replace("__", ".");
                overrides::Override::new(key, value.clone(), format!("environment {name}"))
            }))
            .chain(flags.iter().map(|(key, value)| {
                overrides::Override::new(key.clone(), value.clone(), "command line".into())
            }))
            .collect();
        for o in &set_by {
            set(&mut root, &o.key, o.value(), &o.origin)?;
            origins.set(&o.key, &o.origin);
        }
        let config: Config = loop {
            let e = match serde_path_to_error::deserialize(root.clone()) {
                Ok(config) => break config,
                Err(e) => e,
            };
            let key = error_key(&e);
            // The latest override of the refused key wins in the tree: give it its other reading.
            if let Some(o) = set_by.iter_mut().rev().find(|o| o.key == key)
                && o.try_other_reading()
            {
                set(&mut root, &o.key, o.value(), &o.origin)?;
                continue;
            }
            return Err(ConfigError::Invalid {
                reason: overrides::in_our_words(&e.inner().to_string()),
                origin: origins.describe(&[&key]),
                key,
            });
        };
        config.validate(&origins)?;
        Ok(Config {
            notes: otel.notes,
            ..config
        })
    }

    fn validate(&self, origins: &overrides::Origins) -> Result<(), ConfigError> {
        // A rule over several keys names where each came from.
        let bad_together = |key: &str, also: &[&str], reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
            origin: origins.describe(&[&[key], also].concat()),
        };
        let bad = |key: &str, reason: &str| bad_together(key, &[], reason);
        let e = &self.engine;
        // Each of these at 0 leaves a server that scores nothing: no batch or worker to compute
        // on, every body 413, every row 504 before compute, a stream that never fills a chunk or
        // never takes.
        for (key, value) in [
            ("engine.max_batch_size", e.max_batch_size as u64),
            ("engine.workers", e.workers as u64),
            (
                "server.max_transactions_per_request",
                self.server.max_transactions_per_request as u64,
            ),
            (
                "server.body_limit_bytes",
                self.server.body_limit_bytes as u64,
            ),
            ("engine.default_deadline_ms", e.default_deadline_ms),
            ("stream.max_batch", self.stream.max_batch as u64),
            ("stream.max_in_flight", self.stream.max_in_flight as u64),
        ] {
            if value == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if e.max_queue_rows < e.max_batch_size {
            return Err(bad_together(
                "engine.max_queue_rows",
                &["engine.max_batch_size"],
                "must be at least engine.max_batch_size",
            ));
        }
        if self.server.grpc_keepalive_time_ms > 0 && self.server.grpc_keepalive_timeout_ms == 0 {
            // A PING would be timed out the moment it is sent.
            return Err(bad_together(
                "server.grpc_keepalive_timeout_ms",
                &["server.grpc_keepalive_time_ms"],
                "must be at least 1 while server.grpc_keepalive_time_ms is set",
            ));
        }
        if self.server.front_end_nice > 19 {
            return Err(bad(
                "server.front_end_nice",
                "must be 0 to 19 (a Linux nice value)",
            ));
        }
        if let (Some(h), Some(r)) = (self.decisions.hold, self.decisions.reject)
            && !(0.0 < h && h < r && r < 1.0)
        {
            return Err(bad_together(
                "decisions.hold",
                &["decisions.reject"],
                "need 0 < hold < reject < 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.model.canary_fraction) {
            return Err(bad("model.canary_fraction", "must be between 0 and 1"));
        }
        if self.model.canary.is_none() && self.model.canary_fraction > 0.0 {
            return Err(bad_together(
                "model.canary_fraction",
                &["model.canary"],
                "a share for the canary needs a canary: set model.canary",
            ));
        }
        // A canary guard's setting: on when set (with a canary to guard), 0 turning it off; on, it
        // must be `valid`.
        let guard_on = |key: &str, value: f64, valid: bool, reason: &str| {
            let on = self.model.canary.is_some() && value != 0.0;
            if on && !valid {
                return Err(bad(key, reason));
            }
            Ok(on)
        };
        let m = &self.model;
        let guarded = guard_on(
            "model.canary_max_stop_ratio",
            m.canary_max_stop_ratio,
            (1.0..).contains(&m.canary_max_stop_ratio),
            "must be 0 (no guard) or at least 1",
        )?;
        let latency_guarded = guard_on(
            "model.canary_max_latency_ratio",
            m.canary_max_latency_ratio,
            (1.0..).contains(&m.canary_max_latency_ratio),
            "must be 0 (no latency guard) or at least 1",
        )?;
        let error_guarded = guard_on(
            "model.canary_max_error_share",
            m.canary_max_error_share,
            (0.0..1.0).contains(&m.canary_max_error_share),
            "must be 0 (no error guard) or above 0 and below 1",
        )?;
        if (guarded || latency_guarded || error_guarded) && self.model.canary_guard_min_rows == 0 {
            return Err(bad("model.canary_guard_min_rows", "must be at least 1"));
        }
        if guarded && !self.monitoring.enabled {
            return Err(bad_together(
                "model.canary_max_stop_ratio",
                &["monitoring.enabled"],
                "the canary guard reads the monitors' decision shares: set monitoring.enabled, or 0 for no guard",
            ));
        }
        if !(0.0..=1.0).contains(&self.model.shadow_fraction) {
            return Err(bad("model.shadow_fraction", "must be between 0 and 1"));
        }
        let log = &self.decision_log;
        if !(0.0..=1.0).contains(&log.sample_ratio) {
            return Err(bad("decision_log.sample_ratio", "must be between 0 and 1"));
        }
        if !log.topic.is_empty() {
            if log.max_queue_records == 0 {
                return Err(bad("decision_log.max_queue_records", "must be at least 1"));
            }
            if log.brokers.is_empty() && self.stream.brokers.is_empty() {
                return Err(bad_together(
                    "decision_log.brokers",
                    &["stream.brokers"],
                    "a decision log needs brokers: set decision_log.brokers or stream.brokers",
                ));
            }
        }
        let t = &self.traces;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(bad("traces.sample_ratio", "must be between 0 and 1"));
        }
        if !t.otlp_endpoint.is_empty() {
            let uri = t.otlp_endpoint.parse::<axum::http::Uri>();
            let scheme = uri.as_ref().ok().and_then(|u| u.scheme_str());
            if !matches!(scheme, Some("http" | "https"))
                || uri.as_ref().ok().and_then(|u| u.host()).is_none()
            {
                return Err(bad(
                    "traces.otlp_endpoint",
                    "must be an http:// or https:// URL (OTLP/gRPC, e.g. http://otel-collector:4317)",
                ));
            }
            // Over HTTP the key is the traces URL itself; without a path every export would go to
            // the collector's root and be refused (a base URL is OTEL_EXPORTER_OTLP_ENDPOINT's).
            if t.protocol == OtlpProtocol::HttpProtobuf
                && uri.as_ref().ok().is_some_and(|u| u.path() == "/")
            {
                return Err(bad_together(
                    "traces.otlp_endpoint",
                    &["traces.protocol"],
                    "with protocol http/protobuf, the traces URL with its path, e.g. \
                     http://otel-collector:4318/v1/traces",
                ));
            }
            for (key, value) in [
                ("traces.max_queue_size", t.max_queue_size as u64),
                (
                    "traces.max_export_batch_size",
                    t.max_export_batch_size as u64,
                ),
                ("traces.export_interval_ms", t.export_interval_ms),
                ("traces.export_timeout_ms", t.export_timeout_ms),
            ] {
                if value == 0 {
                    return Err(bad(key, "must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

/// The dotted key serde refused; for an unknown field, the field itself rather than its section.
fn error_key(e: &serde_path_to_error::Error<serde_yaml_ng::Error>) -> String {
    let mut key = e.path().to_string();
    let reason = e.inner().to_string();
    if let Some(name) = reason
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        && !key.ends_with(name)
    {
        key = if key == "." {
            name.to_string()
        } else {
            format!("{key}.{name}")
        };
    }
    if key == "." { String::new() } else { key }
}

/// Sets `a.b.c` in a YAML tree to `value`.
fn set(root: &mut Value, key: &str, value: Value, origin: &str) -> Result<(), ConfigError> {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = node.as_mapping_mut().ok_or_else(|| ConfigError::Invalid {
            key: parts[..i].join("."),
            reason: "is not a section".into(),
            origin: format!("from {origin}"),
        })?;
        let k = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

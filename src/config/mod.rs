//! One typed configuration: `config.yaml`, then `PIXGUARD__SECTION__KEY` environment overrides,
//! then command-line flags. An unknown key anywhere is an error that names it.

use std::path::{Path, PathBuf};

mod sections;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

pub use sections::{
    DecisionsConfig, DeviceChoice, EngineConfig, LogFormat, LoggingConfig, ModelConfig,
    MonitoringConfig, ServerConfig, StreamConfig,
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
    /// Feature and score drift against the package's training reference.
    pub monitoring: MonitoringConfig,
    /// Logging.
    pub logging: LoggingConfig,
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
    /// A key or value is wrong; `key` is its dotted path.
    #[error("config {key}: {reason} (from {origin})")]
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
    /// process environment, then `overrides` (`section.key` → YAML scalar text, from CLI flags).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::load_from(file, &env, overrides)
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let default_path = Path::new("config.yaml");
        let path = file.or(default_path.exists().then_some(default_path));
        let mut root = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                    path: p.into(),
                    source,
                })?;
                serde_yaml_ng::from_str::<Value>(&text).map_err(|e| ConfigError::Invalid {
                    key: String::new(),
                    reason: e.to_string(),
                    origin: p.display().to_string(),
                })?
            }
            None => Value::Mapping(Mapping::new()),
        };
        if root.is_null() {
            root = Value::Mapping(Mapping::new());
        }
        for (name, value) in env {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            set(&mut root, &key, value, &format!("environment {name}"))?;
        }
        for (key, value) in overrides {
            set(&mut root, key, value, "command line")?;
        }
        let origin = path.map_or("defaults".to_string(), |p| {
            format!("{} + environment + flags", p.display())
        });
        let config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
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
            ConfigError::Invalid {
                key,
                reason,
                origin: origin.clone(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
            origin: "validation".into(),
        };
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
            return Err(bad(
                "engine.max_queue_rows",
                "must be at least engine.max_batch_size",
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
            return Err(bad("decisions", "need 0 < hold < reject < 1"));
        }
        if !(0.0..=1.0).contains(&self.model.shadow_fraction) {
            return Err(bad("model.shadow_fraction", "must be between 0 and 1"));
        }
        Ok(())
    }
}

/// Sets `a.b.c` in a YAML tree to `text` parsed as a YAML scalar.
fn set(root: &mut Value, key: &str, text: &str, origin: &str) -> Result<(), ConfigError> {
    let value: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = node.as_mapping_mut().ok_or_else(|| ConfigError::Invalid {
            key: parts[..i].join("."),
            reason: "is not a section".into(),
            origin: origin.into(),
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
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(text)
    }

    /// A throwaway file for one test.
    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("pixguard-config-{}-{n}.yaml", std::process::id()));
                std::fs::write(&path, text).unwrap();
                TempFile(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn http_threads_take_the_cores_the_workers_leave_unless_set() {
        let mut config = Config::default();
        config.engine.workers = 2;
        config.engine.threads_per_worker = 3;
        assert_eq!(
            config.http_threads(16),
            9,
            "16 cores less 2 workers × 3 threads and the batcher"
        );
        config.engine.workers = 1;
        config.engine.threads_per_worker = 1;
        assert_eq!(
            config.http_threads(4),
            2,
            "4 cores less a worker and the batcher"
        );
        assert_eq!(config.http_threads(2), 1, "never fewer than one");
        assert_eq!(config.http_threads(1), 1);
        assert_eq!(
            config.parse_threads(16),
            14,
            "parse threads follow the HTTP threads"
        );
        config.server.http_threads = 5;
        assert_eq!(config.http_threads(16), 5, "an explicit count wins");
        assert_eq!(config.parse_threads(16), 5);
        config.server.parse_threads = 1;
        assert_eq!(
            config.parse_threads(16),
            1,
            "an explicit count wins here too"
        );
    }

    #[test]
    fn file_then_environment_then_flags() {
        let f = file("engine:\n  max_batch_size: 64\n  workers: 2\nserver:\n  port: 9000\n");
        let config = Config::load_from(
            Some(&f.0),
            &env(&[
                ("PIXGUARD__ENGINE__MAX_BATCH_SIZE", "128"),
                ("PIXGUARD__LOGGING__FORMAT", "json"),
            ]),
            &env(&[("engine.max_batch_size", "256")]),
        )
        .unwrap();
        assert_eq!(config.engine.max_batch_size, 256, "flags win");
        assert_eq!(config.engine.workers, 2, "file value kept");
        assert_eq!(
            config.logging.format,
            LogFormat::Json,
            "environment applied"
        );
        assert_eq!(config.server.port, 9000);
        assert_eq!(
            config.engine.max_queue_delay_us,
            EngineConfig::default().max_queue_delay_us,
            "defaults fill gaps"
        );
    }

    #[test]
    fn unknown_keys_are_named_wherever_they_come_from() {
        let f = file("engine:\n  max_batch: 64\n");
        let err = Config::load_from(Some(&f.0), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config engine.max_batch: unknown field `max_batch`"),
            "{err}"
        );
        let f = file("");
        let err = Config::load_from(Some(&f.0), &env(&[("PIXGUARD__SERVR__PORT", "1")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config servr: unknown field `servr`"),
            "{err}"
        );
        let err = Config::load_from(Some(&f.0), &[], &env(&[("engine.device", "tpu")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config engine.device: unknown variant `tpu`"),
            "{err}"
        );
        for key in [
            "engine.max_batch_size",
            "engine.workers",
            "server.max_transactions_per_request",
            "server.body_limit_bytes",
            "engine.default_deadline_ms",
            "stream.max_batch",
            "stream.max_in_flight",
        ] {
            let err = Config::load_from(Some(&f.0), &[], &env(&[(key, "0")]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("config {key}: must be at least 1")),
                "{err}"
            );
        }
        let err = Config::load_from(Some(&f.0), &[], &env(&[("server.front_end_nice", "20")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config server.front_end_nice: must be 0 to 19"),
            "{err}"
        );
    }

    #[test]
    fn the_bundled_config_yaml_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        assert_eq!(
            Config::load_from(Some(&path), &[], &[]).unwrap(),
            Config::default()
        );
    }
}

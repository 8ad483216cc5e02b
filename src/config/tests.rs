//! The configuration built from a file, the environment and flags.

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
    let keepalive = |time: &str| {
        Config::load_from(
            Some(&f.0),
            &[],
            &env(&[
                ("server.grpc_keepalive_time_ms", time),
                ("server.grpc_keepalive_timeout_ms", "0"),
            ]),
        )
    };
    let err = keepalive("60000").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "config server.grpc_keepalive_timeout_ms: must be at least 1 while \
             server.grpc_keepalive_time_ms is set"
        ),
        "{err}"
    );
    assert!(keepalive("0").is_ok(), "no pings: the timeout is not used");
}

#[test]
fn overrides_keep_their_text_where_a_key_takes_text() {
    let f = file("");
    let config = Config::load_from(
        Some(&f.0),
        &env(&[
            ("PIXGUARD__STREAM__GROUP_ID", "0123"),
            ("PIXGUARD__STREAM__INPUT_TOPIC", "true"),
            ("PIXGUARD__STREAM__LIBRDKAFKA__SASL_PASSWORD", "#a 'b' ~"),
            ("PIXGUARD__ENGINE__WORKERS", "3"),
            ("PIXGUARD__MODEL__SHADOW", "models:/pix-fraud@challenger"),
        ]),
        &env(&[
            ("decisions.hold", "0.25"),
            ("monitoring.enabled", "false"),
            ("model.shadow", ""),
        ]),
    )
    .unwrap();
    assert_eq!(config.stream.group_id, "0123", "not the number 123");
    assert_eq!(config.stream.input_topic, "true", "not a boolean");
    assert_eq!(
        config.stream.librdkafka.get("sasl_password"),
        Some(&Value::String("#a 'b' ~".into())),
        "not a YAML comment"
    );
    assert_eq!(config.engine.workers, 3, "a count is read as one");
    assert_eq!(config.decisions.hold, Some(0.25));
    assert!(!config.monitoring.enabled);
    assert_eq!(config.model.shadow, None, "an empty value unsets");
}

#[test]
fn an_error_says_where_the_value_came_from_in_a_readers_words() {
    let f = file("engine:\n  workers: 2\nstream:\n  group_id: 123\n");
    let fname = f.0.display().to_string();
    let err = |env_pairs: &[(&str, &str)], flags: &[(&str, &str)]| {
        let empty = file("");
        Config::load_from(Some(&empty.0), &env(env_pairs), &env(flags))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&[("PIXGUARD__ENGINE__MAX_BATCH_SIZE", "-1")], &[]),
        "config engine.max_batch_size: expected a whole number (0 or more), got -1 \
         (from environment PIXGUARD__ENGINE__MAX_BATCH_SIZE)"
    );
    assert_eq!(
        err(&[], &[("server.port", "99999")]),
        "config server.port: expected a whole number from 0 to 65535, got 99999 \
         (from command line)"
    );
    assert_eq!(
        err(&[("PIXGUARD__MONITORING__ENABLED", "yes")], &[]),
        "config monitoring.enabled: expected true or false, got \"yes\" \
         (from environment PIXGUARD__MONITORING__ENABLED)"
    );
    assert!(
        err(&[("PIXGUARD__ENGIN__WORKERS", "2")], &[])
            .ends_with("(from environment PIXGUARD__ENGIN__WORKERS)"),
        "an unknown section names the variable"
    );
    assert_eq!(
        err(&[("PIXGUARD__ENGINE__MAX_BATCH_SIZE", "20000")], &[]),
        "config engine.max_queue_rows: must be at least engine.max_batch_size \
         (engine.max_queue_rows from defaults, engine.max_batch_size from environment \
         PIXGUARD__ENGINE__MAX_BATCH_SIZE)"
    );
    assert_eq!(
        Config::load_from(Some(&f.0), &[], &[])
            .unwrap_err()
            .to_string(),
        format!(
            "config stream.group_id: expected text, got 123 (in YAML, quote it: \"123\") \
             (from {fname})"
        )
    );
    let config = Config::load_from(Some(&f.0), &[], &env(&[("stream.group_id", "123")])).unwrap();
    assert_eq!(
        (config.stream.group_id.as_str(), config.engine.workers),
        ("123", 2),
        "a flag overrides the file's number with text"
    );
}

#[test]
fn traces_settings_are_checked_only_once_traces_are_on() {
    let empty = file("");
    let load = |flags: &[(&str, &str)]| Config::load_from(Some(&empty.0), &[], &env(flags));
    let err = |flags: &[(&str, &str)]| load(flags).unwrap_err().to_string();
    assert_eq!(
        err(&[("traces.sample_ratio", "1.5")]),
        "config traces.sample_ratio: must be between 0 and 1 (from command line)"
    );
    for bad in [
        "collector:4317",
        "http://",
        "http://bad host:4317",
        "grpc://collector:4317",
    ] {
        assert!(
            err(&[("traces.otlp_endpoint", bad)])
                .starts_with("config traces.otlp_endpoint: must be an http:// or https:// URL"),
            "{bad}"
        );
    }
    let on = ("traces.otlp_endpoint", "http://collector:4317");
    assert_eq!(
        err(&[on, ("traces.export_interval_ms", "0")]),
        "config traces.export_interval_ms: must be at least 1 (from command line)"
    );
    // Off, the export settings are not used, so not refused.
    assert!(load(&[("traces.export_interval_ms", "0")]).is_ok());
    let config = load(&[on, ("traces.sample_ratio", "1")]).unwrap();
    assert_eq!(config.traces.otlp_endpoint, "http://collector:4317");
}

#[test]
fn otel_variables_sit_between_the_file_and_pixguards_own_overrides() {
    let yaml = file("traces:\n  service_name: from-file\n  sample_ratio: 0.5\n");
    let load = |vars: &[(&str, &str)], flags: &[(&str, &str)]| {
        Config::load_from(Some(&yaml.0), &env(vars), &env(flags))
    };
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_SERVICE_NAME", "from-otel"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.namespace.name=fraud"),
        ("OTEL_PROPAGATORS", "b3"),
    ];
    let config = load(&otel, &[]).unwrap();
    let t = &config.traces;
    assert_eq!(t.otlp_endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(t.service_name, "from-otel");
    assert_eq!((t.sample_ratio, t.parent_based), (0.25, false));
    assert_eq!(t.resource_attributes["k8s.namespace.name"], "fraud");
    assert_eq!(config.notes.len(), 1, "{:?}", config.notes);
    // PIXGUARD__ names the key itself, so it wins; so do flags.
    let mut vars = otel.to_vec();
    vars.push(("PIXGUARD__TRACES__SERVICE_NAME", "from-pixguard"));
    let config = load(&vars, &[("traces.sample_ratio", "0.125")]).unwrap();
    assert_eq!(config.traces.service_name, "from-pixguard");
    assert_eq!(config.traces.sample_ratio, 0.125);
    // No OTEL_ variable: the file's values.
    let config = load(&[], &[]).unwrap();
    assert_eq!(config.traces.service_name, "from-file");
    assert_eq!(config.traces.sample_ratio, 0.5);
    // A value the configuration refuses names the variable it came from.
    assert_eq!(
        load(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
            ],
            &[]
        )
        .unwrap_err()
        .to_string(),
        "config traces.max_queue_size: expected a whole number (0 or more), got \"lots\" \
         (from environment OTEL_BSP_MAX_QUEUE_SIZE)"
    );
}

#[test]
fn an_http_traces_endpoint_needs_its_path() {
    let empty = file("");
    let load = |flags: &[(&str, &str)]| Config::load_from(Some(&empty.0), &[], &env(flags));
    let http = ("traces.protocol", "http/protobuf");
    assert_eq!(
        load(&[http, ("traces.otlp_endpoint", "http://collector:4318")])
            .unwrap_err()
            .to_string(),
        "config traces.otlp_endpoint: with protocol http/protobuf, the traces URL with its path, \
         e.g. http://otel-collector:4318/v1/traces (from command line)"
    );
    let config = load(&[
        http,
        ("traces.otlp_endpoint", "https://otlp.example/v1/traces"),
        ("traces.compression", "gzip"),
    ])
    .unwrap();
    assert_eq!(config.traces.compression, OtlpCompression::Gzip);
    // gRPC takes the collector's address alone.
    assert!(load(&[("traces.otlp_endpoint", "http://collector:4317")]).is_ok());
    assert!(
        load(&[("traces.protocol", "http/json")])
            .unwrap_err()
            .to_string()
            .starts_with("config traces.protocol: unknown variant `http/json`"),
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

/// Every `PIXGUARD__SECTION__KEY` a reader is told to set (README, docs, manifests, Dockerfiles,
/// scripts, workflows) names a key that exists: a renamed key fails here, not in a Deployment.
#[test]
fn every_override_named_in_the_repository_is_a_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defaults = serde_yaml_ng::to_value(Config::default()).unwrap();
    let mut files = vec![
        root.join("README.md"),
        root.join("Dockerfile"),
        root.join("Dockerfile.cuda"),
    ];
    let mut dirs = vec![
        root.join("docs"),
        root.join("k8s"),
        root.join("kernels"),
        root.join(".github"),
        root.join(".ci"),
        root.join("benches"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut named = std::collections::BTreeSet::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, _) in text.match_indices(ENV_PREFIX) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name != "PIXGUARD__SECTION__KEY" && name.len() > ENV_PREFIX.len() {
                named.insert((name, file.strip_prefix(root).unwrap().display().to_string()));
            }
        }
    }
    assert!(named.len() >= 20, "{named:?}");
    for (name, file) in &named {
        let key = name[ENV_PREFIX.len()..]
            .trim_end_matches('_')
            .to_ascii_lowercase()
            .replace("__", ".");
        let mut node = &defaults;
        for part in key.split('.') {
            if let Value::Mapping(m) = node
                && let Some(next) = m.get(part)
            {
                node = next;
            } else {
                assert!(
                    key.starts_with("stream.librdkafka."),
                    "{file}: {name} names no key ({key})"
                );
                break;
            }
        }
    }
}

#[test]
fn the_debug_form_hides_librdkafka_secrets() {
    let f = file("stream:\n  librdkafka: {security.protocol: SASL_SSL, sasl.password: hunter2}\n");
    let config = Config::load_from(
        Some(&f.0),
        &env(&[
            (
                "PIXGUARD__STREAM__LIBRDKAFKA__SSL_KEY_PASSWORD",
                "s3cret-key",
            ),
            (
                "PIXGUARD__STREAM__LIBRDKAFKA__SASL_OAUTHBEARER_CLIENT_SECRET",
                "oauth-s3cret",
            ),
        ]),
        &[],
    )
    .unwrap();
    let debug = format!("{config:?}");
    for secret in ["hunter2", "s3cret-key", "oauth-s3cret"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("\"sasl.password\": \"<hidden>\""), "{debug}");
    assert!(
        debug.contains("SASL_SSL"),
        "a setting that is no secret is shown: {debug}"
    );
    assert_eq!(
        config.stream.librdkafka.get("sasl.password"),
        Some(&Value::String("hunter2".into())),
        "the value itself is kept"
    );
}

#[test]
fn a_decision_log_needs_brokers_and_a_ratio_in_range_once_it_has_a_topic() {
    let empty = file("");
    let load = |flags: &[(&str, &str)]| Config::load_from(Some(&empty.0), &[], &env(flags));
    let err = |flags: &[(&str, &str)]| load(flags).unwrap_err().to_string();
    assert_eq!(
        err(&[("decision_log.sample_ratio", "-0.1")]),
        "config decision_log.sample_ratio: must be between 0 and 1 (from command line)"
    );
    // Off, its other keys are not checked.
    assert!(load(&[("decision_log.max_queue_records", "0")]).is_ok());
    let on = ("decision_log.topic", "pix.decisions");
    assert_eq!(
        err(&[on, ("decision_log.max_queue_records", "0")]),
        "config decision_log.max_queue_records: must be at least 1 (from command line)"
    );
    assert!(
        err(&[on, ("stream.brokers", "")])
            .starts_with("config decision_log.brokers: a decision log needs brokers"),
    );
    let config = load(&[on, ("decision_log.librdkafka.compression_type", "zstd")]).unwrap();
    assert_eq!(config.decision_log.brokers, "", "stream.brokers is used");
    assert_eq!(
        config.decision_log.librdkafka.get("compression_type"),
        Some(&serde_yaml_ng::Value::String("zstd".into()))
    );
}

#[test]
fn a_canary_share_is_in_range_and_needs_a_canary() {
    let empty = file("");
    let load = |flags: &[(&str, &str)]| Config::load_from(Some(&empty.0), &[], &env(flags));
    let err = |flags: &[(&str, &str)]| load(flags).unwrap_err().to_string();
    let canary = ("model.canary", "models:/pix-fraud@staging");
    assert_eq!(
        err(&[canary, ("model.canary_fraction", "1.5")]),
        "config model.canary_fraction: must be between 0 and 1 (from command line)"
    );
    assert!(
        err(&[("model.canary_fraction", "0.05")])
            .starts_with("config model.canary_fraction: a share for the canary needs a canary"),
    );
    // Loaded and followed at 0, ready to be dialled up through the admin API.
    let config = load(&[canary]).unwrap();
    assert_eq!(
        config.model.canary.as_deref(),
        Some("models:/pix-fraud@staging")
    );
    assert_eq!(config.model.canary_fraction, 0.0);
    assert!(load(&[canary, ("model.canary_fraction", "0.05")]).is_ok());
    // The guard: off at 0, else a ratio of at least 1 over the monitors' figures.
    assert_eq!(
        err(&[canary, ("model.canary_max_stop_ratio", "0.5")]),
        "config model.canary_max_stop_ratio: must be 0 (no guard) or at least 1 (from command line)"
    );
    assert!(
        err(&[canary, ("monitoring.enabled", "false")]).starts_with(
            "config model.canary_max_stop_ratio: the canary guard reads the monitors'"
        ),
    );
    assert!(
        load(&[
            canary,
            ("monitoring.enabled", "false"),
            ("model.canary_max_stop_ratio", "0")
        ])
        .is_ok()
    );
    assert!(
        load(&[("monitoring.enabled", "false")]).is_ok(),
        "no canary, no guard"
    );
    assert_eq!(config.model.canary_max_error_share, 0.01);
    for share in ["-0.1", "1", "2"] {
        assert_eq!(
            err(&[canary, ("model.canary_max_error_share", share)]),
            "config model.canary_max_error_share: must be 0 (no error guard) or above 0 and below 1 \
             (from command line)",
            "{share}"
        );
    }
    assert!(load(&[canary, ("model.canary_max_error_share", "0")]).is_ok());
    assert!(load(&[canary, ("model.canary_max_error_share", "0.2")]).is_ok());
}

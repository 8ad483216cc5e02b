//! The sections of `config.yaml`, each with the defaults a key takes when it is absent.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// HTTP front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub address: String,
    /// Port to bind (0 picks a free one and logs it).
    pub port: u16,
    /// Port of the Open Inference Protocol gRPC service (0 picks a free one and logs it).
    pub grpc_port: u16,
    /// Largest accepted request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Most transactions in one request (413 above).
    pub max_transactions_per_request: usize,
    /// Most scoring requests in flight at once, all front ends together; beyond it a request is
    /// refused at once with 429 (gRPC RESOURCE_EXHAUSTED). 0: no bound.
    pub max_concurrent_requests: usize,
    /// After SIGTERM, how long new requests are still accepted (readiness already fails) so load
    /// balancers can notice; then they get 503.
    pub grace_period_ms: u64,
    /// After SIGTERM, the longest the process waits for queued and in-flight work before exiting.
    pub drain_timeout_ms: u64,
    /// An HTTP request head must arrive whole within this of its first byte (a new connection's
    /// first request: of the connection), or the connection is closed. 0: no limit.
    pub http_header_timeout_ms: u64,
    /// A kept-alive HTTP connection with no next request for this long is closed; above the
    /// 600 s a Google Cloud load balancer keeps its backend connections. 0: no limit.
    pub http_idle_timeout_ms: u64,
    /// An HTTP connection older than this (±10 %) is closed after its next answer (which says
    /// `Connection: close`), so a client pooling connections through an L4 balancer reconnects
    /// and reaches replicas added since. 0: no limit.
    pub http_max_connection_age_ms: u64,
    /// A gRPC connection must send the whole HTTP/2 client preface within this of connecting, or
    /// it is closed. 0: no limit.
    pub grpc_preface_timeout_ms: u64,
    /// A gRPC connection with no call open for this long is sent GOAWAY (grpc-go's
    /// `MaxConnectionIdle`). 0: no limit.
    pub grpc_idle_timeout_ms: u64,
    /// A gRPC connection older than this (±10 %) is sent GOAWAY, so its client reconnects and a
    /// load balancer can place it on a replica added since (grpc-go's `MaxConnectionAge`).
    /// 0: no limit.
    pub grpc_max_connection_age_ms: u64,
    /// After an age GOAWAY, how long calls still open may run before the connection is closed
    /// under them. 0: as long as they take.
    pub grpc_max_connection_age_grace_ms: u64,
    /// A gRPC connection nothing has arrived on for this long is sent an HTTP/2 PING (grpc-go's
    /// keepalive `Time`, Triton's `--grpc-keepalive-time`): below the 10 min a Google Cloud VPC
    /// firewall keeps an idle flow, so a quiet `Health/Watch` stream is not dropped unseen.
    /// 0: no pings (the default: hyper's bookkeeping for them cost ~2–3 % of gRPC calls/s on one
    /// core; k8s/base sets 5 min).
    pub grpc_keepalive_time_ms: u64,
    /// A PING not answered within this closes the connection and the calls open on it: the peer
    /// is gone (its host died, or a middlebox dropped the flow) without a FIN or reset.
    pub grpc_keepalive_timeout_ms: u64,
    /// Threads that receive, parse and answer requests (0: the cores the engine's threads leave,
    /// at least one).
    pub http_threads: usize,
    /// Threads that share one large request's rows — parsing, validation, features, the answer —
    /// so it is not one core's work while others idle (0: as many as `http_threads`; 1: none, each
    /// request's rows stay on its HTTP thread). Bodies under 64 KB are parsed, and requests under
    /// 128 rows extracted and answered, on their HTTP thread.
    pub parse_threads: usize,
    /// How far below the engine the front end's threads run (Linux nice, 0–19): the HTTP/gRPC
    /// runtime, the row threads and the Kafka source. With every core busy the engine's one
    /// batcher and its GPU workers then go first — the front end waits on them anyway; on one
    /// core shared by two HTTP threads and the batcher, 5 halved the server's own p99
    /// (docs/benchmarks.md). Idle cores: no effect. A version's load and self-test run on the
    /// runtime's blocking threads, so they yield to serving too.
    pub front_end_nice: u8,
    /// File holding the bearer token of `/admin/*` (or `PIXGUARD_ADMIN_TOKEN`); with neither, the
    /// admin routes are off. Never the token itself: config files get copied and logged.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: "0.0.0.0".into(),
            port: 8080,
            grpc_port: 8081,
            body_limit_bytes: 1 << 20,
            max_transactions_per_request: 1_000,
            max_concurrent_requests: 256,
            grace_period_ms: 0,
            drain_timeout_ms: 30_000,
            http_header_timeout_ms: 10_000,
            http_idle_timeout_ms: 620_000,
            http_max_connection_age_ms: 0,
            grpc_preface_timeout_ms: 10_000,
            grpc_idle_timeout_ms: 620_000,
            grpc_max_connection_age_ms: 0,
            grpc_max_connection_age_grace_ms: 30_000,
            grpc_keepalive_time_ms: 0,
            grpc_keepalive_timeout_ms: 20_000,
            http_threads: 0,
            parse_threads: 0,
            front_end_nice: 5,
            admin_token_file: None,
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA if it initialises, else the CPU (logged and exported as a metric).
    Auto,
    /// CUDA or refuse to start.
    Cuda,
    /// The CPU.
    Cpu,
}

/// Micro-batcher and device workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Most rows in one batch.
    pub max_batch_size: usize,
    /// While every worker is busy, a batch stops growing once its oldest row has waited this long.
    pub max_queue_delay_us: u64,
    /// Most rows waiting; beyond it requests get 429.
    pub max_queue_rows: usize,
    /// Device workers, each with its own model replica.
    pub workers: usize,
    /// CPU threads per worker (0: one).
    pub threads_per_worker: usize,
    /// Where to run the model.
    pub device: DeviceChoice,
    /// On a GPU, replay the forward as CUDA graphs captured per batch-size bucket (powers of two;
    /// a batch is padded to its bucket) instead of launching its kernels one by one. Off until
    /// measured on a GPU (docs/gpu.md); ignored on the CPU.
    pub cuda_graphs: bool,
    /// Deadline of a request that sets none (`x-request-timeout-ms`), in milliseconds.
    pub default_deadline_ms: u64,
    /// Test-only: every batch sleeps this long before computing, to make queues build up.
    pub test_worker_delay_us: u64,
    /// Test-only: the canary's batches compute this much longer (a slower model, counted as
    /// compute time).
    pub test_canary_delay_us: u64,
    /// Set by the server, never read from a file: this engine's batches compute this much longer
    /// (the canary's, from `test_canary_delay_us`).
    #[serde(skip)]
    pub test_compute_delay_us: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_size: 512,
            max_queue_delay_us: 500,
            max_queue_rows: 16_384,
            workers: 1,
            threads_per_worker: 1,
            device: DeviceChoice::Auto,
            cuda_graphs: false,
            default_deadline_ms: 1_000,
            test_worker_delay_us: 0,
            test_canary_delay_us: 0,
            test_compute_delay_us: 0,
        }
    }
}

/// Which model to serve, where it comes from, and how it is followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A package folder, `gs://bucket/prefix`, `models:/<name>@<alias>` or `models:/<name>/<version>`.
    pub source: String,
    /// MLflow tracking server for `models:/` sources (absent: `MLFLOW_TRACKING_URI`).
    pub registry_uri: Option<String>,
    /// Where remote packages are downloaded, one folder per name/version/digest.
    pub cache_dir: PathBuf,
    /// Seconds between checks of the source for a new version (0: never; `POST /admin/model/reload`
    /// still reloads).
    pub poll_interval_s: u64,
    /// When the registry or bucket cannot be reached at start, serve the last version this cache
    /// loaded from the same source instead of exiting.
    pub use_cached_on_error: bool,
    /// A version that answers `canary_fraction` of live requests (absent: none).
    pub canary: Option<String>,
    /// Share of requests the canary answers, 0 to 1 (`POST /admin/canary` changes it live).
    pub canary_fraction: f64,
    /// The canary's share is set to 0 when its HOLD+REJECT share over 10 minutes is more than this
    /// many times the champion's, or less than its inverse (0: no guard).
    pub canary_max_stop_ratio: f64,
    /// Rows each version must have scored in those 10 minutes before the guard compares them
    /// (and requests each must have answered in the last minute before their latencies are).
    pub canary_guard_min_rows: u64,
    /// The canary's share is also set to 0 when its engine p99 (queue + compute, last minute) is
    /// more than this many times the champion's and over 1 ms slower (0: no latency guard).
    pub canary_max_latency_ratio: f64,
    /// The canary's share is also set to 0 when the share of its requests that failed (queue
    /// full, past their deadline, model or device error, or refused for an input its signature
    /// does not take; last minute) is more than this above the champion's (0: no error guard).
    pub canary_max_error_share: f64,
    /// A challenger scored on a sampled copy of live rows, off the critical path (absent: none).
    pub shadow: Option<String>,
    /// Share of requests the challenger also scores, 0 to 1.
    pub shadow_fraction: f64,
    /// JSONL file every champion/challenger decision disagreement is appended to (absent: none).
    pub shadow_log: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            source: "models/pix-fraud".into(),
            registry_uri: None,
            cache_dir: PathBuf::from(".pixguard/models"),
            poll_interval_s: 30,
            use_cached_on_error: false,
            canary: None,
            canary_fraction: 0.0,
            canary_max_stop_ratio: 3.0,
            canary_guard_min_rows: 1000,
            canary_max_latency_ratio: 3.0,
            canary_max_error_share: 0.01,
            shadow: None,
            shadow_fraction: 0.0,
            shadow_log: None,
        }
    }
}

/// Decision threshold overrides (absent: the package's own) and reason codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// Lowest score held for review.
    pub hold: Option<f64>,
    /// Lowest score rejected.
    pub reject: Option<f64>,
    /// Reasons on every HOLD and REJECT, and on any answer whose request asks (`explain`); false:
    /// never. Needs a package that describes its explanations.
    pub reasons: bool,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        DecisionsConfig {
            hold: None,
            reject: None,
            reasons: true,
        }
    }
}

/// Scoring from Kafka: topics, group, and librdkafka settings passed through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Run the Kafka consumer beside the HTTP front ends (`pixguard stream` sets it).
    pub enabled: bool,
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Transactions to score (JSON values, as `/v1/score` takes them).
    pub input_topic: String,
    /// Scores (key: end_to_end_id).
    pub output_topic: String,
    /// Messages that cannot be scored, with Kafka Connect's error headers.
    pub dead_letter_topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Most messages scored in one call (the engine batches further).
    pub max_batch: usize,
    /// Messages received and not yet handed to the producer beyond which the stream stops taking
    /// more (and pauses its partitions after a second of that; resumed below half).
    pub max_in_flight: usize,
    /// How often finished offsets are committed, ms.
    pub commit_interval_ms: u64,
    /// How long a revoked partition's work in flight may take to finish before it is given up, ms.
    pub revoke_timeout_ms: u64,
    /// MiB of memory touched before consuming, and freed memory kept rather than handed back to
    /// the OS, so messages do not wait for page faults (`crate::memory`); 0: neither.
    pub prefault_mib: usize,
    /// librdkafka properties passed through (SASL/SSL for managed Kafka), e.g.
    /// `security.protocol: SASL_SSL`; `_` stands for `.` (environment overrides cannot hold `.`).
    pub librdkafka: Librdkafka,
}

/// librdkafka properties as configured; its `Debug` hides the values of secrets (passwords, OAuth
/// secrets, private keys), so the `effective configuration` debug log does not carry them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Librdkafka(pub std::collections::BTreeMap<String, serde_yaml_ng::Value>);

impl Librdkafka {
    /// Whether a property's value is a secret: `sasl.password`, `ssl.key.password`,
    /// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`,
    /// `sasl.oauthbearer.config` (its text may hold a secret), with `_` or `.` between words.
    pub fn is_secret(property: &str) -> bool {
        let p = property.to_ascii_lowercase().replace('.', "_");
        ["password", "secret", "key_pem", "oauthbearer_config"]
            .iter()
            .any(|word| p.contains(word))
    }
}

impl std::ops::Deref for Librdkafka {
    type Target = std::collections::BTreeMap<String, serde_yaml_ng::Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Librdkafka {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for Librdkafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if Self::is_secret(k) {
                map.entry(k, &"<hidden>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: false,
            brokers: "127.0.0.1:9092".into(),
            input_topic: "pix.transactions".into(),
            output_topic: "pix.scores".into(),
            dead_letter_topic: "pix.transactions.dlq".into(),
            group_id: "pixguard".into(),
            max_batch: 512,
            max_in_flight: 32_768,
            commit_interval_ms: 200,
            revoke_timeout_ms: 10_000,
            prefault_mib: 64,
            librdkafka: Librdkafka::default(),
        }
    }
}

/// Every decision an API answered, as one record per transaction on a Kafka topic: what a fraud
/// team joins its confirmed frauds (MED claims, chargebacks) to, and what an auditor reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// The topic (key: `end_to_end_id`); empty: no decision log.
    pub topic: String,
    /// Bootstrap servers; empty: `stream.brokers`.
    pub brokers: String,
    /// Fraction of requests whose decisions are logged (every row of a request taken).
    pub sample_ratio: f64,
    /// Each record also carries what was scored: the transaction as /v1 takes it, or the feature
    /// row a caller sent. Personal data (payer and payee keys): off unless asked for.
    pub include_inputs: bool,
    /// Records waiting for the producer beyond which a request's records are dropped and counted.
    pub max_queue_records: usize,
    /// librdkafka producer properties, over `stream.librdkafka` (the same cluster's credentials).
    pub librdkafka: Librdkafka,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            topic: String::new(),
            brokers: String::new(),
            sample_ratio: 1.0,
            include_inputs: false,
            max_queue_records: 100_000,
            librdkafka: Librdkafka::default(),
        }
    }
}

/// Model monitoring (docs/monitoring.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Count every scored row's features, score and decision per version (off: no monitor thread,
    /// no copy per batch).
    pub enabled: bool,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig { enabled: true }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line (Google Cloud Logging reads `severity` and `message`).
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Line format.
    pub format: LogFormat,
    /// tracing filter, e.g. `info` or `pixguard=debug`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Distributed traces over OTLP (docs/serving.md, "Traces"). The OpenTelemetry SDK variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, …) set these keys too (`config::otel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// Where spans go; empty: no traces. OTLP/gRPC: the collector (`http://otel-collector:4317`);
    /// OTLP/HTTP: the traces URL itself (`http://otel-collector:4318/v1/traces`).
    pub otlp_endpoint: String,
    /// How spans are sent: `grpc` or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// `gzip` compresses each export; `none` does not.
    pub compression: OtlpCompression,
    /// Share of traces this server starts (or, with `parent_based: false`, of all requests).
    pub sample_ratio: f64,
    /// Follow a caller's sampling decision when it sent a `traceparent` (OpenTelemetry's default
    /// `parentbased_traceidratio`); false decides every request by `sample_ratio` on its trace id
    /// (`traceidratio`).
    pub parent_based: bool,
    /// The spans' `service.name`.
    pub service_name: String,
    /// More resource attributes on every span (`k8s.pod.name`, `deployment.environment.name`, …).
    pub resource_attributes: std::collections::BTreeMap<String, String>,
    /// Finished spans (a request's or message's, with its children) waiting for export; beyond it
    /// new ones are dropped and counted (OpenTelemetry's batch span processor's `max_queue_size`).
    pub max_queue_size: usize,
    /// Spans per export call at most.
    pub max_export_batch_size: usize,
    /// Queued spans are sent at least this often (and whenever a batch's worth is waiting).
    pub export_interval_ms: u64,
    /// One export call's connect and answer limit.
    pub export_timeout_ms: u64,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// `opentelemetry.proto.collector.trace.v1.TraceService/Export` over gRPC.
    #[serde(rename = "grpc")]
    Grpc,
    /// The same message, binary protobuf, POSTed over HTTP.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Compression of OTLP exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// Sent as encoded.
    None,
    /// gzip (gRPC's `grpc-encoding`, HTTP's `Content-Encoding`).
    Gzip,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            compression: OtlpCompression::None,
            sample_ratio: 0.01,
            parent_based: true,
            service_name: "pixguard".into(),
            resource_attributes: std::collections::BTreeMap::new(),
            max_queue_size: 8192,
            max_export_batch_size: 512,
            export_interval_ms: 1000,
            export_timeout_ms: 10_000,
        }
    }
}

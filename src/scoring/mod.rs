//! The one path of a payment, shared by every front end (/v1, OIP over HTTP and gRPC, and the
//! Kafka, Parquet and registry front ends to come). A front end only translates into it and out of
//! it:
//!
//! 1. [`Scoring::admit`] — refused at once while draining or beyond `server.max_concurrent_requests`
//!    (429 / RESOURCE_EXHAUSTED); otherwise the request is in flight until its [`Admission`] drops.
//! 2. The front end decodes its wire form (`crate::protocol`) into a [`Payload`]: validated
//!    transactions, or feature rows computed by the caller. Too many rows are refused before any
//!    element is decoded.
//! 3. [`Scoring::score`] — features are extracted here (the package's spec, so training and serving
//!    agree), the rows join the engine's bounded queue with the request's deadline, the micro-batcher
//!    packs them with other requests' rows, a device worker computes them, and each score gets its
//!    decision under the thresholds in force.
//! 4. The front end renders the [`Scores`] or the [`ScoreError`], whose status, gRPC code,
//!    Retry-After and metric label are defined once, in [`error`].
//! 5. [`Admission::finish`] records the outcome; the guard's drop records the duration.

mod admission;
pub mod error;
pub mod metrics;
pub mod shadow;

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use admission::{Admission, Api};
pub use error::{Code, GrpcCode, ScoreError};

use crate::config::Config;
use crate::engine::{Engine, Lane};
use crate::features::{FeatureBatch, FeatureExtractor};
use crate::model::explain::Reasons;
use crate::model::{Decision, ModelPackage, Thresholds};
use crate::monitoring::Monitor;
use crate::protocol::oip::{Answers, Output, Signature};
use crate::protocol::v1::{ModelRef, ReasonOut};
use crate::protocol::{Payload, ProtocolError};
use crate::transaction::Transaction;

/// Bounds every request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most rows one request may carry.
    pub max_rows_per_request: usize,
    /// Most requests in flight at once (0: no bound).
    pub max_concurrent_requests: usize,
    /// Deadline of a request that sets none.
    pub default_deadline: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_rows_per_request: config.server.max_transactions_per_request,
            max_concurrent_requests: config.server.max_concurrent_requests,
            default_deadline: Duration::from_millis(config.engine.default_deadline_ms),
        }
    }
}

/// Where the server is in its life: loading, serving, draining, refusing.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
    refusing: AtomicBool,
}

impl Lifecycle {
    /// The model is loaded and warmed up.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// SIGTERM seen: readiness fails, requests are still taken.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Grace period over: new requests are refused (503 / UNAVAILABLE).
    pub fn refuse_new(&self) {
        self.refusing.store(true, Ordering::Release);
    }

    /// Whether the model is loaded and warmed up.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether SIGTERM was seen.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether new requests are refused.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }
}

/// Scores of one request, with their decisions and where the time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// One probability per row, in request order.
    pub scores: Vec<f32>,
    /// The decision for each score.
    pub decisions: Vec<Decision>,
    /// Per row, its reasons when it got them (see [`Scoring::reason`]); empty when none did.
    pub reasons: Vec<Option<Reasons>>,
    /// Enqueue to dispatch of the request's last part, µs.
    pub queue_us: u64,
    /// Longest compute of the batches the request rode in, µs.
    pub compute_us: u64,
}

impl Scores {
    /// The OIP outputs' rows, with `reasons` from [`Scoring::reason_texts`].
    pub fn answers<'a>(&'a self, reasons: &'a [String]) -> Answers<'a> {
        Answers {
            scores: &self.scores,
            decisions: &self.decisions,
            reasons,
        }
    }
}

/// The served model (swappable) and the bounds and state every front end shares.
pub struct Scoring {
    served: ArcSwap<Served>,
    shadow: Option<Arc<shadow::Shadow>>,
    engine_metrics: Arc<crate::engine::Metrics>,
    limits: Limits,
    /// Front-end request metrics.
    pub metrics: metrics::Metrics,
    /// Ready, draining, refusing.
    pub lifecycle: Lifecycle,
}

impl Scoring {
    /// The scoring path, serving `served` first, with a challenger in the shadow when given.
    pub fn new(
        served: Served,
        shadow: Option<shadow::Shadow>,
        config: &Config,
    ) -> anyhow::Result<Self> {
        Ok(Scoring {
            engine_metrics: served.engine().metrics().clone(),
            served: ArcSwap::from_pointee(served),
            shadow: shadow.map(Arc::new),
            limits: Limits::from_config(config),
            metrics: metrics::Metrics::new()?,
            lifecycle: Lifecycle::default(),
        })
    }

    /// The version serving now. A request takes it once and keeps it to its end: its rows are
    /// extracted, computed, decided and named by that one version, whatever swaps meanwhile.
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Where the champion lives: a swap stores the next version here; the one it replaces
    /// finishes the batches it already has and is freed when its last request lets go of it.
    pub fn champion(&self) -> &ArcSwap<Served> {
        &self.served
    }

    /// The challenger scored in the shadow, if any.
    pub fn shadow(&self) -> Option<&Arc<shadow::Shadow>> {
        self.shadow.as_ref()
    }

    /// Scores what a request carries on `served` (the version the request took); a sampled copy
    /// goes to the challenger afterwards, off the answer's path.
    pub async fn score(
        &self,
        served: &Served,
        payload: Payload,
        deadline: Instant,
        explain: bool,
    ) -> Result<Scores, ScoreError> {
        let ticket = self.shadow.as_ref().and_then(|s| s.ticket(served));
        let copy = ticket.as_ref().map(|_| payload.clone());
        let scores = served.score(payload, deadline, explain).await?;
        if let (Some(ticket), Some(copy)) = (ticket, copy) {
            ticket.offer(copy, served, &scores);
        }
        Ok(scores)
    }

    /// [`Scoring::score`] for validated transactions the caller keeps, in the engine's `lane`.
    pub async fn score_transactions(
        &self,
        served: &Served,
        txs: &[Transaction],
        deadline: Instant,
        explain: bool,
        lane: Lane,
    ) -> Result<Scores, ScoreError> {
        let ticket = self.shadow.as_ref().and_then(|s| s.ticket(served));
        let scores = served
            .score_transactions(txs, deadline, explain, lane)
            .await?;
        if let Some(ticket) = ticket {
            ticket.offer(Payload::Transactions(txs.to_vec()), served, &scores);
        }
        Ok(scores)
    }

    /// What every engine records (all versions share one set of metrics).
    pub fn engine_metrics(&self) -> &Arc<crate::engine::Metrics> {
        &self.engine_metrics
    }

    /// The bounds requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The instant a request's rows must reach a worker by: its own timeout, or the default.
    pub fn deadline(&self, timeout: Option<Duration>) -> Instant {
        Instant::now() + timeout.unwrap_or(self.limits.default_deadline)
    }

    /// Why a device can take no more work, if one cannot: liveness fails with it.
    pub fn device_failure(&self) -> Option<&str> {
        self.engine_metrics.device_failure.get().map(String::as_str)
    }

    /// Liveness: fails only when a device can take no more work, which a restart cures.
    pub fn live(&self) -> bool {
        self.device_failure().is_none()
    }

    /// Readiness: loaded, warmed up, not draining, every device usable.
    pub fn takes_traffic(&self) -> bool {
        self.lifecycle.ready() && !self.lifecycle.draining() && self.live()
    }
}

/// One version of the model as it serves: its feature spec, thresholds, signature, reason codes
/// and its own engine (batcher and replicas). Swapping versions swaps the whole of it, so a
/// request never mixes one version's features with another's weights or thresholds.
pub struct Served {
    extractor: FeatureExtractor,
    thresholds: Thresholds,
    model: ModelRef,
    signature: Signature,
    engine: Arc<Engine>,
    monitor: Option<Arc<Monitor>>,
    limits: Limits,
    /// Reason codes by group, when the package explains its scores and reasons are on.
    reason_codes: Option<Vec<String>>,
    /// Where it came from and how it was checked.
    pub origin: Origin,
}

/// Where a served version came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Origin {
    /// The configured source (`models:/pix-fraud@production`, a folder, `gs://…`).
    pub source: String,
    /// Where its files were (`mlflow-artifacts:/…`, `gs://…`, a folder).
    pub location: String,
    /// What changes exactly when the package changes (registry version or MLmodel digest).
    pub identity: String,
    /// SHA-256 of the weights.
    pub weights_sha256: String,
    /// Largest |score − golden score| of the self-test on the serving device.
    pub self_test_max_error: Option<f64>,
    /// When it started serving (RFC 3339).
    pub loaded_at: String,
}

impl Served {
    /// `package` served by a started `engine`, named `name:version` (the registry's version when
    /// it came from one), deciding under `thresholds` ([`Served::thresholds_in_force`]).
    pub fn new(
        package: &ModelPackage,
        version: String,
        engine: Arc<Engine>,
        monitor: Option<Arc<Monitor>>,
        thresholds: Thresholds,
        config: &Config,
        origin: Origin,
    ) -> anyhow::Result<Self> {
        let features = package.config.features.clone();
        let reason_codes = package
            .config
            .explanations
            .as_ref()
            .filter(|_| config.decisions.reasons)
            .map(|e| e.groups.iter().map(|g| g.code.clone()).collect());
        Ok(Served {
            reason_codes,
            signature: Signature::new(&features),
            extractor: FeatureExtractor::new(features)?,
            thresholds,
            model: ModelRef {
                name: package.config.name.clone(),
                version,
            },
            engine,
            monitor,
            limits: Limits::from_config(config),
            origin,
        })
    }

    /// The package's thresholds, or `config.decisions`' where it sets them; refused unless
    /// 0 < hold < reject < 1.
    pub fn thresholds_in_force(
        package: &ModelPackage,
        config: &Config,
    ) -> anyhow::Result<Thresholds> {
        let mut thresholds = package.config.thresholds;
        if let Some(hold) = config.decisions.hold {
            thresholds.hold = hold;
        }
        if let Some(reject) = config.decisions.reject {
            thresholds.reject = reject;
        }
        anyhow::ensure!(
            0.0 < thresholds.hold && thresholds.hold < thresholds.reject && thresholds.reject < 1.0,
            "decisions: hold {} and reject {} must satisfy 0 < hold < reject < 1",
            thresholds.hold,
            thresholds.reject
        );
        Ok(thresholds)
    }

    /// This version's monitor (feature and score drift), unless monitoring is off.
    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.as_ref()
    }

    /// The model every answer names.
    pub fn model(&self) -> &ModelRef {
        &self.model
    }

    /// The model's Open Inference Protocol signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The engine the rows go to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The package's feature extractor.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// The thresholds decisions are made under.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Refuses a model name (or version) this server does not serve.
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ScoreError> {
        if name != self.model.name {
            return Err(ScoreError::UnknownModel(format!("unknown model '{name}'")));
        }
        match version {
            Some(v) if !v.is_empty() && v != self.model.version => {
                Err(ScoreError::UnknownModel(format!(
                    "unknown version '{v}' of model '{name}' (serving '{}')",
                    self.model.version
                )))
            }
            _ => Ok(()),
        }
    }

    /// Scores what a request carries; with `explain`, every row gets its reasons, not only the
    /// held and rejected ones.
    pub async fn score(
        &self,
        payload: Payload,
        deadline: Instant,
        explain: bool,
    ) -> Result<Scores, ScoreError> {
        match payload {
            Payload::Transactions(txs) => {
                self.score_transactions(&txs, deadline, explain, Lane::Interactive)
                    .await
            }
            Payload::Features(batch) => {
                self.score_features(batch, deadline, explain, Lane::Interactive)
                    .await
            }
        }
    }

    /// Scores validated transactions, extracting their features with the package's spec.
    pub async fn score_transactions(
        &self,
        txs: &[Transaction],
        deadline: Instant,
        explain: bool,
        lane: Lane,
    ) -> Result<Scores, ScoreError> {
        self.check_rows(txs.len())?;
        self.score_features(self.extractor.extract(txs), deadline, explain, lane)
            .await
    }

    /// Scores feature rows (in the package's order, checked against its tables).
    pub async fn score_features(
        &self,
        batch: FeatureBatch,
        deadline: Instant,
        explain: bool,
        lane: Lane,
    ) -> Result<Scores, ScoreError> {
        self.check_rows(batch.rows)?;
        // Reasons from the HOLD threshold up (`Thresholds::decide`'s own comparison), or for all.
        let explain_from = self.reason_codes.as_ref().map(|_| {
            if explain {
                f64::NEG_INFINITY
            } else {
                self.thresholds.hold
            }
        });
        let scored = self
            .engine
            .score_in(lane, batch, deadline, explain_from)
            .await?;
        let decisions = scored
            .scores
            .iter()
            .map(|&s| self.thresholds.decide(f64::from(s)))
            .collect();
        Ok(Scores {
            scores: scored.scores,
            decisions,
            reasons: scored.reasons,
            queue_us: scored.queue_us,
            compute_us: scored.compute_us,
        })
    }

    /// Row `row`'s reasons as (code, contribution), largest first; `None` when it got none.
    pub fn reason<'a>(&'a self, scores: &'a Scores, row: usize) -> Option<Vec<ReasonOut<'a>>> {
        let codes = self.reason_codes.as_ref()?;
        let reasons = scores.reasons.get(row)?.as_ref()?;
        Some(
            reasons
                .iter()
                .map(|r| ReasonOut {
                    code: codes.get(usize::from(r.group)).map_or("", String::as_str),
                    contribution: r.contribution,
                })
                .collect(),
        )
    }

    /// Each row's reasons as JSON text (`[]` when it got none) for the OIP `reasons` output, when
    /// `outputs` selects it; no text is built otherwise.
    pub fn reason_texts(&self, scores: &Scores, outputs: &[(Output, bool)]) -> Vec<String> {
        if !outputs.iter().any(|(o, _)| *o == Output::Reasons)
            || scores.reasons.iter().all(Option::is_none)
        {
            // Rows past the end of the list render as `[]`: most answers need no allocation.
            return Vec::new();
        }
        (0..scores.scores.len())
            .map(|row| {
                let reasons = self.reason(scores, row).unwrap_or_default();
                // A list of plain structs of a string and a float always serialises.
                serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into())
            })
            .collect()
    }

    fn check_rows(&self, rows: usize) -> Result<(), ScoreError> {
        let limit = self.limits.max_rows_per_request;
        if rows > limit {
            return Err(ProtocolError::TooManyRows {
                rows,
                limit,
                field: None,
            }
            .into());
        }
        Ok(())
    }
}

impl Drop for Served {
    /// The last request on this version has finished: stop its engine (its queue is empty) and
    /// free its replicas, off the async runtime.
    fn drop(&mut self) {
        let engine = self.engine.clone();
        let _ = std::thread::Builder::new()
            .name("pixguard-retire".into())
            .spawn(move || engine.shutdown());
    }
}

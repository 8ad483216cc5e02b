//! The one path of a payment, shared by every front end (/v1, OIP over HTTP and gRPC, and the
//! Kafka, Parquet and registry front ends to come). A front end only translates into it and out of
//! it:
//!
//! 1. [`Scoring::admit`] — refused at once while draining or beyond `server.max_concurrent_requests`
//!    (429 / RESOURCE_EXHAUSTED); otherwise the request is in flight until its [`Admission`] drops.
//! 2. The front end decodes its wire form (`crate::protocol`) into a [`Payload`]: validated
//!    transactions, or feature rows computed by the caller. Too many rows are refused before any
//!    element is decoded.
//! 3. [`Admission::score`] ([`Scoring::score`] for the request) — features are extracted here (the
//!    package's spec, so training and serving agree), the rows join the engine's bounded queue with
//!    the request's deadline, the micro-batcher packs them with other requests' rows, a device
//!    worker computes them, and each score gets its decision under the thresholds in force; the
//!    span of a traced request notes them, and a logged request's decisions go to the
//!    [`decision_log`].
//! 4. The front end renders the [`Scores`] or the [`ScoreError`], whose status, gRPC code,
//!    Retry-After and metric label are defined once, in [`error`].
//! 5. [`Admission::finish`] records the outcome; the guard's drop records the duration.

mod admission;
pub mod canary;
pub mod decision_log;
pub mod error;
pub mod metrics;
pub mod sample;
mod served;
pub mod shadow;

use std::sync::Arc;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use admission::{Admission, Api, describe};
pub use error::{Code, GrpcCode, ScoreError};
pub use served::{Origin, Scores, Served};

use crate::config::Config;
use crate::engine::Lane;
use crate::monitoring::Role;
use crate::protocol::Payload;
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

/// The served model (swappable) and the bounds and state every front end shares.
pub struct Scoring {
    served: ArcSwap<Served>,
    canary: Option<canary::Canary>,
    shadow: Option<Arc<shadow::Shadow>>,
    engine_metrics: Arc<crate::engine::Metrics>,
    limits: Limits,
    tracer: Option<Arc<crate::traces::Tracer>>,
    decision_log: Option<Arc<decision_log::DecisionLog>>,
    /// Front-end request metrics.
    pub metrics: metrics::Metrics,
    /// Ready, draining, refusing.
    pub lifecycle: Lifecycle,
}

impl Scoring {
    /// The scoring path, serving `served` first, with a canary answering its share and a
    /// challenger in the shadow when given.
    pub fn new(
        served: Served,
        canary: Option<canary::Canary>,
        shadow: Option<shadow::Shadow>,
        config: &Config,
    ) -> anyhow::Result<Self> {
        Ok(Scoring {
            engine_metrics: served.engine().metrics().clone(),
            served: ArcSwap::from_pointee(served),
            canary,
            shadow: shadow.map(Arc::new),
            limits: Limits::from_config(config),
            tracer: crate::traces::Tracer::start(&config.traces)?,
            decision_log: decision_log::DecisionLog::start(config)?,
            metrics: metrics::Metrics::new()?,
            lifecycle: Lifecycle::default(),
        })
    }

    /// The champion serving now: the version the server describes (metadata, model config).
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// The version that answers this request: the canary for its share, else the champion. A
    /// request takes it once and keeps it to its end: its rows are extracted, computed, decided
    /// and named by that one version, whatever swaps meanwhile.
    pub fn pick(&self) -> Arc<Served> {
        let champion = self.served();
        match &self.canary {
            Some(canary) => canary.answer(&champion).unwrap_or(champion),
            None => champion,
        }
    }

    /// [`Scoring::pick`] for a request that names its model, and maybe a version (the Open
    /// Inference Protocol's `/versions/{v}`): a named version is answered by whichever of the
    /// champion and the canary serves it ([`Scoring::named`]).
    pub fn pick_named(&self, name: &str, version: Option<&str>) -> Result<Arc<Served>, ScoreError> {
        if unnamed(version) {
            let served = self.pick();
            served.check_model(name, None)?;
            return Ok(served);
        }
        let served = self.named(name, version)?;
        if let (Some(canary), Role::Canary) = (&self.canary, served.role()) {
            canary.count();
        }
        Ok(served)
    }

    /// The version a request for model `name` describes or names (`version`; none: the
    /// champion): the champion's or the canary's, or refused as unknown.
    pub fn named(&self, name: &str, version: Option<&str>) -> Result<Arc<Served>, ScoreError> {
        let champion = self.served();
        if let (Some(v), Some(canary)) = (version.filter(|v| !v.is_empty()), &self.canary)
            && v != champion.model().version
        {
            let served = canary.slot().load_full();
            if served.model().name == name && served.model().version == v {
                return Ok(served);
            }
        }
        champion.check_model(name, version)?;
        Ok(champion)
    }

    /// The slots answering requests: the champion's, then the canary's when there is one.
    pub fn serving(&self) -> Vec<Arc<Served>> {
        let canary = self.canary.as_ref().map(|c| c.slot().load_full());
        [Some(self.served()), canary]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The versions serving model `name`: the champion's, then the canary's when it differs.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let mut versions = Vec::new();
        for served in self.serving() {
            let model = served.model();
            if model.name == name && !versions.contains(&model.version) {
                versions.push(model.version.clone());
            }
        }
        versions
    }

    /// The canary answering a share of requests, if any.
    pub fn canary(&self) -> Option<&canary::Canary> {
        self.canary.as_ref()
    }

    /// Rows waiting in the engines that answer (the champion's and the canary's): what the
    /// queue-depth gauge, and the autoscaler on it, read.
    pub fn queued_rows(&self) -> usize {
        let canary = self.canary.as_ref();
        self.served().engine().queued_rows()
            + canary.map_or(0, |c| c.slot().load().engine().queued_rows())
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
    /// of what the champion answers goes to the challenger afterwards, off the answer's path.
    /// `logged`: the request's decisions go to the decision log, and so do its challenger's.
    pub async fn score(
        &self,
        served: &Served,
        payload: Payload,
        deadline: Instant,
        explain: bool,
        logged: Option<decision_log::Answered<'_>>,
    ) -> Result<Scores, ScoreError> {
        let ticket = self.ticket(served);
        let copy = ticket.as_ref().map(|_| payload.clone());
        let scores = served.score(payload, deadline, explain).await?;
        if let (Some(ticket), Some(copy)) = (ticket, copy) {
            let pass = self.shadow_pass(logged, (&copy).into());
            ticket.offer(copy, served, &scores, pass);
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
        logged: Option<decision_log::Answered<'_>>,
    ) -> Result<Scores, ScoreError> {
        let ticket = self.ticket(served);
        let scores = served
            .score_transactions(txs, deadline, explain, lane)
            .await?;
        if let Some(ticket) = ticket {
            let pass = self.shadow_pass(logged, decision_log::Rows::Transactions(txs));
            ticket.offer(Payload::Transactions(txs.to_vec()), served, &scores, pass);
        }
        Ok(scores)
    }

    /// The shadow's ticket for a request `served` answers: only the champion's answers are
    /// compared with the challenger's (the agreement matrix is champion by challenger).
    fn ticket(&self, served: &Served) -> Option<shadow::Ticket> {
        let shadow = self.shadow.as_ref()?;
        (served.role() == Role::Champion)
            .then(|| shadow.ticket(served))
            .flatten()
    }

    /// A logged request's pass for its challenger's decisions.
    fn shadow_pass(
        &self,
        logged: Option<decision_log::Answered<'_>>,
        rows: decision_log::Rows<'_>,
    ) -> Option<decision_log::ShadowPass> {
        Some(self.decision_log.as_ref()?.shadow_pass(rows, logged?))
    }

    /// What every engine records (all versions share one set of metrics).
    pub fn engine_metrics(&self) -> &Arc<crate::engine::Metrics> {
        &self.engine_metrics
    }

    /// The tracer, when traces are on (`traces.otlp_endpoint`).
    pub fn tracer(&self) -> Option<&Arc<crate::traces::Tracer>> {
        self.tracer.as_ref()
    }

    /// The decision log, when it is on (`decision_log.topic`).
    pub fn decision_log(&self) -> Option<&Arc<decision_log::DecisionLog>> {
        self.decision_log.as_ref()
    }

    /// The bounds requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The instant a request's rows must reach a worker by: its own timeout, or the default, both
    /// counted from `arrived` (its head), so time spent reading and decoding it is not given back.
    pub fn deadline(&self, arrived: Instant, timeout: Option<Duration>) -> Instant {
        arrived + timeout.unwrap_or(self.limits.default_deadline)
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

/// Whether a request names no version (none given, or empty, as the Open Inference Protocol's
/// clients send): the canary then answers for its share, else the champion.
fn unnamed(version: Option<&str>) -> bool {
    version.is_none_or(str::is_empty)
}

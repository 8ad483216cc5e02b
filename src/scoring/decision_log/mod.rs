//! The decision log: every decision an API answered, one JSON record per transaction on a Kafka
//! topic (`decision_log.topic`; docs/serving.md, "Decision log"). It is what a fraud team joins
//! its confirmed frauds to (MED claims and chargebacks arrive days later, keyed by the payment's
//! `end_to_end_id`) to measure the model in production and to train the next one, and what an
//! auditor reads to learn which version decided a payment, with which score and reasons.
//!
//! A record has the shape of the Kafka source's score record (`stream.output_topic`), so one
//! consumer reads both; `source` says which API answered instead of which message.
//!
//! Off the answer's path, as traces are: a sampled request copies its ids (and, with
//! `include_inputs`, what it scored) and its scores into one entry on an unbounded channel whose
//! rows are counted against `max_queue_records`; a thread of its own renders the records and
//! hands them to librdkafka. A payment never waits for the log, and the log never fails one: a
//! full queue drops the request's records and counts them, a broker that does not take them within
//! librdkafka's `message.timeout.ms` counts them as failed.

mod producer;
mod record;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::features::{FeatureBatch, FeatureSpec};
use crate::model::Decision;
use crate::model::explain::Reasons;
use crate::monitoring::Role;
use crate::protocol::Payload;
use crate::protocol::v1::ModelRef;
use crate::traces::context::{Parent, SpanId, TraceId};
use crate::transaction::{EndToEndId, Transaction};

use super::{Api, Scores};

/// Records delivered, failed and dropped: `pixguard_decision_log_records_total{outcome}`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Handed to librdkafka and not acknowledged (a broker down past `message.timeout.ms`, a
    /// topic that does not exist, a record over the broker's size limit), or still unsent when
    /// the server stopped.
    pub failed: AtomicU64,
    /// Never queued: `max_queue_records` were already waiting.
    pub dropped: AtomicU64,
    /// Rows waiting to be rendered and handed to librdkafka.
    pub queued: AtomicUsize,
}

/// What a version's records say of it: built once when it is loaded, shared by its entries (an
/// entry holds this, not the version, so a backlog never keeps a swapped-out engine alive).
#[derive(Debug)]
pub struct Version {
    model: ModelRef,
    model_version: String,
    /// `canary` or `challenger`; `None` for the champion.
    role: Option<&'static str>,
    reason_codes: Option<Vec<String>>,
    numeric: Vec<String>,
    categorical: Vec<String>,
}

impl Version {
    /// `model`'s names, its role (named in its records unless it is the champion), its reason
    /// codes (when it gives reasons) and its feature columns' names.
    pub fn new(
        model: &ModelRef,
        role: Role,
        reason_codes: Option<&[String]>,
        spec: &FeatureSpec,
    ) -> Version {
        Version {
            model: model.clone(),
            model_version: format!("{}:{}", model.name, model.version),
            role: role.in_records(),
            reason_codes: reason_codes.map(<[String]>::to_vec),
            numeric: spec.numeric.iter().map(|f| f.name.clone()).collect(),
            categorical: spec.categorical.iter().map(|f| f.name.clone()).collect(),
        }
    }
}

/// The rows a request scored, as the front end has them.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// Validated transactions.
    Transactions(&'a [Transaction]),
    /// Feature rows computed by the caller.
    Features(&'a FeatureBatch),
}

impl<'a> From<&'a Payload> for Rows<'a> {
    fn from(payload: &'a Payload) -> Rows<'a> {
        match payload {
            Payload::Transactions(txs) => Rows::Transactions(txs),
            Payload::Features(batch) => Rows::Features(batch),
        }
    }
}

/// What a sampled request keeps of its rows for its records.
#[derive(Debug)]
pub enum Inputs {
    /// The transactions' ids.
    Ids(Vec<EndToEndId>),
    /// The transactions (`include_inputs`).
    Transactions(Vec<Transaction>),
    /// Feature rows without their values: they carry no id, and `include_inputs` is off.
    NoIds,
    /// The feature rows (`include_inputs`).
    Features(FeatureBatch),
}

/// One request's decisions on their way to the log thread.
#[derive(Debug)]
pub struct Entry {
    version: Arc<Version>,
    api: Api,
    request_id: Option<String>,
    trace: Option<(TraceId, SpanId)>,
    scored_at: SystemTime,
    inputs: Inputs,
    scores: Vec<f32>,
    decisions: Vec<Decision>,
    reasons: Vec<Option<Reasons>>,
    queue_us: u64,
    compute_us: u64,
}

impl Entry {
    /// The rows it holds.
    fn rows(&self) -> usize {
        self.scores.len()
    }

    /// A traced request's `traceparent` (W3C), naming its span: the header of each of its
    /// records, so that a consumer of the log continues the request's trace, as the Kafka
    /// source's score records do.
    fn traceparent(&self) -> Option<String> {
        self.trace
            .map(|(trace, span)| Parent::traceparent(&trace, &span, true))
    }
}

/// Who answered a request, for its records: the API, the caller's request id, its trace.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// The API that answered.
    pub api: Api,
    /// The caller's id of the request (the Open Inference Protocol's `id`, else `x-request-id`).
    pub request_id: Option<&'a str>,
    /// The request's trace and its span, when it was traced.
    pub trace: Option<(TraceId, SpanId)>,
}

/// A logged request's pass for its challenger's decisions: when the shadow scores its copy, those
/// decisions are logged too, beside the answer's, with the same API, id and trace.
pub struct ShadowPass {
    log: Arc<DecisionLog>,
    api: Api,
    request_id: Option<String>,
    trace: Option<(TraceId, SpanId)>,
    inputs: Inputs,
}

impl ShadowPass {
    /// Queues the challenger `version`'s decisions `scores`.
    pub fn submit(self, version: &Arc<Version>, scores: &Scores) {
        let answered = Answered {
            api: self.api,
            request_id: self.request_id.as_deref(),
            trace: self.trace,
        };
        self.log.submit(version, answered, self.inputs, scores);
    }
}

/// Samples requests and queues their decisions for the log thread.
pub struct DecisionLog {
    sampler: super::sample::Sampler,
    include_inputs: bool,
    max_rows: usize,
    queue: crossbeam_channel::Sender<producer::Message>,
    counts: Arc<Counts>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`DecisionLog::shutdown`]: nothing more is queued, and a record librdkafka has no
    /// room for is counted as failed instead of waited on.
    stopped: Arc<AtomicBool>,
}

impl DecisionLog {
    /// The log `config.decision_log` describes, its producer and thread started; `None` when it
    /// is off (no topic).
    pub fn start(config: &Config) -> anyhow::Result<Option<Arc<DecisionLog>>> {
        let settings = &config.decision_log;
        if settings.topic.is_empty() {
            return Ok(None);
        }
        let counts = Arc::new(Counts::default());
        let (queue, entries) = crossbeam_channel::unbounded();
        let stopped = Arc::new(AtomicBool::new(false));
        let thread = producer::start(config, entries, counts.clone(), stopped.clone())?;
        Ok(Some(Arc::new(DecisionLog {
            sampler: super::sample::Sampler::new(settings.sample_ratio),
            include_inputs: settings.include_inputs,
            max_rows: settings.max_queue_records,
            queue,
            counts,
            thread: Mutex::new(Some(thread)),
            stopped,
        })))
    }

    /// Whether this request is logged; when it is, what it keeps of `rows` for its records.
    /// Exactly `sample_ratio` of requests are taken, evenly spread ([`super::sample::Sampler`]).
    pub fn capture(&self, rows: Rows<'_>) -> Option<Inputs> {
        self.sampler.take().then(|| self.inputs(rows))
    }

    /// A logged request's pass for the challenger that scores a copy of `rows` in the shadow.
    pub fn shadow_pass(self: &Arc<Self>, rows: Rows<'_>, answered: Answered<'_>) -> ShadowPass {
        ShadowPass {
            log: self.clone(),
            api: answered.api,
            request_id: answered.request_id.map(str::to_string),
            trace: answered.trace,
            inputs: self.inputs(rows),
        }
    }

    /// What a logged request keeps of `rows`.
    fn inputs(&self, rows: Rows<'_>) -> Inputs {
        match (rows, self.include_inputs) {
            (Rows::Transactions(txs), false) => {
                Inputs::Ids(txs.iter().map(|t| t.end_to_end_id).collect())
            }
            (Rows::Transactions(txs), true) => Inputs::Transactions(txs.to_vec()),
            (Rows::Features(_), false) => Inputs::NoIds,
            (Rows::Features(batch), true) => Inputs::Features(batch.clone()),
        }
    }

    /// Queues the decisions `scores` of a request whose rows were captured as `inputs`, scored by
    /// `version`; drops and counts them when `max_queue_records` are already waiting.
    pub fn submit(
        &self,
        version: &Arc<Version>,
        answered: Answered<'_>,
        inputs: Inputs,
        scores: &Scores,
    ) {
        let rows = scores.scores.len();
        let queued = self.counts.queued.fetch_add(rows, Ordering::AcqRel);
        if queued + rows > self.max_rows || self.stopped.load(Ordering::Acquire) {
            self.counts.queued.fetch_sub(rows, Ordering::AcqRel);
            self.counts
                .dropped
                .fetch_add(rows as u64, Ordering::Relaxed);
            return;
        }
        let entry = Entry {
            version: version.clone(),
            api: answered.api,
            request_id: answered.request_id.map(str::to_string),
            trace: answered.trace,
            scored_at: SystemTime::now(),
            inputs,
            scores: scores.scores.clone(),
            decisions: scores.decisions.clone(),
            reasons: scores.reasons.clone(),
            queue_us: scores.queue_us,
            compute_us: scores.compute_us,
        };
        if self.queue.send(producer::Message::Entry(entry)).is_err() {
            // The thread has gone (it stopped): nothing will send these.
            self.counts.queued.fetch_sub(rows, Ordering::AcqRel);
            self.counts
                .dropped
                .fetch_add(rows as u64, Ordering::Relaxed);
        }
    }

    /// What it counted.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Sends what is queued and waits up to `limit` for the broker to acknowledge it; what is
    /// not by then is counted as failed. Called once the front ends have stopped.
    pub fn shutdown(&self, limit: Duration) {
        self.stopped.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = self
                .queue
                .send(producer::Message::Stop(std::time::Instant::now() + limit));
            if thread.join().is_err() {
                tracing::error!("the decision log's thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests;

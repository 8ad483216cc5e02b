//! What travels between the caller, the batcher and the workers: a request's rows ([`Job`]), a
//! slice of them ([`Part`]), the rows going to one worker together ([`Batch`]), and how a worker
//! gathers a batch ([`Rows`]) and hands each request its scores and reasons ([`finish`],
//! [`Explained`]). Both worker loops (`worker`, `pipeline`) use these; neither imports the
//! other's internals.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::delivery::{Delivery, Home, Reply};
use super::{EngineError, Lane, Metrics, Scored, Totals};
use crate::features::FeatureBatch;
use crate::model::explain::Reasons;
use crate::monitoring::Tap;

/// Reasons found for a batch: (index of the part in the batch, row within its job, reasons).
#[derive(Default)]
pub(super) struct Explained(pub(super) Vec<(usize, usize, Reasons)>);

impl Explained {
    /// Takes the reasons of part `index` (they are in part order).
    pub(super) fn take_part(
        &mut self,
        index: usize,
    ) -> impl Iterator<Item = (usize, Reasons)> + '_ {
        let end = self.0.iter().take_while(|(p, _, _)| *p == index).count();
        self.0.drain(..end).map(|(_, row, reasons)| (row, reasons))
    }
}

/// A request in flight: its rows, and the scores gathered so far.
pub(super) struct Job {
    pub(super) features: FeatureBatch,
    pub(super) enqueued: Instant,
    pub(super) deadline: Instant,
    /// Rows scoring at least this get reasons (`None`: no row does).
    pub(super) explain_from: Option<f64>,
    pub(super) lane: Lane,
    /// Whether the metrics count it: a version's warm-up batches are not traffic.
    pub(super) observed: bool,
    /// The caller's current-thread runtime, when it waits on one (see `delivery`).
    pub(super) home: Option<Home>,
    pub(super) state: Mutex<JobState>,
}

pub(super) struct JobState {
    pub(super) scores: Vec<f32>,
    /// Per row, when the job asks for reasons; empty otherwise.
    pub(super) reasons: Vec<Option<Reasons>>,
    pub(super) remaining: usize,
    pub(super) queue_us: u64,
    pub(super) compute_us: u64,
    pub(super) reply: Option<Reply>,
}

/// Where a job's answer arrives.
pub(super) type Answer = oneshot::Receiver<Result<Scored, EngineError>>;

impl Job {
    /// A job for `features`, enqueued now, and the receiver of its answer.
    #[cfg(test)]
    pub(super) fn new(features: FeatureBatch, deadline: Instant) -> (Arc<Job>, Answer) {
        Self::explained(features, deadline, None, Lane::Interactive)
    }

    /// A job in `lane` whose rows scoring at least `explain_from` also get reasons.
    pub(super) fn explained(
        features: FeatureBatch,
        deadline: Instant,
        explain_from: Option<f64>,
        lane: Lane,
    ) -> (Arc<Job>, Answer) {
        Self::with(features, deadline, explain_from, lane, true)
    }

    /// A job the metrics do not count (a warm-up).
    pub(super) fn unobserved(features: FeatureBatch, deadline: Instant) -> (Arc<Job>, Answer) {
        Self::with(features, deadline, None, Lane::Interactive, false)
    }

    fn with(
        features: FeatureBatch,
        deadline: Instant,
        explain_from: Option<f64>,
        lane: Lane,
        observed: bool,
    ) -> (Arc<Job>, Answer) {
        let rows = features.rows;
        let (reply, answer) = oneshot::channel();
        let job = Arc::new(Job {
            features,
            enqueued: Instant::now(),
            deadline,
            explain_from,
            lane,
            observed,
            home: Home::current(),
            state: Mutex::new(JobState {
                scores: vec![0.0; rows],
                reasons: if explain_from.is_some() {
                    vec![None; rows]
                } else {
                    Vec::new()
                },
                remaining: rows,
                queue_us: 0,
                compute_us: 0,
                reply: Some(reply),
            }),
        });
        (job, answer)
    }

    /// Whether nobody waits for the answer any more (finished, failed, or the caller went away).
    pub(super) fn abandoned(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.reply.as_ref().is_none_or(|r| r.is_closed())
    }

    /// Fails the whole request (its other parts are then skipped).
    pub(super) fn fail(&self, error: EngineError) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reply) = state.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// A slice of a job's rows inside a batch.
pub(super) struct Part {
    pub(super) job: Arc<Job>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl Part {
    /// The part's feature rows in its job: numeric, then categorical.
    pub(super) fn features(&self) -> (&[f32], &[u32]) {
        let f = &self.job.features;
        let rows = self.start..self.start + self.len;
        (
            &f.numeric[rows.start * f.n_numeric..rows.end * f.n_numeric],
            &f.categorical[rows.start * f.n_categorical..rows.end * f.n_categorical],
        )
    }
}

/// Rows going to one worker together.
pub(super) struct Batch {
    pub(super) parts: Vec<Part>,
    pub(super) rows: usize,
    pub(super) oldest: Instant,
    pub(super) dispatched: Instant,
}

impl Batch {
    /// An empty batch whose oldest row is `job`'s.
    pub(super) fn starting(job: &Arc<Job>) -> Batch {
        Batch {
            parts: Vec::new(),
            rows: 0,
            oldest: job.enqueued,
            dispatched: job.enqueued,
        }
    }

    /// Adds as many of `job`'s rows from `start` on as fit under `max_batch`; how many.
    pub(super) fn take(&mut self, job: &Arc<Job>, start: usize, max_batch: usize) -> usize {
        let len = (max_batch - self.rows).min(job.features.rows - start);
        self.parts.push(Part {
            job: job.clone(),
            start,
            len,
        });
        self.rows += len;
        len
    }
}

/// The contiguous feature block of one batch, reused across batches.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) numeric: Vec<f32>,
    pub(super) categorical: Vec<u32>,
    pub(super) out: Vec<f32>,
}

impl Rows {
    /// Gathers the batch's parts into one block: the only copy between request and model.
    pub(super) fn gather(&mut self, batch: &Batch) {
        self.numeric.clear();
        self.categorical.clear();
        for part in &batch.parts {
            let (numeric, categorical) = part.features();
            self.numeric.extend_from_slice(numeric);
            self.categorical.extend_from_slice(categorical);
        }
        self.out.resize(batch.rows, 0.0);
    }
}

/// Where a worker records what its batches did: the metrics every version shares, its own
/// engine's totals, and the version's monitor (when it has one).
#[derive(Clone)]
pub(super) struct Sinks {
    pub(super) metrics: Arc<Metrics>,
    pub(super) totals: Arc<Totals>,
    pub(super) tap: Option<Tap>,
}

/// Answers every request with a part in `batch` with `error`.
pub(super) fn fail(batch: &Batch, error: &EngineError) {
    for part in &batch.parts {
        part.job.fail(error.clone());
    }
}

/// Records the batch and hands each request its scores and reasons (or the model's error).
pub(super) fn finish(
    sinks: &Sinks,
    batch: Batch,
    result: Result<(&[f32], Explained), EngineError>,
    started: Instant,
) {
    let compute_us = started.elapsed().as_micros() as u64;
    // A warm-up batch carries warm-up jobs only (nothing else reaches a version before it serves).
    let observed = batch.parts.iter().any(|p| p.job.observed);
    let metrics = &sinks.metrics;
    if observed {
        metrics.batch_size.observe(batch.rows as u64);
    }
    let (out, mut explained) = match result {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(error = %e, rows = batch.rows, "batch failed");
            fail(&batch, &e);
            return;
        }
    };
    if observed {
        metrics
            .rows_scored
            .fetch_add(batch.rows as u64, Ordering::Relaxed);
        sinks.totals.batch(batch.rows, compute_us);
    }
    // Before the answers go out, so that a report asked for after an answer counts its rows; the
    // tap only copies (the monitor thread bins).
    if let Some(tap) = &sinks.tap {
        tap.offer(batch.parts.iter().map(Part::features), out);
    }
    let mut delivery = Delivery::default();
    let mut at = 0;
    for (index, part) in batch.parts.iter().enumerate() {
        let mut state = part.job.state.lock().unwrap_or_else(|p| p.into_inner());
        state.scores[part.start..part.start + part.len].copy_from_slice(&out[at..at + part.len]);
        for (row, reasons) in explained.take_part(index) {
            if let Some(slot) = state.reasons.get_mut(row) {
                *slot = Some(reasons);
            }
        }
        at += part.len;
        state.remaining -= part.len;
        state.compute_us = state.compute_us.max(compute_us);
        state.queue_us = state.queue_us.max(
            batch
                .dispatched
                .duration_since(part.job.enqueued)
                .as_micros() as u64,
        );
        if state.remaining == 0
            && let Some(reply) = state.reply.take()
        {
            let scored = Scored {
                scores: std::mem::take(&mut state.scores),
                reasons: std::mem::take(&mut state.reasons),
                queue_us: state.queue_us,
                compute_us: state.compute_us,
                enqueued: part.job.enqueued,
            };
            delivery.send(part.job.home.as_ref(), reply, scored);
        }
    }
    delivery.deliver();
}

//! The engine: callers submit feature rows and await their scores; one batcher thread owns the
//! queue and forms batches; device workers each own a model replica and compute them.

mod batch;
mod batcher;
#[cfg(test)]
mod batcher_tests;
mod delivery;
mod explain;
pub mod metrics;
mod pipeline;
pub mod recent;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use crate::threads::Priority;
use crate::threads::spawn;
use std::time::Instant;

use crossbeam_channel::Sender;
pub use metrics::{Metrics, Totals};

use crate::config::EngineConfig;
use crate::features::FeatureBatch;
use crate::model::DcnModel;
use crate::model::device::DeviceKind;
use crate::model::explain::Reasons;
use crate::monitoring::Tap;

use batch::Job;

/// Engines whose batcher thread runs, in this process: one per loaded model version (the
/// champion, a shadow, a retired version still finishing its last requests). A version that is
/// never let go after a swap shows up here as a count that only grows.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many engines run now (`pixguard_engines_running`).
pub fn running() -> usize {
    RUNNING.load(Ordering::Relaxed)
}

/// Counts its engine in [`running`] from construction until the batcher thread that owns it ends.
struct Running;

impl Running {
    fn new() -> Self {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the engine could not score a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The queue holds too many rows.
    #[error("overloaded: {queued} rows queued, limit {limit}")]
    Overloaded { queued: usize, limit: usize },
    /// The deadline passed before the rows reached a worker.
    #[error("deadline exceeded before compute")]
    DeadlineExceeded,
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The model failed on the batch.
    #[error("model error: {0}")]
    Model(String),
    /// The worker's device can take no more work (a sticky CUDA error); only a restart recovers.
    #[error("device failed: {0}")]
    DeviceFailed(String),
}

/// Scores of one request, with where the time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// One probability per submitted row, in order.
    pub scores: Vec<f32>,
    /// Per row, its reasons when it needed them; empty when the request asked for none.
    pub reasons: Vec<Option<Reasons>>,
    /// Enqueue to dispatch of the request's last part, µs.
    pub queue_us: u64,
    /// Longest compute of the batches the request rode in, µs.
    pub compute_us: u64,
    /// When the request's rows joined the queue.
    pub enqueued: Instant,
}

/// Which queue a request's rows join. Interactive rows (the HTTP and gRPC APIs) always form
/// batches first; bulk rows (the Kafka stream's backlog) fill the room those leave, so a draining
/// backlog costs a synchronous payment at most one batch's compute instead of the whole queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// A caller waits on the answer: first in every batch; may fill the whole queue bound.
    #[default]
    Interactive,
    /// Throughput work with its own buffer upstream: only the room left in a batch, or a batch
    /// of its own when nothing interactive waits; refused beyond half of the queue bound.
    Bulk,
}

enum Message {
    Submit(Arc<Job>),
    Idle(usize),
    Shutdown,
}

/// Handle to the running engine; cheap to share behind an `Arc`.
pub struct Engine {
    tx: Sender<Message>,
    queued_rows: Arc<AtomicUsize>,
    max_queue_rows: usize,
    metrics: Arc<Metrics>,
    /// This engine's own counts and durations since it started (the `metrics` are every
    /// version's together): its version's Triton statistics.
    totals: Arc<Totals>,
    device: DeviceKind,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// This engine's own last minute of answers and failures: a canary's and its champion's are
    /// compared by the canary guard (the shared `metrics` mix the two).
    recent: Option<recent::Recent>,
}

impl Engine {
    /// Starts the batcher and one worker per model replica.
    pub fn start(
        config: &EngineConfig,
        replicas: Vec<DcnModel>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Engine> {
        Self::start_with(config, replicas, metrics, Priority::Normal, None)
    }

    /// [`Engine::start`], its threads scheduled at `priority`, every computed batch offered to
    /// `tap` (the version's monitor) when given.
    pub fn start_with(
        config: &EngineConfig,
        replicas: Vec<DcnModel>,
        metrics: Arc<Metrics>,
        priority: Priority,
        tap: Option<Tap>,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let device = replicas
            .first()
            .map_or(DeviceKind::Cpu, |m| DeviceKind::of(m.device()));
        let totals = Arc::new(Totals::default());
        let sinks = batch::Sinks {
            metrics: metrics.clone(),
            totals: totals.clone(),
            tap,
        };
        let mut threads = Vec::new();
        let mut worker_txs = Vec::new();
        let mut workers: Vec<worker::Worker> = replicas
            .into_iter()
            .enumerate()
            .map(|(id, model)| {
                worker::Worker::new(
                    id,
                    model,
                    tx.clone(),
                    sinks.clone(),
                    (config.test_worker_delay_us, config.test_compute_delay_us),
                    config.max_batch_size,
                )
            })
            .collect();
        // With one worker the batcher computes its batches itself: two thread hand-offs and a
        // wake-up less per batch, which on a small machine is most of the per-request overhead.
        // A pipelined (GPU) worker needs its own thread to overlap batches, so it is never inlined.
        let inline = if workers.len() == 1 && !workers[0].pipelined() {
            workers.pop()
        } else {
            None
        };
        for w in workers {
            let (wtx, wrx) = crossbeam_channel::bounded(1);
            worker_txs.push(wtx);
            let name = format!("pixguard-worker-{}", worker_txs.len() - 1);
            threads.push(spawn(&name, priority, move || w.run(wrx))?);
        }
        let b = batcher::Batcher::new(
            config,
            worker_txs,
            inline,
            queued_rows.clone(),
            metrics.clone(),
        );
        let running = Running::new();
        threads.push(spawn("pixguard-batcher", priority, move || {
            let _running = running;
            b.run(rx)
        })?);
        Ok(Engine {
            tx,
            queued_rows,
            max_queue_rows: config.max_queue_rows,
            metrics,
            totals,
            device,
            threads: Mutex::new(threads),
            recent: None,
        })
    }

    /// Keeps this engine's own last minute too ([`Engine::recent`]): one more histogram record
    /// per request, so only where a canary guard reads it.
    pub fn with_recent_window(mut self) -> Result<Engine, hdrhistogram::CreationError> {
        self.recent = Some(recent::Recent::new()?);
        Ok(self)
    }

    /// This engine's requests answered (queue + compute percentiles), failed and refused over
    /// the last minute, when it keeps that window.
    pub fn recent(&self) -> Option<recent::Outcomes> {
        self.recent.as_ref().map(recent::Recent::outcomes)
    }

    /// Counts, in the last-minute window when it keeps one, a request this engine's version
    /// refused for its input before it reached the queue.
    pub fn refused_input(&self) {
        if let Some(recent) = &self.recent {
            recent.refused();
        }
    }

    /// What the engine records.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What this engine alone has done since it started.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The kind of device the workers compute on.
    pub fn device(&self) -> DeviceKind {
        self.device
    }

    /// Rows waiting in the queue now.
    pub fn queued_rows(&self) -> usize {
        self.queued_rows.load(Ordering::Relaxed)
    }

    /// Queues `features` and waits for their scores; rows not dispatched by `deadline` are dropped.
    pub async fn score(
        &self,
        features: FeatureBatch,
        deadline: Instant,
    ) -> Result<Scored, EngineError> {
        self.score_explained(features, deadline, None).await
    }

    /// As [`Engine::score`], and rows scoring at least `explain_from` also get their reasons
    /// (when the model's package describes how), computed on the worker in the same batch.
    pub async fn score_explained(
        &self,
        features: FeatureBatch,
        deadline: Instant,
        explain_from: Option<f64>,
    ) -> Result<Scored, EngineError> {
        self.score_in(Lane::Interactive, features, deadline, explain_from)
            .await
    }

    /// As [`Engine::score_explained`], in `lane`.
    pub async fn score_in(
        &self,
        lane: Lane,
        features: FeatureBatch,
        deadline: Instant,
        explain_from: Option<f64>,
    ) -> Result<Scored, EngineError> {
        let rows = features.rows;
        self.submit(lane, rows, || {
            Job::explained(features, deadline, explain_from, lane)
        })
        .await
    }

    /// As [`Engine::score`], for a batch that warms a version up before it serves: the metrics
    /// (batch sizes, rows scored, queue and compute times, `/v2/…/stats`) do not count it, so an
    /// idle server reports nothing scored and a swap's first, slow batches are not in the p99.
    pub async fn warm_up(
        &self,
        features: FeatureBatch,
        deadline: Instant,
    ) -> Result<Scored, EngineError> {
        let rows = features.rows;
        self.submit(Lane::Interactive, rows, || {
            Job::unobserved(features, deadline)
        })
        .await
    }

    /// Queues the job `make` builds (of `rows` rows) within `lane`'s bound and waits for it.
    async fn submit(
        &self,
        lane: Lane,
        rows: usize,
        make: impl FnOnce() -> (Arc<Job>, batch::Answer),
    ) -> Result<Scored, EngineError> {
        if rows == 0 {
            return Ok(Scored {
                scores: Vec::new(),
                reasons: Vec::new(),
                queue_us: 0,
                compute_us: 0,
                enqueued: Instant::now(),
            });
        }
        // Bulk work leaves half of the queue to interactive requests, so a backlog never gets
        // them refused.
        let limit = match lane {
            Lane::Interactive => self.max_queue_rows,
            Lane::Bulk => self.max_queue_rows / 2,
        };
        // Warm-up jobs are not the version's answers: neither counted nor kept in its window.
        let (job, answer) = make();
        let observed = job.observed;
        let recent = self.recent.as_ref().filter(|_| observed);
        let queued = self.queued_rows.fetch_add(rows, Ordering::AcqRel) + rows;
        if queued > limit {
            self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            self.metrics
                .rejections
                .overloaded
                .fetch_add(1, Ordering::Relaxed);
            if let Some(recent) = recent {
                recent.failed();
            }
            return Err(EngineError::Overloaded {
                queued: queued - rows,
                limit,
            });
        }
        if self.tx.send(Message::Submit(job)).is_err() {
            self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(EngineError::ShuttingDown);
        }
        let scored = answer.await.unwrap_or(Err(EngineError::ShuttingDown));
        match (&scored, recent) {
            // A version stopping is not one failing.
            (Err(EngineError::ShuttingDown), _) | (_, None) => {}
            (Err(_), Some(recent)) => recent.failed(),
            (Ok(scored), Some(recent)) => recent.answered(scored.queue_us + scored.compute_us),
        }
        let scored = scored?;
        if observed {
            self.metrics
                .record_engine(scored.queue_us, scored.compute_us);
            self.totals.answered(scored.queue_us, scored.compute_us);
        }
        Ok(scored)
    }

    /// Finishes every queued row, stops the threads and waits for them.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Message::Shutdown);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

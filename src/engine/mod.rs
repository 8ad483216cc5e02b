//! The engine: callers submit feature rows and await their scores; one batcher thread owns the
//! queue and forms batches; device workers each own a model replica and compute them.

mod batcher;
pub mod metrics;
mod pipeline;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Sender;
use tokio::sync::oneshot;

pub use metrics::Metrics;

use crate::config::EngineConfig;
use crate::features::FeatureBatch;
use crate::model::DcnModel;

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
    /// Enqueue to dispatch of the request's last part, µs.
    pub queue_us: u64,
    /// Longest compute of the batches the request rode in, µs.
    pub compute_us: u64,
}

/// A request in flight: its rows, and the scores gathered so far.
struct Job {
    features: FeatureBatch,
    enqueued: Instant,
    deadline: Instant,
    state: Mutex<JobState>,
}

struct JobState {
    scores: Vec<f32>,
    remaining: usize,
    queue_us: u64,
    compute_us: u64,
    reply: Option<oneshot::Sender<Result<Scored, EngineError>>>,
}

/// Where a job's answer arrives.
type Answer = oneshot::Receiver<Result<Scored, EngineError>>;

impl Job {
    /// A job for `features`, enqueued now, and the receiver of its answer.
    fn new(features: FeatureBatch, deadline: Instant) -> (Arc<Job>, Answer) {
        let rows = features.rows;
        let (reply, answer) = oneshot::channel();
        let job = Arc::new(Job {
            features,
            enqueued: Instant::now(),
            deadline,
            state: Mutex::new(JobState {
                scores: vec![0.0; rows],
                remaining: rows,
                queue_us: 0,
                compute_us: 0,
                reply: Some(reply),
            }),
        });
        (job, answer)
    }

    /// Whether nobody waits for the answer any more (finished, failed, or the caller went away).
    fn abandoned(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.reply.as_ref().is_none_or(|r| r.is_closed())
    }

    /// Fails the whole request (its other parts are then skipped).
    fn fail(&self, error: EngineError) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reply) = state.reply.take() {
            let _ = reply.send(Err(error));
        }
    }
}

/// A slice of a job's rows inside a batch.
struct Part {
    job: Arc<Job>,
    start: usize,
    len: usize,
}

/// Rows going to one worker together.
struct Batch {
    parts: Vec<Part>,
    rows: usize,
    oldest: Instant,
    dispatched: Instant,
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
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the batcher and one worker per model replica.
    pub fn start(
        config: &EngineConfig,
        replicas: Vec<DcnModel>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queued_rows = Arc::new(AtomicUsize::new(0));
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
                    metrics.clone(),
                    config.test_worker_delay_us,
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
            threads.push(spawn(&name, move || w.run(wrx))?);
        }
        let b = batcher::Batcher::new(
            config,
            worker_txs,
            inline,
            queued_rows.clone(),
            metrics.clone(),
        );
        threads.push(spawn("pixguard-batcher", move || b.run(rx))?);
        Ok(Engine {
            tx,
            queued_rows,
            max_queue_rows: config.max_queue_rows,
            metrics,
            threads: Mutex::new(threads),
        })
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
        let rows = features.rows;
        if rows == 0 {
            return Ok(Scored {
                scores: Vec::new(),
                queue_us: 0,
                compute_us: 0,
            });
        }
        let queued = self.queued_rows.fetch_add(rows, Ordering::AcqRel) + rows;
        if queued > self.max_queue_rows {
            self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            self.metrics
                .rejections
                .overloaded
                .fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Overloaded {
                queued: queued - rows,
                limit: self.max_queue_rows,
            });
        }
        let (job, answer) = Job::new(features, deadline);
        if self.tx.send(Message::Submit(job)).is_err() {
            self.queued_rows.fetch_sub(rows, Ordering::AcqRel);
            return Err(EngineError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(EngineError::ShuttingDown))
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

//! What the engine measures: queue wait, compute, batch sizes, rows scored or dropped, and the
//! state of its devices. Front-end counters live with the front ends (`crate::scoring::metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::histogram::{BATCH_BOUNDS, Cumulative, PromHistogram, Stage};

/// Why requests were turned away by the engine.
#[derive(Debug, Default)]
pub struct Rejections {
    /// Requests refused because the queue was full (429).
    pub overloaded: AtomicU64,
    /// Requests that missed their deadline before compute (504).
    pub deadline: AtomicU64,
}

/// Everything the engine records.
#[derive(Debug)]
pub struct Metrics {
    /// Queue wait of a request's rows (enqueue to dispatch of its last part).
    pub queue: Stage,
    /// Compute time of the batches a request's rows rode in.
    pub compute: Stage,
    /// Queue wait plus compute of a request: the engine's share of its latency.
    pub engine: Stage,
    /// Rows per dispatched batch.
    pub batch_size: PromHistogram,
    /// Rows scored.
    pub rows_scored: AtomicU64,
    /// Rows dropped because their request's deadline passed before compute.
    pub rows_expired: AtomicU64,
    /// Rows skipped because their caller had gone.
    pub rows_abandoned: AtomicU64,
    /// Requests turned away, by reason.
    pub rejections: Rejections,
    /// 1 when `device: auto` fell back to the CPU.
    pub cuda_fallback: AtomicU64,
    /// Set once, by the first worker whose device can take no more work: why. Liveness fails.
    pub device_failure: OnceLock<String>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Metrics {
            queue: Stage::new()?,
            compute: Stage::new()?,
            engine: Stage::new()?,
            batch_size: PromHistogram::new(BATCH_BOUNDS),
            rows_scored: AtomicU64::new(0),
            rows_expired: AtomicU64::new(0),
            rows_abandoned: AtomicU64::new(0),
            rejections: Rejections::default(),
            cuda_fallback: AtomicU64::new(0),
            device_failure: OnceLock::new(),
        })
    }

    /// Records where a scored request's engine time went.
    pub fn record_engine(&self, queue_us: u64, compute_us: u64) {
        self.queue.record(queue_us);
        self.compute.record(compute_us);
        self.engine.record(queue_us + compute_us);
    }

    /// Rows scored since start.
    pub fn rows_scored(&self) -> u64 {
        self.rows_scored.load(Ordering::Relaxed)
    }
}

/// What one engine (one served version) has done since it started: Triton's per-version
/// statistics. [`Metrics`] is shared by every version and cannot tell a canary's from its
/// champion's.
#[derive(Debug, Default)]
pub struct Totals {
    /// Queue wait of each request answered.
    pub queue: Cumulative,
    /// Compute time of each request answered (its longest batch).
    pub compute: Cumulative,
    /// By batch size: batches that scored and their compute time (Triton's `batch_stats`; the
    /// batches and rows scored are its sums). Locked once per batch, by the engine's own workers
    /// only.
    by_size: Mutex<BTreeMap<usize, Cumulative>>,
}

impl Totals {
    /// A batch scored `rows` rows in `compute_us`.
    pub fn batch(&self, rows: usize, compute_us: u64) {
        let mut by_size = self.by_size.lock().unwrap_or_else(|p| p.into_inner());
        by_size.entry(rows).or_default().add(compute_us);
    }

    /// Every batch size run so far, smallest first, with its batches and their compute time
    /// (count, ns).
    pub fn by_size(&self) -> Vec<(usize, (u64, u64))> {
        let by_size = self.by_size.lock().unwrap_or_else(|p| p.into_inner());
        by_size
            .iter()
            .map(|(&rows, c)| (rows, c.count_ns()))
            .collect()
    }

    /// Batches that scored, and the rows they scored.
    pub fn batches_and_rows(&self) -> (u64, u64) {
        self.by_size()
            .into_iter()
            .fold((0, 0), |(batches, rows), (size, (count, _))| {
                (batches + count, rows + size as u64 * count)
            })
    }

    /// A request was answered after `queue_us` in the queue and `compute_us` of compute.
    pub fn answered(&self, queue_us: u64, compute_us: u64) {
        self.queue.add(queue_us);
        self.compute.add(compute_us);
    }
}

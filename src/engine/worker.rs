//! A device worker: owns one model replica, computes the batches the batcher hands it, scatters the
//! scores back to their requests and reports itself idle.
//!
//! On the CPU a batch is computed start to finish. On a GPU the worker runs `super::pipeline`'s
//! loop instead, with up to two batches in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{Batch, EngineError, Message, Metrics, Scored};
use crate::model::DcnModel;

pub(super) struct Worker {
    id: usize,
    model: DcnModel,
    batcher: Sender<Message>,
    metrics: Arc<Metrics>,
    test_delay: Duration,
    /// Sizes the GPU buffers up front, so a batch never waits for an allocation.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    max_batch_size: usize,
    rows: Rows,
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
            let f = &part.job.features;
            self.numeric.extend_from_slice(
                &f.numeric[part.start * f.n_numeric..(part.start + part.len) * f.n_numeric],
            );
            self.categorical.extend_from_slice(
                &f.categorical
                    [part.start * f.n_categorical..(part.start + part.len) * f.n_categorical],
            );
        }
        self.out.resize(batch.rows, 0.0);
    }
}

impl Worker {
    pub(super) fn new(
        id: usize,
        model: DcnModel,
        batcher: Sender<Message>,
        metrics: Arc<Metrics>,
        test_delay_us: u64,
        max_batch_size: usize,
    ) -> Self {
        Worker {
            id,
            model,
            batcher,
            metrics,
            test_delay: Duration::from_micros(test_delay_us),
            max_batch_size,
            rows: Rows::default(),
        }
    }

    /// Whether this worker keeps batches in flight (a GPU replica) and so needs a thread of its own.
    pub(super) fn pipelined(&self) -> bool {
        #[cfg(feature = "cuda")]
        if self.model.gpu().is_some() {
            return true;
        }
        false
    }

    pub(super) fn run(mut self, batches: Receiver<Batch>) {
        #[cfg(feature = "cuda")]
        if self.pipelined() {
            return self.run_pipelined(batches);
        }
        while let Ok(batch) = batches.recv() {
            self.compute(batch);
            if self.batcher.send(Message::Idle(self.id)).is_err() {
                return;
            }
        }
    }

    pub(super) fn compute(&mut self, batch: Batch) {
        self.rows.gather(&batch);
        if !self.test_delay.is_zero() {
            std::thread::sleep(self.test_delay);
        }
        let started = Instant::now();
        let rows = &mut self.rows;
        let result = self
            .model
            .score_host(&rows.numeric, &rows.categorical, batch.rows, &mut rows.out)
            .map_err(|e| EngineError::Model(e.to_string()));
        finish(
            &self.metrics,
            batch,
            result.map(|()| &self.rows.out[..]),
            started,
        );
    }

    /// The GPU loop (`super::pipeline`), over this replica's CUDA pipeline.
    #[cfg(feature = "cuda")]
    fn run_pipelined(self, batches: Receiver<Batch>) {
        let Worker {
            id,
            model,
            batcher,
            metrics,
            max_batch_size,
            mut rows,
            ..
        } = self;
        let Some(gpu) = model.gpu() else { return };
        // The only user of this replica is this thread; the lock is uncontended.
        let mut gpu = gpu.lock().unwrap_or_else(|p| p.into_inner());
        super::pipeline::run(
            &mut *gpu,
            id,
            &batches,
            &batcher,
            &metrics,
            &mut rows,
            max_batch_size,
        );
    }
}

/// Answers every request with a part in `batch` with `error`.
pub(super) fn fail(batch: &Batch, error: &EngineError) {
    for part in &batch.parts {
        part.job.fail(error.clone());
    }
}

/// Records the batch and hands each request its scores (or the model's error).
pub(super) fn finish(
    metrics: &Metrics,
    batch: Batch,
    result: Result<&[f32], EngineError>,
    started: Instant,
) {
    let compute_us = started.elapsed().as_micros() as u64;
    metrics.batch_size.observe(batch.rows as u64);
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(error = %e, rows = batch.rows, "batch failed");
            fail(&batch, &e);
            return;
        }
    };
    metrics
        .rows_scored
        .fetch_add(batch.rows as u64, Ordering::Relaxed);
    let mut at = 0;
    for part in &batch.parts {
        let mut state = part.job.state.lock().unwrap_or_else(|p| p.into_inner());
        state.scores[part.start..part.start + part.len].copy_from_slice(&out[at..at + part.len]);
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
                queue_us: state.queue_us,
                compute_us: state.compute_us,
            };
            let _ = reply.send(Ok(scored));
        }
    }
}

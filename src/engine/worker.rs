//! A device worker: owns one model replica, computes the batches the batcher hands it, scatters the
//! scores back to their requests and reports itself idle.

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
    numeric: Vec<f32>,
    categorical: Vec<u32>,
    out: Vec<f32>,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        model: DcnModel,
        batcher: Sender<Message>,
        metrics: Arc<Metrics>,
        test_delay_us: u64,
    ) -> Self {
        Worker {
            id,
            model,
            batcher,
            metrics,
            test_delay: Duration::from_micros(test_delay_us),
            numeric: Vec::new(),
            categorical: Vec::new(),
            out: Vec::new(),
        }
    }

    pub(super) fn run(mut self, batches: Receiver<Batch>) {
        while let Ok(batch) = batches.recv() {
            self.compute(batch);
            if self.batcher.send(Message::Idle(self.id)).is_err() {
                return;
            }
        }
    }

    pub(super) fn compute(&mut self, batch: Batch) {
        // Gather the parts into one contiguous block: the only copy between request and model.
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
        if !self.test_delay.is_zero() {
            std::thread::sleep(self.test_delay);
        }
        let started = Instant::now();
        let result =
            self.model
                .score_host(&self.numeric, &self.categorical, batch.rows, &mut self.out);
        let compute_us = started.elapsed().as_micros() as u64;
        self.metrics.batch_size.observe(batch.rows as u64);
        if let Err(e) = result {
            tracing::error!(error = %e, rows = batch.rows, "batch failed");
            for part in &batch.parts {
                part.job.fail(EngineError::Model(e.to_string()));
            }
            return;
        }
        self.metrics
            .rows_scored
            .fetch_add(batch.rows as u64, Ordering::Relaxed);
        let mut at = 0;
        for part in &batch.parts {
            let mut state = part.job.state.lock().unwrap_or_else(|p| p.into_inner());
            state.scores[part.start..part.start + part.len]
                .copy_from_slice(&self.out[at..at + part.len]);
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
}

//! A device worker: owns one model replica, computes the batches the batcher hands it, scatters the
//! scores back to their requests and reports itself idle.
//!
//! On the CPU a batch is computed start to finish. On a GPU the worker runs `super::pipeline`'s
//! loop instead, with up to two batches in flight.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::batch::{Batch, Rows, Sinks, finish};
use super::explain::{Scratch, explain};
use super::{EngineError, Message};
use crate::model::DcnModel;

pub(super) struct Worker {
    id: usize,
    model: DcnModel,
    batcher: Sender<Message>,
    sinks: Sinks,
    test_delay: Duration,
    /// Test-only: a slower model, its extra time counted as compute.
    test_compute_delay: Duration,
    /// Sizes the GPU buffers up front, so a batch never waits for an allocation, and bounds the
    /// rows of one explanation pass.
    max_batch_size: usize,
    rows: Rows,
    scratch: Scratch,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        model: DcnModel,
        batcher: Sender<Message>,
        sinks: Sinks,
        (test_delay_us, test_compute_delay_us): (u64, u64),
        max_batch_size: usize,
    ) -> Self {
        Worker {
            id,
            model,
            batcher,
            sinks,
            test_delay: Duration::from_micros(test_delay_us),
            test_compute_delay: Duration::from_micros(test_compute_delay_us),
            max_batch_size,
            rows: Rows::default(),
            scratch: Scratch::default(),
        }
    }

    /// Whether this worker keeps batches in flight (a GPU replica) and so needs a thread of its own.
    pub(super) fn pipelined(&self) -> bool {
        match self.model.runner() {
            #[cfg(feature = "cuda")]
            crate::model::Runner::Cuda(_) => true,
            _ => false,
        }
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
        // A batch of one request's rows (all of `pixguard batch`'s, large API requests) is already
        // contiguous in that request: no copy.
        if batch.parts.len() == 1 {
            self.rows.out.resize(batch.rows, 0.0);
        } else {
            self.rows.gather(&batch);
        }
        if !self.test_delay.is_zero() {
            std::thread::sleep(self.test_delay);
        }
        let started = Instant::now();
        if !self.test_compute_delay.is_zero() {
            std::thread::sleep(self.test_compute_delay);
        }
        let rows = &mut self.rows;
        let (numeric, categorical) = match batch.parts.as_slice() {
            [only] => only.features(),
            _ => (&rows.numeric[..], &rows.categorical[..]),
        };
        let model = &self.model;
        let result = model
            .score_host(numeric, categorical, batch.rows, &mut rows.out)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                explain(
                    &batch,
                    &rows.out,
                    model.occlusion(),
                    &mut self.scratch,
                    self.max_batch_size,
                    |n, c, r, out| model.logits_host(n, c, r, out).map_err(|e| e.to_string()),
                )
            })
            .map_err(EngineError::Model);
        finish(
            &self.sinks,
            batch,
            result.map(|explained| (&self.rows.out[..], explained)),
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
            sinks,
            max_batch_size,
            mut rows,
            ..
        } = self;
        let crate::model::Runner::Cuda(gpu) = model.runner() else {
            return;
        };
        // The only user of this replica is this thread; the lock is uncontended.
        let mut gpu = gpu.lock().unwrap_or_else(|p| p.into_inner());
        super::pipeline::run(
            &mut *gpu,
            model.occlusion(),
            id,
            &batches,
            &batcher,
            &sinks,
            &mut rows,
            max_batch_size,
        );
    }
}

//! The batcher: the one owner of the queue.
//!
//! Rows join an open batch. While every worker is busy the open batch grows until it holds
//! `max_batch_size` rows or its oldest row has waited `max_queue_delay_us`; then it is sealed and
//! waits its turn. An idle worker gets the oldest sealed batch, or the open one, at once — the
//! batcher never waits for rows that may not come. Before a batch leaves, rows past their deadline
//! are dropped (their request fails with 504) and rows whose caller has gone are skipped.
//!
//! Bulk rows ([`Lane::Bulk`]) wait apart: they top up whatever interactive batch leaves for a
//! worker, or form a batch of their own when no interactive row waits. Between batches computed
//! on the batcher's own thread it reads its channel again, so an interactive request arriving
//! during a backlog rides the next batch rather than the last.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::batch::{Batch, Job};
use super::worker::Worker;
use super::{EngineError, Lane, Message, Metrics};
use crate::config::EngineConfig;

pub(super) struct Batcher {
    max_batch: usize,
    delay: Duration,
    workers: Vec<Sender<Batch>>,
    inline: Option<Worker>,
    idle: Vec<usize>,
    sealed: VecDeque<Batch>,
    open: Option<Batch>,
    /// Bulk jobs not yet wholly in a batch, oldest first, with the first row still to place.
    bulk: VecDeque<(Arc<Job>, usize)>,
    queued_rows: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    pub(super) fn new(
        config: &EngineConfig,
        workers: Vec<Sender<Batch>>,
        inline: Option<Worker>,
        queued_rows: Arc<AtomicUsize>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Batcher {
            max_batch: config.max_batch_size,
            delay: Duration::from_micros(config.max_queue_delay_us),
            idle: (0..workers.len() + usize::from(inline.is_some()))
                .rev()
                .collect(),
            workers,
            inline,
            sealed: VecDeque::new(),
            open: None,
            bulk: VecDeque::new(),
            queued_rows,
            metrics,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Message>) {
        let mut shutting_down = false;
        loop {
            let message = match self.open.as_ref().map(|b| b.oldest + self.delay) {
                // A worker is idle and bulk rows wait for it (dispatch returned after computing
                // one batch here): look for interactive rows, but do not sleep.
                _ if !self.idle.is_empty() && !self.bulk.is_empty() => match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(Message::Shutdown),
                },
                // Rows are waiting and every worker is busy: wake up to seal the open batch on time.
                Some(seal_at) if self.idle.is_empty() => match rx.recv_deadline(seal_at) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Message::Shutdown),
                },
                _ => Some(rx.recv().unwrap_or(Message::Shutdown)),
            };
            match message {
                Some(Message::Submit(job)) => self.enqueue(job),
                Some(Message::Idle(worker)) => self.idle.push(worker),
                Some(Message::Shutdown) => shutting_down = true,
                None => self.seal_if_due(),
            }
            // Drain whatever else arrived, so one wake-up forms one batch rather than many.
            while let Ok(m) = rx.try_recv() {
                match m {
                    Message::Submit(job) => self.enqueue(job),
                    Message::Idle(worker) => self.idle.push(worker),
                    Message::Shutdown => shutting_down = true,
                }
            }
            self.seal_if_due();
            self.dispatch();
            if shutting_down
                && self.sealed.is_empty()
                && self.open.is_none()
                && self.bulk.is_empty()
                && self.idle.len() == self.workers.len() + usize::from(self.inline.is_some())
            {
                // Dropping the senders stops the workers once they finish.
                self.workers.clear();
                return;
            }
        }
    }

    fn enqueue(&mut self, job: Arc<Job>) {
        if job.lane == Lane::Bulk {
            self.bulk.push_back((job, 0));
            return;
        }
        let mut start = 0;
        while start < job.features.rows {
            let open = self.open.get_or_insert_with(|| Batch::starting(&job));
            start += open.take(&job, start, self.max_batch);
            if open.rows == self.max_batch {
                self.seal();
            }
        }
    }

    fn seal(&mut self) {
        if let Some(batch) = self.open.take() {
            self.sealed.push_back(batch);
        }
    }

    fn seal_if_due(&mut self) {
        if self
            .open
            .as_ref()
            .is_some_and(|b| b.oldest.elapsed() >= self.delay)
            && self.idle.is_empty()
        {
            self.seal();
        }
    }

    /// Moves bulk rows into `batch` (a new one when `None`) until it is full or none wait.
    fn top_up(&mut self, batch: Option<Batch>) -> Option<Batch> {
        let mut batch = match batch {
            Some(b) => b,
            None => Batch::starting(&self.bulk.front()?.0),
        };
        while batch.rows < self.max_batch {
            let Some((job, start)) = self.bulk.front_mut() else {
                break;
            };
            *start += batch.take(job, *start, self.max_batch);
            if *start == job.features.rows {
                self.bulk.pop_front();
            }
        }
        Some(batch)
    }

    fn dispatch(&mut self) {
        while let Some(&worker) = self.idle.last() {
            let interactive = self.sealed.pop_front().or_else(|| self.open.take());
            let Some(mut batch) = self.top_up(interactive) else {
                return;
            };
            let before = batch.rows;
            self.prune(&mut batch);
            self.queued_rows.fetch_sub(before, Ordering::AcqRel);
            if batch.rows == 0 {
                continue;
            }
            batch.dispatched = Instant::now();
            if let Some(inline) = self.inline.as_mut() {
                // Computing here leaves this worker idle afterwards; rows that arrived meanwhile
                // wait in the channel and form the next, larger batch.
                inline.compute(batch);
                if self.bulk.is_empty() {
                    continue;
                }
                return;
            }
            self.idle.pop();
            if let Err(returned) = self.workers[worker].send(batch) {
                // A worker only goes away after a panic; fail its rows rather than lose them.
                for part in returned.0.parts {
                    part.job
                        .fail(EngineError::Model("device worker stopped".into()));
                }
            }
        }
    }

    /// Drops rows past their deadline (failing their request) and rows nobody waits for.
    fn prune(&self, batch: &mut Batch) {
        let now = Instant::now();
        batch.parts.retain(|part| {
            if part.job.abandoned() {
                self.metrics
                    .rows_abandoned
                    .fetch_add(part.len as u64, Ordering::Relaxed);
                return false;
            }
            if now > part.job.deadline {
                self.metrics
                    .rows_expired
                    .fetch_add(part.len as u64, Ordering::Relaxed);
                self.metrics
                    .rejections
                    .deadline
                    .fetch_add(1, Ordering::Relaxed);
                part.job.fail(EngineError::DeadlineExceeded);
                return false;
            }
            true
        });
        batch.rows = batch.parts.iter().map(|p| p.len).sum();
        batch.oldest = batch
            .parts
            .iter()
            .map(|p| p.job.enqueued)
            .min()
            .unwrap_or(now);
    }
}

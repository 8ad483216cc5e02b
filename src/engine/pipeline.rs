//! The loop of a worker whose model keeps batches in flight (a GPU replica): it submits a batch and
//! reports idle at once, so the batcher hands over the next one; while a batch computes the loop
//! polls for both a new batch (submitted at once: its upload overlaps the compute) and the oldest
//! batch's completion, and blocks on the oldest only when no slot is free. Completion is in
//! submission order. Polling keeps one core busy while the GPU works — as CUDA's own default
//! spin-wait does — and costs no wake-up latency either way.
// Without the `cuda` feature only the tests below drive this loop.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::batch::{Batch, Part, Rows, Sinks, fail, finish};
use super::explain::{Scratch, explain};
use super::{EngineError, Message, Metrics};
use crate::model::Pipelined;
use crate::model::explain::Occlusion;

struct InFlight<T> {
    batch: Batch,
    ticket: T,
    submitted: Instant,
}

/// Runs worker `id` over `batches` until the batcher hangs up, then finishes what is in flight.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<P: Pipelined>(
    model: &mut P,
    occlusion: Option<&Occlusion>,
    id: usize,
    batches: &Receiver<Batch>,
    batcher: &Sender<Message>,
    sinks: &Sinks,
    rows: &mut Rows,
    max_batch_size: usize,
) {
    let metrics = &*sinks.metrics;
    // A batch's explanation pass is one submission of up to every row with its occluded copies,
    // into the slot its batch just freed: a second one would find the next slot busy with the
    // batch behind it, and buffers cannot grow while that one is in flight. So the buffers are
    // sized for it up front.
    let largest = occlusion.map_or(max_batch_size, |o| max_batch_size * (o.groups() + 1));
    if let Err(e) = model.reserve(largest) {
        tracing::error!(error = %e, rows = largest, "sizing the device buffers");
    }
    let mut in_flight: VecDeque<InFlight<P::Ticket>> = VecDeque::new();
    let mut scratch = Scratch::default();
    let mut complete = |model: &mut P, rows: &mut Rows, job: InFlight<P::Ticket>| {
        rows.out.resize(job.batch.rows, 0.0);
        let result = model
            .wait(job.ticket, &mut rows.out)
            .and_then(|()| {
                // The batch's slot is free again: the explanation pass takes it, synchronously.
                explain(
                    &job.batch,
                    &rows.out,
                    occlusion,
                    &mut scratch,
                    largest,
                    |n, c, r, out| model.logits(n, c, r, out),
                )
            })
            .map(|explained| (&rows.out[..], explained))
            .map_err(EngineError::Model);
        finish(sinks, job.batch, result, job.submitted);
    };
    // Set once the device is unusable: from then on no device call is made (a broken CUDA context
    // can hang as well as fail) and every batch fails at once, so that clients retry elsewhere
    // rather than wait for their deadlines, while liveness fails and the process gets restarted.
    let mut broken: Option<EngineError> = None;
    loop {
        if let Some(error) = &broken {
            let Ok(batch) = batches.recv() else { break };
            fail(&batch, error);
            if batcher.send(Message::Idle(id)).is_err() {
                break;
            }
            continue;
        }
        let next = match in_flight.front() {
            None => batches.recv().map_err(|_| TryRecvError::Disconnected),
            Some(_) => batches.try_recv(),
        };
        let batch = match next {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                if let Some(oldest) = in_flight.front()
                    && (!model.has_free_slot() || model.is_done(&oldest.ticket))
                    && let Some(job) = in_flight.pop_front()
                {
                    complete(model, rows, job);
                    broken = check_device(model, id, metrics, &mut in_flight);
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
        };
        if !model.has_free_slot()
            && let Some(job) = in_flight.pop_front()
        {
            complete(model, rows, job);
            broken = check_device(model, id, metrics, &mut in_flight);
        }
        if let Some(error) = &broken {
            fail(&batch, error);
        } else {
            let submitted = Instant::now();
            // The parts go straight into the device's upload buffer: no gathered copy first.
            match model.submit(batch.parts.iter().map(Part::features), batch.rows) {
                Ok(ticket) => in_flight.push_back(InFlight {
                    batch,
                    ticket,
                    submitted,
                }),
                Err(e) => {
                    finish(sinks, batch, Err(EngineError::Model(e)), submitted);
                    broken = check_device(model, id, metrics, &mut in_flight);
                }
            }
        }
        if batcher.send(Message::Idle(id)).is_err() {
            break;
        }
    }
    // Batches still in flight at shutdown (none once the device broke: `check_device` failed them).
    while let Some(job) = in_flight.pop_front() {
        complete(model, rows, job);
        check_device(model, id, metrics, &mut in_flight);
    }
}

/// After a failure: if the device is now unusable, records why (liveness reads it), fails the
/// batches still in flight without touching the device, and returns the error for later batches.
fn check_device<P: Pipelined>(
    model: &P,
    id: usize,
    metrics: &Metrics,
    in_flight: &mut VecDeque<InFlight<P::Ticket>>,
) -> Option<EngineError> {
    let reason = model.broken()?;
    tracing::error!(worker = id, %reason, "device unusable: failing every batch until restarted");
    let _ = metrics.device_failure.set(reason.clone());
    let error = EngineError::DeviceFailed(reason);
    for job in in_flight.drain(..) {
        fail(&job.batch, &error);
    }
    Some(error)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

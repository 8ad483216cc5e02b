//! Tests of the pipelined worker loop with a fake in-flight model.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::engine::EngineError;
use crate::engine::batch::{Answer, Job, Part};
use crate::features::FeatureBatch;
use crate::model::explain::logit_of;
use crate::model::fused::{DenseT, EmbeddingTable, FusedDcn};
use crate::model::staging::{self, PartRows};

/// Two slots over the CPU pass. Scores are computed at submit and handed out only at wait, so
/// a slot mix-up shows as wrong scores and a third batch in flight as an error.
struct TwoSlots {
    net: FusedDcn,
    /// Scores and when they are "computed".
    slots: [Option<(Vec<f32>, Instant)>; 2],
    next: usize,
    max_in_flight: usize,
    compute: Duration,
    /// A batch of this many rows "breaks the device" when waited for, as a sticky CUDA error.
    breaks_on_rows: Option<usize>,
    broken: Option<String>,
    /// Submits after the device broke: the loop must make none.
    submits_when_broken: usize,
}

impl TwoSlots {
    fn new(compute: Duration) -> Self {
        TwoSlots {
            net: net(),
            slots: [None, None],
            next: 0,
            max_in_flight: 0,
            compute,
            breaks_on_rows: None,
            broken: None,
            submits_when_broken: 0,
        }
    }
}

impl Pipelined for TwoSlots {
    type Ticket = usize;

    fn reserve(&mut self, _rows: usize) -> Result<(), String> {
        Ok(())
    }

    fn has_free_slot(&self) -> bool {
        self.slots[self.next].is_none()
    }

    fn submit<'a>(
        &mut self,
        parts: impl IntoIterator<Item = PartRows<'a>>,
        rows: usize,
    ) -> Result<usize, String> {
        if self.broken.is_some() {
            self.submits_when_broken += 1;
        }
        if !self.has_free_slot() {
            return Err("both slots in flight".into());
        }
        // Staged as the GPU replica stages them (one block of words), then read back the same way
        // its kernels read them: the engine's parts reach the model through that layout.
        let (nn, nc) = (self.net.n_numeric, self.net.embeddings.len());
        let cardinalities: Vec<u32> = self
            .net
            .embeddings
            .iter()
            .map(|t| t.cardinality as u32)
            .collect();
        let mut words = vec![0u32; rows * (nn + nc)];
        staging::stage(&mut words, parts, rows, rows, nn, &cardinalities)?;
        let numeric: Vec<f32> = words[..rows * nn]
            .iter()
            .map(|&w| f32::from_bits(w))
            .collect();
        let mut out = vec![0.0; rows];
        self.net
            .run(&numeric, &words[rows * nn..], rows, &mut out)?;
        let slot = self.next;
        self.slots[slot] = Some((out, Instant::now() + self.compute));
        self.next = 1 - slot;
        let busy = self.slots.iter().filter(|s| s.is_some()).count();
        self.max_in_flight = self.max_in_flight.max(busy);
        Ok(slot)
    }

    fn is_done(&self, ticket: &usize) -> bool {
        self.slots[*ticket]
            .as_ref()
            .is_none_or(|(_, ready)| Instant::now() >= *ready)
    }

    fn wait(&mut self, ticket: usize, out: &mut [f32]) -> Result<(), String> {
        let (scores, ready) = self.slots[ticket].take().ok_or("waited for a free slot")?;
        std::thread::sleep(ready.saturating_duration_since(Instant::now()));
        if Some(scores.len()) == self.breaks_on_rows {
            let error = "CUDA driver: CUDA_ERROR_ILLEGAL_ADDRESS".to_string();
            self.broken = Some(error.clone());
            return Err(error);
        }
        if scores.len() != out.len() {
            return Err(format!("{} scores for {} outputs", scores.len(), out.len()));
        }
        out.copy_from_slice(&scores);
        Ok(())
    }

    fn broken(&self) -> Option<String> {
        self.broken.clone()
    }
}

/// A small network with weights from a fixed formula.
fn net() -> FusedDcn {
    let w = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) / 20.0)
            .collect()
    };
    let dense = |input, output, seed| {
        DenseT::from_torch(&w(input * output, seed), w(output, seed + 1), input, output)
    };
    let table = EmbeddingTable {
        weight: w(5 * 2, 3),
        cardinality: 5,
        dim: 2,
    };
    FusedDcn::new(
        3,
        vec![table],
        vec![dense(5, 5, 4)],
        vec![dense(5, 4, 6)],
        w(4, 8),
        0.1,
    )
}

fn job(seed: usize, rows: usize) -> (Arc<Job>, Answer) {
    job_with(seed, rows, |_| {})
}

fn job_with(seed: usize, rows: usize, edit: impl FnOnce(&mut FeatureBatch)) -> (Arc<Job>, Answer) {
    let mut features = FeatureBatch {
        rows,
        n_numeric: 3,
        n_categorical: 1,
        numeric: (0..rows * 3)
            .map(|i| ((i * 7 + seed) % 13) as f32 / 6.0 - 1.0)
            .collect(),
        categorical: (0..rows).map(|i| ((i + seed) % 5) as u32).collect(),
    };
    edit(&mut features);
    Job::new(features, Instant::now() + Duration::from_secs(60))
}

/// Packs the jobs' rows into batches of at most `max` rows, splitting jobs across batches.
fn batches(jobs: &[Arc<Job>], max: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut rows = 0;
    for job in jobs {
        let mut start = 0;
        while start < job.features.rows {
            let len = (job.features.rows - start).min(max - rows);
            parts.push(Part {
                job: job.clone(),
                start,
                len,
            });
            start += len;
            rows += len;
            if rows == max {
                out.push(Batch {
                    parts: std::mem::take(&mut parts),
                    rows,
                    oldest: Instant::now(),
                    dispatched: Instant::now(),
                });
                rows = 0;
            }
        }
    }
    if rows > 0 {
        out.push(Batch {
            parts,
            rows,
            oldest: Instant::now(),
            dispatched: Instant::now(),
        });
    }
    out
}

/// Hands out batches the way the batcher does: one to an idle worker, the next on `Idle`.
fn drive(model: &mut TwoSlots, batches: Vec<Batch>) -> Sinks {
    drive_explained(model, None, batches)
}

fn drive_explained(
    model: &mut TwoSlots,
    occlusion: Option<&Occlusion>,
    batches: Vec<Batch>,
) -> Sinks {
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(1);
    let (msg_tx, msg_rx) = crossbeam_channel::unbounded();
    let feeder = std::thread::spawn(move || {
        for (i, batch) in batches.into_iter().enumerate() {
            if i > 0 && !matches!(msg_rx.recv(), Ok(Message::Idle(7))) {
                panic!("expected worker 7 to report idle");
            }
            batch_tx.send(batch).expect("worker alive");
        }
    });
    let sinks = Sinks {
        metrics: Arc::new(Metrics::new().unwrap()),
        totals: Arc::default(),
        tap: None,
    };
    run(
        model,
        occlusion,
        7,
        &batch_rx,
        &msg_tx,
        &sinks,
        &mut Rows::default(),
        64,
    );
    feeder.join().unwrap();
    sinks
}

#[test]
fn every_request_gets_its_own_scores_with_two_batches_in_flight() {
    let mut model = TwoSlots::new(Duration::from_millis(3));
    let (jobs, answers): (Vec<_>, Vec<_>) = (0..40).map(|i| job(i, 1 + (i * 13) % 50)).unzip();
    let batches = batches(&jobs, 64);
    assert!(batches.len() >= 10, "{} batches", batches.len());
    drive(&mut model, batches);
    for (job, mut answer) in jobs.iter().zip(answers) {
        let f = &job.features;
        let mut want = vec![0.0; f.rows];
        model
            .net
            .run(&f.numeric, &f.categorical, f.rows, &mut want)
            .unwrap();
        let got = answer.try_recv().expect("answered").expect("scored");
        assert_eq!(got.scores, want);
    }
    // Each batch "computes" for 3 ms: the next one arrives meanwhile and is submitted beside it.
    assert_eq!(model.max_in_flight, 2);
}

#[test]
fn rows_that_ask_get_the_reasons_of_their_occluded_scores_through_the_slots() {
    // Two groups over the small net: the numeric columns 0–1, and column 2 with the category.
    let occlusion =
        Occlusion::from_groups(vec![(vec![0, 1], vec![]), (vec![2], vec![(0, 4)])], 3, 1);
    let mut model = TwoSlots::new(Duration::from_millis(1));
    let (asked, mut answer_asked) = {
        let features = job(5, 30).0.features.clone();
        Job::explained(
            features,
            Instant::now() + Duration::from_secs(60),
            Some(f64::NEG_INFINITY),
            crate::engine::Lane::Interactive,
        )
    };
    let (plain, mut answer_plain) = job(6, 20);
    // Both in one batch of 40 and the rest in another: the explanation pass runs while the
    // second batch is in flight, in one submission into the slot the first batch freed.
    let all = batches(&[asked.clone(), plain], 40);
    drive_explained(&mut model, Some(&occlusion), all);
    let got = answer_asked.try_recv().unwrap().unwrap();
    let f = &asked.features;
    for row in 0..f.rows {
        let (mut n, mut c) = (Vec::new(), Vec::new());
        occlusion.occlude(
            &f.numeric[row * 3..(row + 1) * 3],
            &f.categorical[row..row + 1],
            &mut n,
            &mut c,
        );
        let mut occluded = vec![0.0; 3];
        model.net.run(&n, &c, 3, &mut occluded).unwrap();
        assert_eq!(
            occluded[0], got.scores[row],
            "the row itself leads its copies"
        );
        let logits: Vec<f32> = occluded.iter().map(|&p| logit_of(p)).collect();
        let want = occlusion.reasons(&logits);
        assert_eq!(got.reasons[row].as_ref(), Some(&want), "row {row}");
    }
    let plain = answer_plain.try_recv().unwrap().unwrap();
    assert!(
        plain.reasons.is_empty(),
        "a job that asked for none gets none"
    );
}

#[test]
fn a_failed_batch_fails_its_requests_and_the_rest_are_scored() {
    let mut model = TwoSlots::new(Duration::ZERO);
    let (good_a, mut answer_a) = job(1, 10);
    // An id outside the 5-row table: the CPU pass refuses the batch it is in.
    let (bad, mut answer_bad) = job_with(2, 4, |f| f.categorical[2] = 9);
    let (good_b, mut answer_b) = job(3, 30);
    let mut all = batches(std::slice::from_ref(&good_a), 64);
    all.extend(batches(std::slice::from_ref(&bad), 64));
    all.extend(batches(std::slice::from_ref(&good_b), 64));
    let sinks = drive(&mut model, all);
    assert!(answer_a.try_recv().unwrap().is_ok());
    assert!(answer_b.try_recv().unwrap().is_ok());
    let failed = answer_bad.try_recv().unwrap().unwrap_err();
    assert!(
        matches!(&failed, EngineError::Model(m) if m.contains("index 9")),
        "{failed:?}"
    );
    // The engine's own totals count the two batches that scored, by size; the failed one is in
    // its request's failure only (Triton counts successful executions).
    let totals = &sinks.totals;
    assert_eq!(totals.batches_and_rows(), (2, 40));
    assert_eq!(sinks.metrics.rows_scored(), 40);
    let sizes: Vec<_> = totals
        .by_size()
        .into_iter()
        .map(|(rows, (count, _))| (rows, count))
        .collect();
    assert_eq!(sizes, vec![(10, 1), (30, 1)]);
}

#[test]
fn after_a_sticky_error_every_batch_fails_at_once_and_the_device_is_left_alone() {
    let mut model = TwoSlots::new(Duration::from_millis(2));
    model.breaks_on_rows = Some(7);
    let (a, mut answer_a) = job(1, 10);
    let (breaking, mut answer_breaking) = job(2, 7);
    let (later, answers_later): (Vec<_>, Vec<_>) = (3..9).map(|i| job(i, 5 + i)).unzip();
    let mut all = batches(std::slice::from_ref(&a), 64);
    all.extend(batches(std::slice::from_ref(&breaking), 64));
    for job in &later {
        all.extend(batches(std::slice::from_ref(job), 64));
    }
    let metrics = drive(&mut model, all).metrics;
    assert!(
        answer_a.try_recv().unwrap().is_ok(),
        "scored before the failure"
    );
    let failed = answer_breaking.try_recv().unwrap().unwrap_err();
    assert!(
        matches!(&failed, EngineError::Model(m) if m.contains("ILLEGAL_ADDRESS")),
        "{failed:?}"
    );
    // Whether a later batch was already in flight or came after, it fails as device_failed.
    for mut answer in answers_later {
        let e = answer.try_recv().expect("answered").unwrap_err();
        assert!(
            matches!(&e, EngineError::DeviceFailed(m) if m.contains("ILLEGAL_ADDRESS")),
            "{e:?}"
        );
    }
    assert_eq!(
        model.submits_when_broken, 0,
        "no device call after the failure"
    );
    assert_eq!(
        metrics.device_failure.get().map(String::as_str),
        Some("CUDA driver: CUDA_ERROR_ILLEGAL_ADDRESS"),
        "recorded for liveness"
    );
}

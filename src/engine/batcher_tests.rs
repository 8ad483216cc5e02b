//! The batcher against a fake worker: the test holds the worker's end of the channel, so it decides
//! when the worker is busy and sees every batch exactly as a worker would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::batch::{Answer, Batch, Job};
use super::batcher::Batcher;
use super::{Engine, EngineError, Lane, Message, Metrics};
use crate::config::EngineConfig;
use crate::features::FeatureBatch;

struct Harness {
    tx: Sender<Message>,
    batches: Receiver<Batch>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    busy: std::cell::Cell<bool>,
    thread: Option<JoinHandle<()>>,
}

fn rows(n: usize) -> FeatureBatch {
    FeatureBatch {
        rows: n,
        n_numeric: 1,
        n_categorical: 0,
        numeric: (0..n).map(|i| i as f32).collect(),
        categorical: Vec::new(),
    }
}

impl Harness {
    fn new(max_batch_size: usize, max_queue_delay_us: u64) -> Harness {
        let config = EngineConfig {
            max_batch_size,
            max_queue_delay_us,
            ..EngineConfig::default()
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let (wtx, batches) = crossbeam_channel::bounded(1);
        let queued = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new().unwrap());
        let b = Batcher::new(&config, vec![wtx], None, queued.clone(), metrics.clone());
        let thread = std::thread::spawn(move || b.run(rx));
        Harness {
            tx,
            batches,
            queued,
            metrics,
            busy: std::cell::Cell::new(false),
            thread: Some(thread),
        }
    }

    /// Submits `n` rows due by `deadline`, as `Engine::score` does.
    fn submit(&self, n: usize, deadline: Duration) -> (Arc<Job>, Answer) {
        self.submit_in(Lane::Interactive, n, deadline)
    }

    /// [`Harness::submit`] in `lane`.
    fn submit_in(&self, lane: Lane, n: usize, deadline: Duration) -> (Arc<Job>, Answer) {
        let (job, answer) = Job::explained(rows(n), Instant::now() + deadline, None, lane);
        self.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.send(Message::Submit(job.clone())).unwrap();
        (job, answer)
    }

    /// The next batch the worker gets (the worker is busy until [`Harness::idle`]).
    fn next_batch(&self) -> Batch {
        let batch = self
            .batches
            .recv_timeout(Duration::from_secs(5))
            .expect("a batch");
        self.busy.set(true);
        batch
    }

    /// Hands the worker a one-row batch and keeps it busy; returns that request's answer.
    fn make_busy(&self) -> Answer {
        let (_, answer) = self.submit(1, LONG);
        let _ = self.next_batch();
        answer
    }

    fn idle(&self) {
        self.busy.set(false);
        self.tx.send(Message::Idle(0)).unwrap();
    }

    fn nothing_dispatched(&self) -> bool {
        self.batches
            .recv_timeout(Duration::from_millis(50))
            .is_err()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The batcher stops once its worker is idle and nothing is queued: finish what is left.
        let _ = self.tx.send(Message::Shutdown);
        if self.busy.get() {
            let _ = self.tx.send(Message::Idle(0));
        }
        while self
            .batches
            .recv_timeout(Duration::from_millis(100))
            .is_ok()
        {
            let _ = self.tx.send(Message::Idle(0));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (job, start, len) of each part, with jobs named by their index in `jobs`.
fn layout(batch: &Batch, jobs: &[&Arc<Job>]) -> Vec<(usize, usize, usize)> {
    batch
        .parts
        .iter()
        .map(|p| {
            let j = jobs
                .iter()
                .position(|j| Arc::ptr_eq(j, &p.job))
                .expect("a known job");
            (j, p.start, p.len)
        })
        .collect()
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn an_idle_worker_gets_rows_at_once_and_a_busy_one_gets_them_packed_across_requests() {
    let h = Harness::new(512, 10_000_000);
    let (first, _a0) = h.submit(1, LONG);
    let batch = h.next_batch();
    assert_eq!(
        layout(&batch, &[&first]),
        [(0, 0, 1)],
        "no wait for more rows"
    );
    // The worker is busy: three requests join one open batch, in arrival order.
    let (j1, _a1) = h.submit(2, LONG);
    let (j2, _a2) = h.submit(3, LONG);
    let (j3, _a3) = h.submit(4, LONG);
    assert!(h.nothing_dispatched(), "nothing goes to a busy worker");
    h.idle();
    let batch = h.next_batch();
    assert_eq!(batch.rows, 9);
    assert_eq!(
        layout(&batch, &[&j1, &j2, &j3]),
        [(0, 0, 2), (1, 0, 3), (2, 0, 4)]
    );
    assert_eq!(
        h.queued.load(Ordering::Acquire),
        0,
        "dispatched rows leave the queue count"
    );
}

#[test]
fn a_batch_is_sealed_once_its_oldest_row_has_waited_the_delay() {
    let h = Harness::new(512, 5_000);
    let _busy = h.make_busy();
    let (early, _a1) = h.submit(2, LONG);
    std::thread::sleep(Duration::from_millis(40));
    // Sealed: a later request starts a new batch instead of joining it.
    let (late, _a2) = h.submit(3, LONG);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&early, &late]), [(0, 0, 2)]);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&early, &late]), [(1, 0, 3)]);
}

#[test]
fn a_request_larger_than_the_room_left_spans_batches_of_at_most_max_batch_size() {
    let h = Harness::new(4, 10_000_000);
    let _busy = h.make_busy();
    let (big, _a1) = h.submit(6, LONG);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&big]), [(0, 0, 4)]);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&big]), [(0, 4, 2)]);
}

#[test]
fn rows_past_their_deadline_are_dropped_before_dispatch_and_their_request_fails() {
    let h = Harness::new(512, 10_000_000);
    let _busy = h.make_busy();
    let (late, mut late_answer) = h.submit(3, Duration::from_millis(5));
    let (fine, _a2) = h.submit(2, LONG);
    std::thread::sleep(Duration::from_millis(30));
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&late, &fine]), [(1, 0, 2)]);
    assert_eq!(
        late_answer.try_recv(),
        Ok(Err(EngineError::DeadlineExceeded))
    );
    assert_eq!(h.metrics.rows_expired.load(Ordering::Relaxed), 3);
    assert_eq!(h.metrics.rejections.deadline.load(Ordering::Relaxed), 1);
}

#[test]
fn rows_whose_caller_has_gone_are_skipped() {
    let h = Harness::new(512, 10_000_000);
    let _busy = h.make_busy();
    let (gone, answer) = h.submit(5, LONG);
    drop(answer);
    let (kept, _a2) = h.submit(2, LONG);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&gone, &kept]), [(1, 0, 2)]);
    assert_eq!(h.metrics.rows_abandoned.load(Ordering::Relaxed), 5);
}

#[test]
fn bulk_rows_only_fill_the_room_interactive_rows_leave() {
    let h = Harness::new(4, 10_000_000);
    let _busy = h.make_busy();
    // A backlog arrives first, a payment after it: the payment still leads the next batch.
    let (backlog, _a1) = h.submit_in(Lane::Bulk, 7, LONG);
    let (payment, _a2) = h.submit(3, LONG);
    h.idle();
    assert_eq!(
        layout(&h.next_batch(), &[&payment, &backlog]),
        [(0, 0, 3), (1, 0, 1)],
        "the payment first, the backlog in the room it leaves"
    );
    // Nothing interactive waits: the backlog forms full batches of its own, in order.
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&backlog]), [(0, 1, 4)]);
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&backlog]), [(0, 5, 2)]);
    assert_eq!(h.queued.load(Ordering::Acquire), 0);
}

#[test]
fn an_idle_worker_gets_bulk_rows_at_once() {
    let h = Harness::new(512, 10_000_000);
    let (backlog, _a) = h.submit_in(Lane::Bulk, 5, LONG);
    assert_eq!(layout(&h.next_batch(), &[&backlog]), [(0, 0, 5)]);
}

#[test]
fn bulk_rows_past_their_deadline_fail_like_interactive_ones() {
    let h = Harness::new(512, 10_000_000);
    let _busy = h.make_busy();
    let (late, mut answer) = h.submit_in(Lane::Bulk, 3, Duration::from_millis(5));
    let (fine, _a) = h.submit_in(Lane::Bulk, 2, LONG);
    std::thread::sleep(Duration::from_millis(30));
    h.idle();
    assert_eq!(layout(&h.next_batch(), &[&late, &fine]), [(1, 0, 2)]);
    assert_eq!(answer.try_recv(), Ok(Err(EngineError::DeadlineExceeded)));
}

/// An engine on the bundled model (CPU), its metrics, and a maker of zero-feature batches.
fn bundled_engine(
    config: &EngineConfig,
) -> (
    Engine,
    Arc<Metrics>,
    impl Fn(usize) -> FeatureBatch + Send + 'static,
) {
    let package =
        crate::model::ModelPackage::load(concat!(env!("CARGO_MANIFEST_DIR"), "/models/pix-fraud"))
            .unwrap();
    let model = crate::model::DcnModel::from_package(&package, &candle_core::Device::Cpu).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let engine = Engine::start(config, vec![model], metrics.clone()).unwrap();
    let (nn, nc) = (
        package.config.features.numeric.len(),
        package.config.features.categorical.len(),
    );
    let batch = move |n: usize| FeatureBatch {
        rows: n,
        n_numeric: nn,
        n_categorical: nc,
        numeric: vec![0.0; n * nn],
        categorical: vec![0; n * nc],
    };
    (engine, metrics, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_fit_the_queue_bound_is_refused_at_once() {
    let config = EngineConfig {
        max_queue_rows: 4,
        test_worker_delay_us: 300_000,
        ..EngineConfig::default()
    };
    let (engine, metrics, batch) = bundled_engine(&config);
    let engine = Arc::new(engine);
    let deadline = Instant::now() + LONG;
    let (e1, e2) = (engine.clone(), engine.clone());
    let (one, three) = (batch(1), batch(3));
    let computing = tokio::spawn(async move { e1.score(one, deadline).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = tokio::spawn(async move { e2.score(three, deadline).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let refused = engine.score(batch(2), deadline).await;
    assert_eq!(
        refused,
        Err(EngineError::Overloaded {
            queued: 3,
            limit: 4
        })
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "refused without waiting"
    );
    assert_eq!(metrics.rejections.overloaded.load(Ordering::Relaxed), 1);
    // Bulk work is held to half of the bound: with 3 rows queued even one more is refused.
    assert_eq!(
        engine.score_in(Lane::Bulk, batch(1), deadline, None).await,
        Err(EngineError::Overloaded {
            queued: 3,
            limit: 2
        })
    );
    assert_eq!(computing.await.unwrap().unwrap().scores.len(), 1);
    assert_eq!(queued.await.unwrap().unwrap().scores.len(), 3);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_batches_are_computed_but_not_counted() {
    let (engine, metrics, batch) = bundled_engine(&EngineConfig::default());
    let counts = || {
        (
            metrics.rows_scored(),
            metrics.batch_size.snapshot().2,
            metrics.compute.prom.snapshot().2,
            metrics.queue.prom.snapshot().2,
        )
    };
    let deadline = Instant::now() + LONG;
    let warm = engine.warm_up(batch(8), deadline).await.unwrap();
    assert_eq!(warm.scores.len(), 8);
    assert_eq!(counts(), (0, 0, 0, 0));
    let scored = engine.score(batch(3), deadline).await.unwrap();
    assert_eq!(scored.scores, warm.scores[..3]);
    assert_eq!(counts(), (3, 1, 1, 1));
    engine.shutdown();
}

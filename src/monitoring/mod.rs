//! Model monitoring: the distribution of every model feature and of the score, per served
//! version, over sliding windows, compared with the training reference the package carries
//! (population stability index), and the decision rates. docs/monitoring.md.
//!
//! The engine's workers hand each computed batch's feature rows and scores to a [`Tap`] before
//! they answer its requests: a copy into a bounded channel, never a wait (a full channel drops the
//! sample and counts it). One monitor thread per version owns every count: every 20 ms it bins
//! what was queued (waking per batch would cost a saturated core more than the binning), rotates
//! the windows and publishes a [`Report`] each second for `/metrics`; `/v1/monitoring`
//! and `pixguard batch` ask it for a fresh one, which it answers after binning every sample
//! already queued.

mod report;
mod window;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;

use crate::model::training_reference::bin_of;
pub use crate::model::training_reference::{FeatureReference, Reference, psi};
use crate::model::{Decision, Thresholds};
pub use report::{Drift, DriftSummary, FeaturePsi, ReferenceInfo, Report, WindowReport};
use window::Window;

/// Batches a monitor may have queued before samples are dropped: ten times what 5,000 batches a
/// second leave between two ticks.
const QUEUE_BATCHES: usize = 1024;
/// How often the monitor thread bins what the workers queued.
const TICK: Duration = Duration::from_millis(20);
/// How often the published report is refreshed while rows arrive.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// The name of the count since the version started serving.
pub const ALL: &str = "all";
/// The windows every monitor keeps: name, bucket length, buckets. `all` is one bucket that never
/// expires.
const WINDOWS: [(&str, Duration, usize); 3] = [
    ("10m", Duration::from_secs(60), 10),
    ("24h", Duration::from_secs(3600), 24),
    (ALL, Duration::MAX, 1),
];

/// Which served version: the one answering, the canary answering a share of requests, or the
/// challenger in the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The version that answers (`model.source`).
    Champion,
    /// The challenger scored in the shadow (`model.shadow`).
    Challenger,
    /// The version that answers `model.canary_fraction` of requests (`model.canary`).
    Canary,
}

impl Role {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
            Role::Canary => "canary",
        }
    }

    /// The `role` a score record names (the decision log's, the Kafka source's output): absent for
    /// the champion's answers, whose records were always without one.
    pub fn in_records(self) -> Option<&'static str> {
        (self != Role::Champion).then(|| self.as_str())
    }
}

/// What a monitor is set up with.
pub struct Setup {
    /// Model name.
    pub model: String,
    /// Version as the answers name it.
    pub version: String,
    /// Champion, canary or challenger.
    pub role: Role,
    /// The package's training reference, if it has one.
    pub reference: Option<Reference>,
    /// Thresholds in force (decision rates follow them).
    pub thresholds: Thresholds,
}

/// The rows of one computed batch, copied for the monitor.
struct Sample {
    rows: usize,
    numeric: Vec<f32>,
    categorical: Vec<u32>,
    scores: Vec<f32>,
}

enum Control {
    Report(tokio::sync::oneshot::Sender<Arc<Report>>),
}

/// Where an engine's workers hand over their batches; cheap to clone.
#[derive(Clone)]
pub struct Tap {
    tx: Sender<Sample>,
    on: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    /// Copies a computed batch (feature rows as parts of jobs, in order, and their scores) to the
    /// monitor, unless it is not yet observing or its queue is full.
    pub fn offer<'a>(&self, parts: impl Iterator<Item = (&'a [f32], &'a [u32])>, scores: &[f32]) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        // Sized first: growing the copies doubled them and showed in `pixguard batch`'s profile.
        let parts: Vec<_> = parts.collect();
        let mut sample = Sample {
            rows: scores.len(),
            numeric: Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum()),
            categorical: Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum()),
            scores: scores.to_vec(),
        };
        for (numeric, categorical) in parts {
            sample.numeric.extend_from_slice(numeric);
            sample.categorical.extend_from_slice(categorical);
        }
        match self.tx.try_send(sample) {
            Ok(()) => {}
            Err(TrySendError::Full(s)) | Err(TrySendError::Disconnected(s)) => {
                self.dropped.fetch_add(s.rows as u64, Ordering::Relaxed);
            }
        }
    }
}

/// A running monitor: its thread stops when this is dropped.
pub struct Monitor {
    tap: Tap,
    control: Sender<Control>,
    published: Arc<ArcSwap<Report>>,
}

impl Monitor {
    /// Starts the monitor thread; it observes nothing until [`Monitor::start_observing`].
    pub fn start(setup: Setup, priority: crate::threads::Priority) -> std::io::Result<Monitor> {
        let (tx, samples) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (control, controls) = crossbeam_channel::unbounded();
        let dropped = Arc::new(AtomicU64::new(0));
        let state = State::new(setup, dropped.clone());
        let published = Arc::new(ArcSwap::from_pointee(state.report()));
        let out = published.clone();
        crate::threads::spawn("pixguard-monitor", priority, move || {
            state.run(&samples, &controls, &out)
        })?;
        Ok(Monitor {
            tap: Tap {
                tx,
                on: Arc::new(AtomicBool::new(false)),
                dropped,
            },
            control,
            published,
        })
    }

    /// The tap the engine's workers feed.
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    /// From now on batches are observed (warm-up batches are not traffic).
    pub fn start_observing(&self) {
        self.tap.on.store(true, Ordering::Relaxed);
    }

    /// The report published last (at most `PUBLISH_EVERY` old while rows arrive).
    pub fn published(&self) -> Arc<Report> {
        self.published.load_full()
    }

    /// A fresh report, after every batch already handed over is counted.
    pub async fn report(&self) -> Arc<Report> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.control.send(Control::Report(tx)).is_err() {
            return self.published();
        }
        rx.await.unwrap_or_else(|_| self.published())
    }
}

/// Where each tracked value's bins sit in a flat count vector.
struct Layout {
    /// Numeric features: (offset, edges).
    numeric: Vec<(usize, Vec<f64>)>,
    /// Categorical features: (offset, bin of each vocabulary index, the "other" bin).
    categorical: Vec<(usize, Vec<u32>, u32)>,
    /// The score's bins: (offset, edges), when there is a reference.
    score: Option<(usize, Vec<f64>)>,
    /// Every binned value's counters, in the reference's order: its features, then the score.
    spans: Vec<Range<usize>>,
    /// The three decision counters.
    decisions: usize,
    width: usize,
}

impl Layout {
    fn new(reference: Option<&Reference>) -> Layout {
        let mut layout = Layout {
            numeric: Vec::new(),
            categorical: Vec::new(),
            score: None,
            spans: Vec::new(),
            decisions: 0,
            width: 0,
        };
        let Some(reference) = reference else {
            layout.width = Decision::ALL.len();
            return layout;
        };
        let mut at = 0;
        for f in &reference.features {
            match f {
                FeatureReference::Numeric { bins, .. } => {
                    layout.numeric.push((at, bins.edges.clone()));
                }
                FeatureReference::Categorical { categories, .. } => {
                    let other = categories.len() as u32;
                    let size = categories.last().map_or(0, |&c| c as usize + 1);
                    let mut lookup = vec![other; size];
                    for (bin, &c) in categories.iter().enumerate() {
                        lookup[c as usize] = bin as u32;
                    }
                    layout.categorical.push((at, lookup, other));
                }
            }
            layout.spans.push(at..at + f.proportions().len());
            at += f.proportions().len();
        }
        layout.score = Some((at, reference.score.edges.clone()));
        layout
            .spans
            .push(at..at + reference.score.proportions.len());
        at += reference.score.proportions.len();
        layout.decisions = at;
        layout.width = at + Decision::ALL.len();
        layout
    }

    fn count(&self, s: &Sample, thresholds: &Thresholds, counts: &mut [u64]) {
        let (nn, nc) = (self.numeric.len(), self.categorical.len());
        for r in 0..s.rows {
            if nn > 0 {
                let row = &s.numeric[r * nn..(r + 1) * nn];
                for ((at, edges), &x) in self.numeric.iter().zip(row) {
                    counts[at + bin_of(edges, f64::from(x))] += 1;
                }
            }
            if nc > 0 {
                let row = &s.categorical[r * nc..(r + 1) * nc];
                for ((at, lookup, other), &c) in self.categorical.iter().zip(row) {
                    counts[at + *lookup.get(c as usize).unwrap_or(other) as usize] += 1;
                }
            }
            let score = f64::from(s.scores[r]);
            if let Some((at, edges)) = &self.score {
                counts[at + bin_of(edges, score)] += 1;
            }
            let d = thresholds.decide(score) as usize;
            counts[self.decisions + d] += 1;
        }
    }
}

/// The monitor thread's state: nothing else touches it.
struct State {
    setup: Setup,
    layout: Layout,
    started: Instant,
    windows: Vec<Window>,
    /// Whether any row was ever observed (from then on the report is republished every second).
    observed: bool,
    dropped: Arc<AtomicU64>,
    malformed: u64,
}

impl State {
    fn new(setup: Setup, dropped: Arc<AtomicU64>) -> State {
        let layout = Layout::new(setup.reference.as_ref());
        let windows = WINDOWS
            .iter()
            .map(|&(name, bucket, n)| Window::new(name, bucket, n, layout.width))
            .collect();
        State {
            observed: false,
            layout,
            setup,
            started: Instant::now(),
            windows,
            dropped,
            malformed: 0,
        }
    }

    fn run(
        mut self,
        samples: &Receiver<Sample>,
        controls: &Receiver<Control>,
        out: &ArcSwap<Report>,
    ) {
        let mut next_publish = Instant::now() + PUBLISH_EVERY;
        loop {
            // The thread wakes on a tick, not on each sample: a worker's `try_send` then never
            // has a sleeping receiver to wake, which on a saturated core costs more than the
            // binning itself (two context switches per batch).
            match controls.recv_timeout(TICK) {
                Ok(Control::Report(reply)) => {
                    self.drain(samples);
                    let report = Arc::new(self.report());
                    out.store(report.clone());
                    let _ = reply.send(report);
                }
                Err(RecvTimeoutError::Timeout) => self.drain(samples),
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_publish {
                // Windows move on with time even when no rows come, so a monitor that ever saw
                // rows republishes every second.
                if self.observed {
                    out.store(Arc::new(self.report()));
                }
                next_publish = Instant::now() + PUBLISH_EVERY;
            }
        }
    }

    /// Bins every sample queued now.
    fn drain(&mut self, samples: &Receiver<Sample>) {
        while let Ok(s) = samples.try_recv() {
            self.observe(&s);
        }
    }

    fn observe(&mut self, s: &Sample) {
        let (nn, nc) = (self.layout.numeric.len(), self.layout.categorical.len());
        // Rows of another shape cannot be binned (a tap is per engine, so this is a bug guard).
        if s.scores.len() != s.rows
            || (nn > 0 && s.numeric.len() != s.rows * nn)
            || (nc > 0 && s.categorical.len() != s.rows * nc)
        {
            self.malformed += s.rows as u64;
            return;
        }
        let elapsed = self.started.elapsed();
        let mut counts = vec![0u64; self.layout.width];
        self.layout.count(s, &self.setup.thresholds, &mut counts);
        let rows = s.rows as u64;
        for w in &mut self.windows {
            let (r, c) = w.current(elapsed);
            *r += rows;
            c.iter_mut().zip(&counts).for_each(|(t, x)| *t += x);
        }
        self.observed = true;
    }

    fn report(&self) -> Report {
        let elapsed = self.started.elapsed();
        let reference = self.setup.reference.as_ref();
        let windows = self
            .windows
            .iter()
            .map(|w| {
                let (rows, counts) = w.sum(elapsed);
                self.window(w.name, rows, &counts)
            })
            .collect();
        Report {
            model: self.setup.model.clone(),
            version: self.setup.version.clone(),
            role: self.setup.role,
            reference: reference.map(|r| ReferenceInfo {
                rows: r.rows,
                source: r.source.clone(),
                decisions: r.decisions.clone(),
            }),
            dropped_rows: self.dropped.load(Ordering::Relaxed) + self.malformed,
            windows,
        }
    }

    fn window(&self, name: &'static str, rows: u64, counts: &[u64]) -> WindowReport {
        let decisions = &counts[self.layout.decisions..self.layout.decisions + 3];
        let ratio = |c: u64| (rows > 0).then(|| c as f64 / rows as f64);
        let mut report = WindowReport {
            window: name,
            rows,
            decisions: Decision::ALL
                .iter()
                .zip(decisions)
                .map(|(d, &c)| (d.as_str(), ratio(c)))
                .collect(),
            score: None,
            features: Vec::new(),
        };
        let Some(reference) = &self.setup.reference else {
            return report;
        };
        let drift = |name: &str, span: &Range<usize>, expected: &[f64]| {
            let c = &counts[span.clone()];
            Drift {
                name: name.to_string(),
                psi: psi(c, expected),
                counts: c.to_vec(),
            }
        };
        let (score_span, feature_spans) = self.layout.spans.split_last().unwrap_or((&(0..0), &[]));
        report.features = reference
            .features
            .iter()
            .zip(feature_spans)
            .map(|(f, span)| drift(f.name(), span, f.proportions()))
            .collect();
        report.score = Some(drift("score", score_span, &reference.score.proportions));
        // Most drifting first; features with no rows yet keep their order at the end.
        report.features.sort_by(|a, b| {
            b.psi
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&a.psi.unwrap_or(f64::NEG_INFINITY))
        });
        report
    }
}

#[cfg(test)]
mod tests;

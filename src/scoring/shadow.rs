//! Shadow scoring: a challenger version scores a sampled copy of live requests off the critical
//! path. The champion's answer never waits for it and never fails because of it: the copy is
//! scored on the challenger's own engine in a task of its own after the champion has answered,
//! and it is shed first — counted — when the champion's queue is backing up or too many shadow
//! requests are already in flight. What it shows: the challenger's score distribution and how its
//! decisions agree with the champion's (a 3×3 matrix), plus an optional JSONL log of every row
//! where they disagree.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;

use super::{Scores, Served};
use crate::histogram::PromHistogram;
use crate::model::Decision;
use crate::protocol::Payload;

/// Upper bounds of the challenger-score histogram buckets, in millionths of a probability (the
/// histogram counts integers; rendered divided by [`SCORE_SCALE`]).
const SCORE_BOUNDS: [f64; 10] = [1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 7.5e5, 9e5, 9.9e5, 1e6];

/// Divides the score histogram's values back to probabilities.
pub const SCORE_SCALE: f64 = 1e6;

/// Shadow requests in flight beyond which new ones are shed.
const MAX_IN_FLIGHT: usize = 64;

/// What shadow scoring recorded.
#[derive(Debug)]
pub struct ShadowMetrics {
    /// Requests sampled for the challenger.
    pub sampled: AtomicU64,
    /// Sampled requests not sent because the champion was busy or too many were in flight.
    pub shed: AtomicU64,
    /// Sampled requests the challenger could not take (features in another spec).
    pub incompatible: AtomicU64,
    /// Challenger requests that failed.
    pub errors: AtomicU64,
    /// Rows the challenger scored.
    pub rows: AtomicU64,
    /// Rows by [champion decision][challenger decision] (ALLOW, HOLD, REJECT).
    pub agreement: [[AtomicU64; 3]; 3],
    /// Challenger scores, in millionths.
    pub scores: PromHistogram,
}

impl Default for ShadowMetrics {
    fn default() -> Self {
        ShadowMetrics {
            sampled: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            incompatible: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            agreement: Default::default(),
            scores: PromHistogram::new(&SCORE_BOUNDS),
        }
    }
}

fn index(d: Decision) -> usize {
    match d {
        Decision::Allow => 0,
        Decision::Hold => 1,
        Decision::Reject => 2,
    }
}

/// The challenger and its sampling.
pub struct Shadow {
    slot: ArcSwap<Served>,
    sampler: super::sample::Sampler,
    in_flight: AtomicUsize,
    /// Champion queue depth (rows) above which shadow copies are shed.
    shed_above_rows: usize,
    /// What it recorded.
    pub metrics: ShadowMetrics,
    log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

/// A sampled request's pass to the challenger.
pub struct Ticket {
    shadow: Arc<Shadow>,
    served: Arc<Served>,
}

impl Shadow {
    /// A challenger `served` scoring `fraction` of requests, shed while the champion has more than
    /// `shed_above_rows` rows queued; disagreements appended to `log` when given.
    pub fn new(
        served: Served,
        fraction: f64,
        shed_above_rows: usize,
        log: Option<&std::path::Path>,
    ) -> anyhow::Result<Shadow> {
        let log = match log {
            Some(path) => Some(Mutex::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("model.shadow_log {}: {e}", path.display()))?,
            ))),
            None => None,
        };
        Ok(Shadow {
            slot: ArcSwap::from_pointee(served),
            sampler: super::sample::Sampler::new(fraction),
            in_flight: AtomicUsize::new(0),
            shed_above_rows,
            metrics: ShadowMetrics::default(),
            log,
        })
    }

    /// Where the challenger version lives (swapped by its own follower).
    pub fn slot(&self) -> &ArcSwap<Served> {
        &self.slot
    }

    /// Whether this request is sampled ([`super::sample::Sampler`]: exactly `fraction` of
    /// requests, evenly spread), and may go now; `None` otherwise.
    pub fn ticket(self: &Arc<Self>, champion: &Served) -> Option<Ticket> {
        if !self.sampler.take() {
            return None;
        }
        self.metrics.sampled.fetch_add(1, Ordering::Relaxed);
        if champion.engine().queued_rows() > self.shed_above_rows
            || self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT
        {
            self.metrics.shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let served = self.slot.load_full();
        Some(Ticket {
            shadow: self.clone(),
            served,
        })
    }
}

impl Ticket {
    /// Scores `payload` (a copy of what the champion scored into `champion`) on the challenger in
    /// a task of its own, and records how the two compare. Returns at once.
    /// With `pass`, the challenger's decisions also go to the decision log.
    pub fn offer(
        self,
        payload: Payload,
        champion: &Served,
        answered: &Scores,
        pass: Option<super::decision_log::ShadowPass>,
    ) {
        let Ticket { shadow, served } = self;
        // Feature rows are in the champion's columns: only a challenger reading the same ones
        // can score them. Transactions suit any challenger (it extracts its own features).
        if matches!(payload, Payload::Features(_))
            && served.extractor().spec() != champion.extractor().spec()
        {
            shadow.metrics.incompatible.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ids: Vec<String> = match &payload {
            Payload::Transactions(txs) => txs.iter().map(|t| t.end_to_end_id.to_string()).collect(),
            Payload::Features(_) => Vec::new(),
        };
        let decisions = answered.decisions.clone();
        let scores = answered.scores.clone();
        let champion_version = champion.model().version.clone();
        shadow.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let result = served
                .score(payload, Instant::now() + Duration::from_secs(1), false)
                .await;
            shadow.in_flight.fetch_sub(1, Ordering::Relaxed);
            let m = &shadow.metrics;
            let Ok(theirs) = result else {
                m.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if let Some(pass) = pass {
                pass.submit(served.logged_as(), &theirs);
            }
            m.rows
                .fetch_add(theirs.scores.len() as u64, Ordering::Relaxed);
            let mut disagreements = Vec::new();
            for (row, ((&ours, &their), &score)) in decisions
                .iter()
                .zip(&theirs.decisions)
                .zip(&theirs.scores)
                .enumerate()
            {
                m.agreement[index(ours)][index(their)].fetch_add(1, Ordering::Relaxed);
                m.scores.observe((f64::from(score) * SCORE_SCALE) as u64);
                if ours != their && shadow.log.is_some() {
                    disagreements.push(json!({
                        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "end_to_end_id": ids.get(row),
                        "row": row,
                        "champion": {"version": champion_version, "score": scores.get(row), "decision": ours},
                        "challenger": {"version": served.model().version, "score": score, "decision": their},
                    }));
                }
            }
            if let (Some(log), false) = (&shadow.log, disagreements.is_empty()) {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                for d in disagreements {
                    let _ = writeln!(log, "{d}");
                }
                let _ = log.flush();
            }
        });
    }
}

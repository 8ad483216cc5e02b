//! The canary: a second version that *answers* a share of live requests (`model.canary`,
//! `model.canary_fraction`), where the shadow's challenger only scores copies. A fraud team's
//! champion/challenger test: the canary's decisions reach real payments, so its effect on
//! fraud caught, on customers held and on the fraudsters' next move can be measured, on a share
//! small enough to risk, and dialled to 0 in one admin call (`POST /admin/canary`) when it goes
//! wrong. Its requests are answered, logged, monitored and traced as the champion's are, named
//! by its own version and role.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::Served;
use super::sample::Sampler;

/// The canary version and the share of requests it answers.
pub struct Canary {
    slot: ArcSwap<Served>,
    sampler: Sampler,
    /// Requests the canary answered: its share, and those that named its version.
    pub requests: AtomicU64,
}

impl Canary {
    /// `served` answering `fraction` (0 to 1) of requests.
    pub fn new(served: Served, fraction: f64) -> Canary {
        Canary {
            slot: ArcSwap::from_pointee(served),
            sampler: Sampler::new(fraction),
            requests: AtomicU64::new(0),
        }
    }

    /// Where the canary version lives (swapped by its own follower).
    pub fn slot(&self) -> &ArcSwap<Served> {
        &self.slot
    }

    /// The share of requests it answers now.
    pub fn fraction(&self) -> f64 {
        self.sampler.fraction()
    }

    /// Answers `fraction` (0 to 1) of requests from the next one on.
    pub fn set_fraction(&self, fraction: f64) {
        self.sampler.set(fraction);
    }

    /// The canary version, counted, when this request is in its share and the canary serves the
    /// same model as `champion` (a request for one model is never answered by another).
    pub(super) fn answer(&self, champion: &Served) -> Option<Arc<Served>> {
        if !self.sampler.take() {
            return None;
        }
        let served = self.slot.load_full();
        (served.model().name == champion.model().name).then(|| {
            self.count();
            served
        })
    }

    /// Counts a request it answers.
    pub(super) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

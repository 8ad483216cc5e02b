//! The canary: a second version that *answers* a share of live requests (`model.canary`,
//! `model.canary_fraction`), where the shadow's challenger only scores copies. A fraud team's
//! champion/challenger test: the canary's decisions reach real payments, so its effect on
//! fraud caught, on customers held and on the fraudsters' next move can be measured, on a share
//! small enough to risk, and dialled to 0 in one admin call (`POST /admin/canary`) when it goes
//! wrong. Its requests are answered, logged, monitored and traced as the champion's are, named
//! by its own version and role.
//!
//! A guard takes it off the answers without waiting for a person: once both versions have scored
//! `model.canary_guard_min_rows` in their monitors' 10-minute windows, a canary whose share of
//! payments stopped (HOLD or REJECT) is more than `model.canary_max_stop_ratio` times the
//! champion's, or less than its inverse, is set to 0 — a mistyped threshold or a broken model
//! that lets fraud through costs seconds of a small share, not an hour of the alert's `for:`. So
//! is a canary whose engine p99 over the last minute is more than `model.canary_max_latency_ratio`
//! times the champion's (and over 1 ms slower): at a small share it would be the service's p99.
//! And so is a canary whose requests fail (queue full, past their deadline, model or device error)
//! more often than the champion's over the last minute, by more than
//! `model.canary_max_error_share` and than chance: each is a payment without a decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::Served;
use super::sample::Sampler;
use crate::engine::recent::Outcomes;
use crate::histogram::Percentiles;
use crate::monitoring::WindowReport;

/// The window the guard compares: the alerts' (docs/monitoring.md).
const GUARD_WINDOW: &str = "10m";

/// When the guard compares the canary's decisions with the champion's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// Largest ratio of the two versions' stop shares (canary over champion, or its inverse);
    /// 0: no guard.
    pub max_stop_ratio: f64,
    /// Rows each must have in the window before they are compared (and requests each must have
    /// answered in the last minute before their latencies are).
    pub min_rows: u64,
    /// Largest ratio of the canary's engine p99 to the champion's, beyond [`LATENCY_FLOOR_US`]
    /// of difference; 0: no latency guard.
    pub max_latency_ratio: f64,
    /// Largest excess of the canary's failed share of requests over the champion's, beyond
    /// chance; 0: no error guard.
    pub max_error_share: f64,
}

/// A canary this little slower (engine p99, µs) is not held against it, whatever the ratio:
/// tens of microseconds are noise beside the Pix time limits.
pub const LATENCY_FLOOR_US: u64 = 1_000;

/// Why and when the guard took the canary off the answers.
#[derive(Debug, Clone, Serialize)]
pub struct Halt {
    /// When (RFC 3339).
    pub at: String,
    /// The shares compared and the bound.
    pub reason: String,
}

/// What the canary has done so far.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// The share of requests it answers now.
    pub fraction: f64,
    /// Requests it answered.
    pub requests: u64,
    /// Requests of its share whose inputs it refused and the champion took, answered by the
    /// champion instead.
    pub declined: u64,
    /// Times the guard set its share to 0.
    pub halts: u64,
    /// The guard's last halt, unless a share was set since.
    pub halted: Option<Halt>,
}

/// The canary version and the share of requests it answers.
pub struct Canary {
    slot: ArcSwap<Served>,
    sampler: Sampler,
    /// Requests the canary answered: its share, and those that named its version.
    pub requests: AtomicU64,
    /// Requests of its share handed to the champion: their inputs were the champion's, not its.
    pub declined: AtomicU64,
    /// Times the guard set its share to 0.
    pub halts: AtomicU64,
    halted: Mutex<Option<Halt>>,
}

impl Canary {
    /// `served` answering `fraction` (0 to 1) of requests.
    pub fn new(served: Served, fraction: f64) -> Canary {
        Canary {
            slot: ArcSwap::from_pointee(served),
            sampler: Sampler::new(fraction),
            requests: AtomicU64::new(0),
            declined: AtomicU64::new(0),
            halts: AtomicU64::new(0),
            halted: Mutex::new(None),
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

    /// Answers `fraction` (0 to 1) of requests from the next one on. A person setting a share
    /// above 0 overrules the guard's last halt.
    pub fn set_fraction(&self, fraction: f64) {
        self.sampler.set(fraction);
        if fraction > 0.0 {
            *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Its share, its answers, the guard's halts and its last one: what `/v1/stats` and
    /// `GET /admin/model` say of it.
    pub fn figures(&self) -> Figures {
        Figures {
            fraction: self.fraction(),
            requests: self.requests.load(Ordering::Relaxed),
            declined: self.declined.load(Ordering::Relaxed),
            halts: self.halts.load(Ordering::Relaxed),
            halted: self.halted(),
        }
    }

    /// The guard's last halt, unless a share was set since.
    pub fn halted(&self) -> Option<Halt> {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Compares the canary's published decisions with `champion`'s under `guard`, and sets the
    /// share to 0 when they are out of band; answers why it did. Nothing to do while the share is
    /// 0, without a guard, or without both monitors.
    pub fn check(&self, champion: &Served, guard: Guard) -> Option<Halt> {
        if self.fraction() <= 0.0 {
            return None;
        }
        let canary = self.slot.load_full();
        let stops = || {
            if guard.max_stop_ratio <= 0.0 {
                return None;
            }
            let (ours, theirs) = (
                champion.monitor()?.published(),
                canary.monitor()?.published(),
            );
            let window = |r: &crate::monitoring::Report| {
                r.windows.iter().find(|w| w.window == GUARD_WINDOW).cloned()
            };
            out_of_band(&window(&ours)?, &window(&theirs)?, guard)
        };
        let recent = (champion.engine().recent()).zip(canary.engine().recent());
        let errors = || recent.and_then(|(ours, theirs)| failing(ours, theirs, guard));
        let latency =
            || recent.and_then(|(ours, theirs)| slower(ours.answered, theirs.answered, guard));
        let reason = stops().or_else(errors).or_else(latency)?;
        let halt = Halt {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason: format!("canary {}: {reason}", canary.model().version),
        };
        self.sampler.set(0.0);
        self.halts.fetch_add(1, Ordering::Relaxed);
        *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(halt.clone());
        tracing::error!(
            reason = %halt.reason,
            champion = %champion.model().version,
            "the canary guard set the canary's share to 0"
        );
        Some(halt)
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

    /// A request [`Canary::answer`] gave it goes to the champion after all: counted as declined,
    /// not answered.
    pub(super) fn decline(&self) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
        self.declined.fetch_add(1, Ordering::Relaxed);
    }
}

/// The share of a window's rows held or rejected, floored at one row in `min_rows` (a version
/// that stopped none is compared as if it stopped one).
fn stop_share(window: &WindowReport, min_rows: u64) -> f64 {
    let share = |d: &str| window.decisions.get(d).copied().flatten().unwrap_or(0.0);
    (share("HOLD") + share("REJECT")).max(1.0 / min_rows.max(1) as f64)
}

/// Why the canary's stop share is out of band against the champion's, once both windows have
/// `guard.min_rows`.
fn out_of_band(champion: &WindowReport, canary: &WindowReport, guard: Guard) -> Option<String> {
    if champion.rows < guard.min_rows || canary.rows < guard.min_rows {
        return None;
    }
    let (ours, theirs) = (
        stop_share(champion, guard.min_rows),
        stop_share(canary, guard.min_rows),
    );
    let ratio = theirs / ours;
    (ratio > guard.max_stop_ratio || ratio < 1.0 / guard.max_stop_ratio).then(|| {
        format!(
            "stopped (HOLD or REJECT) {:.2} % of {} payments in {GUARD_WINDOW} against the champion's {:.2} % of {}: \
             {ratio:.2}×, outside 1/{max} to {max} (model.canary_max_stop_ratio)",
            theirs * 100.0,
            canary.rows,
            ours * 100.0,
            champion.rows,
            max = guard.max_stop_ratio,
        )
    })
}

/// Why the canary's engine is too slow against the champion's, once each answered
/// `guard.min_rows` requests in the last minute: its p99 more than `guard.max_latency_ratio`
/// times the champion's and more than [`LATENCY_FLOOR_US`] above it. At a 5 % share, a canary
/// slower than the champion's p99 becomes the whole service's p99.
fn slower(champion: Percentiles, canary: Percentiles, guard: Guard) -> Option<String> {
    if guard.max_latency_ratio <= 0.0
        || champion.count < guard.min_rows
        || canary.count < guard.min_rows
    {
        return None;
    }
    let ratio = canary.p99 as f64 / champion.p99.max(1) as f64;
    (ratio > guard.max_latency_ratio && canary.p99 > champion.p99 + LATENCY_FLOOR_US).then(|| {
        format!(
            "engine p99 (queue + compute) {:.2} ms over {} requests in the last minute against the champion's {:.2} ms over {}: \
             {ratio:.1}×, over {} (model.canary_max_latency_ratio)",
            canary.p99 as f64 / 1000.0,
            canary.count,
            champion.p99 as f64 / 1000.0,
            champion.count,
            guard.max_latency_ratio,
        )
    })
}

/// Why the canary's requests fail too often against the champion's, once each had
/// `guard.min_rows` requests in the last minute: its share without an answer (failed, or refused
/// for an input its signature does not take) more than `guard.max_error_share` above the
/// champion's, and more than three standard errors of the difference at the champion's rate
/// above it, so a server failing everyone's requests alike (an overload, a caller's junk) does
/// not halt the canary by chance.
fn failing(champion: Outcomes, canary: Outcomes, guard: Guard) -> Option<String> {
    let (n_ours, n_theirs) = (champion.requests(), canary.requests());
    if guard.max_error_share <= 0.0 || n_ours < guard.min_rows || n_theirs < guard.min_rows {
        return None;
    }
    let (ours, theirs) = (champion.failed_share(), canary.failed_share());
    let chance = 3.0 * (ours * (1.0 - ours) * (1.0 / n_ours as f64 + 1.0 / n_theirs as f64)).sqrt();
    (theirs - ours > guard.max_error_share + chance).then(|| {
        format!(
            "failed {:.2} % of {n_theirs} requests in the last minute ({:.2} % refused for their input, \
             the others: queue full, past the deadline, model or device error) against the champion's \
             {:.2} % of {n_ours} ({:.2} % refused): {:.2} points over, more than {:.2} \
             (model.canary_max_error_share) + {:.2} of chance",
            theirs * 100.0,
            canary.refused_share() * 100.0,
            ours * 100.0,
            champion.refused_share() * 100.0,
            (theirs - ours) * 100.0,
            guard.max_error_share * 100.0,
            chance * 100.0,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(rows: u64, hold: f64, reject: f64) -> WindowReport {
        WindowReport {
            window: GUARD_WINDOW,
            rows,
            decisions: [
                ("ALLOW", Some(1.0 - hold - reject)),
                ("HOLD", Some(hold)),
                ("REJECT", Some(reject)),
            ]
            .into_iter()
            .collect(),
            score: None,
            features: Vec::new(),
        }
    }

    const GUARD: Guard = Guard {
        max_stop_ratio: 3.0,
        min_rows: 1000,
        max_latency_ratio: 3.0,
        max_error_share: 0.01,
    };

    fn engine(count: u64, p99: u64) -> Percentiles {
        Percentiles {
            count,
            p50: p99 / 2,
            p90: p99,
            p99,
            p999: p99,
            max: p99,
        }
    }

    #[test]
    fn the_guard_halts_a_canary_far_slower_than_the_champion() {
        let champion = engine(5000, 2_000);
        // 5 ms against 2 ms: 2.5×, within 3.
        assert_eq!(slower(champion, engine(2000, 5_000), GUARD), None);
        // 7 ms: 3.5× and 5 ms slower.
        let why = slower(champion, engine(2000, 7_000), GUARD).unwrap();
        assert!(
            why.starts_with("engine p99 (queue + compute) 7.00 ms over 2000 requests in the last minute against the champion's 2.00 ms over 5000: 3.5×"),
            "{why}"
        );
        // Faster is never a reason.
        assert_eq!(slower(champion, engine(2000, 100), GUARD), None);
        // 10× of 50 µs is 450 µs: under the 1 ms floor.
        assert_eq!(slower(engine(5000, 50), engine(2000, 500), GUARD), None);
        assert!(slower(engine(5000, 50), engine(2000, 1_100), GUARD).is_some());
        // Too few requests in the minute, or no latency guard.
        assert_eq!(slower(champion, engine(999, 70_000), GUARD), None);
        let off = Guard {
            max_latency_ratio: 0.0,
            ..GUARD
        };
        assert_eq!(slower(champion, engine(2000, 70_000), off), None);
    }

    fn outcomes(answered: u64, failed: u64) -> Outcomes {
        Outcomes {
            answered: engine(answered, 2_000),
            failed,
            refused: 0,
        }
    }

    #[test]
    fn the_guard_counts_requests_the_canary_refused_for_their_input() {
        // A canary whose signature refuses 5 % of what the champion takes (features-mode tensors
        // one column short for it), nothing failing in either engine.
        let champion = Outcomes {
            refused: 40,
            ..outcomes(20_000, 0)
        };
        let canary = Outcomes {
            refused: 105,
            ..outcomes(1_900, 0)
        };
        let why = failing(champion, canary, GUARD).unwrap();
        assert!(
            why.starts_with("failed 5.24 % of 2005 requests in the last minute (5.24 % refused for their input, the others: queue full, past the deadline, model or device error) against the champion's 0.20 % of 20040 (0.20 % refused): 5.04 points over"),
            "{why}"
        );
        // A caller's junk refused by both alike is no reason.
        let canary = Outcomes {
            refused: 4,
            ..outcomes(2_000, 0)
        };
        assert_eq!(failing(champion, canary, GUARD), None);
        // Refusals count towards the minimum of requests too: 995 answered are too few alone.
        let canary = Outcomes {
            refused: 100,
            ..outcomes(995, 0)
        };
        assert!(failing(champion, canary, GUARD).is_some());
        assert_eq!(failing(champion, outcomes(995, 0), GUARD), None);
    }

    #[test]
    fn the_guard_halts_a_canary_failing_more_requests_than_the_champion() {
        let champion = outcomes(20_000, 0);
        // 1 % of 2,000 (20) against none: at the bound, not over it.
        assert_eq!(failing(champion, outcomes(1_980, 20), GUARD), None);
        let why = failing(champion, outcomes(1_900, 100), GUARD).unwrap();
        assert!(
            why.starts_with("failed 5.00 % of 2000 requests in the last minute (0.00 % refused for their input, the others: queue full, past the deadline, model or device error) against the champion's 0.00 % of 20000 (0.00 % refused): 5.00 points over, more than 1.00"),
            "{why}"
        );
        assert!(why.ends_with("+ 0.00 of chance"), "{why}");
        // Failing less is never a reason.
        assert_eq!(
            failing(outcomes(19_000, 1_000), outcomes(2_000, 0), GUARD),
            None
        );
        // An overload failing 20 % of everyone's: 1,000 canary requests at 22.5 % are within
        // the bound and chance (1 + 3 standard errors of the difference: 4.89 points); at 26 %
        // they are not.
        let overloaded = outcomes(16_000, 4_000);
        assert_eq!(failing(overloaded, outcomes(775, 225), GUARD), None);
        let why = failing(overloaded, outcomes(740, 260), GUARD).unwrap();
        assert!(
            why.contains(
                "6.00 points over, more than 1.00 (model.canary_max_error_share) + 3.89 of chance"
            ),
            "{why}"
        );
        // Too few requests in the minute, or no error guard.
        assert_eq!(failing(champion, outcomes(900, 99), GUARD), None);
        assert_eq!(failing(outcomes(990, 0), outcomes(0, 2_000), GUARD), None);
        let off = Guard {
            max_error_share: 0.0,
            ..GUARD
        };
        assert_eq!(failing(champion, outcomes(0, 2_000), off), None);
    }

    #[test]
    fn the_guard_halts_a_canary_stopping_far_more_or_far_fewer_payments() {
        let champion = window(5000, 0.01, 0.01);
        // 2 % against 2 %, 5 % (2.5×) and 1 % (0.5×): within 1/3 to 3.
        for (hold, reject) in [(0.01, 0.01), (0.03, 0.02), (0.005, 0.005)] {
            assert_eq!(
                out_of_band(&champion, &window(2000, hold, reject), GUARD),
                None
            );
        }
        let too_many = out_of_band(&champion, &window(2000, 0.05, 0.02), GUARD).unwrap();
        assert!(
            too_many.starts_with("stopped (HOLD or REJECT) 7.00 % of 2000 payments in 10m against the champion's 2.00 % of 5000: 3.50×"),
            "{too_many}"
        );
        let too_few = out_of_band(&champion, &window(2000, 0.002, 0.0), GUARD).unwrap();
        assert!(too_few.contains(": 0.10×, outside 1/3 to 3"), "{too_few}");
    }

    #[test]
    fn the_guard_waits_for_rows_and_floors_an_empty_share() {
        let champion = window(5000, 0.0, 0.0);
        assert_eq!(
            out_of_band(&champion, &window(999, 0.5, 0.5), GUARD),
            None,
            "too few rows"
        );
        // Neither stopped anything: equal, at the floor of one row in 1,000.
        assert_eq!(out_of_band(&champion, &window(1000, 0.0, 0.0), GUARD), None);
        // 0.2 % against the floor of 0.1 %: 2×, within.
        assert_eq!(
            out_of_band(&champion, &window(1000, 0.002, 0.0), GUARD),
            None
        );
        assert!(out_of_band(&champion, &window(1000, 0.004, 0.0), GUARD).is_some());
    }
}

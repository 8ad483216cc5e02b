//! Taking a share of requests: the shadow's copies, the decision log's records and the canary's
//! answers are all chosen by one rule, so "0.1" means the same everywhere.

use std::sync::atomic::{AtomicU64, Ordering};

/// Takes exactly `fraction` of the calls to [`Sampler::take`], evenly spread: a counter, not a
/// coin, so a small share over a short test or a quiet hour is still the share configured. The
/// share may change while requests are taken (the canary's is set live); the counter goes on.
#[derive(Debug)]
pub struct Sampler {
    /// The share, as an `f64`'s bits.
    fraction: AtomicU64,
    counter: AtomicU64,
}

impl Sampler {
    /// A sampler taking `fraction` (0 to 1) of calls.
    pub fn new(fraction: f64) -> Sampler {
        Sampler {
            fraction: AtomicU64::new(fraction.to_bits()),
            counter: AtomicU64::new(0),
        }
    }

    /// The share taken now.
    pub fn fraction(&self) -> f64 {
        f64::from_bits(self.fraction.load(Ordering::Relaxed))
    }

    /// Takes `fraction` (0 to 1) from the next call on.
    pub fn set(&self, fraction: f64) {
        self.fraction.store(fraction.to_bits(), Ordering::Relaxed);
    }

    /// Whether this call is taken: the n-th is when `n × fraction` crosses a whole number.
    pub fn take(&self) -> bool {
        let fraction = self.fraction();
        // The ends touch no shared counter: most servers sample nothing, or everything.
        if fraction <= 0.0 {
            return false;
        }
        if fraction >= 1.0 {
            return true;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * fraction).floor() > (n * fraction).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(sampler: &Sampler, calls: usize) -> Vec<usize> {
        (0..calls).filter(|_| sampler.take()).collect::<Vec<_>>()
    }

    #[test]
    fn takes_exactly_the_share_evenly_spread() {
        let quarter = Sampler::new(0.25);
        let calls: Vec<bool> = (0..12).map(|_| quarter.take()).collect();
        let expected = [
            false, false, false, true, false, false, false, true, false, false, false, true,
        ];
        assert_eq!(calls, expected);
        assert_eq!(taken(&Sampler::new(0.1), 1000).len(), 100);
        assert_eq!(taken(&Sampler::new(0.0), 1000).len(), 0);
        assert_eq!(taken(&Sampler::new(1.0), 1000).len(), 1000);
    }

    #[test]
    fn a_share_set_live_holds_from_the_next_call() {
        let sampler = Sampler::new(0.5);
        assert_eq!(taken(&sampler, 10).len(), 5);
        sampler.set(0.0);
        assert_eq!(sampler.fraction(), 0.0);
        assert_eq!(
            taken(&sampler, 10).len(),
            0,
            "a canary dialled to 0 answers nothing"
        );
        sampler.set(0.2);
        assert_eq!(taken(&sampler, 100).len(), 20);
    }
}

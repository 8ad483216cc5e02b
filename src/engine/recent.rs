//! An engine's own last minute, kept only where the canary guard compares a canary with its
//! champion: the shared engine metrics mix the two versions.

use crate::histogram::{HdrStage, Percentiles};

/// One engine's requests over the last minute: the answered ones' queue + compute time, and the
/// failed ones.
#[derive(Debug)]
pub struct Recent {
    answered: HdrStage,
    /// Requests refused for a full queue, dropped past their deadline, or failed by the model or
    /// the device: only their count is read (a histogram for its sliding window).
    failed: HdrStage,
}

/// What an engine's last minute holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcomes {
    /// Queue + compute percentiles of the requests answered (`count`: how many).
    pub answered: Percentiles,
    /// Requests that failed.
    pub failed: u64,
}

impl Outcomes {
    /// Requests answered or failed.
    pub fn requests(&self) -> u64 {
        self.answered.count + self.failed
    }

    /// The share of them that failed (0 without any).
    pub fn failed_share(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.failed as f64 / n as f64,
        }
    }
}

impl Recent {
    /// Empty windows.
    pub fn new() -> Result<Recent, hdrhistogram::CreationError> {
        Ok(Recent {
            answered: HdrStage::new()?,
            failed: HdrStage::new()?,
        })
    }

    /// A request answered after `micros` of queue + compute.
    pub fn answered(&self, micros: u64) {
        self.answered.record(micros);
    }

    /// A request that failed.
    pub fn failed(&self) {
        self.failed.record(1);
    }

    /// The last minute.
    pub fn outcomes(&self) -> Outcomes {
        Outcomes {
            answered: self.answered.percentiles().1,
            failed: self.failed.percentiles().1.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_share_counts_both_outcomes() {
        let recent = Recent::new().unwrap();
        assert_eq!(recent.outcomes().failed_share(), 0.0, "none yet");
        for us in [100, 200, 300] {
            recent.answered(us);
        }
        recent.failed();
        let outcomes = recent.outcomes();
        assert_eq!((outcomes.answered.count, outcomes.failed), (3, 1));
        assert_eq!(outcomes.requests(), 4);
        assert_eq!(outcomes.failed_share(), 0.25);
        assert_eq!(outcomes.answered.max, 300);
    }
}

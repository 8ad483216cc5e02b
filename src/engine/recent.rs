//! A version's own last minute, kept in its engine only where the canary guard compares a canary
//! with its champion: the shared engine metrics mix the two versions.

use crate::histogram::{HdrStage, Percentiles};

/// One version's requests over the last minute: the answered ones' queue + compute time, the
/// failed ones, and those it refused for their input.
#[derive(Debug)]
pub struct Recent {
    answered: HdrStage,
    /// Requests refused for a full queue, dropped past their deadline, or failed by the model or
    /// the device: only their count is read (a histogram for its sliding window).
    failed: HdrStage,
    /// Requests that took this version and were refused for what they sent (400/422, gRPC
    /// INVALID_ARGUMENT): they never reach the engine. A caller's junk falls on every version
    /// alike; a canary whose signature refuses what its champion's takes does not.
    refused: HdrStage,
}

/// What an engine's last minute holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcomes {
    /// Queue + compute percentiles of the requests answered (`count`: how many).
    pub answered: Percentiles,
    /// Requests that failed.
    pub failed: u64,
    /// Requests refused for their input.
    pub refused: u64,
}

impl Outcomes {
    /// Requests answered, failed or refused.
    pub fn requests(&self) -> u64 {
        self.answered.count + self.failed + self.refused
    }

    /// The share of them that failed or were refused: every request without an answer (0
    /// without any).
    pub fn failed_share(&self) -> f64 {
        self.share(self.failed + self.refused)
    }

    /// The share of them refused for their input (0 without any).
    pub fn refused_share(&self) -> f64 {
        self.share(self.refused)
    }

    fn share(&self, of: u64) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => of as f64 / n as f64,
        }
    }
}

impl Recent {
    /// Empty windows.
    pub fn new() -> Result<Recent, hdrhistogram::CreationError> {
        Ok(Recent {
            answered: HdrStage::new()?,
            failed: HdrStage::new()?,
            refused: HdrStage::new()?,
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

    /// A request refused for its input.
    pub fn refused(&self) {
        self.refused.record(1);
    }

    /// The last minute.
    pub fn outcomes(&self) -> Outcomes {
        Outcomes {
            answered: self.answered.percentiles().1,
            failed: self.failed.percentiles().1.count,
            refused: self.refused.percentiles().1.count,
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
        assert_eq!(outcomes.refused_share(), 0.0);
        assert_eq!(outcomes.answered.max, 300);
    }

    #[test]
    fn a_refused_request_has_no_answer_either() {
        let recent = Recent::new().unwrap();
        recent.answered(100);
        recent.failed();
        recent.refused();
        recent.refused();
        let outcomes = recent.outcomes();
        assert_eq!((outcomes.failed, outcomes.refused), (1, 2));
        assert_eq!(outcomes.requests(), 4);
        assert_eq!(outcomes.failed_share(), 0.75);
        assert_eq!(outcomes.refused_share(), 0.5);
    }
}

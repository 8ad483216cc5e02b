//! What the front ends record through the scoring layer: each request's whole duration, how it
//! ended, by API (`pixguard_responses_total{api,code}`), and Triton's cumulative statistics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Api, Code};
use crate::histogram::{Cumulative, Stage};

/// Request counters and durations of every front end.
#[derive(Debug)]
pub struct Metrics {
    /// Whole request, from admission to answer.
    pub request: Stage,
    /// Scoring requests answered successfully, and their whole duration.
    pub succeeded: Cumulative,
    /// Scoring requests that failed or were refused, and their whole duration.
    pub failed: Cumulative,
    /// When the last scoring request finished, ms since the Unix epoch (0: none yet).
    pub last_inference_ms: AtomicU64,
    /// Requests admitted and not yet answered.
    pub in_flight: AtomicUsize,
    responses: [[AtomicU64; Code::ALL.len()]; Api::ALL.len()],
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Metrics {
            request: Stage::new()?,
            succeeded: Cumulative::default(),
            failed: Cumulative::default(),
            last_inference_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            responses: Default::default(),
        })
    }

    /// Records one finished request: how it ended, how long it took and when.
    pub fn record(&self, api: Api, code: Code, micros: u64) {
        self.responses[api.index()][code.index()].fetch_add(1, Ordering::Relaxed);
        self.request.record(micros);
        if code == Code::Ok {
            &self.succeeded
        } else {
            &self.failed
        }
        .add(micros);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }

    /// Records a request refused before admission (no duration worth a histogram).
    pub fn refused(&self, api: Api, code: Code) {
        self.responses[api.index()][code.index()].fetch_add(1, Ordering::Relaxed);
        self.failed.add(0);
    }

    /// Responses so far, as (api, code, count), for every pair seen at least once.
    pub fn responses(&self) -> Vec<(Api, Code, u64)> {
        let mut out = Vec::new();
        for api in Api::ALL {
            for code in Code::ALL {
                let n = self.responses[api.index()][code.index()].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((api, code, n));
                }
            }
        }
        out
    }
}

//! What the front ends record through the scoring layer: each request's whole duration, how it
//! ended, by API (`pixguard_responses_total{api,code}`), and each version's Triton statistics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Api, Code};
use crate::histogram::{Cumulative, Stage};

/// Request counters and durations of every front end.
#[derive(Debug)]
pub struct Metrics {
    /// Whole request, from admission to answer.
    pub request: Stage,
    /// Requests admitted and not yet answered.
    pub in_flight: AtomicUsize,
    responses: [[AtomicU64; Code::ALL.len()]; Api::ALL.len()],
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Metrics {
            request: Stage::new()?,
            in_flight: AtomicUsize::new(0),
            responses: Default::default(),
        })
    }

    /// Records one finished request: how it ended and how long it took; and in `version`, the
    /// counts of the version it took (none: it failed before taking one), when.
    pub fn record(&self, api: Api, code: Code, micros: u64, version: Option<&VersionRequests>) {
        self.responses[api.index()][code.index()].fetch_add(1, Ordering::Relaxed);
        self.request.record(micros);
        if let Some(version) = version {
            version.record_now(code == Code::Ok, micros);
        }
    }

    /// Records a request refused before admission (no duration worth a histogram).
    pub fn refused(&self, api: Api, code: Code) {
        self.responses[api.index()][code.index()].fetch_add(1, Ordering::Relaxed);
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

/// Scoring requests by how they ended, with their whole durations: what Triton's statistics
/// report as `success`, `fail` and `last_inference`. Each served version keeps its own: the
/// requests routed to it, however they ended (an API request, or a chunk of Kafka messages).
#[derive(Debug, Default)]
pub struct VersionRequests {
    /// Requests answered, and their whole duration.
    pub succeeded: Cumulative,
    /// Requests that failed or were refused, and their whole duration.
    pub failed: Cumulative,
    /// When the last one finished, ms since the Unix epoch (0: none yet).
    pub last_ms: AtomicU64,
}

impl VersionRequests {
    /// A request that ended `ok` or not after `micros`, at `now_ms`.
    pub fn record(&self, ok: bool, micros: u64, now_ms: u64) {
        if ok { &self.succeeded } else { &self.failed }.add(micros);
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// [`VersionRequests::record`] of a request that ends now.
    pub fn record_now(&self, ok: bool, micros: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.record(ok, micros, now);
    }
}

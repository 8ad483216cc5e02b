//! Admission: the first thing every front end does with a request. Refused at once while the
//! server drains or when `server.max_concurrent_requests` are already in flight (as TEI's
//! `max_concurrent_requests`), so overload is shed in microseconds instead of piling up in the
//! front end's threads where no queue bound sees it. An admitted request is counted in flight
//! until its guard drops, which records how it ended and how long it took.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Code, ScoreError, Scoring};

/// The front end a request came through: the `api` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/score`.
    V1,
    /// Open Inference Protocol over HTTP.
    OipHttp,
    /// Open Inference Protocol over gRPC.
    OipGrpc,
}

impl Api {
    /// Every front end, in the order of [`Api::index`].
    pub const ALL: [Api; 3] = [Api::V1, Api::OipHttp, Api::OipGrpc];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::OipHttp => "oip_http",
            Api::OipGrpc => "oip_grpc",
        }
    }

    /// Position in [`Api::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An admitted request. Dropping it ends the request: it leaves the in-flight count and its
/// outcome is recorded (`cancelled` when [`Admission::finish`] was never called: the client left).
#[must_use = "dropping the admission ends the request"]
pub struct Admission<'a> {
    scoring: &'a Scoring,
    api: Api,
    started: Instant,
    outcome: Option<Code>,
}

impl Scoring {
    /// Admits a request on `api`, or refuses it at once (draining, or too many in flight).
    pub fn admit(&self, api: Api) -> Result<Admission<'_>, ScoreError> {
        let metrics = &self.metrics;
        if self.lifecycle.refusing() {
            metrics.refused(api, Code::Draining);
            return Err(ScoreError::Draining);
        }
        let limit = self.limits.max_concurrent_requests;
        let now = metrics.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if limit > 0 && now > limit {
            metrics.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics.refused(api, Code::Overloaded);
            return Err(ScoreError::Overloaded(format!(
                "{limit} requests in flight (server.max_concurrent_requests)"
            )));
        }
        Ok(Admission {
            scoring: self,
            api,
            started: Instant::now(),
            outcome: None,
        })
    }
}

impl Admission<'_> {
    /// Records the request's outcome and hands the result back.
    pub fn finish<T>(mut self, result: Result<T, ScoreError>) -> Result<T, ScoreError> {
        self.outcome = Some(match &result {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        });
        result
    }

    /// Microseconds since admission.
    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let metrics = &self.scoring.metrics;
        metrics.in_flight.fetch_sub(1, Ordering::AcqRel);
        let code = self.outcome.unwrap_or(Code::Cancelled);
        metrics.record(self.api, code, self.elapsed_us());
    }
}

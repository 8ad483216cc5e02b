//! Admission: the first thing every front end does with a request. Refused at once while the
//! server drains or when `server.max_concurrent_requests` are already in flight (as TEI's
//! `max_concurrent_requests`), so overload is shed in microseconds instead of piling up in the
//! front end's threads where no queue bound sees it. An admitted request is counted in flight
//! until its guard drops, which records how it ended and how long it took, and sends its span
//! when the request is traced. A traced request that is refused gets its span too, ended at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::decision_log::{Answered, Inputs, Rows};
use super::metrics::VersionRequests;
use super::{Code, Role, ScoreError, Scores, Scoring, Served, unnamed};
use crate::engine::{Engine, Lane};
use crate::protocol::Payload;
use crate::protocol::oip::Tensor;
use crate::traces::{Recording, Tracer, context, otlp};
use crate::transaction::Transaction;

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

    /// The name of its server span, as OpenTelemetry's conventions name HTTP (method and route)
    /// and gRPC (service and method) ones.
    pub fn span_name(self) -> &'static str {
        match self {
            Api::V1 => "POST /v1/score",
            Api::OipHttp => "POST /v2/models/{model}/infer",
            Api::OipGrpc => "inference.GRPCInferenceService/ModelInfer",
        }
    }
}

/// Notes on `span` the version that scored a request, where the engine's time went (its `queue`
/// and `compute` children) and, for `row`, its score and decision.
pub fn describe(span: &mut Recording, served: &Served, scores: &Scores, row: Option<usize>) {
    let model = served.model();
    span.attribute("pixguard.model.name", model.name.clone());
    span.attribute("pixguard.model.version", model.version.clone());
    if let Some(role) = served.role().in_records() {
        span.attribute("pixguard.model.role", role);
    }
    span.attribute("pixguard.queue_us", scores.queue_us as i64);
    span.attribute("pixguard.compute_us", scores.compute_us as i64);
    if let Some(row) = row
        && let (Some(score), Some(decision)) = (scores.scores.get(row), scores.decisions.get(row))
    {
        span.attribute("pixguard.score", f64::from(*score));
        span.attribute("pixguard.decision", decision.as_str());
    }
    span.stages(scores.enqueued, scores.queue_us, scores.compute_us);
}

/// What a request keeps of the version it took: its counts, and its engine, whose last-minute
/// window the canary guard reads.
struct Took {
    requests: Arc<VersionRequests>,
    engine: Arc<Engine>,
}

impl Took {
    fn of(served: &Served) -> Took {
        Took {
            requests: served.requests().clone(),
            engine: served.engine().clone(),
        }
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
    /// The version the request took, once it took one.
    version: Option<Took>,
    /// The version it took is the canary, for its share (the request named none): inputs the
    /// canary refuses are then the champion's to decode ([`Admission::decode_inputs`]).
    by_share: bool,
    /// The request's span, when it is traced (boxed: most requests are not).
    span: Option<Box<Recording>>,
}

impl Scoring {
    /// Admits a request on `api`, or refuses it at once (draining, or too many in flight). With
    /// traces on, a sampled request gets its span either way: in the caller's trace when its
    /// `traceparent` names a sampled one (the headers are looked up only when traces are on),
    /// from `arrived`, when its head came in. A refused one's span ends here with the refusal,
    /// so the caller's trace says why it was turned away.
    pub fn admit<'h>(
        &self,
        api: Api,
        headers: impl FnOnce() -> context::Headers<'h>,
        arrived: Instant,
    ) -> Result<Admission<'_>, ScoreError> {
        let metrics = &self.metrics;
        let refused = if self.lifecycle.refusing() {
            metrics.refused(api, Code::Draining);
            Some(ScoreError::Draining)
        } else {
            let limit = self.limits.max_concurrent_requests;
            let now = metrics.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            if limit > 0 && now > limit {
                metrics.in_flight.fetch_sub(1, Ordering::AcqRel);
                metrics.refused(api, Code::Overloaded);
                Some(ScoreError::Overloaded(format!(
                    "{limit} requests in flight (server.max_concurrent_requests)"
                )))
            } else {
                None
            }
        };
        let started = Instant::now();
        let span = self
            .tracer()
            .and_then(|tracer| open_span(tracer, api, headers(), arrived.min(started)));
        if let Some(error) = refused {
            if let (Some(tracer), Some(span)) = (self.tracer(), span) {
                end_span(tracer, api, span, error.code(), Some(&error));
            }
            return Err(error);
        }
        Ok(Admission {
            scoring: self,
            api,
            started,
            outcome: None,
            version: None,
            by_share: false,
            span: span.map(Box::new),
        })
    }
}

/// The span of a sampled request on `api`, or `None` when it is not sampled.
fn open_span(
    tracer: &Tracer,
    api: Api,
    headers: context::Headers<'_>,
    start: Instant,
) -> Option<Recording> {
    let trace = tracer.sample(headers.traceparent)?;
    let mut span = Recording::new(trace, api.span_name(), otlp::kind::SERVER, start);
    match api {
        Api::V1 => {
            span.attribute("http.request.method", "POST");
            span.attribute("http.route", "/v1/score");
        }
        Api::OipHttp => {
            span.attribute("http.request.method", "POST");
            span.attribute("http.route", "/v2/models/{model}/infer");
        }
        Api::OipGrpc => {
            span.attribute("rpc.system", "grpc");
            span.attribute("rpc.service", "inference.GRPCInferenceService");
            span.attribute("rpc.method", "ModelInfer");
        }
    }
    span.trace_state(headers.tracestate);
    Some(span)
}

/// Ends a request's span with how the request ended (`error`, when it failed), and queues it.
fn end_span(
    tracer: &Tracer,
    api: Api,
    mut span: Recording,
    code: Code,
    error: Option<&ScoreError>,
) {
    span.attribute("pixguard.outcome", code.as_str());
    // A server span fails only for the server's faults (5xx; gRPC's server-side codes);
    // a caller's bad request is the caller's span's error.
    let fault = match (api, error) {
        (_, None) if code == Code::Cancelled => None,
        (Api::OipGrpc, None) => {
            span.attribute("rpc.grpc.status_code", 0i64);
            None
        }
        (_, None) => {
            span.attribute("http.response.status_code", 200i64);
            None
        }
        (Api::OipGrpc, Some(e)) => {
            let grpc = e.grpc_code();
            span.attribute("rpc.grpc.status_code", i64::from(grpc.number()));
            grpc.server_fault().then(|| e.to_string())
        }
        (_, Some(e)) => {
            let status = e.http_status();
            span.attribute("http.response.status_code", i64::from(status));
            (status >= 500).then(|| e.to_string())
        }
    };
    tracer.submit(span.end(fault));
}

impl Admission<'_> {
    /// [`Scoring::pick`]: the version that answers this request, whose statistics count it from
    /// now on, however it ends.
    pub fn pick(&mut self) -> Arc<Served> {
        let served = self.scoring.pick();
        self.by_share = served.role() == Role::Canary;
        self.took(&served);
        served
    }

    /// [`Scoring::pick_named`], counted as [`Admission::pick`].
    pub fn pick_named(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<Served>, ScoreError> {
        let served = self.scoring.pick_named(name, version)?;
        self.by_share = unnamed(version) && served.role() == Role::Canary;
        self.took(&served);
        Ok(served)
    }

    /// Decodes a request's Open Inference Protocol `tensors` into the rows they carry, for
    /// `served`, the version it took. Inputs a canary taken for its share refuses are the
    /// champion's to decode, and the request is then the champion's in every figure (and the
    /// canary's `declined`): a request gets from a canary it cannot take what it would get without
    /// one, an answer when the champion takes it (a feature store's rows shaped for the champion
    /// while the canary takes other precomputed features) and the champion's refusal otherwise. A
    /// request that named its version is that version's, whatever it decodes to.
    pub fn decode_inputs(
        &mut self,
        served: Arc<Served>,
        tensors: &[Tensor<'_>],
    ) -> Result<(Arc<Served>, Payload), ScoreError> {
        let limit = self.scoring.limits().max_rows_per_request;
        let decode = |version: &Served| {
            (version.signature()).decode_inputs_with(tensors, limit, crate::parallel::global())
        };
        let refused = match decode(&served) {
            Ok(decoded) => return Ok((served, decoded)),
            Err(refused) => refused,
        };
        match (self.by_share, self.scoring.canary()) {
            (true, Some(canary)) => {
                canary.decline();
                let champion = self.scoring.served();
                self.version = Some(Took::of(&champion));
                self.by_share = false;
                let decoded = decode(&champion)?;
                Ok((champion, decoded))
            }
            _ => Err(refused.into()),
        }
    }

    /// Counts the request in `served`'s statistics, unless it already took its version (a front
    /// end picks through the admission, then scores on what it picked).
    fn took(&mut self, served: &Served) {
        if self.version.is_none() {
            self.version = Some(Took::of(served));
        }
    }

    /// Scores what the request carries on `served` (the version it took; see
    /// [`Scoring::score`]). A traced request's span notes what scored it; a logged request's
    /// decisions go to the decision log, with `request_id` (the caller's own id) when it gave one.
    pub async fn score(
        &mut self,
        served: &Served,
        payload: Payload,
        deadline: Instant,
        explain: bool,
        request_id: Option<&str>,
    ) -> Result<Scores, ScoreError> {
        self.took(served);
        let logged = self.capture(Rows::from(&payload), request_id);
        let who = logged.as_ref().map(|(_, who)| *who);
        let scores = self
            .scoring
            .score(served, payload, deadline, explain, who)
            .await?;
        self.scored(served, &scores, logged);
        Ok(scores)
    }

    /// [`Admission::score`] for validated transactions the caller keeps.
    pub async fn score_transactions(
        &mut self,
        served: &Served,
        txs: &[Transaction],
        deadline: Instant,
        explain: bool,
        request_id: Option<&str>,
    ) -> Result<Scores, ScoreError> {
        self.took(served);
        let logged = self.capture(Rows::Transactions(txs), request_id);
        let who = logged.as_ref().map(|(_, who)| *who);
        let scores = self
            .scoring
            .score_transactions(served, txs, deadline, explain, Lane::Interactive, who)
            .await?;
        self.scored(served, &scores, logged);
        Ok(scores)
    }

    /// When the request is logged (the decision log on, and its ratio taking it): what it keeps
    /// of `rows`, and who answered, for its records and its shadow's.
    fn capture<'r>(
        &self,
        rows: Rows<'_>,
        request_id: Option<&'r str>,
    ) -> Option<(Inputs, Answered<'r>)> {
        let inputs = self.scoring.decision_log()?.capture(rows)?;
        let who = Answered {
            api: self.api,
            request_id,
            trace: self
                .span
                .as_ref()
                .map(|s| (s.trace().trace_id, s.trace().span_id)),
        };
        Some((inputs, who))
    }

    /// Notes on a traced request's span what scored it and where the engine's time went, and
    /// queues a logged request's decisions.
    fn scored(&mut self, served: &Served, scores: &Scores, logged: Option<(Inputs, Answered<'_>)>) {
        if let (Some(log), Some((inputs, who))) = (self.scoring.decision_log(), logged) {
            log.submit(served.logged_as(), who, inputs, scores);
        }
        let Some(span) = self.span.as_mut() else {
            return;
        };
        span.attribute("pixguard.rows", scores.scores.len() as i64);
        let one = (scores.scores.len() == 1).then_some(0);
        describe(span, served, scores, one);
    }

    /// Records the request's outcome and hands the result back.
    pub fn finish<T>(mut self, result: Result<T, ScoreError>) -> Result<T, ScoreError> {
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        self.outcome = Some(code);
        if let Some(span) = self.span.take() {
            self.send(*span, code, result.as_ref().err());
        }
        result
    }

    /// Ends a traced request's span with how the request ended, and queues it for export.
    fn send(&self, span: Recording, code: Code, error: Option<&ScoreError>) {
        if let Some(tracer) = self.scoring.tracer() {
            end_span(tracer, self.api, span, code, error);
        }
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
        let took = self.version.take();
        let requests = took.as_ref().map(|t| &*t.requests);
        metrics.record(self.api, code, self.elapsed_us(), requests);
        if let Some(took) = took
            && code.refuses_input()
        {
            took.engine.refused_input();
        }
        if let Some(span) = self.span.take() {
            self.send(*span, code, None);
        }
    }
}

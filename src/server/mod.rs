//! The HTTP front end (axum): `/v1/score`, health, readiness, metrics and stats; the server's
//! shared state, and the process's life from bind to drain (`run.rs`).

mod admin;
mod age;
mod encoding;
mod error;
pub mod grpc;
mod http;
mod metrics;
pub mod models;
mod monitoring;
pub mod oip;
mod run;
mod socket;
mod v1;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use candle_core::Device;

pub use error::{HttpError, grpc_status};
pub use run::serve;

use crate::config::{Config, DeviceChoice};
use crate::engine::Metrics;
use crate::protocol::v1::{DEADLINE_HEADER, MODEL_VERSION_HEADER};
use crate::scoring::{ScoreError, Scoring};

/// What every handler shares: the configuration, the scoring path and the model's follower.
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// The one path of a payment.
    pub scoring: Scoring,
    /// Loads and swaps model versions.
    pub models: Arc<models::Models>,
    /// Loads and swaps the challenger's versions, when one is scored in the shadow.
    pub shadow_models: Option<Arc<models::Models>>,
    /// Loads and swaps the canary's versions, when one answers a share of requests.
    pub canary_models: Option<Arc<models::Models>>,
    /// The admin routes' bearer token; `None`: they are off.
    admin_token: Option<admin::Token>,
    /// The Kafka consumer's shared state, when `stream.enabled`.
    pub stream: Option<Arc<crate::sources::kafka::Shared>>,
    /// HTTP connections closed for a slow client.
    http_timed_out: Arc<http::TimedOut>,
    /// gRPC connections closed or sent away by their limits.
    grpc_closed: Arc<grpc::Closed>,
}

impl AppState {
    /// The follower that loads and swaps `role`'s versions, when that role is configured.
    pub fn follower(&self, role: models::Role) -> Option<&Arc<models::Models>> {
        match role {
            models::Role::Champion => Some(&self.models),
            models::Role::Canary => self.canary_models.as_ref(),
            models::Role::Challenger => self.shadow_models.as_ref(),
        }
    }
}

impl crate::sources::Host for AppState {
    fn scoring(&self) -> &Scoring {
        &self.scoring
    }

    fn config(&self) -> &Config {
        &self.config
    }
}

/// Picks the device for `choice`; `auto` falls back to the CPU with a warning and a metric.
fn device(choice: DeviceChoice, metrics: &Metrics) -> anyhow::Result<Device> {
    let selected = crate::model::device::select(choice).map_err(|reason| {
        anyhow::anyhow!("engine.device is cuda, but CUDA is unusable: {reason}")
    })?;
    match &selected.fallback {
        Some(reason) => {
            tracing::warn!(%reason, "engine.device is auto and CUDA is unusable: serving on the CPU");
            metrics.cuda_fallback.store(1, Ordering::Relaxed);
        }
        None => tracing::info!(device = %selected.description, "model device"),
    }
    Ok(selected.device)
}

/// Loads the model, starts the engine and returns the shared state (not yet ready).
pub async fn build(config: Config) -> anyhow::Result<Arc<AppState>> {
    let metrics = Arc::new(Metrics::new().context("creating histograms")?);
    let device = device(config.engine.device, &metrics)?;
    let admin_token = admin::Token::from_config(&config.server)?;
    let (models, served) = models::Models::start(
        models::Role::Champion,
        &config.model.source,
        &config,
        device.clone(),
        metrics,
    )
    .await?;
    let (canary_models, canary) = match &config.model.canary {
        None => (None, None),
        Some(source) => {
            // The champion's engine metrics: the canary's batches are answers too.
            let metrics = served.engine().metrics().clone();
            let (follower, canary) = models::Models::start(
                models::Role::Canary,
                source,
                &config,
                device.clone(),
                metrics,
            )
            .await
            .context("loading the canary model (model.canary)")?;
            if canary.model().name != served.model().name {
                tracing::warn!(
                    champion = %served.model().name,
                    canary = %canary.model().name,
                    "the canary is another model: it answers only the requests that name it"
                );
            }
            models::warn_on_features_mode_change(models::Role::Canary, &canary, &served);
            let canary = crate::scoring::canary::Canary::new(canary, config.model.canary_fraction);
            (Some(Arc::new(follower)), Some(canary))
        }
    };
    let (shadow_models, shadow) = match &config.model.shadow {
        None => (None, None),
        Some(source) => {
            // Its own engine metrics: the challenger's batches must not show up as the champion's.
            let metrics = Arc::new(Metrics::new().context("creating histograms")?);
            let (follower, challenger) =
                models::Models::start(models::Role::Challenger, source, &config, device, metrics)
                    .await
                    .context("loading the shadow model (model.shadow)")?;
            let shadow = crate::scoring::shadow::Shadow::new(
                challenger,
                config.model.shadow_fraction,
                config.engine.max_batch_size,
                config.model.shadow_log.as_deref(),
            )?;
            (Some(Arc::new(follower)), Some(shadow))
        }
    };
    let scoring = Scoring::new(served, canary, shadow, &config)?;
    let stream = if config.stream.enabled {
        Some(crate::sources::kafka::shared(&config.stream)?)
    } else {
        None
    };
    Ok(Arc::new(AppState {
        config,
        scoring,
        models: Arc::new(models),
        shadow_models,
        canary_models,
        admin_token,
        stream,
        http_timed_out: Arc::default(),
        grpc_closed: Arc::default(),
    }))
}

/// The request's own deadline, from `x-request-timeout-ms`: none when absent, refused when not a
/// whole number of milliseconds (a mistyped value must not fall back to the default unnoticed).
fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ScoreError> {
    let Some(value) = headers.get(DEADLINE_HEADER) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    match text.trim().parse::<u64>() {
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            Err(ScoreError::Malformed(format!(
                "{DEADLINE_HEADER}: `{text}` is too large: at most {} milliseconds",
                u64::MAX
            )))
        }
        Err(_) => Err(ScoreError::Malformed(format!(
            "{DEADLINE_HEADER}: `{text}` is not a whole number of milliseconds"
        ))),
    }
}

/// A scoring request as it stands before admission: its body, read by its deadline; the deadline
/// itself, from the head's arrival; and the verdict on its `x-request-timeout-ms`, which the front
/// ends report where they always did, after the body is parsed.
struct Arrived {
    /// When the handler got the request's head: a traced request's span starts here.
    head: Instant,
    body: Result<Bytes, ScoreError>,
    deadline: Instant,
    timeout: Result<(), ScoreError>,
}

/// Reads a scoring request's body under its deadline (a malformed `x-request-timeout-ms` reads
/// under the default one).
async fn arrive(state: &AppState, headers: &HeaderMap, body: Body) -> Arrived {
    let head = Instant::now();
    let timeout = timeout(headers);
    let deadline = state
        .scoring
        .deadline(head, timeout.as_ref().ok().copied().flatten());
    let body = read_body(body, state.config.server.body_limit_bytes, head, deadline).await;
    Arrived {
        head,
        body,
        deadline,
        timeout: timeout.map(drop),
    }
}

/// Reads a scoring request's body: at most `limit` bytes (413 beyond), whole by `deadline` (408
/// after it), so a client trickling its body holds a connection no longer than its own deadline
/// allows. Read before admission: a slow body does not hold one of
/// `server.max_concurrent_requests`. `started` is when the head came in, what a 408 counts from.
async fn read_body(
    body: Body,
    limit: usize,
    started: Instant,
    deadline: Instant,
) -> Result<Bytes, ScoreError> {
    // No early 413 from Content-Length: answering before the body is read let the unread rest
    // reset the connection under the answer (the client saw IncompleteMessage, not the 413).
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit));
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ScoreError::PayloadTooLarge { limit })
        }
        Ok(Err(e)) => Err(ScoreError::Malformed(format!(
            "reading the request body: {e}"
        ))),
        Err(_) => Err(ScoreError::BodyTimeout {
            waited_ms: started.elapsed().as_millis() as u64,
        }),
    }
}

/// W3C Trace Context's headers, named once: a lookup by text would parse the name every time.
const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");
const TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");

/// `object` with the fields of `more` (a struct serialised to a JSON object) added: an admin or
/// stats answer that describes a version and then what it did.
fn with_fields(mut object: serde_json::Value, more: impl serde::Serialize) -> serde_json::Value {
    if let (Some(out), Ok(serde_json::Value::Object(fields))) =
        (object.as_object_mut(), serde_json::to_value(more))
    {
        out.extend(fields);
    }
    object
}

/// The request's W3C Trace Context headers.
fn trace_headers(headers: &HeaderMap) -> crate::traces::context::Headers<'_> {
    crate::traces::context::Headers {
        traceparent: headers.get(&TRACEPARENT).map(HeaderValue::as_bytes),
        tracestate: headers.get(&TRACESTATE).map(HeaderValue::as_bytes),
    }
}

/// The caller's `x-request-id` (Envoy, and so ESPv2, sets one on every request it proxies): a
/// request's id in its decision-log records where the protocol carries none.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 200)
}

/// Stamps the engine's share of a scored request's time, and the version that scored it, on its
/// answer.
fn timing(response: &mut Response, queue_us: u64, compute_us: u64, version: &str) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(MODEL_VERSION_HEADER, v);
    }
    headers.insert("x-queue-time-us", HeaderValue::from(queue_us));
    headers.insert("x-compute-time-us", HeaderValue::from(compute_us));
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let scoring = Router::new()
        .route("/v1/score", post(v1::score))
        .route("/v2/models/{model}/infer", post(oip::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(oip::infer),
        )
        .layer(middleware::from_fn(track));
    Router::new()
        .merge(scoring)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/v1/stats", get(stats))
        .route("/v1/monitoring", get(monitoring::page))
        .merge(admin::routes())
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{model}", get(oip::model_metadata))
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route("/v2/models/{model}/config", get(oip::model_config))
        .route("/v2/models/{model}/stats", get(oip::model_statistics))
        .route("/v2/models/stats", get(oip::all_statistics))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(oip::model_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(oip::model_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(oip::model_config),
        )
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(oip::model_statistics),
        )
        .method_not_allowed_fallback(error::wrong_method)
        .fallback(error::no_route)
        .with_state(state)
}

/// Stamps `x-total-time-us` on every scoring answer, refusals included.
async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut response = next.run(request).await;
    let micros = started.elapsed().as_micros() as u64;
    response
        .headers_mut()
        .insert("x-total-time-us", HeaderValue::from(micros));
    response
}

/// Liveness: fails only when a device can take no more work, which a restart cures.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.scoring.device_failure() {
        None => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "live"})),
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "device_failed", "reason": reason})),
        )
            .into_response(),
    }
}

/// Readiness as `/readyz` and the gRPC health service report it: the scoring layer takes traffic
/// and, when the Kafka stream runs, some broker is reachable.
pub fn ready(state: &AppState) -> bool {
    let brokers_down = state.stream.as_ref().is_some_and(|s| {
        s.metrics
            .brokers_down
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    state.scoring.takes_traffic() && !brokers_down
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let scoring = &state.scoring;
    let ready = ready(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": ready,
        "draining": scoring.lifecycle.draining(),
        "model": scoring.served().model(),
    });
    (status, axum::Json(body)).into_response()
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    let mut text = metrics::prometheus(&state.scoring, &state.models);
    state.http_timed_out.prometheus(&mut text);
    state.grpc_closed.prometheus(&mut text);
    if let Some(stream) = &state.stream {
        stream.prometheus(&mut text);
    }
    http::accept_failures(&mut text);
    crate::process::prometheus(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(metrics::stats(&state.scoring, state.stream.as_deref())).into_response()
}

/// Rows of each warm-up batch a worker runs before readiness: 1, 8, 64, … and `max_batch_size`.
/// They are counted in the metrics like any batch.
pub fn warm_up_sizes(max_batch_size: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 8))
        .take_while(|&n| n < max_batch_size)
        .collect();
    sizes.push(max_batch_size);
    sizes
}

#[cfg(test)]
mod tests {
    use super::warm_up_sizes;

    #[test]
    fn warm_up_covers_each_eightfold_size_range_up_to_the_largest_batch() {
        assert_eq!(warm_up_sizes(1), [1]);
        assert_eq!(warm_up_sizes(4), [1, 4]);
        assert_eq!(warm_up_sizes(512), [1, 8, 64, 512]);
        assert_eq!(warm_up_sizes(16_384), [1, 8, 64, 512, 4096, 16_384]);
    }
}

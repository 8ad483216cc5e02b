//! Renders a [`ScoreError`] for HTTP (status, `Retry-After`, the JSON error body) and for gRPC (a
//! status with its code). What each error means is decided in `crate::scoring::error`, not here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::protocol::v1::ErrorBody;
use crate::scoring::{GrpcCode, ScoreError};

/// A [`ScoreError`] answered over HTTP: `{"error", "field", "code"}` (the Open Inference Protocol
/// asks for `error`; `field` and `code` come on top).
pub struct HttpError(pub ScoreError);

impl From<ScoreError> for HttpError {
    fn from(e: ScoreError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: e.to_string(),
            field: e.field().map(str::to_string),
            code: e.code().as_str().to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = e.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A [`ScoreError`] as a gRPC status; the message names the field as the HTTP body does.
pub fn grpc_status(e: &ScoreError) -> tonic::Status {
    let message = e.to_string();
    match e.grpc_code() {
        GrpcCode::InvalidArgument => tonic::Status::invalid_argument(message),
        GrpcCode::DeadlineExceeded => tonic::Status::deadline_exceeded(message),
        GrpcCode::NotFound => tonic::Status::not_found(message),
        GrpcCode::ResourceExhausted => tonic::Status::resource_exhausted(message),
        GrpcCode::Internal => tonic::Status::internal(message),
        GrpcCode::Unavailable => tonic::Status::unavailable(message),
    }
}

/// A path no route answers: a JSON error like every other, naming what the server does answer
/// (axum's own 404 is an empty body).
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    route_error(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: pixguard answers POST /v1/score, the Open Inference Protocol \
             under /v2 (POST /v2/models/{{model}}/infer), GET /healthz, /readyz, /metrics, \
             /v1/stats and /v1/monitoring",
            uri.path()
        ),
        "not_found",
    )
}

/// A method a route does not take (axum still adds `Allow`).
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    route_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {} (see Allow)", uri.path()),
        "method_not_allowed",
    )
}

fn route_error(status: StatusCode, error: String, code: &str) -> Response {
    let body = ErrorBody {
        error,
        field: None,
        code: code.to_string(),
    };
    (status, Json(body)).into_response()
}

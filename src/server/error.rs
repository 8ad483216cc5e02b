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

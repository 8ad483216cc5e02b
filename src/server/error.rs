//! Every error a client can see, mapped to its HTTP status in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;
use crate::transaction::ValidationError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The body is not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A field is missing, unknown, mistyped or fails validation.
    #[error("{0}")]
    Invalid(ValidationError),
    /// The body is larger than `server.body_limit_bytes`.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// More transactions than `server.max_transactions_per_request`.
    #[error("{count} transactions in one request, limit {limit}")]
    TooManyTransactions { count: usize, limit: usize },
    /// The body could not be read.
    #[error("reading the request body: {0}")]
    Body(String),
    /// The server is draining before shutdown.
    #[error("the server is shutting down")]
    Draining,
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    code: &'static str,
}

impl ServerError {
    /// HTTP status, machine-readable code, and the seconds after which a retry makes sense.
    pub fn classify(&self) -> (StatusCode, &'static str, Option<u64>) {
        match self {
            ServerError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", None),
            ServerError::Body(_) => (StatusCode::BAD_REQUEST, "invalid_body", None),
            ServerError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", None),
            ServerError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ServerError::TooManyTransactions { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_many_transactions", None)
            }
            ServerError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining", Some(1)),
            ServerError::Engine(EngineError::Overloaded { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "overloaded", Some(1))
            }
            ServerError::Engine(EngineError::DeadlineExceeded) => {
                (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", None)
            }
            ServerError::Engine(EngineError::ShuttingDown) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Some(1))
            }
            ServerError::Engine(EngineError::Model(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "model_error", None)
            }
            // Another replica can answer; this one fails liveness and gets restarted.
            ServerError::Engine(EngineError::DeviceFailed(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "device_failed", None)
            }
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = self.classify();
        let (error, field) = match &self {
            ServerError::Invalid(v) => (v.reason.clone(), Some(v.field.as_str())),
            ServerError::TooManyTransactions { .. } => (self.to_string(), Some("transactions")),
            other => (other.to_string(), None),
        };
        let field = field.filter(|f| !f.is_empty());
        let mut response = (status, Json(ErrorBody { error, field, code })).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

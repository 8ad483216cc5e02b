//! The one error a payment can end in, on any front end. It alone knows its HTTP status, its gRPC
//! code, its Retry-After and its metric label; /v1, OIP HTTP and OIP gRPC only render it.

use crate::engine::EngineError;
use crate::protocol::ProtocolError;
use crate::transaction::ValidationError;

/// Why a payment was not scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// The body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// The request does not follow its protocol (framing, structure).
    #[error("{0}")]
    Malformed(String),
    /// A field or input is missing, unknown, mistyped or invalid.
    #[error("{0}")]
    InvalidInput(ValidationError),
    /// The body is larger than `server.body_limit_bytes`.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More rows than `server.max_transactions_per_request`.
    #[error("{rows} rows in one request: batch-size must be <= {limit}")]
    TooManyRows {
        /// Rows sent.
        rows: usize,
        /// The limit.
        limit: usize,
        /// The field holding them, when the protocol has one.
        field: Option<&'static str>,
    },
    /// The request names a model (or version) this server does not serve.
    #[error("{0}")]
    UnknownModel(String),
    /// Refused at once: too many requests in flight, or the queue is full.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The deadline passed before the rows reached a worker.
    #[error("deadline exceeded before compute")]
    DeadlineExceeded,
    /// The request's body had not all arrived by its deadline, which runs from its head.
    #[error(
        "the request body had not all arrived {waited_ms} ms after the request's head (its \
         deadline: x-request-timeout-ms, or engine.default_deadline_ms)"
    )]
    BodyTimeout {
        /// How long it was waited for.
        waited_ms: u64,
    },
    /// The server is draining before shutdown.
    #[error("the server is shutting down")]
    Draining,
    /// A worker's device can take no more work; another replica should answer.
    #[error("device failed: {0}")]
    DeviceFailed(String),
    /// Anything else: the model failed on the batch, a worker stopped.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a request ended: the label of `pixguard_responses_total{code}` and the `code` of an error
/// body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Scored.
    Ok,
    /// See [`ScoreError::InvalidJson`].
    InvalidJson,
    /// See [`ScoreError::Malformed`].
    MalformedRequest,
    /// See [`ScoreError::InvalidInput`].
    InvalidField,
    /// See [`ScoreError::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`ScoreError::TooManyRows`].
    TooManyTransactions,
    /// See [`ScoreError::UnknownModel`].
    UnknownModel,
    /// See [`ScoreError::Overloaded`].
    Overloaded,
    /// See [`ScoreError::DeadlineExceeded`].
    DeadlineExceeded,
    /// See [`ScoreError::BodyTimeout`].
    RequestTimeout,
    /// See [`ScoreError::Draining`].
    Draining,
    /// See [`ScoreError::DeviceFailed`].
    DeviceFailed,
    /// See [`ScoreError::Internal`].
    Internal,
    /// The client went away before the answer.
    Cancelled,
}

impl Code {
    /// Every code, in the order of [`Code::index`].
    pub const ALL: [Code; 14] = [
        Code::Ok,
        Code::InvalidJson,
        Code::MalformedRequest,
        Code::InvalidField,
        Code::PayloadTooLarge,
        Code::TooManyTransactions,
        Code::UnknownModel,
        Code::Overloaded,
        Code::DeadlineExceeded,
        Code::RequestTimeout,
        Code::Draining,
        Code::DeviceFailed,
        Code::Internal,
        Code::Cancelled,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::InvalidJson => "invalid_json",
            Code::MalformedRequest => "malformed_request",
            Code::InvalidField => "invalid_field",
            Code::PayloadTooLarge => "payload_too_large",
            Code::TooManyTransactions => "too_many_transactions",
            Code::UnknownModel => "unknown_model",
            Code::Overloaded => "overloaded",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::RequestTimeout => "request_timeout",
            Code::Draining => "draining",
            Code::DeviceFailed => "device_failed",
            Code::Internal => "internal",
            Code::Cancelled => "cancelled",
        }
    }

    /// Position in [`Code::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A request refused for what it sent once it had taken its version: the tensors or fields
    /// that version's signature does not take (a body that is not JSON, or too large, is refused
    /// alike by every version and is not counted).
    pub fn refuses_input(self) -> bool {
        matches!(self, Code::MalformedRequest | Code::InvalidField)
    }
}

/// gRPC status codes pixguard answers with (the numbering of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    /// 3.
    InvalidArgument,
    /// 4.
    DeadlineExceeded,
    /// 5.
    NotFound,
    /// 8.
    ResourceExhausted,
    /// 13.
    Internal,
    /// 14.
    Unavailable,
}

impl GrpcCode {
    /// Its number in `google.rpc.Code`.
    pub fn number(self) -> i32 {
        match self {
            GrpcCode::InvalidArgument => 3,
            GrpcCode::DeadlineExceeded => 4,
            GrpcCode::NotFound => 5,
            GrpcCode::ResourceExhausted => 8,
            GrpcCode::Internal => 13,
            GrpcCode::Unavailable => 14,
        }
    }

    /// Whether the server, not the caller, failed: OpenTelemetry's rule for a gRPC server span's
    /// error status.
    pub fn server_fault(self) -> bool {
        matches!(
            self,
            GrpcCode::DeadlineExceeded | GrpcCode::Internal | GrpcCode::Unavailable
        )
    }
}

impl ScoreError {
    /// The code of the error body and the metric label.
    pub fn code(&self) -> Code {
        match self {
            ScoreError::InvalidJson(_) => Code::InvalidJson,
            ScoreError::Malformed(_) => Code::MalformedRequest,
            ScoreError::InvalidInput(_) => Code::InvalidField,
            ScoreError::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            ScoreError::TooManyRows { .. } => Code::TooManyTransactions,
            ScoreError::UnknownModel(_) => Code::UnknownModel,
            ScoreError::Overloaded(_) => Code::Overloaded,
            ScoreError::DeadlineExceeded => Code::DeadlineExceeded,
            ScoreError::BodyTimeout { .. } => Code::RequestTimeout,
            ScoreError::Draining => Code::Draining,
            ScoreError::DeviceFailed(_) => Code::DeviceFailed,
            ScoreError::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status on every HTTP API.
    pub fn http_status(&self) -> u16 {
        match self {
            ScoreError::InvalidJson(_) | ScoreError::Malformed(_) => 400,
            ScoreError::InvalidInput(_) => 422,
            ScoreError::PayloadTooLarge { .. } | ScoreError::TooManyRows { .. } => 413,
            ScoreError::UnknownModel(_) => 404,
            ScoreError::Overloaded(_) => 429,
            ScoreError::DeadlineExceeded => 504,
            // The client's side was slow, not the server's.
            ScoreError::BodyTimeout { .. } => 408,
            // Another replica can answer; a failed device also fails liveness, so this one restarts.
            ScoreError::Draining | ScoreError::DeviceFailed(_) => 503,
            ScoreError::Internal(_) => 500,
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            // A request with too many rows never succeeds as it is: not a reason to back off.
            ScoreError::InvalidJson(_)
            | ScoreError::Malformed(_)
            | ScoreError::InvalidInput(_)
            | ScoreError::PayloadTooLarge { .. }
            | ScoreError::TooManyRows { .. } => GrpcCode::InvalidArgument,
            ScoreError::UnknownModel(_) => GrpcCode::NotFound,
            ScoreError::Overloaded(_) => GrpcCode::ResourceExhausted,
            ScoreError::DeadlineExceeded | ScoreError::BodyTimeout { .. } => {
                GrpcCode::DeadlineExceeded
            }
            ScoreError::Draining | ScoreError::DeviceFailed(_) => GrpcCode::Unavailable,
            ScoreError::Internal(_) => GrpcCode::Internal,
        }
    }

    /// Seconds after which the same request may succeed (the `Retry-After` header).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ScoreError::Overloaded(_) | ScoreError::Draining | ScoreError::DeviceFailed(_) => {
                Some(1)
            }
            _ => None,
        }
    }

    /// The dotted path of the field to blame, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScoreError::InvalidInput(v) if !v.field.is_empty() => Some(&v.field),
            ScoreError::TooManyRows { field, .. } => *field,
            _ => None,
        }
    }

    /// The message without the field (which the error body carries apart).
    pub fn reason(&self) -> String {
        match self {
            ScoreError::InvalidInput(v) => v.reason.clone(),
            other => other.to_string(),
        }
    }
}

impl From<ProtocolError> for ScoreError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::InvalidJson(m) => ScoreError::InvalidJson(m),
            ProtocolError::Malformed(m) => ScoreError::Malformed(m),
            ProtocolError::Invalid(v) => ScoreError::InvalidInput(v),
            ProtocolError::TooManyRows { rows, limit, field } => {
                ScoreError::TooManyRows { rows, limit, field }
            }
        }
    }
}

impl From<EngineError> for ScoreError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded { queued, limit } => {
                ScoreError::Overloaded(format!("the queue holds {queued} rows, limit {limit}"))
            }
            EngineError::DeadlineExceeded => ScoreError::DeadlineExceeded,
            EngineError::ShuttingDown => ScoreError::Draining,
            EngineError::Model(m) => ScoreError::Internal(format!("model error: {m}")),
            EngineError::DeviceFailed(m) => ScoreError::DeviceFailed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_are_indexed_in_order() {
        for (i, code) in Code::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
        }
    }
}

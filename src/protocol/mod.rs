//! Wire definitions, not server code: what a client sends and what it gets back, for every API
//! pixguard speaks. The server renders them and `pixguard bench` builds them; neither owns them.
//!
//! - [`v1`]: pixguard's JSON API (`POST /v1/score`), also the form of a JSONL batch line.
//! - [`oip`]: the Open Inference Protocol (KServe v2): the model's signature, defined once, tensors
//!   decoded from JSON, the binary extension and gRPC alike, and the infer request and response.
//! - [`grpc`]: the generated `inference.proto` and the `grpc-timeout` header.

pub mod grpc;
pub mod oip;
pub mod v1;

use crate::features::FeatureBatch;
use crate::transaction::{Transaction, ValidationError};

/// A request that does not follow its protocol, found before any work is done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON (or framing) that is not what the protocol defines.
    #[error("{0}")]
    Malformed(String),
    /// A field or input is missing, unknown, mistyped or invalid; the error names it.
    #[error("{0}")]
    Invalid(ValidationError),
    /// More rows than one request may carry.
    #[error("{rows} rows in one request: batch-size must be <= {limit}")]
    TooManyRows {
        /// Rows the request carries.
        rows: usize,
        /// `server.max_transactions_per_request`.
        limit: usize,
        /// The field that holds them (`transactions` in /v1), when there is one.
        field: Option<&'static str>,
    },
}

impl ProtocolError {
    /// An invalid `field`, with the reason.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtocolError::Invalid(ValidationError::new(field, reason))
    }
}

impl From<ValidationError> for ProtocolError {
    fn from(e: ValidationError) -> Self {
        ProtocolError::Invalid(e)
    }
}

/// What a request carries to score: transactions, or feature rows computed by the caller.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Validated transactions; the scoring layer extracts their features.
    Transactions(Vec<Transaction>),
    /// Feature rows in the package's order, already checked against the tables.
    Features(FeatureBatch),
}

impl Payload {
    /// Rows carried.
    pub fn rows(&self) -> usize {
        match self {
            Payload::Transactions(t) => t.len(),
            Payload::Features(f) => f.rows,
        }
    }
}

//! `POST /v1/score`: one transaction, or `{"transactions": [...]}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ServerError;
use crate::model::Decision;
use crate::transaction::{Transaction, ValidationError, parse_json};

/// Header a client may set to bound how long its rows may wait for compute.
pub const DEADLINE_HEADER: &str = "x-request-timeout-ms";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    transactions: Vec<Transaction>,
}

/// The model that answered.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
}

#[derive(Serialize)]
struct ScoreResult<'a> {
    end_to_end_id: &'a str,
    score: f32,
    decision: Decision,
    model: &'a ModelRef,
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    results: Vec<ScoreResult<'a>>,
}

/// Whether the body is a batch: its first key is `transactions` (a transaction has no such field).
fn is_batch(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii_start();
    trimmed
        .strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"transactions\""))
}

fn parse(body: &[u8], limit: usize) -> Result<(Vec<Transaction>, bool), ServerError> {
    if !is_batch(body) {
        return Transaction::from_json(body)
            .map(|tx| (vec![tx], false))
            .map_err(|e| classify(e, body));
    }
    let batch: BatchRequest = parse_json(body).map_err(|e| classify(e, body))?;
    if batch.transactions.len() > limit {
        return Err(ServerError::TooManyTransactions {
            count: batch.transactions.len(),
            limit,
        });
    }
    for (i, tx) in batch.transactions.iter().enumerate() {
        tx.validate()
            .map_err(|e| ServerError::Invalid(e.within(&format!("transactions[{i}]"))))?;
    }
    Ok((batch.transactions, true))
}

/// A JSON syntax error is a 400; everything else names a field (422).
fn classify(error: ValidationError, body: &[u8]) -> ServerError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => ServerError::InvalidJson(e.to_string()),
        Ok(_) => ServerError::Invalid(error),
    }
}

fn timing(response: &mut Response, queue_us: u64, compute_us: u64) {
    let headers = response.headers_mut();
    headers.insert("x-queue-time-us", HeaderValue::from(queue_us));
    headers.insert("x-compute-time-us", HeaderValue::from(compute_us));
}

/// Scores the transactions in the body.
pub async fn score(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServerError> {
    if state.refusing.load(Ordering::Acquire) {
        state
            .metrics
            .rejections
            .draining
            .fetch_add(1, Ordering::Relaxed);
        return Err(ServerError::Draining);
    }
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServerError::PayloadTooLarge {
            limit: state.config.server.body_limit_bytes,
        },
        _ => ServerError::Body(e.body_text()),
    })?;
    let (txs, batch) = parse(&body, state.config.server.max_transactions_per_request)?;
    let timeout = headers
        .get(DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(state.config.engine.default_deadline_ms);
    let deadline = Instant::now() + Duration::from_millis(timeout);
    let features = state.extractor.extract(&txs);
    let scored = state.engine.score(features, deadline).await?;
    state
        .metrics
        .record_engine(scored.queue_us, scored.compute_us);

    let results: Vec<ScoreResult> = txs
        .iter()
        .zip(&scored.scores)
        .map(|(tx, &score)| ScoreResult {
            end_to_end_id: tx.end_to_end_id.as_str(),
            score,
            decision: state.thresholds.decide(f64::from(score)),
            model: &state.model,
        })
        .collect();
    let mut response = if batch {
        Json(BatchResponse { results }).into_response()
    } else {
        let mut results = results;
        match results.pop() {
            Some(one) => Json(one).into_response(),
            None => return Err(ServerError::Body("no transaction".into())),
        }
    };
    timing(&mut response, scored.queue_us, scored.compute_us);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::is_batch;

    #[test]
    fn batch_detection_looks_at_the_first_key_only() {
        assert!(is_batch(b"  {\n \"transactions\": []}"));
        assert!(!is_batch(
            b"{\"end_to_end_id\": \"x\", \"transactions\": 1}"
        ));
        assert!(!is_batch(b"[]"));
    }
}

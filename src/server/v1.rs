//! `POST /v1/score`: translates the JSON API into the scoring path and back.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::error::HttpError;
use super::{AppState, body_error, timeout, timing};
use crate::engine::Lane;
use crate::protocol::v1::{BatchResponse, ScoreResult, parse_request};
use crate::scoring::{Api, ScoreError};

/// `?explain=true`: reasons on every answer.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ScoreQuery {
    #[serde(default)]
    explain: bool,
}

/// Scores the transactions in the body.
pub async fn score(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ScoreQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let scoring = &state.scoring;
    let admission = scoring.admit(Api::V1)?;
    let result = async {
        let body = body.map_err(|e| body_error(e, state.config.server.body_limit_bytes))?;
        let query =
            query.map_err(|e| ScoreError::Malformed(format!("query string: {}", e.body_text())))?;
        let request = parse_request(&body, scoring.limits().max_rows_per_request)?;
        let deadline = scoring.deadline(timeout(&headers));
        let explain = request.explain || query.explain;
        let served = scoring.served();
        let scored = scoring
            .score_transactions(
                &served,
                &request.transactions,
                deadline,
                explain,
                Lane::Interactive,
            )
            .await?;
        let model = served.model();
        let mut results = request
            .transactions
            .iter()
            .zip(scored.scores.iter().zip(&scored.decisions))
            .enumerate()
            .map(|(row, (tx, (&score, &decision)))| ScoreResult {
                end_to_end_id: tx.end_to_end_id.as_str(),
                score,
                decision,
                reasons: served.reason(&scored, row),
                model,
            });
        let mut response = if request.batch {
            Json(BatchResponse {
                results: results.collect(),
            })
            .into_response()
        } else {
            match results.next() {
                Some(one) => Json(one).into_response(),
                None => return Err(ScoreError::Malformed("no transaction".into())),
            }
        };
        timing(
            &mut response,
            scored.queue_us,
            scored.compute_us,
            &served.model().version,
        );
        Ok(response)
    }
    .await;
    Ok(admission.finish(result)?)
}

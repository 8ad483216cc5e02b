//! `POST /v1/score`: translates the JSON API into the scoring path and back.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::encoding::decode_body;
use super::error::HttpError;
use super::{AppState, arrive, request_id, timing, trace_headers};
use crate::protocol::v1::{ScoreResult, parse_request_with, render_batch};
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
    body: Body,
) -> Result<Response, HttpError> {
    let scoring = &state.scoring;
    let arrived = arrive(&state, &headers, body).await;
    let mut admission = scoring.admit(Api::V1, || trace_headers(&headers), arrived.head)?;
    let result = async {
        let limit = state.config.server.body_limit_bytes;
        let body = decode_body(&headers, arrived.body?, limit)?;
        let query =
            query.map_err(|e| ScoreError::Malformed(format!("query string: {}", e.body_text())))?;
        let parallel = crate::parallel::global();
        let request = parse_request_with(&body, scoring.limits().max_rows_per_request, parallel)?;
        arrived.timeout?;
        let deadline = arrived.deadline;
        let explain = request.explain || query.explain;
        let served = admission.pick();
        let scored = admission
            .score_transactions(
                &served,
                &request.transactions,
                deadline,
                explain,
                request_id(&headers),
            )
            .await?;
        let rows = request.transactions.len();
        if scored.scores.len() != rows || scored.decisions.len() != rows {
            return Err(ScoreError::Internal(format!(
                "{} scores and {} decisions for {rows} transactions",
                scored.scores.len(),
                scored.decisions.len()
            )));
        }
        let model = served.model();
        // In range: every index is below `rows`, checked against both columns above.
        let result = |row: usize| ScoreResult {
            end_to_end_id: request.transactions[row].end_to_end_id.as_str(),
            score: scored.scores[row],
            decision: scored.decisions[row],
            reasons: served.reason(&scored, row),
            model,
        };
        let mut response = if request.batch {
            let body = render_batch(rows, parallel, result)
                .map_err(|e| ScoreError::Internal(format!("rendering the answer: {e}")))?;
            ([(CONTENT_TYPE, "application/json")], body).into_response()
        } else if rows == 0 {
            return Err(ScoreError::Malformed("no transaction".into()));
        } else {
            Json(result(0)).into_response()
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

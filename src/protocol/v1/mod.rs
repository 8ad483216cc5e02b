//! pixguard's JSON API, `POST /v1/score`: one transaction, or `{"transactions": [...]}`, answered
//! with `{end_to_end_id, score, decision, model}` or `{"results": [...]}` in request order.

pub mod split;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::ProtocolError;
use crate::model::Decision;
use crate::parallel::Parallel;
use crate::transaction::{
    Transaction, ValidationError, is_json_array, json_from_bytes, parse_json,
};

/// Header a client may set to bound how long its rows may wait for compute (also on OIP HTTP).
pub const DEADLINE_HEADER: &str = "x-request-timeout-ms";

/// Response header naming the model version that scored a request (every HTTP scoring answer),
/// so a client or a load test sees a swap without parsing bodies.
pub const MODEL_VERSION_HEADER: &str = "x-model-version";

/// A batch: `{"transactions": [...]}`, as `/v1/score` and a JSONL line take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The payments, each validated on its own.
    pub transactions: Vec<Transaction>,
    /// Reasons on every answer, not only on HOLD and REJECT.
    #[serde(default)]
    pub explain: bool,
}

/// A parsed `/v1/score` body.
#[derive(Debug)]
pub struct ScoreRequest {
    /// The payments, validated.
    pub transactions: Vec<Transaction>,
    /// Whether the body was a batch (answered with `results`) or one transaction.
    pub batch: bool,
    /// The batch's `explain` (a single transaction asks with `?explain=true`).
    pub explain: bool,
}

/// The model that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
}

/// One reason a payment scored high: a reason code and how much it added to the score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonOut<'a> {
    /// Stable code, e.g. `PAYEE_KEY_NEW` (the package's `model.json` describes each).
    pub code: &'a str,
    /// The score minus the score with the code's features at their training baseline.
    pub contribution: f32,
}

impl<'a> ReasonOut<'a> {
    /// A row's reasons under the package's reason codes (`codes[group]`), in their order.
    pub fn named(codes: &'a [String], reasons: &[crate::model::explain::Reason]) -> Vec<Self> {
        reasons
            .iter()
            .map(|r| ReasonOut {
                code: codes.get(usize::from(r.group)).map_or("", String::as_str),
                contribution: r.contribution,
            })
            .collect()
    }
}

/// One scored payment.
#[derive(Debug, Serialize)]
pub struct ScoreResult<'a> {
    /// The payment's end-to-end id.
    pub end_to_end_id: &'a str,
    /// Fraud probability.
    pub score: f32,
    /// ALLOW, HOLD or REJECT under the thresholds in force.
    pub decision: Decision,
    /// Why, largest contribution first: on HOLD and REJECT, and on any answer when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<ReasonOut<'a>>>,
    /// Who scored it.
    pub model: &'a ModelRef,
}

/// The answer to a batch.
#[derive(Debug, Serialize)]
pub struct BatchResponse<'a> {
    /// One result per transaction, in request order.
    pub results: Vec<ScoreResult<'a>>,
}

/// An error answer: `{"error": "...", "field": "payee.key_type", "code": "invalid_field"}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable reason.
    pub error: String,
    /// Dotted path of the offending field, when one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Machine-readable code (`invalid_field`, `overloaded`, …).
    pub code: String,
}

/// Whether the body is a batch: its first key is `transactions` (a transaction has no such field).
pub fn is_batch(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii_start();
    trimmed
        .strip_prefix(b"{")
        .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"transactions\""))
}

/// Parses and validates a `/v1/score` body holding at most `limit` transactions.
pub fn parse_request(body: &[u8], limit: usize) -> Result<ScoreRequest, ProtocolError> {
    if is_json_array(body) {
        return Err(ProtocolError::Malformed(
            "the body is a JSON array: /v1/score takes one transaction as a JSON object, or several as {\"transactions\": [...]}".into(),
        ));
    }
    if !is_batch(body) {
        let tx = Transaction::from_json(body).map_err(|e| classify(e, body))?;
        return Ok(ScoreRequest {
            transactions: vec![tx],
            batch: false,
            explain: false,
        });
    }
    let batch: BatchRequest = parse_json(body).map_err(|e| classify(e, body))?;
    within_limit(batch.transactions.len(), limit)?;
    validate_batch(&batch.transactions)?;
    Ok(ScoreRequest {
        transactions: batch.transactions,
        batch: true,
        explain: batch.explain,
    })
}

/// A batch of `rows` transactions over the request limit is refused, naming `transactions`.
fn within_limit(rows: usize, limit: usize) -> Result<(), ProtocolError> {
    if rows > limit {
        return Err(ProtocolError::TooManyRows {
            rows,
            limit,
            field: Some("transactions"),
        });
    }
    Ok(())
}

/// Fewest body bytes a run of transactions gets when a batch is cut (about 45 synthetic
/// transactions of ~740 bytes): below this the hand-off to another thread costs more than the
/// parse it saves.
pub const MIN_RUN_BYTES: usize = 32 * 1024;

/// [`parse_request`], with a large batch's transactions parsed and validated in runs on
/// `parallel`'s threads. The outcome is [`parse_request`]'s: a body in any but the plain shape,
/// or with anything wrong in it, is parsed again whole, which names the error.
pub fn parse_request_with(
    body: &[u8],
    limit: usize,
    parallel: &Parallel,
) -> Result<ScoreRequest, ProtocolError> {
    let parts = parallel.parts(body.len(), MIN_RUN_BYTES);
    if let Some(split) = (parts > 1 && is_batch(body))
        .then(|| split::split_batch(body, parts))
        .flatten()
        .filter(|split| split.runs.len() > 1)
    {
        let parsed = parallel.map(split.runs, |run| parse_run(body, run));
        if parsed.iter().all(Option::is_some) {
            let rows = parsed.iter().flatten().map(Vec::len).sum();
            within_limit(rows, limit)?;
            let mut transactions = Vec::with_capacity(rows);
            parsed
                .into_iter()
                .flatten()
                .for_each(|run| transactions.extend(run));
            return Ok(ScoreRequest {
                transactions,
                batch: true,
                explain: split.explain,
            });
        }
    }
    parse_request(body, limit)
}

/// Parses and validates the run of transactions at `run` of `body` (`{…},{…}`) as the contents
/// of an array; `None` if it is not one or any fails (the caller's whole-body parse then says why).
fn parse_run(body: &[u8], run: Range<usize>) -> Option<Vec<Transaction>> {
    let run = body.get(run).filter(|r| !r.is_empty())?;
    let mut array = Vec::with_capacity(run.len() + 2);
    array.push(b'[');
    array.extend_from_slice(run);
    array.push(b']');
    let txs: Vec<Transaction> = json_from_bytes(&array).ok()?;
    txs.iter().all(|tx| tx.validate().is_ok()).then_some(txs)
}

/// A batch's answer, `{"results": [...]}`, each row's result rendered by `result`, in chunks on
/// `parallel`'s threads: the same bytes as serialising a [`BatchResponse`] whole.
pub fn render_batch<'a>(
    rows: usize,
    parallel: &Parallel,
    result: impl Fn(usize) -> ScoreResult<'a> + Sync + Send,
) -> Result<Vec<u8>, serde_json::Error> {
    let parts = parallel.map(parallel.row_ranges(rows), |range: Range<usize>| {
        // ~150 bytes a result without reasons.
        let mut out = Vec::with_capacity(range.len() * 160);
        for row in range {
            if !out.is_empty() {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &result(row))?;
        }
        Ok::<_, serde_json::Error>(out)
    });
    let mut body = Vec::with_capacity(
        parts
            .iter()
            .map(|p| p.as_ref().map_or(0, Vec::len) + 1)
            .sum::<usize>()
            + 14,
    );
    body.extend_from_slice(b"{\"results\":[");
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&part?);
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// Validates each transaction of a batch, naming `transactions[i]` in the error.
pub fn validate_batch(transactions: &[Transaction]) -> Result<(), ValidationError> {
    for (i, tx) in transactions.iter().enumerate() {
        tx.validate()
            .map_err(|e| e.within(&format!("transactions[{i}]")))?;
    }
    Ok(())
}

/// A JSON syntax error is malformed; everything else names a field.
fn classify(error: ValidationError, body: &[u8]) -> ProtocolError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => ProtocolError::InvalidJson(format!("invalid JSON: {e}")),
        Ok(_) => ProtocolError::Invalid(error),
    }
}

#[cfg(test)]
#[path = "parallel_tests.rs"]
mod parallel_tests;

#[cfg(test)]
mod tests {
    use super::{ProtocolError, is_batch, parse_request};

    #[test]
    fn batch_detection_looks_at_the_first_key_only() {
        assert!(is_batch(b"  {\n \"transactions\": []}"));
        assert!(!is_batch(
            b"{\"end_to_end_id\": \"x\", \"transactions\": 1}"
        ));
        assert!(!is_batch(b"[]"));
    }

    #[test]
    fn an_array_body_is_told_how_to_send_a_batch() {
        let tx = br#"{"end_to_end_id": "E"}"#;
        let body = [b"[".as_slice(), tx, b",", tx, b"]"].concat();
        match parse_request(&body, 10) {
            Err(ProtocolError::Malformed(m)) => {
                assert!(m.contains(r#"{"transactions": [...]}"#), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_request(b"[1, 2", 10),
            Err(ProtocolError::InvalidJson(_))
        ));
    }
}

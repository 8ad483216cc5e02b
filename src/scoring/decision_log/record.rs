//! A decision's record: the /v1 answer of one transaction (the Kafka source's score record's
//! fields, in the same names) plus which API answered, the request's id and trace, the engine's
//! timings and, when asked, what was scored.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Entry, Inputs};
use crate::model::Decision;
use crate::protocol::v1::{ModelRef, ReasonOut};
use crate::traces::context::push_hex;
use crate::transaction::Transaction;

/// One record's value.
#[derive(Serialize)]
struct Record<'a> {
    /// `None` for a feature row: the caller computed its features and sent no id.
    end_to_end_id: Option<&'a str>,
    score: f32,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<ReasonOut<'a>>>,
    model: &'a ModelRef,
    model_version: &'a str,
    scored_at: &'a str,
    source: Source<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    queue_us: u64,
    compute_us: u64,
    /// `challenger` for the shadow's decision, `canary` for the canary's answer; absent for the
    /// champion's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<&'a Transaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<Features<'a>>,
}

/// The request a record's decision answered.
#[derive(Serialize)]
struct Source<'a> {
    api: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    /// The row's place in its request, and the request's rows.
    row: usize,
    rows: usize,
}

/// A feature row as the model took it, by the package's column names.
#[derive(Serialize)]
struct Features<'a> {
    numeric: BTreeMap<&'a str, f32>,
    categorical: BTreeMap<&'a str, u32>,
}

/// Renders an entry's records, calling `each(key, value)` for every row in request order.
pub fn render(entry: &Entry, mut each: impl FnMut(Option<&[u8]>, &[u8])) {
    let version = &*entry.version;
    let scored_at = chrono::DateTime::<chrono::Utc>::from(entry.scored_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let trace_id = entry.trace.map(|(id, _)| {
        let mut text = String::with_capacity(32);
        push_hex(&mut text, &id);
        text
    });
    let rows = entry.rows();
    let mut value = Vec::with_capacity(512);
    for (row, (&score, &decision)) in entry.scores.iter().zip(&entry.decisions).enumerate() {
        let (id, transaction, features) = match &entry.inputs {
            Inputs::Ids(ids) => (ids.get(row).map(|id| id.as_str()), None, None),
            Inputs::Transactions(txs) => {
                let tx = txs.get(row);
                (tx.map(|t| t.end_to_end_id.as_str()), tx, None)
            }
            Inputs::NoIds => (None, None, None),
            Inputs::Features(batch) => (None, None, features(version, batch, row)),
        };
        let reasons = match (&version.reason_codes, entry.reasons.get(row)) {
            (Some(codes), Some(Some(reasons))) => Some(ReasonOut::named(codes, reasons)),
            _ => None,
        };
        let record = Record {
            end_to_end_id: id,
            score,
            decision,
            reasons,
            model: &version.model,
            model_version: &version.model_version,
            scored_at: &scored_at,
            source: Source {
                api: entry.api.as_str(),
                request_id: entry.request_id.as_deref(),
                row,
                rows,
            },
            trace_id: trace_id.as_deref(),
            queue_us: entry.queue_us,
            compute_us: entry.compute_us,
            role: version.role,
            transaction,
            features,
        };
        value.clear();
        // Plain structs of strings and numbers always serialise into a Vec.
        let _ = serde_json::to_writer(&mut value, &record);
        each(id.map(str::as_bytes), &value);
    }
}

/// Row `row` of `batch` by `version`'s column names (`None` past its end).
fn features<'a>(
    version: &'a super::Version,
    batch: &'a crate::features::FeatureBatch,
    row: usize,
) -> Option<Features<'a>> {
    if row >= batch.rows {
        return None;
    }
    let numeric = version
        .numeric
        .iter()
        .map(String::as_str)
        .zip(batch.numeric_row(row).iter().copied())
        .collect();
    let categorical = version
        .categorical
        .iter()
        .map(String::as_str)
        .zip(batch.categorical_row(row).iter().copied())
        .collect();
    Some(Features {
        numeric,
        categorical,
    })
}

//! The Open Inference Protocol (KServe v2) over HTTP: health, metadata and `infer`, with JSON
//! tensors and the binary tensor extension, so Triton/KServe clients work unchanged.
//!
//! Two input modes, both in the model metadata: the transaction's flattened fields as named inputs
//! (validated and turned into features exactly like `/v1/score`), or precomputed `features` and
//! `categories` tensors for callers with their own feature store.

pub mod model_config;
pub mod statistics;
mod tensor;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use tensor::decode;
pub use tensor::{Column, Datatype, OipError};
pub use tensor::{RawInput, encode_bytes};

use super::AppState;
use crate::engine::EngineError;
use crate::features::FeatureBatch;
use crate::transaction::{Transaction, from_flat};

/// The protocol extensions served, as `GET /v2` and gRPC ServerMetadata list them.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "statistics"];

/// The platform name the metadata and the configuration report.
pub const PLATFORM: &str = "pixguard_candle_dcn_v2";

/// Header of the binary tensor extension: length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The flattened transaction fields as inputs: name, datatype, optional.
/// Absent per row: "" for BYTES, NaN for FP64, -1 for the INT64 DICT counts (which makes the whole
/// `payee.dict_stats` group absent); an optional input may also be left out entirely.
pub const FIELD_INPUTS: &[(&str, Datatype, bool)] = &[
    ("end_to_end_id", Datatype::Bytes, false),
    ("accepted_at", Datatype::Bytes, false),
    ("amount_cents", Datatype::Int64, false),
    ("initiation_form", Datatype::Bytes, false),
    ("purpose", Datatype::Bytes, false),
    ("payer.ispb", Datatype::Bytes, false),
    ("payer.account_type", Datatype::Bytes, false),
    ("payer.person_type", Datatype::Bytes, false),
    ("payer.account_opened_at", Datatype::Bytes, false),
    ("payer.device.registered", Datatype::Bool, false),
    ("payer.device.first_seen_at", Datatype::Bytes, true),
    ("payee.ispb", Datatype::Bytes, false),
    ("payee.account_type", Datatype::Bytes, false),
    ("payee.person_type", Datatype::Bytes, false),
    ("payee.key_type", Datatype::Bytes, true),
    ("payee.key_created_at", Datatype::Bytes, true),
    ("payee.account_opened_at", Datatype::Bytes, true),
    ("payee.dict_stats.settlements_90d", Datatype::Int64, true),
    ("payee.dict_stats.fraud_markers_30d", Datatype::Int64, true),
    ("payee.dict_stats.infractions_open", Datatype::Int64, true),
    ("payee.dict_stats.mule_marker", Datatype::Bool, true),
    ("history.payee_first_time", Datatype::Bool, false),
    ("history.payer_tx_1h", Datatype::Int64, false),
    ("history.payer_amount_24h_cents", Datatype::Int64, false),
    ("history.amount_zscore_90d", Datatype::Fp64, true),
];

const FEATURES: &str = "features";
const CATEGORIES: &str = "categories";

/// An OIP error: `{"error": "..."}` with the status Triton uses for it.
pub struct OipResponseError(pub StatusCode, pub String);

impl IntoResponse for OipResponseError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if matches!(
            self.0,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

impl From<OipError> for OipResponseError {
    fn from(e: OipError) -> Self {
        OipResponseError(StatusCode::BAD_REQUEST, e.0)
    }
}

impl From<EngineError> for OipResponseError {
    fn from(e: EngineError) -> Self {
        let status = match e {
            EngineError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            EngineError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Model(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::DeviceFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        OipResponseError(status, e.to_string())
    }
}

fn bad(message: String) -> OipResponseError {
    OipResponseError(StatusCode::BAD_REQUEST, message)
}

/// `GET /v2`.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "pixguard",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// `GET /v2/health/live`: fails once a device can take no more work.
pub async fn live(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.device_failure().is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /v2/health/ready`.
pub async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.takes_traffic() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Checks that the request names the served model (and version, when given); 404 otherwise.
pub fn check_model(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<(), OipResponseError> {
    if model != state.model.name {
        return Err(OipResponseError(
            StatusCode::NOT_FOUND,
            format!("unknown model '{model}'"),
        ));
    }
    if let Some(v) = version
        && v != state.model.version
    {
        return Err(OipResponseError(
            StatusCode::NOT_FOUND,
            format!(
                "unknown version '{v}' of model '{model}' (serving '{}')",
                state.model.version
            ),
        ));
    }
    Ok(())
}

/// Path parameters of the model routes.
#[derive(Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

/// `GET /v2/models/{m}[/versions/{v}]`.
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipResponseError> {
    check_model(&state, &path.model, path.version.as_deref())?;
    let mut inputs: Vec<Value> = FIELD_INPUTS
        .iter()
        .map(|(name, dt, optional)| {
            json!({"name": name, "datatype": dt.as_str(), "shape": [-1, 1], "parameters": {"optional": optional}})
        })
        .collect();
    inputs.push(
        json!({"name": FEATURES, "datatype": "FP32", "shape": [-1, state.extractor.n_numeric()]}),
    );
    inputs.push(json!({"name": CATEGORIES, "datatype": "INT64", "shape": [-1, state.extractor.n_categorical()]}));
    Ok(Json(json!({
        "name": state.model.name,
        "versions": [state.model.version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "decision", "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "parameters": {
            "input_modes": "either the transaction fields (one row per transaction; features computed by \
                            the model's spec) or `features` + `categories` (precomputed)",
            "numeric_features": state.extractor.spec().numeric.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            "categorical_features": state.extractor.spec().categorical.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        },
    })))
}

/// `GET /v2/models/{m}[/versions/{v}]/config`.
pub async fn model_config(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipResponseError> {
    check_model(&state, &path.model, path.version.as_deref())?;
    Ok(Json(model_config::model_config(&state).to_json()))
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`.
pub async fn model_statistics(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, OipResponseError> {
    check_model(&state, &path.model, path.version.as_deref())?;
    let stats = statistics::model_statistics(&state).to_json();
    Ok(Json(json!({"model_stats": [stats]})))
}

/// `GET /v2/models/stats`: every served model.
pub async fn all_statistics(State(state): State<Arc<AppState>>) -> Json<Value> {
    let stats = statistics::model_statistics(&state).to_json();
    Json(json!({"model_stats": [stats]}))
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`.
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<StatusCode, OipResponseError> {
    check_model(&state, &path.model, path.version.as_deref())?;
    Ok(ready(State(state)).await)
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RawInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Each input's slice of the binary payload (`None`: its data is in the JSON).
type BinaryParts<'a> = Vec<Option<&'a [u8]>>;

/// Splits the body into the JSON header and each binary input's bytes.
fn split_body<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<(InferRequest, BinaryParts<'a>), OipError> {
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n <= body.len())
            .ok_or_else(|| OipError(format!("{HEADER_LENGTH} is not a length within the body")))?,
        None => body.len(),
    };
    let head = &body[..json_len];
    let fixed = tensor::nan_literals_to_null(head);
    let request: InferRequest = serde_json::from_slice(fixed.as_deref().unwrap_or(head))
        .map_err(|e| OipError(format!("malformed inference request: {e}")))?;
    let mut rest = &body[json_len..];
    let mut slices = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size
                    .as_u64()
                    .map(|s| s as usize)
                    .filter(|s| *s <= rest.len())
                    .ok_or_else(|| {
                        OipError(format!(
                            "input '{}': binary_data_size exceeds the body",
                            input.name
                        ))
                    })?;
                slices.push(Some(&rest[..size]));
                rest = &rest[size..];
            }
            None => slices.push(None),
        }
    }
    if !rest.is_empty() {
        return Err(OipError(format!(
            "{} bytes of binary data are not claimed by any input",
            rest.len()
        )));
    }
    Ok((request, slices))
}

/// Transactions from the field inputs, validated like `/v1/score`.
fn transactions(
    columns: &HashMap<&str, Column>,
    rows: usize,
) -> Result<Vec<Transaction>, OipError> {
    let mut txs = Vec::with_capacity(rows);
    let mut cells: Vec<(&str, Value)> = Vec::with_capacity(FIELD_INPUTS.len());
    for row in 0..rows {
        cells.clear();
        let dict_absent = matches!(columns.get("payee.dict_stats.settlements_90d"), Some(Column::Int(v)) if v[row] < 0);
        for (name, _, _) in FIELD_INPUTS {
            let Some(column) = columns.get(name) else {
                continue;
            };
            let value = match column {
                Column::Text(v) if v[row].is_empty() => Value::Null,
                Column::Text(v) => Value::String(v[row].clone()),
                Column::Int(_) | Column::Bool(_)
                    if dict_absent && name.starts_with("payee.dict_stats.") =>
                {
                    Value::Null
                }
                Column::Int(v) => Value::from(v[row]),
                Column::Float(v) if v[row].is_nan() => Value::Null,
                Column::Float(v) => Value::from(v[row]),
                Column::Bool(v) => Value::Bool(v[row]),
            };
            cells.push((name, value));
        }
        let tx = from_flat(cells.iter().map(|(n, v)| (*n, v)))
            .map_err(|e| OipError(format!("input '{}', row {row}: {}", e.field, e.reason)))?;
        txs.push(tx);
    }
    Ok(txs)
}

/// Features, by mode.
fn features(
    state: &AppState,
    inputs: &[RawInput],
    binary: &[Option<&[u8]>],
) -> Result<FeatureBatch, OipError> {
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    if names.contains(&FEATURES) || names.contains(&CATEGORIES) {
        return precomputed(state, inputs, binary);
    }
    let mut columns: HashMap<&str, Column> = HashMap::new();
    for (input, bin) in inputs.iter().zip(binary) {
        let Some((name, datatype, _)) = FIELD_INPUTS.iter().find(|(n, _, _)| *n == input.name)
        else {
            return Err(OipError(format!("unknown input '{}'", input.name)));
        };
        if input.shape.len() > 2 || input.shape.get(1).is_some_and(|d| *d != 1) {
            return Err(OipError(format!(
                "input '{name}': shape {:?} must be [N] or [N, 1]",
                input.shape
            )));
        }
        columns.insert(name, decode(input, *datatype, *bin)?);
    }
    for (name, _, optional) in FIELD_INPUTS {
        if !optional && !columns.contains_key(name) {
            return Err(OipError(format!("missing input '{name}'")));
        }
    }
    let rows = columns.get("end_to_end_id").map_or(0, Column::len);
    if let Some((name, c)) = columns.iter().find(|(_, c)| c.len() != rows) {
        return Err(OipError(format!(
            "input '{name}' has {} rows, end_to_end_id has {rows}",
            c.len()
        )));
    }
    let txs = transactions(&columns, rows)?;
    Ok(state.extractor.extract(&txs))
}

fn precomputed(
    state: &AppState,
    inputs: &[RawInput],
    binary: &[Option<&[u8]>],
) -> Result<FeatureBatch, OipError> {
    let (nn, nc) = (state.extractor.n_numeric(), state.extractor.n_categorical());
    let mut numeric = None;
    let mut categorical = None;
    for (input, bin) in inputs.iter().zip(binary) {
        let (width, datatype) = match input.name.as_str() {
            FEATURES => (nn, Datatype::Fp32),
            CATEGORIES => (nc, Datatype::Int64),
            other => {
                return Err(OipError(format!(
                    "unknown input '{other}': with precomputed features only '{FEATURES}' and '{CATEGORIES}' are taken"
                )));
            }
        };
        if input.shape.len() != 2 || input.shape[1] != width as i64 {
            return Err(OipError(format!(
                "input '{}': shape {:?} must be [N, {width}]",
                input.name, input.shape
            )));
        }
        let column = decode(input, datatype, *bin)?;
        match (input.name.as_str(), column) {
            (FEATURES, Column::Float(v)) => {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(OipError(format!(
                        "input '{FEATURES}': element {i} is not finite"
                    )));
                }
                numeric = Some(v.into_iter().map(|x| x as f32).collect::<Vec<f32>>());
            }
            (_, Column::Int(v)) => {
                let cards: Vec<usize> = state
                    .extractor
                    .spec()
                    .categorical
                    .iter()
                    .map(|f| f.cardinality())
                    .collect();
                let mut out = Vec::with_capacity(v.len());
                for (i, x) in v.into_iter().enumerate() {
                    let card = cards[i % nc];
                    if x < 0 || x as usize >= card {
                        return Err(OipError(format!(
                            "input '{CATEGORIES}': element {i} is {x}, outside 0..{card} for feature '{}'",
                            state.extractor.spec().categorical[i % nc].name
                        )));
                    }
                    out.push(x as u32);
                }
                categorical = Some(out);
            }
            _ => {
                return Err(OipError(format!(
                    "input '{}': unexpected element type",
                    input.name
                )));
            }
        }
    }
    let numeric = numeric.ok_or_else(|| OipError(format!("missing input '{FEATURES}'")))?;
    let categorical =
        categorical.ok_or_else(|| OipError(format!("missing input '{CATEGORIES}'")))?;
    let rows = numeric.len() / nn.max(1);
    if categorical.len() / nc.max(1) != rows {
        return Err(OipError(format!(
            "'{FEATURES}' has {rows} rows, '{CATEGORIES}' {}",
            categorical.len() / nc.max(1)
        )));
    }
    Ok(FeatureBatch {
        rows,
        n_numeric: nn,
        n_categorical: nc,
        numeric,
        categorical,
    })
}

/// Validates the inputs (either mode), queues their rows and waits for the scores. Shared by the
/// HTTP and gRPC front ends.
pub async fn score_inputs(
    state: &AppState,
    inputs: &[RawInput],
    binary: &[Option<&[u8]>],
) -> Result<crate::engine::Scored, OipResponseError> {
    let batch = features(state, inputs, binary)?;
    let limit = state.config.server.max_transactions_per_request;
    if batch.rows > limit {
        return Err(bad(format!(
            "inference request batch-size must be <= {limit}, got {}",
            batch.rows
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(state.config.engine.default_deadline_ms);
    let scored = state.engine.score(batch, deadline).await?;
    state
        .metrics
        .record_engine(scored.queue_us, scored.compute_us);
    Ok(scored)
}

/// The decision for each score under the thresholds in force.
pub fn decisions(state: &AppState, scores: &[f32]) -> Vec<&'static str> {
    scores
        .iter()
        .map(|&s| match state.thresholds.decide(f64::from(s)) {
            crate::model::Decision::Allow => "ALLOW",
            crate::model::Decision::Hold => "HOLD",
            crate::model::Decision::Reject => "REJECT",
        })
        .collect()
}

/// The model metadata's inputs: name, datatype, shape.
pub fn input_metadata(state: &AppState) -> Vec<(String, &'static str, Vec<i64>)> {
    let mut out: Vec<(String, &'static str, Vec<i64>)> = FIELD_INPUTS
        .iter()
        .map(|(n, dt, _)| (n.to_string(), dt.as_str(), vec![-1, 1]))
        .collect();
    out.push((
        FEATURES.into(),
        "FP32",
        vec![-1, state.extractor.n_numeric() as i64],
    ));
    out.push((
        CATEGORIES.into(),
        "INT64",
        vec![-1, state.extractor.n_categorical() as i64],
    ));
    out
}

/// `POST /v2/models/{m}[/versions/{v}]/infer`.
pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OipResponseError> {
    check_model(&state, &path.model, path.version.as_deref())?;
    if state.refusing.load(Ordering::Acquire) {
        return Err(OipResponseError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    let (request, binary) = split_body(&headers, &body)?;
    let scored = score_inputs(&state, &request.inputs, &binary).await?;
    let rows = scored.scores.len();

    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let wanted: Vec<(String, bool)> = match &request.outputs {
        Some(outputs) => {
            let mut wanted = Vec::new();
            for o in outputs {
                if o.name != "score" && o.name != "decision" {
                    return Err(bad(format!("unknown output '{}'", o.name)));
                }
                let binary = o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary);
                wanted.push((o.name.clone(), binary));
            }
            wanted
        }
        None => vec![
            ("score".into(), all_binary),
            ("decision".into(), all_binary),
        ],
    };
    let decisions = decisions(&state, &scored.scores);
    let mut outputs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for (name, as_binary) in &wanted {
        let (datatype, data, raw) = if name == "score" {
            (
                "FP32",
                json!(scored.scores),
                scored
                    .scores
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
        } else {
            ("BYTES", json!(decisions), encode_bytes(&decisions))
        };
        let mut output = json!({"name": name, "datatype": datatype, "shape": [rows, 1]});
        if *as_binary {
            output["parameters"] = json!({"binary_data_size": raw.len()});
            tail.extend_from_slice(&raw);
        } else {
            output["data"] = data;
        }
        outputs.push(output);
    }
    let mut header_json = json!({
        "model_name": state.model.name,
        "model_version": state.model.version,
        "outputs": outputs,
    });
    if let Some(id) = request.id {
        header_json["id"] = Value::String(id);
    }
    let mut response = if tail.is_empty() {
        Json(header_json).into_response()
    } else {
        let head = header_json.to_string().into_bytes();
        let length = head.len();
        let mut bytes = head;
        bytes.extend_from_slice(&tail);
        let mut r = bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r.headers_mut()
            .insert(HEADER_LENGTH, HeaderValue::from(length));
        r
    };
    response
        .headers_mut()
        .insert("x-queue-time-us", HeaderValue::from(scored.queue_us));
    response
        .headers_mut()
        .insert("x-compute-time-us", HeaderValue::from(scored.compute_us));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::FIELD_INPUTS;
    use crate::transaction::CSV_COLUMNS;

    #[test]
    fn field_inputs_are_the_flattened_columns() {
        let names: Vec<&str> = FIELD_INPUTS.iter().map(|f| f.0).collect();
        assert_eq!(names, CSV_COLUMNS);
    }
}

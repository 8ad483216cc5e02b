//! The Open Inference Protocol (KServe v2) over HTTP: health, metadata, Triton's model
//! configuration and statistics, and `infer`, with JSON tensors and the binary tensor extension.
//! Wire forms are in `crate::protocol::oip`; this file only translates them to the scoring path.

pub mod model_config;
pub mod statistics;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::encoding::decode_body;
use super::error::HttpError;
use super::{AppState, arrive, timing, trace_headers};
use crate::protocol::oip::{
    EXTENSIONS, HEADER_LENGTH, PLATFORM, SERVER_NAME, http_body, split_body,
};
use crate::scoring::Api;

/// Path parameters of the model routes.
#[derive(Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

fn health(ok: bool, body: Value) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /v2`: `$metadata_server_response`.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// `GET /v2/health/live`: `{"live": bool}`, 503 once a device can take no more work.
pub async fn live(State(state): State<Arc<AppState>>) -> Response {
    let live = state.scoring.live();
    health(live, json!({"live": live}))
}

/// `GET /v2/health/ready`: `{"ready": bool}`, 503 while not ready.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.scoring.takes_traffic();
    health(ready, json!({"ready": ready}))
}

/// `GET /v2/models/{m}[/versions/{v}]/ready`: `$ready_model_response`.
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, HttpError> {
    let served = state.scoring.named(&path.model, path.version.as_deref())?;
    let ready = state.scoring.takes_traffic();
    Ok(health(
        ready,
        json!({"name": served.model().name, "ready": ready}),
    ))
}

/// `GET /v2/models/{m}[/versions/{v}]`: `$metadata_model_response`.
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, HttpError> {
    let served = state.scoring.named(&path.model, path.version.as_deref())?;
    let signature = served.signature();
    let tensor = |t: &crate::protocol::oip::TensorSpec| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape});
    Ok(Json(json!({
        "name": served.model().name,
        "versions": state.scoring.versions(&served.model().name),
        "platform": PLATFORM,
        "inputs": signature.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "outputs": signature.outputs.iter().map(tensor).collect::<Vec<_>>(),
    })))
}

/// `GET /v2/models/{m}[/versions/{v}]/config`.
pub async fn model_config(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, HttpError> {
    let served = state.scoring.named(&path.model, path.version.as_deref())?;
    Ok(Json(model_config::model_config(&state, &served).to_json()))
}

/// `GET /v2/models/{m}[/versions/{v}]/stats`.
pub async fn model_statistics(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, HttpError> {
    let stats = statistics::statistics(&state.scoring, Some(&path.model), path.version.as_deref())?;
    Ok(Json(statistics::to_json(&stats)))
}

/// `GET /v2/models/stats`: every version of every served model.
pub async fn all_statistics(State(state): State<Arc<AppState>>) -> Result<Json<Value>, HttpError> {
    let stats = statistics::statistics(&state.scoring, None, None)?;
    Ok(Json(statistics::to_json(&stats)))
}

/// `POST /v2/models/{m}[/versions/{v}]/infer`.
pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let scoring = &state.scoring;
    let arrived = arrive(&state, &headers, body).await;
    let mut admission = scoring.admit(Api::OipHttp, || trace_headers(&headers), arrived.head)?;
    let result = async {
        let served = admission.pick_named(&path.model, path.version.as_deref())?;
        let limit = state.config.server.body_limit_bytes;
        let body = decode_body(&headers, arrived.body?, limit)?;
        let header_length = headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes);
        let (request, binary) = split_body(header_length, &body)?;
        let outputs = (served.signature())
            .select_outputs(request.requested_outputs(), request.binary_output())?;
        let tensors = request.tensors(&binary);
        let (served, payload) = admission.decode_inputs(served, &tensors)?;
        arrived.timeout?;
        let scored = admission
            .score(
                &served,
                payload,
                arrived.deadline,
                request.explain()?,
                request.id.as_deref().or(super::request_id(&headers)),
            )
            .await?;
        let model = served.model();
        let reasons = served.reason_texts(&scored, &outputs);
        let answers = scored.answers(&reasons);
        let (bytes, json_length) = http_body(
            (&model.name, &model.version),
            request.id.as_deref(),
            &outputs,
            &answers,
        );
        let mut response = bytes.into_response();
        let headers = response.headers_mut();
        match json_length {
            None => headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            Some(length) => {
                headers.insert(HEADER_LENGTH, HeaderValue::from(length));
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )
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

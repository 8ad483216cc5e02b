//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService` with the same
//! inputs, engine, metrics, backpressure and shutdown as the HTTP front end.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::AppState;
use super::oip::model_config::triton_type_value;
use super::oip::{self, OipResponseError, RawInput, encode_bytes};

/// Code generated from `inference.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::GrpcInferenceService;
pub use proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The service, sharing the HTTP front end's state.
pub struct Inference(pub Arc<AppState>);

fn status(e: OipResponseError) -> Status {
    let OipResponseError(code, message) = e;
    match code {
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(message),
        StatusCode::INTERNAL_SERVER_ERROR => Status::internal(message),
        _ => Status::invalid_argument(message),
    }
}

fn optional(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// Typed contents as the JSON `data` the shared decoder reads.
fn contents_as_json(c: &InferTensorContents) -> Value {
    let text = |b: &Vec<u8>| Value::String(String::from_utf8_lossy(b).into_owned());
    let parts: [(bool, Vec<Value>); 8] = [
        (
            !c.bool_contents.is_empty(),
            c.bool_contents.iter().map(|&v| Value::Bool(v)).collect(),
        ),
        (
            !c.int_contents.is_empty(),
            c.int_contents.iter().map(|&v| Value::from(v)).collect(),
        ),
        (
            !c.int64_contents.is_empty(),
            c.int64_contents.iter().map(|&v| Value::from(v)).collect(),
        ),
        (
            !c.uint_contents.is_empty(),
            c.uint_contents.iter().map(|&v| Value::from(v)).collect(),
        ),
        (
            !c.uint64_contents.is_empty(),
            c.uint64_contents.iter().map(|&v| Value::from(v)).collect(),
        ),
        (
            !c.fp32_contents.is_empty(),
            c.fp32_contents
                .iter()
                .map(|&v| float(f64::from(v)))
                .collect(),
        ),
        (
            !c.fp64_contents.is_empty(),
            c.fp64_contents.iter().map(|&v| float(v)).collect(),
        ),
        (
            !c.bytes_contents.is_empty(),
            c.bytes_contents.iter().map(text).collect(),
        ),
    ];
    Value::Array(
        parts
            .into_iter()
            .find(|(present, _)| *present)
            .map(|(_, v)| v)
            .unwrap_or_default(),
    )
}

/// NaN has no JSON form; the shared decoder reads `null` as NaN.
fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        let live = self.0.device_failure().is_none();
        Ok(Response::new(ServerLiveResponse { live }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.0.takes_traffic();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        oip::check_model(&self.0, &r.name, optional(&r.version)).map_err(status)?;
        let ready = self.0.takes_traffic();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "pixguard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let s = &self.0;
        oip::check_model(s, &r.name, optional(&r.version)).map_err(status)?;
        let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape,
        };
        Ok(Response::new(ModelMetadataResponse {
            name: s.model.name.clone(),
            versions: vec![s.model.version.clone()],
            platform: oip::PLATFORM.into(),
            inputs: oip::input_metadata(s)
                .into_iter()
                .map(|(n, dt, shape)| tensor(&n, dt, shape))
                .collect(),
            outputs: vec![
                tensor("score", "FP32", vec![-1, 1]),
                tensor("decision", "BYTES", vec![-1, 1]),
            ],
        }))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let s = &self.0;
        oip::check_model(s, &r.name, optional(&r.version)).map_err(status)?;
        let c = oip::model_config::model_config(s);
        let config = ModelConfig {
            name: c.name.clone(),
            platform: oip::PLATFORM.into(),
            backend: "pixguard".into(),
            max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
            input: c
                .inputs
                .iter()
                .map(|t| ModelInput {
                    name: t.name.clone(),
                    data_type: triton_type_value(t.data_type),
                    dims: t.dims.clone(),
                    optional: t.optional,
                })
                .collect(),
            output: c
                .outputs
                .iter()
                .map(|t| ModelOutput {
                    name: t.name.clone(),
                    data_type: triton_type_value(t.data_type),
                    dims: t.dims.clone(),
                })
                .collect(),
            instance_group: vec![ModelInstanceGroup {
                name: format!("{}_0", c.name),
                count: i32::try_from(c.instances).unwrap_or(i32::MAX),
                kind: if c.instance_kind == "KIND_GPU" {
                    model_instance_group::Kind::Gpu
                } else {
                    model_instance_group::Kind::Cpu
                } as i32,
            }],
            dynamic_batching: Some(ModelDynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: c.max_queue_delay_us,
            }),
        };
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        r: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        let s = &self.0;
        if !r.name.is_empty() {
            oip::check_model(s, &r.name, optional(&r.version)).map_err(status)?;
        }
        let st = oip::statistics::model_statistics(s);
        let d = |d: oip::statistics::Duration| {
            Some(StatisticDuration {
                count: d.count,
                ns: d.ns,
            })
        };
        let zero = oip::statistics::Duration::default();
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: vec![ModelStatistics {
                name: st.name,
                version: st.version,
                last_inference: st.last_inference,
                inference_count: st.inference_count,
                execution_count: st.execution_count,
                inference_stats: Some(InferStatistics {
                    success: d(st.success),
                    fail: d(st.fail),
                    queue: d(st.queue),
                    compute_input: d(zero),
                    compute_infer: d(st.compute_infer),
                    compute_output: d(zero),
                    cache_hit: d(zero),
                    cache_miss: d(zero),
                }),
            }],
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let s = &self.0;
        s.in_flight.fetch_add(1, Ordering::AcqRel);
        let started = std::time::Instant::now();
        let result = self.infer(r.into_inner()).await;
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        let micros = started.elapsed().as_micros() as u64;
        s.metrics.request.record(micros);
        s.metrics
            .count_response(if result.is_ok() { 200 } else { 400 });
        s.metrics.record_outcome(result.is_ok(), micros);
        result.map(Response::new)
    }
}

impl Inference {
    async fn infer(&self, r: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let s = &self.0;
        oip::check_model(s, &r.model_name, optional(&r.model_version)).map_err(status)?;
        if s.refusing.load(Ordering::Acquire) {
            return Err(Status::unavailable("the server is shutting down"));
        }
        if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
            return Err(Status::invalid_argument(format!(
                "{} raw_input_contents for {} inputs",
                r.raw_input_contents.len(),
                r.inputs.len()
            )));
        }
        let inputs: Vec<RawInput> = r
            .inputs
            .iter()
            .map(|i| RawInput {
                name: i.name.clone(),
                shape: i.shape.clone(),
                datatype: i.datatype.clone(),
                parameters: serde_json::Map::new(),
                data: i.contents.as_ref().map(contents_as_json),
            })
            .collect();
        let binary: Vec<Option<&[u8]>> = (0..inputs.len())
            .map(|k| r.raw_input_contents.get(k).map(Vec::as_slice))
            .collect();
        let scored = oip::score_inputs(s, &inputs, &binary)
            .await
            .map_err(status)?;
        let rows = scored.scores.len() as i64;
        let decisions = oip::decisions(s, &scored.scores);
        let wanted: Vec<&str> = if r.outputs.is_empty() {
            vec!["score", "decision"]
        } else {
            r.outputs.iter().map(|o| o.name.as_str()).collect()
        };
        let mut outputs = Vec::new();
        let mut raw = Vec::new();
        for name in wanted {
            let (datatype, bytes) = match name {
                "score" => (
                    "FP32",
                    scored
                        .scores
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
                "decision" => ("BYTES", encode_bytes(&decisions)),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "unknown output '{other}'"
                    )));
                }
            };
            outputs.push(InferOutputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape: vec![rows, 1],
                ..Default::default()
            });
            raw.push(bytes);
        }
        Ok(ModelInferResponse {
            model_name: s.model.name.clone(),
            model_version: s.model.version.clone(),
            id: r.id,
            outputs,
            raw_output_contents: raw,
            ..Default::default()
        })
    }
}

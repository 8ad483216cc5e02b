//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService`, translating to
//! the same scoring path, signature, errors and shutdown as the HTTP front ends; beside it the
//! standard health checking protocol (`health`) and server reflection (`reflection`, so that
//! `grpcurl` and its kind list and call the services without the proto files). Typed `contents`
//! and `raw_input_contents` are decoded straight into columns (`crate::protocol::oip`).

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use tonic::{Request, Response, Status};

mod calls;
mod connection;
mod health;
mod infer;
mod reflection;

pub use connection::Closed;
use connection::Limits;

use crate::protocol::ProtocolError;
use crate::protocol::grpc::grpc_inference_service_server::GrpcInferenceService;
use crate::protocol::grpc::infer::InferCall;
use crate::protocol::grpc::model_metadata_response::TensorMetadata;
use crate::protocol::grpc::*;
use crate::protocol::oip::{
    EXTENSIONS, PLATFORM, SERVER_NAME, call_tensors, grpc_message, grpc_outputs,
};
use crate::scoring::{Admission, Api, ScoreError, Served};
use crate::server::AppState;
use crate::server::error::grpc_status;
use crate::server::oip::{model_config, statistics};

pub use crate::protocol::grpc::grpc_inference_service_server::GrpcInferenceServiceServer;

/// How much earlier than the caller's `grpc-timeout` pixguard gives up on a call.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(5);

/// The service, sharing the HTTP front end's state.
pub struct Inference(pub Arc<AppState>);

fn optional(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// The version a request names (the champion's or the canary's), or why none serves it.
fn named(state: &AppState, name: &str, version: &str) -> Result<Arc<Served>, Status> {
    state
        .scoring
        .named(name, optional(version))
        .map_err(|e| grpc_status(&e))
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        let live = self.0.scoring.live();
        Ok(Response::new(ServerLiveResponse { live }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.0.scoring.takes_traffic();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        named(&self.0, &r.name, &r.version)?;
        let ready = self.0.scoring.takes_traffic();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let served = named(&self.0, &r.name, &r.version)?;
        let signature = served.signature();
        let tensor = |t: &crate::protocol::oip::TensorSpec| TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: t.shape.clone(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: served.model().name.clone(),
            versions: self.0.scoring.versions(&served.model().name),
            platform: PLATFORM.into(),
            inputs: signature.inputs.iter().map(tensor).collect(),
            outputs: signature.outputs.iter().map(tensor).collect(),
        }))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let served = named(&self.0, &r.name, &r.version)?;
        let c = model_config::model_config(&self.0, &served);
        let config = ModelConfig {
            name: c.name.clone(),
            platform: PLATFORM.into(),
            backend: "pixguard".into(),
            max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
            input: c
                .inputs
                .iter()
                .map(|t| ModelInput {
                    name: t.name.clone(),
                    data_type: t.datatype.triton_value(),
                    dims: t.dims.clone(),
                    optional: t.optional,
                })
                .collect(),
            output: c
                .outputs
                .iter()
                .map(|t| ModelOutput {
                    name: t.name.clone(),
                    data_type: t.datatype.triton_value(),
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
            parameters: c
                .parameters
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        ModelParameter {
                            string_value: v.clone(),
                        },
                    )
                })
                .collect(),
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
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let stats = statistics::statistics(&self.0.scoring, name, optional(&r.version))
            .map_err(|e| grpc_status(&e))?;
        let d = |d: statistics::Duration| {
            Some(StatisticDuration {
                count: d.count,
                ns: d.ns,
            })
        };
        let zero = statistics::Duration::default();
        let model_stats = stats
            .into_iter()
            .map(|st| ModelStatistics {
                name: st.name,
                version: st.version,
                last_inference: st.last_inference,
                inference_count: st.inference_count,
                execution_count: st.execution_count,
                inference_stats: Some(InferStatistics {
                    success: d(st.success),
                    fail: d(st.fail),
                    queue: d(st.queue),
                    compute_input: d(st.compute_infer.within()),
                    compute_infer: d(st.compute_infer),
                    compute_output: d(st.compute_infer.within()),
                    cache_hit: d(zero),
                    cache_miss: d(zero),
                }),
                batch_stats: st
                    .batch_stats
                    .into_iter()
                    .map(|(batch_size, infer)| InferBatchStatistics {
                        batch_size,
                        compute_input: d(infer.within()),
                        compute_infer: d(infer),
                        compute_output: d(infer.within()),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        // The server routes ModelInfer to `model_infer_call` with the request read in place
        // (`infer`); this entry point (the trait's) reads prost's message the same way.
        let (metadata, extensions, message) = r.into_parts();
        let call = InferCall::from_message(&message);
        let answer = self
            .model_infer_call(Request::from_parts(metadata, extensions, call))
            .await?;
        Ok(Response::new(answer.message()))
    }
}

impl Inference {
    /// `ModelInfer` on a request read in place: admission, deadline, scoring, the answer.
    pub async fn model_infer_call(&self, r: Request<InferCall>) -> Result<InferAnswer, Status> {
        let scoring = &self.0.scoring;
        let arrived = r
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let mut admission = scoring
            .admit(
                Api::OipGrpc,
                || super::trace_headers(r.metadata().as_ref()),
                arrived,
            )
            .map_err(|e| grpc_status(&e))?;
        // The caller's grpc-timeout runs from the request's head; answering a little before it
        // ends lets DEADLINE_EXCEEDED (as on the HTTP APIs) reach the caller before its own timer
        // gives up, however long the body took to arrive and decode. Without one, the default
        // deadline counts from the head too, as on the HTTP APIs.
        // Parsed once where the body was read; tonic's generated path has only the header.
        let timeout = match r.extensions().get::<CallTimeout>() {
            Some(timeout) => *timeout,
            None => CallTimeout::of(r.metadata().as_ref()),
        };
        let early = timeout
            .0
            .map(|t| t.saturating_sub(DEADLINE_MARGIN.min(t / 10)));
        let deadline = scoring.deadline(arrived, early);
        // Copied only for a decision log, the one reader of a request's id.
        let header_id = scoring
            .decision_log()
            .and_then(|_| super::request_id(r.metadata().as_ref()))
            .map(str::to_string);
        let header_id = header_id.as_deref();
        let infer = self.infer(&mut admission, r.into_inner(), header_id, deadline);
        // Only a caller's own timeout cuts a computing batch short: the caller has given up by
        // then. The default deadline, as on the HTTP APIs, only keeps late rows from a worker.
        let result = match early {
            Some(_) => tokio::time::timeout_at(deadline.into(), infer)
                .await
                .unwrap_or(Err(ScoreError::DeadlineExceeded)),
            None => infer.await,
        };
        admission.finish(result).map_err(|e| grpc_status(&e))
    }
}

/// When a call's head reached the server: the instant its `grpc-timeout` counts from.
#[derive(Clone, Copy)]
struct Arrival(Instant);

/// A call's `grpc-timeout`, `None` when absent or not a valid value.
#[derive(Clone, Copy)]
struct CallTimeout(Option<std::time::Duration>);

impl CallTimeout {
    fn of(headers: &tonic::codegen::http::HeaderMap) -> CallTimeout {
        CallTimeout(
            headers
                .get(TIMEOUT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_timeout),
        )
    }
}

/// Serves `inference.GRPCInferenceService` on `listener` over HTTP/2 (cleartext, prior knowledge,
/// as gRPC clients connect) until `stop` is notified; then stops accepting, lets every open call
/// finish and returns once the connections have closed.
///
/// hyper's HTTP/2 connection straight onto the generated service, without tonic's transport
/// server: that one routes each call through an axum router, boxes its body, runs a per-call
/// timeout layer and sniffs each connection for HTTP/1 — per-call work a server with one service
/// and its own deadlines (`grpc-timeout`, below) does not need.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    stop: Arc<tokio::sync::Notify>,
) {
    use hyper_util::rt::TokioExecutor;
    use tonic::codegen::Service;

    let limits = Limits::of(&state.config.server);
    let closed = state.grpc_closed.clone();
    let health = health::HealthServer::new(health::Health(state.clone()));
    let inference = Arc::new(Inference(state));
    let generated = GrpcInferenceServiceServer::from_arc(inference.clone());
    // Descriptors refused (they are compiled in, so only a build fault): served without it.
    let reflection = reflection::Index::of_the_port()
        .inspect_err(|e| tracing::error!(error = %e, "grpc reflection is not served"))
        .ok()
        .map(reflection::Reflection::new);
    let reflection_v1 = reflection
        .clone()
        .map(tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer::new);
    let reflection_v1alpha = reflection
        .map(tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer::new);
    let service =
        hyper::service::service_fn(move |mut call: tonic::codegen::http::Request<Incoming>| {
            call.extensions_mut().insert(Arrival(Instant::now()));
            if call.uri().path() == MODEL_INFER_PATH {
                // The hot method, served by hand (`infer`).
                let answer = infer::call(inference.clone(), call);
                return Box::pin(async move { Ok(answer.await) })
                    as tonic::codegen::BoxFuture<_, std::convert::Infallible>;
            }
            if call.uri().path().starts_with("/grpc.health.v1.Health/") {
                return health.clone().call(call);
            }
            if call.uri().path().starts_with(reflection::V1)
                && let Some(v1) = &reflection_v1
            {
                return v1.clone().call(call);
            }
            if call.uri().path().starts_with(reflection::V1ALPHA)
                && let Some(v1alpha) = &reflection_v1alpha
            {
                return v1alpha.clone().call(call);
            }
            // The generated service is always ready (its `poll_ready` answers Ready at once).
            generated.clone().call(call)
        });
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // No per-connection cap on concurrent calls (hyper's default is 200), as gRPC servers and
    // tonic's own server do: `server.max_concurrent_requests` bounds the calls in flight and
    // answers RESOURCE_EXHAUSTED beyond it, instead of clients queueing unseen in front of it.
    http2.max_concurrent_streams(None);
    // gRPC clients have no use for `date`, and grpc-go's server sends none: its HPACK encoding
    // (a new literal each second) is work on every call for nothing.
    http2.auto_date_header(false);
    limits.apply(&mut http2);
    let http2 = Arc::new(http2);
    super::http::accept_until(listener, &stop, super::http::Port::Grpc, |tcp, draining| {
        let (http2, service, closed) = (http2.clone(), service.clone(), closed.clone());
        tokio::spawn(async move {
            connection::serve(tcp, &http2, service, limits, closed, draining).await;
        });
    })
    .await;
}

impl Inference {
    async fn infer(
        &self,
        admission: &mut Admission<'_>,
        r: InferCall,
        header_id: Option<&str>,
        deadline: Instant,
    ) -> Result<InferAnswer, ScoreError> {
        let served = admission.pick_named(r.model_name(), optional(r.model_version()))?;
        if r.raw_count() != 0 && r.raw_count() != r.input_count() {
            return Err(ScoreError::Malformed(format!(
                "{} raw_input_contents for {} inputs",
                r.raw_count(),
                r.input_count()
            )));
        }
        let outputs = served.signature().select_outputs(
            (r.output_names().next().is_some()).then(|| r.output_names().map(|o| (o, true))),
            true,
        )?;
        let tensors = call_tensors(&r);
        let (served, payload) = admission.decode_inputs(served, &tensors)?;
        let explain = match r.parameter("explain").map(|p| &p.parameter_choice) {
            None => false,
            Some(Some(infer_parameter::ParameterChoice::BoolParam(b))) => *b,
            Some(_) => {
                return Err(ScoreError::from(ProtocolError::invalid(
                    "parameters.explain",
                    "must be a bool_param",
                )));
            }
        };
        let id = r.id();
        let scored = admission
            .score(
                &served,
                payload,
                deadline,
                explain,
                (!id.is_empty()).then_some(id).or(header_id),
            )
            .await?;
        let reasons = served.reason_texts(&scored, &outputs);
        Ok(InferAnswer {
            id: r.id().to_string(),
            served,
            outputs,
            scored,
            reasons,
        })
    }
}

/// A scored `ModelInfer` call, before it is put on the wire.
pub struct InferAnswer {
    served: Arc<crate::scoring::Served>,
    id: String,
    outputs: Vec<(crate::protocol::oip::Output, bool)>,
    scored: crate::scoring::Scores,
    reasons: Vec<String>,
}

impl InferAnswer {
    /// As prost's message (the generated service's answer).
    pub fn message(&self) -> ModelInferResponse {
        let answers = self.scored.answers(&self.reasons);
        let (outputs, raw) = grpc_outputs(&self.outputs, &answers);
        ModelInferResponse {
            model_name: self.served.model().name.clone(),
            model_version: self.served.model().version.clone(),
            id: self.id.clone(),
            outputs,
            raw_output_contents: raw,
            ..Default::default()
        }
    }

    /// The same message's bytes behind the gRPC prefix, written straight onto `buf`.
    pub fn encode(&self, buf: &mut bytes::BytesMut) -> Result<(), std::num::TryFromIntError> {
        let model = self.served.model();
        let answers = self.scored.answers(&self.reasons);
        grpc_message(
            buf,
            (&model.name, &model.version),
            &self.id,
            &self.outputs,
            &answers,
        )
    }
}

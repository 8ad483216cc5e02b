//! The standard gRPC health checking protocol (`grpc.health.v1.Health`), which Kubernetes' `grpc`
//! probes, `grpc_health_probe`, Envoy and gRPC load balancers call: SERVING exactly when `/readyz`
//! answers 200, NOT_SERVING while loading, draining or with a failed device.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::server::AppState;

pub use tonic_health::pb::health_server::HealthServer;

/// The services a health check may name: the whole server (`""`) and the one it serves.
const SERVICES: [&str; 2] = ["", "inference.GRPCInferenceService"];

/// How often a `Watch` looks for a change of status (the protocol sends only changes).
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The health service, reading the server's readiness.
pub struct Health(pub Arc<AppState>);

impl Health {
    fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !SERVICES.contains(&service) {
            return Err(Status::not_found(format!(
                "unknown service `{service}`: pixguard serves `` (the server) and \
                 `inference.GRPCInferenceService`"
            )));
        }
        Ok(if crate::server::ready(&self.0) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service)?;
        Ok(Response::new(answer(status)))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// The status at once, then each change until the caller goes away, or until NOT_SERVING
    /// has been sent for a drain (SIGTERM): the stream then ends, so its connection can close.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        self.status(&service)?;
        let health = Health(self.0.clone());
        let changes = futures_util::stream::unfold(
            (health, service, None),
            |(health, service, last)| async move {
                loop {
                    if last == Some(ServingStatus::NotServing)
                        && health.0.scoring.lifecycle.draining()
                    {
                        return None;
                    }
                    let now = health.status(&service).ok()?;
                    if last != Some(now) {
                        return Some((Ok(answer(now)), (health, service, Some(now))));
                    }
                    tokio::time::sleep(WATCH_EVERY).await;
                }
            },
        );
        Ok(Response::new(Box::pin(changes)))
    }
}

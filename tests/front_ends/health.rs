//! The standard gRPC health checking protocol on the gRPC port, as Kubernetes' `grpc` probes and
//! `grpc_health_probe` call it: SERVING while `/readyz` is 200, NOT_FOUND for a service pixguard
//! does not serve, and a `Watch` that reports NOT_SERVING on SIGTERM and then ends.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::*;

fn asking(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_readiness_and_a_drain() {
    // A drain long enough to watch it: the server stays up this long after SIGTERM.
    let mut server = Server::start(&["--set", "server.grace_period_ms=1500"]);
    let channel = grpc_channel(&server).await;
    let mut client = HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let status = client
            .check(asking(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = client.check(asking("grpc.reflection")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(client.watch(asking("nope")).await.is_err());

    let mut watch = client.watch(asking("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    server.terminate();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a change within the grace period")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(server.wait(Duration::from_secs(30)).success());
    assert!(
        !server.logged("gRPC connections still open after the drain"),
        "the watch let its connection close"
    );
}

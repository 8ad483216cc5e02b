//! The gRPC port ends connections by their limits: one that never sends the HTTP/2 preface is
//! closed, one with no call open is sent GOAWAY when idle (counted from its last call's end, and
//! never while a streaming call is open), and an old one is sent GOAWAY whatever it is doing, its
//! open calls cut after the grace. A client calling without pause through its age limit loses no
//! call: it reconnects. A peer that stops answering PINGs is closed, its open call with it; peers
//! that answer them are not.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::*;

const PREFACE_MS: u64 = 300;
const IDLE_MS: u64 = 1_500;
/// Each connection's own limit is this ±10 %.
const AGE_MS: u64 = 4_000;
const GRACE_MS: u64 = 1_000;
const KEEPALIVE_TIME_MS: u64 = 400;
const KEEPALIVE_TIMEOUT_MS: u64 = 400;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Reads until the server closes `tcp`; how long that took from `since`.
async fn closed_after(tcp: &mut tokio::net::TcpStream, since: Instant) -> Duration {
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("not closed within 30 s"),
        }
    }
}

/// Starts `grpc.health.v1.Health/{method}` with an empty request over a raw HTTP/2 connection.
async fn health_call(
    client: h2::client::SendRequest<bytes::Bytes>,
    address: &str,
    method: &str,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::RecvStream) {
    let mut client = client.ready().await.unwrap();
    let call =
        axum::http::Request::post(format!("http://{address}/grpc.health.v1.Health/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
    let (response, mut stream) = client.send_request(call, false).unwrap();
    // An empty HealthCheckRequest: uncompressed, length 0.
    stream
        .send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    (client, response.await.unwrap().into_body())
}

/// One unary `grpc.health.v1.Health/Check` over a raw HTTP/2 connection; its grpc-status.
async fn check_over(
    client: h2::client::SendRequest<bytes::Bytes>,
    address: &str,
) -> Option<String> {
    let (_client, mut body) = health_call(client, address, "Check").await;
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_end_by_their_preface_idle_and_age_limits() {
    let server = Server::start(&[
        "--set",
        &format!("server.grpc_preface_timeout_ms={PREFACE_MS}"),
        "--set",
        &format!("server.grpc_idle_timeout_ms={IDLE_MS}"),
        "--set",
        &format!("server.grpc_max_connection_age_ms={AGE_MS}"),
        "--set",
        &format!("server.grpc_max_connection_age_grace_ms={GRACE_MS}"),
        "--set",
        &format!("server.grpc_keepalive_time_ms={KEEPALIVE_TIME_MS}"),
        "--set",
        &format!("server.grpc_keepalive_timeout_ms={KEEPALIVE_TIMEOUT_MS}"),
    ]);
    let address = server.grpc_address();
    let youngest_age = ms(AGE_MS * 9 / 10);
    let oldest_age = ms(AGE_MS * 11 / 10);

    // Connects and sends nothing; sends 16 of the preface's 24 bytes.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for (name, tcp) in [("silent", &mut silent), ("half a preface", &mut half)] {
        let took = closed_after(tcp, started).await;
        assert!(
            took >= ms(PREFACE_MS) && took < ms(IDLE_MS),
            "{name}: closed after {took:?}"
        );
    }

    // Idle: one call, then nothing. The GOAWAY comes the idle limit after the call's end, so
    // the call was counted open and then closed.
    let idle = async {
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        tokio::time::sleep(ms(800)).await;
        // From before the call: the server's idle clock starts when it has sent the answer, before
        // the client has read it.
        let asked = Instant::now();
        // A clone: the client's connection would end once its last handle is gone.
        assert_eq!(
            check_over(client.clone(), &address).await.as_deref(),
            Some("0")
        );
        tokio::time::timeout(Duration::from_secs(30), connection)
            .await
            .expect("an idle connection was not sent away")
            .unwrap()
            .unwrap();
        drop(client);
        asked.elapsed()
    };

    // A streaming call open all along: never idle; sent away for its age, then cut after the
    // grace (the Watch never ends on its own).
    let watched = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let opened = Instant::now();
        let mut watch = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(watch.message().await.unwrap().is_some(), "the first status");
        let ended = watch.message().await;
        (opened.elapsed(), ended)
    };

    // A Watch whose client then hangs: its socket stays open (the kernel still acknowledges), but
    // nothing answers the server's PINGs. Closed by the keepalive long before the age limit.
    let frozen = async {
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .unwrap()
            .into_std()
            .unwrap();
        // A second descriptor of the same socket, read once h2 no longer is, to see the close.
        let mut seen = tokio::net::TcpStream::from_std(tcp.try_clone().unwrap()).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::pin!(connection);
        let asked = Instant::now();
        let watch = async {
            let (client, mut body) = health_call(client, &address, "Watch").await;
            let first = body.data().await.unwrap().unwrap();
            (client, body, first)
        };
        // The connection is driven only until the first status has come.
        let (client, body, first) = tokio::select! {
            ended = connection.as_mut() => panic!("the connection ended first: {ended:?}"),
            watching = watch => watching,
        };
        assert!(first.len() > 5, "a status message: {first:?}");
        let took = closed_after(&mut seen, asked).await;
        drop((client, body, connection));
        took
    };

    // Calls without pause across the age limit: each answered, over a new connection once the
    // old one is sent away.
    let busy = async {
        let mut client = grpc_client(&server).await;
        let started = Instant::now();
        let (mut calls, mut failed) = (0, Vec::new());
        while started.elapsed() < oldest_age + ms(1_000) {
            let request = ModelMetadataRequest {
                name: MODEL.into(),
                version: String::new(),
            };
            calls += 1;
            if let Err(status) = client.model_metadata(request).await {
                failed.push(status);
            }
            tokio::time::sleep(ms(20)).await;
        }
        (calls, failed)
    };

    let (idle_for, (watched_for, watch_end), frozen_for, (calls, failed)) =
        tokio::join!(idle, watched, frozen, busy);
    // The server's last read is after `asked`: PING at that + the time, closed the timeout later.
    assert!(
        frozen_for >= ms(KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) && frozen_for < youngest_age,
        "frozen: closed {frozen_for:?} after its Watch"
    );
    assert!(
        idle_for >= ms(IDLE_MS) && idle_for < youngest_age,
        "idle: sent away {idle_for:?} after its call"
    );
    assert!(
        watched_for >= youngest_age + ms(GRACE_MS)
            && watched_for < oldest_age + ms(GRACE_MS) + ms(2_000),
        "watched: cut after {watched_for:?}"
    );
    assert!(
        watch_end.is_err(),
        "the Watch was cut, not ended: {watch_end:?}"
    );
    assert!(calls > 100, "{calls} calls");
    assert!(
        failed.is_empty(),
        "{} of {calls} failed: {failed:?}",
        failed.len()
    );

    let text = server::metrics_text(&reqwest::Client::new(), &server).await;
    let count = |reason: &str| {
        server::metric(
            &text,
            &format!("pixguard_grpc_connections_closed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("preface"), 2.0, "silent, half a preface");
    assert_eq!(count("idle"), 1.0);
    assert!(count("age") >= 2.0, "the watched and the busy connections");
    assert_eq!(count("age_grace"), 1.0, "the watched connection");
    // Only the frozen one: the others, quiet for longer than the keepalive time, answered.
    assert_eq!(count("keepalive"), 1.0, "the frozen connection");
}

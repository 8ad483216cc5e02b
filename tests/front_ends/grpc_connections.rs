//! The gRPC port ends connections by their limits: one that never sends the HTTP/2 preface is
//! closed, one with no call open is sent GOAWAY when idle (counted from its last call's end, and
//! never while a streaming call is open), and an old one is sent GOAWAY whatever it is doing, its
//! open calls cut after the grace. A client calling without pause through its age limit loses no
//! call: it reconnects, sending again only a call its own queue held when the GOAWAY came. A peer that stops answering PINGs is closed, its open call with it; peers
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

/// Whether a tonic call failed unprocessed by the server, racing its graceful GOAWAY: hyper cancels
/// a request still queued for a connection the GOAWAY has ended (it never left the client), and h2
/// fails a call the GOAWAY turned away (the server names it unprocessed). gRPC's own clients, and
/// `pixguard bench`, send such a call again transparently; tonic does not.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>()
            && e.is_canceled()
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<h2::Error>() {
            return e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = e.source();
    }
    false
}

/// One ModelMetadata call, sent again (up to twice) while it fails unprocessed (`never_sent`);
/// its last outcome, and how many times it was sent again.
async fn metadata_call(
    client: &mut GrpcInferenceServiceClient<tonic::transport::Channel>,
) -> (Result<(), tonic::Status>, u32) {
    let request = ModelMetadataRequest {
        name: MODEL.into(),
        version: String::new(),
    };
    let mut again = 0;
    loop {
        match client.model_metadata(request.clone()).await {
            Err(status) if never_sent(&status) && again < 2 => again += 1,
            answer => return (answer.map(|_| ()), again),
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
        let (mut calls, mut resent, mut failed) = (0, 0, Vec::new());
        while started.elapsed() < oldest_age + ms(1_000) {
            calls += 1;
            let (answer, again) = metadata_call(&mut client).await;
            resent += again;
            if let Err(status) = answer {
                failed.push(status);
            }
            tokio::time::sleep(ms(20)).await;
        }
        (calls, resent, failed)
    };

    let (idle_for, (watched_for, watch_end), frozen_for, (calls, resent, failed)) =
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
    // Each call sent again was caught by one of the busy connection's GOAWAYs.
    assert!(
        f64::from(resent) <= count("age") - 1.0,
        "{resent} calls sent again, {} connections sent away for their age",
        count("age")
    );
    // Only the frozen one: the others, quiet for longer than the keepalive time, answered.
    assert_eq!(count("keepalive"), 1.0, "the frozen connection");
}

/// Eight callers without pause through connections renewed every ~100 ms: every call is answered.
/// The ones caught in a GOAWAY's race (see `never_sent`) are sent again, as gRPC's clients do;
/// any other failure would be a call the server took and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_pause_lose_no_call_through_rapid_connection_renewals() {
    let server = Server::start(&[
        "--set",
        "server.grpc_max_connection_age_ms=100",
        "--set",
        "server.grpc_max_connection_age_grace_ms=1000",
    ]);
    let client = grpc_client(&server).await;
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let (mut calls, mut resent, mut failed) = (0u32, 0, Vec::new());
                while started.elapsed() < ms(3_000) {
                    calls += 1;
                    let (answer, again) = metadata_call(&mut client).await;
                    resent += again;
                    if let Err(status) = answer {
                        failed.push(status);
                    }
                }
                (calls, resent, failed)
            })
        })
        .collect();
    let (mut calls, mut resent) = (0, 0);
    for caller in callers {
        let (n, again, failed) = caller.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} of {n} failed: {failed:?}",
            failed.len()
        );
        calls += n;
        resent += again;
    }
    let text = server::metrics_text(&reqwest::Client::new(), &server).await;
    let aged = server::metric(
        &text,
        "pixguard_grpc_connections_closed_total{reason=\"age\"}",
    );
    assert!(
        aged >= 10.0,
        "{aged} connections sent away for their age in 3 s"
    );
    assert!(calls > 1_000, "{calls} calls");
    eprintln!("{calls} calls, {resent} sent again, {aged} connections renewed");
}

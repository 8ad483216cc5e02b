//! Refusals with a slow worker: over the admission limit (429, overloaded) and past a deadline
//! (504), the same on every API; the spec bodies are checked on the same server.

use super::spec::spec_bodies;
use super::*;

/// Starts `count` /v1 requests that hold the slow worker, and waits until they are in flight.
async fn occupy(server: &Server, count: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    let body = transactions(1, 5).remove(0).to_string();
    let handles = (0..count)
        .map(|_| {
            let (url, body) = (server.url("/v1/score"), body.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_mean_the_same_on_every_api_and_the_spec_bodies_hold() {
    // One worker that takes 400 ms a batch, two requests in flight at most.
    let server = Server::start(&[
        "--set",
        "engine.test_worker_delay_us=400000",
        "--set",
        "server.max_concurrent_requests=2",
    ]);
    spec_bodies(&server).await;
    let valid = transactions(1, 72).remove(0);
    let (oip, grpc) = oip_forms(&valid, MODEL);
    let case = Case {
        name: "a valid transaction",
        v1: Some(("/v1/score".into(), valid.to_string().into_bytes())),
        oip: (infer_path(MODEL), oip),
        grpc,
    };
    let overloaded = Meaning {
        status: 429,
        code: "overloaded",
        retry_after: Some("1"),
        field: None,
        v1_field: None,
        grpc: Code::ResourceExhausted,
        grpc_names: "max_concurrent_requests",
    };
    let late = Meaning {
        status: 504,
        code: "deadline_exceeded",
        retry_after: None,
        field: None,
        v1_field: None,
        grpc: Code::DeadlineExceeded,
        grpc_names: "deadline",
    };
    // Two requests hold both admission slots: a third is refused at once on any API.
    let holders = occupy(&server, 2).await;
    check(&server, &case, &overloaded, None).await;
    for h in holders {
        assert_eq!(h.await.unwrap(), 200);
    }
    // One holds the worker: a request with a 100 ms deadline waits in the queue past it. Each API
    // in turn, so that only one of them holds the second slot.
    for api in ["v1", "oip_http", "oip_grpc"] {
        let holder = occupy(&server, 1).await;
        let one = Case {
            name: api,
            v1: (api == "v1").then(|| case.v1.clone()).flatten(),
            oip: case.oip.clone(),
            grpc: case.grpc.clone(),
        };
        match api {
            "v1" => check_http_only(&server, one.v1.as_ref().unwrap(), &late, 100).await,
            "oip_http" => check_http_only(&server, &one.oip, &late, 100).await,
            _ => {
                let mut request = tonic::Request::new(one.grpc.clone());
                request.set_timeout(Duration::from_millis(100));
                let status = grpc_client(&server)
                    .await
                    .model_infer(request)
                    .await
                    .unwrap_err();
                // The server answers DEADLINE_EXCEEDED a little before the deadline; on a loaded
                // machine tonic's client may still end the call itself (CANCELLED) first, so the
                // server's own account of the call is what is checked.
                assert!(
                    matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                    "{status:?}"
                );
                assert_eq!(
                    responses(&server, "oip_grpc", "deadline_exceeded").await,
                    1.0
                );
            }
        }
        for h in holder {
            assert_eq!(h.await.unwrap(), 200);
        }
    }
}

async fn check_http_only(
    server: &Server,
    (path, body): &(String, Vec<u8>),
    want: &Meaning,
    ms: u64,
) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .header("x-request-timeout-ms", ms.to_string())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), want.status, "{path}");
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        want.retry_after
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        want.code,
        "{path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_without_a_timeout_has_the_default_deadline_from_its_head() {
    // engine.default_deadline_ms (1,000) counts from the call's head, as on the HTTP APIs, not
    // from when its message was read. The head comes at 0 ms; a /v1 request holds the one worker
    // from 200 ms to 1,200 ms; the message comes at 500 ms. Its rows are still queued at 1,000 ms
    // (past the deadline counted from the head, dropped: DEADLINE_EXCEEDED); a deadline counted
    // from the message (1,500 ms) would have let the worker compute them at 1,200 ms.
    let server = Server::start(&[
        "--set",
        "engine.test_worker_delay_us=1000000",
        "--set",
        "engine.default_deadline_ms=1000",
    ]);
    let (_, grpc) = oip_forms(&transactions(1, 73).remove(0), MODEL);
    let message = prost::Message::encode_to_vec(&grpc);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);

    let head = std::time::Instant::now();
    let (response, mut stream) = raw_infer_call(&server, None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `occupy` returns once its request is in flight (100 ms after it starts).
    let holder = occupy(&server, 1).await;
    tokio::time::sleep_until((head + Duration::from_millis(500)).into()).await;
    stream.send_data(framed.into(), true).unwrap();
    let mut response = response.await.unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(v) => v.to_str().unwrap().to_string(),
        None => {
            let body = response.body_mut();
            while let Some(chunk) = body.data().await {
                chunk.unwrap();
            }
            let trailers = body.trailers().await.unwrap().expect("trailers");
            trailers["grpc-status"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED, after {:?}", head.elapsed());
    for h in holder {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(
        responses(&server, "oip_grpc", "deadline_exceeded").await,
        1.0
    );
}

//! Graceful shutdown of the real server. A test binary of its own, so no other test loads the
//! machine while it times a grace period against seconds of queued work.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use server::{Server, answered_ok, metric, metrics_text, transactions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_200_requests_in_flight_and_exits_0() {
    // 100 batches of 2 at 60 ms each: ~6 s of work still queued when SIGTERM arrives, even when
    // other tests load the machine and slow this one's polling down.
    let mut server = Server::start(&[
        "--max-batch-size",
        "2",
        "--set",
        "engine.test_worker_delay_us=60000",
        "--set",
        "engine.default_deadline_ms=60000",
        "--set",
        "server.grace_period_ms=1000",
    ]);
    let txs = Arc::new(transactions(200, 33));
    let client = reqwest::Client::new();
    let tasks: Vec<_> = txs
        .iter()
        .cloned()
        .map(|tx| {
            let (client, url) = (client.clone(), server.url("/v1/score"));
            tokio::spawn(async move {
                let r = client.post(&url).json(&tx).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    // Wait until the server has taken all 200 requests (in flight or already answered). The worker
    // needs ~6 s for them, so most are still in flight when SIGTERM arrives; a poll deadline turns a
    // stuck wait into a failure with the numbers instead of a hang.
    let started = std::time::Instant::now();
    let in_flight = loop {
        let text = metrics_text(&client, &server).await;
        let in_flight = metric(&text, "pixguard_requests_in_flight");
        let answered = answered_ok(&text);
        if in_flight + answered >= 200.0 {
            break in_flight;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {in_flight} + {answered} requests taken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        in_flight >= 100.0,
        "SIGTERM must find work in flight, found {in_flight}"
    );
    server.terminate();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A loaded machine may refuse one connect attempt; a drained server would refuse them all.
    let mut ready = None;
    for _ in 0..5 {
        match client.get(server.url("/readyz")).send().await {
            Ok(r) => {
                ready = Some(r.status());
                break;
            }
            Err(e) => {
                eprintln!("readyz: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let ready =
        ready.unwrap_or_else(|| panic!("no answer from /readyz: {:?}", server.log.lock().unwrap()));
    assert_eq!(ready, 503, "readiness fails at once after SIGTERM");
    // Within the grace period new requests are still taken (and finish with the rest)...
    let during_grace = {
        let (client, url, tx) = (client.clone(), server.url("/v1/score"), txs[0].clone());
        tokio::spawn(async move {
            client
                .post(&url)
                .json(&tx)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // ...after it they are refused with 503 while the queue drains.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = client
        .post(server.url("/v1/score"))
        .json(&txs[1])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", server.log.lock().unwrap()));
    assert_eq!(late.status(), 503);
    assert_eq!(late.headers().get("retry-after").unwrap(), "1");
    assert_eq!(late.json::<Value>().await.unwrap()["code"], "draining");
    assert_eq!(during_grace.await.unwrap(), 200);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let status = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

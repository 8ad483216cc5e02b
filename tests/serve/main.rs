//! `pixguard serve` end to end, against the real binary on a loopback port: scores as offline
//! and batched here; a full queue, late rows and malformed bodies (`refusals`); the process itself
//! — no arguments, JSON logs, thread priorities (`process`).

#[path = "../common/child.rs"]
mod child;
#[path = "../common/server.rs"]
mod server;

mod process;
mod refusals;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use server::{Server, metric, metrics_text, transactions};

/// `pixguard score` over the same transactions: end_to_end_id → (score, decision).
fn offline_scores(txs: &[Value]) -> HashMap<String, (f64, String)> {
    // A file per call: the tests calling this run at once in one process, and with one shared
    // file one scored the other's transactions (clean-clone CI, fe3f2ed).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let input: String = txs.iter().map(|t| t.to_string() + "\n").collect();
    let dir = std::env::temp_dir().join(format!("pixguard-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("txs-{call}.jsonl"));
    std::fs::write(&path, input).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(["score", path.to_str().unwrap()])
        .current_dir(server::ROOT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let id = v["end_to_end_id"].as_str().unwrap().to_string();
            (
                id,
                (
                    v["score"].as_f64().unwrap(),
                    v["decision"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_offline_scores_and_requests_are_batched() {
    // Each batch takes at least 20 ms, so requests that arrive meanwhile must share the next one.
    // Without it the mean batch size was a race between 64 clients and a microsecond forward on a
    // shared two-core machine: under the bound of 4 in 4 of 12 runs (1.6, 3.2 and 3.95 rows among
    // them). With 5 ms it was 32 to 33.7 alone, but 15.2 in a clean-clone CI run beside the other
    // tests; the bound is twice the old one, with the window four times that.
    let server = Server::start(&["--set", "engine.test_worker_delay_us=20000"]);
    let txs = Arc::new(transactions(640, 31));
    let expected = Arc::new(offline_scores(&txs));
    let client = reqwest::Client::new();
    // The warm-up batches the server ran before it was ready are not traffic: nothing counted.
    let text = metrics_text(&client, &server).await;
    assert_eq!(metric(&text, "pixguard_batch_size_rows_count"), 0.0);
    assert_eq!(
        metric(&text, "pixguard_compute_duration_seconds_count"),
        0.0
    );
    let stats = get_json(&client, &server.url("/v2/models/pix-fraud/stats")).await;
    let model = &stats["model_stats"][0];
    assert_eq!(
        (&model["inference_count"], &model["execution_count"]),
        (&Value::from(0), &Value::from(0)),
        "{stats}"
    );
    let mut tasks = Vec::new();
    for c in 0..64 {
        let (client, txs, expected, url) = (
            client.clone(),
            txs.clone(),
            expected.clone(),
            server.url("/v1/score"),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let tx = &txs[c * 10 + i];
                let response = client.post(&url).json(tx).send().await.unwrap();
                assert_eq!(response.status(), 200);
                for header in ["x-queue-time-us", "x-compute-time-us", "x-total-time-us"] {
                    assert!(response.headers().contains_key(header), "missing {header}");
                }
                let body: Value = response.json().await.unwrap();
                let id = tx["end_to_end_id"].as_str().unwrap();
                let (score, decision) = &expected[id];
                assert_eq!(body["end_to_end_id"], id);
                // Batches of different sizes take different gemm paths: equal up to float rounding.
                assert!(
                    (body["score"].as_f64().unwrap() - score).abs() <= 1e-6,
                    "{id}: {body} vs {score}"
                );
                assert_eq!(body["decision"], decision.as_str());
                assert_eq!(body["model"]["name"], "pix-fraud");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let text = metrics_text(&client, &server).await;
    let (sum, count) = (
        metric(&text, "pixguard_batch_size_rows_sum"),
        metric(&text, "pixguard_batch_size_rows_count"),
    );
    assert_eq!(sum, 640.0);
    assert!(
        sum / count > 8.0,
        "mean batch size {} over {count} batches",
        sum / count
    );
    assert_eq!(
        metric(&text, "pixguard_responses_total{api=\"v1\",code=\"ok\"}"),
        640.0
    );
    assert_eq!(metric(&text, "pixguard_device_info{device=\"cpu\"}"), 1.0);

    let stats = get_json(&client, &server.url("/v1/stats")).await;
    for stage in ["request", "queue", "compute", "engine"] {
        for window in ["since_start", "last_60s"] {
            let p = &stats["stages"][stage][window];
            let values: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
                .iter()
                .map(|k| p[k].as_u64().unwrap())
                .collect();
            assert!(
                values.windows(2).all(|w| w[0] <= w[1]),
                "{stage}/{window} not ordered: {p}"
            );
            assert!(p["count"].as_u64().unwrap() >= 640, "{stage}/{window}: {p}");
            assert!(values[0] > 0);
        }
    }
    // engine = queue + compute of each request, so its max bounds both from above.
    let max = |stage: &str| {
        stats["stages"][stage]["since_start"]["max"]
            .as_u64()
            .unwrap()
    };
    assert!(max("engine") >= max("queue") && max("engine") >= max("compute"));
}

/// A large batch cut into runs parsed, extracted and rendered on several threads (`parse_threads`
/// 3, set even on a 2-core machine so CI covers the path) answers exactly what scoring it offline
/// does, in request order; a bad row deep in it is named as the one-thread parse names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_on_several_threads_gets_offline_scores_in_order() {
    let server = Server::start(&[
        "--set",
        "server.http_threads=2",
        "--set",
        "server.parse_threads=3",
        "--set",
        "server.body_limit_bytes=4000000",
        // A debug build explains 1,000 rows slower than the default deadline.
        "--set",
        "engine.default_deadline_ms=60000",
    ]);
    assert!(server.logged("parse_threads=3"), "the pool is installed");
    let txs = transactions(1_000, 35);
    let expected = offline_scores(&txs);
    let client = reqwest::Client::new();
    let url = server.url("/v1/score");
    let response = client
        .post(&url)
        .json(&json!({ "transactions": txs, "explain": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), txs.len());
    for (tx, result) in txs.iter().zip(results) {
        let id = tx["end_to_end_id"].as_str().unwrap();
        assert_eq!(result["end_to_end_id"], id, "request order");
        let (score, decision) = &expected[id];
        assert!(
            (result["score"].as_f64().unwrap() - score).abs() <= 1e-6,
            "{id}"
        );
        assert_eq!(result["decision"], decision.as_str());
        assert!(result["reasons"].is_array(), "explain reached every row");
    }

    let mut bad = txs.clone();
    bad[700]["payee"]["key_type"] = json!("FAX");
    let response = client
        .post(&url)
        .json(&json!({ "transactions": bad }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], "transactions[700].payee.key_type");
    assert_eq!(error["code"], "invalid_field");
}

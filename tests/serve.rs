//! `pixguard serve` end to end, against the real binary on a loopback port.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use server::{Server, metric, metrics_text, transactions};

/// `pixguard score` over the same transactions: end_to_end_id → (score, decision).
fn offline_scores(txs: &[Value]) -> HashMap<String, (f64, String)> {
    let input: String = txs.iter().map(|t| t.to_string() + "\n").collect();
    let dir = std::env::temp_dir().join(format!("pixguard-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("txs.jsonl");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_and_late_rows_504_without_compute() {
    let server = Server::start(&[
        "--max-batch-size",
        "4",
        "--set",
        "engine.max_queue_rows=8",
        "--set",
        "engine.test_worker_delay_us=150000",
    ]);
    let txs = Arc::new(transactions(60, 32));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for tx in txs.iter() {
        let tx = tx.clone();
        let (client, url) = (client.clone(), server.url("/v1/score"));
        tasks.push(tokio::spawn(async move {
            let r = client.post(&url).json(&tx).send().await.unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let (mut ok, mut overloaded) = (0, 0);
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                overloaded += 1;
                assert_eq!(retry.as_deref(), Some("1"), "429 carries Retry-After");
                assert_eq!(body["code"], "overloaded");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(
        ok >= 8 && overloaded > 0,
        "ok {ok}, overloaded {overloaded}"
    );

    // Keep the worker busy, then send a request that cannot make its 1 ms deadline.
    let busy: Vec<_> = txs[..4]
        .iter()
        .cloned()
        .map(|tx| {
            let (client, url) = (client.clone(), server.url("/v1/score"));
            tokio::spawn(async move { client.post(&url).json(&tx).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let late = client
        .post(server.url("/v1/score"))
        .header("x-request-timeout-ms", "1")
        .json(&txs[10])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 504);
    assert_eq!(
        late.json::<Value>().await.unwrap()["code"],
        "deadline_exceeded"
    );
    for b in busy {
        assert_eq!(b.await.unwrap(), 200);
    }
    let text = metrics_text(&client, &server).await;
    assert_eq!(
        metric(&text, "pixguard_rows_dropped_total{reason=\"deadline\"}"),
        1.0
    );
    // Everything computed is the rows that got 200 (warm-up is not counted): the late row never was.
    assert_eq!(metric(&text, "pixguard_rows_scored_total"), (ok + 4) as f64);
    assert_eq!(
        metric(&text, "pixguard_rejections_total{reason=\"overloaded\"}"),
        overloaded as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_a_4xx_naming_the_field() {
    let server = Server::start(&[
        "--set",
        "server.body_limit_bytes=20000",
        "--set",
        "server.max_transactions_per_request=3",
    ]);
    let client = reqwest::Client::new();
    let valid = transactions(1, 34).remove(0);
    let with = |path: &[&str], value: Value| {
        let mut doc = valid.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut doc;
        for p in parents {
            node = node.get_mut(*p).unwrap();
        }
        node[*last] = value;
        doc.to_string()
    };
    let cases: Vec<(String, u16, Option<&str>, &str)> = vec![
        ("{\"end_to_end_id\": ".into(), 400, None, "invalid_json"),
        ("[1, 2".into(), 400, None, "invalid_json"),
        (
            format!("[{valid}, {valid}]"),
            400,
            None,
            "malformed_request",
        ),
        (
            with(&["payer", "shoe_size"], json!(42)),
            422,
            Some("payer.shoe_size"),
            "invalid_field",
        ),
        (
            with(&["amount_cents"], json!("100")),
            422,
            Some("amount_cents"),
            "invalid_field",
        ),
        (
            with(&["end_to_end_id"], json!("E123")),
            422,
            Some("end_to_end_id"),
            "invalid_field",
        ),
        (
            with(&["amount_cents"], json!(-500)),
            422,
            Some("amount_cents"),
            "invalid_field",
        ),
        (
            with(&["payee", "key_type"], json!("RANDOM")),
            422,
            Some("payee.key_type"),
            "invalid_field",
        ),
        (
            format!(
                "{{\"transactions\": [{valid}, {}]}}",
                with(&["history", "payer_tx_1h"], json!(-1))
            ),
            422,
            Some("transactions[1].history.payer_tx_1h"),
            "invalid_field",
        ),
        (
            format!("{{\"transactions\": [{valid},{valid},{valid},{valid}]}}"),
            413,
            Some("transactions"),
            "too_many_transactions",
        ),
        (
            format!(
                "{{\"transactions\": [{}]}}",
                vec![valid.to_string(); 40].join(",")
            ),
            413,
            None,
            "payload_too_large",
        ),
    ];
    for (body, status, field, code) in cases {
        let r = client
            .post(server.url("/v1/score"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            status,
            "{}",
            &body[..body.len().min(120)]
        );
        assert!(r.headers().contains_key("x-total-time-us"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["field"].as_str(), field, "{v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    // A valid batch answers one result per transaction, in order.
    let r = client
        .post(server.url("/v1/score"))
        .body(format!("{{\"transactions\": [{valid},{valid}]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn serve_without_arguments_serves_the_bundled_model_on_the_cpu() {
    // No flags: config.yaml and models/pix-fraud from the repository root; only the port moves,
    // through the environment, so parallel test runs do not collide on 8080.
    let server = Server::spawn(
        Command::new(env!("CARGO_BIN_EXE_pixguard"))
            .arg("serve")
            .env("PIXGUARD__SERVER__PORT", "0")
            .env("PIXGUARD__SERVER__GRPC_PORT", "0"),
    );
    let client = reqwest::blocking::Client::new();
    let ready: Value = client
        .get(server.url("/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["model"]["name"], "pix-fraud");
    let text = client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(metric(&text, "pixguard_device_info{device=\"cpu\"}"), 1.0);
    assert_eq!(
        metric(&text, "pixguard_cuda_fallback"),
        1.0,
        "auto without CUDA falls back and says so"
    );
    assert!(server.logged("serving on the CPU"));
    let tx = transactions(1, 35).remove(0);
    let r = client
        .post(server.url("/v1/score"))
        .json(&tx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn json_logs_are_cloud_logging_structured() {
    let server = Server::start(&["--set", "logging.format=json"]);
    let log = server.log.lock().unwrap().clone();
    let lines: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["severity"], "INFO");
    assert_eq!(listening["device"], "cpu");
    assert!(listening["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        lines.iter().any(|l| l["severity"] == "WARNING"),
        "the CPU fallback is a WARNING"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_front_end_threads_run_nicer_than_the_engines() {
    // Two HTTP threads (a multi-thread runtime, its row pool) and two workers (their own
    // threads beside the batcher); the version's engine is built on a blocking thread of the
    // niced runtime, so without the spawner its threads would inherit the front end's value.
    let server = Server::start(&[
        "--set",
        "server.http_threads=2",
        "--set",
        "server.front_end_nice=4",
        "--set",
        "engine.workers=2",
    ]);
    let client = reqwest::blocking::Client::new();
    let txs = transactions(300, 36);
    let r = client
        .post(server.url("/v1/score"))
        .json(&json!({ "transactions": txs }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let threads = server.thread_nice_values();
    for (prefix, count) in [
        ("pixguard-http", 2),
        ("pixguard-rows", 2),
        ("pixguard-batche", 1),
        ("pixguard-worker", 2),
    ] {
        let n = threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .count();
        assert!(n >= count, "{count} {prefix} threads: {threads:?}");
    }
    server.assert_front_end_nicer_by(4);
}

//! A full queue answers 429 and rows past their deadline 504 without compute; malformed bodies get
//! a 4xx naming the field.

use super::*;

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

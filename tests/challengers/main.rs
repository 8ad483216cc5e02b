//! A second version beside the champion, against the real binary (models/pix-fraud-challenger).
//!
//! In the shadow: the challenger scores a sampled share of live requests, the champion's answers
//! are exactly what they are without a shadow, the agreement matrix and disagreement log account
//! for every row the challenger scored, and under a backed-up champion the shadow is shed, never
//! the champion.
//!
//! As a canary: it answers exactly its share of requests on every API, each answer what that
//! version alone answers; a request naming its version reaches it; its share is set to 0 live
//! through the admin API; the shadow compares only the champion's answers; Triton's statistics
//! are each version's own. The guard takes a canary that stops, slows or fails far more than its
//! champion off the answers.

mod canary;
mod guard;

#[path = "../common/child.rs"]
mod child;
#[path = "../common/server.rs"]
mod server;

use std::collections::HashMap;

use serde_json::{Value, json};
use server::{Server, metric, transactions};

async fn score(client: &reqwest::Client, server: &Server, txs: &[Value]) -> Vec<Value> {
    let r = client
        .post(server.url("/v1/score"))
        .json(&json!({ "transactions": txs }))
        .send()
        .await
        .expect("score");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    body["results"].as_array().expect("results").clone()
}

/// A GET's JSON answer, with the admin token when given.
async fn get_json(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    token: Option<&str>,
) -> Value {
    let mut request = client.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

async fn stats(client: &reqwest::Client, server: &Server) -> Value {
    get_json(client, server, "/v1/stats", None).await
}

/// What one version alone answers for each transaction: (version, score, decision) by id.
async fn alone(
    client: &reqwest::Client,
    args: &[&str],
    txs: &[Value],
) -> HashMap<String, (String, f64, String)> {
    let server = Server::start(args);
    score(client, &server, txs)
        .await
        .iter()
        .map(|r| {
            let answer = (
                r["model"]["version"].as_str().unwrap().to_string(),
                r["score"].as_f64().unwrap(),
                r["decision"].as_str().unwrap().to_string(),
            );
            (r["end_to_end_id"].as_str().unwrap().to_string(), answer)
        })
        .collect()
}

/// Decisions of the challenger alone, by end-to-end id.
async fn challenger_decisions(client: &reqwest::Client, txs: &[Value]) -> HashMap<String, String> {
    let alone = alone(client, &["--model", "models/pix-fraud-challenger"], txs).await;
    alone
        .into_iter()
        .map(|(id, (_, _, decision))| (id, decision))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_challenger_scores_a_sample_and_the_champion_is_untouched() {
    let client = reqwest::Client::new();
    let txs = transactions(400, 31);
    let log = std::env::temp_dir().join(format!("pixguard-shadow-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_arg = format!("model.shadow_log={}", log.display());
    let plain = Server::start(&[]);
    let shadowed = Server::start(&[
        "--set",
        "model.shadow=models/pix-fraud-challenger",
        "--set",
        "model.shadow_fraction=0.5",
        "--set",
        &log_arg,
    ]);
    // 20 requests of 20 rows: every second one is sampled.
    let mut champion_rows = Vec::new();
    for chunk in txs.chunks(20) {
        let with = score(&client, &shadowed, chunk).await;
        let without = score(&client, &plain, chunk).await;
        assert_eq!(
            with, without,
            "a shadow must not change the champion's answers"
        );
        champion_rows.push(with);
    }
    // The challenger's copies finish off the answers' path: wait for them.
    let mut shadow = Value::Null;
    for _ in 0..200 {
        shadow = stats(&client, &shadowed).await["shadow"].clone();
        if shadow["rows"] == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(shadow["sampled"], 10, "{shadow}");
    assert_eq!(shadow["shed"], 0, "{shadow}");
    assert_eq!(shadow["rows"], 200, "{shadow}");

    // The matrix, from the champion's answers and the challenger's own decisions on the sampled
    // requests (the 2nd, 4th, …), must be what the server counted.
    let theirs = challenger_decisions(&client, &txs).await;
    let mut expected: HashMap<(String, String), u64> = HashMap::new();
    let mut disagreements = 0;
    for rows in champion_rows.iter().skip(1).step_by(2) {
        for r in rows {
            let ours = r["decision"].as_str().unwrap().to_string();
            let their = theirs[r["end_to_end_id"].as_str().unwrap()].clone();
            disagreements += u64::from(ours != their);
            *expected.entry((ours, their)).or_default() += 1;
        }
    }
    let matrix = &shadow["decisions_champion_by_challenger"];
    for champion in ["ALLOW", "HOLD", "REJECT"] {
        for challenger in ["ALLOW", "HOLD", "REJECT"] {
            let want = expected
                .get(&(champion.to_string(), challenger.to_string()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                matrix[champion][challenger], want,
                "{champion}×{challenger}: {matrix}"
            );
        }
    }
    let text = client
        .get(shadowed.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text, "pixguard_shadow_score_count"), 200.0);
    let logged: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect();
    assert_eq!(logged.len() as u64, disagreements);
    for d in &logged {
        assert_ne!(d["champion"]["decision"], d["challenger"]["decision"]);
        let id = d["end_to_end_id"].as_str().unwrap();
        assert_eq!(d["challenger"]["decision"].as_str().unwrap(), theirs[id]);
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_champion_sheds_the_shadow_not_its_answers() {
    let client = reqwest::Client::new();
    let txs = transactions(64, 32);
    // Slow batches and small ones: requests queue behind each other in the champion's engine.
    let shadowed = Server::start(&[
        "--set",
        "model.shadow=models/pix-fraud-challenger",
        "--set",
        "model.shadow_fraction=1.0",
        "--set",
        "engine.test_worker_delay_us=20000",
        "--max-batch-size",
        "8",
    ]);
    let calls = (0..24).map(|i| {
        let client = client.clone();
        let url = shadowed.url("/v1/score");
        let body = json!({"transactions": txs[(i % 8) * 8..(i % 8) * 8 + 8]});
        async move { client.post(url).json(&body).send().await.unwrap().status() }
    });
    let statuses = futures_join(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let shadow = stats(&client, &shadowed).await["shadow"].clone();
    assert_eq!(shadow["sampled"], 24, "{shadow}");
    assert!(
        shadow["shed"].as_u64().unwrap() > 0,
        "nothing was shed: {shadow}"
    );
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

//! What the steps ask of the server and the packages: golden rows, scores, the admin API, the
//! serving version, load times, metrics.

use super::*;

/// The golden rows' transactions of a package, and their PyTorch float64 scores.
pub fn golden(package: &str, rows: usize) -> (Vec<Value>, Vec<f64>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join(package).join("golden.jsonl"))
        .expect("golden.jsonl");
    text.lines()
        .take(rows)
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("golden line");
            (
                v["transaction"].clone(),
                v["score"].as_f64().expect("score"),
            )
        })
        .unzip()
}

/// Scores `txs` on `server`: (model_version, scores) of the batch answer.
pub fn score(server: &Server, txs: &[Value]) -> (Vec<String>, Vec<f64>) {
    let r = reqwest::blocking::Client::new()
        .post(server.url("/v1/score"))
        .json(&json!({ "transactions": txs }))
        .send()
        .expect("score");
    assert_eq!(r.status(), 200, "scoring failed");
    let body: Value = r.json().expect("score JSON");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["model"]["version"]
                    .as_str()
                    .expect("model.version")
                    .to_string(),
                r["score"].as_f64().expect("score"),
            )
        })
        .unzip()
}

/// What `pixguard score` answers for `txs` with the package folder itself.
pub fn folder_scores(package: &str, txs: &[Value], tmp: &Path) -> Vec<f64> {
    let input = tmp.join(format!("{}.jsonl", package.replace('/', "_")));
    let lines: Vec<String> = txs.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n")).expect("write input");
    let out = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .current_dir(ROOT)
        .args(["score", "--model", package])
        .arg(&input)
        .output()
        .expect("pixguard score");
    assert!(out.status.success(), "pixguard score failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("score line")["score"]
                .as_f64()
                .expect("score")
        })
        .collect()
}

pub fn admin(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut r = match method {
        "GET" => client.get(server.url(path)),
        _ => client.post(server.url(path)),
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().expect("admin call");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

pub fn serving_version(server: &Server) -> String {
    let (status, body) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    body["serving"]["version"]
        .as_str()
        .expect("version")
        .to_string()
}

/// Waits until the server serves `version`; answers how long it took.
pub fn wait_for_version(server: &Server, version: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if serving_version(server) == version {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still serving {} after {within:?}, expected {version}: {:?}",
            serving_version(server),
            admin(server, "GET", "/admin/model", Some(TOKEN), None).1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long the server took to load `version` the last time it swapped it in.
pub fn last_load(server: &Server, version: &str) -> Duration {
    let (_, body) = admin(server, "GET", "/admin/model", Some(TOKEN), None);
    let ms = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .rev()
        .find(|e| {
            e["outcome"] == "serving"
                && e["identity"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(&format!("/{version}")))
        })
        .and_then(|e| e["duration_ms"].as_u64())
        .expect("a load of that version in the history");
    Duration::from_millis(ms)
}

pub fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .expect("metrics")
        .text()
        .expect("metrics text");
    server::metric(&text, name)
}

/// Waits until only the serving version's engine runs: a swapped-out or refused version stops
/// its engine once its last request is answered (none are in flight here), or it leaked.
pub fn assert_one_engine(server: &Server, after: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    let mut running = metric(server, "pixguard_engines_running");
    while running != 1.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        running = metric(server, "pixguard_engines_running");
    }
    assert_eq!(running, 1.0, "engines still running 5 s after {after}");
}

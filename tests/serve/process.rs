//! The process: README's first command serves the bundled model on the CPU, logs are Cloud
//! Logging's structured JSON, and the front end's threads run nicer than the engine's.

use super::*;

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

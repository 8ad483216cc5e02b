//! The Cloud Monitoring dashboards' queries against the metrics a live server exposes.

use super::*;

/// Metric names (`pixguard_…`, `process_…`) and `by (…)` labels of a PromQL expression.
fn promql_parts(expr: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    for prefix in ["pixguard_", "process_"] {
        let mut rest = expr;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let mut labels = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let end = tail.find(')').unwrap_or(tail.len());
        labels.extend(tail[..end].split(',').map(|l| l.trim().to_string()));
        rest = &tail[end..];
    }
    // Prometheus adds `pod` from the scrape target; `le` is every histogram's.
    labels.retain(|l| l != "pod" && l != "le" && !l.is_empty());
    (names, labels)
}

#[test]
fn every_dashboard_query_reads_metrics_a_live_server_exposes() {
    let Some(python) = registry::python("the dashboard test (Kafka topics)") else {
        return;
    };
    let Some(broker_bin) = kafka::broker_binary() else {
        return;
    };
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/dashboards/pixguard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(exprs.len() >= 12, "{exprs:?}");
    // Every family shows up only when its part runs: the stream (with a partition assigned, for
    // the lag), the canary, the shadow, traces, the decision log, and at least one scored request.
    let broker = kafka::Broker::start(&broker_bin);
    let created = Command::new(&python)
        .args([
            "tests/python/kafka_topics.py",
            "create",
            "--brokers",
            &broker.address,
        ])
        .args([
            "--partitions",
            "1",
            "dash.in",
            "dash.out",
            "dash.dlq",
            "dash.decisions",
        ])
        .current_dir(ROOT)
        .status()
        .expect("python runs");
    assert!(created.success());
    let brokers = format!("stream.brokers={}", broker.address);
    let traces = format!(
        "traces.otlp_endpoint=http://127.0.0.1:{}",
        registry::free_port()
    );
    let server = Server::start(&[
        "--set",
        "stream.enabled=true",
        "--set",
        &brokers,
        "--set",
        "stream.input_topic=dash.in",
        "--set",
        "stream.output_topic=dash.out",
        "--set",
        "stream.dead_letter_topic=dash.dlq",
        // The broker's group join takes about half the session timeout; statistics (the lag) every s.
        "--set",
        "stream.librdkafka.session_timeout_ms=6000",
        "--set",
        "stream.librdkafka.statistics_interval_ms=1000",
        "--set",
        "model.shadow=models/pix-fraud-challenger",
        "--set",
        "model.shadow_fraction=1.0",
        "--set",
        "model.canary=models/pix-fraud-challenger",
        "--set",
        "model.canary_fraction=0.5",
        // Traces on (the family exists only then): nothing listens there, so exports fail.
        "--set",
        &traces,
        // The decision log, to the same broker (its stream.brokers).
        "--set",
        "decision_log.topic=dash.decisions",
    ]);
    // The lag is known once the partition has records and a position.
    let rows = std::env::temp_dir().join(format!("pixguard-dash-{}.jsonl", std::process::id()));
    let synth = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args(["synth", "--rows", "20", "-o"])
        .arg(&rows)
        .status()
        .expect("synth");
    assert!(synth.success());
    let produced = Command::new(env!("CARGO_BIN_EXE_pixguard"))
        .args([
            "produce",
            "--brokers",
            &broker.address,
            "--topic",
            "dash.in",
        ])
        .arg(&rows)
        .env("RUST_LOG", "warn")
        .status()
        .expect("produce");
    assert!(produced.success());
    let tx = server::transactions(3, 5);
    let client = reqwest::blocking::Client::new();
    let scored = client
        .post(server.url("/v1/score"))
        .json(&serde_json::json!({ "transactions": tx }))
        .send()
        .expect("score");
    assert!(scored.status().is_success());
    let mut missing: Vec<String> = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        missing.clear();
        for expr in &exprs {
            let (names, labels) = promql_parts(expr);
            assert!(!names.is_empty(), "{expr}: no pixguard metric");
            for name in &names {
                let samples: Vec<&str> = metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                    })
                    .collect();
                if samples.is_empty() {
                    missing.push(format!("{name} (in {expr})"));
                }
                for label in &labels {
                    if !samples.is_empty()
                        && !samples.iter().any(|l| l.contains(&format!("{label}=\"")))
                    {
                        missing.push(format!("{name}{{{label}}} (in {expr})"));
                    }
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("dashboard queries read what /metrics lacks: {missing:#?}");
}

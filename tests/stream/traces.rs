//! A message that carries a sampled W3C `traceparent` header gets a consumer span in that trace
//! (its engine's queue and compute as children), and its score record carries that span as its
//! own `traceparent`, so whoever consumes the scores continues the trace; a dead-lettered
//! message's span is an error with the reason. An unsampled header passes through unchanged, and
//! a message without one (ratio 0) is not traced. Spans are decoded by the OpenTelemetry
//! project's own classes (`tests/common/otlp.rs`).

use std::io::Write;

use serde_json::json;

use super::otlp::Collector;
use super::*;

impl Fixture {
    /// Produces `records` (`{"key", "value", "headers"}`) to `topic` with confluent-kafka.
    fn produce_records(&self, records: &[Value], topic: &str) {
        let mut child = Command::new(&self.python)
            .arg(Path::new(ROOT).join("tests/python/kafka_topics.py"))
            .args(["produce", "--brokers", &self.broker.address, topic])
            .stdin(Stdio::piped())
            .spawn()
            .expect("produce");
        let mut stdin = child.stdin.take().unwrap();
        for r in records {
            writeln!(stdin, "{r}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
    }
}

fn traceparent(n: u8, sampled: bool) -> (String, String, String) {
    let trace = format!(
        "{:032x}",
        0x5cf9_2f35_77b3_4da6_a3ce_929d_0e0e_0000u128 + u128::from(n)
    );
    let span = format!("{:016x}", 0x01f0_67aa_0ba9_0200u64 + u64::from(n));
    let header = format!("00-{trace}-{span}-{}", if sampled { "01" } else { "00" });
    (trace, span, header)
}

#[test]
fn a_traced_message_continues_its_trace_onto_its_score() {
    let Some(fx) = Fixture::new("traces") else {
        return;
    };
    let collector = Collector::start(&fx.python);
    let topics = ("tx-traces", "scores-traces", "dlq-traces");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let txs = server::transactions(3, 93);
    let (t1, p1, h1) = traceparent(1, true);
    let (_, _, h2) = traceparent(2, false);
    let (t4, p4, h4) = traceparent(4, true);
    let id = |i: usize| txs[i]["end_to_end_id"].as_str().unwrap().to_string();
    fx.produce_records(
        &[
            json!({"key": id(0), "value": txs[0].to_string(), "headers": {"traceparent": h1, "tracestate": "congo=t61rcWkgMzE", "app": "x"}}),
            json!({"key": id(1), "value": txs[1].to_string(), "headers": {"traceparent": h2}}),
            json!({"key": id(2), "value": txs[2].to_string()}),
            json!({"key": "broken", "value": "{not json", "headers": {"traceparent": h4}}),
        ],
        topics.0,
    );
    let endpoint = collector.endpoint();
    let _server = fx.stream_with(
        "g-traces",
        topics,
        &[
            ("traces.otlp_endpoint", endpoint.as_str()),
            ("traces.sample_ratio", "0"),
            ("traces.export_interval_ms", "100"),
        ],
    );
    let scores = fx.dump(topics.1, 3);
    let by_key = |key: &str| -> &Value {
        scores
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no score for {key}: {scores:#?}"))
    };

    // The traced message: its span is the parent its score names, in the producer's trace.
    let spans = collector.wait_for(&t1, 3);
    let consumer = spans
        .iter()
        .find(|s| s["kind"] == 5)
        .expect("a consumer span");
    assert_eq!(consumer["parent_span_id"], p1.as_str());
    assert_eq!(consumer["name"], format!("process {}", topics.0));
    let first = by_key(&id(0));
    assert_eq!(
        first["headers"]["traceparent"],
        format!("00-{t1}-{}-01", consumer["span_id"].as_str().unwrap())
    );
    assert_eq!(first["headers"]["app"], "x", "other headers are kept");
    assert_eq!(first["headers"]["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(consumer["trace_state"], "congo=t61rcWkgMzE");
    let value: Value = serde_json::from_str(first["value"].as_str().unwrap()).unwrap();
    let a = &consumer["attributes"];
    assert_eq!(a["messaging.system"], "kafka");
    assert_eq!(a["messaging.destination.name"], topics.0);
    assert_eq!(a["messaging.consumer.group.name"], "g-traces");
    assert_eq!(a["messaging.kafka.offset"], value["source"]["offset"]);
    assert_eq!(
        a["messaging.destination.partition.id"],
        value["source"]["partition"].to_string()
    );
    let as_f32 = |v: &Value| v.as_f64().map(|x| x as f32);
    assert_eq!(as_f32(&a["pixguard.score"]), as_f32(&value["score"]));
    assert_eq!(a["pixguard.decision"], value["decision"]);
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|s| s["parent_span_id"] == consumer["span_id"])
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    children.sort();
    assert_eq!(children, ["compute", "queue"]);

    // Unsampled: passed on as it came. None: none added.
    assert_eq!(by_key(&id(1))["headers"]["traceparent"], h2.as_str());
    assert!(by_key(&id(2))["headers"].get("traceparent").is_none());

    // Dead-lettered: an error span, and the record names it.
    let dead = fx.dump(topics.2, 1);
    let spans = collector.wait_for(&t4, 1);
    let span = &spans[0];
    assert_eq!(span["parent_span_id"], p4.as_str());
    assert_eq!(span["status_code"], 2);
    assert!(
        span["status_message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    assert_eq!(span["attributes"]["pixguard.outcome"], "invalid_json");
    assert_eq!(
        dead[0]["headers"]["traceparent"],
        format!("00-{t4}-{}-01", span["span_id"].as_str().unwrap())
    );
    assert_eq!(collector.all().len(), 4, "{:#?}", collector.all());
}

use std::time::Instant;

use serde_json::{Value, json};

use super::*;
use crate::model::explain::Reason;

fn version() -> Arc<Version> {
    version_in(Role::Champion)
}

/// The version the records name, serving as `role`.
fn version_in(role: Role) -> Arc<Version> {
    Arc::new(Version {
        model: ModelRef {
            name: "pix-fraud".into(),
            version: "7".into(),
        },
        model_version: "pix-fraud:7".into(),
        role: role.in_records(),
        reason_codes: Some(vec!["PAYEE_MULE_MARKER".into(), "AMOUNT_UNUSUAL".into()]),
        numeric: vec!["amount_log".into(), "hour_sin".into()],
        categorical: vec!["key_type".into()],
    })
}

fn scores(scores: &[f32], decisions: &[Decision], reasons: Vec<Option<Reasons>>) -> Scores {
    Scores {
        scores: scores.to_vec(),
        decisions: decisions.to_vec(),
        reasons,
        queue_us: 40,
        compute_us: 250,
        enqueued: Instant::now(),
    }
}

fn entry(inputs: Inputs, scored: &Scores, request_id: Option<&str>) -> Entry {
    Entry {
        version: version(),
        api: Api::OipGrpc,
        request_id: request_id.map(str::to_string),
        trace: Some(([0xab; 16], [0xcd; 8])),
        scored_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456),
        inputs,
        scores: scored.scores.clone(),
        decisions: scored.decisions.clone(),
        reasons: scored.reasons.clone(),
        queue_us: scored.queue_us,
        compute_us: scored.compute_us,
    }
}

/// Every record of `entry`: (key, value).
fn rendered(entry: &Entry) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    record::render(entry, |key, value| {
        out.push((
            key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
            serde_json::from_slice(value).unwrap(),
        ))
    });
    out
}

fn transactions(n: usize) -> Vec<Transaction> {
    crate::synth::Generator::new(crate::synth::SynthConfig {
        seed: 5,
        rows: n as u64,
        ..Default::default()
    })
    .unwrap()
    .map(|row| row.transaction)
    .collect()
}

#[test]
fn a_transaction_record_is_its_answer_with_who_answered_and_when() {
    let txs = transactions(2);
    let scored = scores(
        &[0.01, 0.875],
        &[Decision::Allow, Decision::Reject],
        vec![
            None,
            Some(vec![
                Reason {
                    group: 0,
                    contribution: 0.5,
                },
                Reason {
                    group: 1,
                    contribution: 0.25,
                },
            ]),
        ],
    );
    let ids = Inputs::Ids(txs.iter().map(|t| t.end_to_end_id).collect());
    let records = rendered(&entry(ids, &scored, Some("req-9")));
    assert_eq!(records.len(), 2);
    let id = |i: usize| txs[i].end_to_end_id.as_str().to_string();
    assert_eq!(records[0].0, Some(id(0)), "keyed by end_to_end_id");
    assert_eq!(
        records[1].1,
        json!({
            "end_to_end_id": id(1),
            "score": 0.875,
            "decision": "REJECT",
            "reasons": [
                {"code": "PAYEE_MULE_MARKER", "contribution": 0.5},
                {"code": "AMOUNT_UNUSUAL", "contribution": 0.25},
            ],
            "model": {"name": "pix-fraud", "version": "7"},
            "model_version": "pix-fraud:7",
            "scored_at": "2026-11-30T00:53:20.123456Z",
            "source": {"api": "oip_grpc", "request_id": "req-9", "row": 1, "rows": 2},
            "trace_id": "abababababababababababababababab",
            "queue_us": 40,
            "compute_us": 250,
        })
    );
    assert!(
        records[0].1.get("reasons").is_none(),
        "no reasons: none given"
    );
    assert!(records[0].1.get("transaction").is_none());
    assert!(records[1].1.get("role").is_none(), "the answer's own");
    for role in [Role::Challenger, Role::Canary] {
        let mut other = entry(Inputs::NoIds, &scored, None);
        other.version = version_in(role);
        assert_eq!(rendered(&other)[1].1["role"], role.as_str());
    }

    // With the inputs, the transaction exactly as /v1 takes it.
    let records = rendered(&entry(Inputs::Transactions(txs.clone()), &scored, None));
    let back: Transaction = serde_json::from_value(records[1].1["transaction"].clone()).unwrap();
    assert_eq!(back, txs[1]);
    assert!(records[1].1["source"].get("request_id").is_none());
}

#[test]
fn a_feature_row_has_no_id_and_is_named_by_the_package_columns() {
    let scored = scores(&[0.2, 0.3], &[Decision::Allow, Decision::Hold], vec![]);
    let batch = FeatureBatch {
        rows: 2,
        n_numeric: 2,
        n_categorical: 1,
        numeric: vec![1.5, -0.5, 2.5, 0.25],
        categorical: vec![3, 4],
    };
    let records = rendered(&entry(Inputs::Features(batch), &scored, None));
    assert_eq!(records[1].0, None, "no key: the partitioner spreads them");
    assert_eq!(records[1].1["end_to_end_id"], Value::Null);
    assert_eq!(
        records[1].1["features"],
        json!({"numeric": {"amount_log": 2.5, "hour_sin": 0.25}, "categorical": {"key_type": 4}})
    );
    let records = rendered(&entry(Inputs::NoIds, &scored, None));
    assert_eq!(records.len(), 2);
    assert!(records[0].1.get("features").is_none());
    assert_eq!(records[0].1["decision"], "ALLOW");
}

/// A log whose queue nobody reads: what it keeps stays there.
fn unread(ratio: f64, include_inputs: bool, max_rows: usize) -> DecisionLog {
    let (queue, entries) = crossbeam_channel::unbounded();
    std::mem::forget(entries);
    DecisionLog {
        sampler: crate::scoring::sample::Sampler::new(ratio),
        include_inputs,
        max_rows,
        queue,
        counts: Arc::default(),
        thread: Mutex::new(None),
        stopped: Arc::default(),
    }
}

#[test]
fn the_ratio_takes_that_many_requests_evenly_and_inputs_only_when_asked() {
    let txs = transactions(3);
    let log = unread(0.25, false, 10);
    let taken: Vec<bool> = (0..8)
        .map(|_| log.capture(Rows::Transactions(&txs)).is_some())
        .collect();
    assert_eq!(
        taken,
        [false, false, false, true, false, false, false, true]
    );
    let all = unread(1.0, false, 10);
    match all.capture(Rows::Transactions(&txs)) {
        Some(Inputs::Ids(ids)) => assert_eq!(ids[2], txs[2].end_to_end_id),
        other => panic!("{other:?}"),
    }
    match unread(1.0, true, 10).capture(Rows::Transactions(&txs)) {
        Some(Inputs::Transactions(kept)) => assert_eq!(kept, txs),
        other => panic!("{other:?}"),
    }
    assert!(
        unread(0.0, true, 10)
            .capture(Rows::Transactions(&txs))
            .is_none()
    );
}

#[test]
fn beyond_the_bound_a_request_is_dropped_whole_and_counted() {
    let log = unread(1.0, false, 5);
    let txs = transactions(3);
    let scored = scores(&[0.1; 3], &[Decision::Allow; 3], vec![]);
    let answered = Answered {
        api: Api::V1,
        request_id: None,
        trace: None,
    };
    let submit = || {
        let inputs = log.capture(Rows::Transactions(&txs)).unwrap();
        log.submit(&version(), answered, inputs, &scored);
    };
    submit();
    assert_eq!(log.counts.queued.load(Ordering::Relaxed), 3);
    submit();
    assert_eq!(log.counts.queued.load(Ordering::Relaxed), 3, "3 + 3 > 5");
    assert_eq!(log.counts.dropped.load(Ordering::Relaxed), 3);
    log.stopped.store(true, Ordering::Relaxed);
    log.counts.queued.store(0, Ordering::Relaxed);
    submit();
    assert_eq!(log.counts.dropped.load(Ordering::Relaxed), 6, "stopped");
}

#[test]
fn records_no_broker_takes_are_counted_failed_and_stopping_does_not_wait_past_its_limit() {
    let mut config = Config::default();
    config.decision_log.topic = "pix.decisions".into();
    // Nothing listens on port 1.
    config.decision_log.brokers = "127.0.0.1:1".into();
    let log = DecisionLog::start(&config).unwrap().unwrap();
    let txs = transactions(4);
    let scored = scores(&[0.1; 4], &[Decision::Allow; 4], vec![]);
    let inputs = log.capture(Rows::Transactions(&txs)).unwrap();
    let answered = Answered {
        api: Api::OipHttp,
        request_id: Some("r"),
        trace: None,
    };
    log.submit(&version(), answered, inputs, &scored);
    let started = Instant::now();
    log.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        started.elapsed()
    );
    let c = log.counts();
    assert_eq!(c.failed.load(Ordering::Relaxed), 4);
    assert_eq!(c.delivered.load(Ordering::Relaxed), 0);
    assert_eq!(c.queued.load(Ordering::Relaxed), 0);
}

#[test]
fn the_producer_takes_the_streams_credentials_then_its_own_settings() {
    let text = |v: &str| serde_yaml_ng::Value::String(v.into());
    let mut config = Config::default();
    config.decision_log.topic = "pix.decisions".into();
    let stream = &mut config.stream.librdkafka;
    stream.insert("security_protocol".into(), text("SASL_SSL"));
    stream.insert("session_timeout_ms".into(), text("6000"));
    stream.insert("linger_ms".into(), text("5"));
    config
        .decision_log
        .librdkafka
        .insert("linger_ms".into(), text("100"));
    let c = producer::producer_config(&config);
    assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(c.get("session.timeout.ms"), None, "a consumer's own");
    assert_eq!(c.get("linger.ms"), Some("100"), "the log's own wins");
    assert_eq!(c.get("acks"), Some("all"));
    config.decision_log.brokers = "kafka-audit:9092".into();
    config
        .decision_log
        .librdkafka
        .insert("acks".into(), text("1"));
    let c = producer::producer_config(&config);
    assert_eq!(c.get("bootstrap.servers"), Some("kafka-audit:9092"));
    assert_eq!(
        c.get("acks"),
        Some("1"),
        "durability is the log's to choose"
    );
}

#[test]
fn a_traced_requests_records_name_its_span_as_their_parent() {
    let scored = scores(&[0.1], &[Decision::Allow], vec![None]);
    let mut e = entry(Inputs::NoIds, &scored, None);
    assert_eq!(
        e.traceparent().as_deref(),
        Some("00-abababababababababababababababab-cdcdcdcdcdcdcdcd-01")
    );
    e.trace = None;
    assert_eq!(e.traceparent(), None);
}

//! The decision log against a real broker: every decision `serve` answers — over /v1, OIP HTTP
//! (transactions and precomputed features) and OIP gRPC — is one record on the topic, keyed by
//! its `end_to_end_id`, with the answer's score, decision and reasons, the API and the caller's
//! request id, the request's trace, and (with `include_inputs`) what was scored. Records are read
//! back with confluent-kafka, and compared with the answers the clients got.

use pixguard::features::FeatureExtractor;
use pixguard::model::ModelPackage;
use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::transaction::Transaction;
use serde_json::json;

use super::*;

const MODEL: &str = "pix-fraud";

/// The answer's fields a record repeats, by end_to_end_id.
type Answers = HashMap<String, (f32, String, Value)>;

impl Fixture {
    /// `pixguard serve` logging its decisions to the topic `decisions`, with more settings.
    fn serve_logging(&self, extra: &[(&str, &str)]) -> Server {
        let brokers = self.broker.address.as_str();
        let mut args: Vec<String> = Vec::new();
        for (k, v) in [
            ("decision_log.topic", "decisions"),
            ("decision_log.brokers", brokers),
            ("model.poll_interval_s", "0"),
        ]
        .iter()
        .chain(extra)
        {
            args.extend(["--set".to_string(), format!("{k}={v}")]);
        }
        Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// POSTs JSON and parses the answer.
fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> Value {
    let mut request = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().expect("post");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().expect("a JSON answer")
}

fn as_f32(v: &Value) -> f32 {
    v.as_f64().expect("a number") as f32
}

/// The `name` output's data of an OIP JSON answer.
fn output<'a>(answer: &'a Value, name: &str) -> &'a Vec<Value> {
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no {name} output: {answer}"))["data"]
        .as_array()
        .unwrap()
}

#[test]
fn every_answered_decision_is_a_record_on_the_topic() {
    let Some(fx) = Fixture::new("decisions") else {
        return;
    };
    fx.topics(&["decisions"]);
    let mut server = fx.serve_logging(&[
        ("decision_log.include_inputs", "true"),
        // Nothing is sent before the server stops: its SIGTERM must flush every record.
        ("decision_log.librdkafka.linger_ms", "60000"),
        // Traces on, so that a caller's sampled traceparent is this request's trace; nothing
        // listens there, and the failed exports change nothing else.
        ("traces.otlp_endpoint", "http://127.0.0.1:1"),
        ("traces.sample_ratio", "0"),
    ]);
    let txs = server::transactions(7, 71);
    let id = |i: usize| txs[i]["end_to_end_id"].as_str().unwrap().to_string();
    let mut answers: Answers = HashMap::new();

    // /v1: a batch of three, traced by its caller, with reasons for all.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let v1 = post(
        &server.url("/v1/score"),
        &json!({"transactions": &txs[0..3], "explain": true}),
        &[
            ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
            // What Envoy (ESPv2) puts on every request: the id /v1 has.
            ("x-request-id", "edge-1"),
        ],
    );
    for r in v1["results"].as_array().unwrap() {
        answers.insert(
            r["end_to_end_id"].as_str().unwrap().into(),
            (
                as_f32(&r["score"]),
                r["decision"].as_str().unwrap().into(),
                r["reasons"].clone(),
            ),
        );
    }

    // OIP HTTP, two transactions as field tensors, with the caller's request id.
    let typed: Vec<Transaction> = txs
        .iter()
        .map(|t| serde_json::from_value(t.clone()).unwrap())
        .collect();
    let bodies = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipHttp,
        MODEL,
        &typed[3..5],
        2,
        None,
    )
    .unwrap();
    let pixguard::bench::requests::Bodies::Http { bodies, .. } = bodies else {
        unreachable!()
    };
    let mut body: Value = serde_json::from_slice(&bodies[0]).unwrap();
    body["id"] = json!("oip-7");
    let infer = server.url(&format!("/v2/models/{MODEL}/infer"));
    let oip = post(&infer, &body, &[]);
    assert_eq!(oip["id"], "oip-7");
    for row in 0..2 {
        answers.insert(
            id(3 + row),
            (
                as_f32(&output(&oip, "score")[row]),
                output(&oip, "decision")[row].as_str().unwrap().into(),
                Value::Null,
            ),
        );
    }

    // OIP gRPC, one transaction, with the caller's request id.
    let built = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipGrpc,
        MODEL,
        &typed[5..6],
        1,
        None,
    )
    .unwrap();
    let mut request = built.grpc_request(0).unwrap();
    request.id = "grpc-8".into();
    let mut request = tonic::Request::new(request);
    // The protocol's own id goes first.
    request
        .metadata_mut()
        .insert("x-request-id", "edge-2".parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = runtime.block_on(async {
        GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
            .await
            .unwrap()
            .model_infer(request)
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(grpc.id, "grpc-8");
    let k = grpc.outputs.iter().position(|o| o.name == "score").unwrap();
    let score = f32::from_le_bytes(grpc.raw_output_contents[k][..4].try_into().unwrap());

    // OIP HTTP, precomputed features (the package's extraction, as a feature store would send).
    let package = ModelPackage::load(Path::new(ROOT).join("models/pix-fraud")).unwrap();
    let spec = package.config.features.clone();
    let batch = FeatureExtractor::new(spec.clone())
        .unwrap()
        .extract(&typed[6..7]);
    let features = post(
        &infer,
        &json!({"id": "pre-9", "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, batch.n_numeric], "data": batch.numeric},
            {"name": "categories", "datatype": "INT64", "shape": [1, batch.n_categorical], "data": batch.categorical},
        ]}),
        &[],
    );

    // Rendered and handed to librdkafka, and held there by `linger.ms`.
    let count = |outcome: &str| {
        metric(
            &server,
            &format!("pixguard_decision_log_records_total{{outcome=\"{outcome}\"}}"),
        )
    };
    let until = Instant::now() + Duration::from_secs(10);
    while metric(&server, "pixguard_decision_log_queued_records") != 0.0 {
        assert!(Instant::now() < until, "records still queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        (count("delivered"), count("failed"), count("dropped")),
        (0.0, 0.0, 0.0)
    );
    server.terminate();
    assert!(server.wait(Duration::from_secs(20)).success());
    // Sent at once, whatever linger.ms says (kafka::flush), and acknowledged before the exit.
    assert!(
        !server.logged("records not acknowledged"),
        "{:#?}",
        server.log.lock().unwrap()
    );

    let records = fx.dump("decisions", 7);
    assert_eq!(records.len(), 7, "{records:#?}");
    let values: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(r["value"].as_str().unwrap()).unwrap())
        .collect();
    let model_version = format!(
        "{MODEL}:{}",
        v1["results"][0]["model"]["version"].as_str().unwrap()
    );
    for (record, value) in records.iter().zip(&values) {
        assert_eq!(value["model_version"], model_version.as_str());
        assert_eq!(value["model"], v1["results"][0]["model"]);
        assert!(value["scored_at"].as_str().unwrap().ends_with('Z'));
        let Some(e2e) = value["end_to_end_id"].as_str() else {
            continue;
        };
        assert_eq!(record["key"], e2e, "keyed by end_to_end_id");
        let sent = txs.iter().find(|t| t["end_to_end_id"] == e2e).unwrap();
        assert_eq!(&value["transaction"], sent, "the transaction as sent");
        if let Some((score, decision, reasons)) = answers.get(e2e) {
            assert_eq!(as_f32(&value["score"]), *score, "{e2e}");
            assert_eq!(value["decision"], decision.as_str());
            if !reasons.is_null() {
                assert_eq!(&value["reasons"], reasons, "the answer's reasons");
            }
        }
    }
    let by_id = |e2e: &str| -> &Value {
        values
            .iter()
            .find(|v| v["end_to_end_id"] == e2e)
            .unwrap_or_else(|| panic!("no record of {e2e}: {values:#?}"))
    };
    // A traced request's records carry a `traceparent` naming its span (a child of the caller's
    // 00f067aa0ba902b7, in its trace): a consumer of the log continues the trace. Untraced, none.
    let header = |e2e: &str| -> Option<String> {
        let at = values.iter().position(|v| v["end_to_end_id"] == e2e)?;
        records[at]["headers"]["traceparent"]
            .as_str()
            .map(str::to_string)
    };
    let mut spans = Vec::new();
    for row in 0..3 {
        let v = by_id(&id(row));
        assert_eq!(
            v["source"],
            json!({"api": "v1", "request_id": "edge-1", "row": row, "rows": 3})
        );
        assert_eq!(v["trace_id"], trace);
        let parent = header(&id(row)).expect("a traced request's record has a traceparent");
        let fields: Vec<&str> = parent.split('-').collect();
        assert_eq!(fields.len(), 4, "{parent}");
        assert_eq!((fields[0], fields[1], fields[3]), ("00", trace, "01"));
        assert!(
            fields[2].len() == 16 && fields[2] != "00f067aa0ba902b7" && fields[2] != "0".repeat(16),
            "{parent}"
        );
        spans.push(fields[2].to_string());
    }
    spans.dedup();
    assert_eq!(spans.len(), 1, "one request, one span: {spans:?}");
    assert_eq!(header(&id(3)), None, "not traced");
    for row in 0..2 {
        let v = by_id(&id(3 + row));
        assert_eq!(
            v["source"],
            json!({"api": "oip_http", "request_id": "oip-7", "row": row, "rows": 2})
        );
        assert!(v.get("trace_id").is_none(), "not traced");
    }
    let v = by_id(&id(5));
    assert_eq!(
        v["source"],
        json!({"api": "oip_grpc", "request_id": "grpc-8", "row": 0, "rows": 1})
    );
    assert_eq!(as_f32(&v["score"]), score);

    // The feature row: no id, no key, its values by the package's column names.
    let v = values
        .iter()
        .find(|v| v["source"]["request_id"] == "pre-9")
        .expect("the precomputed row's record");
    assert_eq!(v["end_to_end_id"], Value::Null);
    assert_eq!(as_f32(&v["score"]), as_f32(&output(&features, "score")[0]));
    let named = &v["features"]["numeric"];
    assert_eq!(named.as_object().unwrap().len(), spec.numeric.len());
    for (f, x) in spec.numeric.iter().zip(&batch.numeric) {
        assert_eq!(as_f32(&named[&f.name]), *x, "{}", f.name);
    }
    for (f, c) in spec.categorical.iter().zip(&batch.categorical) {
        assert_eq!(v["features"]["categorical"][&f.name], *c, "{}", f.name);
    }
    let pre = records
        .iter()
        .zip(&values)
        .find(|(_, v)| v["source"]["request_id"] == "pre-9")
        .unwrap()
        .0;
    assert_eq!(pre["key"], Value::Null);
}

/// Polls `/metrics` until `name` reaches `at_least`; answers its value.
fn wait_metric(server: &Server, name: &str, at_least: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(server, name);
        if value >= at_least || Instant::now() > until {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_broker_outage_fails_no_payment_and_its_records_are_counted() {
    let Some(mut fx) = Fixture::new("decisions-outage") else {
        return;
    };
    fx.topics(&["decisions"]);
    // librdkafka gives a record up after this long without the broker.
    let server = fx.serve_logging(&[("decision_log.librdkafka.message_timeout_ms", "1500")]);
    let txs = server::transactions(5, 72);
    let score = |tx: &Value| post(&server.url("/v1/score"), tx, &[]);
    let delivered = "pixguard_decision_log_records_total{outcome=\"delivered\"}";
    let failed = "pixguard_decision_log_records_total{outcome=\"failed\"}";
    for tx in &txs[..2] {
        score(tx);
    }
    assert_eq!(wait_metric(&server, delivered, 2.0), 2.0);

    fx.broker.kill();
    for tx in &txs[2..] {
        let answer = score(tx);
        assert_eq!(answer["end_to_end_id"], tx["end_to_end_id"], "answered");
    }
    assert_eq!(
        wait_metric(&server, failed, 3.0),
        3.0,
        "given up and counted"
    );
    assert_eq!(metric(&server, delivered), 2.0);
    assert_eq!(
        metric(
            &server,
            "pixguard_decision_log_records_total{outcome=\"dropped\"}"
        ),
        0.0
    );
    assert_eq!(metric(&server, "pixguard_decision_log_queued_records"), 0.0);
    assert_eq!(
        metric(&server, "pixguard_responses_total{api=\"v1\",code=\"ok\"}"),
        5.0
    );
    assert!(server.logged("decision log: a record was not delivered"));
}

/// `pixguard score`'s scores of `txs` with the package at `model`, by end_to_end_id.
fn reference_scores(txs: &[Value], model: &str, tmp: &Path) -> HashMap<String, f32> {
    let input = tmp.join("reference.jsonl");
    let lines: Vec<String> = txs.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    scores_of(&input, model)
        .into_iter()
        .map(|(id, score)| (id, score as f32))
        .collect()
}

#[test]
fn the_shadow_challengers_and_the_canarys_decisions_are_logged_beside_the_answers() {
    let Some(fx) = Fixture::new("decisions-shadow") else {
        return;
    };
    fx.topics(&["decisions"]);
    // The first request is the champion's (and its copy the shadow's), the second the canary's.
    let server = fx.serve_logging(&[
        ("model.shadow", "models/pix-fraud-challenger"),
        ("model.shadow_fraction", "1.0"),
        ("model.canary", "models/pix-fraud-challenger"),
        ("model.canary_fraction", "0.5"),
    ]);
    let txs = server::transactions(4, 73);
    let canary_txs = server::transactions(4, 74);
    let answer = post(
        &server.url("/v1/score"),
        &json!({"transactions": &txs}),
        &[("x-request-id", "edge-5")],
    );
    let canary_answer = post(
        &server.url("/v1/score"),
        &json!({"transactions": &canary_txs}),
        &[("x-request-id", "edge-6")],
    );
    let records = fx.dump("decisions", 12);
    let values: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(r["value"].as_str().unwrap()).unwrap())
        .collect();
    let of = |role: Option<&str>| -> Vec<&Value> {
        values
            .iter()
            .filter(|v| v["role"].as_str() == role)
            .collect()
    };
    let (champion, challenger, canary) = (of(None), of(Some("challenger")), of(Some("canary")));
    assert_eq!(
        (champion.len(), challenger.len(), canary.len()),
        (4, 4, 4),
        "{values:#?}"
    );
    let champion_scores = reference_scores(&txs, "models/pix-fraud", &fx.tmp);
    let challenger_scores = reference_scores(&txs, "models/pix-fraud-challenger", &fx.tmp);
    let canary_scores = reference_scores(&canary_txs, "models/pix-fraud-challenger", &fx.tmp);
    let challenger_package =
        ModelPackage::load(Path::new(ROOT).join("models/pix-fraud-challenger")).unwrap();
    for (role, records, reference, sent, request_id) in [
        ("champion", &champion, &champion_scores, &txs, "edge-5"),
        (
            "challenger",
            &challenger,
            &challenger_scores,
            &txs,
            "edge-5",
        ),
        ("canary", &canary, &canary_scores, &canary_txs, "edge-6"),
    ] {
        let mut ids: Vec<&str> = records
            .iter()
            .map(|v| v["end_to_end_id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut sent: Vec<&str> = sent
            .iter()
            .map(|t| t["end_to_end_id"].as_str().unwrap())
            .collect();
        sent.sort_unstable();
        assert_eq!(ids, sent, "{role}: one record per transaction");
        for v in records.iter() {
            let id = v["end_to_end_id"].as_str().unwrap();
            let want = reference[id];
            assert!(
                (as_f32(&v["score"]) - want).abs() < 1e-5,
                "{role} {id}: {} against pixguard score's {want}",
                v["score"]
            );
            assert_eq!(v["source"]["api"], "v1");
            assert_eq!(v["source"]["request_id"], request_id);
        }
    }
    // The answers' records are the answers; the challenger's name its own version.
    for (answer, records) in [(&answer, &champion), (&canary_answer, &canary)] {
        for r in answer["results"].as_array().unwrap() {
            let v = records
                .iter()
                .find(|v| v["end_to_end_id"] == r["end_to_end_id"])
                .unwrap();
            assert_eq!(v["score"], r["score"]);
            assert_eq!(v["decision"], r["decision"]);
            assert_eq!(v["model"], r["model"]);
        }
    }
    assert_eq!(
        challenger[0]["model"]["name"],
        challenger_package.config.name.as_str()
    );
    assert_ne!(challenger[0]["model"], champion[0]["model"]);
    assert_eq!(canary[0]["model"], challenger[0]["model"]);
}

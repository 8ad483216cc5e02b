//! Distributed traces: a request that arrives with a sampled W3C `traceparent` — over /v1, OIP
//! HTTP and OIP gRPC — gets a server span in that trace, with its engine's queue and compute as
//! children, exported over OTLP/gRPC to a receiver built on the OpenTelemetry project's own
//! generated classes (`tests/python/otlp_collector.py`), which decodes them independently. An
//! unsampled or absent parent (ratio 0) sends nothing; a dead collector costs no request; the last
//! spans are sent at SIGTERM. The OpenTelemetry SDK's `OTEL_*` variables configure the same, over
//! OTLP/HTTP or gRPC, with headers, gzip and resource attributes.

use std::time::Instant;

use super::otlp::Collector;
use super::registry::python;
use super::server::{metric, metrics_text};
use super::*;

/// `pixguard serve` exporting its spans to `endpoint`, with more `traces.*` settings
/// (`key=value`, the section left out).
fn traced_server(endpoint: &str, settings: &[&str]) -> Server {
    let mut args = vec![
        "--set".to_string(),
        format!("traces.otlp_endpoint={endpoint}"),
    ];
    for setting in settings {
        args.push("--set".into());
        args.push(format!("traces.{setting}"));
    }
    Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A `tracestate` (the W3C Recommendation's example).
const VENDORS: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// A caller's trace: its id, its span, and the `traceparent` it sends.
fn caller(n: u8, sampled: bool) -> (String, String, String) {
    let trace = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_0000u128 + u128::from(n)
    );
    let span = format!("{:016x}", 0x00f0_67aa_0ba9_0200u64 + u64::from(n));
    let flags = if sampled { "01" } else { "00" };
    let header = format!("00-{trace}-{span}-{flags}");
    (trace, span, header)
}

/// The server span of `spans`, its children checked to lie inside it, queue then compute.
fn server_span(spans: &[Value], name: &str, parent: &str) -> Value {
    let server = spans
        .iter()
        .find(|s| s["kind"] == 2)
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"))
        .clone();
    assert_eq!(server["name"], name);
    assert_eq!(server["parent_span_id"], parent);
    // Sampled, and the parent known to be remote.
    assert_eq!(server["flags"], 0x301);
    assert_eq!(server["resource"]["service.name"], "pixguard");
    assert_eq!(server["scope"], "pixguard");
    let (start, end) = (
        server["start"].as_u64().unwrap(),
        server["end"].as_u64().unwrap(),
    );
    assert!(start < end, "{server}");
    let mut children: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 1).collect();
    children.sort_by_key(|s| s["start"].as_u64());
    if !children.is_empty() {
        let names: Vec<&str> = children
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["queue", "compute"]);
        for child in &children {
            assert_eq!(child["parent_span_id"], server["span_id"]);
            assert!(
                start <= child["start"].as_u64().unwrap(),
                "{child} in {server}"
            );
            assert!(child["end"].as_u64().unwrap() <= end, "{child} in {server}");
        }
        assert_eq!(children[0]["end"], children[1]["start"]);
        let us = |s: &Value| (s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap()) / 1_000;
        assert_eq!(
            us(children[0]) as i64,
            server["attributes"]["pixguard.queue_us"]
                .as_i64()
                .unwrap_or(-1),
            "the queue span is the queue time the engine measured"
        );
    }
    server
}

#[test]
fn sampled_requests_are_traced_in_the_callers_trace_on_every_api() {
    let Some(python) = python("the traces test (opentelemetry-proto)") else {
        return;
    };
    let collector = Collector::start(&python);
    let endpoint = collector.endpoint();
    let server = traced_server(&endpoint, &["sample_ratio=0", "export_interval_ms=100"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let txs = transactions(3, 91);

    // /v1: sampled, unsampled, none, and a bad request.
    let (t1, p1, h1) = caller(1, true);
    let sent = Instant::now();
    let answer = runtime.block_on(
        http.post(server.url("/v1/score"))
            .header("traceparent", &h1)
            .header("tracestate", VENDORS)
            .json(&txs[0])
            .send(),
    );
    let answer = answer.unwrap();
    let round_trip = sent.elapsed();
    assert_eq!(answer.status(), 200);
    let version = answer.headers()["x-model-version"]
        .to_str()
        .unwrap()
        .to_string();
    let queue_us: i64 = answer.headers()["x-queue-time-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = runtime.block_on(answer.json()).unwrap();
    let (t2, _, h2) = caller(2, false);
    for header in [Some(h2), None] {
        let mut request = http.post(server.url("/v1/score")).json(&txs[1]);
        if let Some(h) = header {
            request = request.header("traceparent", h);
        }
        assert_eq!(runtime.block_on(request.send()).unwrap().status(), 200);
    }
    let (t3, p3, h3) = caller(3, true);
    let mut bad = txs[2].clone();
    bad["amount_cents"] = json!(-5);
    let refused = runtime.block_on(
        http.post(server.url("/v1/score"))
            .header("traceparent", &h3)
            .json(&bad)
            .send(),
    );
    assert_eq!(refused.unwrap().status(), 422);

    // OIP over HTTP and gRPC.
    let (t4, p4, h4) = caller(4, true);
    let (oip_body, grpc_request) = oip_forms(&txs[2], MODEL);
    let oip = runtime.block_on(
        http.post(server.url(&infer_path(MODEL)))
            .header("traceparent", &h4)
            .header("content-type", "application/json")
            .body(oip_body)
            .send(),
    );
    assert_eq!(oip.unwrap().status(), 200);
    let (t5, p5, h5) = caller(5, true);
    runtime.block_on(async {
        let mut client = grpc_client(&server).await;
        let mut request = tonic::Request::new(grpc_request);
        request
            .metadata_mut()
            .insert("traceparent", h5.parse().unwrap());
        client.model_infer(request).await.unwrap();
    });

    // /v1: the span names the version and the score the caller got, and lasts no longer than
    // the caller waited.
    let spans = collector.wait_for(&t1, 3);
    let v1 = server_span(&spans, "POST /v1/score", &p1);
    let a = &v1["attributes"];
    assert_eq!(a["http.route"], "/v1/score");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["pixguard.outcome"], "ok");
    assert_eq!(a["pixguard.model.version"], version.as_str());
    assert_eq!(a["pixguard.rows"], 1);
    assert_eq!(a["pixguard.queue_us"], queue_us);
    assert_eq!(a["pixguard.decision"], body["decision"]);
    // The score is an f32: the span holds it widened exactly, the body in its shortest text.
    let as_f32 = |v: &Value| v.as_f64().map(|x| x as f32);
    assert_eq!(as_f32(&a["pixguard.score"]), as_f32(&body["score"]));
    assert_eq!(v1["status_code"], 0);
    // The caller's vendors' entries stay with its trace, on every span of this request.
    assert!(
        spans.iter().all(|s| s["trace_state"] == VENDORS),
        "{spans:#?}"
    );
    let lasted = v1["end"].as_u64().unwrap() - v1["start"].as_u64().unwrap();
    assert!(
        lasted <= round_trip.as_nanos() as u64,
        "{lasted} ns, waited {round_trip:?}"
    );

    // A bad request: the caller's fault, so the span is not an error; no engine children.
    let spans = collector.wait_for(&t3, 1);
    let refused = server_span(&spans, "POST /v1/score", &p3);
    assert_eq!(refused["attributes"]["http.response.status_code"], 422);
    assert_eq!(refused["attributes"]["pixguard.outcome"], "invalid_field");
    assert_eq!(refused["status_code"], 0);

    let spans = collector.wait_for(&t4, 3);
    let oip = server_span(&spans, "POST /v2/models/{model}/infer", &p4);
    assert_eq!(oip["trace_state"], "", "none sent, none made up");
    assert_eq!(oip["attributes"]["http.response.status_code"], 200);
    let spans = collector.wait_for(&t5, 3);
    let grpc = server_span(&spans, "inference.GRPCInferenceService/ModelInfer", &p5);
    let a = &grpc["attributes"];
    assert_eq!(a["rpc.system"], "grpc");
    assert_eq!(a["rpc.method"], "ModelInfer");
    assert_eq!(a["rpc.grpc.status_code"], 0);
    assert_eq!(a["pixguard.rows"], 1);

    // Nothing else: not the unsampled caller's trace, not a trace of the request without one.
    assert!(collector.trace(&t2).is_empty());
    let all = collector.all();
    assert_eq!(all.len(), 3 + 1 + 3 + 3, "{all:#?}");
    // Counted once the collector's answer is back, which comes after it printed the spans.
    let text = spans_counted(&runtime, &http, &server, "exported", 10.0);
    assert_eq!(
        metric(&text, "pixguard_trace_spans_total{outcome=\"dropped\"}"),
        0.0
    );
    assert_eq!(
        metric(&text, "pixguard_trace_spans_total{outcome=\"failed\"}"),
        0.0
    );

    // SIGTERM sends what is still queued: with a minute between exports, only the stop sends it.
    drop(server);
    let mut server = traced_server(&endpoint, &["export_interval_ms=60000"]);
    let (t6, _, h6) = caller(6, true);
    let answer = runtime.block_on(
        http.post(server.url("/v1/score"))
            .header("traceparent", &h6)
            .json(&txs[0])
            .send(),
    );
    assert_eq!(answer.unwrap().status(), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(collector.trace(&t6).is_empty(), "sent before the interval");
    server.terminate();
    assert!(server.wait(Duration::from_secs(15)).success());
    collector.wait_for(&t6, 3);
}

#[test]
fn a_dead_collector_costs_no_request() {
    // Nothing listens there: every export fails, and every request is still answered.
    let port = super::registry::free_port();
    let server = traced_server(
        &format!("http://127.0.0.1:{port}"),
        &[
            "sample_ratio=1",
            "export_interval_ms=50",
            "export_timeout_ms=200",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    for tx in transactions(5, 92) {
        let answer = runtime.block_on(http.post(server.url("/v1/score")).json(&tx).send());
        assert_eq!(answer.unwrap().status(), 200);
    }
    let text = spans_counted(&runtime, &http, &server, "failed", 15.0);
    assert_eq!(
        metric(&text, "pixguard_trace_spans_total{outcome=\"exported\"}"),
        0.0
    );
    assert!(server.logged("traces: export failed"));
}

/// `/metrics` once `pixguard_trace_spans_total{outcome}` has reached `n` (10 s at most).
fn spans_counted(
    runtime: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    server: &Server,
    outcome: &str,
    n: f64,
) -> String {
    let name = format!("pixguard_trace_spans_total{{outcome=\"{outcome}\"}}");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = runtime.block_on(metrics_text(http, server));
        let counted = metric(&text, &name);
        if counted >= n || Instant::now() > until {
            assert_eq!(counted, n, "{outcome} spans");
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_opentelemetry_callers_span_is_the_parent() {
    // The reference SDK on the caller's side: its propagator writes the traceparent (through
    // pixguard_client), and pixguard's span must name the SDK's span as its parent.
    let Some(python) = python("the OpenTelemetry caller test (opentelemetry-sdk)") else {
        return;
    };
    let collector = Collector::start(&python);
    let server = traced_server(
        &collector.endpoint(),
        &["sample_ratio=0", "export_interval_ms=100"],
    );
    let tx = transactions(1, 94).remove(0);
    let caller = python_json(
        std::process::Command::new(&python)
            .arg(format!("{}/tests/python/traced_client.py", server::ROOT))
            .args([server.base.as_str(), &tx.to_string()])
            .env("PYTHONPATH", format!("{}/clients/python", server::ROOT)),
    );
    assert_eq!(caller["sampled"], true);
    assert_eq!(caller["recorded"], json!(["pix.authorize"]));
    let trace = caller["trace_id"].as_str().unwrap();
    let spans = collector.wait_for(trace, 3);
    let span = server_span(
        &spans,
        "POST /v1/score",
        caller["span_id"].as_str().unwrap(),
    );
    let as_f32 = |v: &Value| v.as_f64().map(|x| x as f32);
    assert_eq!(
        as_f32(&span["attributes"]["pixguard.score"]),
        as_f32(&caller["score"])
    );
}

#[test]
fn a_collector_that_never_answers_drops_spans_not_requests() {
    // The kernel accepts the connection; nothing ever answers on it. The exporter's call hangs
    // until its timeout, its queue (4 records here) fills, and what does not fit is dropped.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let server = traced_server(
        &format!("http://127.0.0.1:{port}"),
        &[
            "sample_ratio=1",
            "max_queue_size=4",
            "export_interval_ms=50",
            "export_timeout_ms=20000",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let txs = transactions(40, 95);
    // The first request's export connects: from then on the exporter is stuck in that call.
    let first = runtime.block_on(http.post(server.url("/v1/score")).json(&txs[0]).send());
    assert_eq!(first.unwrap().status(), 200);
    black_hole.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let _connection = loop {
        match black_hole.accept() {
            Ok((connection, _)) => break connection,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the exporter never connected: {e}"),
        }
    };
    for tx in &txs[1..] {
        let answer = runtime.block_on(http.post(server.url("/v1/score")).json(tx).send());
        assert_eq!(answer.unwrap().status(), 200);
    }
    let text = runtime.block_on(metrics_text(&http, &server));
    let dropped = metric(&text, "pixguard_trace_spans_total{outcome=\"dropped\"}");
    // 39 requests of 3 spans each while the exporter waits: 4 of them fit in its queue.
    assert_eq!(dropped, (39.0 - 4.0) * 3.0);
    assert_eq!(
        metric(&text, "pixguard_trace_spans_total{outcome=\"exported\"}"),
        0.0
    );
    drop(black_hole);
}

#[test]
fn the_opentelemetry_variables_configure_traces_over_http_and_grpc() {
    let Some(python) = python("the traces test (opentelemetry-proto)") else {
        return;
    };
    let collector = Collector::start(&python);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let common = [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20pix-t0k3n, x-tenant=fraud",
        ),
        ("OTEL_SERVICE_NAME", "pixguard-otel"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.namespace.name=fraud,deployment.environment.name=test%20env",
        ),
        // Not parent-based: an unsampled caller's trace is kept at ratio 1.
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_PROPAGATORS", "tracecontext,b3"),
    ];
    let base = collector.http_base();
    let grpc = collector.endpoint();
    let transports = [
        // The base URL: OTLP/HTTP, the specification's default, at base + /v1/traces.
        ("http", vec![("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str())]),
        (
            "grpc",
            vec![
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", grpc.as_str()),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ],
        ),
    ];
    for (n, (transport, endpoint)) in transports.into_iter().enumerate() {
        let mut command = Server::command(&[]);
        command.envs(common.iter().chain(&endpoint).copied());
        let server = Server::spawn(&mut command);
        let (trace, parent, header) = caller(20 + n as u8, false);
        let tx = transactions(1, 96 + n as u64).remove(0);
        let answer = runtime.block_on(
            http.post(server.url("/v1/score"))
                .header("traceparent", &header)
                .json(&tx)
                .send(),
        );
        assert_eq!(answer.unwrap().status(), 200);
        let spans = collector.wait_for(&trace, 3);
        for span in &spans {
            assert_eq!(span["transport"], transport, "{span}");
            let headers = &span["headers"];
            assert_eq!(headers["authorization"], "Bearer pix-t0k3n", "{span}");
            assert_eq!(headers["x-tenant"], "fraud");
            if transport == "http" {
                // The receiver gunzipped the body to decode it.
                assert_eq!(headers["content-encoding"], "gzip");
                assert_eq!(headers["content-type"], "application/x-protobuf");
            }
            let resource = &span["resource"];
            assert_eq!(resource["service.name"], "pixguard-otel");
            assert_eq!(resource["k8s.namespace.name"], "fraud");
            assert_eq!(resource["deployment.environment.name"], "test env");
        }
        let server_span = spans.iter().find(|s| s["kind"] == 2).unwrap();
        assert_eq!(server_span["parent_span_id"], parent);
        assert_eq!(server_span["name"], "POST /v1/score");
        assert!(server.logged("OTEL_PROPAGATORS: b3 ignored"));
        assert!(
            !server.logged("t0k3n"),
            "the exporter's headers are credentials and never logged"
        );
    }
}

#[test]
fn a_traced_request_turned_away_at_admission_has_its_span() {
    let Some(python) = python("the traces test (opentelemetry-proto)") else {
        return;
    };
    let collector = Collector::start(&python);
    // One request in flight at most, held 400 ms by the slow worker.
    let mut command = Server::command(&[
        "--set",
        "server.max_concurrent_requests=1",
        "--set",
        "engine.test_worker_delay_us=400000",
    ]);
    command.envs([
        ("PIXGUARD__TRACES__OTLP_ENDPOINT", collector.endpoint()),
        ("PIXGUARD__TRACES__SAMPLE_RATIO", "0".into()),
        ("PIXGUARD__TRACES__EXPORT_INTERVAL_MS", "100".into()),
    ]);
    let server = Server::spawn(&mut command);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let txs = transactions(3, 97);
    let holder = {
        let (url, tx) = (server.url("/v1/score"), txs[0].clone());
        runtime.spawn(async move { reqwest::Client::new().post(url).json(&tx).send().await })
    };
    std::thread::sleep(Duration::from_millis(150));
    let (t1, p1, h1) = caller(30, true);
    let refused = runtime.block_on(
        http.post(server.url("/v1/score"))
            .header("traceparent", &h1)
            .header("tracestate", VENDORS)
            .json(&txs[1])
            .send(),
    );
    assert_eq!(refused.unwrap().status(), 429);
    let (t2, p2, h2) = caller(31, true);
    let (_, grpc_request) = oip_forms(&txs[2], MODEL);
    let status = runtime.block_on(async {
        let mut client = grpc_client(&server).await;
        let mut request = tonic::Request::new(grpc_request);
        request
            .metadata_mut()
            .insert("traceparent", h2.parse().unwrap());
        client.model_infer(request).await.unwrap_err()
    });
    assert_eq!(status.code(), Code::ResourceExhausted);
    let held = runtime.block_on(holder).unwrap().unwrap();
    assert_eq!(held.status(), 200);

    // One span each, no engine children: the caller's trace says it was turned away, and why.
    let spans = collector.wait_for(&t1, 1);
    let v1 = server_span(&spans, "POST /v1/score", &p1);
    let a = &v1["attributes"];
    assert_eq!(a["http.response.status_code"], 429);
    assert_eq!(a["pixguard.outcome"], "overloaded");
    assert_eq!(v1["trace_state"], VENDORS);
    // Overload is a 4xx: the caller is told to come back, not a fault of the server's.
    assert_eq!(v1["status_code"], 0);
    let spans = collector.wait_for(&t2, 1);
    let grpc = server_span(&spans, "inference.GRPCInferenceService/ModelInfer", &p2);
    assert_eq!(grpc["attributes"]["rpc.grpc.status_code"], 8);
    assert_eq!(grpc["attributes"]["pixguard.outcome"], "overloaded");
    // The holder was not sampled (ratio 0, no traceparent): these two are all.
    assert_eq!(collector.all().len(), 2);
}

#[test]
fn an_export_the_collector_turns_away_is_sent_again_when_the_specification_says_to() {
    let Some(python) = python("the traces test (opentelemetry-proto)") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let txs = transactions(2, 98);
    // A collector that turns the first `count` exports away as `kind`, and a server that traces
    // every request to it over `transport`.
    let refusing = |transport: &str, count: &str, kind: &str| {
        let collector = Collector::start_with(&python, &["--refuse", count, "--refuse-with", kind]);
        let (endpoint, protocol) = match transport {
            "grpc" => (collector.endpoint(), "protocol=grpc"),
            _ => (
                format!("{}/v1/traces", collector.http_base()),
                "protocol=http/protobuf",
            ),
        };
        let server = traced_server(
            &endpoint,
            &[protocol, "sample_ratio=1", "export_interval_ms=50"],
        );
        (collector, server)
    };
    let score = |server: &Server, tx: &Value| {
        let answer = runtime.block_on(http.post(server.url("/v1/score")).json(tx).send());
        assert_eq!(answer.unwrap().status(), 200);
    };
    // A collector restarting: UNAVAILABLE, or 503 with Retry-After: 0, twice. The export is sent
    // a third time, and its spans arrive; none is counted failed.
    for transport in ["grpc", "http"] {
        let (collector, server) = refusing(transport, "2", "unavailable");
        score(&server, &txs[0]);
        let text = spans_counted(&runtime, &http, &server, "exported", 3.0);
        assert_eq!(
            metric(&text, "pixguard_trace_spans_total{outcome=\"failed\"}"),
            0.0
        );
        assert_eq!(collector.refused(), [transport, transport]);
        assert_eq!(collector.all().len(), 3);
        assert_eq!(metric(&text, "pixguard_trace_export_retries_total"), 2.0);
    }
    // A collector out of room that says when to come back: RESOURCE_EXHAUSTED with a RetryInfo
    // detail (0.2 s), or 429 with Retry-After. Sent again after it, as for UNAVAILABLE.
    for transport in ["grpc", "http"] {
        let (collector, server) = refusing(transport, "1", "exhausted");
        score(&server, &txs[0]);
        let text = spans_counted(&runtime, &http, &server, "exported", 3.0);
        assert_eq!(collector.refused(), [transport]);
        assert_eq!(metric(&text, "pixguard_trace_export_retries_total"), 1.0);
    }
    // A request the collector calls invalid, or RESOURCE_EXHAUSTED without saying when, is not
    // sent again: its spans fail at once, and the next export goes through.
    for (transport, kind) in [
        ("grpc", "invalid"),
        ("http", "invalid"),
        ("grpc", "exhausted-bare"),
    ] {
        let (collector, server) = refusing(transport, "1", kind);
        score(&server, &txs[0]);
        spans_counted(&runtime, &http, &server, "failed", 3.0);
        score(&server, &txs[1]);
        let text = spans_counted(&runtime, &http, &server, "exported", 3.0);
        assert_eq!(collector.refused(), [transport]);
        assert_eq!(metric(&text, "pixguard_trace_export_retries_total"), 0.0);
        assert!(server.logged("traces: export failed"));
    }
}

#[test]
fn a_canarys_answer_is_traced_with_its_version_and_role() {
    let Some(python) = python("the traces test (opentelemetry-proto)") else {
        return;
    };
    let collector = Collector::start(&python);
    let endpoint = format!("traces.otlp_endpoint={}", collector.endpoint());
    // Every second request is the canary's: the first the champion's, the second the canary's.
    let server = Server::start(&[
        "--set",
        &endpoint,
        "--set",
        "traces.export_interval_ms=100",
        "--set",
        "model.canary=models/pix-fraud-challenger",
        "--set",
        "model.canary_fraction=0.5",
    ]);
    let http = reqwest::blocking::Client::new();
    let txs = transactions(2, 93);
    let mut spans = Vec::new();
    for (n, tx) in [(21, &txs[0]), (22, &txs[1])] {
        let (trace, parent, header) = caller(n, true);
        let answer = http
            .post(server.url("/v1/score"))
            .header("traceparent", &header)
            .json(tx)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200);
        let version = answer.headers()["x-model-version"]
            .to_str()
            .unwrap()
            .to_string();
        let span = server_span(&collector.wait_for(&trace, 3), "POST /v1/score", &parent);
        spans.push((version, span));
    }
    let (champion, canary) = (&spans[0], &spans[1]);
    assert_ne!(champion.0, canary.0, "two versions answered");
    assert_eq!(
        champion.1["attributes"]["pixguard.model.version"],
        champion.0.as_str()
    );
    assert!(
        champion.1["attributes"]
            .get("pixguard.model.role")
            .is_none(),
        "{}",
        champion.1
    );
    assert_eq!(
        canary.1["attributes"]["pixguard.model.version"],
        canary.0.as_str()
    );
    assert_eq!(
        canary.1["attributes"]["pixguard.model.role"], "canary",
        "{}",
        canary.1
    );
}

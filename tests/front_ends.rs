//! The same bad or refused request over /v1, OIP HTTP and OIP gRPC gets the same meaning (status
//! and code, Retry-After, the field named), and every OIP REST route answers the body the Open
//! Inference Protocol specification defines. Against the real binary.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::protocol::grpc::model_infer_request::InferInputTensor;
use pixguard::protocol::grpc::{ModelInferRequest, ModelMetadataRequest};
use serde_json::{Value, json};
use server::{Server, transactions};
use tonic::Code;

const MODEL: &str = "pix-fraud";

/// One request, in the form of each API.
struct Case {
    name: &'static str,
    v1: Option<(String, Vec<u8>)>,
    oip: (String, Vec<u8>),
    grpc: ModelInferRequest,
}

/// What each API must answer: HTTP status and code, Retry-After, the field named, gRPC code.
#[derive(Clone, Copy)]
struct Meaning {
    status: u16,
    code: &'static str,
    retry_after: Option<&'static str>,
    field: Option<&'static str>,
    /// The field /v1 names when it differs (a batch's `transactions`; OIP rows have no field).
    v1_field: Option<&'static str>,
    grpc: Code,
    /// Text the gRPC message must contain (the field, or the reason).
    grpc_names: &'static str,
}

/// The OIP fields-mode JSON body and gRPC request for one transaction.
fn oip_forms(tx: &Value, model: &str) -> (Vec<u8>, ModelInferRequest) {
    let tx: pixguard::transaction::Transaction = serde_json::from_value(tx.clone()).unwrap();
    let http = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipHttp,
        model,
        std::slice::from_ref(&tx),
        1,
        None,
    )
    .unwrap();
    let grpc = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipGrpc,
        model,
        &[tx],
        1,
        None,
    )
    .unwrap();
    let body = match http {
        pixguard::bench::requests::Bodies::Http { bodies, .. } => bodies[0].to_vec(),
        _ => unreachable!(),
    };
    (body, grpc.grpc_request(0).unwrap())
}

/// Precomputed feature rows of zeros: `rows` rows in both OIP forms.
fn precomputed(rows: usize) -> (Vec<u8>, ModelInferRequest) {
    let (nn, nc) = (27usize, 10usize);
    let body = json!({"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [rows, nn], "data": vec![0.0; rows * nn]},
        {"name": "categories", "datatype": "INT64", "shape": [rows, nc], "data": vec![0; rows * nc]},
    ]});
    let tensor = |name: &str, datatype: &str, width: usize| InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![rows as i64, width as i64],
        ..Default::default()
    };
    let grpc = ModelInferRequest {
        model_name: MODEL.into(),
        inputs: vec![
            tensor("features", "FP32", nn),
            tensor("categories", "INT64", nc),
        ],
        raw_input_contents: vec![
            vec![0u8; rows * nn * 4].into(),
            vec![0u8; rows * nc * 8].into(),
        ],
        ..Default::default()
    };
    (body.to_string().into_bytes(), grpc)
}

fn infer_path(model: &str) -> String {
    format!("/v2/models/{model}/infer")
}

async fn grpc_client(server: &Server) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap()
}

/// Sends `case` over the three APIs (with `timeout_ms` as each API's deadline) and checks `want`.
async fn check(server: &Server, case: &Case, want: &Meaning, timeout_ms: Option<u64>) {
    let client = reqwest::Client::new();
    let mut http = vec![("oip_http", &case.oip)];
    if let Some(v1) = &case.v1 {
        http.insert(0, ("v1", v1));
    }
    for (api, (path, body)) in http {
        let mut request = client.post(server.url(path)).body(body.clone());
        if let Some(ms) = timeout_ms {
            request = request.header("x-request-timeout-ms", ms.to_string());
        }
        let r = request.send().await.unwrap();
        let what = format!("{} over {api}", case.name);
        assert_eq!(r.status().as_u16(), want.status, "{what}");
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            want.retry_after,
            "{what}: Retry-After"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], want.code, "{what}: {v}");
        let field = if api == "v1" {
            want.v1_field.or(want.field)
        } else {
            want.field
        };
        assert_eq!(v["field"].as_str(), field, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    let mut request = tonic::Request::new(case.grpc.clone());
    if let Some(ms) = timeout_ms {
        request.set_timeout(Duration::from_millis(ms));
    }
    let status = grpc_client(server)
        .await
        .model_infer(request)
        .await
        .expect_err(case.name);
    assert_eq!(
        status.code(),
        want.grpc,
        "{} over gRPC: {status:?}",
        case.name
    );
    assert!(
        status.message().contains(want.grpc_names),
        "{} over gRPC: {:?} lacks {:?}",
        case.name,
        status.message(),
        want.grpc_names
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_mean_the_same_on_every_api() {
    let server = Server::start(&["--set", "server.max_transactions_per_request=3"]);
    let valid = transactions(1, 71).remove(0);
    let mut negative = valid.clone();
    negative["amount_cents"] = json!(-500);
    let (oip_negative, grpc_negative) = oip_forms(&negative, MODEL);
    let (oip_four, grpc_four) = precomputed(4);
    let (oip_valid, mut grpc_unknown) = oip_forms(&valid, MODEL);
    grpc_unknown.model_name = "no-such-model".into();
    let mut grpc_unparsed = grpc_four.clone();
    grpc_unparsed.raw_input_contents.pop();

    let cases = [
        (
            Case {
                name: "a negative amount",
                v1: Some(("/v1/score".into(), negative.to_string().into_bytes())),
                oip: (infer_path(MODEL), oip_negative),
                grpc: grpc_negative,
            },
            Meaning {
                status: 422,
                code: "invalid_field",
                retry_after: None,
                field: Some("amount_cents"),
                v1_field: None,
                grpc: Code::InvalidArgument,
                grpc_names: "amount_cents",
            },
        ),
        (
            Case {
                name: "too many rows",
                v1: Some((
                    "/v1/score".into(),
                    json!({"transactions": [&valid, &valid, &valid, &valid]})
                        .to_string()
                        .into_bytes(),
                )),
                oip: (infer_path(MODEL), oip_four),
                grpc: grpc_four,
            },
            Meaning {
                status: 413,
                code: "too_many_transactions",
                retry_after: None,
                field: None,
                v1_field: Some("transactions"),
                grpc: Code::InvalidArgument,
                grpc_names: "batch-size must be <= 3",
            },
        ),
        (
            Case {
                name: "an unknown model",
                v1: None,
                oip: (infer_path("no-such-model"), oip_valid.clone()),
                grpc: grpc_unknown,
            },
            Meaning {
                status: 404,
                code: "unknown_model",
                retry_after: None,
                field: None,
                v1_field: None,
                grpc: Code::NotFound,
                grpc_names: "no-such-model",
            },
        ),
    ];
    for (case, want) in &cases {
        check(&server, case, want, None).await;
    }
    // Not JSON: the same on both HTTP APIs; gRPC framing that does not add up is its malformed case.
    let client = reqwest::Client::new();
    for path in ["/v1/score".to_string(), infer_path(MODEL)] {
        let r = client
            .post(server.url(&path))
            .body("{\"inputs\": [")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "invalid_json",
            "{path}"
        );
    }
    let status = grpc_client(&server)
        .await
        .model_infer(grpc_unparsed)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("raw_input_contents"),
        "{status:?}"
    );
    let metrics = server::metrics_text(&reqwest::Client::new(), &server).await;
    for api in ["v1", "oip_http", "oip_grpc"] {
        let sample = format!("pixguard_responses_total{{api=\"{api}\",code=\"invalid_field\"}} 1");
        assert!(metrics.contains(&sample), "{sample} missing:\n{metrics}");
    }
}

/// Starts `count` /v1 requests that hold the slow worker, and waits until they are in flight.
async fn occupy(server: &Server, count: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    let body = transactions(1, 5).remove(0).to_string();
    let handles = (0..count)
        .map(|_| {
            let (url, body) = (server.url("/v1/score"), body.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_mean_the_same_on_every_api_and_the_spec_bodies_hold() {
    // One worker that takes 400 ms a batch, two requests in flight at most.
    let server = Server::start(&[
        "--set",
        "engine.test_worker_delay_us=400000",
        "--set",
        "server.max_concurrent_requests=2",
    ]);
    spec_bodies(&server).await;
    let valid = transactions(1, 72).remove(0);
    let (oip, grpc) = oip_forms(&valid, MODEL);
    let case = Case {
        name: "a valid transaction",
        v1: Some(("/v1/score".into(), valid.to_string().into_bytes())),
        oip: (infer_path(MODEL), oip),
        grpc,
    };
    let overloaded = Meaning {
        status: 429,
        code: "overloaded",
        retry_after: Some("1"),
        field: None,
        v1_field: None,
        grpc: Code::ResourceExhausted,
        grpc_names: "max_concurrent_requests",
    };
    let late = Meaning {
        status: 504,
        code: "deadline_exceeded",
        retry_after: None,
        field: None,
        v1_field: None,
        grpc: Code::DeadlineExceeded,
        grpc_names: "deadline",
    };
    // Two requests hold both admission slots: a third is refused at once on any API.
    let holders = occupy(&server, 2).await;
    check(&server, &case, &overloaded, None).await;
    for h in holders {
        assert_eq!(h.await.unwrap(), 200);
    }
    // One holds the worker: a request with a 100 ms deadline waits in the queue past it. Each API
    // in turn, so that only one of them holds the second slot.
    for api in ["v1", "oip_http", "oip_grpc"] {
        let holder = occupy(&server, 1).await;
        let one = Case {
            name: api,
            v1: (api == "v1").then(|| case.v1.clone()).flatten(),
            oip: case.oip.clone(),
            grpc: case.grpc.clone(),
        };
        match api {
            "v1" => check_http_only(&server, one.v1.as_ref().unwrap(), &late, 100).await,
            "oip_http" => check_http_only(&server, &one.oip, &late, 100).await,
            _ => {
                let mut request = tonic::Request::new(one.grpc.clone());
                request.set_timeout(Duration::from_millis(100));
                let status = grpc_client(&server)
                    .await
                    .model_infer(request)
                    .await
                    .unwrap_err();
                // The server answers DEADLINE_EXCEEDED a little before the deadline; on a loaded
                // machine tonic's client may still end the call itself (CANCELLED) first, so the
                // server's own account of the call is what is checked.
                assert!(
                    matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                    "{status:?}"
                );
                let text = server::metrics_text(&reqwest::Client::new(), &server).await;
                assert_eq!(
                    server::metric(
                        &text,
                        "pixguard_responses_total{api=\"oip_grpc\",code=\"deadline_exceeded\"}"
                    ),
                    1.0,
                    "{text}"
                );
            }
        }
        for h in holder {
            assert_eq!(h.await.unwrap(), 200);
        }
    }
}

async fn check_http_only(
    server: &Server,
    (path, body): &(String, Vec<u8>),
    want: &Meaning,
    ms: u64,
) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .header("x-request-timeout-ms", ms.to_string())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), want.status, "{path}");
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        want.retry_after
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        want.code,
        "{path}"
    );
}

/// Exactly the keys `keys`, each of the JSON type the specification gives.
/// A key of a specification object and the check of its JSON type.
type Key<'a> = (&'a str, fn(&Value) -> bool);

fn shape(what: &str, v: &Value, keys: &[Key]) {
    let object = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
    want.sort_unstable();
    assert_eq!(names, want, "{what}: {v}");
    for (k, is) in keys {
        assert!(is(&v[*k]), "{what}: {k} has the wrong type: {v}");
    }
}

fn strings(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

fn numbers(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_i64))
}

fn metadata_tensors(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(|t| {
            shape(
                "$metadata_tensor",
                t,
                &[
                    ("name", Value::is_string),
                    ("datatype", Value::is_string),
                    ("shape", numbers),
                ],
            );
            true
        })
    })
}

/// Every OIP REST route against the specification's JSON objects (`$live_server_response`, …).
async fn spec_bodies(server: &Server) {
    let get = |path: &str| {
        let url = server.url(path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = get("/v2/health/live").await;
    assert_eq!(status, 200);
    shape("$live_server_response", &v, &[("live", Value::is_boolean)]);
    assert_eq!(v["live"], true);
    let (status, v) = get("/v2/health/ready").await;
    assert_eq!(status, 200);
    shape(
        "$ready_server_response",
        &v,
        &[("ready", Value::is_boolean)],
    );
    assert_eq!(v["ready"], true);
    let (_, v) = get("/v2").await;
    shape(
        "$metadata_server_response",
        &v,
        &[
            ("name", Value::is_string),
            ("version", Value::is_string),
            ("extensions", strings),
        ],
    );
    let (status, meta) = get(&format!("/v2/models/{MODEL}")).await;
    assert_eq!(status, 200);
    shape(
        "$metadata_model_response",
        &meta,
        &[
            ("name", Value::is_string),
            ("versions", strings),
            ("platform", Value::is_string),
            ("inputs", metadata_tensors),
            ("outputs", metadata_tensors),
        ],
    );
    let version = meta["versions"][0].as_str().unwrap().to_string();
    for path in [
        format!("/v2/models/{MODEL}/ready"),
        format!("/v2/models/{MODEL}/versions/{version}/ready"),
    ] {
        let (status, v) = get(&path).await;
        assert_eq!(status, 200, "{path}");
        shape(
            "$ready_model_response",
            &v,
            &[("name", Value::is_string), ("ready", Value::is_boolean)],
        );
        assert_eq!(v, json!({"name": MODEL, "ready": true}));
    }
    let (_, versioned) = get(&format!("/v2/models/{MODEL}/versions/{version}")).await;
    assert_eq!(versioned, meta);
    for path in [
        "/v2/models/no-such-model".to_string(),
        format!("/v2/models/{MODEL}/versions/0.0.0-none"),
        "/v2/models/no-such-model/ready".to_string(),
    ] {
        let (status, v) = get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            v["error"].is_string(),
            "$metadata_model_error_response: {v}"
        );
    }
    // `$inference_response`, with the request's id; an unknown output is refused before compute.
    let valid = transactions(1, 73).remove(0);
    let (body, _) = oip_forms(&valid, MODEL);
    // Edited as text: the bench writes NaN literals for absent floats, as tritonclient does.
    let text = String::from_utf8(body).unwrap();
    let with_id = format!("{{\"id\":\"req-42\",{}", &text[1..]);
    let r = reqwest::Client::new()
        .post(server.url(&infer_path(MODEL)))
        .body(with_id.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    shape(
        "$inference_response",
        &v,
        &[
            ("model_name", Value::is_string),
            ("model_version", Value::is_string),
            ("id", Value::is_string),
            ("outputs", Value::is_array),
        ],
    );
    assert_eq!(v["id"], "req-42");
    for output in v["outputs"].as_array().unwrap() {
        shape(
            "$response_output",
            output,
            &[
                ("name", Value::is_string),
                ("shape", numbers),
                ("datatype", Value::is_string),
                ("data", Value::is_array),
            ],
        );
    }
    let unknown_output = format!(
        "{},\"outputs\":[{{\"name\":\"attention\"}}]}}",
        &with_id[..with_id.len() - 1]
    );
    let before = rows_scored(server).await;
    let r = reqwest::Client::new()
        .post(server.url(&infer_path(MODEL)))
        .body(unknown_output)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown output 'attention'"),
        "{v}"
    );
    assert_eq!(rows_scored(server).await, before, "refused before compute");
    // gRPC metadata lists the same tensors.
    let grpc = grpc_client(server)
        .await
        .model_metadata(ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = grpc.inputs.iter().map(|t| t.name.as_str()).collect();
    let http: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str_name())
        .collect();
    assert_eq!(names, http);
}

trait Named {
    fn as_str_name(&self) -> &str;
}

impl Named for Value {
    fn as_str_name(&self) -> &str {
        self["name"].as_str().unwrap_or_default()
    }
}

async fn rows_scored(server: &Server) -> f64 {
    let text = server::metrics_text(&reqwest::Client::new(), server).await;
    server::metric(&text, "pixguard_rows_scored_total")
}

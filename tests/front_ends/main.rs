//! The same bad or refused request over /v1, OIP HTTP and OIP gRPC gets the same meaning (status
//! and code, Retry-After, the field named) — bad requests here, refusals under load and past their
//! deadline in `refusals` — and every OIP REST route answers the body the Open Inference Protocol
//! specification defines (`spec`); compressed bodies on both HTTP APIs (`encoding`); the gRPC
//! health checking protocol (`health`); slow and idle HTTP connections closed (`connections`), and
//! gRPC connections ended by their preface, idle and age limits (`grpc_connections`); spans of
//! traced requests exported to an OTLP receiver (`traces`).
//! Against the real binary.

#[path = "../common/child.rs"]
mod child;
#[path = "../common/otlp.rs"]
mod otlp;
#[path = "../common/registry.rs"]
mod registry;
#[path = "../common/server.rs"]
mod server;

mod connections;
mod encoding;
mod grpc_connections;
mod health;
mod reflection;
mod refusals;
mod spec;
mod traces;

use std::time::Duration;

use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::protocol::grpc::model_infer_request::InferInputTensor;
use pixguard::protocol::grpc::{ModelInferRequest, ModelMetadataRequest};
use serde_json::{Value, json};
use server::{Server, transactions};
use tonic::Code;

const MODEL: &str = "pix-fraud";

/// Runs a Python script that prints one JSON object, and reads it; its stderr when it fails.
fn python_json(command: &mut std::process::Command) -> Value {
    let out = command.output().expect("run the Python script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

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

/// A connected channel to the server's gRPC port, for any service's client.
async fn grpc_channel(server: &Server) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_address()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A `ModelInfer` call opened by hand over its own HTTP/2 connection, its head sent and its
/// message not: the caller sends the body when (and as) it likes. `grpc-timeout` when given.
async fn raw_infer_call(
    server: &Server,
    timeout: Option<&str>,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let tcp = tokio::net::TcpStream::connect(server.grpc_address())
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut call = axum::http::Request::post(format!(
        "http://{}/inference.GRPCInferenceService/ModelInfer",
        server.grpc_address()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(t) = timeout {
        call = call.header("grpc-timeout", t);
    }
    client.send_request(call.body(()).unwrap(), false).unwrap()
}

/// Answers `pixguard_responses_total` with this API and code had counted, now.
async fn responses(server: &Server, api: &str, code: &str) -> f64 {
    let text = server::metrics_text(&reqwest::Client::new(), server).await;
    server::metric(
        &text,
        &format!("pixguard_responses_total{{api=\"{api}\",code=\"{code}\"}}"),
    )
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
    // A deadline header that is not a whole number of milliseconds is refused, not ignored.
    for (path, body) in [
        ("/v1/score".to_string(), valid.to_string().into_bytes()),
        (infer_path(MODEL), oip_valid.clone()),
    ] {
        for (bad, reason) in [
            ("abc", "is not a whole number"),
            ("-5", "is not a whole number"),
            ("1.5", "is not a whole number"),
            ("", "is not a whole number"),
            ("99999999999999999999", "is too large"),
        ] {
            let r = client
                .post(server.url(&path))
                .header("x-request-timeout-ms", bad)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{path} {bad:?}");
            let v = r.json::<Value>().await.unwrap();
            assert_eq!(v["code"], "malformed_request", "{path} {bad:?}");
            let error = v["error"].as_str().unwrap();
            assert!(
                error.starts_with("x-request-timeout-ms") && error.contains(reason),
                "{path} {bad:?}: {error}"
            );
        }
    }
    // A count out of range: one reason on every API (serde's "expected u32" on /v1 used to differ
    // from OIP's, and both from pixguard batch's).
    let field = "history.payer_tx_1h";
    let mut v1 = valid.clone();
    v1["history"]["payer_tx_1h"] = json!(-2);
    let mut oip: Value = serde_json::from_slice(&oip_valid).unwrap();
    for input in oip["inputs"].as_array_mut().unwrap() {
        if input["name"] == field {
            input["data"] = json!([-2]);
        }
    }
    let (_, mut grpc) = oip_forms(&valid, MODEL);
    let at = grpc.inputs.iter().position(|i| i.name == field).unwrap();
    assert_eq!(grpc.inputs[at].datatype, "INT64");
    grpc.raw_input_contents[at] = (-2i64).to_le_bytes().to_vec().into();
    let mut said = vec![];
    for (path, body) in [
        ("/v1/score".to_string(), v1.to_string()),
        (infer_path(MODEL), oip.to_string()),
    ] {
        let r = client
            .post(server.url(&path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{path}");
        let v = r.json::<Value>().await.unwrap();
        assert_eq!(v["field"], field, "{path}: {v}");
        said.push(v["error"].as_str().unwrap().to_string());
    }
    let status = grpc_client(&server)
        .await
        .model_infer(grpc)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let reason = said[0].strip_prefix(&format!("{field}: ")).unwrap();
    assert!(reason.contains("-2"), "{reason}");
    assert!(
        said[1].ends_with(reason),
        "OIP HTTP {:?} vs /v1 {reason:?}",
        said[1]
    );
    assert!(
        status.message().ends_with(reason),
        "gRPC {:?} vs /v1 {reason:?}",
        status.message()
    );

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
    // Two invalid_field requests per API: the negative amount and the count out of range.
    for api in ["v1", "oip_http", "oip_grpc"] {
        let sample = format!("pixguard_responses_total{{api=\"{api}\",code=\"invalid_field\"}} 2");
        assert!(metrics.contains(&sample), "{sample} missing:\n{metrics}");
    }
}

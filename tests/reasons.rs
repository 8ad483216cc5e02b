//! Reason codes: the engine's reasons for the golden rows against the PyTorch float64 reference's
//! (`models/train/explain.py` stored them in golden.jsonl), and reasons on held and rejected
//! answers — and on any answer that asks — over /v1, OIP HTTP and OIP gRPC, against the real binary.

#[path = "common/child.rs"]
mod child;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use pixguard::config::EngineConfig;
use pixguard::engine::{Engine, Metrics};
use pixguard::features::FeatureExtractor;
use pixguard::model::{DcnModel, ModelPackage};
use pixguard::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use pixguard::protocol::grpc::infer_parameter::ParameterChoice;
use pixguard::protocol::grpc::{InferParameter, ModelInferRequest};
use pixguard::transaction::Transaction;
use serde_json::{Value, json};
use server::Server;

const PACKAGE: &str = "models/pix-fraud";
const MODEL: &str = "pix-fraud";

/// A golden row: the transaction, the reference score, and the reference reasons (code,
/// contribution), largest first.
struct Golden {
    transaction: Value,
    score: f64,
    reasons: Vec<(String, f64)>,
}

fn golden() -> Vec<Golden> {
    let text =
        std::fs::read_to_string(Path::new(PACKAGE).join("golden.jsonl")).expect("golden.jsonl");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("golden line is JSON");
            let reasons = v["reasons"]
                .as_array()
                .expect("golden rows carry the reference's reasons (models/train/explain.py)")
                .iter()
                .map(|r| {
                    (
                        r["code"].as_str().expect("code").to_string(),
                        r["contribution"].as_f64().expect("contribution"),
                    )
                })
                .collect();
            Golden {
                transaction: v["transaction"].clone(),
                score: v["score"].as_f64().expect("score"),
                reasons,
            }
        })
        .collect()
}

#[tokio::test]
async fn golden_reasons_match_the_pytorch_reference() {
    let package = ModelPackage::load(PACKAGE).expect("bundled package loads");
    let explanations = package.config.explanations.as_ref().expect("explanations");
    let codes: Vec<&str> = explanations
        .groups
        .iter()
        .map(|g| g.code.as_str())
        .collect();
    let rows = golden();
    let txs: Vec<Transaction> = rows
        .iter()
        .map(|g| Transaction::from_json(g.transaction.to_string().as_bytes()).unwrap())
        .collect();
    let extractor = FeatureExtractor::new(package.config.features.clone()).unwrap();
    let model = DcnModel::from_package(&package, &Device::Cpu).unwrap();
    let config = EngineConfig {
        max_batch_size: 128,
        ..EngineConfig::default()
    };
    let engine = Engine::start(&config, vec![model], Arc::new(Metrics::new().unwrap())).unwrap();
    // Every row explained, in requests of odd sizes so that batches mix requests and the
    // explanation passes are chunked.
    let mut got = Vec::new();
    for chunk in txs.chunks(77) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let scored = engine
            .score_explained(extractor.extract(chunk), deadline, Some(f64::NEG_INFINITY))
            .await
            .unwrap();
        assert_eq!(scored.reasons.len(), chunk.len());
        got.extend(scored.scores.into_iter().zip(scored.reasons));
    }
    engine.shutdown();
    let (mut same_order, mut worst) = (0, 0.0f64);
    for (k, (g, (score, reasons))) in rows.iter().zip(&got).enumerate() {
        assert!((f64::from(*score) - g.score).abs() < 1e-5, "row {k}: score");
        let reasons = reasons.as_ref().expect("every row asked for reasons");
        let mine: Vec<&str> = reasons
            .iter()
            .map(|r| codes[usize::from(r.group)])
            .collect();
        let theirs: Vec<&str> = g.reasons.iter().map(|(c, _)| c.as_str()).collect();
        if mine == theirs {
            same_order += 1;
        }
        // Contributions of the codes both give, whatever their order.
        for r in reasons {
            let code = codes[usize::from(r.group)];
            if let Some((_, c)) = g.reasons.iter().find(|(gc, _)| gc == code) {
                worst = worst.max((f64::from(r.contribution) - c).abs());
            }
        }
        assert!(
            reasons
                .windows(2)
                .all(|w| w[0].contribution >= w[1].contribution),
            "row {k}: largest first"
        );
    }
    eprintln!(
        "{same_order} of {} rows: the same codes in the same order; worst contribution \
         difference {worst:e}",
        rows.len()
    );
    assert!(
        same_order * 100 >= rows.len() * 99,
        "{same_order} of {} rows agree",
        rows.len()
    );
    assert!(worst < 1e-4, "contribution difference {worst:e}");
}

/// The reference codes of a golden row.
fn codes(g: &Golden) -> Vec<String> {
    g.reasons.iter().map(|(c, _)| c.clone()).collect()
}

/// The codes of a `[{"code", "contribution"}]` JSON array.
fn codes_of(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("reasons array")
        .iter()
        .map(|r| r["code"].as_str().expect("code").to_string())
        .collect()
}

/// The OIP HTTP body of one transaction, with request parameters.
fn oip_body(tx: &Value, parameters: Value) -> Vec<u8> {
    let tx: Transaction = serde_json::from_value(tx.clone()).unwrap();
    let bodies = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipHttp,
        MODEL,
        std::slice::from_ref(&tx),
        1,
        None,
    )
    .unwrap();
    let pixguard::bench::requests::Bodies::Http { bodies, .. } = bodies else {
        unreachable!()
    };
    let mut body: Value = serde_json::from_slice(&bodies[0]).unwrap();
    body["parameters"] = parameters;
    serde_json::to_vec(&body).unwrap()
}

fn grpc_request(tx: &Value, explain: bool) -> ModelInferRequest {
    let tx: Transaction = serde_json::from_value(tx.clone()).unwrap();
    let built = pixguard::bench::requests::build(
        pixguard::bench::requests::Api::OipGrpc,
        MODEL,
        &[tx],
        1,
        None,
    )
    .unwrap();
    let mut request = built.grpc_request(0).unwrap();
    if explain {
        request.parameters.insert(
            "explain".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            },
        );
    }
    request
}

/// POSTs a JSON body and parses the JSON answer.
async fn post(http: &reqwest::Client, url: String, body: Vec<u8>) -> Value {
    http.post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `reasons` output of an OIP JSON response, parsed.
fn oip_reasons(response: &Value) -> Value {
    let out = response["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "reasons")
        .expect("a reasons output");
    assert_eq!(out["datatype"], "BYTES");
    serde_json::from_str(out["data"][0].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_rejected_answers_carry_reasons_on_every_api() {
    let rows = golden();
    let package = ModelPackage::load(PACKAGE).unwrap();
    let hold = package.config.thresholds.hold;
    let reject = package.config.thresholds.reject;
    // Away from the thresholds, so that f32 rounding cannot move the decision.
    let rejected = rows
        .iter()
        .find(|g| g.score > reject + 0.01 && g.reasons.len() >= 2)
        .expect("a rejected golden row");
    let allowed = rows
        .iter()
        .find(|g| g.score < hold - 0.01 && !g.reasons.is_empty())
        .expect("an allowed golden row with positive contributions");
    let server = Server::start(&[]);
    let http = reqwest::Client::new();
    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap();
    for (g, explain, want) in [
        (rejected, false, Some(codes(rejected))),
        (allowed, false, None),
        (allowed, true, Some(codes(allowed))),
    ] {
        // /v1: one transaction (`?explain=true`), and a batch (`"explain": true`).
        let path = if explain {
            "/v1/score?explain=true"
        } else {
            "/v1/score"
        };
        let one = post(
            &http,
            server.url(path),
            g.transaction.to_string().into_bytes(),
        )
        .await;
        let batch = json!({"transactions": [g.transaction], "explain": explain});
        let batch = post(
            &http,
            server.url("/v1/score"),
            batch.to_string().into_bytes(),
        )
        .await;
        for answer in [&one, &batch["results"][0]] {
            match &want {
                Some(codes) => assert_eq!(&codes_of(&answer["reasons"]), codes, "{answer}"),
                None => assert!(answer.get("reasons").is_none(), "{answer}"),
            }
        }
        // OIP HTTP: the `reasons` BYTES output, `[]` when there are none.
        let response = post(
            &http,
            server.url(&format!("/v2/models/{MODEL}/infer")),
            oip_body(&g.transaction, json!({"explain": explain})),
        )
        .await;
        let reasons = oip_reasons(&response);
        assert_eq!(
            codes_of(&reasons),
            want.clone().unwrap_or_default(),
            "{response}"
        );
        // OIP gRPC: the same output as raw BYTES contents.
        let answer = grpc
            .model_infer(grpc_request(&g.transaction, explain))
            .await
            .unwrap()
            .into_inner();
        let k = answer
            .outputs
            .iter()
            .position(|o| o.name == "reasons")
            .expect("a reasons output");
        let raw = &answer.raw_output_contents[k];
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        let reasons: Value = serde_json::from_slice(&raw[4..4 + len]).unwrap();
        assert_eq!(codes_of(&reasons), want.unwrap_or_default());
    }
    // An `explain` that is not a boolean is refused, naming it, not read as false.
    let r = http
        .post(server.url(&format!("/v2/models/{MODEL}/infer")))
        .body(oip_body(&allowed.transaction, json!({"explain": "yes"})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "parameters.explain", "{body}");
    let mut request = grpc_request(&allowed.transaction, false);
    request.parameters.insert(
        "explain".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("yes".into())),
        },
    );
    let status = grpc.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("parameters.explain"),
        "{status:?}"
    );
}

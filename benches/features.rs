//! Feature extraction throughput: 1,024-row batches of synthetic transactions on one core; a
//! 1,000-transaction `/v1` request's parse and answer, and a 1,000-row Open Inference Protocol
//! request's decoding (JSON tensors and binary ones), on one thread and on two; one transaction's
//! JSON decoded from bytes by serde_json's slice reader and by `json_from_bytes`.
//!
//! `cargo bench --bench features`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pixguard::bench::requests::{self, Api, Bodies};
use pixguard::features::{FeatureBatch, FeatureExtractor, default_spec};
use pixguard::model::Decision;
use pixguard::parallel::Parallel;
use pixguard::protocol::grpc::infer::InferCall;
use pixguard::protocol::oip::{Signature, call_tensors, split_body};
use pixguard::protocol::v1::{ModelRef, ScoreResult, parse_request_with, render_batch};
use pixguard::synth::{Generator, SynthConfig};
use pixguard::transaction::{Transaction, json_from_bytes};

// The server's allocator (src/main.rs): rows allocated on the row threads are freed on the
// caller's, which glibc's malloc serialises on its arena locks, so the system allocator would
// measure a contention `serve` does not have.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn transactions(rows: u64) -> Vec<Transaction> {
    let cfg = SynthConfig {
        seed: 1,
        rows,
        fraud_rate: 0.05,
        ..SynthConfig::default()
    };
    Generator::new(cfg)
        .expect("valid config")
        .map(|r| r.transaction)
        .collect()
}

fn extract(c: &mut Criterion) {
    let txs = transactions(1_024);
    let ex = FeatureExtractor::new(default_spec()).expect("default spec is valid");
    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(txs.len() as u64));
    let mut batch = FeatureBatch::default();
    group.bench_function("extract_into/1024", |b| {
        b.iter(|| ex.extract_into(&txs, &mut batch))
    });
    group.bench_function("extract_fresh/1024", |b| b.iter(|| ex.extract(&txs)));
    let json: Vec<Vec<u8>> = txs
        .iter()
        .map(|t| serde_json::to_vec(t).expect("serialisable"))
        .collect();
    group.bench_function("parse_validate_extract/1024", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(json.len()),
            |parsed: &mut Vec<Transaction>| {
                parsed.extend(
                    json.iter()
                        .map(|j| Transaction::from_json(j).expect("valid")),
                );
                ex.extract_into(parsed, &mut batch);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A 1,000-transaction `/v1` body parsed and validated, its features extracted and its answer
/// rendered: the front end's per-row work, on the caller's thread and shared with a second.
fn v1_request(c: &mut Criterion) {
    let txs = transactions(1_000);
    let ex = FeatureExtractor::new(default_spec()).expect("default spec is valid");
    let body =
        serde_json::to_vec(&serde_json::json!({ "transactions": txs })).expect("serialisable");
    let model = ModelRef {
        name: "pix-fraud".into(),
        version: "1".into(),
    };
    let mut group = c.benchmark_group("v1_request");
    group.throughput(Throughput::Elements(txs.len() as u64));
    for threads in [1, 2] {
        let parallel = Parallel::new(threads).expect("pool");
        group.bench_function(format!("parse/{threads}"), |b| {
            b.iter(|| parse_request_with(&body, 1_000, &parallel).expect("valid"))
        });
        group.bench_function(format!("extract/{threads}"), |b| {
            b.iter(|| ex.extract_with(&txs, &parallel))
        });
        group.bench_function(format!("render/{threads}"), |b| {
            b.iter(|| {
                render_batch(txs.len(), &parallel, |row| ScoreResult {
                    end_to_end_id: txs[row].end_to_end_id.as_str(),
                    score: 0.25,
                    decision: Decision::Allow,
                    reasons: None,
                    model: &model,
                })
                .expect("renders")
            })
        });
    }
    group.finish();
}

/// A 1,000-row OIP request's field tensors decoded and validated into transactions: JSON tensors
/// (`/v2/.../infer`) from the body's bytes, and binary ones (gRPC's raw contents) from the decoded
/// message, on the caller's thread and shared with a second.
fn oip_request(c: &mut Criterion) {
    let txs = transactions(1_000);
    let build = |api| requests::build(api, "pix-fraud", &txs, txs.len(), None).expect("built");
    let Bodies::Http { bodies, .. } = build(Api::OipHttp) else {
        panic!("oip-http builds HTTP bodies")
    };
    let json = bodies[0].clone();
    let message = build(Api::OipGrpc)
        .grpc_request(0)
        .expect("a ModelInferRequest");
    let call = InferCall::from_message(&message);
    let binary = call_tensors(&call);
    let signature = Signature::new(&default_spec());
    let mut group = c.benchmark_group("oip_request");
    group.throughput(Throughput::Elements(txs.len() as u64));
    for threads in [1, 2] {
        let parallel = Parallel::new(threads).expect("pool");
        group.bench_function(format!("json/{threads}"), |b| {
            b.iter(|| {
                let (request, parts) = split_body(None, &json).expect("valid");
                signature
                    .decode_inputs_with(&request.tensors(&parts), 1_000, &parallel)
                    .expect("valid")
            })
        });
        group.bench_function(format!("binary/{threads}"), |b| {
            b.iter(|| {
                signature
                    .decode_inputs_with(&binary, 1_000, &parallel)
                    .expect("valid")
            })
        });
    }
    group.finish();
}

/// 1,024 transactions, each its own JSON document (as a Kafka message or a single `/v1` request).
fn decode(c: &mut Criterion) {
    let docs: Vec<Vec<u8>> = transactions(1_024)
        .iter()
        .map(|tx| serde_json::to_vec(tx).expect("serialisable"))
        .collect();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(docs.len() as u64));
    group.bench_function("from_slice", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| {
                    serde_json::from_slice::<Transaction>(d)
                        .expect("valid")
                        .amount_cents
                })
                .sum::<i64>()
        })
    });
    group.bench_function("json_from_bytes", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| {
                    json_from_bytes::<Transaction>(d)
                        .expect("valid")
                        .amount_cents
                })
                .sum::<i64>()
        })
    });
    group.finish();
}

criterion_group!(benches, extract, v1_request, oip_request, decode);
criterion_main!(benches);

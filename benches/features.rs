//! Feature extraction throughput: 1,024-row batches of synthetic transactions on one core.
//!
//! `cargo bench --bench features`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pixguard::features::{FeatureBatch, FeatureExtractor, default_spec};
use pixguard::synth::{Generator, SynthConfig};
use pixguard::transaction::Transaction;

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

criterion_group!(benches, extract);
criterion_main!(benches);

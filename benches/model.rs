//! Model forward on one CPU thread at batch 1 to 4096: the fused op the server uses, and the same
//! network as plain candle-nn layers. Features are extracted beforehand (they have their own bench).
//! And a GPU replica's host side per batch (`staging`): its requests' feature blocks written into
//! the upload buffer, gathered into one block first (as before) or straight from the parts.
//!
//! `cargo bench --bench model`; onnxruntime on the same batches: `benches/onnx_forward.py`.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pixguard::features::FeatureBatch;
use pixguard::model::{Runner, Scorer, staging};
use pixguard::synth::{Generator, SynthConfig};

const BATCHES: &[usize] = &[1, 8, 64, 512, 4096];

/// The bundled package on the CPU and the features of 4,096 synthetic transactions (`seed`).
fn bundled(seed: u64) -> (Scorer, FeatureBatch) {
    let scorer = Scorer::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/pix-fraud"),
        &Device::Cpu,
    )
    .expect("bundled package loads");
    let cfg = SynthConfig {
        seed,
        rows: 4096,
        fraud_rate: 0.05,
        ..SynthConfig::default()
    };
    let txs: Vec<_> = Generator::new(cfg)
        .expect("valid config")
        .map(|r| r.transaction)
        .collect();
    let features = scorer.extractor().extract(&txs);
    (scorer, features)
}

fn forward(c: &mut Criterion) {
    // One CPU thread for every path, and no per-op /proc/cpuinfo read in candle (see shared NOTES).
    // SAFETY: set before criterion or candle start any thread.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let (scorer, features) = bundled(1);
    let (nn, nc) = (features.n_numeric, features.n_categorical);

    let mut group = c.benchmark_group("model_forward");
    let mut out = vec![0.0f32; 4096];
    for &b in BATCHES {
        group.throughput(Throughput::Elements(b as u64));
        group.bench_with_input(BenchmarkId::from_parameter(b), &b, |bench, &b| {
            bench.iter(|| {
                scorer
                    .model()
                    .score_host(
                        &features.numeric[..b * nn],
                        &features.categorical[..b * nc],
                        b,
                        &mut out[..b],
                    )
                    .expect("forward")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("model_forward_unfused");
    for &b in BATCHES {
        group.throughput(Throughput::Elements(b as u64));
        let numeric =
            Tensor::from_slice(&features.numeric[..b * nn], (b, nn), &Device::Cpu).expect("tensor");
        let categorical =
            Tensor::from_slice(&features.categorical[..b * nc], (b, nc), &Device::Cpu)
                .expect("tensor");
        group.bench_with_input(BenchmarkId::from_parameter(b), &b, |bench, _| {
            bench.iter(|| {
                scorer
                    .model()
                    .forward_unfused(&numeric, &categorical)
                    .expect("forward")
            })
        });
    }
    group.finish();
}

/// The upload block of a batch made of `part_rows`-row requests, two ways.
fn stage(c: &mut Criterion) {
    let (scorer, features) = bundled(2);
    let Runner::Fused(net) = scorer.model().runner() else {
        panic!("the CPU runner is the fused pass");
    };
    let cardinalities: Vec<u32> = net
        .embeddings
        .iter()
        .map(|t| t.cardinality as u32)
        .collect();
    let (nn, nc) = (features.n_numeric, features.n_categorical);
    let mut group = c.benchmark_group("staging");
    // Peak-hour single transactions (a batch of one-row requests) and 1,000-row requests.
    for (rows, part_rows) in [(512usize, 1usize), (65_536, 1000)] {
        let parts: Vec<(Vec<f32>, Vec<u32>)> = (0..rows.div_ceil(part_rows))
            .map(|p| {
                let len = part_rows.min(rows - p * part_rows);
                let mut numeric = Vec::with_capacity(len * nn);
                let mut ids = Vec::with_capacity(len * nc);
                for r in (p * part_rows..p * part_rows + len).map(|r| r % features.rows) {
                    numeric.extend_from_slice(&features.numeric[r * nn..(r + 1) * nn]);
                    ids.extend_from_slice(&features.categorical[r * nc..(r + 1) * nc]);
                }
                (numeric, ids)
            })
            .collect();
        let borrowed = || parts.iter().map(|(n, c)| (&n[..], &c[..]));
        let mut dst = vec![0u32; rows * (nn + nc)];
        let (mut numeric, mut ids) = (Vec::new(), Vec::new());
        let label = format!("{rows}x{part_rows}");
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(BenchmarkId::new("gathered", &label), |b| {
            b.iter(|| {
                numeric.clear();
                ids.clear();
                for (n, c) in borrowed() {
                    numeric.extend_from_slice(n);
                    ids.extend_from_slice(c);
                }
                let one = std::iter::once((&numeric[..], &ids[..]));
                staging::stage(&mut dst, one, rows, rows, nn, &cardinalities).expect("staged")
            })
        });
        group.bench_function(BenchmarkId::new("direct", &label), |b| {
            b.iter(|| {
                staging::stage(&mut dst, borrowed(), rows, rows, nn, &cardinalities)
                    .expect("staged")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward, stage);
criterion_main!(benches);

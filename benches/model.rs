//! Model forward on one CPU thread at batch 1 to 4096: the fused op the server uses, and the same
//! network as plain candle-nn layers. Features are extracted beforehand (they have their own bench).
//!
//! `cargo bench --bench model`; onnxruntime on the same batches: `benches/onnx_forward.py`.

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pixguard::model::Scorer;
use pixguard::synth::{Generator, SynthConfig};

const BATCHES: &[usize] = &[1, 8, 64, 512, 4096];

fn forward(c: &mut Criterion) {
    // One CPU thread for every path, and no per-op /proc/cpuinfo read in candle (see shared NOTES).
    // SAFETY: set before criterion or candle start any thread.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let scorer = Scorer::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/pix-fraud"),
        &Device::Cpu,
    )
    .expect("bundled package loads");
    let cfg = SynthConfig {
        seed: 1,
        rows: 4096,
        fraud_rate: 0.05,
        ..SynthConfig::default()
    };
    let txs: Vec<_> = Generator::new(cfg)
        .expect("valid config")
        .map(|r| r.transaction)
        .collect();
    let features = scorer.extractor().extract(&txs);
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

criterion_group!(benches, forward);
criterion_main!(benches);

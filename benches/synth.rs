//! Synthetic traffic throughput, generating and serialising to JSONL and CSV on one core.
//!
//! `cargo bench --bench synth`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pixguard::synth::{Generator, SynthConfig, write_csv, write_jsonl};

const ROWS: u64 = 20_000;

fn generator() -> Generator {
    Generator::new(SynthConfig {
        seed: 1,
        rows: ROWS,
        ..SynthConfig::default()
    })
    .expect("valid config")
}

fn synth(c: &mut Criterion) {
    let mut group = c.benchmark_group("synth");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(20);
    let mut out = Vec::with_capacity(1 << 24);
    group.bench_function("jsonl/20000", |b| {
        b.iter(|| {
            out.clear();
            write_jsonl(generator(), &mut out).expect("in-memory write")
        })
    });
    group.bench_function("csv/20000", |b| {
        b.iter(|| {
            out.clear();
            write_csv(generator(), &mut out).expect("in-memory write")
        })
    });
    group.bench_function("generate_only/20000", |b| b.iter(|| generator().count()));
    group.finish();
}

criterion_group!(benches, synth);
criterion_main!(benches);

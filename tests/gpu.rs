//! The CUDA kernels (`kernels/dcn.cu`) against the CPU path, on a real GPU.
//!
//! Only built with `--features cuda`. Without a usable GPU each test prints why and returns, unless
//! `PIXGUARD_REQUIRE_GPU` is set (kernels/gpu-check.sh sets it), which turns that into a failure.
//! Every comparison is with `FusedDcn::run`, the CPU pass that tests/model.rs holds to the PyTorch
//! float64 reference; the networks are random so that each kernel is checked on its own.
#![cfg(feature = "cuda")]

use pixguard::config::DeviceChoice;
use pixguard::model::cuda::{CudaDcn, CudaError, GpuOptions, probe};
use pixguard::model::fused::{DenseT, EmbeddingTable, FusedDcn};
use pixguard::model::{DcnModel, ModelPackage, device};

/// Largest |gpu − cpu| allowed on a probability: f32 sums in another order, no TF32.
const TOLERANCE: f32 = 2e-5;

fn gpu_or_skip(test: &str) -> bool {
    match probe(0) {
        Ok(info) => {
            eprintln!(
                "{test}: on {} (sm_{}{})",
                info.name, info.compute_capability.0, info.compute_capability.1
            );
            true
        }
        Err(e) if std::env::var_os("PIXGUARD_REQUIRE_GPU").is_some() => {
            panic!("{test}: PIXGUARD_REQUIRE_GPU is set but CUDA is unusable: {e}")
        }
        Err(e) => {
            eprintln!("skipping {test}: no usable GPU ({e})");
            false
        }
    }
}

/// xorshift64*: deterministic values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

fn dense(rng: &mut Rng, input: usize, output: usize) -> DenseT {
    // PyTorch's default init range keeps activations O(1) through the layers.
    let bound = 1.0 / (input as f32).sqrt();
    let weight: Vec<f32> = (0..input * output).map(|_| rng.uniform(bound)).collect();
    let bias = (0..output).map(|_| rng.uniform(bound)).collect();
    DenseT::from_torch(&weight, bias, input, output)
}

/// A random network: `n_numeric` numeric inputs, embeddings of (cardinality, dim), cross layers,
/// MLP widths.
fn network(
    seed: u64,
    n_numeric: usize,
    tables: &[(usize, usize)],
    cross: usize,
    mlp: &[usize],
) -> FusedDcn {
    let mut rng = Rng(seed);
    let embeddings: Vec<EmbeddingTable> = tables
        .iter()
        .map(|&(cardinality, dim)| EmbeddingTable {
            weight: (0..cardinality * dim).map(|_| rng.uniform(1.0)).collect(),
            cardinality,
            dim,
        })
        .collect();
    let d0 = n_numeric + tables.iter().map(|t| t.1).sum::<usize>();
    let cross = (0..cross).map(|_| dense(&mut rng, d0, d0)).collect();
    let mut prev = d0;
    let mlp = mlp
        .iter()
        .map(|&w| {
            let layer = dense(&mut rng, prev, w);
            prev = w;
            layer
        })
        .collect();
    let head_weight = (0..prev)
        .map(|_| rng.uniform(1.0 / (prev as f32).sqrt()))
        .collect();
    FusedDcn::new(
        n_numeric,
        embeddings,
        cross,
        mlp,
        head_weight,
        rng.uniform(0.5),
    )
}

fn inputs(seed: u64, net: &FusedDcn, rows: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng(seed);
    let numeric = (0..rows * net.n_numeric)
        .map(|_| rng.uniform(2.0))
        .collect();
    let categorical = (0..rows)
        .flat_map(|_| {
            net.embeddings
                .iter()
                .map(|t| (rng.next() % t.cardinality as u64) as u32)
                .collect::<Vec<_>>()
        })
        .collect();
    (numeric, categorical)
}

fn cpu(net: &FusedDcn, numeric: &[f32], categorical: &[u32], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows];
    net.run(numeric, categorical, rows, &mut out)
        .expect("cpu pass");
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// GPU vs CPU on `net` at each batch size.
fn check(test: &str, net: &FusedDcn, batches: &[usize]) {
    let mut gpu = CudaDcn::new(0, net, 64).expect("uploading the network");
    for &rows in batches {
        let (numeric, categorical) = inputs(rows as u64 + 1, net, rows);
        let want = cpu(net, &numeric, &categorical, rows);
        let mut got = vec![f32::NAN; rows];
        gpu.run(&numeric, &categorical, rows, &mut got)
            .expect("gpu pass");
        let diff = max_diff(&got, &want);
        eprintln!("{test}: batch {rows}: max |gpu - cpu| = {diff:e}");
        assert!(
            diff <= TOLERANCE,
            "{test}: batch {rows}: max |gpu - cpu| = {diff:e}"
        );
        // Not constant: the inputs reach the output.
        assert!(want.iter().any(|&p| (p - want[0]).abs() > 1e-3) || rows == 1);
    }
}

#[test]
fn gather_concat_and_head_sigmoid_match_the_cpu() {
    if !gpu_or_skip("gather_concat") {
        return;
    }
    // No hidden layers: the score is σ(x0 · w + b), so x0 (the gather) and the head are all there is.
    let net = network(1, 5, &[(3, 4), (1000, 8), (17, 1)], 0, &[]);
    check("gather_concat+head_sigmoid", &net, &[1, 2, 33, 1000, 4099]);
}

#[test]
fn cross_finish_matches_the_cpu() {
    if !gpu_or_skip("cross_finish") {
        return;
    }
    let net = network(2, 12, &[(50, 6), (9, 3)], 3, &[]);
    check("cross_finish", &net, &[1, 7, 256, 3001]);
}

#[test]
fn bias_relu_matches_the_cpu() {
    if !gpu_or_skip("bias_relu") {
        return;
    }
    let net = network(3, 10, &[(20, 4)], 0, &[64, 33, 16]);
    check("bias_relu", &net, &[1, 5, 512, 2050]);
}

#[test]
fn bundled_model_matches_the_cpu_and_candle_on_the_gpu() {
    if !gpu_or_skip("bundled model") {
        return;
    }
    let package = ModelPackage::load("models/pix-fraud").expect("bundled package");
    let cuda = device::select(DeviceChoice::Cuda).expect("cuda device");
    let on_gpu = DcnModel::from_package(&package, &cuda.device).expect("model on the GPU");
    let on_cpu =
        DcnModel::from_package(&package, &candle_core::Device::Cpu).expect("model on the CPU");
    let n_numeric = package.config.features.numeric.len();
    let cards: Vec<usize> = package
        .config
        .features
        .categorical
        .iter()
        .map(|f| f.cardinality())
        .collect();
    let mut rng = Rng(99);
    for rows in [1usize, 31, 512, 4097, 65_536] {
        let numeric: Vec<f32> = (0..rows * n_numeric).map(|_| rng.uniform(2.0)).collect();
        let categorical: Vec<u32> = (0..rows)
            .flat_map(|_| {
                cards
                    .iter()
                    .map(|&c| (rng.next() % c as u64) as u32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let (mut got, mut want) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
        on_gpu
            .score_host(&numeric, &categorical, rows, &mut got)
            .expect("gpu");
        on_cpu
            .score_host(&numeric, &categorical, rows, &mut want)
            .expect("cpu");
        let diff = max_diff(&got, &want);
        // Candle's generic ops on the same GPU: the path the kernels replace.
        let n = candle_core::Tensor::from_slice(&numeric, (rows, n_numeric), &cuda.device).unwrap();
        let c = candle_core::Tensor::from_slice(&categorical, (rows, cards.len()), &cuda.device)
            .unwrap();
        let candle = on_gpu
            .forward_unfused(&n, &c)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let candle_diff = max_diff(&candle, &want);
        eprintln!("bundled model, batch {rows}: kernels {diff:e}, candle {candle_diff:e}");
        assert!(diff <= TOLERANCE, "batch {rows}: kernels vs cpu {diff:e}");
        assert!(
            candle_diff <= TOLERANCE,
            "batch {rows}: candle vs cpu {candle_diff:e}"
        );
    }
}

#[test]
fn two_batches_in_flight_keep_their_own_buffers() {
    if !gpu_or_skip("pipeline") {
        return;
    }
    let net = network(4, 8, &[(30, 5), (4, 2)], 2, &[32, 16]);
    let mut gpu = CudaDcn::new(0, &net, 1024).expect("upload");
    let (na, ca) = inputs(10, &net, 700);
    let (nb, cb) = inputs(20, &net, 300);
    let a = gpu.submit(&na, &ca, 700).expect("submit a");
    assert!(gpu.has_free_slot());
    let b = gpu.submit(&nb, &cb, 300).expect("submit b");
    assert!(!gpu.has_free_slot());
    let refused = gpu.submit(&nb, &cb, 300);
    assert!(
        matches!(refused, Err(CudaError::Input(ref m)) if m.contains("in flight")),
        "{refused:?}"
    );
    let (mut out_a, mut out_b) = (vec![0.0; 700], vec![0.0; 300]);
    gpu.wait(a, &mut out_a).expect("wait a");
    gpu.wait(b, &mut out_b).expect("wait b");
    assert!(max_diff(&out_a, &cpu(&net, &na, &ca, 700)) <= TOLERANCE);
    assert!(max_diff(&out_b, &cpu(&net, &nb, &cb, 300)) <= TOLERANCE);
    // A batch larger than the buffers grows them when nothing is in flight.
    let (nc, cc) = inputs(30, &net, 5000);
    let mut out_c = vec![0.0; 5000];
    gpu.run(&nc, &cc, 5000, &mut out_c).expect("grown batch");
    assert!(gpu.capacity() >= 5000);
    assert!(max_diff(&out_c, &cpu(&net, &nc, &cc, 5000)) <= TOLERANCE);
}

#[test]
fn cuda_graphs_give_the_direct_launches_scores_at_every_bucket() {
    if !gpu_or_skip("graphs") {
        return;
    }
    let net = network(4, 8, &[(30, 5), (4, 2)], 2, &[32, 16]);
    let options = GpuOptions { graphs: true };
    let mut gpu = CudaDcn::with_options(0, &net, 1024, options).expect("upload");
    assert!(gpu.graphs_on(), "every bucket captured at upload");
    // Exact buckets, padded ones, both slots in turn, and a batch past the capacity (which grows
    // the buffers and captures again).
    for rows in [1, 2, 3, 5, 64, 100, 700, 1023, 1024, 1500, 1] {
        let (numeric, categorical) = inputs(rows as u64, &net, rows);
        let mut out = vec![0.0; rows];
        gpu.run(&numeric, &categorical, rows, &mut out)
            .unwrap_or_else(|e| panic!("batch {rows}: {e}"));
        let diff = max_diff(&out, &cpu(&net, &numeric, &categorical, rows));
        eprintln!("graphs, batch {rows}: {diff:e}");
        assert!(diff <= TOLERANCE, "batch {rows}: graphs vs cpu {diff:e}");
    }
    assert!(gpu.graphs_on(), "no capture failed");
    assert!(gpu.capacity() >= 1500);
    // Two padded batches in flight at once, from parts (as the engine submits them).
    let (na, ca) = inputs(40, &net, 300);
    let (nb, cb) = inputs(41, &net, 5);
    let nn = net.n_numeric;
    let nc = net.embeddings.len();
    let parts = [
        (&na[..100 * nn], &ca[..100 * nc]),
        (&na[100 * nn..], &ca[100 * nc..]),
    ];
    let a = gpu.submit_parts(parts, 300).expect("submit a");
    let b = gpu.submit(&nb, &cb, 5).expect("submit b");
    let (mut out_a, mut out_b) = (vec![0.0; 300], vec![0.0; 5]);
    gpu.wait(a, &mut out_a).expect("wait a");
    gpu.wait(b, &mut out_b).expect("wait b");
    assert!(max_diff(&out_a, &cpu(&net, &na, &ca, 300)) <= TOLERANCE);
    assert!(max_diff(&out_b, &cpu(&net, &nb, &cb, 5)) <= TOLERANCE);
}

#[test]
fn an_id_outside_its_table_is_an_error_not_a_read_past_it() {
    if !gpu_or_skip("bounds") {
        return;
    }
    let net = network(5, 3, &[(10, 2), (5, 2)], 1, &[8]);
    let mut gpu = CudaDcn::new(0, &net, 16).expect("upload");
    let numeric = vec![0.5f32; 6];
    let categorical = vec![1u32, 2, 3, 5];
    let mut out = vec![0.0; 2];
    let err = gpu
        .run(&numeric, &categorical, 2, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("categorical column 1 has index 5"), "{err}");
    // The pipeline is still usable afterwards.
    gpu.run(&numeric, &[1, 2, 3, 4], 2, &mut out)
        .expect("valid batch after a refused one");
    assert!(max_diff(&out, &cpu(&net, &numeric, &[1, 2, 3, 4], 2)) <= TOLERANCE);
}

/// Needs no GPU: which errors mark a replica as broken (liveness then fails and the pod restarts).
#[test]
fn only_sticky_driver_errors_break_a_replica() {
    use candle_core::cuda_backend::cudarc::driver::{DriverError, sys::CUresult};
    for sticky in [
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
        CUresult::CUDA_ERROR_ASSERT,
        CUresult::CUDA_ERROR_LAUNCH_FAILED,
        CUresult::CUDA_ERROR_ECC_UNCORRECTABLE,
    ] {
        assert!(
            CudaError::Driver(DriverError(sticky)).is_sticky(),
            "{sticky:?}"
        );
    }
    for passing in [
        CUresult::CUDA_ERROR_OUT_OF_MEMORY,
        CUresult::CUDA_ERROR_INVALID_VALUE,
        CUresult::CUDA_ERROR_NOT_READY,
    ] {
        assert!(
            !CudaError::Driver(DriverError(passing)).is_sticky(),
            "{passing:?}"
        );
    }
    assert!(!CudaError::Input("categorical column 0 has index 9".into()).is_sticky());
}

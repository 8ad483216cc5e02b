//! The forward pass on the device: cuBLAS for the products, pixguard's own kernels
//! (`kernels/dcn.cu`) for the gathers, the cross-layer updates, bias + ReLU and the head, all
//! queued on the compute stream over one slot's input.

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::{CudaDcn, CudaError, cudarc};

/// The kernels of `kernels/dcn.cu`, compiled to PTX by the build script.
pub(super) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/dcn.ptx"));
/// Threads per block for the element-wise kernels and the head (a multiple of the warp size).
const BLOCK: u32 = 256;

/// One dense layer on the device: `W^T` `[in, out]` row-major, bias `[out]`.
pub(super) struct DeviceDense {
    pub(super) weight_t: CudaSlice<f32>,
    pub(super) bias: CudaSlice<f32>,
    pub(super) input: usize,
    pub(super) output: usize,
}

/// The kernels of `kernels/dcn.cu`, loaded once.
pub(super) struct Kernels {
    pub(super) gather_concat: CudaFunction,
    pub(super) cross_finish: CudaFunction,
    pub(super) bias_relu: CudaFunction,
    pub(super) head_sigmoid: CudaFunction,
}

impl CudaDcn {
    /// Queues the forward of slot `index`'s input on the compute stream.
    pub(super) fn forward(&mut self, index: usize, rows: usize) -> Result<(), CudaError> {
        let stream = self.compute.clone();
        let n = to_i32(rows, "batch rows")?;
        let width = to_i32(self.width, "input width")?;
        let (nn, nc) = (
            to_i32(self.n_numeric, "numeric features")?,
            to_i32(self.cardinalities.len(), "categorical features")?,
        );
        let slot = &self.slots[index];
        // SAFETY: argument types and order match `gather_concat` in kernels/dcn.cu; `x0` holds
        // rows × width floats and `input` rows × (nn + nc) words.
        unsafe {
            stream
                .launch_builder(&self.kernels.gather_concat)
                .arg(&slot.input)
                .arg(&n)
                .arg(&nn)
                .arg(&nc)
                .arg(&self.tables)
                .arg(&self.meta)
                .arg(&width)
                .arg(&mut self.x0)
                .launch(elementwise(rows * self.width))?;
        }
        // x_l lives in x0 (l = 0) or in one of the two activation buffers; the gemm writes the
        // other one, which the fused kernel then turns into x_{l+1}.
        let mut current: Option<usize> = None;
        for layer in &self.cross {
            let target = current.map_or(0, |c| 1 - c);
            let (src, dst) = split(&self.x0, &mut self.act, current, target);
            gemm(&self.blas, layer, src, dst, rows)?;
            let (xl, t) = split(&self.x0, &mut self.act, current, target);
            // SAFETY: matches `cross_finish`; every buffer holds rows × width floats.
            unsafe {
                stream
                    .launch_builder(&self.kernels.cross_finish)
                    .arg(&self.x0)
                    .arg(xl)
                    .arg(t)
                    .arg(&layer.bias)
                    .arg(&n)
                    .arg(&width)
                    .launch(elementwise(rows * layer.output))?;
            }
            current = Some(target);
        }
        let mut last_width = self.width;
        for layer in &self.mlp {
            let target = current.map_or(0, |c| 1 - c);
            let (src, dst) = split(&self.x0, &mut self.act, current, target);
            gemm(&self.blas, layer, src, dst, rows)?;
            let out_width = to_i32(layer.output, "layer width")?;
            // SAFETY: matches `bias_relu`; the buffer holds rows × output floats.
            unsafe {
                stream
                    .launch_builder(&self.kernels.bias_relu)
                    .arg(&mut self.act[target])
                    .arg(&layer.bias)
                    .arg(&n)
                    .arg(&out_width)
                    .launch(elementwise(rows * layer.output))?;
            }
            current = Some(target);
            last_width = layer.output;
        }
        let h = match current {
            Some(c) => &self.act[c],
            None => &self.x0,
        };
        let last_width = to_i32(last_width, "head width")?;
        let threads = (rows as u64) * 32;
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(u64::from(BLOCK)) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let scores = &mut self.slots[index].scores;
        // SAFETY: matches `head_sigmoid`; `h` holds rows × last_width floats, `scores` rows.
        unsafe {
            stream
                .launch_builder(&self.kernels.head_sigmoid)
                .arg(h)
                .arg(&self.head_weight)
                .arg(&self.head_bias)
                .arg(&n)
                .arg(&last_width)
                .arg(scores)
                .launch(cfg)?;
        }
        Ok(())
    }
}

/// (source, target) of a layer: the source is x0 before the first layer, then an activation buffer.
fn split<'a>(
    x0: &'a CudaSlice<f32>,
    act: &'a mut [CudaSlice<f32>; 2],
    current: Option<usize>,
    target: usize,
) -> (&'a CudaSlice<f32>, &'a mut CudaSlice<f32>) {
    let [a, b] = act;
    match (current, target) {
        (None, 0) => (x0, a),
        (None, _) => (x0, b),
        (Some(_), 0) => (b, a),
        (Some(_), _) => (a, b),
    }
}

/// `dst[rows × out] = src[rows × in] · W^T` through cuBLAS. cuBLAS is column-major: a row-major
/// `[r, c]` matrix is its column-major transpose, so `dst^T = (W^T)^T · src^T` needs no transposes.
fn gemm(
    blas: &CudaBlas,
    layer: &DeviceDense,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    rows: usize,
) -> Result<(), CudaError> {
    let (m, k) = (
        to_i32(layer.output, "layer width")?,
        to_i32(layer.input, "layer width")?,
    );
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m,
        n: to_i32(rows, "batch rows")?,
        k,
        alpha: 1.0f32,
        lda: m,
        ldb: k,
        beta: 0.0f32,
        ldc: m,
    };
    // SAFETY: W^T is [k, m] row-major (= m × k column-major, ld m), src holds rows × k floats
    // (k × rows column-major, ld k), dst holds at least rows × m floats.
    unsafe { blas.gemm(cfg, &layer.weight_t, src, dst)? };
    Ok(())
}

fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u64).div_ceil(u64::from(BLOCK)) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn to_i32(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Input(format!("{what}: {v} exceeds i32")))
}

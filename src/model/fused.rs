//! The CPU forward pass of the DCN-v2 as one Candle custom op.
//!
//! Candle's generic ops cost a kernel dispatch and a fresh allocation each (~30 per batch). Here a
//! batch is one op: rows are processed in chunks small enough that every activation stays in L2,
//! the input row is assembled in place (numeric copy + embedding gathers), each layer is one gemm
//! followed by one fused pass (bias + cross step, or bias + ReLU), and the scratch buffers are reused
//! across batches.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};

/// Rows per chunk: 128 × 256 f32 activations = 128 KiB, comfortably inside L2.
const CHUNK: usize = 256;

/// One dense layer with its weight transposed to `[in, out]` row-major, the layout gemm reads fastest.
#[derive(Debug, Clone)]
pub struct DenseT {
    /// `W^T`, `[input, output]` row-major.
    pub weight_t: Vec<f32>,
    /// Bias, `[output]`.
    pub bias: Vec<f32>,
    /// Input width.
    pub input: usize,
    /// Output width.
    pub output: usize,
}

impl DenseT {
    /// Builds from a PyTorch-layout weight `[output, input]`.
    pub fn from_torch(weight: &[f32], bias: Vec<f32>, input: usize, output: usize) -> Self {
        let mut weight_t = vec![0.0; input * output];
        for o in 0..output {
            for i in 0..input {
                weight_t[i * output + o] = weight[o * input + i];
            }
        }
        DenseT {
            weight_t,
            bias,
            input,
            output,
        }
    }

    /// `dst[m × out] = src[m × in] · W^T` (no bias).
    fn matmul(&self, src: &[f32], dst: &mut [f32], m: usize) {
        debug_assert!(src.len() >= m * self.input && dst.len() >= m * self.output);
        // SAFETY: the slices hold at least m × input and m × output elements (checked above in debug,
        // guaranteed by the scratch sizing in release), strides describe dense row-major matrices.
        unsafe {
            gemm::gemm(
                m,
                self.output,
                self.input,
                dst.as_mut_ptr(),
                1,
                self.output as isize,
                false,
                src.as_ptr(),
                1,
                self.input as isize,
                self.weight_t.as_ptr(),
                1,
                self.output as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// An embedding table, `[cardinality, dim]` row-major.
#[derive(Debug, Clone)]
pub struct EmbeddingTable {
    /// The rows.
    pub weight: Vec<f32>,
    /// Rows in the table.
    pub cardinality: usize,
    /// Width of a row.
    pub dim: usize,
}

/// Reused activations for one chunk.
#[derive(Debug, Default)]
struct Scratch {
    x0: Vec<f32>,
    cur: Vec<f32>,
    next: Vec<f32>,
}

/// The weights of the whole network, laid out for the fused CPU pass.
#[derive(Debug)]
pub struct FusedDcn {
    /// Numeric features per row.
    pub n_numeric: usize,
    /// Embedding tables, in categorical-feature order.
    pub embeddings: Vec<EmbeddingTable>,
    /// Cross layers (`d0 → d0`).
    pub cross: Vec<DenseT>,
    /// MLP layers.
    pub mlp: Vec<DenseT>,
    /// Head weight, `[last width]`.
    pub head_weight: Vec<f32>,
    /// Head bias.
    pub head_bias: f32,
    scratch: Mutex<Scratch>,
}

impl FusedDcn {
    /// Assembles the fused network from its parts.
    pub fn new(
        n_numeric: usize,
        embeddings: Vec<EmbeddingTable>,
        cross: Vec<DenseT>,
        mlp: Vec<DenseT>,
        head_weight: Vec<f32>,
        head_bias: f32,
    ) -> Self {
        FusedDcn {
            n_numeric,
            embeddings,
            cross,
            mlp,
            head_weight,
            head_bias,
            scratch: Mutex::default(),
        }
    }

    /// Width of the assembled input row.
    pub fn input_width(&self) -> usize {
        self.n_numeric + self.embeddings.iter().map(|e| e.dim).sum::<usize>()
    }

    /// Scores `rows` rows into `out`: `numeric` is `rows × n_numeric`, `categorical` is
    /// `rows × embeddings.len()`. Fails on an index outside its embedding table.
    pub fn run(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        self.run_head(numeric, categorical, rows, out, |logit| {
            1.0 / (1.0 + (-logit).exp())
        })
    }

    /// As [`FusedDcn::run`], but the logits, before the sigmoid: reason codes compare scores that
    /// f32 probabilities cannot tell apart once the sigmoid saturates.
    pub fn run_logits(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        self.run_head(numeric, categorical, rows, out, |logit| logit)
    }

    fn run_head(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        rows: usize,
        out: &mut [f32],
        head: impl Fn(f32) -> f32,
    ) -> Result<(), String> {
        let (nn, nc, d0) = (self.n_numeric, self.embeddings.len(), self.input_width());
        if numeric.len() != rows * nn || categorical.len() != rows * nc || out.len() != rows {
            return Err(format!(
                "expected {rows}×{nn} numeric, {rows}×{nc} categorical and {rows} outputs, got {}, {} and {}",
                numeric.len(),
                categorical.len(),
                out.len()
            ));
        }
        // A poisoned lock only means another batch panicked mid-way; the buffers are plain scratch.
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        let widest = self.mlp.iter().map(|l| l.output).max().unwrap_or(0).max(d0);
        for buf in [&mut s.x0, &mut s.cur, &mut s.next] {
            if buf.len() < CHUNK * widest {
                buf.resize(CHUNK * widest, 0.0);
            }
        }
        for start in (0..rows).step_by(CHUNK) {
            let m = CHUNK.min(rows - start);
            self.assemble(
                &numeric[start * nn..(start + m) * nn],
                &categorical[start * nc..(start + m) * nc],
                m,
                &mut s.x0,
            )?;
            let h = self.layers(s, m);
            for (r, slot) in out[start..start + m].iter_mut().enumerate() {
                let row = &h[r * self.head_weight.len()..(r + 1) * self.head_weight.len()];
                *slot = head(dot(row, &self.head_weight) + self.head_bias);
            }
        }
        Ok(())
    }

    /// x0 rows: the numeric features, then each embedding row, in spec order.
    fn assemble(
        &self,
        numeric: &[f32],
        categorical: &[u32],
        m: usize,
        x0: &mut [f32],
    ) -> Result<(), String> {
        let (nn, nc, d0) = (self.n_numeric, self.embeddings.len(), self.input_width());
        for r in 0..m {
            let row = &mut x0[r * d0..(r + 1) * d0];
            row[..nn].copy_from_slice(&numeric[r * nn..(r + 1) * nn]);
            let mut at = nn;
            for (i, table) in self.embeddings.iter().enumerate() {
                let index = categorical[r * nc + i] as usize;
                if index >= table.cardinality {
                    return Err(format!(
                        "categorical column {i} has index {index}, outside its embedding table of {} rows",
                        table.cardinality
                    ));
                }
                row[at..at + table.dim]
                    .copy_from_slice(&table.weight[index * table.dim..(index + 1) * table.dim]);
                at += table.dim;
            }
        }
        Ok(())
    }

    /// Runs the cross layers and the MLP on `s.x0`; returns the last activation.
    fn layers<'a>(&self, s: &'a mut Scratch, m: usize) -> &'a [f32] {
        let d0 = self.input_width();
        // `cur` holds x_l (once l ≥ 1), `next` receives the layer output; they swap after each layer.
        let mut cur = std::mem::take(&mut s.cur);
        let mut next = std::mem::take(&mut s.next);
        let mut in_x0 = true;
        for layer in &self.cross {
            let xl: &[f32] = if in_x0 { &s.x0 } else { &cur };
            layer.matmul(xl, &mut next, m);
            let n = m * d0;
            cross_step(&mut next[..n], &s.x0[..n], &xl[..n], &layer.bias);
            std::mem::swap(&mut cur, &mut next);
            in_x0 = false;
        }
        for layer in &self.mlp {
            let src: &[f32] = if in_x0 { &s.x0 } else { &cur };
            layer.matmul(src, &mut next, m);
            bias_relu(&mut next[..m * layer.output], &layer.bias);
            std::mem::swap(&mut cur, &mut next);
            in_x0 = false;
        }
        s.cur = cur;
        s.next = next;
        if in_x0 { &s.x0 } else { &s.cur }
    }
}

/// Defines `fn $name` whose body is compiled for the widest vector unit the CPU has, chosen at
/// run time: the release build targets baseline x86-64 (SSE2), where these element-wise passes
/// ran scalar and took a fifth of the forward's time. Every variant does the same operations in
/// the same order (Rust never contracts to FMA), so the scores are identical bit for bit.
macro_rules! widest {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

widest! {
    /// The cross layer's step after its gemm, row by row: `t = x0 ⊙ (t + b) + xl`.
    fn cross_step(t: &mut [f32], x0: &[f32], xl: &[f32], bias: &[f32]) {
        let d = bias.len();
        let rows = t.chunks_exact_mut(d).zip(x0.chunks_exact(d)).zip(xl.chunks_exact(d));
        for ((t, x0), xl) in rows {
            for (((t, x0), xl), b) in t.iter_mut().zip(x0).zip(xl).zip(bias) {
                *t = x0 * (*t + b) + xl;
            }
        }
    }
}

widest! {
    /// An MLP layer's step after its gemm, row by row: `v = max(v + b, 0)`.
    fn bias_relu(v: &mut [f32], bias: &[f32]) {
        for row in v.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler keep a vector register busy.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The fused pass as a Candle op on `(numeric f32 [B, n], categorical u32 [B, c])` → scores `[B]`.
pub struct FusedDcnOp<'a>(pub &'a FusedDcn);

impl CustomOp2 for FusedDcnOp<'_> {
    fn name(&self) -> &'static str {
        "pixguard-dcn-v2-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(numeric), CpuStorage::U32(categorical)) = (s1, s2) else {
            candle_core::bail!("fused DCN takes f32 numeric and u32 categorical tensors");
        };
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("fused DCN needs contiguous inputs");
        };
        let rows = match (l1.dims(), l2.dims()) {
            ([r1, _], [r2, _]) if r1 == r2 => *r1,
            (d1, d2) => candle_core::bail!(
                "fused DCN: numeric {d1:?} and categorical {d2:?} must be [B, n] and [B, c]"
            ),
        };
        let mut out = vec![0.0f32; rows];
        self.0
            .run(&numeric[a1..b1], &categorical[a2..b2], rows, &mut out)
            .map_err(candle_core::Error::msg)?;
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2) with a few exact zeros and negatives for ReLU.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 4096) as f32 / 1024.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn the_widened_steps_equal_plain_loops_bit_for_bit() {
        // Row widths that are and are not multiples of 8 and 16 lanes, one row and many.
        for (width, rows) in [(95, 1), (95, 37), (16, 5), (7, 3), (256, 9), (128, 2)] {
            let n = width * rows;
            let (x0, xl, bias) = (values(n, 1), values(n, 2), values(width, 3));
            let t = values(n, 4);
            let mut wide = t.clone();
            cross_step(&mut wide, &x0, &xl, &bias);
            let plain: Vec<f32> = (0..n)
                .map(|i| x0[i] * (t[i] + bias[i % width]) + xl[i])
                .collect();
            assert!(
                wide.iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "cross step, width {width}"
            );
            let mut wide = t.clone();
            bias_relu(&mut wide, &bias);
            let plain: Vec<f32> = (0..n).map(|i| (t[i] + bias[i % width]).max(0.0)).collect();
            assert!(
                wide.iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "bias + ReLU, width {width}"
            );
            assert!(plain.contains(&0.0) && plain.iter().any(|v| *v > 0.0));
        }
    }
}

// pixguard's fused kernels for the DCN-v2 forward pass on the GPU.
//
// Candle's generic ops run this model as ~30 launches per batch, each reading and writing a whole
// activation (narrow, squeeze, index_select per embedding, cat, broadcast mul/add per cross layer).
// Here the matrix products stay in cuBLAS and everything between them is one kernel each:
//   gather_concat  the input block → x0 = [numeric | emb_0[id_0] | … | emb_k[id_k]]
//   cross_finish   x_{l+1} = x0 ⊙ (x_l W^T + b) + x_l, in place over the gemm output
//   bias_relu      h = max(h + b, 0), in place over the gemm output
//   head_sigmoid   score = σ(h · w + b), one warp per row
// Matrices are row-major [rows, width]. Compiled to PTX by src/build.rs for the `cuda` feature.

// The batch arrives as one block of 32-bit words, so one host→device copy moves it: first
// rows × n_num numeric features (f32 bits, already standardised on the host), then
// rows × n_cat categorical ids (u32, checked against the table sizes on the host).
// `meta` holds, per categorical column, [first float of its table in `tables`, embedding dim].
extern "C" __global__ void gather_concat(const unsigned int* __restrict__ input, int rows,
                                         int n_num, int n_cat, const float* __restrict__ tables,
                                         const int* __restrict__ meta, int width,
                                         float* __restrict__ x0) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * width) return;
    int row = (int)(i / width);
    int col = (int)(i % width);
    if (col < n_num) {
        x0[i] = __uint_as_float(input[(long long)row * n_num + col]);
        return;
    }
    const unsigned int* ids = input + (long long)rows * n_num + (long long)row * n_cat;
    int at = n_num;
    for (int c = 0; c < n_cat; ++c) {
        int dim = meta[2 * c + 1];
        if (col < at + dim) {
            x0[i] = tables[meta[2 * c] + (long long)ids[c] * dim + (col - at)];
            return;
        }
        at += dim;
    }
}

// t holds x_l W^T (the cuBLAS product); it becomes x_{l+1}.
extern "C" __global__ void cross_finish(const float* __restrict__ x0, const float* __restrict__ xl,
                                        float* __restrict__ t, const float* __restrict__ bias,
                                        int rows, int width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * width) return;
    t[i] = x0[i] * (t[i] + bias[i % width]) + xl[i];
}

extern "C" __global__ void bias_relu(float* __restrict__ h, const float* __restrict__ bias,
                                     int rows, int width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * width) return;
    h[i] = fmaxf(h[i] + bias[i % width], 0.0f);
}

// One warp per row: lanes stride the row (coalesced), then a shuffle reduction. A warp whose row is
// past the end leaves as a whole, so the full-mask shuffles below never miss a lane.
extern "C" __global__ void head_sigmoid(const float* __restrict__ h, const float* __restrict__ w,
                                        float b, int rows, int width, float* __restrict__ out) {
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const float* row = h + warp * width;
    float s = 0.0f;
    for (int k = lane; k < width; k += 32) s += row[k] * w[k];
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (lane == 0) out[warp] = 1.0f / (1.0f + expf(-(s + b)));
}

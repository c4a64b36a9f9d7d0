// RMSNorm, with and without the fused residual add. One block per row.
// Rounding follows Hugging Face's bf16 path: residual add in bf16, normalised value rounded to bf16,
// then multiplied by the bf16 weight.
// centered != 0: Cohere's LayerNorm without a bias instead — (x − mean) / √(mean of (x − mean)² + eps), times the
// weight in f32 and rounded once (CohereLayerNorm computes it all in f32).
#include "common.cuh"

// The row's normalisation of value v: inv = 1/√(…), mean 0 unless centered.
__device__ __forceinline__ bf16 normed(float v, float mean, float inv, float w, int centered) {
  return centered ? to_bf((v - mean) * inv * w) : to_bf(to_f(to_bf(v * inv)) * w);
}

// The mean (0 unless centered) and 1/√(mean square about it + eps) of row[0 … hidden), given the plain sum of squares
// `ss` (read with the row by the caller): a centered row takes two more passes, the mean's and the deviations'.
__device__ __forceinline__ float2 row_stats(const bf16* __restrict__ row, float ss, int hidden, float eps, int centered, float* scratch) {
  float mean = 0.f;
  if (centered) {
    float s = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) s += to_f(row[i]);
    mean = block_sum(s, scratch) / hidden;
    ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) { const float d = to_f(row[i]) - mean; ss += d * d; }
  }
  return make_float2(mean, rsqrtf(block_sum(ss, scratch) / hidden + eps));
}

extern "C" __global__ void rmsnorm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out, int hidden, float eps, int centered) {
  __shared__ float scratch[32];
  const bf16* row = x + (size_t)blockIdx.x * hidden;
  bf16* orow = out + (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  if (!centered)
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) { const float v = to_f(row[i]); ss += v * v; }
  const float2 st = row_stats(row, ss, hidden, eps, centered, scratch);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) orow[i] = normed(to_f(row[i]), st.x, st.y, to_f(w[i]), centered);
}

// residual = residual + x (bf16); out = rmsnorm(residual) * w (or centered: LayerNorm)
extern "C" __global__ void add_rmsnorm_bf16(const bf16* __restrict__ x, bf16* __restrict__ residual, const bf16* __restrict__ w, bf16* __restrict__ out, int hidden, float eps,
                                            int centered) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    const bf16 r = to_bf(to_f(residual[base + i]) + to_f(x[base + i]));
    residual[base + i] = r;
    const float v = to_f(r);
    ss += v * v;
  }
  // (A centered row is read back by the threads that wrote each value.)
  const float2 st = row_stats(residual + base, ss, hidden, eps, centered, scratch);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[base + i] = normed(to_f(residual[base + i]), st.x, st.y, to_f(w[i]), centered);
}

// OLMo 2 / 3 (norms after each sublayer, none before): residual = residual + rmsnorm(x) * w. As Olmo2RMSNorm
// rounds: the weight multiplies in f32 and the product is rounded to bf16 once; then HF's bf16 residual add.
extern "C" __global__ void rmsnorm_add_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ residual, int hidden, float eps) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) { float v = to_f(x[base + i]); ss += v * v; }
  const float inv = rsqrtf(block_sum(ss, scratch) / hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    residual[base + i] = to_bf(to_f(residual[base + i]) + to_f(to_bf(to_f(x[base + i]) * inv * to_f(w[i]))));
}

// OLMo 2 / 3: q_norm and k_norm span a token's whole q and k projections (all heads together), in place in the
// packed qkv row [q | k | v]; blockIdx.y 0 norms the q part (num_heads · head_dim), 1 the k part. With tensor
// parallelism each rank holds some of the heads: `sums` (null without) then holds every row's sums of squares of
// q and k added up over the ranks (qk_square_sums_f32, then an all-reduce), over `ranks` times this rank's width.
extern "C" __global__ void qk_norm_across_heads_bf16(bf16* __restrict__ qkv, const bf16* __restrict__ q_w, const bf16* __restrict__ k_w, int num_heads, int num_kv_heads, int head_dim, float eps,
                                                     const float* __restrict__ sums, int ranks) {
  __shared__ float scratch[32];
  const int q_width = num_heads * head_dim, k_width = num_kv_heads * head_dim;
  const bool is_k = blockIdx.y == 1;
  const int width = is_k ? k_width : q_width;
  bf16* x = qkv + (size_t)blockIdx.x * (q_width + 2 * k_width) + (is_k ? q_width : 0);
  const bf16* w = is_k ? k_w : q_w;
  float inv;
  if (sums != nullptr) {
    inv = rsqrtf(sums[2 * blockIdx.x + blockIdx.y] / ((float)width * ranks) + eps);
  } else {
    float ss = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) { float v = to_f(x[i]); ss += v * v; }
    inv = rsqrtf(block_sum(ss, scratch) / width + eps);
  }
  for (int i = threadIdx.x; i < width; i += blockDim.x) x[i] = to_bf(to_f(x[i]) * inv * to_f(w[i]));
}

// This rank's sums of squares of each row's q part and k part: sums[2·row + (0: q, 1: k)], for the all-reduce
// that qk_norm_across_heads_bf16 reads with tensor parallelism.
extern "C" __global__ void qk_square_sums_f32(const bf16* __restrict__ qkv, float* __restrict__ sums, int num_heads, int num_kv_heads, int head_dim) {
  __shared__ float scratch[32];
  const int q_width = num_heads * head_dim, k_width = num_kv_heads * head_dim;
  const bool is_k = blockIdx.y == 1;
  const int width = is_k ? k_width : q_width;
  const bf16* x = qkv + (size_t)blockIdx.x * (q_width + 2 * k_width) + (is_k ? q_width : 0);
  float ss = 0.f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) { float v = to_f(x[i]); ss += v * v; }
  ss = block_sum(ss, scratch);
  if (threadIdx.x == 0) sums[2 * blockIdx.x + blockIdx.y] = ss;
}

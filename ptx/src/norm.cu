// RMSNorm, with and without the fused residual add. One block per row.
// Rounding follows Hugging Face's bf16 path: residual add in bf16, normalised value rounded to bf16,
// then multiplied by the bf16 weight.
#include "common.cuh"

extern "C" __global__ void rmsnorm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out, int hidden, float eps) {
  __shared__ float scratch[32];
  const bf16* row = x + (size_t)blockIdx.x * hidden;
  bf16* orow = out + (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) { float v = to_f(row[i]); ss += v * v; }
  const float inv = rsqrtf(block_sum(ss, scratch) / hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) orow[i] = to_bf(to_f(to_bf(to_f(row[i]) * inv)) * to_f(w[i]));
}

// residual = residual + x (bf16); out = rmsnorm(residual) * w
extern "C" __global__ void add_rmsnorm_bf16(const bf16* __restrict__ x, bf16* __restrict__ residual, const bf16* __restrict__ w, bf16* __restrict__ out, int hidden, float eps) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * hidden;
  float ss = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    bf16 r = to_bf(to_f(residual[base + i]) + to_f(x[base + i]));
    residual[base + i] = r;
    float v = to_f(r);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / hidden + eps);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[base + i] = to_bf(to_f(to_bf(to_f(residual[base + i]) * inv)) * to_f(w[i]));
}

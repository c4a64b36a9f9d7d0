// Shared helpers for vbun's kernels: bf16 conversions and block reductions. Storage is bf16, math is f32.
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf(float x) { return __float2bfloat16_rn(x); }

// The 8 bf16 of a 16-byte chunk as f32 (the GEMV kernels' loads).
__device__ __forceinline__ void unpack8(const uint4 u, float (&v)[8]) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

struct SumOp { __device__ float operator()(float a, float b) const { return a + b; } static constexpr float identity = 0.f; };
struct MaxOp { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } static constexpr float identity = -INFINITY; };

// Reduction over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats; the leading barrier makes back-to-back calls safe.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const Op op;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : Op::identity;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Gemma 2's soft-capping: cap · tanh(s / cap), tanh(u) as 1 − 2 / (e^{2u} + 1); cap 0 leaves s as it is.
// Fast divisions: an IEEE one calls a slow-path subroutine, whose stack frame spills registers.
__device__ __forceinline__ float soft_cap(float s, float cap) {
  return cap > 0.f ? cap * (1.f - __fdividef(2.f, __expf(__fdividef(2.f * s, cap)) + 1.f)) : s;
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<SumOp>(v, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<MaxOp>(v, scratch); }

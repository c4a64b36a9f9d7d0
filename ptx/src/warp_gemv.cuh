// The GEMV skeleton gemv.cu and quant.cu share: one warp per output feature o (GEMV_WARPS consecutive features a
// block); the warp's 32 lanes stride over o's weight row in 16-byte chunks, GEMV_UNROLL chunks in flight per lane
// before any is used; `chunk(acc, w, c)` adds chunk c (its 16 bytes `w`) into the R rows' f32 sums; the lanes' sums
// then meet with 5 xor shuffles per row and lane 0 stores y[r, o] in bf16, for r < n.
#pragma once
#include "common.cuh"

#define GEMV_WARPS 8
#define GEMV_UNROLL 4

// The output feature of the calling warp.
__device__ __forceinline__ int gemv_feature() { return blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5); }

// The caller has left when o >= out, whole warps together: the shuffles here stay converged.
template <int R, typename Chunk>
__device__ __forceinline__ void warp_gemv(const uint4* __restrict__ wrow, int chunks, bf16* __restrict__ y, int n, int out, int o, Chunk chunk) {
  const int lane = threadIdx.x & 31;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
  for (int base = lane; base < chunks; base += 32 * GEMV_UNROLL) {
    uint4 wv[GEMV_UNROLL];
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) {
      const int c = base + u * 32;
      wv[u] = c < chunks ? wrow[c] : make_uint4(0, 0, 0, 0);
    }
    // Fully unrolled with guards (no break), so wv and acc stay in registers.
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) {
      const int c = base + u * 32;
      if (c < chunks) chunk(acc, wv[u], c);
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (r < n) {
      float s = acc[r];
#pragma unroll
      for (int m = 16; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
      if (lane == 0) y[(size_t)r * out + o] = to_bf(s);
    }
  }
}

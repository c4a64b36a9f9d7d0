// Small-batch linear layers (decode at batch ≤ 8): y[r, o] = Σ_k x[r, k] · w[o, k] for r < n ≤ 8, bf16 in
// and out, f32 sums — a GEMV that reads each weight once for all n rows. An alternative to cuBLAS for
// these shapes, chosen with VBUN_GEMV (the CUDA backend); whether it is faster is for a device to tell.
//
// One warp per output feature o (warp_gemv.cuh): the 8 warps of a block take 8 consecutive features; a warp's
// lanes stride over w's row in 16-byte chunks (8 bf16), 4 in flight per lane (a row of 1,024 is exactly one
// round), and multiply each chunk into the n rows of x, which every warp reads (a few KiB: L1/L2 hits).
//
// gemv_silu_mul_bf16 fuses SiLU-and-mul into the MLP's down projection, for n ≤ 2: x is the [n, 2·in]
// gate/up output and each input element is bf16(bf16(silu(g)) · u), exactly what silu_mul_bf16 would have
// stored. Every warp recomputes the activations it reads, which is cheap for one or two rows only.
//
// Grid ceil(out / 8) blocks of 256 threads. Requires in % 8 == 0 (16-byte chunks; rows are then 16-byte
// aligned, as the backend's allocations are).
#include "warp_gemv.cuh"

#define MAX_ROWS 8
#define MAX_ROWS_SILU 2

// The 8 inputs of chunk c of row r: plain, or silu(gate) · up rounded as silu_mul_bf16 rounds.
template <bool ACT>
__device__ __forceinline__ void load_input(const bf16* __restrict__ x, int r, int c, int in, float (&v)[8]) {
  if constexpr (!ACT) {
    unpack8(*reinterpret_cast<const uint4*>(x + (size_t)r * in + (size_t)c * 8), v);
  } else {
    float g[8], u[8];
    const bf16* row = x + (size_t)r * 2 * in;
    unpack8(*reinterpret_cast<const uint4*>(row + (size_t)c * 8), g);
    unpack8(*reinterpret_cast<const uint4*>(row + in + (size_t)c * 8), u);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = to_f(to_bf(to_f(to_bf(g[i] / (1.f + __expf(-g[i])))) * u[i]));
  }
}

template <bool ACT>
__device__ __forceinline__ void gemv(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y, int n, int in, int out) {
  constexpr int R = ACT ? MAX_ROWS_SILU : MAX_ROWS;
  const int o = gemv_feature();
  if (o >= out) return;  // whole warps leave together
  warp_gemv<R>(reinterpret_cast<const uint4*>(w + (size_t)o * in), in >> 3, y, n, out, o, [&](float (&acc)[R], const uint4 wv, int c) {
    float wf[8];
    unpack8(wv, wf);
#pragma unroll
    for (int r = 0; r < R; r++) {
      if (r < n) {
        float xf[8];
        load_input<ACT>(x, r, c, in, xf);
        float s = acc[r];
#pragma unroll
        for (int i = 0; i < 8; i++) s = fmaf(wf[i], xf[i], s);
        acc[r] = s;
      }
    }
  });
}

extern "C" __global__ void __launch_bounds__(256) gemv_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y, int n, int in, int out) {
  gemv<false>(x, w, y, n, in, out);
}

extern "C" __global__ void __launch_bounds__(256) gemv_silu_mul_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y, int n, int in, int out) {
  gemv<true>(x, w, y, n, in, out);
}

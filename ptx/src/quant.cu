// Linear layers whose weights stay packed on the GPU: GPTQ, AWQ and pack-quantized checkpoints, and FP8 (E4M3) / INT8
// ones, read into one layout (src/loader/packed-matrix.ts): words [out, in / PER] u32, each holding PER = 32 / BITS
// consecutive inputs of one output, the lowest bits first; scales and zeros [out, groups] f32 (zeros null: all 0);
// W[o, i] = scale[o, g] · (q − zero[o, g]), g being group_of[i] (GPTQ's desc_act; a null group_of: i / group_size), q
// the value's bits as an unsigned integer or (fp8) the E4M3 number they encode. Requires in % PER == 0.
//
// gemv_{int4,int8,fp8}_bf16: y[r, o] = Σ_i x[r, i] · W[o, i] for r < n ≤ 8 (decode at small batches), bf16 in and out,
// f32 sums, each packed weight read once for all rows — 4 or 8 bytes of weights per 8 inputs where a bf16 GEMV reads 16.
// One warp per output feature, 8 features a block (warp_gemv.cuh, as gemv.cu); a lane's 16-byte chunk is 4 words (32
// inputs at 4 bits, 16 at 8), 4 chunks in flight per lane. With groups by position (group_size % chunk inputs == 0) a chunk lies
// in one group: the sum per row is scale · (Σ q·x − zero · Σ x), two FMAs an input; with group_of each value is
// dequantized on its own. Requires in % (4 · PER) == 0.
//
// dequant_packed_bf16: W as bf16 [out, in], for the larger batches' cuBLAS GEMM (a scratch the backend reuses per layer).
// Thread per word, grid (out, ⌈words per row / 256⌉); each value is f32 scale · (q − zero) rounded once to bf16, what
// the CPU backend's dequantization rounds to bf16.
#include <cuda_fp16.h>
#include "warp_gemv.cuh"
#include "packed.cuh"

#define MAX_ROWS 8

template <int BITS, bool FP8>
__device__ __forceinline__ void gemv_packed(const bf16* __restrict__ x, const unsigned* __restrict__ words, const float* __restrict__ scales,
                                         const float* __restrict__ zeros, const int* __restrict__ group_of, bf16* __restrict__ y, int n, int in,
                                         int out, int num_groups, int group_size) {
  constexpr int PER = 32 / BITS, CHUNK = 4 * PER;
  const int o = gemv_feature();
  if (o >= out) return;  // whole warps leave together
  const float* srow = scales + (size_t)o * num_groups;
  const float* zrow = zeros ? zeros + (size_t)o * num_groups : nullptr;
  const uint4* wrow = reinterpret_cast<const uint4*>(words + (size_t)o * (in / PER));
  warp_gemv<MAX_ROWS>(wrow, in / CHUNK, y, n, out, o, [&](float (&acc)[MAX_ROWS], const uint4 wv, int c) {
    const unsigned wd[4] = {wv.x, wv.y, wv.z, wv.w};
    const int i0 = c * CHUNK;
    float q[CHUNK];
#pragma unroll
    for (int j = 0; j < CHUNK; j++) q[j] = word_value<BITS, FP8>(wd[j / PER], j % PER);
    if (group_of == nullptr) {
      const int g = i0 / group_size;
      const float s = srow[g], z = zrow ? zrow[g] : 0.f;
#pragma unroll
      for (int r = 0; r < MAX_ROWS; r++) {
        if (r < n) {
          float dot = 0.f, sum = 0.f;
#pragma unroll
          for (int k = 0; k < CHUNK / 8; k++) {
            float xf[8];
            unpack8(*reinterpret_cast<const uint4*>(x + (size_t)r * in + i0 + 8 * k), xf);
#pragma unroll
            for (int i = 0; i < 8; i++) {
              dot = fmaf(q[8 * k + i], xf[i], dot);
              sum += xf[i];
            }
          }
          acc[r] = fmaf(s, fmaf(-z, sum, dot), acc[r]);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < CHUNK; j++) {
        const int g = group_of[i0 + j];
        q[j] = srow[g] * (q[j] - (zrow ? zrow[g] : 0.f));
      }
#pragma unroll
      for (int r = 0; r < MAX_ROWS; r++) {
        if (r < n) {
          float s = acc[r];
#pragma unroll
          for (int k = 0; k < CHUNK / 8; k++) {
            float xf[8];
            unpack8(*reinterpret_cast<const uint4*>(x + (size_t)r * in + i0 + 8 * k), xf);
#pragma unroll
            for (int i = 0; i < 8; i++) s = fmaf(q[8 * k + i], xf[i], s);
          }
          acc[r] = s;
        }
      }
    }
  });
}

// The 8-bit kernels say 2 blocks an SM: without it ptxas capped them at 64 registers and spilled.
extern "C" __global__ void __launch_bounds__(256) gemv_int4_bf16(const bf16* __restrict__ x, const unsigned* __restrict__ words, const float* __restrict__ scales,
                                                                 const float* __restrict__ zeros, const int* __restrict__ group_of, bf16* __restrict__ y, int n,
                                                                 int in, int out, int num_groups, int group_size) {
  gemv_packed<4, false>(x, words, scales, zeros, group_of, y, n, in, out, num_groups, group_size);
}

extern "C" __global__ void __launch_bounds__(256, 2) gemv_int8_bf16(const bf16* __restrict__ x, const unsigned* __restrict__ words, const float* __restrict__ scales,
                                                                 const float* __restrict__ zeros, const int* __restrict__ group_of, bf16* __restrict__ y, int n,
                                                                 int in, int out, int num_groups, int group_size) {
  gemv_packed<8, false>(x, words, scales, zeros, group_of, y, n, in, out, num_groups, group_size);
}

extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8_bf16(const bf16* __restrict__ x, const unsigned* __restrict__ words, const float* __restrict__ scales,
                                                                const float* __restrict__ zeros, const int* __restrict__ group_of, bf16* __restrict__ y, int n,
                                                                int in, int out, int num_groups, int group_size) {
  gemv_packed<8, true>(x, words, scales, zeros, group_of, y, n, in, out, num_groups, group_size);
}

// fp8 != 0: the values are E4M3 (8 bits).
extern "C" __global__ void __launch_bounds__(256) dequant_packed_bf16(const unsigned* __restrict__ words, const float* __restrict__ scales, const float* __restrict__ zeros,
                                                                      const int* __restrict__ group_of, bf16* __restrict__ w, int in, int num_groups, int group_size,
                                                                      int bits, int fp8) {
  const int per = 32 / bits, wpr = in / per;
  const int o = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= wpr) return;
  const unsigned mask = (1u << bits) - 1u;
  unsigned word = words[(size_t)o * wpr + c];
  const float* srow = scales + (size_t)o * num_groups;
  const float* zrow = zeros ? zeros + (size_t)o * num_groups : nullptr;
  bf16* dst = w + (size_t)o * in + (size_t)c * per;
  // Pairs of values as one 4-byte store (per is even, and so is in: every pair is 4-byte aligned).
  for (int j = 0; j < per; j += 2) {
    const int i = c * per + j;
    const int g0 = group_of ? group_of[i] : i / group_size, g1 = group_of ? group_of[i + 1] : (i + 1) / group_size;
    const unsigned b0 = word & mask, b1 = (word >> bits) & mask;
    const float v0 = srow[g0] * ((fp8 ? e4m3_to_f32(b0) : (float)b0) - (zrow ? zrow[g0] : 0.f));
    const float v1 = srow[g1] * ((fp8 ? e4m3_to_f32(b1) : (float)b1) - (zrow ? zrow[g1] : 0.f));
    word >>= 2 * bits;
    *reinterpret_cast<__nv_bfloat162*>(dst + j) = __floats2bfloat162_rn(v0, v1);
  }
}

// quantize_fp8_rows_{bf16,f16,f32}: vLLM's online FP8 (--quantization fp8 on an unquantized checkpoint), done where the
// weights land: x [rows, cols] (cols % 4 == 0) as E4M3 bytes [rows, cols] (the packed layout's words at 8 bits) and one
// scale a row, amax / 448 (1 for a row of zeros); each value x / scale (IEEE division) to the nearest E4M3, ties to the
// even pattern, saturating at ±448 (NaN too), a negative that rounds to zero kept as −0 — bit for bit what the CPU's
// quantizeFp8Rows (src/loader/quantization.ts) writes. A block a row, 4 values a thread at a time (one u32 store).
__device__ __forceinline__ float value_f32(const bf16* x, size_t i) { return __bfloat162float(x[i]); }
__device__ __forceinline__ float value_f32(const __half* x, size_t i) { return __half2float(x[i]); }
__device__ __forceinline__ float value_f32(const float* x, size_t i) { return x[i]; }

// The E4M3 byte nearest v (see quantizeFp8Rows' e4m3Byte): a normal magnitude keeps 3 mantissa bits, rounded half to
// even by adding the bias below bit 20; one under 2^-6 is a multiple of 2^-9.
__device__ __forceinline__ unsigned e4m3_byte(float v) {
  const unsigned bits = __float_as_uint(v), sign = (bits >> 31) << 7, a = bits & 0x7fffffffu;
  if (a < 0x3c800000u) return sign | (unsigned)rintf(fabsf(v) * 512.f);
  const int code = (int)((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - ((127 - 7) << 3);
  return sign | (unsigned)(code > 0x7e ? 0x7e : code);
}

template <typename T>
__device__ __forceinline__ void quantize_fp8_row(const T* __restrict__ x, int cols, unsigned* __restrict__ words, float* __restrict__ scales) {
  __shared__ float scratch[32];
  const size_t row = blockIdx.x, base = row * (size_t)cols;
  float amax = 0.f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) amax = fmaxf(amax, fabsf(value_f32(x, base + i)));  // fmaxf skips NaN
  amax = block_max(amax, scratch);
  const float scale = amax > 0.f ? __fdiv_rn(amax, 448.f) : 1.f;
  if (threadIdx.x == 0) scales[row] = scale;
  for (int c = threadIdx.x; c < cols / 4; c += blockDim.x) {
    unsigned word = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) word |= e4m3_byte(__fdiv_rn(value_f32(x, base + 4 * c + j), scale)) << (8 * j);
    words[base / 4 + c] = word;
  }
}

extern "C" __global__ void __launch_bounds__(256) quantize_fp8_rows_bf16(const bf16* __restrict__ x, int cols, unsigned* __restrict__ words, float* __restrict__ scales) {
  quantize_fp8_row(x, cols, words, scales);
}
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_rows_f16(const __half* __restrict__ x, int cols, unsigned* __restrict__ words, float* __restrict__ scales) {
  quantize_fp8_row(x, cols, words, scales);
}
extern "C" __global__ void __launch_bounds__(256) quantize_fp8_rows_f32(const float* __restrict__ x, int cols, unsigned* __restrict__ words, float* __restrict__ scales) {
  quantize_fp8_row(x, cols, words, scales);
}

// Packed weights' values (src/loader/packed-matrix.ts), shared by quant.cu's kernels and moe.cu's packed expert GEMM.
#pragma once

// An E4M3 byte's value (OCP "fn": no infinities; S.1111.111 is NaN), exact in f32.
__device__ __forceinline__ float e4m3_to_f32(unsigned b) {
  const unsigned e = (b >> 3) & 15u, m = b & 7u;
  float v = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : (float)m * 0.001953125f;  // subnormal: m · 2^-9
  if ((b & 127u) == 127u) v = __int_as_float(0x7fc00000);
  return (b & 128u) ? -v : v;
}

// Value j (of PER) of a word: its bits as an unsigned integer, or the E4M3 number they encode.
template <int BITS, bool FP8>
__device__ __forceinline__ float word_value(unsigned word, int j) {
  const unsigned bits = (word >> (BITS * j)) & ((1u << BITS) - 1u);
  if constexpr (FP8) return e4m3_to_f32(bits);
  else return (float)bits;
}

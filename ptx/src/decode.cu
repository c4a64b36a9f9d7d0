// Decode attention (one query token per sequence), split-KV, for head_dim 64 / 128 / 256 and G = 1, 2, 4, 8
// query heads per KV head (compile-time, so the per-thread state stays in registers).
//
// Grid (seqs, Hkv, splits), 128 threads. Block (t, kvh, z) handles the G = H / Hkv query heads that share KV
// head kvh, over context positions [lo + z·K, min(lo + (z+1)·K, ctx)) with K = keys_per_split, lo = ctx − W
// with a sliding window W (window > 0), else 0. With one split it
// writes the normalised output (bf16, [seqs, H·D]) itself. With several it writes the same partial results
// as paged_attention_split_bf16 (attention.cu), which paged_attention_combine_bf16 then merges:
// partial[((t·Hkv + kvh)·splits + z)·G + g] = [m, l, acc_0 … acc_{D−1}] (m = −inf, l = 0 for an empty split).
// Attention sinks (sinks non-null, GPT-OSS) join the merge when this block writes the output itself; with
// several splits the combine adds them.
// The host picks the split count per batch size so that the grid fills the GPU (many sequences: one split).
//
// The 128 threads form 8 groups of 16 (two per warp). Group h takes keys begin + h, begin + h + 8, …: its 16
// threads each load D/16 consecutive elements of the key row (16-byte loads for D = 128, so a group reads its
// row in one coalesced transaction), reduce the G dot products over the group with 4 xor shuffles, and fold
// the value row into their D/16 output elements with an online softmax of their own. No barrier inside the
// key loop; the 8 groups' states are merged through shared memory at the end. Every group runs the same
// number of iterations (keys past the end are masked), so full-warp shuffles are always converged.
#include "common.cuh"

#define GROUPS 8

template <int D>
__device__ __forceinline__ void load_row(const bf16* __restrict__ p, float (&x)[D / 16]) {
  constexpr int E = D / 16;
  if constexpr (E % 8 == 0) {
#pragma unroll
    for (int c = 0; c < E; c += 8) {
      const uint4 u = *reinterpret_cast<const uint4*>(p + c);
      const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int i = 0; i < 4; i++) {
        x[c + 2 * i] = __uint_as_float(w[i] << 16);
        x[c + 2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      }
    }
  } else {
    static_assert(E == 4, "head_dim 64, 128 or 256");
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    x[0] = __uint_as_float(u.x << 16);
    x[1] = __uint_as_float(u.x & 0xffff0000u);
    x[2] = __uint_as_float(u.y << 16);
    x[3] = __uint_as_float(u.y & 0xffff0000u);
  }
}

template <int D, int G>
__device__ __forceinline__ void paged_decode(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
                                             float* __restrict__ partial, bf16* __restrict__ final_out, const int* __restrict__ seq_lens,
                                             const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size, int keys_per_split,
                                             int num_heads, int num_kv_heads, float scale, int window, float softcap, const float* __restrict__ sinks) {
  constexpr int E = D / 16;
  __shared__ __align__(16) float q_s[G * D];
  __shared__ __align__(16) float acc_s[GROUPS][G * D];
  __shared__ float m_s[GROUPS][G], l_s[GROUPS][G];

  const int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z, splits = gridDim.z, tid = threadIdx.x;
  const int group = tid >> 4, gl = tid & 15;
  const int ctx = seq_lens[t];
  const int begin = (window > 0 ? max(0, ctx - window) : 0) + z * keys_per_split, end = min(ctx, begin + keys_per_split);
  const int* table = block_tables + (size_t)t * max_blocks_per_seq;
  const size_t qkv_stride = (size_t)(num_heads + 2 * num_kv_heads) * D;
  const int kv_stride = num_kv_heads * D;
  float* out = partial + (((size_t)t * num_kv_heads + kvh) * splits + z) * G * (D + 2);

  // The group's query heads, pre-scaled, as f32 in shared memory.
  for (int i = tid; i < G * D; i += blockDim.x) q_s[i] = to_f(qkv[t * qkv_stride + (size_t)kvh * G * D + i]) * scale;
  __syncthreads();

  float m[G], l[G], acc[G][E];
#pragma unroll
  for (int g = 0; g < G; g++) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < E; e++) acc[g][e] = 0.f;
  }
  const bf16* k_head = k_cache + (size_t)kvh * D + gl * E;
  const bf16* v_head = v_cache + (size_t)kvh * D + gl * E;
  for (int j0 = begin; j0 < end; j0 += GROUPS) {
    const int j = j0 + group;
    const bool valid = j < end;
    float kf[E], vf[E];
    if (valid) {
      const size_t row = (size_t)(table[j / block_size] * block_size + j % block_size) * kv_stride;
      load_row<D>(k_head + row, kf);
      load_row<D>(v_head + row, vf);
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
      float s = 0.f;
      if (valid) {
        const float* q = q_s + g * D + gl * E;
#pragma unroll
        for (int e = 0; e < E; e++) s += q[e] * kf[e];
      }
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      s = soft_cap(s, softcap);
      if (valid) {
        const float m_new = fmaxf(m[g], s);
        const float f = __expf(m[g] - m_new), p = __expf(s - m_new);
        l[g] = l[g] * f + p;
#pragma unroll
        for (int e = 0; e < E; e++) acc[g][e] = acc[g][e] * f + p * vf[e];
        m[g] = m_new;
      }
    }
  }

  // Merge the 8 groups: Σ_h e^{m_h − M} acc_h over Σ_h e^{m_h − M} l_h — divided out here when this is the
  // only split, else written unnormalised with (M, l) for the combine.
#pragma unroll
  for (int g = 0; g < G; g++) {
#pragma unroll
    for (int e = 0; e < E; e++) acc_s[group][g * D + gl * E + e] = acc[g][e];
    if (gl == 0) { m_s[group][g] = m[g]; l_s[group][g] = l[g]; }
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    const bool sink = sinks != nullptr && splits == 1;
    const float s_logit = sink ? sinks[kvh * G + g] : -INFINITY;
    float M = s_logit;
#pragma unroll
    for (int h = 0; h < GROUPS; h++) M = fmaxf(M, m_s[h][g]);
    float num = 0.f, den = sink ? __expf(s_logit - M) : 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int h = 0; h < GROUPS; h++) {
        const float w = __expf(m_s[h][g] - M);
        num += w * acc_s[h][i];
        den += w * l_s[h][g];
      }
    }
    if (splits == 1) {
      final_out[(size_t)t * num_heads * D + (size_t)(kvh * G + g) * D + d] = to_bf(num / den);
    } else {
      float* o = out + g * (D + 2);
      if (d == 0) { o[0] = M; o[1] = den; }
      o[2 + d] = num;
    }
  }
}

#define DECODE_KERNEL(D, G)                                                                                                                \
  extern "C" __global__ void __launch_bounds__(128, 4) paged_decode_d##D##_g##G##_bf16(                                                      \
      const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, float* __restrict__ partial,      \
      bf16* __restrict__ final_out, const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq,       \
      int block_size, int keys_per_split, int num_heads, int num_kv_heads, float scale, int window, float softcap,                        \
      const float* __restrict__ sinks) {                                                                                                  \
    paged_decode<D, G>(qkv, k_cache, v_cache, partial, final_out, seq_lens, block_tables, max_blocks_per_seq, block_size, keys_per_split, \
                       num_heads, num_kv_heads, scale, window, softcap, sinks);                                                            \
  }

DECODE_KERNEL(64, 1)
DECODE_KERNEL(64, 2)
DECODE_KERNEL(64, 4)
DECODE_KERNEL(64, 8)
DECODE_KERNEL(128, 1)
DECODE_KERNEL(128, 2)
DECODE_KERNEL(128, 4)
DECODE_KERNEL(128, 8)
DECODE_KERNEL(256, 1)
DECODE_KERNEL(256, 2)
DECODE_KERNEL(256, 4)

// Paged attention over the KV cache for every query token of a step (prefill chunks, prefixes served from
// the cache, and decodes alike): token i of a sequence with context length L and q_len new tokens attends
// causally to positions [0, L - q_len + i] — with a sliding window W > 0 only to the last W of them (window 0:
// the whole context). Online softmax over chunks of 128 keys, f32 accumulation.
//
// Grid (tokens, Hkv), 128 threads. One block handles the G = H / Hkv query heads that share a KV head,
// so each K/V row is read once per group. Limits (checked by the host): G ≤ 8, head_dim ≤ 256 and even.
// paged_attention_bf16 serves every step; decode steps (one query token per sequence) use the split-KV
// pair below (flash-decoding): the context is cut into splits of SPLIT keys worked on by separate
// blocks, then combined. prefill_mma.cu holds the tensor-core prefill (opt-in until verified).
//
// sinks (GPT-OSS's attention sinks; nullptr: none): per query head an f32 logit that joins the softmax as
// one more score with a zero value row — the running max starts at it and the denominator at 1 (the
// combine, for split-KV decode, adds it once over all splits).
#include "common.cuh"

#define CHUNK 128
#define MAX_G 8
#define MAX_D 256
#define SPLIT 512

// Online-softmax attention of the block's G query heads (in q_s, pre-scaled) over context positions [begin, end):
// 128 keys at a time, each thread scoring one key, then all threads accumulating V over their dimensions
// (d = tid and tid + 128). Updates the running max m, denominator l and unnormalised output acc.
__device__ __forceinline__ void attend_keys(const float (&q_s)[MAX_G][MAX_D], float (&p_s)[MAX_G][CHUNK], int (&slot_s)[CHUNK], float* scratch,
                                            const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, const int* __restrict__ table,
                                            int block_size, int kv_stride, int kvh, int G, int D, float softcap, int begin, int end,
                                            float (&m)[MAX_G], float (&l)[MAX_G], float (&acc)[MAX_G][2]) {
  const int tid = threadIdx.x;
  for (int c0 = begin; c0 < end; c0 += CHUNK) {
    const int j = c0 + tid;
    const int n = min(CHUNK, end - c0);
    if (j < end) {
      const int slot = table[j / block_size] * block_size + j % block_size;
      slot_s[tid] = slot;
      const bf16* k = k_cache + (size_t)slot * kv_stride + kvh * D;
      float dot[MAX_G];
#pragma unroll
      for (int g = 0; g < MAX_G; g++) dot[g] = 0.f;
      for (int d = 0; d < D; d += 2) {
        const __nv_bfloat162 kk = *reinterpret_cast<const __nv_bfloat162*>(k + d);
        const float k0 = __low2float(kk), k1 = __high2float(kk);
#pragma unroll
        for (int g = 0; g < MAX_G; g++) if (g < G) dot[g] += q_s[g][d] * k0 + q_s[g][d + 1] * k1;
      }
#pragma unroll
      for (int g = 0; g < MAX_G; g++) if (g < G) p_s[g][tid] = soft_cap(dot[g], softcap);
    } else {
#pragma unroll
      for (int g = 0; g < MAX_G; g++) if (g < G) p_s[g][tid] = -INFINITY;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < MAX_G; g++) {
      if (g >= G) break;
      const float cmax = block_max(p_s[g][tid], scratch);
      const float m_new = fmaxf(m[g], cmax);
      const float factor = __expf(m[g] - m_new);
      const float p = j < end ? __expf(p_s[g][tid] - m_new) : 0.f;
      const float psum = block_sum(p, scratch);
      p_s[g][tid] = p;
      l[g] = l[g] * factor + psum;
      acc[g][0] *= factor;
      acc[g][1] *= factor;
      m[g] = m_new;
    }
    __syncthreads();
    for (int jj = 0; jj < n; jj++) {
      const bf16* v = v_cache + (size_t)slot_s[jj] * kv_stride + kvh * D;
      const float v0 = tid < D ? to_f(v[tid]) : 0.f;
      const float v1 = tid + CHUNK < D ? to_f(v[tid + CHUNK]) : 0.f;
#pragma unroll
      for (int g = 0; g < MAX_G; g++) if (g < G) { acc[g][0] += p_s[g][jj] * v0; acc[g][1] += p_s[g][jj] * v1; }
    }
    __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(CHUNK) paged_attention_bf16(
    const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, bf16* __restrict__ out,
    const int* __restrict__ query_start, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,
    int num_seqs, int max_blocks_per_seq, int block_size, int num_heads, int num_kv_heads, int head_dim, float scale, int window, float softcap,
    const float* __restrict__ sinks) {
  __shared__ float q_s[MAX_G][MAX_D];
  __shared__ float p_s[MAX_G][CHUNK];
  __shared__ int slot_s[CHUNK];
  __shared__ float scratch[32];

  const int t = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x;
  const int G = num_heads / num_kv_heads, D = head_dim;
  // The sequence of token t: the last s with query_start[s] <= t.
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (query_start[mid] <= t) lo = mid; else hi = mid - 1;
  }
  const int s = lo;
  const int q_len = query_start[s + 1] - query_start[s];
  const int ctx = seq_lens[s] - q_len + (t - query_start[s]) + 1;
  const int* table = block_tables + (size_t)s * max_blocks_per_seq;
  const size_t qkv_stride = (size_t)(num_heads + 2 * num_kv_heads) * D;
  const int kv_stride = num_kv_heads * D;

  for (int i = tid; i < G * D; i += CHUNK) q_s[i / D][i % D] = to_f(qkv[t * qkv_stride + (size_t)(kvh * G) * D + i]) * scale;

  float m[MAX_G], l[MAX_G], acc[MAX_G][2];
#pragma unroll
  for (int g = 0; g < MAX_G; g++) {
    const bool sink = sinks != nullptr && g < G;
    m[g] = sink ? sinks[kvh * G + g] : -INFINITY;
    l[g] = sink ? 1.f : 0.f;
    acc[g][0] = acc[g][1] = 0.f;
  }
  __syncthreads();

  attend_keys(q_s, p_s, slot_s, scratch, k_cache, v_cache, table, block_size, kv_stride, kvh, G, D, softcap, window > 0 ? max(0, ctx - window) : 0, ctx, m, l, acc);
  bf16* o = out + (size_t)t * num_heads * D + (size_t)kvh * G * D;
#pragma unroll
  for (int g = 0; g < MAX_G; g++) {
    if (g >= G) break;
    if (tid < D) o[g * D + tid] = to_bf(acc[g][0] / l[g]);
    if (tid + CHUNK < D) o[g * D + tid + CHUNK] = to_bf(acc[g][1] / l[g]);
  }
}

// Decode, split-KV: grid (tokens, Hkv, splits), 128 threads. Block z handles context positions
// [lo + z·SPLIT, min(lo + (z+1)·SPLIT, ctx)) of its token (lo = ctx − W with a sliding window W, else 0) and writes, per query head g of the group, its running max,
// its softmax denominator and its unnormalised output to partial[((t·Hkv + kvh)·splits + z)·G + g] as
// D + 2 floats: [m, l, acc_0 … acc_{D−1}]. Splits past the context write m = −inf, l = 0.
extern "C" __global__ void __launch_bounds__(CHUNK) paged_attention_split_bf16(
    const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, float* __restrict__ partial,
    const int* __restrict__ seq_lens, const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size,
    int num_heads, int num_kv_heads, int head_dim, float scale, int window, float softcap) {
  __shared__ float q_s[MAX_G][MAX_D];
  __shared__ float p_s[MAX_G][CHUNK];
  __shared__ int slot_s[CHUNK];
  __shared__ float scratch[32];

  const int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z, splits = gridDim.z, tid = threadIdx.x;
  const int G = num_heads / num_kv_heads, D = head_dim;
  const int ctx = seq_lens[t];  // decode: token t is sequence t, and its query is the last position
  const int begin = (window > 0 ? max(0, ctx - window) : 0) + z * SPLIT, end = min(ctx, begin + SPLIT);
  const int* table = block_tables + (size_t)t * max_blocks_per_seq;
  const size_t qkv_stride = (size_t)(num_heads + 2 * num_kv_heads) * D;
  const int kv_stride = num_kv_heads * D;
  float* out = partial + (((size_t)t * num_kv_heads + kvh) * splits + z) * G * (D + 2);

  for (int i = tid; i < G * D; i += CHUNK) q_s[i / D][i % D] = to_f(qkv[t * qkv_stride + (size_t)(kvh * G) * D + i]) * scale;
  float m[MAX_G], l[MAX_G], acc[MAX_G][2];
#pragma unroll
  for (int g = 0; g < MAX_G; g++) { m[g] = -INFINITY; l[g] = 0.f; acc[g][0] = acc[g][1] = 0.f; }
  __syncthreads();

  attend_keys(q_s, p_s, slot_s, scratch, k_cache, v_cache, table, block_size, kv_stride, kvh, G, D, softcap, begin, end, m, l, acc);
#pragma unroll
  for (int g = 0; g < MAX_G; g++) {
    if (g >= G) break;
    float* o = out + g * (D + 2);
    if (tid == 0) { o[0] = m[g]; o[1] = l[g]; }
    if (tid < D) o[2 + tid] = acc[g][0];
    if (tid + CHUNK < D) o[2 + tid + CHUNK] = acc[g][1];
  }
}

// Combines the splits: out = Σ_z e^{m_z − M} acc_z / (Σ_z e^{m_z − M} l_z + e^{sink − M}), the sink's term only
// with sinks. Grid (tokens, H), block D threads (rounded up to 32).
extern "C" __global__ void paged_attention_combine_bf16(const float* __restrict__ partial, bf16* __restrict__ out, int splits,
                                                        int num_heads, int num_kv_heads, int head_dim, const float* __restrict__ sinks) {
  const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  const int G = num_heads / num_kv_heads, kvh = h / G, g = h % G, D = head_dim;
  const float* base = partial + ((size_t)t * num_kv_heads + kvh) * splits * G * (D + 2) + (size_t)g * (D + 2);
  const size_t zstride = (size_t)G * (D + 2);
  const float sink = sinks != nullptr ? sinks[h] : -INFINITY;
  float M = sink;
  for (int z = 0; z < splits; z++) M = fmaxf(M, base[z * zstride]);
  float num = 0.f, den = sinks != nullptr ? __expf(sink - M) : 0.f;
  for (int z = 0; z < splits; z++) {
    const float mz = base[z * zstride];
    if (mz == -INFINITY) continue;
    const float w = __expf(mz - M);
    den += w * base[z * zstride + 1];
    if (d < D) num += w * base[z * zstride + 2 + d];
  }
  if (d < D) out[(size_t)t * num_heads * D + (size_t)h * D + d] = to_bf(num / den);
}

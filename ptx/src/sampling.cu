// Sampling on the GPU, one block (1024 threads) per logits row (f32 [rows, V]).
//   logprobs_f32      — log-sum-exp of the raw row and its top-N tokens (before any processing)
//   apply_edits_f32   — logit_bias, banned tokens and penalties as a sparse list of per-token edits
//   mask_tokens_f32   — structured outputs: −∞ for every token a row's grammar bitmask does not allow
//   sample_f32        — greedy argmax, or temperature + top-k + top-p + min-p by thresholds on the
//                       scaled logits, then a Gumbel-max draw from Philox4x32-10 (the same generator as
//                       src/engine/philox.ts), keyed by the request's seed, stream and step.
#include "common.cuh"

#define THREADS 1024

// Block-wide argmax (ties → lowest index). Returns the winner in all threads.
__device__ __forceinline__ void block_argmax(float v, int i, float* sv, int* si, float* out_v, int* out_i) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
  __syncthreads();
  if (lane == 0) { sv[warp] = v; si[warp] = i; }
  __syncthreads();
  if (warp == 0) {
    v = sv[lane]; i = si[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int oi = __shfl_xor_sync(0xffffffffu, i, o);
      if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    if (lane == 0) { sv[0] = v; si[0] = i; }
  }
  __syncthreads();
  *out_v = sv[0];
  *out_i = si[0];
  __syncthreads();
}

// lse[r] = log Σ exp(row); top_ids/top_lp[r, 0..n) = the n best tokens (n ≤ 20) and their logprobs.
extern "C" __global__ void __launch_bounds__(THREADS) logprobs_f32(const float* __restrict__ logits, int vocab, const int* __restrict__ rows,
                                                                   float* __restrict__ lse, int* __restrict__ top_ids, float* __restrict__ top_lp, int num_top) {
  __shared__ float scratch[32];
  __shared__ float sv[32];
  __shared__ int si[32];
  __shared__ int chosen[20];
  const int r = rows[blockIdx.x];
  const float* x = logits + (size_t)r * vocab;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += THREADS) m = fmaxf(m, x[i]);
  m = block_max(m, scratch);
  float s = 0.f;
  for (int i = threadIdx.x; i < vocab; i += THREADS) s += __expf(x[i] - m);
  const float z = m + __logf(block_sum(s, scratch));
  if (threadIdx.x == 0) lse[r] = z;
  for (int k = 0; k < num_top; k++) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
      bool taken = false;
      for (int q = 0; q < k; q++) taken |= chosen[q] == i;
      if (!taken && (x[i] > bv || (x[i] == bv && i < bi))) { bv = x[i]; bi = i; }
    }
    float wv; int wi;
    block_argmax(bv, bi, sv, si, &wv, &wi);
    if (threadIdx.x == 0) {
      chosen[k] = wi;
      top_ids[(size_t)r * 20 + k] = wi;
      top_lp[(size_t)r * 20 + k] = wv - z;
    }
    __syncthreads();
  }
}

// For each edit e: x = logits[row, token]; original[e] = x; logits = (rep == 1 ? x : x > 0 ? x / rep : x * rep) + add.
// The host merges edits so that each (row, token) appears once. One thread per edit.
extern "C" __global__ void apply_edits_f32(float* __restrict__ logits, int vocab, const int* __restrict__ rows, const int* __restrict__ tokens,
                                           const float* __restrict__ rep, const float* __restrict__ add, float* __restrict__ original, int num_edits) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= num_edits) return;
  float* p = logits + (size_t)rows[e] * vocab + tokens[e];
  const float x = *p;
  original[e] = x;
  const float r = rep[e];
  *p = (r == 1.f ? x : x > 0.f ? x / r : x * r) + add[e];
}

// Structured outputs: row rows[m] keeps only the tokens whose bit is set in its bitmask, words
// masks[m * words …] (bit t & 31 of word t >> 5, t < vocab); the others become −∞. Grid (M, ⌈words / 256⌉):
// one thread per 32 tokens, a word of all ones (most words, mid-grammar) costs one load.
extern "C" __global__ void mask_tokens_f32(float* __restrict__ logits, int vocab, const int* __restrict__ rows,
                                           const int* __restrict__ masks, int words) {
  const int m = blockIdx.x, w = blockIdx.y * blockDim.x + threadIdx.x;
  if (w >= words) return;
  const unsigned bits = (unsigned)masks[(size_t)m * words + w];
  if (bits == 0xffffffffu) return;
  float* row = logits + (size_t)rows[m] * vocab;
  const int t0 = w * 32;
  for (int j = 0; j < 32 && t0 + j < vocab; j++)
    if (!((bits >> j) & 1u)) row[t0 + j] = -INFINITY;
}

__device__ __forceinline__ bool sorted_contains(const int* __restrict__ a, int n, int v) {
  int lo = 0, hi = n;
  while (lo < hi) { const int mid = (lo + hi) >> 1; if (a[mid] < v) lo = mid + 1; else hi = mid; }
  return lo < n && a[lo] == v;
}

// Async scheduling: the penalties of a token the host does not know yet (the previous step's sample for
// this row, still on the GPU), applied after apply_edits has applied those of the known history. Per fix f:
// ints[6f..] = row, sampled row, offset and length of the row's known output tokens (sorted, distinct) in
// `tokens`, offset and length of its prompt tokens (likewise); floats[3f..] = presence, frequency,
// repetition. With t the pending token: one more occurrence (frequency), its presence if it is new among the
// outputs, and the repetition penalty if no edit has applied it yet. token[f] = t and original[f] = the logit
// before this (for the sampled token's logprob). One thread per fix.
extern "C" __global__ void pending_penalty_f32(float* __restrict__ logits, int vocab, const int* __restrict__ ints, const float* __restrict__ floats,
                                               const int* __restrict__ tokens, const int* __restrict__ sampled, int* __restrict__ token,
                                               float* __restrict__ original, int num_fixes) {
  const int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= num_fixes) return;
  const int* q = ints + 6 * f;
  const int t = sampled[q[1]];
  const float presence = floats[3 * f], frequency = floats[3 * f + 1], rep = floats[3 * f + 2];
  const bool in_outputs = sorted_contains(tokens + q[2], q[3], t), in_prompt = sorted_contains(tokens + q[4], q[5], t);
  float* p = logits + (size_t)q[0] * vocab + t;
  float x = *p;
  token[f] = t;
  original[f] = x;
  if (!(in_outputs || (in_prompt && rep != 1.f)) && rep != 1.f) x = x > 0.f ? x / rep : x * rep;
  *p = x - frequency - (in_outputs ? 0.f : presence);
}

// ---- Philox4x32-10 ----
__device__ __forceinline__ uint4 philox4x32(uint2 key, uint4 c) {
#pragma unroll
  for (int i = 0; i < 10; i++) {
    const unsigned hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
    const unsigned hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
    c = make_uint4(hi1 ^ c.y ^ key.x, lo1, hi0 ^ c.w ^ key.y, lo0);
    key.x += 0x9E3779B9u;
    key.y += 0xBB67AE85u;
  }
  return c;
}

// Uniform in (0, 1) for element i of the draw (seed, stream, step).
__device__ __forceinline__ float philox_uniform(uint2 key, unsigned step, unsigned stream, unsigned i) {
  const uint4 w = philox4x32(key, make_uint4(step, stream, i, 1u));
  return ((w.x >> 8) + 0.5f) * (1.f / 16777216.f);
}

// Scaled-logit threshold keeping the top_k largest (bisection on the value; ties at the cut are kept).
__device__ float topk_threshold(const float* x, int vocab, float inv_t, float hi, int k, float* scratch) {
  float lo = hi - 60.f;
  for (int it = 0; it < 32; it++) {
    const float mid = 0.5f * (lo + hi);
    float c = 0.f;
    for (int i = threadIdx.x; i < vocab; i += THREADS) c += x[i] * inv_t >= mid ? 1.f : 0.f;
    if (block_sum(c, scratch) >= (float)k) lo = mid; else hi = mid;
  }
  return lo;
}

// Smallest set of top tokens (above `floor`) holding probability mass >= top_p: its scaled-logit cut.
__device__ float topp_threshold(const float* x, int vocab, float inv_t, float m, float floor, float top_p, float* scratch) {
  float z = 0.f;
  for (int i = threadIdx.x; i < vocab; i += THREADS) { const float v = x[i] * inv_t; if (v >= floor) z += __expf(v - m); }
  z = block_sum(z, scratch);
  // Bisect between a finite low end (tokens 60 below the max weigh e^-60: nothing) and the max. With no
  // top-k or min-p the floor is -inf, and a bisection from -inf never moves: top-p alone kept everything.
  float lo = fmaxf(floor, m - 60.f), hi = m;
  for (int it = 0; it < 32; it++) {
    const float mid = 0.5f * (lo + hi);
    float mass = 0.f;
    for (int i = threadIdx.x; i < vocab; i += THREADS) { const float v = x[i] * inv_t; if (v >= mid && v >= floor) mass += __expf(v - m); }
    if (block_sum(mass, scratch) >= top_p * z) lo = mid; else hi = mid;
  }
  return lo;
}

// out_ids[r] = the sampled token of logits row rows[r]. Parameters are per sampled row.
extern "C" __global__ void __launch_bounds__(THREADS) sample_f32(const float* __restrict__ logits, int vocab, const int* __restrict__ rows,
    const float* __restrict__ temperature, const int* __restrict__ top_k, const float* __restrict__ top_p, const float* __restrict__ min_p,
    const unsigned* __restrict__ seeds, const int* __restrict__ streams, const int* __restrict__ steps, int* __restrict__ out_ids) {
  __shared__ float scratch[32];
  __shared__ float sv[32];
  __shared__ int si[32];
  const int b = blockIdx.x;
  const float* x = logits + (size_t)rows[b] * vocab;
  const float t = temperature[b];
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  if (t == 0.f) {
    for (int i = threadIdx.x; i < vocab; i += THREADS) if (x[i] > bv || (x[i] == bv && i < bi)) { bv = x[i]; bi = i; }
  } else {
    const float inv_t = 1.f / t;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += THREADS) m = fmaxf(m, x[i] * inv_t);
    m = block_max(m, scratch);
    float cut = -INFINITY;
    if (min_p[b] > 0.f) cut = m + __logf(min_p[b]);
    if (top_k[b] > 0 && top_k[b] < vocab) cut = fmaxf(cut, topk_threshold(x, vocab, inv_t, m, top_k[b], scratch));
    if (top_p[b] < 1.f) cut = fmaxf(cut, topp_threshold(x, vocab, inv_t, m, cut, top_p[b], scratch));
    const uint2 key = make_uint2(seeds[2 * b], seeds[2 * b + 1]);
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
      const float v = x[i] * inv_t;
      if (v < cut || v == -INFINITY) continue;
      const float g = v - __logf(-__logf(philox_uniform(key, (unsigned)steps[b], (unsigned)streams[b], (unsigned)i)));
      if (g > bv || (g == bv && i < bi)) { bv = g; bi = i; }
    }
  }
  float wv; int wi;
  block_argmax(bv, bi, sv, si, &wv, &wi);
  if (threadIdx.x == 0) out_ids[b] = wi == 0x7fffffff ? 0 : wi;
}

// The sampled token's logit of each row, for its logprob (read before the next step may overwrite the
// logits): out[r] = logits[r, ids[r]]. grid = ceil(rows / blockDim)
extern "C" __global__ void sampled_logit_f32(const float* __restrict__ logits, int vocab, const int* __restrict__ ids, float* __restrict__ out, int rows) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) out[r] = logits[(size_t)r * vocab + ids[r]];
}

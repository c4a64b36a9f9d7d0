// Mixture of experts: routing (softmax + top-k), grouping the (token, expert) entries by expert, the
// experts' GEMMs over tiles of one expert each (tensor cores: mma.sync m16n8k16, bf16 in, f32 accumulate),
// and the weighted sum back into one row per token. Every launch shape depends only on the number of
// tokens, so a decode step with experts can be captured in a CUDA graph.
//
// The routing scratch (int32, see moeRoutingInts in src/backend/backend.ts) for `entries` = tokens·top_k:
//   offsets[E + 1]      first sorted entry of each expert (offsets[E] = entries)
//   sorted[entries]     entry indices (token·top_k + j), grouped by expert, ascending within an expert
//   tiles[2·max_tiles]  per tile of ≤ 16 sorted entries of one expert: its expert (−1: unused) and first entry
#include "common.cuh"
#include "packed.cuh"

#define TILE_ROWS 16    // MOE_TILE_ROWS
#define MAX_EXPERTS 1024
#define ALIGN_THREADS 256

// One warp per token (lane l owns experts l, l + 32, …): p = softmax(logits[t]) in f32, the top_k largest (ties: the lower id), divided by
// their sum when renormalize; then num_shared entries of weight 1 for shared experts run as experts num_experts … (DeepSeek-V2's).
// ids / weights are [tokens, top_k + num_shared]. grid = tokens, block = 32
extern "C" __global__ void moe_route_bf16(const bf16* __restrict__ logits, int* __restrict__ ids, float* __restrict__ weights, int num_experts, int top_k, int renormalize,
                                          int num_shared) {
  __shared__ float p[MAX_EXPERTS];
  const int t = blockIdx.x, lane = threadIdx.x, width = top_k + num_shared;
  const bf16* row = logits + (size_t)t * num_experts;
  float m = -INFINITY;
  for (int e = lane; e < num_experts; e += 32) m = fmaxf(m, to_f(row[e]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float z = 0.f;
  for (int e = lane; e < num_experts; e += 32) {
    const float v = __expf(to_f(row[e]) - m);
    p[e] = v;
    z += v;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
  float sum = 0.f;
  for (int j = 0; j < top_k; j++) {
    float best = -1.f;
    int best_id = num_experts;
    for (int e = lane; e < num_experts; e += 32)
      if (p[e] > best) { best = p[e]; best_id = e; }  // ascending e: the first of equals stays
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_id, o);
      if (ov > best || (ov == best && oi < best_id)) { best = ov; best_id = oi; }
    }
    const float w = best / z;
    sum += w;
    if (lane == 0) {
      ids[t * width + j] = best_id;
      weights[t * width + j] = w;
    }
    // Taken (probabilities are ≥ 0). Each lane reads and writes only its own experts' p: no warp sync needed.
    if ((best_id & 31) == lane) p[best_id] = -1.f;
  }
  if (lane == 0) {
    if (renormalize)
      for (int j = 0; j < top_k; j++) weights[t * width + j] /= sum;
    for (int j = 0; j < num_shared; j++) {
      ids[t * width + top_k + j] = num_experts + j;
      weights[t * width + top_k + j] = 1.f;
    }
  }
}

// GLM-4.5 / DeepSeek-V3 routing, one warp per token (grid = tokens, block = 32), from f32 router logits: s = sigmoid(logit)
// (softmax_scores: the row's softmax, ERNIE 4.5's and DeepSeek-V2's; group_max: a group's score is its best, DeepSeek-V2's);
// experts are chosen by c = s + bias (e_score_correction_bias) among the top_k_groups of num_groups equal groups (a
// group's score: the sum of its two best c; experts of the other groups count as 0, as transformers masks them);
// their weights are s, divided by their sum (+1e-20) when renormalize, times scale (routed_scaling_factor). Then
// num_shared entries for the shared experts (ids num_experts …, weight 1). ids / weights are [tokens, top_k + num_shared].
// The block is one warp: its barriers (lanes read other lanes' shared values) are plain __syncthreads.
extern "C" __global__ void moe_route_grouped_f32(const float* __restrict__ logits, const float* __restrict__ bias, int* __restrict__ ids, float* __restrict__ weights,
                                                 int num_experts, int top_k, int num_groups, int top_k_groups, int renormalize, float scale, int num_shared,
                                                 int softmax_scores, int group_max) {
  __shared__ float s[MAX_EXPERTS], c[MAX_EXPERTS], group_score[MAX_EXPERTS];
  __shared__ int keep[MAX_EXPERTS];
  const int t = blockIdx.x, lane = threadIdx.x, width = top_k + num_shared, per_group = num_experts / num_groups;
  const float* row = logits + (size_t)t * num_experts;
  float max = -INFINITY, z = 0.f;
  if (softmax_scores) {
    for (int e = lane; e < num_experts; e += 32) max = fmaxf(max, row[e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, o));
    for (int e = lane; e < num_experts; e += 32) z += expf(row[e] - max);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
  }
  for (int e = lane; e < num_experts; e += 32) {
    // accurate expf: routing follows near-ties as transformers does
    const float v = softmax_scores ? expf(row[e] - max) / z : 1.f / (1.f + expf(-row[e]));
    s[e] = v;
    c[e] = v + bias[e];
  }
  __syncthreads();
  // Each lane scores its groups: the sum of their two best choice values.
  for (int g = lane; g < num_groups; g += 32) {
    float a = -INFINITY, b = -INFINITY;
    for (int e = g * per_group; e < (g + 1) * per_group; e++) {
      const float v = c[e];
      if (v > a) { b = a; a = v; } else if (v > b) b = v;
    }
    group_score[g] = per_group > 1 && !group_max ? a + b : a;
    keep[g] = 0;
  }
  __syncthreads();
  for (int j = 0; j < top_k_groups && top_k_groups < num_groups; j++) {
    float best = -INFINITY;
    int best_g = num_groups;
    for (int g = lane; g < num_groups; g += 32)
      if (!keep[g] && (group_score[g] > best || best_g == num_groups)) { best = group_score[g]; best_g = g; }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int og = __shfl_xor_sync(0xffffffffu, best_g, o);
      if (og < num_groups && (best_g == num_groups || ov > best || (ov == best && og < best_g))) { best = ov; best_g = og; }
    }
    __syncthreads();  // every lane has read its keep[] before lane 0 marks the chosen group
    if (lane == 0) keep[best_g] = 1;
    __syncthreads();
  }
  if (top_k_groups < num_groups) {
    for (int e = lane; e < num_experts; e += 32)
      if (!keep[e / per_group]) c[e] = 0.f;
    __syncthreads();
  }
  float sum = 0.f;
  for (int j = 0; j < top_k; j++) {
    float best = -INFINITY;
    int best_id = num_experts;
    for (int e = lane; e < num_experts; e += 32)
      if (c[e] > best || (best_id == num_experts && c[e] == -INFINITY)) { best = c[e]; best_id = e; }  // ascending e: the first of equals stays
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_id, o);
      if (oi < num_experts && (best_id == num_experts || ov > best || (ov == best && oi < best_id))) { best = ov; best_id = oi; }
    }
    const float w = s[best_id];
    sum += w;
    if (lane == 0) {
      ids[t * width + j] = best_id;
      weights[t * width + j] = w;
    }
    // Taken: out of the running. Each lane reads and writes only its own experts' c.
    if ((best_id & 31) == lane) c[best_id] = -INFINITY;
    __syncthreads();
  }
  if (lane == 0) {
    const float k = renormalize ? scale / (sum + 1e-20f) : scale;
    for (int j = 0; j < top_k; j++) weights[t * width + j] *= k;
    for (int j = 0; j < num_shared; j++) {
      ids[t * width + top_k + j] = num_experts + j;
      weights[t * width + top_k + j] = 1.f;
    }
  }
}

// Stages ids[base, base + 256) in shared memory (−1 past the end), between barriers; returns how many are entries.
__device__ __forceinline__ int stage_ids(const int* __restrict__ ids, int* chunk, int base, int entries) {
  __syncthreads();
  chunk[threadIdx.x] = base + (int)threadIdx.x < entries ? ids[base + threadIdx.x] : -1;
  __syncthreads();
  return min(ALIGN_THREADS, entries - base);
}

// Groups the entries by expert (a stable counting sort: thread i owns experts i, i + 256, …, and reads
// every entry's expert from shared memory, in order) and lays out the tiles. grid = 1, block = 256
extern "C" __global__ void moe_align_i32(const int* __restrict__ ids, int* __restrict__ routing, int entries, int num_experts, int max_tiles) {
  __shared__ int count[MAX_EXPERTS], first[MAX_EXPERTS + 1], first_tile[MAX_EXPERTS + 1], chunk[ALIGN_THREADS];
  int* offsets = routing;
  int* sorted = routing + num_experts + 1;
  int* tiles = sorted + entries;
  const int tid = threadIdx.x;
  for (int e = tid; e < num_experts; e += ALIGN_THREADS) count[e] = 0;
  for (int base = 0; base < entries; base += ALIGN_THREADS) {
    const int n = stage_ids(ids, chunk, base, entries);
    for (int e = tid; e < num_experts; e += ALIGN_THREADS) {
      int c = 0;
      for (int i = 0; i < n; i++) c += chunk[i] == e;
      count[e] += c;
    }
  }
  __syncthreads();
  if (tid == 0) {
    int off = 0, tile = 0;
    for (int e = 0; e < num_experts; e++) {
      first[e] = off;
      first_tile[e] = tile;
      off += count[e];
      tile += (count[e] + TILE_ROWS - 1) / TILE_ROWS;
    }
    first[num_experts] = off;
    first_tile[num_experts] = tile;
  }
  __syncthreads();
  for (int e = tid; e <= num_experts; e += ALIGN_THREADS) offsets[e] = first[e];
  for (int t = first_tile[num_experts] + tid; t < max_tiles; t += ALIGN_THREADS) tiles[2 * t] = -1;
  for (int e = tid; e < num_experts; e += ALIGN_THREADS) {
    const int tiles_e = (count[e] + TILE_ROWS - 1) / TILE_ROWS;
    for (int j = 0; j < tiles_e; j++) {
      tiles[2 * (first_tile[e] + j)] = e;
      tiles[2 * (first_tile[e] + j) + 1] = first[e] + j * TILE_ROWS;
    }
  }
  for (int base = 0; base < entries; base += ALIGN_THREADS) {
    const int n = stage_ids(ids, chunk, base, entries);
    for (int e = tid; e < num_experts; e += ALIGN_THREADS) {
      int pos = first[e];
      for (int i = 0; i < n; i++)
        if (chunk[i] == e) sorted[pos++] = base + i;
      first[e] = pos;
    }
  }
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned ld_pair(const bf16* p) { return *reinterpret_cast<const unsigned*>(p); }

// The B fragments' weights: pairs (k, k + 1) of row `row` (= e·out_f + column) as two bf16 in one register.
struct Bf16Weights {
  const bf16* w;
  int in_f;
  __device__ __forceinline__ unsigned pair(size_t row, int k) const { return ld_pair(w + row * in_f + k); }
};

// Packed experts (quant.cu's layout, stacked: rows e·out_f + column): each value dequantized in f32 and rounded to bf16
// once, what the dequantized bf16 experts hold — the same products, bit for bit. Groups by position, of an even size.
template <int BITS, bool FP8>
struct PackedWeights {
  const unsigned* words;
  const float* scales;
  const float* zeros;
  int in_f, num_groups, group_size;
  __device__ __forceinline__ unsigned pair(size_t row, int k) const {
    constexpr int PER = 32 / BITS;
    const unsigned word = words[row * (in_f / PER) + k / PER];
    const size_t g = row * num_groups + k / group_size;
    const float s = scales[g], z = zeros ? zeros[g] : 0.f;
    const __nv_bfloat162 p = __floats2bfloat162_rn(s * (word_value<BITS, FP8>(word, k % PER) - z), s * (word_value<BITS, FP8>(word, k % PER + 1) - z));
    return *reinterpret_cast<const unsigned*>(&p);
  }
};

// out[entry] = x[entry / row_div] · W_eᵀ (+ b_e) for the entries of each tile, W_e rows e·out_f … of `wt` ([out_f, in_f]
// per expert, as the checkpoint's), b_e = bias + e·out_f (GPT-OSS's expert biases; nullptr: none, added in f32 before
// the one rounding). row_div = top_k reads the token's row (gate/up), 1 the entry's (down).
// in_f a multiple of 16, out_f of 8. grid = (max_tiles, ceil(out_f / 128)), block = 128: warp w computes
// the tile's 16 rows × 32 columns [blockIdx.y·128 + 32w, +32), fragments read straight from global memory.
template <typename W>
__device__ __forceinline__ void moe_gemm(const bf16* __restrict__ x, const W wt, bf16* __restrict__ out, const int* __restrict__ routing,
                                         int entries, int num_experts, int in_f, int out_f, int row_div, const bf16* __restrict__ bias) {
  const int* offsets = routing;
  const int* sorted = routing + num_experts + 1;
  const int* tiles = sorted + entries;
  const int e = tiles[2 * blockIdx.x];
  if (e < 0) return;
  const int first = tiles[2 * blockIdx.x + 1], rows = min(TILE_ROWS, offsets[e + 1] - first);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = (lane & 3) * 2;
  const int col0 = blockIdx.y * 128 + warp * 32;
  if (col0 >= out_f) return;  // the whole warp
  const bool v0 = g < rows, v1 = g + 8 < rows;
  const int entry0 = v0 ? sorted[first + g] : 0, entry1 = v1 ? sorted[first + g + 8] : 0;
  const bf16* in0 = x + (size_t)(entry0 / row_div) * in_f;
  const bf16* in1 = x + (size_t)(entry1 / row_div) * in_f;
  const size_t row0 = (size_t)e * out_f;
  float acc[4][4];
#pragma unroll
  for (int n = 0; n < 4; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  for (int k0 = 0; k0 < in_f; k0 += 16) {
    unsigned a[4];
    a[0] = v0 ? ld_pair(in0 + k0 + c) : 0u;
    a[1] = v1 ? ld_pair(in1 + k0 + c) : 0u;
    a[2] = v0 ? ld_pair(in0 + k0 + c + 8) : 0u;
    a[3] = v1 ? ld_pair(in1 + k0 + c + 8) : 0u;
#pragma unroll
    for (int n = 0; n < 4; n++) {
      const int col = col0 + n * 8 + g;
      const unsigned b0 = col < out_f ? wt.pair(row0 + col, k0 + c) : 0u, b1 = col < out_f ? wt.pair(row0 + col, k0 + c + 8) : 0u;
      mma_bf16(acc[n], a, b0, b1);
    }
  }
#pragma unroll
  for (int n = 0; n < 4; n++) {
    const int col = col0 + n * 8 + c;
    if (col >= out_f) continue;
    float b0 = 0.f, b1 = 0.f;
    if (bias != nullptr) {
      b0 = to_f(bias[(size_t)e * out_f + col]);
      b1 = to_f(bias[(size_t)e * out_f + col + 1]);
    }
    if (v0) *reinterpret_cast<__nv_bfloat162*>(out + (size_t)entry0 * out_f + col) = __floats2bfloat162_rn(acc[n][0] + b0, acc[n][1] + b1);
    if (v1) *reinterpret_cast<__nv_bfloat162*>(out + (size_t)entry1 * out_f + col) = __floats2bfloat162_rn(acc[n][2] + b0, acc[n][3] + b1);
  }
}

extern "C" __global__ void moe_gemm_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ out, const int* __restrict__ routing,
                                         int entries, int num_experts, int in_f, int out_f, int row_div, const bf16* __restrict__ bias) {
  moe_gemm(x, Bf16Weights{w, in_f}, out, routing, entries, num_experts, in_f, out_f, row_div, bias);
}

// Packed experts: 4- or 8-bit integers, or (fp8 != 0) E4M3; zeros null: all 0.
extern "C" __global__ void moe_gemm_packed_bf16(const bf16* __restrict__ x, const unsigned* __restrict__ words, const float* __restrict__ scales,
                                                const float* __restrict__ zeros, bf16* __restrict__ out, const int* __restrict__ routing, int entries,
                                                int num_experts, int in_f, int out_f, int row_div, const bf16* __restrict__ bias, int num_groups,
                                                int group_size, int bits, int fp8) {
  if (fp8) moe_gemm(x, PackedWeights<8, true>{words, scales, zeros, in_f, num_groups, group_size}, out, routing, entries, num_experts, in_f, out_f, row_div, bias);
  else if (bits == 4) moe_gemm(x, PackedWeights<4, false>{words, scales, zeros, in_f, num_groups, group_size}, out, routing, entries, num_experts, in_f, out_f, row_div, bias);
  else moe_gemm(x, PackedWeights<8, false>{words, scales, zeros, in_f, num_groups, group_size}, out, routing, entries, num_experts, in_f, out_f, row_div, bias);
}

// out[t, i] = Σ_j weights[t, j] · expert_out[t·top_k + j, i] (f32 sum, in top-k order). grid = (ceil(hidden / blockDim), tokens)
extern "C" __global__ void moe_combine_bf16(const bf16* __restrict__ expert_out, const float* __restrict__ weights, bf16* __restrict__ out, int top_k, int hidden) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= hidden) return;
  const size_t t = blockIdx.y;
  float s = 0.f;
  for (int j = 0; j < top_k; j++) s += weights[t * top_k + j] * to_f(expert_out[(t * top_k + j) * hidden + i]);
  out[t * hidden + i] = to_bf(s);
}

// out[t, i] += sigmoid(gate[t]) · x[t, i], rounding to bf16 as Hugging Face's bf16 ops do (Qwen2-MoE's
// shared expert). grid = (ceil(hidden / blockDim), tokens)
extern "C" __global__ void sigmoid_gated_add_bf16(const bf16* __restrict__ x, const bf16* __restrict__ gate, bf16* __restrict__ out, int hidden) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= hidden) return;
  const size_t t = blockIdx.y;
  const float s = to_f(to_bf(1.f / (1.f + __expf(-to_f(gate[t])))));
  bf16* o = out + t * hidden + i;
  *o = to_bf(to_f(*o) + to_f(to_bf(s * to_f(x[t * hidden + i]))));
}

// Prefill attention on tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate), flash-attention style,
// over the paged KV cache, causal, GQA, for any mix of sequences with cached prefixes.
// Opt-in (VBUN_PREFILL_KERNEL=mma) until a device run has checked it against paged_attention_bf16.
//
// Grid (num_seqs · tiles_per_seq, num_heads), 128 threads = 4 warps. Block (s, tile) takes 64 query tokens
// of sequence s, warp w the 16 rows [tile·64 + 16w, +16). Keys come in tiles of 64: K row-major and V
// transposed in shared memory. Fragment layouts follow the PTX ISA for m16n8k16 (.row A, .col B).
#include "common.cuh"

#define QT 64   // query rows per block
#define KT 64   // keys per tile

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D>
__device__ __forceinline__ void prefill_mma(const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
                                            bf16* __restrict__ out, const int* __restrict__ query_start, const int* __restrict__ seq_lens,
                                            const int* __restrict__ block_tables, int max_blocks_per_seq, int block_size, int tiles_per_seq,
                                            int num_heads, int num_kv_heads, float scale, int window, float softcap, const float* __restrict__ sinks) {
  __shared__ __align__(16) bf16 k_s[KT][D + 8];   // +8: shift rows across banks
  __shared__ __align__(16) bf16 vt_s[D][KT + 8];
  const int s = blockIdx.x / tiles_per_seq, tile = blockIdx.x % tiles_per_seq, h = blockIdx.y;
  const int q0 = query_start[s], q_len = query_start[s + 1] - q0;
  if (tile * QT >= q_len) return;
  const int ctx = seq_lens[s], base = ctx - q_len;  // query row r sits at position base + r
  const int kvh = h / (num_heads / num_kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = (lane & 3) * 2;
  const int row0 = tile * QT + warp * 16;  // this warp's first query row within the sequence
  const size_t stride = (size_t)(num_heads + 2 * num_kv_heads) * D;
  const int kv_stride = num_kv_heads * D;
  const int* table = block_tables + (size_t)s * max_blocks_per_seq;

  // Q fragments (A operand), one per 16 dims. Rows past q_len load zeros.
  unsigned qa[D / 16][4];
  {
    const bool v0 = row0 + g < q_len, v1 = row0 + g + 8 < q_len;
    const bf16* r0 = qkv + (size_t)(q0 + row0 + g) * stride + (size_t)h * D;
    const bf16* r1 = r0 + 8 * stride;
#pragma unroll
    for (int k = 0; k < D / 16; k++) {
      const int d = k * 16 + c;
      qa[k][0] = v0 ? *reinterpret_cast<const unsigned*>(r0 + d) : 0u;
      qa[k][1] = v1 ? *reinterpret_cast<const unsigned*>(r1 + d) : 0u;
      qa[k][2] = v0 ? *reinterpret_cast<const unsigned*>(r0 + d + 8) : 0u;
      qa[k][3] = v1 ? *reinterpret_cast<const unsigned*>(r1 + d + 8) : 0u;
    }
  }
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  // An attention sink (GPT-OSS) starts each row's softmax: one more score, with a zero value row.
  const float sink = sinks != nullptr ? sinks[h] : -INFINITY;
  float m0 = sink, m1 = sink, l0 = sinks != nullptr ? 1.f : 0.f, l1 = l0;
  const int pos0 = base + row0 + g, pos1 = pos0 + 8;  // positions of this thread's two rows
  // Keys needed by the block: up to the position of its last query row, and with a sliding window W from
  // the first key its first row sees (a key is visible to the row at position p when p − W < key ≤ p).
  const int last = base + min(q_len, (tile + 1) * QT) - 1;
  const int first = window > 0 ? max(0, base + tile * QT - window + 1) : 0;
  const int lo0 = window > 0 ? pos0 - window : -1, lo1 = window > 0 ? pos1 - window : -1;

  for (int k0 = first - first % KT; k0 <= last; k0 += KT) {
    __syncthreads();
    // Load K (row-major) and V (transposed) for keys [k0, k0 + KT): 8 dims per access.
    for (int i = threadIdx.x; i < KT * (D / 8); i += blockDim.x) {
      const int j = i / (D / 8), d = (i % (D / 8)) * 8, key = k0 + j;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (key <= last) {
        const int slot = table[key / block_size] * block_size + key % block_size;
        kv = *reinterpret_cast<const uint4*>(k_cache + (size_t)slot * kv_stride + kvh * D + d);
        vv = *reinterpret_cast<const uint4*>(v_cache + (size_t)slot * kv_stride + kvh * D + d);
      }
      *reinterpret_cast<uint4*>(&k_s[j][d]) = kv;
      const bf16* vb = reinterpret_cast<const bf16*>(&vv);
#pragma unroll
      for (int e = 0; e < 8; e++) vt_s[d + e][j] = vb[e];
    }
    __syncthreads();

    // S = Q·Kᵀ for 8 tiles of 8 keys.
    float sc[KT / 8][4];
#pragma unroll
    for (int n = 0; n < KT / 8; n++) {
      sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
      for (int k = 0; k < D / 16; k++) {
        const bf16* kr = &k_s[n * 8 + g][k * 16 + c];
        mma_bf16(sc[n], qa[k], *reinterpret_cast<const unsigned*>(kr), *reinterpret_cast<const unsigned*>(kr + 8));
      }
    }
    // Scale, causal mask, row maxima (a row's values are spread over the 4 lanes of a quad).
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < KT / 8; n++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int key = k0 + n * 8 + c + e;
        sc[n][e] = key <= pos0 && key > lo0 ? soft_cap(sc[n][e] * scale, softcap) : -INFINITY;
        sc[n][2 + e] = key <= pos1 && key > lo1 ? soft_cap(sc[n][2 + e] * scale, softcap) : -INFINITY;
        mx0 = fmaxf(mx0, sc[n][e]);
        mx1 = fmaxf(mx1, sc[n][2 + e]);
      }
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, x));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, x));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    // Rows with nothing visible yet (padding rows) keep −inf maxima: use 0 as the offset to avoid NaN.
    const float off0 = n0 == -INFINITY ? 0.f : n0, off1 = n1 == -INFINITY ? 0.f : n1;
    const float f0 = __expf(m0 - off0), f1 = __expf(m1 - off1);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int n = 0; n < KT / 8; n++) {
      sc[n][0] = __expf(sc[n][0] - off0); sc[n][1] = __expf(sc[n][1] - off0);
      sc[n][2] = __expf(sc[n][2] - off1); sc[n][3] = __expf(sc[n][3] - off1);
      s0 += sc[n][0] + sc[n][1];
      s1 += sc[n][2] + sc[n][3];
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, x);
      s1 += __shfl_xor_sync(0xffffffffu, s1, x);
    }
    l0 = l0 * f0 + s0;
    l1 = l1 * f1 + s1;
    m0 = n0;
    m1 = n1;
#pragma unroll
    for (int n = 0; n < D / 8; n++) { o[n][0] *= f0; o[n][1] *= f0; o[n][2] *= f1; o[n][3] *= f1; }
    // O += P·V: P's accumulator layout is the A layout of the next product (two key tiles per 16 keys).
#pragma unroll
    for (int kk = 0; kk < KT / 16; kk++) {
      const unsigned pa[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                              pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]), pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        const bf16* vr = &vt_s[n * 8 + g][kk * 16 + c];
        mma_bf16(o[n], pa, *reinterpret_cast<const unsigned*>(vr), *reinterpret_cast<const unsigned*>(vr + 8));
      }
    }
  }
  // Normalise and store the valid rows.
  const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
  bf16* out0 = out + (size_t)(q0 + row0 + g) * num_heads * D + (size_t)h * D;
  bf16* out1 = out0 + (size_t)8 * num_heads * D;
#pragma unroll
  for (int n = 0; n < D / 8; n++) {
    const int d = n * 8 + c;
    if (row0 + g < q_len) *reinterpret_cast<__nv_bfloat162*>(out0 + d) = __floats2bfloat162_rn(o[n][0] * i0, o[n][1] * i0);
    if (row0 + g + 8 < q_len) *reinterpret_cast<__nv_bfloat162*>(out1 + d) = __floats2bfloat162_rn(o[n][2] * i1, o[n][3] * i1);
  }
}

#define PREFILL_MMA(D)                                                                                                             \
  extern "C" __global__ void __launch_bounds__(128) paged_prefill_mma_d##D##_bf16(                                                 \
      const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, bf16* __restrict__ out,    \
      const int* __restrict__ query_start, const int* __restrict__ seq_lens, const int* __restrict__ block_tables,                  \
      int max_blocks_per_seq, int block_size, int tiles_per_seq, int num_heads, int num_kv_heads, float scale, int window,         \
      float softcap, const float* __restrict__ sinks) {                                                                             \
    prefill_mma<D>(qkv, k_cache, v_cache, out, query_start, seq_lens, block_tables, max_blocks_per_seq, block_size, tiles_per_seq, \
                   num_heads, num_kv_heads, scale, window, softcap, sinks);                                                          \
  }

PREFILL_MMA(64)
PREFILL_MMA(128)

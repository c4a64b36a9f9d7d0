// Per-head RMSNorm of q and k (Qwen3; skipped when the norm weights are null) followed by rotate-half
// RoPE, in place on packed qkv rows [tokens, (H + 2·Hkv)·D], and the token's k and v written to the KV
// cache at its slot (slot < 0 = skip: graph padding). Grid (tokens, H + 2·Hkv): blocks h < H are q heads,
// then Hkv k heads, then Hkv v heads (copied only). Block: D/2 threads rounded up to a multiple of 32;
// thread i < D/2 owns the pair (i, i + D/2). cos/sin: f32 [max_pos, R/2] for R = 2·rot_half rotary dimensions:
// the whole head (rot_half = D/2), or partial RoPE (Phi-4-mini), where only the first R dimensions rotate,
// i with i + R/2, and the rest pass through. Caches [slots, Hkv, D]. A norm weight is D values for every head
// (stride 0) or one row of D per head (stride D: Cohere's Command R+); centered != 0: LayerNorms without bias instead
// of RMSNorms, the weight multiplied in f32 and the result rounded once (CohereLayerNorm).
#include "common.cuh"

extern "C" __global__ void qk_norm_rope_store_bf16(bf16* __restrict__ qkv, const int* __restrict__ positions, const int* __restrict__ slots,
                                                   const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                                   const bf16* __restrict__ q_norm, const bf16* __restrict__ k_norm,
                                                   bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                                   int num_heads, int num_kv_heads, int head_dim, int rot_half, float eps,
                                                   int q_norm_stride, int k_norm_stride, int centered) {
  __shared__ float scratch[32];
  const int t = blockIdx.x, h = blockIdx.y, half = head_dim >> 1, i = threadIdx.x;
  const bool active = i < half;
  const size_t stride = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
  bf16* head = qkv + t * stride + (size_t)h * head_dim;
  const int slot = slots[t];
  const int kv_head = h - num_heads;  // k heads 0 … Hkv−1, then v heads Hkv … 2·Hkv−1
  if (kv_head >= num_kv_heads) {
    if (active && slot >= 0) {
      bf16* dst = v_cache + ((size_t)slot * num_kv_heads + (kv_head - num_kv_heads)) * head_dim;
      dst[i] = head[i];
      dst[i + half] = head[i + half];
    }
    return;
  }
  float x1 = active ? to_f(head[i]) : 0.f, x2 = active ? to_f(head[i + half]) : 0.f;
  const bf16* norm = h < num_heads ? (q_norm ? q_norm + (size_t)h * q_norm_stride : nullptr) : (k_norm ? k_norm + (size_t)kv_head * k_norm_stride : nullptr);
  if (norm != nullptr && centered) {
    const float mean = block_sum(x1 + x2, scratch) / head_dim;
    const float d1 = active ? x1 - mean : 0.f, d2 = active ? x2 - mean : 0.f;
    const float inv = rsqrtf(block_sum(d1 * d1 + d2 * d2, scratch) / head_dim + eps);
    if (active) {
      x1 = to_f(to_bf(d1 * inv * to_f(norm[i])));
      x2 = to_f(to_bf(d2 * inv * to_f(norm[i + half])));
    }
  } else if (norm != nullptr) {
    const float inv = rsqrtf(block_sum(x1 * x1 + x2 * x2, scratch) / head_dim + eps);
    if (active) {
      x1 = to_f(to_bf(to_f(to_bf(x1 * inv)) * to_f(norm[i])));
      x2 = to_f(to_bf(to_f(to_bf(x2 * inv)) * to_f(norm[i + half])));
    }
  }
  const int pos = positions[t];
  bf16* k_dst = kv_head >= 0 && slot >= 0 ? k_cache + ((size_t)slot * num_kv_heads + kv_head) * head_dim : nullptr;
  if (rot_half == half) {
    if (!active) return;
    // Rounded where Hugging Face's bf16 forward rounds (q·cos + rotate_half(q)·sin with cos/sin cast to the
    // activation dtype: each product, then the sum), so vbun and HF agree bit for bit more often.
    const float c = to_f(to_bf(cos_table[(size_t)pos * half + i])), s = to_f(to_bf(sin_table[(size_t)pos * half + i]));
    const bf16 y1 = to_bf(to_f(to_bf(x1 * c)) - to_f(to_bf(x2 * s))), y2 = to_bf(to_f(to_bf(x2 * c)) + to_f(to_bf(x1 * s)));
    head[i] = y1;
    head[i + half] = y2;
    if (k_dst != nullptr) {
      k_dst[i] = y1;
      k_dst[i + half] = y2;
    }
    return;
  }
  // Partial RoPE: the rotated pairs (j, j + rot_half) cross the threads' (i, i + half), so the (normed) head
  // goes through memory: written back, then each thread j < rot_half rotates its own pair in place (pairs
  // are disjoint), then the K head is copied once every pair is done.
  if (active) {
    head[i] = to_bf(x1);
    head[i + half] = to_bf(x2);
  }
  __syncthreads();
  if (i < rot_half) {
    const float a = to_f(head[i]), b = to_f(head[i + rot_half]);
    const float c = to_f(to_bf(cos_table[(size_t)pos * rot_half + i])), s = to_f(to_bf(sin_table[(size_t)pos * rot_half + i]));
    head[i] = to_bf(to_f(to_bf(a * c)) - to_f(to_bf(b * s)));
    head[i + rot_half] = to_bf(to_f(to_bf(b * c)) + to_f(to_bf(a * s)));
  }
  __syncthreads();
  if (active && k_dst != nullptr) {
    k_dst[i] = head[i];
    k_dst[i + half] = head[i + half];
  }
}

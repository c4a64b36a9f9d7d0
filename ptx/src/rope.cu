// Per-head RMSNorm of q and k (Qwen3; skipped when the norm weights are null) followed by rotate-half
// RoPE, in place on packed qkv rows [tokens, (H + 2·Hkv)·D], and the token's k and v written to the KV
// cache at its slot (slot < 0 = skip: graph padding). Grid (tokens, H + 2·Hkv): blocks h < H are q heads,
// then Hkv k heads, then Hkv v heads (copied only). Block: D/2 threads rounded up to a multiple of 32;
// thread i < D/2 owns the pair (i, i + D/2). cos/sin: f32 [max_pos, D/2]; caches [slots, Hkv, D].
#include "common.cuh"

extern "C" __global__ void qk_norm_rope_store_bf16(bf16* __restrict__ qkv, const int* __restrict__ positions, const int* __restrict__ slots,
                                                   const float* __restrict__ cos_table, const float* __restrict__ sin_table,
                                                   const bf16* __restrict__ q_norm, const bf16* __restrict__ k_norm,
                                                   bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                                   int num_heads, int num_kv_heads, int head_dim, float eps) {
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
  const bf16* norm = h < num_heads ? q_norm : k_norm;
  if (norm != nullptr) {
    const float inv = rsqrtf(block_sum(x1 * x1 + x2 * x2, scratch) / head_dim + eps);
    if (active) {
      x1 = to_f(to_bf(to_f(to_bf(x1 * inv)) * to_f(norm[i])));
      x2 = to_f(to_bf(to_f(to_bf(x2 * inv)) * to_f(norm[i + half])));
    }
  }
  if (!active) return;
  const int pos = positions[t];
  // Rounded where Hugging Face's bf16 forward rounds (q·cos + rotate_half(q)·sin with cos/sin cast to the
  // activation dtype: each product, then the sum), so vbun and HF agree bit for bit more often.
  const float c = to_f(to_bf(cos_table[(size_t)pos * half + i])), s = to_f(to_bf(sin_table[(size_t)pos * half + i]));
  const bf16 y1 = to_bf(to_f(to_bf(x1 * c)) - to_f(to_bf(x2 * s))), y2 = to_bf(to_f(to_bf(x2 * c)) + to_f(to_bf(x1 * s)));
  head[i] = y1;
  head[i + half] = y2;
  if (kv_head >= 0 && slot >= 0) {
    bf16* dst = k_cache + ((size_t)slot * num_kv_heads + kv_head) * head_dim;
    dst[i] = y1;
    dst[i + half] = y2;
  }
}

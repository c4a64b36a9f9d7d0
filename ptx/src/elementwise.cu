// Memory-bound gathers and element-wise ops: embedding, SiLU·mul (and GELU's, GPT-OSS's clamped SwiGLU), row gather, bias, vocab unsharding,
// pending token ids, the LoRA slot mask.
#include "common.cuh"

// out[t] = table[ids[t] - vocab_start] · scale (a bf16 product, as transformers scales Gemma's embeddings), or
// zeros when the id is outside this shard's [vocab_start, vocab_start + rows) (vocab-parallel embedding; the
// shards are then all-reduced). grid = tokens
extern "C" __global__ void embedding_bf16(const int* __restrict__ ids, const bf16* __restrict__ table, bf16* __restrict__ out, int hidden, int vocab_start, int rows, float scale) {
  const int id = ids[blockIdx.x] - vocab_start;
  bf16* dst = out + (size_t)blockIdx.x * hidden;
  if (id < 0 || id >= rows) {
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = to_bf(0.f);
    return;
  }
  const bf16* src = table + (size_t)id * hidden;
  if (scale == 1.f)
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
  else
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = to_bf(to_f(src[i]) * scale);
}

// out[t, i] = silu(x[t, i]) * x[t, I + i]; grid = (ceil(I / blockDim), tokens)
extern "C" __global__ void silu_mul_bf16(const bf16* __restrict__ x, bf16* __restrict__ out, int inter) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const size_t row = blockIdx.y;
  const float g = to_f(x[row * 2 * inter + i]), u = to_f(x[row * 2 * inter + inter + i]);
  // Hugging Face: act_fn(gate) rounds to bf16 before the product.
  out[row * inter + i] = to_bf(to_f(to_bf(g / (1.f + __expf(-g)))) * u);
}

// out[t, i] = gelu_tanh(x[t, i]) * x[t, I + i] (GELU's tanh approximation, Gemma's gelu_pytorch_tanh);
// tanh(u) as 1 − 2 / (e^{2u} + 1). grid = (ceil(I / blockDim), tokens)
extern "C" __global__ void gelu_tanh_mul_bf16(const bf16* __restrict__ x, bf16* __restrict__ out, int inter) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const size_t row = blockIdx.y;
  const float g = to_f(x[row * 2 * inter + i]), u = to_f(x[row * 2 * inter + inter + i]);
  const float v = 0.7978845608f * (g + 0.044715f * g * g * g);
  const float th = 1.f - 2.f / (__expf(2.f * v) + 1.f);
  // Hugging Face: act_fn(gate) rounds to bf16 before the product.
  out[row * inter + i] = to_bf(to_f(to_bf(0.5f * g * (1.f + th))) * u);
}

// out[t, i] = (clamp(up, −limit, limit) + 1) · g · sigmoid(alpha · g) with g = min(gate, limit), gate = x[t, i] and
// up = x[t, I + i]: GPT-OSS's clamped SwiGLU (its experts), rounding to bf16 where transformers' bf16 ops do (the
// gated gate, up + 1, their product). grid = (ceil(I / blockDim), tokens)
extern "C" __global__ void swiglu_clamp_mul_bf16(const bf16* __restrict__ x, bf16* __restrict__ out, int inter, float alpha, float limit) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= inter) return;
  const size_t row = blockIdx.y;
  const float g = fminf(to_f(x[row * 2 * inter + i]), limit), u = fminf(fmaxf(to_f(x[row * 2 * inter + inter + i]), -limit), limit);
  const float glu = to_f(to_bf(g / (1.f + __expf(-alpha * g))));
  out[row * inter + i] = to_bf(to_f(to_bf(u + 1.f)) * glu);
}

// Multi-head latent attention's packed rows (src/model/mla.ts), D = rope + nope per head: qkv[t] = [q[t] | per head
// [kpe[t] | kv nope part] | per head [kv value part | zeros]]. q is [tokens, H·D], kv [tokens, H·(nope + v)], kpe
// [tokens, rope]. grid = (tokens, H), block ≥ 32 threads striding over the head's D dimensions
extern "C" __global__ void mla_assemble_bf16(const bf16* __restrict__ q, const bf16* __restrict__ kv, const bf16* __restrict__ kpe, bf16* __restrict__ qkv,
                                             int num_heads, int nope, int rope, int v_dim) {
  const int t = blockIdx.x, h = blockIdx.y, D = nope + rope, kv_w = nope + v_dim;
  const size_t row = (size_t)t * 3 * num_heads * D;
  const bf16* src = kv + ((size_t)t * num_heads + h) * kv_w;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    qkv[row + (size_t)h * D + d] = q[((size_t)t * num_heads + h) * D + d];
    qkv[row + (size_t)(num_heads + h) * D + d] = d < rope ? kpe[(size_t)t * rope + d] : src[d - rope];
    qkv[row + (size_t)(2 * num_heads + h) * D + d] = d < v_dim ? src[nope + d] : to_bf(0.f);
  }
}

// x = cap · tanh(x / cap) in place (Gemma 2's final logit soft-capping); grid = ceil(n / blockDim)
extern "C" __global__ void softcap_f32(float* __restrict__ x, float cap, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = soft_cap(x[i], cap);
}

// out[r] = x[rows[r]]; grid = number of rows
extern "C" __global__ void gather_rows_bf16(const bf16* __restrict__ x, const int* __restrict__ rows, bf16* __restrict__ out, int width) {
  const bf16* src = x + (size_t)rows[blockIdx.x] * width;
  bf16* dst = out + (size_t)blockIdx.x * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

// x[t, i] += bias[i] (bf16, rounding like a bf16 addition); grid = (ceil(width / blockDim), tokens)
extern "C" __global__ void add_bias_bf16(bf16* __restrict__ x, const bf16* __restrict__ bias, int width) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= width) return;
  bf16* p = x + (size_t)blockIdx.y * width + i;
  *p = to_bf(to_f(*p) + to_f(bias[i]));
}

// out[i] += x[i] over n values (bf16, rounding like a bf16 addition): Cohere's parallel block adds the MLP's output to
// the attention's. grid = ceil(n / blockDim)
extern "C" __global__ void add_bf16(const bf16* __restrict__ x, bf16* __restrict__ out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = to_bf(to_f(out[i]) + to_f(x[i]));
}

// Vocab-parallel logits back in vocabulary order: gathered is [ranks][slot_rows][per_rank] (an all-gather of
// each rank's [rows, width_r] block, width_r = min(per_rank, vocab − r·per_rank), stored densely at the start
// of its slot); out is [rows, vocab]. grid = (ceil(vocab / blockDim), rows)
extern "C" __global__ void unshard_vocab_f32(const float* __restrict__ gathered, float* __restrict__ out, int slot_rows, int per_rank, int vocab) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= vocab) return;
  const int r = col / per_rank, k = col - r * per_rank;
  const int width = min(per_rank, vocab - r * per_rank);
  const size_t row = blockIdx.y;
  out[row * vocab + col] = gathered[(size_t)r * slot_rows * per_rank + row * width + k];
}

// Async scheduling: token ids the host did not know when it built the step are the previous step's sampled
// ids, still on the GPU. pairs = count × (token index, sampled row); grid = ceil(count / blockDim)
extern "C" __global__ void take_sampled_tokens_i32(int* __restrict__ ids, const int* __restrict__ pairs, const int* __restrict__ sampled, int count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) ids[pairs[2 * i]] = sampled[pairs[2 * i + 1]];
}

// Block tables kept on the device between steps (full-width ones, which decode graphs read): each step uploads
// only the entries that changed. pairs = count × (index, value); grid = ceil(count / blockDim)
extern "C" __global__ void scatter_i32(int* __restrict__ dst, const int* __restrict__ pairs, int count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) dst[pairs[2 * i]] = pairs[2 * i + 1];
}

// LoRA with adapters stacked in slots of slot_width columns: u[t, c] = u[t, c] · scales[s] where c lies in
// row t's slot s = slots[t], else 0 (slot −1: the base model, no columns). grid = (ceil(width / blockDim), tokens)
extern "C" __global__ void lora_mask_bf16(bf16* __restrict__ u, const int* __restrict__ slots, const float* __restrict__ scales, int width, int slot_width) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= width) return;
  const int s = slots[blockIdx.y];
  bf16* p = u + (size_t)blockIdx.y * width + c;
  *p = (s >= 0 && c / slot_width == s) ? to_bf(to_f(*p) * scales[s]) : to_bf(0.f);
}

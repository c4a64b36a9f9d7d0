/** A Hugging Face config.json, validated and reduced to what the model code needs. */
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { fromFloat32, parseDTypeName, toFloat32, type DType } from "../loader/dtype.ts";

export type Architecture = "qwen3" | "qwen2" | "llama" | "gemma2" | "gemma3";

/**
 * rope_scaling: linear (positions / factor), Llama 3's smoothed per-frequency scaling, YaRN (Qwen's
 * long-context recipe), or LongRoPE (Phi-3.5 / Phi-4-mini: a factor per frequency).
 */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
    /**
     * LongRoPE: frequency i divided by shortFactor[i], or by longFactor[i] when the context may pass the
     * pretrained length (max-model-len > originalMaxPositionEmbeddings: vLLM's rule; transformers switches per
     * forward pass by its longest position), cos and sin then multiplied by that choice's mscale.
     */
    type: "longrope"; shortFactor: number[]; longFactor: number[]; originalMaxPositionEmbeddings: number; shortMscale: number; longMscale: number;
  }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | {
    type: "yarn"; factor: number; originalMaxPositionEmbeddings: number; betaFast: number; betaSlow: number;
    /** What cos and sin are multiplied by (attention_factor, or YaRN's mscale from the factor). */
    attentionFactor: number;
    /** Round the correction range to whole dimensions (HF's `truncate`, default true). */
    truncate: boolean;
  };

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  /** The leading dimensions of each head that RoPE rotates (head_dim × partial_rotary_factor; Phi-4-mini: ¾); the rest pass through. */
  rotaryDim: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 always; others when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama/Qwen3 when attention_bias). */
  oBias: boolean;
  /** Per-head RMSNorm on q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  torchDtype: DType;
  /** The checkpoint is the bare decoder (architectures "Qwen3Model" etc., as embedding models ship): no LM head. */
  headless: boolean;
  /** The sliding-window attention span of the layers that use one (see layerWindows), or null where none does. */
  slidingWindow: number | null;
  /**
   * Per layer, its attention window: 0 = the whole context, W = the last W positions. Mistral / Mixtral /
   * Phi-3 (sliding_window, no switch): every layer; Qwen (use_sliding_window): layers from max_window_layers
   * on; a config's layer_types ("sliding_attention" / "full_attention") says it per layer.
   */
  layerWindows: number[];
  /** A sequence classification checkpoint (…ForSequenceClassification: a score head instead of the LM head); else null. */
  classifier: ClassifierConfig | null;
  /**
   * Granite's multipliers (1, and 1/√head_dim for attention, elsewhere): the embeddings are multiplied by
   * `embedding`, each attention and MLP output by `residual` before it joins the residual stream, attention
   * scores by `attention`, and the logits divided by `logitsScaling`.
   */
  scales: { embedding: number; residual: number; attention: number; logitsScaling: number };
  /** Which layers apply RoPE (SmolLM3's no_rope_layers: 0 = none, "NoPE"); null: all of them. */
  ropeLayers: boolean[] | null;
  /** The RoPE base of the sliding-window layers where it differs from ropeTheta (Gemma 3's rope_local_base_freq, unscaled); else null. */
  localRopeTheta: number | null;
  /** The MLP's gate activation: SiLU, or the tanh approximation of GELU (Gemma's gelu_pytorch_tanh). */
  activation: "silu" | "gelu_tanh";
  /** Gemma's norms: every RMSNorm weight is stored as w with the norm multiplying by (1 + w) (folded into the weight as it loads). */
  gemmaNorms: boolean;
  /**
   * Norms of the attention and MLP outputs before they join the residual stream, with the MLP's input norm
   * named anew — Gemma 2 / 3: post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;
   * GLM-4-0414: post_self_attn_layernorm, post_attention_layernorm, post_mlp_layernorm; OLMo 2 / 3:
   * post_attention_layernorm, none, post_feedforward_layernorm. null: Llama's layout.
   */
  outputNorms: { attention: string; mlpInput: string | null; mlp: string } | null;
  /**
   * Whether each layer norms its attention's and its MLP's inputs (input_layernorm, and post_attention_layernorm
   * or outputNorms.mlpInput). OLMo 2 / 3: false, the sublayers read the residual stream and their outputs are
   * normed instead (outputNorms, mlpInput null).
   */
  inputNorms: boolean;
  /** OLMo 2 / 3: q_norm and k_norm span the whole q and k projections (all heads at once) instead of each head. */
  qkNormAcrossHeads: boolean;
  /** Cohere's Command R+ (use_qk_norm): q_norm and k_norm norm each head with a weight of its own ([heads, head_dim]). */
  qkNormWeightPerHead: boolean;
  /**
   * Cohere's norms are LayerNorms without a bias: the mean is subtracted before the root mean square is taken, and
   * the weight multiplies in f32 (one rounding). rmsNormEps is their layer_norm_eps.
   */
  layerNorm: boolean;
  /**
   * Cohere's parallel block: the attention and the MLP both read the layer's one normed input, and both outputs join
   * the residual stream together (no post_attention_layernorm).
   */
  parallelBlock: boolean;
  /**
   * GLM's RoPE pairs dimensions (2i, 2i + 1) of the rotated ones instead of (i, i + R/2): q and k rows are
   * permuted as they load so that the kernels' rotate-half form applies (interleavedRopeSource).
   */
  ropeInterleaved: boolean;
  /** Gemma 2's soft-capping: attention scores become cap·tanh(score / cap), and so do the final logits; null: none. */
  attnLogitSoftcap: number | null;
  finalLogitSoftcap: number | null;
  /** Mixture of experts (Qwen3-MoE, Qwen2-MoE, Mixtral, Granite MoE): which layers route each token to experts, and how; null: every MLP is dense. */
  moe: MoeConfig | null;
  /** DeepSeek-V2 / V3's multi-head latent attention (MLA); null elsewhere. headDim is then qk_nope + qk_rope, rotaryDim qk_rope. */
  mla: MlaConfig | null;
  /** GPT-OSS's attention sinks: each layer's self_attn.sinks, a logit per query head that joins its softmax (Backend.pagedAttention). */
  attentionSinks: boolean;
  /** GPT-OSS: its answers are OpenAI Harmony messages (channels; src/server/harmony.ts), read so by default. */
  harmony: boolean;
  /** Matryoshka embeddings (is_matryoshka / matryoshka_dimensions): sizes a request may cut them to; "any"; or null. */
  matryoshkaDimensions: number[] | "any" | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/**
 * A sparse MLP: a router (gate, [numExperts, hidden]) scores the experts, softmax in f32, and each token goes
 * through its topK best (ties: the lower expert id), their outputs weighted by those probabilities —
 * renormalized to sum 1 when `normTopK` (Mixtral always; Qwen's norm_topk_prob). Each expert is a SiLU-gated
 * MLP of `intermediateSize`. Qwen2-MoE adds a shared expert every token takes, its output times
 * sigmoid(shared_expert_gate · x).
 */
export interface MoeConfig {
  numExperts: number;
  topK: number;
  intermediateSize: number;
  normTopK: boolean;
  /** Per layer: experts (true) or the dense MLP of intermediate_size (Qwen's decoder_sparse_step, mlp_only_layers). */
  sparseLayers: boolean[];
  /** Qwen2-MoE's shared expert: its intermediate size; 0 where there is none. */
  sharedExpertIntermediateSize: number;
  /**
   * GLM-4.5 / DeepSeek-V3 routing instead of the softmax: sigmoid scores (ERNIE 4.5: softmax ones), the topK experts by score +
   * e_score_correction_bias among the topKGroups best of numGroups groups, weighted by their scores (renormalized
   * when normTopK) × routedScalingFactor; router logits in f32. null: softmax routing.
   */
  grouped: {
    numGroups: number; topKGroups: number; routedScalingFactor: number; scoring?: "sigmoid" | "softmax";
    /** A group's score: its two best (the default) or its best (DeepSeek-V2's group_limited_greedy). */
    groupScore?: "top2" | "max";
    /** false: no e_score_correction_bias (DeepSeek-V2): experts are chosen by score alone. */
    correctionBias?: boolean;
  } | null;
  /** GLM-4.5's shared experts (n_shared_experts MLPs of intermediateSize every token takes, weight 1): run as that many extra experts. */
  numSharedExperts: number;
  /**
   * DeepSeek-V2's routed_scaling_factor under softmax routing: the routed experts' weighted sum × it (folded into their
   * down projections as they load; the shared experts keep theirs); 1 elsewhere (grouped routing scales its weights).
   */
  routedOutputScale: number;
  /** GPT-OSS: the router is a linear layer with a bias (mlp.router.bias). */
  routerBias: boolean;
  /** GPT-OSS: each expert's gate/up and down projections have biases. */
  expertBiases: boolean;
  /** GPT-OSS's clamped SwiGLU (swiglu_alpha, swiglu_limit) in place of SiLU(gate) · up; null: SiLU. */
  swiglu: { alpha: number; limit: number } | null;
  /**
   * Checkpoint names: Qwen's mlp.gate / mlp.experts.E.{gate,up,down}_proj, Mixtral's block_sparse_moe.gate /
   * experts.E.w1,w3,w2, or Granite's block_sparse_moe.router.layer / input_linear [E, 2I, H] / output_linear [E, H, I];
   * transformers 5 saves Qwen's and Mixtral's experts fused too (mlp.experts.gate_up_proj, mlp.experts.down_proj).
   * GPT-OSS: mlp.router, and mlp.experts.gate_up_proj [E, H, 2I] (gate and up columns interleaved) / down_proj
   * [E, I, H] stored input-major, or as MXFP4 blocks output-major (src/model/gpt-oss-experts.ts). MiniMax-M2: Mixtral's
   * names (block_sparse_moe.gate, experts.E.w1/w3/w2, or transformers 5's mlp. and fused experts), its correction bias
   * beside the gate (e_score_correction_bias). ERNIE 4.5: Qwen's names, mlp.shared_experts, and the correction bias as
   * mlp.moe_statics.e_score_correction_bias [1, E].
   */
  naming: "qwen" | "mixtral" | "granite" | "glm4_moe" | "gpt_oss" | "minimax" | "ernie";
}

/**
 * Multi-head latent attention (DeepSeek-V2 / V3, Kimi K2): q from x (q_proj, or q_a_proj → q_a_layernorm → q_b_proj
 * with a q_lora_rank); kv_a_proj_with_mqa gives a latent of kv_lora_rank (normed by kv_a_layernorm) and one
 * rotary key part shared by all heads; kv_b_proj turns the latent into each head's key (qk_nope_head_dim) and
 * value (v_head_dim). RoPE covers qk_rope_head_dim, its pairs interleaved (rope_interleave). Scores are scaled by
 * 1/√(qk_nope + qk_rope) × `scale` (YaRN's mscale(factor, mscale_all_dim)², 1 without it).
 */
export interface MlaConfig {
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  scale: number;
}

/** The most experts a model may have (the CUDA routing kernels keep a counter per expert in shared memory). */
export const MAX_EXPERTS = 1024;

/**
 * What a sequence classifier's head is: `numLabels` rows applied to the last token's final-norm hidden state.
 * The rows are the checkpoint's score.weight, or — vLLM's online conversion of a reranker trained as a causal
 * LM (Qwen3-Reranker: classifier_from_token ["no", "yes"], is_original_qwen3_reranker) — rows of its LM head:
 * "from_2_way_softmax" makes one label, row[tokens[1]] − row[tokens[0]] (softmax over the two logits, seen as
 * a sigmoid); "no_post_processing" takes one label per token.
 */
export interface ClassifierConfig {
  numLabels: number;
  /** id2label, in label order (LABEL_i where the config names none). */
  labels: string[];
  /** HF's problem_type: how logits become scores ("regression" leaves them as they are). */
  problemType: "regression" | "single_label_classification" | "multi_label_classification" | null;
  fromTokens: { tokens: string[]; method: "from_2_way_softmax" | "no_post_processing" } | null;
}

const ARCHITECTURES: Record<string, Architecture> = {
  Qwen3ForCausalLM: "qwen3",
  Qwen2ForCausalLM: "qwen2",
  LlamaForCausalLM: "llama",
  // IBM Granite 3.x: the Llama decoder with multipliers (ModelConfig.scales).
  GraniteForCausalLM: "llama",
  // Microsoft Phi-3 / Phi-4: the Llama decoder, its q/k/v and gate/up stored fused (qkv_proj, gate_up_proj).
  Phi3ForCausalLM: "llama",
  // Hugging Face's SmolLM3: the Llama decoder where some layers use no rotary embedding (ModelConfig.ropeLayers).
  SmolLM3ForCausalLM: "llama",
  // Mistral 7B / Mistral-Nemo: the Llama decoder (with sliding-window attention where its config sets sliding_window).
  MistralForCausalLM: "llama",
  // Google's Gemma 3 (text: the 1B and 270M checkpoints): sandwich norms, GELU-tanh MLP, sliding-window layers with their own RoPE base.
  Gemma3ForCausalLM: "gemma3",
  // Gemma 2: Gemma 3's layout without q/k norms, with soft-capped attention scores and logits; layers alternate sliding and global.
  Gemma2ForCausalLM: "gemma2",
  // Zhipu's GLM-4 (glm-4-9b-chat-hf) and GLM-4-0414 / GLM-Z1 (Glm4, with norms of the attention and MLP outputs): the
  // Llama decoder with q/k/v bias, fused gate/up, and RoPE over half of each head, its pairs interleaved.
  GlmForCausalLM: "llama",
  Glm4ForCausalLM: "llama",
  // ByteDance's Seed-OSS: the Llama decoder with q/k/v bias (attention_bias) and o_proj's own switch (attention_out_bias).
  SeedOssForCausalLM: "llama",
  // Baidu's ERNIE 4.5 (the dense ones, e.g. ERNIE-4.5-0.3B): the Llama decoder with GLM's interleaved RoPE pairs over
  // the whole head.
  Ernie4_5ForCausalLM: "llama",
  // ERNIE 4.5's MoE models (ERNIE-4.5-21B-A3B, -300B-A47B): that decoder, its MLPs from moe_layer_start_index on
  // experts chosen by softmax score + a correction bias (moe_statics), renormalized, beside shared experts.
  Ernie4_5_MoeForCausalLM: "llama",
  // DeepSeek-V3 / R1 and Kimi K2: multi-head latent attention (ModelConfig.mla) and GLM-4.5's experts (sigmoid routing with a
  // correction bias within groups, shared experts, first_k_dense_replace dense layers).
  DeepseekV3ForCausalLM: "llama",
  // MiniMax-M2: GQA attention with q/k norms over whole projections (as OLMo's) and RoPE over rotary_dim of each head;
  // every MLP GLM-4.5-style experts in one group (sigmoid scores, correction bias, renormalized).
  MiniMaxM2ForCausalLM: "llama",
  // DeepSeek-V2 / V2-Lite / V2.5: the same attention, experts chosen by softmax (top-k, × routed_scaling_factor) beside shared ones.
  DeepseekV2ForCausalLM: "llama",
  // Zhipu's GLM-4.5 / 4.6 (and -Air): GQA attention with q/k/v bias over half of each head (rotate-half pairs, unlike
  // GLM-4's), then DeepSeek-V3-style experts: sigmoid routing with a correction bias within groups, shared experts,
  // the first first_k_dense_replace layers dense (ModelConfig.moe.grouped).
  Glm4MoeForCausalLM: "llama",
  // AllenAI's OLMo 2 and OLMo 3: the Llama decoder with its norms after the attention and the MLP instead of
  // before (ModelConfig.inputNorms), and q/k norms over whole projections (qkNormAcrossHeads); OLMo 3 slides
  // three layers of four (window 4096) and scales RoPE on the global layers only, as vLLM does.
  Olmo2ForCausalLM: "llama",
  Olmo3ForCausalLM: "llama",
  // AllenAI's OLMoE (OLMoE-1B-7B): the Llama decoder's pre-norms with OLMo 2's q/k norms over whole projections; every
  // MLP experts chosen by softmax, top k, renormalized only where norm_topk_prob says (not by default).
  OlmoeForCausalLM: "llama",
  // LG's EXAONE 4.0: OLMo 2's layer (norms after the attention and the MLP), per-head q/k norms, three sliding layers
  // of four whose RoPE is the only one (the global layers use none, "NoPE") when the model slides at all.
  Exaone4ForCausalLM: "llama",
  // OpenAI's gpt-oss-20b / 120b: GQA attention with q/k/v/o biases and a learnt sink per head, sliding (128) and
  // global layers alternating, YaRN; every MLP a mixture of experts (a router with a bias, softmax over the top-k
  // logits, experts with biases and a clamped SwiGLU), stored as MXFP4 or bf16.
  GptOssForCausalLM: "llama",
  // Gemma 3 4B / 12B / 27B: the multimodal checkpoints, served as text models (their language model; the
  // vision tower is not loaded).
  Gemma3ForConditionalGeneration: "gemma3",
  // Cohere's Command R (v01, 08-2024) and Aya Expanse / Aya 23: a parallel block (the attention and the MLP on one
  // LayerNorm's output, added to the stream together), LayerNorms without bias, RoPE with interleaved pairs over the
  // whole head, logits × logit_scale, tied embeddings; Command R+'s q and k LayerNorms per head (use_qk_norm).
  CohereForCausalLM: "llama",
  // Cohere's Command R7B and Command A: that block, three sliding layers of four (window 4096) whose RoPE is the only
  // one — the global layers use none.
  Cohere2ForCausalLM: "llama",
  // Mistral Small 3.1 (and the checkpoints built on it): served as its Mistral language model, no vision tower.
  Mistral3ForConditionalGeneration: "llama",
  // Cohere's Aya Vision 8B / 32B: served as their Cohere 2 / Cohere language models (read as those), no vision tower.
  AyaVisionForConditionalGeneration: "llama",
  // OpenGVLab's InternVL 3 / 3.5 (InternVLChatModel) and transformers' "-hf" copies: served as their Qwen2 / Qwen3 /
  // Llama language models (read as those), no vision tower.
  InternVLForConditionalGeneration: "llama",
  InternVLChatModel: "llama",
  // Qwen's vision-language models, served as text models (their language model; no vision tower): Qwen2-VL and
  // Qwen2.5-VL (Qwen2's decoder), Qwen3-VL (Qwen3's). For text, M-RoPE's three position sections are equal: plain RoPE.
  Qwen2VLForConditionalGeneration: "qwen2",
  Qwen2_5_VLForConditionalGeneration: "qwen2",
  Qwen3VLForConditionalGeneration: "qwen3",
  // Mixtures of experts: Qwen3-MoE (Qwen3's attention), Qwen2-MoE / Qwen1.5-MoE (Qwen2's, with a shared
  // expert), Mixtral (Mistral's): ModelConfig.moe.
  Qwen3MoeForCausalLM: "qwen3",
  Qwen2MoeForCausalLM: "qwen2",
  MixtralForCausalLM: "llama",
  // IBM Granite 3.x MoE (granite-3.1-1b-a400m, 3b-a800m): Granite's multipliers with a sparse MLP (softmax over the top-k logits).
  GraniteMoeForCausalLM: "llama",
  // The bare decoders (no LM head), as sentence-transformers embedding models are saved.
  Qwen3Model: "qwen3",
  Qwen2Model: "qwen2",
  LlamaModel: "llama",
  // Sequence classifiers (rerankers, reward-style scorers): the decoder with a score head.
  Qwen3ForSequenceClassification: "qwen3",
  Qwen2ForSequenceClassification: "qwen2",
  LlamaForSequenceClassification: "llama",
};

export class ConfigError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "ConfigError";
  }
}

function idList(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

export function parseModelConfig(raw: Record<string, unknown>, file = "config.json"): ModelConfig {
  if (Array.isArray(raw.architectures) && raw.architectures[0] === "Gemma3ForConditionalGeneration") raw = gemma3TextConfig(raw, file);
  else if (Array.isArray(raw.architectures) && QWEN_VL.has(String(raw.architectures[0]))) raw = qwenVlTextConfig(raw, file);
  else if (Array.isArray(raw.architectures) && raw.architectures[0] === "Mistral3ForConditionalGeneration") raw = mistral3TextConfig(raw, file);
  else if (Array.isArray(raw.architectures) && raw.architectures[0] === "AyaVisionForConditionalGeneration") raw = ayaVisionTextConfig(raw, file);
  else if (Array.isArray(raw.architectures) && (raw.architectures[0] === "InternVLForConditionalGeneration" || raw.architectures[0] === "InternVLChatModel")) raw = internVlTextConfig(raw, file);
  else if (Array.isArray(raw.architectures) && raw.architectures[0] === "GptOssForCausalLM") raw = gptOssDefaults(raw);
  const archs = raw.architectures;
  if (!Array.isArray(archs) || archs.length === 0) throw new ConfigError(file, "missing 'architectures'");
  const architecture = ARCHITECTURES[String(archs[0])];
  if (!architecture) throw new ConfigError(file, `unsupported architecture '${archs[0]}' (supported: ${Object.keys(ARCHITECTURES).join(", ")})`);

  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw new ConfigError(file, `field '${key}' must be a positive integer, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  /** `v`, a positive number read from `field` (named as the file spells it). */
  const positive = (v: unknown, field: string): number => {
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new ConfigError(file, `field '${field}' must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (key: string, fallback: number): number => positive(raw[key] ?? fallback, key);

  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  // DeepSeek's multi-head latent attention: every head gets its own K and V back from the latent (numKvHeads = heads).
  const mla = parseMla(raw, String(archs[0]), int, file);
  const numKvHeads = mla ? numHeads : int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) throw new ConfigError(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const headDim = mla ? mla.qkNopeHeadDim + mla.qkRopeHeadDim : raw.head_dim == null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new ConfigError(file, `head_dim must be an even integer, got ${headDim}`);

  const gemma = architecture === "gemma3" || architecture === "gemma2";
  // Gemma names its activation hidden_activation (its hidden_act is a legacy field).
  const act = (gemma ? raw.hidden_activation ?? raw.hidden_act : raw.hidden_act) ?? "silu";
  if (act !== "silu" && act !== "gelu_pytorch_tanh") throw new ConfigError(file, `unsupported hidden_act '${act}' (silu, or gelu_pytorch_tanh)`);
  if (raw.use_bidirectional_attention === true) throw new ConfigError(file, "use_bidirectional_attention=true is not supported (causal attention only)");
  if (raw.mlp_bias === true) throw new ConfigError(file, "mlp_bias=true is not supported");
  const rope = readRopeFields(raw, file);
  const glm = archs[0] === "GlmForCausalLM" || archs[0] === "Glm4ForCausalLM", glm4moe = archs[0] === "Glm4MoeForCausalLM", ernie = archs[0] === "Ernie4_5ForCausalLM" || archs[0] === "Ernie4_5_MoeForCausalLM";
  if (ernie && raw.use_bias === true) throw new ConfigError(file, "use_bias=true (biases on every projection, the MLP's too) is not supported");
  const olmo = archs[0] === "Olmo2ForCausalLM" || archs[0] === "Olmo3ForCausalLM", olmo3 = archs[0] === "Olmo3ForCausalLM";
  const exaone4 = archs[0] === "Exaone4ForCausalLM";
  const olmoe = archs[0] === "OlmoeForCausalLM";
  if (olmoe && raw.clip_qkv != null) throw new ConfigError(file, `clip_qkv=${JSON.stringify(raw.clip_qkv)} is not supported (q, k and v clamped before the norms)`);
  const cohere2 = archs[0] === "Cohere2ForCausalLM", cohere = archs[0] === "CohereForCausalLM" || cohere2;
  // Cohere2Config's sliding_window is 4096 where the file leaves it out.
  if (cohere2 && raw.sliding_window === undefined) raw = { ...raw, sliding_window: 4096 };
  // OLMo 2's layer (EXAONE 4.0's too): norms after the attention and the MLP, none before.
  const postNorms = olmo || exaone4;
  // Olmo3Config's and Exaone4Config's sliding_window is 4096 where the file leaves it out (null: none).
  if ((olmo3 || exaone4) && raw.sliding_window === undefined) raw = { ...raw, sliding_window: 4096 };
  // GlmConfig's and Glm4MoeConfig's default partial_rotary_factor is 0.5.
  const partial = mla ? 1 : rope.partialRotaryFactor ?? (glm || glm4moe ? 0.5 : 1);
  if (typeof partial !== "number" || !(partial > 0 && partial <= 1)) throw new ConfigError(file, `field 'partial_rotary_factor' must be a number in (0, 1], got ${JSON.stringify(partial)}`);
  // Transformers' int(head_dim × partial_rotary_factor); rotate-half pairs dimension i with i + rotaryDim / 2. MLA: the
  // heads' qk_rope_head_dim part (laid out first in each head, see src/model/mla.ts).
  const minimax = archs[0] === "MiniMaxM2ForCausalLM";
  // MiniMax-M2's config.json names the rotated width itself (rotary_dim).
  const rotaryDim = mla ? mla.qkRopeHeadDim : minimax && raw.rotary_dim != null ? int("rotary_dim") : Math.trunc(headDim * partial);
  if (minimax && raw.use_qk_norm === false) throw new ConfigError(file, "use_qk_norm=false is not supported for MiniMax-M2 (its q/k norms span the whole projections)");
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) throw new ConfigError(file, `partial_rotary_factor ${partial} gives ${rotaryDim} rotary dimensions of head_dim ${headDim}: RoPE needs an even number`);
  const numLayers = int("num_hidden_layers");
  // Gemma without layer_types: every sliding_window_pattern-th layer is global (Gemma 2: every second), the others slide.
  // OLMo 3 without layer_types: every fourth layer global, the others sliding (Olmo3Config's default).
  // Cohere 2 without layer_types: every sliding_window_pattern-th layer (default 4) global.
  const pattern = raw.layer_types == null ? (gemma ? (architecture === "gemma2" ? 2 : int("sliding_window_pattern", 6)) : olmo3 ? 4 : cohere2 ? int("sliding_window_pattern", 4) : 0) : 0;
  const layerWindows = parseLayerWindows(pattern ? { ...raw, layer_types: Array.from({ length: numLayers }, (_, l) => ((l + 1) % pattern ? "sliding_attention" : "full_attention")) }
    : exaone4 && raw.layer_types == null ? { ...raw, layer_types: exaone4LayerTypes(raw, numLayers, file) } : raw, numLayers, int, file);
  const slidingWindow = layerWindows.some((w) => w > 0) ? int("sliding_window") : null;

  const attentionBias = raw.attention_bias === true;
  const gptOss = archs[0] === "GptOssForCausalLM";
  const torchDtypeName = (raw.torch_dtype ?? raw.dtype ?? "bfloat16") as string;
  let torchDtype: DType;
  try { torchDtype = parseDTypeName(String(torchDtypeName)); } catch (e) { throw new ConfigError(file, `field 'torch_dtype': ${(e as Error).message}`); }

  const matryoshka = Array.isArray(raw.matryoshka_dimensions) && raw.matryoshka_dimensions.every((d) => Number.isInteger(d) && d > 0)
    ? (raw.matryoshka_dimensions as number[]) : raw.is_matryoshka === true ? "any" as const : null;
  return {
    architecture,
    headless: String(archs[0]).endsWith("Model"),
    classifier: parseClassifier(raw, String(archs[0]), file),
    slidingWindow,
    layerWindows,
    matryoshkaDimensions: matryoshka,
    moe: parseMoe(raw, String(archs[0]), int("num_hidden_layers"), int, file),
    mla,
    attentionSinks: gptOss,
    harmony: gptOss,
    // EXAONE 4.0 with sliding layers: only they rotate.
    // Cohere 2: only the sliding layers rotate (Cohere2Attention applies RoPE where it has a sliding window).
    ropeLayers: (exaone4 && layerWindows.some((w) => w > 0)) || cohere2 ? layerWindows.map((w) => w > 0) : parseRopeLayers(raw.no_rope_layers, int("num_hidden_layers"), file),
    scales: {
      // Gemma scales the embeddings by √hidden_size, rounded to the checkpoint's dtype as transformers does.
      embedding: gemma ? roundTo(Math.sqrt(hiddenSize), torchDtype) : num("embedding_multiplier", 1), residual: num("residual_multiplier", 1),
      attention: gemma ? 1 / Math.sqrt(num("query_pre_attn_scalar", headDim)) : mla ? mla.scale / Math.sqrt(headDim)
        : raw.attention_multiplier == null ? 1 / Math.sqrt(headDim) : num("attention_multiplier", 1),
      // Cohere multiplies the logits by logit_scale (0.0625 by default): a divisor here, as Granite's logits_scaling.
      logitsScaling: cohere ? 1 / num("logit_scale", 0.0625) : num("logits_scaling", 1),
    },
    // OLMo 3: the sliding layers rotate without the rope_scaling of the global ones (vLLM's reading).
    localRopeTheta: architecture === "gemma3" ? positive(rope.localTheta ?? 10000, rope.localThetaField) : olmo3 && rope.scaling != null ? positive(rope.theta ?? 10000, rope.thetaField) : null,
    attnLogitSoftcap: raw.attn_logit_softcapping == null ? null : num("attn_logit_softcapping", 1),
    finalLogitSoftcap: raw.final_logit_softcapping == null ? null : num("final_logit_softcapping", 1),
    activation: act === "silu" ? "silu" : "gelu_tanh",
    gemmaNorms: gemma,
    outputNorms: gemma ? { attention: "post_attention_layernorm", mlpInput: "pre_feedforward_layernorm", mlp: "post_feedforward_layernorm" }
      : archs[0] === "Glm4ForCausalLM" ? { attention: "post_self_attn_layernorm", mlpInput: "post_attention_layernorm", mlp: "post_mlp_layernorm" }
      : postNorms ? { attention: "post_attention_layernorm", mlpInput: null, mlp: "post_feedforward_layernorm" } : null,
    inputNorms: !postNorms,
    qkNormAcrossHeads: olmo || minimax || olmoe,
    qkNormWeightPerHead: cohere && raw.use_qk_norm === true,
    layerNorm: cohere,
    parallelBlock: cohere,
    ropeInterleaved: glm || ernie || cohere,
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int("vocab_size"),
    maxPositionEmbeddings: int("max_position_embeddings", 2048),
    // Olmo2Config's and GptOssConfig's default is 1e-5.
    rmsNormEps: cohere ? num("layer_norm_eps", 1e-5) : num("rms_norm_eps", postNorms || gptOss || olmoe ? 1e-5 : 1e-6),
    // MiniMaxM2Config's default base is 5e6.
    ropeTheta: positive(rope.theta ?? (minimax ? 5e6 : ernie ? 500000 : 10000), rope.thetaField),
    ropeScaling: parseRopeScaling(rope.scaling, file, rope.scalingField, {
      maxPositionEmbeddings: int("max_position_embeddings", 2048), originalMaxPositionEmbeddings: raw.original_max_position_embeddings, rotaryDim,
    }),
    rotaryDim,
    // Ernie4_5Config's and Ernie4_5_MoeConfig's tie_word_embeddings is true where the file leaves it out.
    // So is CohereConfig's and Cohere2Config's.
    tieWordEmbeddings: ernie || cohere ? raw.tie_word_embeddings !== false : raw.tie_word_embeddings === true,
    qkvBias: architecture === "qwen2" ? true : attentionBias,
    // GLM's attention_bias covers q/k/v only.
    oBias: architecture === "qwen2" || glm || glm4moe ? false : archs[0] === "SeedOssForCausalLM" ? raw.attention_out_bias === true : attentionBias,
    qkNorm: architecture === "qwen3" || architecture === "gemma3" || postNorms || minimax || olmoe || ((glm4moe || cohere) && raw.use_qk_norm === true),
    torchDtype,
    bosTokenId: typeof raw.bos_token_id === "number" ? raw.bos_token_id : null,
    eosTokenIds: idList(raw.eos_token_id),
  };
}

function parseClassifier(raw: Record<string, unknown>, arch: string, file: string): ClassifierConfig | null {
  const tokens = raw.classifier_from_token;
  if (!arch.endsWith("ForSequenceClassification")) {
    if (tokens != null) throw new ConfigError(file, `classifier_from_token applies to sequence classifiers: set architectures to ["${arch.replace(/For\w+$|Model$/, "")}ForSequenceClassification"] too`);
    return null;
  }
  const methodRaw = raw.method ?? (raw.is_original_qwen3_reranker === true ? "from_2_way_softmax" : null);
  let fromTokens: ClassifierConfig["fromTokens"] = null;
  let numLabels: number;
  if (methodRaw != null || tokens != null) {
    if (methodRaw !== "from_2_way_softmax" && methodRaw !== "no_post_processing") throw new ConfigError(file, `field 'method' must be from_2_way_softmax or no_post_processing (how classifier_from_token's LM-head rows become the score head), got ${JSON.stringify(methodRaw)}`);
    if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === "string")) throw new ConfigError(file, `field 'classifier_from_token' must be a list of token strings (e.g. ["no", "yes"]), got ${JSON.stringify(tokens)}`);
    if (methodRaw === "from_2_way_softmax" && tokens.length !== 2) throw new ConfigError(file, `method from_2_way_softmax needs two classifier_from_token entries (the "false" token, then the "true" one), got ${tokens.length}`);
    fromTokens = { tokens: tokens as string[], method: methodRaw };
    numLabels = methodRaw === "from_2_way_softmax" ? 1 : tokens.length;
  } else {
    const id2label = raw.id2label && typeof raw.id2label === "object" ? Object.keys(raw.id2label).length : 0;
    const n = raw.num_labels ?? (id2label > 0 ? id2label : 2);
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1) throw new ConfigError(file, `field 'num_labels' must be a positive integer, got ${JSON.stringify(raw.num_labels)}`);
    numLabels = n;
  }
  const names = (raw.id2label ?? {}) as Record<string, unknown>;
  const labels = Array.from({ length: numLabels }, (_, i) => (typeof names[String(i)] === "string" ? names[String(i)] as string : `LABEL_${i}`));
  const pt = raw.problem_type ?? null;
  if (pt !== null && pt !== "regression" && pt !== "single_label_classification" && pt !== "multi_label_classification") throw new ConfigError(file, `unsupported problem_type ${JSON.stringify(pt)}`);
  return { numLabels, labels, problemType: pt, fromTokens };
}

/**
 * Transformers' Gemma3TextConfig defaults: a multimodal Gemma 3 checkpoint's text_config lists only the
 * fields that differ from them (Gemma-3-4B's names no vocab_size, heads or RoPE bases).
 */
const GEMMA3_TEXT_DEFAULTS: Record<string, unknown> = {
  vocab_size: 262208, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4,
  head_dim: 256, hidden_activation: "gelu_pytorch_tanh", max_position_embeddings: 131072, rms_norm_eps: 1e-6, rope_theta: 1000000,
  attention_bias: false, query_pre_attn_scalar: 256, sliding_window: 4096, final_logit_softcapping: null, attn_logit_softcapping: null,
  rope_scaling: null, rope_local_base_freq: 10000, sliding_window_pattern: 6, tie_word_embeddings: true,
};

/** A Gemma3ForConditionalGeneration config.json as its language model's: text_config over the defaults, the top level's dtype and token ids. */
/** The fields a multimodal config.json keeps at its top level for its language model too: dtype and token ids (and `more`). */
function topLevelFields(raw: Record<string, unknown>, more: string[] = []): Record<string, unknown> {
  const top: Record<string, unknown> = {};
  for (const key of ["torch_dtype", "dtype", "bos_token_id", "eos_token_id", ...more]) if (raw[key] !== undefined) top[key] = raw[key];
  return top;
}

function gemma3TextConfig(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const text = raw.text_config;
  if (text == null || typeof text !== "object" || Array.isArray(text)) throw new ConfigError(file, "Gemma3ForConditionalGeneration needs a 'text_config' object (its language model's settings)");
  const top = topLevelFields(raw, ["tie_word_embeddings"]);
  // Transformers 5's text_config keeps RoPE in rope_parameters: the old defaults' top-level fields would win over it.
  const defaults = { ...GEMMA3_TEXT_DEFAULTS };
  if ((text as Record<string, unknown>).rope_parameters != null) for (const key of ["rope_theta", "rope_scaling", "rope_local_base_freq"]) delete defaults[key];
  return { ...defaults, ...top, ...(text as Record<string, unknown>), architectures: raw.architectures };
}

/** Transformers' MistralConfig defaults (a Mistral3ForConditionalGeneration's text_config leaves out what equals them; note the 4096-token sliding window). */
const MISTRAL_TEXT_DEFAULTS: Record<string, unknown> = {
  vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8,
  hidden_act: "silu", max_position_embeddings: 131072, rms_norm_eps: 1e-6, rope_theta: 10000, sliding_window: 4096, tie_word_embeddings: false,
};

/** A Mistral3ForConditionalGeneration config.json as its language model's: text_config (a Mistral one) over MistralConfig's defaults. */
function mistral3TextConfig(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const text = raw.text_config;
  if (!isObject(text)) throw new ConfigError(file, "Mistral3ForConditionalGeneration needs a 'text_config' object (its language model's settings)");
  const type = text.model_type ?? "mistral";
  if (type !== "mistral") throw new ConfigError(file, `text_config.model_type '${type}' is not supported (Mistral3ForConditionalGeneration is served as its Mistral language model)`);
  const top = topLevelFields(raw);
  const defaults = { ...MISTRAL_TEXT_DEFAULTS };
  if (text.rope_parameters != null) delete defaults.rope_theta;
  return { ...defaults, ...top, ...text, architectures: raw.architectures };
}

/** Transformers' CohereConfig / Cohere2Config defaults (an Aya Vision text_config leaves out what equals them). */
const COHERE_TEXT_DEFAULTS: Record<string, unknown> = {
  vocab_size: 256000, hidden_size: 8192, intermediate_size: 22528, logit_scale: 0.0625, num_hidden_layers: 40, num_attention_heads: 64,
  hidden_act: "silu", max_position_embeddings: 8192, layer_norm_eps: 1e-5, tie_word_embeddings: true, rope_theta: 10000,
};

/**
 * An AyaVisionForConditionalGeneration config.json as its language model's: text_config (Aya Vision 8B's a Cohere 2,
 * 32B's a Cohere one) over their defaults, read as that causal LM (the vision tower is not loaded).
 */
function ayaVisionTextConfig(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const text = raw.text_config;
  if (!isObject(text)) throw new ConfigError(file, "AyaVisionForConditionalGeneration needs a 'text_config' object (its language model's settings)");
  const type = text.model_type ?? "cohere2";
  if (type !== "cohere2" && type !== "cohere") throw new ConfigError(file, `text_config.model_type '${type}' is not supported (AyaVisionForConditionalGeneration is served as its Cohere language model)`);
  return { ...COHERE_TEXT_DEFAULTS, ...topLevelFields(raw), ...text, architectures: [type === "cohere2" ? "Cohere2ForCausalLM" : "CohereForCausalLM"] };
}

/** The causal LMs an InternVL checkpoint's language model may be, by its model_type. */
const INTERNVL_TEXT_ARCHITECTURES: Record<string, string> = { qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM", qwen3_moe: "Qwen3MoeForCausalLM", llama: "LlamaForCausalLM" };

/**
 * An InternVL config.json as its language model's, the vision tower not loaded: transformers' own
 * InternVLForConditionalGeneration (the "-hf" checkpoints: text_config, read by its model_type) or OpenGVLab's
 * InternVLChatModel (llm_config, with its own architectures).
 */
function internVlTextConfig(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const chat = raw.architectures && (raw.architectures as unknown[])[0] === "InternVLChatModel";
  const field = chat ? "llm_config" : "text_config", text = raw[field];
  if (!isObject(text)) throw new ConfigError(file, `${(raw.architectures as unknown[])[0]} needs a '${field}' object (its language model's settings)`);
  const arch = chat && Array.isArray(text.architectures) ? String(text.architectures[0]) : INTERNVL_TEXT_ARCHITECTURES[String(text.model_type)];
  if (!arch || !Object.values(INTERNVL_TEXT_ARCHITECTURES).includes(arch))
    throw new ConfigError(file, `${field} ${chat ? `architecture '${arch}'` : `model_type '${text.model_type}'`} is not supported (InternVL is served as its Qwen2, Qwen3, Qwen3-MoE or Llama language model)`);
  return { ...topLevelFields(raw), ...text, architectures: [arch] };
}

const QWEN_VL = new Set(["Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration"]);

/**
 * A Qwen vision-language config.json as its language model's: the text fields at the top level (Qwen2-VL,
 * Qwen2.5-VL as first saved) with text_config's over them (Qwen3-VL; newer saves). Their M-RoPE (mrope_section)
 * rotates text tokens as plain RoPE does — a text token's temporal, height and width positions are equal —
 * so it reads as no rope_scaling.
 */
function qwenVlTextConfig(raw: Record<string, unknown>, file: string): Record<string, unknown> {
  const text = raw.text_config;
  if (text != null && (typeof text !== "object" || Array.isArray(text))) throw new ConfigError(file, "field 'text_config' must be an object (the language model's settings)");
  const merged: Record<string, unknown> = { ...raw, ...(text as Record<string, unknown> | undefined), architectures: raw.architectures };
  const rope = readRopeFields(merged, file);
  if (isObject(rope.scaling) && rope.scaling.mrope_section !== undefined) {
    const type = rope.scaling.rope_type ?? rope.scaling.type;
    if (type !== undefined && type !== "default" && type !== "mrope") throw new ConfigError(file, `${rope.scalingField} ${JSON.stringify(type)} with mrope_section is not supported`);
    // Plain RoPE: a set rope_scaling wins over rope_parameters (whose rope_theta still counts).
    merged.rope_scaling = { rope_type: "default" };
  }
  return merged;
}

/** `x` as the checkpoint's dtype holds it (bf16 / f16 rounding; f32 as is). */
function roundTo(x: number, dtype: DType): number {
  if (dtype === "BF16" || dtype === "F16") return toFloat32(fromFloat32(Float32Array.of(x), dtype), dtype)[0]!;
  return Math.fround(x);
}

function parseMoe(raw: Record<string, unknown>, arch: string, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig | null {
  if (arch === "Glm4MoeForCausalLM") return parseGlm4Moe(raw, numLayers, int, file);
  if (arch === "DeepseekV3ForCausalLM") return parseDeepseekMoe(raw, numLayers, int, file);
  if (arch === "DeepseekV2ForCausalLM") return parseDeepseekV2Moe(raw, numLayers, int, file);
  if (arch === "MiniMaxM2ForCausalLM") return parseMinimaxM2Moe(raw, numLayers, int, file);
  if (arch === "GptOssForCausalLM") return parseGptOssMoe(raw, numLayers, int, file);
  if (arch === "Ernie4_5_MoeForCausalLM") return parseErnieMoe(raw, numLayers, int, file);
  const granite = arch === "GraniteMoeForCausalLM";
  // Granite names its experts as Mixtral does (num_local_experts; intermediate_size is an expert's).
  // OLMoE names its experts as Qwen does, but its intermediate_size is an expert's (every layer sparse).
  const olmoe = arch === "OlmoeForCausalLM";
  const mixtral = arch === "MixtralForCausalLM" || granite, qwen = arch === "Qwen3MoeForCausalLM" || arch === "Qwen2MoeForCausalLM" || olmoe;
  if (!mixtral && !qwen) {
    if (typeof raw.num_experts === "number" && raw.num_experts > 0 || typeof raw.num_local_experts === "number" && raw.num_local_experts > 0)
      throw new ConfigError(file, `architecture '${arch}' is dense, but the config names experts (num_experts / num_local_experts): a mixture-of-experts checkpoint needs its MoE architecture`);
    return null;
  }
  const numExperts = int(mixtral ? "num_local_experts" : "num_experts");
  if (numExperts > MAX_EXPERTS) throw new ConfigError(file, `${mixtral ? "num_local_experts" : "num_experts"} ${numExperts} exceeds the ${MAX_EXPERTS} experts supported`);
  const topK = int("num_experts_per_tok", 2);
  if (topK > numExperts) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds the number of experts (${numExperts})`);
  const intermediateSize = int(mixtral || olmoe ? "intermediate_size" : "moe_intermediate_size");
  const step = qwen ? int("decoder_sparse_step", 1) : 1;
  const mlpOnly = raw.mlp_only_layers ?? [];
  if (!Array.isArray(mlpOnly) || !mlpOnly.every((l) => Number.isInteger(l) && l >= 0 && l < numLayers))
    throw new ConfigError(file, `mlp_only_layers must list layer indices below num_hidden_layers (${numLayers}), got ${JSON.stringify(raw.mlp_only_layers)}`);
  if (mixtral && mlpOnly.length > 0) throw new ConfigError(file, "mlp_only_layers is a Qwen MoE field; Mixtral's layers are all sparse");
  // Transformers' rule: layer l is sparse unless listed in mlp_only_layers, when (l + 1) is a multiple of decoder_sparse_step.
  const sparseLayers = Array.from({ length: numLayers }, (_, l) => !(mlpOnly as number[]).includes(l) && (l + 1) % step === 0);
  const shared = arch === "Qwen2MoeForCausalLM" && raw.shared_expert_intermediate_size != null ? int("shared_expert_intermediate_size") : 0;
  const norm = raw.norm_topk_prob;
  if (norm != null && typeof norm !== "boolean") throw new ConfigError(file, `field 'norm_topk_prob' must be a boolean, got ${JSON.stringify(norm)}`);
  // Granite's softmax over the top-k logits is the top-k probabilities renormalized.
  return {
    numExperts, topK, intermediateSize, normTopK: mixtral ? true : norm === true, sparseLayers, sharedExpertIntermediateSize: shared, grouped: null, numSharedExperts: 0,
    naming: granite ? "granite" : mixtral ? "mixtral" : "qwen", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null,
  };
}

/** DeepseekV2/V3Config's attention fields (their defaults where the file leaves them out); null for other architectures. */
function parseMla(raw: Record<string, unknown>, arch: string, int: (key: string, fallback?: number) => number, file: string): MlaConfig | null {
  if (arch !== "DeepseekV3ForCausalLM" && arch !== "DeepseekV2ForCausalLM") return null;
  const qLoraRank = raw.q_lora_rank == null ? null : int("q_lora_rank");
  const qkNopeHeadDim = int("qk_nope_head_dim", 128), qkRopeHeadDim = int("qk_rope_head_dim", 64), vHeadDim = int("v_head_dim", 128);
  if (qkRopeHeadDim % 2 !== 0) throw new ConfigError(file, `qk_rope_head_dim must be even, got ${qkRopeHeadDim}`);
  if (vHeadDim > qkNopeHeadDim + qkRopeHeadDim) throw new ConfigError(file, `v_head_dim (${vHeadDim}) exceeds qk_nope_head_dim + qk_rope_head_dim (${qkNopeHeadDim + qkRopeHeadDim}): values are kept in key-sized slots`);
  if (raw.rope_interleave === false) throw new ConfigError(file, "rope_interleave=false is not supported (DeepSeek's checkpoints rotate interleaved pairs)");
  if (raw.attention_bias === true) throw new ConfigError(file, "attention_bias=true is not supported for MLA");
  // HF's DeepseekV3Attention: × yarn_get_mscale(factor, mscale_all_dim)² when rope_scaling sets mscale_all_dim.
  const rs = isObject(raw.rope_scaling) ? raw.rope_scaling : isObject(raw.rope_parameters) ? raw.rope_parameters : null;
  const mAll = rs && typeof rs.mscale_all_dim === "number" ? rs.mscale_all_dim : 0, factor = rs && typeof rs.factor === "number" ? rs.factor : 1;
  const m = mAll && factor > 1 ? 0.1 * mAll * Math.log(factor) + 1 : 1;
  return { qLoraRank, kvLoraRank: int("kv_lora_rank", 512), qkNopeHeadDim, qkRopeHeadDim, vHeadDim, scale: m * m };
}

/**
 * GptOssConfig's defaults for what a config.json leaves out: a window of 128 on every other layer from the first,
 * RoPE base 150000 with YaRN ×32 over 4096 positions (unrounded correction range), q/k/v/o biases.
 */
function gptOssDefaults(raw: Record<string, unknown>): Record<string, unknown> {
  const rp = isObject(raw.rope_parameters) ? raw.rope_parameters : null;
  const layers = typeof raw.num_hidden_layers === "number" ? raw.num_hidden_layers : 36;
  return {
    ...raw,
    sliding_window: raw.sliding_window === undefined ? 128 : raw.sliding_window,
    layer_types: raw.layer_types ?? Array.from({ length: layers }, (_, l) => (l % 2 === 0 ? "sliding_attention" : "full_attention")),
    attention_bias: raw.attention_bias ?? true,
    ...(raw.rope_theta == null && rp?.rope_theta == null ? { rope_theta: 150000 } : {}),
    ...(raw.rope_scaling == null && rp?.rope_type == null
      ? { rope_scaling: { rope_type: "yarn", factor: 32, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 4096 } } : {}),
  };
}

/** GPT-OSS's experts: every layer's MLP; num_local_experts, top num_experts_per_tok (softmax over their logits). */
function parseGptOssMoe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  const numExperts = int("num_local_experts", 128);
  if (numExperts > MAX_EXPERTS) throw new ConfigError(file, `num_local_experts ${numExperts} exceeds the ${MAX_EXPERTS} experts supported`);
  const topK = int("num_experts_per_tok", typeof raw.experts_per_token === "number" ? raw.experts_per_token : 4);
  if (topK > numExperts) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds num_local_experts (${numExperts})`);
  const positive = (key: string, fallback: number) => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new ConfigError(file, `field '${key}' must be a positive number, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  return {
    // Softmax over the top-k logits: the top-k probabilities renormalized.
    numExperts, topK, intermediateSize: int("intermediate_size", 2880), normTopK: true, sparseLayers: new Array(numLayers).fill(true),
    sharedExpertIntermediateSize: 0, grouped: null, numSharedExperts: 0, naming: "gpt_oss",
    routedOutputScale: 1, routerBias: true, expertBiases: true, swiglu: { alpha: positive("swiglu_alpha", 1.702), limit: positive("swiglu_limit", 7) },
  };
}

/**
 * DeepSeek-V3's experts (Kimi K2's too): GLM-4.5's routing and names (noaux_tc: sigmoid scores, the correction bias,
 * group-limited top-k; shared experts), DeepseekV3Config's defaults; other scoring or top-k methods are refused.
 */
function parseDeepseekMoe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  if (raw.topk_method != null && raw.topk_method !== "noaux_tc") throw new ConfigError(file, `topk_method '${raw.topk_method}' is not supported (noaux_tc: DeepSeek-V3's)`);
  if (raw.scoring_func != null && raw.scoring_func !== "sigmoid") throw new ConfigError(file, `scoring_func '${raw.scoring_func}' is not supported (sigmoid: DeepSeek-V3's)`);
  if (raw.moe_layer_freq != null && raw.moe_layer_freq !== 1) throw new ConfigError(file, `moe_layer_freq ${JSON.stringify(raw.moe_layer_freq)} is not supported (1: every layer from first_k_dense_replace on)`);
  const defaults = { n_routed_experts: 256, num_experts_per_tok: 8, n_group: 8, topk_group: 4, routed_scaling_factor: 2.5, first_k_dense_replace: 3, moe_intermediate_size: 2048 };
  return parseGlm4Moe({ ...defaults, ...Object.fromEntries(Object.entries(raw).filter(([, v]) => v != null)) }, numLayers, (key, fallback) => int(key, (defaults as Record<string, number>)[key] ?? fallback), file);
}

/**
 * DeepSeek-V2's experts (V2-Lite's, V2.5's): softmax over the router's logits, the top num_experts_per_tok ("greedy";
 * renormalized when norm_topk_prob, as vLLM reads it), × routed_scaling_factor; the shared experts (n_shared_experts
 * MLPs of moe_intermediate_size, weight 1) run as extra experts; layers from first_k_dense_replace on. V2's and V2.5's
 * group_limited_greedy picks among the topk_group groups whose best probability is highest.
 */
function parseDeepseekV2Moe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  const method = raw.topk_method ?? "greedy";
  if (method !== "greedy" && method !== "group_limited_greedy") throw new ConfigError(file, `topk_method '${method}' is not supported for DeepSeek-V2 (greedy, or group_limited_greedy)`);
  if (raw.scoring_func != null && raw.scoring_func !== "softmax") throw new ConfigError(file, `scoring_func '${raw.scoring_func}' is not supported for DeepSeek-V2 (softmax)`);
  if (raw.moe_layer_freq != null && raw.moe_layer_freq !== 1) throw new ConfigError(file, `moe_layer_freq ${JSON.stringify(raw.moe_layer_freq)} is not supported (1: every layer from first_k_dense_replace on)`);
  const numExperts = int("n_routed_experts"), topK = int("num_experts_per_tok");
  if (topK > numExperts) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds n_routed_experts (${numExperts})`);
  const { scale, norm, shared, firstSparse } = deepseekStyleMoeFields(raw, numExperts, file, { normTopK: false, sharedExperts: 0, firstSparse: 0 });
  // group_limited_greedy (DeepSeek-V2, V2.5, Coder-V2): the topk_group groups with the best single score kept, the
  // others' experts counted as 0 — the grouped routing kernel with softmax scores, no bias, and its scale.
  let grouped: MoeConfig["grouped"] = null;
  if (method === "group_limited_greedy") {
    const { numGroups, topKGroups } = expertGroups(raw, numExperts, topK, file, null);
    grouped = { numGroups, topKGroups, routedScalingFactor: scale, scoring: "softmax", groupScore: "max", correctionBias: false };
  }
  return {
    numExperts, topK, intermediateSize: int("moe_intermediate_size", 1407), normTopK: norm, sparseLayers: Array.from({ length: numLayers }, (_, l) => l >= firstSparse),
    sharedExpertIntermediateSize: 0, grouped, numSharedExperts: shared, naming: "glm4_moe", routedOutputScale: grouped ? 1 : scale, routerBias: false, expertBiases: false, swiglu: null,
  };
}

/**
 * MiniMax-M2's experts, on every layer: sigmoid scores of the router's logits, the top num_experts_per_tok by score +
 * e_score_correction_bias, weighted by their scores over their sum — GLM-4.5's routing with one group and no scale.
 */
function parseMinimaxM2Moe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  if (raw.scoring_func != null && raw.scoring_func !== "sigmoid") throw new ConfigError(file, `scoring_func '${raw.scoring_func}' is not supported (sigmoid: MiniMax-M2's)`);
  if (raw.use_routing_bias === false) throw new ConfigError(file, "use_routing_bias=false is not supported (MiniMax-M2 routes with e_score_correction_bias)");
  const numExperts = int("num_local_experts"), topK = int("num_experts_per_tok");
  if (numExperts > MAX_EXPERTS) throw new ConfigError(file, `num_local_experts ${numExperts} exceeds the ${MAX_EXPERTS} experts supported`);
  if (topK > numExperts) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds num_local_experts (${numExperts})`);
  return {
    numExperts, topK, intermediateSize: int("intermediate_size"), normTopK: true, sparseLayers: new Array(numLayers).fill(true), sharedExpertIntermediateSize: 0,
    grouped: { numGroups: 1, topKGroups: 1, routedScalingFactor: 1 }, numSharedExperts: 0, naming: "minimax", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null,
  };
}

/**
 * ERNIE 4.5's experts, with Ernie4_5_MoeConfig's defaults for what the file leaves out: layers l with (l + 1) %
 * moe_layer_interval = 0 in [moe_layer_start_index, moe_layer_end_index] sparse; softmax scores of the router's f32
 * logits, the top moe_k by score + e_score_correction_bias, weighted by their scores over their sum (moe_norm_min is
 * 1e-12: a sum of softmax scores never comes near it) — GLM-4.5's routing with softmax scores in one group; the
 * moe_num_shared_experts shared experts as one MLP of that many × moe_intermediate_size rows.
 */
function parseErnieMoe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  if (Array.isArray(raw.moe_num_experts) || Array.isArray(raw.moe_k)) throw new ConfigError(file, "multimodal expert groups (lists in moe_num_experts / moe_k: ERNIE-4.5-VL) are not supported");
  const numExperts = int("moe_num_experts", 64), topK = int("moe_k", 6), shared = int("moe_num_shared_experts", 2);
  if (numExperts + shared > MAX_EXPERTS) throw new ConfigError(file, `moe_num_experts (${numExperts}) and moe_num_shared_experts (${shared}) exceed the ${MAX_EXPERTS} experts supported together`);
  if (topK < 1 || topK > numExperts) throw new ConfigError(file, `moe_k (${topK}) must be between 1 and moe_num_experts (${numExperts})`);
  if (raw.moe_use_aux_free === false) throw new ConfigError(file, "moe_use_aux_free=false is not supported (ERNIE 4.5 routes with its correction bias)");
  const index = (key: string, fallback: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < -1) throw new ConfigError(file, `field '${key}' must be a layer index (or -1), got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const start = index("moe_layer_start_index", 1), endField = index("moe_layer_end_index", -1), interval = int("moe_layer_interval", 1);
  const end = endField === -1 ? numLayers - 1 : endField;
  return {
    numExperts, topK, intermediateSize: int("moe_intermediate_size", 1536), normTopK: true,
    sparseLayers: Array.from({ length: numLayers }, (_, l) => (l + 1) % interval === 0 && l >= start && l <= end), sharedExpertIntermediateSize: 0,
    grouped: { numGroups: 1, topKGroups: 1, routedScalingFactor: 1, scoring: "softmax" }, numSharedExperts: shared, naming: "ernie", routedOutputScale: 1,
    routerBias: false, expertBiases: false, swiglu: null,
  };
}

/**
 * The fields DeepSeek's experts and their descendants (GLM-4.5's) share, checked, with the family's defaults for
 * what the file leaves out: routed_scaling_factor (1), norm_topk_prob, n_shared_experts, first_k_dense_replace.
 */
function deepseekStyleMoeFields(raw: Record<string, unknown>, numExperts: number, file: string, defaults: { normTopK: boolean; sharedExperts: number; firstSparse: number }) {
  const scale = raw.routed_scaling_factor ?? 1;
  if (typeof scale !== "number" || !Number.isFinite(scale) || scale <= 0) throw new ConfigError(file, `field 'routed_scaling_factor' must be a positive number, got ${JSON.stringify(raw.routed_scaling_factor)}`);
  const norm = raw.norm_topk_prob ?? defaults.normTopK;
  if (typeof norm !== "boolean") throw new ConfigError(file, `field 'norm_topk_prob' must be a boolean, got ${JSON.stringify(raw.norm_topk_prob)}`);
  const shared = raw.n_shared_experts == null ? defaults.sharedExperts : raw.n_shared_experts;
  if (typeof shared !== "number" || !Number.isInteger(shared) || shared < 0 || numExperts + shared > MAX_EXPERTS)
    throw new ConfigError(file, `n_routed_experts (${numExperts}) and n_shared_experts (${JSON.stringify(raw.n_shared_experts)}): non-negative integers, at most ${MAX_EXPERTS} experts together`);
  const firstSparse = raw.first_k_dense_replace == null ? defaults.firstSparse : raw.first_k_dense_replace;
  if (typeof firstSparse !== "number" || !Number.isInteger(firstSparse) || firstSparse < 0) throw new ConfigError(file, `field 'first_k_dense_replace' must be a non-negative integer, got ${JSON.stringify(raw.first_k_dense_replace)}`);
  return { scale, norm, shared, firstSparse };
}

/**
 * DeepSeek-style expert groups (n_group, topk_group; `fallback` where the file leaves them out, null: required),
 * checked: the groups split the experts evenly, and the kept ones hold num_experts_per_tok of them.
 */
function expertGroups(raw: Record<string, unknown>, numExperts: number, topK: number, file: string, fallback: number | null): { numGroups: number; topKGroups: number } {
  const field = (key: string): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw new ConfigError(file, `field '${key}' must be a positive integer, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const numGroups = field("n_group"), topKGroups = field("topk_group");
  if (numExperts % numGroups !== 0) throw new ConfigError(file, `n_group (${numGroups}) must divide n_routed_experts (${numExperts})`);
  if (topKGroups > numGroups) throw new ConfigError(file, `topk_group (${topKGroups}) exceeds n_group (${numGroups})`);
  if (topK > topKGroups * (numExperts / numGroups)) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds the experts of topk_group (${topKGroups}) groups`);
  return { numGroups, topKGroups };
}

/** GLM-4.5's experts, with Glm4MoeConfig's defaults for what the file leaves out. */
function parseGlm4Moe(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): MoeConfig {
  const numExperts = int("n_routed_experts", 128);
  const topK = int("num_experts_per_tok", 8);
  if (topK > numExperts) throw new ConfigError(file, `num_experts_per_tok (${topK}) exceeds n_routed_experts (${numExperts})`);
  const { numGroups, topKGroups } = expertGroups(raw, numExperts, topK, file, 1);
  const { scale, norm, shared, firstSparse } = deepseekStyleMoeFields(raw, numExperts, file, { normTopK: true, sharedExperts: 1, firstSparse: 1 });
  return {
    numExperts, topK, intermediateSize: int("moe_intermediate_size", 1408), normTopK: norm, sparseLayers: Array.from({ length: numLayers }, (_, l) => l >= firstSparse),
    sharedExpertIntermediateSize: 0, grouped: { numGroups, topKGroups, routedScalingFactor: scale }, numSharedExperts: shared, naming: "glm4_moe",
    routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null,
  };
}

/**
 * Which layers attend through a sliding window, transformers' rules: a config's layer_types; Qwen's switch
 * (use_sliding_window: layers i ≥ max_window_layers); without a switch (Mistral, Mixtral, Phi-3) a non-null
 * sliding_window applies to every layer.
 */
function parseLayerWindows(raw: Record<string, unknown>, numLayers: number, int: (key: string, fallback?: number) => number, file: string): number[] {
  const types = raw.layer_types;
  if (types != null) {
    if (!Array.isArray(types) || types.length !== numLayers || !types.every((t) => t === "sliding_attention" || t === "full_attention"))
      throw new ConfigError(file, `layer_types must list "sliding_attention" or "full_attention" for each of the ${numLayers} layers, got ${JSON.stringify(types)}`);
    // Qwen's switch off, or no window: every layer attends to the whole context.
    if (raw.use_sliding_window === false || raw.sliding_window == null) return new Array(numLayers).fill(0);
    const w = int("sliding_window");
    return types.map((t) => (t === "sliding_attention" ? w : 0));
  }
  if (raw.sliding_window == null || raw.use_sliding_window === false) return new Array(numLayers).fill(0);
  const w = int("sliding_window");
  if (raw.use_sliding_window === undefined) return new Array(numLayers).fill(w);
  if (raw.use_sliding_window !== true) throw new ConfigError(file, `field 'use_sliding_window' must be a boolean, got ${JSON.stringify(raw.use_sliding_window)}`);
  const first = raw.max_window_layers == null ? 0 : (raw.max_window_layers as number);
  if (!Number.isInteger(first) || first < 0) throw new ConfigError(file, `field 'max_window_layers' must be a non-negative integer, got ${JSON.stringify(raw.max_window_layers)}`);
  return Array.from({ length: numLayers }, (_, l) => (l >= first ? w : 0));
}

/**
 * EXAONE 4.0's layer types where config.json lists none (Exaone4Config's): no sliding_window, all global; else
 * sliding_window_pattern (default 4) — a number p (every p-th layer global) or a string of L (local) and G
 * (global) repeated from layer 0, the last layer global whatever it says.
 */
function exaone4LayerTypes(raw: Record<string, unknown>, numLayers: number, file: string): string[] {
  const types = (sliding: (l: number) => boolean) => Array.from({ length: numLayers }, (_, l) => (sliding(l) ? "sliding_attention" : "full_attention"));
  if (raw.sliding_window == null) return types(() => false);
  const p = raw.sliding_window_pattern ?? 4;
  if (typeof p === "number" && Number.isInteger(p) && p > 0) return types((l) => (l + 1) % p !== 0);
  if (typeof p === "string" && /^[LG]+$/.test(p)) return types((l) => l !== numLayers - 1 && p[l % p.length] === "L");
  throw new ConfigError(file, `field 'sliding_window_pattern' must be a positive integer or a string of L and G, got ${JSON.stringify(p)}`);
}

/** SmolLM3's no_rope_layers: one 1 (RoPE) or 0 (no RoPE) per layer. */
function parseRopeLayers(v: unknown, numLayers: number, file: string): boolean[] | null {
  if (v == null) return null;
  if (!Array.isArray(v) || v.length !== numLayers || !v.every((x) => x === 0 || x === 1))
    throw new ConfigError(file, `no_rope_layers must list 0 or 1 for each of the ${numLayers} layers, got ${JSON.stringify(v)}`);
  return v.map((x) => x === 1);
}

/**
 * RoPE's settings as transformers 4 writes them (rope_theta, rope_scaling, partial_rotary_factor,
 * rope_local_base_freq at the top level) or transformers 5 (one `rope_parameters` object with rope_theta and
 * rope_type beside the scaling's fields — or one per layer type, as Gemma 3's full_attention and
 * sliding_attention). A top-level field that is set (e.g. by --hf-overrides) wins over rope_parameters; a
 * reader that missed rope_parameters would silently run with the default base of 10000.
 */
interface RopeFields {
  theta: unknown; thetaField: string;
  scaling: unknown; scalingField: string;
  partialRotaryFactor: unknown;
  /** The sliding-window layers' base (Gemma 3). */
  localTheta: unknown; localThetaField: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

function readRopeFields(raw: Record<string, unknown>, file: string): RopeFields {
  const rp = raw.rope_parameters;
  const legacy: RopeFields = {
    theta: raw.rope_theta, thetaField: "rope_theta", scaling: raw.rope_scaling, scalingField: "rope_scaling",
    partialRotaryFactor: raw.partial_rotary_factor, localTheta: raw.rope_local_base_freq, localThetaField: "rope_local_base_freq",
  };
  if (rp == null) return legacy;
  if (!isObject(rp)) throw new ConfigError(file, `field 'rope_parameters' must be an object, got ${JSON.stringify(rp)}`);
  const perLayerType = "full_attention" in rp || "sliding_attention" in rp;
  const globalName = perLayerType ? "rope_parameters.full_attention" : "rope_parameters", localName = "rope_parameters.sliding_attention";
  const global = perLayerType ? rp.full_attention ?? {} : rp, local = perLayerType ? rp.sliding_attention : undefined;
  if (!isObject(global)) throw new ConfigError(file, `field '${globalName}' must be an object, got ${JSON.stringify(global)}`);
  if (local != null) {
    if (!isObject(local)) throw new ConfigError(file, `field '${localName}' must be an object, got ${JSON.stringify(local)}`);
    const type = local.rope_type ?? local.type;
    if (type !== undefined && type !== "default") throw new ConfigError(file, `${localName}.rope_type '${type}' is not supported (the sliding-window layers' RoPE is unscaled)`);
    if ((local.partial_rotary_factor ?? 1) !== (global.partial_rotary_factor ?? legacy.partialRotaryFactor ?? 1))
      throw new ConfigError(file, `${localName}.partial_rotary_factor differs from the full-attention layers' (one rotary dimension for all layers)`);
  }
  const pick = (top: unknown, topName: string, nested: unknown, nestedName: string): [unknown, string] => (top != null ? [top, topName] : [nested, nestedName]);
  const [theta, thetaField] = pick(raw.rope_theta, "rope_theta", global.rope_theta, `${globalName}.rope_theta`);
  const [scaling, scalingField] = pick(raw.rope_scaling, "rope_scaling", global, globalName);
  const [localTheta, localThetaField] = pick(raw.rope_local_base_freq, "rope_local_base_freq", isObject(local) ? local.rope_theta : undefined, `${localName}.rope_theta`);
  return { theta, thetaField, scaling, scalingField, partialRotaryFactor: raw.partial_rotary_factor ?? global.partial_rotary_factor, localTheta, localThetaField };
}

/** What parseRopeScaling reads beside the scaling object: config.json's lengths and the rotary width. */
interface RopeContext {
  maxPositionEmbeddings: number;
  /** config.json's top-level original_max_position_embeddings (Phi-3 keeps the pretrained length there). */
  originalMaxPositionEmbeddings: unknown;
  rotaryDim: number;
}

function parseRopeScaling(v: unknown, file: string, field: string, ctx: RopeContext): RopeScaling | null {
  if (v == null) return null;
  if (!isObject(v)) throw new ConfigError(file, `field '${field}' must be an object or null`);
  const r = v;
  const type = (r.rope_type ?? r.type) as string | undefined;
  if (type === undefined || type === "default") return null;
  const num = (k: string, d: number) => {
    const x = r[k] == null ? d : Number(r[k]);
    if (!Number.isFinite(x)) throw new ConfigError(file, `${field}.${k} must be a number, got ${JSON.stringify(r[k])}`);
    return x;
  };
  if (type === "longrope" || type === "su") return parseLongRope(r, file, field, ctx, num);
  const factor = Number(r.factor ?? 1);
  if (!(factor > 0)) throw new ConfigError(file, `${field}.factor must be positive`);
  if (type === "linear") return { type, factor };
  if (type === "llama3") {
    const lowFreqFactor = Number(r.low_freq_factor);
    const highFreqFactor = Number(r.high_freq_factor);
    const originalMaxPositionEmbeddings = Number(r.original_max_position_embeddings);
    if (!(lowFreqFactor > 0 && highFreqFactor > lowFreqFactor && originalMaxPositionEmbeddings > 0))
      throw new ConfigError(file, `${field} (llama3) needs low_freq_factor < high_freq_factor and original_max_position_embeddings`);
    return { type, factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings };
  }
  if (type === "yarn") {
    const originalMaxPositionEmbeddings = num("original_max_position_embeddings", ctx.maxPositionEmbeddings);
    const betaFast = num("beta_fast", 32), betaSlow = num("beta_slow", 1);
    if (!(originalMaxPositionEmbeddings > 0)) throw new ConfigError(file, `${field}.original_max_position_embeddings must be positive`);
    // YaRN's attention temperature: 0.1·ln(s)+1 (with DeepSeek's mscale / mscale_all_dim, their ratio), unless given.
    const mscale = (m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);
    const m = num("mscale", 0), mAll = num("mscale_all_dim", 0);
    const attentionFactor = r.attention_factor != null ? num("attention_factor", 1) : m && mAll ? mscale(m) / mscale(mAll) : mscale(1);
    return { type, factor, originalMaxPositionEmbeddings, betaFast, betaSlow, attentionFactor, truncate: r.truncate !== false };
  }
  throw new ConfigError(file, `unsupported ${field} type '${type}' (supported: default, linear, llama3, yarn, longrope)`);
}

/**
 * LongRoPE (Phi-3 / 3.5 / 4-mini): short_factor and long_factor, one per rotated frequency; the pretrained
 * length from the scaling object or config.json's top level. The default mscale (transformers' and vLLM's):
 * √(1 + ln(s) / ln(original)) for s = max_position_embeddings / original (or the factor, where the config
 * names no original length), 1 when s ≤ 1; attention_factor, or vLLM's short_mscale / long_mscale, instead.
 */
function parseLongRope(r: Record<string, unknown>, file: string, field: string, ctx: RopeContext, num: (k: string, d: number) => number): RopeScaling {
  const factors = (k: string): number[] => {
    const f = r[k];
    if (!Array.isArray(f) || f.length !== ctx.rotaryDim / 2 || !f.every((x) => typeof x === "number" && Number.isFinite(x) && x > 0))
      throw new ConfigError(file, `${field}.${k} must list ${ctx.rotaryDim / 2} positive numbers (one per rotated frequency: rotary dimensions / 2), got ${JSON.stringify(f)?.slice(0, 120)}`);
    return f as number[];
  };
  const shortFactor = factors("short_factor"), longFactor = factors("long_factor");
  const top = ctx.originalMaxPositionEmbeddings;
  if (top != null && !(typeof top === "number" && Number.isInteger(top) && top > 0)) throw new ConfigError(file, `field 'original_max_position_embeddings' must be a positive integer, got ${JSON.stringify(top)}`);
  const given = r.original_max_position_embeddings != null ? num("original_max_position_embeddings", 0) : (top as number | undefined);
  if (given !== undefined && !(Number.isInteger(given) && given > 0)) throw new ConfigError(file, `${field}.original_max_position_embeddings must be a positive integer`);
  const originalMaxPositionEmbeddings = given ?? ctx.maxPositionEmbeddings;
  const ratio = given !== undefined ? ctx.maxPositionEmbeddings / given : num("factor", 1);
  const mscale = r.attention_factor != null ? num("attention_factor", 1) : ratio <= 1 ? 1 : Math.sqrt(1 + Math.log(ratio) / Math.log(originalMaxPositionEmbeddings));
  return {
    type: "longrope", shortFactor, longFactor, originalMaxPositionEmbeddings,
    shortMscale: r.short_mscale != null ? num("short_mscale", 1) : mscale, longMscale: r.long_mscale != null ? num("long_mscale", 1) : mscale,
  };
}

/** Whether LongRoPE takes its long factors: when the context may pass the pretrained length (vLLM's rule). */
export function longRopeIsLong(s: Extract<RopeScaling, { type: "longrope" }>, maxModelLen: number): boolean {
  return maxModelLen > s.originalMaxPositionEmbeddings;
}

/**
 * Inverse RoPE frequencies (rotaryDim / 2 of them: the pairs (i, i + rotaryDim / 2) RoPE rotates), with
 * scaling applied; `maxModelLen` decides LongRoPE's factors.
 */
export function ropeInvFreq(cfg: Pick<ModelConfig, "rotaryDim" | "ropeTheta" | "ropeScaling">, maxModelLen: number): Float64Array {
  const half = cfg.rotaryDim / 2, D = cfg.rotaryDim, base = cfg.ropeTheta;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / base ** ((2 * i) / D);
  const s = cfg.ropeScaling;
  if (!s) return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
  if (s.type === "longrope") {
    const ext = longRopeIsLong(s, maxModelLen) ? s.longFactor : s.shortFactor;
    return inv.map((f, i) => f / ext[i]!);
  }
  if (s.type === "yarn") {
    // Dimensions that turn fewer than beta_slow times over the original context are interpolated (÷ factor),
    // those that turn more than beta_fast times kept, with a linear ramp between.
    const dimFor = (rotations: number) => (D * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
    let low = dimFor(s.betaFast), high = dimFor(s.betaSlow);
    if (s.truncate) { low = Math.floor(low); high = Math.ceil(high); }
    low = Math.max(low, 0);
    high = Math.min(high, D - 1);
    if (low === high) high += 0.001;
    return inv.map((f, i) => {
      const keep = 1 - Math.min(1, Math.max(0, (i - low) / (high - low)));
      return (f / s.factor) * (1 - keep) + f * keep;
    });
  }
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** What RoPE's cos and sin are multiplied by (YaRN's attention factor, LongRoPE's mscale; 1 otherwise). */
export function ropeAttentionFactor(cfg: Pick<ModelConfig, "ropeScaling">, maxModelLen: number): number {
  const s = cfg.ropeScaling;
  if (s?.type === "yarn") return s.attentionFactor;
  if (s?.type === "longrope") return longRopeIsLong(s, maxModelLen) ? s.longMscale : s.shortMscale;
  return 1;
}

/**
 * The longest context the positions support: max_position_embeddings, or with YaRN (whose config keeps the
 * pretrained length in original_max_position_embeddings, as Qwen's long-context recipe does) that times the factor — vLLM's rule.
 */
export function maxSupportedPositions(cfg: Pick<ModelConfig, "maxPositionEmbeddings" | "ropeScaling">): number {
  const s = cfg.ropeScaling;
  return s?.type === "yarn" ? Math.max(cfg.maxPositionEmbeddings, Math.floor(s.originalMaxPositionEmbeddings * s.factor)) : cfg.maxPositionEmbeddings;
}

/**
 * Reads config.json (+ generation_config.json for EOS ids) from a model directory. `overrides` (vLLM's
 * --hf-overrides) replace config.json's top-level fields before it is read.
 */
export function loadModelConfig(dir: string, overrides: Record<string, unknown> = {}): ModelConfig {
  const file = join(dir, "config.json");
  if (!existsSync(file)) throw new ConfigError(file, "not found (is this a Hugging Face model directory?)");
  let raw: Record<string, unknown>;
  try { raw = JSON.parse(readFileSync(file, "utf8")); } catch (e) { throw new ConfigError(file, `not valid JSON (${(e as Error).message})`); }
  const overridden = Object.keys(overrides).length > 0;
  const cfg = parseModelConfig({ ...raw, ...overrides }, overridden ? `${file} (with --hf-overrides)` : file);
  const genFile = join(dir, "generation_config.json");
  if (existsSync(genFile)) {
    try {
      const gen = JSON.parse(readFileSync(genFile, "utf8")) as Record<string, unknown>;
      const ids = idList(gen.eos_token_id);
      for (const id of ids) if (!cfg.eosTokenIds.includes(id)) cfg.eosTokenIds.push(id);
      if (cfg.bosTokenId === null && typeof gen.bos_token_id === "number") cfg.bosTokenId = gen.bos_token_id;
    } catch (e) {
      throw new ConfigError(genFile, `not valid JSON (${(e as Error).message})`);
    }
  }
  return cfg;
}

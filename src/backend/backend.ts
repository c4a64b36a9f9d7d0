/**
 * The interface the model is written against. A backend owns memory (weights, activations, KV cache) and
 * implements the kernels. `T` is the backend's tensor handle (host arrays on CPU, device pointers on CUDA).
 * Every op writes into a caller-provided output so the model runner can use static buffers (CUDA graphs).
 */
import type { LinearWeight } from "../loader/packed-matrix.ts";
import type { SamplingBatch, SamplerOutput } from "../engine/sampling-batch.ts";

export interface Tensor {
  readonly shape: readonly number[];
}

export interface KvCacheSpec {
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
}

/** Per-step attention inputs, already uploaded by `Backend.uploadStep`. */
export interface StepTensors<T extends Tensor> {
  numTokens: number;
  numSeqs: number;
  tokenIds: T;
  positions: T;
  /** KV slot per token (block * blockSize + offset); -1 = do not store (padding). */
  slotMapping: T;
  /** Cumulative query lengths, numSeqs + 1 entries. */
  queryStart: T;
  /** Context length of each sequence after this step (cached + new tokens). */
  seqLens: T;
  /** numSeqs × maxBlocksPerSeq block ids. */
  blockTables: T;
  maxBlocksPerSeq: number;
  /** Token rows whose logits are needed (the last query token of each sequence that samples). */
  logitsRows: T;
  numLogitsRows: number;
  /** Largest query length / context length in the step (kernel launch shapes). */
  maxQueryLen: number;
  maxSeqLen: number;
  /** LoRA: each token's adapter slot (−1: the base model); null when the step has none. */
  loraSlots: T | null;
  /** Hybrid KV cache layouts: the slot mapping and block tables of each group after the first (empty: one group). */
  kvGroups: { slotMapping: T; blockTables: T }[];
}

/** Group-limited routing (GLM-4.5, DeepSeek-V3): numGroups equal groups of experts, the topKGroups best kept; weights × scale. */
export interface MoeGrouping {
  numGroups: number;
  topKGroups: number;
  scale: number;
  /** The scores: sigmoid of each logit (GLM-4.5, DeepSeek-V3; the default) or the row's softmax (ERNIE 4.5, DeepSeek-V2). */
  scoring?: "sigmoid" | "softmax";
  /** A group's score: the sum of its two best choice values (the default) or its best one (DeepSeek-V2's group_limited_greedy). */
  groupScore?: "top2" | "max";
}

/** GPT-OSS's clamped SwiGLU: g = min(gate, limit), u = clamp(up, −limit, limit), (u + 1) · g · sigmoid(alpha · g). */
export interface SwigluClamp {
  alpha: number;
  limit: number;
}

/** The experts of a sparse MLP (Backend.moeExperts). */
export interface ExpertWeights<T extends Tensor> {
  /** [E·2I, H]: expert e's gate rows, then its up rows. */
  w13: T;
  /** [E·H, I]: expert e's down projection. */
  w2: T;
  /** GPT-OSS's expert biases (null: none): [E·2I] beside w13's rows, [E·H] beside w2's. */
  b13: T | null;
  b2: T | null;
  /** The activation of gate and up: SiLU(gate) · up (null), or GPT-OSS's clamped SwiGLU. */
  swiglu: SwigluClamp | null;
}

/** The scratch of Backend.moeExperts. */
export interface MoeScratch<T extends Tensor> {
  gateUp: T;
  act: T;
  expertOut: T;
  routing: T;
}

/** Rows of the tiles the CUDA expert GEMMs take: every tile holds rows of one expert only. */
export const MOE_TILE_ROWS = 16;

/** At most this many tiles cover `entries` (token, expert) pairs over E experts: Σ ⌈count_e / 16⌉ ≤ ⌈entries / 16⌉ + E. */
export function moeMaxTiles(entries: number, numExperts: number): number {
  return Math.ceil(entries / MOE_TILE_ROWS) + numExperts;
}

/**
 * The i32s of the routing scratch: each expert's first sorted entry (E + 1), the entries sorted by expert,
 * then per tile its expert and first sorted entry (−1: an unused tile).
 */
export function moeRoutingInts(entries: number, numExperts: number): number {
  return numExperts + 1 + entries + 2 * moeMaxTiles(entries, numExperts);
}

/** Sampled tokens on their way to the host. */
export interface PendingSample {
  wait(): SamplerOutput;
}

/** Host-side per-step inputs, built by the model runner from the scheduled batch. */
export interface StepInputs {
  tokenIds: Int32Array;
  positions: Int32Array;
  slotMapping: Int32Array;
  queryStart: Int32Array;
  seqLens: Int32Array;
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  logitsRows: Int32Array;
  /**
   * Async scheduling: token ids the host did not know when it built the step, as pairs (token index,
   * row of the previous step's sampled ids); uploadStep takes them from those ids where they are (on the
   * GPU: one small kernel, no host round trip). Absent or empty: every token id is in tokenIds.
   */
  tokensFromSampled?: Int32Array;
  /** LoRA (engines with adapters): each token's adapter slot, −1 for the base model. */
  loraSlots?: Int32Array;
  /** Hybrid KV cache layouts: per group after the first, its slot per token and its block tables (same shapes as the first's). */
  kvGroups?: { slotMapping: Int32Array; blockTables: Int32Array }[];
}

/** The longest query chunk and context of a step (kernel launch shapes); shared by every backend's uploadStep. */
export function stepExtents(s: StepInputs): { maxQueryLen: number; maxSeqLen: number } {
  let maxQueryLen = 0, maxSeqLen = 0;
  for (let i = 0; i < s.seqLens.length; i++) {
    maxQueryLen = Math.max(maxQueryLen, s.queryStart[i + 1]! - s.queryStart[i]!);
    maxSeqLen = Math.max(maxSeqLen, s.seqLens[i]!);
  }
  return { maxQueryLen, maxSeqLen };
}

/** The per-head widths of multi-head latent attention's packed rows (Backend.mlaAssemble). */
export interface MlaShape {
  numHeads: number;
  nope: number;
  rope: number;
  v: number;
}

export interface AttentionShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
  /** Sliding-window attention: a query at position p sees keys p − window < k ≤ p (the last `window`); 0 or absent: all of them. */
  window?: number;
  /** Gemma 2: each (scaled) score s becomes softcap · tanh(s / softcap); 0 or absent: none. */
  softcap?: number;
  /**
   * Partial RoPE (Phi-4-mini): only each head's first rotaryDim dimensions rotate, dimension i with
   * i + rotaryDim / 2, and the cos/sin tables are [maxPos, rotaryDim / 2]; absent: the whole head.
   */
  rotaryDim?: number;
}

export interface Backend<T extends Tensor = Tensor> {
  readonly name: "cpu" | "cuda";
  /**
   * Creates a weight tensor from checkpoint tensors concatenated along dim 0. Packed parts (src/loader/packed-matrix.ts)
   * may stay packed (the CUDA backend's), for linear() — or, `use` "experts", for moeExperts' w13 / w2 only; the CPU
   * backend dequantizes them. `quantize` "fp8" (vLLM's online FP8, `--quantization fp8` on an unquantized checkpoint):
   * float parts of a 2-D weight whose rows are a multiple of 4 wide become E4M3 with a scale per row, as
   * quantizeFp8Rows (src/loader/quantization.ts) makes them — on the GPU where the CUDA backend loads them, bit for
   * bit the same; other weights load as they are.
   */
  loadWeight(parts: LinearWeight[], shape: number[], use?: "linear" | "experts", quantize?: "fp8" | null): T;
  /** Creates a weight from f32 host values (e.g. RoPE tables). */
  fromHost(values: Float32Array, shape: number[]): T;
  /** An uninitialised tensor: activation dtype (bf16 on CUDA, f32 on CPU), f32 (logits), or i32 (indices). */
  empty(shape: number[], dtype?: "act" | "f32" | "i32"): T;
  /** The first `rows` rows of `t` (no copy). */
  rows(t: T, rows: number): T;
  /** Rows [start, start + rows) of `t` (no copy). */
  rowRange(t: T, start: number, rows: number): T;
  /** Allocates one paged KV cache tensor pair (one layer's, or with a hybrid layout one per group's j-th layer): [numBlocks, blockSize, numKvHeads, headDim] each for K and V. */
  allocKvCache(spec: KvCacheSpec): { k: T; v: T };
  /** Copies this step's host inputs into the backend's step buffers. */
  uploadStep(inputs: StepInputs): StepTensors<T>;

  /**
   * out[t] = table[id − vocabStart] · scale (rounded to the activation dtype); zeros for ids outside the
   * table's rows (a vocab-parallel shard). The scale is a model's embedding multiplier (Gemma's √hidden,
   * Granite's), kept out of the table so that an LM head tied to it can share it.
   */
  embedding(tokenIds: T, table: T, out: T, vocabStart?: number, scale?: number): void;
  /**
   * out = rmsnorm(x) * weight; `centered`: Cohere's LayerNorm without a bias instead, (x − mean) / √(mean of
   * (x − mean)² + eps) · weight (ModelConfig.layerNorm).
   */
  rmsNorm(x: T, weight: T, eps: number, out: T, centered?: boolean): void;
  /** residual += x; out = rmsnorm(residual) * weight (`centered`: as rmsNorm's) */
  addRmsNorm(x: T, residual: T, weight: T, eps: number, out: T, centered?: boolean): void;
  /** out += x, elementwise (Cohere's parallel block: the MLP's output joins the attention's). */
  add(x: T, out: T): void;
  /** residual += rmsnorm(x) * weight (OLMo 2 / 3's norm after a sublayer; none before the next). */
  rmsNormAdd(x: T, weight: T, eps: number, residual: T): void;
  /**
   * OLMo 2 / 3's q/k norms, in place in packed qkv rows [q | k | v]: each token's whole q projection (all
   * heads) RMS-normed with qNorm [numHeads·headDim], its whole k projection with kNorm [numKvHeads·headDim].
   * With tensor parallelism (a rank holds some heads) `sums` [rows, 2] (f32) holds the rows' sums of squares of
   * q and k over all `ranks` (qkSquareSums, then an all-reduce); null: computed from the rows themselves.
   */
  qkNormAcrossHeads(qkv: T, qNorm: T, kNorm: T, eps: number, shape: AttentionShape, sums?: T | null, ranks?: number): void;
  /** Each row's sum of squares of its q part and of its k part, into sums [rows, 2] (f32): this rank's share. */
  qkSquareSums(qkv: T, shape: AttentionShape, sums: T): void;
  /** out = x · Wᵀ (+ bias); W is [outFeatures, inFeatures] */
  linear(x: T, weight: T, bias: T | null, out: T): void;
  /**
   * In place on the packed qkv rows [tokens, (H + 2·Hkv)·D]: optional per-head RMSNorm of q and k, then
   * rotate-half RoPE of q and k at each token's position using the [maxPos, D/2] cos/sin tables; then each
   * token's (normed, rotated) k and its v go into the caches at its slot (slot −1 = skip). One kernel on GPUs.
   * A norm weight of D values serves every head; one of heads · D (Cohere's Command R+) gives each head its own.
   * `centered`: the norms are LayerNorms without bias (rmsNorm's `centered`).
   */
  qkNormRopeStoreKv(qkv: T, positions: T, slotMapping: T, cos: T, sin: T, qNorm: T | null, kNorm: T | null, eps: number, shape: AttentionShape, kCache: T, vCache: T, centered?: boolean): void;
  /**
   * Causal attention of each query token over its sequence's cached context; out is [tokens, H·D]. `sinks`
   * (f32 [H], GPT-OSS): per query head a logit that joins the softmax with a value of zero (an attention sink).
   */
  pagedAttention(qkv: T, kCache: T, vCache: T, step: StepTensors<T>, blockSize: number, shape: AttentionShape, out: T, sinks?: T | null): void;
  /**
   * Multi-head latent attention's packed rows (src/model/mla.ts): from q [tokens, H·D] (each head's rope part, then its
   * nope part), kv [tokens, H·(nope + v)] (kv_b_proj's: each head's nope key, then its value) and kpe [tokens, rope]
   * (the rotary key all heads share), writes qkv [tokens, 3·H·D]: q as it is; each head's key [kpe | nope key]; each
   * head's value [value | zeros] (D = rope + nope ≥ v).
   */
  mlaAssemble(q: T, kv: T, kpe: T, qkv: T, s: MlaShape): void;
  /** out = silu(x[:, :I]) * x[:, I:] for x of width 2I */
  siluMul(x: T, out: T): void;
  /** out = gelu_tanh(x[:, :I]) * x[:, I:] for x of width 2I (GELU's tanh approximation: Gemma's gelu_pytorch_tanh) */
  geluTanhMul(x: T, out: T): void;
  /**
   * Optional fusion: out = siluMul(gateUp) · weightᵀ (the MLP's down projection), using `act` as scratch
   * where the backend does not fuse. Without it the model calls siluMul and linear.
   */
  siluMulLinear?(gateUp: T, weight: T, act: T, out: T): void;
  /**
   * Mixture-of-experts routing: per row of router logits [n, E], softmax in f32, the topK largest
   * probabilities (ties: the lower expert id) in descending order, divided by their sum when `renormalize`;
   * then `numShared` entries of weight 1 for shared experts run as experts E … (DeepSeek-V2's):
   * ids [n, topK + numShared] (i32) and weights likewise (f32).
   */
  moeRoute(logits: T, topK: number, renormalize: boolean, ids: T, weights: T, numShared?: number): void;
  /**
   * GLM-4.5 / DeepSeek-V3 routing from f32 router logits [n, E] and the f32 e_score_correction_bias [E]: sigmoid
   * scores (ERNIE 4.5: softmax), experts chosen by score + bias within the best groups (see MoeGrouping), weighted by their scores
   * (renormalized, × scale), then `numShared` entries of weight 1 for the shared experts run as experts E ….
   * ids [n, topK + numShared] (i32), weights likewise (f32).
   */
  moeRouteGrouped(logits: T, bias: T, topK: number, grouping: MoeGrouping, renormalize: boolean, numShared: number, ids: T, weights: T): void;
  /**
   * The experts of a sparse MLP: for each token t and j < topK, with e = ids[t, j],
   * y = down_e(silu(gate_e · x_t) · (up_e · x_t)) — each projection plus its bias, and GPT-OSS's clamped SwiGLU in
   * place of SiLU·up, where `experts` has them — and out[t] = Σ_j weights[t, j] · y (out is overwritten).
   * Scratch rows are n·topK: gateUp [·, 2I], act [·, I], expertOut [·, H]; `routing` holds moeRoutingInts(n·topK, E) i32s.
   */
  moeExperts(x: T, ids: T, weights: T, experts: ExpertWeights<T>, numExperts: number, scratch: MoeScratch<T>, out: T): void;
  /** out[t] += sigmoid(gate[t]) · x[t], gate being [n, 1] (Qwen2-MoE's gated shared expert). */
  sigmoidGatedAdd(x: T, gate: T, out: T): void;
  /** x = cap · tanh(x / cap), in place (Gemma 2's final logit soft-capping; f32 logits). */
  softcap(x: T, cap: number): void;
  /** out[i] = x[rows[i]] */
  gatherRows(x: T, rows: T, numRows: number, out: T): void;
  /**
   * LoRA for a batch whose rows may use different adapters, the adapters stacked in slots: u = x · aᵀ
   * ([rows, slots·w], a being [slots·w, in]), then each row keeps only its slot's w columns, times that
   * slot's scale (rows of slot −1 keep none), then out += u · bT (bT being [slots·w, out]: B transposed,
   * so that each slot's rows of a and of bT are contiguous and a slot is rewritten by writeRows). u is scratch.
   */
  loraAdd(x: T, a: T, bT: T, slots: T, scales: T, numSlots: number, u: T, out: T): void;
  /**
   * Overwrites rows [firstRow, firstRow + values.length / rowWidth) of a tensor made by loadWeight or
   * fromHost, in place (its address stays, so captured graphs see the new values). Waits for queued work
   * that may read the tensor first.
   */
  writeRows(t: T, firstRow: number, values: Float32Array): void;
  /** Samples one token per logits row. */
  sample(logits: T, batch: SamplingBatch): SamplerOutput;
  /**
   * Queues the same sampling and returns at once; wait() gives the tokens. The sampled ids stay where the
   * next step's uploadStep finds them (StepInputs.tokensFromSampled) before they reach the host.
   */
  sampleAsync(logits: T, batch: SamplingBatch): PendingSample;
  /** Copies a tensor to host f32 (tests and debugging). */
  toHost(t: T): Float32Array;
  /** Releases threads or device resources the backend holds. */
  close?(): void;
  /** Fixes step-input buffers at their largest (graph-capable backends); logits rows default to one per sequence. */
  /** blockSize > 0: full-width block tables stay on the device between steps, changed entries uploaded (CUDA). */
  reserveStep?(maxTokens: number, maxSeqs: number, maxBlocksPerSeq: number, maxLogitsRows?: number, numKvGroups?: number, blockSize?: number): void;
  /** Records what `run` launches as a replayable graph under `key` (CUDA graphs). */
  captureGraph?(key: number, run: () => void): void;
  launchGraph?(key: number): void;
  /** Waits for the work queued so far (asynchronous backends; the CPU backend runs synchronously). */
  synchronize?(): void;
}

/**
 * One prompt prefilled from scratch into KV blocks 0 … width − 1 (slot i holds position i), asking for the
 * logits of its last position: how the HF comparisons (scripts/compare-hf.ts, the fixture tests) run a
 * model directly, without the engine.
 */
export function prefillInputs(prompt: readonly number[], width: number): StepInputs {
  const n = prompt.length, iota = Int32Array.from({ length: n }, (_, i) => i);
  return {
    tokenIds: Int32Array.from(prompt), positions: iota, slotMapping: iota.slice(), queryStart: Int32Array.from([0, n]), seqLens: Int32Array.from([n]),
    blockTables: Int32Array.from({ length: width }, (_, i) => i), maxBlocksPerSeq: width, logitsRows: Int32Array.from([n - 1]),
  };
}

/**
 * The inputs a decode graph is warmed up and captured with: `n` one-token sequences whose KV writes go to
 * slot −1 (nothing stored), with block tables `width` wide. Replays overwrite them in place.
 */
export function decodeGraphInputs(n: number, width: number, lora = false, numKvGroups = 1): StepInputs {
  const iota = Int32Array.from({ length: n + 1 }, (_, i) => i);
  return {
    tokenIds: new Int32Array(n), positions: new Int32Array(n), slotMapping: new Int32Array(n).fill(-1),
    queryStart: iota, seqLens: new Int32Array(n).fill(1), blockTables: new Int32Array(n * width), maxBlocksPerSeq: width,
    logitsRows: iota.subarray(0, n), ...(lora ? { loraSlots: new Int32Array(n).fill(-1) } : {}),
    ...(numKvGroups > 1 ? { kvGroups: Array.from({ length: numKvGroups - 1 }, () => ({ slotMapping: new Int32Array(n).fill(-1), blockTables: new Int32Array(n * width) })) } : {}),
  };
}

/**
 * Qwen3 / Qwen2 / Llama decoder, written once against the Backend interface.
 * Per layer: RMSNorm → packed QKV GEMM → (q/k norm +) RoPE → KV store → paged attention → o_proj →
 * residual add + RMSNorm → packed gate/up GEMM → SiLU·mul → down_proj. Then final norm and LM head on the
 * rows that sample — or, for a pooling model (embeddings), the final-norm hidden states of those rows.
 */
import { moeRoutingInts, type Backend, type ExpertWeights, type StepTensors, type Tensor, type AttentionShape } from "../backend/backend.ts";
import type { Checkpoint } from "../loader/checkpoint.ts";
import type { TensorView } from "../loader/safetensors.ts";
import { isPacked, packedScaled, type LinearWeight } from "../loader/packed-matrix.ts";
import { toFloat32 } from "../loader/dtype.ts";
import { localDims, sliceCols, sliceRows, type ShardSpec } from "../parallel/shard.ts";
import { ropeAttentionFactor, ropeInvFreq, type ModelConfig } from "./config.ts";
import { LORA_GROUPS, loraCoverageOf, loraUncovered, targetShape, type LoraAdapter, type LoraCoverage, type LoraGroup, type LoraTarget } from "../lora/lora-adapter.ts";
import { kvCacheLayout } from "./kv-cache-layout.ts";
import { interleavedRopeSource, permuteRows } from "./weight-rows.ts";
import { gptOssExpertParts } from "./gpt-oss-experts.ts";
import { loadMlaWeights, mlaOutputProjection, mlaQkv, mlaScratch, type MlaScratch, type MlaWeights } from "./mla.ts";

/** A tensor's values as f32 on the host. */
function floats(t: TensorView): Float32Array {
  return toFloat32(t.bytes, t.dtype);
}

/**
 * Where the decoder's tensors live in a checkpoint: "model." (…ForCausalLM), "" (a bare decoder, as embedding
 * models ship), or a multimodal checkpoint's language model ("language_model.model.", as Gemma 3's were
 * first saved; "model.language_model.", as transformers saves them now).
 */
export function decoderPrefix(ckpt: Checkpoint): string {
  return ["model.", "", "language_model.model.", "model.language_model."].find((p) => ckpt.has(`${p}embed_tokens.weight`)) ?? "model.";
}

/** 1 + `t` (as f32): Gemma's RMSNorm weights, which the norm multiplies by (1 + w). */
function plusOne(t: TensorView): TensorView {
  const v = floats(t).map((x) => 1 + x);
  return { ...t, name: `1+${t.name}`, dtype: "F32", bytes: new Uint8Array(v.buffer) };
}

/** `t`'s rows (whole heads of width D) in the order interleavedRopeSource says. */
function rotateHalfRows(t: TensorView, D: number, R: number): TensorView;
function rotateHalfRows(t: LinearWeight, D: number, R: number): LinearWeight;
function rotateHalfRows(t: LinearWeight, D: number, R: number): LinearWeight {
  return permuteRows(t, t.shape[0]!, (j) => interleavedRopeSource(j, D, R), "RoPE pairs as halves");
}

/** `t` times `k` (as f32; `t` itself when k is 1): how a model's constant multipliers are folded into weights. */
function scaled(t: TensorView, k: number): TensorView;
function scaled(t: LinearWeight, k: number): LinearWeight;
function scaled(t: LinearWeight, k: number): LinearWeight {
  if (k === 1) return t;
  if (isPacked(t)) return packedScaled(t, k);
  const v = floats(t).map((x) => x * k);
  return { ...t, name: `${t.name}×${k}`, dtype: "F32", bytes: new Uint8Array(v.buffer) };
}

/** Cross-rank operations of tensor parallelism (a no-op group when size is 1). */
export interface Collective<T> {
  readonly rank: number;
  readonly size: number;
  /** Sums `t` over all ranks in place; every rank ends with the same values. */
  allReduce(t: T): void;
  /** Rank r holds logits for vocabulary [r·perRank, …) in `local`; rank 0 receives all of them in `full`. */
  gatherLogits(local: T, full: T, numRows: number): void;
}

interface LayerWeights<T extends Tensor> {
  /** The attention's and the MLP's input norms (null where ModelConfig.inputNorms is false: OLMo 2 / 3). */
  inputNorm: T | null;
  /** The packed q/k/v projection (null with MLA, whose projections are in `mla`). */
  qkv: T | null;
  mla: MlaWeights<T> | null;
  qkvBias: T | null;
  qNorm: T | null;
  kNorm: T | null;
  o: T;
  oBias: T | null;
  /** GPT-OSS's attention sinks of this rank's query heads (f32 [H]), else null. */
  sinks: T | null;
  postNorm: T | null;
  /** Norms of the attention and MLP outputs (ModelConfig.outputNorms: Gemma, GLM-4-0414; null elsewhere). */
  attnOutNorm: T | null;
  mlpOutNorm: T | null;
  /** The dense MLP (null in a sparse layer). */
  gateUp: T | null;
  down: T | null;
  /** A sparse layer's experts (null in a dense one). */
  moe: MoeLayer<T> | null;
}

/** A sparse MLP's weights (see MoeConfig): router [E, H], experts' gate/up [E·2I, H] and down [E·H, I], this rank's slice of I. */
interface MoeLayer<T extends Tensor> {
  router: T;
  /** GPT-OSS's router bias [E] (MoeConfig.routerBias), else null. */
  routerBias: T | null;
  /** GLM-4.5's e_score_correction_bias [E] (f32; MoeConfig.grouped), else null. */
  scoreBias: T | null;
  experts: ExpertWeights<T>;
  /** Qwen2-MoE's shared expert: its gate/up and down, and the [1, H] gate of its output. */
  shared: { gateUp: T; down: T; gate: T } | null;
}

/** Tokens a sparse MLP takes at a time: bounds its scratch (topK rows per token) on long prefills. */
export const MOE_CHUNK_TOKENS = 2048;

/**
 * One layer's LoRA weights, every slot stacked (see enableLora); per packed projection, null where the
 * engine's coverage leaves it out (PEFT's default q/v-only adapters leave the MLP alone).
 */
interface LoraLayer<T> {
  qkv: { a: T; b: T } | null;
  o: { a: T; b: T } | null;
  gateUp: { a: T; b: T } | null;
  down: { a: T; b: T } | null;
}

interface Workspace<T> {
  capacity: number;
  hidden: T;
  residual: T;
  normed: T;
  qkv: T;
  attn: T;
  gateUp: T;
  act: T;
  logitsCapacity: number;
  last: T;
  /** This rank's vocabulary slice of the logits (the whole vocabulary without tensor parallelism). */
  localLogits: T;
  logits: T;
  /** LoRA scratch (null without adapters): the packed qkv group's A products, o/down's, gate/up's. */
  lora: { qkv: T; rank: T; gateUp: T } | null;
  /** Gemma, GLM-4-0414: the attention or MLP output after its norm (null elsewhere). */
  sandwich: T | null;
  /** Cohere's parallel block: the MLP's output, added to the attention's (null elsewhere). */
  mlpOut: T | null;
  /** OLMo 2 / 3 under tensor parallelism: each row's sums of squares of q and k, all-reduced (f32 [capacity, 2]). */
  qkSums: T | null;
  /** Sparse-MLP scratch for min(capacity, MOE_CHUNK_TOKENS) tokens (null for a dense model). */
  moe: MoeWorkspace<T> | null;
  /** Multi-head latent attention's projections (null without MLA). */
  mla: MlaScratch<T> | null;
}

interface MoeWorkspace<T> {
  tokens: number;
  routerLogits: T;
  ids: T;
  weights: T;
  gateUp: T;
  act: T;
  expertOut: T;
  routing: T;
  /** Qwen2-MoE's shared expert: gate/up, activation, output, gate logit (null without one). */
  shared: { gateUp: T; act: T; out: T; gate: T } | null;
}

export class CausalLM<T extends Tensor> {
  readonly attention: AttentionShape;
  /** Each layer's attention: `attention`, with its sliding window where the layer has one. */
  private readonly layerAttention: AttentionShape[];
  private embed!: T;
  private lmHead!: T;
  private finalNorm!: T;
  private layers: LayerWeights<T>[] = [];
  /** Each layer's RoPE tables: cos and sin, or for a layer without RoPE (SmolLM3's NoPE layers) cos = 1, sin = 0. */
  private layerRope: { cos: T; sin: T }[] = [];
  private kv: { k: T; v: T }[] = [];
  /** Each layer's KV cache group (which of a step's slot mappings and block tables it uses). */
  private kvGroupOf: number[] = [];
  private blockSize = 0;
  private ws: Workspace<T> | null = null;
  /** LoRA (enableLora): per-layer stacked adapter weights, each slot's scale, slot count, max rank, covered groups. */
  private lora: { layers: LoraLayer<T>[]; scales: T; slots: number; rank: number; coverage: LoraCoverage } | null = null;

  private readonly dims: ReturnType<typeof localDims>;
  private readonly shard: ShardSpec;

  /** Pooling model (--runner pooling): forward returns hidden states, and no LM head is loaded. */
  readonly pooling: boolean;

  constructor(readonly cfg: ModelConfig, readonly backend: Backend<T>, readonly maxModelLen: number, readonly collective: Collective<T> | null = null, opts: { pooling?: boolean } = {}) {
    this.pooling = opts.pooling ?? false;
    this.shard = { rank: collective?.rank ?? 0, size: collective?.size ?? 1 };
    this.dims = localDims(cfg, this.shard);
    this.attention = {
      numHeads: this.dims.numHeads, numKvHeads: this.dims.numKvHeads, headDim: cfg.headDim, scale: cfg.scales.attention,
      ...(cfg.attnLogitSoftcap ? { softcap: cfg.attnLogitSoftcap } : {}), ...(cfg.rotaryDim < cfg.headDim ? { rotaryDim: cfg.rotaryDim } : {}),
    };
    this.layerAttention = cfg.layerWindows.map((w) => (w > 0 ? { ...this.attention, window: w } : this.attention));
  }

  /** Shapes of this rank's weights, by role (for checks and logs). */
  weightShapes(): Record<string, readonly number[]> {
    const L = this.layers[0]!, dense = this.layers.find((l) => l.gateUp), sparse = this.layers.find((l) => l.moe)?.moe;
    return {
      embed: this.embed.shape, lmHead: this.lmHead.shape, qkv: L.qkv?.shape ?? L.mla!.q.shape, o: L.o.shape,
      ...(dense ? { gateUp: dense.gateUp!.shape, down: dense.down!.shape } : {}),
      ...(sparse ? { router: sparse.router.shape, expertsGateUp: sparse.experts.w13.shape, expertsDown: sparse.experts.w2.shape } : {}),
    };
  }

  /** Local (this rank's) sizes: heads, KV heads, intermediate, vocabulary slice. */
  get localDims(): ReturnType<typeof localDims> {
    return this.dims;
  }

  /** Whether LoRA is enabled: every step then carries each token's adapter slot. */
  get hasLora(): boolean {
    return this.lora !== null;
  }

  /** Loads and packs this rank's shard of every weight (full shapes checked against the config). */
  load(ckpt: Checkpoint): void {
    const c = this.cfg, b = this.backend, d = this.dims, r = this.shard.rank, N = this.shard.size;
    const H = c.hiddenSize, D = c.headDim, qOut = c.numHeads * D, kvOut = c.numKvHeads * D, I = c.intermediateSize;
    const w = (name: string, shape: number[]) => ckpt.tensor(name, shape);
    // The dense layers' projections: packed integers stay packed (GPTQ, AWQ, pack-quantized) where the backend keeps them so.
    const lw = (name: string, shape: number[]) => ckpt.linearWeight(name, shape);
    const load = (parts: LinearWeight[], shape: number[]) => b.loadWeight(parts, shape);
    // A projection: with --quantization fp8 (online), its float rows become FP8 as the backend loads them.
    const linear = (parts: LinearWeight[], shape: number[]) => b.loadWeight(parts, shape, "linear", ckpt.onlineQuantization);
    const one = (name: string, shape: number[]) => load([w(name, shape)], shape);
    // An RMSNorm weight (Gemma's stored as w for a norm that multiplies by 1 + w).
    const normView = (name: string, shape: number[]) => (c.gemmaNorms ? plusOne(w(name, shape)) : w(name, shape));
    const norm = (name: string, shape: number[]) => load([normView(name, shape)], shape);
    // GLM's interleaved RoPE pairs, as rotate-half pairs (the q and k heads' rows, whole heads at a time).
    const qk = (t: LinearWeight) => (c.ropeInterleaved ? rotateHalfRows(t, D, c.rotaryDim) : t);
    // Slices of a full tensor for this rank.
    const qRows = (t: LinearWeight) => sliceRows(t, r * d.numHeads * D, (r + 1) * d.numHeads * D);
    const kvRows = (t: LinearWeight) => sliceRows(t, d.kvHeadStart * D, (d.kvHeadStart + d.numKvHeads) * D);
    const iRows = (t: LinearWeight) => sliceRows(t, r * d.intermediate, (r + 1) * d.intermediate);
    const vocabRows = (t: TensorView) => sliceRows(t, d.vocabStart, d.vocabStart + d.vocabRows);
    const lq = d.numHeads * D, lkv = d.numKvHeads * D, li = d.intermediate;
    // Bare decoders (embedding models) are often saved without the "model." prefix.
    const m = decoderPrefix(ckpt);
    // A multimodal checkpoint as first saved keeps its LM head beside the decoder (language_model.lm_head).
    const head = m === "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight";
    // Granite's multipliers are folded into the weights they follow (ModelConfig.scales): o_proj and down_proj
    // (the residual multiplier) and the LM head (÷ logits_scaling). The embedding multiplier (Granite's, Gemma's
    // √hidden) is applied by the embedding lookup instead, so that a tied LM head shares the table.
    const k = c.scales;
    const embedTable = vocabRows(w(`${m}embed_tokens.weight`, [c.vocabSize, H]));
    this.embed = load([embedTable], [d.vocabRows, H]);
    this.finalNorm = norm(`${m}norm.weight`, [H]);
    if (this.pooling) this.lmHead = this.embed; // never used: forward stops at the hidden states
    else if (c.headless) throw new Error(`${ckpt.dir}: the checkpoint is a bare decoder without an LM head (architecture ${c.architecture}…Model): serve it as an embedding model with --runner pooling`);
    else if (c.tieWordEmbeddings) this.lmHead = k.logitsScaling === 1 ? this.embed : load([scaled(embedTable, 1 / k.logitsScaling)], [d.vocabRows, H]);
    else if (ckpt.has(head)) this.lmHead = load([scaled(vocabRows(w(head, [c.vocabSize, H])), 1 / k.logitsScaling)], [d.vocabRows, H]);
    else throw new Error(`${ckpt.dir}: missing tensor '${head}' (config says tie_word_embeddings=false)`);
    this.layers = [];
    for (let i = 0; i < c.numLayers; i++) {
      const p = `${m}layers.${i}.`;
      const a = `${p}self_attn.`;
      // Phi-3 / Phi-4 checkpoints store q/k/v and gate/up fused: the same rows, read in parts.
      const fusedQkv = ckpt.has(`${a}qkv_proj.weight`) ? lw(`${a}qkv_proj.weight`, [qOut + 2 * kvOut, H]) : null;
      const fusedGateUp = ckpt.has(`${p}mlp.gate_up_proj.weight`) ? lw(`${p}mlp.gate_up_proj.weight`, [2 * I, H]) : null;
      // Multi-head latent attention (DeepSeek): its own projections (src/model/mla.ts) make the qkv rows.
      const mla = c.mla ? loadMlaWeights(b, ckpt, a, c.mla, H, c.numHeads, r * d.numHeads, d.numHeads) : null;
      const q = mla ? null : qk(fusedQkv ? sliceRows(fusedQkv, 0, qOut) : lw(`${a}q_proj.weight`, [qOut, H]));
      const kw = mla ? null : qk(fusedQkv ? sliceRows(fusedQkv, qOut, qOut + kvOut) : lw(`${a}k_proj.weight`, [kvOut, H]));
      const vw = mla ? null : fusedQkv ? sliceRows(fusedQkv, qOut + kvOut, qOut + 2 * kvOut) : lw(`${a}v_proj.weight`, [kvOut, H]);
      const oWeight = c.mla ? mlaOutputProjection(w(`${a}o_proj.weight`, [H, c.numHeads * c.mla.vHeadDim]), c.mla, c.numHeads, r * d.numHeads, d.numHeads)
        : N === 1 ? lw(`${a}o_proj.weight`, [H, qOut]) : sliceCols(lw(`${a}o_proj.weight`, [H, qOut]), r * lq, (r + 1) * lq);
      const sparse = c.moe?.sparseLayers[i] ?? false;
      const gate = sparse ? null : fusedGateUp ? sliceRows(fusedGateUp, 0, I) : lw(`${p}mlp.gate_proj.weight`, [I, H]);
      const up = sparse ? null : fusedGateUp ? sliceRows(fusedGateUp, I, 2 * I) : lw(`${p}mlp.up_proj.weight`, [I, H]);
      this.layers.push({
        inputNorm: c.inputNorms ? norm(`${p}input_layernorm.weight`, [H]) : null,
        qkv: q && kw && vw ? linear([qRows(q), kvRows(kw), kvRows(vw)], [lq + 2 * lkv, H]) : null,
        mla,
        qkvBias: c.qkvBias ? load([qRows(qk(w(`${a}q_proj.bias`, [qOut]))), kvRows(qk(w(`${a}k_proj.bias`, [kvOut]))), kvRows(w(`${a}v_proj.bias`, [kvOut]))], [lq + 2 * lkv]) : null,
        // Per head [D], or (OLMo 2 / 3) over the whole q and k projections: this rank's heads' part of them.
        // (Command R+: a [D] weight per head, this rank's heads' rows, each head's pairs permuted as its q/k rows.)
        qNorm: !c.qkNorm ? null : c.qkNormAcrossHeads ? load([qRows(w(`${a}q_norm.weight`, [qOut]))], [lq])
          : c.qkNormWeightPerHead ? load([qRows(qk({ ...w(`${a}q_norm.weight`, [c.numHeads, D]), shape: [qOut] }))], [lq]) : load([qk(normView(`${a}q_norm.weight`, [D]))], [D]),
        kNorm: !c.qkNorm ? null : c.qkNormAcrossHeads ? load([kvRows(w(`${a}k_norm.weight`, [kvOut]))], [lkv])
          : c.qkNormWeightPerHead ? load([kvRows(qk({ ...w(`${a}k_norm.weight`, [c.numKvHeads, D]), shape: [kvOut] }))], [lkv]) : load([qk(normView(`${a}k_norm.weight`, [D]))], [D]),
        o: linear([scaled(oWeight, k.residual)], [H, lq]),
        // A row-parallel bias is added once, by rank 0, before the all-reduce.
        oBias: c.oBias && r === 0 ? load([scaled(w(`${a}o_proj.bias`, [H]), k.residual)], [H]) : null,
        sinks: c.attentionSinks ? b.fromHost(floats(sliceRows(w(`${a}sinks`, [c.numHeads]), r * d.numHeads, (r + 1) * d.numHeads)), [d.numHeads]) : null,
        // Gemma / GLM-4-0414 (ModelConfig.outputNorms): the attention output and the MLP output are normed, and the MLP input norm is named anew.
        // (Cohere's parallel block: the MLP reads the attention's input, normed once.)
        postNorm: c.inputNorms && !c.parallelBlock ? norm(`${p}${c.outputNorms?.mlpInput ?? "post_attention_layernorm"}.weight`, [H]) : null,
        attnOutNorm: c.outputNorms ? norm(`${p}${c.outputNorms.attention}.weight`, [H]) : null,
        mlpOutNorm: c.outputNorms ? norm(`${p}${c.outputNorms.mlp}.weight`, [H]) : null,
        gateUp: gate && up ? linear([iRows(gate), iRows(up)], [2 * li, H]) : null,
        down: sparse ? null : linear([scaled(N === 1 ? lw(`${p}mlp.down_proj.weight`, [H, I]) : sliceCols(lw(`${p}mlp.down_proj.weight`, [H, I]), r * li, (r + 1) * li), k.residual)], [H, li]),
        moe: sparse ? this.loadExperts(ckpt, p) : null,
      });
    }
    this.buildRopeTables();
  }

  /**
   * A sparse layer's router and experts, this rank's slice of each expert's intermediate rows (gate and up
   * rows, down columns), packed as MoeLayer says. Experts come one tensor per projection and expert (Qwen's
   * mlp.experts.E.gate_proj…, Mixtral's block_sparse_moe.experts.E.w1/w3/w2) or, as transformers 5 saves
   * them, fused per layer: experts.gate_up_proj [E, 2I, H] and experts.down_proj [E, H, I] (Mixtral's, with
   * its router, under mlp. there).
   */
  private loadExperts(ckpt: Checkpoint, p: string): MoeLayer<T> {
    const c = this.cfg, moe = c.moe!, b = this.backend, r = this.shard.rank, N = this.shard.size, H = c.hiddenSize;
    const E = moe.numExperts, I = moe.intermediateSize, li = this.dims.moeIntermediate, granite = moe.naming === "granite";
    if (moe.naming === "gpt_oss") return this.loadGptOssExperts(ckpt, `${p}mlp.`);
    const mixtral = (moe.naming === "mixtral" || moe.naming === "minimax") && !ckpt.has(`${p}mlp.experts.gate_up_proj`);
    const m = mixtral || granite ? `${p}block_sparse_moe.` : `${p}mlp.`;
    const w = (name: string, shape: number[]) => ckpt.tensor(name, shape);
    // Experts one tensor each: packed ones (GPTQ, FP8 …) may stay packed (the CUDA backend's packed expert GEMM).
    const lw = (name: string, shape: number[]) => ckpt.linearWeight(name, shape);
    const q8 = ckpt.onlineQuantization;
    const mine = (t: LinearWeight, first: number) => sliceRows(t, first + r * li, first + (r + 1) * li);
    // Granite's residual multiplier follows the experts' down projections, as it follows down_proj.
    const downCols = (t: LinearWeight) => scaled(N === 1 ? t : sliceCols(t, r * li, (r + 1) * li), c.scales.residual);
    // DeepSeek-V2's routed_scaling_factor scales the routed experts' outputs (not the shared ones'): folded into their down projections.
    const routedDown = (t: LinearWeight) => scaled(downCols(t), moe.routedOutputScale);
    const router = b.loadWeight([w(granite ? `${m}router.layer.weight` : `${m}gate.weight`, [E, H])], [E, H]);
    const parts13: LinearWeight[] = [], parts2: LinearWeight[] = [];
    // Fused per layer: transformers 5's MoE layers (experts.gate_up_proj, experts.down_proj) and Granite's (input_linear, output_linear).
    const fused = granite ? [`${m}input_linear.weight`, `${m}output_linear.weight`] : [`${m}experts.gate_up_proj`, `${m}experts.down_proj`];
    if (granite || (!mixtral && ckpt.has(fused[0]!))) {
      const gu = w(fused[0]!, [E, 2 * I, H]), dn = w(fused[1]!, [E, H, I]);
      const gu2 = { ...gu, shape: [E * 2 * I, H] }, dn2 = { ...dn, shape: [E * H, I] };
      for (let e = 0; e < E; e++) {
        parts13.push(mine(gu2, e * 2 * I), mine(gu2, e * 2 * I + I));
        parts2.push(routedDown(sliceRows(dn2, e * H, (e + 1) * H)));
      }
    } else {
      const [g, u, d] = mixtral ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"];
      for (let e = 0; e < E; e++) {
        const x = `${m}experts.${e}.`;
        parts13.push(mine(lw(`${x}${g}.weight`, [I, H]), 0), mine(lw(`${x}${u}.weight`, [I, H]), 0));
        parts2.push(routedDown(lw(`${x}${d}.weight`, [H, I])));
      }
    }
    // GLM-4.5's shared experts: n_shared_experts × I rows in one MLP, which is the sum of n MLPs of I rows each (its
    // gate/up rows and down columns cut in n): appended as experts E, E + 1, … that every token takes with weight 1.
    for (let j = 0; j < moe.numSharedExperts; j++) {
      const x = `${m}shared_experts.`, SI = moe.numSharedExperts * I;
      parts13.push(mine(lw(`${x}gate_proj.weight`, [SI, H]), j * I), mine(lw(`${x}up_proj.weight`, [SI, H]), j * I));
      parts2.push(downCols(sliceCols(lw(`${x}down_proj.weight`, [H, SI]), j * I, (j + 1) * I)));
    }
    // Grouped routing's correction bias (DeepSeek-V2's group_limited_greedy has none: zeros).
    const bias = !moe.grouped || moe.grouped.correctionBias === false ? null
      : moe.naming === "ernie" ? { ...w(`${m}moe_statics.e_score_correction_bias`, [1, E]), shape: [E] }
      : w(moe.naming === "minimax" ? `${m}e_score_correction_bias` : `${m}gate.e_score_correction_bias`, [E]);
    const scoreBias = !moe.grouped ? null : b.fromHost(bias ? toFloat32(bias.bytes, bias.dtype) : new Float32Array(E), [E]);
    let shared: MoeLayer<T>["shared"] = null;
    const S = moe.sharedExpertIntermediateSize, ls = this.dims.sharedIntermediate;
    if (S > 0) {
      const x = `${m}shared_expert.`, rows = (t: LinearWeight) => sliceRows(t, r * ls, (r + 1) * ls);
      shared = {
        gateUp: b.loadWeight([rows(lw(`${x}gate_proj.weight`, [S, H])), rows(lw(`${x}up_proj.weight`, [S, H]))], [2 * ls, H], "linear", q8),
        down: b.loadWeight([N === 1 ? lw(`${x}down_proj.weight`, [H, S]) : sliceCols(lw(`${x}down_proj.weight`, [H, S]), r * ls, (r + 1) * ls)], [H, ls], "linear", q8),
        gate: b.loadWeight([w(`${m}shared_expert_gate.weight`, [1, H])], [1, H]),
      };
    }
    const all = E + moe.numSharedExperts;
    const experts = { w13: b.loadWeight(parts13, [all * 2 * li, H], "experts", q8), w2: b.loadWeight(parts2, [all * H, li], "experts", q8), b13: null, b2: null, swiglu: null };
    return { router, routerBias: null, scoreBias, experts, shared };
  }

  /** GPT-OSS's router (with its bias) and experts (with theirs, bf16 or MXFP4: gpt-oss-experts.ts), this rank's slice of each. */
  private loadGptOssExperts(ckpt: Checkpoint, m: string): MoeLayer<T> {
    const c = this.cfg, moe = c.moe!, b = this.backend, H = c.hiddenSize, E = moe.numExperts, li = this.dims.moeIntermediate;
    const parts = gptOssExpertParts(ckpt, m, E, H, moe.intermediateSize, this.shard.rank, this.shard.size, li);
    return {
      router: b.loadWeight([ckpt.tensor(`${m}router.weight`, [E, H])], [E, H]), routerBias: b.loadWeight([ckpt.tensor(`${m}router.bias`, [E])], [E]), scoreBias: null, shared: null,
      experts: {
        // (bf16 experts become FP8 with --quantization fp8, as the other models' do.)
        w13: b.loadWeight(parts.w13, [E * 2 * li, H], "experts", ckpt.onlineQuantization), w2: b.loadWeight(parts.w2, [E * H, li], "experts", ckpt.onlineQuantization),
        b13: b.loadWeight(parts.b13, [E * 2 * li]), b2: parts.b2 && b.loadWeight([parts.b2], [E * H]), swiglu: moe.swiglu,
      },
    };
  }

  /**
   * Makes room for `slots` LoRA adapters of rank ≤ `maxRank` (all zero: no adapter), on the layers' projection
   * groups `coverage` names ("all", or `${layer}.${group}` keys — an adapter may only target those). A step's
   * tokens pick their slot through StepTensors.loraSlots; setLoraSlot puts an adapter in one. Per group, A
   * stacks each slot's k·R rows (k targets, R = maxRank) as [slots·k·R, in] and B is kept transposed the same
   * way, [slots·k·R, out] (Backend.loraAdd), so a slot is a contiguous range of rows in both. Sharded as the
   * projections are: the column-parallel groups (qkv, gate/up) take their output columns of Bᵀ, the
   * row-parallel ones (o, down) their input columns of A — each rank's partial product then joins the
   * projection's all-reduce. Call after load(), before the first step.
   */
  enableLora(slots: number, maxRank: number, coverage: LoraCoverage): void {
    const c = this.cfg, b = this.backend, R = maxRank;
    if (c.mla) throw new Error("LoRA adapters are not supported with multi-head latent attention (DeepSeek): its projections are not q_proj / k_proj / v_proj");
    const zeros = (rows: number, cols: number) => b.loadWeight([{ name: "(LoRA slots)", file: "(LoRA slots)", dtype: "F32", shape: [rows, cols], bytes: new Uint8Array(rows * cols * 4) }], [rows, cols]);
    const layers: LoraLayer<T>[] = [];
    for (let l = 0; l < c.numLayers; l++) {
      const group = (g: LoraGroup) => {
        if (coverage !== "all" && !coverage.has(`${l}.${g}`)) return null;
        // A sparse layer has no dense MLP to adapt (setLoraSlot refuses adapters that target it).
        if ((g === "gateUp" || g === "down") && this.layers[l]!.moe) return null;
        const rows = slots * LORA_GROUPS[g].length * R, { inF, outF } = this.loraGroupShape(g);
        return { a: zeros(rows, inF), b: zeros(rows, outF) };
      };
      layers.push({ qkv: group("qkv"), o: group("o"), gateUp: group("gateUp"), down: group("down") });
    }
    this.lora = { layers, scales: b.fromHost(new Float32Array(slots), [slots]), slots, rank: R, coverage };
    this.ws = null; // the workspace gains the LoRA scratch
  }

  /** This rank's [in, out] of a LoRA group's product (the packed projection's local shape). */
  private loraGroupShape(g: LoraGroup): { inF: number; outF: number } {
    const d = this.dims, D = this.cfg.headDim, H = this.cfg.hiddenSize, lq = d.numHeads * D, lkv = d.numKvHeads * D, li = d.intermediate;
    return { qkv: { inF: H, outF: lq + 2 * lkv }, o: { inF: lq, outF: H }, gateUp: { inF: H, outF: 2 * li }, down: { inF: li, outF: H } }[g];
  }

  /**
   * Puts an adapter (checked against this model and the coverage, see loraUncovered) in a slot, or clears
   * the slot (null): this rank's shard of its A and B go into the slot's rows, zero-padded to the max rank.
   */
  setLoraSlot(slot: number, adapter: LoraAdapter | null): void {
    const lora = this.lora;
    if (!lora) throw new Error("setLoraSlot: LoRA is not enabled (enableLora)");
    if (!(slot >= 0 && slot < lora.slots)) throw new Error(`setLoraSlot: slot ${slot} is outside 0…${lora.slots - 1}`);
    if (adapter) {
      if (adapter.rank > lora.rank) throw new Error(`LoRA adapter ${adapter.name}: rank ${adapter.rank} exceeds the max rank ${lora.rank}`);
      const uncovered = loraUncovered(adapter, lora.coverage);
      if (uncovered.length > 0) throw new Error(`LoRA adapter ${adapter.name}: ${uncovered.join(", ")} not covered by this engine's LoRA layers`);
    }
    const b = this.backend, c = this.cfg, d = this.dims, R = lora.rank, rank = this.shard.rank, D = c.headDim;
    const lq = d.numHeads * D, lkv = d.numKvHeads * D, li = d.intermediate, H = c.hiddenSize;
    /** Per target: the full output rows this rank keeps and where they go in the group's local output. */
    const outRange: Record<LoraTarget, [number, number, number]> = {
      q_proj: [rank * lq, lq, 0], k_proj: [d.kvHeadStart * D, lkv, lq], v_proj: [d.kvHeadStart * D, lkv, lq + lkv],
      o_proj: [0, H, 0], gate_proj: [rank * li, li, 0], up_proj: [rank * li, li, li], down_proj: [0, H, 0],
    };
    /** Per group: the first input column this rank keeps (row-parallel groups take their slice). */
    const inStart: Record<LoraGroup, number> = { qkv: 0, o: rank * lq, gateUp: 0, down: rank * li };
    for (let l = 0; l < c.numLayers; l++) {
      const layer = lora.layers[l]!;
      for (const g of Object.keys(LORA_GROUPS) as LoraGroup[]) {
        const w = layer[g];
        if (!w) {
          const sparseTarget = this.layers[l]!.moe && LORA_GROUPS[g].find((t) => adapter?.weights.has(`${l}.${t}`));
          if (sparseTarget) throw new Error(`LoRA adapter ${adapter!.name}: layer ${l}'s ${sparseTarget} is a mixture of experts, which LoRA does not adapt here (only attention projections, and dense MLP layers)`);
          continue;
        }
        const targets = LORA_GROUPS[g], rows = targets.length * R, { inF, outF } = this.loraGroupShape(g);
        const a = new Float32Array(rows * inF), bT = new Float32Array(rows * outF);
        targets.forEach((t, j) => {
          const tw = adapter?.weights.get(`${l}.${t}`);
          if (!tw) return;
          const r = adapter!.rank, fullIn = targetShape(c, t)[0], A = floats(tw.a), B = floats(tw.b), [o0, count, col] = outRange[t];
          // o and down carry Granite's residual multiplier, as their weights do.
          const outScale = g === "o" || g === "down" ? c.scales.residual : 1;
          for (let i = 0; i < r; i++) {
            const row = j * R + i;
            a.set(A.subarray(i * fullIn + inStart[g], i * fullIn + inStart[g] + inF), row * inF);
            // GLM: q and k rows as the weights hold them (interleaved RoPE pairs as halves).
            const source = c.ropeInterleaved && (t === "q_proj" || t === "k_proj") ? (x: number) => interleavedRopeSource(x, D, c.rotaryDim) : (x: number) => x;
            for (let o = 0; o < count; o++) bT[row * outF + col + o] = B[source(o0 + o) * r + i]! * outScale;
          }
        });
        b.writeRows(w.a, slot * rows, a);
        b.writeRows(w.b, slot * rows, bT);
      }
    }
    b.writeRows(lora.scales, slot, Float32Array.of(adapter?.scale ?? 0));
  }

  /** Enables LoRA with one slot per adapter, covering exactly their targets, and loads them in order (tests, references). */
  loadLora(adapters: LoraAdapter[], maxRank: number): void {
    this.enableLora(adapters.length, maxRank, loraCoverageOf(adapters));
    adapters.forEach((ad, s) => this.setLoraSlot(s, ad));
  }

  /**
   * Each layer's cos/sin tables: the model's RoPE; Gemma 3's sliding-window layers their own base
   * (rope_local_base_freq, unscaled); SmolLM3's NoPE layers the identity (cos 1, sin 0).
   */
  private buildRopeTables(): void {
    const c = this.cfg, global = this.ropeTables(c);
    const local = c.localRopeTheta !== null ? this.ropeTables({ ...c, ropeTheta: c.localRopeTheta, ropeScaling: null }) : global;
    const half = c.rotaryDim / 2, layers = c.ropeLayers;
    const identity = layers?.includes(false)
      ? { cos: this.backend.fromHost(new Float32Array(this.maxModelLen * half).fill(1), [this.maxModelLen, half]), sin: this.backend.fromHost(new Float32Array(this.maxModelLen * half), [this.maxModelLen, half]) }
      : global;
    this.layerRope = Array.from({ length: c.numLayers }, (_, l) => (layers && !layers[l] ? identity : c.layerWindows[l]! > 0 ? local : global));
  }

  /** RoPE cos/sin tables [maxModelLen, rotaryDim / 2] for a base and scaling. */
  private ropeTables(cfg: Pick<ModelConfig, "rotaryDim" | "ropeTheta" | "ropeScaling">): { cos: T; sin: T } {
    const half = cfg.rotaryDim / 2;
    const inv = ropeInvFreq(cfg, this.maxModelLen), scale = ropeAttentionFactor(cfg, this.maxModelLen);
    const cos = new Float32Array(this.maxModelLen * half);
    const sin = new Float32Array(this.maxModelLen * half);
    for (let p = 0; p < this.maxModelLen; p++)
      for (let i = 0; i < half; i++) {
        // HF computes the angle in f32 (inv_freq f32 × position f32) before cos/sin.
        const angle = Math.fround(p * Math.fround(inv[i]!));
        // YaRN's attention factor and LongRoPE's mscale scale both (HF multiplies cos and sin in f32).
        cos[p * half + i] = Math.fround(Math.cos(angle)) * scale;
        sin[p * half + i] = Math.fround(Math.sin(angle)) * scale;
      }
    return { cos: this.backend.fromHost(cos, [this.maxModelLen, half]), sin: this.backend.fromHost(sin, [this.maxModelLen, half]) };
  }

  /** Bytes of KV cache one block (a page of the layout's tensors) takes (f32 on CPU: 4 bytes per element). */
  kvBytesPerBlock(blockSize: number, bytesPerElement: number, layout = kvCacheLayout(this.cfg.layerWindows, false)): number {
    return 2 * layout.numTensors * blockSize * this.dims.numKvHeads * this.cfg.headDim * bytesPerElement;
  }

  /** Allocates the KV cache: the layout's tensors (by default one per layer, one group), each layer pointed at its own. */
  allocKvCache(numBlocks: number, blockSize: number, layout = kvCacheLayout(this.cfg.layerWindows, false)): void {
    if (layout.groupOf.length !== this.cfg.numLayers) throw new Error(`allocKvCache: a layout of ${layout.groupOf.length} layers for a model of ${this.cfg.numLayers}`);
    this.blockSize = blockSize;
    const tensors = Array.from({ length: layout.numTensors }, () => this.backend.allocKvCache({ numBlocks, blockSize, numKvHeads: this.dims.numKvHeads, headDim: this.cfg.headDim }));
    this.kv = layout.tensorOf.map((j) => tensors[j]!);
    this.kvGroupOf = layout.groupOf;
  }

  /** Activation buffers, grown (never shrunk) to the largest step seen. */
  private workspace(numTokens: number, numLogitsRows: number): Workspace<T> {
    const c = this.cfg, b = this.backend;
    let ws = this.ws;
    if (!ws || ws.capacity < numTokens) {
      const n = Math.max(numTokens, ws ? ws.capacity * 2 : 16);
      const qkvWidth = (this.dims.numHeads + 2 * this.dims.numKvHeads) * c.headDim;
      const denseI = c.moe?.sparseLayers.every((sparse) => sparse) ? 0 : this.dims.intermediate;
      ws = {
        capacity: n,
        hidden: b.empty([n, c.hiddenSize]),
        residual: b.empty([n, c.hiddenSize]),
        normed: b.empty([n, c.hiddenSize]),
        qkv: b.empty([n, qkvWidth]),
        attn: b.empty([n, this.dims.numHeads * c.headDim]),
        // A model whose every MLP is sparse (Mixtral) has no dense MLP scratch.
        gateUp: b.empty([n, 2 * denseI]),
        act: b.empty([n, denseI]),
        logitsCapacity: ws?.logitsCapacity ?? 0,
        last: ws?.last ?? b.empty([0, c.hiddenSize]),
        localLogits: ws?.localLogits ?? b.empty([0, this.dims.vocabRows], "f32"),
        logits: ws?.logits ?? b.empty([0, c.vocabSize], "f32"),
        lora: this.lora ? { qkv: b.empty([n, this.lora.slots * 3 * this.lora.rank]), rank: b.empty([n, this.lora.slots * this.lora.rank]), gateUp: b.empty([n, this.lora.slots * 2 * this.lora.rank]) } : null,
        moe: this.moeWorkspace(Math.min(n, MOE_CHUNK_TOKENS), ws?.moe ?? null),
        sandwich: c.outputNorms && c.inputNorms ? b.empty([n, c.hiddenSize]) : null,
        mlpOut: c.parallelBlock ? b.empty([n, c.hiddenSize]) : null,
        qkSums: c.qkNormAcrossHeads && this.collective && this.collective.size > 1 ? b.empty([n, 2], "f32") : null,
        mla: c.mla ? mlaScratch(b, c.mla, this.dims.numHeads, n) : null,
      };
    }
    if (ws.logitsCapacity < numLogitsRows) {
      const n = Math.max(numLogitsRows, ws.logitsCapacity * 2, 4);
      ws.logitsCapacity = n;
      ws.last = b.empty([n, c.hiddenSize]);
      // A pooling model computes no logits.
      ws.logits = b.empty([this.pooling ? 0 : n, c.vocabSize], "f32");
      ws.localLogits = this.shard.size === 1 ? ws.logits : b.empty([this.pooling ? 0 : n, this.dims.vocabRows], "f32");
    }
    this.ws = ws;
    return ws;
  }

  /** The sparse MLP's scratch for `tokens` tokens at a time (kept when `prev` holds as many). */
  private moeWorkspace(tokens: number, prev: MoeWorkspace<T> | null): MoeWorkspace<T> | null {
    const moe = this.cfg.moe, b = this.backend, H = this.cfg.hiddenSize;
    if (!moe) return null;
    if (prev && prev.tokens >= tokens) return prev;
    // GLM-4.5: each token's entries are its topK routed experts and the shared ones; its router logits are f32.
    const K = moe.topK + moe.numSharedExperts, li = this.dims.moeIntermediate, ls = this.dims.sharedIntermediate, entries = tokens * K;
    return {
      tokens, routerLogits: b.empty([tokens, moe.numExperts], moe.grouped ? "f32" : "act"), ids: b.empty([tokens, K], "i32"), weights: b.empty([tokens, K], "f32"),
      gateUp: b.empty([entries, 2 * li]), act: b.empty([entries, li]), expertOut: b.empty([entries, H]), routing: b.empty([moeRoutingInts(entries, moe.numExperts + moe.numSharedExperts)], "i32"),
      shared: ls > 0 ? { gateUp: b.empty([tokens, 2 * ls]), act: b.empty([tokens, ls]), out: b.empty([tokens, H]), gate: b.empty([tokens, 1]) } : null,
    };
  }

  /**
   * A dense MLP on `x` ([n, H]) written to `out`: gate/up, the activation, down — with the layer's LoRA adapters
   * (`La`) where it has them. `s` holds the gate/up and activation rows and the LoRA scratch.
   */
  private denseMlp(L: LayerWeights<T>, La: LoraLayer<T> | undefined, x: T, out: T,
    s: { gateUp: T; act: T; lora: { gateUp: T; rank: T } | null; loraAdd: (x: T, w: { a: T; b: T }, u: T, out: T) => void }): void {
    const b = this.backend, c = this.cfg;
    b.linear(x, L.gateUp!, null, s.gateUp);
    if (La?.gateUp) s.loraAdd(x, La.gateUp, s.lora!.gateUp, s.gateUp);
    // The fused down projection does not keep silu(gate)·up, which down's LoRA reads.
    if (b.siluMulLinear && !La?.down && c.activation === "silu") b.siluMulLinear(s.gateUp, L.down!, s.act, out);
    else {
      if (c.activation === "silu") b.siluMul(s.gateUp, s.act);
      else b.geluTanhMul(s.gateUp, s.act);
      b.linear(s.act, L.down!, null, out);
      if (La?.down) s.loraAdd(s.act, La.down, s.lora!.rank, out);
    }
  }

  /** A sparse MLP on `x` ([n, H], the post-attention norm), written to `out` — MOE_CHUNK_TOKENS tokens at a time. */
  private sparseMlp(L: MoeLayer<T>, x: T, out: T, n: number, ws: MoeWorkspace<T>): void {
    const b = this.backend, moe = this.cfg.moe!, S = moe.numSharedExperts, K = moe.topK + S, g = moe.grouped;
    for (let s = 0; s < n; s += ws.tokens) {
      const m = Math.min(ws.tokens, n - s), xs = b.rowRange(x, s, m), ys = b.rowRange(out, s, m);
      const logits = b.rows(ws.routerLogits, m), ids = b.rows(ws.ids, m), weights = b.rows(ws.weights, m);
      b.linear(xs, L.router, L.routerBias, logits);
      if (g) b.moeRouteGrouped(logits, L.scoreBias!, moe.topK, { numGroups: g.numGroups, topKGroups: g.topKGroups, scale: g.routedScalingFactor, scoring: g.scoring, groupScore: g.groupScore }, moe.normTopK, S, ids, weights);
      else b.moeRoute(logits, moe.topK, moe.normTopK, ids, weights, S);
      b.moeExperts(xs, ids, weights, L.experts, moe.numExperts + S, { gateUp: b.rows(ws.gateUp, m * K), act: b.rows(ws.act, m * K), expertOut: b.rows(ws.expertOut, m * K), routing: ws.routing }, ys);
      if (L.shared && ws.shared) {
        const sh = ws.shared, gu = b.rows(sh.gateUp, m), act = b.rows(sh.act, m), so = b.rows(sh.out, m), gate = b.rows(sh.gate, m);
        b.linear(xs, L.shared.gateUp, null, gu);
        b.siluMul(gu, act);
        b.linear(act, L.shared.down, null, so);
        b.linear(xs, L.shared.gate, null, gate);
        b.sigmoidGatedAdd(so, gate, ys);
      }
    }
  }

  /** Ensures buffers for steps of up to `numTokens` tokens and `numLogitsRows` sampled rows exist. */
  reserve(numTokens: number, numLogitsRows: number): void {
    this.workspace(numTokens, numLogitsRows);
  }

  /** Runs one step; returns logits [numLogitsRows, vocab] (a pooling model: final-norm hidden states [numLogitsRows, hidden]). */
  forward(step: StepTensors<T>): T {
    if (this.kv.length === 0) throw new Error("forward: KV cache not allocated");
    const b = this.backend, c = this.cfg, n = step.numTokens, eps = c.rmsNormEps, centered = c.layerNorm;
    const ws = this.workspace(n, step.numLogitsRows);
    const hidden = b.rows(ws.hidden, n), residual = b.rows(ws.residual, n), normed = b.rows(ws.normed, n);
    const qkv = b.rows(ws.qkv, n), attn = b.rows(ws.attn, n), gateUp = b.rows(ws.gateUp, n), act = b.rows(ws.act, n);
    const tp = this.collective && this.collective.size > 1 ? this.collective : null;
    // LoRA: only steps that carry adapter slots (an engine with adapters always sends them).
    const lora = this.lora && step.loraSlots ? this.lora : null;
    /** Gemma, GLM-4-0414: `x` normed by `w` (into the sandwich buffer), which then joins the residual stream instead of x. */
    const sandwich = ws.sandwich ? b.rows(ws.sandwich, n) : null;
    const outNorm = (x: T, w: T | null): T => {
      if (!w) return x;
      b.rmsNorm(x, w, eps, sandwich!);
      return sandwich!;
    };
    let toResidual = hidden;
    const loraScratch = lora ? { qkv: b.rows(ws.lora!.qkv, n), rank: b.rows(ws.lora!.rank, n), gateUp: b.rows(ws.lora!.gateUp, n) } : null;
    const loraAdd = (x: T, w: { a: T; b: T }, u: T, out: T) => b.loraAdd(x, w.a, w.b, step.loraSlots!, lora!.scales, lora!.slots, u, out);
    b.embedding(step.tokenIds, this.embed, residual, this.dims.vocabStart, this.cfg.scales.embedding);
    tp?.allReduce(residual);
    // Hybrid KV cache layouts: each group's view of the step (its slot mapping and block tables).
    const groupSteps = [step, ...step.kvGroups.map((g) => ({ ...step, slotMapping: g.slotMapping, blockTables: g.blockTables }))];
    for (let i = 0; i < c.numLayers; i++) {
      const L = this.layers[i]!, kv = this.kv[i]!, at = this.layerAttention[i]!;
      const gs = groupSteps[this.kvGroupOf[i]!];
      if (!gs) throw new Error(`forward: layer ${i} is in KV cache group ${this.kvGroupOf[i]}, but the step has ${groupSteps.length} groups`);
      // The attention's input: the normed residual stream, or (OLMo 2 / 3, no input norms) the stream itself.
      let x = residual;
      if (L.inputNorm) {
        if (i === 0) b.rmsNorm(residual, L.inputNorm, eps, normed, centered);
        else b.addRmsNorm(toResidual, residual, L.inputNorm, eps, normed, centered);
        x = normed;
      }
      if (L.mla) mlaQkv(b, L.mla, c.mla!, this.dims.numHeads, x, n, ws.mla!, qkv);
      else b.linear(x, L.qkv!, L.qkvBias, qkv);
      const La = lora?.layers[i];
      if (La?.qkv) loraAdd(x, La.qkv, loraScratch!.qkv, qkv);
      const rope = this.layerRope[i]!;
      // OLMo 2 / 3's q/k norms span all heads: applied here, so the fused kernel only rotates and stores.
      // With tensor parallelism a rank holds some of the heads: the rows' sums of squares are added up over the ranks first.
      if (c.qkNormAcrossHeads) {
        const sums = tp ? b.rows(ws.qkSums!, n) : null;
        if (sums) {
          b.qkSquareSums(qkv, at, sums);
          tp!.allReduce(sums);
        }
        b.qkNormAcrossHeads(qkv, L.qNorm!, L.kNorm!, eps, at, sums, tp?.size ?? 1);
      }
      const perHead = !c.qkNormAcrossHeads;
      b.qkNormRopeStoreKv(qkv, step.positions, gs.slotMapping, rope.cos, rope.sin, perHead ? L.qNorm : null, perHead ? L.kNorm : null, eps, at, kv.k, kv.v, centered);
      b.pagedAttention(qkv, kv.k, kv.v, gs, this.blockSize, at, attn, L.sinks);
      b.linear(attn, L.o, L.oBias, hidden);
      if (La?.o) loraAdd(attn, La.o, loraScratch!.rank, hidden);
      // Cohere's parallel block: the MLP reads the same normed input; its output is added to the attention's, and the
      // sum (one all-reduce) joins the stream at the next norm.
      if (c.parallelBlock) {
        const mlpOut = b.rows(ws.mlpOut!, n);
        this.denseMlp(L, La, x, mlpOut, { gateUp, act, lora: loraScratch, loraAdd });
        b.add(mlpOut, hidden);
        tp?.allReduce(hidden);
        toResidual = hidden;
        continue;
      }
      tp?.allReduce(hidden);
      // The MLP's input, likewise.
      if (L.postNorm) {
        b.addRmsNorm(outNorm(hidden, L.attnOutNorm), residual, L.postNorm, eps, normed);
        x = normed;
      } else b.rmsNormAdd(hidden, L.attnOutNorm!, eps, residual);
      toResidual = hidden;
      if (L.moe) this.sparseMlp(L.moe, x, hidden, n, ws.moe!);
      else this.denseMlp(L, La, x, hidden, { gateUp, act, lora: loraScratch, loraAdd });
      tp?.allReduce(hidden);
      // OLMo 2 / 3: the MLP's normed output joins the stream now; elsewhere the next norm adds it (fused).
      if (c.inputNorms) toResidual = outNorm(hidden, L.mlpOutNorm);
      else b.rmsNormAdd(hidden, L.mlpOutNorm!, eps, residual);
    }
    const m = step.numLogitsRows;
    const last = b.rows(ws.last, m), logits = b.rows(ws.logits, m);
    // residual += hidden is folded into the final norm (OLMo 2 / 3 added it already); only the sampled rows go on from it.
    if (c.inputNorms) b.addRmsNorm(toResidual, residual, this.finalNorm, eps, normed, centered);
    else b.rmsNorm(residual, this.finalNorm, eps, normed);
    b.gatherRows(normed, step.logitsRows, m, last);
    if (this.pooling) return last;
    if (!tp) b.linear(last, this.lmHead, null, logits);
    else {
      const local = b.rows(ws.localLogits, m);
      b.linear(last, this.lmHead, null, local);
      tp.gatherLogits(local, logits, m);
    }
    if (c.finalLogitSoftcap) b.softcap(logits, c.finalLogitSoftcap);
    return logits;
  }
}

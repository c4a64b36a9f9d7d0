/**
 * Multi-head latent attention (DeepSeek-V2 / V3, Kimi K2; ModelConfig.mla), computed "naively" as vLLM first ran it:
 * each head's key and value are expanded from the latent, then the usual paged KV cache and attention kernels take
 * them as heads of D = qk_rope + qk_nope dimensions. In the packed qkv rows each head's query and key are
 * [rope part | nope part] (the rope part first, so that RoPE's "first rotaryDim dimensions" are it; query and key
 * permuted alike leave their products unchanged), its value [value | zeros] (v_head_dim ≤ D), and o_proj gets zero
 * columns where the zeros are. DeepSeek rotates interleaved pairs (2i, 2i + 1): the rope rows are loaded permuted
 * to the kernels' rotate-half pairs (interleavedRopeSource), as GLM's are. The KV cache thus holds 2·D values per
 * head and token instead of MLA's kv_lora_rank + qk_rope: correct, not yet memory-lean.
 */
import type { Backend, MlaShape, Tensor } from "../backend/backend.ts";
import type { Checkpoint } from "../loader/checkpoint.ts";
import { DTYPE_BYTES } from "../loader/dtype.ts";
import type { TensorView } from "../loader/safetensors.ts";
import type { LinearWeight } from "../loader/packed-matrix.ts";
import { sliceCols, sliceRows } from "../parallel/shard.ts";
import type { MlaConfig } from "./config.ts";
import { interleavedRopeSource, permuteRows } from "./weight-rows.ts";

/** One layer's MLA weights, this rank's heads. */
export interface MlaWeights<T extends Tensor> {
  /** q_a_proj [q_lora_rank, hidden] and q_a_layernorm, with a q_lora_rank; else null. */
  qA: T | null;
  qANorm: T | null;
  /** q_proj or q_b_proj's rows of this rank's heads, each head [rope (rotate-half order) | nope]: [heads·D, hidden or q_lora_rank]. */
  q: T;
  /** kv_a_proj_with_mqa's latent rows [kv_lora_rank, hidden], its rotary key rows (rotate-half order) [rope, hidden], and kv_a_layernorm. */
  kvA: T;
  kpe: T;
  kvANorm: T;
  /** kv_b_proj's rows of this rank's heads: [heads·(nope + v), kv_lora_rank]. */
  kvB: T;
}

/** Loads layer `a` ("model.layers.N.self_attn.")'s MLA weights for heads [firstHead, firstHead + heads). */
export function loadMlaWeights<T extends Tensor>(b: Backend<T>, ckpt: Checkpoint, a: string, m: MlaConfig, hidden: number, totalHeads: number, firstHead: number, heads: number): MlaWeights<T> {
  const R = m.qkRopeHeadDim, N = m.qkNopeHeadDim, D = R + N, kvW = N + m.vHeadDim;
  const w = (name: string, shape: number[]) => ckpt.tensor(name, shape);
  // The projections: packed ones (FP8 blocks, GPTQ …) may stay packed; rows reordered and sliced as they are.
  const lw = (name: string, shape: number[]) => ckpt.linearWeight(name, shape);
  const load = (t: LinearWeight, shape: number[]) => b.loadWeight([t], shape);
  const linear = (t: LinearWeight, shape: number[]) => b.loadWeight([t], shape, "linear", ckpt.onlineQuantization);
  const qIn = m.qLoraRank ?? hidden;
  // The checkpoint's head rows are [nope | rope (interleaved)]; ours [rope (rotate-half) | nope].
  const qFull = lw(m.qLoraRank === null ? `${a}q_proj.weight` : `${a}q_b_proj.weight`, [totalHeads * D, qIn]);
  const q = permuteRows(qFull, heads * D, (j) => {
    const h = firstHead + Math.floor(j / D), x = j % D;
    return h * D + (x < R ? N + interleavedRopeSource(x, R, R) : x - R);
  }, "MLA layout");
  const kvA = lw(`${a}kv_a_proj_with_mqa.weight`, [m.kvLoraRank + R, hidden]);
  const kvB = lw(`${a}kv_b_proj.weight`, [totalHeads * kvW, m.kvLoraRank]);
  return {
    qA: m.qLoraRank === null ? null : linear(lw(`${a}q_a_proj.weight`, [m.qLoraRank, hidden]), [m.qLoraRank, hidden]),
    qANorm: m.qLoraRank === null ? null : load(w(`${a}q_a_layernorm.weight`, [m.qLoraRank]), [m.qLoraRank]),
    q: linear(q, [heads * D, qIn]),
    kvA: linear(sliceRows(kvA, 0, m.kvLoraRank), [m.kvLoraRank, hidden]),
    kpe: linear(permuteRows(kvA, R, (j) => m.kvLoraRank + interleavedRopeSource(j, R, R), "MLA layout"), [R, hidden]),
    kvANorm: load(w(`${a}kv_a_layernorm.weight`, [m.kvLoraRank]), [m.kvLoraRank]),
    kvB: linear(sliceRows(kvB, firstHead * kvW, (firstHead + heads) * kvW), [heads * kvW, m.kvLoraRank]),
  };
}

/**
 * o_proj [hidden, heads·v_head_dim] (this rank's heads' columns) widened to [hidden, heads·D]: each head's v columns,
 * then D − v zero columns (where the packed values' zeros are).
 */
export function mlaOutputProjection(o: TensorView, m: MlaConfig, totalHeads: number, firstHead: number, heads: number): TensorView {
  const V = m.vHeadDim, D = m.qkNopeHeadDim + m.qkRopeHeadDim, e = DTYPE_BYTES[o.dtype], rows = o.shape[0]!;
  const mine = sliceCols(o, firstHead * V, (firstHead + heads) * V);
  const out = new Uint8Array(rows * heads * D * e);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < heads; h++) out.set(mine.bytes.subarray((r * heads * V + h * V) * e, (r * heads * V + (h + 1) * V) * e), (r * heads * D + h * D) * e);
  return { ...o, name: `${o.name} (MLA: zero columns after each head's values)`, shape: [rows, heads * D], bytes: out };
}

/** The activations MLA needs besides qkv, for `rows` tokens. */
export interface MlaScratch<T> {
  /** q_a_proj's output and its norm (with a q_lora_rank). */
  qA: T | null;
  qANormed: T | null;
  q: T;
  /** The latent and its norm. */
  latent: T;
  latentNormed: T;
  kpe: T;
  kv: T;
}

export function mlaScratch<T extends Tensor>(b: Backend<T>, m: MlaConfig, heads: number, rows: number): MlaScratch<T> {
  const D = m.qkNopeHeadDim + m.qkRopeHeadDim;
  return {
    qA: m.qLoraRank === null ? null : b.empty([rows, m.qLoraRank]), qANormed: m.qLoraRank === null ? null : b.empty([rows, m.qLoraRank]), q: b.empty([rows, heads * D]),
    latent: b.empty([rows, m.kvLoraRank]), latentNormed: b.empty([rows, m.kvLoraRank]), kpe: b.empty([rows, m.qkRopeHeadDim]), kv: b.empty([rows, heads * (m.qkNopeHeadDim + m.vHeadDim)]),
  };
}

/** The latent norms' epsilon: HF's DeepseekV3RMSNorm(kv_lora_rank) default, whatever rms_norm_eps says. */
const LATENT_EPS = 1e-6;

/** The packed qkv rows of `x` ([n, hidden], the normed residual stream) through MLA's projections (before RoPE). */
export function mlaQkv<T extends Tensor>(b: Backend<T>, w: MlaWeights<T>, m: MlaConfig, heads: number, x: T, n: number, s: MlaScratch<T>, qkv: T): void {
  const q = b.rows(s.q, n), latent = b.rows(s.latent, n), latentNormed = b.rows(s.latentNormed, n), kpe = b.rows(s.kpe, n), kv = b.rows(s.kv, n);
  if (w.qA) {
    const qa = b.rows(s.qA!, n), qaNormed = b.rows(s.qANormed!, n);
    b.linear(x, w.qA, null, qa);
    b.rmsNorm(qa, w.qANorm!, LATENT_EPS, qaNormed);
    b.linear(qaNormed, w.q, null, q);
  } else b.linear(x, w.q, null, q);
  b.linear(x, w.kvA, null, latent);
  b.linear(x, w.kpe, null, kpe);
  b.rmsNorm(latent, w.kvANorm, LATENT_EPS, latentNormed);
  b.linear(latentNormed, w.kvB, null, kv);
  const shape: MlaShape = { numHeads: heads, nope: m.qkNopeHeadDim, rope: m.qkRopeHeadDim, v: m.vHeadDim };
  b.mlaAssemble(q, kv, kpe, qkv, shape);
}

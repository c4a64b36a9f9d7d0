/**
 * GPT-OSS's experts, read into the layout the MoE kernels take (Backend.moeExperts: per expert its gate rows,
 * then its up rows, [out, in]). A checkpoint holds them one of two ways:
 *   - bf16 (transformers' parameters): mlp.experts.gate_up_proj [E, H, 2I] and down_proj [E, I, H], input-major
 *     (x · W), the gate and up columns interleaved (gate j at 2j, up j at 2j + 1);
 *   - MXFP4 (the released checkpoints): gate_up_proj_blocks / _scales and down_proj_blocks / _scales, output-major
 *     ([E, 2I, H] and [E, H, I] once dequantized), the gate and up rows interleaved the same way.
 * Biases (gate_up_proj_bias [E, 2I], interleaved likewise; down_proj_bias [E, H]) are plain tensors in both.
 */
import type { Checkpoint } from "../loader/checkpoint.ts";
import { DTYPE_BYTES } from "../loader/dtype.ts";
import type { TensorView } from "../loader/safetensors.ts";
import { sliceCols, sliceRows } from "../parallel/shard.ts";
import { permuteRows } from "./weight-rows.ts";

/** [E, A, B] → [E, B, A] (a copy): each expert's matrix transposed. */
export function transposeExperts(t: TensorView): TensorView {
  const [E, A, B] = t.shape as [number, number, number];
  const e = DTYPE_BYTES[t.dtype], out = new Uint8Array(t.bytes.length);
  // Whole elements at a time (the source copied first where it is not aligned for them).
  const words = (bytes: Uint8Array) => {
    const b = bytes.byteOffset % e === 0 ? bytes : bytes.slice();
    return e === 4 ? new Uint32Array(b.buffer, b.byteOffset, b.length / 4) : e === 2 ? new Uint16Array(b.buffer, b.byteOffset, b.length / 2) : b;
  };
  const src = words(t.bytes), dst = words(out);
  for (let x = 0; x < E; x++) {
    const base = x * A * B;
    for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) dst[base + b * A + a] = src[base + a * B + b]!;
  }
  return { ...t, name: `${t.name}ᵀ`, shape: [E, B, A], bytes: out };
}

/** Rows first, first + step, … (count of them) of a 1-D or 2-D tensor (a copy). */
export function strideRows(t: TensorView, first: number, step: number, count: number): TensorView {
  return permuteRows(t, count, (i) => first + i * step, `rows ${first}::${step}`);
}

/** One layer's experts as loadWeight parts: this rank's slice of each expert's intermediate rows, and the biases to match. */
export interface ExpertParts {
  /** Per expert: its gate rows, then its up rows ([li, H] each). */
  w13: TensorView[];
  /** Per expert: its down projection's columns of this rank ([H, li]). */
  w2: TensorView[];
  /** Per expert: its gate biases, then its up biases ([li] each). */
  b13: TensorView[];
  /** The down biases [E·H] — rank 0's only (a row-parallel bias is added once before the all-reduce); null elsewhere. */
  b2: TensorView | null;
}

/**
 * Layer `m` ("model.layers.N.mlp.")'s experts for rank `rank` of `ranks`, each holding `li` = I / ranks of every
 * expert's intermediate rows.
 */
export function gptOssExpertParts(ckpt: Checkpoint, m: string, E: number, H: number, I: number, rank: number, ranks: number, li: number): ExpertParts {
  const x = `${m}experts.`;
  const read = (name: string, outMajor: number[]) =>
    ckpt.hasMxfp4(`${x}${name}`) ? ckpt.mxfp4(`${x}${name}`, outMajor) : transposeExperts(ckpt.tensor(`${x}${name}`, [outMajor[0]!, outMajor[2]!, outMajor[1]!]));
  const gu = read("gate_up_proj", [E, 2 * I, H]), dn = read("down_proj", [E, H, I]);
  const gu2 = { ...gu, shape: [E * 2 * I, H] }, dn2 = { ...dn, shape: [E * H, I] };
  const guBias = ckpt.tensor(`${x}gate_up_proj_bias`, [E, 2 * I]), guBias1 = { ...guBias, shape: [E * 2 * I] };
  const parts: ExpertParts = { w13: [], w2: [], b13: [], b2: rank === 0 ? { ...ckpt.tensor(`${x}down_proj_bias`, [E, H]), shape: [E * H] } : null };
  for (let e = 0; e < E; e++) {
    // Gate j is row 2j, up j row 2j + 1: this rank's j are [rank·li, (rank + 1)·li).
    const first = e * 2 * I + 2 * rank * li;
    parts.w13.push(strideRows(gu2, first, 2, li), strideRows(gu2, first + 1, 2, li));
    parts.b13.push(strideRows(guBias1, first, 2, li), strideRows(guBias1, first + 1, 2, li));
    const down = sliceRows(dn2, e * H, (e + 1) * H);
    parts.w2.push(ranks === 1 ? down : sliceCols(down, rank * li, (rank + 1) * li));
  }
  return parts;
}

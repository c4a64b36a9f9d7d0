/**
 * Weight-only integer quantization with 2-, 4- or 8-bit values packed into I32 words — GPTQ, AWQ and
 * compressed-tensors' pack-quantized (llm-compressor's W4A16 / W8A16):
 * W[o, i] = scale[g, o] · (q[o, i] − zero[g, o]), g the group of input column i. vLLM runs such weights in
 * Marlin/Machete kernels; vbun reads them into one packed layout (src/loader/packed-matrix.ts) that the CUDA backend
 * keeps packed on the GPU (ptx/src/quant.cu) and the CPU backend dequantizes.
 *
 * The three layouts of linear layer X (weight [out, in]), 32 / bits values a word, the lowest bits first:
 *   - GPTQ: X.qweight [in / pack, out] (packed along the input), X.qzeros [groups, out / pack] (along the output;
 *     checkpoint_format "gptq" stores zero − 1, "gptq_v2" the zero itself), X.scales [groups, out], X.g_idx [in]
 *     (each input's group — desc_act's reordering; without it, i / group_size).
 *   - AWQ (version "gemm", 4-bit): X.qweight [in, out / 8] and X.qzeros [groups, out / 8] packed along the output
 *     with the columns interleaved (word nibble k holds column AWQ_ORDER[k] of its eight), X.scales [groups, out].
 *   - compressed-tensors pack-quantized, symmetric: X.weight_packed [out, ⌈in / pack⌉] (along the input, each value
 *     stored + 2^(bits−1)), X.weight_scale [out, groups] ([out, 1] per channel), X.weight_shape [2], X.weight_g_idx.
 */
import { integers, toFloat32 } from "./dtype.ts";
import { dequantizeMatrix, type PackedMatrix } from "./packed-matrix.ts";
import type { TensorView } from "./safetensors.ts";

export type PackedFormat = "gptq" | "awq" | "compressed-tensors";

export interface PackedIntegers {
  format: PackedFormat;
  bits: 2 | 4 | 8;
  /** Inputs a group of scales (and zeros) covers; null: one group over all inputs (GPTQ's group_size −1, per channel). */
  groupSize: number | null;
  /** What to add to a stored zero point (GPTQ's first format stores zero − 1). */
  zeroOffset: number;
}

/** Word nibble k of an AWQ word holds column AWQ_ORDER[k] of its eight output columns. */
export const AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] as const;

/** The tensors a packed weight `X.weight` is stored as (the first one tells whether `X.weight` is packed). */
export function packedParts(format: PackedFormat, weightName: string): { values: string; scales: string; zeros: string | null; groups: string; shape: string | null } {
  const x = weightName.replace(/\.weight$/, "");
  if (format === "compressed-tensors") return { values: `${x}.weight_packed`, scales: `${x}.weight_scale`, zeros: `${x}.weight_zero_point`, groups: `${x}.weight_g_idx`, shape: `${x}.weight_shape` };
  return { values: `${x}.qweight`, scales: `${x}.scales`, zeros: `${x}.qzeros`, groups: `${x}.g_idx`, shape: null };
}

/** The parts of one packed weight, as read from the checkpoint (optional ones null). */
export interface PackedTensors { values: TensorView; scales: TensorView; zeros: TensorView | null; groups: TensorView | null; shape: TensorView | null }

/** `X.weight` [out, in] as float32 from its packed parts; throws naming the file and tensor when a part's shape or dtype is off. */
export function dequantizePacked(p: PackedIntegers, name: string, t: PackedTensors): TensorView {
  return dequantizeMatrix(readPacked(p, name, t));
}

/**
 * `X.weight` from its packed parts in vbun's one packed layout (src/loader/packed-matrix.ts); throws naming the file
 * and tensor when a part's shape or dtype is off.
 */
export function readPacked(p: PackedIntegers, name: string, t: PackedTensors): PackedMatrix {
  const fail = (m: string): never => { throw new Error(`${t.values.file}: ${p.format} weight '${name}': ${m}`); };
  const pack = 32 / p.bits, mask = (1 << p.bits) - 1;
  for (const part of [t.values, t.zeros]) if (part && (part.dtype !== "I32" || part.shape.length !== 2)) fail(`'${part.name}' must be a 2-D I32 tensor of packed ${p.bits}-bit values, got ${part.dtype} [${part.shape}]`);
  if (t.scales.shape.length !== 2 || !["F16", "BF16", "F32"].includes(t.scales.dtype)) fail(`'${t.scales.name}' must be a 2-D float tensor, got ${t.scales.dtype} [${t.scales.shape}]`);
  const stored = integers(t.values.bytes, "I32") as Int32Array, scales = toFloat32(t.scales.bytes, t.scales.dtype);
  const [r0, c0] = t.values.shape as [number, number];
  let out: number, inputs: number;
  if (p.format === "gptq") [inputs, out] = [r0 * pack, c0];
  else if (p.format === "awq") [inputs, out] = [r0, c0 * pack];
  else {
    [out, inputs] = [r0, c0 * pack];
    if (t.shape) {
      const s = Array.from(integers(t.shape.bytes, t.shape.dtype === "I64" ? "I64" : "I32"), Number);
      if (s.length !== 2 || s[0] !== out || s[1]! > inputs || s[1]! <= inputs - pack) fail(`'${t.shape.name}' is [${s}], which does not fit '${t.values.name}' [${t.values.shape}]`);
      inputs = s[1]!;
    }
  }
  // Scales: [groups, out] (GPTQ, AWQ) or [out, groups] (compressed-tensors).
  const numGroups = p.format === "compressed-tensors" ? t.scales.shape[1]! : t.scales.shape[0]!;
  if ((p.format === "compressed-tensors" ? t.scales.shape[0] : t.scales.shape[1]) !== out) fail(`'${t.scales.name}' [${t.scales.shape}] does not have one scale per output (${out})`);
  // Each input's group: told by g_idx (desc_act, actorder), else runs of groupSize inputs (all of them per channel).
  const groupSize = p.groupSize ?? inputs;
  let groupOf: Int32Array | null = null;
  if (t.groups) {
    const g = t.groups.dtype === "I32" || t.groups.dtype === "I64" ? Array.from(integers(t.groups.bytes, t.groups.dtype), Number) : null;
    if (!g || g.length !== inputs) fail(`'${t.groups.name}' must hold one I32 group index per input (${inputs}), got ${t.groups.dtype} [${t.groups.shape}]`);
    groupOf = new Int32Array(inputs);
    let byPosition = true;
    for (let i = 0; i < inputs; i++) {
      if (!(g![i]! >= 0 && g![i]! < numGroups)) fail(`'${t.groups.name}'[${i}] = ${g![i]} is not a group of '${t.scales.name}' (${numGroups} groups)`);
      groupOf[i] = g![i]!;
      byPosition &&= g![i] === Math.floor(i / groupSize);
    }
    // GPTQ writes g_idx without desc_act too (i / group_size): then it says nothing position does not.
    if (byPosition && Math.ceil(inputs / groupSize) === numGroups) groupOf = null;
  } else if (Math.ceil(inputs / groupSize) !== numGroups) {
    fail(`'${t.scales.name}' [${t.scales.shape}] has ${numGroups} groups, but ${inputs} inputs in groups of ${groupSize} need ${Math.ceil(inputs / groupSize)}`);
  }
  // Zero points as [out, groups]: stored ones (GPTQ: along the output, AWQ: interleaved) or the midpoint.
  const zeros = new Float32Array(out * numGroups).fill(1 << (p.bits - 1));
  if (p.format !== "compressed-tensors") {
    if (!t.zeros) fail(`no zero points '${packedParts(p.format, name).zeros}' in the checkpoint`);
    const z = integers(t.zeros!.bytes, "I32") as Int32Array, zc = t.zeros!.shape[1]!;
    if (t.zeros!.shape[0] !== numGroups || zc !== Math.ceil(out / pack)) fail(`'${t.zeros!.name}' [${t.zeros!.shape}] should be [${numGroups}, ${Math.ceil(out / pack)}]`);
    for (let g = 0; g < numGroups; g++) {
      for (let w = 0; w < zc; w++) {
        const word = z[g * zc + w]!;
        for (let k = 0; k < pack; k++) {
          const o = w * pack + (p.format === "awq" ? AWQ_ORDER[k]! : k);
          if (o < out) zeros[o * numGroups + g] = ((word >>> (k * p.bits)) & mask) + p.zeroOffset;
        }
      }
    }
  }
  // Scales as [out, groups] too (GPTQ and AWQ store [groups, out]).
  let byOutput = scales;
  if (p.format !== "compressed-tensors") {
    byOutput = new Float32Array(numGroups * out);
    for (let g = 0; g < numGroups; g++) for (let o = 0; o < out; o++) byOutput[o * numGroups + g] = scales[g * out + o]!;
  }
  // The words, packed along each output's inputs: compressed-tensors' as stored; GPTQ's transposed (each of its words
  // already holds `pack` consecutive inputs of one output), in tiles that keep reads and writes within cache lines;
  // AWQ's (packed along the outputs) unpacked and packed again.
  const wpr = Math.ceil(inputs / pack), words = new Uint32Array(out * wpr), T = 16;
  if (p.format === "compressed-tensors") words.set(new Uint32Array(stored.buffer, stored.byteOffset, stored.length));
  else if (p.format === "gptq") {
    for (let w0 = 0; w0 < r0; w0 += T) {
      for (let o0 = 0; o0 < out; o0 += T) {
        for (let o = o0, o1 = Math.min(out, o0 + T); o < o1; o++) for (let w = w0, w1 = Math.min(r0, w0 + T); w < w1; w++) words[o * wpr + w] = stored[w * out + o]!;
      }
    }
  } else {
    for (let i = 0; i < inputs; i++) {
      const shift = (i % pack) * p.bits, column = Math.floor(i / pack);
      for (let w = 0; w < c0; w++) {
        let word = stored[i * c0 + w]!;
        for (let k = 0; k < pack; k++, word >>>= p.bits) words[(w * pack + AWQ_ORDER[k]!) * wpr + column]! |= (word & mask) << shift;
      }
    }
  }
  return { packed: true, name, file: t.values.file, bits: p.bits, code: "uint", shape: [out, inputs], words, numGroups, scales: byOutput, zeros, groupOf, groupSize };
}

/**
 * A linear layer's quantized weight in the one layout GPTQ, AWQ and pack-quantized checkpoints (src/loader/packed-weights.ts)
 * and 8-bit ones — FP8 E4M3 and INT8 with per-tensor, per-row or per-block scales (src/loader/quantization.ts) — are
 * read into, which a backend may keep as it is: the CUDA backend runs it packed (ptx/src/quant.cu), the CPU backend
 * dequantizes it. W[o, i] = scale[o, g] · (q[o, i] − zero[o, g]), g being input i's group, q the unsigned integer a
 * value's bits are, or (E4M3) the FP8 number they encode (zeros 0). INT8 is stored as q = value + 128, zero 128.
 *
 * The operations a model applies to weights as they load — rows of a tensor-parallel shard, columns of a row-parallel
 * one, rows reordered (interleaved RoPE), a constant multiplier folded in, parts concatenated into one GEMM (q/k/v,
 * gate/up) — work on the packed form; where one cannot (columns that split a word or a group), it returns null and the
 * caller goes on with the dequantized weight.
 */
import type { TensorView } from "./safetensors.ts";
import { toFloat32 } from "./dtype.ts";

/** What each byte pattern of an E4M3 value is. */
const E4M3_VALUES = toFloat32(Uint8Array.from({ length: 256 }, (_, b) => b), "F8_E4M3");

export interface PackedMatrix {
  readonly packed: true;
  name: string;
  file: string;
  bits: 2 | 4 | 8;
  /** What a value's bits mean: an unsigned integer, or (8 bits) an FP8 E4M3 number. */
  code: "uint" | "e4m3";
  /** [out, inputs]. */
  shape: [number, number];
  /** [out, ⌈inputs / (32 / bits)⌉]: row o's values along the inputs, 32 / bits a word, the lowest bits first. */
  words: Uint32Array;
  numGroups: number;
  /** [out, numGroups] each. */
  scales: Float32Array;
  zeros: Float32Array;
  /** Each input's group (GPTQ's desc_act, actorder); null: input i is in group ⌊i / groupSize⌋. */
  groupOf: Int32Array | null;
  groupSize: number;
}

/** A linear layer's weight as it loads: plain, or packed (integers, FP8). */
export type LinearWeight = TensorView | PackedMatrix;

export function isPacked(t: LinearWeight): t is PackedMatrix {
  return "packed" in t;
}

/** Values per 32-bit word. */
export function valuesPerWord(m: { bits: number }): number {
  return 32 / m.bits;
}

export function wordsPerRow(m: PackedMatrix): number {
  return Math.ceil(m.shape[1] / valuesPerWord(m));
}

/** The weight as float32 [out, inputs]. */
export function dequantizeMatrix(m: PackedMatrix): TensorView {
  const [out, inputs] = m.shape, pack = valuesPerWord(m), mask = (1 << m.bits) - 1, wpr = wordsPerRow(m), G = m.numGroups;
  const result = new Float32Array(out * inputs), groupOf = m.groupOf, fp8 = m.code === "e4m3";
  for (let o = 0; o < out; o++) {
    const row = o * inputs, words = o * wpr, sg = o * G;
    for (let w = 0; w < wpr; w++) {
      let word = m.words[words + w]!;
      for (let i = w * pack, last = Math.min(inputs, i + pack); i < last; i++, word >>>= m.bits) {
        const g = sg + (groupOf ? groupOf[i]! : Math.floor(i / m.groupSize));
        result[row + i] = m.scales[g]! * ((fp8 ? E4M3_VALUES[word & mask]! : word & mask) - m.zeros[g]!);
      }
    }
  }
  return { name: m.name, file: m.file, dtype: "F32", shape: [out, inputs], bytes: new Uint8Array(result.buffer) };
}

/** `t` as a plain tensor (dequantized when packed). */
export function plainWeight(t: LinearWeight): TensorView {
  return isPacked(t) ? dequantizeMatrix(t) : t;
}

/** Rows [start, end) (copies of the rows' words, scales and zeros). */
export function packedRows(m: PackedMatrix, start: number, end: number): PackedMatrix {
  return packedPermuteRows(m, end - start, (j) => start + j, `${m.name}[${start}:${end}]`);
}

/** `count` rows, row j being m's row source(j); `name` is the result's. */
export function packedPermuteRows(m: PackedMatrix, count: number, source: (j: number) => number, name: string): PackedMatrix {
  const wpr = wordsPerRow(m), G = m.numGroups;
  const words = new Uint32Array(count * wpr), scales = new Float32Array(count * G), zeros = new Float32Array(count * G);
  for (let j = 0; j < count; j++) {
    const s = source(j);
    words.set(m.words.subarray(s * wpr, (s + 1) * wpr), j * wpr);
    scales.set(m.scales.subarray(s * G, (s + 1) * G), j * G);
    zeros.set(m.zeros.subarray(s * G, (s + 1) * G), j * G);
  }
  return { ...m, name, shape: [count, m.shape[1]], words, scales, zeros };
}

/**
 * Columns (inputs) [start, end), or null when they do not start and end on word boundaries, or (groups by position)
 * do not start on a group boundary. Groups by position keep only the groups the columns touch.
 */
export function packedCols(m: PackedMatrix, start: number, end: number): PackedMatrix | null {
  const pack = valuesPerWord(m), [out, inputs] = m.shape;
  if (start % pack !== 0 || (end % pack !== 0 && end !== inputs)) return null;
  // One group (per channel) stays one group of the columns taken.
  const single = !m.groupOf && m.numGroups === 1;
  if (!m.groupOf && !single && start % m.groupSize !== 0) return null;
  const wpr = wordsPerRow(m), w0 = start / pack, w1 = Math.ceil(end / pack), G = m.numGroups;
  const [g0, g1] = m.groupOf || single ? [0, G] : [start / m.groupSize, Math.ceil(end / m.groupSize)];
  const words = new Uint32Array(out * (w1 - w0)), scales = new Float32Array(out * (g1 - g0)), zeros = new Float32Array(out * (g1 - g0));
  for (let o = 0; o < out; o++) {
    words.set(m.words.subarray(o * wpr + w0, o * wpr + w1), o * (w1 - w0));
    scales.set(m.scales.subarray(o * G + g0, o * G + g1), o * (g1 - g0));
    zeros.set(m.zeros.subarray(o * G + g0, o * G + g1), o * (g1 - g0));
  }
  return { ...m, name: `${m.name}[:, ${start}:${end}]`, shape: [out, end - start], words, scales, zeros, numGroups: g1 - g0,
    groupOf: m.groupOf ? m.groupOf.slice(start, end) : null, groupSize: single ? end - start : m.groupSize };
}

/** m · k: the scales times k. */
export function packedScaled(m: PackedMatrix, k: number): PackedMatrix {
  return k === 1 ? m : { ...m, name: `${m.name}×${k}`, scales: m.scales.map((s) => s * k) };
}

/**
 * The parts stacked along the outputs, or null when they differ in what the rows share: bits, inputs, and the
 * inputs' groups (GPTQ's q, k and v projections of one layer share desc_act's order: they see the same inputs).
 */
export function concatPacked(parts: PackedMatrix[]): PackedMatrix | null {
  const first = parts[0]!;
  const same = (a: Int32Array | null, b: Int32Array | null) => (a === null || b === null ? a === b : a.length === b.length && a.every((v, i) => v === b[i]));
  if (parts.some((p) => p.bits !== first.bits || p.code !== first.code || p.shape[1] !== first.shape[1] || p.numGroups !== first.numGroups || p.groupSize !== first.groupSize || !same(p.groupOf, first.groupOf))) return null;
  if (parts.length === 1) return first;
  const cat = <A extends Uint32Array | Float32Array>(make: (n: number) => A, pick: (p: PackedMatrix) => A): A => {
    const out = make(parts.reduce((n, p) => n + pick(p).length, 0));
    let off = 0;
    for (const p of parts) { out.set(pick(p), off); off += pick(p).length; }
    return out;
  };
  return {
    ...first, name: parts.length <= 3 ? parts.map((p) => p.name).join(" + ") : `${first.name} and ${parts.length - 1} more`, shape: [parts.reduce((n, p) => n + p.shape[0], 0), first.shape[1]],
    words: cat((n) => new Uint32Array(n), (p) => p.words), scales: cat((n) => new Float32Array(n), (p) => p.scales), zeros: cat((n) => new Float32Array(n), (p) => p.zeros),
  };
}

/**
 * Tiny models quantized the ways GPTQ, AWQ and compressed-tensors' pack-quantized store weights, and the 8-bit ways
 * (FP8, INT8 with scales), with the same model holding the dequantized values as float32 weights beside each. The packing is written from the formats'
 * descriptions, independently of src/loader/packed-weights.ts.
 */
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromFloat32, toFloat32, type QuantizedDType } from "../src/loader/dtype.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/loader/safetensors.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { tempDir } from "./helpers.ts";
import type { PackedMatrix } from "../src/loader/packed-matrix.ts";

const PROJECTION = /^model\.layers\.\d+\.(self_attn|mlp)\.(\w+_proj|kv_a_proj_with_mqa)\.weight$/;
/** Mixtures of experts' experts, one tensor each (Qwen's names). */
const EXPERT = /^model\.layers\.\d+\.mlp\.experts\.\d+\.\w+_proj\.weight$/;

export interface Scheme {
  name: string;
  format: "gptq" | "awq" | "compressed-tensors";
  bits: 4 | 8;
  /** Inputs per group (null: one group, per channel). */
  group: number | null;
  /** GPTQ's desc_act: inputs assigned to groups in a shuffled order, told by g_idx. */
  actOrder?: boolean;
  /** desc_act's order drawn for each projection (else one per input: q, k, v share one, and gate and up). */
  orderPerProjection?: boolean;
  /** Quantize a mixture of experts' experts too (else only the attention and dense MLP projections). */
  experts?: boolean;
  /** GPTQ's first format: zeros stored minus one. */
  zerosMinusOne?: boolean;
  config: Record<string, unknown>;
  /** Where the config lives (AutoGPTQ's quantize_config.json instead of config.json's quantization_config). */
  configFile?: "quantize_config.json";
}


export function ct(bits: number, strategy: string, group: number | null) {
  return { quant_method: "compressed-tensors", format: "pack-quantized", ignore: ["lm_head"], config_groups: { group_0: { targets: ["Linear"], weights: { num_bits: bits, type: "int", symmetric: true, strategy, group_size: group, actorder: group ? "group" : null } } } };
}

const AWQ_COLUMN_OF_NIBBLE = [0, 2, 4, 6, 1, 3, 5, 7];
const f16 = (x: Float32Array) => toFloat32(fromFloat32(x, "F16"), "F16");
const i32 = (name: string, shape: number[], words: Int32Array): TensorToWrite => ({ name, dtype: "I32", shape, bytes: new Uint8Array(words.buffer) });

/** Packs v[r][c] (rows × cols, values < 2^bits) into words along `dim` (0: rows, 1: columns), lowest bits first. */
function pack(v: Int32Array, rows: number, cols: number, bits: number, dim: 0 | 1, columnOfNibble?: number[]): Int32Array {
  const per = 32 / bits;
  const out = new Int32Array(dim === 0 ? Math.ceil(rows / per) * cols : rows * Math.ceil(cols / per));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (dim === 0) { out[Math.floor(r / per) * cols + c]! |= v[r * cols + c]! << (bits * (r % per)); continue; }
      const nibble = columnOfNibble ? columnOfNibble.indexOf(c % per) : c % per;
      out[r * Math.ceil(cols / per) + Math.floor(c / per)]! |= v[r * cols + c]! << (bits * nibble);
    }
  }
  return out;
}

/**
 * Quantizes W [out, in] by `s` (asymmetric min/max for GPTQ and AWQ, symmetric for compressed-tensors) and returns
 * the checkpoint's tensors for it and the float32 weight they stand for.
 */
function quantize(s: Scheme, name: string, w: Float32Array, out: number, inputs: number, order: number[]): { tensors: TensorToWrite[]; product: Float32Array } {
  const levels = 2 ** s.bits, size = s.group ?? inputs, groups = Math.ceil(inputs / size);
  // desc_act: input i belongs to the group of its place in a shuffled order.
  const groupOf = new Int32Array(inputs);
  order.forEach((input, place) => { groupOf[input] = Math.floor(place / size); });
  const scale = new Float32Array(groups * out), zero = new Int32Array(groups * out);
  for (let g = 0; g < groups; g++) {
    for (let o = 0; o < out; o++) {
      let lo = 0, hi = 0;
      for (let i = 0; i < inputs; i++) if (groupOf[i] === g) { lo = Math.min(lo, w[o * inputs + i]!); hi = Math.max(hi, w[o * inputs + i]!); }
      if (s.format === "compressed-tensors") { scale[g * out + o] = Math.max(-lo, hi) / (levels / 2 - 1) || 1; zero[g * out + o] = levels / 2; }
      else { scale[g * out + o] = (hi - lo) / (levels - 1) || 1; zero[g * out + o] = Math.min(levels - 1, Math.max(0, Math.round(-lo / scale[g * out + o]!))); }
    }
  }
  const scales = f16(scale);
  const q = new Int32Array(out * inputs), product = new Float32Array(out * inputs);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inputs; i++) {
      const k = groupOf[i]! * out + o;
      q[o * inputs + i] = Math.min(levels - 1, Math.max(0, Math.round(w[o * inputs + i]! / scales[k]!) + zero[k]!));
      product[o * inputs + i] = scales[k]! * (q[o * inputs + i]! - zero[k]!);
    }
  }
  const x = name.replace(/\.weight$/, "");
  const transposed = new Int32Array(inputs * out);
  for (let o = 0; o < out; o++) for (let i = 0; i < inputs; i++) transposed[i * out + o] = q[o * inputs + i]!;
  const per = 32 / s.bits, tensors: TensorToWrite[] = [];
  if (s.format === "compressed-tensors") {
    const byOutput = new Float32Array(out * groups);
    for (let g = 0; g < groups; g++) for (let o = 0; o < out; o++) byOutput[o * groups + g] = scales[g * out + o]!;
    tensors.push(i32(`${x}.weight_packed`, [out, inputs / per], pack(q, out, inputs, s.bits, 1)), { name: `${x}.weight_scale`, dtype: "BF16", shape: [out, groups], bytes: fromFloat32(byOutput, "BF16") },
      { name: `${x}.weight_shape`, dtype: "I64", shape: [2], bytes: fromFloat32(Float32Array.of(out, inputs), "I64") });
    // bf16 scales: the product must use them as stored.
    const stored = toFloat32(fromFloat32(byOutput, "BF16"), "BF16");
    for (let o = 0; o < out; o++) for (let i = 0; i < inputs; i++) product[o * inputs + i] = stored[o * groups + groupOf[i]!]! * (q[o * inputs + i]! - levels / 2);
    if (s.actOrder) tensors.push(i32(`${x}.weight_g_idx`, [inputs], groupOf));
    return { tensors, product };
  }
  const storedZero = zero.map((z) => z - (s.zerosMinusOne ? 1 : 0));
  const qweight = s.format === "gptq" ? pack(transposed, inputs, out, s.bits, 0) : pack(transposed, inputs, out, s.bits, 1, AWQ_COLUMN_OF_NIBBLE);
  tensors.push(i32(`${x}.qweight`, s.format === "gptq" ? [inputs / per, out] : [inputs, out / per], qweight), i32(`${x}.qzeros`, [groups, out / per], pack(storedZero, groups, out, s.bits, 1, s.format === "awq" ? AWQ_COLUMN_OF_NIBBLE : undefined)),
    { name: `${x}.scales`, dtype: "F16", shape: [groups, out], bytes: fromFloat32(scales, "F16") });
  if (s.format === "gptq") tensors.push(i32(`${x}.g_idx`, [inputs], groupOf));
  return { tensors, product };
}

/** 0 … n − 1, shuffled by `rng` (null: in order). */
function shuffled(n: number, rng: SeededRandom | null): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (rng) for (let i = n - 1; i > 0; i--) { const j = rng.int(0, i); [order[i], order[j]] = [order[j]!, order[i]!]; }
  return order;
}

/** What derivedPair makes of one weight [out, in]: the tensors that store it quantized, and the float32 weight they stand for. */
type Quantized = { tensors: TensorToWrite[]; product: Float32Array };

/**
 * Two copies of `base` in a new temporary directory: `reference`, whose projections (and, with `experts`, experts) are
 * replaced by what `convert` says they quantize to, as float32; and, unless `quantized` is null, the quantized model
 * itself — those weights stored as `convert`'s tensors, and `quantized.config` as its quantization config (in
 * config.json, or in a file of its own).
 */
function derivedPair(base: string, dirName: string, experts: boolean, convert: (name: string, w: Float32Array, out: number, inputs: number) => Quantized,
  quantized: { config: Record<string, unknown>; file?: string } | null): { quantized: string; reference: string } {
  const dir = tempDir(dirName), qDir = join(dir, "q"), reference = join(dir, "ref");
  for (const d of quantized ? [qDir, reference] : [reference]) cpSync(base, d, { recursive: true });
  const st = SafetensorsFile.open(join(base, "model.safetensors"));
  const q: TensorToWrite[] = [], ref: TensorToWrite[] = [];
  for (const name of st.names()) {
    const t = st.tensor(name), copy = { name, dtype: t.dtype, shape: [...t.shape], bytes: Uint8Array.from(t.bytes) };
    if (!PROJECTION.test(name) && !(experts && EXPERT.test(name))) { q.push(copy); ref.push(copy); continue; }
    const [out, inputs] = t.shape as [number, number];
    const { tensors, product } = convert(name, toFloat32(t.bytes, t.dtype), out, inputs);
    q.push(...tensors);
    ref.push({ name, dtype: "F32", shape: [out, inputs], bytes: fromFloat32(product, "F32") });
  }
  for (const [d, tensors] of quantized ? [[qDir, q], [reference, ref]] as const : [[reference, ref]] as const) {
    rmSync(join(d, "model.safetensors"));
    writeSafetensors(join(d, "model.safetensors"), tensors);
  }
  if (quantized?.file) writeFileSync(join(qDir, quantized.file), JSON.stringify(quantized.config));
  else if (quantized) {
    const cfg = JSON.parse(readFileSync(join(qDir, "config.json"), "utf8"));
    writeFileSync(join(qDir, "config.json"), JSON.stringify({ ...cfg, quantization_config: quantized.config }));
  }
  return { quantized: quantized ? qDir : base, reference };
}

/** `base` quantized by `s`, and the same model with the dequantized products as float32 weights. */
export function quantizedPair(base: string, s: Scheme): { quantized: string; reference: string } {
  const rng = new SeededRandom(5), orders = new Map<string, number[]>();
  return derivedPair(base, `packed-${s.format}-${s.bits}`, s.experts ?? false, (name, w, out, inputs) => {
    // desc_act's order comes from the layer's inputs, so projections of the same input share it (GPTQ's q, k and v; gate
    // and up), unless `s.orderPerProjection`.
    const input = s.orderPerProjection ? name : name.replace(/self_attn\.[qkv]_proj/, "qkv").replace(/mlp\.(gate|up)_proj/, "gate_up");
    const order = orders.get(input) ?? shuffled(inputs, s.actOrder ? rng : null);
    orders.set(input, order);
    return quantize(s, name, w, out, inputs, order);
  }, { config: s.config, file: s.configFile });
}

/**
 * A random packed weight [out, inputs]: random words, scales of about 1/64, zero points anywhere in the range; groups of
 * `group` inputs by position, or (actOrder) by a shuffled order as GPTQ's desc_act assigns them. E4M3 (8 bits): every
 * byte pattern but NaN's, zeros 0, scales of about 1/1024 (E4M3 values reach 448).
 */
export function randomPacked(rng: SeededRandom, bits: 2 | 4 | 8, out: number, inputs: number, group: number, actOrder: boolean, code: "uint" | "e4m3" = "uint"): PackedMatrix {
  const numGroups = Math.ceil(inputs / group), cells = out * numGroups, levels = 2 ** bits, fp8 = code === "e4m3";
  const words = Uint32Array.from({ length: out * inputs * bits / 32 }, () => rng.nextU32());
  if (fp8) {
    const bytes = new Uint8Array(words.buffer);
    for (let i = 0; i < bytes.length; i++) if ((bytes[i]! & 0x7f) === 0x7f) bytes[i] = bytes[i]! ^ 1;
  }
  const scales = Float32Array.from({ length: cells }, () => (0.5 + rng.next()) / (fp8 ? 1024 : 64));
  const zeros = Float32Array.from({ length: cells }, () => (fp8 ? 0 : rng.int(0, levels - 1)));
  let groupOf: Int32Array | null = null;
  if (actOrder) {
    groupOf = new Int32Array(inputs);
    shuffled(inputs, rng).forEach((input, place) => { groupOf![input] = Math.floor(place / group); });
  }
  return { packed: true, name: "w", file: "test", bits, code, shape: [out, inputs], words, numGroups, scales, zeros, groupOf, groupSize: group };
}

export type Layout = { kind: "tensor" } | { kind: "row" } | { kind: "block"; rows: number; cols: number };
export interface ScaledScheme {
  name: string; dtype: QuantizedDType; layout: Layout; scaleSuffix: "_scale_inv" | "_scale"; config: Record<string, unknown>;
  /** Quantize a mixture of experts' experts too. */
  experts?: boolean;
}

const FP8_MAX = 448, I8_MAX = 127;

/** The scale index of element (r, c) of a rows × cols weight, for the layout. */
function scaleIndex(layout: Layout, r: number, c: number, cols: number): number {
  if (layout.kind === "tensor") return 0;
  if (layout.kind === "row") return r;
  return Math.floor(r / layout.rows) * Math.ceil(cols / layout.cols) + Math.floor(c / layout.cols);
}

/**
 * 8-bit checkpoints (FP8 E4M3 or INT8 values with per-tensor, per-row or per-block scales, as quant_method fp8 and
 * compressed-tensors store them): writes `base` quantized by `scheme` (each projection weight as its 8-bit values and scales), and the same
 * model whose projection weights are those values times their scales in float32: what loading must give.
 */
export function scaledPair(base: string, scheme: ScaledScheme): { quantized: string; reference: string } {
  const max = scheme.dtype === "I8" ? I8_MAX : FP8_MAX, L = scheme.layout;
  return derivedPair(base, `quantized-${scheme.name}`, scheme.experts ?? false, (name, w, rows, cols) => {
    // One value is a 0-dimensional tensor, as PyTorch saves a scalar.
    const scaleShape = L.kind === "tensor" ? [] : L.kind === "row" ? [rows, 1] : [Math.ceil(rows / L.rows), Math.ceil(cols / L.cols)];
    const amax = new Float32Array(scaleShape.reduce((a, b) => a * b, 1));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) { const k = scaleIndex(L, r, c, cols); amax[k] = Math.max(amax[k]!, Math.abs(w[r * cols + c]!)); }
    const scale = amax.map((a) => (a > 0 ? a / max : 1));
    const scaled = w.map((x, i) => x / scale[scaleIndex(L, Math.floor(i / cols), i % cols, cols)]!);
    const bytes = fromFloat32(scaled, scheme.dtype);
    const values = toFloat32(bytes, scheme.dtype);
    const tensors: TensorToWrite[] = [{ name, dtype: scheme.dtype, shape: [rows, cols], bytes }, { name: name + scheme.scaleSuffix, dtype: "F32", shape: scaleShape, bytes: fromFloat32(scale, "F32") }];
    if (scheme.scaleSuffix === "_scale") tensors.push({ name: name.replace(/weight$/, "input_scale"), dtype: "F32", shape: [1], bytes: fromFloat32(Float32Array.of(1), "F32") });
    return { tensors, product: values.map((v, i) => v * scale[scaleIndex(L, Math.floor(i / cols), i % cols, cols)]!) };
  }, { config: scheme.config });
}

/**
 * What `--quantization fp8` must make of `base`: the same model with each projection (and expert) replaced by its FP8
 * rounding — per row, scale = amax / 448, values x / scale to the nearest E4M3 (dtype.ts's search over all 256
 * patterns), times the scale — as float32 weights. Each rank of `tensorParallel` quantizes the rows it keeps: of the
 * row-parallel projections (o_proj, down_proj), a slice of each row's inputs, with a scale of its own.
 */
export function onlineFp8Reference(base: string, tensorParallel = 1): string {
  return derivedPair(base, `online-fp8-tp${tensorParallel}`, true, (name, w, rows, cols) => {
    const product = new Float32Array(rows * cols), slices = /\.(o_proj|down_proj)\.weight$/.test(name) ? tensorParallel : 1, width = cols / slices;
    for (let r = 0; r < rows; r++) for (let s = 0; s < slices; s++) {
      const start = r * cols + s * width, row = w.subarray(start, start + width), amax = row.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const scale = amax > 0 ? Math.fround(amax / 448) : 1;
      const values = toFloat32(fromFloat32(row.map((v) => v / scale), "F8_E4M3"), "F8_E4M3");
      for (let i = 0; i < width; i++) product[start + i] = values[i]! * scale;
    }
    return { tensors: [], product };
  }, null).reference;
}

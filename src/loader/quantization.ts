/**
 * 8-bit quantized checkpoints, dequantized as they are read: each quantized weight W (F8_E4M3, F8_E5M2 or I8)
 * comes with a scale S, and the weight is W · S — S one number, one per output row, or one per block of
 * rows × columns. vLLM runs such weights in FP8/INT8 GEMMs; vbun computes in its usual dtype (bf16 on GPUs): the
 * dense layers' projections stay 8-bit on the GPU (scaledMatrix: dequantized per layer, or read by a GEMV, there),
 * everything else is dequantized as it loads.
 *
 * Read from config.json's quantization_config:
 *   - quant_method "fp8" (Qwen3-…-FP8, DeepSeek style): `X.weight` with `X.weight_scale_inv` per
 *     weight_block_size block (or one per tensor);
 *   - quant_method "compressed-tensors" with 8-bit weights (llm-compressor's FP8 / INT8 W8A8 and W8A16):
 *     `X.weight` with `X.weight_scale` per tensor, per channel ([out, 1]) or per block_structure block.
 *   - quant_method "mxfp4" (GPT-OSS's experts): `X_blocks` [..., G, 16] of packed FP4 (E2M1) pairs and
 *     `X_scales` [..., G] of E8M0 exponents, one per 32 values — read with Checkpoint.mxfp4, as bf16 (exact).
 *   - integers packed into I32 words with a scale (and zero point) per group of inputs: quant_method "gptq"
 *     (2/4/8-bit, desc_act, symmetric or not; also from AutoGPTQ's quantize_config.json), "awq" (4-bit, version
 *     gemm) and compressed-tensors' format "pack-quantized" (symmetric 4/8-bit) — src/loader/packed-weights.ts.
 * Other schemes (bitsandbytes, GGUF, NVFP4, AWQ's gemv layouts, Marlin-repacked checkpoints …) are refused, naming the file.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { toFloat32 } from "./dtype.ts";
import type { TensorView } from "./safetensors.ts";
import type { PackedIntegers } from "./packed-weights.ts";
import { isPacked, type LinearWeight, type PackedMatrix } from "./packed-matrix.ts";

export interface WeightQuantization {
  method: "fp8" | "compressed-tensors" | "mxfp4" | "gptq" | "awq";
  /** [rows, columns] of a scale block, when scales are per block. */
  blockSize: [number, number] | null;
  /** The layout of integer weights packed into I32 words (gptq, awq, compressed-tensors pack-quantized); null: none. */
  packed: PackedIntegers | null;
}

/** The checkpoint's weight quantization from `dir`/config.json, or AutoGPTQ's quantize_config.json (null: none). */
export function readQuantization(dir: string): WeightQuantization | null {
  let file = join(dir, "config.json");
  if (!existsSync(file)) return null;
  let q: Record<string, unknown> | undefined;
  try { q = JSON.parse(readFileSync(file, "utf8")).quantization_config; } catch { return null; } // loadModelConfig reports a bad config.json
  if (q == null && existsSync(join(dir, "quantize_config.json"))) {
    file = join(dir, "quantize_config.json");
    try { q = { quant_method: "gptq", ...JSON.parse(readFileSync(file, "utf8")) }; } catch (e) { throw new Error(`${file}: not valid JSON (${(e as Error).message})`); }
  }
  if (q == null) return null;
  const fail = (m: string): never => { throw new Error(`${file}: quantization_config: ${m}`); };
  if (typeof q !== "object") fail("must be an object");
  const method = q!.quant_method;
  const block = (v: unknown, field: string): [number, number] | null => {
    if (v == null) return null;
    if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isInteger(x) && x > 0)) fail(`${field} must be [rows, columns], got ${JSON.stringify(v)}`);
    return v as [number, number];
  };
  if (method === "fp8") {
    if (q!.fmt !== undefined && q!.fmt !== "e4m3") fail(`fmt ${JSON.stringify(q!.fmt)} is not supported (e4m3 only)`);
    return { method, blockSize: block(q!.weight_block_size, "weight_block_size"), packed: null };
  }
  const bits = (v: unknown, allowed: number[], field: string): 2 | 4 | 8 => {
    if (!allowed.includes(v as number)) fail(`${field} ${JSON.stringify(v)} is not supported (${allowed.join(", ")})`);
    return v as 2 | 4 | 8;
  };
  const groupSize = (v: unknown, field: string): number | null => {
    if (v === -1 || v == null) return null;
    if (!Number.isInteger(v) || (v as number) <= 0) fail(`${field} must be a positive integer or -1, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (method === "gptq") {
    const format = q!.checkpoint_format ?? "gptq";
    if (format !== "gptq" && format !== "gptq_v2") fail(`checkpoint_format ${JSON.stringify(format)} is not supported (gptq, gptq_v2): vbun reads GPTQ's own packing, not a kernel's repacked one`);
    if (q!.dynamic != null && typeof q!.dynamic === "object" && Object.keys(q!.dynamic as object).length > 0) fail("per-module overrides ('dynamic') are not supported");
    return { method, blockSize: null, packed: { format: "gptq", bits: bits(q!.bits, [2, 4, 8], "bits"), groupSize: groupSize(q!.group_size, "group_size"), zeroOffset: format === "gptq" ? 1 : 0 } };
  }
  if (method === "awq") {
    const version = String(q!.version ?? "gemm").toLowerCase();
    if (version !== "gemm") fail(`version ${JSON.stringify(q!.version)} is not supported (gemm only: other versions pack weights for one kernel)`);
    if (q!.zero_point === false) fail("zero_point false is not supported");
    return { method, blockSize: null, packed: { format: "awq", bits: bits(q!.bits ?? q!.w_bit, [4], "bits"), groupSize: groupSize(q!.group_size ?? q!.q_group_size, "group_size"), zeroOffset: 0 } };
  }
  if (method === "compressed-tensors") {
    type Weights = { num_bits?: unknown; block_structure?: unknown; type?: unknown; symmetric?: unknown; strategy?: unknown; group_size?: unknown };
    const groups = Object.entries((q!.config_groups ?? {}) as Record<string, { weights?: Weights; format?: unknown }>);
    if (groups.length === 0) fail("compressed-tensors without config_groups");
    const formats = new Set(groups.map(([, g]) => g?.format ?? q!.format));
    if (formats.has("pack-quantized")) {
      if (formats.size > 1) fail(`config_groups mix formats (${[...formats].join(", ")}): one format for all groups only`);
      let packed: PackedIntegers | null = null;
      for (const [name, g] of groups) {
        const w = g?.weights ?? {}, field = `config_groups.${name}.weights`;
        if (w?.type !== "int") fail(`${field}.type ${JSON.stringify(w?.type)} is not supported in pack-quantized (int only)`);
        if (w.symmetric !== true) fail(`${field}: asymmetric pack-quantized weights (zero points) are not supported`);
        if (w.strategy !== "group" && w.strategy !== "channel") fail(`${field}.strategy ${JSON.stringify(w.strategy)} is not supported (group, channel)`);
        const mine: PackedIntegers = { format: "compressed-tensors", bits: bits(w.num_bits, [4, 8], `${field}.num_bits`), groupSize: w.strategy === "group" ? groupSize(w.group_size, `${field}.group_size`) : null, zeroOffset: 0 };
        if (packed && (packed.bits !== mine.bits || packed.groupSize !== mine.groupSize)) fail("config_groups with different bits or group sizes are not supported");
        packed = mine;
      }
      return { method, blockSize: null, packed };
    }
    let blockSize: [number, number] | null = null;
    for (const [name, g] of groups) {
      if (g?.weights?.num_bits !== 8) fail(`config_groups.${name}: ${JSON.stringify(g?.weights?.num_bits)}-bit weights are supported in format pack-quantized only, not ${JSON.stringify(g?.format ?? q!.format)}`);
      blockSize ??= block(g.weights!.block_structure, `config_groups.${name}.weights.block_structure`);
    }
    return { method, blockSize, packed: null };
  }
  if (method === "mxfp4") return { method, blockSize: null, packed: null };
  return fail(`quant_method ${JSON.stringify(method)} is not supported: vbun reads fp8, compressed-tensors (8-bit, and 4/8-bit pack-quantized), gptq, awq and mxfp4 (GPT-OSS) checkpoints (dequantized when loaded)`);
}

/** The names a quantized weight's scale may have (fp8: weight_scale_inv; compressed-tensors: weight_scale). */
export function scaleNames(weightName: string): string[] {
  return [`${weightName}_scale_inv`, `${weightName}_scale`];
}

/**
 * How S covers W's rows × cols (the columns: all dimensions after the first): each scale value covers `rowsPer` rows
 * and `colsPer` columns, S being [⌈rows / rowsPer⌉, sCols] — one value (per tensor), one per row ([rows] or [rows, 1]),
 * or one per block ([⌈rows / br⌉, ⌈cols / bc⌉] with `blockSize` [br, bc]). Throws naming both tensors when it is none of these.
 */
function scaleLayout(w: TensorView, s: TensorView, blockSize: [number, number] | null): { rowsPer: number; colsPer: number; sCols: number } {
  const rows = w.shape[0] ?? 1, cols = w.shape.slice(1).reduce((a, b) => a * b, 1), count = s.shape.reduce((a, b) => a * b, 1);
  if (count === 1) return { rowsPer: rows, colsPer: cols, sCols: 1 };
  if (count === rows && (s.shape.length === 1 || (s.shape.length === 2 && s.shape[1] === 1))) return { rowsPer: 1, colsPer: cols, sCols: 1 };
  if (blockSize && w.shape.length === 2 && s.shape.length === 2 && s.shape[0] === Math.ceil(rows / blockSize[0]) && s.shape[1] === Math.ceil(cols / blockSize[1])) {
    return { rowsPer: blockSize[0], colsPer: blockSize[1], sCols: s.shape[1]! };
  }
  throw new Error(`${w.file}: tensor '${w.name}' [${w.shape}] has a scale '${s.name}' of shape [${s.shape}], which is neither one value, one per row, nor one per ${blockSize ? `${blockSize[0]}×${blockSize[1]} block` : "block (the config gives no block size)"}`);
}

/** W · S as float32, S's layout told by its shape (scaleLayout). */
export function dequantize(w: TensorView, s: TensorView, blockSize: [number, number] | null): TensorView {
  const rows = w.shape[0] ?? 1, cols = w.shape.slice(1).reduce((a, b) => a * b, 1);
  const { rowsPer, colsPer, sCols } = scaleLayout(w, s, blockSize);
  // The values are decoded into `out` and scaled there, one scale per run of columns (start-up time for large checkpoints).
  const out = toFloat32(w.bytes, w.dtype), scale = toFloat32(s.bytes, s.dtype);
  for (let r = 0; r < rows; r++) {
    const srow = Math.floor(r / rowsPer) * sCols;
    for (let b = 0; b < sCols; b++) {
      const k = scale[srow + b]!;
      for (let i = r * cols + b * colsPer, last = r * cols + Math.min(cols, (b + 1) * colsPer); i < last; i++) out[i] = out[i]! * k;
    }
  }
  return { name: w.name, file: w.file, dtype: "F32", shape: w.shape, bytes: new Uint8Array(out.buffer) };
}

/**
 * An FP8 (E4M3) or INT8 linear weight [out, in] with its scale S, as a packed matrix (src/loader/packed-matrix.ts) that
 * a GPU keeps at one byte a weight: its bytes as they are (INT8's + 128, zero 128), each row's scales per group of
 * `colsPer` inputs. null for what does not fit that: other dtypes (E5M2), rows of a length that is not whole words.
 */
export function scaledMatrix(w: TensorView, s: TensorView, blockSize: [number, number] | null): PackedMatrix | null {
  if ((w.dtype !== "F8_E4M3" && w.dtype !== "I8") || w.shape.length !== 2 || w.shape[1]! % 4 !== 0) return null;
  const [rows, cols] = w.shape as [number, number], { rowsPer, colsPer, sCols } = scaleLayout(w, s, blockSize), scale = toFloat32(s.bytes, s.dtype);
  const words = new Uint32Array(rows * cols / 4), int8 = w.dtype === "I8";
  new Uint8Array(words.buffer).set(w.bytes);
  if (int8) for (let i = 0; i < words.length; i++) words[i] = (words[i]! ^ 0x80808080) >>> 0;
  const scales = new Float32Array(rows * sCols);
  for (let r = 0; r < rows; r++) scales.set(scale.subarray(Math.floor(r / rowsPer) * sCols, Math.floor(r / rowsPer) * sCols + sCols), r * sCols);
  return {
    packed: true, name: w.name, file: w.file, bits: 8, code: int8 ? "uint" : "e4m3", shape: [rows, cols], words, numGroups: sCols, scales,
    zeros: new Float32Array(rows * sCols).fill(int8 ? 128 : 0), groupOf: null, groupSize: colsPer,
  };
}

/** f32 bit patterns at and above 2^-6, E4M3's smallest normal value. */
const E4M3_MIN_NORMAL_BITS = 0x3c800000;

/**
 * The E4M3 byte nearest the f32 `v` whose bits are `bits` (ties to the even pattern), saturating at ±448 (v finite):
 * normal magnitudes keep a 3-bit mantissa rounded half to even by adding the rounding bias below bit 20; subnormal
 * ones (under 2^-6) are multiples of 2^-9. A negative value that rounds to zero stays −0, as the hardware's conversion.
 */
function e4m3Byte(v: number, bits: number): number {
  const sign = (bits >>> 31) << 7, a = bits & 0x7fffffff;
  if (a < E4M3_MIN_NORMAL_BITS) {
    const m = Math.abs(v) * 512, r = Math.round(m);
    return sign | (r - m === 0.5 && r % 2 === 1 ? r - 1 : r); // Math.round rounds halves up: back to even
  }
  const code = ((a + 0x7ffff + ((a >>> 20) & 1)) >>> 20) - ((127 - 7) << 3);
  return sign | (code > 0x7e ? 0x7e : code);
}

/**
 * Whether `parts` (a weight of `shape`, stacked along rows) can be quantized to FP8 by rows (Backend.loadWeight's
 * quantize "fp8"): float tensors (bf16, f16, f32) of a 2-D weight whose rows are whole multiples of 4 wide.
 */
export function fp8Quantizable(parts: LinearWeight[], shape: number[]): parts is TensorView[] {
  return shape.length === 2 && shape[1]! % 4 === 0
    && parts.every((p) => !isPacked(p) && (p.dtype === "BF16" || p.dtype === "F16" || p.dtype === "F32") && p.shape.length === 2 && p.shape[1] === shape[1]);
}

/**
 * vLLM's `--quantization fp8` on an unquantized checkpoint: a linear weight [out, in] (any float dtype) as E4M3 with
 * one scale per row (amax / 448; vLLM takes one per tensor — per row loses less), packed (src/loader/packed-matrix.ts):
 * one byte a weight on the GPU. Rows whose values are all zero get scale 1.
 */
export function quantizeFp8Rows(t: TensorView): PackedMatrix {
  const [rows, cols] = t.shape as [number, number], x = toFloat32(t.bytes, t.dtype);
  if (t.shape.length !== 2 || cols % 4 !== 0) throw new Error(`${t.file}: '${t.name}' [${t.shape}]: FP8 rows need a multiple of 4 columns`);
  const words = new Uint32Array((rows * cols) / 4), bytes = new Uint8Array(words.buffer), scales = new Float32Array(rows);
  const row = new Float32Array(cols), rowBits = new Uint32Array(row.buffer);
  for (let r = 0; r < rows; r++) {
    let amax = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) {
      const v = x[i]!, m = v < 0 ? -v : v;
      if (m > amax) amax = m;
    }
    const scale = amax > 0 ? Math.fround(amax / 448) : 1;
    scales[r] = scale;
    // x / scale rounded to f32 as it is stored, then encoded from its bits.
    for (let i = 0; i < cols; i++) row[i] = x[r * cols + i]! / scale;
    for (let i = 0; i < cols; i++) bytes[r * cols + i] = e4m3Byte(row[i]!, rowBits[i]!);
  }
  return { packed: true, name: `${t.name} (FP8)`, file: t.file, bits: 8, code: "e4m3", shape: [rows, cols], words, numGroups: 1, scales, zeros: new Float32Array(rows), groupOf: null, groupSize: cols };
}

/** The 16 values of an FP4 (E2M1) nibble: sign bit 3, then 0, 0.5, 1, 1.5, 2, 3, 4, 6. */
export const FP4_VALUES = Float32Array.from({ length: 16 }, (_, n) => (n & 8 ? -1 : 1) * [0, 0.5, 1, 1.5, 2, 3, 4, 6][n & 7]!);

/**
 * MXFP4 → bf16: `blocks` [..., G, 16] (U8, two FP4 values a byte: the low nibble first) and `scales` [..., G] (U8,
 * E8M0: 2^(s − 127) for the block's 32 values) become [..., G·32]. Exact: an FP4 value times a power of two is a
 * bf16 (the scales' range is f32's).
 */
export function dequantizeMxfp4(blocks: TensorView, scales: TensorView, name: string): TensorView {
  const lead = blocks.shape.slice(0, -1);
  if (blocks.dtype !== "U8" || scales.dtype !== "U8" || blocks.shape.at(-1) !== 16 || scales.shape.length !== lead.length || lead.some((d, i) => d !== scales.shape[i]))
    throw new Error(`${blocks.file}: MXFP4 weight '${name}' needs U8 blocks [..., G, 16] and U8 scales [..., G], got ${blocks.dtype} [${blocks.shape}] and ${scales.dtype} [${scales.shape}]`);
  const groups = scales.bytes.length, out = new Uint16Array(groups * 32), f = new Float32Array(32), bits = new Uint32Array(f.buffer);
  for (let g = 0; g < groups; g++) {
    const k = 2 ** (scales.bytes[g]! - 127), b = blocks.bytes.subarray(g * 16, g * 16 + 16);
    for (let i = 0; i < 16; i++) {
      f[2 * i] = FP4_VALUES[b[i]! & 15]! * k;
      f[2 * i + 1] = FP4_VALUES[b[i]! >> 4]! * k;
    }
    for (let i = 0; i < 32; i++) out[g * 32 + i] = bits[i]! >>> 16;
  }
  const shape = [...lead.slice(0, -1), lead.at(-1)! * 32];
  return { name, file: blocks.file, dtype: "BF16", shape, bytes: new Uint8Array(out.buffer) };
}

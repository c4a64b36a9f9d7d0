/**
 * 8-bit quantized checkpoints, dequantized as they are read: each quantized weight W (F8_E4M3, F8_E5M2 or I8)
 * comes with a scale S, and the weight is W · S — S one number, one per output row, or one per block of
 * rows × columns. vLLM runs such weights in FP8/INT8 GEMMs; vbun so far computes in its usual dtype
 * (bf16 on GPUs), so a quantized checkpoint loads and runs but takes the memory of an unquantized one.
 *
 * Read from config.json's quantization_config:
 *   - quant_method "fp8" (Qwen3-…-FP8, DeepSeek style): `X.weight` with `X.weight_scale_inv` per
 *     weight_block_size block (or one per tensor);
 *   - quant_method "compressed-tensors" with 8-bit weights (llm-compressor's FP8 / INT8 W8A8 and W8A16):
 *     `X.weight` with `X.weight_scale` per tensor, per channel ([out, 1]) or per block_structure block.
 * 4-bit schemes (AWQ, GPTQ, packed compressed-tensors, bitsandbytes …) are refused, naming the file.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { toFloat32 } from "./dtype.ts";
import type { TensorView } from "./safetensors.ts";

export interface WeightQuantization {
  method: "fp8" | "compressed-tensors";
  /** [rows, columns] of a scale block, when scales are per block. */
  blockSize: [number, number] | null;
}

/** The checkpoint's weight quantization from `dir`/config.json (null: none, or no config.json). */
export function readQuantization(dir: string): WeightQuantization | null {
  const file = join(dir, "config.json");
  if (!existsSync(file)) return null;
  let q: Record<string, unknown> | undefined;
  try { q = JSON.parse(readFileSync(file, "utf8")).quantization_config; } catch { return null; } // loadModelConfig reports a bad config.json
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
    return { method, blockSize: block(q!.weight_block_size, "weight_block_size") };
  }
  if (method === "compressed-tensors") {
    const groups = Object.entries((q!.config_groups ?? {}) as Record<string, { weights?: { num_bits?: unknown; block_structure?: unknown } }>);
    if (groups.length === 0) fail("compressed-tensors without config_groups");
    let blockSize: [number, number] | null = null;
    for (const [name, g] of groups) {
      if (g?.weights?.num_bits !== 8) fail(`config_groups.${name}: ${JSON.stringify(g?.weights?.num_bits)}-bit weights are not supported (8-bit FP8 or INT8 only)`);
      blockSize ??= block(g.weights!.block_structure, `config_groups.${name}.weights.block_structure`);
    }
    if (q!.format === "pack-quantized") fail("format pack-quantized is not supported");
    return { method, blockSize };
  }
  return fail(`quant_method ${JSON.stringify(method)} is not supported: vbun reads fp8 and 8-bit compressed-tensors checkpoints (dequantized when loaded); use an unquantized or 8-bit checkpoint`);
}

/** The names a quantized weight's scale may have (fp8: weight_scale_inv; compressed-tensors: weight_scale). */
export function scaleNames(weightName: string): string[] {
  return [`${weightName}_scale_inv`, `${weightName}_scale`];
}

/**
 * W · S as float32, S's layout told by its shape: one value; one per row ([rows] or [rows, 1]); or one per
 * block ([⌈rows / br⌉, ⌈cols / bc⌉] with `blockSize` [br, bc]). Throws naming both tensors when it is none of these.
 */
export function dequantize(w: TensorView, s: TensorView, blockSize: [number, number] | null): TensorView {
  const rows = w.shape[0] ?? 1, cols = w.shape.slice(1).reduce((a, b) => a * b, 1);
  const q = toFloat32(w.bytes, w.dtype), scale = toFloat32(s.bytes, s.dtype), out = new Float32Array(q.length);
  const fail = (): never => { throw new Error(`${w.file}: tensor '${w.name}' [${w.shape}] has a scale '${s.name}' of shape [${s.shape}], which is neither one value, one per row, nor one per ${blockSize ? `${blockSize[0]}×${blockSize[1]} block` : "block (the config gives no block size)"}`); };
  if (scale.length === 1) {
    const k = scale[0]!;
    for (let i = 0; i < q.length; i++) out[i] = q[i]! * k;
  } else if (scale.length === rows && (s.shape.length === 1 || (s.shape.length === 2 && s.shape[1] === 1))) {
    for (let r = 0; r < rows; r++) {
      const k = scale[r]!;
      for (let c = 0; c < cols; c++) out[r * cols + c] = q[r * cols + c]! * k;
    }
  } else if (blockSize && w.shape.length === 2 && s.shape.length === 2 && s.shape[0] === Math.ceil(rows / blockSize[0]) && s.shape[1] === Math.ceil(cols / blockSize[1])) {
    const [br, bc] = blockSize, sCols = s.shape[1]!;
    for (let r = 0; r < rows; r++) {
      const srow = Math.floor(r / br) * sCols;
      for (let c = 0; c < cols; c++) out[r * cols + c] = q[r * cols + c]! * scale[srow + Math.floor(c / bc)]!;
    }
  } else fail();
  return { name: w.name, file: w.file, dtype: "F32", shape: w.shape, bytes: new Uint8Array(out.buffer) };
}

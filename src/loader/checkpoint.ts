/** A Hugging Face checkpoint directory: one model.safetensors or shards listed in model.safetensors.index.json. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, SafetensorsError, type TensorView } from "./safetensors.ts";
import { isQuantizedDType } from "./dtype.ts";
import { dequantize, dequantizeMxfp4, readQuantization, scaledMatrix, scaleNames, type WeightQuantization } from "./quantization.ts";
import { packedParts, readPacked } from "./packed-weights.ts";
import { dequantizeMatrix, type LinearWeight, type PackedMatrix } from "./packed-matrix.ts";

export class Checkpoint {
  readonly dir: string;
  private readonly files = new Map<string, SafetensorsFile>();
  /** tensor name → file name (relative to dir) */
  private readonly index = new Map<string, string>();
  /** config.json's quantization_config (quantized weights, dequantized as they are read; null: none). */
  readonly quantization: WeightQuantization | null;
  /**
   * vLLM's `--quantization fp8` on an unquantized checkpoint: the model loads its projections' float weights with
   * Backend.loadWeight's quantize "fp8" (E4M3, a scale per row of what each rank keeps).
   */
  readonly onlineQuantization: "fp8" | null;

  constructor(dir: string, options: { onlineQuantization?: "fp8" | null } = {}) {
    this.dir = dir;
    this.onlineQuantization = options.onlineQuantization ?? null;
    this.quantization = readQuantization(dir);
    const indexPath = join(dir, "model.safetensors.index.json");
    if (existsSync(indexPath)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(readFileSync(indexPath, "utf8")).weight_map;
      } catch (e) {
        throw new Error(`${indexPath}: not valid JSON (${(e as Error).message})`);
      }
      if (typeof weightMap !== "object" || weightMap === null) throw new Error(`${indexPath}: missing 'weight_map'`);
      for (const [name, file] of Object.entries(weightMap)) this.index.set(name, file);
      for (const file of new Set(this.index.values())) {
        const st = this.open(file);
        for (const name of st.names()) if (this.index.get(name) === undefined) this.index.set(name, file);
      }
      return;
    }
    const shards = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort() : [];
    if (shards.length === 0) throw new Error(`${dir}: no *.safetensors files found`);
    for (const file of shards) for (const name of this.open(file).names()) this.index.set(name, file);
  }

  private open(file: string): SafetensorsFile {
    let st = this.files.get(file);
    if (!st) {
      st = SafetensorsFile.open(join(this.dir, file));
      this.files.set(file, st);
    }
    return st;
  }

  /** Whether the checkpoint holds `name` — stored, or packed (a GPTQ / AWQ / pack-quantized `X.weight`). */
  has(name: string): boolean {
    return this.index.has(name) || this.packedName(name) !== null;
  }

  /** The packed parts' first tensor, when `name` is a weight stored packed here; else null. */
  private packedName(name: string): string | null {
    const p = this.quantization?.packed;
    if (!p || !name.endsWith(".weight")) return null;
    const values = packedParts(p.format, name).values;
    return this.index.has(values) ? values : null;
  }

  /**
   * Returns the named tensor, checking its shape when `shape` is given. A quantized weight (8-bit, with its
   * scale beside it) comes back dequantized, as float32 (src/loader/quantization.ts).
   */
  tensor(name: string, shape?: number[]): TensorView {
    const t = this.index.has(name) || this.packedName(name) === null ? this.raw(name) : dequantizeMatrix(this.packed(name));
    checkShape(t, name, shape);
    if (t.dtype === "I32" || t.dtype === "I64") throw new SafetensorsError(t.file, `tensor '${name}' is ${t.dtype} (packed integers, such as GPTQ's qweight): it is read only as part of its quantized weight${this.quantization?.packed ? "" : `, and ${this.dir}/config.json's quantization_config does not say gptq, awq or pack-quantized`}`);
    if (!isQuantizedDType(t.dtype)) return t;
    if (t.dtype === "U8") throw new SafetensorsError(t.file, `tensor '${name}' is U8 (packed bytes, such as MXFP4 blocks): it is read only as part of its quantized weight`);
    const scale = scaleNames(name).find((n) => this.index.has(n));
    if (!this.quantization || scale === undefined)
      throw new SafetensorsError(t.file, `tensor '${name}' is ${t.dtype}, a quantized weight, but ${!this.quantization ? `${this.dir}/config.json has no quantization_config` : `no scale for it (${scaleNames(name).join(" or ")}) is in the checkpoint`}`);
    return dequantize(t, this.raw(scale!), this.quantization!.blockSize);
  }

  /**
   * A linear layer's weight: packed integers (GPTQ, AWQ, pack-quantized) and FP8 / INT8 weights with their scales as a
   * packed matrix (src/loader/packed-matrix.ts); anything else as tensor() returns it.
   */
  linearWeight(name: string, shape: number[]): LinearWeight {
    let m: PackedMatrix | null = null;
    if (!this.index.has(name)) m = this.packedName(name) === null ? null : this.packed(name);
    else if (this.quantization) {
      // FP8 (E4M3) and INT8 weights with a scale beside them, as one byte a weight.
      const t = this.raw(name), scale = scaleNames(name).find((n) => this.index.has(n));
      if (scale !== undefined) m = scaledMatrix(t, this.raw(scale), this.quantization.blockSize);
    }
    if (m === null) return this.tensor(name, shape);
    checkShape(m, name, shape);
    return m;
  }

  /** Whether `name` is an MXFP4 weight here (its _blocks and _scales tensors). */
  hasMxfp4(name: string): boolean {
    return this.index.has(`${name}_blocks`) && this.index.has(`${name}_scales`);
  }

  /**
   * An MXFP4 weight (GPT-OSS's experts: `name`_blocks and `name`_scales) as bf16 of `shape`, the blocks' layout
   * with the last two dimensions joined ([E, rows, G·32]); config.json's quantization_config must say mxfp4.
   */
  mxfp4(name: string, shape: number[]): TensorView {
    if (this.quantization?.method !== "mxfp4") throw new Error(`${this.dir}: '${name}' is stored as MXFP4 (${name}_blocks, ${name}_scales), but config.json's quantization_config does not say quant_method "mxfp4"`);
    const t = dequantizeMxfp4(this.raw(`${name}_blocks`), this.raw(`${name}_scales`), name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new SafetensorsError(t.file, `MXFP4 weight '${name}' has shape [${t.shape}] but the config implies [${shape}]`);
    return t;
  }

  /** A packed weight `name`, read from its parts (src/loader/packed-weights.ts). */
  private packed(name: string): PackedMatrix {
    const p = this.quantization!.packed!, parts = packedParts(p.format, name);
    const optional = (n: string | null) => (n !== null && this.index.has(n) ? this.raw(n) : null);
    if (!this.index.has(parts.scales)) throw new Error(`${this.dir}: ${p.format} weight '${name}' has no scales '${parts.scales}' in the checkpoint`);
    if (p.format === "compressed-tensors" && this.index.has(parts.zeros!)) throw new Error(`${this.dir}: '${parts.zeros}': asymmetric pack-quantized weights (zero points) are not supported`);
    return readPacked(p, name, { values: this.raw(parts.values), scales: this.raw(parts.scales), zeros: optional(parts.zeros), groups: optional(parts.groups), shape: optional(parts.shape) });
  }

  private raw(name: string): TensorView {
    const file = this.index.get(name);
    if (file === undefined) {
      const packed = name.endsWith(".weight") ? (["gptq", "compressed-tensors"] as const).map((f) => packedParts(f, name).values).find((n) => this.index.has(n)) : undefined;
      throw new Error(`${this.dir}: missing tensor '${name}' (in none of ${[...new Set(this.index.values())].join(", ")})${packed ? `; '${packed}' is there, packed, but the quantization config does not say gptq, awq or pack-quantized` : ""}`);
    }
    return this.open(file).tensor(name);
  }
}

function checkShape(t: { shape: readonly number[]; file: string }, name: string, shape: number[] | undefined): void {
  if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])))
    throw new SafetensorsError(t.file, `tensor '${name}' has shape [${t.shape}] but the config implies [${shape}]`);
}

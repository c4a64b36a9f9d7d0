/** A Hugging Face checkpoint directory: one model.safetensors or shards listed in model.safetensors.index.json. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, SafetensorsError, type TensorView } from "./safetensors.ts";
import { isQuantizedDType } from "./dtype.ts";
import { dequantize, readQuantization, scaleNames, type WeightQuantization } from "./quantization.ts";

export class Checkpoint {
  readonly dir: string;
  private readonly files = new Map<string, SafetensorsFile>();
  /** tensor name → file name (relative to dir) */
  private readonly index = new Map<string, string>();
  /** config.json's quantization_config (8-bit weights, dequantized as they are read; null: none). */
  readonly quantization: WeightQuantization | null;

  constructor(dir: string) {
    this.dir = dir;
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

  has(name: string): boolean {
    return this.index.has(name);
  }

  names(): string[] {
    return [...this.index.keys()];
  }

  /**
   * Returns the named tensor, checking its shape when `shape` is given. A quantized weight (8-bit, with its
   * scale beside it) comes back dequantized, as float32 (src/loader/quantization.ts).
   */
  tensor(name: string, shape?: number[]): TensorView {
    const t = this.raw(name);
    if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])))
      throw new SafetensorsError(t.file, `tensor '${name}' has shape [${t.shape}] but the config implies [${shape}]`);
    if (!isQuantizedDType(t.dtype)) return t;
    const scale = scaleNames(name).find((n) => this.index.has(n));
    if (!this.quantization || scale === undefined)
      throw new SafetensorsError(t.file, `tensor '${name}' is ${t.dtype}, a quantized weight, but ${!this.quantization ? `${this.dir}/config.json has no quantization_config` : `no scale for it (${scaleNames(name).join(" or ")}) is in the checkpoint`}`);
    return dequantize(t, this.raw(scale!), this.quantization!.blockSize);
  }

  private raw(name: string): TensorView {
    const file = this.index.get(name);
    if (file === undefined) throw new Error(`${this.dir}: missing tensor '${name}' (in none of ${[...new Set(this.index.values())].join(", ")})`);
    return this.open(file).tensor(name);
  }
}

/** Random PEFT LoRA adapters for the tiny test models (test/lora.test.ts, the CUDA suite). */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromFloat32 } from "../src/loader/dtype.ts";
import { writeSafetensors, type TensorToWrite } from "../src/loader/safetensors.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { targetShape, type LoraTarget } from "../src/lora/lora-adapter.ts";
import { tempDir } from "./helpers.ts";

export interface AdapterSpec { rank: number; alpha: number; targets: readonly LoraTarget[]; seed: number; rslora?: boolean }

/** A PEFT adapter directory for `model` with random A and B of the given rank on the given targets. */
export function writeAdapter(model: string, spec: AdapterSpec, name: string): string {
  const cfg = loadModelConfig(model), dir = join(tempDir("lora"), name), rng = new SeededRandom(spec.seed);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({
    peft_type: "LORA", r: spec.rank, lora_alpha: spec.alpha, target_modules: spec.targets, use_rslora: spec.rslora ?? false,
    bias: "none", fan_in_fan_out: false, modules_to_save: null, base_model_name_or_path: model,
  }));
  const tensors: TensorToWrite[] = [];
  for (let l = 0; l < cfg.numLayers; l++) for (const t of spec.targets) {
    const [inF, outF] = targetShape(cfg, t), kind = ["q_proj", "k_proj", "v_proj", "o_proj"].includes(t) ? "self_attn" : "mlp";
    const p = `base_model.model.model.layers.${l}.${kind}.${t}`;
    tensors.push({ name: `${p}.lora_A.weight`, dtype: "F32", shape: [spec.rank, inF], bytes: fromFloat32(rng.normal(new Float32Array(spec.rank * inF), 1 / Math.sqrt(inF)), "F32") });
    tensors.push({ name: `${p}.lora_B.weight`, dtype: "F32", shape: [outF, spec.rank], bytes: fromFloat32(rng.normal(new Float32Array(outF * spec.rank), 0.5 / Math.sqrt(spec.rank)), "F32") });
  }
  writeSafetensors(join(dir, "adapter_model.safetensors"), tensors);
  return dir;
}


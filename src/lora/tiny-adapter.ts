/** Deterministic random PEFT LoRA adapters for the tiny test checkpoints (tests, and HF/PEFT references on a device). */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromFloat32 } from "../loader/dtype.ts";
import { writeSafetensors, type TensorToWrite } from "../loader/safetensors.ts";
import { loadModelConfig } from "../model/config.ts";
import { SeededRandom } from "../model/tiny-model.ts";
import { targetShape, type LoraTarget } from "./lora-adapter.ts";

export interface TinyAdapterSpec { rank: number; alpha: number; targets: readonly LoraTarget[]; seed: number; rslora?: boolean }

/** Writes a PEFT adapter directory for the checkpoint in `modelDir`: random A and B (float32) of `spec.rank` on `spec.targets`. */
export function writeTinyLoraAdapter(dir: string, modelDir: string, spec: TinyAdapterSpec): string {
  const cfg = loadModelConfig(modelDir), rng = new SeededRandom(spec.seed);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({
    peft_type: "LORA", r: spec.rank, lora_alpha: spec.alpha, target_modules: spec.targets, use_rslora: spec.rslora ?? false,
    bias: "none", fan_in_fan_out: false, modules_to_save: null, lora_dropout: 0, base_model_name_or_path: modelDir,
  }, null, 2) + "\n");
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

/**
 * LoRA adapters in PEFT's format (adapter_config.json + adapter_model.safetensors), as vLLM's --lora-modules
 * serves them: for a target projection W, the adapted layer computes W·x + scale · B·(A·x), with A [r, in],
 * B [out, r] and scale = lora_alpha / r (lora_alpha / √r with use_rslora).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile, type TensorView } from "../loader/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";

/** The projections an adapter may target (attention and MLP, the packed groups' parts included). */
export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

/** The packed projections LoRA runs on, and the targets each packs (in its output order). */
export const LORA_GROUPS = { qkv: ["q_proj", "k_proj", "v_proj"], o: ["o_proj"], gateUp: ["gate_proj", "up_proj"], down: ["down_proj"] } as const satisfies Record<string, readonly LoraTarget[]>;
export type LoraGroup = keyof typeof LORA_GROUPS;
const GROUP_OF = Object.fromEntries(Object.entries(LORA_GROUPS).flatMap(([g, ts]) => ts.map((t) => [t, g]))) as Record<LoraTarget, LoraGroup>;

/**
 * Which layers' packed projections carry LoRA: "all" (adapters loaded at run time may target anything), or
 * the `${layer}.${group}` keys some adapter targets (the others skip the LoRA work).
 */
export type LoraCoverage = "all" | ReadonlySet<string>;

/** The coverage that exactly fits these adapters. */
export function loraCoverageOf(adapters: readonly LoraAdapter[]): Set<string> {
  const keys = new Set<string>();
  for (const ad of adapters) for (const key of ad.weights.keys()) {
    const [layer, target] = key.split(".") as [string, LoraTarget];
    keys.add(`${layer}.${GROUP_OF[target]}`);
  }
  return keys;
}

/** The adapter's targets (as "layer L target") that `coverage` leaves out; empty when it fits. */
export function loraUncovered(adapter: LoraAdapter, coverage: LoraCoverage): string[] {
  if (coverage === "all") return [];
  const out: string[] = [];
  for (const key of adapter.weights.keys()) {
    const [layer, target] = key.split(".") as [string, LoraTarget];
    if (!coverage.has(`${layer}.${GROUP_OF[target]}`)) out.push(`layer ${layer} ${target}`);
  }
  return out;
}

export interface LoraAdapter {
  name: string;
  dir: string;
  rank: number;
  scale: number;
  /** `${layer}.${target}` → its A [r, in] and B [out, r]; targets the adapter leaves out are absent. */
  weights: Map<string, { a: TensorView; b: TensorView }>;
}

export class LoraAdapterError extends Error {
  constructor(dir: string, message: string) {
    super(`LoRA adapter ${dir}: ${message}`);
    this.name = "LoraAdapterError";
  }
}

/** [in, out] of a target projection in the model's full (unsharded) shapes. */
export function targetShape(cfg: ModelConfig, target: LoraTarget): [number, number] {
  const H = cfg.hiddenSize, q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim, I = cfg.intermediateSize;
  return { q_proj: [H, q], k_proj: [H, kv], v_proj: [H, kv], o_proj: [q, H], gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H] }[target] as [number, number];
}

/** Reads and checks an adapter against the model it is for; `maxRank`: vLLM's --max-lora-rank. */
export function loadLoraAdapter(name: string, dir: string, cfg: ModelConfig, maxRank: number): LoraAdapter {
  const fail = (m: string): never => { throw new LoraAdapterError(dir, m); };
  const cfgFile = join(dir, "adapter_config.json");
  if (!existsSync(cfgFile)) fail("adapter_config.json not found (a PEFT LoRA adapter directory has adapter_config.json and adapter_model.safetensors)");
  let c: Record<string, unknown>;
  try { c = JSON.parse(readFileSync(cfgFile, "utf8")); } catch (e) { return fail(`adapter_config.json: not valid JSON (${(e as Error).message})`); }
  if (c.peft_type !== undefined && c.peft_type !== "LORA") fail(`peft_type ${JSON.stringify(c.peft_type)} is not LORA`);
  const rank = c.r;
  if (typeof rank !== "number" || !Number.isInteger(rank) || rank < 1) fail(`adapter_config.json: 'r' must be a positive integer, got ${JSON.stringify(rank)}`);
  const r = rank as number;
  if (r > maxRank) fail(`its rank ${r} exceeds --max-lora-rank ${maxRank}`);
  const alpha = c.lora_alpha ?? r;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) fail(`adapter_config.json: 'lora_alpha' must be a number, got ${JSON.stringify(c.lora_alpha)}`);
  for (const [key, ok] of [["use_dora", c.use_dora !== true], ["fan_in_fan_out", c.fan_in_fan_out !== true], ["bias", c.bias == null || c.bias === "none"],
    ["modules_to_save", c.modules_to_save == null || (Array.isArray(c.modules_to_save) && c.modules_to_save.length === 0)],
    ["rank_pattern", c.rank_pattern == null || Object.keys(c.rank_pattern as object).length === 0],
    ["alpha_pattern", c.alpha_pattern == null || Object.keys(c.alpha_pattern as object).length === 0]] as const)
    if (!ok) fail(`adapter_config.json: ${key} ${JSON.stringify(c[key])} is not supported (plain LoRA on the attention and MLP projections only)`);
  const file = join(dir, "adapter_model.safetensors");
  if (!existsSync(file)) fail(existsSync(join(dir, "adapter_model.bin")) ? "only adapter_model.safetensors is read (convert adapter_model.bin with PEFT's save_pretrained(safe_serialization=True))" : "adapter_model.safetensors not found");
  const st = SafetensorsFile.open(file);
  const weights = new Map<string, { a: TensorView; b: TensorView }>();
  const parts = new Map<string, { a?: TensorView; b?: TensorView }>();
  const re = /^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$/;
  for (const tensorName of st.names()) {
    const m = re.exec(tensorName);
    if (!m || !(LORA_TARGETS as readonly string[]).includes(m[2]!)) fail(`tensor '${tensorName}' is not a LoRA weight of an attention or MLP projection (${LORA_TARGETS.join(", ")}); embedding, LM-head and other modules are not supported`);
    const layer = Number(m![1]);
    if (layer >= cfg.numLayers) fail(`tensor '${tensorName}': the model has ${cfg.numLayers} layers`);
    const key = `${layer}.${m![2]}`;
    const entry = parts.get(key) ?? {};
    entry[m![3] === "A" ? "a" : "b"] = st.tensor(tensorName);
    parts.set(key, entry);
  }
  if (parts.size === 0) fail("adapter_model.safetensors holds no LoRA weights");
  for (const [key, { a, b }] of parts) {
    if (!a || !b) fail(`${key.replace(".", " layer ")}: lora_${a ? "B" : "A"} is missing`);
    const [layerNo, target] = key.split(".") as [string, LoraTarget];
    if (cfg.moe?.sparseLayers[Number(layerNo)] && (target === "gate_proj" || target === "up_proj" || target === "down_proj"))
      fail(`layer ${layerNo}'s ${target} is a mixture of experts, which LoRA does not adapt here (only attention projections, and dense MLP layers)`);
    const [inF, outF] = targetShape(cfg, key.split(".")[1] as LoraTarget);
    const same = (t: TensorView, shape: number[]) => t.shape.length === 2 && t.shape[0] === shape[0] && t.shape[1] === shape[1];
    if (!same(a!, [r, inF])) fail(`tensor '${a!.name}' has shape [${a!.shape}] but rank ${r} and the model imply [${r}, ${inF}]`);
    if (!same(b!, [outF, r])) fail(`tensor '${b!.name}' has shape [${b!.shape}] but rank ${r} and the model imply [${outF}, ${r}]`);
    weights.set(key, { a: a!, b: b! });
  }
  const scale = c.use_rslora === true ? (alpha as number) / Math.sqrt(r) : (alpha as number) / r;
  return { name, dir, rank: r, scale, weights };
}

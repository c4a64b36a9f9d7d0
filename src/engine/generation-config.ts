/**
 * vLLM's --generation-config: the sampling defaults a model's creator recommends in generation_config.json
 * (Qwen3: temperature 0.6, top_k 20, top_p 0.95) apply to every request that leaves those fields out.
 * "auto" (the default, as in vLLM) reads the model directory's file, "vllm" uses vLLM's own defaults, any
 * other value is a folder holding a generation_config.json. --override-generation-config sets fields on top.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EngineConfigError } from "./engine-config.ts";
import { SamplingParams, SamplingParamsError } from "./sampling-params.ts";

/** The fields vLLM takes from a generation config; max_new_tokens becomes the default max_tokens. */
const FIELDS = { temperature: "temperature", top_p: "top_p", top_k: "top_k", min_p: "min_p", repetition_penalty: "repetition_penalty", max_new_tokens: "max_tokens" } as const;

export interface SamplingDefaults {
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  /** Used only where a request leaves max_tokens open (chat without max_tokens). */
  max_tokens?: number;
}

/** Reads the defaults; throws an error naming the file (or flag) and the field when a value is not valid. */
export function loadSamplingDefaults(source: string, modelDir: string, overrides: Record<string, unknown> = {}): SamplingDefaults {
  const defaults: SamplingDefaults = {};
  if (source !== "vllm") {
    const file = join(source === "auto" ? modelDir : source, "generation_config.json");
    if (existsSync(file)) {
      let raw: unknown;
      try { raw = JSON.parse(readFileSync(file, "utf8")); } catch (e) { throw new EngineConfigError("--generation-config", `${file} is not valid JSON (${(e as Error).message})`); }
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new EngineConfigError("--generation-config", `${file} must hold a JSON object`);
      take(defaults, raw as Record<string, unknown>, file, false);
    } else if (source !== "auto") throw new EngineConfigError("--generation-config", `${file} not found (use auto, vllm, or a folder holding a generation_config.json)`);
  }
  take(defaults, overrides, "--override-generation-config", true);
  return defaults;
}

function take(into: SamplingDefaults, raw: Record<string, unknown>, where: string, strict: boolean): void {
  for (const [key, value] of Object.entries(raw)) {
    const field = FIELDS[key as keyof typeof FIELDS];
    if (field === undefined) {
      if (strict) throw new EngineConfigError("--override-generation-config", `'${key}' is not a sampling field it can set (${Object.keys(FIELDS).join(", ")})`);
      continue; // generation_config.json holds much else (eos ids, do_sample, …)
    }
    if (value === null) continue;
    try {
      new SamplingParams({ [field]: value, ...(field === "max_tokens" ? {} : { max_tokens: null }) });
    } catch (e) {
      const message = e instanceof SamplingParamsError ? e.message.replace(field, key) : (e as Error).message;
      throw new EngineConfigError(where === "--override-generation-config" ? where : "--generation-config", `${where}: ${message}`);
    }
    into[field] = value as number;
  }
}

/** "temperature=0.6, top_k=20" — for the start-up log. */
export function describeDefaults(d: SamplingDefaults): string {
  return Object.entries(d).map(([k, v]) => `${k}=${v}`).join(", ");
}

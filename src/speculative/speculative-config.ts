/**
 * vLLM's --speculative-config for n-gram speculation (prompt lookup): the draft tokens are what followed
 * the latest earlier occurrence of the sequence's last n tokens, and one step of the model verifies them.
 */
import { EngineConfigError } from "../engine/engine-config.ts";

export interface SpeculativeConfig {
  method: "ngram";
  /** Draft tokens proposed per sequence and step (at most). */
  numSpeculativeTokens: number;
  /** The n-gram lengths looked up, longest first. */
  promptLookupMin: number;
  promptLookupMax: number;
  /** No drafts while more sequences than this run (where a step is compute-bound, drafts cost what they are). */
  disableByBatchSize: number | null;
}

const OPTION = "--speculative-config";
const KNOWN = new Set(["method", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max", "disable_by_batch_size"]);

function positiveInt(obj: Record<string, unknown>, key: string): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new EngineConfigError(OPTION, `${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Checks vLLM's speculative_config fields (snake_case, as `vllm serve --speculative-config` takes them).
 * As in vLLM, prompt_lookup_min and prompt_lookup_max default to each other, and both to 5.
 */
export function parseSpeculativeConfig(obj: Record<string, unknown>): SpeculativeConfig {
  for (const key of Object.keys(obj)) if (!KNOWN.has(key)) throw new EngineConfigError(OPTION, `unknown field '${key}' (vbun speculates with n-grams: ${[...KNOWN].join(", ")})`);
  const method = obj.method ?? "ngram";
  if (method !== "ngram") throw new EngineConfigError(OPTION, `method ${JSON.stringify(method)} is not supported (vbun has 'ngram', which needs no draft model)`);
  const k = positiveInt(obj, "num_speculative_tokens");
  if (k === undefined) throw new EngineConfigError(OPTION, "num_speculative_tokens is required");
  if (k > 32) throw new EngineConfigError(OPTION, `num_speculative_tokens must be at most 32, got ${k}`);
  let min = positiveInt(obj, "prompt_lookup_min"), max = positiveInt(obj, "prompt_lookup_max");
  if (min === undefined && max === undefined) min = max = 5;
  min ??= max!;
  max ??= min;
  if (min > max) throw new EngineConfigError(OPTION, `prompt_lookup_min (${min}) must not exceed prompt_lookup_max (${max})`);
  return { method: "ngram", numSpeculativeTokens: k, promptLookupMin: min, promptLookupMax: max, disableByBatchSize: positiveInt(obj, "disable_by_batch_size") ?? null };
}

/** The config as vLLM writes it (logs, /version-style reports). */
export function describeSpeculativeConfig(c: SpeculativeConfig): string {
  return `ngram, ${c.numSpeculativeTokens} draft tokens, n-grams of ${c.promptLookupMin === c.promptLookupMax ? c.promptLookupMin : `${c.promptLookupMin}–${c.promptLookupMax}`} tokens${c.disableByBatchSize === null ? "" : `, none while more than ${c.disableByBatchSize} sequences run`}`;
}

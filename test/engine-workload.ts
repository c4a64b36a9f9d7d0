/**
 * A mixed workload for engine equivalence tests (async scheduling, speculative decoding): prompts sharing
 * prefixes, every way a sequence stops, and most sampling options, with what a client sees of the results.
 */
import type { LLM } from "../src/engine/llm.ts";
import type { RequestOutput } from "../src/engine/request.ts";
import { SamplingParams, type SamplingParamsInit } from "../src/engine/sampling-params.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

export interface Workload { prompts: number[][]; params: SamplingParamsInit[] }

/**
 * Prompts sharing prefixes, with a mix of what stops a sequence (max_tokens, EOS, stop token ids that the
 * tiny model emits often, stop strings, min_tokens) and how it samples (greedy, seeded temperature with
 * top-k/p, n = 2, logit_bias, logprobs, presence/frequency/repetition penalties).
 */
export function workload(seed: number, count: number, frequent: number[]): Workload {
  const rng = new SeededRandom(seed);
  const prefixes = Array.from({ length: 3 }, () => Array.from({ length: rng.int(6, 20) }, () => rng.int(3, 500)));
  const prompts: number[][] = [], params: SamplingParamsInit[] = [];
  for (let i = 0; i < count; i++) {
    const pre = rng.next() < 0.7 ? prefixes[rng.int(0, 2)]! : [];
    prompts.push([...pre, ...Array.from({ length: rng.int(1, 20) }, () => rng.int(3, 500))]);
    const p: SamplingParamsInit = { max_tokens: rng.int(1, 24), ignore_eos: rng.next() < 0.5 };
    if (rng.next() < 0.5) Object.assign(p, { temperature: 0.9, top_k: rng.next() < 0.5 ? 20 : 0, top_p: 0.9, seed: rng.int(1, 1000) });
    else p.temperature = 0;
    if (rng.next() < 0.4) p.stop_token_ids = frequent.slice(rng.int(0, 8), 40);
    if (rng.next() < 0.2) p.min_tokens = rng.int(0, Math.min(6, p.max_tokens!));
    if (rng.next() < 0.25) p.stop = ["a", "e"];
    if (rng.next() < 0.15) { p.n = 2; p.seed ??= rng.int(1, 1000); p.temperature = 0.8; }
    if (rng.next() < 0.15) p.logit_bias = { [frequent[0]!]: 2 };
    if (rng.next() < 0.1) p.logprobs = 2;
    // Penalties count the pending token too (the backend adds it where the sampled ids are).
    if (rng.next() < 0.15) Object.assign(p, { presence_penalty: 0.5, frequency_penalty: 0.7, repetition_penalty: 1.3 });
    params.push(p);
  }
  return { prompts, params };
}

/** What a client sees of each request: per sample its tokens, text, reasons and logprobs. */
export function results(outs: RequestOutput[]) {
  return outs.map((o) => o.outputs.map((c) => ({ tokens: c.tokenIds, text: c.text, finish: c.finishReason, stop: c.stopReason, logprobs: c.logprobs?.map((l) => l.logprob) ?? null })));
}

export function generate(llm: LLM, w: Workload): ReturnType<typeof results> {
  return results(llm.generate(w.prompts, w.params.map((p) => new SamplingParams(p)), { useTqdm: false }));
}

/** Tokens the tiny model emits most, best first (stop token ids that really fire); closes `llm`. */
export function frequentTokens(llm: LLM): number[] {
  const outs = llm.generate(Array.from({ length: 16 }, (_, i) => [10 + i, 200 + i, 30 + 7 * i]), new SamplingParams({ temperature: 0.9, seed: 1, max_tokens: 24, ignore_eos: true }), { useTqdm: false });
  llm.close();
  const counts = new Map<number, number>();
  for (const o of outs) for (const t of o.outputs[0]!.tokenIds) counts.set(t, (counts.get(t) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([t]) => t);
}

/** use_beam_search on /v1/completions and /v1/chat/completions (vLLM's extra field): n beams, not n samples. */
import { beamSearch, BeamSearchError, candidateParams, candidatesOf, type BeamSearchSequence } from "../engine/beam-search.ts";
import type { AsyncEngine } from "../engine/async-engine.ts";
import type { SamplingParams } from "../engine/sampling-params.ts";
import { ApiError } from "./errors.ts";
import { collect, submit } from "./generation.ts";

export interface BeamSearchFields {
  n?: number | null;
  ignore_eos?: boolean | null;
  length_penalty?: number | null;
  stream?: boolean | null;
  logprobs?: unknown;
}

/**
 * Each prompt's n best beams (src/engine/beam-search.ts), every step's one-token requests going through the
 * engine like any other (a client that leaves aborts the step in flight, and with it the search). `params`
 * (the request's) gives max_tokens (default: the rest of the context) and truncate_prompt_tokens; returns
 * the prompts as searched (truncated) with the beams.
 */
export async function beamSearchFor(engine: AsyncEngine, id: string, requestPrompts: number[][], b: BeamSearchFields, params: SamplingParams, signal: AbortSignal, lora: string | null = null): Promise<{ prompts: number[][]; results: BeamSearchSequence[][] }> {
  if (params.structured_outputs) throw new ApiError(400, "use_beam_search cannot be combined with structured outputs (or a forced tool call)", "use_beam_search");
  if (b.stream) throw new ApiError(400, "use_beam_search does not stream: its beams are only known at the end", "stream");
  if (b.logprobs != null && b.logprobs !== false) throw new ApiError(400, "logprobs are not returned with use_beam_search", "logprobs");
  const prompts = requestPrompts.map((p) => params.truncatePrompt(p, engine.maxModelLen));
  const maxTokens = params.max_tokens ?? Math.max(1, engine.maxModelLen - Math.max(...prompts.map((p) => p.length)));
  let step = 0;
  const next = async (inputs: number[][], count: number) =>
    (await collect(submit(engine, `${id}-beam${step++}`, inputs, candidateParams(count), signal, lora))).map(candidatesOf);
  try {
    const results = await beamSearch(prompts, { beam_width: b.n ?? 1, max_tokens: maxTokens, ignore_eos: b.ignore_eos ?? false, length_penalty: b.length_penalty ?? 1 }, next, engine.eosTokenIds, engine.maxModelLen);
    return { prompts, results };
  } catch (e) {
    if (e instanceof BeamSearchError) throw new ApiError(400, e.message, e.param);
    throw e;
  }
}

/** usage of a beam search: the prompts once, and every returned beam's tokens. */
export function beamUsage(prompts: number[][], results: BeamSearchSequence[][]) {
  const prompt = prompts.reduce((a, p) => a + p.length, 0);
  const completion = results.flat().reduce((a, s) => a + s.tokenIds.length, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

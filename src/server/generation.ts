/**
 * Shared machinery of /v1/completions and /v1/chat/completions: building SamplingParams from a body,
 * submitting one engine request per prompt, aborting them on disconnect, and SSE framing.
 */
import type { AsyncEngine } from "../engine/async-engine.ts";
import type { RequestOutput } from "../engine/request.ts";
import { SamplingParams, type SamplingParamsInit } from "../engine/sampling-params.ts";
import type { SamplingDefaults } from "../engine/generation-config.ts";
import { ApiError, toErrorResponse } from "./errors.ts";

export interface SamplingFields {
  temperature?: number | null; top_p?: number | null; top_k?: number | null; min_p?: number | null; n?: number | null;
  seed?: number | null; stop?: string | string[] | null; stop_token_ids?: number[] | null; presence_penalty?: number | null;
  frequency_penalty?: number | null; repetition_penalty?: number | null; logit_bias?: Record<string, number> | null;
  ignore_eos?: boolean | null; min_tokens?: number | null; include_stop_str_in_output?: boolean | null; skip_special_tokens?: boolean | null;
  allowed_token_ids?: number[] | null; bad_words?: string[] | null; truncate_prompt_tokens?: number | null; cache_salt?: string | null;
  priority?: number | null;
}

/**
 * SamplingParams from OpenAI/vLLM fields; a field left out (or null) takes the model's generation-config
 * default (`defaults`, --generation-config), else vLLM's. Throws SamplingParamsError naming the field.
 */
export function samplingParamsFrom(b: SamplingFields, maxTokens: number | null, logprobs: number | null, promptLogprobs: number | null = null, defaults: SamplingDefaults = {}): SamplingParams {
  // max_new_tokens (defaults.max_tokens) applies per prompt, where its length is known: see submit().
  const { max_tokens: _, ...fieldDefaults } = defaults;
  const init: SamplingParamsInit = { ...fieldDefaults, max_tokens: maxTokens, logprobs, prompt_logprobs: promptLogprobs };
  for (const k of ["temperature", "top_p", "top_k", "min_p", "n", "seed", "stop", "stop_token_ids", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "ignore_eos", "min_tokens", "include_stop_str_in_output", "skip_special_tokens", "allowed_token_ids", "bad_words",
    "truncate_prompt_tokens", "cache_salt", "priority"] as const) {
    const v = b[k];
    if (v !== null && v !== undefined) (init as Record<string, unknown>)[k] = v;
  }
  return new SamplingParams(init);
}

export interface Submitted {
  streams: AsyncIterableIterator<RequestOutput>[];
  requestIds: string[];
  abortAll: () => void;
}

/**
 * Submits one request per prompt; all-or-nothing (a bad prompt aborts the ones already queued). A request
 * that leaves max_tokens open gets the generation config's max_new_tokens where it fits the context (as vLLM).
 */
export function submit(engine: AsyncEngine, baseId: string, prompts: number[][], params: SamplingParams, signal: AbortSignal, lora: string | null = null): Submitted {
  const streams: AsyncIterableIterator<RequestOutput>[] = [];
  const requestIds: string[] = [];
  const abortAll = () => { for (const id of requestIds) engine.abort(id); };
  try {
    prompts.forEach((ids, i) => {
      const id = `${baseId}-${i}`;
      const p = params.clone();
      const defaultMax = engine.samplingDefaults.max_tokens;
      if (p.max_tokens === null && defaultMax !== undefined) p.max_tokens = Math.min(defaultMax, Math.max(1, engine.maxModelLen - ids.length));
      streams.push(engine.generate(id, ids, p, lora));
      requestIds.push(id);
    });
  } catch (e) {
    abortAll();
    throw e;
  }
  if (signal.aborted) abortAll();
  else signal.addEventListener("abort", abortAll, { once: true });
  return { streams, requestIds, abortAll };
}

/** Drains the streams; returns each request's final output (in prompt order). */
export async function collect(s: Submitted): Promise<RequestOutput[]> {
  return Promise.all(s.streams.map(async (st) => {
    let last: RequestOutput | null = null;
    for await (const o of st) last = o;
    if (!last) throw new ApiError(500, "request ended without output");
    return last;
  }));
}

const encoder = new TextEncoder();

/**
 * An SSE response. `produce` writes events through `send` (with an `event:` name when given); errors after
 * the 200 become a data: {"error"} event; the stream ends with [DONE] unless `done` is false (the Responses
 * API has none). Cancelling (client gone) calls `onCancel`.
 */
export function sseResponse(produce: (send: (obj: unknown, event?: string) => void) => Promise<void>, onCancel: () => void, opts: { done?: boolean } = {}): Response {
  let closed = false;
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      const send = (obj: unknown, event?: string) => {
        if (!closed) controller.enqueue(encoder.encode(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(obj)}\n\n`));
      };
      try {
        await produce(send);
      } catch (e) {
        send(toErrorResponse(e).body, opts.done === false ? "error" : undefined);
      }
      if (!closed && opts.done !== false) controller.enqueue(encoder.encode("data: [DONE]\n\n"));
      if (!closed) {
        closed = true;
        controller.close();
      }
    },
    cancel() {
      closed = true;
      onCancel();
    },
  });
  return new Response(body, { headers: { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" } });
}

/** Runs all streams concurrently, calling `each` for every output as it arrives. */
export async function forEachOutput(s: Submitted, each: (promptIndex: number, o: RequestOutput) => void): Promise<void> {
  await Promise.all(s.streams.map(async (st, i) => {
    for await (const o of st) each(i, o);
  }));
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

/** Token counts of finished (or latest) outputs; with `details`, the prompt tokens served from the prefix cache. */
export function usageOf(outputs: RequestOutput[], details = false): Usage {
  let prompt = 0, completion = 0, cached = 0;
  for (const o of outputs) {
    prompt += o.numPromptTokens;
    cached += o.numCachedTokens;
    for (const c of o.outputs) completion += c.numTokens;
  }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, ...(details ? { prompt_tokens_details: { cached_tokens: cached } } : {}) };
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

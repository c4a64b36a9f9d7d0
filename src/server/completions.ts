/** POST /v1/completions */
import type { Context } from "hono";
import type { TokenLogprobs } from "../engine/sampling-batch.ts";
import type { CompletionOutput, RequestOutput } from "../engine/request.ts";
import { MAX_LOGPROBS } from "../engine/sampling-params.ts";
import { ApiError } from "./errors.ts";
import { structuredOutputsFrom } from "./structured-request.ts";
import { collect, forEachOutput, nowSeconds, samplingParamsFrom, sseResponse, submit, usageOf } from "./generation.ts";
import { CompletionRequest } from "./protocol.ts";
import { promptList } from "../engine/llm-engine.ts";
import { beamSearchFor, beamUsage } from "./beam.ts";
import type { ServerState } from "./state.ts";

interface CompletionLogprobs { text_offset: number[]; token_logprobs: (number | null)[]; tokens: string[]; top_logprobs: (Record<string, number> | null)[] }

/**
 * OpenAI's completion logprobs for tokens `ids` starting at character `offset` (null entries: unscored, e.g. the
 * first prompt token); `name` shows a token (its text, or "token_id:N"), text_offset counts the tokens' text.
 */
function completionLogprobs(state: ServerState, lps: (TokenLogprobs | null)[], ids: number[], offset: number, name: (id: number) => string): CompletionLogprobs {
  const out: CompletionLogprobs = { text_offset: [], token_logprobs: [], tokens: [], top_logprobs: [] };
  let pos = offset;
  lps.forEach((lp, i) => {
    const token = name(ids[i]!);
    out.tokens.push(token);
    out.token_logprobs.push(lp ? lp.logprob : null);
    out.text_offset.push(pos);
    pos += state.tokenText(ids[i]!).length;
    if (!lp) { out.top_logprobs.push(null); return; }
    const top: Record<string, number> = { [token]: lp.logprob };
    for (const t of lp.top) top[name(t.tokenId)] = t.logprob;
    out.top_logprobs.push(top);
  });
  return out;
}

function joinLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return { text_offset: [...a.text_offset, ...b.text_offset], token_logprobs: [...a.token_logprobs, ...b.token_logprobs], tokens: [...a.tokens, ...b.tokens], top_logprobs: [...a.top_logprobs, ...b.top_logprobs] };
}

/** vLLM's prompt_logprobs: [null, {token_id: {logprob, rank, decoded_token}}, …] with the prompt token and its top-N. */
function vllmPromptLogprobs(state: ServerState, ids: number[], lps: (TokenLogprobs | null)[]) {
  return lps.map((lp, i) => {
    if (!lp) return null;
    const entry: Record<string, { logprob: number; rank: number | null; decoded_token: string }> = {};
    lp.top.forEach((t, r) => { entry[t.tokenId] = { logprob: t.logprob, rank: r + 1, decoded_token: state.tokenText(t.tokenId) }; });
    entry[ids[i]!] = { logprob: lp.logprob, rank: lp.rank ?? null, decoded_token: state.tokenText(ids[i]!) };
    return entry;
  });
}

export async function completions(c: Context, state: ServerState): Promise<Response> {
  const body = CompletionRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  if (body.suffix) throw new ApiError(400, "suffix is not supported", "suffix");
  if (body.stream_options && !body.stream) throw new ApiError(400, "stream_options is only allowed with stream=true", "stream_options");
  if (body.logprobs != null && (body.logprobs < 0 || body.logprobs > MAX_LOGPROBS)) throw new ApiError(400, `logprobs must be in [0, ${MAX_LOGPROBS}], got ${body.logprobs}`, "logprobs");
  const engine = state.engine();
  const tok = engine.tokenizer;
  const addSpecial = body.add_special_tokens ?? true;
  const p = body.prompt;
  const raw = promptList(p);
  if (raw.length === 0) throw new ApiError(400, "prompt must not be empty", "prompt");
  const prompts = raw.map((x) => {
    const ids = typeof x === "string" ? tok.encode(x, addSpecial) : x;
    if (ids.length === 0) throw new ApiError(400, "prompt must not be empty", "prompt");
    return ids;
  });
  // echo with logprobs scores the prompt too (as lm-eval-harness expects); prompt_logprobs is vLLM's field.
  const echoLogprobs = body.echo === true && body.logprobs != null;
  const promptLogprobs = body.prompt_logprobs ?? (echoLogprobs ? body.logprobs! : null);
  const params = samplingParamsFrom(body, body.max_tokens === undefined ? 16 : body.max_tokens, body.logprobs ?? null, promptLogprobs, engine.samplingDefaults);
  params.structured_outputs = await structuredOutputsFrom(body);
  const tokenName = state.logprobToken(body.return_tokens_as_token_ids);
  /** A choice's logprobs object, preceded by the echoed prompt's when asked. */
  const logprobsFor = (r: RequestOutput, i: number, lps: TokenLogprobs[], ids: number[], offset: number, withPrompt: boolean) => {
    const own = completionLogprobs(state, lps, ids, offset, tokenName);
    return withPrompt && echoLogprobs && r.promptLogprobs ? joinLogprobs(completionLogprobs(state, r.promptLogprobs, prompts[i]!, 0, tokenName), own) : own;
  };
  const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  const created = nowSeconds();
  const model = state.servedModelName;
  const echoText = (i: number) => (body.echo ? (typeof raw[i] === "string" ? (raw[i] as string) : tok.decode(prompts[i]!, false)) : "");
  const n = params.n;
  state.logRequest(id, raw, params.toInit());
  if (body.use_beam_search) {
    const { prompts: searched, results } = await beamSearchFor(engine, id, prompts, body, params, c.req.raw.signal, lora);
    const choices = results.flatMap((beams, i) => beams.map((s, k) => ({
      index: i * n + k, text: echoText(i) + tok.decode(s.tokenIds, body.skip_special_tokens ?? true), logprobs: null, finish_reason: s.finishReason, stop_reason: null,
    })));
    return c.json({ id, object: "text_completion", created, model, choices, usage: beamUsage(searched, results) });
  }
  const submitted = submit(engine, id, prompts, params, c.req.raw.signal, lora);
  const wantLp = body.logprobs != null;

  if (!body.stream) {
    const finals = await collect(submitted);
    const choices = finals.flatMap((r, i) => r.outputs.map((o) => {
      const prefix = echoText(i);
      return {
        index: i * n + o.index,
        text: prefix + o.text,
        logprobs: wantLp ? logprobsFor(r, i, o.logprobs!, o.tokenIds, prefix.length, true) : null,
        finish_reason: o.finishReason,
        stop_reason: o.stopReason,
        ...(body.prompt_logprobs != null ? { prompt_logprobs: vllmPromptLogprobs(state, prompts[i]!, r.promptLogprobs ?? []) } : {}),
        ...(body.return_token_ids ? { prompt_token_ids: r.promptTokenIds, token_ids: o.tokenIds } : {}),
      };
    }));
    return c.json({ id, object: "text_completion", created, model, choices, usage: usageOf(finals, state.promptTokensDetails) });
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const continuous = body.stream_options?.continuous_usage_stats ?? false;
  return sseResponse(async (send) => {
    const latest: (RequestOutput | null)[] = prompts.map(() => null);
    const textOffset = new Map<number, number>();
    const finishedSent = new Set<number>();
    await forEachOutput(submitted, (i, r) => {
      latest[i] = r;
      for (const o of r.outputs) {
        const index = i * n + o.index;
        const first = !textOffset.has(index);
        if (finishedSent.has(index) || !hasNews(o, first && body.echo === true)) continue;
        if (o.finishReason !== null) finishedSent.add(index);
        const prefix = first ? echoText(i) : "";
        const off = textOffset.get(index) ?? 0;
        const text = prefix + o.textDelta;
        textOffset.set(index, off + text.length);
        send({
          id, object: "text_completion", created, model,
          choices: [{
            index, text,
            logprobs: wantLp ? logprobsFor(r, i, o.logprobsDelta!, o.tokenIdsDelta, off + prefix.length, first) : null,
            ...(first && body.prompt_logprobs != null ? { prompt_logprobs: vllmPromptLogprobs(state, prompts[i]!, r.promptLogprobs ?? []) } : {}),
            finish_reason: o.finishReason, stop_reason: o.stopReason,
            ...(body.return_token_ids ? { token_ids: o.tokenIdsDelta, ...(first ? { prompt_token_ids: r.promptTokenIds } : {}) } : {}),
          }],
          ...(continuous ? { usage: usageOf(latest.filter((x): x is RequestOutput => x !== null), state.promptTokensDetails) } : {}),
        });
      }
    });
    if (includeUsage) send({ id, object: "text_completion", created, model, choices: [], usage: usageOf(latest as RequestOutput[], state.promptTokensDetails) });
  }, submitted.abortAll);
}

/** A choice gets a chunk when it has new text or tokens, or just finished (callers skip finished ones). */
export function hasNews(o: CompletionOutput, force: boolean): boolean {
  return force || o.textDelta.length > 0 || o.tokenIdsDelta.length > 0 || o.finishReason !== null;
}

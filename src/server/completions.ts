/** POST /v1/completions */
import type { Context } from "hono";
import type { TokenLogprobs } from "../engine/sampling-batch.ts";
import type { CompletionOutput, RequestOutput } from "../engine/request.ts";
import { MAX_LOGPROBS } from "../engine/sampling-params.ts";
import { ApiError } from "./errors.ts";
import { collect, forEachOutput, nowSeconds, samplingParamsFrom, sseResponse, submit, usageOf } from "./generation.ts";
import { CompletionRequest } from "./protocol.ts";
import type { ServerState } from "./state.ts";

interface CompletionLogprobs { text_offset: number[]; token_logprobs: number[]; tokens: string[]; top_logprobs: Record<string, number>[] }

function completionLogprobs(state: ServerState, lps: TokenLogprobs[], ids: number[], offset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { text_offset: [], token_logprobs: [], tokens: [], top_logprobs: [] };
  let pos = offset;
  lps.forEach((lp, i) => {
    const token = state.tokenText(ids[i]!);
    out.tokens.push(token);
    out.token_logprobs.push(lp.logprob);
    out.text_offset.push(pos);
    pos += token.length;
    const top: Record<string, number> = { [token]: lp.logprob };
    for (const t of lp.top) top[state.tokenText(t.tokenId)] = t.logprob;
    out.top_logprobs.push(top);
  });
  return out;
}

export async function completions(c: Context, state: ServerState): Promise<Response> {
  const body = CompletionRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  if (body.suffix) throw new ApiError(400, "suffix is not supported", "suffix");
  if (body.stream_options && !body.stream) throw new ApiError(400, "stream_options is only allowed with stream=true", "stream_options");
  if (body.logprobs != null && (body.logprobs < 0 || body.logprobs > MAX_LOGPROBS)) throw new ApiError(400, `logprobs must be in [0, ${MAX_LOGPROBS}], got ${body.logprobs}`, "logprobs");
  const engine = state.engine();
  const tok = engine.tokenizer;
  const addSpecial = body.add_special_tokens ?? true;
  const p = body.prompt;
  const raw: (string | number[])[] = typeof p === "string" ? [p] : p.length === 0 ? [] : typeof p[0] === "number" ? [p as number[]] : (p as (string | number[])[]);
  if (raw.length === 0) throw new ApiError(400, "prompt must not be empty", "prompt");
  const prompts = raw.map((x) => {
    const ids = typeof x === "string" ? tok.encode(x, addSpecial) : x;
    if (ids.length === 0) throw new ApiError(400, "prompt must not be empty", "prompt");
    return ids;
  });
  const params = samplingParamsFrom(body, body.max_tokens === undefined ? 16 : body.max_tokens, body.logprobs ?? null);
  const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  const created = nowSeconds();
  const model = state.servedModelName;
  const echoText = (i: number) => (body.echo ? (typeof raw[i] === "string" ? (raw[i] as string) : tok.decode(prompts[i]!, false)) : "");
  const n = params.n;
  state.logRequest(id, raw, params.toInit());
  const submitted = submit(engine, id, prompts, params, c.req.raw.signal);
  const wantLp = body.logprobs != null;

  if (!body.stream) {
    const finals = await collect(submitted);
    const choices = finals.flatMap((r, i) => r.outputs.map((o) => {
      const prefix = echoText(i);
      return {
        index: i * n + o.index,
        text: prefix + o.text,
        logprobs: wantLp ? completionLogprobs(state, o.logprobs!, o.tokenIds, prefix.length) : null,
        finish_reason: o.finishReason,
        stop_reason: o.stopReason,
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
            logprobs: wantLp ? completionLogprobs(state, o.logprobsDelta!, o.tokenIdsDelta, off + prefix.length) : null,
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

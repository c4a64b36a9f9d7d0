/** POST /v1/chat/completions */
import type { Context } from "hono";
import type { RequestOutput } from "../engine/request.ts";
import type { TokenLogprobs } from "../engine/sampling-batch.ts";
import { MAX_LOGPROBS } from "../engine/sampling-params.ts";
import type { ChatMessage } from "../tokenizer/tokenizer.ts";
import { ApiError } from "./errors.ts";
import { hasNews } from "./completions.ts";
import { collect, forEachOutput, nowSeconds, samplingParamsFrom, sseResponse, submit, usageOf } from "./generation.ts";
import { ChatCompletionRequest } from "./protocol.ts";
import { ReasoningSplitter, splitReasoning } from "./reasoning.ts";
import type { ServerState } from "./state.ts";

type Body = ChatCompletionRequest;

/** Flattens content parts to text; only text parts are supported. */
export function toTemplateMessages(messages: Body["messages"]): ChatMessage[] {
  return messages.map((m, i) => {
    let content: string | null;
    if (Array.isArray(m.content)) {
      content = m.content.map((part, j) => {
        if (part.type !== "text" || typeof part.text !== "string") throw new ApiError(400, `content part type '${part.type}' is not supported (text only)`, `messages.${i}.content.${j}`);
        return part.text;
      }).join("\n");
    } else content = m.content ?? null;
    return { ...m, content: content ?? "" };
  });
}

/** Renders the chat template and tokenizes the result. */
export function chatPromptIds(state: ServerState, body: Pick<Body, "messages" | "add_generation_prompt" | "continue_final_message" | "chat_template_kwargs" | "tools" | "add_special_tokens">): { text: string; ids: number[] } {
  const tok = state.engine().tokenizer;
  const cont = body.continue_final_message ?? false;
  const addGen = body.add_generation_prompt ?? !cont;
  if (cont && addGen) throw new ApiError(400, "continue_final_message and add_generation_prompt cannot both be true", "continue_final_message");
  const messages = toTemplateMessages(body.messages);
  let text: string;
  try {
    text = tok.applyChatTemplate(messages, { addGenerationPrompt: addGen, kwargs: body.chat_template_kwargs ?? {}, tools: body.tools ?? undefined });
  } catch (e) {
    throw new ApiError(400, `chat template error: ${(e as Error).message}`, "messages");
  }
  if (cont) {
    const last = messages[messages.length - 1]!.content ?? "";
    const at = text.lastIndexOf(last);
    if (last.length > 0 && at >= 0) text = text.slice(0, at + last.length);
  }
  return { text, ids: tok.encode(text, body.add_special_tokens ?? false) };
}

function chatLogprobs(state: ServerState, lps: TokenLogprobs[], ids: number[]) {
  const enc = new TextEncoder();
  const entry = (id: number, logprob: number) => {
    const token = state.tokenText(id);
    return { token, logprob, bytes: Array.from(enc.encode(token)) };
  };
  return { content: lps.map((lp, i) => ({ ...entry(ids[i]!, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.tokenId, t.logprob)) })) };
}

export async function chatCompletions(c: Context, state: ServerState): Promise<Response> {
  const body = ChatCompletionRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  if (body.stream_options && !body.stream) throw new ApiError(400, "stream_options is only allowed with stream=true", "stream_options");
  if (body.top_logprobs != null && !body.logprobs) throw new ApiError(400, "top_logprobs requires logprobs=true", "top_logprobs");
  if (body.top_logprobs != null && (body.top_logprobs < 0 || body.top_logprobs > MAX_LOGPROBS)) throw new ApiError(400, `top_logprobs must be in [0, ${MAX_LOGPROBS}], got ${body.top_logprobs}`, "top_logprobs");
  if (body.response_format && body.response_format.type !== "text") throw new ApiError(400, `response_format type '${body.response_format.type}' is not supported`, "response_format");
  const tc = body.tool_choice;
  if (tc !== undefined && tc !== null && tc !== "none" && tc !== "auto") throw new ApiError(400, "tool_choice other than 'none' or 'auto' is not supported", "tool_choice");
  const { text, ids } = chatPromptIds(state, body);
  if (ids.length === 0) throw new ApiError(400, "the rendered prompt is empty", "messages");
  const engine = state.engine();
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? null;
  const params = samplingParamsFrom(body, maxTokens, body.logprobs ? body.top_logprobs ?? 0 : null);
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  const created = nowSeconds();
  const model = state.servedModelName;
  state.logRequest(id, [text], params.toInit());
  const submitted = submit(engine, id, [ids], params, c.req.raw.signal);

  if (!body.stream) {
    const finals = await collect(submitted);
    const parser = state.reasoningParser;
    const choices = finals[0]!.outputs.map((o) => ({
      index: o.index,
      message: parser
        ? { role: "assistant", ...((r) => ({ reasoning_content: r.reasoning, content: r.content }))(splitReasoning(o.text, parser)), tool_calls: [] }
        : { role: "assistant", content: o.text, tool_calls: [] },
      logprobs: body.logprobs ? chatLogprobs(state, o.logprobs!, o.tokenIds) : null,
      finish_reason: o.finishReason,
      stop_reason: o.stopReason,
    }));
    return c.json({ id, object: "chat.completion", created, model, choices, usage: usageOf(finals) });
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const continuous = body.stream_options?.continuous_usage_stats ?? false;
  return sseResponse(async (send) => {
    let latest: RequestOutput | null = null;
    const started = new Set<number>(), finishedSent = new Set<number>();
    const parser = state.reasoningParser;
    const splitters = parser ? Array.from({ length: params.n }, () => new ReasoningSplitter(parser)) : null;
    const chunk = (choice: object) => send({ id, object: "chat.completion.chunk", created, model, choices: [choice], ...(continuous && latest ? { usage: usageOf([latest]) } : {}) });
    for (let i = 0; i < params.n; i++) {
      started.add(i);
      chunk({ index: i, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null });
    }
    await forEachOutput(submitted, (_, r) => {
      latest = r;
      for (const o of r.outputs) {
        if (finishedSent.has(o.index) || !hasNews(o, false)) continue;
        if (o.finishReason !== null) finishedSent.add(o.index);
        let delta: Record<string, string> = o.textDelta.length > 0 || o.finishReason === null ? { content: o.textDelta } : {};
        if (splitters) {
          const sp = splitters[o.index]!;
          const d = sp.push(o.textDelta);
          if (o.finishReason !== null) { const f = sp.flush(); d.reasoning += f.reasoning; d.content += f.content; }
          delta = {};
          if (d.reasoning) delta.reasoning_content = d.reasoning;
          if (d.content || (!d.reasoning && o.finishReason === null)) delta.content = d.content;
        }
        chunk({
          index: o.index,
          delta,
          logprobs: body.logprobs ? chatLogprobs(state, o.logprobsDelta!, o.tokenIdsDelta) : null,
          finish_reason: o.finishReason,
          stop_reason: o.stopReason,
        });
      }
    });
    if (includeUsage && latest) send({ id, object: "chat.completion.chunk", created, model, choices: [], usage: usageOf([latest]) });
  }, submitted.abortAll);
}

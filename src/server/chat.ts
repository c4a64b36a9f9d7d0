/** POST /v1/chat/completions */
import type { Context } from "hono";
import type { RequestOutput } from "../engine/request.ts";
import type { TokenLogprobs } from "../engine/sampling-batch.ts";
import { MAX_LOGPROBS, type SamplingParams } from "../engine/sampling-params.ts";
import type { ChatMessage } from "../tokenizer/tokenizer.ts";
import { ApiError } from "./errors.ts";
import { structuredOutputsFrom } from "./structured-request.ts";
import { hasNews } from "./completions.ts";
import { collect, forEachOutput, nowSeconds, samplingParamsFrom, sseResponse, submit, usageOf } from "./generation.ts";
import { beamSearchFor, beamUsage } from "./beam.ts";
import { ChatCompletionRequest } from "./protocol.ts";
import { reasoningBoundary, reasoningNeedsSpecialTokens, reasoningSplitter, type AnswerParserName, type ReasoningStream } from "./reasoning.ts";
import { forcedToolChoice, forcedToolSchema, ForcedToolCallStream, parserNeedsSpecialTokens, toolCallIds, toolCallStream, type ForcedToolChoice, type ToolCall, type ToolCallStream } from "./tool-calls.ts";

/** One choice's text on its way out: reasoning split off (--reasoning-parser), tool calls parsed (--tool-call-parser). */
export class ChoiceShaper {
  constructor(private readonly reasoning: ReasoningStream | null, private readonly tools: ToolCallStream | ForcedToolCallStream | null) {}

  push(delta: string, final: boolean): { reasoning: string; content: string; toolCalls: ToolCall[] } {
    const d = this.reasoning ? this.reasoning.push(delta) : { reasoning: "", content: delta };
    if (final && this.reasoning) {
      const f = this.reasoning.flush();
      d.reasoning += f.reasoning;
      d.content += f.content;
    }
    let content = this.tools ? this.tools.push(d.content) : d.content;
    let toolCalls: ToolCall[] = [];
    if (final && this.tools) {
      const end = this.tools.finish();
      content += end.content;
      toolCalls = end.toolCalls;
    }
    return { reasoning: d.reasoning, content, toolCalls };
  }
}
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
    // An earlier answer's reasoning (vLLM's reasoning_content) is also `thinking`, the name GPT-OSS's template reads.
    const thinking = m.reasoning_content != null && (m as Record<string, unknown>).thinking === undefined ? { thinking: m.reasoning_content } : {};
    return { ...m, ...thinking, content: content ?? "" };
  });
}

/** Renders the chat template and tokenizes the result. */
export function chatPromptIds(state: ServerState, body: Pick<Body, "messages" | "add_generation_prompt" | "continue_final_message" | "chat_template_kwargs" | "tools" | "add_special_tokens"> & { reasoning_effort?: Body["reasoning_effort"] }): { text: string; ids: number[] } {
  const tok = state.engine().tokenizer;
  const cont = body.continue_final_message ?? false;
  const addGen = body.add_generation_prompt ?? !cont;
  if (cont && addGen) throw new ApiError(400, "continue_final_message and add_generation_prompt cannot both be true", "continue_final_message");
  const messages = toTemplateMessages(body.messages);
  let text: string;
  try {
    // reasoning_effort reaches the template as a variable (chat_template_kwargs may set it too, and win).
    const kwargs = { ...(body.reasoning_effort ? { reasoning_effort: body.reasoning_effort } : {}), ...(body.chat_template_kwargs ?? {}) };
    text = tok.applyChatTemplate(messages, { addGenerationPrompt: addGen, kwargs, tools: body.tools ?? undefined });
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

function chatLogprobs(name: (id: number) => string, lps: TokenLogprobs[], ids: number[]) {
  const enc = new TextEncoder();
  const entry = (id: number, logprob: number) => {
    const token = name(id);
    return { token, logprob, bytes: Array.from(enc.encode(token)) };
  };
  return { content: lps.map((lp, i) => ({ ...entry(ids[i]!, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.tokenId, t.logprob)) })) };
}

/** A chat request made ready for the engine: its prompt, sampling parameters, and how its outputs are shaped. */
export interface PreparedChat {
  text: string;
  ids: number[];
  params: SamplingParams;
  /** A fresh splitter of one choice's text into reasoning, content and tool calls. */
  shaper: () => ChoiceShaper;
  /** The finish reason of a choice that called tools (a named tool choice: "stop", as OpenAI). */
  calledReason: "stop" | "tool_calls";
  /** The reasoning parser its answers are read with (null: none; a chat answer then carries no reasoning_content). */
  reasoningParser: AnswerParserName | null;
}

/**
 * What chat completions and responses share: the chat template, tool choice (auto needs a parser; required or a
 * named function is forced by a JSON schema), structured outputs, and reasoning (a constraint applies after it).
 */
export async function prepareChat(state: ServerState, body: ChatCompletionRequest): Promise<PreparedChat> {
  const tc = body.tool_choice;
  let forced: ForcedToolChoice | null;
  try {
    forced = forcedToolChoice(body.tools, tc);
  } catch (e) {
    throw new ApiError(400, (e as Error).message, "tool_choice");
  }
  if (tc === "auto" && state.toolCallParser === null) throw new ApiError(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', "tool_choice");
  const { text, ids } = chatPromptIds(state, body);
  if (ids.length === 0) throw new ApiError(400, "the rendered prompt is empty", "messages");
  const engine = state.engine();
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? null;
  const params = samplingParamsFrom(body, maxTokens, body.logprobs ? body.top_logprobs ?? 0 : null, null, engine.samplingDefaults);
  params.structured_outputs = await structuredOutputsFrom(body);
  if (forced) {
    // As vLLM: the call is forced by a JSON schema (the function's arguments, or a list of calls).
    if (params.structured_outputs) throw new ApiError(400, "tool_choice 'required' or a named function cannot be combined with another structured-output constraint", "tool_choice");
    // Compact JSON: arguments are read by programs, and a weak model cannot pad them with whitespace until max_tokens.
    params.structured_outputs = await structuredOutputsFrom({ structured_outputs: { json: forcedToolSchema(body.tools!, forced), disable_any_whitespace: true } }, "tools");
  }
  const reasoningParser = state.reasoningParserFor(engine.modelConfig, body.chat_template_kwargs);
  // Magistral's [THINK] / [/THINK] and Harmony's channel markers are special tokens: the text keeps them so that the block can be split off.
  if (reasoningParser && reasoningNeedsSpecialTokens(reasoningParser)) params.skip_special_tokens = false;
  if (params.structured_outputs && reasoningParser) {
    // The answer after the reasoning block is constrained; the block itself is free (vLLM's behaviour).
    const boundary = reasoningBoundary(reasoningParser, (t) => engine.tokenizer.encode(t, false));
    if (boundary) params.structured_outputs.after_reasoning = boundary;
  }
  const parseTools = state.toolCallParser !== null && (body.tools?.length ?? 0) > 0 && tc !== "none";
  // Mistral's [TOOL_CALLS] / [ARGS] are special tokens: the text keeps them (vLLM turns skip_special_tokens off too).
  if (parseTools && parserNeedsSpecialTokens(state.toolCallParser!)) params.skip_special_tokens = false;
  // A forced call is the whole answer (after any reasoning).
  const shaper = () => new ChoiceShaper(reasoningParser ? reasoningSplitter(reasoningParser) : null,
    forced ? new ForcedToolCallStream(forced, toolCallIds(state.toolCallParser)) : parseTools ? toolCallStream(state.toolCallParser!, body.tools ?? []) : null);
  return { text, ids, params, shaper, calledReason: forced && forced !== "required" ? "stop" : "tool_calls", reasoningParser };
}

export async function chatCompletions(c: Context, state: ServerState): Promise<Response> {
  const body = ChatCompletionRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  if (body.stream_options && !body.stream) throw new ApiError(400, "stream_options is only allowed with stream=true", "stream_options");
  if (body.top_logprobs != null && !body.logprobs) throw new ApiError(400, "top_logprobs requires logprobs=true", "top_logprobs");
  if (body.top_logprobs != null && (body.top_logprobs < 0 || body.top_logprobs > MAX_LOGPROBS)) throw new ApiError(400, `top_logprobs must be in [0, ${MAX_LOGPROBS}], got ${body.top_logprobs}`, "top_logprobs");
  const { text, ids, params, shaper, calledReason, reasoningParser } = await prepareChat(state, body);
  const engine = state.engine();
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  const created = nowSeconds();
  const model = state.servedModelName;
  state.logRequest(id, [text], params.toInit());
  if (body.use_beam_search) {
    const { prompts, results } = await beamSearchFor(engine, id, [ids], body, params, c.req.raw.signal, lora);
    const choices = results[0]!.map((s, index) => ({
      index, message: { role: "assistant", content: engine.tokenizer.decode(s.tokenIds, body.skip_special_tokens ?? true), tool_calls: [] }, logprobs: null, finish_reason: s.finishReason, stop_reason: null,
    }));
    return c.json({ id, object: "chat.completion", created, model, choices, usage: beamUsage(prompts, results) });
  }
  const submitted = submit(engine, id, [ids], params, c.req.raw.signal, lora);
  const tokenName = state.logprobToken(body.return_tokens_as_token_ids);
  // include_reasoning false: the reasoning is parsed off as usual, then left out.
  const showReasoning = body.include_reasoning !== false;

  if (!body.stream) {
    const finals = await collect(submitted);
    const choices = finals[0]!.outputs.map((o) => {
      const r = shaper().push(o.text, true);
      const called = r.toolCalls.length > 0;
      return {
        index: o.index,
        message: {
          role: "assistant",
          ...(reasoningParser ? { reasoning_content: showReasoning && r.reasoning.length > 0 ? r.reasoning : null } : {}),
          content: called ? (r.content.trim() || null) : r.content,
          tool_calls: r.toolCalls,
        },
        logprobs: body.logprobs ? chatLogprobs(tokenName, o.logprobs!, o.tokenIds) : null,
        finish_reason: called && o.finishReason !== "length" ? calledReason : o.finishReason,
        stop_reason: o.stopReason,
        ...(body.return_token_ids ? { token_ids: o.tokenIds } : {}),
      };
    });
    return c.json({ id, object: "chat.completion", created, model, choices, usage: usageOf(finals, state.promptTokensDetails), ...(body.return_token_ids ? { prompt_token_ids: finals[0]!.promptTokenIds } : {}) });
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const continuous = body.stream_options?.continuous_usage_stats ?? false;
  return sseResponse(async (send) => {
    let latest: RequestOutput | null = null;
    const finishedSent = new Set<number>();
    const shapers = Array.from({ length: params.n }, shaper);
    const chunk = (choice: object, extra: object = {}) => send({ id, object: "chat.completion.chunk", created, model, choices: [choice], ...(continuous && latest ? { usage: usageOf([latest], state.promptTokensDetails) } : {}), ...extra });
    // return_token_ids: the prompt's ids come with the first chunk, each choice's new ids with its chunks.
    for (let i = 0; i < params.n; i++)
      chunk({ index: i, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }, i === 0 && body.return_token_ids ? { prompt_token_ids: params.truncatePrompt(ids, engine.maxModelLen) } : {});
    await forEachOutput(submitted, (_, r) => {
      latest = r;
      for (const o of r.outputs) {
        if (finishedSent.has(o.index) || !hasNews(o, false)) continue;
        const final = o.finishReason !== null;
        if (final) finishedSent.add(o.index);
        const d = shapers[o.index]!.push(o.textDelta, final);
        // Reasoning left out (include_reasoning false): a delta that was only reasoning sends nothing (unless its tokens are asked for).
        if (!showReasoning && d.reasoning && !d.content && d.toolCalls.length === 0 && !final && !body.logprobs && !body.return_token_ids) continue;
        const delta: Record<string, unknown> = {};
        const reasoning = showReasoning ? d.reasoning : "";
        if (reasoning) delta.reasoning_content = reasoning;
        if (d.content || (!reasoning && !final)) delta.content = d.content;
        const logprobs = body.logprobs ? chatLogprobs(tokenName, o.logprobsDelta!, o.tokenIdsDelta) : null;
        const tokenIds = body.return_token_ids ? { token_ids: o.tokenIdsDelta } : {};
        if (d.toolCalls.length > 0) {
          // The ids go with the text chunk before the calls, or with the calls when there is none.
          const hasText = Object.keys(delta).length > 0;
          if (hasText) chunk({ index: o.index, delta, logprobs, finish_reason: null, ...tokenIds });
          chunk({ index: o.index, delta: { tool_calls: d.toolCalls.map((t, k) => ({ index: k, ...t })) }, logprobs: null, finish_reason: o.finishReason === "length" ? "length" : calledReason, stop_reason: o.stopReason, ...(hasText ? {} : tokenIds) });
          continue;
        }
        chunk({ index: o.index, delta, logprobs, finish_reason: o.finishReason, stop_reason: o.stopReason, ...tokenIds });
      }
    });
    if (includeUsage && latest) send({ id, object: "chat.completion.chunk", created, model, choices: [], usage: usageOf([latest], state.promptTokensDetails) });
  }, submitted.abortAll);
}

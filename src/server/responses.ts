/**
 * POST /v1/responses — OpenAI's Responses API (as vLLM serves it): `input` (a string or message and
 * function-call items) and `instructions` become a chat, answered by the chat machinery (template, tools,
 * structured outputs via `text.format`, reasoning), and returned as output items — `reasoning`, `message`
 * (output_text) and `function_call` — whole or as the API's stream of typed events. With
 * --responses-store-size N, responses are kept (src/server/response-store.ts): `previous_response_id`
 * continues one's conversation, GET /v1/responses/{id} returns one. `background` is refused.
 */
import type { Context } from "hono";
import { z } from "zod";
import type { RequestOutput } from "../engine/request.ts";
import type { ToolCall } from "./tool-calls.ts";
import { prepareChat, type ChoiceShaper } from "./chat.ts";
import { ApiError } from "./errors.ts";
import { collect, forEachOutput, nowSeconds, sseResponse, submit } from "./generation.ts";
import { ChatCompletionRequest, ResponsesRequest } from "./protocol.ts";
import type { ServerState } from "./state.ts";

type Body = z.infer<typeof ResponsesRequest>;
type ChatBody = z.infer<typeof ChatCompletionRequest>;
type ChatMessage = ChatBody["messages"][number];

const hexId = (prefix: string) => `${prefix}_${crypto.randomUUID().replaceAll("-", "")}`;

/** The chat request a Responses request stands for. */
export function toChatRequest(b: Body): ChatBody {
  if (b.background) throw new ApiError(400, "background responses are not supported", "background");
  const messages: ChatMessage[] = [];
  if (b.instructions) messages.push({ role: "system", content: b.instructions });
  if (typeof b.input === "string") messages.push({ role: "user", content: b.input });
  else {
    b.input.forEach((item, i) => {
      const at = `input.${i}`;
      const type = item.type ?? "message";
      if (type === "message") {
        const role = item.role === "developer" ? "system" : item.role;
        if (!role || !["system", "user", "assistant"].includes(role)) throw new ApiError(400, `message role '${item.role}' is not supported (system, developer, user, assistant)`, `${at}.role`);
        messages.push({ role, content: textOf(item.content, at) });
      } else if (type === "function_call") {
        if (!item.call_id || !item.name) throw new ApiError(400, "a function_call item needs call_id and name", at);
        const call = { id: item.call_id, type: "function", function: { name: item.name, arguments: item.arguments ?? "{}" } };
        const last = messages.at(-1);
        // Calls one after another belong to one assistant turn.
        if (last?.role === "assistant" && Array.isArray(last.tool_calls) && !last.content) last.tool_calls.push(call);
        else messages.push({ role: "assistant", content: "", tool_calls: [call] });
      } else if (type === "function_call_output") {
        if (!item.call_id) throw new ApiError(400, "a function_call_output item needs call_id", at);
        messages.push({ role: "tool", tool_call_id: item.call_id, content: typeof item.output === "string" ? item.output : JSON.stringify(item.output ?? "") });
      } else if (type !== "reasoning") throw new ApiError(400, `input item type '${type}' is not supported (message, function_call, function_call_output, reasoning)`, `${at}.type`);
    });
  }
  if (messages.length === 0) throw new ApiError(400, "input must not be empty", "input");
  const tools = b.tools?.map((t, i) => {
    if (t.type !== "function" || typeof t.name !== "string") throw new ApiError(400, `tool type '${t.type}' is not supported (function tools only)`, `tools.${i}`);
    return { type: "function", function: { name: t.name, description: t.description ?? undefined, parameters: t.parameters ?? undefined } };
  });
  const tc = b.tool_choice as { type?: string; name?: string } | string | undefined | null;
  const toolChoice = typeof tc === "object" && tc !== null && tc.type === "function" ? { type: "function", function: { name: tc.name } } : tc;
  const f = b.text?.format;
  const responseFormat = !f || f.type === "text" ? undefined
    : f.type === "json_schema" ? { type: "json_schema", json_schema: { name: f.name, schema: f.schema, strict: f.strict } }
    : { ...f };
  const { input: _, instructions: _i, max_output_tokens, text: _t, tools: _tools, tool_choice: _tc, previous_response_id: _p, store: _s, background: _b,
    metadata: _m, parallel_tool_calls: _ptc, reasoning: _r, truncation: _tr, include: _inc, ...sampling } = b;
  if (sampling.n != null && sampling.n !== 1) throw new ApiError(400, "n must be 1 for responses", "n");
  return ChatCompletionRequest.parse({ ...sampling, messages, max_tokens: max_output_tokens, tools, tool_choice: toolChoice, response_format: responseFormat, reasoning_effort: b.reasoning?.effort });
}

type ItemContent = Extract<Body["input"], unknown[]>[number]["content"];

function textOf(content: ItemContent, at: string): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  return content.map((part, j) => {
    if ((part.type !== "input_text" && part.type !== "output_text" && part.type !== "text") || typeof part.text !== "string")
      throw new ApiError(400, `content part type '${part.type}' is not supported (input_text, output_text)`, `${at}.content.${j}`);
    return part.text;
  }).join("\n");
}

/** One response's output items as they grow: reasoning, then the message, then function calls. */
export class OutputItems {
  readonly items: Record<string, unknown>[] = [];
  private reasoning: { item: Record<string, unknown>; text: string } | null = null;
  private message: { item: Record<string, unknown>; text: string } | null = null;

  constructor(private readonly emit: (event: Record<string, unknown>) => void) {}

  /** All reasoning text so far. */
  get reasoningText(): string {
    return this.reasoning?.text ?? "";
  }

  addReasoning(delta: string): void {
    if (!delta) return;
    if (!this.reasoning) {
      const item = { id: hexId("rs"), type: "reasoning", summary: [], content: [] as unknown[], status: "in_progress" };
      this.reasoning = { item, text: "" };
      this.open(item);
      this.emit({ type: "response.content_part.added", item_id: item.id, output_index: this.indexOf(item), content_index: 0, part: { type: "reasoning_text", text: "" } });
    }
    this.reasoning.text += delta;
    this.emit({ type: "response.reasoning_text.delta", item_id: this.reasoning.item.id, output_index: this.indexOf(this.reasoning.item), content_index: 0, delta });
  }

  addText(delta: string): void {
    if (!delta) return;
    this.closeReasoning();
    const m = this.openMessage();
    m.text += delta;
    this.emit({ type: "response.output_text.delta", item_id: m.item.id, output_index: this.indexOf(m.item), content_index: 0, delta, logprobs: [] });
  }

  /** Ends the output: the message (always one when no function was called), then the calls. */
  finish(calls: ToolCall[]): void {
    this.closeReasoning();
    if (this.message || calls.length === 0) {
      const m = this.openMessage();
      const part = { type: "output_text", text: m.text, annotations: [], logprobs: [] };
      const at = { item_id: m.item.id, output_index: this.indexOf(m.item), content_index: 0 };
      this.emit({ type: "response.output_text.done", ...at, text: m.text, logprobs: [] });
      this.emit({ type: "response.content_part.done", ...at, part });
      Object.assign(m.item, { status: "completed", content: [part] });
      this.emit({ type: "response.output_item.done", output_index: at.output_index, item: m.item });
    }
    for (const call of calls) {
      const item = { id: hexId("fc"), type: "function_call", call_id: call.id, name: call.function.name, arguments: "", status: "in_progress" };
      this.open(item);
      const at = { item_id: item.id, output_index: this.indexOf(item) };
      this.emit({ type: "response.function_call_arguments.delta", ...at, delta: call.function.arguments });
      this.emit({ type: "response.function_call_arguments.done", ...at, arguments: call.function.arguments });
      Object.assign(item, { arguments: call.function.arguments, status: "completed" });
      this.emit({ type: "response.output_item.done", output_index: at.output_index, item });
    }
  }

  private open(item: Record<string, unknown>): void {
    this.items.push(item);
    this.emit({ type: "response.output_item.added", output_index: this.items.length - 1, item: { ...item } });
  }

  private openMessage(): { item: Record<string, unknown>; text: string } {
    if (!this.message) {
      const item = { id: hexId("msg"), type: "message", role: "assistant", status: "in_progress", content: [] as unknown[] };
      this.message = { item, text: "" };
      this.open(item);
      this.emit({ type: "response.content_part.added", item_id: item.id, output_index: this.indexOf(item), content_index: 0, part: { type: "output_text", text: "", annotations: [], logprobs: [] } });
    }
    return this.message;
  }

  private closeReasoning(): void {
    const r = this.reasoning;
    if (!r || r.item.status === "completed") return;
    const part = { type: "reasoning_text", text: r.text };
    const at = { item_id: r.item.id, output_index: this.indexOf(r.item), content_index: 0 };
    this.emit({ type: "response.reasoning_text.done", ...at, text: r.text });
    this.emit({ type: "response.content_part.done", ...at, part });
    Object.assign(r.item, { status: "completed", content: [part] });
    this.emit({ type: "response.output_item.done", output_index: at.output_index, item: r.item });
  }

  private indexOf(item: Record<string, unknown>): number {
    return this.items.indexOf(item);
  }
}

/** The conversation a request continues: the stored items of its previous_response_id (none without one). */
function previousItems(state: ServerState, id: string | null | undefined): unknown[] {
  if (!id) return [];
  const store = state.responseStore;
  if (!store) throw new ApiError(400, "previous_response_id needs stored responses: this server keeps none (start it with --responses-store-size N), so send the whole conversation as input", "previous_response_id");
  const prev = store.get(id);
  if (!prev) throw new ApiError(404, `Response with id '${id}' not found (never stored here, deleted, or dropped: the store keeps the ${store.capacity} most recently used)`, "previous_response_id");
  return prev.items;
}

export async function responses(c: Context, state: ServerState): Promise<Response> {
  const body = ResponsesRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  // This request's own input items, after those of the conversation it continues.
  const ownInput: unknown[] = typeof body.input === "string" ? [{ type: "message", role: "user", content: body.input }] : body.input;
  const conversation = [...previousItems(state, body.previous_response_id), ...ownInput];
  const chat = toChatRequest({ ...body, input: conversation as Body["input"] });
  const storing = state.responseStore !== null && body.store !== false;
  /** Keeps a finished response and its conversation (with its output items) for later requests. */
  const keep = (obj: Record<string, unknown>, items: Record<string, unknown>[]) => {
    if (storing) state.responseStore!.put(id, { response: obj, items: [...conversation, ...items] });
    return obj;
  };
  const { text, ids, params, shaper } = await prepareChat(state, chat);
  const engine = state.engine();
  const id = hexId("resp");
  const createdAt = nowSeconds();
  state.logRequest(id, [text], params.toInit());
  const submitted = submit(engine, id, [ids], params, c.req.raw.signal, lora);

  /** The Response object, in its state so far. */
  const response = (status: "in_progress" | "completed" | "incomplete", items: Record<string, unknown>[], last: RequestOutput | null, reasoningText: string) => {
    const done = last?.outputs[0];
    const outputTokens = done?.numTokens ?? 0;
    return {
      id, object: "response", created_at: createdAt, status, error: null,
      incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
      instructions: body.instructions ?? null, max_output_tokens: body.max_output_tokens ?? null, model: state.servedModelName,
      output: items, parallel_tool_calls: body.parallel_tool_calls ?? true, previous_response_id: body.previous_response_id ?? null,
      reasoning: { effort: body.reasoning?.effort ?? null, summary: null }, store: storing, temperature: params.temperature,
      text: { format: body.text?.format ?? { type: "text" } }, tool_choice: body.tool_choice ?? "auto", tools: body.tools ?? [],
      top_p: params.top_p, truncation: "disabled", metadata: body.metadata ?? {}, user: body.user ?? null,
      usage: status === "in_progress" || !last ? null : {
        input_tokens: last.numPromptTokens, input_tokens_details: { cached_tokens: last.numCachedTokens },
        output_tokens: outputTokens,
        output_tokens_details: { reasoning_tokens: reasoningText ? Math.min(outputTokens, engine.tokenizer.encode(reasoningText, false).length) : 0 },
        total_tokens: last.numPromptTokens + outputTokens,
      },
    };
  };
  const statusOf = (o: RequestOutput) => (o.outputs[0]!.finishReason === "length" ? "incomplete" : "completed") as "completed" | "incomplete";

  if (!body.stream) {
    const [final] = await collect(submitted);
    const items = new OutputItems(() => {});
    const r = shaper().push(final!.outputs[0]!.text, true);
    items.addReasoning(r.reasoning);
    items.addText(r.content);
    items.finish(r.toolCalls);
    return c.json(keep(response(statusOf(final!), items.items, final!, items.reasoningText), items.items));
  }

  return sseResponse(async (send) => {
    let seq = 0;
    const emit = (event: Record<string, unknown>) => send({ ...event, sequence_number: seq++ }, event.type as string);
    const items = new OutputItems(emit);
    const shape: ChoiceShaper = shaper();
    emit({ type: "response.created", response: response("in_progress", [], null, "") });
    emit({ type: "response.in_progress", response: response("in_progress", [], null, "") });
    let last: RequestOutput | null = null;
    await forEachOutput(submitted, (_, o) => {
      last = o;
      const c0 = o.outputs[0]!;
      const final = c0.finishReason !== null;
      const d = shape.push(c0.textDelta, final);
      items.addReasoning(d.reasoning);
      items.addText(d.content);
      if (final) items.finish(d.toolCalls);
    });
    const end = last as RequestOutput | null;
    if (end) emit({ type: end.outputs[0]!.finishReason === "length" ? "response.incomplete" : "response.completed", response: keep(response(statusOf(end), items.items, end, items.reasoningText), items.items) });
  }, submitted.abortAll, { done: false });
}

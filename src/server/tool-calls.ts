/**
 * `--enable-auto-tool-choice --tool-call-parser hermes`: tool calls written as
 * <tool_call>{"name": …, "arguments": {…}}</tool_call> (Qwen2.5/Qwen3, Hermes) become OpenAI `tool_calls`.
 * Streaming holds back text from the first <tool_call> on and emits each call whole at the end.
 */
export const TOOL_CALL_PARSERS = ["hermes"] as const;
export type ToolCallParserName = (typeof TOOL_CALL_PARSERS)[number];

const OPEN = "<tool_call>", CLOSE = "</tool_call>";

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

const callId = () => `chatcmpl-tool-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;

/** Extracts the tool calls; `content` is the text before the first call (null when empty). */
export function parseToolCalls(text: string): { content: string | null; toolCalls: ToolCall[] } {
  const first = text.indexOf(OPEN);
  if (first < 0) return { content: text, toolCalls: [] };
  const toolCalls: ToolCall[] = [];
  const re = /<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g;
  for (const m of text.slice(first).matchAll(re)) {
    try {
      const call = JSON.parse(m[1]!) as { name?: unknown; arguments?: unknown };
      if (typeof call.name !== "string") continue;
      const args = call.arguments === undefined ? {} : call.arguments;
      toolCalls.push({ id: callId(), type: "function", function: { name: call.name, arguments: typeof args === "string" ? args : JSON.stringify(args) } });
    } catch {
      // not a well-formed call: it stays text
    }
  }
  if (toolCalls.length === 0) return { content: text, toolCalls: [] };
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, toolCalls };
}

/** Streaming: content passes through until a <tool_call> may be starting; the rest waits for the end. */
export class ToolCallStream {
  private held = "";
  private inCalls = false;

  push(delta: string): string {
    if (this.inCalls) { this.held += delta; return ""; }
    const text = this.held + delta;
    const at = text.indexOf(OPEN);
    if (at >= 0) {
      this.inCalls = true;
      this.held = text.slice(at);
      return text.slice(0, at);
    }
    let keep = 0;
    for (let k = Math.min(OPEN.length - 1, text.length); k > 0; k--) if (OPEN.startsWith(text.slice(text.length - k))) { keep = k; break; }
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** At the end: the parsed calls, or the held text as content when it held no valid call. */
  finish(): { content: string; toolCalls: ToolCall[] } {
    const held = this.held;
    this.held = "";
    if (!this.inCalls) return { content: held, toolCalls: [] };
    const parsed = parseToolCalls(held);
    return parsed.toolCalls.length > 0 ? { content: "", toolCalls: parsed.toolCalls } : { content: held, toolCalls: [] };
  }
}

/** tool_choice "required" or a named function: the call(s) are forced by a JSON schema (vLLM's way). */
export type ForcedToolChoice = { name: string } | "required";

interface ToolSpec { type?: string; function?: { name?: string; parameters?: unknown } }

/**
 * The forced choice of a chat request's tool_choice, checked against its tools; null for none/auto/absent.
 * Throws a message naming the problem (the caller maps it to a 400 on tool_choice).
 */
export function forcedToolChoice(tools: readonly unknown[] | null | undefined, choice: unknown): ForcedToolChoice | null {
  if (choice === undefined || choice === null || choice === "none" || choice === "auto") return null;
  const names = (tools ?? []).map((t) => (t as ToolSpec)?.function?.name).filter((n): n is string => typeof n === "string");
  if (names.length === 0) throw new Error(`tool_choice ${JSON.stringify(choice)} needs tools`);
  if (choice === "required") return "required";
  const named = choice as { type?: unknown; function?: { name?: unknown } };
  if (typeof choice !== "object" || named.type !== "function" || typeof named.function?.name !== "string")
    throw new Error(`tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}`);
  if (!names.includes(named.function.name)) throw new Error(`tool_choice names function '${named.function.name}', which is not among the tools (${names.join(", ")})`);
  return { name: named.function.name };
}

/** The JSON schema of the forced output: the named function's arguments, or a non-empty list of calls. */
export function forcedToolSchema(tools: readonly unknown[], choice: ForcedToolChoice): Record<string, unknown> {
  const params = (t: ToolSpec) => (t.function?.parameters && typeof t.function.parameters === "object" ? t.function.parameters : { type: "object" }) as Record<string, unknown>;
  const specs = tools as ToolSpec[];
  if (choice !== "required") return params(specs.find((t) => t.function?.name === choice.name)!);
  return {
    type: "array", minItems: 1,
    items: {
      anyOf: specs.filter((t) => typeof t.function?.name === "string").map((t) => ({
        type: "object", properties: { name: { enum: [t.function!.name] }, parameters: params(t) }, required: ["name", "parameters"],
      })),
    },
  };
}

/** Streaming (and whole) output under a forced tool choice: all of it is the call(s), given at the end. */
export class ForcedToolCallStream {
  private text = "";

  constructor(private readonly choice: ForcedToolChoice) {}

  push(delta: string): string {
    this.text += delta;
    return "";
  }

  /** The calls; when the output was cut short (max_tokens) and is no call, it is returned as content. */
  finish(): { content: string; toolCalls: ToolCall[] } {
    const text = this.text;
    this.text = "";
    if (this.choice !== "required") return { content: "", toolCalls: [{ id: callId(), type: "function", function: { name: this.choice.name, arguments: text } }] };
    try {
      const calls = JSON.parse(text) as { name: string; parameters: unknown }[];
      return { content: "", toolCalls: calls.map((c) => ({ id: callId(), type: "function", function: { name: c.name, arguments: JSON.stringify(c.parameters) } })) };
    } catch {
      return { content: text, toolCalls: [] };
    }
  }
}

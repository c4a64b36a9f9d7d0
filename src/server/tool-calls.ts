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

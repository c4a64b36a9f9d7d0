/**
 * `--enable-auto-tool-choice --tool-call-parser NAME`: tool calls in the model's own format become OpenAI
 * `tool_calls`. `hermes` (Qwen2.5/Qwen3, Hermes): <tool_call>{"name": …, "arguments": {…}}</tool_call>
 * blocks after any text. `llama3_json` (Llama 3.1/3.2): an answer that is JSON calls
 * {"name": …, "parameters": {…}}, `;`-separated, optionally after <|python_tag|>. `pythonic` (Llama 3.2,
 * Llama 4): an answer that is a Python list of calls, [f(a=1), g()] (src/server/pythonic-calls.ts).
 * `qwen3_coder` (Qwen3-Coder): <tool_call><function=f><parameter=a>…</parameter></function></tool_call>
 * blocks after any text, their values typed by the request's tool schemas (src/server/qwen3-coder-calls.ts).
 * `mistral` (Mistral 7B v0.3, Nemo, Small): after any text, [TOOL_CALLS] then a JSON list of
 * {"name", "arguments"} — or, from Mistral's v11 tokenizers on, [TOOL_CALLS]name[ARGS]{…} per call; its
 * special tokens are kept in the text (skip_special_tokens off, as vLLM), and call ids are the 9 letters and
 * digits Mistral's chat templates insist on. `phi4_mini_json` (Phi-4-mini): functools[{"name", "arguments"}, …]
 * after any text. `granite` (IBM Granite 3.x): an answer that is a JSON list of {"name", "arguments"}, after
 * <|tool_call|> (3.0) or <tool_call> (3.1 on) or not. `glm45` (GLM-4.5 / 4.6 / 4.7): after any text,
 * <tool_call>name then <arg_key>k</arg_key><arg_value>v</arg_value> pairs (src/server/glm45-calls.ts). `openai`
 * (GPT-OSS): Harmony's commentary messages to=functions.NAME, their bodies the arguments (src/server/harmony.ts;
 * special tokens kept). `deepseek_v3` / `deepseek_v31` (DeepSeek-V3 / R1, V3.1 on): <｜tool▁calls▁begin｜> blocks of
 * <｜tool▁call▁begin｜>…<｜tool▁call▁end｜> calls after any text (src/server/deepseek-calls.ts; special tokens kept).
 * Streaming holds back text from where a call may begin and emits each call whole at the end.
 */
import { parsePythonicCalls } from "./pythonic-calls.ts";
import { parseQwen3CoderCalls, QWEN3_CODER_OPENERS } from "./qwen3-coder-calls.ts";
import { GLM45_OPEN, parseGlm45Calls } from "./glm45-calls.ts";
import { HARMONY_CALL_OPENERS, parseHarmonyCalls } from "./harmony.ts";
import { DEEPSEEK_CALL_BEGIN, DEEPSEEK_CALLS_BEGIN, parseDeepseekCalls } from "./deepseek-calls.ts";
import { partialTagLength } from "./text-tags.ts";

export const TOOL_CALL_PARSERS = ["hermes", "llama3_json", "pythonic", "qwen3_coder", "mistral", "phi4_mini_json", "granite", "glm45", "openai", "deepseek_v3", "deepseek_v31"] as const;
export type ToolCallParserName = (typeof TOOL_CALL_PARSERS)[number];

const OPEN = "<tool_call>", CLOSE = "</tool_call>";

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

const callId = () => `chatcmpl-tool-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;

type Parsed = { content: string | null; toolCalls: ToolCall[] };

/** Extracts the tool calls; `content` is the text before the first call (null when empty). `tools`: the request's (for typed arguments). */
export function parseToolCalls(text: string, parser: ToolCallParserName = "hermes", tools: readonly unknown[] = []): Parsed {
  return parserFor(parser, tools)(text);
}

function parserFor(parser: ToolCallParserName, tools: readonly unknown[]): (text: string) => Parsed {
  switch (parser) {
    case "hermes": return parseHermes;
    case "llama3_json": return parseLlama3Json;
    case "pythonic": return parsePythonic;
    case "qwen3_coder": return (text) => {
      const { content, calls } = parseQwen3CoderCalls(text, tools);
      return { content, toolCalls: calls.map((c) => toolCall(c.name, c.args)) };
    };
    case "mistral": return parseMistral;
    case "phi4_mini_json": return parsePhi4Mini;
    case "granite": return parseGranite;
    case "glm45": return (text) => {
      const { content, calls } = parseGlm45Calls(text, tools);
      return { content, toolCalls: calls.map((c) => toolCall(c.name, c.args)) };
    };
    case "openai": return (text) => {
      const { content, calls } = parseHarmonyCalls(text);
      return { content, toolCalls: calls.map((c) => toolCall(c.name, c.args)) };
    };
    case "deepseek_v3": case "deepseek_v31": return (text) => {
      const { content, calls } = parseDeepseekCalls(text);
      return { content, toolCalls: calls.map((c) => toolCall(c.name, c.args)) };
    };
  }
}

/** How a parser's calls are named: Mistral's 9 letters and digits, else vLLM's chatcmpl-tool-… ids. */
export function toolCallIds(parser: ToolCallParserName | null): () => string {
  return parser === "mistral" ? mistralCallId : callId;
}

/** Whether a parser reads special tokens (its markers are some): the request's skip_special_tokens is turned off. */
export function parserNeedsSpecialTokens(parser: ToolCallParserName): boolean {
  return parser === "mistral" || parser === "openai" || parser === "deepseek_v3" || parser === "deepseek_v31";
}

function toolCall(name: string, args: unknown): ToolCall {
  return { id: callId(), type: "function", function: { name, arguments: typeof args === "string" ? args : JSON.stringify(args ?? {}) } };
}

function parseHermes(text: string): Parsed {
  const first = text.indexOf(OPEN);
  if (first < 0) return { content: text, toolCalls: [] };
  const toolCalls: ToolCall[] = [];
  const re = /<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g;
  for (const m of text.slice(first).matchAll(re)) {
    try {
      const call = JSON.parse(m[1]!) as { name?: unknown; arguments?: unknown };
      if (typeof call.name !== "string") continue;
      toolCalls.push(toolCall(call.name, call.arguments));
    } catch {
      // not a well-formed call: it stays text
    }
  }
  if (toolCalls.length === 0) return { content: text, toolCalls: [] };
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, toolCalls };
}

const TOOL_CALLS = "[TOOL_CALLS]", ARGS = "[ARGS]", CALL_ID = "[CALL_ID]";
const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/** Mistral's chat templates refuse tool call ids other than 9 letters and digits. */
const mistralCallId = () => Array.from(crypto.getRandomValues(new Uint8Array(9)), (b) => ALNUM[b % ALNUM.length]).join("");

/**
 * mistral: text, then [TOOL_CALLS] and the calls — a JSON list (or one object) of {"name", "arguments"}, or
 * (v11 tokenizers) name[ARGS]{arguments} after each [TOOL_CALLS] ([CALL_ID]id may sit before [ARGS]). A call
 * that does not parse leaves the whole answer as content.
 */
function parseMistral(text: string): Parsed {
  const first = text.indexOf(TOOL_CALLS);
  const plain = { content: text, toolCalls: [] };
  if (first < 0) return plain;
  const toolCalls: ToolCall[] = [];
  const call = (name: unknown, args: unknown) => {
    if (typeof name !== "string" || name.length === 0) throw new Error("no name");
    toolCalls.push({ ...toolCall(name, args), id: mistralCallId() });
  };
  try {
    for (const part of text.slice(first + TOOL_CALLS.length).split(TOOL_CALLS)) {
      const body = part.trim();
      const args = body.indexOf(ARGS);
      if (args >= 0) {
        const head = body.slice(0, args), json = body.slice(args + ARGS.length).trim();
        const end = objectEnd(json, 0);
        if (!json.startsWith("{") || end < 0 || json.slice(end).trim() !== "") throw new Error("bad arguments");
        call((head.includes(CALL_ID) ? head.slice(0, head.indexOf(CALL_ID)) : head).trim(), JSON.parse(json.slice(0, end)));
      } else {
        const parsed = JSON.parse(body) as unknown;
        for (const c of Array.isArray(parsed) ? parsed : [parsed]) call((c as { name?: unknown })?.name, (c as { arguments?: unknown }).arguments);
      }
    }
  } catch {
    return plain;
  }
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, toolCalls };
}

const PYTHON_TAG = "<|python_tag|>";

/** The end of the JSON object or array starting at text[start] ("{" or "["), or -1 when it does not close. */
function objectEnd(text: string, start: number): number {
  let depth = 0, inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "{" || ch === "[") depth++;
    else if ((ch === "}" || ch === "]") && --depth === 0) return i + 1;
  }
  return -1;
}

/** Calls from a JSON list of {"name", "arguments"} (one object too); null when it is not one. */
function jsonCallList(json: string): ToolCall[] | null {
  let parsed: unknown;
  try { parsed = JSON.parse(json); } catch { return null; }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  if (list.length === 0 || !list.every((c) => typeof (c as { name?: unknown })?.name === "string")) return null;
  return list.map((c) => toolCall((c as { name: string }).name, (c as { arguments?: unknown; parameters?: unknown }).arguments ?? (c as { parameters?: unknown }).parameters));
}

const FUNCTOOLS = "functools[";

/** phi4_mini_json: text, then functools[…] — a JSON list of calls. */
function parsePhi4Mini(text: string): Parsed {
  const first = text.indexOf(FUNCTOOLS), plain = { content: text, toolCalls: [] };
  if (first < 0) return plain;
  const open = first + FUNCTOOLS.length - 1, end = objectEnd(text, open);
  const toolCalls = end < 0 ? null : jsonCallList(text.slice(open, end));
  if (!toolCalls) return plain;
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, toolCalls };
}

const GRANITE_TAGS = ["<|tool_call|>", "<tool_call>"];

/** granite: the whole answer is a JSON list of calls, after Granite 3.0's <|tool_call|> or 3.1's <tool_call> (or neither). */
function parseGranite(text: string): Parsed {
  let body = text.trim();
  const tag = GRANITE_TAGS.find((t) => body.startsWith(t));
  if (tag) body = body.slice(tag.length).trim();
  const toolCalls = body.startsWith("[") && objectEnd(body, 0) === body.length ? jsonCallList(body) : null;
  return toolCalls ? { content: null, toolCalls } : { content: text, toolCalls: [] };
}

/**
 * llama3_json: the whole answer (after whitespace and an optional <|python_tag|>) is one or more JSON calls
 * separated by ";". Anything else — text first, a malformed call — leaves the answer as content (vLLM's rule).
 */
function parseLlama3Json(text: string): Parsed {
  const plain = { content: text, toolCalls: [] };
  let rest = text.trimStart();
  if (rest.startsWith(PYTHON_TAG)) rest = rest.slice(PYTHON_TAG.length).trimStart();
  if (!rest.startsWith("{")) return plain;
  const toolCalls: ToolCall[] = [];
  let pos = 0;
  while (pos < rest.length) {
    const end = objectEnd(rest, pos);
    if (end < 0) return plain;
    let call: { name?: unknown; parameters?: unknown; arguments?: unknown };
    try { call = JSON.parse(rest.slice(pos, end)); } catch { return plain; }
    if (typeof call.name !== "string") return plain;
    toolCalls.push(toolCall(call.name, call.parameters ?? call.arguments));
    const next = rest.slice(end).match(/^\s*(;\s*)?/)![0].length + end;
    if (next < rest.length && rest[next] !== "{") return plain; // text after the calls: not a tool-call answer
    pos = next;
  }
  return { content: null, toolCalls };
}

const PYTHON_START = "<|python_start|>", PYTHON_END = "<|python_end|>";

/** pythonic: the whole answer (Llama 4 may wrap it in <|python_start|> … <|python_end|>) is a list of calls. */
function parsePythonic(text: string): Parsed {
  let body = text.trim();
  if (body.startsWith(PYTHON_START)) body = body.slice(PYTHON_START.length);
  if (body.endsWith(PYTHON_END)) body = body.slice(0, -PYTHON_END.length);
  const calls = parsePythonicCalls(body);
  if (!calls || calls.length === 0) return { content: text, toolCalls: [] };
  return { content: null, toolCalls: calls.map((c) => toolCall(c.name, c.args)) };
}

/** Streaming (any format): content passes through until a call may be starting; the rest waits for the end. */
export interface ToolCallStream {
  push(delta: string): string;
  /** At the end: the parsed calls, or the held text as content when it held no valid call. */
  finish(): { content: string; toolCalls: ToolCall[] };
}

export function toolCallStream(parser: ToolCallParserName, tools: readonly unknown[] = []): ToolCallStream {
  const parse = parserFor(parser, tools);
  switch (parser) {
    case "hermes": return new TaggedCallsStream([OPEN], parse);
    case "qwen3_coder": return new TaggedCallsStream(QWEN3_CODER_OPENERS, parse);
    case "llama3_json": return new WholeAnswerStream(["{", PYTHON_TAG], parse);
    case "pythonic": return new WholeAnswerStream(["[", PYTHON_START], parse);
    case "mistral": return new TaggedCallsStream([TOOL_CALLS], parse);
    case "phi4_mini_json": return new TaggedCallsStream([FUNCTOOLS], parse);
    case "granite": return new WholeAnswerStream(["[", ...GRANITE_TAGS], parse);
    case "glm45": return new TaggedCallsStream([GLM45_OPEN], parse);
    case "openai": return new TaggedCallsStream(HARMONY_CALL_OPENERS, parse);
    case "deepseek_v3": case "deepseek_v31": return new TaggedCallsStream([DEEPSEEK_CALLS_BEGIN, DEEPSEEK_CALL_BEGIN], parse);
  }
}

/**
 * Formats whose calls follow any text (hermes, qwen3_coder, mistral, phi4_mini_json): text flows until one of `openers` appears (the
 * end of the text that could still become one is held back); from there on everything is held and parsed at the end.
 */
class TaggedCallsStream implements ToolCallStream {
  private held = "";
  private inCalls = false;

  constructor(private readonly openers: string[], private readonly parse: (text: string) => Parsed) {}

  push(delta: string): string {
    if (this.inCalls) { this.held += delta; return ""; }
    const text = this.held + delta;
    const found = this.openers.map((o) => text.indexOf(o)).filter((i) => i >= 0);
    if (found.length > 0) {
      const at = Math.min(...found);
      this.inCalls = true;
      this.held = text.slice(at);
      return text.slice(0, at);
    }
    const keep = partialTagLength(text, this.openers);
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  finish(): { content: string; toolCalls: ToolCall[] } {
    const held = this.held;
    this.held = "";
    if (!this.inCalls) return { content: held, toolCalls: [] };
    const parsed = this.parse(held);
    return parsed.toolCalls.length > 0 ? { content: "", toolCalls: parsed.toolCalls } : { content: held, toolCalls: [] };
  }
}

/**
 * Formats where calls are the whole answer (llama3_json, pythonic, granite): an answer whose first non-blank text is one
 * of `openers` is held whole and parsed at the end; any other flows from its first character.
 */
class WholeAnswerStream implements ToolCallStream {
  private held = "";
  private mode: "undecided" | "calls" | "text" = "undecided";

  constructor(private readonly openers: string[], private readonly parse: (text: string) => Parsed) {}

  push(delta: string): string {
    if (this.mode === "text") return delta;
    this.held += delta;
    if (this.mode === "calls") return "";
    const start = this.held.trimStart();
    if (start === "" || this.openers.some((o) => o.startsWith(start))) return "";
    if (this.openers.some((o) => start.startsWith(o))) { this.mode = "calls"; return ""; }
    this.mode = "text";
    const out = this.held;
    this.held = "";
    return out;
  }

  finish(): { content: string; toolCalls: ToolCall[] } {
    const held = this.held;
    this.held = "";
    if (this.mode !== "calls") return { content: held, toolCalls: [] };
    const parsed = this.parse(held);
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

  constructor(private readonly choice: ForcedToolChoice, private readonly newId: () => string = callId) {}

  push(delta: string): string {
    this.text += delta;
    return "";
  }

  /** The calls; when the output was cut short (max_tokens) and is no call, it is returned as content. */
  finish(): { content: string; toolCalls: ToolCall[] } {
    const text = this.text;
    this.text = "";
    if (this.choice !== "required") return { content: "", toolCalls: [{ id: this.newId(), type: "function", function: { name: this.choice.name, arguments: text } }] };
    try {
      const calls = JSON.parse(text) as { name: string; parameters: unknown }[];
      return { content: "", toolCalls: calls.map((c) => ({ id: this.newId(), type: "function", function: { name: c.name, arguments: JSON.stringify(c.parameters) } })) };
    } catch {
      return { content: text, toolCalls: [] };
    }
  }
}

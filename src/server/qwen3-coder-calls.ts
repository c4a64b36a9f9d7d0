/**
 * Tool calls in Qwen3-Coder's XML-like format (vLLM's `qwen3_coder` parser):
 *
 *   <tool_call>
 *   <function=get_weather>
 *   <parameter=city>
 *   Paris
 *   </parameter>
 *   </function>
 *   </tool_call>
 *
 * A parameter's value is raw text (one newline trimmed at each end), typed by the request's tool schema as
 * vLLM does: strings stay text; integers and numbers, booleans, and null ("null") are converted; objects
 * and arrays are read as JSON, else as a Python literal; a value that does not convert, or a parameter the
 * schema does not name, stays text.
 */
import { parsePythonLiteral } from "./pythonic-calls.ts";

/** One call: its name and its arguments (typed as above). */
export interface XmlCall {
  name: string;
  args: Record<string, unknown>;
}

interface ToolSpec { function?: { name?: string; parameters?: { properties?: Record<string, { type?: unknown }> } } }

/** Where a call may begin: the wrapper, or a bare <function=…> (the model sometimes drops the wrapper). */
export const QWEN3_CODER_OPENERS = ["<tool_call>", "<function="];

/**
 * The calls in `text` and the text before the first (null when blank). Blocks that do not close, or name no
 * function, are not calls; with none, the whole text is content.
 */
export function parseQwen3CoderCalls(text: string, tools: readonly unknown[] = []): { content: string | null; calls: XmlCall[] } {
  const starts = QWEN3_CODER_OPENERS.map((o) => text.indexOf(o)).filter((i) => i >= 0);
  if (starts.length === 0) return { content: text, calls: [] };
  const first = Math.min(...starts);
  const calls: XmlCall[] = [];
  for (const m of text.slice(first).matchAll(/<function=([^>\n]+)>([\s\S]*?)<\/function>/g)) {
    const name = m[1]!.trim();
    if (name === "") continue;
    const types = parameterTypes(tools, name);
    const args: Record<string, unknown> = {};
    for (const p of m[2]!.matchAll(/<parameter=([^>\n]+)>([\s\S]*?)<\/parameter>/g)) {
      const key = p[1]!.trim();
      args[key] = typedValue(trimOneNewline(p[2]!), types?.[key]);
    }
    calls.push({ name, args });
  }
  if (calls.length === 0) return { content: text, calls: [] };
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, calls };
}

function trimOneNewline(v: string): string {
  if (v.startsWith("\n")) v = v.slice(1);
  if (v.endsWith("\n")) v = v.slice(0, -1);
  return v;
}

/** The JSON-schema type of each parameter of the tool called `name` (null: no such tool). */
export function parameterTypes(tools: readonly unknown[], name: string): Record<string, string> | null {
  const tool = (tools as ToolSpec[]).find((t) => t?.function?.name === name);
  if (!tool) return null;
  const out: Record<string, string> = {};
  for (const [key, spec] of Object.entries(tool.function?.parameters?.properties ?? {})) {
    const t = Array.isArray(spec?.type) ? spec.type.find((x) => typeof x === "string" && x !== "null") : spec?.type;
    if (typeof t === "string") out[key] = t.toLowerCase();
  }
  return out;
}

/** A parameter's text as the schema's type says (see the file's comment); undefined type: text. */
function typedValue(text: string, type: string | undefined): unknown {
  if (text.toLowerCase() === "null") return null;
  if (type === undefined || ["string", "str", "text", "varchar", "char", "enum"].includes(type)) return text;
  const t = text.trim();
  if (/^(int|uint|long|short|unsigned)/.test(type)) return /^[+-]?\d+$/.test(t) ? Number(t) : text;
  if (type.startsWith("num") || type.startsWith("float")) {
    const n = Number(t);
    return t !== "" && Number.isFinite(n) ? n : text;
  }
  if (["boolean", "bool", "binary"].includes(type)) return t.toLowerCase() === "true";
  const v = jsonOrPythonLiteral(t);
  return v === undefined ? text : v;
}

/** `text` read as JSON, else as a Python literal; undefined when it is neither. */
export function jsonOrPythonLiteral(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return parsePythonLiteral(text);
  }
}

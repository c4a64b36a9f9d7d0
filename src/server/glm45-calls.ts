/**
 * Tool calls in GLM-4.5's format (vLLM's `glm45` parser), after any text:
 *
 *   <tool_call>get_weather
 *   <arg_key>city</arg_key>
 *   <arg_value>Paris</arg_value>
 *   </tool_call>
 *
 * The function's name is what follows <tool_call> up to the line's end (or the first <arg_key>, as GLM-4.7 writes
 * it). A value is its trimmed text when the request's tool schema makes the argument a string; otherwise JSON, else
 * a Python literal, else the text.
 */
import { jsonOrPythonLiteral, parameterTypes, type XmlCall } from "./qwen3-coder-calls.ts";

export const GLM45_OPEN = "<tool_call>";
const CLOSE = "</tool_call>";

/** The calls in `text` and the text before the first (null when blank); blocks that do not close, or name nothing, are not calls. */
export function parseGlm45Calls(text: string, tools: readonly unknown[] = []): { content: string | null; calls: XmlCall[] } {
  const first = text.indexOf(GLM45_OPEN);
  if (first < 0) return { content: text, calls: [] };
  const calls: XmlCall[] = [];
  for (let at = first; at >= 0; at = text.indexOf(GLM45_OPEN, at + GLM45_OPEN.length)) {
    const end = text.indexOf(CLOSE, at);
    if (end < 0) break;
    const body = text.slice(at + GLM45_OPEN.length, end);
    const nameEnd = [body.indexOf("\n"), body.indexOf("<arg_key>")].filter((i) => i >= 0);
    const name = body.slice(0, nameEnd.length > 0 ? Math.min(...nameEnd) : body.length).trim();
    if (name === "") continue;
    const types = parameterTypes(tools, name);
    const args: Record<string, unknown> = {};
    for (const m of body.matchAll(/<arg_key>([\s\S]*?)<\/arg_key>\s*<arg_value>([\s\S]*?)<\/arg_value>/g)) {
      const key = m[1]!.trim(), value = m[2]!.trim();
      const parsed = types?.[key] === "string" ? undefined : jsonOrPythonLiteral(value);
      args[key] = parsed === undefined ? value : parsed;
    }
    calls.push({ name, args });
  }
  if (calls.length === 0) return { content: text, calls: [] };
  const before = text.slice(0, first).trim();
  return { content: before.length > 0 ? before : null, calls };
}

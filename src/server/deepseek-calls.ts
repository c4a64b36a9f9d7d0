/**
 * Tool calls in DeepSeek's formats, after any text, between <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜>
 * (the bars are U+FF5C, the low blocks U+2581), one <｜tool▁call▁begin｜> … <｜tool▁call▁end｜> per call:
 *
 *   deepseek_v3 (DeepSeek-V3 / R1):  function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```
 *   deepseek_v31 (DeepSeek-V3.1 on): get_weather<｜tool▁sep｜>{"city": "Paris"}
 *
 * Each reads the other's form too (a checkpoint's chat template decides which it writes). The arguments are passed
 * on as written (JSON text).
 */

export const DEEPSEEK_CALLS_BEGIN = "<｜tool▁calls▁begin｜>";
export const DEEPSEEK_CALL_BEGIN = "<｜tool▁call▁begin｜>";
const CALL_END = "<｜tool▁call▁end｜>", SEP = "<｜tool▁sep｜>";

/** The calls in `text` and the text before the first (null when blank). A call cut off (max_tokens) keeps what came. */
export function parseDeepseekCalls(text: string): { content: string | null; calls: { name: string; args: string }[] } {
  const starts = [text.indexOf(DEEPSEEK_CALLS_BEGIN), text.indexOf(DEEPSEEK_CALL_BEGIN)].filter((i) => i >= 0);
  if (starts.length === 0) return { content: text, calls: [] };
  const first = Math.min(...starts), calls: { name: string; args: string }[] = [];
  for (let at = text.indexOf(DEEPSEEK_CALL_BEGIN, first); at >= 0; at = text.indexOf(DEEPSEEK_CALL_BEGIN, at + DEEPSEEK_CALL_BEGIN.length)) {
    const end = text.indexOf(CALL_END, at), body = text.slice(at + DEEPSEEK_CALL_BEGIN.length, end < 0 ? text.length : end);
    const sep = body.indexOf(SEP);
    if (sep < 0) continue;
    const head = body.slice(0, sep).trim(), rest = body.slice(sep + SEP.length);
    // V3: the type ("function"), then the name on the line before a fenced JSON block.
    const fenced = /^([^\n]+)\n```(?:json)?\n?([\s\S]*?)\n?(?:```\s*)?$/.exec(rest);
    if (head === "function" && fenced) calls.push({ name: fenced[1]!.trim(), args: fenced[2]!.trim() });
    else if (head !== "") calls.push({ name: head, args: rest.trim() });
  }
  if (calls.length === 0) return { content: text, calls };
  const before = text.slice(0, first);
  return { content: before.trim().length > 0 ? before : null, calls };
}

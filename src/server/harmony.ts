/**
 * OpenAI's Harmony format (gpt-oss), read from answers whose special tokens are kept: an answer is a run of
 * messages, each a header, `<|message|>`, then its body, ended by `<|end|>` (another message follows after
 * `<|start|>`), `<|return|>` (the answer is done) or `<|call|>` (a tool call). The header names the channel —
 * `analysis` (reasoning), `commentary` (tool calls, addressed ` to=functions.NAME`, or preambles to the user),
 * `final` (the answer) — and may constrain the body (`<|constrain|>json`). The chat template's prompt ends with
 * `<|start|>assistant`, so the output begins inside the first message's header.
 *
 * `--reasoning-parser openai_gptoss` (the default for GPT-OSS checkpoints, as vLLM always reads their answers
 * this way): analysis bodies become reasoning, final and commentary bodies content, and each tool call is passed
 * on as content in one canonical form — `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS<|call|>`
 * — for `--tool-call-parser openai` to turn into a tool call (without that parser it stays in the content, as
 * any model's call markup does).
 */
import type { ReasoningDelta } from "./reasoning.ts";
import { partialTagLength } from "./text-tags.ts";

export const HARMONY_START = "<|start|>", HARMONY_END = "<|end|>", HARMONY_MESSAGE = "<|message|>", HARMONY_CHANNEL = "<|channel|>";
export const HARMONY_CONSTRAIN = "<|constrain|>", HARMONY_RETURN = "<|return|>", HARMONY_CALL = "<|call|>";
const TERMINATORS = [HARMONY_END, HARMONY_RETURN, HARMONY_CALL];
/** A header longer than this without `<|message|>` is not Harmony: the text is passed on as content. */
const MAX_HEADER = 512;

/** Where a message's body goes. */
type Route = { kind: "reasoning" } | { kind: "content" } | { kind: "call"; name: string; constrain: string | null };

/** A header's channel, recipient and constraint (`assistant to=functions.f<|channel|>commentary <|constrain|>json`, in either order). */
export function readHarmonyHeader(header: string): { channel: string | null; recipient: string | null; constrain: string | null } {
  const channel = /<\|channel\|>\s*([\w-]+)/.exec(header)?.[1] ?? null;
  const recipient = /(?:^|\s|>)to=([^\s<]+)/.exec(header)?.[1] ?? null;
  const constrain = /<\|constrain\|>\s*([^\s<]+)/.exec(header)?.[1] ?? (/<\|channel\|>\s*commentary\s+(json)\b/.exec(header)?.[1] ?? null);
  return { channel, recipient, constrain };
}

function route(header: string): Route {
  const h = readHarmonyHeader(header);
  if (h.recipient?.startsWith("functions.")) return { kind: "call", name: h.recipient.slice("functions.".length), constrain: h.constrain };
  return h.channel === "analysis" ? { kind: "reasoning" } : { kind: "content" };
}

/** The canonical text of a tool call message (what the openai tool parser reads). */
export function harmonyCallText(name: string, constrain: string | null, args: string, closed: boolean): string {
  return `${HARMONY_CHANNEL}commentary to=functions.${name}${constrain ? ` ${HARMONY_CONSTRAIN}${constrain}` : ""}${HARMONY_MESSAGE}${args}${closed ? HARMONY_CALL : ""}`;
}

/** Streaming reader of a Harmony answer into reasoning and content deltas (the ReasoningSplitter interface). */
export class HarmonySplitter {
  private state: "header" | "body" | "between" | "raw" = "header";
  private header = "";
  private route: Route = { kind: "content" };
  private held = "";
  /** Whether any analysis message was read. */
  hadReasoning = false;

  push(delta: string): ReasoningDelta {
    const out: ReasoningDelta = { reasoning: "", content: "" };
    let text = this.held + delta;
    this.held = "";
    while (text.length > 0) {
      if (this.state === "raw") { out.content += text; break; }
      if (this.state === "between") {
        // After <|end|>, the next message's <|start|>.
        if (text.length < HARMONY_START.length && HARMONY_START.startsWith(text)) { this.held = text; break; }
        if (text.startsWith(HARMONY_START)) text = text.slice(HARMONY_START.length);
        this.state = "header";
        this.header = "";
        continue;
      }
      if (this.state === "header") {
        const all = this.header + text, at = all.indexOf(HARMONY_MESSAGE);
        if (at < 0) {
          this.header = all;
          if (all.length > MAX_HEADER) { out.content += all; this.header = ""; this.state = "raw"; }
          break;
        }
        this.header = all.slice(0, at);
        text = all.slice(at + HARMONY_MESSAGE.length);
        this.route = route(this.header);
        if (this.route.kind === "reasoning") this.hadReasoning = true;
        if (this.route.kind === "call") out.content += harmonyCallText(this.route.name, this.route.constrain, "", false);
        this.state = "body";
        continue;
      }
      // A body, up to its terminator.
      let end = -1, term = "";
      for (const t of TERMINATORS) {
        const i = text.indexOf(t);
        if (i >= 0 && (end < 0 || i < end)) { end = i; term = t; }
      }
      const body = end >= 0 ? text.slice(0, end) : text.slice(0, text.length - partialTagLength(text, TERMINATORS));
      this.emit(out, body);
      if (end < 0) { this.held = text.slice(body.length); break; }
      if (this.route.kind === "call") out.content += HARMONY_CALL;
      text = text.slice(end + term.length);
      this.state = "between";
    }
    return out;
  }

  /** The end of the answer: held text goes where it was going (a header never finished is content). */
  flush(): ReasoningDelta {
    const out: ReasoningDelta = { reasoning: "", content: "" };
    if (this.state === "body") {
      this.emit(out, this.held);
      if (this.route.kind === "call") out.content += HARMONY_CALL;
    } else if (this.state === "header") out.content += this.header;
    else if (this.state === "raw") out.content += this.held;
    this.held = this.header = "";
    this.state = "between";
    return out;
  }

  private emit(out: ReasoningDelta, body: string): void {
    if (this.route.kind === "reasoning") out.reasoning += body;
    else out.content += body;
  }
}

/** Where a tool call message may begin in streamed content (the canonical form, or a raw one). */
export const HARMONY_CALL_OPENERS = [`${HARMONY_CHANNEL}commentary to=`, `${HARMONY_START}assistant to=`];

/**
 * `--tool-call-parser openai`: the tool call messages of a Harmony answer — as HarmonySplitter passes them on, or
 * raw (`<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{…}<|call|>`) — each a call of
 * `functions.NAME` with the body as its arguments. `content`: the text before the first call (null when empty).
 */
export function parseHarmonyCalls(text: string): { content: string | null; calls: { name: string; args: string }[] } {
  const calls: { name: string; args: string }[] = [];
  let first = -1;
  // A message: an optional <|start|>, its header (no <|message|> inside), <|message|>, its body up to a terminator or the end.
  const re = /(?:<\|start\|>)?((?:(?!<\|message\|>|<\|start\|>|<\|end\|>|<\|call\|>|<\|return\|>)[\s\S])*?)<\|message\|>([\s\S]*?)(?:<\|call\|>|<\|end\|>|<\|return\|>|$)/g;
  for (const m of text.matchAll(re)) {
    const h = readHarmonyHeader(m[1]!);
    if (!h.recipient?.startsWith("functions.")) continue;
    // The call begins at its header's first marker (text before it in the match is content).
    if (first < 0) first = m.index! + Math.min(...["<|start|>", "<|channel|>", "to="].map((t) => m[0].indexOf(t)).filter((i) => i >= 0));
    calls.push({ name: h.recipient.slice("functions.".length), args: m[2]!.trim() });
  }
  if (calls.length === 0) return { content: text, calls };
  const content = text.slice(0, first);
  return { content: content.trim().length > 0 ? content : null, calls };
}

/**
 * `--reasoning-parser`: splits a reasoning model's "<think>…</think>" block from its answer, as vLLM does,
 * into `reasoning_content` and `content` (whole outputs, and streamed deltas whose tags may be cut anywhere).
 *   qwen3        reasoning only when the output starts with <think> (enable_thinking=false outputs have none)
 *   glm45        GLM-4.5 / 4.6: the same reading of its <think> … </think>
 *   seed_oss     Seed-OSS: as qwen3 with <seed:think> … </seed:think>
 *   deepseek_r1  the output starts inside the reasoning (the prompt opened it); a leading <think> is skipped
 *   mistral      Magistral: as qwen3 with [THINK] … [/THINK], special tokens the text keeps for such requests
 *   granite      Granite 3.2 / 3.3 (chat_template_kwargs thinking=true): "Here is my thought process:" … "Here is my
 *                response:" (or "Here's …") in plain text
 *   openai_gptoss GPT-OSS's Harmony channels (src/server/harmony.ts): analysis is reasoning, final the answer
 *   deepseek_v3  DeepSeek-V3.1 on: deepseek_r1's reading for a request that asks its template to think
 *                (chat_template_kwargs thinking=true), no reasoning otherwise (vLLM's rule)
 */
import type { AfterReasoning } from "../structured/structured-outputs.ts";
import { HARMONY_CHANNEL, HARMONY_MESSAGE, HarmonySplitter } from "./harmony.ts";
import { partialTagLength } from "./text-tags.ts";

export const REASONING_PARSERS = ["qwen3", "deepseek_r1", "mistral", "granite", "glm45", "seed_oss", "openai_gptoss", "deepseek_v3"] as const;
export type ReasoningParserName = (typeof REASONING_PARSERS)[number];
/** A parser a request's answer is read with (deepseek_v3 resolves to one per request: resolveReasoningParser). */
export type AnswerParserName = Exclude<ReasoningParserName, "deepseek_v3">;
type TaggedParserName = Exclude<AnswerParserName, "openai_gptoss">;

/** The parser for one request: deepseek_v3 is deepseek_r1's when chat_template_kwargs.thinking is true, else none. */
export function resolveReasoningParser(parser: ReasoningParserName | null, kwargs: Record<string, unknown> | null | undefined): AnswerParserName | null {
  if (parser !== "deepseek_v3") return parser;
  return kwargs?.thinking === true ? "deepseek_r1" : null;
}

/** Each parser's tags (any of them opens or closes the block), and whether the output begins inside the reasoning (the prompt opened it). */
const TAGS: Record<TaggedParserName, { open: string[]; close: string[]; startsInside: boolean }> = {
  qwen3: { open: ["<think>"], close: ["</think>"], startsInside: false },
  glm45: { open: ["<think>"], close: ["</think>"], startsInside: false },
  seed_oss: { open: ["<seed:think>"], close: ["</seed:think>"], startsInside: false },
  deepseek_r1: { open: ["<think>"], close: ["</think>"], startsInside: true },
  mistral: { open: ["[THINK]"], close: ["[/THINK]"], startsInside: false },
  granite: { open: ["Here is my thought process:", "Here's my thought process:"], close: ["Here is my response:", "Here's my response:"], startsInside: false },
};

/** Whether the parser's tags are special tokens the text must keep (the request's skip_special_tokens is turned off, as vLLM does). */
export function reasoningNeedsSpecialTokens(parser: AnswerParserName): boolean {
  return parser === "mistral" || parser === "openai_gptoss";
}

/** What splits a streamed answer into reasoning and content. */
export interface ReasoningStream {
  push(delta: string): ReasoningDelta;
  flush(): ReasoningDelta;
}

/** The parser's streaming splitter. */
export function reasoningSplitter(parser: AnswerParserName): ReasoningStream {
  return parser === "openai_gptoss" ? new HarmonySplitter() : new ReasoningSplitter(parser);
}

export interface ReasoningDelta {
  reasoning: string;
  content: string;
}

/** Streaming splitter: push text deltas, get reasoning/content deltas; flush at the end. */
export class ReasoningSplitter {
  private mode: "start" | "reasoning" | "content";
  private held = "";

  constructor(readonly parser: TaggedParserName) {
    this.mode = "start";
  }

  push(delta: string): ReasoningDelta {
    const { open, close, startsInside } = TAGS[this.parser];
    const out: ReasoningDelta = { reasoning: "", content: "" };
    let text = this.held + delta;
    this.held = "";
    while (text.length > 0) {
      if (this.mode === "start") {
        // Decide once the output's first characters show whether it opens the block.
        if (open.some((o) => o.startsWith(text))) { this.held = text; return out; }
        const opener = open.find((o) => text.startsWith(o));
        if (opener) { text = text.slice(opener.length); this.mode = "reasoning"; continue; }
        this.mode = startsInside ? "reasoning" : "content";
        continue;
      }
      if (this.mode === "content") { out.content += text; break; }
      let end = -1, closer = "";
      for (const c of close) {
        const at = text.indexOf(c);
        if (at >= 0 && (end < 0 || at < end)) { end = at; closer = c; }
      }
      if (end >= 0) {
        out.reasoning += text.slice(0, end);
        text = text.slice(end + closer.length);
        this.mode = "content";
        continue;
      }
      // Hold back a tail that could be the start of a closing tag.
      const keep = partialTagLength(text, close);
      out.reasoning += text.slice(0, text.length - keep);
      this.held = text.slice(text.length - keep);
      break;
    }
    return out;
  }

  /** Releases held-back text at the end of the output. */
  flush(): ReasoningDelta {
    const held = this.held;
    this.held = "";
    if (this.mode === "reasoning") return { reasoning: held, content: "" };
    return { reasoning: "", content: held };
  }
}

/** Splits a whole output. reasoning is null when the output had no reasoning part. */
export function splitReasoning(text: string, parser: AnswerParserName): { reasoning: string | null; content: string } {
  if (parser === "openai_gptoss") {
    const h = new HarmonySplitter(), a = h.push(text), b = h.flush();
    return { reasoning: h.hadReasoning ? a.reasoning + b.reasoning : null, content: a.content + b.content };
  }
  const s = new ReasoningSplitter(parser);
  const a = s.push(text), b = s.flush();
  const reasoning = a.reasoning + b.reasoning, content = a.content + b.content;
  const hadReasoning = TAGS[parser].startsInside || TAGS[parser].open.some((o) => text.startsWith(o));
  return { reasoning: hadReasoning ? reasoning : null, content };
}

/**
 * Structured outputs under a reasoning parser (as vLLM): the grammar applies after the reasoning block. Its
 * delimiters as token ids — qwen3 / mistral: the output may open it with <think> / [THINK]; deepseek_r1: the
 * output begins in it. null when the tokenizer does not spell the tags as single tokens (no block to skip then).
 */
export function reasoningBoundary(parser: AnswerParserName, encode: (text: string) => number[]): AfterReasoning | null {
  if (parser === "openai_gptoss") {
    // Harmony: the answer is the final channel's body, after <|channel|>final<|message|>; all before it is free.
    const seq = [...encode(HARMONY_CHANNEL), ...encode("final"), ...encode(HARMONY_MESSAGE)];
    return seq.length === 3 ? { start_token_id: null, end_token_id: seq[2]!, end_sequence: seq } : null;
  }
  const tags = TAGS[parser];
  if (tags.open.length !== 1 || tags.close.length !== 1) return null;
  const open = encode(tags.open[0]!), close = encode(tags.close[0]!);
  if (open.length !== 1 || close.length !== 1) return null;
  return { start_token_id: tags.startsInside ? null : open[0]!, end_token_id: close[0]! };
}

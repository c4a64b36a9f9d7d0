/**
 * GPT-OSS's Harmony answers (src/server/harmony.ts): the openai_gptoss reasoning parser (analysis → reasoning,
 * final → content, tool call messages passed on whole) and the openai tool parser, whole and streamed.
 */
import { describe, expect, test } from "bun:test";
import { HarmonySplitter, parseHarmonyCalls } from "../src/server/harmony.ts";
import { reasoningBoundary, reasoningSplitter, splitReasoning } from "../src/server/reasoning.ts";
import { ChoiceShaper } from "../src/server/chat.ts";
import { parseToolCalls, toolCallStream } from "../src/server/tool-calls.ts";
import { SequenceGrammar } from "../src/structured/structured-output-manager.ts";
import { normalizeStructuredOutputs } from "../src/structured/structured-outputs.ts";

const REASON = "<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|>";
const FINAL = "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.";
const CALL = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>";

describe("openai_gptoss reasoning parser (Harmony channels)", () => {
  test("analysis is reasoning, final the answer; the markers and the end token go", () => {
    expect(splitReasoning(REASON + FINAL, "openai_gptoss")).toEqual({ reasoning: "User asks 2+2. Simple.", content: "2 + 2 = 4." });
    expect(splitReasoning(`${REASON}${FINAL}<|return|>`, "openai_gptoss")).toEqual({ reasoning: "User asks 2+2. Simple.", content: "2 + 2 = 4." });
    // No analysis message: no reasoning (null), as with the other parsers.
    expect(splitReasoning("<|channel|>final<|message|>4", "openai_gptoss")).toEqual({ reasoning: null, content: "4" });
    // Cut off inside the reasoning (max_tokens): all reasoning.
    expect(splitReasoning("<|channel|>analysis<|message|>still thin", "openai_gptoss")).toEqual({ reasoning: "still thin", content: "" });
    // A commentary preamble (no recipient) is content, as is text that is not Harmony at all.
    expect(splitReasoning("<|channel|>commentary<|message|>Checking the weather.<|end|>", "openai_gptoss")).toEqual({ reasoning: null, content: "Checking the weather." });
    expect(splitReasoning("plain text, no channels", "openai_gptoss")).toEqual({ reasoning: null, content: "plain text, no channels" });
    const long = "x".repeat(600);
    expect(splitReasoning(long, "openai_gptoss").content).toBe(long);
  });

  test("a tool call message is passed on as content in the canonical form, in both header orders", () => {
    const canonical = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>";
    expect(splitReasoning(REASON + CALL, "openai_gptoss")).toEqual({ reasoning: "User asks 2+2. Simple.", content: canonical });
    const raw = "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\":\"Paris\"}<|call|>";
    expect(splitReasoning(REASON + raw, "openai_gptoss").content).toBe(canonical);
  });

  test("streamed in pieces cut anywhere, the parts join to the whole-output split", () => {
    for (const text of [REASON + FINAL, REASON + CALL, `${REASON}<|start|>assistant<|channel|>commentary<|message|>Let me look.<|end|>${CALL}`, "<|channel|>final<|message|>a <|en", "plain"]) {
      const whole = splitReasoning(text, "openai_gptoss");
      for (let size = 1; size <= 7; size++) {
        const s = reasoningSplitter("openai_gptoss");
        let reasoning = "", content = "";
        for (let i = 0; i < text.length; i += size) {
          const d = s.push(text.slice(i, i + size));
          reasoning += d.reasoning;
          content += d.content;
        }
        const f = s.flush();
        expect({ reasoning: reasoning + f.reasoning, content: content + f.content }).toEqual({ reasoning: whole.reasoning ?? "", content: whole.content });
      }
    }
    // Reasoning flows as it comes, before the message ends.
    const s = new HarmonySplitter();
    expect(s.push("<|channel|>analysis<|message|>think")).toEqual({ reasoning: "think", content: "" });
  });

  test("structured outputs apply after <|channel|>final<|message|> (a sequence of three tokens)", () => {
    const ids: Record<string, number> = { "<|channel|>": 200005, final: 17196, "<|message|>": 200008 };
    const boundary = reasoningBoundary("openai_gptoss", (t) => [ids[t]!]);
    expect(boundary).toEqual({ start_token_id: null, end_token_id: 200008, end_sequence: [200005, 17196, 200008] });
    // A tokenizer that spells the markers in pieces: no boundary.
    expect(reasoningBoundary("openai_gptoss", (t) => [1, t.length])).toBeNull();
    // The grammar's phase: free until the three tokens come in a row (an analysis <|message|> does not end it).
    let accepted = 0;
    const matcher = { acceptToken: () => { accepted++; return true; }, isTerminated: () => false, getNextTokenBitmask: async () => new Int32Array(1), dispose: () => {} };
    const g = new SequenceGrammar(matcher as never, boundary);
    for (const t of [200005, 1, 200008, 5, 6, 200005, 17196]) expect(g.accept(t)).toBe("unchanged");
    expect(g.nextMask()).toBeNull();
    expect(g.accept(200008)).toBe("unchanged");
    expect(g.accept(42)).toBe("advanced");
    expect(accepted).toBe(1);
    expect(() => normalizeStructuredOutputs({ json_object: true, after_reasoning: { start_token_id: null, end_token_id: 3, end_sequence: [1, 2] } }, "structured_outputs"))
      .toThrow("end_sequence must be token ids ending with end_token_id");
  });
});

describe("openai tool parser (Harmony's commentary to=functions.NAME messages)", () => {
  test("calls in the canonical form and raw, arguments as written; text before the first call is content", () => {
    const r = parseToolCalls("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>", "openai");
    expect(r.content).toBeNull();
    expect(r.toolCalls.map((c) => c.function)).toEqual([{ name: "get_weather", arguments: "{\"city\":\"Paris\"}" }]);
    expect(r.toolCalls[0]!.id).toMatch(/^chatcmpl-tool-/);
    const raw = parseHarmonyCalls("Let me check. <|start|>assistant to=functions.lookup<|channel|>commentary json<|message|>{\"q\": 1}<|call|>");
    expect(raw).toEqual({ content: "Let me check. ", calls: [{ name: "lookup", args: "{\"q\": 1}" }] });
    // Two calls (the second after <|end|>), and one cut off by max_tokens: its arguments as far as they came.
    const two = parseHarmonyCalls("<|channel|>commentary to=functions.a<|message|>{}<|end|><|start|>assistant<|channel|>commentary to=functions.b <|constrain|>json<|message|>{\"x\":");
    expect(two.calls).toEqual([{ name: "a", args: "{}" }, { name: "b", args: "{\"x\":" }]);
    // A message to another recipient (a built-in tool) or none is not a function call.
    expect(parseHarmonyCalls("<|channel|>commentary to=browser.search<|message|>{}<|call|>").calls).toEqual([]);
    expect(parseHarmonyCalls("<|channel|>final<|message|>no calls").calls).toEqual([]);
  });

  test("behind the reasoning parser, streamed: reasoning flows, the call comes whole at the end, no markup in the content", () => {
    const text = `${REASON}<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>${CALL}`;
    for (const size of [1, 3, 8, 1000]) {
      const shaper = new ChoiceShaper(reasoningSplitter("openai_gptoss"), toolCallStream("openai", []));
      let reasoning = "", content = "";
      let calls: unknown[] = [];
      for (let i = 0; i < text.length; i += size) {
        const last = i + size >= text.length;
        const d = shaper.push(text.slice(i, i + size), last);
        reasoning += d.reasoning;
        content += d.content;
        if (last) calls = d.toolCalls.map((c) => c.function);
      }
      expect({ reasoning, content, calls }).toEqual({ reasoning: "User asks 2+2. Simple.", content: "Checking.", calls: [{ name: "get_weather", arguments: "{\"city\":\"Paris\"}" }] });
    }
  });
});

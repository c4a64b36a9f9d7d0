import { describe, expect, test } from "bun:test";
import { ReasoningSplitter, resolveReasoningParser, splitReasoning } from "../src/server/reasoning.ts";
import { ServerState } from "../src/server/state.ts";
import { OutputItems } from "../src/server/responses.ts";

describe("reasoning parser", () => {
  test("qwen3: a leading think block becomes reasoning_content", () => {
    expect(splitReasoning("<think>\nadd 2 and 2\n</think>\n\n4", "qwen3")).toEqual({ reasoning: "\nadd 2 and 2\n", content: "\n\n4" });
    expect(splitReasoning("4, no thinking", "qwen3")).toEqual({ reasoning: null, content: "4, no thinking" });
    expect(splitReasoning("<think>still thinking", "qwen3")).toEqual({ reasoning: "still thinking", content: "" });
    expect(splitReasoning("<thi", "qwen3")).toEqual({ reasoning: null, content: "<thi" });
  });
  test("glm45 (GLM-4.5 / 4.6): a leading <think> block; an answer without one (enable_thinking off) is all content", () => {
    expect(splitReasoning("<think>plan</think>answer", "glm45")).toEqual({ reasoning: "plan", content: "answer" });
    expect(splitReasoning("answer</think>", "glm45")).toEqual({ reasoning: null, content: "answer</think>" });
  });
  test("seed_oss: a leading <seed:think> block", () => {
    expect(splitReasoning("<seed:think>budget: 100</seed:think>answer", "seed_oss")).toEqual({ reasoning: "budget: 100", content: "answer" });
    expect(splitReasoning("<think>other tags</think>", "seed_oss")).toEqual({ reasoning: null, content: "<think>other tags</think>" });
  });
  test("deepseek_r1: the output starts inside the reasoning", () => {
    expect(splitReasoning("plan</think>answer", "deepseek_r1")).toEqual({ reasoning: "plan", content: "answer" });
    expect(splitReasoning("<think>plan</think>answer", "deepseek_r1")).toEqual({ reasoning: "plan", content: "answer" });
    expect(splitReasoning("no end", "deepseek_r1")).toEqual({ reasoning: "no end", content: "" });
  });
  test("mistral (Magistral): a leading [THINK] block becomes reasoning_content", () => {
    expect(splitReasoning("[THINK]add 2 and 2[/THINK]4", "mistral")).toEqual({ reasoning: "add 2 and 2", content: "4" });
    expect(splitReasoning("4, [THINK] later is text", "mistral")).toEqual({ reasoning: null, content: "4, [THINK] later is text" });
    expect(splitReasoning("<think>not these tags</think>", "mistral")).toEqual({ reasoning: null, content: "<think>not these tags</think>" });
    expect(splitReasoning("[THINK]still", "mistral")).toEqual({ reasoning: "still", content: "" });
  });
  test("granite: \"Here is my thought process:\" … \"Here is my response:\" (or \"Here's\") in plain text", () => {
    expect(splitReasoning("Here is my thought process:\nadd 2 and 2\nHere is my response:\n4", "granite")).toEqual({ reasoning: "\nadd 2 and 2\n", content: "\n4" });
    expect(splitReasoning("Here's my thought process: a Here's my response: b", "granite")).toEqual({ reasoning: " a ", content: " b" });
    expect(splitReasoning("Here is the answer: 4", "granite")).toEqual({ reasoning: null, content: "Here is the answer: 4" });
  });
  test("deepseek_v3 (DeepSeek-V3.1): deepseek_r1's reading when the request asks the template to think, none otherwise", () => {
    expect(resolveReasoningParser("deepseek_v3", { thinking: true })).toBe("deepseek_r1");
    expect([resolveReasoningParser("deepseek_v3", { thinking: false }), resolveReasoningParser("deepseek_v3", null), resolveReasoningParser("qwen3", null)]).toEqual([null, null, "qwen3"]);
    const state = new ServerState("m", null, false, null, "deepseek_v3");
    expect([state.reasoningParserFor({ harmony: false }, { thinking: true }), state.reasoningParserFor({ harmony: false }, {})]).toEqual(["deepseek_r1", null]);
    // No flag: a Harmony model's answers are read as such; others not at all.
    const plain = new ServerState("m", null);
    expect([plain.reasoningParserFor({ harmony: true }), plain.reasoningParserFor({ harmony: false })]).toEqual(["openai_gptoss", null]);
  });
  test("streamed in pieces cut anywhere, the parts join to the whole-output split", () => {
    for (const parser of ["qwen3", "deepseek_r1", "mistral", "granite", "glm45", "seed_oss"] as const) {
      for (const text of ["<think>a < b and </thi</think>c</think>d", "<think></think>", "x<think>y</think>z", "<think>abc</think>", "[THINK]a [/THI[/THINK]b[/THINK]", "[THINK][/THINK]x",
        "Here's my thought process: Here is my Here's my response: done", "Here is my thought process:x", "Here is"]) {
        const whole = splitReasoning(text, parser);
        for (let cut1 = 0; cut1 <= text.length; cut1++) for (let cut2 = cut1; cut2 <= text.length; cut2 += 3) {
          const s = new ReasoningSplitter(parser);
          let r = "", c = "";
          for (const piece of [text.slice(0, cut1), text.slice(cut1, cut2), text.slice(cut2)]) { const d = s.push(piece); r += d.reasoning; c += d.content; }
          const f = s.flush();
          r += f.reasoning; c += f.content;
          expect(c).toBe(whole.content);
          expect(r).toBe(whole.reasoning ?? "");
        }
      }
    }
  });
});

test("responses: a reasoning item, then the message, then function calls, with their events in order", () => {
  const events: Record<string, unknown>[] = [];
  const items = new OutputItems((e) => events.push(e));
  items.addReasoning("let me ");
  items.addReasoning("think");
  items.addText("The answer");
  items.addText(" is 4.");
  items.finish([{ id: "call_9", type: "function", function: { name: "f", arguments: "{}" } }]);
  expect(items.items.map((i) => [i.type, i.status])).toEqual([["reasoning", "completed"], ["message", "completed"], ["function_call", "completed"]]);
  expect((items.items[0]!.content as { text: string }[])[0]!.text).toBe("let me think");
  expect((items.items[1]!.content as { text: string }[])[0]!.text).toBe("The answer is 4.");
  expect(items.items[2]).toMatchObject({ call_id: "call_9", name: "f", arguments: "{}" });
  expect(events.map((e) => `${e.type}@${e.output_index}`)).toEqual([
    "response.output_item.added@0", "response.content_part.added@0", "response.reasoning_text.delta@0", "response.reasoning_text.delta@0",
    "response.reasoning_text.done@0", "response.content_part.done@0", "response.output_item.done@0",
    "response.output_item.added@1", "response.content_part.added@1", "response.output_text.delta@1", "response.output_text.delta@1",
    "response.output_text.done@1", "response.content_part.done@1", "response.output_item.done@1",
    "response.output_item.added@2", "response.function_call_arguments.delta@2", "response.function_call_arguments.done@2", "response.output_item.done@2",
  ]);
  // Only calls: no empty message item.
  const callsOnly = new OutputItems(() => {});
  callsOnly.finish([{ id: "c", type: "function", function: { name: "g", arguments: "{}" } }]);
  expect(callsOnly.items.map((i) => i.type)).toEqual(["function_call"]);
});

import { expect, test } from "bun:test";
import { parseToolCalls, ToolCallStream } from "../src/server/tool-calls.ts";

const TEXT = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>';

test("hermes tool calls are parsed; surrounding text stays content", () => {
  const r = parseToolCalls(TEXT);
  expect(r.content).toBe("Let me check.");
  expect(r.toolCalls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)])).toEqual([["function", "get_weather", { city: "Paris" }], ["function", "now", {}]]);
  expect(new Set(r.toolCalls.map((c) => c.id)).size).toBe(2);
  expect(parseToolCalls("plain answer")).toEqual({ content: "plain answer", toolCalls: [] });
  expect(parseToolCalls("<tool_call>not json</tool_call>")).toEqual({ content: "<tool_call>not json</tool_call>", toolCalls: [] });
  // An unterminated last call (generation stopped at the end tag's token) still parses.
  expect(parseToolCalls('<tool_call>{"name": "f", "arguments": {"a": 1}}').toolCalls[0]!.function.arguments).toBe('{"a":1}');
});

test("streaming: content before the call passes through, calls come whole at the end, for any cut", () => {
  for (let cut = 0; cut <= TEXT.length; cut++) {
    const s = new ToolCallStream();
    const content = s.push(TEXT.slice(0, cut)) + s.push(TEXT.slice(cut));
    const end = s.finish();
    expect(content + end.content).toBe("Let me check.\n");
    expect(end.toolCalls.map((c) => c.function.name)).toEqual(["get_weather", "now"]);
  }
  const plain = new ToolCallStream();
  expect(plain.push("a <tool") + plain.push("box> b") + plain.finish().content).toBe("a <toolbox> b");
});

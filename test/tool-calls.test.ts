import { describe, expect, test } from "bun:test";
import { forcedToolChoice, forcedToolSchema, ForcedToolCallStream, parseToolCalls, parserNeedsSpecialTokens, toolCallStream } from "../src/server/tool-calls.ts";
import { loadXGrammar } from "../src/structured/xgrammar.ts";
import type { ToolCallParserName } from "../src/server/tool-calls.ts";

/**
 * `text` streamed in two pieces, cut every `step` characters: the content streamed plus the rest at the end is
 * `content` and the calls are `names`, for every cut. Returns each cut's end (for more checks).
 */
function expectStreamedCalls(parser: ToolCallParserName, tools: readonly unknown[], text: string, step: number, content: string, names: string[]) {
  const ends = [];
  for (let cut = 0; cut <= text.length; cut += step) {
    const s = toolCallStream(parser, tools);
    const streamed = s.push(text.slice(0, cut)) + s.push(text.slice(cut));
    const end = s.finish();
    expect(streamed + end.content).toBe(content);
    expect(end.toolCalls.map((c) => c.function.name)).toEqual(names);
    ends.push(end);
  }
  return ends;
}

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
  expectStreamedCalls("hermes", [], TEXT, 1, "Let me check.\n", ["get_weather", "now"]);
  const plain = toolCallStream("hermes");
  expect(plain.push("a <tool") + plain.push("box> b") + plain.finish().content).toBe("a <toolbox> b");
});

const LLAMA = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "note": "a } in {text}"}}; {"name": "now", "parameters": {}}';

test("llama3_json: an answer of JSON calls (parameters or arguments, ';'-separated, after <|python_tag|> or not); anything else is content", () => {
  const r = parseToolCalls(LLAMA, "llama3_json");
  expect(r.content).toBeNull();
  expect(r.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([["get_weather", { city: "Paris", note: "a } in {text}" }], ["now", {}]]);
  // The tag is gone when special tokens are skipped; newlines may separate calls; "arguments" is read too.
  const bare = parseToolCalls(' \n{"name": "f", "arguments": {"a": 1}}\n{"name": "g", "parameters": {"s": "x\\"y"}}', "llama3_json");
  expect(bare.toolCalls.map((c) => [c.function.name, c.function.arguments])).toEqual([["f", '{"a":1}'], ["g", '{"s":"x\\"y"}']]);
  for (const text of ["The weather is fine.", 'Sure: {"name": "f", "parameters": {}}', '{"name": "f", "parameters": {}} and more', '{"name": "f", "parameters": {', '{"parameters": {}}', "{not json}"])
    expect(parseToolCalls(text, "llama3_json")).toEqual({ content: text, toolCalls: [] });
  // Hermes blocks are not llama3_json calls, and the other way round.
  expect(parseToolCalls(TEXT, "llama3_json").toolCalls).toEqual([]);
  expect(parseToolCalls(LLAMA, "hermes").toolCalls).toEqual([]);
});

test("llama3_json streaming: a call answer is held whole, any other answer flows from its first word, for any cut", () => {
  for (let cut = 0; cut <= LLAMA.length; cut++) {
    const s = toolCallStream("llama3_json");
    expect(s.push(LLAMA.slice(0, cut)) + s.push(LLAMA.slice(cut))).toBe("");
    const end = s.finish();
    expect([end.content, end.toolCalls.map((c) => c.function.name)]).toEqual(["", ["get_weather", "now"]]);
  }
  const text = "  It is sunny {really}.";
  for (let cut = 0; cut <= text.length; cut++) {
    const s = toolCallStream("llama3_json");
    const first = s.push(text.slice(0, cut));
    expect(first).toBe(cut >= 3 ? text.slice(0, cut) : ""); // decided at the first non-blank character
    expect(first + s.push(text.slice(cut)) + s.finish().content).toBe(text);
  }
  const broken = toolCallStream("llama3_json");
  expect(broken.push('{"name": "f", "par') + broken.push("ameters\": oops")).toBe("");
  expect(broken.finish()).toEqual({ content: '{"name": "f", "parameters": oops', toolCalls: [] });
});

const PY = `[get_weather(city='San Francisco', units="celsius", days=3, ratio=-1.5e2, exact=True, extra=None), search(q="a \\"quoted\\" \\u00e9 word", tags=['x', "y"], opts={'k': [1, (2, 3)], 'n': {"deep": False}},), tools.now()]`;

test("pythonic: an answer that is a Python list of calls with literal keyword arguments; anything else is content", () => {
  const r = parseToolCalls(PY, "pythonic");
  expect(r.content).toBeNull();
  expect(r.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([
    ["get_weather", { city: "San Francisco", units: "celsius", days: 3, ratio: -150, exact: true, extra: null }],
    ["search", { q: 'a "quoted" é word', tags: ["x", "y"], opts: { k: [1, [2, 3]], n: { deep: false } } }],
    ["tools.now", {}],
  ]);
  // Llama 4 wraps the list in <|python_start|> … <|python_end|> when special tokens are kept.
  expect(parseToolCalls("<|python_start|>[f(a=1)]<|python_end|>", "pythonic").toolCalls.map((c) => c.function.arguments)).toEqual(['{"a":1}']);
  for (const text of ["It is sunny.", "[1, 2]", "[f(1)]", "[f(a=b)]", "[f(a=1)] and more", "Call: [f(a=1)]", "[f(a='x\nline')]", "[f(a=1)", "[]", "[f(a=open('x'))]"])
    expect(parseToolCalls(text, "pythonic")).toEqual({ content: text, toolCalls: [] });
});

test("pythonic streaming: a list answer is held whole, any other flows, for any cut", () => {
  for (let cut = 0; cut <= PY.length; cut += 7) {
    const s = toolCallStream("pythonic");
    expect(s.push(PY.slice(0, cut)) + s.push(PY.slice(cut))).toBe("");
    expect(s.finish().toolCalls.map((c) => c.function.name)).toEqual(["get_weather", "search", "tools.now"]);
  }
  const text = "Sunny [really].";
  const s = toolCallStream("pythonic");
  expect(s.push("Sun") + s.push("ny [really].") + s.finish().content).toBe(text);
  const tagged = toolCallStream("pythonic");
  expect(tagged.push("<|python") + tagged.push("_start|>[f(a=1)]")).toBe("");
  expect(tagged.finish().toolCalls.map((c) => c.function.name)).toEqual(["f"]);
});

const CODER_TOOLS = [
  { type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {
    city: { type: "string" }, days: { type: "integer" }, threshold: { type: "number" }, metric: { type: "boolean" },
    hours: { type: "array" }, opts: { type: "object" }, note: { type: ["string", "null"] } } } } },
  { type: "function", function: { name: "now", parameters: { type: "object", properties: {} } } },
];
const CODER = "I'll look that up.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSan Francisco, CA\n</parameter>\n<parameter=days>\n3\n</parameter>\n" +
  "<parameter=threshold>\n2.5\n</parameter>\n<parameter=metric>\nTrue\n</parameter>\n<parameter=hours>\n[1, 2]\n</parameter>\n<parameter=opts>\n{'wind': True, 'unit': None}\n</parameter>\n" +
  "<parameter=note>\nline one\nline two\n\n</parameter>\n<parameter=extra>\n42\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=now>\n</function>\n</tool_call>";

test("qwen3_coder: <function=…><parameter=…> blocks after any text; values typed by the request's tool schema", () => {
  const r = parseToolCalls(CODER, "qwen3_coder", CODER_TOOLS);
  expect(r.content).toBe("I'll look that up.");
  expect(r.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([
    ["get_weather", { city: "San Francisco, CA", days: 3, threshold: 2.5, metric: true, hours: [1, 2], opts: { wind: true, unit: null }, note: "line one\nline two\n", extra: "42" }],
    ["now", {}],
  ]);
  // Without the schema every value stays text; "null" is null; values that do not convert stay text.
  const untyped = parseToolCalls("<function=f>\n<parameter=a>\n7\n</parameter>\n<parameter=b>\nnull\n</parameter>\n</function>", "qwen3_coder");
  expect([untyped.content, JSON.parse(untyped.toolCalls[0]!.function.arguments)]).toEqual([null, { a: "7", b: null }]);
  const bad = parseToolCalls("<tool_call><function=get_weather><parameter=days>three</parameter><parameter=hours>[1,</parameter></function></tool_call>", "qwen3_coder", CODER_TOOLS);
  expect(JSON.parse(bad.toolCalls[0]!.function.arguments)).toEqual({ days: "three", hours: "[1," });
  for (const text of ["plain answer", "<tool_call>\n<function=f>\n<parameter=a>\n1", "<function=>\n</function>"])
    expect(parseToolCalls(text, "qwen3_coder", CODER_TOOLS)).toEqual({ content: text, toolCalls: [] });
});

const GLM = "Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>San Francisco, CA</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n" +
  "<arg_key>hours</arg_key>\n<arg_value>[1, 2]</arg_value>\n<arg_key>opts</arg_key>\n<arg_value>{'wind': True}</arg_value>\n<arg_key>note</arg_key>\n<arg_value> 42 </arg_value>\n</tool_call>" +
  "<tool_call>now<arg_key>tz</arg_key><arg_value>\"UTC\"</arg_value></tool_call>";

test("glm45: <tool_call>name and <arg_key>/<arg_value> pairs after any text; string arguments as text, others JSON or Python literals", () => {
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" }, note: { type: "string" } } } } }];
  const r = parseToolCalls(GLM, "glm45", tools);
  expect(r.content).toBe("Let me check.");
  expect(r.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([
    ["get_weather", { city: "San Francisco, CA", days: 3, hours: [1, 2], opts: { wind: true }, note: "42" }],
    // GLM-4.7's form: the first <arg_key> right after the name; without a schema a JSON string is decoded.
    ["now", { tz: "UTC" }],
  ]);
  // Unclosed or nameless blocks are no calls: the text stays content.
  for (const text of ["plain", "<tool_call>f\n<arg_key>a</arg_key><arg_value>1</arg_value>", "<tool_call>\n</tool_call>"]) expect(parseToolCalls(text, "glm45", tools)).toEqual({ content: text, toolCalls: [] });
  expectStreamedCalls("glm45", tools, GLM, 5, "Let me check.\n", ["get_weather", "now"]);
});

// DeepSeek-V3 / R1's form (the type, then the name before a fenced JSON block), and V3.1's (name, then the JSON).
const DS_V3 = "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>"
  + "<｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
const DS_V31 = "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜>"
  + "<｜tool▁call▁begin｜>now<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

test("deepseek_v3 / deepseek_v31: <｜tool▁call▁begin｜> calls after any text, in either form; arguments as written; any cut streams the same", () => {
  for (const parser of ["deepseek_v3", "deepseek_v31"] as const) {
    expect(parserNeedsSpecialTokens(parser)).toBe(true);
    for (const text of [DS_V3, DS_V31]) {
      const r = parseToolCalls(text, parser);
      expect(r.content).toBe("Let me check.");
      expect(r.toolCalls.map((c) => c.function)).toEqual([{ name: "get_weather", arguments: "{\"city\": \"Paris\"}" }, { name: "now", arguments: "{}" }]);
      expectStreamedCalls(parser, [], text, 7, "Let me check.", ["get_weather", "now"]);
    }
    // A call cut off by max_tokens keeps its arguments as far as they came; text without calls stays content.
    expect(parseToolCalls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": ", parser).toolCalls.map((c) => c.function)).toEqual([{ name: "f", arguments: "{\"a\":" }]);
    expect(parseToolCalls("no calls here", parser)).toEqual({ content: "no calls here", toolCalls: [] });
  }
});

test("qwen3_coder streaming: text flows until a call may begin, calls come whole at the end, for any cut", () => {
  for (const end of expectStreamedCalls("qwen3_coder", CODER_TOOLS, CODER, 3, "I'll look that up.\n", ["get_weather", "now"]))
    expect(JSON.parse(end.toolCalls[0]!.function.arguments).days).toBe(3);
  const plain = toolCallStream("qwen3_coder");
  expect(plain.push("a <func") + plain.push("tional> b <tool") + plain.push("s>") + plain.finish().content).toBe("a <functional> b <tools>");
  const bare = toolCallStream("qwen3_coder");
  expect(bare.push("ok <functio") + bare.push("n=now>\n</function>")).toBe("ok ");
  expect(bare.finish().toolCalls.map((c) => c.function.name)).toEqual(["now"]);
});

const MISTRAL_V3 = 'Checking. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "note": "a ] in [TOOL text"}}, {"name": "now", "arguments": {}}]';
const MISTRAL_V11 = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]now[CALL_ID]a1b2c3d4e[ARGS]{}';

test("mistral: [TOOL_CALLS] then a JSON list (v3 tokenizers) or name[ARGS]{…} per call (v11+); 9-character alphanumeric ids; anything else is content", () => {
  const v3 = parseToolCalls(MISTRAL_V3, "mistral");
  expect(v3.content).toBe("Checking.");
  expect(v3.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([["get_weather", { city: "Paris", note: "a ] in [TOOL text" }], ["now", {}]]);
  const v11 = parseToolCalls(MISTRAL_V11, "mistral");
  expect(v11.content).toBeNull();
  expect(v11.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([["get_weather", { city: "Paris" }], ["now", {}]]);
  for (const c of [...v3.toolCalls, ...v11.toolCalls]) expect(c.id).toMatch(/^[A-Za-z0-9]{9}$/);
  // One object instead of a list.
  expect(parseToolCalls('[TOOL_CALLS]{"name": "f", "arguments": {"a": 1}}', "mistral").toolCalls.map((c) => c.function.arguments)).toEqual(['{"a":1}']);
  for (const text of ["No calls here.", '[TOOL_CALLS] [{"name": "f", "arguments": {', "[TOOL_CALLS]f[ARGS]{oops}", '[TOOL_CALLS][ARGS]{"a": 1}', '[TOOL_CALLS]f[ARGS]{"a": 1} trailing', '[TOOL_CALLS] [{"arguments": {}}]'])
    expect(parseToolCalls(text, "mistral")).toEqual({ content: text, toolCalls: [] });
});

test("mistral streaming: text flows until [TOOL_CALLS] may begin, calls come whole at the end, for any cut", () => {
  for (const [text, before, names] of [[MISTRAL_V3, "Checking. ", ["get_weather", "now"]], [MISTRAL_V11, "", ["get_weather", "now"]]] as const) {
    expectStreamedCalls("mistral", [], text, 1, before, [...names]);
  }
  const plain = toolCallStream("mistral");
  expect(plain.push("a [TOOL") + plain.push("S] b") + plain.finish().content).toBe("a [TOOLS] b");
});

const PHI4 = 'I will look that up. functools[{"name": "get_weather", "arguments": {"city": "Paris", "list": [1, "]"]}}, {"name": "now", "arguments": {}}]';
const GRANITE = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]';

test("phi4_mini_json (functools[…] after any text) and granite (an answer that is a JSON list, after <|tool_call|> or <tool_call>)", () => {
  const phi = parseToolCalls(PHI4, "phi4_mini_json");
  expect(phi.content).toBe("I will look that up.");
  expect(phi.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual([["get_weather", { city: "Paris", list: [1, "]"] }], ["now", {}]]);
  for (const text of ["No tools.", 'functools[{"name": "f", "arguments": {}}', "functools[not json]", 'functools[{"arguments": {}}]'])
    expect(parseToolCalls(text, "phi4_mini_json")).toEqual({ content: text, toolCalls: [] });
  for (const text of [GRANITE, GRANITE.replace("<tool_call>", "<|tool_call|>"), GRANITE.replace("<tool_call>", " ")]) {
    const g = parseToolCalls(text, "granite");
    expect([g.content, g.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)])]).toEqual([null, [["get_weather", { city: "Paris" }], ["now", {}]]]);
  }
  for (const text of ["It is sunny.", 'Sure: [{"name": "f", "arguments": {}}]', '[{"name": "f", "arguments": {}}] and more', "[1, 2]", "[]"])
    expect(parseToolCalls(text, "granite")).toEqual({ content: text, toolCalls: [] });
});

test("phi4_mini_json and granite streaming, for any cut", () => {
  expectStreamedCalls("phi4_mini_json", [], PHI4, 1, "I will look that up. ", ["get_weather", "now"]);
  for (let cut = 0; cut <= GRANITE.length; cut++) {
    const s = toolCallStream("granite");
    expect(s.push(GRANITE.slice(0, cut)) + s.push(GRANITE.slice(cut))).toBe("");
    expect(s.finish().toolCalls.map((c) => c.function.name)).toEqual(["get_weather", "now"]);
  }
  const text = "Granite says hi [not a call].";
  const s = toolCallStream("granite");
  expect(s.push(text) + s.finish().content).toBe(text);
});

describe("forced tool choice (tool_choice 'required' or a named function)", () => {
  const tools = [
    { type: "function", function: { name: "add", parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
    { type: "function", function: { name: "now" } },
  ];

  test("the choice is checked against the tools", () => {
    expect(forcedToolChoice(tools, "auto")).toBeNull();
    expect(forcedToolChoice(undefined, "none")).toBeNull();
    expect(forcedToolChoice(tools, "required")).toBe("required");
    expect(forcedToolChoice(tools, { type: "function", function: { name: "now" } })).toEqual({ name: "now" });
    expect(() => forcedToolChoice(tools, { type: "function", function: { name: "later" } })).toThrow("'later', which is not among the tools (add, now)");
    expect(() => forcedToolChoice([], "required")).toThrow("needs tools");
    expect(() => forcedToolChoice(tools, "always")).toThrow('tool_choice must be "none", "auto", "required"');
  });

  test("the schemas accept exactly the calls, and the output becomes OpenAI tool_calls", async () => {
    const xg = await loadXGrammar();
    const accepts = async (schema: Record<string, unknown>, text: string) => {
      const g = await xg.Grammar.fromJSONSchema(JSON.stringify(schema), false, -1);
      try { return await xg.Testings.isGrammarAcceptString(g, text); } finally { g.dispose(); }
    };
    const named = forcedToolSchema(tools, { name: "add" });
    expect(await accepts(named, '{"a": 1, "b": 2}')).toBe(true);
    expect(await accepts(named, '{"a": 1}')).toBe(false);
    const required = forcedToolSchema(tools, "required");
    expect(await accepts(required, '[{"name": "add", "parameters": {"a": 1, "b": 2}}, {"name": "now", "parameters": {}}]')).toBe(true);
    expect(await accepts(required, "[]")).toBe(false);
    expect(await accepts(required, '[{"name": "sub", "parameters": {}}]')).toBe(false);

    const one = new ForcedToolCallStream({ name: "add" });
    expect(one.push('{"a": 1, ') + one.push('"b": 2}')).toBe("");
    const f1 = one.finish();
    expect(f1.toolCalls.map((c) => c.function)).toEqual([{ name: "add", arguments: '{"a": 1, "b": 2}' }]);
    const many = new ForcedToolCallStream("required");
    many.push('[{"name": "add", "parameters": {"a": 1, "b": 2}}, {"name": "now", "parameters": {}}]');
    expect(many.finish().toolCalls.map((c) => c.function)).toEqual([{ name: "add", arguments: '{"a":1,"b":2}' }, { name: "now", arguments: "{}" }]);
    const cut = new ForcedToolCallStream("required");
    cut.push('[{"name": "add", "param');
    expect(cut.finish()).toEqual({ content: '[{"name": "add", "param', toolCalls: [] });
  });
});

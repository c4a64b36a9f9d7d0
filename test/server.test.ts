/** The OpenAI-compatible server as a real process on 127.0.0.1, driven by the official openai SDK and fetch. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { SERVER_MODEL, startServer, tinyModel, type RunningServer } from "./helpers.ts";

let srv: RunningServer;
let client: OpenAI;
const model = tinyModel(SERVER_MODEL);
const NAME = "test-model", ALIAS = "test-alias";

beforeAll(async () => {
  // Two names (vLLM's --served-model-name a b): requests may use either, responses carry the first.
  srv = await startServer([model, "--served-model-name", NAME, ALIAS, "--max-model-len", "512", "--block-size", "8", "--max-num-seqs", "64"]);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
afterAll(async () => {
  expect(await srv.stop("SIGTERM")).toBe(0);
});

const post = (path: string, body: unknown, raw = false) =>
  fetch(`${srv.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: raw ? (body as string) : JSON.stringify(body) });

async function metrics(): Promise<Record<string, number>> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([^{\s]+)(\{[^}]*\})?\s+(\S+)$/);
    if (m) out[m[1]! + (m[2] ?? "").replace(/model_name="[^"]*",?/, "").replace("{}", "")] = Number(m[3]);
  }
  return out;
}

describe("completions through the openai SDK", () => {
  test("non-stream and stream agree at temperature 0; usage is exact", async () => {
    const full = await client.completions.create({ model: NAME, prompt: "The quick brown fox", max_tokens: 12, temperature: 0 });
    expect(full.object).toBe("text_completion");
    expect(full.choices[0]!.finish_reason).toBe("length");
    const promptTokens = (await (await post("/tokenize", { prompt: "The quick brown fox" })).json() as any).count;
    expect(full.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: 12, total_tokens: promptTokens + 12 });
    const stream = await client.completions.create({ model: NAME, prompt: "The quick brown fox", max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "", finishes = 0, usage: unknown = null;
    for await (const chunk of stream) {
      if (chunk.usage) { usage = chunk.usage; expect(chunk.choices).toEqual([]); }
      for (const c of chunk.choices) { text += c.text; if (c.finish_reason) finishes++; }
    }
    expect(text).toBe(full.choices[0]!.text);
    expect(finishes).toBe(1);
    expect(usage).toEqual(full.usage);
  });

  test("batch prompts and token-id prompts, n > 1", async () => {
    const r = await client.completions.create({ model: NAME, prompt: ["Hello", "World"], max_tokens: 5, temperature: 0.8, n: 3, seed: 5 });
    expect(r.choices.map((c) => c.index).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(r.usage!.completion_tokens).toBe(30);
    const ids = (await (await post("/tokenize", { prompt: "Hello" })).json() as any).tokens;
    const byIds = await client.completions.create({ model: NAME, prompt: ids, max_tokens: 6, temperature: 0 });
    const byText = await client.completions.create({ model: NAME, prompt: "Hello", max_tokens: 6, temperature: 0 });
    expect(byIds.choices[0]!.text).toBe(byText.choices[0]!.text);
  });

  test("streamed deltas add up to the non-streamed result (n = 2, seeded sampling, logprobs, token ids, echo)", async () => {
    const body = { model: NAME, prompt: "Once upon a time", max_tokens: 10, temperature: 0.9, seed: 11, n: 2, logprobs: 2, echo: true, return_token_ids: true };
    const full = await (await post("/v1/completions", body)).json() as any;
    const res = await post("/v1/completions", { ...body, stream: true, stream_options: { include_usage: true } });
    const text = ["", ""], ids: number[][] = [[], []], lpTokens: string[][] = [[], []];
    let promptIds: number[] | null = null, usage: any = null;
    for (const line of (await res.text()).split("\n")) {
      if (!line.startsWith("data: {")) continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text[c.index] += c.text;
        ids[c.index]!.push(...c.token_ids);
        if (c.prompt_token_ids) promptIds = c.prompt_token_ids;
        if (c.logprobs) lpTokens[c.index]!.push(...c.logprobs.tokens);
      }
    }
    for (const c of full.choices) {
      expect(text[c.index]).toBe(c.text);
      expect(ids[c.index]).toEqual(c.token_ids);
      expect(lpTokens[c.index]).toEqual(c.logprobs.tokens);
    }
    expect(promptIds).toEqual(full.choices[0].prompt_token_ids);
    expect(usage).toEqual(full.usage);
  });

  test("stop strings end the text, also across stream chunks", async () => {
    const base = await client.completions.create({ model: NAME, prompt: "Once upon", max_tokens: 24, temperature: 0, logprobs: 1 });
    const tokens = base.choices[0]!.logprobs!.tokens!;
    const k = tokens.findIndex((t, i) => i > 1 && t.length > 1 && (tokens[i + 1] ?? "").length > 1);
    const stop = tokens[k]!.slice(-1) + tokens[k + 1]!.slice(0, 1);
    const at = base.choices[0]!.text.indexOf(stop);
    const r = await client.completions.create({ model: NAME, prompt: "Once upon", max_tokens: 24, temperature: 0, stop: [stop] });
    expect(r.choices[0]!.text).toBe(base.choices[0]!.text.slice(0, at));
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expect((r.choices[0] as unknown as { stop_reason: string }).stop_reason).toBe(stop);
    let text = "";
    for await (const c of await client.completions.create({ model: NAME, prompt: "Once upon", max_tokens: 24, temperature: 0, stop: [stop], stream: true })) text += c.choices[0]?.text ?? "";
    expect(text).toBe(r.choices[0]!.text);
  });

  test("echo + logprobs scores the prompt too; prompt_logprobs gives vLLM's per-token entries", async () => {
    const r: any = await (await post("/v1/completions", { prompt: "The cat sat on the mat", max_tokens: 3, temperature: 0, logprobs: 1, echo: true })).json();
    const ids: number[] = (await (await post("/tokenize", { prompt: "The cat sat on the mat" })).json() as any).tokens;
    const lp = r.choices[0].logprobs;
    expect(lp.tokens.length).toBe(ids.length + 3);
    expect(lp.token_logprobs[0]).toBeNull();
    expect(lp.top_logprobs[0]).toBeNull();
    for (const v of lp.token_logprobs.slice(1)) expect(v).toBeLessThanOrEqual(0);
    expect(lp.text_offset[0]).toBe(0);
    expect(lp.tokens.slice(0, ids.length).join("")).toBe("The cat sat on the mat");
    const v: any = await (await post("/v1/completions", { prompt: ids, max_tokens: 1, prompt_logprobs: 2 })).json();
    const pl = v.choices[0].prompt_logprobs;
    expect(pl.length).toBe(ids.length);
    expect(pl[0]).toBeNull();
    expect(pl[1][String(ids[1])].logprob).toBeCloseTo(lp.token_logprobs[1], 5);
    expect(pl[1][String(ids[1])].rank).toBeGreaterThanOrEqual(1);
  });

  test("logprobs: tokens, offsets and top entries", async () => {
    const r = await client.completions.create({ model: NAME, prompt: "Hi", max_tokens: 4, temperature: 0, logprobs: 2 });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens!.length).toBe(4);
    expect(lp.top_logprobs!.every((t) => Object.keys(t).length >= 2)).toBe(true);
    expect(lp.text_offset![0]).toBe(0);
    expect(lp.tokens!.join("")).toBe(r.choices[0]!.text);
    // With echo the prompt ("Hi", one token) comes first, unscored, and the completion's offsets follow it.
    const e = await client.completions.create({ model: NAME, prompt: "Hi", max_tokens: 4, temperature: 0, logprobs: 2, echo: true });
    expect(e.choices[0]!.text.startsWith("Hi")).toBe(true);
    expect(e.choices[0]!.logprobs!.tokens!.length).toBe(5);
    expect(e.choices[0]!.logprobs!.text_offset!.slice(0, 2)).toEqual([0, 2]);
  });
});

describe("chat through the openai SDK", () => {
  const messages = [{ role: "system" as const, content: "Be brief." }, { role: "user" as const, content: "Name a color." }];
  test("non-stream and stream agree; first chunk has the role; one finish per choice", async () => {
    const full = await client.chat.completions.create({ model: NAME, messages, max_tokens: 10, temperature: 0 });
    expect(full.choices[0]!.message.role).toBe("assistant");
    const stream = await client.chat.completions.create({ model: NAME, messages, max_tokens: 10, temperature: 0, n: 2, stream: true, stream_options: { include_usage: true } });
    const text = ["", ""], roles = [0, 0], finishes = [0, 0];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      expect(chunk.object).toBe("chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) roles[c.index]!++;
        text[c.index] += c.delta.content ?? "";
        if (c.finish_reason) finishes[c.index]!++;
      }
    }
    expect(text[0]).toBe(full.choices[0]!.message.content!);
    expect(text[1]).toBe(full.choices[0]!.message.content!);
    expect(roles).toEqual([1, 1]);
    expect(finishes).toEqual([1, 1]);
    expect(usage!.completion_tokens).toBe(20);
    expect(usage!.prompt_tokens).toBe(full.usage!.prompt_tokens);
  });

  test("chat logprobs and chat_template_kwargs", async () => {
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
    expect(r.choices[0]!.logprobs!.content!.length).toBe(3);
    expect(r.choices[0]!.logprobs!.content![0]!.top_logprobs.length).toBe(2);
    const a: any = await (await post("/tokenize", { messages, chat_template_kwargs: { enable_thinking: false } })).json();
    const b: any = await (await post("/tokenize", { messages })).json();
    expect(a.count).toBeGreaterThan(b.count);
  });
});

describe("other endpoints", () => {
  test("models, version, health, detokenize", async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([NAME, ALIAS]);
    const viaAlias = await client.completions.create({ model: ALIAS, prompt: "hi", max_tokens: 2 });
    expect(viaAlias.model).toBe(NAME);
    const unknown = await post("/v1/completions", { model: "other", prompt: "hi", max_tokens: 2 });
    expect([unknown.status, ((await unknown.json()) as any).error.message]).toEqual([404, "The model `other` does not exist."]);
    expect((await fetch(`${srv.url}/health`)).status).toBe(200);
    expect((await (await fetch(`${srv.url}/version`)).json() as any).version).toMatch(/^\d+\.\d+\.\d+/);
    const ids = (await (await post("/tokenize", { prompt: "héllo 🎉" })).json() as any).tokens;
    expect((await (await post("/detokenize", { tokens: ids })).json() as any).prompt).toBe("héllo 🎉");
  });
});

describe("bad inputs get their status and an OpenAI error body; the server keeps serving", () => {
  const long = Array.from({ length: 600 }, () => 5);
  const cases: [string, string, unknown, number, string | null][] = [
    ["invalid JSON", "/v1/completions", "{not json", 400, null],
    ["body is an array", "/v1/completions", "[1,2]", 400, null],
    ["missing prompt", "/v1/completions", { max_tokens: 3 }, 400, "prompt"],
    ["prompt is a number", "/v1/completions", { prompt: 5 }, 400, "prompt"],
    ["empty prompt", "/v1/completions", { prompt: "" }, 400, "prompt"],
    ["empty prompt list", "/v1/completions", { prompt: [] }, 400, "prompt"],
    ["negative token id", "/v1/completions", { prompt: [1, -2] }, 400, null],
    ["token id out of vocabulary", "/v1/completions", { prompt: [1, 999999] }, 400, "prompt"],
    ["temperature < 0", "/v1/completions", { prompt: "a", temperature: -1 }, 400, "temperature"],
    ["temperature wrong type", "/v1/completions", { prompt: "a", temperature: "hot" }, 400, "temperature"],
    ["top_p = 0", "/v1/completions", { prompt: "a", top_p: 0 }, 400, "top_p"],
    ["top_p > 1", "/v1/completions", { prompt: "a", top_p: 1.5 }, 400, "top_p"],
    ["min_p > 1", "/v1/completions", { prompt: "a", min_p: 2 }, 400, "min_p"],
    ["presence_penalty > 2", "/v1/completions", { prompt: "a", presence_penalty: 3 }, 400, "presence_penalty"],
    ["frequency_penalty < -2", "/v1/completions", { prompt: "a", frequency_penalty: -3 }, 400, "frequency_penalty"],
    ["max_tokens = 0", "/v1/completions", { prompt: "a", max_tokens: 0 }, 400, "max_tokens"],
    ["max_tokens negative", "/v1/completions", { prompt: "a", max_tokens: -5 }, 400, "max_tokens"],
    ["n = 0", "/v1/completions", { prompt: "a", n: 0 }, 400, "n"],
    ["n = 2^31 (the server's memory)", "/v1/chat/completions", { messages: [{ role: "user", content: "a" }], n: 2 ** 31 }, 400, "n"],
    ["logprobs > 20", "/v1/completions", { prompt: "a", logprobs: 50 }, 400, "logprobs"],
    ["prompt + max_tokens over the context", "/v1/completions", { prompt: "a", max_tokens: 100000 }, 400, "max_tokens"],
    ["prompt longer than the context", "/v1/completions", { prompt: long }, 400, null],
    ["stream_options without stream", "/v1/completions", { prompt: "a", stream_options: { include_usage: true } }, 400, "stream_options"],
    ["unknown model", "/v1/completions", { prompt: "a", model: "gpt-9" }, 404, "model"],
    ["suffix", "/v1/completions", { prompt: "a", suffix: "b" }, 400, "suffix"],
    ["logit_bias bad key", "/v1/completions", { prompt: "a", logit_bias: { x: 1 } }, 400, "logit_bias"],
    ["stop is a number", "/v1/completions", { prompt: "a", stop: 5 }, 400, "stop"],
    ["top_k < -1", "/v1/completions", { prompt: "a", top_k: -5 }, 400, "top_k"],
    ["repetition_penalty 0", "/v1/completions", { prompt: "a", repetition_penalty: 0 }, 400, "repetition_penalty"],
    ["min_tokens > max_tokens", "/v1/completions", { prompt: "a", min_tokens: 9, max_tokens: 2 }, 400, "min_tokens"],
    ["seed not an integer", "/v1/completions", { prompt: "a", seed: 1.5 }, 400, "seed"],
    ["chat: messages missing", "/v1/chat/completions", { max_tokens: 2 }, 400, "messages"],
    ["chat: messages empty", "/v1/chat/completions", { messages: [] }, 400, "messages"],
    ["chat: top_logprobs without logprobs", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], top_logprobs: 2 }, 400, "top_logprobs"],
    ["chat: image content", "/v1/chat/completions", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }, 400, "messages.0.content.0"],
    ["chat: json_schema response format without its schema", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema" } }, 400, "response_format.json_schema"],
    ["chat: continue + generation prompt", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], continue_final_message: true, add_generation_prompt: true }, 400, "continue_final_message"],
    ["chat: content is a number", "/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }, 400, null],
    ["chat: tool_choice auto without a tool parser", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "f" } }], tool_choice: "auto" }, 400, "tool_choice"],
    ["chat: tool_choice names a function not among the tools", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "f" } }], tool_choice: { type: "function", function: { name: "g" } } }, 400, "tool_choice"],
    ["chat: tool_choice required without tools", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], tool_choice: "required" }, 400, "tool_choice"],
    ["chat: max_completion_tokens over the context", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], max_completion_tokens: 9999 }, 400, "max_tokens"],
    ["detokenize out of vocabulary", "/detokenize", { tokens: [999999] }, 400, "tokens"],
    ["tokenize without prompt", "/tokenize", { add_special_tokens: true }, 400, null],
  ];
  for (const [name, path, body, status, param] of cases) {
    test(`${name} → ${status}`, async () => {
      const res = await post(path, body, typeof body === "string");
      expect(res.status).toBe(status);
      const json: any = await res.json();
      expect(typeof json.error.message).toBe("string");
      expect(json.error.message.length).toBeGreaterThan(0);
      expect(json.error.code).toBe(status);
      expect(typeof json.error.type).toBe("string");
      if (param !== null) expect(json.error.param).toBe(param);
    });
  }
  test("context-length errors say the numbers", async () => {
    const json: any = await (await post("/v1/completions", { prompt: "a", max_tokens: 100000 })).json();
    expect(json.error.message).toContain("maximum context length is 512 tokens");
    expect(json.error.message).toContain("100001");
  });
  test("unknown fields are ignored; an oversized body is refused with 413", async () => {
    expect((await post("/v1/completions", { prompt: "a", max_tokens: 1, some_future_field: { x: 1 }, user: "u1" })).status).toBe(200);
    const big = await fetch(`${srv.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "x".repeat(33 * 1024 * 1024) }) });
    expect(big.status).toBe(413);
    expect(((await big.json()) as any).error.code).toBe(413);
  });
  test("method, route and not-implemented errors", async () => {
    expect((await fetch(`${srv.url}/v1/completions`)).status).toBe(405);
    expect((await fetch(`${srv.url}/nope`)).status).toBe(404);
    expect((await post("/v1/audio/transcriptions", { file: "x" })).status).toBe(501);
    // A text model refuses embeddings with a reason (test/embeddings.test.ts: the pooling runner serves them).
    expect((await post("/v1/embeddings", { input: "x" })).status).toBe(400);
  });
  test("the SDK maps errors to typed exceptions", async () => {
    let err: unknown;
    try { await client.completions.create({ model: NAME, prompt: "a", temperature: -1 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("temperature");
  });
  test("still serving", async () => {
    const r = await client.completions.create({ model: NAME, prompt: "ok", max_tokens: 2 });
    expect(r.choices.length).toBe(1);
  });
});

describe("structured outputs (response_format, structured_outputs, guided_*)", () => {
  const SCHEMA = { type: "object", properties: { colour: { enum: ["red", "green"] }, ok: { type: "boolean" } }, required: ["colour", "ok"] };

  test("chat with response_format json_schema through the SDK: the content is the schema's JSON", async () => {
    const r = await client.chat.completions.create({
      model: NAME, messages: [{ role: "user", content: "Describe it" }], max_tokens: 60, temperature: 0,
      response_format: { type: "json_schema", json_schema: { name: "thing", schema: SCHEMA } },
      // Compact JSON: a random-weight model would otherwise pad it with whitespace until max_tokens.
      structured_outputs: { disable_any_whitespace: true },
    } as never);
    expect(r.choices[0]!.finish_reason).toBe("stop");
    const json = JSON.parse(r.choices[0]!.message.content!);
    expect(["red", "green"]).toContain(json.colour);
    expect(typeof json.ok).toBe("boolean");
  });

  test("completions: a choice for each of n samples, a streamed regex, and json_object", async () => {
    const choice = await (await post("/v1/completions", { prompt: "Pick", max_tokens: 10, n: 3, temperature: 1, seed: 2, structured_outputs: { choice: ["left", "right", "up"] } })).json() as any;
    expect(choice.choices.map((c: any) => ["left", "right", "up"].includes(c.text))).toEqual([true, true, true]);
    const stream = await post("/v1/completions", { prompt: "Code", max_tokens: 20, stream: true, temperature: 0.8, seed: 1, guided_regex: "[A-Z]{2}-[0-9]{3}" });
    const events = (await stream.text()).split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)));
    expect(events.length).toBeGreaterThan(2);
    expect(events.map((e) => e.choices[0].text).join("")).toMatch(/^[A-Z]{2}-[0-9]{3}$/);
    expect(events.at(-1).choices[0].finish_reason).toBe("stop");
    const obj = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "x" }], max_tokens: 8, response_format: { type: "json_object" } })).json() as any;
    expect(obj.choices[0].message.content.trimStart().startsWith("{")).toBe(true);
    const legacy = await (await post("/v1/completions", { prompt: "a", max_tokens: 10, temperature: 0, guided_choice: ["only"] })).json() as any;
    expect(legacy.choices[0].text).toBe("only");
  });

  test("tool_choice 'required' and a named function force tool calls (the SDK's shapes, whole and streamed)", async () => {
    const tools = [
      { type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: { city: { enum: ["Paris", "Oslo"] }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"] } } },
      { type: "function" as const, function: { name: "get_time", parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"] } } },
    ];
    const messages = [{ role: "user" as const, content: "What now?" }];
    const named = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: { type: "function", function: { name: "get_time" } }, max_tokens: 40, temperature: 0, structured_outputs: undefined } as never) as any;
    const call = named.choices[0].message.tool_calls[0];
    expect(call.function.name).toBe("get_time");
    expect(["UTC", "CET"]).toContain(JSON.parse(call.function.arguments).zone);
    expect(named.choices[0].finish_reason).toBe("stop");
    expect(named.choices[0].message.content).toBeNull();
    const required = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: "required", max_tokens: 200, temperature: 0 });
    // A random-weight model may keep adding calls to the list until max_tokens: then the text is the list so far.
    const r0 = required.choices[0]!;
    if (r0.finish_reason === "length") expect(r0.message.content!.startsWith('[{"name": "get_')).toBe(true);
    else {
      expect(r0.finish_reason).toBe("tool_calls");
      expect(r0.message.tool_calls!.length).toBeGreaterThan(0);
      for (const c of r0.message.tool_calls as any[]) {
        expect(["get_weather", "get_time"]).toContain(c.function.name);
        expect(typeof JSON.parse(c.function.arguments)).toBe("object");
      }
    }
    // Streamed: the same call, whole, in one chunk with the finish reason.
    const stream = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: { type: "function", function: { name: "get_time" } }, max_tokens: 40, temperature: 0, stream: true });
    const streamed: any[] = [];
    for await (const chunk of stream) for (const ch of chunk.choices) if (ch.delta.tool_calls) streamed.push({ calls: ch.delta.tool_calls, finish: ch.finish_reason });
    expect(streamed.length).toBe(1);
    expect(streamed[0].calls[0].function).toEqual({ name: "get_time", arguments: call.function.arguments });
    expect(streamed[0].finish).toBe("stop");
    const both = await post("/v1/chat/completions", { messages, tools, tool_choice: "required", guided_regex: "a" });
    expect(both.status).toBe(400);
  });

  test("bad constraints are 400s naming the field, before anything runs", async () => {
    const cases: [string, object, string, string][] = [
      ["/v1/completions", { prompt: "a", guided_json: { type: "nope" } }, "guided_json", 'guided_json: Unsupported type "nope"'],
      ["/v1/completions", { prompt: "a", structured_outputs: { regex: "[0-" } }, "structured_outputs", "Regex parsing error"],
      ["/v1/completions", { prompt: "a", structured_outputs: { grammar: "root ::= " } }, "structured_outputs", "EBNF parser error"],
      ["/v1/completions", { prompt: "a", guided_regex: "a", guided_choice: ["b"] }, "guided_choice", "give one structured-output constraint"],
      ["/v1/completions", { prompt: "a", structured_outputs: { choice: [] } }, "structured_outputs.choice", "non-empty list"],
      ["/v1/completions", { prompt: "a", structured_outputs: { disable_any_whitespace: true } }, "structured_outputs", "options but no constraint"],
      ["/v1/completions", { prompt: "a", structured_outputs: { regex: "a", whitespace_pattern: "x" } }, "structured_outputs.whitespace_pattern", "not supported"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "a" }], response_format: { type: "json_schema", json_schema: { name: "x" } } }, "response_format.json_schema.schema", "is required"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "a" }], response_format: { type: "yaml" } }, "response_format.type", "'yaml' is not supported"],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "a" }], response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "wat" } } } } } }, "response_format", "Unsupported type"],
    ];
    for (const [path, body, param, message] of cases) {
      const res = await post(path, body);
      const err = (await res.json() as any).error;
      expect({ status: res.status, param: err.param }).toEqual({ status: 400, param });
      expect(err.message).toContain(message);
    }
    expect((await post("/v1/completions", { prompt: "a", max_tokens: 2, guided_regex: "ok" })).status).toBe(200);
  });
});

test("allowed_token_ids, bad_words, truncate_prompt_tokens and cache_salt (vLLM's extras) reach the engine; bad values are 400s", async () => {
  const allowed = [15, 16, 17, 18];
  const r = await (await post("/v1/completions", { prompt: "one two three four five six", max_tokens: 6, ignore_eos: true, temperature: 1, seed: 4, allowed_token_ids: allowed, truncate_prompt_tokens: 3, return_token_ids: true })).json() as any;
  expect(r.usage.prompt_tokens).toBe(3);
  expect(r.choices[0].token_ids.every((t: number) => allowed.includes(t))).toBe(true);
  // "1" is token 16: banned as a bad word, it never comes even when only it and three others are allowed.
  const b = await (await post("/v1/completions", { prompt: "x", max_tokens: 8, ignore_eos: true, temperature: 0, allowed_token_ids: allowed, bad_words: ["1"], return_token_ids: true, cache_salt: "tenant-a" })).json() as any;
  expect(b.choices[0].token_ids.length).toBe(8);
  expect(b.choices[0].token_ids.includes(16)).toBe(false);
  for (const [body, param] of [[{ allowed_token_ids: [999999] }, "allowed_token_ids"], [{ truncate_prompt_tokens: 0 }, "truncate_prompt_tokens"], [{ bad_words: [""] }, "bad_words"], [{ cache_salt: "" }, "cache_salt"], [{ priority: 1 }, "priority"]] as const) {
    const res = await post("/v1/completions", { prompt: "x", ...body });
    expect({ status: res.status, param: ((await res.json()) as any).error.param }).toEqual({ status: 400, param });
  }
});

describe("responses (OpenAI's Responses API)", () => {
  test("text input through the SDK, whole and streamed: the same text; usage; max_output_tokens makes it incomplete", async () => {
    const whole = await client.responses.create({ model: NAME, input: "Hello there", instructions: "Answer briefly.", max_output_tokens: 6, temperature: 0 });
    expect(whole.object).toBe("response");
    expect(whole.status).toBe("incomplete");
    expect(whole.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect(whole.output.map((o) => o.type)).toEqual(["message"]);
    expect(whole.output_text.length).toBeGreaterThan(0);
    expect(whole.usage!.output_tokens).toBe(6);
    const bare = await client.responses.create({ model: NAME, input: "Hello there", max_output_tokens: 1, temperature: 0 });
    expect(whole.usage!.input_tokens).toBeGreaterThan(bare.usage!.input_tokens); // the instructions are in the prompt
    const stream = await client.responses.create({ model: NAME, input: "Hello there", instructions: "Answer briefly.", max_output_tokens: 6, temperature: 0, stream: true });
    const types: string[] = [];
    let text = "", seq = -1, final: any = null;
    for await (const ev of stream) {
      types.push(ev.type);
      expect(ev.sequence_number).toBe(seq + 1);
      seq = ev.sequence_number;
      if (ev.type === "response.output_text.delta") text += ev.delta;
      if (ev.type === "response.incomplete") final = ev.response;
    }
    expect(text).toBe(whole.output_text);
    expect(types.slice(0, 4)).toEqual(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]);
    expect(types.slice(-4)).toEqual(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete"]);
    expect(final.output[0].content[0].text).toBe(whole.output_text);
  });

  test("a conversation with function calls and their outputs; a forced call comes back as a function_call item; text.format", async () => {
    const tools = [{ type: "function" as const, name: "get_time", parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"] }, strict: true }];
    const input = [
      { role: "developer" as const, content: "You tell the time." },
      { role: "user" as const, content: [{ type: "input_text" as const, text: "Time in Paris?" }] },
      { type: "function_call" as const, call_id: "call_1", name: "get_time", arguments: '{"zone": "CET"}' },
      { type: "function_call_output" as const, call_id: "call_1", output: "12:00" },
      { role: "user" as const, content: "And in London?" },
    ];
    const r = await client.responses.create({ model: NAME, input, tools, tool_choice: { type: "function", name: "get_time" }, max_output_tokens: 30, temperature: 0 });
    expect(r.status).toBe("completed");
    const call = r.output.find((o) => o.type === "function_call") as any;
    expect(call.name).toBe("get_time");
    expect(["UTC", "CET"]).toContain(JSON.parse(call.arguments).zone);
    const json = await client.responses.create({ model: NAME, input: "Report", max_output_tokens: 40, temperature: 0, text: { format: { type: "json_schema", name: "r", schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] } } }, structured_outputs: { disable_any_whitespace: true } } as never) as any;
    expect(typeof JSON.parse(json.output_text).ok).toBe("boolean");
  });

  test("what is not supported is a 400 naming the field", async () => {
    const cases: [object, string][] = [
      [{ input: "x", previous_response_id: "resp_1" }, "previous_response_id"],
      [{ input: "x", background: true }, "background"],
      [{ input: "x", tools: [{ type: "web_search" }] }, "tools.0"],
      [{ input: [{ type: "image_generation_call" }] }, "input.0.type"],
      [{ input: [{ role: "tool", content: "x" }] }, "input.0.role"],
      [{ input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] }, "input.0.content.0"],
      [{ input: [] }, "input"],
      [{ input: "x", n: 2 }, "n"],
      [{ input: "x", text: { format: { type: "json_schema", name: "x", schema: { type: "nope" } } } }, "response_format"],
    ];
    for (const [body, param] of cases) {
      const res = await post("/v1/responses", body);
      expect({ status: res.status, param: ((await res.json()) as any).error.param }).toEqual({ status: 400, param });
    }
  });
});

describe("load, disconnects and metrics", () => {
  test("200 concurrent streaming requests all complete", async () => {
    const runs = Array.from({ length: 200 }, async (_, i) => {
      let finish: string | null = null, n = 0;
      for await (const c of await client.completions.create({ model: NAME, prompt: `request ${i}`, max_tokens: 6, temperature: 0.7, seed: i, stream: true })) {
        n += c.choices.length;
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      return { finish, n };
    });
    const results = await Promise.all(runs);
    expect(results.every((r) => r.finish === "length" && r.n >= 1)).toBe(true);
  }, 120_000);

  test("100 requests aborted mid-stream leave no used KV blocks and zero gauges", async () => {
    const aborts = Array.from({ length: 100 }, async (_, i) => {
      const ctl = new AbortController();
      const res = await fetch(`${srv.url}/v1/completions`, {
        method: "POST", headers: { "Content-Type": "application/json" }, signal: ctl.signal,
        body: JSON.stringify({ prompt: `abort me ${i}`, max_tokens: 400, ignore_eos: true, stream: true }),
      });
      const reader = res.body!.getReader();
      await reader.read();
      ctl.abort();
      await reader.cancel().catch(() => {});
    });
    await Promise.all(aborts);
    let m: Record<string, number> = {};
    for (let tries = 0; tries < 100; tries++) {
      m = await metrics();
      if (m["vllm:num_requests_running"] === 0 && m["vllm:num_requests_waiting"] === 0 && m["vllm:kv_cache_usage_perc"] === 0) break;
      await Bun.sleep(50);
    }
    expect(m["vllm:num_requests_running"]).toBe(0);
    expect(m["vllm:num_requests_waiting"]).toBe(0);
    expect(m["vllm:kv_cache_usage_perc"]).toBe(0);
    expect(m['vllm:request_success_total{finished_reason="abort"}']).toBeGreaterThanOrEqual(100);
  }, 120_000);

  test("/metrics counters equal what was sent", async () => {
    const before = await metrics();
    const prompts = ["alpha beta", "gamma", "delta epsilon zeta"];
    let promptTokens = 0;
    for (const p of prompts) promptTokens += (await (await post("/tokenize", { prompt: p })).json() as any).count;
    await client.completions.create({ model: NAME, prompt: prompts, max_tokens: 7, temperature: 0 });
    await client.completions.create({ model: NAME, prompt: "x", max_tokens: 3, temperature: 0, n: 2 });
    const after = await metrics();
    const d = (k: string) => after[k]! - (before[k] ?? 0);
    expect(d("vllm:prompt_tokens_total")).toBe(promptTokens + 1);
    expect(d("vllm:generation_tokens_total")).toBe(3 * 7 + 2 * 3);
    expect(d('vllm:request_success_total{finished_reason="length"}')).toBe(4);
    expect(d("vllm:e2e_request_latency_seconds_count")).toBe(4);
    expect(d("vllm:time_to_first_token_seconds_count")).toBe(4);
    expect(after["vllm:prefix_cache_queries_total"]).toBeGreaterThan(0);
  });
});

describe("vLLM's return_tokens_as_token_ids and include_reasoning", () => {
  test("return_tokens_as_token_ids: logprobs name tokens token_id:N (completions and chat, whole and streamed)", async () => {
    const completion: any = await (await post("/v1/completions", { prompt: "Once upon", max_tokens: 5, temperature: 0, logprobs: 2, return_token_ids: true, return_tokens_as_token_ids: true })).json();
    const ids: number[] = completion.choices[0].token_ids, lp = completion.choices[0].logprobs;
    expect(lp.tokens).toEqual(ids.map((i) => `token_id:${i}`));
    for (const top of lp.top_logprobs) for (const k of Object.keys(top)) expect(k).toMatch(/^token_id:\d+$/);
    // text_offset still counts the text.
    const plain: any = await (await post("/v1/completions", { prompt: "Once upon", max_tokens: 5, temperature: 0, logprobs: 2 })).json();
    expect(lp.text_offset).toEqual(plain.choices[0].logprobs.text_offset);
    expect(plain.choices[0].logprobs.tokens.join("")).toBe(plain.choices[0].text);
    const chatBody = { messages: [{ role: "user", content: "Hi" }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 1, return_token_ids: true, return_tokens_as_token_ids: true };
    const chat: any = await (await post("/v1/chat/completions", chatBody)).json();
    const content = chat.choices[0].logprobs.content;
    expect(content.map((c: any) => c.token)).toEqual(chat.choices[0].token_ids.map((i: number) => `token_id:${i}`));
    expect(content[0].bytes).toEqual(Array.from(new TextEncoder().encode(content[0].token)));
    expect(content[0].top_logprobs[0].token).toMatch(/^token_id:\d+$/);
    // vLLM's return_token_ids on chat: the prompt's ids too, and streamed ids that join to the whole answer's.
    expect(chat.prompt_token_ids.length).toBe(chat.usage.prompt_tokens);
    const sse = await (await post("/v1/chat/completions", { ...chatBody, stream: true })).text();
    const streamed: string[] = [], streamedIds: number[] = [];
    let promptIds: number[] | null = null;
    for (const line of sse.split("\n")) if (line.startsWith("data: {")) {
      const chunk = JSON.parse(line.slice(6));
      promptIds ??= chunk.prompt_token_ids ?? null;
      for (const c of chunk.choices) { streamed.push(...(c.logprobs?.content ?? []).map((t: any) => t.token)); streamedIds.push(...(c.token_ids ?? [])); }
    }
    expect(streamed).toEqual(content.map((c: any) => c.token));
    expect(streamedIds).toEqual(chat.choices[0].token_ids);
    expect(promptIds).toEqual(chat.prompt_token_ids);
  });

  test("--return-tokens-as-token-ids makes it the default; include_reasoning false leaves the reasoning out", async () => {
    // deepseek_r1: the answer starts inside the reasoning, so the random model's whole output is reasoning.
    const s = await startServer([model, "--max-model-len", "256", "--reasoning-parser", "deepseek_r1", "--return-tokens-as-token-ids"]);
    try {
      const send = async (b: object) => (await fetch(`${s.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) }));
      const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 6, temperature: 0, logprobs: true };
      const full: any = await (await send(body)).json();
      expect(full.choices[0].message.reasoning_content.length).toBeGreaterThan(0);
      expect(full.choices[0].logprobs.content[0].token).toMatch(/^token_id:\d+$/);
      const asText: any = await (await send({ ...body, return_tokens_as_token_ids: false })).json();
      expect(asText.choices[0].logprobs.content[0].token).not.toMatch(/^token_id:/);
      const hidden: any = await (await send({ ...body, include_reasoning: false })).json();
      expect(hidden.choices[0].message.reasoning_content).toBeNull();
      expect(hidden.choices[0].message.content).toBe(full.choices[0].message.content);
      const sse = await (await send({ ...body, include_reasoning: false, stream: true })).text();
      expect(sse).not.toContain("reasoning_content");
      expect(sse).toContain("data: [DONE]");
    } finally {
      expect(await s.stop()).toBe(0);
    }
  }, 60_000);
});

describe("API key", () => {
  test("401 without or with a wrong key; /health public", async () => {
    const s = await startServer([model, "--api-key", "sekret", "--max-model-len", "128"]);
    try {
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
      const body = JSON.stringify({ prompt: "a", max_tokens: 1 });
      const h = { "Content-Type": "application/json" };
      const none = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: h, body });
      expect(none.status).toBe(401);
      expect((await none.json() as any).error.code).toBe(401);
      expect((await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { ...h, Authorization: "Bearer wrong" }, body })).status).toBe(401);
      expect((await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { ...h, Authorization: "Bearer sekret" }, body })).status).toBe(200);
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "wrong", maxRetries: 0 });
      let err: unknown;
      try { await c.completions.create({ model, prompt: "a", max_tokens: 1 }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    } finally {
      expect(await s.stop("SIGINT")).toBe(0);
    }
  }, 60_000);
});

import { expect, test } from "bun:test";
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { engineOptionsFromFlags, humanIntFlag } from "../src/cli.ts";
import { FAST_MODEL, SERVER_MODEL, startServer, tempDir, tinyModel } from "./helpers.ts";

const cli = join(import.meta.dir, "..", "src", "cli.ts");
const run = (args: string[]) => {
  const p = Bun.spawnSync([process.execPath, cli, ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
};

test("generate prints only the completion on stdout, deterministically", () => {
  const model = tinyModel(SERVER_MODEL);
  const a = run(["generate", model, "--prompt", "Hello", "--max-tokens", "6", "--temperature", "0"]);
  expect(a.code).toBe(0);
  const b = run(["generate", model, "--prompt", "Hello", "--max-tokens", "6", "--temperature", "0", "--device", "cpu"]);
  expect(b.out).toBe(a.out);
  expect(a.out.endsWith("\n")).toBe(true);
  expect(a.err).not.toContain(a.out.trim() || "\u0000");
  const chat = run(["generate", model, "--prompt", "Hi", "--max-tokens", "3", "--chat", "--temperature", "0.5", "--seed", "3"]);
  expect(chat.code).toBe(0);
  // Speculative decoding changes how many steps it takes, not what comes out.
  const spec = run(["generate", model, "--prompt", "Hello", "--max-tokens", "6", "--temperature", "0", "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 2}']);
  expect(spec.out).toBe(a.out);
  expect(spec.err).toContain("speculative decoding: ngram, 3 draft tokens, n-grams of 2 tokens");
}, 40_000); // four processes of ≈ 1.2 s each: more than bun's 5 s default on a loaded 2-core machine

test("usage errors exit 2 with a message; engine errors exit 1", () => {
  const bad = run(["generate", "--prompt", "x", "--bogus"]);
  expect(bad.code).toBe(2);
  expect(bad.err).toContain("vbun: error:");
  expect(run(["generate"]).err).toContain("needs --prompt");
  expect(run(["frobnicate"]).code).toBe(2);
  const missing = run(["generate", "/nonexistent/model", "--prompt", "x"]);
  expect(missing.code).toBe(1);
  expect(missing.err).toContain("config.json: not found");
  const dev = run(["generate", tinyModel(FAST_MODEL), "--prompt", "x", "--device", "tpu"]);
  expect(dev.err).toContain("--device: must be auto, cpu or cuda");
  const json = run(["generate", "--prompt", "x", "--speculative-config", "{ngram"]);
  expect({ code: json.code, said: json.err.includes("--speculative-config: expected a JSON object") }).toEqual({ code: 2, said: true });
  const method = run(["generate", tinyModel(FAST_MODEL), "--prompt", "x", "--speculative-config", '{"method": "eagle", "num_speculative_tokens": 2}']);
  expect({ code: method.code, said: method.err.includes(`--speculative-config: method "eagle" is not supported`) }).toEqual({ code: 1, said: true });
}, 30_000);

test("--kv-cache-memory-bytes and --max-model-len take vLLM's human-readable integers; the KV cache is then that size", () => {
  expect([humanIntFlag("x", "4096"), humanIntFlag("x", "32k"), humanIntFlag("x", "32K"), humanIntFlag("x", "2.5k"), humanIntFlag("x", "1G"), humanIntFlag("x", "1g")])
    .toEqual([4096, 32000, 32768, 2500, 2 ** 30, 1e9]);
  for (const bad of ["1.5K", "2.0001k", "-5", "12x", ""]) expect(() => humanIntFlag("kv-cache-memory-bytes", bad)).toThrow("--kv-cache-memory-bytes: expected an integer");
  const opts = engineOptionsFromFlags({ "kv-cache-memory-bytes": "3M", "max-model-len": "1K" }, undefined);
  expect([opts.kvCacheMemoryBytes, opts.maxModelLen]).toEqual([3 * 2 ** 20, 1024]);
  // A block: layers × (K and V) × KV heads × head_dim × 4 bytes (CPU f32) × 16 tokens.
  const llm = new LLM({ model: tinyModel(FAST_MODEL), maxModelLen: 256, kvCacheMemoryBytes: 3 * 2 ** 20, log: () => {} });
  try {
    expect(llm.engine.info.numBlocks * llm.engine.modelConfig.numLayers * 2 * llm.engine.modelConfig.numKvHeads * llm.engine.modelConfig.headDim * 4 * 16).toBeLessThanOrEqual(3 * 2 ** 20);
    expect(llm.engine.info.numBlocks).toBe(Math.floor((3 * 2 ** 20) / (llm.engine.modelConfig.numLayers * 2 * llm.engine.modelConfig.numKvHeads * llm.engine.modelConfig.headDim * 4 * 16)));
  } finally {
    llm.close();
  }
  expect(() => new LLM({ model: tinyModel(FAST_MODEL), maxModelLen: 256, kvCacheMemoryBytes: 20_000, log: () => {} })).toThrow(/--kv-cache-memory-bytes: 20000 bytes hold 4 KV blocks of 4096 bytes; one 256-token sequence needs 16 \(65536 bytes\)/);
}, 30_000);

test("serve --help lists every flag with its default", () => {
  const h = run(["serve", "--help"]);
  expect(h.code).toBe(0);
  for (const flag of ["--host", "--port", "--served-model-name", "--api-key", "--device", "--dtype", "--max-model-len", "--max-num-seqs",
    "--max-num-batched-tokens", "--block-size", "--gpu-memory-utilization", "--num-gpu-blocks-override", "--enable-prefix-caching",
    "--no-enable-prefix-caching", "--enforce-eager", "--tensor-parallel-size", "--speculative-config", "--seed", "--chat-template", "--max-log-len", "--log-level",
    "--tokenizer", "--trust-remote-code", "--quantization", "--kv-cache-dtype", "--enable-log-requests", "--disable-log-requests", "--max-loras", "--disable-log-stats", "--return-tokens-as-token-ids",
    "--kv-cache-memory-bytes", "--disable-hybrid-kv-cache-manager", "--max-waiting-requests"])
    expect(h.out).toContain(flag);
  expect(h.out).toContain("default 8000");
});

test("--tokenizer DIR: the tokenizer (and its chat template) from another directory; vllm serve's --trust-remote-code and --enable-log-requests are accepted", async () => {
  // A checkpoint without tokenizer files, its tokenizer elsewhere.
  const model = tinyModel(SERVER_MODEL);
  const bare = join(tempDir("no-tokenizer"), "model"), tok = join(tempDir("no-tokenizer"), "tokenizer");
  mkdirSync(bare, { recursive: true });
  mkdirSync(tok, { recursive: true });
  for (const f of readdirSync(model)) copyFileSync(join(model, f), join(f.startsWith("tokenizer") ? tok : bare, f));
  expect(() => new LLM({ model: bare, log: () => {} })).toThrow("tokenizer.json: not found");
  const greedy = (opts: Record<string, unknown>) => {
    const llm = new LLM({ maxModelLen: 256, log: () => {}, ...opts });
    try { return llm.generate(["Hello there"], { max_tokens: 6, temperature: 0 })[0]!.outputs[0]!.text; } finally { llm.close(); }
  };
  expect(greedy({ model: bare, tokenizer: tok })).toBe(greedy({ model }));
  const s = await startServer([bare, "--tokenizer", tok, "--max-model-len", "256", "--trust-remote-code", "--enable-log-requests"]);
  try {
    const res: any = await (await fetch(`${s.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0 }) })).json();
    expect(res.choices[0].message.content.length).toBeGreaterThan(0);
    // Structured outputs read the vocabulary from the tokenizer's directory too.
    const guided: any = await (await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "x", max_tokens: 8, guided_choice: ["yes", "no"] }) })).json();
    expect(["yes", "no"]).toContain(guided.choices[0].text);
    expect(s.stderr()).toContain("--trust-remote-code has no effect");
    expect(s.stderr()).toMatch(/request cmpl-\S+: prompts=/);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("SIGTERM lets an in-flight request finish, then exits 0", async () => {
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "512"]);
  const pending = fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "go", max_tokens: 300, ignore_eos: true }) });
  await Bun.sleep(100);
  s.proc.kill("SIGTERM");
  const res = await pending;
  expect(res.status).toBe(200);
  expect((await res.json() as any).usage.completion_tokens).toBe(300);
  expect(await s.proc.exited).toBe(0);
  expect(s.stderr()).toContain("SIGTERM");
}, 60_000);

test("--log-level debug logs requests, cut to --max-log-len; a full waiting queue answers 503", async () => {
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "512", "--log-level", "debug", "--max-log-len", "5", "--max-num-seqs", "1", "--max-waiting-requests", "2"]);
  try {
    const send = (prompt: string, max = 200) => fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt, max_tokens: max, ignore_eos: true }) });
    const statuses = await Promise.all(Array.from({ length: 8 }, (_, i) => send(`queue test ${i}`).then(async (r) => ({ status: r.status, body: (await r.json()) as any }))));
    const rejected = statuses.filter((r) => r.status === 503);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected[0]!.body.error.message).toContain("overloaded");
    expect(statuses.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(2);
    expect((await send("afterwards", 2)).status).toBe(200);
    expect(s.stderr()).toContain('prompts=["queue"…(+');
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 120_000);

test("--reasoning-parser and tool-call parsing: answers carry reasoning_content / tool_calls; stream joins to the same text", async () => {
  expect(run(["serve", "--reasoning-parser", "bogus"]).code).toBe(2);
  expect(run(["serve", "--enable-auto-tool-choice"]).err).toContain("--enable-auto-tool-choice needs --tool-call-parser");
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", "--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]);
  try {
    const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0 };
    const post = (b: object) => fetch(`${s.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
    const full: any = await (await post(body)).json();
    const msg = full.choices[0].message;
    expect("reasoning_content" in msg).toBe(true);
    // The random model does not open a <think> block: all of it is content.
    expect(msg.reasoning_content).toBeNull();
    const sse = await (await post({ ...body, stream: true })).text();
    let content = "";
    for (const line of sse.split("\n")) if (line.startsWith("data: {")) for (const c of JSON.parse(line.slice(6)).choices) content += c.delta.content ?? "";
    expect(content).toBe(msg.content);
    // With tools and tool_choice auto the answer goes through the hermes parser (the random model calls none).
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const withTools: any = await (await post({ ...body, tools, tool_choice: "auto" })).json();
    expect(withTools.choices[0].message.tool_calls).toEqual([]);
    expect(withTools.choices[0].finish_reason).toBe("length");
    // Structured outputs apply after the reasoning block: lifting <think> (151667) then </think> (151668) makes
    // the model open and close one, and the answer after it is still one of the choices.
    const guided = async (extra: object) => (await (await post({ ...body, max_tokens: 12, guided_choice: ["yes", "no"], ...extra })).json()) as any;
    const reasoned = await guided({ logit_bias: { 151667: 30, 151668: 60 }, logprobs: true });
    expect(reasoned.choices[0].logprobs.content.slice(0, 2).map((t: any) => t.token)).toEqual(["<think>", "</think>"]);
    expect(["yes", "no"]).toContain(reasoned.choices[0].message.content);
    expect(reasoned.choices[0].finish_reason).toBe("stop");
    const direct = await guided({});
    expect(["yes", "no"]).toContain(direct.choices[0].message.content);
    expect(direct.choices[0].message.reasoning_content).toBeNull();
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

/** A chat completion's [reasoning_content, content]: the whole answer's, and its stream's deltas joined. */
async function reasoningAndContent(url: string, body: object): Promise<{ whole: unknown[]; streamed: string[] }> {
  const post = (b: object) => fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
  const msg: any = (await (await post(body)).json() as any).choices[0].message;
  let reasoning = "", content = "";
  for (const line of (await (await post({ ...body, stream: true })).text()).split("\n"))
    if (line.startsWith("data: {")) for (const c of JSON.parse(line.slice(6)).choices) { reasoning += c.delta.reasoning_content ?? ""; content += c.delta.content ?? ""; }
  return { whole: [msg.reasoning_content, msg.content], streamed: [reasoning, content] };
}

test("--reasoning-parser mistral: Magistral's [THINK] … [/THINK] block becomes reasoning_content, whole and streamed", async () => {
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", "--reasoning-parser", "mistral"]);
  try {
    // This tokenizer spells the tags in several tokens, so the regex shapes the whole output (no reasoning boundary to skip).
    const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 40, temperature: 0, structured_outputs: { regex: "\\[THINK\\]add 2 and 2\\[/THINK\\]It is 4\\." } };
    // Special tokens are kept for this parser, the EOS that ended the answer not among them.
    expect(await reasoningAndContent(s.url, body)).toEqual({ whole: ["add 2 and 2", "It is 4."], streamed: ["add 2 and 2", "It is 4."] });
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("GPT-OSS answers in Harmony channels: analysis → reasoning_content (openai_gptoss, the default for it), commentary to=functions.NAME → tool_calls (--tool-call-parser openai)", async () => {
  // A tiny GPT-OSS with the Qwen3 tokenizer: the markers are plain text there, so a regex shapes the whole answer.
  const s = await startServer([tinyModel({ arch: "gpt_oss", seed: 21, hiddenSize: 32, numHeads: 2, numKvHeads: 1, headDim: 16, numLayers: 2 }), "--max-model-len", "1024",
    "--enable-auto-tool-choice", "--tool-call-parser", "openai"]);
  try {
    const post = (b: object) => fetch(`${s.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
    const esc = (t: string) => t.replace(/[|.{}()[\]]/g, (c) => `\\${c}`);
    const answer = "<|channel|>analysis<|message|>add 2 and 2<|end|><|start|>assistant<|channel|>final<|message|>It is 4.";
    const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 80, temperature: 0, structured_outputs: { regex: esc(answer) } };
    expect(await reasoningAndContent(s.url, body)).toEqual({ whole: ["add 2 and 2", "It is 4."], streamed: ["add 2 and 2", "It is 4."] });
    const call = "<|channel|>analysis<|message|>weather<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>";
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const r: any = await (await post({ ...body, max_tokens: 200, tools, structured_outputs: { regex: esc(call) } })).json();
    expect(r.error).toBeUndefined();
    expect(r.choices[0].finish_reason).toBe("tool_calls");
    expect([r.choices[0].message.reasoning_content, r.choices[0].message.content]).toEqual(["weather", null]);
    expect(r.choices[0].message.tool_calls.map((t: any) => t.function)).toEqual([{ name: "get_weather", arguments: "{\"city\":\"Paris\"}" }]);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("reasoning_effort (chat) and reasoning.effort (responses) reach the chat template, and earlier reasoning as `thinking`, as GPT-OSS's reads them", async () => {
  const template = join(tempDir("effort"), "template.jinja");
  writeFileSync(template, "<|start|>system<|message|>Reasoning: {% if reasoning_effort is defined %}{{ reasoning_effort }}{% else %}medium{% endif %}<|end|>"
    + "{% for m in messages %}{% if m.thinking is defined %}<|start|>{{ m.role }}<|channel|>analysis<|message|>{{ m.thinking }}<|end|>{% endif %}"
    + "<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}");
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", "--chat-template", template]);
  try {
    const post = (path: string, b: object) => fetch(`${s.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
    const promptOf = async (extra: object) => {
      const r: any = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_tokens: 1, return_token_ids: true, ...extra })).json();
      return (await (await post("/detokenize", { tokens: r.prompt_token_ids })).json() as any).prompt as string;
    };
    expect(await promptOf({})).toContain("Reasoning: medium<|end|>");
    expect(await promptOf({ reasoning_effort: "high" })).toContain("Reasoning: high<|end|>");
    // chat_template_kwargs win, as a more specific setting.
    expect(await promptOf({ reasoning_effort: "high", chat_template_kwargs: { reasoning_effort: "low" } })).toContain("Reasoning: low<|end|>");
    // An earlier answer's reasoning_content is the template's `thinking` too (GPT-OSS's name for it).
    const turns = [{ role: "user", content: "2+2?" }, { role: "assistant", content: "4", reasoning_content: "add them" }, { role: "user", content: "and 3+3?" }];
    expect(await promptOf({ messages: turns })).toContain("<|start|>assistant<|channel|>analysis<|message|>add them<|end|><|start|>assistant<|message|>4<|end|>");
    const bad = await post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], reasoning_effort: "extreme" });
    expect([bad.status, ((await bad.json()) as any).error.param]).toEqual([400, "reasoning_effort"]);
    const resp = await post("/v1/responses", { input: "Hi", max_output_tokens: 1, reasoning: { effort: "low" } });
    expect(resp.status).toBe(200);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("when the engine fails mid-run the server answers 503 (health too) instead of crashing or hanging", async () => {
  // Rank 1 of a 2-rank CPU tensor-parallel engine throws at its third step (fault injection).
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", "--tensor-parallel-size", "2"], { VBUN_TP_FAIL_AT: "1:2" });
  try {
    const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "Hello", max_tokens: 20, ignore_eos: true }) });
    expect(res.status).toBe(503);
    const body: any = await res.json();
    expect(body.error.message).toContain("tensor-parallel rank 1 failed: injected failure");
    expect((await fetch(`${s.url}/health`)).status).toBe(503);
    const again = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "x", max_tokens: 2 }) });
    expect(again.status).toBe(503);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("--enable-prompt-tokens-details reports prefix-cache hits in usage", async () => {
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", "--enable-prompt-tokens-details"]);
  try {
    const prompt = Array.from({ length: 100 }, (_, i) => 1000 + i);
    const send = async () => ((await (await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt, max_tokens: 2 }) })).json()) as any).usage;
    const first = await send(), second = await send();
    expect(first.prompt_tokens_details.cached_tokens).toBe(0);
    // 100 prompt tokens in 16-token blocks: 6 full blocks are cached (never the last token).
    expect(second.prompt_tokens_details.cached_tokens).toBe(96);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

/**
 * A server with `--tool-call-parser parser`: structured outputs (`constraint`) make the random model write a
 * call in that parser's format; the whole answer and the streamed one must carry exactly `expected` as
 * tool_calls (arguments compared as JSON). `more` checks what else a parser promises, on the same server.
 */
async function checkToolCallParser(parser: string, constraint: object, expected: [string, unknown][], more?: (post: (b: object) => Promise<Response>, body: Record<string, unknown>) => Promise<void>): Promise<void> {
  const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "512", "--enable-auto-tool-choice", "--tool-call-parser", parser]);
  try {
    const post = (b: object) => fetch(`${s.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } } } } }];
    // Room for the call however the random model tokenizes it (phi4_mini_json's took 55 tokens, and once, in CI, over 64).
    const body = { messages: [{ role: "user", content: "Weather in Paris?" }], max_tokens: 192, temperature: 0, tools, tool_choice: "auto", structured_outputs: constraint };
    const full: any = await (await post(body)).json();
    expect(full.choices[0].finish_reason).toBe("tool_calls");
    expect(full.choices[0].message.tool_calls.map((c: any) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual(expected);
    const sse = await (await post({ ...body, stream: true })).text();
    const streamed: any[] = [];
    for (const line of sse.split("\n")) if (line.startsWith("data: {")) for (const c of JSON.parse(line.slice(6)).choices) streamed.push(...(c.delta.tool_calls ?? []));
    expect(streamed.map((c) => [c.function.name, JSON.parse(c.function.arguments)])).toEqual(expected);
    await more?.(post, body);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}

test("--tool-call-parser llama3_json: an answer of JSON calls becomes tool_calls, whole and streamed", async () => {
  const call = {
    type: "object", additionalProperties: false, required: ["name", "parameters"],
    properties: { name: { const: "get_weather" }, parameters: { type: "object", additionalProperties: false, required: ["city"], properties: { city: { enum: ["Paris"] } } } },
  };
  await checkToolCallParser("llama3_json", { json: call, disable_any_whitespace: true }, [["get_weather", { city: "Paris" }]], async (post, body) => {
    expect(((await (await post(body)).json()) as any).choices[0].message.content).toBeNull();
    // Without the schema the random model answers in text: content, no calls.
    const text: any = await (await post({ ...body, structured_outputs: undefined, max_tokens: 8 })).json();
    expect(text.choices[0].message.tool_calls).toEqual([]);
    expect(text.choices[0].message.content.length).toBeGreaterThan(0);
  });
}, 60_000);

test("--tool-call-parser glm45: <tool_call>name with <arg_key>/<arg_value> pairs becomes tool_calls, typed by the request's tools", async () => {
  // The tool's schema makes days an integer: its text "3" becomes 3.
  await checkToolCallParser("glm45", { regex: "<tool_call>get_weather<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>" }, [["get_weather", { days: 3 }]]);
}, 60_000);

test("--tool-call-parser pythonic: an answer that is a Python list of calls becomes tool_calls", async () => {
  await checkToolCallParser("pythonic", { regex: `\\[get_weather\\(city='Paris', days=3\\)\\]` }, [["get_weather", { city: "Paris", days: 3 }]]);
}, 60_000);

test("--tool-call-parser mistral: [TOOL_CALLS] and a JSON list, or name[ARGS]{…}, become tool_calls with Mistral's 9-character ids", async () => {
  await checkToolCallParser("mistral", { regex: '\\[TOOL_CALLS\\] \\[\\{"name": "get_weather", "arguments": \\{"city": "Paris", "days": 3\\}\\}\\]' }, [["get_weather", { city: "Paris", days: 3 }]], async (post, body) => {
    const v11: any = await (await post({ ...body, structured_outputs: { regex: '\\[TOOL_CALLS\\]get_weather\\[ARGS\\]\\{"city": "Paris"\\}' } })).json();
    expect(v11.choices[0].message.tool_calls.map((c: any) => [c.id.length, c.function.name, JSON.parse(c.function.arguments)])).toEqual([[9, "get_weather", { city: "Paris" }]]);
    // A forced call under this parser carries the same kind of id (Mistral's templates refuse others).
    const forced: any = await (await post({ ...body, structured_outputs: undefined, tool_choice: { type: "function", function: { name: "get_weather" } } })).json();
    expect(forced.choices[0].message.tool_calls[0].id).toMatch(/^[A-Za-z0-9]{9}$/);
  });
}, 60_000);

test("--tool-call-parser phi4_mini_json and granite: functools[…], and a JSON-list answer after <tool_call>, become tool_calls", async () => {
  const list = '\\[\\{"name": "get_weather", "arguments": \\{"city": "Paris", "days": 3\\}\\}\\]';
  await checkToolCallParser("phi4_mini_json", { regex: `Let me check\\. functools${list}` }, [["get_weather", { city: "Paris", days: 3 }]], async (post, body) => {
    expect(((await (await post(body)).json()) as any).choices[0].message.content).toBe("Let me check.");
  });
  await checkToolCallParser("granite", { regex: `<tool_call>${list}` }, [["get_weather", { city: "Paris", days: 3 }]]);
}, 60_000);

test("--tool-call-parser qwen3_coder: <function=…><parameter=…> blocks become tool_calls, typed by the request's tools", async () => {
  // days is "3" in the text; the tool's schema makes it the integer 3.
  const xml = "<function=get_weather>\\n<parameter=city>\\nParis\\n</parameter>\\n<parameter=days>\\n3\\n</parameter>\\n</function>";
  await checkToolCallParser("qwen3_coder", { regex: xml }, [["get_weather", { city: "Paris", days: 3 }]]);
}, 60_000);

/** --generation-config: the model's recommended sampling defaults for the fields a request leaves out. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadSamplingDefaults } from "../src/engine/generation-config.ts";
import { LLM } from "../src/engine/llm.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { samplingParamsFrom } from "../src/server/generation.ts";
import { FAST_MODEL, SERVER_MODEL, startServer, tempDir, tinyModel, type RunningServer } from "./helpers.ts";

/** A copy of a tiny model whose generation_config.json recommends greedy decoding and 5 new tokens. */
function modelWithGenerationConfig(base: string): string {
  const dir = join(tempDir("gen-config"), "model");
  cpSync(base, dir, { recursive: true });
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [1], do_sample: true, temperature: 0, top_k: 1, top_p: 0.9, max_new_tokens: 5, transformers_version: "4.51.0" }));
  return dir;
}

describe("loadSamplingDefaults", () => {
  const dir = modelWithGenerationConfig(tinyModel(FAST_MODEL));
  test("auto reads the sampling fields of the model's file and ignores the rest; vllm reads nothing", () => {
    expect(loadSamplingDefaults("auto", dir)).toEqual({ temperature: 0, top_k: 1, top_p: 0.9, max_tokens: 5 });
    expect(loadSamplingDefaults("vllm", dir)).toEqual({});
    expect(loadSamplingDefaults("auto", tinyModel(FAST_MODEL))).toEqual({}); // eos and bos ids only
  });
  test("a folder, and overrides on top", () => {
    const other = tempDir("gen-config-folder");
    writeFileSync(join(other, "generation_config.json"), JSON.stringify({ temperature: 0.7, repetition_penalty: 1.1 }));
    expect(loadSamplingDefaults(other, dir, { top_p: 0.5, min_p: 0.1 })).toEqual({ temperature: 0.7, repetition_penalty: 1.1, top_p: 0.5, min_p: 0.1 });
    expect(loadSamplingDefaults("vllm", dir, { max_new_tokens: 9 })).toEqual({ max_tokens: 9 });
  });
  test("bad input names the file or flag and the field", () => {
    const bad = tempDir("gen-config-bad");
    writeFileSync(join(bad, "generation_config.json"), JSON.stringify({ temperature: -1 }));
    expect(() => loadSamplingDefaults(bad, dir)).toThrow(/--generation-config: .*generation_config\.json: temperature: must be/);
    writeFileSync(join(bad, "generation_config.json"), "{ nope");
    expect(() => loadSamplingDefaults(bad, dir)).toThrow(/generation_config\.json is not valid JSON/);
    expect(() => loadSamplingDefaults(join(bad, "missing"), dir)).toThrow(/generation_config\.json not found/);
    expect(() => loadSamplingDefaults("auto", dir, { beams: 4 })).toThrow(/--override-generation-config: 'beams' is not a sampling field/);
    expect(() => loadSamplingDefaults("auto", dir, { max_new_tokens: 0 })).toThrow(/--override-generation-config: .*max_new_tokens: must be an integer >= 1/);
  });
});

describe("the defaults in the engine and the server", () => {
  test("LLM: getDefaultSamplingParams, plain-object params and none take them; a SamplingParams is kept as given", () => {
    const llm = new LLM({ model: modelWithGenerationConfig(tinyModel(FAST_MODEL)), maxModelLen: 64, log: () => {} });
    const d = llm.getDefaultSamplingParams();
    expect([d.temperature, d.top_k, d.top_p, d.max_tokens]).toEqual([0, 1, 0.9, 5]);
    const greedy = llm.generate([[3, 4, 5]], new SamplingParams({ temperature: 0, max_tokens: 5 }), { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    expect(llm.generate([[3, 4, 5]], undefined, { useTqdm: false })[0]!.outputs[0]!.tokenIds).toEqual(greedy);
    expect(llm.generate([[3, 4, 5]], { ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!.tokenIds).toEqual(greedy);
    expect(llm.generate([[3, 4, 5]], new SamplingParams({ ignore_eos: true }), { useTqdm: false })[0]!.outputs[0]!.tokenIds.length).toBe(16);
    const vllm = new LLM({ model: modelWithGenerationConfig(tinyModel(FAST_MODEL)), maxModelLen: 64, generationConfig: "vllm", log: () => {} });
    expect(vllm.getDefaultSamplingParams().temperature).toBe(1);
  });

  test("samplingParamsFrom: request fields win over the defaults, the defaults over vLLM's", () => {
    const defaults = { temperature: 0.6, top_k: 20, max_tokens: 7 };
    const p = samplingParamsFrom({ top_k: 5, top_p: null }, null, null, null, defaults);
    expect([p.temperature, p.top_k, p.top_p, p.max_tokens]).toEqual([0.6, 5, 1, null]); // max_new_tokens: per prompt, in submit()
    expect(samplingParamsFrom({}, 3, null).temperature).toBe(1);
  });

  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer([modelWithGenerationConfig(tinyModel(SERVER_MODEL)), "--max-model-len", "128"]);
  });
  afterAll(async () => {
    expect(await srv.stop("SIGTERM")).toBe(0);
  });
  const chat = async (extra: Record<string, unknown>) => {
    const r = await fetch(`${srv.url}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "Hi" }], ...extra }) });
    return (await r.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
  };

  test("server: omitted fields take the model's defaults (greedy, max_new_tokens), given ones win", async () => {
    const byDefault = await chat({ ignore_eos: true });
    expect(byDefault.usage.completion_tokens).toBe(5);
    const greedy = await chat({ temperature: 0, max_tokens: 5, ignore_eos: true });
    expect(byDefault.choices[0]!.message.content).toBe(greedy.choices[0]!.message.content);
    expect((await chat({ max_tokens: 9, ignore_eos: true })).usage.completion_tokens).toBe(9);
    // temperature 1 without top_k: sampling differs from greedy for some seed (top_k 1 from the defaults would pin it).
    const sampled = await Promise.all([1, 2, 3, 4, 5].map((seed) => chat({ temperature: 1.5, top_k: -1, seed, max_tokens: 5, ignore_eos: true })));
    expect(sampled.some((r) => r.choices[0]!.message.content !== greedy.choices[0]!.message.content)).toBe(true);
  });
});

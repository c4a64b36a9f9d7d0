/**
 * LoRA adapters (--enable-lora --lora-modules): a request with an adapter gives what the base model with
 * the adapter merged into its weights (W + scale·B·A) gives — alone, batched with base and other-adapter
 * requests, after prefix caching, under tensor parallelism, on the GPU simulator's CUDA path (cuda-suite) —
 * and the server routes a request's `model` to its adapter.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import type { LLMEngine } from "../src/engine/llm-engine.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { engineStats } from "../src/engine/engine-stats.ts";
import { renderMetrics } from "../src/server/metrics.ts";
import { ServerState } from "../src/server/state.ts";
import { ApiError } from "../src/server/errors.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/loader/safetensors.ts";
import { LORA_TARGETS, type LoraTarget } from "../src/lora/lora-adapter.ts";
import { FAST_MODEL, SERVER_MODEL, startServer, tempDir, tinyModel, type RunningServer } from "./helpers.ts";
import { writeAdapter, type AdapterSpec } from "./lora-adapters.ts";
import { parseArgs } from "node:util";
import { ENGINE_FLAGS, engineOptionsFromFlags, expandListFlags } from "../src/cli.ts";

const ENGINE_MS = 60_000;
const quiet = { log: () => {} };
const base = tinyModel(FAST_MODEL);

/** `model` with the adapter merged in: each target W becomes W + scale·B·A (float32). */
function mergedModel(model: string, adapter: string, spec: AdapterSpec, name: string): string {
  const out = join(tempDir("lora-merged"), name);
  cpSync(model, out, { recursive: true });
  const st = SafetensorsFile.open(join(model, "model.safetensors")), ad = SafetensorsFile.open(join(adapter, "adapter_model.safetensors"));
  const scale = spec.rslora ? spec.alpha / Math.sqrt(spec.rank) : spec.alpha / spec.rank;
  const tensors = st.names().map((n): TensorToWrite => {
    const t = st.tensor(n);
    const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$/.exec(n);
    if (!m || !spec.targets.includes(m[3] as LoraTarget)) return { name: n, dtype: t.dtype, shape: [...t.shape], bytes: Uint8Array.from(t.bytes) };
    const w = toFloat32(t.bytes, t.dtype), [outF, inF] = t.shape as [number, number], r = spec.rank;
    const p = `base_model.model.model.layers.${m[1]}.${m[2]}.${m[3]}`;
    const a = toFloat32(ad.tensor(`${p}.lora_A.weight`).bytes, "F32"), b = toFloat32(ad.tensor(`${p}.lora_B.weight`).bytes, "F32");
    for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += b[o * r + k]! * a[k * inF + i]!;
      w[o * inF + i] = w[o * inF + i]! + scale * s;
    }
    return { name: n, dtype: "F32", shape: [outF, inF], bytes: fromFloat32(w, "F32") };
  });
  rmSync(join(out, "model.safetensors"));
  writeSafetensors(join(out, "model.safetensors"), tensors);
  return out;
}

const ALL: AdapterSpec = { rank: 8, alpha: 16, targets: LORA_TARGETS, seed: 1 };
const ATTN: AdapterSpec = { rank: 4, alpha: 4, targets: ["q_proj", "v_proj", "o_proj"], seed: 2, rslora: true };
const adapterAll = writeAdapter(base, ALL, "all"), adapterAttn = writeAdapter(base, ATTN, "attn");
const mergedAll = mergedModel(base, adapterAll, ALL, "all"), mergedAttn = mergedModel(base, adapterAttn, ATTN, "attn");
const loraModules = { all: adapterAll, attn: adapterAttn };
const PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [9, 8, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48]];
const PARAMS = { max_tokens: 12, temperature: 0, logprobs: 0, ignore_eos: true };

type Out = { tokens: number[]; logprobs: number[] };
const outputsOf = (rs: { outputs: { tokenIds: readonly number[]; logprobs: { logprob: number }[] | null }[] }[]) =>
  rs.map((r) => ({ tokens: [...r.outputs[0]!.tokenIds], logprobs: r.outputs[0]!.logprobs!.map((lp) => lp.logprob) }));
function generateOn(model: string, opts: Record<string, unknown> = {}, lora?: string): Out[] {
  const llm = new LLM({ model, maxModelLen: 64, ...quiet, ...opts });
  try { return outputsOf(llm.generate(PROMPTS, PARAMS, { lora })); } finally { llm.close(); }
}
function expectSame(a: Out[], b: Out[], tol = 1e-3): void {
  a.forEach((o, i) => {
    expect(o.tokens).toEqual(b[i]!.tokens);
    expect(Math.max(...o.logprobs.map((x, j) => Math.abs(x - b[i]!.logprobs[j]!)))).toBeLessThan(tol);
  });
}

/** The most adapters one step of `runMixed` ran at once. */
let mostAdaptersInAStep = 0;

/** Runs requests through one engine together (each with its adapter) until all finish. */
function runMixed(engine: LLMEngine, reqs: { prompt: number[]; lora: string | null }[]): Out[] {
  reqs.forEach((r, i) => engine.addRequest(`m${i}`, r.prompt, new SamplingParams(PARAMS), performance.now(), "final_only", r.lora));
  const done = new Map<string, Out>();
  mostAdaptersInAStep = 0;
  while (engine.hasUnfinishedRequests()) {
    const outputs = engine.step();
    mostAdaptersInAStep = Math.max(mostAdaptersInAStep, new Set(engine.scheduler.running.flatMap((s) => (s.lora ? [s.lora.name] : []))).size);
    for (const o of outputs) if (o.finished) done.set(o.requestId, outputsOf([o])[0]!);
  }
  return reqs.map((_, i) => done.get(`m${i}`)!);
}

describe("LoRA adapters", () => {
  const expected = { base: generateOn(base), all: generateOn(mergedAll), attn: generateOn(mergedAttn) };

  test("an adapter's request equals the merged model's: all projections, or some with rsLoRA scaling", () => {
    // The adapters change the greedy paths (else this would prove little).
    expect(expected.all.map((o) => o.tokens)).not.toEqual(expected.base.map((o) => o.tokens));
    expect(expected.attn.map((o) => o.tokens)).not.toEqual(expected.base.map((o) => o.tokens));
    const llm = new LLM({ model: base, maxModelLen: 64, loraModules, ...quiet });
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS, { lora: "all" })), expected.all);
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS, { lora: "attn" })), expected.attn);
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS)), expected.base);
    expect(() => llm.generate(PROMPTS, PARAMS, { lora: "other" })).toThrow("LoRA adapter 'other' is not loaded (loaded: all, attn)");
    llm.close();
    // Alone, the attention-only adapter leaves the MLP without LoRA work (and the fused down projection on).
    const attnOnly = new LLM({ model: base, maxModelLen: 64, loraModules: { attn: adapterAttn }, ...quiet });
    expectSame(outputsOf(attnOnly.generate(PROMPTS, PARAMS, { lora: "attn" })), expected.attn);
    attnOnly.close();
  }, ENGINE_MS);

  test("one batch mixes the base model and both adapters (--max-loras 2), or they take turns in one slot (1); prefix caching keeps their K/V apart; chunked prefill", () => {
    const ngram = { method: "ngram", num_speculative_tokens: 3, prompt_lookup_max: 2 };
    for (const opts of [{ blockSize: 4, maxLoras: 2 }, { maxNumBatchedTokens: 8, blockSize: 4, maxLoras: 2 }, { blockSize: 4, maxLoras: 1 },
      // Slots change while the previous step is still running (async scheduling); drafts are verified through the adapter.
      { blockSize: 4, maxLoras: 1, asyncScheduling: true }, { blockSize: 4, maxLoras: 2, speculativeConfig: ngram }]) {
      const llm = new LLM({ model: base, maxModelLen: 64, loraModules, ...quiet, ...opts });
      const reqs = [
        { prompt: PROMPTS[0]!, lora: null }, { prompt: PROMPTS[0]!, lora: "all" }, { prompt: PROMPTS[0]!, lora: "attn" },
        { prompt: PROMPTS[1]!, lora: "attn" }, { prompt: PROMPTS[2]!, lora: "all" }, { prompt: PROMPTS[2]!, lora: null },
      ];
      const want = [expected.base[0]!, expected.all[0]!, expected.attn[0]!, expected.attn[1]!, expected.all[2]!, expected.base[2]!];
      expectSame(runMixed(llm.engine, reqs), want);
      expect(mostAdaptersInAStep).toBe(opts.maxLoras);
      if ("asyncScheduling" in opts) expect(llm.engine.overlappedSteps).toBeGreaterThan(0);
      if ("speculativeConfig" in opts) expect(llm.engine.metrics.specDraftTokens).toBeGreaterThan(0);
      // Again: the prompts' blocks are cached now, each under its own adapter.
      const hits = llm.engine.blockManager.prefixCacheHits;
      expectSame(runMixed(llm.engine, reqs), want);
      expect(llm.engine.blockManager.prefixCacheHits).toBeGreaterThan(hits);
      llm.close();
    }
  }, ENGINE_MS);

  test("/metrics: vLLM's lora_requests_info names the adapters of running and waiting requests", () => {
    const llm = new LLM({ model: base, maxModelLen: 64, maxNumSeqs: 1, maxLoras: 2, loraModules, ...quiet });
    const e = llm.engine;
    e.addRequest("a", PROMPTS[0]!, new SamplingParams(PARAMS), performance.now(), "final_only", "attn");
    e.addRequest("b", PROMPTS[1]!, new SamplingParams(PARAMS), performance.now(), "final_only", null);
    e.addRequest("c", PROMPTS[2]!, new SamplingParams(PARAMS), performance.now(), "final_only", "all");
    e.step(); // one sequence runs (max_num_seqs 1), two wait
    expect(engineStats(e).lora).toEqual({ maxLora: 2, running: ["attn"], waiting: ["all"] });
    expect(renderMetrics(engineStats(e), "m")).toMatch(/^vllm:lora_requests_info\{model_name="m",max_lora="2",running_lora_adapters="attn",waiting_lora_adapters="all"\} \d+(\.\d+)?$/m);
    while (e.hasUnfinishedRequests()) e.step();
    expect(engineStats(e).lora).toEqual({ maxLora: 2, running: [], waiting: [] });
    llm.close();
    const plain = new LLM({ model: base, maxModelLen: 64, ...quiet });
    expect(renderMetrics(engineStats(plain.engine), "m")).not.toContain("lora");
    plain.close();
  }, ENGINE_MS);

  test("beam search through an adapter (vLLM's lora_request): width 1 is the merged model's greedy path", async () => {
    const llm = new LLM({ model: base, maxModelLen: 64, loraModules, ...quiet });
    const one = await llm.beamSearch(PROMPTS, { beam_width: 1, max_tokens: 12, ignore_eos: true }, { lora: "attn" });
    expect(one.map((o) => o.sequences[0]!.tokenIds)).toEqual(expected.attn.map((o) => o.tokens));
    llm.close();
  }, ENGINE_MS);

  test("tensor parallelism (CPU ranks): TP = 2 gives TP = 1's outputs with adapters", () => {
    const llm = new LLM({ model: base, maxModelLen: 64, loraModules, tensorParallelSize: 2, ...quiet });
    const reqs = [{ prompt: PROMPTS[0]!, lora: "all" }, { prompt: PROMPTS[1]!, lora: null }, { prompt: PROMPTS[2]!, lora: "attn" }];
    expectSame(runMixed(llm.engine, reqs), [expected.all[0]!, expected.base[1]!, expected.attn[2]!]);
    llm.close();
  }, ENGINE_MS);

  test("--max-loras 1: a request whose adapter has no slot waits for one; only base-model requests go ahead of it", () => {
    const llm = new LLM({ model: base, maxModelLen: 64, loraModules, maxLoras: 1, ...quiet });
    const e = llm.engine;
    const order = ["all", "attn", "all", null] as const;
    order.forEach((lora, i) => e.addRequest(`q${i}`, PROMPTS[i % 3]!, new SamplingParams({ ...PARAMS, max_tokens: 4 }), performance.now(), "final_only", lora));
    const started = new Map<string, number>(), finished = new Map<string, number>();
    for (let step = 0; e.hasUnfinishedRequests(); step++) {
      for (const o of e.step()) if (o.finished) finished.set(o.requestId, step);
      for (const s of e.scheduler.running) if (!started.has(s.requestId)) started.set(s.requestId, step);
      expect(new Set(e.scheduler.running.flatMap((s) => (s.lora ? [s.lora.name] : []))).size).toBeLessThanOrEqual(1);
    }
    // q1 (attn) waits for q0 (all) to leave the slot; q2 (all) may not overtake it; q3 (base) needs no slot.
    expect(started.get("q0")).toBe(0);
    expect(started.get("q3")).toBe(0);
    expect(started.get("q1")!).toBeGreaterThan(finished.get("q0")!);
    expect(started.get("q2")!).toBeGreaterThan(finished.get("q1")!);
    llm.close();
  }, ENGINE_MS);

  test("adapters added at run time (vLLM's LoRARequest with a path, add_lora / remove_lora): same outputs; a name loaded again never reuses the old adapter's cached prefix", () => {
    const llm = new LLM({ model: base, maxModelLen: 64, enableLora: true, blockSize: 4, ...quiet });
    expect(llm.engine.info.loraModules).toEqual([]);
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS, { lora: { name: "mine", path: adapterAll } })), expected.all);
    expect(llm.engine.info.loraModules).toEqual([{ name: "mine", dir: adapterAll }]);
    // By name from now on; the same name with another path is an error.
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS, { lora: "mine" })), expected.all);
    expect(() => llm.generate(PROMPTS, PARAMS, { lora: { name: "mine", path: adapterAttn } })).toThrow(`the name 'mine' is already used by the adapter in ${adapterAll}`);
    expect(() => llm.engine.addLora("mine", adapterAttn)).toThrow("the name 'mine' is already in use");
    expect(() => llm.engine.addLora("bad", "/nonexistent")).toThrow("LoRA adapter /nonexistent: adapter_config.json not found");
    expect(llm.engine.removeLora("mine")).toBe(true);
    expect(llm.engine.removeLora("mine")).toBe(false);
    expect(() => llm.generate(PROMPTS, PARAMS, { lora: "mine" })).toThrow("LoRA adapter 'mine' is not loaded");
    // The same name for another adapter: the prompts' blocks cached under the first must not be reused.
    const hits = llm.engine.blockManager.prefixCacheHits;
    llm.engine.addLora("mine", adapterAttn);
    expectSame(outputsOf(llm.generate(PROMPTS, PARAMS, { lora: "mine" })), expected.attn);
    expect(llm.engine.blockManager.prefixCacheHits).toBe(hits);
    llm.close();
    // An engine fitted at start to attention-only adapters cannot take an MLP adapter later, unless run-time updating is allowed.
    const fitted = new LLM({ model: base, maxModelLen: 64, loraModules: { attn: adapterAttn }, ...quiet });
    expect(() => fitted.engine.addLora("all", adapterAll)).toThrow("which this engine's LoRA layers leave out");
    fitted.close();
    const open = new LLM({ model: base, maxModelLen: 64, loraModules: { attn: adapterAttn }, allowRuntimeLoraUpdating: true, ...quiet });
    open.engine.addLora("all", adapterAll);
    expectSame(runMixed(open.engine, [{ prompt: PROMPTS[0]!, lora: "attn" }, { prompt: PROMPTS[1]!, lora: "all" }]), [expected.attn[0]!, expected.all[1]!]);
    open.close();
    // Without LoRA enabled there is nothing to add to.
    const plain = new LLM({ model: base, maxModelLen: 64, ...quiet });
    expect(() => plain.engine.addLora("x", adapterAll)).toThrow("LoRA is not enabled on this engine (--enable-lora)");
    plain.close();
  }, ENGINE_MS);

  test("Granite: the residual multiplier scales the o_proj and down_proj adapters as it scales their weights", () => {
    const granite = tinyModel({ ...FAST_MODEL, arch: "granite", seed: 9 });
    const adapter = writeAdapter(granite, ALL, "granite-all"), merged = mergedModel(granite, adapter, ALL, "granite-all");
    const want = generateOn(merged);
    expect(want.map((o) => o.tokens)).not.toEqual(generateOn(granite).map((o) => o.tokens));
    expectSame(generateOn(granite, { loraModules: { g: adapter } }, "g"), want);
  }, ENGINE_MS);

  test("GLM: adapters of q_proj and k_proj are permuted as those weights are (interleaved RoPE pairs as halves): the merged model's tokens", () => {
    const glm = tinyModel({ ...FAST_MODEL, arch: "glm4", seed: 11 });
    const spec: AdapterSpec = { rank: 4, alpha: 8, targets: ["q_proj", "k_proj", "v_proj", "o_proj"], seed: 3 };
    const adapter = writeAdapter(glm, spec, "glm-attn"), merged = mergedModel(glm, adapter, spec, "glm-attn");
    const want = generateOn(merged);
    expect(want.map((o) => o.tokens)).not.toEqual(generateOn(glm).map((o) => o.tokens));
    expectSame(generateOn(glm, { loraModules: { a: adapter } }, "a"), want);
    expectSame(generateOn(glm, { loraModules: { a: adapter }, tensorParallelSize: 2 }, "a"), want);
  }, ENGINE_MS);

  test("a mixture of experts: attention adapters work (the merged model's tokens); one on a sparse layer's MLP is refused, naming it", () => {
    const moe = tinyModel({ ...FAST_MODEL, arch: "qwen3_moe", seed: 13, numExperts: 4, topK: 2, moeIntermediateSize: 16 });
    const adapter = writeAdapter(moe, ATTN, "moe-attn"), merged = mergedModel(moe, adapter, ATTN, "moe-attn");
    const want = generateOn(merged);
    expect(want.map((o) => o.tokens)).not.toEqual(generateOn(moe).map((o) => o.tokens));
    expectSame(generateOn(moe, { loraModules: { a: adapter } }, "a"), want);
    const all = writeAdapter(moe, { ...ALL, targets: ["q_proj", "gate_proj"] }, "moe-mlp");
    expect(() => new LLM({ model: moe, loraModules: { m: all }, ...quiet })).toThrow(`LoRA adapter ${all}: layer 0's gate_proj is a mixture of experts, which LoRA does not adapt here (only attention projections, and dense MLP layers)`);
  }, ENGINE_MS);

  test("bad adapters and options are refused at start, naming the file or field", () => {
    const make = (mod: (dir: string) => void) => { const d = writeAdapter(base, { ...ATTN, seed: 9 }, `bad-${Math.random()}`); mod(d); return d; };
    const start = (dir: string, extra: Record<string, unknown> = {}) => () => new LLM({ model: base, loraModules: { x: dir }, ...quiet, ...extra });
    expect(start(adapterAll, { maxLoraRank: 4 })).toThrow(`LoRA adapter ${adapterAll}: its rank 8 exceeds --max-lora-rank 4`);
    expect(start("/nonexistent")).toThrow("LoRA adapter /nonexistent: adapter_config.json not found");
    expect(start(make((d) => writeFileSync(join(d, "adapter_config.json"), JSON.stringify({ r: 4, lora_alpha: 4, use_dora: true }))))).toThrow("use_dora true is not supported");
    expect(start(make((d) => writeSafetensors(join(d, "adapter_model.safetensors"), [{ name: "base_model.model.lm_head.lora_A.weight", dtype: "F32", shape: [4, 32], bytes: new Uint8Array(512) }]))))
      .toThrow("tensor 'base_model.model.lm_head.lora_A.weight' is not a LoRA weight of an attention or MLP projection");
    expect(start(make((d) => writeSafetensors(join(d, "adapter_model.safetensors"), [{ name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", dtype: "F32", shape: [4, 32], bytes: new Uint8Array(512) }]))))
      .toThrow("0 layer q_proj: lora_B is missing");
    expect(start(make((d) => writeSafetensors(join(d, "adapter_model.safetensors"), [
      { name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", dtype: "F32", shape: [4, 16], bytes: new Uint8Array(256) },
      { name: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", dtype: "F32", shape: [32, 4], bytes: new Uint8Array(512) }]))))
      .toThrow("has shape [4,16] but rank 4 and the model imply [4, 32]");
    expect(() => new LLM({ model: base, maxLoraRank: 8, ...quiet })).toThrow("--max-lora-rank: applies with LoRA enabled (--enable-lora)");
    expect(() => new LLM({ model: base, maxLoras: 2, ...quiet })).toThrow("--max-loras: applies with LoRA enabled (--enable-lora)");
    expect(start(adapterAll, { maxLoras: 0 })).toThrow("--max-loras");
    expect(start(adapterAll, { enableLora: false })).toThrow("--lora-modules: needs LoRA enabled");
  }, ENGINE_MS);
});

describe("LoRA adapters over HTTP: a request's model names its adapter", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer([base, "--max-model-len", "64", "--enable-lora", "--lora-modules", `all=${adapterAll}`, `attn=${adapterAttn}`]);
  }, ENGINE_MS);
  afterAll(async () => { await server?.stop(); });
  const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

  test("/v1/models lists the adapters; completions with an adapter's name equal the merged model's tokens", async () => {
    const models = await (await fetch(`${server.url}/v1/models`)).json() as { data: { id: string; root: string; parent: string | null }[] };
    const baseName = models.data[0]!.id;
    expect(models.data.map((m) => [m.id, m.parent])).toEqual([[baseName, null], ["all", baseName], ["attn", baseName]]);
    expect(models.data[1]!.root).toBe(adapterAll);
    const completion = async (model: string) => (await (await post("/v1/completions", { model, prompt: PROMPTS[0], max_tokens: 12, temperature: 0, ignore_eos: true, return_token_ids: true })).json() as { choices: { token_ids: number[] }[] }).choices[0]!.token_ids;
    const [all, plain] = [greedyTokens(mergedAll), greedyTokens(base)];
    expect(all).not.toEqual(plain);
    expect(await completion("all")).toEqual(all);
    expect(await completion(baseName)).toEqual(plain);
    const missing = await post("/v1/completions", { model: "nope", prompt: "x" });
    expect(missing.status).toBe(404);
    // Run-time loading is off unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is set.
    expect((await post("/v1/load_lora_adapter", { lora_name: "x", lora_path: adapterAll })).status).toBe(404);
  }, ENGINE_MS);
});

describe("run-time LoRA loading over HTTP (VLLM_ALLOW_RUNTIME_LORA_UPDATING)", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer([base, "--max-model-len", "64", "--enable-lora"], { VLLM_ALLOW_RUNTIME_LORA_UPDATING: "True" });
  }, ENGINE_MS);
  afterAll(async () => { await server?.stop(); });
  const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const models = async () => ((await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] }).data.map((m) => m.id).slice(1);
  const errorOf = async (r: Response) => [r.status, ((await r.json()) as { error: { message: string } }).error.message] as const;

  test("/v1/load_lora_adapter and /v1/unload_lora_adapter add and remove adapters a request's model then names", async () => {
    expect(await models()).toEqual([]);
    const loaded = await post("/v1/load_lora_adapter", { lora_name: "sql", lora_path: adapterAll });
    expect([loaded.status, await loaded.text()]).toEqual([200, "Success: LoRA adapter 'sql' added successfully."]);
    expect(await models()).toEqual(["sql"]);
    const tokens = async (model: string) => (await (await post("/v1/completions", { model, prompt: PROMPTS[0], max_tokens: 12, temperature: 0, ignore_eos: true, return_token_ids: true })).json() as { choices: { token_ids: number[] }[] }).choices[0]!.token_ids;
    expect(await tokens("sql")).toEqual(greedyTokens(mergedAll));
    expect(await errorOf(await post("/v1/load_lora_adapter", { lora_name: "sql", lora_path: adapterAttn }))).toEqual([400, "The lora adapter 'sql' has already been loaded."]);
    const [status, message] = await errorOf(await post("/v1/load_lora_adapter", { lora_name: "broken", lora_path: "/nonexistent/adapter" }));
    expect([status, message]).toEqual([400, "LoRA adapter /nonexistent/adapter: adapter_config.json not found (a PEFT LoRA adapter directory has adapter_config.json and adapter_model.safetensors)"]);
    expect((await post("/v1/load_lora_adapter", { lora_name: "x" })).status).toBe(400);
    expect(await models()).toEqual(["sql"]);
    const unloaded = await post("/v1/unload_lora_adapter", { lora_name: "sql" });
    expect([unloaded.status, await unloaded.text()]).toEqual([200, "Success: LoRA adapter 'sql' removed successfully."]);
    expect(await errorOf(await post("/v1/unload_lora_adapter", { lora_name: "sql" }))).toEqual([404, "The lora adapter 'sql' cannot be found."]);
    expect(await models()).toEqual([]);
    expect((await post("/v1/completions", { model: "sql", prompt: "x" })).status).toBe(404);
    // Loaded again under the same name, another adapter: its own outputs.
    expect((await post("/v1/load_lora_adapter", { lora_name: "sql", lora_path: adapterAttn })).status).toBe(200);
    expect(await tokens("sql")).toEqual(greedyTokens(mergedAttn));
  }, ENGINE_MS);
});

/** The greedy tokens of `model` for the first prompt (what the server should answer). */
function greedyTokens(model: string): number[] {
  const llm = new LLM({ model, maxModelLen: 64, ...quiet });
  try { return [...llm.generate([PROMPTS[0]!], { max_tokens: 12, temperature: 0, ignore_eos: true })[0]!.outputs[0]!.tokenIds]; } finally { llm.close(); }
}

test("--enable-lora --lora-modules: several name=path (or JSON) values after one flag, checked", () => {
  const flags = (args: string[]) => {
    const { values, positionals } = parseArgs({ args: expandListFlags(args), options: ENGINE_FLAGS, allowPositionals: true, strict: true });
    return { opts: engineOptionsFromFlags(values, positionals[0]), positionals };
  };
  const { opts, positionals } = flags(["--enable-lora", "--lora-modules", "a=/x", '{"name": "b", "path": "/y"}', "--max-lora-rank", "32", "/model"]);
  expect(opts.loraModules).toEqual({ a: "/x", b: "/y" });
  expect(opts.maxLoraRank).toBe(32);
  expect(positionals).toEqual(["/model"]);
  expect(flags(["/model", "--enable-lora", "--lora-modules", "a=/x"]).opts.loraModules).toEqual({ a: "/x" });
  expect(() => flags(["--lora-modules", "a=/x"])).toThrow("--lora-modules needs --enable-lora");
  // --enable-lora alone: adapters come at run time.
  expect(flags(["--enable-lora", "--max-loras", "4"]).opts).toMatchObject({ enableLora: true, loraModules: undefined, maxLoras: 4 });
  expect(() => flags(["--enable-lora", "--lora-modules", "a=/x", "a=/y"])).toThrow("--lora-modules: 'a' is given twice");
  expect(() => flags(["--enable-lora", "--lora-modules", "=/x"])).toThrow("--lora-modules: expected name=path");
});

test("vbun generate --lora NAME runs the prompt through that adapter (the merged model's text)", () => {
  const model = tinyModel(SERVER_MODEL), spec: AdapterSpec = { rank: 4, alpha: 8, targets: LORA_TARGETS, seed: 7 };
  const adapter = writeAdapter(model, spec, "cli"), merged = mergedModel(model, adapter, spec, "cli");
  const cli = (args: string[]) => {
    const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "..", "src", "cli.ts"), "generate", ...args, "--prompt", "Hello there", "--max-tokens", "8", "--temperature", "0", "--device", "cpu"], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    return p.stdout.toString();
  };
  const withAdapter = cli([model, "--enable-lora", "--lora-modules", `mine=${adapter}`, "--lora", "mine"]);
  expect(withAdapter).toBe(cli([merged]));
  expect(withAdapter).not.toBe(cli([model]));
}, ENGINE_MS);

test("a request naming another model while the engine loads gets the engine's 503 (its adapters are not known yet), not a 404", () => {
  const state = new ServerState("base", null);
  expect(state.checkModel(undefined)).toBeNull();
  expect(state.checkModel("base")).toBeNull();
  let err: unknown = null;
  try { state.checkModel("sql-adapter"); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(ApiError);
  expect([(err as ApiError).status, (err as ApiError).message]).toEqual([503, "the model is still loading"]);
});

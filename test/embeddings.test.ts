/**
 * Pooling models (--runner pooling): a prompt's embedding is the final-norm hidden state of its last token,
 * normalised as the model's sentence-transformers files say. Checked against the dense float64 reference,
 * across batching, chunked prefill and prefix caching, for bare-decoder checkpoints, and over HTTP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { toFloat32 } from "../src/loader/dtype.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { embedding, loadPoolerConfig } from "../src/model/pooling.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import type { RequestOutput } from "../src/engine/request.ts";
import { referenceHidden, type W } from "./dense-reference.ts";
import { FAST_MODEL, SERVER_MODEL, startServer, tinyModel, type RunningServer } from "./helpers.ts";
import { variant } from "./checkpoint-variant.ts";

const ENGINE_MS = 60_000;
const model = tinyModel(FAST_MODEL);
const quiet = { log: () => {} };
const norm = (v: ArrayLike<number>) => Math.hypot(...Array.from(v));
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i]!)));

describe("the engine as a pooling model", () => {
  test("each embedding is the dense reference's last-token hidden state, normalised; batching, chunks and cached prefixes change nothing", () => {
    const cfg = loadModelConfig(model);
    const ckpt = new Checkpoint(model);
    const w: W = (n) => Float64Array.from(toFloat32(ckpt.tensor(n).bytes, ckpt.tensor(n).dtype));
    const shared = Array.from({ length: 9 }, (_, i) => 20 + i);
    const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [...shared, 100, 101], [...shared, 200], [42]];
    const llm = new LLM({ model, runner: "pooling", blockSize: 4, maxModelLen: 64, ...quiet });
    const batched = llm.embed(prompts).map((o) => o.outputs.embedding);
    prompts.forEach((p, i) => {
      const ref = referenceHidden(cfg, w, p).at(-1)!;
      const r = norm(ref);
      expect(maxDiff(batched[i]!, Array.from(ref, (x) => x / r))).toBeLessThan(1e-5);
      expect(Math.abs(norm(batched[i]!) - 1)).toBeLessThan(1e-6);
    });
    // Alone, in chunks of 4 tokens, and after the shared prefix was cached: the same vectors.
    const chunked = new LLM({ model, runner: "pooling", blockSize: 4, maxModelLen: 64, maxNumBatchedTokens: 4, ...quiet });
    for (const [i, p] of prompts.entries()) {
      expect(maxDiff(llm.embed([p])[0]!.outputs.embedding, batched[i]!)).toBeLessThan(1e-6);
      expect(maxDiff(chunked.embed([p])[0]!.outputs.embedding, batched[i]!)).toBeLessThan(1e-6);
    }
    expect(llm.engine.blockManager.prefixCacheHits).toBeGreaterThan(0);
    expect(llm.engine.metrics.generationTokens).toBe(0);
    expect(llm.engine.blockManager.numFreeBlocks).toBe(llm.engine.blockManager.numBlocks);
    llm.close();
    chunked.close();
  }, ENGINE_MS);

  test("MEAN and CLS pooling: the mean of the dense reference's hidden states over the prompt, or its first token's; in chunks, batched and after preemption alike", () => {
    const cfg = loadModelConfig(model);
    const ckpt = new Checkpoint(model);
    const w: W = (n) => Float64Array.from(toFloat32(ckpt.tensor(n).bytes, ckpt.tensor(n).dtype));
    const shared = Array.from({ length: 9 }, (_, i) => 20 + i);
    const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [...shared, 100, 101], [...shared, 200], [42]];
    for (const type of ["MEAN", "CLS"] as const) {
      const want = prompts.map((p) => {
        const hs = referenceHidden(cfg, w, p);
        const v = type === "CLS" ? Array.from(hs[0]!) : Array.from({ length: cfg.hiddenSize }, (_, i) => hs.reduce((a, h) => a + h[i]!, 0) / hs.length);
        const r = norm(v);
        return v.map((x) => x / r);
      });
      const logs: string[] = [];
      const make = (o: Record<string, unknown> = {}) => new LLM({ model, runner: "pooling", poolerConfig: { pooling_type: type }, blockSize: 4, maxModelLen: 64, log: (m: string) => logs.push(m), ...o });
      for (const llm of [make(), make({ maxNumBatchedTokens: 4 }), make({ maxNumBatchedTokens: 8, numGpuBlocksOverride: 4 })]) {
        const got = llm.embed(prompts).map((o) => o.outputs.embedding);
        got.forEach((g, i) => expect(maxDiff(g, want[i]!)).toBeLessThan(1e-5));
        // Every prompt token computed: nothing from the prefix cache (the shared prefix repeats).
        expect(llm.engine.blockManager.prefixCacheHits).toBe(0);
        expect(llm.engine.blockManager.numFreeBlocks).toBe(llm.engine.blockManager.numUsableBlocks);
        llm.close();
      }
      // Preempted after its first chunk (as when the KV cache runs out), a prompt starts over: its state too.
      const llm = make({ maxNumBatchedTokens: 4 });
      const e = llm.engine;
      e.addRequest("p", prompts[2]!, new SamplingParams({ max_tokens: 1 }), 0, "final_only");
      e.step();
      const seq = e.scheduler.running[0]!;
      expect(seq.numComputedTokens).toBe(4);
      (e.scheduler as unknown as { preempt(s: unknown): void }).preempt(seq);
      let out: RequestOutput[] = [];
      while (e.hasUnfinishedRequests()) out = out.concat(e.step());
      expect(maxDiff(embedding(out.at(-1)!.pooled!, true), want[2]!)).toBeLessThan(1e-5);
      llm.close();
      expect(logs.some((m) => m.includes("prefix caching off"))).toBe(true);
    }
  }, ENGINE_MS);

  test("a prompt may fill the whole context; longer ones and generation calls are clear errors", () => {
    const llm = new LLM({ model, runner: "pooling", blockSize: 4, maxModelLen: 16, ...quiet });
    expect(llm.embed([Array.from({ length: 16 }, (_, i) => i + 1)])[0]!.outputs.embedding.length).toBe(32);
    expect(() => llm.embed([Array.from({ length: 17 }, (_, i) => i + 1)])).toThrow("maximum context length is 16 tokens. However, you requested 17 tokens in the input for embedding generation");
    expect(llm.embed([Array.from({ length: 20 }, (_, i) => i + 1)], { truncatePromptTokens: 16 })[0]!.promptTokenIds.length).toBe(16);
    expect(() => llm.generate([[1, 2]])).toThrow("generate: this is a pooling model (--runner pooling)");
    expect(() => llm.embed([[1, 2]], { dimensions: 8 })).toThrow("does not support Matryoshka embeddings");
    llm.close();
    const gen = new LLM({ model, blockSize: 4, maxModelLen: 16, ...quiet });
    expect(() => gen.embed([[1, 2]])).toThrow("embed: this model runs as a generative model");
    gen.close();
    expect(() => new LLM({ model, poolerConfig: { normalize: false }, ...quiet })).toThrow("--pooler-config: applies to pooling models only");
    expect(() => new LLM({ model, runner: "pooling", speculativeConfig: { num_speculative_tokens: 2 }, ...quiet })).toThrow("--speculative-config");
  }, ENGINE_MS);

  test("tensor parallelism (CPU ranks): TP = 2 gives TP = 1's embeddings", () => {
    const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], Array.from({ length: 30 }, (_, i) => (i * 37) % 500)];
    const one = new LLM({ model, runner: "pooling", blockSize: 8, maxNumBatchedTokens: 16, ...quiet });
    const two = new LLM({ model, runner: "pooling", blockSize: 8, maxNumBatchedTokens: 16, tensorParallelSize: 2, ...quiet });
    const a = one.embed(prompts), b = two.embed(prompts);
    a.forEach((o, i) => expect(maxDiff(b[i]!.outputs.embedding, o.outputs.embedding)).toBeLessThan(1e-5));
    one.close();
    two.close();
  }, ENGINE_MS);

  test("LLM.score: the cosine similarity of the embeddings, one against many or in pairs", () => {
    const llm = new LLM({ model, runner: "pooling", ...quiet });
    const q = [3, 4, 5], docs = [[3, 4, 6], [100, 7], [3, 4, 5]];
    const e = llm.embed([q, ...docs]).map((o) => o.outputs.embedding);
    const dot = (a: number[], b: number[]) => a.reduce((x, v, i) => x + v * b[i]!, 0);
    expect(maxDiff(llm.score(q, docs).map((o) => o.outputs.score), docs.map((_, i) => dot(e[0]!, e[i + 1]!)))).toBeLessThan(1e-6);
    expect(Math.abs(llm.score(q, docs)[2]!.outputs.score - 1)).toBeLessThan(1e-6); // the same text
    expect(maxDiff(llm.score([q, docs[0]!], [docs[1]!, docs[2]!]).map((o) => o.outputs.score), [dot(e[0]!, e[2]!), dot(e[1]!, e[3]!)])).toBeLessThan(1e-6);
    expect(() => llm.score([q, q], docs)).toThrow("score: 2 first texts and 3 second ones");
    llm.close();
  }, ENGINE_MS);

  test("a bare decoder checkpoint (LlamaModel, no 'model.' prefix, no LM head) is a pooling model by itself", () => {
    const bare = variant(model, "bare", { config: (c) => { c.architectures = ["LlamaModel"]; }, rename: (n) => (n === "lm_head.weight" ? null : n.replace(/^model\./, "")) });
    const a = new LLM({ model, runner: "pooling", ...quiet }), b = new LLM({ model: bare, ...quiet });
    expect(b.engine.info.runner).toBe("pooling");
    const p = [[5, 6, 7, 8], [11]];
    expect(b.embed(p).map((o) => o.outputs.embedding)).toEqual(a.embed(p).map((o) => o.outputs.embedding));
    a.close();
    b.close();
    expect(() => new LLM({ model: bare, runner: "generate", ...quiet })).toThrow("bare decoder without an LM head");
  }, ENGINE_MS);

  test("pooling settings: sentence-transformers' modules.json, --pooler-config on top; Matryoshka dimensions", () => {
    expect(loadPoolerConfig(model)).toEqual({ task: "embed", poolingType: "LAST", normalize: true, useActivation: true });
    const st = (mode: string, normalize: boolean) => variant(model, `st-${mode}-${normalize}`, {
      files: {
        "modules.json": [{ idx: 0, name: "0", path: "", type: "sentence_transformers.models.Transformer" }, { idx: 1, name: "1", path: "1_Pooling", type: "sentence_transformers.models.Pooling" },
          ...(normalize ? [{ idx: 2, name: "2", path: "2_Normalize", type: "sentence_transformers.models.Normalize" }] : [])],
        "1_Pooling/config.json": { word_embedding_dimension: 32, [mode]: true },
      },
    });
    expect(loadPoolerConfig(st("pooling_mode_lasttoken", true))).toEqual({ task: "embed", poolingType: "LAST", normalize: true, useActivation: true });
    const raw = st("pooling_mode_lasttoken", false);
    expect(loadPoolerConfig(raw)).toEqual({ task: "embed", poolingType: "LAST", normalize: false, useActivation: true });
    expect(loadPoolerConfig(raw, { normalize: true })).toEqual({ task: "embed", poolingType: "LAST", normalize: true, useActivation: true });
    expect(loadPoolerConfig(st("pooling_mode_mean_tokens", true))).toEqual({ task: "embed", poolingType: "MEAN", normalize: true, useActivation: true });
    expect(loadPoolerConfig(model, { pooling_type: "cls" }).poolingType).toBe("CLS");
    expect(() => loadPoolerConfig(st("pooling_mode_max_tokens", true))).toThrow(`--runner pooling: "MAX" pooling is not supported (LAST, MEAN or CLS)`);
    expect(() => loadPoolerConfig(model, { pooling_type: "STEP" })).toThrow(`--pooler-config: "STEP" pooling is not supported (LAST, MEAN or CLS)`);
    expect(() => loadPoolerConfig(model, { pooling_type: "MEAN" }, true)).toThrow("a sequence classifier's score head reads the last token: pooling_type must be LAST");
    expect(() => loadPoolerConfig(model, { normalise: true })).toThrow("--pooler-config: unknown field 'normalise'");
    // Without Normalize the vector is the hidden state itself; with it, the same direction at length 1.
    const a = new LLM({ model: raw, runner: "pooling", ...quiet }), b = new LLM({ model, runner: "pooling", ...quiet });
    const [x] = a.embed([[3, 4, 5]]), [y] = b.embed([[3, 4, 5]]);
    const n = norm(x!.outputs.embedding);
    expect(Math.abs(n - 1)).toBeGreaterThan(1e-3);
    expect(maxDiff(x!.outputs.embedding.map((v) => v / n), y!.outputs.embedding)).toBeLessThan(1e-6);
    a.close();
    b.close();
    const mrl = variant(model, "mrl", { config: (c) => { c.matryoshka_dimensions = [8, 16, 32]; } });
    const m = new LLM({ model: mrl, runner: "pooling", ...quiet });
    const full = m.embed([[3, 4, 5]])[0]!.outputs.embedding, cut = m.embed([[3, 4, 5]], { dimensions: 8 })[0]!.outputs.embedding;
    const head = full.slice(0, 8), hn = norm(head);
    expect(cut.length).toBe(8);
    expect(maxDiff(cut, head.map((v) => v / hn))).toBeLessThan(1e-6);
    expect(() => m.embed([[3]], { dimensions: 12 })).toThrow("dimensions must be one of the model's Matryoshka sizes (8, 16, 32), got 12");
    m.close();
  }, ENGINE_MS);
});

describe("the embedding endpoints over HTTP (/v1/embeddings, /pooling, /score, /rerank)", () => {
  let pooling: RunningServer, generating: RunningServer;
  beforeAll(async () => {
    [pooling, generating] = await Promise.all([startServer([tinyModel(SERVER_MODEL), "--runner", "pooling"]), startServer([tinyModel(SERVER_MODEL)])]);
  });
  afterAll(async () => {
    await Promise.all([pooling?.stop(), generating?.stop()]);
  });
  const post = (s: RunningServer, path: string, body: unknown) => fetch(`${s.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

  test("strings, token ids and lists; base64 carries the same floats; the openai SDK reads them", async () => {
    const res = await post(pooling, "/v1/embeddings", { input: ["Hello there", "The cat sat"], encoding_format: "float" });
    expect(res.status).toBe(200);
    const j = await res.json() as { object: string; data: { object: string; index: number; embedding: number[] }[]; usage: { prompt_tokens: number; total_tokens: number } };
    expect(j.object).toBe("list");
    expect(j.data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([["embedding", 0, 32], ["embedding", 1, 32]]);
    for (const d of j.data) expect(Math.abs(norm(d.embedding) - 1)).toBeLessThan(1e-5);
    expect(j.usage.prompt_tokens).toBeGreaterThan(2);
    expect(j.usage.total_tokens).toBe(j.usage.prompt_tokens);
    const ids = await (await post(pooling, "/tokenize", { prompt: "Hello there" })).json() as { tokens: number[] };
    const byIds = await (await post(pooling, "/v1/embeddings", { input: ids.tokens })).json() as typeof j;
    expect(byIds.data[0]!.embedding).toEqual(j.data[0]!.embedding);
    const b64 = await (await post(pooling, "/v1/embeddings", { input: "Hello there", encoding_format: "base64" })).json() as { data: { embedding: string }[] };
    const bytes = Buffer.from(b64.data[0]!.embedding, "base64");
    expect(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4))).toEqual(j.data[0]!.embedding);
    // vLLM's chat form: the template's text (no generation prompt), embedded like its token ids.
    const messages = [{ role: "user", content: "Hello there" }];
    const templ = await (await post(pooling, "/tokenize", { messages, add_generation_prompt: false, add_special_tokens: false })).json() as { tokens: number[] };
    const byChat = await (await post(pooling, "/v1/embeddings", { messages })).json() as typeof j;
    const byTemplIds = await (await post(pooling, "/v1/embeddings", { input: templ.tokens })).json() as typeof j;
    expect(byChat.data[0]!.embedding).toEqual(byTemplIds.data[0]!.embedding);
    expect(byChat.usage.prompt_tokens).toBe(templ.tokens.length);
    // vLLM's /pooling: the same vectors under `data`.
    const pooled = await (await post(pooling, "/pooling", { input: ["Hello there", "The cat sat"] })).json() as { data: { object: string; index: number; data: number[] }[] };
    expect(pooled.data.map((d) => [d.object, d.index])).toEqual([["pooling", 0], ["pooling", 1]]);
    expect(pooled.data.map((d) => d.data)).toEqual(j.data.map((d) => d.embedding));
    // The SDK asks for base64 and decodes it.
    const client = new OpenAI({ baseURL: `${pooling.url}/v1`, apiKey: "x" });
    const served = (await client.models.list()).data[0]!.id;
    const sdk = await client.embeddings.create({ model: served, input: "Hello there" });
    expect(maxDiff(sdk.data[0]!.embedding, j.data[0]!.embedding)).toBeLessThan(1e-6);
  }, ENGINE_MS);

  test("/score and /rerank: the cosine similarity of the texts' embeddings (vLLM's bi-encoder scoring)", async () => {
    const docs = ["The cat sat on the mat", "A dog ran", "Paris is in France"];
    const emb = await (await post(pooling, "/v1/embeddings", { input: ["Where is the cat?", ...docs] })).json() as { data: { embedding: number[] }[] };
    const dot = (a: number[], b: number[]) => a.reduce((x, v, i) => x + v * b[i]!, 0);
    const expected = docs.map((_, i) => dot(emb.data[0]!.embedding, emb.data[i + 1]!.embedding));
    const s = await (await post(pooling, "/score", { queries: "Where is the cat?", documents: docs })).json() as { object: string; data: { index: number; object: string; score: number }[]; usage: { prompt_tokens: number } };
    expect(s.object).toBe("list");
    expect(s.data.map((d) => [d.index, d.object])).toEqual([[0, "score"], [1, "score"], [2, "score"]]);
    expect(maxDiff(s.data.map((d) => d.score), expected)).toBeLessThan(1e-5);
    // vLLM's older names, and pairs (as many queries as documents).
    const pairs = await (await post(pooling, "/v1/score", { text_1: ["Where is the cat?", "Where is the cat?"], text_2: docs.slice(0, 2) })).json() as typeof s;
    expect(maxDiff(pairs.data.map((d) => d.score), expected.slice(0, 2))).toBeLessThan(1e-5);
    const r = await (await post(pooling, "/v1/rerank", { query: "Where is the cat?", documents: docs, top_n: 2 })).json() as { results: { index: number; document?: { text: string }; relevance_score: number }[]; usage: { total_tokens: number } };
    const order = [0, 1, 2].sort((a, b) => expected[b]! - expected[a]!);
    expect(r.results.map((x) => x.index)).toEqual(order.slice(0, 2));
    expect(r.results.map((x) => x.document!.text)).toEqual(order.slice(0, 2).map((i) => docs[i]!));
    expect(maxDiff(r.results.map((x) => x.relevance_score), order.slice(0, 2).map((i) => expected[i]!))).toBeLessThan(1e-5);
    expect(r.usage.total_tokens).toBe(s.usage.prompt_tokens);
    const bare = await (await post(pooling, "/rerank", { query: "q", documents: docs, return_documents: false })).json() as typeof r;
    expect(bare.results.length).toBe(3);
    expect(bare.results.every((x) => x.document === undefined)).toBe(true);
  }, ENGINE_MS);

  test("errors: empty or too long input, dimensions, the wrong kind of model for the endpoint", async () => {
    const cases: [RunningServer, string, unknown, number, string][] = [
      [pooling, "/v1/embeddings", { input: "" }, 400, "input must not be empty"],
      [pooling, "/v1/embeddings", { input: [] }, 400, "input"],
      [pooling, "/v1/embeddings", { input: Array.from({ length: 5000 }, () => 11) }, 400, "in the input for embedding generation"],
      [pooling, "/v1/embeddings", { input: "x", dimensions: 8 }, 400, "does not support Matryoshka embeddings"],
      [pooling, "/pooling", { input: "x", encoding_format: "base64" }, 400, "/pooling returns float arrays"],
      [generating, "/pooling", { input: "x" }, 400, "does not support the Pooling API"],
      [pooling, "/v1/completions", { prompt: "x" }, 400, "this is an embedding model (--runner pooling): it does not support /v1/completions"],
      [pooling, "/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }, 400, "does not support /v1/chat/completions"],
      [generating, "/v1/embeddings", { input: "x" }, 400, "does not support the Embeddings API"],
      [generating, "/score", { queries: "x", documents: ["y"] }, 400, "does not support the Score API"],
      [pooling, "/score", { queries: ["a", "b"], documents: ["x", "y", "z"] }, 400, "queries has 2 texts and documents 3"],
      [pooling, "/score", { documents: ["x"] }, 400, "give the texts to score: queries (or text_1)"],
      [pooling, "/rerank", { query: "q", documents: [] }, 400, "documents must not be empty"],
      [pooling, "/rerank", { query: "q", documents: ["x"], top_n: 0 }, 400, "top_n must be at least 1"],
    ];
    for (const [server, path, body, status, message] of cases) {
      const res = await post(server, path, body);
      const j = await res.json() as { error: { message: string } };
      expect({ path, status: res.status, has: j.error.message.includes(message) }).toEqual({ path, status, has: true });
    }
    expect((await post(pooling, "/v1/embeddings", { input: "still serving" })).status).toBe(200);
  }, ENGINE_MS);
});

/**
 * Sequence classifiers (…ForSequenceClassification, --runner pooling): a prompt's logits are the score head
 * applied to its last token's final-norm hidden state — checked against the dense float64 reference across
 * batching, chunked prefill, prefix caching and tensor parallelism; vLLM's online conversion of a reranker
 * trained as a causal LM (--hf-overrides classifier_from_token); cross-encoder scoring of text pairs; and
 * /classify, /score and /rerank over HTTP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { classifierScores } from "../src/model/classifier.ts";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";
import { referenceHidden, type W } from "./dense-reference.ts";
import { variant } from "./checkpoint-variant.ts";
import { FAST_MODEL, SERVER_MODEL, STORIES_DIR, startServer, tinyModel, type RunningServer } from "./helpers.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

const ENGINE_MS = 60_000;
const quiet = { log: () => {} };
const base = tinyModel(FAST_MODEL); // llama, vocabulary 512, hidden 32, untied LM head
const H = 32;
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i]!)));
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** A LlamaForSequenceClassification copy of the fast model: its LM head replaced by a random score head of `labels` rows. */
function classifierModel(name: string, labels: string[], extra: Record<string, unknown> = {}): string {
  const w = new SeededRandom(11).normal(new Float32Array(labels.length * H), 0.5);
  return variant(base, name, {
    config: (c) => { c.architectures = ["LlamaForSequenceClassification"]; c.id2label = Object.fromEntries(labels.map((l, i) => [String(i), l])); Object.assign(c, extra); },
    rename: (n) => (n === "lm_head.weight" ? null : n),
    add: [{ name: "score.weight", dtype: "BF16", shape: [labels.length, H], bytes: fromFloat32(w, "BF16") }],
  });
}

/** The dense float64 reference's logits for `rows` (a head's rows, by tensor name and row) on each prompt. */
function referenceLogits(dir: string, prompts: number[][], head: (w: W) => Float64Array[]): number[][] {
  const cfg = loadModelConfig(dir), ckpt = new Checkpoint(dir);
  const w: W = (n) => Float64Array.from(toFloat32(ckpt.tensor(n).bytes, ckpt.tensor(n).dtype));
  const rows = head(w);
  return prompts.map((p) => {
    const h = referenceHidden(cfg, w, p).at(-1)!;
    return rows.map((r) => r.reduce((a, x, i) => a + x * h[i]!, 0));
  });
}
const rowsOf = (t: Float64Array, ids: number[]) => ids.map((id) => t.slice(id * H, (id + 1) * H));

const three = classifierModel("three", ["negative", "positive", "neutral"]);
const shared = Array.from({ length: 9 }, (_, i) => 20 + i);
const PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [...shared, 100, 101], [...shared, 200], [42]];

describe("the engine as a sequence classifier", () => {
  test("logits = score head · the dense reference's last hidden state; batching, chunks and cached prefixes change nothing; softmax probabilities and labels", () => {
    const ref = referenceLogits(three, PROMPTS, (w) => rowsOf(w("score.weight"), [0, 1, 2]));
    const llm = new LLM({ model: three, blockSize: 4, maxModelLen: 64, ...quiet });
    expect(llm.engine.info.runner).toBe("pooling");
    expect(llm.engine.info.pooler!.task).toBe("classify");
    const raw = llm.classify(PROMPTS, { useActivation: false });
    raw.forEach((o, i) => expect(maxDiff(o.outputs.probs, ref[i]!)).toBeLessThan(1e-4));
    const out = llm.classify(PROMPTS);
    out.forEach((o, i) => {
      const l = ref[i]!, e = l.map((x) => Math.exp(x)), s = e.reduce((a, b) => a + b, 0);
      expect(maxDiff(o.outputs.probs, e.map((x) => x / s))).toBeLessThan(1e-4);
      expect(o.outputs.label).toBe(["negative", "positive", "neutral"][l.indexOf(Math.max(...l))]!);
    });
    expect(new Set(out.map((o) => o.outputs.label)).size).toBeGreaterThan(1); // the prompts do not all land on one label
    // Alone, in chunks of 4 tokens, after the shared prefix was cached: the same logits.
    const chunked = new LLM({ model: three, blockSize: 4, maxModelLen: 64, maxNumBatchedTokens: 4, ...quiet });
    for (const [i, p] of PROMPTS.entries()) {
      expect(maxDiff(llm.classify([p], { useActivation: false })[0]!.outputs.probs, raw[i]!.outputs.probs)).toBeLessThan(1e-6);
      expect(maxDiff(chunked.classify([p], { useActivation: false })[0]!.outputs.probs, raw[i]!.outputs.probs)).toBeLessThan(1e-6);
    }
    expect(llm.engine.blockManager.prefixCacheHits).toBeGreaterThan(0);
    expect(llm.engine.blockManager.numFreeBlocks).toBe(llm.engine.blockManager.numBlocks);
    // A classifier is not an embedding model, nor a generator; a three-label head gives no single score.
    expect(() => llm.embed([[1]])).toThrow("embed: this model is a sequence classifier");
    expect(() => llm.generate([[1]])).toThrow("it makes scores (LLM.classify, LLM.score), not text");
    expect(() => llm.score([[1]], [[2]])).toThrow("a score needs a classifier with one label; this one has 3 (negative, positive, neutral)");
    llm.close();
    chunked.close();
  }, ENGINE_MS);

  test("problem_type decides the activation: sigmoid per label for multi-label, none for regression", () => {
    const logits = [0.5, -1, 2];
    const c = { numLabels: 3, labels: ["a", "b", "c"], fromTokens: null };
    expect(maxDiff(classifierScores({ ...c, problemType: "multi_label_classification" }, logits), logits.map(sigmoid))).toBeLessThan(1e-12);
    expect(classifierScores({ ...c, problemType: "regression" }, logits)).toEqual(logits);
    expect(classifierScores({ ...c, numLabels: 1, problemType: null }, [0.3])).toEqual([sigmoid(0.3)]);
    const multi = classifierModel("multi", ["x", "y"], { problem_type: "multi_label_classification" });
    const llm = new LLM({ model: multi, ...quiet });
    const o = llm.classify([[5, 6, 7]])[0]!, raw = llm.classify([[5, 6, 7]], { useActivation: false })[0]!;
    expect(maxDiff(o.outputs.probs, raw.outputs.probs.map(sigmoid))).toBeLessThan(1e-12);
    llm.close();
    // --pooler-config use_activation: false makes raw logits the default.
    const rawDefault = new LLM({ model: multi, poolerConfig: { use_activation: false }, ...quiet });
    expect(rawDefault.classify([[5, 6, 7]])[0]!.outputs.probs).toEqual(raw.outputs.probs);
    rawDefault.close();
  }, ENGINE_MS);

  test("a causal LM as a reranker (--hf-overrides classifier_from_token): from_2_way_softmax is sigmoid(l_yes − l_no), no_post_processing one label per token", () => {
    // In the fast model's 512-token vocabulary, the Qwen3 tokenizer's "a" and "b" play "no" and "yes".
    const tok = TextTokenizer.load(base);
    const no = tok.tokenId("a")!, yes = tok.tokenId("b")!, c = tok.tokenId("c")!;
    expect(Math.max(no, yes, c)).toBeLessThan(512);
    const ref = referenceLogits(base, PROMPTS, (w) => rowsOf(w("lm_head.weight"), [no, yes, c]));
    const reranker = new LLM({ model: base, hfOverrides: { architectures: ["LlamaForSequenceClassification"], classifier_from_token: ["a", "b"], method: "from_2_way_softmax" }, ...quiet });
    const scores = reranker.classify(PROMPTS);
    scores.forEach((o, i) => expect(Math.abs(o.outputs.probs[0]! - sigmoid(ref[i]![1]! - ref[i]![0]!))).toBeLessThan(1e-5));
    // LLM.score: each pair read as one input (token ids one after the other).
    const pairScores = reranker.score([[1, 2, 3]], [[4, 5, 6, 7], [9, 8, 7]]).map((o) => o.outputs.score);
    expect(pairScores).toEqual(reranker.classify([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 9, 8, 7]]).map((o) => o.outputs.probs[0]!));
    reranker.close();
    const perToken = new LLM({ model: base, hfOverrides: { architectures: ["LlamaForSequenceClassification"], classifier_from_token: ["a", "b", "c"], method: "no_post_processing" }, ...quiet });
    perToken.classify(PROMPTS, { useActivation: false }).forEach((o, i) => expect(maxDiff(o.outputs.probs, ref[i]!)).toBeLessThan(1e-4));
    perToken.close();
    // Qwen3-Reranker's own flag on a Qwen3 checkpoint with a tied LM head: the embeddings' rows.
    const qwen = tinyModel(SERVER_MODEL), qtok = TextTokenizer.load(qwen);
    const qref = referenceLogits(qwen, [[10, 11, 12]], (w) => rowsOf(w("model.embed_tokens.weight"), [qtok.tokenId("no")!, qtok.tokenId("yes")!]))[0]!;
    const qr = new LLM({ model: qwen, hfOverrides: { architectures: ["Qwen3ForSequenceClassification"], classifier_from_token: ["no", "yes"], is_original_qwen3_reranker: true }, ...quiet });
    expect(Math.abs(qr.classify([[10, 11, 12]])[0]!.outputs.probs[0]! - sigmoid(qref[1]! - qref[0]!))).toBeLessThan(1e-5);
    qr.close();
  }, ENGINE_MS);

  test("tensor parallelism (CPU ranks, the overrides reach every rank): TP = 2 gives TP = 1's logits", () => {
    // rope_theta too: ranks that read config.json without the overrides would compute other hidden states.
    const overrides = { architectures: ["LlamaForSequenceClassification"], classifier_from_token: ["a", "b", "c"], method: "no_post_processing", rope_theta: 1234 };
    const one = new LLM({ model: base, hfOverrides: overrides, blockSize: 8, maxNumBatchedTokens: 16, ...quiet });
    const two = new LLM({ model: base, hfOverrides: overrides, blockSize: 8, maxNumBatchedTokens: 16, tensorParallelSize: 2, ...quiet });
    const a = one.classify(PROMPTS, { useActivation: false }), b = two.classify(PROMPTS, { useActivation: false });
    a.forEach((o, i) => expect(maxDiff(b[i]!.outputs.probs, o.outputs.probs)).toBeLessThan(1e-4));
    one.close();
    two.close();
  }, ENGINE_MS);

  test("bad configurations are refused at start, naming the field", () => {
    const cls = (o: Record<string, unknown>) => () => new LLM({ model: base, hfOverrides: { architectures: ["LlamaForSequenceClassification"], ...o }, ...quiet });
    expect(cls({ method: "from_2_way_softmax" })).toThrow("config.json (with --hf-overrides): field 'classifier_from_token' must be a list of token strings");
    expect(cls({ classifier_from_token: ["a", "b", "c"], method: "from_2_way_softmax" })).toThrow("method from_2_way_softmax needs two classifier_from_token entries");
    expect(cls({ classifier_from_token: ["a"], method: "softmax" })).toThrow("field 'method' must be from_2_way_softmax or no_post_processing");
    expect(cls({ classifier_from_token: ["a", "no such token"], method: "from_2_way_softmax" })).toThrow("classifier_from_token: 'no such token' is not a token of the vocabulary");
    expect(cls({ classifier_from_token: ["a", "yes"], method: "from_2_way_softmax" })).toThrow("classifier_from_token: 'yes' is token 9693, outside the LM head's 512 rows");
    expect(cls({})).toThrow("missing tensor 'score.weight'"); // a seq-cls architecture needs its score head
    expect(() => new LLM({ model: base, hfOverrides: { classifier_from_token: ["a", "b"] }, ...quiet })).toThrow(`classifier_from_token applies to sequence classifiers: set architectures to ["LlamaForSequenceClassification"] too`);
    expect(() => new LLM({ model: three, runner: "generate", ...quiet })).toThrow("--runner: llama sequence classifier (…ForSequenceClassification) has a score head, not an LM head");
    expect(() => new LLM({ model: three, poolerConfig: { normalize: true }, ...quiet })).toThrow("--pooler-config: unknown field 'normalize' (for a classifier vbun has pooling_type and use_activation)");
    const wrongShape = classifierModel("wrong-shape", ["a", "b"], { num_labels: 4, id2label: undefined });
    expect(() => new LLM({ model: wrongShape, ...quiet })).toThrow("tensor 'score.weight' has shape [2,32] but the config implies [4,32]");
  }, ENGINE_MS);
});

const storiesPresent = existsSync(join(STORIES_DIR, "tokenizer.json"));
if (!storiesPresent) console.log(`skipping the pair-template tokenizer check: ${STORIES_DIR} not found (../shared)`);

describe("pairs as one input (a cross-encoder's query and document)", () => {
  test("a ByteLevel tokenizer's (Qwen's) pair follows the first text", () => {
    const qwen = TextTokenizer.load(base);
    expect(qwen.encodePair("query", "doc one")).toEqual([...qwen.encode("query"), ...qwen.encode("doc one")]);
  });

  test.skipIf(!storiesPresent)("the tokenizer's pair template where it has one (stories260K's: <s> A <s> B)", () => {
    const stories = TextTokenizer.load(STORIES_DIR);
    const a = stories.encode("Once upon", false), b = stories.encode("a time", false);
    expect(stories.encodePair("Once upon", "a time")).toEqual([1, ...a, 1, ...b]);
    expect(stories.encodePair("Once upon", "a time", false)).toEqual([...a, ...b]);
  });
});

describe("the classifier endpoints over HTTP (/classify, /score, /rerank)", () => {
  let reranker: RunningServer, labels: RunningServer, embedder: RunningServer;
  const rerankerDir = tinyModel(SERVER_MODEL);
  const overrides = { architectures: ["Qwen3ForSequenceClassification"], classifier_from_token: ["no", "yes"], is_original_qwen3_reranker: true };
  beforeAll(async () => {
    [reranker, labels, embedder] = await Promise.all([
      startServer([rerankerDir, "--hf-overrides", JSON.stringify(overrides)]),
      startServer([three, "--max-model-len", "64"]),
      startServer([rerankerDir, "--runner", "pooling"]),
    ]);
  }, ENGINE_MS);
  afterAll(async () => {
    await Promise.all([reranker?.stop(), labels?.stop(), embedder?.stop()]);
  });
  const post = (s: RunningServer, path: string, body: unknown) => fetch(`${s.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

  test("/classify: vLLM's shape; token ids, texts and chat messages; use_activation false gives the logits", async () => {
    const res = await post(labels, "/classify", { input: [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7]] });
    expect(res.status).toBe(200);
    const j = await res.json() as { id: string; object: string; data: { index: number; label: string; probs: number[]; num_classes: number }[]; usage: { prompt_tokens: number; total_tokens: number; completion_tokens: number } };
    expect(j.id).toStartWith("classify-");
    expect(j.object).toBe("list");
    expect(j.usage).toMatchObject({ prompt_tokens: 10, total_tokens: 10, completion_tokens: 0 });
    const llm = new LLM({ model: three, maxModelLen: 64, ...quiet });
    const local = llm.classify([PROMPTS[0]!, PROMPTS[1]!]);
    expect(j.data.map((d) => [d.index, d.label, d.num_classes])).toEqual(local.map((o, i) => [i, o.outputs.label, 3]));
    j.data.forEach((d, i) => expect(maxDiff(d.probs, local[i]!.outputs.probs)).toBeLessThan(1e-6));
    const raw = await (await post(labels, "/v1/classify", { input: [9, 8, 7], use_activation: false })).json() as typeof j;
    expect(maxDiff(raw.data[0]!.probs, llm.classify([[9, 8, 7]], { useActivation: false })[0]!.outputs.probs)).toBeLessThan(1e-6);
    llm.close();
    // A text is tokenized as /tokenize does; chat messages through the template, like its token ids.
    const ids = await (await post(reranker, "/tokenize", { prompt: "Hello there" })).json() as { tokens: number[] };
    const byText = await (await post(reranker, "/classify", { input: "Hello there" })).json() as typeof j;
    const byIds = await (await post(reranker, "/classify", { input: ids.tokens })).json() as typeof j;
    expect(byText.data).toEqual(byIds.data);
    expect(byText.data[0]!.num_classes).toBe(1);
    const messages = [{ role: "user", content: "Hello there" }];
    const templ = await (await post(reranker, "/tokenize", { messages, add_generation_prompt: false, add_special_tokens: false })).json() as { tokens: number[] };
    const byChat = await (await post(reranker, "/classify", { messages })).json() as typeof j;
    expect(byChat.data).toEqual((await (await post(reranker, "/classify", { input: templ.tokens })).json() as typeof j).data);
  }, ENGINE_MS);

  test("/score and /rerank on a cross-encoder: each pair as one input, scored by sigmoid of its logit, as LLM.score does", async () => {
    const query = "Where is the cat?", docs = ["The cat sat on the mat", "A dog ran", "Paris is in France"];
    const llm = new LLM({ model: rerankerDir, hfOverrides: overrides, ...quiet });
    const expected = llm.score(query, docs).map((o) => o.outputs.score);
    const tok = llm.tokenizer;
    const pairTokens = docs.reduce((a, d) => a + tok.encodePair(query, d).length, 0);
    llm.close();
    expect(new Set(expected).size).toBe(3);
    const s = await (await post(reranker, "/score", { queries: query, documents: docs })).json() as { data: { index: number; object: string; score: number }[]; usage: { prompt_tokens: number } };
    expect(s.data.map((d) => [d.index, d.object])).toEqual([[0, "score"], [1, "score"], [2, "score"]]);
    expect(maxDiff(s.data.map((d) => d.score), expected)).toBeLessThan(1e-6);
    expect(s.usage.prompt_tokens).toBe(pairTokens);
    const r = await (await post(reranker, "/rerank", { query, documents: docs, top_n: 2 })).json() as { results: { index: number; document: { text: string }; relevance_score: number }[] };
    const order = [0, 1, 2].sort((a, b) => expected[b]! - expected[a]!);
    expect(r.results.map((x) => x.index)).toEqual(order.slice(0, 2));
    expect(maxDiff(r.results.map((x) => x.relevance_score), order.slice(0, 2).map((i) => expected[i]!))).toBeLessThan(1e-6);
    const logits = await (await post(reranker, "/score", { text_1: query, text_2: docs, use_activation: false })).json() as typeof s;
    expect(maxDiff(logits.data.map((d) => sigmoid(d.score)), expected)).toBeLessThan(1e-6);
  }, ENGINE_MS);

  test("errors: the wrong kind of model for the endpoint, a multi-label head's scores, mixed pair types", async () => {
    const cases: [RunningServer, string, unknown, number, string][] = [
      [reranker, "/v1/embeddings", { input: "x" }, 400, "this model is a sequence classifier: it makes scores (/classify, /score, /rerank), not the embeddings the Embeddings API returns"],
      [reranker, "/v1/completions", { prompt: "x" }, 400, "this is a sequence classifier (--runner pooling): it does not support /v1/completions; use /classify, /score or /rerank"],
      [embedder, "/classify", { input: "x" }, 400, "this is an embedding model: the Classification API needs a sequence classifier"],
      [labels, "/score", { queries: [[1]], documents: [[2]] }, 400, "the Score API needs a classifier with one label (a cross-encoder's relevance); this one has 3 (negative, positive, neutral)"],
      [labels, "/rerank", { query: "q", documents: ["d"] }, 400, "the Rerank API needs a classifier with one label"],
      [reranker, "/score", { queries: "q", documents: [[1, 2]] }, 400, "give both texts of each pair as strings or both as token ids"],
      [labels, "/classify", { input: Array.from({ length: 65 }, () => 3) }, 400, "maximum context length is 64 tokens"],
      [labels, "/classify", { input: "" }, 400, "input must not be empty"],
    ];
    for (const [server, path, body, status, message] of cases) {
      const res = await post(server, path, body);
      const j = await res.json() as { error: { message: string } };
      expect({ path, status: res.status, message: j.error.message }).toEqual({ path, status, message: expect.stringContaining(message) });
    }
    expect((await post(labels, "/classify", { input: [3, 4] })).status).toBe(200);
  }, ENGINE_MS);
});

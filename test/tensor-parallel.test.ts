/** CPU tensor parallelism: Worker ranks, shared-memory all-reduce, sampling on rank 0. */
import { afterEach, describe, expect, test } from "bun:test";
import { LLM } from "../src/engine/llm.ts";
import type { TinyModelOptions } from "../src/model/tiny-model.ts";
import { exitsWithin, FAST_MODEL, tinyModel } from "./helpers.ts";
import { simProvider } from "./gpu-sim/provider.ts";
import { ABORT, createSharedBuffers, ERR_LEN, ERR_RANK, SharedCollective } from "../src/parallel/shared-collective.ts";

const quiet = { log: () => {} };
const prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [100, 200, 300], Array.from({ length: 40 }, (_, i) => (i * 37) % 500)];
const open: LLM[] = [];
const make = (model: string, tp: number, extra = {}) => {
  const llm = new LLM({ model, tensorParallelSize: tp, maxModelLen: 256, maxNumSeqs: 8, maxNumBatchedTokens: 64, blockSize: 8, ...quiet, ...extra });
  open.push(llm);
  return llm;
};
afterEach(() => { for (const l of open.splice(0)) l.close(); });

const MODELS: [string, TinyModelOptions][] = [
  ["llama (4 heads, 2 KV heads, untied)", FAST_MODEL],
  ["qwen3 (q/k norm, tied, KV heads replicated at TP=4)", { arch: "qwen3", seed: 3, vocabSize: 2048 }],
  ["qwen2 (qkv bias, vocab not divisible by 4)", { arch: "qwen2", seed: 4, vocabSize: 1001 }],
  ["granite (multipliers folded into each rank's shards; tied head scaled apart)", { ...FAST_MODEL, arch: "granite", seed: 8, tieWordEmbeddings: true }],
  // Every rank holds a slice of every expert (and of the shared expert); the router is replicated.
  ["qwen3_moe (experts sliced per rank, a dense layer between sparse ones)", { arch: "qwen3_moe", seed: 5, vocabSize: 2048, numLayers: 3, numExperts: 8, mlpOnlyLayers: [1] }],
  ["qwen2_moe (gated shared expert sliced per rank)", { arch: "qwen2_moe", seed: 6, vocabSize: 2048, numExperts: 6, topK: 4 }],
  ["granitemoe (fused experts sliced per rank, the residual multiplier in each slice)", { arch: "granitemoe", seed: 9, vocabSize: 2048 }],
  // Gemma's sandwich norms come after each all-reduce (they need the whole output).
  ["gemma3 (sandwich norms, sliding and global layers)", { arch: "gemma3", seed: 7, vocabSize: 2048, numLayers: 3 }],
  ["gemma2 (soft-capped logits after the vocab-parallel gather)", { arch: "gemma2", seed: 8, vocabSize: 2048, numLayers: 3 }],
  // GLM-4.5: the router (and its correction bias) replicated, every routed and shared expert sliced per rank.
  ["glm4_moe (grouped sigmoid routing; shared expert sliced per rank)", { arch: "glm4_moe", seed: 12, vocabSize: 2048, numLayers: 3 }],
  // OLMo's q/k norms span all heads: each rank's sums of squares are all-reduced (the KV heads replicated at TP=4).
  ["olmo2 (q/k norms across heads; post-norms after each all-reduce)", { arch: "olmo2", seed: 10, vocabSize: 2048 }],
  ["olmo3 (sliding layers, q/k norms across heads)", { arch: "olmo3", seed: 11, vocabSize: 2048, numLayers: 4 }],
  // GPT-OSS: each rank's heads' sinks; expert biases sliced with their rows (gate/up) or added by rank 0 only (down).
  ["gpt_oss (sinks per rank's heads; expert biases sliced, the down bias added once)", { arch: "gpt_oss", seed: 13, vocabSize: 2048, numLayers: 4 }],
  // MLA: q and kv_b split by heads, the latent projections replicated, o_proj's widened columns by heads.
  ["deepseek_v3 (multi-head latent attention split by heads)", { arch: "deepseek_v3", seed: 14, vocabSize: 2048, numLayers: 3 }],
  // MiniMax-M2: q/k norms across heads (sums of squares all-reduced), the correction bias replicated.
  ["minimax_m2 (q/k norms across heads, partial RoPE, sigmoid routing)", { arch: "minimax_m2", seed: 16, vocabSize: 2048 }],
  ["deepseek_v2 (softmax routing with shared experts, the routed scale folded into each slice)", { arch: "deepseek_v2", seed: 15, vocabSize: 2048, numLayers: 3 }],
  ["deepseek_v2 with group_limited_greedy (the grouped routing kernel, replicated; its scale there, not in the slices)", { arch: "deepseek_v2", seed: 18, vocabSize: 2048, numLayers: 3, groupLimited: { numGroups: 4, topKGroups: 1 } }],
  ["ernie4_5_moe (softmax routing with a correction bias, shared experts sliced like the routed ones)", { arch: "ernie4_5_moe", seed: 17, vocabSize: 2048, numLayers: 3 }],
  // OLMoE: q/k norms across heads (sums of squares all-reduced) before every layer's experts (sliced per rank).
  ["olmoe (q/k norms across heads; every layer 8 experts, top 2 unnormalized)", { arch: "olmoe", seed: 20, vocabSize: 2048 }],
  // Cohere's parallel block: each rank adds its MLP slice's output to its attention slice's, and one all-reduce sums both.
  ["cohere2 (parallel block: one all-reduce for attention + MLP; sliding layers with RoPE, the global one without)", { arch: "cohere2", seed: 19, vocabSize: 2048, numLayers: 4 }],
  // Command R+'s q/k norm weights per head: each rank takes its heads' rows (KV heads replicated at TP = 4).
  ["cohere with use_qk_norm (per-head q/k norm weights sliced with the heads)", { arch: "cohere", seed: 21, vocabSize: 2048, qkNorm: true }],
];

describe("greedy outputs with TP = 2 and TP = 4 equal TP = 1 over 32 tokens", () => {
  for (const [name, opts] of MODELS) {
    test(name, () => {
      const model = tinyModel(opts);
      const params = { temperature: 0, max_tokens: 32, ignore_eos: true };
      const base = make(model, 1).generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
      for (const tp of [2, 4]) {
        const out = make(model, tp).generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
        expect(out).toEqual(base);
      }
      // Seeded sampling happens on rank 0 only: the same draws as without tensor parallelism.
      const sampled = { temperature: 0.8, top_p: 0.9, seed: 11, max_tokens: 16, ignore_eos: true };
      expect(make(model, 2).generate(prompts, sampled, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds))
        .toEqual(make(model, 1).generate(prompts, sampled, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds));
    }, 60_000);
  }
});

test("--async-scheduling with TP = 2 says it is off and runs synchronously", () => {
  const logs: string[] = [];
  const llm = make(tinyModel(FAST_MODEL), 2, { asyncScheduling: true, log: (m: string) => logs.push(m) });
  expect(llm.engine.options.asyncScheduling).toBe(false);
  expect(logs.some((m) => m.includes("async scheduling is off with tensor parallelism"))).toBe(true);
  const params = { temperature: 0, max_tokens: 8, ignore_eos: true };
  expect(llm.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds))
    .toEqual(make(tinyModel(FAST_MODEL), 1).generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds));
  expect(llm.engine.overlappedSteps).toBe(0);
});

test("TP = 2 with chunked prefill (steps without logits) and preemption equals TP = 1", () => {
  const model = tinyModel(FAST_MODEL);
  const params = { temperature: 0, max_tokens: 24, ignore_eos: true };
  const tight = { maxNumBatchedTokens: 7, numGpuBlocksOverride: 12 };
  const one = make(model, 1, tight), two = make(model, 2, tight);
  const a = one.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
  const b = two.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
  expect(b).toEqual(a);
  expect(two.engine.scheduler.numPartialPrefills).toBeGreaterThan(0);
  expect(two.engine.scheduler.numPreemptions).toBeGreaterThan(0);
}, 60_000);

test("structured outputs with TP = 2 (masks on rank 0's gathered logits) equal TP = 1", async () => {
  const model = tinyModel({ arch: "qwen2", seed: 4, vocabSize: 1001 });
  const params = [
    { temperature: 0, max_tokens: 24, structured_outputs: { regex: "[a-z]{2,5}( [a-z]{2,5})+\\." } },
    { temperature: 0.8, seed: 2, max_tokens: 24, structured_outputs: { choice: ["north", "south", "east west"] } },
    { temperature: 0, max_tokens: 24, structured_outputs: { json: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] }, disable_any_whitespace: true } },
  ];
  const run = async (tp: number) => (await make(model, tp).generateAsync(prompts, params, { useTqdm: false })).map((o) => o.outputs[0]!.text);
  const one = await run(1);
  expect(await run(2)).toEqual(one);
  expect(["north", "south", "east west"]).toContain(one[1]!);
  expect(JSON.parse(one[2]!)).toHaveProperty("ok");
}, 60_000);

test("sharded weight shapes", () => {
  const llm = make(tinyModel(FAST_MODEL), 2);
  // hidden 32, 4 heads × 8, 2 KV heads, intermediate 64, vocab 512 → per rank: 2 q heads, 1 KV head.
  expect(llm.engine.runner.model.weightShapes()).toEqual({ embed: [256, 32], lmHead: [256, 32], qkv: [32, 32], o: [32, 16], gateUp: [64, 32], down: [32, 32] });
  const four = make(tinyModel(FAST_MODEL), 4);
  expect(four.engine.runner.model.weightShapes()).toEqual({ embed: [128, 32], lmHead: [128, 32], qkv: [24, 32], o: [32, 8], gateUp: [32, 32], down: [32, 16] });
});

// "1:2": rank 1 throws before running step 2; "1:2:late": after step 2's barrier (the leader has gone on).
for (const [failAt, message] of [["1:2", "injected failure at step 2"], ["1:2:late", "injected failure after step 2's barrier"]] as const) {
  test(`a failing worker (VBUN_TP_FAIL_AT=${failAt}) makes the engine fail with that worker's error, without hanging`, async () => {
    process.env.VBUN_TP_FAIL_AT = failAt;
    try {
      const llm = make(tinyModel(FAST_MODEL), 2);
      const group = llm.engine.runner.tpGroup!;
      expect(() => llm.generate(prompts, { temperature: 0, max_tokens: 8 }, { useTqdm: false })).toThrow(new RegExp(`tensor-parallel rank 1 failed: ${message}`));
      // The engine stays failed with the same error, and closes.
      expect(() => llm.generate(prompts, { temperature: 0, max_tokens: 8 }, { useTqdm: false })).toThrow(new RegExp(`tensor-parallel rank 1 failed: ${message}`));
      llm.close();
      expect(await exitsWithin(group, 5000)).toBe(true);
    } finally {
      delete process.env.VBUN_TP_FAIL_AT;
    }
  }, 30_000);
}

test("close() stops every worker thread", async () => {
  const llm = new LLM({ model: tinyModel(FAST_MODEL), tensorParallelSize: 4, maxModelLen: 64, maxNumSeqs: 4, ...quiet });
  llm.generate([[1, 2, 3]], { max_tokens: 2 }, { useTqdm: false });
  const group = llm.engine.runner.tpGroup!;
  llm.close();
  expect(await exitsWithin(group, 5000)).toBe(true);
});

test("invalid sizes are clear start-up errors", () => {
  const model = tinyModel(FAST_MODEL);
  expect(() => new LLM({ model, tensorParallelSize: 3, ...quiet })).toThrow(/--tensor-parallel-size: --tensor-parallel-size 3 does not divide num_attention_heads \(4\)/);
  expect(() => new LLM({ model, tensorParallelSize: 0, ...quiet })).toThrow(/--tensor-parallel-size: must be a positive integer/);
  expect(() => new LLM({ model, tensorParallelSize: 8, ...quiet })).toThrow(/does not divide num_attention_heads/);
});

test("a barrier with a time limit gives up on a rank that never comes (close() then aborts the group instead of hanging)", () => {
  const sizes = { size: 2, maxReduce: 4, maxLogitsRows: 1, maxRows: 1, vocabSize: 4, vocabPerRank: 2, maxTokens: 4, maxSeqs: 1, maxBlocksPerSeq: 1, numKvGroups: 1 };
  const leader = new SharedCollective(0, sizes, createSharedBuffers(sizes));
  const t0 = performance.now();
  expect(() => leader.barrier(150)).toThrow(/tensor parallelism: a rank did not arrive within 0.15 s \(VBUN_TP_TIMEOUT\); the group is stopped/);
  expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
});

test("a rank caught in the middle of recording its failure is reported with its own rank and message, not as rank 0's empty one", async () => {
  const sizes = { size: 2, maxReduce: 4, maxLogitsRows: 1, maxRows: 1, vocabSize: 4, vocabPerRank: 2, maxTokens: 4, maxSeqs: 1, maxBlocksPerSeq: 1, numKvGroups: 1 };
  const buffers = createSharedBuffers(sizes);
  const leader = new SharedCollective(0, sizes, buffers);
  // Rank 1 has claimed the abort (ABORT = 2) but not yet written its rank and message: another thread
  // finishes the write 100 ms later, as a worker between the two steps of abort() would.
  const ctl = new Int32Array(buffers.ctl);
  Atomics.store(ctl, ABORT, 2);
  const src = `self.onmessage = (e) => { const { ctl, err } = e.data; const c = new Int32Array(ctl); Atomics.wait(c, 15, 0, 100);
    const m = new TextEncoder().encode("boom"); new Uint8Array(err).set(m); Atomics.store(c, ${ERR_LEN}, m.length); Atomics.store(c, ${ERR_RANK}, 1);
    Atomics.store(c, ${ABORT}, 1); Atomics.notify(c, ${ABORT}); postMessage("done"); };`;
  const w = new Worker(URL.createObjectURL(new Blob([src], { type: "application/javascript" })));
  const done = new Promise((r) => { w.onmessage = r; });
  w.postMessage({ ctl: buffers.ctl, err: buffers.err });
  try {
    expect(() => leader.checkAbort()).toThrow(/^tensor-parallel rank 1 failed: boom$/);
    await done;
  } finally {
    w.terminate();
  }
});

test("a rank worker whose module fails to load makes the start fail after VBUN_TP_START_TIMEOUT, instead of hanging it", () => {
  process.env.VBUN_TP_START_TIMEOUT = "1";
  try {
    const broken = URL.createObjectURL(new Blob(["throw new Error('this worker cannot load');"], { type: "application/javascript" }));
    const cuda = { ...simProvider(2).provider, tpWorkerUrl: broken };
    const t0 = performance.now();
    expect(() => new LLM({ model: tinyModel(FAST_MODEL), device: "cuda", cuda, tensorParallelSize: 2, maxModelLen: 64, maxNumSeqs: 4, ...quiet })).toThrow(/tensor parallelism: 1 of 1 rank workers did not start within 1 s \(VBUN_TP_START_TIMEOUT\): a worker's module failed to load/);
    expect(performance.now() - t0).toBeLessThan(30_000);
  } finally {
    delete process.env.VBUN_TP_START_TIMEOUT;
  }
}, 60_000);

test("a rank that stops responding (VBUN_TP_FAIL_AT=1:2:hang) fails the engine after VBUN_TP_TIMEOUT instead of hanging it", async () => {
  process.env.VBUN_TP_FAIL_AT = "1:2:hang";
  process.env.VBUN_TP_TIMEOUT = "1";
  try {
    const llm = make(tinyModel(FAST_MODEL), 2);
    const group = llm.engine.runner.tpGroup!;
    const t0 = performance.now();
    expect(() => llm.generate(prompts, { temperature: 0, max_tokens: 8 }, { useTqdm: false })).toThrow(/tensor parallelism: a rank did not arrive within 1 s \(VBUN_TP_TIMEOUT\); the group is stopped/);
    expect(performance.now() - t0).toBeLessThan(10_000);
    llm.close();
    expect(await exitsWithin(group, 5000)).toBe(true);
  } finally {
    delete process.env.VBUN_TP_FAIL_AT;
    delete process.env.VBUN_TP_TIMEOUT;
  }
}, 30_000);

test("VBUN_TP_TIMEOUT must be a positive number of seconds", () => {
  process.env.VBUN_TP_TIMEOUT = "soon";
  try {
    expect(() => make(tinyModel(FAST_MODEL), 2)).toThrow(/VBUN_TP_TIMEOUT must be a positive number of seconds, got 'soon'/);
  } finally {
    delete process.env.VBUN_TP_TIMEOUT;
  }
});

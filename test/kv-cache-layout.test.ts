/**
 * The hybrid KV cache (vLLM's hybrid KV cache manager): layers grouped by attention span, one block table per
 * group, sliding groups giving back the blocks that left their window. Random workloads run through the
 * Scheduler, BlockManager and StepInputBuilder while a model of the cache tensors records what each step
 * stores where; every key every query may see must then hold that key's token (and its whole prefix).
 */
import { describe, expect, test } from "bun:test";
import { BlockManager, NULL_BLOCK } from "../src/engine/block-manager.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import { StepInputBuilder } from "../src/engine/step-inputs.ts";
import { blocksForSequence, kvCacheLayout, type KvCacheLayout } from "../src/model/kv-cache-layout.ts";
import { SeededRandom, tinyModelConfig, type TinyModelOptions } from "../src/model/tiny-model.ts";
import { RandomArrivals } from "./random-arrivals.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { LLM } from "../src/engine/llm.ts";
import { tinyModel } from "./helpers.ts";

describe("kvCacheLayout", () => {
  test("no sliding layers, or --disable-hybrid-kv-cache-manager: one group of every layer", () => {
    for (const layout of [kvCacheLayout([0, 0, 0]), kvCacheLayout([4, 0, 4, 0], false)]) {
      expect(layout.groups.length).toBe(1);
      expect(layout.groups[0]!.window).toBe(0);
      expect(layout.tensorOf).toEqual(layout.groups[0]!.layers);
      expect(layout.numTensors).toBe(layout.groupOf.length);
    }
  });

  test("every layer sliding by one window (Mistral 7B v0.1): one group that slides", () => {
    const layout = kvCacheLayout([8, 8, 8]);
    expect(layout.groups).toEqual([{ layers: [0, 1, 2], window: 8 }]);
    expect(layout.numTensors).toBe(3);
  });

  test("Gemma 3 1B (26 layers, every 6th global): groups of 4 layers, the last sliding group of 2", () => {
    const windows = Array.from({ length: 26 }, (_, l) => ((l + 1) % 6 ? 512 : 0));
    const layout = kvCacheLayout(windows);
    expect(layout.numTensors).toBe(4);
    expect(layout.groups.map((g) => [g.window, g.layers.length])).toEqual([[0, 4], [512, 4], [512, 4], [512, 4], [512, 4], [512, 4], [512, 2]]);
    expect(layout.groups[0]!.layers).toEqual([5, 11, 17, 23]);
    // Each layer is in exactly one group, at its own tensor; no two layers of a group share a tensor.
    const seen = new Set<number>();
    layout.groups.forEach((g, gi) => g.layers.forEach((l, j) => {
      expect(layout.groupOf[l]).toBe(gi);
      expect(layout.tensorOf[l]).toBe(j);
      seen.add(l);
    }));
    expect(seen.size).toBe(26);
  });

  test("blocksForSequence: a sliding group holds at most its window and one step's chunk", () => {
    expect(blocksForSequence([0], 100, 16, 2048)).toBe(7);
    expect(blocksForSequence([0, 32, 32], 10_000, 16, 64)).toBe(625 + 2 * (Math.ceil(95 / 16) + 1));
    expect(blocksForSequence([0, 32], 20, 16, 64)).toBe(4); // a short sequence: no more than its own blocks
  });
});

interface Workload { seed: number; numBlocks: number; blockSize: number; maxNumSeqs: number; budget: number; prefixCaching: boolean; windows: number[]; hybrid: boolean }

/** A fingerprint of a sequence's tokens 0 … k, per position (what a key's K/V depends on). */
function fingerprints(seq: Sequence, memo: Map<Sequence, number[]>): number[] {
  let fp = memo.get(seq);
  if (!fp) memo.set(seq, (fp = []));
  for (let k = fp.length; k < seq.numTokens; k++) fp.push(((k > 0 ? fp[k - 1]! : 17) * 1_000_003 + seq.tokens[k]! + 1) % 2_147_483_647);
  return fp;
}

function run(w: Workload) {
  const rng = new SeededRandom(w.seed);
  const layout: KvCacheLayout = kvCacheLayout(w.windows, w.hybrid);
  const G = layout.groups.length, bs = w.blockSize;
  const bm = new BlockManager(w.numBlocks, bs, w.prefixCaching, layout);
  const maxModelLen = 96;
  const sched = new Scheduler({ maxNumSeqs: w.maxNumSeqs, maxNumBatchedTokens: w.budget, maxModelLen, enableChunkedPrefill: true }, bm);
  const inputs = new StepInputBuilder(w.budget, w.maxNumSeqs, maxModelLen, bs, false, false, G);
  // The cache tensors: tensor j, slot → fingerprint of the key stored there (−1: never written).
  const memory = Array.from({ length: layout.numTensors }, () => new Float64Array(w.numBlocks * bs).fill(-1));
  const memo = new Map<Sequence, number[]>();
  const arrivals = new RandomArrivals(rng, 40, { prefixes: 3, prefixLen: [10, 50], suffixLen: 30, vocab: 21, maxOutput: 30, maxModelLen, perStep: 2 });
  const { live, maxTokens } = arrivals;
  let steps = 0, peakUsed = 0, keysChecked = 0;
  while (arrivals.pending) {
    arrivals.arrive(sched);
    const out = sched.schedule();
    bm.checkInvariants(live);
    peakUsed = Math.max(peakUsed, bm.numUsedBlocks);
    const step = inputs.build(out);
    const width = step.maxBlocksPerSeq;
    const groupSlots = [step.slotMapping, ...(step.kvGroups ?? []).map((g) => g.slotMapping)];
    const groupTables = [step.blockTables, ...(step.kvGroups ?? []).map((g) => g.blockTables)];
    // Store every new token's key, as each layer of each group does, in its group's slot.
    let t = 0;
    for (const s of out.scheduled) {
      const fp = fingerprints(s.seq, memo);
      for (let j = 0; j < s.numNewTokens; j++, t++)
        layout.groups.forEach((g, gi) => g.layers.forEach((l) => { memory[layout.tensorOf[l]!]![groupSlots[gi]![t]!] = fp[s.start + j]!; }));
    }
    // Every query sees exactly its keys, through its group's row of the step's block tables.
    out.scheduled.forEach((s, i) => {
      const fp = fingerprints(s.seq, memo);
      layout.groups.forEach((g, gi) => {
        const table = s.seq.blockTables[gi]!;
        // A sliding group holds no more blocks than its window and this step's chunk need.
        if (g.window > 0) expect(table.filter((b) => b !== NULL_BLOCK).length).toBeLessThanOrEqual(blocksForSequence([g.window], s.start + s.numNewTokens, bs, s.numNewTokens));
        for (let q = s.start; q < s.start + s.numNewTokens; q++)
          for (let k = g.window > 0 ? Math.max(0, q - g.window + 1) : 0; k <= q; k++) {
            const block = groupTables[gi]![i * width + Math.floor(k / bs)]!;
            for (const l of g.layers) expect(memory[layout.tensorOf[l]!]![block * bs + (k % bs)]).toBe(fp[k]!);
            keysChecked++;
          }
      });
    });
    const sampled = out.scheduled.filter((s) => s.samples).map((s) => (s.seq.numTokens * 7 + s.seq.seqId) % 20);
    sched.postprocess(out, sampled);
    steps++;
    for (const s of out.scheduled) if (s.samples && s.seq.numOutputTokens >= maxTokens.get(s.seq)!) { sched.finish(s.seq); live.delete(s.seq); }
    if (rng.next() < 0.1 && live.size > 0) {
      const victim = [...live][rng.int(0, live.size - 1)]!;
      sched.finish(victim);
      live.delete(victim);
    }
    bm.checkInvariants(live);
    if (steps > 20_000) throw new Error("workload did not finish");
  }
  expect(bm.numFreeBlocks).toBe(bm.numUsableBlocks);
  bm.checkInvariants([]);
  return { steps, preemptions: sched.numPreemptions, hits: bm.prefixCacheHits, peakUsed, keysChecked, numTensors: layout.numTensors };
}

describe("hybrid KV cache: every key a query sees holds that key, under random workloads", () => {
  const windowSets = [[0, 6, 6, 6, 0, 6], [5, 5, 5], [3, 3, 3, 3, 3, 0], [0, 4, 10]];
  let seed = 0;
  for (const windows of windowSets)
    for (const [numBlocks, blockSize, maxNumSeqs, budget] of [[120, 2, 4, 16], [300, 4, 16, 64]] as const)
      for (const prefixCaching of [true, false]) {
        const w: Workload = { seed: ++seed, numBlocks, blockSize, maxNumSeqs, budget, prefixCaching, windows, hybrid: true };
        test(`windows [${windows}], ${numBlocks} blocks × ${blockSize}, max ${maxNumSeqs} seqs, budget ${budget}, prefix caching ${prefixCaching}`, () => {
          expect(run(w).keysChecked).toBeGreaterThan(1000);
        });
      }

  test("the workloads preempt, hit the prefix cache in sliding groups, and use less KV memory than one table for all layers", () => {
    const base = { seed: 5, numBlocks: 120, blockSize: 2, maxNumSeqs: 4, budget: 16, prefixCaching: true, windows: [0, 6, 6, 6, 0, 6] };
    const hybrid = run({ ...base, hybrid: true });
    expect(hybrid.preemptions).toBeGreaterThan(0);
    expect(hybrid.hits).toBeGreaterThan(0);
    const slidingOnly = run({ ...base, windows: [5, 5, 5], hybrid: true });
    expect(slidingOnly.hits).toBeGreaterThan(0);
    // Memory in blocks of one layer: pages × the layers a page holds.
    const roomy = { ...base, numBlocks: 2000, maxNumSeqs: 16, budget: 64 };
    const a = run({ ...roomy, hybrid: true }), b = run({ ...roomy, hybrid: false });
    expect(a.peakUsed * a.numTensors).toBeLessThan(0.7 * b.peakUsed * b.numTensors);
  });
});

describe("sliding groups give back blocks", () => {
  const mk = (id: number, n: number) => new Sequence(id, `r${id}`, 0, Array.from({ length: n }, (_, i) => i % 50), new SamplingParams({ max_tokens: 40 }), 0, 0);

  test("a long decode keeps a window's worth of blocks in its sliding group; preempting and finishing free them all", () => {
    const layout = kvCacheLayout([0, 8]);
    const bm = new BlockManager(64, 4, true, layout);
    const seq = mk(0, 10);
    expect(bm.allocateSlots(seq, 10, bm.findCachedPrefix(seq))).toBe(true);
    seq.numComputedTokens = 10;
    for (let i = 0; i < 30; i++) {
      seq.appendToken(i % 7);
      expect(bm.allocateSlots(seq, 1)).toBe(true);
      seq.numComputedTokens++;
      bm.checkInvariants([seq]);
    }
    // 40 tokens: 10 blocks in the full group; the sliding group keeps keys 32 … 39 and the one being written.
    const [full, sliding] = seq.blockTables as [number[], number[]];
    expect(full.length).toBe(10);
    expect(sliding.length).toBe(10);
    expect(sliding.filter((b) => b !== NULL_BLOCK).length).toBeLessThanOrEqual(3);
    expect(bm.numUsedBlocks).toBe(10 + sliding.filter((b) => b !== NULL_BLOCK).length);
    bm.free(seq);
    expect(bm.numFreeBlocks).toBe(63);
    bm.checkInvariants([]);
  });

  test("a prefix hit shares only the blocks the window still sees; the rest of the sliding table is the null block", () => {
    const bm = new BlockManager(64, 4, true, kvCacheLayout([0, 6]));
    const a = mk(0, 30);
    expect(bm.allocateSlots(a, 30, bm.findCachedPrefix(a))).toBe(true);
    a.numComputedTokens = 30;
    const b = mk(1, 30);
    const hit = bm.findCachedPrefix(b);
    // Blocks 0 … 6 are full (28 tokens; the last token is always computed). The query at 28 sees keys 23 … 28.
    expect(hit.numBlocks).toBe(7);
    expect(hit.blocks[0]).toEqual(a.blockTables[0]!.slice(0, 7));
    expect(hit.blocks[1]).toEqual([NULL_BLOCK, NULL_BLOCK, NULL_BLOCK, NULL_BLOCK, NULL_BLOCK, a.blockTables[1]![5]!, a.blockTables[1]![6]!]);
    expect(bm.allocateSlots(b, 2, hit)).toBe(true);
    expect(b.numComputedTokens).toBe(28);
    bm.checkInvariants([a, b]);
  });

  test("a hit stops where a sliding group's needed blocks were evicted, even if the full group has them all", () => {
    // One block to spare: as `a` decodes, its new blocks come from the sliding blocks its window gave back, oldest first.
    const bm = new BlockManager(1 + 16 + 1, 4, true, kvCacheLayout([0, 6]));
    const a = mk(0, 30);
    expect(bm.allocateSlots(a, 30, bm.findCachedPrefix(a))).toBe(true);
    a.numComputedTokens = 30;
    expect(bm.findCachedPrefix(mk(1, 30)).numBlocks).toBe(7);
    for (let i = 0; i < 20; i++) {
      a.appendToken(i % 50 === a.numTokens % 50 ? 0 : a.numTokens % 50);
      expect(bm.allocateSlots(a, 1)).toBe(true);
      a.numComputedTokens++;
    }
    bm.checkInvariants([a]);
    // The full group still holds blocks 0 … 6 of the prompt, but the sliding blocks a hit would need (5 and 6, for
    // the query at 28) were reused: no hit of any length can be served.
    expect(a.blockTables[1]!.slice(0, 7).every((b) => b === NULL_BLOCK)).toBe(true);
    expect(bm.findCachedPrefix(mk(1, 30)).numBlocks).toBe(0);
    // With one table for all layers the same history leaves a hit of all 7.
    const whole = new BlockManager(1 + 16 + 1, 4, true, kvCacheLayout([0, 6], false));
    const c = mk(2, 30);
    whole.allocateSlots(c, 30, whole.findCachedPrefix(c));
    expect(whole.findCachedPrefix(mk(3, 30)).numBlocks).toBe(7);
  });
});

describe("the engine with a hybrid KV cache: the same tokens and logprobs as with one table for all layers", () => {
  const quiet = { log: () => {} };
  // Prompts well past the 4-position windows, two sharing a prefix (prefix-cache hits in the sliding groups too).
  const shared = Array.from({ length: 37 }, (_, i) => (i * 13 + 5) % 900);
  const prompts = [[...shared, 1, 2, 3], [...shared, 7, 8], Array.from({ length: 23 }, (_, i) => (i * 7 + 3) % 900), [5, 6]];
  const cases: [string, TinyModelOptions][] = [
    ["gemma2 (alternating sliding and global layers: 2 groups)", { arch: "gemma2", seed: 11, vocabSize: 1024, numLayers: 4 }],
    ["gemma3 (3 layers: 1 global, 2 sliding groups of 1)", { arch: "gemma3", seed: 10, vocabSize: 1024, numLayers: 3 }],
    ["mistral (every layer sliding: one group that gives blocks back)", { arch: "mistral", seed: 9, vocabSize: 1024, slidingWindow: 4 }],
    ["qwen2 (use_sliding_window from layer 1 on)", { arch: "qwen2", seed: 4, vocabSize: 1024, numLayers: 3, slidingWindow: 5, maxWindowLayers: 1 }],
  ];
  for (const [name, opts] of cases)
    test(name, () => {
      const model = tinyModel(opts);
      const params = { temperature: 0, max_tokens: 24, ignore_eos: true, logprobs: 1 };
      const generate = (o: Record<string, unknown>) => {
        const llm = new LLM({ model, ...quiet, maxModelLen: 128, maxNumBatchedTokens: 16, maxNumSeqs: 3, ...o });
        try {
          // Twice: the second round's prompts come (partly) from the prefix cache.
          const rounds = [0, 1].map(() => llm.generate(prompts, params).map((r) => ({ tokens: r.outputs[0]!.tokenIds, logprobs: r.outputs[0]!.logprobs!.map((l) => l.logprob) })));
          const bm = llm.engine.blockManager;
          expect(bm.numFreeBlocks).toBe(bm.numUsableBlocks);
          return { rounds, groups: bm.numGroups, hits: bm.prefixCacheHits };
        } finally {
          llm.close();
        }
      };
      const whole = generate({ disableHybridKvCacheManager: true });
      const hybrid = generate({});
      expect(whole.groups).toBe(1);
      expect(hybrid.groups).toBe(kvCacheLayout(parseModelConfig(tinyModelConfig(opts)).layerWindows).groups.length);
      expect(hybrid.hits).toBeGreaterThan(0);
      expect(hybrid.rounds).toEqual(whole.rounds);
      expect(hybrid.rounds[1]).toEqual(hybrid.rounds[0]!);
      // Few blocks: sequences are preempted and recomputed, with the sliding groups' blocks given back in between.
      expect(generate({ numGpuBlocksOverride: 24 }).rounds).toEqual(whole.rounds);
      // Async scheduling (steps scheduled before the previous one's tokens are known) and n-gram speculative decoding
      // (draft tokens computed, then rolled back where rejected): the same tokens.
      expect(generate({ asyncScheduling: true }).rounds).toEqual(whole.rounds);
      const spec = { speculativeConfig: { method: "ngram", num_speculative_tokens: 3, prompt_lookup_max: 3 } };
      expect(generate(spec).rounds.map((r) => r.map((o) => o.tokens))).toEqual(generate({ ...spec, disableHybridKvCacheManager: true }).rounds.map((r) => r.map((o) => o.tokens)));
    }, 60_000);

  test("a request is measured by what its groups hold: a sliding-only model serves contexts longer than the cache", () => {
    const model = tinyModel({ arch: "mistral", seed: 9, vocabSize: 1024, slidingWindow: 4 });
    const make = (o: Record<string, unknown>) => new LLM({ model, ...quiet, maxModelLen: 256, maxNumBatchedTokens: 16, maxNumSeqs: 2, numGpuBlocksOverride: 12, ...o });
    const prompt = Array.from({ length: 200 }, (_, i) => (i * 3 + 1) % 900);
    const whole = make({ disableHybridKvCacheManager: true });
    try {
      expect(() => whole.generate([prompt], { max_tokens: 20 })).toThrow(/whole cache holds 192/);
    } finally {
      whole.close();
    }
    const hybrid = make({});
    try {
      const [out] = hybrid.generate([prompt], { max_tokens: 20, ignore_eos: true, temperature: 0 });
      expect(out!.outputs[0]!.tokenIds.length).toBe(20);
    } finally {
      hybrid.close();
    }
  }, 60_000);
});

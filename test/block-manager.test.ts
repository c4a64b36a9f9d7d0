/** Property tests: random workloads through the Scheduler + BlockManager with invariants checked every step. */
import { describe, expect, test } from "bun:test";
import { BlockManager } from "../src/engine/block-manager.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import { StepInputBuilder } from "../src/engine/step-inputs.ts";
import { RandomArrivals } from "./random-arrivals.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

interface Workload { seed: number; numBlocks: number; blockSize: number; maxNumSeqs: number; budget: number; prefixCaching: boolean }

function run(w: Workload) {
  const rng = new SeededRandom(w.seed);
  const bm = new BlockManager(w.numBlocks, w.blockSize, w.prefixCaching);
  const maxModelLen = Math.min(256, w.numBlocks * w.blockSize);
  const sched = new Scheduler({ maxNumSeqs: w.maxNumSeqs, maxNumBatchedTokens: w.budget, maxModelLen, enableChunkedPrefill: true }, bm);
  const inputs = new StepInputBuilder(w.budget, w.maxNumSeqs, maxModelLen, w.blockSize);
  const arrivals = new RandomArrivals(rng, 60, { prefixes: 4, prefixLen: [1, 60], suffixLen: 40, vocab: 51, maxOutput: 40, maxModelLen, perStep: 3 });
  const { live, maxTokens } = arrivals;
  let steps = 0, finished = 0, aborted = 0;
  while (arrivals.pending) {
    arrivals.arrive(sched);
    const out = sched.schedule();
    bm.checkInvariants(live);
    expect(out.numBatchedTokens).toBeLessThanOrEqual(w.budget);
    expect(sched.running.length).toBeLessThanOrEqual(w.maxNumSeqs);
    const step = inputs.build(out);
    // Every scheduled token has a slot inside one of its sequence's own blocks.
    let t = 0;
    for (const s of out.scheduled) for (let j = 0; j < s.numNewTokens; j++, t++) {
      const slot = step.slotMapping[t]!;
      expect(s.seq.blockTable).toContain(Math.floor(slot / w.blockSize));
      expect(step.positions[t]).toBe(s.start + j);
    }
    const sampled = out.scheduled.filter((s) => s.samples).map((s) => (s.seq.numTokens * 31 + s.seq.seqId) % 50);
    sched.postprocess(out, sampled);
    steps++;
    for (const s of out.scheduled) {
      if (s.samples && s.seq.numOutputTokens >= maxTokens.get(s.seq)!) { sched.finish(s.seq); live.delete(s.seq); finished++; }
    }
    // Random aborts, of waiting or running sequences.
    if (rng.next() < 0.15 && live.size > 0) {
      const victim = [...live][rng.int(0, live.size - 1)]!;
      sched.finish(victim);
      live.delete(victim);
      aborted++;
    }
    bm.checkInvariants(live);
    if (steps > 20000) throw new Error("workload did not finish");
  }
  expect(bm.numFreeBlocks).toBe(bm.numBlocks);
  expect(sched.numUnfinished).toBe(0);
  bm.checkInvariants([]);
  return { steps, finished, aborted, preemptions: sched.numPreemptions, hits: bm.prefixCacheHits };
}

describe("scheduler + block manager invariants under random workloads", () => {
  const cases: Workload[] = [];
  for (let seed = 1; seed <= 12; seed++)
    cases.push({ seed, numBlocks: [24, 48, 200][seed % 3]!, blockSize: [1, 4, 16][seed % 3]! === 1 ? 2 : [4, 16, 8][seed % 3]!, maxNumSeqs: [1, 8, 64][seed % 3]!, budget: [16, 64, 512][(seed >> 1) % 3]!, prefixCaching: seed % 4 !== 0 });
  for (const w of cases) {
    test(`seed ${w.seed}: ${w.numBlocks} blocks × ${w.blockSize}, max ${w.maxNumSeqs} seqs, budget ${w.budget}, prefix caching ${w.prefixCaching}`, () => {
      const r = run(w);
      expect(r.finished + r.aborted).toBe(60);
    });
  }

  test("the random workloads really exercise preemption and prefix hits", () => {
    const tight = run({ seed: 99, numBlocks: 24, blockSize: 4, maxNumSeqs: 64, budget: 64, prefixCaching: true });
    expect(tight.preemptions).toBeGreaterThan(0);
    expect(tight.hits).toBeGreaterThan(0);
  });
});

describe("prefix caching details", () => {
  const mk = (id: number, tokens: number[]) => new Sequence(id, `r${id}`, 0, tokens, new SamplingParams(), 0, 0);

  test("a block-aligned prompt never serves its last token from cache", () => {
    const bm = new BlockManager(16, 4);
    const a = mk(0, [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(bm.allocateSlots(a, 8, bm.findCachedPrefix(a))).toBe(true);
    a.numComputedTokens = 8;
    const b = mk(1, [1, 2, 3, 4, 5, 6, 7, 8]);
    const hit = bm.findCachedPrefix(b);
    expect(hit.blocks).toEqual([[a.blockTable[0]!]]);
    bm.allocateSlots(b, 4, hit);
    expect(b.numComputedTokens).toBe(4);
    expect(b.blockTable[0]).toBe(a.blockTable[0]!);
    bm.checkInvariants([a, b]);
  });

  test("a hit needs equal token ids, not just an equal hash chain position", () => {
    const bm = new BlockManager(16, 2);
    const a = mk(0, [1, 2, 3, 4, 5]);
    bm.allocateSlots(a, 5, bm.findCachedPrefix(a));
    expect(bm.findCachedPrefix(mk(1, [1, 2, 9, 9, 5])).numBlocks).toBe(1);
    expect(bm.findCachedPrefix(mk(2, [2, 1, 3, 4, 5])).numBlocks).toBe(0);
  });

  test("freed blocks keep their content until reused, and are reclaimed on a hit", () => {
    const bm = new BlockManager(4, 2);
    const a = mk(0, [1, 2, 3, 4, 5]);
    bm.allocateSlots(a, 5, bm.findCachedPrefix(a));
    const blocks = a.blockTable.slice();
    bm.free(a);
    expect(bm.numFreeBlocks).toBe(4);
    const b = mk(1, [1, 2, 3, 4, 6]);
    const hit = bm.findCachedPrefix(b);
    expect(hit.blocks).toEqual([blocks.slice(0, 2)]);
    // Only 2 blocks are truly free once the 2 cached ones are taken back: asking for 3 more must fail.
    expect(bm.allocateSlots(b, 5, hit)).toBe(false);
    expect(bm.allocateSlots(b, 1, hit)).toBe(true);
    expect(bm.numFreeBlocks).toBe(1);
    bm.checkInvariants([b]);
  });

  test("without prefix caching nothing is shared", () => {
    const bm = new BlockManager(16, 2, false);
    const a = mk(0, [1, 2, 3, 4, 5]);
    bm.allocateSlots(a, 5, bm.findCachedPrefix(a));
    expect(bm.findCachedPrefix(mk(1, [1, 2, 3, 4, 5])).numBlocks).toBe(0);
  });
});

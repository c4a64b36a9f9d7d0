/**
 * Async scheduling (--async-scheduling): each step is launched before the previous step's tokens are read,
 * its pending input tokens taken from the sampled ids where they are. Everything a request sees must equal
 * the synchronous engine's: tokens, text, finish and stop reasons, logprobs, under stops found one step
 * late, preemption, chunked prefill, prefix caching, aborts and every sampling option.
 */
import { describe, expect, test } from "bun:test";
import { BlockManager } from "../src/engine/block-manager.ts";
import { LLM } from "../src/engine/llm.ts";
import type { EngineOptions } from "../src/engine/engine-config.ts";
import type { OutputKind, RequestOutput } from "../src/engine/request.ts";
import { SamplingParams, type SamplingParamsInit } from "../src/engine/sampling-params.ts";
import { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import { StepInputBuilder } from "../src/engine/step-inputs.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { FAST_MODEL, tinyModel } from "./helpers.ts";
import { frequentTokens, generate, workload } from "./engine-workload.ts";

const model = tinyModel(FAST_MODEL);
const make = (o: EngineOptions) => new LLM({ model, blockSize: 4, maxModelLen: 128, log: () => {}, ...o });

describe("async scheduling gives exactly the synchronous engine's outputs", () => {
  const frequent = frequentTokens(make({}));
  const w = workload(3, 40, frequent);
  const configs: [string, EngineOptions][] = [
    ["prefix caching, room for all", { maxNumBatchedTokens: 256, maxNumSeqs: 64 }],
    ["chunked prefill with a tiny token budget", { maxNumBatchedTokens: 9, maxNumSeqs: 64 }],
    ["a KV cache small enough to preempt often", { maxNumBatchedTokens: 256, maxNumSeqs: 64, numGpuBlocksOverride: 24 }],
    ["max_num_seqs 1, no prefix caching", { maxNumBatchedTokens: 256, maxNumSeqs: 1, enablePrefixCaching: false }],
  ];
  for (const [name, opts] of configs) {
    test(name, () => {
      const sync = make(opts), async = make({ ...opts, asyncScheduling: true });
      const expected = generate(sync, w);
      expect(generate(async, w)).toEqual(expected);
      // The workload stops early on tokens and strings, so stops really were found one step late.
      const finishes = expected.flat().map((c) => c.stop);
      expect(finishes.filter((s) => typeof s === "number").length).toBeGreaterThan(0);
      expect(finishes.filter((s) => typeof s === "string").length).toBeGreaterThan(0);
      expect(async.engine.overlappedSteps).toBeGreaterThan(async.engine.metrics.numSteps / 2);
      expect(sync.engine.overlappedSteps).toBe(0);
      if (opts.numGpuBlocksOverride) expect(async.engine.scheduler.numPreemptions).toBeGreaterThan(2);
      // Every block comes back, and no registered prefix block holds a placeholder.
      expect(async.engine.blockManager.numFreeBlocks).toBe(async.engine.blockManager.numBlocks);
      sync.close();
      async.close();
    });
  }
});

describe("async scheduling, step by step", () => {
  /** Runs requests through engine.step() with `kind` outputs; returns the outputs of each request in order. */
  function run(llm: LLM, prompts: number[][], params: SamplingParamsInit, kind: OutputKind, abortAt?: { step: number; id: string }) {
    const e = llm.engine, seen = new Map<string, RequestOutput[]>();
    prompts.forEach((p, i) => e.addRequest(`r${i}`, p, new SamplingParams(params), performance.now(), kind));
    for (let step = 0; e.hasUnfinishedRequests(); step++) {
      if (abortAt && step === abortAt.step) {
        const out = e.abort(abortAt.id)!;
        seen.set(abortAt.id, [...(seen.get(abortAt.id) ?? []), out]);
      }
      for (const o of e.step()) seen.set(o.requestId, [...(seen.get(o.requestId) ?? []), o]);
      e.blockManager.checkInvariants(e.scheduler.running);
    }
    return seen;
  }
  const prompts = [[5, 6, 7, 8, 9], [11, 12, 13], [21, 22, 23, 24, 25, 26, 27, 28, 29]];

  test("delta outputs add up to the whole, as without it", () => {
    const params = { temperature: 0.7, seed: 4, max_tokens: 12, stop: ["e"] };
    const sync = run(make({}), prompts, params, "delta"), async = run(make({ asyncScheduling: true }), prompts, params, "delta");
    for (const id of sync.keys()) {
      const join = (outs: RequestOutput[]) => ({ text: outs.map((o) => o.outputs[0]!.textDelta).join(""), tokens: outs.flatMap((o) => o.outputs[0]!.tokenIdsDelta), last: outs.at(-1)!.outputs[0]!.finishReason });
      expect(join(async.get(id)!)).toEqual(join(sync.get(id)!));
    }
  });

  test("an abort while the request's next step runs frees everything and keeps only real tokens", () => {
    const llm = make({ asyncScheduling: true });
    const params = { temperature: 0, max_tokens: 20, ignore_eos: true };
    const seen = run(llm, prompts, params, "cumulative", { step: 4, id: "r1" });
    const aborted = seen.get("r1")!.at(-1)!;
    expect(aborted.finished).toBe(true);
    expect(aborted.outputs[0]!.finishReason).toBe("abort");
    // The abort came while a step for r1 was running: r1 had tokens, none of them a placeholder.
    const tokens = aborted.outputs[0]!.tokenIds;
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.length).toBeLessThan(20);
    const reference = make({}).generate([prompts[1]!], new SamplingParams(params), { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    expect(tokens).toEqual(reference.slice(0, tokens.length));
    // The others finish untouched.
    expect(seen.get("r0")!.at(-1)!.outputs[0]!.tokenIds.length).toBe(20);
    expect(llm.engine.blockManager.numFreeBlocks).toBe(llm.engine.blockManager.numBlocks);
    expect(llm.engine.hasUnfinishedRequests()).toBe(false);
  });

  test("a sequence at max_tokens is not given another step", () => {
    const llm = make({ asyncScheduling: true });
    const [out] = llm.generate([[3, 4, 5]], new SamplingParams({ temperature: 0, max_tokens: 5, ignore_eos: true }), { useTqdm: false });
    expect(out!.outputs[0]!.tokenIds.length).toBe(5);
    // 1 prefill + 4 decodes: the step after the 5th token's would be wasted (and could pass max_model_len).
    expect(llm.engine.metrics.numSteps).toBe(5);
  });

  test("a sequence filling max_model_len stops at it", () => {
    const llm = make({ asyncScheduling: true, maxModelLen: 16 });
    const [out] = llm.generate([[3, 4, 5, 6, 7, 8]], new SamplingParams({ temperature: 0, ignore_eos: true, max_tokens: null }), { useTqdm: false });
    expect(out!.outputs[0]!.tokenIds.length).toBe(10);
    expect(out!.outputs[0]!.finishReason).toBe("length");
  });
});

describe("placeholders in the scheduler, block manager and step inputs", () => {
  const setup = () => {
    const bm = new BlockManager(8, 4, true);
    const sched = new Scheduler({ maxNumSeqs: 4, maxNumBatchedTokens: 64, maxModelLen: 32, enableChunkedPrefill: true }, bm);
    const seq = new Sequence(0, "a", 0, [1, 2, 3], new SamplingParams({ max_tokens: 8 }), 0, 0);
    sched.add(seq);
    sched.advance(sched.schedule()); // the prefill samples: one placeholder
    return { bm, sched, seq, inputs: new StepInputBuilder(64, 4, 32, 4) };
  };

  test("the pending token's input comes from its row of the sampled ids", () => {
    const { sched, seq, inputs } = setup();
    expect(seq.numPlaceholders).toBe(1);
    const out = sched.schedule();
    expect(out.scheduled.map((s) => [s.start, s.numNewTokens, s.samples])).toEqual([[3, 1, true]]);
    const step = inputs.build(out);
    expect([...step.positions]).toEqual([3]);
    expect([...step.tokensFromSampled!]).toEqual([0, 0]); // token 0 ← sampled row 0
  });

  test("a block completed by a pending token enters the prefix cache only once the token is known", () => {
    const { bm, sched, seq } = setup();
    sched.advance(sched.schedule()); // position 3 (pending) fills block 0
    expect(seq.blockHashes.length).toBe(0);
    seq.resolvePlaceholder(9);
    seq.resolvePlaceholder(10);
    sched.advance(sched.schedule());
    expect(seq.blockHashes.length).toBe(1);
    const other = new Sequence(1, "b", 0, [1, 2, 3, 9, 5], new SamplingParams({ max_tokens: 2 }), 0, 0);
    expect(bm.findCachedPrefix(other).blocks).toEqual([[seq.blockTable[0]!]]);
    const stranger = new Sequence(2, "c", 0, [1, 2, 3, 0, 5], new SamplingParams({ max_tokens: 2 }), 0, 0);
    expect(bm.findCachedPrefix(stranger).numBlocks).toBe(0);
  });
});

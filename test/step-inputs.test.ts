import { expect, test } from "bun:test";
import { BlockManager } from "../src/engine/block-manager.ts";
import { graphBuckets } from "../src/engine/model-runner.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import { StepInputBuilder } from "../src/engine/step-inputs.ts";

test("graph buckets: 1, 2, 4, 8, every 16, and max_num_seqs itself", () => {
  expect(graphBuckets(256)).toEqual([1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256]);
  expect(graphBuckets(50)).toEqual([1, 2, 4, 8, 16, 32, 48, 50]);
  expect(graphBuckets(1)).toEqual([1]);
  expect(graphBuckets(6)).toEqual([1, 2, 4, 6]);
});

test("padded decode inputs: real rows as built, padding rows never store KV and read one cached token", () => {
  const bm = new BlockManager(64, 4);
  const sched = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, maxModelLen: 32, enableChunkedPrefill: true }, bm);
  const seqs = [new Sequence(0, "a", 0, [1, 2, 3, 4, 5], new SamplingParams({ max_tokens: 8 }), 0, 0), new Sequence(1, "b", 0, [7, 8], new SamplingParams({ max_tokens: 8 }), 0, 0)];
  for (const s of seqs) sched.add(s);
  sched.postprocess(sched.schedule(), [11, 12]); // prefill both, sample one token each
  const out = sched.schedule(); // a pure decode step of 2 sequences
  const builder = new StepInputBuilder(8, 8, 32, 4, true);
  const p = builder.buildPadded(out, 4);
  expect(Array.from(p.tokenIds)).toEqual([11, 12, 0, 0]);
  expect(Array.from(p.positions)).toEqual([5, 2, 0, 0]);
  expect(Array.from(p.slotMapping.subarray(2))).toEqual([-1, -1]);
  expect(Array.from(p.queryStart)).toEqual([0, 1, 2, 3, 4]);
  expect(Array.from(p.seqLens)).toEqual([6, 3, 1, 1]);
  expect(Array.from(p.logitsRows)).toEqual([0, 1, 2, 3]);
  expect(p.maxBlocksPerSeq).toBe(8);
  expect(Array.from(p.blockTables.subarray(0, 2))).toEqual(seqs[0]!.blockTable);
  expect(p.blockTables[8]).toBe(seqs[1]!.blockTable[0]!);
});

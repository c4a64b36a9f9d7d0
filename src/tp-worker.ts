/**
 * A tensor-parallel rank (1 … N−1) on the CPU backend: loads its shard, then loops on the shared command
 * block — STEP runs the forward pass (meeting the other ranks in the collectives), ALLOC_KV / RESERVE size
 * its buffers, SHUTDOWN ends the loop. Any error is recorded in shared memory for the leader to raise.
 * VBUN_TP_FAIL_AT=RANK:STEP makes a rank throw at that step (fault-injection for tests).
 */
import { CpuBackend, type CpuTensor } from "./backend/cpu/cpu-backend.ts";
import { Checkpoint } from "./loader/checkpoint.ts";
import { CausalLM } from "./model/causal-lm.ts";
import { loadModelConfig } from "./model/config.ts";
import { ARG0, CMD, CMD_ALLOC_KV, CMD_RESERVE, CMD_SEQ, CMD_SHUTDOWN, CMD_STEP, inputViews, READY, SharedCollective } from "./parallel/shared-collective.ts";
import type { TpWorkerInit } from "./parallel/tp-group.ts";

declare const self: Worker;

self.onmessage = (ev: MessageEvent<TpWorkerInit>) => {
  const init = ev.data;
  const cfg = loadModelConfig(init.modelDir);
  const collective = new SharedCollective(init.rank, init.sizes, init.buffers);
  const ctl = collective.ctl;
  const [failRank, failStep] = (init.failAt ?? "-1:-1").split(":").map(Number) as [number, number];
  try {
    const backend = new CpuBackend({ threads: 1 });
    const model = new CausalLM<CpuTensor>(cfg, backend as never, init.maxModelLen, collective);
    model.load(new Checkpoint(init.modelDir));
    const v = inputViews(init.buffers, init.sizes);
    Atomics.add(ctl, READY, 1);
    Atomics.notify(ctl, READY);
    let seq = 0, steps = 0;
    for (;;) {
      collective.waitChange(CMD_SEQ, seq);
      seq = Atomics.load(ctl, CMD_SEQ);
      const cmd = Atomics.load(ctl, CMD), a = (i: number) => Atomics.load(ctl, ARG0 + i);
      if (cmd === CMD_SHUTDOWN) break;
      if (cmd === CMD_RESERVE) { model.reserve(a(0), a(1)); collective.barrier(); }
      else if (cmd === CMD_ALLOC_KV) { model.allocKvCache(a(0), a(1)); collective.barrier(); }
      else if (cmd === CMD_STEP) {
        if (init.rank === failRank && steps === failStep) throw new Error(`injected failure at step ${steps} (VBUN_TP_FAIL_AT)`);
        const [numTokens, numSeqs, width, numRows] = [a(0), a(1), a(2), a(3)];
        const step = backend.uploadStep({
          tokenIds: v.tokenIds.subarray(0, numTokens), positions: v.positions.subarray(0, numTokens), slotMapping: v.slotMapping.subarray(0, numTokens),
          queryStart: v.queryStart.subarray(0, numSeqs + 1), seqLens: v.seqLens.subarray(0, numSeqs), blockTables: v.blockTables.subarray(0, numSeqs * width),
          maxBlocksPerSeq: width, logitsRows: v.logitsRows.subarray(0, numRows),
        });
        model.forward(step as never);
        steps++;
      }
    }
  } catch (e) {
    collective.abort(e);
  }
  // The leader terminates this thread (TensorParallelGroup.close).
};

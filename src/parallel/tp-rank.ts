/**
 * A tensor-parallel rank 1 … N−1, run in a Bun Worker: loads its shard, then loops on the shared command
 * block — STEP runs the forward pass (or replays a decode graph), CAPTURE warms up and captures one,
 * ALLOC_KV / RESERVE size its buffers, SHUTDOWN ends the loop. Each command ends with the leader's barrier.
 * Any error is recorded in shared memory for the leader to raise (and a GPU rank aborts its communicator).
 * VBUN_TP_FAIL_AT=RANK:STEP makes a rank throw at that step, RANK:STEP:late after that step's barrier;
 * RANK:STEP:hang and RANK:STEP:late-hang make it stop responding there (fault injection for tests).
 */
import { CpuBackend } from "../backend/cpu/cpu-backend.ts";
import { decodeGraphInputs, type Backend, type Tensor } from "../backend/backend.ts";
import type { CudaBackend } from "../backend/cuda/cuda-backend.ts";
import type { NcclApi } from "../backend/cuda/nccl.ts";
import { Checkpoint } from "../loader/checkpoint.ts";
import { CausalLM, type Collective } from "../model/causal-lm.ts";
import { loadModelConfig } from "../model/config.ts";
import { kvCacheLayout } from "../model/kv-cache-layout.ts";
import { loadLoraAdapter } from "../lora/lora-adapter.ts";
import { NcclCollective } from "./nccl-collective.ts";
import { ARG0, CMD, CMD_ALLOC_KV, CMD_CAPTURE, CMD_LORA_SLOT, CMD_RESERVE, CMD_SEQ, CMD_SHUTDOWN, CMD_STEP, inputViews, READY, SharedCollective, STARTED } from "./shared-collective.ts";
import type { TpWorkerInit } from "./tp-group.ts";

/** How a GPU rank opens its device and NCCL (the real ones, or the test suite's simulator). */
export interface TpRankDevices {
  openCuda(index: number): CudaBackend;
  nccl(workerData: unknown): NcclApi;
}

export function runTpRank(init: TpWorkerInit, devices: TpRankDevices | null): void {
  const control = new SharedCollective(init.rank, init.sizes, init.buffers);
  const ctl = control.ctl;
  Atomics.add(ctl, STARTED, 1);
  Atomics.notify(ctl, STARTED);
  const [failRank, failStep] = (init.failAt ?? "-1:-1").split(":").map(Number) as [number, number];
  const mode = init.failAt?.split(":")[2] ?? "";
  const failLate = mode === "late", hangAt = mode === "hang", hangLate = mode === "late-hang";
  const hang = (): never => {
    for (const nap = new Int32Array(new SharedArrayBuffer(4)); ;) Atomics.wait(nap, 0, 0, 50); // a hung rank: never returns
  };
  let nccl: NcclCollective | null = null;
  try {
    const cfg = loadModelConfig(init.modelDir, init.hfOverrides);
    let backend: Backend<Tensor>;
    let collective: Collective<Tensor>;
    if (init.cuda) {
      if (!devices) throw new Error("a GPU rank needs a CUDA provider");
      const cuda = devices.openCuda(init.rank);
      // This rank's stream may wait in a collective for a failed rank: poll, and give up then (see catch).
      cuda.setWaitCheck(() => control.checkAbort());
      backend = cuda as unknown as Backend<Tensor>;
      nccl = new NcclCollective(init.rank, init.sizes.size, init.cuda.comm, devices.nccl(init.cuda.ncclData), cuda, init.sizes.vocabPerRank, init.cuda.maxRows);
      collective = nccl as unknown as Collective<Tensor>;
    } else {
      backend = new CpuBackend({ threads: 1 }) as unknown as Backend<Tensor>;
      collective = control as unknown as Collective<Tensor>;
    }
    const model = new CausalLM<Tensor>(cfg, backend, init.maxModelLen, collective, { pooling: init.pooling });
    model.load(new Checkpoint(init.modelDir, { onlineQuantization: init.onlineQuantization }));
    if (init.lora) model.enableLora(init.lora.slots, init.lora.maxRank, init.lora.coverage);
    const v = inputViews(init.buffers, init.sizes);
    Atomics.add(ctl, READY, 1);
    Atomics.notify(ctl, READY);
    let seq = 0, steps = 0;
    for (;;) {
      control.waitChange(CMD_SEQ, seq);
      seq = Atomics.load(ctl, CMD_SEQ);
      const cmd = Atomics.load(ctl, CMD), a = (i: number) => Atomics.load(ctl, ARG0 + i);
      let injectFault = false;
      if (cmd === CMD_SHUTDOWN) {
        nccl?.end("destroy");
        backend.close?.(); // this rank's GPU memory back (another engine may start in this process)
        control.barrier();
        break;
      }
      if (cmd === CMD_RESERVE) {
        model.reserve(a(0), a(1));
        backend.reserveStep?.(a(0), a(3), a(2), a(1), a(4), a(5));
      } else if (cmd === CMD_ALLOC_KV) model.allocKvCache(a(0), a(1), kvCacheLayout(cfg.layerWindows, a(2) === 1));
      else if (cmd === CMD_LORA_SLOT) {
        const { name, dir } = JSON.parse(new TextDecoder().decode(new Uint8Array(init.buffers.text, 0, a(1)))) as { name: string; dir: string };
        model.setLoraSlot(a(0), loadLoraAdapter(name, dir, cfg, init.lora!.maxRank));
      }
      else if (cmd === CMD_CAPTURE) {
        const step = backend.uploadStep(decodeGraphInputs(a(0), a(1), init.lora !== null, v.kvGroups.length + 1));
        model.forward(step);
        backend.captureGraph!(a(0), () => model.forward(step));
      } else if (cmd === CMD_STEP) {
        injectFault = init.rank === failRank && steps === failStep;
        if (injectFault && hangAt) hang();
        if (injectFault && !failLate && !hangLate) throw new Error(`injected failure at step ${steps} (VBUN_TP_FAIL_AT)`);
        const [numTokens, numSeqs, width, numRows, graph, lora] = [a(0), a(1), a(2), a(3), a(4), a(5)];
        const step = backend.uploadStep({
          tokenIds: v.tokenIds.subarray(0, numTokens), positions: v.positions.subarray(0, numTokens), slotMapping: v.slotMapping.subarray(0, numTokens),
          queryStart: v.queryStart.subarray(0, numSeqs + 1), seqLens: v.seqLens.subarray(0, numSeqs), blockTables: v.blockTables.subarray(0, numSeqs * width),
          maxBlocksPerSeq: width, logitsRows: v.logitsRows.subarray(0, numRows), ...(lora ? { loraSlots: v.loraSlots.subarray(0, numTokens) } : {}),
          kvGroups: v.kvGroups.map((g) => ({ slotMapping: g.slotMapping.subarray(0, numTokens), blockTables: g.blockTables.subarray(0, numSeqs * width) })),
        });
        if (graph >= 0) backend.launchGraph!(graph);
        else model.forward(step);
        steps++;
      }
      control.barrier();
      if (injectFault && hangLate) hang();
      if (injectFault && failLate) {
        // As when a kernel fault surfaces at the synchronize: this rank's collectives never run, after the
        // leader has passed the barrier (the pause makes sure it has) and waits for them on its stream.
        Atomics.wait(ctl, CMD_SEQ, seq, 200);
        throw new Error(`injected failure after step ${steps - 1}'s barrier (VBUN_TP_FAIL_AT)`);
      }
      // GPU ranks wait for their stream here, after the barrier: the leader's stream runs the same collectives.
      backend.synchronize?.();
    }
  } catch (e) {
    // First make collectives still queued on this rank's stream give up (rather than wait for a failed
    // peer), then publish the failure.
    try { nccl?.end("abort"); } catch { /* the rank's own error is the one to report */ }
    control.abort(e);
  }
  // The leader terminates this thread (TensorParallelGroup.close).
}

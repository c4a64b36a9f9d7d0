/** A tensor-parallel rank's Worker on simulated GPUs (the test-suite twin of src/tp-worker.ts). */
import { runTpRank } from "../../src/parallel/tp-rank.ts";
import type { TpWorkerInit } from "../../src/parallel/tp-group.ts";
import { simGpus } from "./provider.ts";
import { SimNccl, type SimNcclShared } from "./nccl.ts";

declare const self: Worker;

self.onmessage = (ev: MessageEvent<TpWorkerInit>) => {
  const gpus = simGpus();
  runTpRank(ev.data, { openCuda: gpus.open, nccl: (data) => new SimNccl(data as SimNcclShared, gpus.device) });
};

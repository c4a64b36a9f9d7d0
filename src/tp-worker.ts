/** Entry point of a tensor-parallel rank's Worker (see src/parallel/tp-rank.ts): the real GPUs and NCCL. */
import { CudaBackend } from "./backend/cuda/cuda-backend.ts";
import { Nccl } from "./backend/cuda/nccl.ts";
import { runTpRank } from "./parallel/tp-rank.ts";
import type { TpWorkerInit } from "./parallel/tp-group.ts";

declare const self: Worker;

self.onmessage = (ev: MessageEvent<TpWorkerInit>) => {
  runTpRank(ev.data, { openCuda: (index) => CudaBackend.open(index), nccl: () => new Nccl() });
};

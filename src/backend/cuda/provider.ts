/**
 * How the engine reaches GPUs: opening a device's backend, NCCL, and the worker module tensor-parallel
 * ranks run. The default is the real driver, cuBLAS and NCCL; the test suite swaps in its GPU simulator
 * (test/gpu-sim) through EngineOptions.cuda.
 */
import { CudaBackend } from "./cuda-backend.ts";
import { Nccl, type NcclApi } from "./nccl.ts";
import { TP_WORKER_URL } from "../../worker-url.ts";

export interface CudaProvider {
  /** Opens GPU `index` in the calling thread. */
  open(index: number): CudaBackend;
  /** Number of GPUs visible, asked through the already opened GPU 0. */
  deviceCount(gpu0: CudaBackend): number;
  /** The process's NCCL (leader side: creates the communicators). */
  nccl(): NcclApi;
  /** The entry module of tensor-parallel rank workers; it opens GPUs and NCCL the same way as this provider. */
  readonly tpWorkerUrl: URL | string;
}

export const DEFAULT_CUDA: CudaProvider = {
  open: (index) => CudaBackend.open(index),
  deviceCount: (gpu0) => gpu0.driver.deviceCount(),
  nccl: () => new Nccl(),
  tpWorkerUrl: TP_WORKER_URL,
};

/**
 * The GPU simulator as the engine's CudaProvider: every opened GPU is a fresh SimDevice in the calling
 * thread, NCCL is SimNccl, and tensor-parallel workers run ./tp-worker.ts, which opens its GPUs the same way.
 */
import { CudaBackend } from "../../src/backend/cuda/cuda-backend.ts";
import type { CudaProvider } from "../../src/backend/cuda/provider.ts";
import { SimDevice } from "./device.ts";
import { SimNccl } from "./nccl.ts";

export const SIM_DEVICE_BYTES = 256 << 20;

/**
 * A simulated GPU's backend, and (through `device`) the SimDevice last opened in this thread. Each GPU
 * index is one SimDevice for the thread's lifetime, as a real GPU is one device for the process: an
 * engine that does not free its memory (CudaBackend.close) leaves the next one without.
 */
export function simGpus(count = 4) {
  let last: SimDevice | null = null;
  const devices = new Map<number, SimDevice>();
  const device = () => {
    if (!last) throw new Error("no simulated GPU opened in this thread");
    return last;
  };
  const open = (index: number) => {
    if (index >= count) throw new Error(`GPU ${index} requested but only ${count} visible`);
    if (!devices.has(index)) devices.set(index, new SimDevice(SIM_DEVICE_BYTES));
    last = devices.get(index)!;
    const sim = last;
    return CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
  };
  return { open, device };
}

/** The simulated GPUs as a provider, and how many communicators the latest group has destroyed or aborted. */
export function simProvider(count = 4): { provider: CudaProvider; ncclCommsClosed: () => number } {
  const gpus = simGpus(count);
  let latest: SimNccl | null = null;
  const provider: CudaProvider = {
    open: gpus.open,
    deviceCount: () => count,
    nccl: () => (latest = new SimNccl(null, gpus.device)),
    tpWorkerUrl: new URL("./tp-worker.ts", import.meta.url),
  };
  return { provider, ncclCommsClosed: () => latest?.closedCount() ?? 0 };
}

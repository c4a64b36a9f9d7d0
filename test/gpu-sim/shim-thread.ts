/**
 * The C-ABI shim's handler for the calling thread (the shim's calls are routed per thread): simulated GPUs
 * of its own, sized by $VBUN_SHIM_GPUS and $VBUN_SHIM_GPU_MIB, on the shim libraries in `dir`. Used by
 * shim-preload.ts for the process's main thread and by shim-engine-worker.ts for the engine worker's.
 */
import { installShim } from "./c-shim.ts";
import { SimulatedCAbi } from "./c-abi.ts";

export function installThreadShim(dir: string): { abi: SimulatedCAbi; shim: ReturnType<typeof installShim> } {
  const abi = new SimulatedCAbi({ gpus: Number(process.env.VBUN_SHIM_GPUS ?? 1), deviceBytes: Number(process.env.VBUN_SHIM_GPU_MIB ?? 512) * 2 ** 20 });
  const installed = { abi, shim: installShim(dir, abi.handler) };
  // Kept reachable for the thread's lifetime (the C side holds the callbacks' addresses).
  (globalThis as { vbunShim?: unknown }).vbunShim = installed;
  return installed;
}

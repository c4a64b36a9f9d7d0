/**
 * Installs the C-ABI shim's handler for the importing thread (the shim's calls are routed per thread):
 * simulated GPUs of its own, sized by $VBUN_SHIM_GPUS and $VBUN_SHIM_GPU_MIB, on the libraries in
 * $VBUN_SHIM_DIR (built by shim-preload.ts in the process's main thread).
 */
import { installShim } from "./c-shim.ts";
import { SimulatedCAbi } from "./c-abi.ts";

const dir = process.env.VBUN_SHIM_DIR;
if (!dir) throw new Error("shim-thread: $VBUN_SHIM_DIR is not set (load test/gpu-sim/shim-preload.ts in the main thread first)");
const abi = new SimulatedCAbi({ gpus: Number(process.env.VBUN_SHIM_GPUS ?? 1), deviceBytes: Number(process.env.VBUN_SHIM_GPU_MIB ?? 512) * 2 ** 20 });
// Kept reachable for the thread's lifetime (the C side holds the callbacks' addresses).
(globalThis as { vbunShim?: unknown }).vbunShim = { abi, shim: installShim(dir, abi.handler) };

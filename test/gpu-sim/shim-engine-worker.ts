/**
 * The engine worker under the C-ABI shim (shim-preload.ts points $VBUN_ENGINE_WORKER here): runs the real
 * entry, src/engine-worker.ts, unchanged, with this thread's shim handler on simulated GPUs of its own — so
 * `vbun serve` and `vbun generate`, whose engines run in this worker, can be rehearsed through vbun's real
 * bindings. The handler is installed in this module's body, after the entry has set its message handler
 * and before any message is handled (the libraries are opened on "init").
 */
import { installThreadShim } from "./shim-thread.ts";
import "../../src/engine-worker.ts";

const dir = process.env.VBUN_SHIM_DIR;
if (!dir) throw new Error("shim-engine-worker: $VBUN_SHIM_DIR is not set (load test/gpu-sim/shim-preload.ts in the main thread first)");
installThreadShim(dir);

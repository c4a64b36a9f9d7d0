/**
 * The engine worker under the C-ABI shim (shim-preload.ts points $VBUN_ENGINE_WORKER here): installs this
 * thread's shim handler on simulated GPUs of its own, then runs the real entry, src/engine-worker.ts,
 * unchanged — so `vbun serve` and `vbun generate`, whose engines run in this worker, can be rehearsed
 * through vbun's real bindings.
 */
import "./shim-thread.ts";
import "../../src/engine-worker.ts";

/**
 * Preload that puts a whole Bun process's GPU path on simulated GPUs through vbun's real FFI layer: it
 * builds the C-ABI shim libraries (./c-shim.ts), sends their calls to ./c-abi.ts, and points the library
 * search at them. A rehearsal of device-only scripts on a machine without a GPU, e.g.
 *
 *   BUN_OPTIONS="--preload ./test/gpu-sim/shim-preload.ts" bun scripts/nccl-check.ts
 *
 * (BUN_OPTIONS also reaches the Bun processes a script starts.) VBUN_SHIM_GPUS sets the number of
 * simulated GPUs (default 1), VBUN_SHIM_GPU_MIB each one's memory (default 512). Slow: every kernel thread
 * is interpreted, so use tiny models. Not a GPU run, and never recorded as one.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildShimLibraries } from "./c-shim.ts";
import { installThreadShim } from "./shim-thread.ts";

const built = buildShimLibraries();
if ("why" in built) throw new Error(`shim-preload: ${built.why}`);
const { abi, shim } = installThreadShim(built.dir);
Object.assign(process.env, shim.env);
// The engine worker thread (vbun serve, vbun generate) installs its own handler first.
process.env.VBUN_ENGINE_WORKER ??= join(import.meta.dir, "shim-engine-worker.ts");
// Never the user's kernel cache: the simulator's "cubins" are PTX text, of no use to a real GPU.
if (!process.env.VBUN_KERNEL_CACHE) process.env.VBUN_KERNEL_CACHE = mkdtempSync(join(tmpdir(), "vbun-shim-kernels-"));
process.on("exit", () => {
  if (abi.faults.length) process.stderr.write(`shim-preload: ${abi.faults.length} calls failed; the first: ${abi.faults[0]}\n`);
});

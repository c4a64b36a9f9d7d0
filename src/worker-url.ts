import { pathToFileURL } from "node:url";

/**
 * Where the engine worker's entry point is. This module sits next to cli.ts and engine-worker.ts on
 * purpose: in a compiled binary every module's import.meta.url is the bundle's, whose folder holds the
 * entry points, so the same relative URL works from sources and from `bun build --compile` output
 * (the worker must be passed to it as a second entry point; see package.json's build script).
 * $VBUN_ENGINE_WORKER replaces it: the GPU simulator's C-ABI rehearsal runs the real entry behind one
 * that installs the thread's shim (test/gpu-sim/shim-engine-worker.ts).
 */
export const ENGINE_WORKER_URL = process.env.VBUN_ENGINE_WORKER ? pathToFileURL(process.env.VBUN_ENGINE_WORKER) : new URL("./engine-worker.ts", import.meta.url);

/** The tensor-parallel rank worker's entry point (a third entry point of the compiled binary). */
export const TP_WORKER_URL = new URL("./tp-worker.ts", import.meta.url);

/** The CPU backend's matmul helper thread (a fourth entry point of the compiled binary). */
export const CPU_MATMUL_WORKER_URL = new URL("./cpu-matmul-worker.ts", import.meta.url);

/**
 * Options every vbun Worker is started with: the process's environment as it is now. Bun otherwise gives
 * a Worker the environment the process started with, so a setting made at run time (VBUN_GEMM,
 * VBUN_KERNEL_CACHE, VBUN_TP_FAIL_AT, … set by a program or a test before it starts an engine) would
 * reach the engine's own thread but not its workers.
 */
export function workerOptions(): WorkerOptions {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return { env } as WorkerOptions;
}

/**
 * The CUDA backend on a real GPU against its CPU twin (the suite in ./cuda-suite.ts, at full sizes).
 * Without a driver and a GPU every GPU test skips with the reason printed; the discovery and fallback
 * tests run everywhere. The same suite runs on the GPU simulator in ./gpu-sim.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { CudaBackend } from "../src/backend/cuda/cuda-backend.ts";
import { candidatePaths } from "../src/backend/cuda/libraries.ts";
import { DEFAULT_CUDA } from "../src/backend/cuda/provider.ts";
import { DECODE_SHAPES } from "../src/backend/cuda/kernels.ts";
import { LLM } from "../src/engine/llm.ts";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { FAST_MODEL, tinyModel } from "./helpers.ts";
import { defineCudaSuites, GPU_SIZES } from "./cuda-suite.ts";

let gpu: CudaBackend | null = null;
let why = "";
try {
  gpu = CudaBackend.open(0);
} catch (e) {
  why = (e as Error).message;
  console.log(`skipping CUDA tests: ${why}`);
}

describe("without a GPU", () => {
  test("library search honours the env override first and never uses stubs", () => {
    process.env.VBUN_LIBCUDA = "/opt/custom/libcuda.so.1";
    try {
      const c = candidatePaths("cuda");
      expect(c[0]).toBe("/opt/custom/libcuda.so.1");
      expect(c).toContain("libcuda.so.1");
      expect(c.some((p) => p.includes("/stubs/"))).toBe(false);
    } finally {
      delete process.env.VBUN_LIBCUDA;
    }
    expect(candidatePaths("cublas")).toContain("libcublas.so.13");
  });

  test.skipIf(gpu !== null)("--device cuda fails clearly; auto falls back to the CPU and says why", () => {
    const logs: string[] = [];
    expect(() => new LLM({ model: tinyModel(FAST_MODEL), device: "cuda", log: () => {} })).toThrow(/--device: cuda requested but unavailable: cannot load libcuda\.so\.1/);
    const llm = new LLM({ model: tinyModel(FAST_MODEL), device: "auto", log: (m) => logs.push(m) });
    expect(llm.engine.info.device).toBe("cpu");
    expect(logs.join("\n")).toMatch(/device auto: using the CPU backend \(no usable GPU: /);
  });

  test("every kernel the backend launches is an entry point of the committed PTX", () => {
    const ptxDir = join(import.meta.dir, "..", "ptx");
    const entries = readdirSync(ptxDir).filter((f) => f.endsWith(".ptx")).flatMap((f) => [...readFileSync(join(ptxDir, f), "utf8").matchAll(/\.entry\s+(\w+)\(/g)].map((m) => m[1]!));
    const src = readFileSync(join(import.meta.dir, "..", "src", "backend", "cuda", "cuda-backend.ts"), "utf8");
    const launched = [...src.matchAll(/launch\("(\w+)"/g)].map((m) => m[1]!);
    expect(launched.length).toBeGreaterThan(10);
    launched.push(...DECODE_SHAPES.map(([d, g]) => `paged_decode_d${d}_g${g}_bf16`));
    for (const k of launched) expect(entries).toContain(k);
  });
});

defineCudaSuites({ label: "GPU", backend: gpu, provider: DEFAULT_CUDA, memorySlackBytes: 64 * 2 ** 20, sizes: GPU_SIZES, timeoutMs: 120_000 });

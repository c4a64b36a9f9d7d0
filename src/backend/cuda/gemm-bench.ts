/**
 * GEMM algorithm choice, measured (`scripts/bench-gemm`): for each of a model's weight shapes and batch
 * sizes, GPU time of cublasGemmEx, of cuBLASLt's first heuristic choice, and of each other candidate it
 * offers, timed with events over repeated calls; and how far each candidate's output is from
 * cublasGemmEx's. The engine uses one of the first two ($VBUN_GEMM); this shows what choosing among the
 * candidates by timing (at start-up) would gain, before building that.
 */
import type { ModelConfig } from "../../model/config.ts";
import { SeededRandom } from "../../model/tiny-model.ts";
import { fromFloat32, toFloat32 } from "../../loader/dtype.ts";
import { CUDA_R_16BF, CUDA_R_32F } from "./cublas.ts";
import type { CudaBackend } from "./cuda-backend.ts";

export interface GemmShape { name: string; outF: number; inF: number; out: "bf16" | "f32" }

export interface GemmTiming {
  shape: string; n: number; outF: number; inF: number; out: "bf16" | "f32";
  cublasUs: number;
  /** cuBLASLt's first heuristic candidate (what VBUN_GEMM=cublaslt runs). */
  ltFirstUs: number;
  /** The fastest candidate and its index; `candidates` offered. */
  ltBestUs: number; ltBest: number; candidates: number;
  /** Largest relative difference of any candidate's output rows from cublasGemmEx's (first rows checked). */
  maxRelDiff: number;
  /** Weight bytes per µs of the fastest variant, in TB/s, and its TFLOP/s. */
  weightTBs: number; tflops: number;
}

/** The GEMMs of one decoder layer (QKV and gate/up packed, as the model runs them) and the LM head. */
export function modelGemmShapes(cfg: ModelConfig): GemmShape[] {
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
  return [
    { name: "qkv", outF: q + 2 * kv, inF: cfg.hiddenSize, out: "bf16" },
    { name: "o", outF: cfg.hiddenSize, inF: q, out: "bf16" },
    { name: "gate_up", outF: 2 * cfg.intermediateSize, inF: cfg.hiddenSize, out: "bf16" },
    { name: "down", outF: cfg.hiddenSize, inF: cfg.intermediateSize, out: "bf16" },
    { name: "lm_head", outF: cfg.vocabSize, inF: cfg.hiddenSize, out: "f32" },
  ];
}

/** Fills `elements` bf16 values of device memory with a repeated block of random bf16 values (std `std`). */
function fillRandom(g: CudaBackend, dst: bigint, elements: number, std: number, rng: SeededRandom): void {
  const block = Math.min(elements, 1 << 20);
  const pattern = fromFloat32(rng.normal(new Float32Array(block), std), "BF16");
  for (let at = 0; at < elements; at += block) {
    const len = Math.min(block, elements - at);
    g.driver.copyToDevice(dst + BigInt(at * 2), pattern.subarray(0, len * 2));
  }
}

export function benchGemms(g: CudaBackend, shapes: GemmShape[], batches: number[], opts: { reps: number; checkRows?: number }): GemmTiming[] {
  const rng = new SeededRandom(7);
  const lt = g.cublasLt(), blas = g.cublas, d = g.driver, stream = g.stream;
  const maxN = Math.max(...batches), checkRows = opts.checkRows ?? 4;
  const [e0, e1] = [d.createEvent(), d.createEvent()];
  const time = (run: () => void): number => {
    run(); run(); // warm-up (and cuBLAS's own first-call set-up)
    d.record(e0, stream);
    for (let i = 0; i < opts.reps; i++) run();
    d.record(e1, stream);
    return (d.elapsedMs(e0, e1) * 1000) / opts.reps;
  };
  const results: GemmTiming[] = [];
  for (const s of shapes) {
    const yType = s.out === "f32" ? CUDA_R_32F : CUDA_R_16BF, yBytes = s.out === "f32" ? 4 : 2;
    const w = d.alloc(s.outF * s.inF * 2), x = d.alloc(maxN * s.inF * 2), y = d.alloc(maxN * s.outF * yBytes);
    fillRandom(g, w, s.outF * s.inF, 1 / Math.sqrt(s.inF), rng);
    fillRandom(g, x, maxN * s.inF, 1, rng);
    const rows = (ptr: bigint, n: number) => {
      g.synchronize();
      const host = new Uint8Array(Math.min(n, checkRows) * s.outF * yBytes);
      d.copyToHost(host, ptr);
      return s.out === "f32" ? new Float32Array(host.buffer) : toFloat32(host, "BF16");
    };
    try {
      for (const n of batches) {
        const cublasUs = time(() => blas.linear(x, w, y, n, s.inF, s.outF, yType));
        const want = rows(y, n);
        const plan = lt.plan(n, s.inF, s.outF, yType);
        let ltBest = 0, ltBestUs = Infinity, ltFirstUs = 0, maxRelDiff = 0;
        for (let c = 0; c < plan.count; c++) {
          const us = time(() => lt.linear(x, w, y, n, s.inF, s.outF, yType, c));
          if (c === 0) ltFirstUs = us;
          if (us < ltBestUs) { ltBestUs = us; ltBest = c; }
          const got = rows(y, n);
          let num = 0, den = 0;
          for (let i = 0; i < got.length; i++) { num += (got[i]! - want[i]!) ** 2; den += want[i]! ** 2; }
          maxRelDiff = Math.max(maxRelDiff, Math.sqrt(num / Math.max(den, 1e-30)));
        }
        const bestUs = Math.min(cublasUs, ltBestUs);
        results.push({
          shape: s.name, n, outF: s.outF, inF: s.inF, out: s.out, cublasUs: +cublasUs.toFixed(2), ltFirstUs: +ltFirstUs.toFixed(2),
          ltBestUs: +ltBestUs.toFixed(2), ltBest, candidates: plan.count, maxRelDiff: +maxRelDiff.toExponential(2),
          weightTBs: +((s.outF * s.inF * 2) / bestUs / 1e6).toFixed(3), tflops: +((2 * n * s.outF * s.inF) / bestUs / 1e6).toFixed(2),
        });
      }
    } finally {
      g.synchronize();
      for (const p of [w, x, y]) d.free(p);
    }
  }
  return results;
}

/**
 * The CUDA backend on the GPU simulator (test/gpu-sim): the committed PTX kernels, translated to JS and
 * run thread by thread, against their CPU twins; the engine and graph capture end to end. This checks the
 * backend's logic on every machine. It does not check the real driver, cuBLAS or the FFI signatures, and
 * it is not a GPU run: docs/gpu-runs.md records those.
 */
import { describe, expect, test } from "bun:test";
import { CudaBackend, type CudaTensor } from "../src/backend/cuda/cuda-backend.ts";
import { CpuBackend, CpuTensor } from "../src/backend/cpu/cpu-backend.ts";
import { decodeGraphInputs, type AttentionShape, type StepInputs } from "../src/backend/backend.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { hostAddress } from "../src/backend/cuda/driver.ts";
import { SimDevice } from "./gpu-sim/device.ts";
import { simProvider } from "./gpu-sim/provider.ts";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineCudaSuites, relErr, type CudaSuiteSizes } from "./cuda-suite.ts";
import { benchGemms, modelGemmShapes } from "../src/backend/cuda/gemm-bench.ts";
import type { ModelConfig } from "../src/model/config.ts";

const SIM_SIZES: CudaSuiteSizes = {
  rows: 9, hidden: 320, vocab: 700, intermediate: 384, prefillLen: 70, decodeLens: [1, 17, 530, 1100], decodeTableWidth: 70,
  samplingVocab: 3000, samplingDraws: 40, graphSeqs: 12, graphSteps: 10, engineTokens: 8,
};

const openSim = () => {
  const sim = new SimDevice();
  return CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
};

const sim = simProvider();
defineCudaSuites({ label: "simulated GPU", backend: openSim(), provider: sim.provider, ncclCommsClosed: sim.ncclCommsClosed, memorySlackBytes: 0, sizes: SIM_SIZES, timeoutMs: 120_000 });

// A hand-written kernel: out[i] = i + (value of lane i ^ 16), for threads i < n (the rest return first).
const WARP_PTX = `
.version 8.0
.target sm_80
.address_size 64

.visible .entry warp_pairs(
	.param .u64 warp_pairs_param_0,
	.param .u32 warp_pairs_param_1
)
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<6>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [warp_pairs_param_0];
	ld.param.u32 	%r1, [warp_pairs_param_1];
	mov.u32 	%r2, %tid.x;
	setp.ge.s32 	%p1, %r2, %r1;
	@%p1 bra 	$L__done;
	shfl.sync.bfly.b32 	%r3|%p2, %r2, 16, 31, -1;
	add.s32 	%r4, %r2, %r3;
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.s32 	%rd3, %r2, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.u32 	[%rd4], %r4;
$L__done:
	ret;
}

// Each thread writes its id to shared memory, then reads its neighbour's (tid ^ 1): with the barrier
// (param 1 = 1) or without it (0).
.visible .entry neighbour(
	.param .u64 neighbour_param_0,
	.param .u32 neighbour_param_1
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<9>;
	.reg .b64 	%rd<5>;
	.shared .align 4 .b8 buf[128];

	ld.param.u64 	%rd1, [neighbour_param_0];
	ld.param.u32 	%r1, [neighbour_param_1];
	mov.u32 	%r2, %tid.x;
	shl.b32 	%r3, %r2, 2;
	mov.u32 	%r4, buf;
	add.s32 	%r5, %r4, %r3;
	st.shared.u32 	[%r5], %r2;
	setp.eq.s32 	%p1, %r1, 0;
	@%p1 bra 	$L__read;
	bar.sync 	0;
$L__read:
	xor.b32 	%r6, %r3, 4;
	add.s32 	%r7, %r4, %r6;
	ld.shared.u32 	%r8, [%r7];
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.s32 	%rd3, %r2, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.u32 	[%rd4], %r8;
	ret;
}

// A 16-byte load from out + 4·param: aligned only when param is a multiple of 4.
.visible .entry vector_load(
	.param .u64 vector_load_param_0,
	.param .u32 vector_load_param_1
)
{
	.reg .b32 	%r<7>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [vector_load_param_0];
	ld.param.u32 	%r1, [vector_load_param_1];
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.s32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	ld.global.nc.v4.u32 	{%r2, %r3, %r4, %r5}, [%rd4];
	add.s32 	%r6, %r2, %r5;
	st.global.u32 	[%rd4], %r6;
	ret;
}
`;

describe("the GPU simulator itself", () => {
  /** Launches `kernel`(out, n) with 32 threads on stream 0 and runs it. */
  function runWarpPairs(sim: SimDevice, out: bigint, n: number, kernel = "warp_pairs"): void {
    const d = sim.driver();
    const fn = d.getFunction(d.loadModule(WARP_PTX), kernel);
    const values = new BigUint64Array(2), params = new BigUint64Array(2);
    values[0] = out;
    new DataView(values.buffer).setInt32(8, n, true);
    const base = hostAddress(values);
    params[0] = base; params[1] = base + 8n;
    d.launch(fn, [1, 1, 1], [32, 1, 1], 0, 0n, params, kernel);
    d.synchronize();
  }

  test("runs a warp shuffle as the PTX ISA defines it", () => {
    const sim = new SimDevice(1 << 20);
    const out = sim.alloc(32 * 4);
    runWarpPairs(sim, out, 32);
    const got = new Int32Array(sim.readDevice(out, 128).buffer);
    expect(Array.from(got)).toEqual(Array.from({ length: 32 }, (_, i) => i + (i ^ 16)));
  });

  test("a shuffle that names lanes which already returned is a fault, not a silent value", () => {
    const sim = new SimDevice(1 << 20);
    expect(() => runWarpPairs(sim, sim.alloc(128), 20)).toThrow(/lane 20 is named in the mask but has exited or diverged/);
  });

  test("shared memory passed between threads without a barrier is a race fault; with bar.sync it is not", () => {
    const sim = new SimDevice(1 << 20);
    const out = sim.alloc(128);
    runWarpPairs(sim, out, 1, "neighbour");
    expect(Array.from(new Int32Array(sim.readDevice(out, 128).buffer))).toEqual(Array.from({ length: 32 }, (_, i) => i ^ 1));
    expect(() => runWarpPairs(sim, out, 0, "neighbour")).toThrow(/neighbour: shared-memory race \((read after write|write after read)\) at byte \d+ between threads \d+ and \d+/);
  });

  test("a vector access must be aligned to its whole width", () => {
    const sim = new SimDevice(1 << 20);
    const buf = sim.alloc(256);
    runWarpPairs(sim, buf, 4, "vector_load");
    expect(() => runWarpPairs(sim, buf, 1, "vector_load")).toThrow(/vector_load: 16-byte vector global access at 0x[0-9a-f]+ is misaligned/);
  });

  test("global accesses outside live allocations fault, naming the kernel", () => {
    const sim = new SimDevice(1 << 20);
    const small = sim.alloc(16 * 4);
    expect(() => runWarpPairs(sim, small, 32)).toThrow(/warp_pairs: 4-byte global access at 0x[0-9a-f]+ outside every live allocation/);
    const freed = sim.alloc(128);
    sim.free(freed);
    expect(() => runWarpPairs(sim, freed, 32)).toThrow(/outside every live allocation/);
  });

  test("stream work runs at a synchronize: a synchronous copy that skips it reads stale memory", () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    const H = 64;
    const w = g.loadWeight([{ name: "w", file: "t", dtype: "F32", shape: [H], bytes: new Uint8Array(new Float32Array(H).fill(1).buffer) }], [H]);
    const out = g.empty([1, H]);
    g.poison(out);
    g.rmsNorm(g.loadWeight([{ name: "x", file: "t", dtype: "F32", shape: [1, H], bytes: new Uint8Array(new Float32Array(H).fill(3).buffer) }], [1, H]), w, 1e-6, out);
    const early = new Uint16Array(H);
    g.driver.copyToHost(early, out.ptr); // not ordered after the stream's kernel
    expect(early[0]).toBe(0xffff);
    expect(Array.from(g.toHost(out)).every((v) => Math.abs(v - 1) < 1e-2)).toBe(true); // toHost synchronizes first
  });

  test("capture records launches without running them; synchronous calls during capture throw", () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    const H = 32;
    const w = g.loadWeight([{ name: "w", file: "t", dtype: "F32", shape: [H], bytes: new Uint8Array(new Float32Array(H).fill(1).buffer) }], [H]);
    const x = g.loadWeight([{ name: "x", file: "t", dtype: "F32", shape: [1, H], bytes: new Uint8Array(new Float32Array(H).fill(5).buffer) }], [1, H]);
    const out = g.empty([1, H]);
    g.poison(out);
    const before = sim.stats.launches;
    g.captureGraph(1, () => g.rmsNorm(x, w, 1e-6, out));
    expect(sim.stats.launches).toBe(before);
    expect(Number.isNaN(g.toHost(out)[0])).toBe(true);
    g.launchGraph(1);
    expect(g.toHost(out)[0]).toBeCloseTo(1, 2);
    expect(() => g.captureGraph(2, () => g.toHost(out))).toThrow(/CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED/);
  });

  test("close() frees everything once the stream drains, and gives up (freeing nothing) on work that never finishes", () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    g.empty([1024, 1024]);
    g.close();
    expect(sim.usedBytes()).toBe(0);
    const h = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    const used = sim.usedBytes();
    sim.enqueue(h.stream, () => false); // a kernel that never ends
    const t0 = performance.now();
    h.close(200);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(sim.usedBytes()).toBe(used);
  });

  test("the backend refuses a launch whose arguments disagree with the kernel's PTX signature", () => {
    const g = openSim();
    const k = (g as unknown as { k: { launch: (n: string, grid: number[], block: number, args: object[]) => void } }).k;
    expect(() => k.launch("rmsnorm_bf16", [1], 32, [{ p: null }, { p: null }])).toThrow(/rmsnorm_bf16: 2 launch arguments for 6 kernel parameters/);
    expect(() => k.launch("rmsnorm_bf16", [1], 32, [{ p: null }, { p: null }, { p: null }, { f: 1 }, { f: 1e-6 }, { i: 0 }])).toThrow(/argument 3 is f, the kernel declares i/);
  });
});

describe("compiled kernels are cached (on the simulator)", () => {
  const withCache = (dir: string, fn: () => void) => {
    const saved = process.env.VBUN_KERNEL_CACHE;
    process.env.VBUN_KERNEL_CACHE = dir;
    try { fn(); } finally { process.env.VBUN_KERNEL_CACHE = saved; }
  };
  const open = () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    return { sim, g };
  };

  test("the first start JIT-compiles every module and stores it; the next loads them all from the cache", () => {
    const dir = mkdtempSync(join(tmpdir(), "vbun-kcache-"));
    withCache(dir, () => {
      const first = open();
      const modules = first.g.info.kernels.compiled;
      expect(modules).toBeGreaterThanOrEqual(7);
      expect(first.sim.stats.compiles).toBe(modules);
      expect(first.g.info.kernels.cached).toBe(0);
      expect(readdirSync(dir).filter((f) => f.endsWith(".cubin")).length).toBe(modules);
      const second = open();
      expect(second.sim.stats.compiles).toBe(0);
      expect(second.g.info.kernels.cached).toBe(modules);
      // A damaged file is compiled afresh (and replaced), not an error.
      const victim = readdirSync(dir).find((f) => f.startsWith("norm-"))!;
      writeFileSync(join(dir, victim), "garbage");
      const third = open();
      expect(third.sim.stats.compiles).toBe(1);
      expect(third.g.info.kernels.cached).toBe(modules - 1);
      expect(open().sim.stats.compiles).toBe(0);
    });
  });

  test("VBUN_KERNEL_CACHE=off loads the PTX directly every time", () => {
    withCache("off", () => {
      const { sim, g } = open();
      expect(g.info.kernels.dir).toBeNull();
      expect(sim.stats.compiles).toBe(0);
      expect(g.info.kernels.compiled).toBeGreaterThanOrEqual(7);
    });
  });
});

describe("step inputs (on the simulator)", () => {
  test("a step's inputs move with one async copy, and a decode bucket's inputs land at the same addresses every time", () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    g.reserveStep(64, 16, 8);
    const before = sim.stats.hostToDeviceCopies;
    const a = g.uploadStep(decodeGraphInputs(8, 8));
    expect(sim.stats.hostToDeviceCopies - before).toBe(1);
    g.uploadStep(decodeGraphInputs(3, 8)); // another shape in between
    const b = g.uploadStep(decodeGraphInputs(8, 8));
    for (const k of ["tokenIds", "positions", "slotMapping", "queryStart", "seqLens", "blockTables", "logitsRows"] as const) expect(b[k].ptr).toBe(a[k].ptr);
    expect(() => g.uploadStep(decodeGraphInputs(40, 8))).toThrow(/step inputs of \d+ bytes exceed the \d+ reserved for the largest step/);
  });

  test("steps that sample nothing queue their inputs without waiting for the GPU, and each step's kernels see its own inputs", () => {
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    g.reserveStep(64, 16, 8);
    g.synchronize();
    const syncs = sim.stats.streamSyncs;
    // Five prefill-chunk-like steps in a row; after each, stream work that reads the step's token ids the
    // way its kernels would (the simulator runs stream work late, so a staging buffer rewritten before its
    // copy ran would show up here).
    const seen: number[][] = [];
    for (let k = 0; k < 5; k++) {
      const step = decodeGraphInputs(6, 8);
      step.tokenIds.fill(100 + k);
      const t = g.uploadStep(step);
      sim.enqueue(g.stream, () => { seen.push(Array.from(new Int32Array(sim.readDevice(t.tokenIds.ptr, 6 * 4).buffer))); });
    }
    expect(sim.stats.streamSyncs).toBe(syncs); // no step waited for the whole stream
    g.synchronize();
    expect(seen).toEqual([0, 1, 2, 3, 4].map((k) => new Array(6).fill(100 + k)));
  });
});

describe("decode split counts per batch size (on the simulator)", () => {
  test("a graph captured before a smaller bucket grows the split-KV buffer still replays correctly", () => {
    // 132 simulated multiprocessors: 70 sequences × 2 KV heads get 2 splits, 60 get 3 — and need more
    // partials space than the larger batch, so the buffer grows after the first capture.
    const sim = new SimDevice(64 << 20);
    const g = CudaBackend.withDriver(sim.driver(), sim.cublasLibrary(), () => sim.cublasLtLibrary());
    const cpu = new CpuBackend();
    const rng = new SeededRandom(9);
    const s: AttentionShape = { numHeads: 4, numKvHeads: 2, headDim: 64, scale: 1 / 8 };
    const D = 64, W = (4 + 2 * 2) * D, bs = 16, width = 64, numBlocks = 128;
    const kc = rng.normal(new Float32Array(numBlocks * bs * 2 * D), 1), vc = rng.normal(new Float32Array(numBlocks * bs * 2 * D), 1);
    const upBf16 = (v: Float32Array, shape: number[]) => g.loadWeight([{ name: "t", file: "t", dtype: "F32", shape, bytes: new Uint8Array(v.buffer.slice(0)) }], shape);
    const gk = upBf16(kc, [numBlocks, bs, 2, D]), gv = upBf16(vc, [numBlocks, bs, 2, D]);
    const inputsFor = (n: number): StepInputs => ({
      tokenIds: new Int32Array(n), positions: Int32Array.from({ length: n }, (_, i) => 5 + (i % 30)), slotMapping: new Int32Array(n).fill(-1),
      queryStart: Int32Array.from({ length: n + 1 }, (_, i) => i), seqLens: Int32Array.from({ length: n }, (_, i) => 6 + (i % 30)),
      blockTables: Int32Array.from({ length: n * width }, (_, i) => (i * 7) % numBlocks), maxBlocksPerSeq: width, logitsRows: new Int32Array(0),
    });
    g.reserveStep(80, 80, width);
    const runs = new Map<number, { qkv: CudaTensor; out: CudaTensor; inputs: StepInputs; host: Float32Array }>();
    for (const n of [70, 60]) {
      const host = rng.normal(new Float32Array(n * W), 1);
      const qkv = upBf16(host, [n, W]), out = g.empty([n, 4 * D]);
      const inputs = inputsFor(n);
      const step = g.uploadStep(inputs);
      g.pagedAttention(qkv, gk, gv, step, bs, s, out); // the eager warm-up allocates
      g.captureGraph(n, () => g.pagedAttention(qkv, gk, gv, step, bs, s, out));
      runs.set(n, { qkv, out, inputs, host });
    }
    for (const n of [70, 60]) {
      const r = runs.get(n)!;
      g.poison(r.out);
      g.uploadStep(r.inputs);
      g.launchGraph(n);
      const want = new CpuTensor(new Float32Array(n * 4 * D), [n, 4 * D]);
      cpu.pagedAttention(new CpuTensor(g.toHost(r.qkv), [n, W]), new CpuTensor(g.toHost(gk), [numBlocks, bs, 2, D]), new CpuTensor(g.toHost(gv), [numBlocks, bs, 2, D]), cpu.uploadStep(r.inputs), bs, s, want);
      expect(relErr(g.toHost(r.out), want.data)).toBeLessThan(1e-2);
    }
  }, 120_000);
});

describe("GEMM algorithm benchmark (scripts/bench-gemm) on the simulator", () => {
  test("times cublasGemmEx and every cuBLASLt candidate per shape and batch, and checks each candidate's output", () => {
    const g = openSim();
    const shapes = modelGemmShapes({ numHeads: 4, numKvHeads: 2, headDim: 16, hiddenSize: 64, intermediateSize: 96, vocabSize: 300 } as ModelConfig);
    expect(shapes.map((s) => `${s.name} ${s.outF}x${s.inF} ${s.out}`)).toEqual(["qkv 128x64 bf16", "o 64x64 bf16", "gate_up 192x64 bf16", "down 64x96 bf16", "lm_head 300x64 f32"]);
    const rows = benchGemms(g, shapes, [1, 5], { reps: 2 });
    expect(rows.length).toBe(10);
    for (const r of rows) {
      expect(r.candidates).toBe(3); // what the simulated heuristic offers
      expect(r.ltBest).toBeGreaterThanOrEqual(0);
      expect(r.ltBestUs).toBeLessThanOrEqual(r.ltFirstUs);
      expect(r.maxRelDiff).toBeLessThanOrEqual(1e-6); // the simulator computes every algorithm alike
    }
  }, 60_000);
});

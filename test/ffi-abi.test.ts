/**
 * vbun's FFI layer itself — the Driver, Cublas, CublasLt and Nccl classes and bun:ffi's conversions of
 * what they pass — run against shared libraries with the C ABI of libcuda, cuBLAS, cuBLASLt and NCCL
 * (test/gpu-sim/c-shim.ts) whose functions are carried out, as the headers define them, on simulated GPUs
 * (test/gpu-sim/c-abi.ts). The GPU simulator's own tests (gpu-sim.test.ts) call the backend through a
 * method-level twin of the Driver class instead, and never reach these wrappers.
 *
 * What this shows: every bound function is reached through dlopen and bun:ffi with its arguments where
 * the header puts them, out-parameters come back, errors carry the driver's name and text. What it cannot
 * show: anything about NVIDIA's libraries (their symbol tables are checked against the headers in
 * ffi-signatures.test.ts, and on a device by loading them).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { buildShimLibraries, installShim, SHIM_LIBRARIES } from "./gpu-sim/c-shim.ts";
import { SimulatedCAbi } from "./gpu-sim/c-abi.ts";
import { Driver, CudaError } from "../src/backend/cuda/driver.ts";
import { CudaBackend } from "../src/backend/cuda/cuda-backend.ts";
import { Nccl, NcclError, NCCL_BFLOAT16, NCCL_FLOAT32 } from "../src/backend/cuda/nccl.ts";
import { DEFAULT_CUDA } from "../src/backend/cuda/provider.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { LLM } from "../src/engine/llm.ts";
import { exitsWithin, FAST_MODEL, tinyModel } from "./helpers.ts";
import type { CudaProvider } from "../src/backend/cuda/provider.ts";
import type { ShimTpData } from "./gpu-sim/shim-tp-worker.ts";
import { simProvider } from "./gpu-sim/provider.ts";

const built = buildShimLibraries();
const why = "why" in built ? built.why : "";
if (why) console.log(`skipping the FFI-layer tests: ${why}`);
const abi = new SimulatedCAbi({ gpus: 2 });
const shimDir = "dir" in built ? built.dir : "";
const shim = shimDir ? installShim(shimDir, abi.handler) : null;

/** Runs `fn` with the library search pointed at the shim libraries (and a fresh kernel cache: the cuLink path). */
function withShim<T>(fn: () => T, extra: Record<string, string> = {}): T {
  const env = { ...shim!.env, VBUN_KERNEL_CACHE: mkdtempSync(join(tmpdir(), "vbun-shim-kernels-")), ...extra };
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

/** Fails with the calls the C side refused, if any (their messages say which argument was wrong). */
function expectNoFaults(from = 0): void {
  expect(abi.faults.slice(from)).toEqual([]);
}

const bytesAt = (addr: bigint, n: number) => new Uint8Array(toArrayBuffer(Number(addr) as Pointer, 0, n));

describe.skipIf(!!why)("vbun's FFI layer through bun:ffi, against C libraries with the CUDA ABI (simulated GPUs)", () => {
  test("the driver binding: devices, memory, copies (sync and async from page-locked memory), memset, events", () => {
    const start = abi.faults.length;
    const d = withShim(() => Driver.load());
    expect(d.path).toBe(shim!.env.VBUN_LIBCUDA!);
    expect(d.driverVersion()).toBe(13000);
    expect(d.deviceCount()).toBe(2);
    expect(d.device(1)).toBe(1);
    expect(d.deviceName(1)).toBe("vbun GPU simulator 1");
    expect(d.attribute(0, 16)).toBe(132);
    const ctx = d.primaryContext(1);
    d.setCurrent(ctx);
    const { free, total } = d.memInfo();
    expect(total).toBe(256 << 20);
    const n = 1000, values = Float32Array.from({ length: n }, (_, i) => i * 0.5 - 7);
    const a = d.alloc(n * 4), b = d.alloc(n * 4);
    expect(d.memInfo().free).toBeLessThan(free);
    d.copyToDevice(a, values);
    const back = new Float32Array(n);
    d.copyToHost(back, a);
    expect(back).toEqual(values);
    const stream = d.createStream();
    const pinned = d.allocHost(n * 4);
    bytesAt(pinned, n * 4).set(new Uint8Array(values.buffer));
    d.memsetAsync(b, 0, n * 4, stream);
    d.copyToDeviceAsync(b, pinned, 64 * 4, stream);
    d.copyOnDeviceAsync(a, b, n * 4, stream); // a = first 64 values, then zeros
    const ev0 = d.createEvent(), ev1 = d.createEvent();
    d.record(ev0, stream);
    const pinnedOut = d.allocHost(n * 4);
    bytesAt(pinnedOut, n * 4).fill(0xff);
    d.copyToHostAsync(pinnedOut, a, n * 4, stream);
    d.record(ev1, stream);
    d.eventSynchronize(ev1);
    expect(d.streamQuery(stream)).toBe(true);
    d.streamSynchronize(stream);
    const got = new Float32Array(bytesAt(pinnedOut, n * 4).slice().buffer);
    expect(Array.from(got.subarray(0, 64))).toEqual(Array.from(values.subarray(0, 64)));
    expect(got.subarray(64).every((v) => v === 0)).toBe(true);
    expect(d.elapsedMs(ev0, ev1)).toBeGreaterThanOrEqual(0);
    d.synchronize();
    d.free(a);
    d.free(b);
    d.freeHost(pinned);
    d.freeHost(pinnedOut);
    expect(d.memInfo().free).toBe(free);
    d.setCurrent(d.primaryContext(0));
    expectNoFaults(start);
  });

  test("a failed call throws CudaError with the driver's error name and text (cuGetErrorName / cuGetErrorString)", () => {
    const d = withShim(() => Driver.load());
    expect(() => d.free(0x1_0000_0040n)).toThrow(CudaError);
    expect(() => d.free(0x1_0000_0040n)).toThrow(/^cuMemFree_v2 failed: CUDA_ERROR_UNKNOWN \(999\): simulated: cuMemFree_v2: cuMemFree of 100000040, which is not the start of a live allocation$/);
    expect(() => d.getFunction(d.loadModule(".version 8.0\n.target sm_80\n.address_size 64\n"), "missing")).toThrow(/cuModuleGetFunction failed: CUDA_ERROR_NOT_FOUND \(500\)/);
  });

  test("JIT compilation (cuLink*): a module compiles, loads from its image and runs; bad PTX fails with the JIT log", () => {
    const start = abi.faults.length;
    const d = withShim(() => Driver.load());
    const ptx = [".version 8.0", ".target sm_80", ".address_size 64", ".visible .entry fill(", "\t.param .u64 fill_param_0,", "\t.param .u32 fill_param_1", ")", "{",
      "\t.reg .b32 %r<3>;", "\t.reg .b64 %rd<4>;", "\tld.param.u64 %rd1, [fill_param_0];", "\tld.param.u32 %r1, [fill_param_1];", "\tmov.u32 %r2, %tid.x;",
      "\tcvta.to.global.u64 %rd2, %rd1;", "\tmul.wide.u32 %rd3, %r2, 4;", "\tadd.s64 %rd2, %rd2, %rd3;", "\tst.global.u32 [%rd2], %r1;", "\tret;", "}", ""].join("\n");
    const image = d.compilePtx(ptx, "fill");
    const fn = d.getFunction(d.loadImage(image), "fill");
    d.setFunctionAttribute(fn, 8, 0);
    const out = d.alloc(32 * 4);
    const args = new BigUint64Array(2), params = new BigUint64Array(2);
    args[0] = out;
    new DataView(args.buffer).setUint32(8, 77, true);
    const base = BigInt(require("bun:ffi").ptr(args));
    params[0] = base; params[1] = base + 8n;
    d.launch(fn, [1, 1, 1], [32, 1, 1], 0, 0n, params, "fill");
    d.synchronize();
    const got = new Uint32Array(32);
    d.copyToHost(got, out);
    expect(Array.from(got)).toEqual(new Array(32).fill(77));
    d.free(out);
    expectNoFaults(start);
    expect(() => d.compilePtx(".version 8.0\n.target sm_80\n.visible .entry broken( {\n", "broken")).toThrow(/^cuLinkAddData_v2\(broken\) failed: CUDA_ERROR_INVALID_PTX \(218\): .*; JIT log: ptxas fatal: /);
  });

  test("the engine on the CUDA backend opened through the real library search (graphs, chunked prefill) gives the same tokens as without the FFI layer", () => {
    const start = abi.faults.length;
    const model = tinyModel(FAST_MODEL);
    const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
    const params = { temperature: 0, max_tokens: 8, ignore_eos: true };
    const options = { model, device: "cuda" as const, maxModelLen: 128, maxNumSeqs: 4, maxNumBatchedTokens: 16, log: () => {} };
    // The same engine on the simulator without the FFI layer (its method-level driver): the same bits.
    const direct = (extra: Record<string, string>) => withShim(() => {
      const llm = new LLM({ ...options, cuda: simProvider(1).provider });
      try { return llm.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join()); } finally { llm.close(); }
    }, extra);
    const cpu = new LLM({ model, device: "cpu", maxModelLen: 128, log: () => {} }).generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
    for (const extra of [{}, { VBUN_GEMM: "cublaslt" }, { VBUN_GEMV: "on" }] as Record<string, string>[]) {
      const want = direct(extra);
      // (bf16 on the GPU against f32 on the CPU: a near-tie may flip a late token of one prompt.)
      expect(want.filter((t, i) => t === cpu[i]).length).toBeGreaterThanOrEqual(prompts.length - 1);
      const used = abi.devices.map((dev) => dev.usedBytes());
      const llm = withShim(() => new LLM({ ...options, cuda: DEFAULT_CUDA }), extra);
      try {
        const gpu = llm.engine.runner.backend as unknown as CudaBackend;
        expect(gpu.info.libcuda).toBe(shim!.env.VBUN_LIBCUDA!);
        expect(gpu.info.libcublas).toBe(join(shimDir, SHIM_LIBRARIES.cublas.file));
        const got = llm.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
        expect(got).toEqual(want);
      } finally {
        llm.close();
      }
      expect(abi.devices.map((dev) => dev.usedBytes())).toEqual(used);
    }
    expect(abi.calls.get("cuGraphLaunch") ?? 0).toBeGreaterThan(0);
    expect(abi.calls.get("cublasLtMatmul") ?? 0).toBeGreaterThan(0);
    expect(abi.calls.get("cuLinkComplete") ?? 0).toBeGreaterThan(0);
    expectNoFaults(start);
  }, 60_000);

  test("kernel profiling (events) and the polled stream wait (cuStreamQuery) work through the binding", () => {
    const start = abi.faults.length;
    const llm = withShim(() => new LLM({ model: tinyModel(FAST_MODEL), device: "cuda", maxModelLen: 64, maxNumSeqs: 2, profileKernels: true, cuda: DEFAULT_CUDA, log: () => {} }));
    try {
      const gpu = llm.engine.runner.backend as unknown as CudaBackend;
      const queries = abi.calls.get("cuStreamQuery") ?? 0, syncs = abi.calls.get("cuStreamSynchronize") ?? 0;
      gpu.setWaitCheck(() => {});
      llm.generate([[1, 2, 3]], { temperature: 0, max_tokens: 3, ignore_eos: true }, { useTqdm: false });
      gpu.setWaitCheck(null);
      // Three steps that sample: each waited by polling the stream, none by blocking in the driver.
      expect((abi.calls.get("cuStreamQuery") ?? 0) - queries).toBeGreaterThanOrEqual(3);
      expect(abi.calls.get("cuStreamSynchronize") ?? 0).toBe(syncs);
      const times = gpu.kernelTimes();
      expect(times.length).toBeGreaterThan(5);
      for (const k of times) expect(Number.isFinite(k.ms) && k.ms >= 0).toBe(true);
    } finally {
      llm.close();
    }
    expectNoFaults(start);
  }, 60_000);

  test("NCCL: version, communicators, all-reduce and all-gather (grouped and not), destroy, abort, and its error text", () => {
    const start = abi.faults.length;
    const nccl = withShim(() => new Nccl());
    expect(nccl.version()).toBe(22203);
    const gpu = withShim(() => CudaBackend.open(0));
    try {
      const d = gpu.driver;
      const [comm] = nccl.initAll([0]);
      const n = 48, x = Float32Array.from({ length: n }, (_, i) => i / 8 - 2);
      const f32 = d.alloc(n * 4), bf = d.alloc(n * 2), gathered = d.alloc(n * 4);
      d.copyToDevice(f32, x);
      d.copyToDevice(bf, fromFloat32(x, "BF16"));
      nccl.allReduce([{ send: f32, recv: f32, count: n, dtype: NCCL_FLOAT32, comm: comm!, stream: gpu.stream }]);
      nccl.allReduce([{ send: bf, recv: bf, count: n, dtype: NCCL_BFLOAT16, comm: comm!, stream: gpu.stream }, { send: f32, recv: f32, count: n, dtype: NCCL_FLOAT32, comm: comm!, stream: gpu.stream }]);
      nccl.allGather({ send: f32, recv: gathered, count: n, dtype: NCCL_FLOAT32, comm: comm!, stream: gpu.stream });
      gpu.synchronize();
      const back = new Float32Array(n), backBf = new Uint8Array(n * 2), all = new Float32Array(n);
      d.copyToHost(back, f32);
      d.copyToHost(backBf, bf);
      d.copyToHost(all, gathered);
      expect(back).toEqual(x); // one rank: the sum is the input
      expect(toFloat32(backBf, "BF16")).toEqual(toFloat32(fromFloat32(x, "BF16"), "BF16"));
      expect(all).toEqual(x);
      nccl.destroy(comm!);
      const [second] = nccl.initAll([1]);
      nccl.abort(second!);
      gpu.makeCurrent();
      for (const p of [f32, bf, gathered]) d.free(p);
      expectNoFaults(start);
      expect(() => nccl.allReduce([{ send: f32, recv: f32, count: n, dtype: NCCL_FLOAT32, comm: 0x1234n, stream: gpu.stream }])).toThrow(NcclError);
      expect(() => nccl.allReduce([{ send: f32, recv: f32, count: n, dtype: NCCL_FLOAT32, comm: 0x1234n, stream: gpu.stream }])).toThrow(/^ncclAllReduce failed: invalid argument \(ncclResult 4\)$/);
    } finally {
      gpu.close();
    }
  });

  test("tensor parallelism (TP = 2): the real rank workers (src/tp-worker.ts) and NCCL through the bindings give the simulator's tokens", async () => {
    const start = abi.faults.length;
    const model = tinyModel(FAST_MODEL);
    const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
    const params = { temperature: 0, max_tokens: 6, ignore_eos: true };
    const options = { model, device: "cuda" as const, tensorParallelSize: 2, maxModelLen: 64, maxNumSeqs: 4, log: () => {} };
    const sim = simProvider(2);
    const direct = new LLM({ ...options, cuda: sim.provider });
    const want = direct.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
    direct.close();
    // The leader's NCCL is the real binding; its workerData carries the simulated communicators' shared
    // memory to the worker threads' own shims (the real library needs none: its communicators are process-wide).
    const provider: CudaProvider = {
      open: (i) => CudaBackend.open(i),
      deviceCount: (g) => g.driver.deviceCount(),
      nccl: () => Object.defineProperty(new Nccl(), "workerData", { get: (): ShimTpData => ({ share: abi.ncclShare(), env: shim!.env }) }),
      tpWorkerUrl: new URL("./gpu-sim/shim-tp-worker.ts", import.meta.url),
    };
    const llm = withShim(() => new LLM({ ...options, cuda: provider }));
    const group = llm.engine.runner.tpGroup!;
    try {
      expect(llm.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join())).toEqual(want);
    } finally {
      llm.close();
    }
    expect(await exitsWithin(group, 10_000)).toBe(true);
    expectNoFaults(start);
  }, 120_000);

  // Runs last (bun runs a file's tests in order; a -t filter leaves it out with the others).
  test("every bound function was reached through the C ABI by the tests above", () => {
    // cuEventElapsedTime is the fallback for drivers older than 12.8, bound only when _v2 is missing.
    const unreached = Object.values(SHIM_LIBRARIES).flatMap(({ table }) => Object.keys(table)).filter((name) => !abi.calls.has(name));
    console.log(`FFI layer: ${abi.calls.size} bound functions reached through the C ABI; not reached: ${unreached.join(", ") || "none"}`);
    expect(unreached).toEqual(["cuEventElapsedTime"]);
  });
});

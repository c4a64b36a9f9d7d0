/**
 * The CUDA backend: bf16 weights and activations in device memory, f32 logits, PTX kernels and cuBLAS on
 * one stream, step inputs staged in page-locked memory and copied with one async copy.
 * Every op has its CPU twin in ../cpu (the reference it is tested against on a device).
 */
import { moeMaxTiles, moeRoutingInts, stepExtents, type MoeScratch, type ExpertWeights, type MlaShape, type MoeGrouping, type AttentionShape, type Backend, type KvCacheSpec, type PendingSample, type StepInputs, type StepTensors, type Tensor } from "../backend.ts";
import { concatPacked, isPacked, plainWeight, valuesPerWord, type LinearWeight, type PackedMatrix } from "../../loader/packed-matrix.ts";
import { DTYPE_BYTES, fromFloat32, toFloat32 } from "../../loader/dtype.ts";
import { fp8Quantizable } from "../../loader/quantization.ts";
import type { TensorView } from "../../loader/safetensors.ts";
import type { SamplingBatch, SamplerOutput } from "../../engine/sampling-batch.ts";
import { CudaSampler } from "./cuda-sampler.ts";
import { PinnedBuffer } from "./pinned-buffer.ts";
import { Cublas, CUDA_R_16BF, CUDA_R_32F, openCublas, type CublasLibrary } from "./cublas.ts";
import { CublasLt, openCublasLt, type CublasLtLibrary } from "./cublaslt.ts";
import { cudaOptionsFromEnv, type GemmLibrary } from "./cuda-options.ts";
import { Driver, type DeviceDriver, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL } from "./driver.ts";
import { DECODE_SHAPES, Kernels, type KernelName } from "./kernels.ts";
import { KernelProfiler, type KernelTime } from "./kernel-profiler.ts";
import { ModuleCache, type ModuleLoadStats } from "./module-cache.ts";

export type CudaDType = "bf16" | "f32" | "i32";
const BYTES: Record<CudaDType, number> = { bf16: 2, f32: 4, i32: 4 };

/** A weight kept packed (GPTQ, AWQ, pack-quantized, FP8, INT8; src/loader/packed-matrix.ts): its parts' device addresses. */
export interface PackedOnDevice {
  bits: 2 | 4 | 8;
  code: "uint" | "e4m3";
  /** [out, in / (32 / bits)] u32 words; scales and zeros [out, numGroups] f32 (zeros null: all 0); groupOf [in] i32 (null: i / groupSize). */
  words: bigint;
  scales: bigint;
  zeros: bigint | null;
  groupOf: bigint | null;
  numGroups: number;
  groupSize: number;
}

export class CudaTensor implements Tensor {
  /** `packed`: a packed weight [out, in] (ptr is its words), which only linear() takes. */
  constructor(readonly ptr: bigint, readonly shape: readonly number[], readonly dtype: CudaDType, readonly packed: PackedOnDevice | null = null) {}
  get width(): number {
    return this.shape.length > 1 ? this.shape[this.shape.length - 1]! : 1;
  }
  get numRows(): number {
    return this.shape.length > 1 ? this.shape[0]! : 1;
  }
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const P = (t: CudaTensor | null) => ({ p: t ? t.ptr : null });
const I = (i: number) => ({ i });
/** A packed weight's words, scales and zeros (null: all 0) as launch arguments, and whether its values are E4M3. */
const packedArgs = (q: PackedOnDevice) => [{ p: q.words }, { p: q.scales }, { p: q.zeros }];
const isFp8 = (q: PackedOnDevice) => I(q.code === "e4m3" ? 1 : 0);
const F = (f: number) => ({ f });
const WORKSPACE_BYTES = 32 * 1024 * 1024;
/** Online FP8 quantization's staging buffer for float rows on their way to quantize_fp8_rows_* (at least one row). */
const FP8_STAGING_BYTES = 64 * 1024 * 1024;
const NO_INTS = new Int32Array(0);
const POLL_SLEEP = new Int32Array(new SharedArrayBuffer(4));
/** How long close() waits for queued GPU work to finish before it gives up freeing (a hung kernel). */
const CLOSE_DRAIN_MS = 10_000;

/** Row limits of the GEMV kernels (ptx/src/gemv.cu: MAX_ROWS, MAX_ROWS_SILU; ptx/src/quant.cu: MAX_ROWS). */
const GEMV_MAX_ROWS = 8, GEMV_SILU_MAX_ROWS = 2, PACKED_GEMV_MAX_ROWS = 8;
/** Keys per split of the simple split-KV decode kernel (SPLIT in ptx/src/attention.cu). */
const SPLIT_KEYS = 512;

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  driverVersion: number;
  totalMemory: number;
  libcuda: string;
  libcublas: string;
  /** Which library runs the GEMMs: cublasGemmEx, or cublasLt with per-shape heuristic plans ($VBUN_GEMM). */
  gemm: GemmLibrary;
  /** Linear layers of ≤ 8 rows run on vbun's GEMV kernels (gemv.cu), the down projection fused with SiLU-and-mul for ≤ 2 ($VBUN_GEMV=on). */
  smallBatchGemv: boolean;
  /** How the kernel modules were loaded: JIT-compiled now or machine code from the cache, and how long it took. */
  kernels: ModuleLoadStats;
}

export class CudaBackend implements Backend<CudaTensor> {
  readonly name = "cuda" as const;
  readonly info: CudaDeviceInfo;
  /** The one stream every launch, copy and GEMM of this backend goes to (NCCL calls use it too). */
  readonly stream: bigint;
  private readonly context: bigint;
  private readonly blas: Cublas;
  private readonly workspace: bigint;
  /** cuBLASLt, opened on first use ($VBUN_GEMM=cublaslt, useGemm, or the GEMM benchmark). */
  private lt: CublasLt | null = null;
  private readonly k: Kernels;
  private stepDevice: bigint = 0n;
  private stepCapacity = 0;
  /**
   * Two page-locked staging buffers, used in turn, each with an event recorded after its copy: a step's
   * inputs go into one while the previous step's copy may still read the other, so no step waits for the
   * GPU before queuing its work (a prefill chunk that samples nothing does not synchronize).
   */
  private staging: [PinnedBuffer, PinnedBuffer] | null = null;
  private stagingTurn = 0;
  private readonly stagingPending = [false, false];
  private stagingEvents: [bigint, bigint] | null = null;
  private waitCheck: ((waitedMs: number) => void) | null = null;
  /** Set by reserveStep: the step buffer must not move any more (graphs point into it). */
  private stepReserved = false;
  /**
   * Full-width block tables (one per KV cache group: what decode graphs read) kept on the device between steps,
   * with a host mirror of what they hold: each step uploads only the entries its sequences read that changed
   * (set by reserveStep; null before). The width is max_model_len's blocks, so re-sending whole tables would
   * move megabytes per step at long contexts.
   */
  private resident: { width: number; blockSize: number; tables: { dev: bigint; mirror: Int32Array; deltas: Int32Array }[] } | null = null;
  private readonly graphs = new Map<number, bigint>();
  /**
   * Where packed weights are dequantized for linear layers of more rows than the packed GEMV takes (then a cuBLAS
   * GEMM): bf16 of the largest packed weight, allocated as they load (before any graph capture).
   */
  private dequantScratch: { ptr: bigint; elems: number } | null = null;
  private readonly packedLoaded = { count: 0, bytes: 0, bf16Bytes: 0 };
  /** The most bytes of float rows online FP8 quantization stages at a time (at least a row); tests shrink it. */
  fp8StagingBytes = FP8_STAGING_BYTES;
  /**
   * Attention for steps that are not pure decode: "mma" (tensor-core flash attention, head_dim 64/128) or
   * "simple" (paged_attention_bf16, f32 FMA, any head_dim; VBUN_PREFILL_KERNEL=simple forces it).
   */
  prefillKernel: "simple" | "mma";
  /**
   * Decode attention: "groups" (paged_decode_*: 16-thread groups per key, no barrier in the key loop; head_dim
   * 64/128/256 with 1/2/4/8 query heads per KV head; its split count follows the batch size) or "simple"
   * (paged_attention_split_bf16, any shape, 512-key splits; VBUN_DECODE_KERNEL=simple forces it). Several
   * splits are merged by paged_attention_combine_bf16.
   */
  decodeKernel: "simple" | "groups";
  private partial: bigint = 0n;
  private partialCapacity = 0;
  /** Partials buffers captured graphs may still point to. */
  private readonly outgrownPartials: bigint[] = [];
  private readonly multiprocessors: number;
  /** Sampling, and the last sampling's ids that uploadStep's tokensFromSampled read. */
  private readonly sampler: CudaSampler;
  private profiler: KernelProfiler | null = null;
  /** Everything this backend allocated on the device and page-locked on the host: close() frees it. */
  private readonly deviceAllocations = new Set<bigint>();
  private readonly pinnedAllocations = new Set<bigint>();
  private closed = false;

  private constructor(readonly driver: DeviceDriver, deviceIndex: number, cublas: CublasLibrary, private readonly openLt: () => CublasLtLibrary) {
    const dev = driver.device(deviceIndex);
    const ctx = driver.primaryContext(dev);
    driver.setCurrent(ctx);
    this.context = ctx;
    this.stream = driver.createStream();
    // One workspace for cuBLAS and cuBLASLt: both run on this one stream, one GEMM at a time.
    this.workspace = this.deviceAlloc(WORKSPACE_BYTES);
    this.blas = new Cublas(this.stream, this.workspace, WORKSPACE_BYTES, cublas);
    const cc = `${driver.attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)}.${driver.attribute(dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)}`;
    const driverVersion = driver.driverVersion();
    const modules = new ModuleCache(driver, `sm_${cc} driver ${driverVersion} ${driver.path}`);
    this.k = new Kernels(driver, this.stream, modules);
    this.sampler = new CudaSampler({
      driver, stream: this.stream, kernels: this.k, deviceAlloc: (b) => this.deviceAlloc(b), deviceFree: (p) => this.deviceFree(p),
      pinnedBuffer: (b) => this.pinnedBuffer(b), freePinned: (b) => this.freePinned(b), synchronize: () => this.synchronize(), waitForEvent: (e) => this.waitForEvent(e),
    });
    this.multiprocessors = driver.attribute(dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    this.info = { name: driver.deviceName(dev), computeCapability: cc, driverVersion, totalMemory: driver.memInfo().total, libcuda: driver.path, libcublas: this.blas.path, gemm: "cublas", smallBatchGemv: false, kernels: modules.stats };
    const options = cudaOptionsFromEnv();
    this.prefillKernel = options.prefillKernel;
    this.decodeKernel = options.decodeKernel;
    this.useGemm(options.gemm);
    this.useSmallBatchGemv(options.smallBatchGemv);
  }

  /** Opens GPU `deviceIndex`. Throws LibraryNotFoundError / CudaError when there is no usable GPU. */
  static open(deviceIndex = 0): CudaBackend {
    const driver = Driver.load();
    const count = driver.deviceCount();
    if (count === 0) throw new Error("the CUDA driver reports no GPU");
    if (deviceIndex >= count) throw new Error(`GPU ${deviceIndex} requested but only ${count} visible`);
    return new CudaBackend(driver, deviceIndex, openCublas(), openCublasLt);
  }

  /** The backend over another driver, cuBLAS and cuBLASLt: the test suite's GPU simulator (test/gpu-sim). */
  static withDriver(driver: DeviceDriver, cublas: CublasLibrary, cublasLt: () => CublasLtLibrary, deviceIndex = 0): CudaBackend {
    return new CudaBackend(driver, deviceIndex, cublas, cublasLt);
  }

  /** cuBLASLt on this backend's stream and workspace (opened once). */
  cublasLt(): CublasLt {
    this.lt ??= new CublasLt(this.stream, this.workspace, WORKSPACE_BYTES, this.openLt());
    return this.lt;
  }

  /** cuBLAS (cublasGemmEx) on this backend's stream and workspace. */
  get cublas(): Cublas {
    return this.blas;
  }

  /** Turns the GEMV kernels for ≤ 8-row linear layers on or off. Not after graph capture (as useGemm). */
  useSmallBatchGemv(on: boolean): void {
    if (on === this.info.smallBatchGemv) return;
    if (this.graphs.size > 0) throw new Error("useSmallBatchGemv: decode graphs are already captured");
    this.info.smallBatchGemv = on;
  }

  /** Chooses the GEMM library. Not after graph capture: the graphs hold the other library's kernels. */
  useGemm(gemm: GemmLibrary): void {
    if (gemm === this.info.gemm) return;
    if (this.graphs.size > 0) throw new Error("useGemm: decode graphs are already captured");
    if (gemm === "cublaslt") this.cublasLt();
    this.info.gemm = gemm;
  }

  /** Makes this backend's GPU current for the calling thread again (NCCL's set-up switches devices). */
  makeCurrent(): void {
    this.driver.setCurrent(this.context);
  }

  synchronize(): void {
    if (this.waitCheck) this.pollStream(this.waitCheck);
    else this.driver.streamSynchronize(this.stream);
    this.stagingPending[0] = this.stagingPending[1] = false;
    this.profiler?.collect();
  }

  /**
   * Makes synchronize() poll the stream and call `check(ms waited so far)` between polls, instead of
   * blocking in the driver: a tensor-parallel rank must notice a failed (or hung) peer while its
   * collectives wait for that peer (`check` throws). null restores the blocking wait.
   */
  setWaitCheck(check: ((waitedMs: number) => void) | null): void {
    this.waitCheck = check;
  }

  private pollStream(check: (waitedMs: number) => void): void {
    // Spin like a default cuStreamSynchronize for the first few thousand polls (a step's tail is short),
    // then sleep 50 µs between polls.
    const t0 = performance.now();
    for (let polls = 0; !this.driver.streamQuery(this.stream); polls++) {
      check(performance.now() - t0);
      if (polls > 4096) Atomics.wait(POLL_SLEEP, 0, 0, 0.05);
    }
  }

  /** Times every kernel launch, GEMM and graph replay from now on (bench --profile), or stops; see kernelTimes(). */
  enableProfiling(on = true): void {
    if (!on) {
      this.profiler?.collect();
      this.profiler = this.k.profiler = null;
      return;
    }
    this.profiler ??= new KernelProfiler(this.driver);
    this.k.profiler = this.profiler;
  }

  /** GPU milliseconds and calls per kernel (GEMMs as "gemm OUTxIN"), largest first, since the last reset. */
  kernelTimes(reset = false): KernelTime[] {
    if (!this.profiler) throw new Error("kernel profiling is off (enableProfiling)");
    this.synchronize();
    const r = this.profiler.report();
    if (reset) this.profiler.reset();
    return r;
  }

  private alloc(shape: readonly number[], dtype: CudaDType): CudaTensor {
    return new CudaTensor(this.deviceAlloc(numel(shape) * BYTES[dtype]), shape, dtype);
  }

  /** Device memory owned by this backend (freed by close()). */
  deviceAlloc(bytes: number): bigint {
    const p = this.driver.alloc(bytes);
    this.deviceAllocations.add(p);
    return p;
  }

  private deviceFree(p: bigint): void {
    this.deviceAllocations.delete(p);
    this.driver.free(p);
  }

  private pinnedBuffer(bytes: number): PinnedBuffer {
    const b = new PinnedBuffer(this.driver, bytes);
    this.pinnedAllocations.add(b.addr);
    return b;
  }

  /** A replaced page-locked buffer (the stream is idle: synchronized by the caller). */
  private freePinned(b: PinnedBuffer | null | undefined): void {
    if (!b || !this.pinnedAllocations.delete(b.addr)) return;
    this.driver.freeHost(b.addr);
  }

  /**
   * Frees what this backend holds on the GPU — weights, KV cache, buffers, graphs, kernel modules,
   * cuBLAS(Lt) handles —
   * and its page-locked host memory, so that another engine in the same process finds the memory free.
   * The backend is unusable afterwards. `drainMs`: how long to wait for queued work first.
   */
  close(drainMs = CLOSE_DRAIN_MS): void {
    if (this.closed) return;
    this.closed = true;
    this.setWaitCheck(null);
    // Best effort, step by step: after a kernel fault every call reports the context's sticky error, and a
    // close() that threw would hide the error that made the caller close (the process frees the rest).
    const attempt = (f: () => void) => {
      try { f(); } catch { /* keep freeing */ }
    };
    // Work still running may use what we free (and cuMemFree would wait for it): give it a while. A stream
    // that does not drain (a hung kernel) keeps its memory: freeing it would hang the shutdown.
    let idle = false;
    attempt(() => {
      const deadline = performance.now() + drainMs;
      while (!(idle = this.driver.streamQuery(this.stream)) && performance.now() < deadline) Atomics.wait(POLL_SLEEP, 0, 0, 1);
    });
    if (!idle) {
      try { this.driver.streamQuery(this.stream); } catch { idle = true; } // a faulted context: nothing runs any more
    }
    if (!idle) return;
    attempt(() => this.profiler?.collect());
    for (const exec of this.graphs.values()) attempt(() => this.driver.destroyGraphExec(exec));
    this.graphs.clear();
    attempt(() => this.lt?.destroy());
    this.lt = null;
    attempt(() => this.blas.destroy());
    attempt(() => this.k.close());
    for (const p of this.deviceAllocations) attempt(() => this.driver.free(p));
    this.deviceAllocations.clear();
    for (const h of this.pinnedAllocations) attempt(() => this.driver.freeHost(h));
    this.pinnedAllocations.clear();
    this.staging = null;
    this.sampler.reset();
  }

  loadWeight(parts: LinearWeight[], shape: number[], use: "linear" | "experts" = "linear", quantize: "fp8" | null = null): CudaTensor {
    if (quantize === "fp8" && fp8Quantizable(parts, shape)) return this.quantizeFp8(parts, shape as [number, number], use === "linear");
    // Packed parts stay packed when they stack into one weight (same bits and groups) of whole words per row; experts
    // when moe_gemm_packed_bf16 reads them too (4 or 8 bits, groups by position of an even size).
    const packed = parts.every(isPacked) ? concatPacked(parts as PackedMatrix[]) : null;
    const fits = packed !== null && packed.shape[1] % valuesPerWord(packed) === 0
      && (use === "linear" || ((packed.bits === 4 || packed.bits === 8) && packed.groupOf === null && packed.groupSize % 2 === 0));
    if (fits) {
      if (packed.shape[0] !== shape[0] || packed.shape[1] !== shape[1] || shape.length !== 2) throw new Error(`packed weight [${shape}] got [${packed.shape}] from ${packed.name}`);
      return this.uploadPacked(packed, use === "linear");
    }
    const t = this.alloc(shape, "bf16");
    let off = 0n;
    for (const part of parts.map(plainWeight)) {
      const bytes = part.dtype === "BF16" ? part.bytes : fromFloat32(toFloat32(part.bytes, part.dtype), "BF16");
      this.driver.copyToDevice(t.ptr + off, bytes.byteOffset % 2 === 0 ? bytes : bytes.slice());
      off += BigInt(bytes.byteLength);
    }
    if (off !== BigInt(numel(shape) * 2)) throw new Error(`packed weight [${shape}] got ${off} of ${numel(shape) * 2} bytes from ${parts.map((p) => p.name).join(", ")}`);
    return t;
  }

  /** `linear`: linear() may dequantize it (into the scratch, sized here); experts never are. */
  private uploadPacked(m: PackedMatrix, linear: boolean): CudaTensor {
    let bytes = 0;
    const upload = (a: Uint32Array | Float32Array | Int32Array) => {
      const p = this.deviceAlloc(a.byteLength);
      bytes += a.byteLength;
      this.driver.copyToDevice(p, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      return p;
    };
    const packed: PackedOnDevice = {
      bits: m.bits, code: m.code, words: upload(m.words), scales: upload(m.scales), zeros: m.zeros.some((z) => z !== 0) ? upload(m.zeros) : null, groupOf: m.groupOf ? upload(m.groupOf) : null,
      numGroups: m.numGroups, groupSize: m.groupOf ? 1 : m.groupSize,
    };
    return this.packedWeight(packed, m.shape, bytes, linear);
  }

  /**
   * Online FP8 (loadWeight's quantize "fp8"): the float parts go up a chunk of rows at a time through a staging buffer,
   * and quantize_fp8_rows_* writes their E4M3 bytes and row scales straight into the packed weight — the host only
   * copies (quantizing a large model on one CPU thread took ~13 ns a weight: over a minute for 8B parameters).
   */
  private quantizeFp8(parts: TensorView[], shape: [number, number], linear: boolean): CudaTensor {
    const [rows, cols] = shape;
    const got = parts.reduce((n, p) => n + p.shape[0]!, 0);
    if (got !== rows) throw new Error(`packed weight [${shape}] got ${got} rows from ${parts.map((p) => p.name).join(", ")}`);
    const words = this.deviceAlloc(rows * cols), scales = this.deviceAlloc(rows * 4);
    const widest = Math.max(...parts.map((p) => DTYPE_BYTES[p.dtype]));
    const chunkRows = Math.max(1, Math.min(rows, Math.floor(this.fp8StagingBytes / (cols * widest))));
    const staging = this.deviceAlloc(chunkRows * cols * widest);
    try {
      let row = 0;
      for (const p of parts) {
        const e = DTYPE_BYTES[p.dtype], kernel: KernelName = p.dtype === "BF16" ? "quantize_fp8_rows_bf16" : p.dtype === "F16" ? "quantize_fp8_rows_f16" : "quantize_fp8_rows_f32";
        for (let r = 0; r < p.shape[0]!; r += chunkRows) {
          const n = Math.min(chunkRows, p.shape[0]! - r), chunk = p.bytes.subarray(r * cols * e, (r + n) * cols * e);
          this.driver.copyToDevice(staging, chunk.byteOffset % 4 === 0 ? chunk : chunk.slice());
          this.k.launch(kernel, [n], 256, [{ p: staging }, I(cols), { p: words + BigInt((row + r) * cols) }, { p: scales + BigInt((row + r) * 4) }]);
          this.synchronize(); // before the next chunk overwrites the staging buffer
        }
        row += p.shape[0]!;
      }
    } finally {
      this.deviceFree(staging);
    }
    const packed: PackedOnDevice = { bits: 8, code: "e4m3", words, scales, zeros: null, groupOf: null, numGroups: 1, groupSize: cols };
    return this.packedWeight(packed, shape, rows * cols + rows * 4, linear);
  }

  /** A packed weight of `bytes` on the device, counted in packedWeights; `linear` ones size the dequantization scratch. */
  private packedWeight(packed: PackedOnDevice, shape: readonly number[], bytes: number, linear: boolean): CudaTensor {
    const elems = shape[0]! * shape[1]!;
    if (linear && (!this.dequantScratch || this.dequantScratch.elems < elems)) {
      if (this.graphs.size > 0) throw new Error("loadWeight: decode graphs are already captured (a larger packed weight needs more dequantization scratch)");
      if (this.dequantScratch) this.deviceFree(this.dequantScratch.ptr);
      this.dequantScratch = { ptr: this.deviceAlloc(elems * 2), elems };
    }
    this.packedLoaded.count++;
    this.packedLoaded.bytes += bytes;
    this.packedLoaded.bf16Bytes += elems * 2;
    return new CudaTensor(packed.words, shape, "bf16", packed);
  }

  /** Packed weights loaded: how many, their device bytes, the bytes they would take as bf16, and the dequantization scratch's. */
  get packedWeights(): { count: number; bytes: number; bf16Bytes: number; scratchBytes: number } {
    return { ...this.packedLoaded, scratchBytes: (this.dequantScratch?.elems ?? 0) * 2 };
  }

  /** A packed weight as bf16 [out, in] in the dequantization scratch (valid until the next dequantization). */
  private dequantize(w: CudaTensor): CudaTensor {
    const q = w.packed!, [outF, inF] = w.shape as [number, number];
    if (!this.dequantScratch || this.dequantScratch.elems < outF * inF) throw new Error(`dequantize: packed experts [${w.shape}] are read by moeExperts only`);
    const scratch = new CudaTensor(this.dequantScratch.ptr, w.shape, "bf16");
    this.k.launch("dequant_packed_bf16", [outF, Math.ceil(inF / valuesPerWord(q) / 256)], 256,
      [...packedArgs(q), { p: q.groupOf }, P(scratch), I(inF), I(q.numGroups), I(q.groupSize), I(q.bits), isFp8(q)]);
    return scratch;
  }

  fromHost(values: Float32Array, shape: number[]): CudaTensor {
    const t = this.alloc(shape, "f32");
    this.driver.copyToDevice(t.ptr, values);
    return t;
  }

  empty(shape: number[], dtype: "act" | "f32" | "i32" = "act"): CudaTensor {
    return this.alloc(shape, dtype === "act" ? "bf16" : dtype);
  }

  rows(t: CudaTensor, rows: number): CudaTensor {
    return new CudaTensor(t.ptr, [rows, ...t.shape.slice(1)], t.dtype);
  }

  rowRange(t: CudaTensor, start: number, rows: number): CudaTensor {
    const width = numel(t.shape.slice(1));
    if (start + rows > t.shape[0]!) throw new RangeError(`rowRange: rows ${start}…${start + rows} of a tensor of shape [${t.shape}]`);
    return new CudaTensor(t.ptr + BigInt(start * width * BYTES[t.dtype]), [rows, ...t.shape.slice(1)], t.dtype);
  }

  /**
   * Zero-filled: a block nobody wrote (the null block that stands for blocks a sliding window gave back, the
   * padding rows' block) is read by attention only under a mask, where a zero weight must meet a finite value.
   */
  allocKvCache(spec: KvCacheSpec): { k: CudaTensor; v: CudaTensor } {
    const shape = [spec.numBlocks, spec.blockSize, spec.numKvHeads, spec.headDim];
    const kv = { k: this.alloc(shape, "bf16"), v: this.alloc(shape, "bf16") };
    for (const t of [kv.k, kv.v]) this.driver.memsetAsync(t.ptr, 0, numel(shape) * 2, this.stream);
    return kv;
  }

  /**
   * Reserves room for the largest step's inputs, once: the device buffer then never moves, which CUDA graphs
   * need (they bake pointers in). A step's arrays are laid out compactly, so their offsets depend only on
   * the array lengths: every replay of a decode bucket finds its inputs where the captured graph looks.
   */
  reserveStep(maxTokens: number, maxSeqs: number, maxBlocksPerSeq: number, maxLogitsRows = maxSeqs, numKvGroups = 1, blockSize = 0): void {
    const table = maxSeqs * maxBlocksPerSeq;
    // Per group: its slot mapping, its table (narrower steps send theirs whole) and its changes (index, value) to a resident table.
    const groups = Array.from({ length: numKvGroups - 1 }, () => [maxTokens, table]).flat();
    const deltas = blockSize > 0 ? Array.from({ length: numKvGroups }, () => 2 * table) : [];
    const bytes = [maxTokens, maxTokens, maxTokens, maxSeqs + 1, maxSeqs, table, maxLogitsRows, maxTokens, ...groups, 2 * maxSeqs, ...deltas].reduce((a, n) => a + Math.ceil((n * 4) / 16) * 16, 0);
    this.synchronize();
    this.allocStepBuffers(bytes);
    this.stepReserved = true;
    if (blockSize > 0) {
      const tables = Array.from({ length: numKvGroups }, () => {
        const dev = this.deviceAlloc(table * 4);
        this.driver.memsetAsync(dev, 0, table * 4, this.stream);
        return { dev, mirror: new Int32Array(table), deltas: new Int32Array(2 * table) };
      });
      this.resident = { width: maxBlocksPerSeq, blockSize, tables };
    }
  }

  /**
   * The entries of a full-width `table` that the step's sequences read (each row's first ⌈seqLen / blockSize⌉)
   * and that differ from what the resident table holds, as (index, value) pairs; the mirror takes them at once
   * (the device does when the step's scatter_i32 runs, before anything reads the table).
   */
  private tableChanges(g: number, table: Int32Array, seqLens: Int32Array): Int32Array {
    const { width, blockSize, tables } = this.resident!, { mirror, deltas } = tables[g]!;
    let n = 0;
    for (let i = 0; i < seqLens.length; i++) {
      const row = i * width, used = Math.min(width, Math.ceil(seqLens[i]! / blockSize));
      for (let j = row; j < row + used; j++) {
        const v = table[j]!;
        if (mirror[j] !== v) {
          mirror[j] = v;
          deltas[n++] = j;
          deltas[n++] = v;
        }
      }
    }
    return deltas.subarray(0, n);
  }

  /** (Re)allocates the step inputs' device buffer and its two staging buffers; the stream must be idle. */
  private allocStepBuffers(bytes: number): void {
    if (this.stepDevice) this.deviceFree(this.stepDevice);
    this.stepDevice = this.deviceAlloc(bytes);
    this.freePinned(this.staging?.[0]);
    this.freePinned(this.staging?.[1]);
    this.staging = [this.pinnedBuffer(bytes), this.pinnedBuffer(bytes)];
    this.stepCapacity = bytes;
  }

  /**
   * Stages the step's int arrays in page-locked memory and moves them with one async copy on the stream;
   * token ids still pending (async scheduling) are then copied from the last sampling's ids on the GPU.
   */
  uploadStep(s: StepInputs): StepTensors<CudaTensor> {
    const fromSampled = s.tokensFromSampled ?? NO_INTS;
    const groups = s.kvGroups ?? [];
    // Full-width tables (decode graphs' steps) go to the resident tables as changes; narrower ones travel whole.
    const resident = this.resident !== null && s.maxBlocksPerSeq === this.resident.width ? this.resident : null;
    const changes = resident ? [s.blockTables, ...groups.map((g) => g.blockTables)].map((table, g) => this.tableChanges(g, table, s.seqLens)) : [];
    // fromSampled and the table changes last: the other arrays' offsets (which captured graphs read) do not depend on them.
    const parts = [s.tokenIds, s.positions, s.slotMapping, s.queryStart, s.seqLens, resident ? NO_INTS : s.blockTables, s.logitsRows, s.loraSlots ?? NO_INTS,
      ...groups.flatMap((g) => [g.slotMapping, resident ? NO_INTS : g.blockTables]), fromSampled, ...changes];
    const offsets: number[] = [];
    let bytes = 0;
    for (const a of parts) {
      offsets.push(bytes);
      bytes += Math.ceil(a.byteLength / 16) * 16;
    }
    if (bytes > this.stepCapacity) {
      if (this.stepReserved) throw new Error(`step inputs of ${bytes} bytes exceed the ${this.stepCapacity} reserved for the largest step`);
      this.synchronize(); // queued kernels may still read the old buffer
      this.allocStepBuffers(Math.max(bytes, this.stepCapacity * 2, 1 << 16));
    }
    this.stagingEvents ??= [this.driver.createEvent(), this.driver.createEvent()];
    const turn = this.stagingTurn;
    this.stagingTurn ^= 1;
    // This buffer's previous copy (two steps ago) must have read it before we rewrite it: normally long done.
    if (this.stagingPending[turn]) this.driver.eventSynchronize(this.stagingEvents[turn]);
    const staging = this.staging![turn];
    parts.forEach((a, i) => staging.bytes.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), offsets[i]!));
    if (bytes > 0) {
      this.driver.copyToDeviceAsync(this.stepDevice, staging.addr, bytes, this.stream);
      this.driver.record(this.stagingEvents[turn], this.stream);
      this.stagingPending[turn] = true;
    }
    const t = (i: number, shape: number[]) => new CudaTensor(this.stepDevice + BigInt(offsets[i]!), shape, "i32");
    const numSeqs = s.seqLens.length, pending = fromSampled.length / 2;
    if (pending > 0) {
      const sampled = this.sampler.lastSampledIds;
      if (sampled === 0n) throw new Error("uploadStep: tokens from sampled ids, but nothing was sampled yet");
      this.k.launch("take_sampled_tokens_i32", [Math.ceil(pending / 256)], 256, [P(t(0, [])), P(t(parts.length - 1 - changes.length, [])), { p: sampled }, I(pending)]);
    }
    changes.forEach((c, g) => {
      const count = c.length / 2;
      if (count > 0) this.k.launch("scatter_i32", [Math.ceil(count / 256)], 256, [{ p: resident!.tables[g]!.dev }, P(t(parts.length - changes.length + g, [])), I(count)]);
    });
    const table = (g: number, part: number) => (resident ? new CudaTensor(resident.tables[g]!.dev, [numSeqs, s.maxBlocksPerSeq], "i32") : t(part, [numSeqs, s.maxBlocksPerSeq]));
    const { maxQueryLen, maxSeqLen } = stepExtents(s);
    return {
      numTokens: s.tokenIds.length, numSeqs,
      tokenIds: t(0, [s.tokenIds.length]), positions: t(1, [s.positions.length]), slotMapping: t(2, [s.slotMapping.length]),
      queryStart: t(3, [numSeqs + 1]), seqLens: t(4, [numSeqs]), blockTables: table(0, 5), maxBlocksPerSeq: s.maxBlocksPerSeq,
      logitsRows: t(6, [s.logitsRows.length]), numLogitsRows: s.logitsRows.length, maxQueryLen, maxSeqLen,
      loraSlots: s.loraSlots ? t(7, [s.loraSlots.length]) : null,
      kvGroups: groups.map((g, i) => ({ slotMapping: t(8 + 2 * i, [g.slotMapping.length]), blockTables: table(i + 1, 9 + 2 * i) })),
    };
  }

  /** Captures what `run` launches on the stream into a graph kept under `key` (run it once eagerly first). */
  captureGraph(key: number, run: () => void): void {
    this.synchronize();
    this.driver.beginCapture(this.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    this.k.profiler = null; // events are not captured; a replay is timed as a whole
    try {
      run();
    } catch (e) {
      try { this.driver.endCapture(this.stream); } catch { /* the capture is invalid anyway */ }
      throw e;
    } finally {
      this.k.profiler = this.profiler;
    }
    const graph = this.driver.endCapture(this.stream);
    const old = this.graphs.get(key);
    this.graphs.set(key, this.driver.instantiate(graph));
    this.driver.destroyGraph(graph); // the executable graph is independent of it
    if (old !== undefined) this.driver.destroyGraphExec(old);
  }

  /** Replays the graph captured under `key` on the stream. */
  launchGraph(key: number): void {
    const exec = this.graphs.get(key);
    if (exec === undefined) throw new Error(`no CUDA graph captured for ${key}`);
    const start = this.profiler?.begin(this.stream);
    this.driver.graphLaunch(exec, this.stream);
    if (start !== undefined) this.profiler!.end(`decode graph (${key} seqs)`, start, this.stream);
  }

  embedding(tokenIds: CudaTensor, table: CudaTensor, out: CudaTensor, vocabStart = 0, scale = 1): void {
    this.k.launch("embedding_bf16", [tokenIds.shape[0]!], 256, [P(tokenIds), P(table), P(out), I(table.shape[1]!), I(vocabStart), I(table.shape[0]!), F(scale)]);
  }

  rmsNorm(x: CudaTensor, weight: CudaTensor, eps: number, out: CudaTensor, centered = false): void {
    this.k.launch("rmsnorm_bf16", [x.numRows], 256, [P(x), P(weight), P(out), I(x.width), F(eps), I(centered ? 1 : 0)]);
  }

  addRmsNorm(x: CudaTensor, residual: CudaTensor, weight: CudaTensor, eps: number, out: CudaTensor, centered = false): void {
    this.k.launch("add_rmsnorm_bf16", [x.numRows], 256, [P(x), P(residual), P(weight), P(out), I(x.width), F(eps), I(centered ? 1 : 0)]);
  }

  add(x: CudaTensor, out: CudaTensor): void {
    const n = numel(out.shape);
    if (n > 0) this.k.launch("add_bf16", [Math.ceil(n / 256)], 256, [P(x), P(out), I(n)]);
  }

  rmsNormAdd(x: CudaTensor, weight: CudaTensor, eps: number, residual: CudaTensor): void {
    this.k.launch("rmsnorm_add_bf16", [x.numRows], 256, [P(x), P(weight), P(residual), I(x.width), F(eps)]);
  }

  qkNormAcrossHeads(qkv: CudaTensor, qNorm: CudaTensor, kNorm: CudaTensor, eps: number, s: AttentionShape, sums: CudaTensor | null = null, ranks = 1): void {
    if (qkv.numRows === 0) return;
    this.k.launch("qk_norm_across_heads_bf16", [qkv.numRows, 2], 256, [P(qkv), P(qNorm), P(kNorm), I(s.numHeads), I(s.numKvHeads), I(s.headDim), F(eps), P(sums), I(ranks)]);
  }

  qkSquareSums(qkv: CudaTensor, s: AttentionShape, sums: CudaTensor): void {
    if (qkv.numRows === 0) return;
    this.k.launch("qk_square_sums_f32", [qkv.numRows, 2], 256, [P(qkv), P(sums), I(s.numHeads), I(s.numKvHeads), I(s.headDim)]);
  }

  linear(x: CudaTensor, weight: CudaTensor, bias: CudaTensor | null, out: CudaTensor): void {
    const [outF, inF] = weight.shape as [number, number];
    if (x.width !== inF) throw new Error(`linear: input width ${x.width} != weight in-features ${inF}`);
    const n = x.numRows;
    if (n === 0) return;
    const q = weight.packed;
    if (q) {
      // Packed: the packed GEMV (chunks of 4 words, each in one group) for a few rows; else dequantized, then cuBLAS.
      const chunk = 4 * valuesPerWord(q);
      if (n <= PACKED_GEMV_MAX_ROWS && (q.bits === 4 || q.bits === 8) && out.dtype === "bf16" && inF % chunk === 0 && (q.groupOf !== null || q.numGroups === 1 || q.groupSize % chunk === 0)) {
        this.k.launch(q.code === "e4m3" ? "gemv_fp8_bf16" : q.bits === 4 ? "gemv_int4_bf16" : "gemv_int8_bf16", [Math.ceil(outF / 8)], 256, [P(x), ...packedArgs(q), { p: q.groupOf }, P(out), I(n), I(inF), I(outF), I(q.numGroups), I(q.groupSize)]);
      } else this.gemm(x, this.dequantize(weight), out, n, inF, outF);
    } else if (this.info.smallBatchGemv && n <= GEMV_MAX_ROWS && out.dtype === "bf16" && inF % 8 === 0) {
      this.k.launch("gemv_bf16", [Math.ceil(outF / 8)], 256, [P(x), P(weight), P(out), I(n), I(inF), I(outF)]);
    } else this.gemm(x, weight, out, n, inF, outF);
    if (bias) this.k.launch("add_bias_bf16", [Math.ceil(outF / 256), n], 256, [P(out), P(bias), I(outF)]);
  }

  /** The MLP's down projection of silu(gate)·up: one GEMV kernel for ≤ 2 rows when the GEMV kernels are on. */
  siluMulLinear(gateUp: CudaTensor, weight: CudaTensor, act: CudaTensor, out: CudaTensor): void {
    const [outF, inF] = weight.shape as [number, number];
    const n = gateUp.numRows;
    if (gateUp.width !== 2 * inF) throw new Error(`siluMulLinear: gate/up width ${gateUp.width} != 2 × weight in-features ${inF}`);
    if (this.info.smallBatchGemv && !weight.packed && n > 0 && n <= GEMV_SILU_MAX_ROWS && inF % 8 === 0) {
      this.k.launch("gemv_silu_mul_bf16", [Math.ceil(outF / 8)], 256, [P(gateUp), P(weight), P(out), I(n), I(inF), I(outF)]);
      return;
    }
    this.siluMul(gateUp, act);
    this.linear(act, weight, null, out);
  }

  loraAdd(x: CudaTensor, a: CudaTensor, bT: CudaTensor, slots: CudaTensor, scales: CudaTensor, numSlots: number, u: CudaTensor, out: CudaTensor): void {
    const n = x.numRows, width = a.shape[0]!, outF = bT.shape[1]!;
    if (n === 0) return;
    if (u.width !== width || bT.shape[0] !== width) throw new Error(`loraAdd: scratch width ${u.width} and Bᵀ's rows ${bT.shape[0]} must be A's out-features ${width}`);
    this.linear(x, a, null, u);
    this.k.launch("lora_mask_bf16", [Math.ceil(width / 256), n], 256, [P(u), P(slots), P(scales), I(width), I(width / numSlots)]);
    // out += u · bT: cuBLAS with beta = 1 (the GEMV kernels and cuBLASLt path overwrite), bT not transposed.
    const start = this.k.profiler?.begin(this.stream);
    this.blas.linear(u.ptr, bT.ptr, out.ptr, n, width, outF, out.dtype === "f32" ? CUDA_R_32F : CUDA_R_16BF, true, true);
    if (start !== undefined) this.k.profiler!.end(`gemm lora ${outF}x${width}`, start, this.stream);
  }

  writeRows(t: CudaTensor, firstRow: number, values: Float32Array): void {
    if (t.dtype === "i32") throw new Error("writeRows: integer tensors are step inputs, not weights");
    if (t.packed) throw new Error("writeRows: a packed weight is written only as it loads");
    const offset = firstRow * t.width;
    if (offset + values.length > numel(t.shape)) throw new Error(`writeRows: rows ${firstRow}… of ${values.length / t.width} overrun a tensor of shape [${t.shape}]`);
    // Queued (or captured-and-replayed) work may still read the old rows.
    this.synchronize();
    const bytes = t.dtype === "f32" ? values : fromFloat32(values, "BF16");
    this.driver.copyToDevice(t.ptr + BigInt(offset * BYTES[t.dtype]), bytes);
  }

  private gemm(x: CudaTensor, weight: CudaTensor, out: CudaTensor, n: number, inF: number, outF: number): void {
    const start = this.k.profiler?.begin(this.stream);
    const yType = out.dtype === "f32" ? CUDA_R_32F : CUDA_R_16BF;
    if (this.info.gemm === "cublaslt") this.lt!.linear(x.ptr, weight.ptr, out.ptr, n, inF, outF, yType);
    else this.blas.linear(x.ptr, weight.ptr, out.ptr, n, inF, outF, yType);
    if (start !== undefined) this.k.profiler!.end(`gemm ${outF}x${inF}`, start, this.stream);
  }

  qkNormRopeStoreKv(qkv: CudaTensor, positions: CudaTensor, slotMapping: CudaTensor, cos: CudaTensor, sin: CudaTensor, qNorm: CudaTensor | null, kNorm: CudaTensor | null,
    eps: number, s: AttentionShape, kCache: CudaTensor, vCache: CudaTensor, centered = false): void {
    const threads = Math.ceil(s.headDim / 2 / 32) * 32;
    // A weight per head (heads · D values) steps by D from head to head; a shared one (D) by 0.
    const stride = (w: CudaTensor | null) => (w && numel(w.shape) > s.headDim ? s.headDim : 0);
    this.k.launch("qk_norm_rope_store_bf16", [qkv.numRows, s.numHeads + 2 * s.numKvHeads], threads,
      [P(qkv), P(positions), P(slotMapping), P(cos), P(sin), P(qNorm), P(kNorm), P(kCache), P(vCache), I(s.numHeads), I(s.numKvHeads), I(s.headDim), I((s.rotaryDim ?? s.headDim) / 2), F(eps),
        I(stride(qNorm)), I(stride(kNorm)), I(centered ? 1 : 0)]);
  }

  pagedAttention(qkv: CudaTensor, kCache: CudaTensor, vCache: CudaTensor, step: StepTensors<CudaTensor>, blockSize: number, s: AttentionShape, out: CudaTensor, sinks: CudaTensor | null = null): void {
    if (sinks && (sinks.dtype !== "f32" || numel(sinks.shape) !== s.numHeads)) throw new Error(`pagedAttention: attention sinks must be f32 [${s.numHeads}], got ${sinks.dtype} [${sinks.shape}]`);
    if (s.numHeads / s.numKvHeads > 8 || s.headDim > 256) throw new Error(`paged attention supports ≤ 8 query heads per KV head and head_dim ≤ 256 (got ${s.numHeads / s.numKvHeads}, ${s.headDim})`);
    if (step.maxQueryLen === 1 && step.numTokens === step.numSeqs) {
      // Decode: split-KV over the widest context the block tables can address (a sliding window's, if less).
      // The split count depends only on the batch size and the table width, never on the contexts, so a
      // captured graph stays valid.
      const G = s.numHeads / s.numKvHeads, maxKeys = Math.min(step.maxBlocksPerSeq * blockSize, s.window || Infinity);
      const groups = this.decodeKernel === "groups" && DECODE_SHAPES.some(([d, g]) => d === s.headDim && g === G);
      let splits: number, keysPerSplit: number;
      if (groups) {
        // Enough blocks for two per multiprocessor, splits of at least 256 keys; a full batch needs one split.
        splits = Math.max(1, Math.min(Math.ceil((2 * this.multiprocessors) / (step.numTokens * s.numKvHeads)), Math.ceil(maxKeys / 256)));
        keysPerSplit = Math.ceil(maxKeys / splits / 8) * 8;
      } else {
        splits = Math.max(1, Math.ceil(maxKeys / SPLIT_KEYS));
        keysPerSplit = SPLIT_KEYS;
      }
      const partial = { p: splits > 1 || !groups ? this.partialBuffer(step.numTokens * s.numKvHeads * splits * G * (s.headDim + 2)) : null };
      if (groups) {
        this.k.launch(`paged_decode_d${s.headDim}_g${G}_bf16` as KernelName, [step.numTokens, s.numKvHeads, splits], 128, [
          P(qkv), P(kCache), P(vCache), partial, P(out), P(step.seqLens), P(step.blockTables), I(step.maxBlocksPerSeq), I(blockSize), I(keysPerSplit),
          I(s.numHeads), I(s.numKvHeads), F(s.scale), I(s.window ?? 0), F(s.softcap ?? 0), P(sinks)]);
        if (splits === 1) return;
      } else {
        this.k.launch("paged_attention_split_bf16", [step.numTokens, s.numKvHeads, splits], 128, [
          P(qkv), P(kCache), P(vCache), partial, P(step.seqLens), P(step.blockTables), I(step.maxBlocksPerSeq), I(blockSize),
          I(s.numHeads), I(s.numKvHeads), I(s.headDim), F(s.scale), I(s.window ?? 0), F(s.softcap ?? 0)]);
      }
      this.k.launch("paged_attention_combine_bf16", [step.numTokens, s.numHeads], Math.ceil(s.headDim / 32) * 32, [partial, P(out), I(splits), I(s.numHeads), I(s.numKvHeads), I(s.headDim), P(sinks)]);
      return;
    }
    if (this.prefillKernel === "mma" && (s.headDim === 64 || s.headDim === 128)) {
      const tiles = Math.ceil(step.maxQueryLen / 64);
      this.k.launch(s.headDim === 64 ? "paged_prefill_mma_d64_bf16" : "paged_prefill_mma_d128_bf16", [step.numSeqs * tiles, s.numHeads], 128, [
        P(qkv), P(kCache), P(vCache), P(out), P(step.queryStart), P(step.seqLens), P(step.blockTables),
        I(step.maxBlocksPerSeq), I(blockSize), I(tiles), I(s.numHeads), I(s.numKvHeads), F(s.scale), I(s.window ?? 0), F(s.softcap ?? 0), P(sinks)]);
      return;
    }
    this.k.launch("paged_attention_bf16", [step.numTokens, s.numKvHeads], 128, [
      P(qkv), P(kCache), P(vCache), P(out), P(step.queryStart), P(step.seqLens), P(step.blockTables),
      I(step.numSeqs), I(step.maxBlocksPerSeq), I(blockSize), I(s.numHeads), I(s.numKvHeads), I(s.headDim), F(s.scale), I(s.window ?? 0), F(s.softcap ?? 0), P(sinks)]);
  }

  /**
   * The split-KV partials buffer, grown to `floats` (never during capture: the eager warm-up of a shape
   * allocates first). A smaller batch can need more partials than a larger one (more splits each), so the
   * buffer may grow after graphs were captured with it: an outgrown buffer is then kept, not freed.
   */
  private partialBuffer(floats: number): bigint {
    if (floats > this.partialCapacity) {
      if (this.partial) {
        if (this.graphs.size > 0) this.outgrownPartials.push(this.partial);
        else this.deviceFree(this.partial);
      }
      this.partialCapacity = floats;
      this.partial = this.deviceAlloc(floats * 4);
    }
    return this.partial;
  }

  mlaAssemble(q: CudaTensor, kv: CudaTensor, kpe: CudaTensor, qkv: CudaTensor, s: MlaShape): void {
    const D = s.nope + s.rope;
    if (q.width !== s.numHeads * D || kv.width !== s.numHeads * (s.nope + s.v) || kpe.width !== s.rope || qkv.width !== 3 * s.numHeads * D)
      throw new Error(`mlaAssemble: widths q ${q.width}, kv ${kv.width}, kpe ${kpe.width}, qkv ${qkv.width} do not fit ${s.numHeads} heads of ${s.rope} + ${s.nope} (v ${s.v})`);
    this.k.launch("mla_assemble_bf16", [q.numRows, s.numHeads], Math.min(256, Math.ceil(D / 32) * 32), [P(q), P(kv), P(kpe), P(qkv), I(s.numHeads), I(s.nope), I(s.rope), I(s.v)]);
  }

  siluMul(x: CudaTensor, out: CudaTensor): void {
    const inter = x.width / 2;
    this.k.launch("silu_mul_bf16", [Math.ceil(inter / 256), x.numRows], 256, [P(x), P(out), I(inter)]);
  }

  moeRoute(logits: CudaTensor, topK: number, renormalize: boolean, ids: CudaTensor, weights: CudaTensor, numShared = 0): void {
    if (logits.dtype !== "bf16" || ids.dtype !== "i32" || weights.dtype !== "f32") throw new Error(`moeRoute: logits bf16, ids i32 and weights f32 expected, got ${logits.dtype}, ${ids.dtype}, ${weights.dtype}`);
    if (ids.width !== topK + numShared) throw new Error(`moeRoute: ids of width ${ids.width} for top ${topK} and ${numShared} shared experts`);
    this.k.launch("moe_route_bf16", [logits.numRows], 32, [P(logits), P(ids), P(weights), I(logits.width), I(topK), I(renormalize ? 1 : 0), I(numShared)]);
  }

  moeRouteGrouped(logits: CudaTensor, bias: CudaTensor, topK: number, g: MoeGrouping, renormalize: boolean, numShared: number, ids: CudaTensor, weights: CudaTensor): void {
    if (logits.dtype !== "f32" || bias.dtype !== "f32" || ids.dtype !== "i32" || weights.dtype !== "f32") throw new Error(`moeRouteGrouped: logits and bias f32, ids i32, weights f32 expected, got ${logits.dtype}, ${bias.dtype}, ${ids.dtype}, ${weights.dtype}`);
    if (logits.numRows === 0) return;
    this.k.launch("moe_route_grouped_f32", [logits.numRows], 32, [P(logits), P(bias), P(ids), P(weights), I(logits.width), I(topK), I(g.numGroups), I(g.topKGroups), I(renormalize ? 1 : 0), F(g.scale), I(numShared), I(g.scoring === "softmax" ? 1 : 0), I(g.groupScore === "max" ? 1 : 0)]);
  }

  /**
   * The experts in five launches: group the entries by expert (moe_align), the gate/up GEMM over tiles of
   * one expert (biases added in its epilogue), SiLU·mul (or the clamped SwiGLU), the down GEMM, and the weighted sum per token. No host sync: graph-capturable.
   */
  moeExperts(x: CudaTensor, ids: CudaTensor, weights: CudaTensor, experts: ExpertWeights<CudaTensor>, numExperts: number, s: MoeScratch<CudaTensor>, out: CudaTensor): void {
    const { w13, w2, b13, b2, swiglu } = experts;
    const n = x.numRows, H = x.width, topK = ids.width, entries = n * topK, inter = w2.width;
    if (n === 0) return;
    if (w13.shape[0] !== numExperts * 2 * inter || w13.width !== H || w2.shape[0] !== numExperts * H) throw new Error(`moeExperts: expert weights [${w13.shape}] and [${w2.shape}] do not fit ${numExperts} experts of hidden ${H}`);
    if ((b13 && (b13.dtype !== "bf16" || numel(b13.shape) !== numExperts * 2 * inter)) || (b2 && (b2.dtype !== "bf16" || numel(b2.shape) !== numExperts * H))) throw new Error(`moeExperts: expert biases must be bf16 [${numExperts * 2 * inter}] and [${numExperts * H}]`);
    if (H % 16 !== 0 || inter % 16 !== 0) throw new Error(`moeExperts: the expert GEMM kernel needs hidden (${H}) and the experts' intermediate size per rank (${inter}) to be multiples of 16`);
    if (s.gateUp.numRows < entries || s.act.numRows < entries || s.expertOut.numRows < entries || numel(s.routing.shape) < moeRoutingInts(entries, numExperts)) throw new Error(`moeExperts: scratch smaller than ${entries} entries`);
    const tiles = moeMaxTiles(entries, numExperts);
    this.k.launch("moe_align_i32", [1], 256, [P(ids), P(s.routing), I(entries), I(numExperts), I(tiles)]);
    this.moeGemm([tiles, Math.ceil((2 * inter) / 128)], x, w13, s.gateUp, s.routing, entries, numExperts, H, 2 * inter, topK, b13);
    if (swiglu) this.k.launch("swiglu_clamp_mul_bf16", [Math.ceil(inter / 256), entries], 256, [P(s.gateUp), P(s.act), I(inter), F(swiglu.alpha), F(swiglu.limit)]);
    else this.k.launch("silu_mul_bf16", [Math.ceil(inter / 256), entries], 256, [P(s.gateUp), P(s.act), I(inter)]);
    this.moeGemm([tiles, Math.ceil(H / 128)], s.act, w2, s.expertOut, s.routing, entries, numExperts, inter, H, 1, b2);
    this.k.launch("moe_combine_bf16", [Math.ceil(H / 256), n], 256, [P(s.expertOut), P(weights), P(out), I(topK), I(H)]);
  }

  /** One expert GEMM (moe.cu): bf16 experts, or packed ones (loadWeight's "experts"). */
  private moeGemm(grid: [number, number], x: CudaTensor, w: CudaTensor, out: CudaTensor, routing: CudaTensor, entries: number, numExperts: number, inF: number, outF: number, rowDiv: number, bias: CudaTensor | null): void {
    const q = w.packed;
    if (!q) this.k.launch("moe_gemm_bf16", grid, 128, [P(x), P(w), P(out), P(routing), I(entries), I(numExperts), I(inF), I(outF), I(rowDiv), P(bias)]);
    else {
      this.k.launch("moe_gemm_packed_bf16", grid, 128, [P(x), ...packedArgs(q), P(out), P(routing), I(entries), I(numExperts), I(inF), I(outF), I(rowDiv), P(bias),
        I(q.numGroups), I(q.groupSize), I(q.bits), isFp8(q)]);
    }
  }

  sigmoidGatedAdd(x: CudaTensor, gate: CudaTensor, out: CudaTensor): void {
    this.k.launch("sigmoid_gated_add_bf16", [Math.ceil(x.width / 256), x.numRows], 256, [P(x), P(gate), P(out), I(x.width)]);
  }

  softcap(x: CudaTensor, cap: number): void {
    if (x.dtype !== "f32") throw new Error(`softcap: f32 logits expected, got ${x.dtype}`);
    const n = numel(x.shape);
    this.k.launch("softcap_f32", [Math.ceil(n / 256)], 256, [P(x), F(cap), I(n)]);
  }

  geluTanhMul(x: CudaTensor, out: CudaTensor): void {
    const inter = x.width / 2;
    this.k.launch("gelu_tanh_mul_bf16", [Math.ceil(inter / 256), x.numRows], 256, [P(x), P(out), I(inter)]);
  }

  gatherRows(x: CudaTensor, rows: CudaTensor, numRows: number, out: CudaTensor): void {
    this.k.launch("gather_rows_bf16", [numRows], 256, [P(x), P(rows), P(out), I(x.width)]);
  }

  /** Device-to-device copy of `bytes` on the stream. */
  copyOnDevice(dst: bigint, src: bigint, bytes: number): void {
    if (bytes > 0) this.driver.copyOnDeviceAsync(dst, src, bytes, this.stream);
  }

  /**
   * Vocab-parallel logits gathered from every rank ([ranks][rows · perRank], each rank's [rows, width] block
   * dense at the start of its slot) → `out` [rows, vocab] in vocabulary order.
   */
  unshardVocab(gathered: bigint, out: CudaTensor, rows: number, perRank: number): void {
    const V = out.width;
    this.k.launch("unshard_vocab_f32", [Math.ceil(V / 256), rows], 256, [{ p: gathered }, P(out), I(rows), I(perRank), I(V)]);
  }

  sample(logits: CudaTensor, b: SamplingBatch): SamplerOutput {
    return this.sampler.sample(logits, b).wait();
  }

  sampleAsync(logits: CudaTensor, b: SamplingBatch): PendingSample {
    return this.sampler.sample(logits, b);
  }

  /**
   * Waits for the work queued before `event`'s record. Tensor-parallel ranks (polling, see setWaitCheck)
   * and profiling (which reads every event pair) wait for the whole stream instead.
   */
  private waitForEvent(event: bigint): void {
    if (this.waitCheck || this.profiler) this.synchronize();
    else this.driver.eventSynchronize(event);
  }

  /** Fills a tensor with 0xFF bytes (bf16/f32 NaN) so a test can tell unwritten outputs. */
  poison(t: CudaTensor): void {
    this.driver.memsetAsync(t.ptr, 0xff, numel(t.shape) * BYTES[t.dtype], this.stream);
    this.synchronize();
  }

  toHost(t: CudaTensor): Float32Array {
    if (t.packed) t = this.dequantize(t);
    this.synchronize();
    const n = numel(t.shape);
    const bytes = new Uint8Array(n * BYTES[t.dtype]);
    this.driver.copyToHost(bytes, t.ptr);
    if (t.dtype === "bf16") return toFloat32(bytes, "BF16");
    if (t.dtype === "i32") return Float32Array.from(new Int32Array(bytes.buffer));
    return new Float32Array(bytes.buffer);
  }
}

/**
 * The CUDA driver API through bun:ffi. Every call is checked: a failure throws CudaError naming the call
 * and the driver's error name and text. Handles and device pointers are bigints.
 */
import { CString, dlopen, ptr as addressOf, toArrayBuffer, type Pointer } from "bun:ffi";
import { openLibrary } from "./libraries.ts";

const i32 = "i32", u32 = "u32", u64 = "u64", p = "ptr", f = "function";
void f;

/** Every libcuda entry point vbun binds, with its bun:ffi argument kinds (test/ffi-signatures.test.ts checks them against cuda.h). */
export const DRIVER_SYMBOLS = {
  cuInit: { args: [u32], returns: i32 },
  cuDriverGetVersion: { args: [p], returns: i32 },
  cuDeviceGetCount: { args: [p], returns: i32 },
  cuDeviceGet: { args: [p, i32], returns: i32 },
  cuDeviceGetName: { args: [p, i32, i32], returns: i32 },
  cuDeviceGetAttribute: { args: [p, i32, i32], returns: i32 },
  cuDevicePrimaryCtxRetain: { args: [p, i32], returns: i32 },
  cuCtxSetCurrent: { args: [u64], returns: i32 },
  cuCtxSynchronize: { args: [], returns: i32 },
  cuMemGetInfo_v2: { args: [p, p], returns: i32 },
  cuMemAlloc_v2: { args: [p, u64], returns: i32 },
  cuMemFree_v2: { args: [u64], returns: i32 },
  cuMemAllocHost_v2: { args: [p, u64], returns: i32 },
  cuMemFreeHost: { args: [u64], returns: i32 },
  cuMemcpyHtoD_v2: { args: [u64, p, u64], returns: i32 },
  cuMemcpyDtoH_v2: { args: [p, u64, u64], returns: i32 },
  cuMemcpyHtoDAsync_v2: { args: [u64, u64, u64, u64], returns: i32 },
  cuMemcpyDtoHAsync_v2: { args: [u64, u64, u64, u64], returns: i32 },
  cuMemcpyDtoDAsync_v2: { args: [u64, u64, u64, u64], returns: i32 },
  cuMemsetD8Async: { args: [u64, u32, u64, u64], returns: i32 },
  cuModuleLoadData: { args: [p, p], returns: i32 },
  cuLinkCreate_v2: { args: [u32, p, p, p], returns: i32 },
  cuLinkAddData_v2: { args: [u64, i32, p, u64, p, u32, p, p], returns: i32 },
  cuLinkComplete: { args: [u64, p, p], returns: i32 },
  cuLinkDestroy: { args: [u64], returns: i32 },
  cuModuleGetFunction: { args: [p, u64, p], returns: i32 },
  cuModuleUnload: { args: [u64], returns: i32 },
  cuFuncSetAttribute: { args: [u64, i32, i32], returns: i32 },
  cuLaunchKernel: { args: [u64, u32, u32, u32, u32, u32, u32, u32, u64, p, p], returns: i32 },
  cuStreamCreate: { args: [p, u32], returns: i32 },
  cuStreamSynchronize: { args: [u64], returns: i32 },
  cuStreamQuery: { args: [u64], returns: i32 },
  cuStreamBeginCapture_v2: { args: [u64, i32], returns: i32 },
  cuStreamEndCapture: { args: [u64, p], returns: i32 },
  cuGraphInstantiateWithFlags: { args: [p, u64, u64], returns: i32 },
  cuGraphLaunch: { args: [u64, u64], returns: i32 },
  cuGraphDestroy: { args: [u64], returns: i32 },
  cuGraphExecDestroy: { args: [u64], returns: i32 },
  cuEventCreate: { args: [p, u32], returns: i32 },
  cuEventRecord: { args: [u64, u64], returns: i32 },
  cuEventSynchronize: { args: [u64], returns: i32 },
  cuGetErrorName: { args: [i32, p], returns: i32 },
  cuGetErrorString: { args: [i32, p], returns: i32 },
} as const;
const SYMBOLS = DRIVER_SYMBOLS;
/** cuEventElapsedTime_v2 / cuEventElapsedTime, bound apart (either may be missing). */
export const EVENT_ELAPSED_SIGNATURE = { args: [p, u64, u64], returns: i32 } as const;

export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
export const CU_STREAM_NON_BLOCKING = 1;
/** Capture that forbids unsafe calls (synchronous copies, syncs) from this thread only: the TP ranks' threads capture at once. */
export const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
export const CUDA_ERROR_NOT_READY = 600;
export const CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6, CU_JIT_INPUT_PTX = 1;

export class CudaError extends Error {
  constructor(readonly call: string, readonly code: number, readonly errorName: string, detail: string) {
    super(`${call} failed: ${errorName} (${code}): ${detail}`);
    this.name = "CudaError";
  }
}

type Lib = ReturnType<typeof openDriverLibrary>["library"];
function openDriverLibrary() {
  return openLibrary("cuda", SYMBOLS as never) as unknown as { path: string; library: { symbols: Record<keyof typeof SYMBOLS, (...a: unknown[]) => number> } };
}

/** A loaded libcuda with checked wrappers. */
export class Driver {
  readonly path: string;
  private readonly fn: Lib["symbols"];
  private readonly out64 = new BigUint64Array(2);

  /** cuEventElapsedTime_v2 (CUDA ≥ 12.8), else the original: bound apart, since a missing symbol fails dlopen. */
  private readonly eventElapsed: (ms: Float32Array, start: bigint, end: bigint) => number;
  private readonly eventElapsedSymbol: string;

  private constructor(path: string, lib: Lib) {
    this.path = path;
    this.fn = lib.symbols;
    let bound: { name: string; fn: (ms: Float32Array, start: bigint, end: bigint) => number } | null = null;
    for (const name of ["cuEventElapsedTime_v2", "cuEventElapsedTime"]) {
      try {
        const l = dlopen(path, { [name]: EVENT_ELAPSED_SIGNATURE });
        bound = { name, fn: l.symbols[name] as unknown as (ms: Float32Array, start: bigint, end: bigint) => number };
        break;
      } catch {
        // not exported by this driver: try the next name
      }
    }
    if (!bound) throw new Error(`${path} exports neither cuEventElapsedTime_v2 nor cuEventElapsedTime`);
    this.eventElapsed = bound.fn;
    this.eventElapsedSymbol = bound.name;
  }

  /** Loads libcuda and runs cuInit. Throws LibraryNotFoundError or CudaError. */
  static load(): Driver {
    const { path, library } = openDriverLibrary();
    const d = new Driver(path, library);
    d.check("cuInit", d.fn.cuInit(0));
    return d;
  }

  private errorText(fnName: "cuGetErrorName" | "cuGetErrorString", code: number): string {
    const out = new BigUint64Array(1);
    if (this.fn[fnName](code, out) !== 0 || out[0] === 0n) return "unknown";
    return new CString(Number(out[0]) as Pointer).toString();
  }

  check(call: string, code: number): void {
    if (code !== 0) throw new CudaError(call, code, this.errorText("cuGetErrorName", code), this.errorText("cuGetErrorString", code));
  }

  /** Calls fn with an 8-byte out parameter and returns it. */
  private out(call: keyof typeof SYMBOLS, ...args: unknown[]): bigint {
    this.check(call, this.fn[call](this.out64, ...args));
    return this.out64[0]!;
  }

  driverVersion(): number {
    const v = new Int32Array(1);
    this.check("cuDriverGetVersion", this.fn.cuDriverGetVersion(v));
    return v[0]!;
  }
  deviceCount(): number {
    const v = new Int32Array(1);
    this.check("cuDeviceGetCount", this.fn.cuDeviceGetCount(v));
    return v[0]!;
  }
  device(index: number): number {
    const v = new Int32Array(1);
    this.check("cuDeviceGet", this.fn.cuDeviceGet(v, index));
    return v[0]!;
  }
  deviceName(dev: number): string {
    const buf = new Uint8Array(256);
    this.check("cuDeviceGetName", this.fn.cuDeviceGetName(buf, 256, dev));
    return new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
  }
  attribute(dev: number, attr: number): number {
    const v = new Int32Array(1);
    this.check("cuDeviceGetAttribute", this.fn.cuDeviceGetAttribute(v, attr, dev));
    return v[0]!;
  }
  primaryContext(dev: number): bigint {
    return this.out("cuDevicePrimaryCtxRetain", dev);
  }
  setCurrent(ctx: bigint): void {
    this.check("cuCtxSetCurrent", this.fn.cuCtxSetCurrent(ctx));
  }
  synchronize(): void {
    this.check("cuCtxSynchronize", this.fn.cuCtxSynchronize());
  }
  memInfo(): { free: number; total: number } {
    const a = new BigUint64Array(1), b = new BigUint64Array(1);
    this.check("cuMemGetInfo_v2", this.fn.cuMemGetInfo_v2(a, b));
    return { free: Number(a[0]), total: Number(b[0]) };
  }
  alloc(bytes: number): bigint {
    return this.out("cuMemAlloc_v2", BigInt(Math.max(bytes, 1)));
  }
  free(dptr: bigint): void {
    this.check("cuMemFree_v2", this.fn.cuMemFree_v2(dptr));
  }
  /** Page-locked host memory (for async copies and graph capture); returns its address. */
  allocHost(bytes: number): bigint {
    return this.out("cuMemAllocHost_v2", BigInt(Math.max(bytes, 1)));
  }
  freeHost(addr: bigint): void {
    this.check("cuMemFreeHost", this.fn.cuMemFreeHost(addr));
  }
  copyToDevice(dst: bigint, src: ArrayBufferView): void {
    this.check("cuMemcpyHtoD_v2", this.fn.cuMemcpyHtoD_v2(dst, src, BigInt(src.byteLength)));
  }
  copyToHost(dst: ArrayBufferView, src: bigint): void {
    this.check("cuMemcpyDtoH_v2", this.fn.cuMemcpyDtoH_v2(dst, src, BigInt(dst.byteLength)));
  }
  /** Async copy from page-locked host memory at `hostAddr`. */
  copyToDeviceAsync(dst: bigint, hostAddr: bigint, bytes: number, stream: bigint): void {
    this.check("cuMemcpyHtoDAsync_v2", this.fn.cuMemcpyHtoDAsync_v2(dst, hostAddr, BigInt(bytes), stream));
  }
  copyToHostAsync(hostAddr: bigint, src: bigint, bytes: number, stream: bigint): void {
    this.check("cuMemcpyDtoHAsync_v2", this.fn.cuMemcpyDtoHAsync_v2(hostAddr, src, BigInt(bytes), stream));
  }
  copyOnDeviceAsync(dst: bigint, src: bigint, bytes: number, stream: bigint): void {
    this.check("cuMemcpyDtoDAsync_v2", this.fn.cuMemcpyDtoDAsync_v2(dst, src, BigInt(bytes), stream));
  }
  memsetAsync(dst: bigint, byte: number, bytes: number, stream: bigint): void {
    this.check("cuMemsetD8Async", this.fn.cuMemsetD8Async(dst, byte, BigInt(bytes), stream));
  }
  /** Loads PTX text (NUL-terminated here) as a module. */
  loadModule(ptxText: string): bigint {
    const image = new TextEncoder().encode(ptxText + "\0");
    return this.out("cuModuleLoadData", image);
  }
  /** Loads a compiled image (a cubin from compilePtx) as a module. */
  loadImage(image: Uint8Array): bigint {
    return this.out("cuModuleLoadData", image);
  }
  /** JIT-compiles PTX for the current context's GPU (cuLink*) and returns the cubin's bytes. */
  compilePtx(ptxText: string, name: string): Uint8Array {
    const log = new Uint8Array(16384);
    const options = new Int32Array([CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES]);
    const values = new BigUint64Array([hostAddress(log), BigInt(log.length)]);
    const state = new BigUint64Array(1);
    this.check("cuLinkCreate_v2", this.fn.cuLinkCreate_v2(options.length, options, values, state));
    try {
      const image = new TextEncoder().encode(ptxText + "\0");
      const code = this.fn.cuLinkAddData_v2(state[0]!, CU_JIT_INPUT_PTX, image, BigInt(image.length), new TextEncoder().encode(name + "\0"), 0, null, null);
      if (code !== 0) {
        const text = new TextDecoder().decode(log.subarray(0, Math.max(0, log.indexOf(0))));
        throw new CudaError(`cuLinkAddData_v2(${name})`, code, this.errorText("cuGetErrorName", code), `${this.errorText("cuGetErrorString", code)}${text ? `; JIT log: ${text}` : ""}`);
      }
      const cubin = new BigUint64Array(1), size = new BigUint64Array(1);
      this.check(`cuLinkComplete(${name})`, this.fn.cuLinkComplete(state[0]!, cubin, size));
      // The cubin lives in the link state: copy it out before cuLinkDestroy.
      return new Uint8Array(toArrayBuffer(Number(cubin[0]) as Pointer, 0, Number(size[0]))).slice();
    } finally {
      this.fn.cuLinkDestroy(state[0]!);
    }
  }
  unloadModule(module: bigint): void {
    this.check("cuModuleUnload", this.fn.cuModuleUnload(module));
  }
  getFunction(module: bigint, name: string): bigint {
    return this.out("cuModuleGetFunction", module, new TextEncoder().encode(name + "\0"));
  }
  setFunctionAttribute(fn: bigint, attr: number, value: number): void {
    this.check("cuFuncSetAttribute", this.fn.cuFuncSetAttribute(fn, attr, value));
  }
  launch(fn: bigint, grid: [number, number, number], block: [number, number, number], sharedBytes: number, stream: bigint, params: BigUint64Array, name: string): void {
    this.check(`cuLaunchKernel(${name})`, this.fn.cuLaunchKernel(fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, stream, params, null));
  }
  createStream(flags = CU_STREAM_NON_BLOCKING): bigint {
    return this.out("cuStreamCreate", flags);
  }
  streamSynchronize(stream: bigint): void {
    this.check("cuStreamSynchronize", this.fn.cuStreamSynchronize(stream));
  }
  /** True when all work queued on the stream has finished, false while some is pending (CUDA_ERROR_NOT_READY). */
  streamQuery(stream: bigint): boolean {
    const r = this.fn.cuStreamQuery(stream);
    if (r === CUDA_ERROR_NOT_READY) return false;
    this.check("cuStreamQuery", r);
    return true;
  }
  beginCapture(stream: bigint, mode = CU_STREAM_CAPTURE_MODE_THREAD_LOCAL): void {
    this.check("cuStreamBeginCapture_v2", this.fn.cuStreamBeginCapture_v2(stream, mode));
  }
  endCapture(stream: bigint): bigint {
    // cuStreamEndCapture(CUstream, CUgraph*): the out-parameter comes last, unlike the other calls here.
    const graph = new BigUint64Array(1);
    this.check("cuStreamEndCapture", this.fn.cuStreamEndCapture(stream, graph));
    return graph[0]!;
  }
  instantiate(graph: bigint): bigint {
    return this.out("cuGraphInstantiateWithFlags", graph, 0n);
  }
  graphLaunch(exec: bigint, stream: bigint): void {
    this.check("cuGraphLaunch", this.fn.cuGraphLaunch(exec, stream));
  }
  destroyGraph(graph: bigint): void {
    this.check("cuGraphDestroy", this.fn.cuGraphDestroy(graph));
  }
  destroyGraphExec(exec: bigint): void {
    this.check("cuGraphExecDestroy", this.fn.cuGraphExecDestroy(exec));
  }
  createEvent(): bigint {
    return this.out("cuEventCreate", 0);
  }
  record(event: bigint, stream: bigint): void {
    this.check("cuEventRecord", this.fn.cuEventRecord(event, stream));
  }
  /** Waits until the work queued before the event's last record has finished. */
  eventSynchronize(event: bigint): void {
    this.check("cuEventSynchronize", this.fn.cuEventSynchronize(event));
  }
  elapsedMs(start: bigint, end: bigint): number {
    this.check("cuEventSynchronize", this.fn.cuEventSynchronize(end));
    const v = new Float32Array(1);
    this.check(this.eventElapsedSymbol, this.eventElapsed(v, start, end));
    return v[0]!;
  }
}

/** What the backend needs from a driver: the real one, or the test suite's GPU simulator (test/gpu-sim). */
export type DeviceDriver = Pick<Driver, keyof Driver>;

/** The address of a typed array's data (for kernel parameter blocks). */
export function hostAddress(a: Uint8Array | Int32Array | Float32Array | BigUint64Array): bigint {
  return BigInt(addressOf(a));
}

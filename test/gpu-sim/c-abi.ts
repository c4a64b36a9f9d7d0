/**
 * The C side of the shim libraries (./c-shim.ts): each libcuda, cuBLAS, cuBLASLt and NCCL function vbun
 * binds, carried out as its header documents it — arguments in the header's order, raw addresses read and
 * out-parameters written through memory — on simulated GPUs (SimDevice, the simulator's cuBLAS/cuBLASLt,
 * SimNccl). Written from the headers, independently of vbun's wrappers, so a wrapper that passes an
 * argument in the wrong place, of the wrong kind, or a handle where C expects a pointer fails here as it
 * would on a GPU (but with an error, not a crash: addresses are checked before they are touched).
 */
import { CString, ptr as addressOf, toArrayBuffer, type Pointer } from "bun:ffi";
import { SimDevice, SIM_IMAGE } from "./device.ts";
import { SimNccl, type SimNcclShared } from "./nccl.ts";
import { SHIM_LIBRARIES, type ShimHandler, type ShimLibrary } from "./c-shim.ts";
import type { DeviceDriver } from "../../src/backend/cuda/driver.ts";

const CUDA_ERRORS: Record<string, number> = {
  CUDA_SUCCESS: 0, CUDA_ERROR_INVALID_VALUE: 1, CUDA_ERROR_OUT_OF_MEMORY: 2, CUDA_ERROR_INVALID_IMAGE: 200, CUDA_ERROR_INVALID_PTX: 218,
  CUDA_ERROR_INVALID_HANDLE: 400, CUDA_ERROR_NOT_FOUND: 500, CUDA_ERROR_NOT_READY: 600, CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: 900, CUDA_ERROR_UNKNOWN: 999,
};
const CUDA_ERROR_NAMES = new Map(Object.entries(CUDA_ERRORS).map(([k, v]) => [v, k]));
const NCCL_ERRORS = ["no error", "unhandled cuda error", "unhandled system error", "internal error", "invalid argument", "invalid usage"];

/** Host memory below this is never a real pointer: a handle or a small integer passed where C wants one. */
const LOWEST_HOST_ADDRESS = 1n << 16n;
/** Where simulated device memory starts (SimDevice's BASE); it spans the device's capacity. */
const DEVICE_BASE = 1n << 32n;

/** Fails a call (its code, and a message cuGetErrorString / the test can show). */
class CallFault extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** The communicators of one ncclCommInitAll, as another thread's SimulatedCAbi adopts them. */
export interface NcclShare { shared: unknown; handles: bigint[] }

export interface CAbiOptions {
  /** Simulated GPUs (cuDeviceGetCount). */
  gpus?: number;
  /** Device memory per GPU. */
  deviceBytes?: number;
}

/** Simulated GPUs behind the C ABI; `handler` is what ./c-shim.ts forwards each call to. */
export class SimulatedCAbi {
  readonly devices: SimDevice[];
  private readonly drivers: DeviceDriver[];
  private current = 0;
  /** The message of each failed call, newest last (what a test shows when a call failed). */
  readonly faults: string[] = [];
  /** Calls per function, for tests that a path went through the C ABI at all. */
  readonly calls = new Map<string, number>();
  /** C strings handed out (error names and texts): kept alive for as long as C may read them. */
  private readonly strings = new Map<string, Uint8Array>();
  private readonly links = new Map<bigint, { logAddr: bigint; logBytes: number; ptx: string; image: Uint8Array | null }>();
  private nextLink = 0x7000n;
  private readonly blas: ReturnType<SimDevice["cublasLibrary"]>[];
  private readonly lt: ReturnType<SimDevice["cublasLtLibrary"]>[];
  /** NCCL communicators handed out: each ncclCommInitAll is a SimNccl group of its own. */
  private readonly comms = new Map<bigint, { group: SimNccl; rank: bigint }>();
  private nextComm = 0x9001n;
  private ncclGroup: { depth: number; calls: Array<() => void> } = { depth: 0, calls: [] };

  private readonly deviceBytes: bigint;

  constructor(options: CAbiOptions = {}) {
    const gpus = options.gpus ?? 1, bytes = options.deviceBytes ?? 256 << 20;
    this.deviceBytes = BigInt(bytes);
    this.devices = Array.from({ length: gpus }, () => new SimDevice(bytes));
    this.drivers = this.devices.map((d) => d.driver());
    this.blas = this.devices.map((d) => d.cublasLibrary());
    this.lt = this.devices.map((d) => d.cublasLtLibrary());
  }

  readonly handler: ShimHandler = (name, args) => {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
    const lib = libraryOf(name);
    try {
      if (lib === "cuda") return this.cuda(name, args);
      if (lib === "nccl") return this.ncclCall(name, args);
      return this.blasCall(lib, name, args);
    } catch (e) {
      const message = `${name}: ${(e as Error).message}`;
      this.faults.push(message);
      if (lib === "nccl") return name === "ncclGetErrorString" ? 0n : e instanceof CallFault ? e.code : 3;
      if (lib !== "cuda") return e instanceof CallFault ? e.code : 14; // CUBLAS_STATUS_INTERNAL_ERROR
      if (e instanceof CallFault) return e.code;
      const named = /\((CUDA_ERROR_\w+)\)/.exec((e as Error).message)?.[1];
      return CUDA_ERRORS[named ?? ""] ?? CUDA_ERRORS.CUDA_ERROR_UNKNOWN!;
    }
  };

  private get drv(): DeviceDriver {
    return this.drivers[this.current]!;
  }
  private get dev(): SimDevice {
    return this.devices[this.current]!;
  }

  // ---- memory the C side reads and writes by address ----
  /** `bytes` of host memory at `addr`, after checking it can be host memory at all. */
  private host(addr: bigint, bytes: number, what: string): Uint8Array {
    if (addr === 0n) throw new CallFault(1, `${what} is NULL`);
    if (addr < LOWEST_HOST_ADDRESS) throw new CallFault(1, `${what} = 0x${addr.toString(16)} is not a host address (a handle or a count passed as a pointer?)`);
    if (addr >= DEVICE_BASE && addr < DEVICE_BASE + this.deviceBytes) throw new CallFault(1, `${what} = 0x${addr.toString(16)} is a device address where C expects host memory`);
    return bytes === 0 ? new Uint8Array(0) : new Uint8Array(toArrayBuffer(Number(addr) as Pointer, 0, bytes));
  }
  private putU64(addr: bigint, v: bigint, what: string): void {
    new DataView(this.host(addr, 8, what).buffer).setBigUint64(0, v, true);
  }
  private putI32(addr: bigint, v: number, what: string): void {
    new DataView(this.host(addr, 4, what).buffer).setInt32(0, v, true);
  }
  private cString(addr: bigint, what: string): string {
    this.host(addr, 1, what);
    return new CString(Number(addr) as Pointer).toString();
  }
  /** The address of a NUL-terminated copy of `text` that stays alive. */
  private keptString(text: string): bigint {
    let b = this.strings.get(text);
    if (!b) this.strings.set(text, (b = new TextEncoder().encode(text + "\0")));
    return BigInt(addressOf(b));
  }
  private static i32(v: bigint): number {
    return Number(BigInt.asIntN(32, v));
  }
  private static u32(v: bigint): number {
    return Number(BigInt.asUintN(32, v));
  }

  /** cuMemAlloc-style: checks the out-pointer before allocating (nothing leaks on a bad one), then writes the address. */
  private allocInto(out: bigint, bytes: bigint, what: string, alloc: (bytes: number) => bigint): number {
    if (bytes === 0n) throw new CallFault(1, "bytesize 0 (CUDA_ERROR_INVALID_VALUE)");
    this.host(out, 8, what);
    this.putU64(out, alloc(Number(bytes)), what);
    return 0;
  }

  // ---- libcuda (cuda.h) ----
  private cuda(name: string, a: bigint[]): number | bigint {
    const i32 = SimulatedCAbi.i32, u32 = SimulatedCAbi.u32;
    const dev = (v: bigint) => {
      const d = i32(v);
      if (d < 0 || d >= this.devices.length) throw new CallFault(101, `device ${d} (CUDA_ERROR_INVALID_DEVICE)`);
      return d;
    };
    const size = (v: bigint) => Number(v);
    switch (name) {
      case "cuInit": if (a[0] !== 0n) throw new CallFault(1, "flags must be 0"); return 0;
      case "cuDriverGetVersion": this.putI32(a[0]!, this.drv.driverVersion(), "driverVersion"); return 0;
      case "cuDeviceGetCount": this.putI32(a[0]!, this.devices.length, "count"); return 0;
      case "cuDeviceGet": this.putI32(a[0]!, dev(a[1]!), "device"); return 0;
      case "cuDeviceGetName": {
        const len = i32(a[1]!), out = this.host(a[0]!, len, "name");
        const text = new TextEncoder().encode(`${this.drivers[dev(a[2]!)]!.deviceName(0)} ${dev(a[2]!)}`);
        out.fill(0);
        out.set(text.subarray(0, len - 1));
        return 0;
      }
      case "cuDeviceGetAttribute": this.putI32(a[0]!, this.drivers[dev(a[2]!)]!.attribute(0, i32(a[1]!)), "pi"); return 0;
      case "cuDevicePrimaryCtxRetain": this.putU64(a[0]!, 0x100n + BigInt(dev(a[1]!)), "pctx"); return 0;
      case "cuCtxSetCurrent": {
        const d = Number(a[0]!) - 0x100;
        if (!(d >= 0 && d < this.devices.length)) throw new CallFault(201, `context 0x${a[0]!.toString(16)} (CUDA_ERROR_INVALID_CONTEXT)`);
        this.current = d;
        return 0;
      }
      case "cuCtxSynchronize": this.drv.synchronize(); return 0;
      case "cuMemGetInfo_v2": {
        const { free, total } = this.drv.memInfo();
        this.putU64(a[0]!, BigInt(free), "free");
        this.putU64(a[1]!, BigInt(total), "total");
        return 0;
      }
      case "cuMemAlloc_v2": return this.allocInto(a[0]!, a[1]!, "dptr", (n) => this.drv.alloc(n));
      case "cuMemFree_v2": this.drv.free(a[0]!); return 0;
      case "cuMemAllocHost_v2": return this.allocInto(a[0]!, a[1]!, "pp", (n) => this.drv.allocHost(n));
      case "cuMemFreeHost": this.drv.freeHost(a[0]!); return 0;
      case "cuMemcpyHtoD_v2": this.drv.copyToDevice(a[0]!, this.host(a[1]!, size(a[2]!), "srcHost")); return 0;
      case "cuMemcpyDtoH_v2": this.drv.copyToHost(this.host(a[0]!, size(a[2]!), "dstHost"), a[1]!); return 0;
      case "cuMemcpyHtoDAsync_v2": this.host(a[1]!, 0, "srcHost"); this.drv.copyToDeviceAsync(a[0]!, a[1]!, size(a[2]!), a[3]!); return 0;
      case "cuMemcpyDtoHAsync_v2": this.host(a[0]!, 0, "dstHost"); this.drv.copyToHostAsync(a[0]!, a[1]!, size(a[2]!), a[3]!); return 0;
      case "cuMemcpyDtoDAsync_v2": this.drv.copyOnDeviceAsync(a[0]!, a[1]!, size(a[2]!), a[3]!); return 0;
      case "cuMemsetD8Async": this.drv.memsetAsync(a[0]!, u32(a[1]!) & 0xff, size(a[2]!), a[3]!); return 0;
      case "cuModuleLoadData": {
        this.host(a[0]!, 8, "module");
        const text = this.cString(a[1]!, "image");
        const m = text.startsWith(SIM_IMAGE) ? this.drv.loadImage(new TextEncoder().encode(text)) : this.drv.loadModule(text);
        this.putU64(a[0]!, m, "module");
        return 0;
      }
      case "cuLinkCreate_v2": {
        const n = u32(a[0]!);
        const options = n ? new Int32Array(this.host(a[1]!, 4 * n, "options").slice().buffer) : new Int32Array(0);
        const values = n ? new BigUint64Array(this.host(a[2]!, 8 * n, "optionValues").slice().buffer) : new BigUint64Array(0);
        const link = { logAddr: 0n, logBytes: 0, ptx: "", image: null };
        options.forEach((o, i) => {
          if (o === 5) link.logAddr = values[i]!; // CU_JIT_ERROR_LOG_BUFFER: the buffer's address
          else if (o === 6) link.logBytes = Number(values[i]!); // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: the size itself, not a pointer to it
          else throw new CallFault(1, `JIT option ${o} is not one the shim knows`);
        });
        if (link.logAddr) this.host(link.logAddr, link.logBytes, "the JIT log buffer").fill(0);
        const state = this.nextLink++;
        this.links.set(state, link);
        this.putU64(a[3]!, state, "stateOut");
        return 0;
      }
      case "cuLinkAddData_v2": {
        const link = this.links.get(a[0]!);
        if (!link) throw new CallFault(400, "unknown link state (CUDA_ERROR_INVALID_HANDLE)");
        if (i32(a[1]!) !== 1) throw new CallFault(1, `input type ${i32(a[1]!)} (only CU_JIT_INPUT_PTX)`);
        const bytes = this.host(a[2]!, size(a[3]!), "data");
        if (bytes[bytes.length - 1] !== 0) throw new CallFault(218, "PTX data must include its terminating NUL in size");
        this.cString(a[4]!, "name");
        if (u32(a[5]!) !== 0) throw new CallFault(1, "per-input JIT options are not used by vbun");
        const ptx = new TextDecoder().decode(bytes.subarray(0, bytes.length - 1));
        try {
          this.dev.loadModule(ptx); // the JIT: a module the simulator cannot translate fails here
        } catch (e) {
          if (link.logAddr && link.logBytes > 1) {
            const msg = new TextEncoder().encode(`ptxas fatal: ${(e as Error).message}`).subarray(0, link.logBytes - 1);
            this.host(link.logAddr, link.logBytes, "the JIT log buffer").set(msg);
          }
          throw new CallFault(218, `(CUDA_ERROR_INVALID_PTX) ${(e as Error).message}`);
        }
        link.ptx = ptx;
        return 0;
      }
      case "cuLinkComplete": {
        const link = this.links.get(a[0]!);
        if (!link) throw new CallFault(400, "unknown link state (CUDA_ERROR_INVALID_HANDLE)");
        const image = new Uint8Array([...this.drv.compilePtx(link.ptx, "linked"), 0]); // NUL-terminated: cuModuleLoadData finds its end
        link.image = image;
        this.putU64(a[1]!, BigInt(addressOf(image)), "cubinOut");
        this.putU64(a[2]!, BigInt(image.length), "sizeOut");
        return 0;
      }
      case "cuLinkDestroy": if (!this.links.delete(a[0]!)) throw new CallFault(400, "unknown link state"); return 0;
      case "cuModuleGetFunction": this.putU64(a[0]!, this.drv.getFunction(a[1]!, this.cString(a[2]!, "name")), "hfunc"); return 0;
      case "cuModuleUnload": this.drv.unloadModule(a[0]!); return 0;
      case "cuFuncSetAttribute": this.dev.kernelOf(a[0]!); if (i32(a[2]!) < 0) throw new CallFault(1, "negative attribute value"); return 0;
      case "cuLaunchKernel": {
        const k = this.dev.kernelOf(a[0]!);
        if (a[10] !== 0n) throw new CallFault(1, "extra is not NULL (vbun passes kernelParams)");
        const n = k.params.length;
        const params = n ? new BigUint64Array(this.host(a[9]!, 8 * n, "kernelParams").slice().buffer) : new BigUint64Array(0);
        params.forEach((p, i) => this.host(p, k.params[i]!.size, `kernelParams[${i}]`));
        this.drv.launch(a[0]!, [u32(a[1]!), u32(a[2]!), u32(a[3]!)], [u32(a[4]!), u32(a[5]!), u32(a[6]!)], u32(a[7]!), a[8]!, params, k.name);
        return 0;
      }
      case "cuStreamCreate": this.putU64(a[0]!, this.drv.createStream(u32(a[1]!)), "phStream"); return 0;
      case "cuStreamSynchronize": this.drv.streamSynchronize(a[0]!); return 0;
      case "cuStreamQuery": return this.drv.streamQuery(a[0]!) ? 0 : CUDA_ERRORS.CUDA_ERROR_NOT_READY!;
      case "cuStreamBeginCapture_v2": this.drv.beginCapture(a[0]!, i32(a[1]!)); return 0;
      case "cuStreamEndCapture": this.host(a[1]!, 8, "phGraph"); this.putU64(a[1]!, this.drv.endCapture(a[0]!), "phGraph"); return 0;
      case "cuGraphInstantiateWithFlags": this.host(a[0]!, 8, "phGraphExec"); this.putU64(a[0]!, this.drv.instantiate(a[1]!), "phGraphExec"); return 0;
      case "cuGraphLaunch": this.drv.graphLaunch(a[0]!, a[1]!); return 0;
      case "cuGraphDestroy": this.drv.destroyGraph(a[0]!); return 0;
      case "cuGraphExecDestroy": this.drv.destroyGraphExec(a[0]!); return 0;
      case "cuEventCreate": this.putU64(a[0]!, this.drv.createEvent(), "phEvent"); return 0;
      case "cuEventRecord": this.drv.record(a[0]!, a[1]!); return 0;
      case "cuEventSynchronize": this.drv.eventSynchronize(a[0]!); return 0;
      case "cuEventElapsedTime":
      case "cuEventElapsedTime_v2": {
        const ms = this.drv.elapsedMs(a[1]!, a[2]!);
        new DataView(this.host(a[0]!, 4, "pMilliseconds").buffer).setFloat32(0, ms, true);
        return 0;
      }
      case "cuGetErrorName":
      case "cuGetErrorString": {
        const code = i32(a[0]!), known = CUDA_ERROR_NAMES.get(code);
        if (!known) { this.putU64(a[1]!, 0n, "pStr"); return CUDA_ERRORS.CUDA_ERROR_INVALID_VALUE!; }
        const last = this.faults[this.faults.length - 1] ?? "";
        this.putU64(a[1]!, this.keptString(name === "cuGetErrorName" ? known : `simulated: ${last}`), "pStr");
        return 0;
      }
    }
    throw new Error(`the shim has no C implementation of ${name}`);
  }

  // ---- cuBLAS / cuBLASLt: the simulator's implementations, given views of the memory their pointers name ----
  private blasCall(lib: "cublas" | "cublasLt", name: string, a: bigint[]): number {
    const sig = SHIM_LIBRARIES[lib].table[name]!;
    const views = POINTER_VIEWS[name] ?? {};
    const args = sig.args.map((kind, i) => {
      if (kind === "ptr") {
        const view = views[i];
        if (!view) throw new Error(`${name}: no view for pointer argument ${i}`);
        return view(a, (addr, bytes) => this.host(addr, bytes, `${name} argument ${i}`));
      }
      return kind === "i32" ? SimulatedCAbi.i32(a[i]!) : kind === "u32" ? SimulatedCAbi.u32(a[i]!) : kind === "i64" ? BigInt.asIntN(64, a[i]!) : a[i]!;
    });
    const fns = (lib === "cublas" ? this.blas : this.lt)[this.current]!.symbols as Record<string, (...x: unknown[]) => number>;
    return fns[name]!(...args);
  }

  // ---- NCCL (nccl.h), over SimNccl: one thread, so every rank's call is made from here ----
  private ncclCall(name: string, a: bigint[]): number | bigint {
    const i32 = SimulatedCAbi.i32;
    const collective = (call: () => void) => { if (this.ncclGroup.depth > 0) this.ncclGroup.calls.push(call); else call(); };
    switch (name) {
      case "ncclGetVersion": this.putI32(a[0]!, 22203, "version"); return 0;
      case "ncclGetErrorString": return this.keptString(NCCL_ERRORS[i32(a[0]!)] ?? "unknown result");
      case "ncclCommInitAll": {
        const n = i32(a[1]!);
        if (n < 1 || n > this.devices.length) throw new CallFault(4, `ndev ${n} with ${this.devices.length} simulated GPUs`);
        const list = new Int32Array(this.host(a[2]!, 4 * n, "devlist").slice().buffer);
        const group = new SimNccl(null, () => this.devices[this.current]!);
        const out = new BigUint64Array(this.host(a[0]!, 8 * n, "comm").buffer);
        const handles: bigint[] = [];
        group.initAll(Array.from(list)).forEach((rank, i) => {
          const handle = this.nextComm++; // not 1, 2, …: a communicator passed as a count shows
          this.comms.set(handle, { group, rank });
          out[i] = handle;
          handles.push(handle);
        });
        this.latestComms = { shared: group.workerData, handles };
        return 0;
      }
      case "ncclCommDestroy": { const c = this.comm(a[0]!); c.group.destroy(c.rank); this.comms.delete(a[0]!); return 0; }
      case "ncclCommAbort": { const c = this.comm(a[0]!); c.group.abort(c.rank); this.comms.delete(a[0]!); return 0; }
      case "ncclAllReduce": {
        if (i32(a[4]!) !== 0) throw new CallFault(4, `reduction op ${i32(a[4]!)} (vbun sums)`);
        const c = this.comm(a[5]!);
        const call = { send: a[0]!, recv: a[1]!, count: Number(a[2]!), dtype: i32(a[3]!), comm: c.rank, stream: a[6]! };
        collective(() => c.group.allReduce([call]));
        return 0;
      }
      case "ncclAllGather": {
        const c = this.comm(a[4]!);
        const call = { send: a[0]!, recv: a[1]!, count: Number(a[2]!), dtype: i32(a[3]!), comm: c.rank, stream: a[5]! };
        collective(() => c.group.allGather(call));
        return 0;
      }
      case "ncclGroupStart": this.ncclGroup.depth++; return 0;
      case "ncclGroupEnd": {
        if (this.ncclGroup.depth === 0) throw new CallFault(5, "ncclGroupEnd without ncclGroupStart");
        if (--this.ncclGroup.depth === 0) for (const c of this.ncclGroup.calls.splice(0)) c();
        return 0;
      }
    }
    throw new Error(`the shim has no C implementation of ${name}`);
  }
  /**
   * What tensor-parallel workers need to reach the communicators of the latest ncclCommInitAll (its
   * shared memory and handles): the test's NCCL passes it as its workerData, and each worker thread's
   * SimulatedCAbi adopts it.
   */
  ncclShare(): NcclShare | null {
    return this.latestComms;
  }
  adoptNccl(share: NcclShare | null): void {
    if (!share) return;
    const group = new SimNccl(share.shared as SimNcclShared, () => this.devices[this.current]!);
    share.handles.forEach((h, i) => this.comms.set(h, { group, rank: BigInt(i + 1) }));
  }
  private latestComms: NcclShare | null = null;

  private comm(v: bigint): { group: SimNccl; rank: bigint } {
    const c = this.comms.get(v);
    if (!c) throw new CallFault(4, `0x${v.toString(16)} is not a live communicator`);
    return c;
  }
}

type Host = (addr: bigint, bytes: number) => Uint8Array;
type View = (a: bigint[], host: Host) => ArrayBufferView;
const u64Out: View = (a, h) => new BigUint64Array(h(a[0]!, 8).buffer, 0, 1);
const f32At = (i: number): View => (a, h) => new Float32Array(h(a[i]!, 4).buffer, 0, 1);
const bytesAt = (i: number, bytes: (a: bigint[]) => number): View => (a, h) => h(a[i]!, bytes(a));
/** How each cuBLAS / cuBLASLt pointer argument is read: an out-handle, a scalar, or a buffer of known size. */
const POINTER_VIEWS: Record<string, Record<number, View>> = {
  cublasCreate_v2: { 0: u64Out },
  cublasGemmEx: { 6: f32At(6), 13: f32At(13) },
  cublasLtCreate: { 0: u64Out },
  cublasLtMatmulDescCreate: { 0: u64Out },
  cublasLtMatmulDescSetAttribute: { 2: bytesAt(2, (a) => Number(a[3]!)) },
  cublasLtMatrixLayoutCreate: { 0: u64Out },
  cublasLtMatmulPreferenceCreate: { 0: u64Out },
  cublasLtMatmulPreferenceSetAttribute: { 2: bytesAt(2, (a) => Number(a[3]!)) },
  cublasLtMatmulAlgoGetHeuristic: { 8: bytesAt(8, (a) => 96 * Number(BigInt.asIntN(32, a[7]!))), 9: (a, h) => new Int32Array(h(a[9]!, 4).buffer, 0, 1) },
  cublasLtMatmul: { 2: f32At(2), 7: f32At(7), 12: bytesAt(12, () => 64) },
};

function libraryOf(name: string): ShimLibrary {
  for (const [lib, { table }] of Object.entries(SHIM_LIBRARIES)) if (name in table) return lib as ShimLibrary;
  throw new Error(`no shim library has ${name}`);
}


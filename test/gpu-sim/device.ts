/**
 * A simulated GPU for testing the CUDA backend without one: device memory, streams, graphs and kernels
 * (the committed PTX, translated by ./ptx.ts), behind the same method surface as the real Driver and the
 * same symbol table as the real cuBLAS. It is a test instrument, not a GPU: it proves the backend's logic
 * (buffer layouts, launch arguments, kernel indexing and warp code, stream ordering, graph capture) and
 * nothing about the real libraries, FFI signatures, or speed.
 *
 * Strict where real GPUs are forgiving, so bugs show:
 * - every global access is bounds- and alignment-checked against live allocations (no silent out-of-bounds),
 *   and new allocations and shared memory start as 0xFF bytes (NaN for bf16/f32), like garbage;
 * - work on a stream runs as late as CUDA allows (at a synchronize), so a host buffer rewritten before its
 *   async copy ran, or a synchronous copy that races the stream, gives visibly wrong data;
 * - capture records launches with their arguments as of capture time, like cuStreamBeginCapture, and
 *   synchronous calls during capture throw;
 * - warp collectives need every lane their mask names to be present and converged;
 * - shared memory is race-checked: a byte one thread wrote and another reads or writes (or read and another
 *   writes) with no bar.sync between them is a fault, although the serial order here would have hidden it.
 */
import { ptr as addressOf, toArrayBuffer, type Pointer } from "bun:ffi";
import { translateModule, WAIT_BARRIER, WAIT_EXIT, WAIT_WARP, type BlockContext, type Kernel, type Thread } from "./ptx.ts";
import type { DeviceDriver } from "../../src/backend/cuda/driver.ts";
import type { CublasLibrary } from "../../src/backend/cuda/cublas.ts";
import type { CublasLtLibrary } from "../../src/backend/cuda/cublaslt.ts";
import { f32ToBf16Bits } from "../../src/loader/dtype.ts";

const BASE = 2 ** 32;
/** Translated modules by PTX text (SimDevice.loadModule). */
const TRANSLATED = new Map<string, Map<string, Kernel>>();
const ALIGN = 256;

/**
 * Work on a stream. An op that waits for another GPU (a collective) returns false until it can finish,
 * and is called again; everything else returns nothing and is done.
 */
type Op = () => void | boolean;
const SLEEP = new Int32Array(new SharedArrayBuffer(4));

export class SimFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SimFault";
  }
}

export interface SimStats { launches: number; blocks: number; threads: number; gemms: number; graphLaunches: number; compiles: number; hostToDeviceCopies: number; streamSyncs: number }
/** The start of the simulator's "cubin" (the PTX text follows: it has no machine code). */
export const SIM_IMAGE = "vbun-sim-image\n";

export class SimDevice {
  private readonly capacity: number;
  readonly totalMemory: number;
  private readonly mem: ArrayBuffer;
  private readonly dv: DataView;
  private readonly u8: Uint8Array;
  private readonly shadow: Uint8Array;
  private top = 0;
  private readonly sizes = new Map<number, number>();
  private readonly hostBuffers = new Map<bigint, ArrayBuffer>();
  private readonly queues = new Map<bigint, Op[]>();
  private readonly capturing = new Map<bigint, Op[]>();
  private readonly graphs = new Map<bigint, Op[]>();
  private readonly kernels = new Map<bigint, Kernel>();
  private readonly events = new Map<bigint, number>();
  private nextHandle = 1n;
  readonly stats: SimStats = { launches: 0, blocks: 0, threads: 0, gemms: 0, graphLaunches: 0, compiles: 0, hostToDeviceCopies: 0, streamSyncs: 0 };
  /** The kernel running now (for fault messages). */
  private current = "";

  /**
   * `capacityBytes` of device memory, all of it reported as the card's total by cuMemGetInfo. With
   * `execute: false` stream work is checked and dropped, not run (scripts/bench-host: host time alone).
   */
  constructor(capacityBytes = 256 << 20, private readonly runsWork = true) {
    this.capacity = capacityBytes;
    this.totalMemory = capacityBytes;
    this.mem = new ArrayBuffer(capacityBytes);
    this.dv = new DataView(this.mem);
    this.u8 = new Uint8Array(this.mem);
    this.shadow = new Uint8Array(capacityBytes);
    this.queues.set(0n, []);
  }

  private handle(): bigint {
    return this.nextHandle++;
  }

  // ---- memory ----
  /**
   * Fresh memory first (so a stale pointer into freed memory still faults); once the end is reached, the
   * first gap between live allocations that fits (an engine closed and another one started, as on a GPU).
   */
  alloc(bytes: number): bigint {
    let off = Math.ceil(this.top / ALIGN) * ALIGN;
    if (off + bytes <= this.capacity) this.top = off + bytes;
    else off = this.firstGap(bytes);
    this.sizes.set(off, bytes);
    this.shadow.fill(1, off, off + bytes);
    this.u8.fill(0xff, off, off + bytes);
    return BigInt(BASE + off);
  }
  private firstGap(bytes: number): number {
    let cursor = 0;
    for (const [o, size] of [...this.sizes.entries()].sort((a, b) => a[0] - b[0])) {
      if (o - cursor >= bytes) return cursor;
      cursor = Math.ceil((o + size) / ALIGN) * ALIGN;
    }
    if (this.capacity - cursor >= bytes) return cursor;
    throw new SimFault(`simulated device memory exhausted (${bytes} bytes requested; ${this.usedBytes()} of ${this.capacity} in use)`);
  }
  freeHost(addr: bigint): void {
    if (!this.hostBuffers.delete(addr)) throw new SimFault(`cuMemFreeHost of 0x${addr.toString(16)}, which is not page-locked memory from cuMemAllocHost`);
  }
  destroyGraph(graph: bigint): void {
    if (!this.graphs.delete(graph)) throw new SimFault("cuGraphDestroy / cuGraphExecDestroy of an unknown graph");
  }
  free(addr: bigint): void {
    const off = Number(addr) - BASE;
    const size = this.sizes.get(off);
    if (size === undefined) throw new SimFault(`cuMemFree of ${addr.toString(16)}, which is not the start of a live allocation`);
    this.sizes.delete(off);
    this.shadow.fill(0, off, off + size);
  }
  usedBytes(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }
  /** Byte offset of a checked device range. */
  private range(addr: number, bytes: number, what: string): number {
    const o = addr - BASE;
    if (!(o >= 0 && o + bytes <= this.capacity) || (bytes > 0 && (this.shadow[o] === 0 || this.shadow[o + bytes - 1] === 0)))
      throw new SimFault(`${what}: ${bytes} bytes at 0x${addr.toString(16)} are outside every live allocation${this.current ? ` (in ${this.current})` : ""}`);
    for (let k = o; k < o + bytes; k += 4096) if (this.shadow[k] === 0) throw new SimFault(`${what}: range at 0x${addr.toString(16)} (${bytes} bytes) crosses unallocated memory`);
    return o;
  }
  readDevice(addr: bigint, bytes: number): Uint8Array {
    const o = this.range(Number(addr), bytes, "read");
    return this.u8.slice(o, o + bytes);
  }
  writeDevice(addr: bigint, data: Uint8Array): void {
    const o = this.range(Number(addr), data.byteLength, "write");
    this.u8.set(data, o);
  }
  allocHost(bytes: number): bigint {
    const buf = new ArrayBuffer(bytes);
    const addr = BigInt(addressOf(new Uint8Array(buf)));
    this.hostBuffers.set(addr, buf);
    return addr;
  }
  private hostBytes(addr: bigint, bytes: number): Uint8Array {
    for (const [a, buf] of this.hostBuffers) if (addr >= a && addr + BigInt(bytes) <= a + BigInt(buf.byteLength)) return new Uint8Array(buf, Number(addr - a), bytes);
    if (bytes === 0) return new Uint8Array(0);
    // Not from allocHost: CUDA would treat it as pageable memory; the backend must never do that for async copies.
    throw new SimFault(`async copy with host address 0x${addr.toString(16)} that is not page-locked memory from cuMemAllocHost`);
  }

  // ---- streams, capture, graphs, events ----
  createStream(): bigint {
    const s = this.handle();
    this.queues.set(s, []);
    return s;
  }
  enqueue(stream: bigint, op: Op): void {
    if (!this.runsWork) return;
    const cap = this.capturing.get(stream);
    if (cap) { cap.push(op); return; }
    const q = this.queues.get(stream);
    if (!q) throw new SimFault(`unknown stream ${stream}`);
    q.push(op);
  }
  assertNotCapturing(call: string): void {
    if (this.capturing.size > 0) throw new SimFault(`${call} during stream capture (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)`);
  }
  streamSynchronize(stream: bigint): void {
    if (this.capturing.has(stream)) throw new SimFault("cuStreamSynchronize of a capturing stream (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
    const q = this.queues.get(stream);
    if (!q) throw new SimFault(`unknown stream ${stream}`);
    this.runUntil(q, () => q.length === 0, "cuStreamSynchronize");
  }
  /**
   * Runs a stream's work in order until `done()`, waiting (up to 60 s) while the next op waits on another
   * GPU — as a blocking synchronize would.
   */
  private runUntil(q: Op[], done: () => boolean, call: string): void {
    const deadline = performance.now() + 60_000;
    while (!done()) {
      if (q.length === 0) throw new SimFault(`${call}: nothing left on the stream to wait for`);
      if (q[0]!() === false) {
        if (performance.now() > deadline) throw new SimFault(`${call} waited 60 s for work that waits on another GPU (a rank skipped a collective or failed)`);
        Atomics.wait(SLEEP, 0, 0, 0.2);
        continue;
      }
      q.shift();
    }
  }
  /** cuStreamQuery: runs what can run; false while an op still waits on another GPU. */
  streamQuery(stream: bigint): boolean {
    if (this.capturing.has(stream)) throw new SimFault("cuStreamQuery of a capturing stream (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)");
    const q = this.queues.get(stream);
    if (!q) throw new SimFault(`unknown stream ${stream}`);
    while (q.length > 0) {
      if (q[0]!() === false) return false;
      q.shift();
    }
    return true;
  }
  synchronizeAll(): void {
    this.assertNotCapturing("cuCtxSynchronize");
    for (const s of this.queues.keys()) this.streamSynchronize(s);
  }
  beginCapture(stream: bigint): void {
    if (this.capturing.has(stream)) throw new SimFault("cuStreamBeginCapture on a stream already capturing");
    this.capturing.set(stream, []);
  }
  endCapture(stream: bigint): bigint {
    const ops = this.capturing.get(stream);
    if (!ops) throw new SimFault("cuStreamEndCapture on a stream that is not capturing");
    this.capturing.delete(stream);
    const g = this.handle();
    this.graphs.set(g, ops);
    return g;
  }
  instantiate(graph: bigint): bigint {
    const ops = this.graphs.get(graph);
    if (!ops) throw new SimFault("cuGraphInstantiate of an unknown graph");
    const e = this.handle();
    this.graphs.set(e, [...ops]);
    return e;
  }
  graphLaunch(exec: bigint, stream: bigint): void {
    const ops = this.graphs.get(exec);
    if (!ops) throw new SimFault("cuGraphLaunch of an unknown graph");
    this.stats.graphLaunches++;
    for (const op of ops) this.enqueue(stream, op);
  }
  createEvent(): bigint {
    const e = this.handle();
    this.events.set(e, 0);
    return e;
  }
  /** Events recorded on a stream whose record has not run yet, and the stream. */
  private readonly pendingEvents = new Map<bigint, bigint>();
  record(event: bigint, stream: bigint): void {
    if (this.runsWork && !this.capturing.has(stream)) this.pendingEvents.set(event, stream);
    this.enqueue(stream, () => {
      this.events.set(event, performance.now());
      this.pendingEvents.delete(event);
    });
  }
  /** cuEventSynchronize: runs the event's stream up to (and including) the event's record. */
  eventSynchronize(event: bigint): void {
    this.assertNotCapturing("cuEventSynchronize");
    const stream = this.pendingEvents.get(event);
    if (stream === undefined) return;
    const q = this.queues.get(stream)!;
    this.runUntil(q, () => !this.pendingEvents.has(event), "cuEventSynchronize");
  }
  eventTime(event: bigint): number {
    return this.events.get(event) ?? 0;
  }

  // ---- copies ----
  copyToDeviceAsync(dst: bigint, hostAddr: bigint, bytes: number, stream: bigint): void {
    const src = this.hostBytes(hostAddr, bytes);
    this.range(Number(dst), bytes, "cuMemcpyHtoDAsync destination");
    this.stats.hostToDeviceCopies++;
    // Reads the host buffer when the copy runs, not now: like the DMA engine.
    this.enqueue(stream, () => this.writeDevice(dst, src.slice()));
  }
  copyToHostAsync(hostAddr: bigint, src: bigint, bytes: number, stream: bigint): void {
    const dst = this.hostBytes(hostAddr, bytes);
    this.range(Number(src), bytes, "cuMemcpyDtoHAsync source");
    this.enqueue(stream, () => dst.set(this.readDevice(src, bytes)));
  }
  copyOnDeviceAsync(dst: bigint, src: bigint, bytes: number, stream: bigint): void {
    this.range(Number(src), bytes, "cuMemcpyDtoDAsync source");
    this.range(Number(dst), bytes, "cuMemcpyDtoDAsync destination");
    this.enqueue(stream, () => this.writeDevice(dst, this.readDevice(src, bytes)));
  }
  memsetAsync(dst: bigint, byte: number, bytes: number, stream: bigint): void {
    const o = this.range(Number(dst), bytes, "cuMemsetD8Async");
    this.enqueue(stream, () => { this.u8.fill(byte & 0xff, o, o + bytes); });
  }

  // ---- kernels ----
  /**
   * The module's kernels, translated once per PTX text in this thread (the translated code keeps no state between
   * calls, so every simulated GPU can share it: each engine a test starts opens a fresh one).
   */
  loadModule(ptx: string): Map<string, Kernel> {
    let kernels = TRANSLATED.get(ptx);
    if (!kernels) TRANSLATED.set(ptx, (kernels = translateModule(ptx)));
    return kernels;
  }
  registerKernel(k: Kernel): bigint {
    const h = this.handle();
    this.kernels.set(h, k);
    return h;
  }
  /** The kernel behind a function handle (how many parameters cuLaunchKernel's kernelParams holds). */
  kernelOf(fn: bigint): Kernel {
    const k = this.kernels.get(fn);
    if (!k) throw new SimFault(`unknown function handle ${fn} (CUDA_ERROR_INVALID_HANDLE)`);
    return k;
  }
  launch(fn: bigint, grid: [number, number, number], block: [number, number, number], sharedBytes: number, stream: bigint, params: BigUint64Array, name: string): void {
    const k = this.kernels.get(fn);
    if (!k) throw new SimFault(`cuLaunchKernel(${name}): unknown function handle`);
    if (block[1] !== 1 || block[2] !== 1) throw new SimFault(`${name}: the simulator runs 1-D blocks only`);
    if (block[0] < 1 || block[0] > 1024) throw new SimFault(`cuLaunchKernel(${name}): block of ${block[0]} threads (CUDA_ERROR_INVALID_VALUE)`);
    if (grid[0] < 1 || grid[0] > 2 ** 31 - 1 || grid[1] < 1 || grid[1] > 65535 || grid[2] < 1 || grid[2] > 65535) throw new SimFault(`cuLaunchKernel(${name}): grid [${grid}] out of range (CUDA_ERROR_INVALID_VALUE)`);
    if (k.sharedBytes + sharedBytes > 48 * 1024) throw new SimFault(`cuLaunchKernel(${name}): ${k.sharedBytes + sharedBytes} bytes of shared memory`);
    // The driver copies the argument values at launch (and at capture).
    const prm = new Uint8Array(Math.max(k.paramBytes, 8));
    k.params.forEach((p, i) => {
      const at = params[i];
      if (!at) throw new SimFault(`cuLaunchKernel(${name}): kernelParams[${i}] is null`);
      prm.set(new Uint8Array(toArrayBuffer(Number(at) as Pointer, 0, p.size)), p.offset);
    });
    const view = new DataView(prm.buffer);
    this.enqueue(stream, () => this.execute(k, grid, block[0], sharedBytes, view));
  }

  /** Register files for a launch (kept per kernel and block size: registers start as whatever was there). */
  private readonly threadCache = new Map<string, Thread[]>();
  private threadsFor(k: Kernel, nt: number): Thread[] {
    const key = `${k.name}/${nt}`;
    let threads = this.threadCache.get(key);
    if (!threads) {
      threads = [];
      for (let t = 0; t < nt; t++) {
        const regs = new ArrayBuffer(Math.max(k.regs.n32, 1) * 4);
        threads.push({ i: new Int32Array(regs), f: new Float32Array(regs), d: new Float64Array(Math.max(k.regs.n64, 1)), p: new Uint8Array(Math.max(k.regs.npred, 1)), pc: 0, tid: t, lane: t & 31, op: -1, n: 0 });
      }
      this.threadCache.set(key, threads);
    }
    return threads;
  }

  /** Per-byte last writer/reader and their barrier epochs; epochs only grow, so nothing is reset per block. */
  private race = { wThread: new Int32Array(0), wEpoch: new Int32Array(0), rThread: new Int32Array(0), rEpoch: new Int32Array(0), epoch: 0 };
  private sharedRaceState(bytes: number) {
    if (this.race.wThread.length < bytes) {
      this.race = { wThread: new Int32Array(bytes), wEpoch: new Int32Array(bytes), rThread: new Int32Array(bytes), rEpoch: new Int32Array(bytes), epoch: this.race.epoch };
    }
    return this.race;
  }

  private execute(k: Kernel, grid: [number, number, number], nt: number, dynShared: number, prm: DataView): void {
    this.current = k.name;
    this.stats.launches++;
    const shared = new ArrayBuffer(Math.max(k.sharedBytes + dynShared, 16));
    const s8 = new Uint8Array(shared), sdv = new DataView(shared);
    const sBytes = shared.byteLength;
    const dv = this.dv, sh = this.shadow, cap = this.capacity;
    const fault = (space: string, a: number, n: number): never => {
      const o = a - BASE;
      const why = space === "shared" ? (a % n !== 0 ? "misaligned" : "out of bounds") : !(o >= 0 && o + n <= cap) ? "not device memory" : o % n !== 0 ? "misaligned" : "outside every live allocation";
      throw new SimFault(`${k.name}: ${n}-byte ${space} access at 0x${a.toString(16)} ${why}`);
    };
    const g = (a: number, n: number): number => {
      const o = a - BASE;
      if (!(o >= 0 && o + n <= cap) || o % n !== 0 || sh[o] === 0 || sh[o + n - 1] === 0) fault("global", a, n);
      return o;
    };
    const s = (a: number, n: number): number => {
      if (!(a >= 0 && a + n <= sBytes) || a % n !== 0) fault("shared", a, n);
      return a;
    };
    // Shared-memory race detector: between two barriers, a byte one thread wrote must not be read or written
    // by another, nor one thread's read followed by another's write (the serial order here would hide it).
    const race = this.sharedRaceState(sBytes);
    const { wThread, wEpoch, rThread, rEpoch } = race;
    let cur = 0, epoch = 0;
    const raceFault = (kind: string, a: number, other: number): never => {
      throw new SimFault(`${k.name}: shared-memory race (${kind}) at byte ${a} between threads ${other} and ${cur} of block (${C.ctaid0}, ${C.ctaid1}, ${C.ctaid2}) with no bar.sync between them`);
    };
    const sRead = (a: number, n: number): number => {
      s(a, n);
      for (let b = a; b < a + n; b++) {
        if (wEpoch[b] === epoch && wThread[b] !== cur) raceFault("read after write", b, wThread[b]!);
        if (rEpoch[b] === epoch) { if (rThread[b] !== cur) rThread[b] = -2; } else { rEpoch[b] = epoch; rThread[b] = cur; }
      }
      return a;
    };
    const sWrite = (a: number, n: number): number => {
      s(a, n);
      for (let b = a; b < a + n; b++) {
        if (wEpoch[b] === epoch && wThread[b] !== cur) raceFault("write after write", b, wThread[b]!);
        if (rEpoch[b] === epoch && rThread[b] !== cur) raceFault("write after read", b, rThread[b]!);
        wEpoch[b] = epoch; wThread[b] = cur;
      }
      return a;
    };
    const C: BlockContext = {
      prm, ctaid0: 0, ctaid1: 0, ctaid2: 0, nctaid0: grid[0], nctaid1: grid[1], nctaid2: grid[2], ntid: nt,
      ldg8: (a) => dv.getUint8(g(a, 1)),
      ldg16: (a) => dv.getUint16(g(a, 2), true),
      ldg32: (a) => dv.getInt32(g(a, 4), true),
      ldg64: (a) => Number(dv.getBigInt64(g(a, 8), true)),
      stg16: (a, v) => dv.setUint16(g(a, 2), v, true),
      stg32: (a, v) => dv.setInt32(g(a, 4), v, true),
      stg64: (a, v) => dv.setBigInt64(g(a, 8), BigInt(v), true),
      lds16: (a) => sdv.getUint16(sRead(a, 2), true),
      lds32: (a) => sdv.getInt32(sRead(a, 4), true),
      sts16: (a, v) => sdv.setUint16(sWrite(a, 2), v, true),
      sts32: (a, v) => sdv.setInt32(sWrite(a, 4), v, true),
      misaligned: (a, n, space) => { throw new SimFault(`${k.name}: ${n}-byte vector ${space} access at 0x${a.toString(16)} is misaligned`); },
    };
    const threads = this.threadsFor(k, nt);
    const state = new Int8Array(nt);
    const READY = -1;
    const lanes: (Thread | null)[] = new Array(32).fill(null);
    for (let z = 0; z < grid[2]; z++) for (let y = 0; y < grid[1]; y++) for (let x = 0; x < grid[0]; x++) {
      C.ctaid0 = x; C.ctaid1 = y; C.ctaid2 = z;
      s8.fill(0xff);
      epoch = ++race.epoch;
      for (const t of threads) { t.pc = 0; t.n = 0; }
      state.fill(READY);
      this.stats.blocks++;
      this.stats.threads += nt;
      for (;;) {
        for (let w = 0; w * 32 < nt; w++) {
          const hi = Math.min(nt, w * 32 + 32);
          for (;;) {
            for (let t = w * 32; t < hi; t++) if (state[t] === READY) { cur = t; state[t] = k.run(threads[t]!, C); }
            let op = -1, atBarrier = false, atWarp = false;
            for (let t = w * 32; t < hi; t++) {
              if (state[t] === WAIT_WARP) {
                if (atWarp && threads[t]!.op !== op) throw new SimFault(`${k.name}: lanes of warp ${w} wait at different warp collectives (divergence)`);
                atWarp = true;
                op = threads[t]!.op;
              } else if (state[t] === WAIT_BARRIER) atBarrier = true;
            }
            if (!atWarp) break;
            if (atBarrier) throw new SimFault(`${k.name}: in warp ${w} some lanes wait at bar.sync while others wait at a warp collective`);
            for (let l = 0; l < 32; l++) {
              const t = w * 32 + l;
              lanes[l] = t < hi && state[t] === WAIT_WARP ? threads[t]! : null;
            }
            k.collectives[op]!(lanes, k.name);
            for (let t = w * 32; t < hi; t++) if (state[t] === WAIT_WARP) state[t] = READY;
          }
        }
        let waiting = false;
        for (let t = 0; t < nt; t++) if (state[t] === WAIT_BARRIER) { waiting = true; state[t] = READY; }
        if (!waiting) break;
        epoch = ++race.epoch;
      }
      for (let t = 0; t < nt; t++) if (state[t] !== WAIT_EXIT) throw new SimFault(`${k.name}: thread ${t} did not finish`);
    }
    this.current = "";
  }

  // ---- cuBLAS (column-major GEMM, as the real cublasGemmEx defines it) ----
  private blasHandles = new Map<bigint, { stream: bigint; workspace: bigint }>();
  cublasLibrary(): CublasLibrary {
    const OK = 0, INVALID = 7, NOT_SUPPORTED = 15, NOT_INITIALIZED = 1;
    const R32F = 0, R16BF = 14;
    const handleOf = (h: unknown) => this.blasHandles.get(h as bigint);
    return {
      path: "(simulated cuBLAS)",
      symbols: {
        cublasCreate_v2: (out: unknown) => { const h = this.handle(); this.blasHandles.set(h, { stream: 0n, workspace: 0n }); (out as BigUint64Array)[0] = h; return OK; },
        cublasDestroy_v2: (h: unknown) => (this.blasHandles.delete(h as bigint) ? OK : NOT_INITIALIZED),
        cublasSetStream_v2: (h: unknown, stream: unknown) => { const x = handleOf(h); if (!x) return NOT_INITIALIZED; x.stream = stream as bigint; x.workspace = 0n; return OK; },
        cublasSetWorkspace_v2: (h: unknown, ws: unknown, bytes: unknown) => { const x = handleOf(h); if (!x) return NOT_INITIALIZED; this.range(Number(ws), Number(bytes), "cublasSetWorkspace"); x.workspace = ws as bigint; return OK; },
        cublasSetMathMode: (h: unknown) => (handleOf(h) ? OK : NOT_INITIALIZED),
        cublasGemmEx: (...args: unknown[]) => {
          const [h, transa, transb, m, n, kk, alpha, A, Atype, lda, B, Btype, ldb, beta, Cp, Ctype, ldc, compute, algo] = args as
            [bigint, number, number, number, number, number, Float32Array, bigint, number, number, bigint, number, number, Float32Array, bigint, number, number, number, number];
          const x = handleOf(h);
          if (!x) return NOT_INITIALIZED;
          if (m < 0 || n < 0 || kk < 0) return INVALID;
          const aRows = transa === 0 ? m : kk, bRows = transb === 0 ? kk : n;
          if (lda < Math.max(1, aRows) || ldb < Math.max(1, bRows) || ldc < Math.max(1, m)) return INVALID;
          if (Atype !== R16BF || Btype !== R16BF || (Ctype !== R16BF && Ctype !== R32F) || compute !== 68 || algo !== -1) return NOT_SUPPORTED;
          this.gemm(x.stream, "cublasGemmEx", { transa, transb, m, n, k: kk, A, lda, B, ldb, C: Cp, ldc, cType: Ctype, alpha: alpha[0]!, beta: beta[0]! });
          return OK;
        },
      },
    };
  }

  /**
   * A column-major GEMM as cuBLAS defines it (C = α·op(A)·op(B) + β·C, bf16 A and B, bf16 or f32 C, f32
   * sums): pointers checked now (a bad one is an error at the call), data read when the stream runs it.
   */
  private gemm(stream: bigint, call: string, g: { transa: number; transb: number; m: number; n: number; k: number; A: bigint; lda: number; B: bigint; ldb: number; C: bigint; ldc: number; cType: number; alpha: number; beta: number }): void {
    const { transa, transb, m, n, k: kk, A, lda, B, ldb, C: Cp, ldc, cType, alpha: al, beta: be } = g;
    const R32F = 0;
    const aRows = transa === 0 ? m : kk, bRows = transb === 0 ? kk : n;
    const aCols = transa === 0 ? kk : m, bCols = transb === 0 ? n : kk;
    this.range(Number(A), ((aCols - 1) * lda + aRows) * 2, `${call} A`);
    this.range(Number(B), ((bCols - 1) * ldb + bRows) * 2, `${call} B`);
    const cBytes = cType === R32F ? 4 : 2;
    this.range(Number(Cp), ((n - 1) * ldc + m) * cBytes, `${call} C`);
    this.enqueue(stream, () => {
      this.stats.gemms++;
      const aOff = Number(A) - BASE, bOff = Number(B) - BASE, cOff = Number(Cp) - BASE;
      const bf = (o: number) => { F32B[0] = this.dv.getUint16(o, true) << 16; return F32V[0]!; };
      // op(A) as m×k row-major floats, op(B) as n×k.
      const a = new Float32Array(m * kk), b = new Float32Array(n * kk);
      for (let i = 0; i < m; i++) for (let l = 0; l < kk; l++) a[i * kk + l] = bf(aOff + 2 * (transa === 0 ? i + l * lda : l + i * lda));
      for (let j = 0; j < n; j++) for (let l = 0; l < kk; l++) b[j * kk + l] = bf(bOff + 2 * (transb === 0 ? l + j * ldb : j + l * ldb));
      for (let j = 0; j < n; j++) for (let i = 0; i < m; i++) {
        let sum = 0;
        const ai = i * kk, bj = j * kk;
        for (let l = 0; l < kk; l++) sum += a[ai + l]! * b[bj + l]!;
        const at = cOff + (i + j * ldc) * cBytes;
        const prev = be === 0 ? 0 : cType === R32F ? this.dv.getFloat32(at, true) : bf(at);
        const v = al * sum + be * prev;
        if (cType === R32F) this.dv.setFloat32(at, v, true);
        else this.dv.setUint16(at, f32ToBf16Bits(v), true);
      }
    });
  }

  // ---- cuBLASLt: opaque descriptors kept here; the heuristic offers SIM_LT_ALGOS candidates ----
  cublasLtLibrary(): CublasLtLibrary {
    const OK = 0, INVALID = 7, NOT_SUPPORTED = 15, NOT_INITIALIZED = 1;
    type Desc = { kind: "desc"; compute: number; scale: number; transa: number; transb: number };
    type Layout = { kind: "layout"; type: number; rows: number; cols: number; ld: number };
    type Pref = { kind: "pref"; maxWorkspace: number };
    const objects = new Map<bigint, Desc | Layout | Pref | { kind: "handle" }>();
    const get = <K extends string>(h: unknown, kind: K) => { const o = objects.get(h as bigint); return o && o.kind === kind ? (o as Extract<Desc | Layout | Pref | { kind: "handle" }, { kind: K }>) : null; };
    const make = (out: unknown, o: Desc | Layout | Pref | { kind: "handle" }) => { const h = this.handle(); objects.set(h, o); (out as BigUint64Array)[0] = h; return OK; };
    const destroy = (h: unknown, kind: string) => (objects.get(h as bigint)?.kind === kind && objects.delete(h as bigint) ? OK : INVALID);
    const i32At = (buf: unknown) => new Int32Array((buf as Int32Array).buffer, (buf as Int32Array).byteOffset, 1)[0]!;
    const algoId = (algo: Uint8Array) => new DataView(algo.buffer, algo.byteOffset, 64).getUint32(0, true);
    return {
      path: "(simulated cuBLASLt)",
      symbols: {
        cublasLtCreate: (out: unknown) => make(out, { kind: "handle" }),
        cublasLtDestroy: (h: unknown) => destroy(h, "handle"),
        cublasLtMatmulDescCreate: (out: unknown, compute: unknown, scale: unknown) => make(out, { kind: "desc", compute: compute as number, scale: scale as number, transa: 0, transb: 0 }),
        cublasLtMatmulDescSetAttribute: (h: unknown, attr: unknown, buf: unknown, size: unknown) => {
          const d = get(h, "desc");
          if (!d) return NOT_INITIALIZED;
          if ((attr === 3 || attr === 4) && size === 4n) { if (attr === 3) d.transa = i32At(buf); else d.transb = i32At(buf); return OK; }
          return INVALID;
        },
        cublasLtMatmulDescDestroy: (h: unknown) => destroy(h, "desc"),
        cublasLtMatrixLayoutCreate: (out: unknown, type: unknown, rows: unknown, cols: unknown, ld: unknown) => {
          const [r, c, l] = [Number(rows), Number(cols), Number(ld)];
          if (l < Math.max(1, r)) return INVALID;
          return make(out, { kind: "layout", type: type as number, rows: r, cols: c, ld: l });
        },
        cublasLtMatrixLayoutDestroy: (h: unknown) => destroy(h, "layout"),
        cublasLtMatmulPreferenceCreate: (out: unknown) => make(out, { kind: "pref", maxWorkspace: 0 }),
        cublasLtMatmulPreferenceSetAttribute: (h: unknown, attr: unknown, buf: unknown, size: unknown) => {
          const pr = get(h, "pref");
          if (!pr) return NOT_INITIALIZED;
          if (attr !== 1 || size !== 8n) return INVALID;
          const b = buf as ArrayBufferView;
          pr.maxWorkspace = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
          return OK;
        },
        cublasLtMatmulPreferenceDestroy: (h: unknown) => destroy(h, "pref"),
        cublasLtMatmulAlgoGetHeuristic: (...args: unknown[]) => {
          const [h, dh, ah, bh, ch, ddh, ph, requested, results, count] = args as [bigint, bigint, bigint, bigint, bigint, bigint, bigint, number, Uint8Array, Int32Array];
          const d = get(dh, "desc"), a = get(ah, "layout"), b = get(bh, "layout"), c = get(ch, "layout"), dd = get(ddh, "layout"), pr = get(ph, "pref");
          if (!get(h, "handle") || !d || !a || !b || !c || !dd || !pr) return NOT_INITIALIZED;
          // vbun's rule (cublaslt.ts): plans are made before capture, by the eager warm-up of the same shape.
          this.assertNotCapturing("cublasLtMatmulAlgoGetHeuristic");
          if (d.compute !== 68 || d.scale !== 0 || a.type !== 14 || b.type !== 14 || (dd.type !== 14 && dd.type !== 0) || c.type !== dd.type) { count[0] = 0; return NOT_SUPPORTED; }
          const n = Math.min(requested, SIM_LT_ALGOS);
          if (results.byteLength < n * 96) return INVALID;
          results.fill(0, 0, n * 96);
          const view = new DataView(results.buffer, results.byteOffset, n * 96);
          for (let i = 0; i < n; i++) {
            view.setUint32(i * 96, SIM_LT_ALGO_BASE + i, true);
            view.setBigUint64(i * 96 + 64, BigInt(Math.min(pr.maxWorkspace, i * 1024)), true); // workspaceSize
          }
          count[0] = n;
          return OK;
        },
        cublasLtMatmul: (...args: unknown[]) => {
          const [h, dh, alpha, A, ah, B, bh, beta, C, ch, D, ddh, algo, ws, wsBytes, stream] = args as
            [bigint, bigint, Float32Array, bigint, bigint, bigint, bigint, Float32Array, bigint, bigint, bigint, bigint, Uint8Array, bigint, bigint, bigint];
          const d = get(dh, "desc"), a = get(ah, "layout"), b = get(bh, "layout"), c = get(ch, "layout"), dd = get(ddh, "layout");
          if (!get(h, "handle") || !d || !a || !b || !c || !dd) return NOT_INITIALIZED;
          const id = algoId(algo);
          if (id < SIM_LT_ALGO_BASE || id >= SIM_LT_ALGO_BASE + SIM_LT_ALGOS) return INVALID; // not from the heuristic
          if (C !== D || c !== dd) return NOT_SUPPORTED; // the backend always writes in place
          const m = d.transa === 0 ? a.rows : a.cols, k = d.transa === 0 ? a.cols : a.rows;
          const kb = d.transb === 0 ? b.rows : b.cols, n = d.transb === 0 ? b.cols : b.rows;
          if (k !== kb || dd.rows !== m || dd.cols !== n) return INVALID;
          if (Number(wsBytes) > 0) this.range(Number(ws), Number(wsBytes), "cublasLtMatmul workspace");
          this.gemm(stream, "cublasLtMatmul", { transa: d.transa, transb: d.transb, m, n, k, A, lda: a.ld, B, ldb: b.ld, C: D, ldc: dd.ld, cType: dd.type, alpha: alpha[0]!, beta: beta[0]! });
          return OK;
        },
      },
    };
  }

  /** A Driver-shaped view of this device, for CudaBackend. */
  driver(): DeviceDriver {
    return new SimDriver(this);
  }
}

const F32V = new Float32Array(1), F32B = new Int32Array(F32V.buffer);
/** How many candidate algorithms the simulated cuBLASLt heuristic returns, and the ids they carry. */
const SIM_LT_ALGOS = 3, SIM_LT_ALGO_BASE = 0x51a0;

/** The Driver method surface over a SimDevice: one device, one context. */
class SimDriver implements DeviceDriver {
  readonly path = "(simulated GPU)";
  private readonly modules = new Map<bigint, Map<string, Kernel>>();
  private nextModule = 1n;
  constructor(private readonly sim: SimDevice) {}
  check(call: string, code: number): void {
    if (code !== 0) throw new Error(`${call} failed (${code})`);
  }
  driverVersion(): number { return 13000; }
  deviceCount(): number { return 1; }
  device(index: number): number {
    if (index !== 0) throw new SimFault(`cuDeviceGet(${index}): the simulator has one device`);
    return 0;
  }
  deviceName(): string { return "vbun GPU simulator"; }
  attribute(_dev: number, attr: number): number {
    return attr === 75 ? 9 : attr === 76 ? 0 : attr === 16 ? 132 : 0;
  }
  primaryContext(): bigint { return 1n; }
  setCurrent(): void {}
  synchronize(): void { this.sim.synchronizeAll(); }
  memInfo(): { free: number; total: number } {
    return { free: this.sim.totalMemory - this.sim.usedBytes(), total: this.sim.totalMemory };
  }
  alloc(bytes: number): bigint { return this.sim.alloc(Math.max(bytes, 1)); }
  free(dptr: bigint): void { this.sim.free(dptr); }
  allocHost(bytes: number): bigint { return this.sim.allocHost(Math.max(bytes, 1)); }
  freeHost(addr: bigint): void { this.sim.freeHost(addr); }
  copyToDevice(dst: bigint, src: ArrayBufferView): void {
    this.noCapture("cuMemcpyHtoD");
    this.sim.writeDevice(dst, new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
  }
  copyToHost(dst: ArrayBufferView, src: bigint): void {
    this.noCapture("cuMemcpyDtoH");
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(this.sim.readDevice(src, dst.byteLength));
  }
  copyToDeviceAsync(dst: bigint, hostAddr: bigint, bytes: number, stream: bigint): void { this.sim.copyToDeviceAsync(dst, hostAddr, bytes, stream); }
  copyToHostAsync(hostAddr: bigint, src: bigint, bytes: number, stream: bigint): void { this.sim.copyToHostAsync(hostAddr, src, bytes, stream); }
  copyOnDeviceAsync(dst: bigint, src: bigint, bytes: number, stream: bigint): void { this.sim.copyOnDeviceAsync(dst, src, bytes, stream); }
  memsetAsync(dst: bigint, byte: number, bytes: number, stream: bigint): void { this.sim.memsetAsync(dst, byte, bytes, stream); }
  loadModule(ptxText: string): bigint {
    const m = this.nextModule++;
    this.modules.set(m, this.sim.loadModule(ptxText));
    return m;
  }
  /** The simulator's "cubin" is the PTX text behind a marker (it has no machine code). */
  compilePtx(ptxText: string): Uint8Array {
    this.sim.stats.compiles++;
    return new TextEncoder().encode(SIM_IMAGE + ptxText);
  }
  loadImage(image: Uint8Array): bigint {
    const text = new TextDecoder().decode(image);
    if (!text.startsWith(SIM_IMAGE)) throw new SimFault("cuModuleLoadData: not an image the simulator made (CUDA_ERROR_INVALID_IMAGE)");
    return this.loadModule(text.slice(SIM_IMAGE.length));
  }
  unloadModule(module: bigint): void {
    if (!this.modules.delete(module)) throw new SimFault("cuModuleUnload of an unknown module");
  }
  getFunction(module: bigint, name: string): bigint {
    const k = this.modules.get(module)?.get(name);
    if (!k) throw new SimFault(`cuModuleGetFunction: no kernel '${name}' (CUDA_ERROR_NOT_FOUND)`);
    return this.sim.registerKernel(k);
  }
  setFunctionAttribute(): void {}
  launch(fn: bigint, grid: [number, number, number], block: [number, number, number], sharedBytes: number, stream: bigint, params: BigUint64Array, name: string): void {
    this.sim.launch(fn, grid, block, sharedBytes, stream, params, name);
  }
  createStream(): bigint { return this.sim.createStream(); }
  streamSynchronize(stream: bigint): void {
    this.sim.stats.streamSyncs++;
    this.sim.streamSynchronize(stream);
  }
  streamQuery(stream: bigint): boolean { return this.sim.streamQuery(stream); }
  beginCapture(stream: bigint): void { this.sim.beginCapture(stream); }
  endCapture(stream: bigint): bigint { return this.sim.endCapture(stream); }
  instantiate(graph: bigint): bigint { return this.sim.instantiate(graph); }
  graphLaunch(exec: bigint, stream: bigint): void { this.sim.graphLaunch(exec, stream); }
  destroyGraph(graph: bigint): void { this.sim.destroyGraph(graph); }
  destroyGraphExec(exec: bigint): void { this.sim.destroyGraph(exec); }
  createEvent(): bigint { return this.sim.createEvent(); }
  record(event: bigint, stream: bigint): void { this.sim.record(event, stream); }
  eventSynchronize(event: bigint): void { this.sim.eventSynchronize(event); }
  elapsedMs(start: bigint, end: bigint): number {
    this.sim.synchronizeAll();
    return this.sim.eventTime(end) - this.sim.eventTime(start);
  }
  /** Synchronous copies are prohibited while this thread captures (CU_STREAM_CAPTURE_MODE_THREAD_LOCAL). */
  private noCapture(call: string): void {
    this.sim.assertNotCapturing(call);
  }
}

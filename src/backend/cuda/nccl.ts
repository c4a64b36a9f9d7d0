/**
 * NCCL through bun:ffi, for tensor parallelism across GPUs: communicators for all devices from one
 * process (ncclCommInitAll: no unique id to pass by value), all-reduce and all-gather, and their end:
 * ncclCommDestroy after a clean shutdown, ncclCommAbort when a rank failed (its peers' kernels would
 * otherwise wait for it forever).
 */
import { CString, type Pointer } from "bun:ffi";
import { openLibrary } from "./libraries.ts";

const i32 = "i32", u64 = "u64", p = "ptr";
/** Every NCCL entry point vbun binds (test/ffi-signatures.test.ts checks them against nccl.h). */
export const NCCL_SYMBOLS = {
  ncclGetVersion: { args: [p], returns: i32 },
  ncclCommInitAll: { args: [p, i32, p], returns: i32 },
  ncclCommDestroy: { args: [u64], returns: i32 },
  ncclCommAbort: { args: [u64], returns: i32 },
  ncclAllReduce: { args: [u64, u64, u64, i32, i32, u64, u64], returns: i32 },
  ncclAllGather: { args: [u64, u64, u64, i32, u64, u64], returns: i32 },
  ncclGroupStart: { args: [], returns: i32 },
  ncclGroupEnd: { args: [], returns: i32 },
  ncclGetErrorString: { args: [i32], returns: p },
} as const;
const SYMBOLS = NCCL_SYMBOLS;

export const NCCL_FLOAT32 = 7, NCCL_BFLOAT16 = 9, NCCL_SUM = 0;

export class NcclError extends Error {
  constructor(readonly call: string, readonly code: number, detail: string) {
    super(`${call} failed: ${detail} (ncclResult ${code})`);
    this.name = "NcclError";
  }
}

type Fns = Record<keyof typeof SYMBOLS, (...a: unknown[]) => number>;

/** One rank's collective call on its stream. */
export interface NcclCall { send: bigint; recv: bigint; count: number; dtype: number; comm: bigint; stream: bigint }

/** What tensor parallelism needs from NCCL: the real library, or the test suite's GPU simulator. */
export interface NcclApi {
  readonly path: string;
  /** Communicators for devices `devices` of this process (called once, by the leader). */
  initAll(devices: number[]): bigint[];
  /** In-place or out-of-place sum over the communicators' ranks (several from one thread: grouped). */
  allReduce(calls: NcclCall[]): void;
  /** recv[rank · count …] = each rank's send[0 … count) (count is per rank). */
  allGather(call: NcclCall): void;
  /** Frees a communicator after its work has finished (a clean shutdown). */
  destroy(comm: bigint): void;
  /** Frees a communicator and makes its unfinished collectives on the GPU give up (a rank failed). */
  abort(comm: bigint): void;
  /** What a worker thread needs to reach the same communicators (the simulator's shared memory); null for the library. */
  readonly workerData: unknown;
}

export class Nccl implements NcclApi {
  readonly workerData = null;
  readonly path: string;
  private readonly fn: Fns;

  constructor() {
    const { path, library } = openLibrary("nccl", SYMBOLS as never);
    this.path = path;
    this.fn = (library as unknown as { symbols: Fns }).symbols;
  }

  private check(call: string, code: number): void {
    if (code === 0) return;
    const msg = (this.fn.ncclGetErrorString as unknown as (c: number) => Pointer | null)(code);
    throw new NcclError(call, code, msg ? new CString(msg).toString() : "unknown error");
  }

  version(): number {
    const v = new Int32Array(1);
    this.check("ncclGetVersion", this.fn.ncclGetVersion(v));
    return v[0]!;
  }

  /** One communicator per device in `devices` (ordinals), all in this process. */
  initAll(devices: number[]): bigint[] {
    const comms = new BigUint64Array(devices.length);
    this.check("ncclCommInitAll", this.fn.ncclCommInitAll(comms, devices.length, Int32Array.from(devices)));
    return Array.from(comms);
  }

  /** In-place or out-of-place sum over the communicators' ranks (several from one thread: grouped). */
  allReduce(calls: NcclCall[]): void {
    if (calls.length > 1) this.check("ncclGroupStart", this.fn.ncclGroupStart());
    for (const c of calls) this.check("ncclAllReduce", this.fn.ncclAllReduce(c.send, c.recv, BigInt(c.count), c.dtype, NCCL_SUM, c.comm, c.stream));
    if (calls.length > 1) this.check("ncclGroupEnd", this.fn.ncclGroupEnd());
  }

  allGather(c: NcclCall): void {
    this.check("ncclAllGather", this.fn.ncclAllGather(c.send, c.recv, BigInt(c.count), c.dtype, c.comm, c.stream));
  }

  destroy(comm: bigint): void {
    this.check("ncclCommDestroy", this.fn.ncclCommDestroy(comm));
  }

  abort(comm: bigint): void {
    this.check("ncclCommAbort", this.fn.ncclCommAbort(comm));
  }
}

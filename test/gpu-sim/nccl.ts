/**
 * NCCL for simulated GPUs: each rank's all-reduce / all-gather is queued on its stream like the real call
 * and, when that stream runs it, meets the other ranks' calls in shared memory (ranks are Worker threads,
 * each with its own SimDevice). Sums are taken in rank order in f32 and rounded to the buffer's dtype, so
 * every rank gets identical bits. A collective stays unfinished on its stream until all ranks' calls have
 * arrived; an aborted communicator's collectives give up at once.
 */
import type { NcclApi, NcclCall } from "../../src/backend/cuda/nccl.ts";
import { NCCL_BFLOAT16, NCCL_FLOAT32 } from "../../src/backend/cuda/nccl.ts";
import { SimFault, type SimDevice } from "./device.ts";
import { fromFloat32, toFloat32 } from "../../src/loader/dtype.ts";

const COUNT = 0, GEN = 1, CLOSED = 2;

export interface SimNcclShared { ctl: SharedArrayBuffer; data: SharedArrayBuffer; size: number; maxFloats: number }

export class SimNccl implements NcclApi {
  readonly path = "(simulated NCCL)";
  private shared: SimNcclShared | null;
  private ctl: Int32Array<ArrayBufferLike> = new Int32Array(0);
  private data: Float32Array<ArrayBufferLike> = new Float32Array(0);

  /** `shared`: the leader's communicators (in a worker), or null in the leader before initAll; `device()` is this thread's GPU. */
  constructor(shared: SimNcclShared | null, private readonly device: () => SimDevice, private readonly maxFloats = 1 << 21) {
    this.shared = shared;
    if (shared) this.attach(shared);
  }

  private attach(shared: SimNcclShared): void {
    this.shared = shared;
    this.ctl = new Int32Array(shared.ctl);
    this.data = new Float32Array(shared.data);
  }

  get workerData(): SimNcclShared | null {
    return this.shared;
  }

  private get size(): number {
    if (!this.shared) throw new SimFault("simulated NCCL used before ncclCommInitAll");
    return this.shared.size;
  }

  initAll(devices: number[]): bigint[] {
    const size = devices.length;
    this.attach({ ctl: new SharedArrayBuffer(16), data: new SharedArrayBuffer(size * this.maxFloats * 4), size, maxFloats: this.maxFloats });
    return devices.map((_, r) => BigInt(r + 1));
  }

  /** Communicators of this thread that were destroyed or aborted (using one again is a fault, as in NCCL). */
  private readonly closed = new Set<bigint>();

  private close(comm: bigint, call: string): void {
    if (this.closed.has(comm)) throw new SimFault(`${call} of a communicator already destroyed or aborted`);
    this.closed.add(comm);
    Atomics.add(this.ctl, CLOSED, 1);
  }

  destroy(comm: bigint): void {
    this.close(comm, "ncclCommDestroy");
  }

  /** Like ncclCommAbort: this rank's queued collectives on `comm` finish at once, without data. */
  abort(comm: bigint): void {
    this.close(comm, "ncclCommAbort");
  }

  /** Communicators destroyed or aborted so far, over all threads. */
  closedCount(): number {
    return Atomics.load(this.ctl, CLOSED);
  }

  private checkOpen(comm: bigint, call: string): void {
    if (this.closed.has(comm)) throw new SimFault(`${call} on a communicator already destroyed or aborted`);
  }

  /** Arrives at the ranks' barrier; returns the generation to wait past. */
  private arrive(): number {
    const gen = Atomics.load(this.ctl, GEN);
    if (Atomics.add(this.ctl, COUNT, 1) === this.size - 1) {
      Atomics.store(this.ctl, COUNT, 0);
      Atomics.add(this.ctl, GEN, 1);
    }
    return gen;
  }

  /**
   * A collective as stream work: deposit this rank's data and arrive; once all ranks have, combine and
   * arrive again; done once all have read the slots. Until then the op reports "not finished", as an NCCL
   * kernel spins waiting for its peers. An aborted communicator's op finishes at once. The op resets itself
   * when done, so a graph can replay it.
   */
  private collective(comm: bigint, deposit: () => void, combine: () => void): () => boolean {
    let phase = 0, gen = 0;
    return () => {
      if (this.closed.has(comm)) { phase = 0; return true; }
      if (phase === 0) { deposit(); gen = this.arrive(); phase = 1; }
      if (phase === 1) {
        if (Atomics.load(this.ctl, GEN) === gen) return false;
        combine();
        gen = this.arrive();
        phase = 2;
      }
      if (Atomics.load(this.ctl, GEN) === gen) return false;
      phase = 0;
      return true;
    };
  }

  private read(dev: SimDevice, ptr: bigint, count: number, dtype: number): Float32Array {
    if (dtype === NCCL_FLOAT32) return new Float32Array(dev.readDevice(ptr, count * 4).buffer);
    if (dtype !== NCCL_BFLOAT16) throw new SimFault(`simulated NCCL: dtype ${dtype} not supported`);
    return toFloat32(dev.readDevice(ptr, count * 2), "BF16");
  }

  private write(dev: SimDevice, ptr: bigint, values: Float32Array, dtype: number): void {
    dev.writeDevice(ptr, fromFloat32(values, dtype === NCCL_FLOAT32 ? "F32" : "BF16"));
  }

  private slot(rank: number, count: number): Float32Array {
    if (count > this.shared!.maxFloats) throw new SimFault(`simulated NCCL: ${count} elements exceed the ${this.shared!.maxFloats} it was made for`);
    return this.data.subarray(rank * this.shared!.maxFloats, rank * this.shared!.maxFloats + count);
  }

  allReduce(calls: NcclCall[]): void {
    if (calls.length !== 1) throw new SimFault("simulated NCCL: one communicator per thread");
    const c = calls[0]!, dev = this.device(), rank = Number(c.comm) - 1, size = this.size;
    this.checkOpen(c.comm, "ncclAllReduce");
    dev.enqueue(c.stream, this.collective(c.comm, () => this.slot(rank, c.count).set(this.read(dev, c.send, c.count, c.dtype)), () => {
      const sum = new Float32Array(c.count);
      for (let r = 0; r < size; r++) {
        const s = this.slot(r, c.count);
        for (let i = 0; i < c.count; i++) sum[i] = sum[i]! + s[i]!;
      }
      this.write(dev, c.recv, sum, c.dtype);
    }));
  }

  allGather(c: NcclCall): void {
    const dev = this.device(), rank = Number(c.comm) - 1, size = this.size;
    this.checkOpen(c.comm, "ncclAllGather");
    dev.enqueue(c.stream, this.collective(c.comm, () => this.slot(rank, c.count).set(this.read(dev, c.send, c.count, c.dtype)), () => {
      const all = new Float32Array(size * c.count);
      for (let r = 0; r < size; r++) all.set(this.slot(r, c.count), r * c.count);
      this.write(dev, c.recv, all, c.dtype);
    }));
  }
}

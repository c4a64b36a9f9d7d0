/**
 * Tensor parallelism on CPU threads: a barrier, an all-reduce and a logits gather over SharedArrayBuffers,
 * plus the command block the leader (rank 0) uses to drive its workers. No per-step messages: the leader
 * writes step inputs into shared int32 arrays and bumps a command sequence number (Atomics.notify).
 * A failing rank stores its error and sets ABORT, which wakes every waiter and makes it throw.
 */
import type { CpuTensor } from "../backend/cpu/cpu-backend.ts";
import type { Collective } from "../model/causal-lm.ts";

// Control words (Int32Array indices).
export const GEN = 0, COUNT = 1, ABORT = 2, CMD_SEQ = 3, CMD = 4, READY = 5, ERR_RANK = 6, ERR_LEN = 7;
export const ARG0 = 8; // command arguments: ARG0 … ARG0 + 7
/** Workers that have received their init message and begun (a worker whose module fails to load never does). */
export const STARTED = 16;
export const CMD_STEP = 1, CMD_ALLOC_KV = 2, CMD_RESERVE = 3, CMD_SHUTDOWN = 4, CMD_CAPTURE = 5, CMD_LORA_SLOT = 6;
const CTL_WORDS = 17, ERR_BYTES = 4096;
/** Room for a command's text argument (TEXT_BYTES of UTF-8, e.g. a LoRA adapter's name and directory as JSON). */
export const TEXT_BYTES = 16384;

export interface SharedBuffers {
  ctl: SharedArrayBuffer;
  err: SharedArrayBuffer;
  reduce: SharedArrayBuffer;
  logits: SharedArrayBuffer;
  inputs: SharedArrayBuffer;
  /** A command's text argument (CMD_LORA_SLOT: the adapter's name and directory). */
  text: SharedArrayBuffer;
}

export interface SharedSizes {
  size: number;
  /** Largest all-reduce, in floats (max tokens × hidden size). */
  maxReduce: number;
  /** Largest logits gather through shared memory (CPU ranks; 0 on GPUs): rows × vocabulary. */
  maxLogitsRows: number;
  /** Logits rows of a step at most (a row per sampling sequence, and per draft token with speculative decoding). */
  maxRows: number;
  vocabSize: number;
  /** Vocabulary rows per rank (the last rank may hold fewer). */
  vocabPerRank: number;
  maxTokens: number;
  maxSeqs: number;
  maxBlocksPerSeq: number;
  /** KV cache groups (hybrid layouts: a slot mapping and block tables each). */
  numKvGroups: number;
}

export function createSharedBuffers(s: SharedSizes): SharedBuffers {
  const inputWords = (4 + s.numKvGroups - 1) * s.maxTokens + (s.maxSeqs + 1) + s.maxSeqs + s.numKvGroups * s.maxSeqs * s.maxBlocksPerSeq + s.maxRows;
  return {
    ctl: new SharedArrayBuffer(CTL_WORDS * 4),
    err: new SharedArrayBuffer(ERR_BYTES),
    reduce: new SharedArrayBuffer(s.size * s.maxReduce * 4),
    logits: new SharedArrayBuffer(s.maxLogitsRows * s.vocabSize * 4),
    inputs: new SharedArrayBuffer(inputWords * 4),
    text: new SharedArrayBuffer(TEXT_BYTES),
  };
}

const hungRankMessage = (timeoutMs: number) => `tensor parallelism: a rank did not arrive within ${timeoutMs / 1000} s (VBUN_TP_TIMEOUT); the group is stopped`;

export class TensorParallelError extends Error {
  constructor(readonly failedRank: number, message: string) {
    super(`tensor-parallel rank ${failedRank} failed: ${message}`);
    this.name = "TensorParallelError";
  }
}

export class SharedCollective implements Collective<CpuTensor> {
  readonly ctl: Int32Array;
  private readonly errBytes: Uint8Array;
  private readonly slots: Float32Array[];
  private readonly logits: Float32Array;

  constructor(readonly rank: number, readonly sizes: SharedSizes, readonly buffers: SharedBuffers) {
    this.ctl = new Int32Array(buffers.ctl);
    this.errBytes = new Uint8Array(buffers.err);
    this.slots = Array.from({ length: sizes.size }, (_, r) => new Float32Array(buffers.reduce, r * sizes.maxReduce * 4, sizes.maxReduce));
    this.logits = new Float32Array(buffers.logits);
  }

  get size(): number {
    return this.sizes.size;
  }

  /** Throws the failing rank's error if any rank has aborted. */
  checkAbort(): void {
    if (Atomics.load(this.ctl, ABORT) === 0) return;
    // 2: the failing rank is still writing its error (abort() below); its rank and message come with 1.
    while (Atomics.load(this.ctl, ABORT) === 2) Atomics.wait(this.ctl, ABORT, 2, 1);
    const len = Atomics.load(this.ctl, ERR_LEN);
    throw new TensorParallelError(Atomics.load(this.ctl, ERR_RANK), new TextDecoder().decode(this.errBytes.slice(0, len)));
  }

  /** Records this rank's failure and wakes everyone. */
  abort(error: unknown): void {
    const msg = new TextEncoder().encode((error as Error)?.message ?? String(error)).slice(0, ERR_BYTES);
    if (Atomics.compareExchange(this.ctl, ABORT, 0, 2) !== 0) return;
    this.errBytes.set(msg);
    Atomics.store(this.ctl, ERR_LEN, msg.length);
    Atomics.store(this.ctl, ERR_RANK, this.rank);
    Atomics.store(this.ctl, ABORT, 1);
    for (const w of [ABORT, GEN, CMD_SEQ, READY]) Atomics.notify(this.ctl, w);
  }

  /**
   * How long a barrier (and so a collective) waits for the other ranks before declaring one hung: set by
   * the leader ($VBUN_TP_TIMEOUT); the workers wait as long as it takes (the leader stops them).
   */
  timeoutMs = Infinity;

  /** Waits until ctl[index] != value, checking for aborts (and giving up after `timeoutMs`, with `timeoutMessage`). */
  waitChange(index: number, value: number, timeoutMs = Infinity, timeoutMessage?: string): void {
    const deadline = performance.now() + timeoutMs;
    while (Atomics.load(this.ctl, index) === value) {
      this.checkAbort();
      if (performance.now() > deadline) throw new Error(timeoutMessage ?? hungRankMessage(timeoutMs));
      Atomics.wait(this.ctl, index, value, 100);
    }
    this.checkAbort();
  }

  /**
   * Waits until the counter ctl[index] (workers counting themselves in) reaches `count`, checking for
   * aborts; gives up `timeoutMs` after the call, with `timeoutMessage(how many came)`.
   */
  waitCount(index: number, count: number, timeoutMs: number, timeoutMessage: (have: number) => string = () => hungRankMessage(timeoutMs)): void {
    const deadline = performance.now() + timeoutMs;
    for (let have = Atomics.load(this.ctl, index); have < count; have = Atomics.load(this.ctl, index)) {
      this.waitChange(index, have, deadline - performance.now(), timeoutMessage(have));
    }
  }

  barrier(timeoutMs = this.timeoutMs): void {
    const gen = Atomics.load(this.ctl, GEN);
    if (Atomics.add(this.ctl, COUNT, 1) === this.size - 1) {
      Atomics.store(this.ctl, COUNT, 0);
      Atomics.add(this.ctl, GEN, 1);
      Atomics.notify(this.ctl, GEN);
    } else this.waitChange(GEN, gen, timeoutMs);
    this.checkAbort();
  }

  allReduce(t: CpuTensor): void {
    const n = t.data.length;
    if (n > this.sizes.maxReduce) throw new Error(`all-reduce of ${n} floats exceeds the shared buffer (${this.sizes.maxReduce})`);
    this.slots[this.rank]!.set(t.data);
    this.barrier();
    // Every rank sums the slots in rank order, so all ranks hold bit-identical results.
    const out = t.data;
    out.set(this.slots[0]!.subarray(0, n));
    for (let r = 1; r < this.size; r++) {
      const s = this.slots[r]!;
      for (let i = 0; i < n; i++) out[i] = out[i]! + s[i]!;
    }
    this.barrier();
  }

  gatherLogits(local: CpuTensor, full: CpuTensor, numRows: number): void {
    const V = this.sizes.vocabSize, width = local.shape[1]!, start = this.rank * this.sizes.vocabPerRank;
    if (numRows > this.sizes.maxLogitsRows) throw new Error(`logits gather of ${numRows} rows exceeds the shared buffer (${this.sizes.maxLogitsRows})`);
    for (let i = 0; i < numRows; i++) this.logits.set(local.data.subarray(i * width, (i + 1) * width), i * V + start);
    this.barrier();
    if (this.rank === 0) full.data.set(this.logits.subarray(0, numRows * V));
    this.barrier();
  }
}

/** Views of the shared step-input arrays (the same layout on every rank). */
export function inputViews(buffers: SharedBuffers, s: SharedSizes) {
  let off = 0;
  const take = (n: number) => { const a = new Int32Array(buffers.inputs, off * 4, n); off += n; return a; };
  return {
    tokenIds: take(s.maxTokens), positions: take(s.maxTokens), slotMapping: take(s.maxTokens),
    queryStart: take(s.maxSeqs + 1), seqLens: take(s.maxSeqs), blockTables: take(s.maxSeqs * s.maxBlocksPerSeq), logitsRows: take(s.maxRows),
    loraSlots: take(s.maxTokens),
    kvGroups: Array.from({ length: s.numKvGroups - 1 }, () => ({ slotMapping: take(s.maxTokens), blockTables: take(s.maxSeqs * s.maxBlocksPerSeq) })),
  };
}

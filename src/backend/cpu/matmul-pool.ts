/**
 * Uses more cores for large CPU matrix products: helper Workers each compute a contiguous range of the output
 * features while the caller computes the first, all with the same kernel, so results are bit-identical to a single
 * thread. Buffers are SharedArrayBuffers, registered with every helper once. Small products stay on one thread (below
 * ~2M multiply-adds the hand-off costs more than it saves), and a product takes one thread per ~1M multiply-adds.
 */
import { CPU_MATMUL_WORKER_URL, workerOptions } from "../../worker-url.ts";
import { matmulTransposed } from "./kernels.ts";
import { EngineConfigError } from "../../engine/engine-config.ts";

// Control words.
const SEQ = 0, DONE = 1, ACK = 2, FAILED = 3;
const A_X = 4, A_XOFF = 5, A_N = 6, A_IN = 7, A_W = 8, A_WOFF = 9, A_OUTF = 10, A_B = 11, A_BOFF = 12, A_O = 13, A_OOFF = 14, A_START = 15, A_END = 16;
export const MATMUL_CTL_WORDS = 20;
export { SEQ, DONE, ACK, FAILED, A_X, A_XOFF, A_N, A_IN, A_W, A_WOFF, A_OUTF, A_B, A_BOFF, A_O, A_OOFF, A_START, A_END };

/** Products smaller than this (multiply-adds) run on one thread. */
export const PARALLEL_MIN_WORK = 2_000_000;

/** Blocks until a helper's control word `word` reaches `value`; throws if the helper has failed. */
function waitFor(ctl: Int32Array, word: number, value: number): void {
  while (Atomics.load(ctl, word) < value) {
    if (Atomics.load(ctl, FAILED)) throw new Error("a matmul helper thread failed");
    Atomics.wait(ctl, word, Atomics.load(ctl, word), 1000);
  }
}

/** One helper thread and its control words (see cpu-matmul-worker.ts). */
interface Helper {
  worker: Worker;
  ctl: Int32Array;
  seq: number;
}

export class MatmulPool {
  private readonly helpers: Helper[] = [];
  private readonly ids = new WeakMap<SharedArrayBuffer, number>();
  private nextId = 1;
  private closed = false;

  /** `helpers` threads beside the caller's. */
  constructor(helpers = 1) {
    for (let i = 0; i < Math.max(1, helpers); i++) {
      const ctl = new Int32Array(new SharedArrayBuffer(MATMUL_CTL_WORDS * 4));
      const worker = new Worker(CPU_MATMUL_WORKER_URL, workerOptions());
      worker.postMessage({ type: "init", ctl: ctl.buffer });
      worker.unref();
      this.helpers.push({ worker, ctl, seq: 0 });
    }
  }

  /** The threads a product may use: the helpers and the caller. */
  get threads(): number {
    return this.helpers.length + 1;
  }

  private idOf(a: Float32Array): number {
    const buf = a.buffer as SharedArrayBuffer;
    let id = this.ids.get(buf);
    if (id !== undefined) return id;
    id = this.nextId++;
    this.ids.set(buf, id);
    for (const h of this.helpers) h.worker.postMessage({ type: "register", id, buf });
    // The helpers' event loops are free between products: wait for their acknowledgements.
    for (const h of this.helpers) waitFor(h.ctl, ACK, id);
    return id;
  }

  /** Whether this product is worth splitting (and its buffers are shareable). */
  accepts(x: Float32Array, n: number, inF: number, outF: number, w: Float32Array, bias: Float32Array | null, out: Float32Array): boolean {
    return !this.closed && n * inF * outF >= PARALLEL_MIN_WORK && outF >= 2 && [x, w, out, ...(bias ? [bias] : [])].every((a) => a.buffer instanceof SharedArrayBuffer);
  }

  /** out = x · wᵀ + bias, its output features in contiguous ranges over the caller and the helpers. */
  linear(x: Float32Array, n: number, inF: number, w: Float32Array, outF: number, bias: Float32Array | null, out: Float32Array): void {
    const t = Math.min(this.threads, outF, Math.max(2, Math.floor((n * inF * outF) / (PARALLEL_MIN_WORK / 2))));
    const bound = (k: number) => Math.floor((k * outF) / t);
    const ids = [this.idOf(x), this.idOf(w), bias ? this.idOf(bias) : 0, this.idOf(out)];
    for (let k = 1; k < t; k++) {
      const h = this.helpers[k - 1]!, c = h.ctl;
      const set = (i: number, v: number) => Atomics.store(c, i, v);
      set(A_X, ids[0]!); set(A_XOFF, x.byteOffset / 4); set(A_N, n); set(A_IN, inF);
      set(A_W, ids[1]!); set(A_WOFF, w.byteOffset / 4); set(A_OUTF, outF);
      set(A_B, ids[2]!); if (bias) set(A_BOFF, bias.byteOffset / 4);
      set(A_O, ids[3]!); set(A_OOFF, out.byteOffset / 4); set(A_START, bound(k)); set(A_END, bound(k + 1));
      Atomics.store(c, SEQ, ++h.seq);
      Atomics.notify(c, SEQ);
    }
    matmulTransposed(x, n, inF, w, outF, bias, out, 0, bound(1));
    for (let k = 1; k < t; k++) waitFor(this.helpers[k - 1]!.ctl, DONE, this.helpers[k - 1]!.seq);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.helpers) h.worker.terminate();
  }
}

/**
 * The CPU backend's threads for large matrix products: $VBUN_CPU_THREADS, or the machine's logical cores up to 8 (the
 * products are bound by memory bandwidth, which more threads than that rarely add to).
 */
export function defaultCpuThreads(env: Record<string, string | undefined> = process.env): number {
  const v = env.VBUN_CPU_THREADS;
  if (v === undefined || v === "") return Math.max(1, Math.min(8, navigator.hardwareConcurrency || 1));
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new EngineConfigError("VBUN_CPU_THREADS", `must be an integer from 1 to 256, got '${v}'`);
  return n;
}

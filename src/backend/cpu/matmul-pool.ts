/**
 * Uses the second core for large CPU matrix products: a helper Worker computes the upper half of the
 * output features while the caller computes the lower half, both with the same kernel, so results are
 * bit-identical to a single thread. Buffers are SharedArrayBuffers, registered with the helper once.
 * Small products stay on one thread (below ~2M multiply-adds the hand-off costs more than it saves).
 */
import { CPU_MATMUL_WORKER_URL, workerOptions } from "../../worker-url.ts";
import { matmulTransposed } from "./kernels.ts";

// Control words.
const SEQ = 0, DONE = 1, ACK = 2, FAILED = 3;
const A_X = 4, A_XOFF = 5, A_N = 6, A_IN = 7, A_W = 8, A_WOFF = 9, A_OUTF = 10, A_B = 11, A_BOFF = 12, A_O = 13, A_OOFF = 14, A_START = 15, A_END = 16;
export const MATMUL_CTL_WORDS = 20;
export { SEQ, DONE, ACK, FAILED, A_X, A_XOFF, A_N, A_IN, A_W, A_WOFF, A_OUTF, A_B, A_BOFF, A_O, A_OOFF, A_START, A_END };

/** Products smaller than this (multiply-adds) run on one thread. */
export const PARALLEL_MIN_WORK = 2_000_000;

export class MatmulPool {
  private readonly worker: Worker;
  private readonly ctl = new Int32Array(new SharedArrayBuffer(MATMUL_CTL_WORDS * 4));
  private readonly ids = new WeakMap<SharedArrayBuffer, number>();
  private nextId = 1;
  private seq = 0;
  private closed = false;

  constructor() {
    this.worker = new Worker(CPU_MATMUL_WORKER_URL, workerOptions());
    this.worker.postMessage({ type: "init", ctl: this.ctl.buffer });
    this.worker.unref();
  }

  private idOf(a: Float32Array): number {
    const buf = a.buffer as SharedArrayBuffer;
    let id = this.ids.get(buf);
    if (id !== undefined) return id;
    id = this.nextId++;
    this.ids.set(buf, id);
    this.worker.postMessage({ type: "register", id, buf });
    // The helper's event loop is free between products: wait for its acknowledgement.
    while (Atomics.load(this.ctl, ACK) < id) {
      if (Atomics.load(this.ctl, FAILED)) throw new Error("the matmul helper thread failed");
      Atomics.wait(this.ctl, ACK, Atomics.load(this.ctl, ACK), 1000);
    }
    return id;
  }

  /** Whether this product is worth splitting (and its buffers are shareable). */
  accepts(x: Float32Array, n: number, inF: number, outF: number, w: Float32Array, bias: Float32Array | null, out: Float32Array): boolean {
    return !this.closed && n * inF * outF >= PARALLEL_MIN_WORK && outF >= 2 && [x, w, out, ...(bias ? [bias] : [])].every((a) => a.buffer instanceof SharedArrayBuffer);
  }

  /** out = x · wᵀ + bias over two threads. */
  linear(x: Float32Array, n: number, inF: number, w: Float32Array, outF: number, bias: Float32Array | null, out: Float32Array): void {
    const c = this.ctl;
    const split = outF >> 1;
    const set = (i: number, v: number) => Atomics.store(c, i, v);
    set(A_X, this.idOf(x)); set(A_XOFF, x.byteOffset / 4); set(A_N, n); set(A_IN, inF);
    set(A_W, this.idOf(w)); set(A_WOFF, w.byteOffset / 4); set(A_OUTF, outF);
    if (bias) { set(A_B, this.idOf(bias)); set(A_BOFF, bias.byteOffset / 4); } else set(A_B, 0);
    set(A_O, this.idOf(out)); set(A_OOFF, out.byteOffset / 4); set(A_START, split); set(A_END, outF);
    const seq = ++this.seq;
    Atomics.store(c, SEQ, seq);
    Atomics.notify(c, SEQ);
    matmulTransposed(x, n, inF, w, outF, bias, out, 0, split);
    while (Atomics.load(c, DONE) < seq) {
      if (Atomics.load(c, FAILED)) throw new Error("the matmul helper thread failed");
      Atomics.wait(c, DONE, Atomics.load(c, DONE), 1000);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.worker.terminate();
  }
}

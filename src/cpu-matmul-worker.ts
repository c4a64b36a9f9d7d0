/** One of the CPU backend's helper threads: computes a range of a large matrix product's output features (see matmul-pool.ts). */
import { matmulTransposed } from "./backend/cpu/kernels.ts";
import { A_B, A_BOFF, A_END, A_IN, A_N, A_O, A_OOFF, A_OUTF, A_START, A_W, A_WOFF, A_X, A_XOFF, ACK, DONE, FAILED, SEQ } from "./backend/cpu/matmul-pool.ts";

declare const self: Worker;

const buffers = new Map<number, SharedArrayBuffer>();
let ctl: Int32Array;

async function loop(): Promise<void> {
  let seq = 0;
  for (;;) {
    const r = Atomics.waitAsync(ctl, SEQ, seq);
    if (r.async) await r.value;
    seq = Atomics.load(ctl, SEQ);
    try {
      const a = (i: number) => Atomics.load(ctl, i);
      const view = (id: number, off: number, len: number) => new Float32Array(buffers.get(id)!, off * 4, len);
      const n = a(A_N), inF = a(A_IN), outF = a(A_OUTF);
      const x = view(a(A_X), a(A_XOFF), n * inF), w = view(a(A_W), a(A_WOFF), outF * inF), out = view(a(A_O), a(A_OOFF), n * outF);
      const bias = a(A_B) ? view(a(A_B), a(A_BOFF), outF) : null;
      matmulTransposed(x, n, inF, w, outF, bias, out, a(A_START), a(A_END));
    } catch {
      Atomics.store(ctl, FAILED, 1);
    }
    Atomics.store(ctl, DONE, seq);
    Atomics.notify(ctl, DONE);
  }
}

self.onmessage = (ev: MessageEvent<{ type: "init"; ctl: SharedArrayBuffer } | { type: "register"; id: number; buf: SharedArrayBuffer }>) => {
  const m = ev.data;
  if (m.type === "init") {
    ctl = new Int32Array(m.ctl);
    void loop();
  } else {
    buffers.set(m.id, m.buf);
    Atomics.store(ctl, ACK, m.id);
    Atomics.notify(ctl, ACK);
  }
};

import { expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { PARALLEL_MIN_WORK } from "../src/backend/cpu/matmul-pool.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

test("a large product on two threads equals the single-threaded one bit for bit", () => {
  const two = new CpuBackend({ threads: 2 }), one = new CpuBackend({ threads: 1 });
  const rng = new SeededRandom(9);
  const n = 7, inF = 96, outF = 4099;
  expect(n * inF * outF).toBeGreaterThan(PARALLEL_MIN_WORK);
  const x = rng.normal(new Float32Array(n * inF), 1), w = rng.normal(new Float32Array(outF * inF), 0.1), b = rng.normal(new Float32Array(outF), 1);
  const run = (be: CpuBackend) => {
    const xt = be.empty([n, inF]), wt = be.empty([outF, inF]), bt = be.empty([outF]), out = be.empty([n, outF]);
    xt.data.set(x); wt.data.set(w); bt.data.set(b);
    // Twice, through a row view as well: registration of views of one buffer must work.
    be.linear(be.rows(xt, n), wt, bt, be.rows(out, n) as typeof out);
    be.linear(xt, wt, bt, out);
    return out.data.slice();
  };
  const a = run(two), c = run(one);
  expect(a).toEqual(c);
  let nonzero = 0;
  for (const v of a) if (v !== 0) nonzero++;
  expect(nonzero).toBe(a.length);
  two.close();
});

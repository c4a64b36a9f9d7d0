import { expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { defaultCpuThreads, PARALLEL_MIN_WORK } from "../src/backend/cpu/matmul-pool.ts";
import { LLM } from "../src/engine/llm.ts";
import { FAST_MODEL, tinyModel } from "./helpers.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

test("a large product on two, three or five threads equals the single-threaded one bit for bit", () => {
  const one = new CpuBackend({ threads: 1 });
  const rng = new SeededRandom(9);
  // 6.3M multiply-adds: enough for a thread per 1M, so five threads all take a range.
  const n = 16, inF = 96, outF = 4099;
  expect(n * inF * outF).toBeGreaterThan(5 * (PARALLEL_MIN_WORK / 2));
  const x = rng.normal(new Float32Array(n * inF), 1), w = rng.normal(new Float32Array(outF * inF), 0.1), b = rng.normal(new Float32Array(outF), 1);
  const run = (be: CpuBackend) => {
    const xt = be.empty([n, inF]), wt = be.empty([outF, inF]), bt = be.empty([outF]), out = be.empty([n, outF]);
    xt.data.set(x); wt.data.set(w); bt.data.set(b);
    // Twice, through a row view as well: registration of views of one buffer must work.
    be.linear(be.rows(xt, n), wt, bt, be.rows(out, n) as typeof out);
    be.linear(xt, wt, bt, out);
    return out.data.slice();
  };
  const c = run(one);
  for (const threads of [2, 3, 5]) {
    const many = new CpuBackend({ threads });
    const a = run(many);
    expect(a).toEqual(c);
    let nonzero = 0;
    for (const v of a) if (v !== 0) nonzero++;
    expect(nonzero).toBe(a.length); // every range was computed
    many.close();
  }
});

test("VBUN_CPU_THREADS sets the threads (default: the cores, up to 8); a bad value is a start-up error naming it", () => {
  expect(defaultCpuThreads({ VBUN_CPU_THREADS: "3" })).toBe(3);
  expect(defaultCpuThreads({})).toBe(Math.max(1, Math.min(8, navigator.hardwareConcurrency)));
  for (const bad of ["0", "two", "1.5", "1000"]) expect(() => defaultCpuThreads({ VBUN_CPU_THREADS: bad })).toThrow(`VBUN_CPU_THREADS: must be an integer from 1 to 256, got '${bad}'`);
  const logs: string[] = [];
  process.env.VBUN_CPU_THREADS = "3";
  try {
    const llm = new LLM({ model: tinyModel(FAST_MODEL), device: "cpu", maxModelLen: 32, log: (m) => logs.push(m) });
    llm.close();
    expect(logs).toContain("device cpu: 3 threads for large matrix products (VBUN_CPU_THREADS)");
    process.env.VBUN_CPU_THREADS = "many";
    expect(() => new LLM({ model: tinyModel(FAST_MODEL), device: "cpu", maxModelLen: 32, log: () => {} })).toThrow("VBUN_CPU_THREADS: must be an integer from 1 to 256, got 'many'");
  } finally {
    delete process.env.VBUN_CPU_THREADS;
  }
});

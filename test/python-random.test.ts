import { expect, test } from "bun:test";
import { PythonRandom } from "../src/util/python-random.ts";

test("CPython's random.seed(0) stream: randint matches, and bench.py's workload totals 133,966 output tokens", () => {
  const r = new PythonRandom(0);
  expect([r.randint(0, 10), r.randint(0, 10), r.randint(0, 10)]).toEqual([6, 6, 0]);
  const b = new PythonRandom(0);
  const prompts = Array.from({ length: 256 }, () => Array.from({ length: b.randint(100, 1024) }, () => b.randint(0, 10000)));
  const maxTokens = Array.from({ length: 256 }, () => b.randint(100, 1024));
  expect(maxTokens.reduce((x, y) => x + y, 0)).toBe(133966);
  expect(prompts[0]!.length).toBe(964);
  expect(prompts[0]!.slice(0, 5)).toEqual([6311, 6890, 663, 4242, 8376]);
});

/**
 * vbun's Workers get the process's environment as it is when they start, not as it was when the process
 * started (Bun's default): settings made at run time must reach the engine worker, tensor-parallel ranks
 * and the CPU matmul helper as they reach the engine's own thread.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { workerOptions } from "../src/worker-url.ts";

test("a Worker started with workerOptions() sees a variable set at run time", async () => {
  process.env.VBUN_TEST_LATE_SETTING = "set-at-run-time";
  try {
    const src = "postMessage(process.env.VBUN_TEST_LATE_SETTING ?? 'unset');";
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "application/javascript" })), workerOptions());
    const seen = await new Promise((resolve) => { w.onmessage = (e) => resolve(e.data); });
    w.terminate();
    expect(seen).toBe("set-at-run-time");
  } finally {
    delete process.env.VBUN_TEST_LATE_SETTING;
  }
});

test("every Worker vbun starts passes workerOptions()", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".ts") && files.push(join(dir, e.name));
  };
  walk(join(import.meta.dir, "..", "src"));
  const starts = files.flatMap((f) => [...readFileSync(f, "utf8").matchAll(/new Worker\(([^;]*)\);/g)].map((m) => ({ f, call: m[1]! })));
  expect(starts.length).toBeGreaterThanOrEqual(3);
  for (const s of starts) expect(`${s.f}: ${s.call}`).toContain("workerOptions()");
});

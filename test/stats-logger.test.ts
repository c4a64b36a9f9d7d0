import { expect, test } from "bun:test";
import { StatsLogger, statsIntervalMs } from "../src/server/stats-logger.ts";
import { startServer, SERVER_MODEL, tinyModel } from "./helpers.ts";

const idle = { running: 0, waiting: 0, kvUsage: 0, promptTokens: 0, generationTokens: 0, prefixCacheQueries: 0, prefixCacheHits: 0 };

test("the periodic stats line: throughput over the interval, queue, KV cache, prefix-cache hit rate; quiet while idle", () => {
  const s = new StatsLogger("cuda");
  expect(s.line(idle, 0)).toBeNull(); // starts the first interval
  expect(s.line(idle, 10_000)).toBeNull(); // idle: nothing
  const busy = { running: 3, waiting: 2, kvUsage: 0.125, promptTokens: 500, generationTokens: 250, prefixCacheQueries: 400, prefixCacheHits: 100 };
  expect(s.line(busy, 20_000)).toBe("Avg prompt throughput: 50.0 tokens/s, Avg generation throughput: 25.0 tokens/s, Running: 3 reqs, Waiting: 2 reqs, GPU KV cache usage: 12.5%, Prefix cache hit rate: 25.0%");
  // The interval after the work shows it ended; then silence until work comes back.
  const done = { ...busy, running: 0, waiting: 0, kvUsage: 0 };
  expect(s.line(done, 30_000)).toBe("Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 0.0 tokens/s, Running: 0 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%, Prefix cache hit rate: 25.0%");
  expect(s.line(done, 40_000)).toBeNull();
  expect(s.line({ ...done, generationTokens: 260 }, 45_000)).toContain("Avg generation throughput: 2.0 tokens/s");
  const cpu = new StatsLogger("cpu");
  cpu.line(idle, 0);
  expect(cpu.line(busy, 1000)).toContain("CPU KV cache usage: 12.5%");
});

test("VLLM_LOG_STATS_INTERVAL: seconds, default 10; anything else is refused naming it", () => {
  expect(statsIntervalMs({})).toBe(10_000);
  expect(statsIntervalMs({ VLLM_LOG_STATS_INTERVAL: "0.5" })).toBe(500);
  expect(() => statsIntervalMs({ VLLM_LOG_STATS_INTERVAL: "soon" })).toThrow("VLLM_LOG_STATS_INTERVAL must be a positive number of seconds, got 'soon'");
});

test("the server logs the stats line while requests run; --disable-log-stats turns it off", async () => {
  const run = async (extra: string[]) => {
    const s = await startServer([tinyModel(SERVER_MODEL), "--max-model-len", "256", ...extra], { VLLM_LOG_STATS_INTERVAL: "0.05" });
    try {
      const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "Hello", max_tokens: 48, ignore_eos: true }) });
      expect(res.status).toBe(200);
      await Bun.sleep(200);
      return s.stderr();
    } finally {
      expect(await s.stop()).toBe(0);
    }
  };
  expect(await run([])).toMatch(/Avg prompt throughput: [\d.]+ tokens\/s, Avg generation throughput: [\d.]+ tokens\/s, Running: \d+ reqs, Waiting: \d+ reqs, CPU KV cache usage: [\d.]+%, Prefix cache hit rate: [\d.]+%/);
  expect(await run(["--disable-log-stats"])).not.toContain("Avg generation throughput");
}, 60_000);

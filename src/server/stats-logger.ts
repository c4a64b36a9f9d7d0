/**
 * vLLM's periodic engine log line (every VLLM_LOG_STATS_INTERVAL seconds, default 10; off with
 * --disable-log-stats): prompt and generation throughput over the interval, running and waiting requests,
 * KV-cache usage, and the prefix-cache hit rate (prompt tokens found in the cache since start). An idle engine
 * logs nothing after one line that shows it idle.
 */
import type { EngineGauges } from "../engine/engine-stats.ts";

type Counters = Pick<EngineGauges, "running" | "waiting" | "kvUsage" | "promptTokens" | "generationTokens" | "prefixCacheQueries" | "prefixCacheHits">;

export class StatsLogger {
  private last: { at: number; promptTokens: number; generationTokens: number } | null = null;
  private wasActive = false;

  /** `device`: "cuda" says GPU KV cache, "cpu" CPU KV cache. */
  constructor(private readonly device: "cpu" | "cuda") {}

  /**
   * The line for the interval that ends at `nowMs` (null for the first call, which starts the first interval,
   * and while the engine stays idle).
   */
  line(st: Counters, nowMs: number): string | null {
    const last = this.last;
    this.last = { at: nowMs, promptTokens: st.promptTokens, generationTokens: st.generationTokens };
    if (!last || nowMs <= last.at) return null;
    const seconds = (nowMs - last.at) / 1000;
    const prompt = (st.promptTokens - last.promptTokens) / seconds, generation = (st.generationTokens - last.generationTokens) / seconds;
    const active = prompt > 0 || generation > 0 || st.running > 0 || st.waiting > 0;
    const show = active || this.wasActive;
    this.wasActive = active;
    if (!show) return null;
    const hitRate = st.prefixCacheQueries > 0 ? (100 * st.prefixCacheHits) / st.prefixCacheQueries : 0;
    return `Avg prompt throughput: ${prompt.toFixed(1)} tokens/s, Avg generation throughput: ${generation.toFixed(1)} tokens/s, ` +
      `Running: ${st.running} reqs, Waiting: ${st.waiting} reqs, ${this.device === "cuda" ? "GPU" : "CPU"} KV cache usage: ${(100 * st.kvUsage).toFixed(1)}%, ` +
      `Prefix cache hit rate: ${hitRate.toFixed(1)}%`;
  }
}

/** VLLM_LOG_STATS_INTERVAL in milliseconds (default 10 s); throws naming the variable when it is not a positive number. */
export function statsIntervalMs(env: Record<string, string | undefined>): number {
  const v = env.VLLM_LOG_STATS_INTERVAL;
  if (v === undefined || v === "") return 10_000;
  const s = Number(v);
  if (!(s > 0)) throw new Error(`VLLM_LOG_STATS_INTERVAL must be a positive number of seconds, got '${v}'`);
  return s * 1000;
}

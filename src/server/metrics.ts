/** GET /metrics: Prometheus text exposition with vLLM's metric names (label model_name). */
import type { Histogram } from "../engine/metrics.ts";
import type { AsyncEngine } from "../engine/async-engine.ts";

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

export function renderMetrics(engine: AsyncEngine, modelName: string): string {
  const e = engine.engine, m = e.metrics, bm = e.blockManager;
  const base = { model_name: modelName };
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [Record<string, string>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) lines.push(`${name}${labels({ ...base, ...l })} ${v}`);
  };
  const histogram = (name: string, help: string, h: Histogram) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    const cum = h.cumulative();
    h.buckets.forEach((b, i) => lines.push(`${name}_bucket${labels({ ...base, le: String(b) })} ${cum[i]}`));
    lines.push(`${name}_bucket${labels({ ...base, le: "+Inf" })} ${h.count}`, `${name}_sum${labels(base)} ${h.sum}`, `${name}_count${labels(base)} ${h.count}`);
  };
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", [[{}, engine.numRunning]]);
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [[{}, engine.numWaiting]]);
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", [[{}, bm.usage]]);
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", [[{}, m.promptTokens]]);
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", [[{}, m.generationTokens]]);
  metric("vllm:request_success_total", "counter", "Count of successfully processed requests.",
    ["stop", "length", "abort"].map((r) => [{ finished_reason: r }, m.requestSuccess.get(r) ?? 0]));
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.", [[{}, e.scheduler.numPreemptions]]);
  metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.", [[{}, bm.prefixCacheQueries]]);
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.", [[{}, bm.prefixCacheHits]]);
  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", m.timeToFirstToken);
  histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", m.interTokenLatency);
  histogram("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", m.e2eRequestLatency);
  histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", m.queueTime);
  histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", m.requestPromptTokens);
  histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", m.requestGenerationTokens);
  histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", m.iterationTokens);
  return lines.join("\n") + "\n";
}

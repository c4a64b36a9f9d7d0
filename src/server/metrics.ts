/** GET /metrics: Prometheus text exposition with vLLM's metric names (label model_name). */
import type { EngineStats, HistogramData } from "../engine/engine-stats.ts";

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

export function renderMetrics(st: EngineStats, modelName: string): string {
  const h = st.histograms;
  const base = { model_name: modelName };
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [Record<string, string>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) lines.push(`${name}${labels({ ...base, ...l })} ${v}`);
  };
  const histogram = (name: string, help: string, d: HistogramData) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    let cum = 0;
    d.buckets.forEach((b, i) => lines.push(`${name}_bucket${labels({ ...base, le: String(b) })} ${(cum += d.counts[i]!)}`));
    lines.push(`${name}_bucket${labels({ ...base, le: "+Inf" })} ${d.count}`, `${name}_sum${labels(base)} ${d.sum}`, `${name}_count${labels(base)} ${d.count}`);
  };
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", [[{}, st.running]]);
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", [[{}, st.waiting]]);
  metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", [[{}, st.kvUsage]]);
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", [[{}, st.promptTokens]]);
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", [[{}, st.generationTokens]]);
  metric("vllm:request_success_total", "counter", "Count of successfully processed requests.",
    ["stop", "length", "abort"].map((r) => [{ finished_reason: r }, st.requestSuccess[r] ?? 0]));
  metric("vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.", [[{}, st.numPreemptions]]);
  metric("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of queried tokens.", [[{}, st.prefixCacheQueries]]);
  metric("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.", [[{}, st.prefixCacheHits]]);
  const spec = st.specDecode;
  if (spec) {
    metric("vllm:spec_decode_num_drafts_total", "counter", "Number of spec decoding drafts.", [[{}, spec.numDrafts]]);
    metric("vllm:spec_decode_num_draft_tokens_total", "counter", "Number of draft tokens.", [[{}, spec.numDraftTokens]]);
    metric("vllm:spec_decode_num_accepted_tokens_total", "counter", "Number of accepted tokens.", [[{}, spec.numAcceptedTokens]]);
    metric("vllm:spec_decode_num_accepted_tokens_per_pos_total", "counter", "Accepted tokens per draft position.",
      spec.numAcceptedTokensPerPosition.map((n, j) => [{ position: String(j) }, n]));
  }
  if (st.lora) {
    // vLLM's info gauge: the adapters in the labels, the time of the reading as the value.
    metric("vllm:lora_requests_info", "gauge", "Running stats on lora requests.",
      [[{ max_lora: String(st.lora.maxLora), running_lora_adapters: st.lora.running.join(","), waiting_lora_adapters: st.lora.waiting.join(",") }, Date.now() / 1000]]);
  }
  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", h.timeToFirstToken);
  histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", h.interTokenLatency);
  histogram("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", h.e2eRequestLatency);
  histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", h.queueTime);
  histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", h.requestPromptTokens);
  histogram("vllm:request_generation_tokens", "Number of generation tokens processed.", h.requestGenerationTokens);
  histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", h.iterationTokens);
  return lines.join("\n") + "\n";
}

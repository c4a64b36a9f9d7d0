/** A plain-data snapshot of the engine's gauges and metrics (it crosses the worker boundary). */
import type { LLMEngine } from "./llm-engine.ts";
import type { Histogram } from "./metrics.ts";

export interface HistogramData {
  buckets: readonly number[];
  counts: number[];
  sum: number;
  count: number;
}

export const HISTOGRAMS = ["timeToFirstToken", "interTokenLatency", "e2eRequestLatency", "queueTime", "requestPromptTokens", "requestGenerationTokens", "iterationTokens"] as const;
export type HistogramName = (typeof HISTOGRAMS)[number];

export interface EngineStats {
  running: number;
  waiting: number;
  kvUsage: number;
  usedBlocks: number;
  numPreemptions: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  promptTokens: number;
  generationTokens: number;
  requestSuccess: Record<string, number>;
  histograms: Record<HistogramName, HistogramData>;
  /** Speculative decoding's counters (null when it is off). */
  specDecode: SpecDecodeStats | null;
  /** LoRA: the adapter count and the adapters of running and waiting requests (null without adapters). */
  lora: { maxLora: number; running: string[]; waiting: string[] } | null;
}

export interface SpecDecodeStats {
  numDrafts: number;
  numDraftTokens: number;
  numAcceptedTokens: number;
  /** Entry j: drafts whose token j was confirmed (j < num_speculative_tokens). */
  numAcceptedTokensPerPosition: number[];
}

const plain = (h: Histogram): HistogramData => ({ buckets: h.buckets, counts: h.counts.slice(), sum: h.sum, count: h.count });

/** The gauges and counters without the histograms and per-reason counts (what changes every step, cheaply). */
export type EngineGauges = Omit<EngineStats, "requestSuccess" | "histograms" | "specDecode" | "lora">;

export function engineGauges(e: LLMEngine): EngineGauges {
  const m = e.metrics;
  return {
    running: e.scheduler.running.length,
    waiting: e.scheduler.waiting.length + e.numWaitingForGrammar,
    kvUsage: e.blockManager.usage,
    usedBlocks: e.blockManager.numUsedBlocks,
    numPreemptions: e.scheduler.numPreemptions,
    prefixCacheQueries: e.blockManager.prefixCacheQueries,
    prefixCacheHits: e.blockManager.prefixCacheHits,
    promptTokens: m.promptTokens,
    generationTokens: m.generationTokens,
  };
}

/** The whole snapshot, histograms included (≈ 10 µs to build and copy: not every step). */
export function engineStats(e: LLMEngine): EngineStats {
  const m = e.metrics;
  const histograms = {} as Record<HistogramName, HistogramData>;
  for (const name of HISTOGRAMS) histograms[name] = plain(m[name]);
  return {
    ...engineGauges(e),
    requestSuccess: Object.fromEntries(m.requestSuccess),
    histograms,
    specDecode: e.options.speculative
      ? {
        numDrafts: m.specDrafts, numDraftTokens: m.specDraftTokens, numAcceptedTokens: m.specAcceptedTokens,
        numAcceptedTokensPerPosition: Array.from({ length: e.options.speculative.numSpeculativeTokens }, (_, j) => m.specAcceptedPerPosition[j] ?? 0),
      }
      : null,
    lora: e.loras ? { maxLora: e.loras.maxLoras, running: adaptersOf(e.scheduler.running), waiting: adaptersOf(e.scheduler.waiting) } : null,
  };
}

/** The names of the adapters `seqs` run with, each once, sorted. */
function adaptersOf(seqs: readonly { lora: { name: string } | null }[]): string[] {
  return [...new Set(seqs.flatMap((s) => (s.lora ? [s.lora.name] : [])))].sort();
}

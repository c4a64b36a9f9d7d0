/** Builds a step's SamplingBatch from the sampling sequences' parameters (backend-independent). */
import { emptySamplingBatch, type SamplingBatch } from "./sampling-batch.ts";
import type { ScheduledSeq } from "./scheduler.ts";

export class Sampler {
  private batch: SamplingBatch = emptySamplingBatch(0);

  /** @param eosTokenIds tokens banned while a sequence has fewer than min_tokens outputs (with stop_token_ids) */
  constructor(readonly eosTokenIds: readonly number[]) {}

  build(scheduled: readonly ScheduledSeq[]): SamplingBatch {
    let n = 0;
    for (const s of scheduled) if (s.samples) n++;
    if (this.batch.temperature.length < n) this.batch = emptySamplingBatch(Math.max(n, this.batch.temperature.length * 2));
    const b = this.batch;
    b.numRows = n;
    let r = 0;
    for (const { seq, samples } of scheduled) {
      if (!samples) continue;
      const p = seq.params;
      // Sampled tokens so far, pending ones included (async scheduling): the seeded stream's step and min_tokens.
      const numOutputs = seq.numTokensWithPlaceholders - seq.numPromptTokens;
      b.temperature[r] = p.temperature;
      b.topK[r] = p.top_k > 0 ? p.top_k : 0;
      b.topP[r] = p.top_p;
      b.minP[r] = p.min_p;
      b.seed[r] = seq.seed;
      b.stream[r] = seq.index;
      b.step[r] = numOutputs;
      b.numLogprobs[r] = p.logprobs ?? -1;
      b.penalties[r] = p.needsPenalties
        ? {
          presence: p.presence_penalty, frequency: p.frequency_penalty, repetition: p.repetition_penalty, outputTokens: seq.tokens.subarray(seq.numPromptTokens, seq.numTokens),
          promptTokens: seq.tokens.subarray(0, seq.numPromptTokens), pendingRow: seq.numPlaceholders > 0 ? seq.placeholderRow : -1,
        }
        : null;
      b.logitBias[r] = p.logit_bias;
      b.banned[r] = numOutputs < p.min_tokens ? [...(p.ignore_eos ? [] : this.eosTokenIds), ...p.stop_token_ids] : null;
      b.allowedTokens[r] = seq.grammar ? seq.grammar.nextMask() : null;
      r++;
    }
    return b;
  }
}

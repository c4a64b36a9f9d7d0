/** Builds a step's SamplingBatch from the sampling sequences' parameters (backend-independent). */
import { emptySamplingBatch, type SamplingBatch } from "./sampling-batch.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { ScheduledSeq } from "./scheduler.ts";
import type { Sequence } from "./sequence.ts";

/** allowed_token_ids as a bitmask (ids past its end are not allowed). */
function allowedMask(ids: readonly number[]): Int32Array {
  const mask = new Int32Array(Math.ceil((Math.max(...ids) + 1) / 32));
  for (const t of ids) mask[t >> 5]! |= 1 << (t & 31);
  return mask;
}

/** Tokens both masks allow. */
function bothAllow(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(Math.min(a.length, b.length));
  for (let w = 0; w < out.length; w++) out[w] = a[w]! & b[w]!;
  return out;
}

/**
 * The last tokens of bad words whose earlier tokens the sequence has just generated (a one-token word:
 * always), for the token after its first `end` tokens (default: the known ones; a draft row's includes the
 * drafts before it). Only stored tokens count: rows with longer words are not overlapped under async scheduling.
 */
export function badWordBans(seq: Sequence, words: readonly number[][], end = seq.numTokens): number[] {
  const bans: number[] = [];
  const out = seq.tokens, outputs = end - seq.numPromptTokens;
  for (const w of words) {
    const k = w.length - 1;
    if (k > outputs) continue;
    let match = true;
    for (let i = 0; i < k && match; i++) match = out[end - k + i] === w[i];
    if (match) bans.push(w[k]!);
  }
  return bans;
}

export class Sampler {
  private batch: SamplingBatch = emptySamplingBatch(0);
  private readonly allowedMasks = new WeakMap<SamplingParams, Int32Array>();

  /** @param eosTokenIds tokens banned while a sequence has fewer than min_tokens outputs (with stop_token_ids) */
  constructor(readonly eosTokenIds: readonly number[]) {}

  /**
   * One row per sampling sequence, plus one per draft token (speculative decoding): row j of a sequence with
   * drafts samples the token after its first j drafts, exactly as a step without drafts would sample it once
   * those j tokens were known (its seeded stream's step, penalties, min_tokens and bad words count them).
   */
  build(scheduled: readonly ScheduledSeq[]): SamplingBatch {
    let n = 0;
    for (const s of scheduled) if (s.samples) n += 1 + s.seq.numDrafts;
    if (this.batch.temperature.length < n) this.batch = emptySamplingBatch(Math.max(n, this.batch.temperature.length * 2));
    const b = this.batch;
    b.numRows = n;
    let r = 0;
    for (const { seq, samples } of scheduled) {
      if (!samples) continue;
      for (let j = 0; j <= seq.numDrafts; j++) this.fillRow(b, r++, seq, j);
    }
    return b;
  }

  /** Row r: the token after `seq`'s known tokens and its first `drafts` draft tokens. */
  private fillRow(b: SamplingBatch, r: number, seq: Sequence, drafts: number): void {
    const p = seq.params;
    // Sampled tokens so far, pending ones included (async scheduling): the seeded stream's step and min_tokens.
    const numOutputs = seq.numTokensWithPlaceholders - seq.numPromptTokens + drafts;
    const end = seq.numTokens + drafts;
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
        presence: p.presence_penalty, frequency: p.frequency_penalty, repetition: p.repetition_penalty, outputTokens: seq.tokens.subarray(seq.numPromptTokens, end),
        promptTokens: seq.tokens.subarray(0, seq.numPromptTokens), pendingRow: seq.numPlaceholders > 0 ? seq.placeholderRow : -1,
      }
      : null;
    b.logitBias[r] = p.logit_bias;
    const banned = numOutputs < p.min_tokens ? [...(p.ignore_eos ? [] : this.eosTokenIds), ...p.stop_token_ids] : null;
    const bad = p.bad_words_token_ids && p.bad_words_token_ids.length > 0 ? badWordBans(seq, p.bad_words_token_ids, end) : [];
    b.banned[r] = bad.length > 0 ? [...(banned ?? []), ...bad] : banned;
    // A grammar's mask is for the token after the known ones: sequences under a grammar get no drafts.
    if (seq.grammar && drafts > 0) throw new Error(`sequence ${seq.seqId}: draft tokens under a grammar`);
    const grammar = seq.grammar ? seq.grammar.nextMask() : null;
    let allowed = p.allowed_token_ids ? this.allowedMasks.get(p) : undefined;
    if (p.allowed_token_ids && !allowed) this.allowedMasks.set(p, (allowed = allowedMask(p.allowed_token_ids)));
    b.allowedTokens[r] = allowed && grammar ? bothAllow(allowed, grammar) : allowed ?? grammar;
  }
}

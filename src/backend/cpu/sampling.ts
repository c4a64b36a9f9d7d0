/** The CPU sampler: logits processors, greedy / random sampling with top-k, top-p, min-p, and logprobs. */
import { philoxUniform } from "../../engine/philox.ts";
import { applyLogitEdit, maskDisallowedTokens, rowLogitEdits, type SamplingBatch, type SamplerOutput, type TokenLogprobs } from "../../engine/sampling-batch.ts";
import { logSumExp, topIndices } from "../../engine/logprobs.ts";

/** Applies the row's penalties, logit bias and banned tokens in place. */
export function processLogits(row: Float32Array, b: SamplingBatch, r: number): void {
  for (const e of rowLogitEdits(b, r, row.length).values()) row[e.token] = applyLogitEdit(row[e.token]!, e);
}

function argmax(row: Float32Array): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > bv) { bv = row[i]!; best = i; }
  return best;
}

/**
 * Samples one token from `row` (processed logits) with the row's temperature, top-k, top-p, min-p and uniform
 * draw. The filters run in vLLM's order, the same as the GPU kernel's (ptx/src/sampling.cu): min-p (tokens
 * below min_p × the top probability), then top-k, then top-p over what is left, renormalised; the draw is
 * the inverse CDF of the kept tokens, best first.
 */
function sampleRandom(row: Float32Array, temperature: number, topK: number, topP: number, minP: number, u: number): number {
  const V = row.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (row[i]! > max) max = row[i]!;
  if (max === -Infinity) return 0;
  // p_i / p_max = e^{(x_i − max)/T}: min-p keeps x_i ≥ max + T·ln(min_p).
  const floor = minP > 0 ? max + temperature * Math.log(minP) : -Infinity;
  // Candidates: all tokens, or (when a cut-off needs an order) the survivors, best first.
  let cand: number[] | null = null;
  if ((topK > 0 && topK < V) || topP < 1 || minP > 0) {
    if (topK > 0 && topK < V) cand = topIndices(row, topK).filter((i) => row[i]! > -Infinity && row[i]! >= floor);
    else {
      // Survivors first (one pass), then order only them: min-p usually leaves a handful of the vocabulary.
      cand = [];
      for (let i = 0; i < V; i++) if (row[i]! > -Infinity && row[i]! >= floor) cand.push(i);
      cand.sort((a, b) => row[b]! - row[a]! || a - b);
    }
  }
  const n = cand ? cand.length : V;
  const at = (j: number) => (cand ? cand[j]! : j);
  const probs = new Float64Array(n);
  let sum = 0;
  for (let j = 0; j < n; j++) { const p = Math.exp((row[at(j)]! - max) / temperature); probs[j] = p; sum += p; }
  let keep = n;
  if (topP < 1) {
    let c = 0;
    for (let j = 0; j < n; j++) { c += probs[j]! / sum; if (c >= topP) { keep = j + 1; break; } }
  }
  let total = 0;
  for (let j = 0; j < keep; j++) total += probs[j]!;
  let target = u * total;
  let last = -1;
  for (let j = 0; j < keep; j++) {
    if (probs[j]! === 0) continue;
    last = j;
    target -= probs[j]!;
    if (target < 0) return at(j);
  }
  return at(Math.max(last, 0));
}

export function sampleRows(logits: Float32Array, vocab: number, b: SamplingBatch): SamplerOutput {
  const tokenIds = new Int32Array(b.numRows);
  const logprobs: (TokenLogprobs | null)[] = new Array(b.numRows).fill(null);
  for (let r = 0; r < b.numRows; r++) {
    const raw = logits.subarray(r * vocab, (r + 1) * vocab);
    const allowed = b.allowedTokens[r];
    if (allowed) maskDisallowedTokens(raw, allowed);
    const needsProcessing = b.penalties[r] || b.logitBias[r] || b.banned[r];
    const row = needsProcessing ? raw.slice() : raw;
    if (needsProcessing) processLogits(row, b, r);
    const t = b.temperature[r]!;
    const token = t === 0 ? argmax(row) : sampleRandom(row, t, b.topK[r]!, b.topP[r]!, b.minP[r]!, philoxUniform(b.seed[r]!, b.stream[r]!, b.step[r]!));
    tokenIds[r] = token;
    const nlp = b.numLogprobs[r]!;
    if (nlp >= 0) {
      // Logprobs of the model's raw distribution (vLLM's default "raw_logprobs").
      const lse = logSumExp(raw);
      logprobs[r] = {
        logprob: raw[token]! - lse,
        top: nlp > 0 ? topIndices(raw, nlp).map((id) => ({ tokenId: id, logprob: raw[id]! - lse })) : [],
      };
    }
  }
  return { tokenIds, logprobs };
}

/** Log-probabilities from a row of raw logits (host side): log-sum-exp, top-N, a token's logprob and rank. */
import type { TokenLogprobs } from "./sampling-batch.ts";

export function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  if (max === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - max);
  return max + Math.log(s);
}

/** Indices of the k largest values, best first (ties: lower index first). */
export function topIndices(row: Float32Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (idx.length === k && v <= row[idx[k - 1]!]!) continue;
    let j = idx.length < k ? idx.length : k - 1;
    if (idx.length < k) idx.push(i);
    while (j > 0 && row[idx[j - 1]!]! < v) { idx[j] = idx[j - 1]!; j--; }
    idx[j] = i;
  }
  return idx;
}

/** The logprob and rank (1 = most likely) of `token`, with the top-`n` alternatives. */
export function tokenLogprobs(row: Float32Array, token: number, n: number): TokenLogprobs {
  const lse = logSumExp(row);
  const v = row[token]!;
  let rank = 1;
  for (let i = 0; i < row.length; i++) if (row[i]! > v) rank++;
  return { logprob: v - lse, rank, top: n > 0 ? topIndices(row, n).map((id) => ({ tokenId: id, logprob: row[id]! - lse })) : [] };
}

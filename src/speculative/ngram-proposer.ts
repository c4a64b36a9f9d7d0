/**
 * N-gram speculation (vLLM's "ngram" method, also called prompt lookup decoding): when a sequence's last
 * tokens occurred before — in its prompt or its output — the tokens that followed then are proposed as its
 * next ones, and one model step verifies them all (see LLMEngine). Nothing but the sequence's own tokens
 * is needed: no draft model, no extra GPU work beyond the verified positions.
 *
 * Each sequence keeps an index of where each `promptLookupMin`-gram starts (a hash table of the latest
 * start, and a chain to the previous start with the same hash, as LZ77 compressors keep), grown by the
 * tokens added since its last proposal. The proposal follows the candidate whose match with the sequence's
 * end is longest (up to `promptLookupMax`), then which has the most tokens after it (up to the drafts asked
 * for), then the latest, among the most recent MAX_CANDIDATES.
 */
import type { Sequence } from "../engine/sequence.ts";
import type { SpeculativeConfig } from "./speculative-config.ts";

/** Chain entries examined per proposal: bounds the cost on very repetitive sequences. */
const MAX_CANDIDATES = 64;

/** Where each n-gram of one sequence starts. */
class NgramIndex {
  /** Hash of the n-gram starting at p → the latest such p. */
  readonly latest = new Map<number, number>();
  /** prev[p]: the previous start whose n-gram has the same hash as p's, or −1. */
  prev = new Int32Array(256);
  /** Starts [0, indexed) are in the index. */
  indexed = 0;
}

/** FNV-1a over `n` token ids (a collision only costs a comparison: matches are checked token by token). */
function hashTokens(t: Int32Array, start: number, n: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < start + n; i++) h = Math.imul(h ^ t[i]!, 16777619);
  return h >>> 0;
}

export class NgramProposer {
  private readonly indexes = new WeakMap<Sequence, NgramIndex>();

  constructor(readonly config: SpeculativeConfig) {}

  /**
   * Finds draft tokens for `seq` (at most `maxDrafts`) and stores them on it (Sequence.setDrafts);
   * returns how many.
   */
  propose(seq: Sequence, maxDrafts: number): number {
    const { promptLookupMin: n, promptLookupMax: longest } = this.config;
    const L = seq.numTokens, t = seq.tokens;
    seq.setDrafts(t, 0, 0);
    if (maxDrafts < 1 || L < n + 1) return 0;
    let idx = this.indexes.get(seq);
    if (!idx) this.indexes.set(seq, (idx = new NgramIndex()));
    // Index every n-gram that has a token after it: starts up to L − n − 1 (the last n tokens are the query).
    const last = L - n - 1;
    if (idx.prev.length <= last) {
      const bigger = new Int32Array(Math.max(last + 1, idx.prev.length * 2));
      bigger.set(idx.prev);
      idx.prev = bigger;
    }
    for (let p = idx.indexed; p <= last; p++) {
      const h = hashTokens(t, p, n);
      idx.prev[p] = idx.latest.get(h) ?? -1;
      idx.latest.set(h, p);
    }
    idx.indexed = Math.max(idx.indexed, last + 1);
    let p = idx.latest.get(hashTokens(t, L - n, n)) ?? -1;
    let best = -1, bestLen = 0, bestCount = 0;
    for (let k = 0; p >= 0 && k < MAX_CANDIDATES; k++, p = idx.prev[p]!) {
      // Length of the match ending at p + n − 1 with the sequence's end, compared backwards.
      let len = 0;
      while (len < longest && p + n - 1 - len >= 0 && t[p + n - 1 - len] === t[L - 1 - len]) len++;
      if (len < n) continue; // a hash collision
      // Tokens it can propose: in a short loop the latest occurrence has only a few after it, an earlier one more.
      const count = Math.min(maxDrafts, L - (p + n));
      if (len > bestLen || (len === bestLen && count > bestCount)) {
        best = p;
        bestLen = len;
        bestCount = count;
        if (len === longest && count === maxDrafts) break;
      }
    }
    if (best < 0) return 0;
    seq.setDrafts(t, best + n, bestCount);
    return bestCount;
  }
}

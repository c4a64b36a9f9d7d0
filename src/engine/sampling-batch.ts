/** Per-row sampling parameters of one step, laid out in flat arrays so any backend can consume them. */

export interface RowPenalties {
  presence: number;
  frequency: number;
  repetition: number;
  /** Tokens generated so far (presence/frequency penalties count these). */
  outputTokens: ArrayLike<number>;
  /** Prompt tokens (the repetition penalty also applies to these). */
  promptTokens: ArrayLike<number>;
  /**
   * Async scheduling: the row, in the previous step's sampled ids, of one more output token the host does
   * not know yet (it follows outputTokens); the backend adds its penalties where the ids are. -1/absent: none.
   */
  pendingRow?: number;
}

export interface SamplingBatch {
  numRows: number;
  /** 0 = greedy */
  temperature: Float32Array;
  /** 0 = disabled */
  topK: Int32Array;
  /** 1 = disabled */
  topP: Float32Array;
  /** 0 = disabled */
  minP: Float32Array;
  /** Seed of each row's random stream, its stream index (sample i of n) and its step (tokens sampled so far). */
  seed: Float64Array;
  stream: Int32Array;
  step: Int32Array;
  /** Top-N logprobs wanted per row; -1 = none, 0 = only the sampled token's. */
  numLogprobs: Int32Array;
  /** Rows needing penalties / logit bias / banned tokens; null where none apply. */
  penalties: (RowPenalties | null)[];
  logitBias: (Map<number, number> | null)[];
  /** Tokens that must not be sampled (stop tokens before min_tokens). */
  banned: (number[] | null)[];
  /**
   * Structured outputs: the tokens the row's grammar allows next, as a bitmask (bit t & 31 of word t >> 5);
   * every other logit becomes −∞ before anything else (logprobs included, as in vLLM). null: no grammar.
   */
  allowedTokens: (Int32Array | null)[];
}

export interface TokenLogprobs {
  /** logprob of the sampled (or, for prompt logprobs, the actual) token */
  logprob: number;
  /** 1-based rank of that token among all (prompt logprobs only) */
  rank?: number;
  /** the top-N tokens, best first */
  top: { tokenId: number; logprob: number }[];
}

export interface SamplerOutput {
  tokenIds: Int32Array;
  logprobs: (TokenLogprobs | null)[];
  /** A pooling model's step: the final-norm hidden state of each row (rows × hidden size), instead of tokens. */
  hidden?: Float32Array;
}

export function emptySamplingBatch(numRows: number): SamplingBatch {
  return {
    numRows,
    temperature: new Float32Array(numRows),
    topK: new Int32Array(numRows),
    topP: new Float32Array(numRows).fill(1),
    minP: new Float32Array(numRows),
    seed: new Float64Array(numRows),
    stream: new Int32Array(numRows),
    step: new Int32Array(numRows),
    numLogprobs: new Int32Array(numRows).fill(-1),
    penalties: new Array(numRows).fill(null),
    logitBias: new Array(numRows).fill(null),
    banned: new Array(numRows).fill(null),
    allowedTokens: new Array(numRows).fill(null),
  };
}

/** One token's logit change: x → (rep == 1 ? x : x > 0 ? x / rep : x · rep) + add (add may be −∞: banned). */
export interface LogitEdit {
  token: number;
  rep: number;
  add: number;
}

/**
 * The logit edits of row r — repetition penalty (prompt and output tokens), presence and frequency
 * penalties (output tokens), logit_bias, banned tokens — merged to one edit per token. Every backend
 * applies these same edits (the CPU in place, CUDA as a sparse list), so both process logits alike.
 */
export function rowLogitEdits(b: SamplingBatch, r: number, vocab: number): Map<number, LogitEdit> {
  const edits = new Map<number, LogitEdit>();
  const edit = (token: number) => {
    let e = edits.get(token);
    if (!e) edits.set(token, (e = { token, rep: 1, add: 0 }));
    return e;
  };
  const pen = b.penalties[r];
  if (pen) {
    if (pen.repetition !== 1) for (const list of [pen.promptTokens, pen.outputTokens]) for (let i = 0; i < list.length; i++) edit(list[i]!).rep = pen.repetition;
    if (pen.presence !== 0 || pen.frequency !== 0) {
      const counts = new Map<number, number>();
      for (let i = 0; i < pen.outputTokens.length; i++) counts.set(pen.outputTokens[i]!, (counts.get(pen.outputTokens[i]!) ?? 0) + 1);
      for (const [id, c] of counts) edit(id).add -= pen.frequency * c + pen.presence;
    }
  }
  const bias = b.logitBias[r];
  if (bias) for (const [id, v] of bias) if (id >= 0 && id < vocab) edit(id).add += v;
  const banned = b.banned[r];
  if (banned) for (const id of banned) if (id >= 0 && id < vocab) edit(id).add = -Infinity;
  return edits;
}

/** Sets the logits of tokens outside `allowed` (a bitmask, see SamplingBatch.allowedTokens) to −∞, in place. */
export function maskDisallowedTokens(row: Float32Array, allowed: Int32Array): void {
  const V = row.length;
  for (let w = 0; w * 32 < V; w++) {
    const bits = w < allowed.length ? allowed[w]! : 0;
    if (bits === -1) continue;
    for (let j = 0, t = w * 32; j < 32 && t < V; j++, t++) if (((bits >>> j) & 1) === 0) row[t] = -Infinity;
  }
}

export function applyLogitEdit(x: number, e: LogitEdit): number {
  return (e.rep === 1 ? x : x > 0 ? x / e.rep : x * e.rep) + e.add;
}

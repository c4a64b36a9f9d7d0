/** Per-row sampling parameters of one step, laid out in flat arrays so any backend can consume them. */

export interface RowPenalties {
  presence: number;
  frequency: number;
  repetition: number;
  /** Tokens generated so far (presence/frequency penalties count these). */
  outputTokens: ArrayLike<number>;
  /** Prompt tokens (the repetition penalty also applies to these). */
  promptTokens: ArrayLike<number>;
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
}

export interface TokenLogprobs {
  /** logprob of the sampled token */
  logprob: number;
  /** the top-N tokens, best first */
  top: { tokenId: number; logprob: number }[];
}

export interface SamplerOutput {
  tokenIds: Int32Array;
  logprobs: (TokenLogprobs | null)[];
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
  };
}

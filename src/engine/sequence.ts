/** One generated sequence (sample i of a request's n): its tokens, KV blocks and progress. */
import type { LoraRequest } from "../lora/lora-manager.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { TokenLogprobs } from "./sampling-batch.ts";
import type { SequenceGrammar } from "../structured/structured-output-manager.ts";

export enum SequenceStatus {
  WAITING = "waiting",
  RUNNING = "running",
  FINISHED = "finished",
}

export type FinishReason = "stop" | "length" | "abort";

export class Sequence {
  /** LoRA: the model slot its adapter is in while it is admitted (LoraManager.acquire); −1 otherwise, or for the base model. */
  loraSlot = -1;
  status = SequenceStatus.WAITING;
  /** Prompt followed by generated tokens, in a buffer sized for the whole request (valid up to numTokens). */
  private buf: Int32Array;
  /** Tokens whose ids are known (prompt + sampled and read back). */
  numTokens: number;
  /**
   * Async scheduling: tokens sampled by steps still running on the device, whose ids the host does not
   * know yet (0–2; they follow the known tokens). The scheduler counts them; outputs and stop checks do not.
   */
  numPlaceholders = 0;
  /** The row of the newest placeholder in its step's sampled ids (where the next step's input comes from). */
  placeholderRow = -1;
  /**
   * Speculative decoding: draft tokens this step verifies, stored after the known tokens (tokens[numTokens …
   * numTokens + numDrafts)). The step computes them and samples a token after each; the engine keeps the
   * drafts the samples confirm (LLMEngine.complete).
   */
  numDrafts = 0;
  readonly numPromptTokens: number;
  /** Tokens whose K/V are in the cache (computed or served from the prefix cache). */
  numComputedTokens = 0;
  /** Prompt tokens served from the prefix cache at the last (re)admission. */
  numCachedTokens = 0;
  /**
   * KV block ids, in order: one table per group of layers (kv-cache-layout.ts), all of the same length;
   * the block manager adds the tables of groups after the first.
   */
  readonly blockTables: number[][] = [[]];
  /** Per group: leading entries of its table that a sliding window gave back (NULL_BLOCK now). */
  readonly blocksOutsideWindow: number[] = [0];
  /** Chained hash of each full block that is registered in the prefix cache (parallel to blockTable). */
  readonly blockHashes: number[] = [];
  finishReason: FinishReason | null = null;
  /** The stop string or stop token id that ended the sequence. */
  stopReason: string | number | null = null;
  /** Its last token is the stop token (EOS, or one of stop_token_ids) that ended it: its text is left out (as vLLM) unless include_stop_str_in_output. */
  stoppedOnToken = false;
  readonly logprobs: TokenLogprobs[] = [];
  /** With prompt_logprobs: entry i scores prompt token i given the tokens before it (entry 0 is null). */
  readonly promptLogprobs: (TokenLogprobs | null)[] | null;
  cumulativeLogprob = 0;
  numPreemptions = 0;
  /** A pooling model: the prompt's pooled hidden state, once computed. */
  pooled: Float32Array | null = null;
  /** MEAN / CLS pooling while the prompt is computed: the running sum of its tokens' hidden states, or its first token's. */
  poolState: Float64Array | null = null;
  /** Structured outputs: where the sequence is in its grammar (null: free text, or not compiled yet). */
  grammar: SequenceGrammar | null = null;
  /** Monotonic times (ms). */
  readonly arrivalTime: number;
  firstScheduledTime: number | null = null;
  firstTokenTime: number | null = null;
  lastTokenTime: number | null = null;

  constructor(
    readonly seqId: number,
    readonly requestId: string,
    /** Sample index within the request (0 … n−1); also the seeded RNG stream. */
    readonly index: number,
    promptTokenIds: readonly number[],
    readonly params: SamplingParams,
    /** Seed of the sampling stream (the request's seed, or one drawn by the engine). */
    readonly seed: number,
    arrivalTime: number,
    /** LoRA: the adapter the request asked for (null: the base model). */
    readonly lora: LoraRequest | null = null,
  ) {
    this.numPromptTokens = promptTokenIds.length;
    this.numTokens = promptTokenIds.length;
    this.buf = new Int32Array(promptTokenIds.length + (params.max_tokens ?? 16) + 1);
    this.buf.set(promptTokenIds);
    this.promptLogprobs = params.prompt_logprobs === null ? null : new Array(promptTokenIds.length).fill(null);
    this.arrivalTime = arrivalTime;
  }

  /** The block table of the first group (the only one, unless the KV cache layout is hybrid). */
  get blockTable(): number[] {
    return this.blockTables[0]!;
  }

  /** The token buffer; entries past numTokens are unused. Read-only for callers. */
  get tokens(): Int32Array {
    return this.buf;
  }

  /** All tokens (a view: do not keep it across appends). */
  get tokenIds(): Int32Array {
    return this.buf.subarray(0, this.numTokens);
  }

  appendToken(id: number): void {
    if (this.numTokens === this.buf.length) {
      const bigger = new Int32Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.numTokens++] = id;
  }

  /** Sets the draft tokens to src[from, from + count) (count 0: none). `src` may be this sequence's own tokens. */
  setDrafts(src: Int32Array, from: number, count: number): void {
    const end = this.numTokens + count;
    if (end > this.buf.length) {
      const bigger = new Int32Array(Math.max(end, this.buf.length * 2));
      bigger.set(this.buf.subarray(0, this.numTokens));
      this.buf = bigger;
    }
    // A plain forward copy: when the source is this buffer, it ends at or before numTokens, where the drafts start.
    for (let i = 0; i < count; i++) this.buf[this.numTokens + i] = src[from + i]!;
    this.numDrafts = count;
  }

  /** The oldest placeholder's token id has arrived: it becomes a known token. */
  resolvePlaceholder(id: number): void {
    if (this.numPlaceholders === 0) throw new Error(`sequence ${this.seqId}: a sampled token arrived but none was pending`);
    this.numPlaceholders--;
    this.appendToken(id);
  }

  get numOutputTokens(): number {
    return this.numTokens - this.numPromptTokens;
  }

  /** Known tokens plus placeholders: what the scheduler and the sampler's step counter see. */
  get numTokensWithPlaceholders(): number {
    return this.numTokens + this.numPlaceholders;
  }

  get lastTokenId(): number {
    return this.buf[this.numTokens - 1]!;
  }

  get isFinished(): boolean {
    return this.status === SequenceStatus.FINISHED;
  }

  /** Output token ids from the `from`-th on (all of them by default), as a new array. */
  outputTokenIds(from = 0): number[] {
    return toNumbers(this.buf, this.numPromptTokens + from, this.numTokens);
  }

  promptTokenIds(): number[] {
    return toNumbers(this.buf, 0, this.numPromptTokens);
  }
}

/** a[start … end) as a plain array: a loop, ~20× faster than Array.from on a typed array (per-step hot path). */
function toNumbers(a: Int32Array, start: number, end: number): number[] {
  const out = new Array<number>(Math.max(0, end - start));
  for (let i = start; i < end; i++) out[i - start] = a[i]!;
  return out;
}

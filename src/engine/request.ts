/** A request: its prompt, its n sequences, and the per-sequence text state (detokenizer, stop strings). */
import { IncrementalDetokenizer } from "../tokenizer/detokenizer.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { TokenLogprobs } from "./sampling-batch.ts";
import type { FinishReason, Sequence } from "./sequence.ts";

/**
 * What a request's outputs carry (vLLM's RequestOutputKind):
 * - "cumulative": every output has the whole text, token ids and logprobs so far, and the deltas;
 * - "delta": outputs carry the deltas; the whole text, token ids and logprobs only the finished output
 *   (before it "", [] and []); the prompt's ids and logprobs come with every output up to the first
 *   that has output tokens, and with the finished one. No output copies a growing array: a streaming
 *   server's choice (AsyncEngine);
 * - "final_only": one output, when the request finishes (LLM.generate).
 */
export type OutputKind = "cumulative" | "delta" | "final_only";

export interface CompletionOutput {
  index: number;
  /** Full text so far (stop string removed unless include_stop_str_in_output); see OutputKind. */
  text: string;
  /** Text released since the previous output of this request. */
  textDelta: string;
  /** Output token ids so far; see OutputKind. */
  tokenIds: number[];
  /** Token ids since the previous output. */
  tokenIdsDelta: number[];
  /** Output tokens so far (every kind). */
  numTokens: number;
  cumulativeLogprob: number | null;
  /** Logprobs of every output token so far (null when not requested); see OutputKind. */
  logprobs: TokenLogprobs[] | null;
  logprobsDelta: TokenLogprobs[] | null;
  finishReason: FinishReason | null;
  stopReason: string | number | null;
  /** Finished by its last token, a stop token (EOS or one of stop_token_ids), whose text is left out unless include_stop_str_in_output. */
  stoppedOnToken?: boolean;
}

export interface RequestOutput {
  requestId: string;
  prompt: string | null;
  /** The prompt's token ids; see OutputKind ("delta" leaves them out once output tokens have been sent). */
  promptTokenIds: number[];
  numPromptTokens: number;
  numCachedTokens: number;
  /** prompt_logprobs: per prompt token (the first is null); null when not requested (or left out, as promptTokenIds). */
  promptLogprobs: (TokenLogprobs | null)[] | null;
  outputs: CompletionOutput[];
  finished: boolean;
  /** A pooling model's request (embeddings): the prompt's pooled hidden state, once finished; else null. */
  pooled: Float32Array | null;
}

/** Text state of one sequence: its detokenizer, its text and stop strings, and how much of it went out. */
export class SequenceText {
  readonly detok: IncrementalDetokenizer;
  /** Text after stop-string truncation. */
  text = "";
  /** Characters of `text` already released to the caller. */
  sentChars = 0;
  /** Chars held back while they could still be the start of a stop string. */
  readonly holdBack: number;
  private readonly maxStop: number;
  /** The last maxStop − 1 characters of text before the newest delta. */
  private recent = "";

  constructor(tok: TextTokenizer, promptTokenIds: ArrayLike<number>, params: SamplingParams) {
    this.detok = new IncrementalDetokenizer(tok, params.skip_special_tokens, promptTokenIds);
    this.maxStop = params.maxStopLength;
    this.holdBack = params.include_stop_str_in_output ? 0 : Math.max(0, this.maxStop - 1);
  }

  /**
   * Appends the text of a new token and checks the stop strings over the boundary it creates.
   * Returns the stop string that matched, or null.
   */
  append(tokenId: number, stop: readonly string[], includeStop: boolean): string | null {
    return this.addText(this.detok.push(tokenId), stop, includeStop);
  }

  /** Releases text held by the detokenizer (a trailing partial character) when the sequence ends. */
  flush(stop: readonly string[], includeStop: boolean): string | null {
    return this.addText(this.detok.flush(), stop, includeStop);
  }

  private addText(delta: string, stop: readonly string[], includeStop: boolean): string | null {
    if (delta.length === 0) return null;
    const before = this.text.length;
    this.text += delta;
    if (stop.length === 0) return null;
    // Search only the new text plus the few characters before it that a stop string could start in
    // (indexOf on the whole accumulated text would flatten it every token).
    const window = this.recent + delta;
    const windowStart = before - this.recent.length;
    let bestIdx = -1, best: string | null = null;
    for (const s of stop) {
      const idx = window.indexOf(s, Math.max(0, this.recent.length - s.length + 1));
      if (idx >= 0 && (bestIdx < 0 || idx < bestIdx)) { bestIdx = idx; best = s; }
    }
    this.recent = this.maxStop > 1 ? window.slice(-(this.maxStop - 1)) : "";
    if (best !== null) this.text = this.text.slice(0, windowStart + (includeStop ? bestIdx + best.length : bestIdx));
    return best;
  }

  /**
   * The text not yet released that may go out now — all of it once finished, else all but the hold-back
   * window — which then counts as sent.
   */
  release(finished: boolean): string {
    const upTo = finished ? this.text.length : Math.max(this.sentChars, this.text.length - this.holdBack);
    const delta = this.text.slice(this.sentChars, upTo);
    this.sentChars = upTo;
    return delta;
  }
}

/**
 * A request in the engine. Without a tokenizer (the server's engine worker, which leaves text to the
 * server's OutputProcessor) it has no texts: outputs carry token ids, their text fields are empty, and
 * stop strings are not checked here.
 */
export class Request {
  readonly texts: SequenceText[] = [];
  finished = false;
  /** Per sequence: output tokens and logprobs already released. */
  private readonly sentTokens: Int32Array;
  private readonly sentLogprobs: Int32Array;
  /** An output with output tokens has gone out (a "delta" request stops sending the prompt fields). */
  private sentAnyTokens = false;

  constructor(
    readonly requestId: string,
    readonly prompt: string | null,
    readonly promptTokenIds: number[],
    readonly params: SamplingParams,
    readonly seqs: Sequence[],
    tok: TextTokenizer | null,
    readonly arrivalTime: number,
    readonly outputKind: OutputKind = "cumulative",
  ) {
    if (tok) for (let i = 0; i < seqs.length; i++) this.texts.push(new SequenceText(tok, promptTokenIds, params));
    this.sentTokens = new Int32Array(seqs.length);
    this.sentLogprobs = new Int32Array(seqs.length);
  }

  /** Builds the output of this step and advances the released positions; null when there is none to give ("final_only" before the end). */
  takeOutput(): RequestOutput | null {
    if (this.outputKind === "final_only" && !this.finished) return null;
    const whole = this.outputKind !== "delta" || this.finished;
    const withPrompt = whole || !this.sentAnyTokens;
    const wantLogprobs = this.params.logprobs !== null;
    // Plain loops: this runs for every running request on every step.
    const outputs: CompletionOutput[] = new Array(this.seqs.length);
    let numCached = 0, anyTokens = false;
    for (let i = 0; i < this.seqs.length; i++) {
      const seq = this.seqs[i]!, t = this.texts[i];
      let text = "", textDelta = "";
      if (t) {
        textDelta = t.release(seq.isFinished);
        if (whole) text = t.text.slice(0, t.sentChars);
      }
      const numTokens = seq.numOutputTokens;
      const tokenIdsDelta = seq.outputTokenIds(this.sentTokens[i]);
      this.sentTokens[i] = numTokens;
      let logprobsDelta: TokenLogprobs[] | null = null;
      if (wantLogprobs) {
        logprobsDelta = seq.logprobs.slice(this.sentLogprobs[i]);
        this.sentLogprobs[i] = seq.logprobs.length;
      }
      if (numTokens > 0) anyTokens = true;
      if (seq.numCachedTokens > numCached) numCached = seq.numCachedTokens;
      outputs[i] = {
        index: seq.index,
        text,
        textDelta,
        tokenIds: whole ? seq.outputTokenIds() : [],
        tokenIdsDelta,
        numTokens,
        cumulativeLogprob: wantLogprobs ? seq.cumulativeLogprob : null,
        logprobs: wantLogprobs ? (whole ? seq.logprobs : []) : null,
        logprobsDelta,
        finishReason: seq.finishReason,
        stopReason: seq.stopReason,
        ...(seq.stoppedOnToken ? { stoppedOnToken: true } : {}),
      };
    }
    if (anyTokens) this.sentAnyTokens = true;
    return {
      requestId: this.requestId,
      prompt: this.prompt,
      promptTokenIds: withPrompt ? this.promptTokenIds : [],
      numPromptTokens: this.promptTokenIds.length,
      numCachedTokens: numCached,
      promptLogprobs: withPrompt ? this.seqs[0]!.promptLogprobs : null,
      outputs,
      finished: this.finished,
      pooled: this.seqs[0]!.pooled,
    };
  }
}

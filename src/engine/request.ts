/** A request: its prompt, its n sequences, and the per-sequence text state (detokenizer, stop strings). */
import { IncrementalDetokenizer } from "../tokenizer/detokenizer.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { TokenLogprobs } from "./sampling-batch.ts";
import type { FinishReason, Sequence } from "./sequence.ts";

export interface CompletionOutput {
  index: number;
  /** Full text so far (stop string removed unless include_stop_str_in_output). */
  text: string;
  /** Text released since the previous output of this request. */
  textDelta: string;
  tokenIds: number[];
  /** Token ids since the previous output. */
  tokenIdsDelta: number[];
  cumulativeLogprob: number | null;
  logprobs: TokenLogprobs[] | null;
  logprobsDelta: TokenLogprobs[] | null;
  finishReason: FinishReason | null;
  stopReason: string | number | null;
}

export interface RequestOutput {
  requestId: string;
  prompt: string | null;
  promptTokenIds: number[];
  numCachedTokens: number;
  /** prompt_logprobs: per prompt token (the first is null); null when not requested. */
  promptLogprobs: (TokenLogprobs | null)[] | null;
  outputs: CompletionOutput[];
  finished: boolean;
}

/** Text state of one sequence. */
export class SequenceText {
  readonly detok: IncrementalDetokenizer;
  /** Text after stop-string truncation. */
  text = "";
  /** Characters of `text` already released to the caller. */
  sentChars = 0;
  sentTokens = 0;
  sentLogprobs = 0;
  /** Chars held back while they could still be the start of a stop string. */
  readonly holdBack: number;
  private readonly maxStop: number;
  /** The last maxStop − 1 characters of text before the newest delta. */
  private recent = "";

  constructor(tok: TextTokenizer, readonly seq: Sequence, params: SamplingParams) {
    this.detok = new IncrementalDetokenizer(tok, params.skip_special_tokens, seq.tokens.subarray(0, seq.numPromptTokens));
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

  /** Text releasable now: all of it once finished, else all but the hold-back window. */
  releasable(finished: boolean): number {
    return finished ? this.text.length : Math.max(this.sentChars, this.text.length - this.holdBack);
  }
}

export class Request {
  readonly texts: SequenceText[] = [];
  finished = false;

  constructor(
    readonly requestId: string,
    readonly prompt: string | null,
    readonly promptTokenIds: number[],
    readonly params: SamplingParams,
    readonly seqs: Sequence[],
    tok: TextTokenizer,
    readonly arrivalTime: number,
  ) {
    for (const s of seqs) this.texts.push(new SequenceText(tok, s, params));
  }

  /** Builds the output of this step and advances the released positions. */
  takeOutput(): RequestOutput {
    const wantLogprobs = this.params.logprobs !== null;
    const outputs: CompletionOutput[] = this.seqs.map((seq, i) => {
      const t = this.texts[i]!;
      const done = seq.isFinished;
      const upTo = t.releasable(done);
      const textDelta = t.text.slice(t.sentChars, upTo);
      t.sentChars = upTo;
      const tokenIds = seq.outputTokenIds();
      const tokenIdsDelta = tokenIds.slice(t.sentTokens);
      t.sentTokens = tokenIds.length;
      const logprobsDelta = wantLogprobs ? seq.logprobs.slice(t.sentLogprobs) : null;
      t.sentLogprobs = seq.logprobs.length;
      return {
        index: seq.index,
        text: t.text.slice(0, upTo),
        textDelta,
        tokenIds,
        tokenIdsDelta,
        cumulativeLogprob: wantLogprobs ? seq.cumulativeLogprob : null,
        logprobs: wantLogprobs ? seq.logprobs : null,
        logprobsDelta,
        finishReason: seq.finishReason,
        stopReason: seq.stopReason,
      };
    });
    return {
      requestId: this.requestId,
      prompt: this.prompt,
      promptTokenIds: this.promptTokenIds,
      numCachedTokens: this.seqs.reduce((m, s) => Math.max(m, s.numCachedTokens), 0),
      promptLogprobs: this.seqs[0]!.promptLogprobs,
      outputs,
      finished: this.finished,
    };
  }
}

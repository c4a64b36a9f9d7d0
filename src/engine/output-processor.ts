/**
 * The server side of vLLM V1's split: the engine worker runs without a tokenizer and sends token ids
 * ("delta" outputs); this turns them into the client's outputs on the server's thread — incremental
 * detokenization, stop strings, text held back while it could still start one — so the engine thread
 * neither loads a tokenizer at start nor detokenizes per step.
 *
 * A stop string is found here, after the engine has moved on: the sequence ends at the token that
 * completed it, later tokens the engine sends for it are dropped, and the caller tells the engine to stop
 * it (`stop`). Everything a client sees equals what an engine with a tokenizer gives (test/output-processor.test.ts).
 */
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { SequenceText, type CompletionOutput, type RequestOutput } from "./request.ts";
import type { SamplingParams } from "./sampling-params.ts";
import type { TokenLogprobs } from "./sampling-batch.ts";
import type { FinishReason } from "./sequence.ts";

/** One sequence as the client sees it. */
class SequenceState {
  readonly text: SequenceText;
  readonly tokenIds: number[] = [];
  readonly logprobs: TokenLogprobs[] | null;
  cumulativeLogprob = 0;
  finishReason: FinishReason | null = null;
  stopReason: string | number | null = null;

  constructor(tok: TextTokenizer, promptTokenIds: readonly number[], params: SamplingParams) {
    this.text = new SequenceText(tok, promptTokenIds, params);
    this.logprobs = params.logprobs !== null ? [] : null;
  }
}

interface RequestState {
  params: SamplingParams;
  promptTokenIds: number[];
  promptLogprobs: (TokenLogprobs | null)[] | null;
  seqs: SequenceState[];
  /** An output with tokens has gone out (later ones leave the prompt fields out, as "delta" outputs do). */
  sentAnyTokens: boolean;
}

export interface ProcessedOutput {
  /** The client's output (a "delta" one: see request.ts OutputKind); null when nothing is new. */
  output: RequestOutput | null;
  /** Sequences a stop string ended here that the engine is still running: tell it to stop them. */
  stop: number[];
}

export class OutputProcessor {
  private readonly requests = new Map<string, RequestState>();

  constructor(private readonly tokenizer: TextTokenizer) {}

  add(requestId: string, promptTokenIds: number[], params: SamplingParams): void {
    const seqs = Array.from({ length: params.n }, () => new SequenceState(this.tokenizer, promptTokenIds, params));
    this.requests.set(requestId, { params, promptTokenIds, promptLogprobs: null, seqs, sentAnyTokens: false });
  }

  /** Forgets a request (aborted, rejected, or finished). */
  remove(requestId: string): void {
    this.requests.delete(requestId);
  }

  /** Takes one engine output (token deltas, no text) of a request added here. */
  process(o: RequestOutput): ProcessedOutput {
    const req = this.requests.get(o.requestId);
    if (!req) return { output: null, stop: [] };
    const p = req.params;
    if (o.promptLogprobs) req.promptLogprobs = o.promptLogprobs;
    const stop: number[] = [];
    const start = req.seqs.map((s) => s.tokenIds.length);
    for (const c of o.outputs) {
      const s = req.seqs[c.index]!;
      const ids = c.tokenIdsDelta, lps = c.logprobsDelta;
      // Once a stop string has ended the sequence, what the engine made after it is dropped.
      for (let k = 0; k < ids.length && s.finishReason === null; k++) {
        s.tokenIds.push(ids[k]!);
        const lp = lps?.[k];
        if (lp && s.logprobs) { s.logprobs.push(lp); s.cumulativeLogprob += lp.logprob; }
        const canStop = s.tokenIds.length >= p.min_tokens;
        // The stop token that ended the sequence (EOS, a stop_token_id) adds no text unless include_stop_str_in_output (vLLM).
        if (c.stoppedOnToken && k === ids.length - 1 && !p.include_stop_str_in_output) continue;
        const matched = s.text.append(ids[k]!, canStop ? p.stop : [], p.include_stop_str_in_output);
        if (matched === null) continue;
        s.finishReason = "stop";
        s.stopReason = matched;
        // The engine ended this sequence itself only if this was its last token and it said so.
        if (!(c.finishReason !== null && k === ids.length - 1)) stop.push(c.index);
      }
      if (s.finishReason === null && c.finishReason !== null) {
        // The engine ended it (EOS, a stop token, length, abort): release the detokenizer's tail, which
        // may still complete a stop string (as the engine with a tokenizer does, except on abort).
        const flushed = c.finishReason === "abort" ? null : s.text.flush(p.stop, p.include_stop_str_in_output);
        s.finishReason = c.finishReason;
        s.stopReason = flushed ?? c.stopReason;
      }
    }
    return { output: this.output(o, req, start), stop };
  }

  /** The client's output after this step: each sequence's new tokens and releasable text; everything once finished. */
  private output(o: RequestOutput, req: RequestState, start: number[]): RequestOutput | null {
    const finished = req.seqs.every((s) => s.finishReason !== null);
    const withPrompt = finished || !req.sentAnyTokens;
    const outputs: CompletionOutput[] = [];
    let anyNew = false;
    for (let i = 0; i < req.seqs.length; i++) {
      const s = req.seqs[i]!, t = s.text, done = s.finishReason !== null;
      const textDelta = t.release(done);
      const tokenIdsDelta = s.tokenIds.slice(start[i]);
      if (tokenIdsDelta.length > 0 || textDelta.length > 0) anyNew = true;
      outputs.push({
        index: i,
        text: finished ? t.text : "",
        textDelta,
        tokenIds: finished ? s.tokenIds : [],
        tokenIdsDelta,
        numTokens: s.tokenIds.length,
        cumulativeLogprob: s.logprobs ? s.cumulativeLogprob : null,
        logprobs: s.logprobs ? (finished ? s.logprobs : []) : null,
        logprobsDelta: s.logprobs ? s.logprobs.slice(start[i]) : null,
        finishReason: s.finishReason,
        stopReason: s.stopReason,
      });
    }
    if (finished) this.requests.delete(o.requestId);
    else if (!anyNew && !withPrompt) return null;
    if (req.seqs.some((s) => s.tokenIds.length > 0)) req.sentAnyTokens = true;
    return {
      requestId: o.requestId,
      prompt: o.prompt,
      promptTokenIds: withPrompt ? req.promptTokenIds : [],
      numPromptTokens: req.promptTokenIds.length,
      numCachedTokens: o.numCachedTokens,
      promptLogprobs: withPrompt ? req.promptLogprobs : null,
      outputs,
      finished,
      pooled: o.pooled,
    };
  }
}

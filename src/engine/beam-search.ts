/**
 * Beam search, as vLLM runs it: on top of the engine, one step at a time. Each step asks for the next
 * token of every live beam of every prompt (one-token requests with the top 2·beam_width log-probabilities:
 * whatever the W best extensions are, each comes from its beam's top W), extends each beam by each
 * candidate, moves beams that end with an end-of-sequence token to the completed ones, and keeps the
 * beam_width best of the rest by cumulative log-probability. At the end the completed and live beams are
 * ranked by cumulative log-probability / length^length_penalty (length counting the prompt, an ending EOS
 * not counted) and the best beam_width returned. The beams of a prompt share its blocks in the prefix cache,
 * so each step computes about one new token per beam.
 */
import type { RequestOutput } from "./request.ts";
import { MAX_LOGPROBS, SamplingParams } from "./sampling-params.ts";

/** vLLM's BeamSearchParams. */
export interface BeamSearchParams {
  beam_width: number;
  max_tokens: number;
  ignore_eos?: boolean;
  length_penalty?: number;
}

/** One finished beam: its output tokens, their log-probabilities, and why it ended. */
export interface BeamSearchSequence {
  tokenIds: number[];
  logprobs: number[];
  cumulativeLogprob: number;
  /** cumulativeLogprob / length^length_penalty: what the beams are ranked by. */
  score: number;
  finishReason: "stop" | "length";
}

/** The next-token candidates of each prompt (best first): the top `count` tokens and their log-probabilities. */
export type NextTokenCandidates = (prompts: number[][], count: number) => Promise<{ tokenId: number; logprob: number }[][]>;

/** A beam step's one-token request: its `count` best next tokens come back as the token's top logprobs. */
export function candidateParams(count: number): SamplingParams {
  return new SamplingParams({ max_tokens: 1, temperature: 0, logprobs: count, ignore_eos: true });
}

/** The candidates a finished one-token request (candidateParams) carries, best first. */
export function candidatesOf(o: RequestOutput): { tokenId: number; logprob: number }[] {
  return o.outputs[0]!.logprobs![0]!.top;
}

export class BeamSearchError extends Error {
  constructor(readonly param: string, message: string) {
    super(message);
    this.name = "BeamSearchError";
  }
}

/** The largest beam_width: its 2·W candidates per beam are logprobs, at most MAX_LOGPROBS of them. */
export const MAX_BEAM_WIDTH = Math.floor(MAX_LOGPROBS / 2);

export function checkBeamSearchParams(p: BeamSearchParams): void {
  if (!Number.isInteger(p.beam_width) || p.beam_width < 1 || p.beam_width > MAX_BEAM_WIDTH) throw new BeamSearchError("n", `beam search needs a beam width (n) in [1, ${MAX_BEAM_WIDTH}], got ${p.beam_width}`);
  if (!Number.isInteger(p.max_tokens) || p.max_tokens < 1) throw new BeamSearchError("max_tokens", `beam search needs max_tokens >= 1, got ${p.max_tokens}`);
  if (p.length_penalty !== undefined && !Number.isFinite(p.length_penalty)) throw new BeamSearchError("length_penalty", `length_penalty must be a finite number, got ${p.length_penalty}`);
}

interface Beam {
  tokens: number[];
  logprobs: number[];
  cum: number;
}

/** vLLM's beam score: cumulative log-probability over length^penalty, where length counts the prompt and not an ending EOS. */
function beamScore(promptLen: number, beam: Beam, endsWithEos: boolean, lengthPenalty: number): number {
  const len = promptLen + beam.tokens.length - (endsWithEos ? 1 : 0);
  return beam.cum / Math.pow(Math.max(len, 1), lengthPenalty);
}

/** Beam search for each prompt; returns each prompt's beam_width best sequences, best first. */
export async function beamSearch(prompts: number[][], p: BeamSearchParams, next: NextTokenCandidates, eosTokenIds: readonly number[], maxModelLen: number): Promise<BeamSearchSequence[][]> {
  checkBeamSearchParams(p);
  const W = p.beam_width, penalty = p.length_penalty ?? 1, eos = new Set(p.ignore_eos ? [] : eosTokenIds);
  const live: Beam[][] = prompts.map(() => [{ tokens: [], logprobs: [], cum: 0 }]);
  const done: { beam: Beam; eos: boolean }[][] = prompts.map(() => []);
  for (let step = 0; step < p.max_tokens; step++) {
    const owners: number[] = [], inputs: number[][] = [], beams: Beam[] = [];
    live.forEach((list, i) => {
      for (const b of list) {
        // A beam at the model's length limit cannot grow: it ends there.
        if (prompts[i]!.length + b.tokens.length >= maxModelLen) { done[i]!.push({ beam: b, eos: false }); continue; }
        owners.push(i);
        inputs.push([...prompts[i]!, ...b.tokens]);
        beams.push(b);
      }
    });
    if (inputs.length === 0) break;
    const candidates = await next(inputs, 2 * W);
    const grown: Beam[][] = prompts.map(() => []);
    beams.forEach((b, k) => {
      for (const c of candidates[k]!) {
        const nb = { tokens: [...b.tokens, c.tokenId], logprobs: [...b.logprobs, c.logprob], cum: b.cum + c.logprob };
        if (eos.has(c.tokenId)) done[owners[k]!]!.push({ beam: nb, eos: true });
        else grown[owners[k]!]!.push(nb);
      }
    });
    grown.forEach((list, i) => { live[i] = list.sort((a, b) => b.cum - a.cum).slice(0, W); });
  }
  return prompts.map((prompt, i) => {
    const all = [...done[i]!, ...live[i]!.map((beam) => ({ beam, eos: false }))];
    return all
      .map(({ beam, eos: ended }) => ({
        tokenIds: beam.tokens, logprobs: beam.logprobs, cumulativeLogprob: beam.cum,
        score: beamScore(prompt.length, beam, ended, penalty), finishReason: ended ? "stop" as const : "length" as const,
      }))
      .sort((a, b) => b.score - a.score)
      .slice(0, W);
  });
}

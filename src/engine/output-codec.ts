/**
 * A step's RequestOutputs as they cross from the engine worker to the server's thread. postMessage
 * copies objects field by field (≈ 2 µs per output: 0.5 ms per step at batch 256, on the engine's
 * thread); the common output of a streaming step — one new token and its text, nothing else — packs
 * instead into a few typed arrays and two strings, which copy as blocks. Outputs with anything more
 * (the prompt, logprobs, a finish, the whole text) travel as they are, and so does a small step's list
 * (under PACK_MIN outputs the typed arrays' fixed cost is more than the objects'). unpackOutputs(
 * packOutputs(x)) deep-equals x, in the same order.
 */
import type { CompletionOutput, RequestOutput } from "./request.ts";

/** Outputs per step from which packing pays (scripts/bench-host: at 1 output the objects copy in ≈ 4 µs, packed ≈ 17 µs). */
export const PACK_MIN = 16;

export type StepOutputs = { plain: RequestOutput[] } | PackedOutputs;

export interface PackedOutputs {
  /** Outputs that do not fit the compact form, and where each stands in the step's list. */
  full: RequestOutput[];
  fullAt: Int32Array;
  /** The compact ones: request ids concatenated, and each one's length. */
  ids: string;
  idLengths: Int32Array;
  /** Per compact request: numPromptTokens, numCachedTokens, number of completion outputs. */
  requests: Int32Array;
  /** Per completion output: index, numTokens, new token count, new text length. */
  completions: Int32Array;
  /** New token ids and new text of all compact completion outputs, in order. */
  tokens: Int32Array;
  text: string;
}

const REQUEST_INTS = 3, COMPLETION_INTS = 4;

/** A completion output that carries only its deltas (a streaming step's usual output). */
function isCompact(c: CompletionOutput): boolean {
  return c.text === "" && c.tokenIds.length === 0 && c.cumulativeLogprob === null && c.logprobs === null && c.logprobsDelta === null
    && c.finishReason === null && c.stopReason === null;
}

function isCompactRequest(o: RequestOutput): boolean {
  if (o.finished || o.prompt !== null || o.promptTokenIds.length !== 0 || o.promptLogprobs !== null || o.pooled !== null) return false;
  for (const c of o.outputs) if (!isCompact(c)) return false;
  return true;
}

/** A step's outputs for postMessage: packed when there are enough of them to pay. */
export function packOutputs(outputs: RequestOutput[]): StepOutputs {
  return outputs.length < PACK_MIN ? { plain: outputs } : pack(outputs);
}

/** The packed form, whatever the count. */
export function pack(outputs: RequestOutput[]): PackedOutputs {
  const full: RequestOutput[] = [], fullAt: number[] = [], ids: string[] = [], idLengths: number[] = [];
  const requests: number[] = [], completions: number[] = [], tokens: number[] = [], text: string[] = [];
  for (let i = 0; i < outputs.length; i++) {
    const o = outputs[i]!;
    if (!isCompactRequest(o)) {
      full.push(o);
      fullAt.push(i);
      continue;
    }
    ids.push(o.requestId);
    idLengths.push(o.requestId.length);
    requests.push(o.numPromptTokens, o.numCachedTokens, o.outputs.length);
    for (const c of o.outputs) {
      completions.push(c.index, c.numTokens, c.tokenIdsDelta.length, c.textDelta.length);
      for (const t of c.tokenIdsDelta) tokens.push(t);
      text.push(c.textDelta);
    }
  }
  return {
    full, fullAt: Int32Array.from(fullAt), ids: ids.join(""), idLengths: Int32Array.from(idLengths),
    requests: Int32Array.from(requests), completions: Int32Array.from(completions), tokens: Int32Array.from(tokens), text: text.join(""),
  };
}

export function unpackOutputs(p: StepOutputs): RequestOutput[] {
  return "plain" in p ? p.plain : unpack(p);
}

function unpack(p: PackedOutputs): RequestOutput[] {
  const total = p.full.length + p.idLengths.length;
  const out: RequestOutput[] = new Array(total);
  let full = 0, req = 0, comp = 0, tok = 0, idPos = 0, textPos = 0;
  for (let i = 0; i < total; i++) {
    if (full < p.fullAt.length && p.fullAt[full] === i) {
      out[i] = p.full[full++]!;
      continue;
    }
    const idLen = p.idLengths[req]!;
    const requestId = p.ids.slice(idPos, idPos + idLen);
    idPos += idLen;
    const r = req * REQUEST_INTS, numOutputs = p.requests[r + 2]!;
    const outputs: CompletionOutput[] = new Array(numOutputs);
    for (let k = 0; k < numOutputs; k++, comp++) {
      const c = comp * COMPLETION_INTS, nTok = p.completions[c + 2]!, nText = p.completions[c + 3]!;
      const tokenIdsDelta = Array.from(p.tokens.subarray(tok, tok + nTok));
      tok += nTok;
      const textDelta = p.text.slice(textPos, textPos + nText);
      textPos += nText;
      outputs[k] = {
        index: p.completions[c]!, text: "", textDelta, tokenIds: [], tokenIdsDelta, numTokens: p.completions[c + 1]!,
        cumulativeLogprob: null, logprobs: null, logprobsDelta: null, finishReason: null, stopReason: null,
      };
    }
    out[i] = {
      requestId, prompt: null, promptTokenIds: [], numPromptTokens: p.requests[r]!, numCachedTokens: p.requests[r + 1]!,
      promptLogprobs: null, outputs, finished: false, pooled: null,
    };
    req++;
  }
  return out;
}

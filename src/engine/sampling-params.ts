/** vLLM's SamplingParams: the same field names, defaults and validation rules. */
import { normalizeStructuredOutputs, StructuredOutputsError, type StructuredOutputs, type StructuredOutputsInit } from "../structured/structured-outputs.ts";

export class SamplingParamsError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "SamplingParamsError";
  }
}

export interface SamplingParamsInit {
  n?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number | null;
  max_tokens?: number | null;
  min_tokens?: number;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean;
  presence_penalty?: number;
  frequency_penalty?: number;
  repetition_penalty?: number;
  logit_bias?: Record<string | number, number> | null;
  logprobs?: number | null;
  prompt_logprobs?: number | null;
  include_stop_str_in_output?: boolean;
  skip_special_tokens?: boolean;
  /** What the output must match (a JSON schema, a regex, a choice, a grammar …); null = free text. */
  structured_outputs?: StructuredOutputsInit | StructuredOutputs | null;
  allowed_token_ids?: number[] | null;
  bad_words?: string[] | null;
  bad_words_token_ids?: number[][] | null;
  truncate_prompt_tokens?: number | null;
  cache_salt?: string | null;
  priority?: number;
}

/** Largest top-N logprobs a request may ask for (vLLM's default max_logprobs). */
export const MAX_LOGPROBS = 20;
/** Most sequences one request may ask for: a bound, so that n = 2³¹ is an error rather than the server's memory (OpenAI's is 128). */
export const MAX_N = 1024;

export class SamplingParams {
  n = 1;
  temperature = 1.0;
  top_p = 1.0;
  /** 0 or -1 = all tokens */
  top_k = 0;
  min_p = 0.0;
  seed: number | null = null;
  /** null = up to max_model_len */
  max_tokens: number | null = 16;
  min_tokens = 0;
  stop: string[] = [];
  stop_token_ids: number[] = [];
  ignore_eos = false;
  presence_penalty = 0.0;
  frequency_penalty = 0.0;
  repetition_penalty = 1.0;
  logit_bias: Map<number, number> | null = null;
  logprobs: number | null = null;
  /** Top-N logprobs for each prompt token after the first (and the token's own); null = none. */
  prompt_logprobs: number | null = null;
  include_stop_str_in_output = false;
  skip_special_tokens = true;
  structured_outputs: StructuredOutputs | null = null;
  /** Only these tokens may be sampled (null: all). */
  allowed_token_ids: number[] | null = null;
  /** Words never to generate: their last token is banned wherever the ones before it were just generated. */
  bad_words: string[] = [];
  /** bad_words as token id sequences (each word alone and after a space), filled by whoever holds the tokenizer. */
  bad_words_token_ids: number[][] | null = null;
  /** Keep only the prompt's last N tokens (-1: as many as the context allows); null: the whole prompt. */
  truncate_prompt_tokens: number | null = null;
  /** Prefix-cache isolation: only requests with the same salt share cached prompt blocks (null: no salt). */
  cache_salt: string | null = null;
  /** With --scheduling-policy priority: lower values are served first (vLLM's request priority). */
  priority = 0;

  constructor(init: SamplingParamsInit = {}) {
    for (const [key, value] of Object.entries(init)) {
      if (value === undefined) continue;
      if (!(key in this)) throw new SamplingParamsError(key, "unknown sampling parameter");
      if (key === "stop") this.stop = value === null ? [] : typeof value === "string" ? [value] : (value as string[]);
      else if (key === "stop_token_ids") this.stop_token_ids = (value as number[] | null) ?? [];
      else if (key === "logit_bias") this.logit_bias = value === null ? null : toBiasMap(value as Record<string, number>);
      else if (key === "bad_words") this.bad_words = (value as string[] | null) ?? [];
      else if (key === "structured_outputs") this.structured_outputs = value === null ? null : structuredOutputs(value as StructuredOutputsInit);
      else (this as Record<string, unknown>)[key] = value;
    }
    this.validate();
  }

  get greedy(): boolean {
    return this.temperature === 0;
  }

  /** Throws SamplingParamsError naming the first invalid field. */
  validate(): void {
    const int = (f: keyof this & string, v: unknown, min: number) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new SamplingParamsError(f, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    };
    const num = (f: keyof this & string, v: unknown, lo: number, hi: number, loOpen = false) => {
      if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi || (loOpen && v === lo))
        throw new SamplingParamsError(f, `must be a number in ${loOpen ? "(" : "["}${lo}, ${hi}], got ${JSON.stringify(v)}`);
    };
    int("n", this.n, 1);
    if (this.n > MAX_N) throw new SamplingParamsError("n", `must be <= ${MAX_N}, got ${this.n}`);
    num("temperature", this.temperature, 0, 1e6);
    num("top_p", this.top_p, 0, 1, true);
    if (typeof this.top_k !== "number" || !Number.isInteger(this.top_k) || this.top_k < -1) throw new SamplingParamsError("top_k", `must be -1, 0 (disabled) or a positive integer, got ${JSON.stringify(this.top_k)}`);
    num("min_p", this.min_p, 0, 1);
    if (this.seed !== null && (typeof this.seed !== "number" || !Number.isSafeInteger(this.seed))) throw new SamplingParamsError("seed", `must be an integer, got ${JSON.stringify(this.seed)}`);
    if (this.max_tokens !== null) int("max_tokens", this.max_tokens, 1);
    int("min_tokens", this.min_tokens, 0);
    if (this.max_tokens !== null && this.min_tokens > this.max_tokens) throw new SamplingParamsError("min_tokens", `must be <= max_tokens (${this.max_tokens}), got ${this.min_tokens}`);
    if (!Array.isArray(this.stop) || !this.stop.every((s) => typeof s === "string")) throw new SamplingParamsError("stop", "must be a string or a list of strings");
    if (this.stop.some((s) => s.length === 0)) throw new SamplingParamsError("stop", "stop strings must not be empty");
    if (!Array.isArray(this.stop_token_ids) || !this.stop_token_ids.every((t) => Number.isInteger(t) && t >= 0)) throw new SamplingParamsError("stop_token_ids", "must be a list of non-negative integers");
    if (typeof this.ignore_eos !== "boolean") throw new SamplingParamsError("ignore_eos", "must be a boolean");
    num("presence_penalty", this.presence_penalty, -2, 2);
    num("frequency_penalty", this.frequency_penalty, -2, 2);
    num("repetition_penalty", this.repetition_penalty, 0, 1e6, true);
    if (this.logprobs !== null) {
      int("logprobs", this.logprobs, 0);
      if (this.logprobs > MAX_LOGPROBS) throw new SamplingParamsError("logprobs", `must be <= ${MAX_LOGPROBS}, got ${this.logprobs}`);
    }
    if (this.prompt_logprobs !== null) {
      int("prompt_logprobs", this.prompt_logprobs, 0);
      if (this.prompt_logprobs > MAX_LOGPROBS) throw new SamplingParamsError("prompt_logprobs", `must be <= ${MAX_LOGPROBS}, got ${this.prompt_logprobs}`);
    }
    if (typeof this.include_stop_str_in_output !== "boolean") throw new SamplingParamsError("include_stop_str_in_output", "must be a boolean");
    if (typeof this.skip_special_tokens !== "boolean") throw new SamplingParamsError("skip_special_tokens", "must be a boolean");
    const ids = (v: unknown) => Array.isArray(v) && v.every((t) => Number.isInteger(t) && t >= 0);
    if (this.allowed_token_ids !== null && (!ids(this.allowed_token_ids) || this.allowed_token_ids.length === 0)) throw new SamplingParamsError("allowed_token_ids", "must be a non-empty list of token ids");
    if (!Array.isArray(this.bad_words) || !this.bad_words.every((w) => typeof w === "string" && w.trim().length > 0)) throw new SamplingParamsError("bad_words", "must be a list of non-empty strings");
    if (this.bad_words_token_ids !== null && (!Array.isArray(this.bad_words_token_ids) || !this.bad_words_token_ids.every((w) => ids(w) && w.length > 0)))
      throw new SamplingParamsError("bad_words_token_ids", "must be a list of non-empty token id lists");
    if (!Number.isSafeInteger(this.priority)) throw new SamplingParamsError("priority", `must be an integer, got ${JSON.stringify(this.priority)}`);
    if (this.cache_salt !== null && (typeof this.cache_salt !== "string" || this.cache_salt.length === 0)) throw new SamplingParamsError("cache_salt", "must be a non-empty string");
    if (this.truncate_prompt_tokens !== null && (!Number.isInteger(this.truncate_prompt_tokens) || (this.truncate_prompt_tokens < 1 && this.truncate_prompt_tokens !== -1)))
      throw new SamplingParamsError("truncate_prompt_tokens", `must be -1 or an integer >= 1, got ${JSON.stringify(this.truncate_prompt_tokens)}`);
  }

  /** Checks token ids against the vocabulary (done by the engine, which knows it). */
  validateForVocab(vocabSize: number): void {
    for (const t of this.stop_token_ids) if (t >= vocabSize) throw new SamplingParamsError("stop_token_ids", `token id ${t} is out of vocabulary (size ${vocabSize})`);
    if (this.logit_bias) for (const t of this.logit_bias.keys()) if (t >= vocabSize) throw new SamplingParamsError("logit_bias", `token id ${t} is out of vocabulary (size ${vocabSize})`);
    for (const t of this.allowed_token_ids ?? []) if (t >= vocabSize) throw new SamplingParamsError("allowed_token_ids", `token id ${t} is out of vocabulary (size ${vocabSize})`);
    for (const w of this.bad_words_token_ids ?? []) for (const t of w) if (t >= vocabSize) throw new SamplingParamsError("bad_words_token_ids", `token id ${t} is out of vocabulary (size ${vocabSize})`);
  }

  /**
   * Fills bad_words_token_ids from bad_words (as vLLM: each word as given and, where that makes other tokens,
   * after a space — so it is banned at the start of the text and in the middle).
   */
  tokenizeBadWords(encode: (text: string) => number[]): void {
    if (this.bad_words.length === 0 || this.bad_words_token_ids !== null) return;
    const out: number[][] = [];
    for (const word of this.bad_words) {
      const bare = encode(word.trimStart());
      if (bare.length > 0) out.push(bare);
      const spaced = encode(" " + word.trimStart());
      if (spaced.length > 0 && spaced.length === bare.length && spaced[0] !== bare[0]) out.push(spaced);
    }
    this.bad_words_token_ids = out;
  }

  /** The prompt as the request keeps it (truncate_prompt_tokens: its last tokens). */
  truncatePrompt(ids: number[], maxModelLen: number): number[] {
    const keep = this.truncate_prompt_tokens === -1 ? maxModelLen : this.truncate_prompt_tokens;
    return keep === null || ids.length <= keep ? ids : ids.slice(ids.length - keep);
  }

  /** An independent copy (the engine fills in max_tokens per request). */
  clone(): SamplingParams {
    return new SamplingParams(this.toInit());
  }

  /** Plain fields (for structured cloning to the engine worker); new SamplingParams(p.toInit()) equals p. */
  toInit(): SamplingParamsInit {
    const { logit_bias, structured_outputs, ...rest } = this;
    return {
      ...rest, stop: this.stop.slice(), stop_token_ids: this.stop_token_ids.slice(), logit_bias: logit_bias ? Object.fromEntries(logit_bias) : null,
      allowed_token_ids: this.allowed_token_ids?.slice() ?? null, bad_words: this.bad_words.slice(), bad_words_token_ids: this.bad_words_token_ids?.map((w) => w.slice()) ?? null,
      structured_outputs: structured_outputs ? structuredClone(structured_outputs) : null,
    };
  }

  /** Longest stop string, for the streaming hold-back window. */
  get maxStopLength(): number {
    return this.stop.reduce((m, s) => Math.max(m, s.length), 0);
  }

  get needsPenalties(): boolean {
    return this.presence_penalty !== 0 || this.frequency_penalty !== 0 || this.repetition_penalty !== 1;
  }
}

function structuredOutputs(init: StructuredOutputsInit): StructuredOutputs {
  try {
    return normalizeStructuredOutputs(init);
  } catch (e) {
    if (e instanceof StructuredOutputsError) throw new SamplingParamsError(e.field, e.message.slice(e.field.length + 2));
    throw e;
  }
}

function toBiasMap(bias: Record<string, number>): Map<number, number> {
  if (typeof bias !== "object" || Array.isArray(bias)) throw new SamplingParamsError("logit_bias", "must be an object mapping token ids to biases");
  const m = new Map<number, number>();
  for (const [k, v] of Object.entries(bias)) {
    const id = Number(k);
    if (!Number.isInteger(id) || id < 0) throw new SamplingParamsError("logit_bias", `key '${k}' is not a token id`);
    if (typeof v !== "number" || !Number.isFinite(v) || v < -100 || v > 100) throw new SamplingParamsError("logit_bias", `bias for token ${k} must be in [-100, 100], got ${JSON.stringify(v)}`);
    m.set(id, v);
  }
  return m;
}

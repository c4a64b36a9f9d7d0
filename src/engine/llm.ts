/** The offline API: LLM.generate(prompts, params) → outputs in input order (vLLM's `LLM`). */
import { resolve } from "node:path";
import type { EngineOptions } from "./engine-config.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { LLMEngine, promptList, type PromptInput } from "./llm-engine.ts";
import type { RequestOutput } from "./request.ts";
import { SamplingParams, type SamplingParamsInit } from "./sampling-params.ts";
import { dimensionsError, embedding, pairCosines, type PoolerConfig } from "../model/pooling.ts";
import { classifierScores, crossEncoderInput, topLabel } from "../model/classifier.ts";
import { beamSearch, candidateParams, candidatesOf, type BeamSearchParams, type BeamSearchSequence } from "./beam-search.ts";

/** A prompt's beams (vLLM's BeamSearchOutput), best first, each with its text. */
export interface BeamSearchOutput {
  promptTokenIds: number[];
  sequences: (BeamSearchSequence & { text: string })[];
}

/** One prompt's embedding (vLLM's EmbeddingRequestOutput). */
export interface EmbeddingOutput {
  requestId: string;
  promptTokenIds: number[];
  outputs: { embedding: number[] };
}

/** One prompt's classification (vLLM's ClassificationRequestOutput): its labels' probabilities. */
export interface ClassificationOutput {
  requestId: string;
  promptTokenIds: number[];
  /** probs: the activated logits (softmax; sigmoid for one label), or the raw logits with useActivation false. */
  outputs: { probs: number[]; label: string };
}

export interface ClassifyOptions extends GenerateOptions {
  /** false: the raw logits instead of probabilities (default: the pooler's use_activation, true). */
  useActivation?: boolean;
  /** Keep only the prompt's last N tokens (-1: max_model_len). */
  truncatePromptTokens?: number;
}

export interface EmbedOptions extends GenerateOptions {
  /** Matryoshka models: cut each embedding to this many dimensions (before normalising). */
  dimensions?: number;
  /** Keep only the prompt's last N tokens (-1: max_model_len). */
  truncatePromptTokens?: number;
}

export interface GenerateOptions {
  /** Show a progress bar on stderr (default: when stderr is a TTY). */
  useTqdm?: boolean;
  /**
   * Run the prompts with this LoRA adapter (vLLM's lora_request): a known adapter's name (--lora-modules, or
   * added before), or { name, path } — added under that name at first use, as vLLM's LoRARequest is.
   */
  lora?: LoraChoice;
}

/** A LoRA adapter by name, or by name and directory (vLLM's LoRARequest(lora_name, lora_int_id, lora_path)). */
export type LoraChoice = string | { name: string; path: string };

export class LLM {
  readonly engine: LLMEngine;
  private counter = 0;

  constructor(opts: EngineOptions | LLMEngine = {}) {
    this.engine = opts instanceof LLMEngine ? opts : LLMEngine.create(opts);
  }

  /** The engine's tokenizer (an engine made with skipTokenizerInit has none). */
  get tokenizer(): TextTokenizer {
    if (!this.engine.tokenizer) throw new Error("this engine was created without a tokenizer (skipTokenizerInit)");
    return this.engine.tokenizer;
  }

  /** vLLM's get_default_sampling_params: vLLM's defaults under the model's generation config (--generation-config). */
  getDefaultSamplingParams(): SamplingParams {
    return new SamplingParams({ ...this.engine.info.samplingDefaults });
  }

  /** Shuts down what the engine holds outside the heap (tensor-parallel workers). */
  close(): void {
    this.engine.close();
  }

  /**
   * Generates for each prompt. `params`: a SamplingParams is taken as it is; plain objects and no params at
   * all get the model's generation-config defaults (getDefaultSamplingParams) for the fields they leave out.
   * Structured outputs need generateAsync (their grammars compile asynchronously).
   */
  generate(prompts: PromptInput | PromptInput[], params: SamplingParams | SamplingParamsInit | (SamplingParams | SamplingParamsInit)[] = {}, opts: GenerateOptions = {}): RequestOutput[] {
    const run = this.start(prompts, params, opts, "generate");
    while (this.engine.hasUnfinishedRequests()) {
      if (this.engine.needsPrepare()) throw new Error("generate: structured outputs need `await llm.generateAsync(...)` (grammars compile asynchronously)");
      run.take(this.engine.step());
    }
    return run.finish();
  }

  /** generate() for any params, structured outputs included: resolves when every prompt has its output. */
  async generateAsync(prompts: PromptInput | PromptInput[], params: SamplingParams | SamplingParamsInit | (SamplingParams | SamplingParamsInit)[] = {}, opts: GenerateOptions = {}): Promise<RequestOutput[]> {
    const run = this.start(prompts, params, opts, "generateAsync");
    while (this.engine.hasUnfinishedRequests()) {
      if (this.engine.needsPrepare()) {
        const rejected = await this.engine.prepare();
        if (rejected.length > 0) {
          for (const id of run.ids) this.engine.abort(id);
          throw new Error(`generateAsync: ${rejected.map((r) => r.message).join("; ")}`);
        }
      }
      run.take(this.engine.step());
    }
    return run.finish();
  }

  /**
   * vLLM's LLM.embed, for an embedding model (--runner pooling): each prompt's embedding — the last token's
   * final-norm hidden state, normalised as the model's pooler says — in input order.
   */
  embed(prompts: PromptInput | PromptInput[], opts: EmbedOptions = {}): EmbeddingOutput[] {
    const pooler = this.poolerFor("embed");
    const dims = opts.dimensions ?? null;
    const bad = dimensionsError(this.engine.modelConfig, dims);
    if (bad) throw new Error(`embed: ${bad}`);
    return this.pool(prompts, opts, "embed").map((o) => ({ requestId: o.requestId, promptTokenIds: o.promptTokenIds, outputs: { embedding: Array.from(embedding(o.pooled!, pooler.normalize, dims)) } }));
  }

  /**
   * vLLM's LLM.classify, for a sequence classifier (…ForSequenceClassification, --runner pooling): each
   * prompt's label probabilities and most likely label, in input order.
   */
  classify(prompts: PromptInput | PromptInput[], opts: ClassifyOptions = {}): ClassificationOutput[] {
    const pooler = this.poolerFor("classify"), c = this.engine.modelConfig.classifier!;
    const useActivation = opts.useActivation ?? pooler.useActivation;
    return this.pool(prompts, opts, "classify").map((o) => ({
      requestId: o.requestId, promptTokenIds: o.promptTokenIds,
      outputs: { probs: classifierScores(c, o.pooled!, useActivation), label: topLabel(c, o.pooled!) },
    }));
  }

  /** The engine's pooler, which must serve `task`. */
  private poolerFor(task: "embed" | "classify"): PoolerConfig {
    const pooler = this.engine.info.pooler;
    if (!pooler) throw new Error(`${task}: this model runs as a generative model; create the LLM with runner: "pooling"`);
    if (pooler.task !== task) throw new Error(task === "embed" ? "embed: this model is a sequence classifier: use LLM.classify or LLM.score" : "classify: this is an embedding model: use LLM.embed (classify needs a …ForSequenceClassification checkpoint)");
    return pooler;
  }

  /** Runs prompts through a pooling model; their finished outputs (each with its pooled output) in input order. */
  private pool(prompts: PromptInput | PromptInput[], opts: GenerateOptions & { truncatePromptTokens?: number }, caller: "embed" | "classify"): RequestOutput[] {
    const params = new SamplingParams({ max_tokens: 1, truncate_prompt_tokens: opts.truncatePromptTokens ?? null });
    const run = this.start(prompts, params, opts, caller);
    while (this.engine.hasUnfinishedRequests()) run.take(this.engine.step());
    return run.finish();
  }

  /**
   * vLLM's LLM.beam_search: each prompt's beam_width best continuations by beam search (src/engine/beam-search.ts),
   * each step one-token requests through this engine (with `opts.lora`, vLLM's lora_request, through that adapter).
   */
  async beamSearch(prompts: PromptInput | PromptInput[], params: BeamSearchParams, opts: { lora?: LoraChoice } = {}): Promise<BeamSearchOutput[]> {
    const ids = promptList(prompts).map((p) => (typeof p === "string" ? this.tokenizer.encode(p) : p));
    const next = async (inputs: number[][], count: number) => this.generate(inputs, candidateParams(count), { useTqdm: false, lora: opts.lora }).map(candidatesOf);
    const results = await beamSearch(ids, params, next, this.engine.eosTokenIds, this.engine.options.maxModelLen);
    const tok = this.engine.tokenizer;
    return results.map((seqs, i) => ({ promptTokenIds: ids[i]!, sequences: seqs.map((s) => ({ ...s, text: tok ? tok.decode(s.tokenIds, true) : "" })) }));
  }

  /**
   * vLLM's LLM.score: `first` against each of `second` (one against many), or each pair (as many of each).
   * An embedding model scores by the cosine similarity of the two embeddings; a one-label classifier (a
   * cross-encoder such as a reranker) reads each pair as one input (the tokenizer's pair encoding, or the
   * token ids one after the other) and scores it by its activated logit.
   */
  score(first: PromptInput | PromptInput[], second: PromptInput | PromptInput[], opts: ClassifyOptions = {}): { outputs: { score: number } }[] {
    const a = promptList(first), b = promptList(second);
    if (a.length !== 1 && a.length !== b.length) throw new Error(`score: ${a.length} first texts and ${b.length} second ones: give one, or as many as the second`);
    const firstOf = (i: number) => a[a.length === 1 ? 0 : i]!;
    if (this.engine.info.pooler?.task !== "classify") {
      const v = this.embed([...a, ...b], opts).map((o) => o.outputs.embedding);
      return pairCosines(v, a.length).map((score) => ({ outputs: { score } }));
    }
    const c = this.engine.modelConfig.classifier!;
    if (c.numLabels !== 1) throw new Error(`score: a score needs a classifier with one label; this one has ${c.numLabels} (${c.labels.join(", ")}): use LLM.classify`);
    const pairs = b.map((doc, i) => {
      try { return crossEncoderInput(this.tokenizer, firstOf(i), doc); } catch (e) { throw new Error(`score: ${(e as Error).message}`); }
    });
    return this.classify(pairs, opts).map((o) => ({ outputs: { score: o.outputs.probs[0]! } }));
  }

  /** The adapter a request runs with, by name; one given with its path is added at first use. */
  private loraName(choice: LoraChoice | undefined): string | null {
    if (choice === undefined) return null;
    if (typeof choice === "string") return choice;
    const known = this.engine.info.loraModules.find((m) => m.name === choice.name);
    if (!known) this.engine.addLora(choice.name, choice.path);
    else if (resolve(known.dir) !== resolve(choice.path)) throw new Error(`lora: the name '${choice.name}' is already used by the adapter in ${known.dir}, not ${choice.path}`);
    return choice.name;
  }

  /** Queues one request per prompt; what collects their final outputs. */
  private start(prompts: PromptInput | PromptInput[], params: SamplingParams | SamplingParamsInit | (SamplingParams | SamplingParamsInit)[], opts: GenerateOptions, caller: string) {
    const list = promptList(prompts);
    if (Array.isArray(params) && params.length !== list.length) throw new Error(`${caller}: ${list.length} prompts but ${params.length} sampling params`);
    const defaults = this.engine.info.samplingDefaults;
    const toParams = (p: SamplingParams | SamplingParamsInit) => {
      if (p instanceof SamplingParams) return p;
      const init: Record<string, unknown> = { ...defaults };
      for (const [k, v] of Object.entries(p)) if (v !== undefined) init[k] = v;
      return new SamplingParams(init as SamplingParamsInit);
    };
    const pooler = this.engine.info.pooler;
    if (pooler && caller !== "embed" && caller !== "classify") throw new Error(`${caller}: this is a pooling model (--runner pooling): it makes ${pooler.task === "embed" ? "embeddings (LLM.embed)" : "scores (LLM.classify, LLM.score)"}, not text`);
    const all = list.map((_, i) => toParams(Array.isArray(params) ? params[i]! : params));
    if (caller === "generate" && all.some((p) => p.structured_outputs)) throw new Error("generate: structured outputs need `await llm.generateAsync(...)` (grammars compile asynchronously)");
    const lora = this.loraName(opts.lora);
    const ids: string[] = [];
    try {
      for (let i = 0; i < list.length; i++) {
        const id = `gen-${this.counter++}`;
        // Each request gets its own copy: the engine fills in max_tokens when it is null.
        this.engine.addRequest(id, list[i]!, all[i]!.clone(), performance.now(), "final_only", lora);
        ids.push(id);
      }
    } catch (e) {
      for (const id of ids) this.engine.abort(id);
      throw e;
    }
    const results = new Map<string, RequestOutput>();
    const bar = (opts.useTqdm ?? process.stderr.isTTY) ? new ProgressBar(list.length) : null;
    return {
      ids,
      take: (outputs: RequestOutput[]) => {
        for (const out of outputs) {
          if (!out.finished) continue;
          results.set(out.requestId, out);
          bar?.update(results.size, out.outputs.reduce((a, o) => a + o.tokenIds.length, 0));
        }
      },
      finish: () => {
        bar?.close();
        return ids.map((id) => results.get(id)!);
      },
    };
  }
}

class ProgressBar {
  private readonly start = performance.now();
  private tokens = 0;
  constructor(private readonly total: number) {}
  update(done: number, newTokens: number): void {
    this.tokens += newTokens;
    const secs = (performance.now() - this.start) / 1000;
    const width = 30, filled = Math.round((done / this.total) * width);
    process.stderr.write(`\rProcessed prompts ${"█".repeat(filled)}${" ".repeat(width - filled)} ${done}/${this.total} [${secs.toFixed(1)}s, ${(this.tokens / Math.max(secs, 1e-9)).toFixed(1)} tok/s]`);
  }
  close(): void {
    process.stderr.write("\n");
  }
}

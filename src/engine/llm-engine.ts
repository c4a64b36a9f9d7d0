/**
 * LLMEngine: requests in, step() out. Each step schedules, runs the model, samples, then turns new tokens
 * into text, checks stop conditions, and frees the blocks of finished sequences at once.
 *
 * With async scheduling (vLLM's --async-scheduling) a step is launched before the previous step's tokens
 * reach the host: its sequences carry placeholders whose ids the GPU supplies, and step() then returns the
 * previous step's outputs while the new one runs. A sequence that stops on a token learns it one step late;
 * the extra token it was given is dropped.
 *
 * Requests with structured outputs (a JSON schema, regex, choice or grammar) wait until their grammar is
 * compiled, and each of their steps samples under a mask of the tokens the grammar allows; the masks are
 * made between steps by the async prepare(), which a driver awaits whenever needsPrepare() says so.
 */
import { selectBackend } from "../backend/select-backend.ts";
import { DEFAULT_CUDA } from "../backend/cuda/provider.ts";
import { checkShardable } from "../parallel/shard.ts";
import { TensorParallelGroup } from "../parallel/tp-group.ts";
import type { Tensor } from "../backend/backend.ts";
import { Checkpoint } from "../loader/checkpoint.ts";
import { readQuantization } from "../loader/quantization.ts";
import { CausalLM } from "../model/causal-lm.ts";
import { loadModelConfig, maxSupportedPositions, type ModelConfig } from "../model/config.ts";
import { blocksForSequence, describeKvCacheLayout, kvCacheLayout, kvCapacityTokens, layoutSlides, type KvCacheLayout } from "../model/kv-cache-layout.ts";
import { ensureDefaultModel, SeededRandom } from "../model/tiny-model.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { BlockManager } from "./block-manager.ts";
import { checkPositiveInt, ENGINE_DEFAULTS, EngineConfigError, type EngineOptions } from "./engine-config.ts";
import { describeDefaults, loadSamplingDefaults, type SamplingDefaults } from "./generation-config.ts";
import { EngineMetrics } from "./metrics.ts";
import { graphBuckets, ModelRunner, type LaunchedStep } from "./model-runner.ts";
import { Request, type OutputKind, type RequestOutput } from "./request.ts";
import { SamplingParams } from "./sampling-params.ts";
import { Scheduler, type SchedulerOutput } from "./scheduler.ts";
import { Sequence, type FinishReason } from "./sequence.ts";
import { StructuredOutputManager } from "../structured/structured-output-manager.ts";
import { NgramProposer } from "../speculative/ngram-proposer.ts";
import { describeSpeculativeConfig, parseSpeculativeConfig, type SpeculativeConfig } from "../speculative/speculative-config.ts";
import { loadPoolerConfig, type PoolerConfig } from "../model/pooling.ts";
import { SequenceClassifier } from "../model/classifier.ts";
import { loadLoraAdapter, loraCoverageOf, type LoraCoverage } from "../lora/lora-adapter.ts";
import { LoraManager, type LoraRequest } from "../lora/lora-manager.ts";

/** The GPU KV cache holds at most this many times max_num_seqs × max_model_len tokens. */
const KV_CACHE_CAP = 4;

/** A request the engine cannot serve as given (maps to HTTP 400). */
export class InvalidRequestError extends Error {
  constructor(message: string, readonly param: string | null = null) {
    super(message);
    this.name = "InvalidRequestError";
  }
}

export type PromptInput = string | number[];

/** One prompt or a list of them, as a list (a list of token ids is one prompt; an empty list, no prompts). */
export function promptList(p: PromptInput | PromptInput[]): PromptInput[] {
  return typeof p === "string" || (p.length > 0 && typeof p[0] === "number") ? [p as PromptInput] : (p as PromptInput[]);
}

export interface RequestLimits {
  vocabSize: number;
  maxModelLen: number;
  /** KV blocks that can be handed out, their size, and each KV cache group's window (0: full attention). */
  numBlocks: number;
  blockSize: number;
  kvWindows: number[];
  /** The most tokens one step computes (a sliding group holds a window plus one step's chunk). */
  maxNumBatchedTokens: number;
  /** prompt_logprobs needs logits for whole prompts: not with tensor parallelism (bounded logits gather). */
  promptLogprobs: boolean;
  /** Requests may have a priority (--scheduling-policy priority). */
  priorities: boolean;
  /** A pooling model: a request is a prompt to embed (it may fill the whole context; it generates nothing). */
  pooling: boolean;
}

/**
 * Checks a tokenized request against the model's limits; fills in max_tokens when it is null (the rest of
 * the context). Throws InvalidRequestError with the numbers when it can never be served.
 */
export function validateRequest(ids: readonly number[], params: SamplingParams, l: RequestLimits): void {
  if (ids.length === 0) throw new InvalidRequestError("the prompt is empty", "prompt");
  for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= l.vocabSize) throw new InvalidRequestError(`token id ${id} is out of vocabulary (size ${l.vocabSize})`, "prompt");
  params.validateForVocab(l.vocabSize);
  if (params.prompt_logprobs !== null && !l.promptLogprobs) throw new InvalidRequestError("prompt_logprobs is not supported with tensor parallelism", "prompt_logprobs");
  if (params.priority !== 0 && !l.priorities) throw new InvalidRequestError(`priority ${params.priority} needs --scheduling-policy priority (this server admits requests in arrival order)`, "priority");
  if (l.pooling) {
    if (ids.length > l.maxModelLen) throw new InvalidRequestError(`This model's maximum context length is ${l.maxModelLen} tokens. However, you requested ${ids.length} tokens in the input for embedding generation. Please reduce the length of the input.`, "input");
    if (blocksForSequence(l.kvWindows, ids.length, l.blockSize, l.maxNumBatchedTokens) > l.numBlocks) throw new InvalidRequestError(`the input needs ${ids.length} tokens of KV cache but the whole cache holds ${kvCapacityTokens(l.kvWindows, l.numBlocks, l.blockSize)}`, "input");
    params.max_tokens = 1; // the sequence's one "sampling" step computes its pooled state instead
    return;
  }
  const maxTokens = params.max_tokens ?? l.maxModelLen - ids.length;
  if (ids.length + maxTokens > l.maxModelLen || maxTokens < 1)
    throw new InvalidRequestError(`This model's maximum context length is ${l.maxModelLen} tokens. However, you requested ${ids.length + Math.max(maxTokens, 1)} tokens (${ids.length} in the prompt, ${Math.max(maxTokens, 1)} in the completion). Please reduce the length of the prompt or completion.`, params.max_tokens === null ? "prompt" : "max_tokens");
  const tokens = ids.length + maxTokens;
  if (blocksForSequence(l.kvWindows, tokens, l.blockSize, l.maxNumBatchedTokens) > l.numBlocks)
    throw new InvalidRequestError(`the request needs ${tokens} tokens of KV cache but the whole cache holds ${kvCapacityTokens(l.kvWindows, l.numBlocks, l.blockSize)}`, "max_tokens");
  if (params.max_tokens === null) params.max_tokens = maxTokens;
}

/** Checks that a request's LoRA adapter (null: the base model) is one of `modules`; InvalidRequestError otherwise. */
export function checkLoraModule(modules: readonly { name: string }[], lora: string | null): void {
  if (lora === null || modules.some((m) => m.name === lora)) return;
  throw new InvalidRequestError(modules.length === 0 ? `LoRA adapter '${lora}' is not loaded: this engine serves no adapters (--enable-lora --lora-modules, or load one at run time)` : `LoRA adapter '${lora}' is not loaded (loaded: ${modules.map((m) => m.name).join(", ")})`, "model");
}

/** The engine's LoRA settings (--enable-lora, --lora-modules, --max-lora-rank, --max-loras; null: no LoRA). */
interface LoraSettings {
  modules: [string, string][];
  maxRank: number;
  maxLoras: number;
  runtimeUpdating: boolean;
}

function loraSettingsOf(opts: EngineOptions): LoraSettings | null {
  const modules = Object.entries(opts.loraModules ?? {});
  if (opts.enableLora === false && modules.length > 0) throw new EngineConfigError("--lora-modules", "needs LoRA enabled (--enable-lora)");
  if (!(opts.enableLora ?? modules.length > 0)) {
    for (const [flag, v] of [["--max-lora-rank", opts.maxLoraRank], ["--max-loras", opts.maxLoras]] as const)
      if (v !== undefined) throw new EngineConfigError(flag, "applies with LoRA enabled (--enable-lora)");
    return null;
  }
  for (const [name] of modules) if (name.length === 0) throw new EngineConfigError("--lora-modules", "an adapter needs a name (name=path)");
  return {
    modules, maxRank: checkPositiveInt("--max-lora-rank", opts.maxLoraRank ?? 16), maxLoras: checkPositiveInt("--max-loras", opts.maxLoras ?? 1),
    runtimeUpdating: opts.allowRuntimeLoraUpdating === true || modules.length === 0,
  };
}

export interface EngineInfo {
  modelDir: string;
  /** Where the tokenizer comes from: the model's directory, or --tokenizer's. */
  tokenizerDir: string;
  isDefaultModel: boolean;
  device: "cpu" | "cuda";
  numBlocks: number;
  blockSize: number;
  maxModelLen: number;
  kvCapacityTokens: number;
  loadSeconds: number;
  /** Time spent capturing decode CUDA graphs (null: none, e.g. CPU or --enforce-eager). */
  graphSeconds: number | null;
  /** Sampling defaults for fields a request leaves out (--generation-config); {} = vLLM's own. */
  samplingDefaults: SamplingDefaults;
  /** What the engine serves: text ("generate") or embeddings ("pooling", with its pooler). */
  runner: "generate" | "pooling";
  pooler: PoolerConfig | null;
  /** LoRA adapters known by name (a request names one; see addRequest), kept current by addLora / removeLora. */
  loraModules: { name: string; dir: string }[];
  /** LoRA's limits (null: LoRA is not enabled): adapters in a batch at most, their largest rank, run-time adapters of any target. */
  lora: { maxLoras: number; maxRank: number; runtimeUpdating: boolean } | null;
}

/** A launched step: the sequences it samples for, in row order, and its tokens on their way. */
interface RunningStep extends LaunchedStep {
  seqs: Sequence[];
  /** Each sequence's draft tokens (speculative decoding): it has 1 + drafts rows of sampled tokens. */
  drafts: number[];
}

export class LLMEngine {
  readonly scheduler: Scheduler;
  readonly blockManager: BlockManager;
  readonly metrics = new EngineMetrics();
  readonly eosTokenIds: number[];
  private readonly requests = new Map<string, Request>();
  private nextSeqId = 0;
  private readonly seedRng: SeededRandom;
  /** Async scheduling: the launched step whose tokens are not read yet. */
  private running: RunningStep | null = null;
  /** Steps launched while the previous step's tokens were still on their way (async scheduling at work). */
  overlappedSteps = 0;
  /** Structured outputs: the grammar compiler (made at the first such request). */
  private structured: StructuredOutputManager | null = null;
  /** Structured requests whose sequences have no matcher yet (not in the scheduler until they do). */
  private grammarWaiting: Request[] = [];
  /** Sequences that took a token under their grammar: their next mask is still to be made. */
  private readonly grammarStale = new Set<Sequence>();
  /** Speculative decoding: proposes each decoding sequence's draft tokens before a step (null: off). */
  private readonly proposer: NgramProposer | null;

  constructor(
    readonly modelConfig: ModelConfig,
    /** null with skipTokenizerInit: token ids in and out, no text (the server detokenizes). */
    readonly tokenizer: TextTokenizer | null,
    readonly runner: ModelRunner,
    readonly options: Required<Omit<EngineOptions, "model" | "numGpuBlocksOverride" | "kvCacheMemoryBytes" | "chatTemplate" | "log" | "onModelDir" | "maxModelLen" | "cuda" | "profileKernels" | "skipTokenizerInit" | "tokenizer" | "quantization" | "kvCacheDtype" | "generationConfig" | "overrideGenerationConfig" | "speculativeConfig" | "runner" | "poolerConfig" | "hfOverrides" | "enableLora" | "loraModules" | "maxLoraRank" | "maxLoras" | "allowRuntimeLoraUpdating">> & { maxModelLen: number; numBlocks: number; kvLayout: KvCacheLayout; speculative: SpeculativeConfig | null; classifier: SequenceClassifier | null },
    readonly info: EngineInfo,
    private readonly log: (m: string) => void = (m) => process.stderr.write(`[vbun] ${m}\n`),
    /** LoRA's adapters and model slots (null: LoRA is not enabled). */
    readonly loras: LoraManager | null = null,
  ) {
    this.eosTokenIds = runner.sampler.eosTokenIds as number[];
    this.blockManager = new BlockManager(options.numBlocks, options.blockSize, options.enablePrefixCaching, options.kvLayout);
    this.scheduler = new Scheduler({
      maxNumSeqs: options.maxNumSeqs,
      maxNumBatchedTokens: options.maxNumBatchedTokens,
      maxModelLen: options.maxModelLen,
      enableChunkedPrefill: options.enableChunkedPrefill,
      policy: options.schedulingPolicy,
    }, this.blockManager, loras);
    this.seedRng = new SeededRandom(options.seed);
    this.proposer = options.speculative ? new NgramProposer(options.speculative) : null;
  }

  /** Loads a model directory (or the built-in tiny model) on the chosen device. */
  static create(opts: EngineOptions = {}): LLMEngine {
    const t0 = performance.now();
    const log = opts.log ?? ((m: string) => process.stderr.write(`[vbun] ${m}\n`));
    const isDefaultModel = opts.model === undefined;
    const modelDir = opts.model ?? ensureDefaultModel(log);
    if (isDefaultModel) log(`using the built-in RANDOM-WEIGHT test model (tiny Qwen3; it outputs gibberish): ${modelDir}`);
    opts.onModelDir?.(modelDir);
    const device = opts.device ?? ENGINE_DEFAULTS.device;
    if (device !== "auto" && device !== "cpu" && device !== "cuda") throw new EngineConfigError("--device", `must be auto, cpu or cuda, got '${device}'`);
    const tp = checkPositiveInt("--tensor-parallel-size", opts.tensorParallelSize ?? ENGINE_DEFAULTS.tensorParallelSize);

    const cfg = loadModelConfig(modelDir, opts.hfOverrides);
    const samplingDefaults = loadSamplingDefaults(opts.generationConfig ?? "auto", modelDir, opts.overrideGenerationConfig);
    if (Object.keys(samplingDefaults).length > 0) log(`default sampling parameters from the generation config: ${describeDefaults(samplingDefaults)} (requests that set a field keep theirs; --generation-config vllm ignores the file)`);
    // vLLM's --quantization fp8 on an unquantized checkpoint: its linear weights quantized to FP8 as they load.
    let onlineQuantization: "fp8" | null = null;
    if (opts.quantization !== undefined) {
      const method = readQuantization(modelDir)?.method ?? null;
      if (method === null && opts.quantization === "fp8") onlineQuantization = "fp8";
      // vLLM's names for its Marlin kernels over the same checkpoints are accepted too.
      else if (opts.quantization !== method && !(method && opts.quantization === `${method}_marlin` && (method === "gptq" || method === "awq")))
        throw new EngineConfigError("--quantization", `'${opts.quantization}', but the checkpoint is ${method ? `quantized with ${method}` : "not quantized"}: vbun reads a quantized checkpoint's own method (fp8, compressed-tensors, gptq, awq, mxfp4) without the flag, and quantizes an unquantized one only to fp8`);
    }
    if (opts.kvCacheDtype !== undefined && opts.kvCacheDtype !== "auto")
      throw new EngineConfigError("--kv-cache-dtype", `'${opts.kvCacheDtype}' is not supported: the KV cache is kept in the compute dtype (auto)`);
    const tokenizerDir = opts.tokenizer ?? modelDir;
    const tokenizer = opts.skipTokenizerInit ? null : TextTokenizer.load(tokenizerDir, opts.chatTemplate);
    const maxPositions = maxSupportedPositions(cfg);
    const maxModelLen = opts.maxModelLen === undefined ? maxPositions : checkPositiveInt("--max-model-len", opts.maxModelLen);
    if (maxModelLen > maxPositions) throw new EngineConfigError("--max-model-len", `${maxModelLen} exceeds the model's ${maxPositions === cfg.maxPositionEmbeddings ? "max_position_embeddings" : "positions with its rope_scaling (original_max_position_embeddings × factor)"} (${maxPositions})`);
    const maxNumSeqs = checkPositiveInt("--max-num-seqs", opts.maxNumSeqs ?? ENGINE_DEFAULTS.maxNumSeqs);
    const enableChunkedPrefill = opts.enableChunkedPrefill ?? ENGINE_DEFAULTS.enableChunkedPrefill;
    const maxNumBatchedTokens = checkPositiveInt("--max-num-batched-tokens", opts.maxNumBatchedTokens ?? (enableChunkedPrefill ? ENGINE_DEFAULTS.maxNumBatchedTokens : Math.max(maxModelLen, ENGINE_DEFAULTS.maxNumBatchedTokens)));
    if (!enableChunkedPrefill && maxNumBatchedTokens < maxModelLen) throw new EngineConfigError("--max-num-batched-tokens", `must be >= max_model_len (${maxModelLen}) without chunked prefill`);
    const blockSize = checkPositiveInt("--block-size", opts.blockSize ?? ENGINE_DEFAULTS.blockSize);
    const dtype = opts.dtype ?? ENGINE_DEFAULTS.dtype;
    const schedulingPolicy = opts.schedulingPolicy ?? ENGINE_DEFAULTS.schedulingPolicy;
    if (schedulingPolicy !== "fcfs" && schedulingPolicy !== "priority") throw new EngineConfigError("--scheduling-policy", `must be fcfs or priority, got '${schedulingPolicy}'`);
    if (!["auto", "float32", "bfloat16", "float16", "half"].includes(dtype)) throw new EngineConfigError("--dtype", `must be auto, float32, bfloat16 or float16, got '${dtype}'`);
    const speculative = opts.speculativeConfig ? parseSpeculativeConfig(opts.speculativeConfig) : null;
    const runnerOpt = opts.runner ?? ENGINE_DEFAULTS.runner;
    if (!["auto", "generate", "pooling"].includes(runnerOpt)) throw new EngineConfigError("--runner", `must be auto, generate or pooling, got '${runnerOpt}'`);
    const runnerKind = runnerOpt === "auto" ? (cfg.headless || cfg.classifier ? "pooling" : "generate") : runnerOpt;
    if (runnerKind !== "pooling" && opts.poolerConfig) throw new EngineConfigError("--pooler-config", "applies to pooling models only (--runner pooling)");
    if (runnerKind !== "pooling" && cfg.classifier) throw new EngineConfigError("--runner", `${cfg.architecture} sequence classifier (…ForSequenceClassification) has a score head, not an LM head: it runs as a pooling model (--runner pooling or auto)`);
    const pooler = runnerKind === "pooling" ? loadPoolerConfig(modelDir, opts.poolerConfig, cfg.classifier !== null) : null;
    const loraSettings = loraSettingsOf(opts);
    // --lora-modules adapters are read and checked here, before anything is allocated (again when added to the manager).
    const startAdapters = loraSettings ? loraSettings.modules.map(([name, dir]) => loadLoraAdapter(name, dir, cfg, loraSettings.maxRank)) : [];
    const loraSlots: { slots: number; maxRank: number; coverage: LoraCoverage } | null = loraSettings && {
      slots: loraSettings.maxLoras, maxRank: loraSettings.maxRank, coverage: loraSettings.runtimeUpdating ? "all" : loraCoverageOf(startAdapters),
    };
    if (pooler && speculative) throw new EngineConfigError("--speculative-config", "a pooling model generates no tokens to speculate on");
    // Sampled rows per step at most: one per sequence, and with drafts one per draft token too (never more than the step's tokens).
    // MEAN / CLS pooling reads every token's hidden state.
    const allRows = pooler !== null && pooler.poolingType !== "LAST";
    const maxLogitsRows = speculative ? Math.max(maxNumSeqs, Math.min(maxNumBatchedTokens, maxNumSeqs * (1 + speculative.numSpeculativeTokens))) : allRows ? Math.max(maxNumSeqs, maxNumBatchedTokens) : maxNumSeqs;

    const kvLayout = kvCacheLayout(cfg.layerWindows, !(opts.disableHybridKvCacheManager ?? false));
    const numKvGroups = kvLayout.groups.length;
    const util = opts.gpuMemoryUtilization ?? ENGINE_DEFAULTS.gpuMemoryUtilization;
    if (!(util > 0 && util <= 1)) throw new EngineConfigError("--gpu-memory-utilization", `must be in (0, 1], got ${util}`);
    const { backend, kind, cuda } = selectBackend(device, log, opts.cuda);
    let tpGroup: TensorParallelGroup | null = null;
    try {
      if (opts.profileKernels) {
        if (!cuda) throw new EngineConfigError("profileKernels", "kernel profiling needs the CUDA backend");
        cuda.enableProfiling();
      }
      if (kind === "cuda" && !["auto", "bfloat16"].includes(dtype)) throw new EngineConfigError("--dtype", `the CUDA backend runs bfloat16 only, got '${dtype}'`);
      let model: CausalLM<Tensor>;
      if (tp > 1) {
        const provider = opts.cuda ?? DEFAULT_CUDA;
        if (cuda) {
          const visible = provider.deviceCount(cuda);
          if (tp > visible) throw new EngineConfigError("--tensor-parallel-size", `${tp} ranks need ${tp} GPUs but only ${visible} ${visible === 1 ? "is" : "are"} visible`);
        }
        try { checkShardable(cfg, tp); } catch (e) { throw new EngineConfigError("--tensor-parallel-size", (e as Error).message); }
        const limits = { maxTokens: maxNumBatchedTokens, maxSeqs: maxNumSeqs, maxBlocksPerSeq: Math.ceil(maxModelLen / blockSize), maxLogitsRows, numKvGroups };
        tpGroup = new TensorParallelGroup(cfg, modelDir, tp, maxModelLen, limits, cuda ? { kind: "cuda", leader: cuda, provider } : { kind: "cpu" }, pooler !== null, opts.hfOverrides ?? {}, loraSlots, onlineQuantization);
        model = tpGroup.model;
        if (!cuda) backend.close?.(); // the CPU ranks bring their own single-threaded backends
        log(`tensor parallel: ${tp} ${cuda ? "GPU ranks over NCCL" : "CPU ranks"} (rank 0 here, ${tp - 1} workers), ${model.localDims.numHeads} query / ${model.localDims.numKvHeads} KV heads and ${model.localDims.intermediate} MLP rows per rank`);
      } else {
        model = new CausalLM<Tensor>(cfg, backend, maxModelLen, null, { pooling: pooler !== null });
        model.load(new Checkpoint(modelDir, { onlineQuantization }));
        if (loraSlots) model.enableLora(loraSlots.slots, loraSlots.maxRank, loraSlots.coverage);
      }
      if (onlineQuantization) log(`--quantization fp8: linear weights (projections, experts) quantized to FP8 (E4M3) as they load${cuda ? ", on the GPU" : ""}, one scale per output row of each rank's shard (vLLM's one per tensor is coarser); embeddings, the LM head and norms keep the checkpoint's dtype`);
      const packed = cuda?.packedWeights;
      if (packed && packed.count > 0) {
        const size = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);
        log(`quantized weights: ${packed.count} projections${cfg.moe ? " and expert stacks" : ""} stay packed on the GPU${tp > 1 ? " (rank 0)" : ""}, ${size(packed.bytes)} (as bf16: ${size(packed.bf16Bytes)}); linear layers of over 8 rows dequantize one layer at a time into a ${size(packed.scratchBytes)} scratch`);
      }
      const loras = loraSettings && loraSlots && new LoraManager(cfg, loraSlots.slots, loraSlots.maxRank, loraSlots.coverage);
      for (const [name, dir] of loraSettings?.modules ?? []) loras!.add(name, dir);
      if (loraSettings) log(`LoRA: ${startAdapters.length > 0 ? startAdapters.map((a) => `${a.name} (rank ${a.rank}, ${a.weights.size} projections)`).join(", ") : "no adapters yet"}; up to ${loraSettings.maxLoras} in a batch (--max-loras), max rank ${loraSettings.maxRank}${loraSettings.runtimeUpdating ? ", every projection covered (adapters may be added at run time)" : ""}`);
      // classifier_from_token looks its tokens up in the vocabulary (the server's engine worker has no tokenizer of its own: it loads one, once, for that).
      let vocabulary = tokenizer;
      const classifier = cfg.classifier ? SequenceClassifier.load(cfg, new Checkpoint(modelDir), (t) => (vocabulary ??= TextTokenizer.load(tokenizerDir)).tokenId(t)) : null;
      // Activation buffers at their largest, before the KV cache takes what is left.
      if (tpGroup) tpGroup.reserve(maxNumBatchedTokens, maxLogitsRows, blockSize);
      else model.reserve(maxNumBatchedTokens, maxLogitsRows);
      const bytesPerBlock = model.kvBytesPerBlock(blockSize, kind === "cuda" ? 2 : 4, kvLayout);
      // With sliding-window groups block 0 is the null block, never handed out.
      const reserved = layoutSlides(kvLayout) ? 1 : 0;
      const windows = kvLayout.groups.map((g) => g.window);
      const oneSequence = blocksForSequence(windows, maxModelLen, blockSize, maxNumBatchedTokens);
      const maxUsefulBlocks = maxNumSeqs * oneSequence + reserved;
      let numBlocks: number;
      if (opts.numGpuBlocksOverride !== undefined) {
        numBlocks = checkPositiveInt("--num-gpu-blocks-override", opts.numGpuBlocksOverride);
        if (numBlocks <= reserved) throw new EngineConfigError("--num-gpu-blocks-override", `${numBlocks} block: a KV cache with sliding-window groups needs at least 2 (block 0 is the null block)`);
      } else if (opts.kvCacheMemoryBytes !== undefined) {
        const bytes = checkPositiveInt("--kv-cache-memory-bytes", opts.kvCacheMemoryBytes);
        numBlocks = Math.floor(bytes / bytesPerBlock);
        const need = oneSequence + reserved;
        if (numBlocks < need) throw new EngineConfigError("--kv-cache-memory-bytes", `${bytes} bytes hold ${numBlocks} KV blocks of ${bytesPerBlock} bytes; one ${maxModelLen}-token sequence needs ${need} (${need * bytesPerBlock} bytes): raise it or lower --max-model-len`);
        if (cuda) {
          const { free } = cuda.driver.memInfo();
          if (numBlocks * bytesPerBlock > free) throw new EngineConfigError("--kv-cache-memory-bytes", `${bytes} bytes, but the GPU has ${free} bytes free after the weights and activations`);
        }
      } else if (cuda) {
        const { free, total } = cuda.driver.memInfo();
        const budget = free - total * (1 - util);
        numBlocks = Math.floor(budget / bytesPerBlock);
        if (numBlocks - reserved < oneSequence) throw new EngineConfigError("--gpu-memory-utilization", `only ${Math.max(0, numBlocks)} KV blocks fit (${(free / 2 ** 30).toFixed(1)} GiB free of ${(total / 2 ** 30).toFixed(1)}); one ${maxModelLen}-token sequence needs ${oneSequence + reserved}: raise it or lower --max-model-len`);
        // Beyond 4× what max_num_seqs full-length sequences can use, more blocks only lengthen the prefix
        // cache's memory; for a small model they would run to tens of millions (and the block manager's
        // host arrays to gigabytes), so the cache stops there and the memory stays free.
        if (numBlocks > KV_CACHE_CAP * maxUsefulBlocks) numBlocks = KV_CACHE_CAP * maxUsefulBlocks;
      } else numBlocks = Math.max(1 + reserved, Math.min(maxUsefulBlocks, Math.floor((opts.cpuKvCacheBytes ?? ENGINE_DEFAULTS.cpuKvCacheBytes) / bytesPerBlock)));
      log(`KV cache: ${numBlocks} blocks of ${blockSize} tokens (${((numBlocks * bytesPerBlock) / 2 ** 30).toFixed(2)} GiB); ${describeKvCacheLayout(kvLayout)}`);
      if (tpGroup) tpGroup.allocKvCache(numBlocks, blockSize, kvLayout);
      else model.allocKvCache(numBlocks, blockSize, kvLayout);
      backend.reserveStep?.(maxNumBatchedTokens, maxNumSeqs, Math.ceil(maxModelLen / blockSize), maxLogitsRows, numKvGroups, blockSize);
      const eosTokenIds = [...new Set([...cfg.eosTokenIds, ...(tokenizer?.eosTokenIds ?? [])])];
      // model.backend: the selected backend, or with tensor parallelism rank 0's own.
      const runner = new ModelRunner(model.backend, model, { maxNumBatchedTokens, maxNumSeqs, maxModelLen, blockSize, eosTokenIds, numKvGroups, pooling: pooler?.poolingType }, tpGroup);
      const enforceEager = opts.enforceEager ?? ENGINE_DEFAULTS.enforceEager;
      let graphSeconds: number | null = null;
      // A pooling model runs prompts only: no decode steps to replay.
      if (kind === "cuda" && !enforceEager && !pooler) {
        const buckets = graphBuckets(maxNumSeqs);
        graphSeconds = runner.captureDecodeGraphs(buckets);
        log(`captured ${buckets.length} decode CUDA graphs in ${graphSeconds.toFixed(2)}s`);
      }
      let asyncScheduling = opts.asyncScheduling ?? ENGINE_DEFAULTS.asyncScheduling;
      if (asyncScheduling && tpGroup) {
        log("async scheduling is off with tensor parallelism (the ranks take each step's token ids from the host)");
        asyncScheduling = false;
      }
      if (asyncScheduling && speculative) {
        log("async scheduling is off with speculative decoding (draft tokens are proposed from the tokens each step reads back)");
        asyncScheduling = false;
      }
      if (asyncScheduling) log("async scheduling: on (each step is launched before the previous step's tokens are read)");
      if (speculative) log(`speculative decoding: ${describeSpeculativeConfig(speculative)}`);
      if (pooler?.task === "embed") log(`pooling model (embeddings): ${{ LAST: "the last token", MEAN: "the mean of the prompt's tokens", CLS: "the first token" }[pooler.poolingType]}${pooler.normalize ? ", normalized" : ""}${allRows && (opts.enablePrefixCaching ?? true) ? "; prefix caching off (every prompt token's hidden state is needed)" : ""}`);
      if (classifier) log(`pooling model (sequence classifier): ${pooler!.poolingType} token, ${classifier.numLabels} label${classifier.numLabels === 1 ? "" : "s"} (${cfg.classifier!.labels.join(", ")})${cfg.classifier!.fromTokens ? `, the LM head's rows of ${JSON.stringify(cfg.classifier!.fromTokens.tokens)} (${cfg.classifier!.fromTokens.method})` : ""}`);
      const info: EngineInfo = {
        modelDir, tokenizerDir, isDefaultModel, device: kind, numBlocks, blockSize, maxModelLen,
        kvCapacityTokens: kvCapacityTokens(windows, numBlocks - reserved, blockSize), loadSeconds: (performance.now() - t0) / 1000, graphSeconds, samplingDefaults,
        runner: runnerKind, pooler, loraModules: loras?.modules ?? [],
        lora: loraSettings && { maxLoras: loraSettings.maxLoras, maxRank: loraSettings.maxRank, runtimeUpdating: loraSettings.runtimeUpdating },
      };
      return new LLMEngine(cfg, tokenizer, runner, {
        device: kind, dtype, maxModelLen, maxNumSeqs, maxNumBatchedTokens, blockSize, numBlocks, kvLayout,
        disableHybridKvCacheManager: opts.disableHybridKvCacheManager ?? false,
        cpuKvCacheBytes: numBlocks * bytesPerBlock,
        gpuMemoryUtilization: util,
        // MEAN / CLS pooling needs every prompt token's hidden state: none may come from the cache.
        enablePrefixCaching: (opts.enablePrefixCaching ?? ENGINE_DEFAULTS.enablePrefixCaching) && !allRows,
        enableChunkedPrefill, enforceEager, asyncScheduling, schedulingPolicy,
        tensorParallelSize: tp, seed: opts.seed ?? ENGINE_DEFAULTS.seed, speculative, classifier,
      }, info, log, loras);
    } catch (e) {
      // Nothing started here outlives a failed start: tensor-parallel workers, CPU matmul threads, GPU
      // memory. (Cleanup trouble must not hide the error that stopped the start.)
      try { tpGroup?.close(); } catch { /* the start's error is the one to report */ }
      try { backend.close?.(); } catch { /* likewise */ }
      throw e;
    }
  }

  /** The limits a request is checked against (also used by the server thread, see AsyncEngine). */
  get limits(): RequestLimits {
    const bm = this.blockManager;
    return {
      vocabSize: this.modelConfig.vocabSize, maxModelLen: this.options.maxModelLen, numBlocks: bm.numUsableBlocks, blockSize: bm.blockSize, kvWindows: bm.windows,
      maxNumBatchedTokens: this.options.maxNumBatchedTokens, promptLogprobs: this.runner.tpGroup === null, priorities: this.options.schedulingPolicy === "priority", pooling: this.info.pooler !== null,
    };
  }

  /**
   * Queues a request. Throws InvalidRequestError when it can never be served. `outputKind`: what its outputs
   * carry; `lora`: the name of a LoRA adapter to run it with (null: the base model).
   */
  addRequest(requestId: string, prompt: PromptInput, params: SamplingParams = new SamplingParams(), arrivalTime = performance.now(), outputKind: OutputKind = "cumulative", lora: string | null = null): Request {
    if (this.requests.has(requestId)) throw new InvalidRequestError(`request id '${requestId}' is already in use`, "request_id");
    if (typeof prompt === "string" && !this.tokenizer) throw new InvalidRequestError("this engine has no tokenizer (skipTokenizerInit): give the prompt as token ids", "prompt");
    const ids = params.truncatePrompt(typeof prompt === "string" ? this.tokenizer!.encode(prompt) : prompt, this.options.maxModelLen);
    if (params.bad_words.length > 0 && params.bad_words_token_ids === null) {
      if (!this.tokenizer) throw new InvalidRequestError("bad_words need a tokenizer (this engine has none: give bad_words_token_ids)", "bad_words");
      params.tokenizeBadWords((t) => this.tokenizer!.encode(t, false));
    }
    validateRequest(ids, params, this.limits);
    const loraRequest = this.loraRequestOf(lora);
    const seqs: Sequence[] = [];
    const baseSeed = params.seed ?? this.seedRng.nextU32() * 65536 + (this.seedRng.nextU32() & 0xffff);
    for (let i = 0; i < params.n; i++) seqs.push(new Sequence(this.nextSeqId++, requestId, i, ids, params, baseSeed, arrivalTime, loraRequest));
    const req = new Request(requestId, typeof prompt === "string" ? prompt : null, ids, params, seqs, this.tokenizer, arrivalTime, outputKind);
    this.requests.set(requestId, req);
    if (params.structured_outputs) this.grammarWaiting.push(req);
    else for (const s of seqs) this.scheduler.add(s);
    return req;
  }

  /** The adapter a request names (null: the base model); InvalidRequestError when it is not known. */
  private loraRequestOf(lora: string | null): LoraRequest | null {
    if (lora === null) return null;
    const req = this.loras?.get(lora);
    if (!req) checkLoraModule(this.info.loraModules, lora);
    return req!;
  }

  /**
   * vLLM's add_lora: makes the PEFT adapter in `dir` known as `name`; it takes a model slot when a request
   * first needs it. Throws LoraAdapterError (naming the directory) when it cannot be served or the name is
   * taken, InvalidRequestError when LoRA is not enabled.
   */
  addLora(name: string, dir: string): void {
    if (!this.loras) throw new InvalidRequestError("LoRA is not enabled on this engine (--enable-lora)", "lora_name");
    this.loras.add(name, dir);
    this.info.loraModules = this.loras.modules;
  }

  /** vLLM's remove_lora: forgets an adapter's name (requests already queued with it finish with it). False if unknown. */
  removeLora(name: string): boolean {
    if (!this.loras?.remove(name)) return false;
    this.info.loraModules = this.loras.modules;
    return true;
  }

  /** Sequences of structured requests whose grammar is not ready yet (waiting, outside the scheduler). */
  get numWaitingForGrammar(): number {
    return this.grammarWaiting.reduce((a, r) => a + r.seqs.length, 0);
  }

  /** Whether prepare() has work: grammars to compile or masks to make before the next step. */
  needsPrepare(): boolean {
    return this.grammarWaiting.length > 0 || this.grammarStale.size > 0;
  }

  /**
   * Structured outputs' work between steps: the next-token masks of sequences that took a token, and the
   * matchers of new requests (compiling their grammars), which then join the scheduler in arrival order.
   * A request whose constraint cannot be compiled is dropped; returns those with the reason.
   */
  async prepare(): Promise<{ requestId: string; message: string }[]> {
    const stale = [...this.grammarStale];
    this.grammarStale.clear();
    await Promise.all(stale.map((seq) => seq.grammar?.refresh()));
    const waiting = this.grammarWaiting;
    this.grammarWaiting = [];
    if (waiting.length === 0) return [];
    this.structured ??= new StructuredOutputManager(this.info.tokenizerDir, this.modelConfig.vocabSize, () => this.eosTokenIds, this.log);
    const manager = this.structured;
    const made = await Promise.allSettled(waiting.map(async (req) => {
      for (const seq of req.seqs) {
        const g = await manager.matcher(req.params.structured_outputs!);
        seq.grammar = g;
        await g.refresh();
      }
    }));
    const rejected: { requestId: string; message: string }[] = [];
    waiting.forEach((req, i) => {
      const result = made[i]!;
      if (req.finished) return this.releaseGrammars(req); // aborted meanwhile
      if (result.status === "fulfilled") {
        for (const seq of req.seqs) this.scheduler.add(seq);
        return;
      }
      const message = (result.reason as Error)?.message ?? String(result.reason);
      this.log(`request ${req.requestId}: structured outputs failed: ${message}`);
      this.abort(req.requestId);
      rejected.push({ requestId: req.requestId, message });
    });
    return rejected;
  }

  private releaseGrammars(req: Request): void {
    for (const seq of req.seqs) this.releaseGrammar(seq);
  }

  private releaseGrammar(seq: Sequence): void {
    if (!seq.grammar) return;
    seq.grammar.dispose();
    seq.grammar = null;
    this.grammarStale.delete(seq);
  }

  /** Aborts a request, freeing its blocks immediately. Returns its final output, or null if unknown. */
  abort(requestId: string): RequestOutput | null {
    const req = this.requests.get(requestId);
    if (!req) return null;
    for (const seq of req.seqs) {
      this.releaseGrammar(seq);
      if (seq.isFinished) continue;
      seq.finishReason = "abort";
      this.scheduler.finish(seq);
    }
    const waitingAt = this.grammarWaiting.indexOf(req);
    if (waitingAt >= 0) this.grammarWaiting.splice(waitingAt, 1);
    req.finished = true;
    this.requests.delete(requestId);
    this.metrics.recordFinished("abort", req.promptTokenIds.length, req.seqs.reduce((a, s) => a + s.numOutputTokens, 0), (performance.now() - req.arrivalTime) / 1000);
    return req.takeOutput();
  }

  /** More end-of-sequence ids (the tokenizer's, from a server that loaded it while this engine ran without). */
  addEosTokenIds(ids: readonly number[]): void {
    // The sampler shares this array (min_tokens bans these ids).
    for (const id of ids) if (!this.eosTokenIds.includes(id)) this.eosTokenIds.push(id);
  }

  /**
   * Stops sequences that a stop string ended outside the engine (the server's OutputProcessor checks them
   * on the text, and has already given the client their last output): they finish with reason "stop" and
   * free their blocks at once, and the request finishes if they were its last. Unknown ids are ignored.
   */
  stopSequences(requestId: string, indices: readonly number[]): void {
    const req = this.requests.get(requestId);
    if (!req) return;
    for (const i of indices) {
      const seq = req.seqs[i];
      if (seq && !seq.isFinished) this.finishSeq(seq, "stop", null);
    }
    this.finishRequestIfDone(req, performance.now());
  }

  /** Releases what the engine holds outside its own heap (tensor-parallel worker threads). */
  close(): void {
    this.runner.tpGroup?.close();
    this.runner.backend.close?.();
  }

  hasUnfinishedRequests(): boolean {
    return this.requests.size > 0;
  }

  /**
   * Runs one engine step; returns outputs for requests that advanced or finished. With async scheduling
   * these come from the step launched by the previous call, while the one launched now runs.
   */
  step(): RequestOutput[] {
    if (this.grammarStale.size > 0) throw new Error("LLMEngine.step: sequences wait for their next grammar mask: await prepare() before each step while needsPrepare()");
    if (this.proposer) this.proposeDrafts(this.proposer);
    const out = this.scheduler.schedule(performance.now());
    const previous = this.running;
    this.running = null;
    const touched = new Set<Request>();
    if (out.scheduled.length > 0) {
      const launched = this.launch(out);
      if (previous) {
        this.overlappedSteps++;
        this.complete(previous, touched);
      }
      if (this.options.asyncScheduling && launched.overlappable) this.running = launched;
      else this.complete(launched, touched);
    } else if (previous) this.complete(previous, touched);
    else return [];
    return this.collectOutputs(touched);
  }

  /**
   * Speculative decoding: draft tokens for every running sequence that decodes (its tokens all known, no
   * grammar), as many as fit before max_tokens and the model length with the token sampled after them.
   */
  private proposeDrafts(proposer: NgramProposer): void {
    const k = proposer.config.numSpeculativeTokens, maxModelLen = this.options.maxModelLen;
    const limit = proposer.config.disableByBatchSize;
    const paused = limit !== null && this.scheduler.running.length > limit;
    for (const seq of this.scheduler.running) {
      const decoding = !paused && seq.numPlaceholders === 0 && seq.numTokens - seq.numComputedTokens === 1 && !seq.params.structured_outputs;
      const room = decoding ? Math.min(k, seq.params.max_tokens! - seq.numOutputTokens - 1, maxModelLen - seq.numTokens - 1) : 0;
      if (room > 0) proposer.propose(seq, room);
      else seq.numDrafts = 0;
    }
  }

  /** Queues a scheduled step; its sequences advance, each sampling one with a placeholder for its token. */
  private launch(out: SchedulerOutput): RunningStep {
    // Adapters that took a model slot in this schedule go in before the step that uses them.
    if (this.loras) for (const { slot, lora } of this.loras.takeLoads()) this.runner.setLoraSlot(slot, lora);
    const launched = this.runner.launch(out);
    this.scheduler.advance(out);
    this.metrics.numSteps++;
    this.metrics.iterationTokens.observe(out.numBatchedTokens);
    const seqs: Sequence[] = [], drafts: number[] = [];
    for (const s of out.scheduled) {
      if (!s.samples) continue;
      seqs.push(s.seq);
      drafts.push(s.seq.numDrafts);
    }
    return { ...launched, seqs, drafts };
  }

  /**
   * Reads a launched step's tokens into its sequences, then detokenizes and checks stop conditions. A
   * sequence finished meanwhile (stopped by the previous step's token, or aborted) drops its token.
   *
   * A sequence with draft tokens has a sampled token for each draft's place and one after them: the drafts
   * equal to their place's token are confirmed, up to the first that is not, and the sampled tokens up to
   * there are its new tokens (1 + confirmed drafts). Each is exactly the token a step without drafts would
   * have sampled (same logits, same seeded stream step), so speculation never changes outputs; stop
   * conditions are checked token by token.
   */
  private complete(step: RunningStep, touched: Set<Request>): void {
    const sampled = step.sample.wait();
    const done = performance.now();
    if (sampled.hidden) return this.completePooling(step, sampled.hidden, touched, done);
    let row = 0;
    for (let i = 0; i < step.seqs.length; i++) {
      const seq = step.seqs[i]!, drafts = step.drafts[i]!, first = row;
      row += 1 + drafts;
      seq.numDrafts = 0;
      if (seq.isFinished) continue;
      let confirmed = 0;
      while (confirmed < drafts && sampled.tokenIds[first + confirmed] === seq.tokens[seq.numTokens + confirmed]) confirmed++;
      if (drafts > 0) this.metrics.recordDrafts(drafts, confirmed);
      const req = this.requests.get(seq.requestId)!;
      touched.add(req);
      const before = seq.numTokens;
      for (let j = 0; j <= confirmed && !seq.isFinished; j++) {
        const token = sampled.tokenIds[first + j]!;
        if (j === 0) seq.resolvePlaceholder(token);
        else seq.appendToken(token);
        const lp = sampled.logprobs[first + j];
        if (lp) { seq.logprobs.push(lp); seq.cumulativeLogprob += lp.logprob; }
        if (seq.grammar && !this.acceptUnderGrammar(req, seq, token)) break;
        this.checkFinished(req, seq);
        // A complete grammar whose stop token did not end the sequence (ignore_eos, min_tokens): nothing may follow.
        if (seq.grammar && !seq.isFinished && seq.grammar.isTerminated) this.finishSeq(seq, "stop", null, req);
      }
      this.recordTokenTiming(req, seq, done, seq.numTokens - before);
      // The cache holds the drafts' K/V up to the last confirmed one; later positions are computed again.
      if (drafts > 0 && !seq.isFinished) seq.numComputedTokens = seq.numTokens - 1;
    }
  }

  /**
   * A pooling model's step: each prompt whose last token was computed has its pooled hidden state — for a
   * classifier, its score head's logits — and is done.
   */
  private completePooling(step: RunningStep, hidden: Float32Array, touched: Set<Request>, done: number): void {
    const H = this.modelConfig.hiddenSize, classifier = this.options.classifier;
    step.seqs.forEach((seq, r) => {
      if (seq.isFinished) return;
      const req = this.requests.get(seq.requestId)!;
      touched.add(req);
      const h = hidden.slice(r * H, (r + 1) * H);
      seq.pooled = classifier ? classifier.logits(h) : h;
      this.recordTokenTiming(req, seq, done, 0);
      this.finishSeq(seq, "stop", null);
    });
  }

  /**
   * Moves a sequence's grammar past its new token (its next mask is made by prepare()). A token the grammar
   * refuses — only when nothing was allowed, e.g. min_tokens banning the stop token of a complete grammar —
   * ends the sequence ("abort"); returns false then.
   */
  private acceptUnderGrammar(req: Request, seq: Sequence, token: number): boolean {
    const step = seq.grammar!.accept(token);
    if (step === "advanced") this.grammarStale.add(seq);
    if (step !== "rejected") return true;
    this.log(`request ${req.requestId}: sampled token ${token} is outside its grammar (no token was allowed); the sequence ends`);
    this.finishSeq(seq, "abort", null, req);
    return false;
  }

  private collectOutputs(touched: Set<Request>): RequestOutput[] {
    const done = performance.now();
    const outputs: RequestOutput[] = [];
    for (const req of touched) {
      this.finishRequestIfDone(req, done);
      const o = req.takeOutput();
      if (o) outputs.push(o);
    }
    return outputs;
  }

  /** Once every sequence of `req` has finished: the request is finished, counted and forgotten. */
  private finishRequestIfDone(req: Request, now: number): void {
    if (req.finished || !req.seqs.every((q) => q.isFinished)) return;
    req.finished = true;
    this.requests.delete(req.requestId);
    const reason = req.seqs[0]!.finishReason ?? "stop";
    this.metrics.recordFinished(reason, req.promptTokenIds.length, req.seqs.reduce((a, q) => a + q.numOutputTokens, 0), (now - req.arrivalTime) / 1000);
  }

  /** Counts a sequence's `count` new tokens of one step; latencies are per step (as vLLM's, with speculation too). */
  private recordTokenTiming(req: Request, seq: Sequence, now: number, count: number): void {
    const m = this.metrics;
    m.generationTokens += count;
    if (seq.firstTokenTime === null) {
      seq.firstTokenTime = now;
      if (seq.index === 0) {
        m.promptTokens += seq.numPromptTokens;
        m.timeToFirstToken.observe((now - req.arrivalTime) / 1000);
        m.queueTime.observe(((seq.firstScheduledTime ?? now) - req.arrivalTime) / 1000);
      }
    } else if (seq.lastTokenTime !== null) m.interTokenLatency.observe((now - seq.lastTokenTime) / 1000);
    seq.lastTokenTime = now;
  }

  private checkFinished(req: Request, seq: Sequence): void {
    const p = seq.params;
    const token = seq.lastTokenId;
    const text = req.texts[seq.index];
    const canStop = seq.numOutputTokens >= p.min_tokens;
    const eos = canStop && !p.ignore_eos && this.eosTokenIds.includes(token);
    const stopToken = canStop && !eos && p.stop_token_ids.includes(token);
    // As vLLM: the text of the stop token that ends a sequence (EOS's "</s>" where special tokens are kept) stays out unless include_stop_str_in_output.
    const textOf = !((eos || stopToken) && !p.include_stop_str_in_output);
    const stopStr = text && textOf ? text.append(token, canStop ? p.stop : [], p.include_stop_str_in_output) : null;
    if (stopStr !== null) return this.finishSeq(seq, "stop", stopStr);
    seq.stoppedOnToken = eos || stopToken;
    if (eos) return this.finishSeq(seq, "stop", null, req);
    if (stopToken) return this.finishSeq(seq, "stop", token, req);
    if (seq.numOutputTokens >= p.max_tokens! || seq.numTokens >= this.options.maxModelLen) return this.finishSeq(seq, "length", null, req);
  }

  private finishSeq(seq: Sequence, reason: FinishReason, stopReason: string | number | null, flushInto?: Request): void {
    this.releaseGrammar(seq);
    const text = flushInto?.texts[seq.index];
    if (text) {
      const p = seq.params;
      const s = text.flush(p.stop, p.include_stop_str_in_output);
      if (s !== null) stopReason = s;
    }
    seq.finishReason = reason;
    seq.stopReason = stopReason;
    this.scheduler.finish(seq);
  }
}

/** Engine options (named like `vllm serve` flags) with their defaults and checks. */
import type { CudaProvider } from "../backend/cuda/provider.ts";

export type Device = "auto" | "cpu" | "cuda";
export type SchedulingPolicy = "fcfs" | "priority";
export type Runner = "auto" | "generate" | "pooling";

export interface EngineOptions {
  /** Model directory; undefined = the built-in random-weight tiny Qwen3. */
  model?: string;
  device?: Device;
  /** "auto" = the checkpoint's dtype (weights are converted to f32 on CPU). */
  dtype?: string;
  maxModelLen?: number;
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  blockSize?: number;
  /** Exact number of KV blocks (vLLM's --num-gpu-blocks-override; also on CPU). */
  numGpuBlocksOverride?: number;
  /** CPU KV-cache budget in bytes when no block count is given. */
  cpuKvCacheBytes?: number;
  /**
   * vLLM's --kv-cache-memory-bytes: the KV cache's size in bytes, on either device — instead of what
   * --gpu-memory-utilization leaves (GPU) or cpuKvCacheBytes (CPU).
   */
  kvCacheMemoryBytes?: number;
  gpuMemoryUtilization?: number;
  enablePrefixCaching?: boolean;
  enableChunkedPrefill?: boolean;
  enforceEager?: boolean;
  /**
   * vLLM's --disable-hybrid-kv-cache-manager: one block table for all layers, so sliding-window layers keep
   * the whole context's KV like the others. By default (src/model/kv-cache-layout.ts) they keep only their
   * window's, in block tables of their own.
   */
  disableHybridKvCacheManager?: boolean;
  /**
   * vLLM's --async-scheduling: launch each step before the previous step's tokens reach the host, so the
   * host's work between steps (outputs, stop checks, scheduling, inputs) overlaps the GPU's. Steps that
   * score prompt tokens (prompt_logprobs) or combine a repetition penalty with a logit bias still wait;
   * off with tensor parallelism.
   */
  asyncScheduling?: boolean;
  /**
   * vLLM's --scheduling-policy: "fcfs" (default) admits waiting requests in arrival order; "priority" by
   * their `priority` (lower first, then arrival), and preempts the lowest-priority running sequence first.
   */
  schedulingPolicy?: SchedulingPolicy;
  tensorParallelSize?: number;
  /**
   * vLLM's --speculative-config, e.g. {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}:
   * n-gram speculative decoding (src/speculative). Turns async scheduling off.
   */
  speculativeConfig?: Record<string, unknown>;
  /**
   * vLLM's --runner: "generate" (text), "pooling" (embeddings: /v1/embeddings, LLM.embed; for a sequence
   * classifier: /classify, /score, /rerank, LLM.classify), or "auto" (default): pooling for a bare decoder
   * checkpoint (architectures "Qwen3Model" etc.) or a classifier (…ForSequenceClassification), else generate.
   */
  runner?: Runner;
  /**
   * vLLM's --pooler-config on top of the model's own pooling settings: {"pooling_type": "LAST", "normalize": bool}
   * for an embedding model, {"pooling_type": "LAST", "use_activation": bool} for a classifier.
   */
  poolerConfig?: Record<string, unknown>;
  /**
   * vLLM's --hf-overrides: fields that replace config.json's, e.g. {"architectures": ["Qwen3ForSequenceClassification"],
   * "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true} to serve Qwen3-Reranker as a classifier.
   */
  hfOverrides?: Record<string, unknown>;
  /** vLLM's --enable-lora: serve PEFT LoRA adapters beside the base model (on by itself with loraModules). */
  enableLora?: boolean;
  /**
   * vLLM's --lora-modules name=path …: adapters known from the start; a request names one (its `model`, or
   * LLM.generate's `lora` option). More can be added at run time (LLMEngine.addLora, /v1/load_lora_adapter).
   */
  loraModules?: Record<string, string>;
  /** vLLM's --max-lora-rank: the largest adapter rank (every adapter is padded to it; default 16). */
  maxLoraRank?: number;
  /** vLLM's --max-loras: adapters in the model at once, so in one batch (default 1); others wait for a slot. */
  maxLoras?: number;
  /**
   * Adapters may be added at run time that target any projection (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING):
   * the LoRA layers then cover every projection, not just those the --lora-modules adapters target. On by
   * itself when LoRA is enabled without --lora-modules.
   */
  allowRuntimeLoraUpdating?: boolean;
  seed?: number;
  /**
   * vLLM's --quantization: the checkpoint's own method (fp8, compressed-tensors, gptq, awq, mxfp4), which is read anyway;
   * or, on an unquantized checkpoint, fp8: its linear weights quantized to E4M3 as they load (one scale per output row).
   */
  quantization?: string;
  /** vLLM's --kv-cache-dtype: auto (the compute dtype) only; an fp8 KV cache is refused. */
  kvCacheDtype?: string;
  /** vLLM's --tokenizer: a directory with the tokenizer (tokenizer.json, tokenizer_config.json) when it is not the model's. */
  tokenizer?: string;
  chatTemplate?: string;
  /** Receives start-up and warning messages (default: stderr). */
  log?: (msg: string) => void;
  /**
   * Called once the model directory is known, before anything is loaded from it: the server's thread
   * loads its tokenizer then, while the engine worker loads the model.
   */
  onModelDir?: (dir: string) => void;
  /**
   * vLLM's skip_tokenizer_init: no tokenizer in the engine; prompts must be token ids and outputs carry no
   * text (stop strings are then the caller's to check). The server's engine worker runs this way: the
   * server's thread detokenizes, and the worker's start skips the tokenizer load.
   */
  skipTokenizerInit?: boolean;
  /**
   * vLLM's --generation-config: "auto" (default) = sampling defaults from the model's generation_config.json,
   * "vllm" = none, or a folder holding a generation_config.json (src/engine/generation-config.ts).
   */
  generationConfig?: string;
  /** vLLM's --override-generation-config: sampling defaults set on top (temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens). */
  overrideGenerationConfig?: Record<string, unknown>;
  /** Time every GPU kernel and GEMM (CUDA only; scripts/bench --profile reads the totals). */
  profileKernels?: boolean;
  /** How GPUs, NCCL and GPU tensor-parallel workers are reached (default: the real driver; tests pass the GPU simulator). */
  cuda?: CudaProvider;
}

export const ENGINE_DEFAULTS = {
  /** $VBUN_DEVICE sets the default device (the test suite pins "cpu" so reference tests stay on the CPU). */
  device: (process.env.VBUN_DEVICE ?? "auto") as Device,
  dtype: "auto",
  maxNumSeqs: 256,
  maxNumBatchedTokens: 2048,
  blockSize: 16,
  cpuKvCacheBytes: 256 * 1024 * 1024,
  gpuMemoryUtilization: 0.9,
  enablePrefixCaching: true,
  enableChunkedPrefill: true,
  enforceEager: false,
  asyncScheduling: false,
  schedulingPolicy: "fcfs" as SchedulingPolicy,
  runner: "auto" as Runner,
  tensorParallelSize: 1,
  seed: 0,
};

export class EngineConfigError extends Error {
  constructor(readonly option: string, message: string) {
    super(`${option}: ${message}`);
    this.name = "EngineConfigError";
  }
}

export function checkPositiveInt(option: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new EngineConfigError(option, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

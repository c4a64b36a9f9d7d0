/** `vbun serve [MODEL]`: the OpenAI-compatible server. */
import { parseArgs } from "node:util";
import { ENGINE_FLAGS, engineOptionsFromFlags, expandListFlags, UsageError } from "../cli.ts";
import { AsyncEngine } from "../engine/async-engine.ts";
import { ENGINE_DEFAULTS } from "../engine/engine-config.ts";
import { buildApp } from "./app.ts";
import { downloadModel, looksLikeHubId, progressPrinter } from "./hub.ts";
import { ServerState } from "./state.ts";
import { ResponseStore } from "./response-store.ts";
import { StatsLogger, statsIntervalMs } from "./stats-logger.ts";
import { REASONING_PARSERS, type ReasoningParserName } from "./reasoning.ts";
import { TOOL_CALL_PARSERS, type ToolCallParserName } from "./tool-calls.ts";

const d = ENGINE_DEFAULTS;
export const SERVE_HELP = `usage: vbun serve [MODEL] [options]

MODEL: a local Hugging Face model directory, or a hub id (org/name) downloaded into the HF cache.
       Without MODEL, the built-in random-weight tiny Qwen3 test model is served.

server:
  --host HOST                      address to bind (default 127.0.0.1, or env VBUN_HOST)
  --port PORT                      port (default 8000, or env VBUN_PORT; 0 = any free port)
  --served-model-name NAME…       model name(s) in the API: requests may use any, responses carry the first
                                   (default: MODEL, or "vbun-tiny-qwen3")
  --api-key KEY                    require "Authorization: Bearer KEY" (also env VBUN_API_KEY)
  --max-waiting-requests N         bound on requests waiting for their first token (each prompt of a batch counts);
                                   beyond it requests get 503 (default: none, as vLLM)
  --shutdown-timeout SECONDS       grace period for in-flight requests on SIGTERM/SIGINT (default 30)
  --max-log-len N                  prompt characters (or token ids) shown per logged request (default: all)
  --log-level debug|info|warning|error   (default info; debug also logs every request)
  --enable-log-requests            log every request (as --log-level debug does); --disable-log-requests:
                                   the default, accepted as in vLLM
  --disable-log-stats              no periodic throughput / queue / KV-cache line (every
                                   VLLM_LOG_STATS_INTERVAL seconds, default 10, while requests run)
  --reasoning-parser qwen3|deepseek_r1|mistral|granite|glm45|seed_oss|openai_gptoss|deepseek_v3   chat responses carry <think> blocks (mistral:
                                   Magistral's [THINK] ones; granite: "Here is my thought process: … Here is
                                   my response:"; openai_gptoss: GPT-OSS's analysis channel; deepseek_v3:
                                   deepseek_r1's when a request's chat_template_kwargs say thinking=true)
                                   as reasoning_content (default: off; openai_gptoss for GPT-OSS checkpoints)
  --enable-auto-tool-choice --tool-call-parser hermes|llama3_json|pythonic|qwen3_coder|mistral|phi4_mini_json|granite|glm45|openai|deepseek_v3|deepseek_v31
                                   parse tool calls into tool_calls when a request has tools: hermes =
                                   <tool_call> blocks (Qwen), llama3_json = a JSON-calls answer (Llama 3.x),
                                   pythonic = a [f(a=1), …] answer (Llama 3.2, Llama 4), qwen3_coder =
                                   <function=f><parameter=a> blocks (Qwen3-Coder), mistral = [TOOL_CALLS]
                                   then a JSON list, or name[ARGS]{…} per call (Mistral), phi4_mini_json =
                                   functools[…] (Phi-4-mini), granite = a JSON-list answer, after
                                   <|tool_call|> or <tool_call> (Granite 3.x), glm45 = <tool_call>name with
                                   <arg_key>/<arg_value> pairs (GLM-4.5 / 4.6), openai = Harmony's
                                   commentary to=functions.NAME messages (GPT-OSS), deepseek_v3 /
                                   deepseek_v31 = <｜tool▁call▁begin｜> blocks (DeepSeek-V3 / R1, V3.1) (default: off)
  --enable-prompt-tokens-details   usage.prompt_tokens_details.cached_tokens (prefix-cache hits) (default: off)
  --return-tokens-as-token-ids     logprobs name tokens "token_id:N" unless a request's
                                   return_tokens_as_token_ids says otherwise (default: off)
  --responses-store-size N         keep the N most recently used Responses (/v1/responses) in memory for
                                   previous_response_id and GET /v1/responses/{id} (default 0: none, as vLLM)

engine:
  --device auto|cpu|cuda           backend (default ${d.device}); on the CPU, env VBUN_CPU_THREADS threads share
                                   large matrix products (default: the logical cores, up to 8)
  --dtype auto|bfloat16|float16|float32  weight dtype (default ${d.dtype}; the CPU backend computes in f32)
  --max-model-len N                context length, e.g. 32768, 32k (×1000) or 32K (×1024) (default: the model's
                                   max_position_embeddings)
  --max-num-seqs N                 most sequences per step (default ${d.maxNumSeqs})
  --max-num-batched-tokens N       token budget per step (default ${d.maxNumBatchedTokens})
  --block-size N                   KV-cache block size in tokens (default ${d.blockSize})
  --gpu-memory-utilization F       fraction of GPU memory to use (default ${d.gpuMemoryUtilization})
  --num-gpu-blocks-override N      exact number of KV blocks (on CPU too; default: from memory)
  --kv-cache-memory-bytes N        the KV cache's size in bytes (e.g. 8G, 500m), instead of what
                                   --gpu-memory-utilization leaves (on CPU too; default: from memory)
  --enable-prefix-caching / --no-enable-prefix-caching   (default on)
  --enforce-eager                  disable CUDA graphs
  --disable-hybrid-kv-cache-manager  sliding-window layers keep the whole context's KV (one block table for all layers)
  --async-scheduling               launch each step before the previous one's tokens reach the host
  --scheduling-policy fcfs|priority  admit requests by arrival, or by their priority (default ${d.schedulingPolicy})
  --generation-config auto|vllm|DIR  sampling defaults for omitted fields: the model's generation_config.json
                                   (auto, default), vLLM's own (vllm), or DIR/generation_config.json
  --override-generation-config JSON  e.g. '{"temperature": 0.5}' (temperature, top_p, top_k, min_p,
                                   repetition_penalty, max_new_tokens)
  --tensor-parallel-size N         (default ${d.tensorParallelSize})
  --speculative-config JSON        n-gram speculative decoding, e.g. '{"method": "ngram",
                                   "num_speculative_tokens": 4, "prompt_lookup_max": 4}' (default: off)
  --runner auto|generate|pooling   text, or embeddings (/v1/embeddings), or a classifier's scores
                                   (/classify, /score, /rerank); auto: pooling for a bare decoder checkpoint
                                   ("Qwen3Model" …) or a classifier ("…ForSequenceClassification")
                                   (default ${d.runner})
  --pooler-config JSON             e.g. '{"normalize": false}' (pooling_type LAST only; default: the
                                   model's sentence-transformers modules.json, else LAST + normalize;
                                   a classifier: '{"use_activation": false}' for raw logits)
  --hf-overrides JSON              fields replacing config.json's, e.g. Qwen3-Reranker as a classifier:
                                   '{"architectures": ["Qwen3ForSequenceClassification"],
                                   "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}'
  --enable-lora [--lora-modules NAME=PATH …]
                                   serve PEFT LoRA adapters; a request's model names one (default: off).
                                   With VLLM_ALLOW_RUNTIME_LORA_UPDATING=true in the environment, POST
                                   /v1/load_lora_adapter {"lora_name", "lora_path"} and
                                   /v1/unload_lora_adapter {"lora_name"} add and remove adapters
  --max-loras N                    adapters in one batch (model slots) at most; requests for another
                                   wait until a slot frees (default 1)
  --max-lora-rank N                the largest adapter rank (default 16)
  --seed N                         seed for requests without one (default ${d.seed})
  --tokenizer DIR                  a tokenizer directory other than the model's (tokenizer.json,
                                   tokenizer_config.json with its chat template)
  --trust-remote-code              accepted for vllm serve command lines; vbun runs no checkpoint code
  --quantization fp8|compressed-tensors|gptq|awq|mxfp4  the checkpoint's own method (read without it too);
                                   fp8 on an unquantized checkpoint quantizes its linear weights to FP8
                                   as they load (one scale per row; one byte a weight on GPUs)
  --kv-cache-dtype auto            the KV cache in the compute dtype (fp8 is not supported)
  --chat-template FILE|TEXT        override the model's chat template
`;

const LEVELS = ["debug", "info", "warning", "error"];

export async function serve(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: expandListFlags(args), allowPositionals: true, strict: true,
    options: {
      ...ENGINE_FLAGS,
      host: { type: "string", default: process.env.VBUN_HOST ?? "127.0.0.1" },
      port: { type: "string", default: process.env.VBUN_PORT ?? "8000" },
      "served-model-name": { type: "string", multiple: true },
      "api-key": { type: "string" },
      "max-waiting-requests": { type: "string" },
      "shutdown-timeout": { type: "string", default: "30" },
      "max-log-len": { type: "string" },
      "log-level": { type: "string", default: "info" },
      "enable-log-requests": { type: "boolean" },
      "disable-log-requests": { type: "boolean" },
      "disable-log-stats": { type: "boolean" },
      "reasoning-parser": { type: "string" },
      "enable-auto-tool-choice": { type: "boolean" },
      "tool-call-parser": { type: "string" },
      "enable-prompt-tokens-details": { type: "boolean" },
      "return-tokens-as-token-ids": { type: "boolean" },
      "responses-store-size": { type: "string", default: "0" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) { process.stdout.write(SERVE_HELP); return 0; }
  if (positionals.length > 1) throw new UsageError(`serve takes at most one MODEL, got ${positionals.join(" ")}`);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port: expected 0-65535, got '${values.port}'`);
  const maxWaiting = values["max-waiting-requests"] === undefined ? Infinity : Number(values["max-waiting-requests"]);
  if (maxWaiting !== Infinity && (!Number.isInteger(maxWaiting) || maxWaiting < 1)) throw new UsageError(`--max-waiting-requests: expected a positive integer`);
  const grace = Number(values["shutdown-timeout"]);
  if (!(grace >= 0)) throw new UsageError(`--shutdown-timeout: expected seconds >= 0`);
  if (!LEVELS.includes(values["log-level"]!)) throw new UsageError(`--log-level: expected one of ${LEVELS.join(", ")}`);
  const quiet = LEVELS.indexOf(values["log-level"]!) > 1;
  const log = (m: string) => { if (!quiet) process.stderr.write(`[vbun] ${m}\n`); };
  const maxLogLen = values["max-log-len"] === undefined ? null : Number(values["max-log-len"]);
  let statsEveryMs: number;
  try { statsEveryMs = statsIntervalMs(process.env); } catch (e) { throw new UsageError((e as Error).message); }

  const t0 = performance.now();
  let modelSpec = positionals[0];
  const opts = engineOptionsFromFlags(values, modelSpec);
  // vLLM's --served-model-name NAME…: requests may name any of them; responses carry the first.
  const served = (values["served-model-name"] as string[] | undefined) ?? [modelSpec ?? "vbun-tiny-qwen3"];
  if (served.some((n) => n.trim() === "")) throw new UsageError("--served-model-name: a name may not be empty");
  const apiKey = values["api-key"] ?? process.env.VBUN_API_KEY ?? null;
  if (maxLogLen !== null && !(Number.isInteger(maxLogLen) && maxLogLen >= 0)) throw new UsageError("--max-log-len: expected an integer >= 0");
  const rp = values["reasoning-parser"];
  if (rp !== undefined && !(REASONING_PARSERS as readonly string[]).includes(rp)) throw new UsageError(`--reasoning-parser: expected one of ${REASONING_PARSERS.join(", ")}, got '${rp}'`);
  const tp = values["tool-call-parser"];
  if (tp !== undefined && !(TOOL_CALL_PARSERS as readonly string[]).includes(tp)) throw new UsageError(`--tool-call-parser: expected one of ${TOOL_CALL_PARSERS.join(", ")}, got '${tp}'`);
  if (values["enable-auto-tool-choice"] && tp === undefined) throw new UsageError("--enable-auto-tool-choice needs --tool-call-parser");
  const storeSize = Number(values["responses-store-size"]);
  if (!Number.isInteger(storeSize) || storeSize < 0) throw new UsageError(`--responses-store-size: expected an integer >= 0, got '${values["responses-store-size"]}'`);
  if (values["enable-log-requests"] && values["disable-log-requests"]) throw new UsageError("--enable-log-requests and --disable-log-requests are exclusive");
  if (values["trust-remote-code"]) log("--trust-remote-code has no effect: vbun runs no code from a checkpoint (it reads config.json, safetensors and tokenizer files only)");
  const state = new ServerState(served, apiKey || null, values["log-level"] === "debug" || values["enable-log-requests"] === true, maxLogLen, (rp as ReasoningParserName | undefined) ?? null,
    values["enable-auto-tool-choice"] ? (tp as ToolCallParserName) : null, values["enable-prompt-tokens-details"] ?? false,
    storeSize > 0 ? new ResponseStore(storeSize) : null);
  state.runtimeLoraUpdating = opts.allowRuntimeLoraUpdating === true;
  state.returnTokensAsTokenIds = values["return-tokens-as-token-ids"] === true;
  if (state.runtimeLoraUpdating) log("VLLM_ALLOW_RUNTIME_LORA_UPDATING is set: /v1/load_lora_adapter and /v1/unload_lora_adapter are served (anyone who can reach them can make the server read any directory)");
  const app = buildApp(state);

  const server = Bun.serve({ hostname: values.host, port, fetch: app.fetch, idleTimeout: 0 });
  log(`listening on http://${server.hostname}:${server.port} (health: 503 until the model is loaded)`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: no new requests; finishing in-flight requests (up to ${grace}s)`);
    // Stop listening; in-flight HTTP requests go on until their engine requests finish (or are aborted).
    const httpDone = server.stop(false);
    await state.asyncEngine?.shutdown(grace * 1000);
    await Promise.race([httpDone, Bun.sleep(2000)]);
    log("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  try {
    if (modelSpec !== undefined && looksLikeHubId(modelSpec)) {
      modelSpec = await downloadModel(modelSpec, { log, onProgress: progressPrinter(`downloading ${modelSpec}`) });
      opts.model = modelSpec;
    }
    const engine = await AsyncEngine.start({ ...opts, log, maxWaitingRequests: maxWaiting });
    if (stopping) { await engine.shutdown(0); return 0; }
    state.asyncEngine = engine;
    const i = engine.info, c = engine.modelConfig;
    const experts = c.moe ? `, ${c.moe.numExperts} experts (top ${c.moe.topK}) in ${c.moe.sparseLayers.filter(Boolean).length} layers` : "";
    const windows = c.slidingWindow ? `, sliding window ${c.slidingWindow} in ${c.layerWindows.filter((w) => w > 0).length} layers` : "";
    log(`loaded ${i.modelDir}: ${c.architecture}, ${c.numLayers} layers${experts}${windows}, hidden ${c.hiddenSize}, vocab ${c.vocabSize} on ${i.device} in ${i.loadSeconds.toFixed(2)}s`);
    log(`${i.kvCapacityTokens} tokens of KV cache; max_model_len ${i.maxModelLen}; prefix caching ${opts.enablePrefixCaching === false ? "off" : "on"}`);
    log(`ready in ${((performance.now() - t0) / 1000).toFixed(2)}s: serving '${served}' at http://${server.hostname}:${server.port}/v1`);
    if (!values["disable-log-stats"]) {
      const stats = new StatsLogger(i.device);
      stats.line(engine.stats, performance.now());
      setInterval(() => {
        const line = stats.line(engine.stats, performance.now());
        if (line) log(line);
      }, statsEveryMs).unref();
    }
  } catch (e) {
    state.loadError = e as Error;
    process.stderr.write(`vbun: error: ${(e as Error).message}\n`);
    await server.stop(true);
    return 1;
  }
  // Keep running until a signal stops the process.
  return await new Promise<number>(() => {});
}

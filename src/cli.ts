#!/usr/bin/env bun
/** vbun command line: `vbun generate …`, `vbun serve …`. Results go to stdout, logs to stderr. */
import { parseArgs } from "node:util";
import { SamplingParams } from "./engine/sampling-params.ts";
import type { Device, EngineOptions, Runner, SchedulingPolicy } from "./engine/engine-config.ts";

const USAGE = `usage: vbun <command> [options]

commands:
  generate [MODEL] --prompt TEXT [--max-tokens N] [--temperature T] [--seed S] [--chat] [--device cpu|cuda|auto]
           [--enable-lora --lora-modules NAME=PATH … --lora NAME]
      Generate one completion and print only its text on stdout.
  serve [MODEL] [options]
      Start the OpenAI-compatible server (see vbun serve --help).

MODEL is a Hugging Face model directory; without it the built-in random-weight tiny Qwen3 is used.`;

/** Engine flags shared by generate and serve (named like vllm serve). */
export const ENGINE_FLAGS = {
  device: { type: "string" },
  dtype: { type: "string" },
  "max-model-len": { type: "string" },
  "kv-cache-memory-bytes": { type: "string" },
  "max-num-seqs": { type: "string" },
  "max-num-batched-tokens": { type: "string" },
  "block-size": { type: "string" },
  "num-gpu-blocks-override": { type: "string" },
  "gpu-memory-utilization": { type: "string" },
  "enable-prefix-caching": { type: "boolean" },
  "no-enable-prefix-caching": { type: "boolean" },
  "enforce-eager": { type: "boolean" },
  "disable-hybrid-kv-cache-manager": { type: "boolean" },
  "async-scheduling": { type: "boolean" },
  "scheduling-policy": { type: "string" },
  "generation-config": { type: "string" },
  "override-generation-config": { type: "string" },
  "tensor-parallel-size": { type: "string" },
  "speculative-config": { type: "string" },
  runner: { type: "string" },
  "pooler-config": { type: "string" },
  "hf-overrides": { type: "string" },
  "enable-lora": { type: "boolean" },
  "lora-modules": { type: "string", multiple: true },
  "max-lora-rank": { type: "string" },
  "max-loras": { type: "string" },
  seed: { type: "string" },
  tokenizer: { type: "string" },
  quantization: { type: "string", short: "q" },
  "kv-cache-dtype": { type: "string" },
  "chat-template": { type: "string" },
  // Accepted so that `vllm serve` command lines work unchanged: vbun never runs code from a checkpoint.
  "trust-remote-code": { type: "boolean" },
} as const;

export class UsageError extends Error {}

function numberFlag(name: string, v: string | undefined, integer = true): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`--${name}: expected ${integer ? "an integer" : "a number"}, got '${v}'`);
  return n;
}

/**
 * An integer as vLLM's human_readable_int reads it: plain digits, or with a multiplier — lowercase k / m / g / t
 * decimal (1000ⁿ, decimals allowed: "2.5k" is 2500), uppercase K / M / G / T binary (1024ⁿ, whole numbers only:
 * "1K" is 1024).
 */
export function humanIntFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)([kmgtKMGT]?)\s*$/.exec(v);
  const bad = () => new UsageError(`--${name}: expected an integer, optionally with k / m / g / t (×1000ⁿ) or K / M / G / T (×1024ⁿ), got '${v}'`);
  if (!m) throw bad();
  const [, digits, unit] = m as unknown as [string, string, string];
  if (unit === "") {
    if (digits.includes(".")) throw bad();
    return Number(digits);
  }
  const power = "kmgt".indexOf(unit.toLowerCase()) + 1;
  if (unit === unit.toUpperCase()) {
    if (digits.includes(".")) throw bad();
    return Number(digits) * 1024 ** power;
  }
  const n = Number(digits) * 1000 ** power;
  if (!Number.isInteger(n)) throw bad();
  return n;
}

function jsonObjectFlag(name: string, v: string | undefined): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  let parsed: unknown;
  try { parsed = JSON.parse(v); } catch { throw new UsageError(`--${name}: expected a JSON object, got '${v}'`); }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new UsageError(`--${name}: expected a JSON object, got '${v}'`);
  return parsed as Record<string, unknown>;
}

/**
 * vLLM's list flags take several values after one flag (`--lora-modules a=/x b=/y`); parseArgs takes one per
 * flag, so the values that follow become repeated flags.
 */
export function expandListFlags(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    out.push(args[i]!);
    if (args[i] === "--served-model-name") {
      // vLLM's nargs: every name up to the next flag.
      out.push(args[++i] ?? "");
      while (i + 1 < args.length && !args[i + 1]!.startsWith("-")) out.push("--served-model-name", args[++i]!);
    }
    if (args[i] !== "--lora-modules") continue;
    out.push(args[++i] ?? "");
    while (i + 1 < args.length && !args[i + 1]!.startsWith("-") && (args[i + 1]!.includes("=") || args[i + 1]!.startsWith("{"))) out.push("--lora-modules", args[++i]!);
  }
  return out;
}

/** --lora-modules values: name=path, or vLLM's JSON form {"name": …, "path": …}. */
function loraModulesFlag(values: string[] | undefined, enabled: boolean): Record<string, string> | undefined {
  if (!values || values.length === 0) return undefined;
  if (!enabled) throw new UsageError("--lora-modules needs --enable-lora");
  const modules: Record<string, string> = {};
  for (const v of values) {
    let name: unknown, path: unknown;
    if (v.startsWith("{")) {
      try { ({ name, path } = JSON.parse(v)); } catch { throw new UsageError(`--lora-modules: not valid JSON: '${v}'`); }
    } else [name, path] = [v.slice(0, v.indexOf("=")), v.slice(v.indexOf("=") + 1)];
    if (!v.includes("=") && !v.startsWith("{") || typeof name !== "string" || typeof path !== "string" || name === "" || path === "") throw new UsageError(`--lora-modules: expected name=path or {"name": …, "path": …}, got '${v}'`);
    if (name in modules) throw new UsageError(`--lora-modules: '${name}' is given twice`);
    modules[name] = path;
  }
  return modules;
}

/** vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING (true or 1): /v1/load_lora_adapter and /v1/unload_lora_adapter are served. */
export function runtimeLoraUpdating(env: Record<string, string | undefined>): boolean {
  const v = (env.VLLM_ALLOW_RUNTIME_LORA_UPDATING ?? "").toLowerCase();
  return v === "true" || v === "1";
}

export function engineOptionsFromFlags(values: Record<string, string | string[] | boolean | undefined>, model: string | undefined): EngineOptions {
  const s = (k: string) => values[k] as string | undefined;
  if (values["enable-prefix-caching"] && values["no-enable-prefix-caching"]) throw new UsageError("--enable-prefix-caching and --no-enable-prefix-caching are exclusive");
  return {
    model,
    device: s("device") as Device | undefined,
    dtype: s("dtype"),
    maxModelLen: humanIntFlag("max-model-len", s("max-model-len")),
    maxNumSeqs: numberFlag("max-num-seqs", s("max-num-seqs")),
    maxNumBatchedTokens: numberFlag("max-num-batched-tokens", s("max-num-batched-tokens")),
    blockSize: numberFlag("block-size", s("block-size")),
    numGpuBlocksOverride: numberFlag("num-gpu-blocks-override", s("num-gpu-blocks-override")),
    gpuMemoryUtilization: numberFlag("gpu-memory-utilization", s("gpu-memory-utilization"), false),
    kvCacheMemoryBytes: humanIntFlag("kv-cache-memory-bytes", s("kv-cache-memory-bytes")),
    enablePrefixCaching: values["no-enable-prefix-caching"] ? false : values["enable-prefix-caching"] ? true : undefined,
    enforceEager: values["enforce-eager"] as boolean | undefined,
    disableHybridKvCacheManager: values["disable-hybrid-kv-cache-manager"] as boolean | undefined,
    asyncScheduling: values["async-scheduling"] as boolean | undefined,
    schedulingPolicy: s("scheduling-policy") as SchedulingPolicy | undefined,
    generationConfig: s("generation-config"),
    overrideGenerationConfig: jsonObjectFlag("override-generation-config", s("override-generation-config")),
    tensorParallelSize: numberFlag("tensor-parallel-size", s("tensor-parallel-size")),
    speculativeConfig: jsonObjectFlag("speculative-config", s("speculative-config")),
    runner: s("runner") as Runner | undefined,
    poolerConfig: jsonObjectFlag("pooler-config", s("pooler-config")),
    hfOverrides: jsonObjectFlag("hf-overrides", s("hf-overrides")),
    loraModules: loraModulesFlag(values["lora-modules"] as string[] | undefined, values["enable-lora"] === true),
    enableLora: values["enable-lora"] === true ? true : undefined,
    maxLoraRank: numberFlag("max-lora-rank", s("max-lora-rank")),
    maxLoras: numberFlag("max-loras", s("max-loras")),
    allowRuntimeLoraUpdating: runtimeLoraUpdating(process.env),
    seed: numberFlag("seed", s("seed")),
    tokenizer: s("tokenizer"),
    quantization: s("quantization"),
    kvCacheDtype: s("kv-cache-dtype"),
    chatTemplate: s("chat-template"),
  };
}

/**
 * `vbun generate`: one completion printed to stdout. The engine runs in its worker without a tokenizer
 * (as when serving), so this thread loads the tokenizer while the worker loads the model: the tokenizer's
 * load is hidden behind the model's (CUDA start, weights, graphs).
 */
async function generate(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: expandListFlags(args), allowPositionals: true, strict: true,
    options: {
      ...ENGINE_FLAGS,
      prompt: { type: "string" },
      "max-tokens": { type: "string" },
      lora: { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      "top-k": { type: "string" },
      chat: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) { process.stdout.write(USAGE + "\n"); return; }
  if (positionals.length > 1) throw new UsageError(`generate takes at most one MODEL, got ${positionals.join(" ")}`);
  if (values.prompt === undefined) throw new UsageError("generate needs --prompt TEXT");
  const opts = engineOptionsFromFlags(values, positionals[0]);
  const params = new SamplingParams({
    max_tokens: numberFlag("max-tokens", values["max-tokens"]) ?? 16,
    temperature: numberFlag("temperature", values.temperature, false) ?? 0,
    top_p: numberFlag("top-p", values["top-p"], false),
    top_k: numberFlag("top-k", values["top-k"]),
    seed: numberFlag("seed", values.seed) ?? null,
  });
  const { AsyncEngine } = await import("./engine/async-engine.ts");
  const engine = await AsyncEngine.start(opts);
  try {
    if (engine.info.pooler) throw new Error(`this is ${engine.info.pooler.task === "classify" ? "a classifier" : "an embedding model"} (--runner pooling): it makes no text (serve it and use ${engine.info.pooler.task === "classify" ? "/classify, /score or /rerank" : "/v1/embeddings"})`);
    const tok = engine.tokenizer;
    const ids = values.chat ? tok.encode(tok.applyChatTemplate([{ role: "user", content: values.prompt }]), false) : tok.encode(values.prompt);
    let text = "";
    for await (const out of engine.generate("generate-0", ids, params, values.lora ?? null)) if (out.finished) text = out.outputs[0]!.text;
    process.stdout.write(text + "\n");
  } finally {
    await engine.shutdown(0);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case "generate": await generate(rest); return 0;
      case "serve": {
        const { serve } = await import("./server/serve.ts");
        return await serve(rest);
      }
      case undefined: case "-h": case "--help": case "help":
        process.stdout.write(USAGE + "\n");
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (e) {
    const err = e as Error;
    const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    process.stderr.write(`vbun: error: ${err.message}\n${usage ? "run 'vbun --help' for usage\n" : ""}`);
    if (process.env.VBUN_DEBUG) process.stderr.write(`${err.stack}\n`);
    return usage ? 2 : 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));

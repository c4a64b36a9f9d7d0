/** LLMEngine end to end on the CPU backend: equivalence across scheduling mechanisms, sampling, stops, aborts. */
import { describe, expect, test } from "bun:test";
import { LLM } from "../src/engine/llm.ts";
import { LLMEngine, InvalidRequestError } from "../src/engine/llm-engine.ts";
import type { EngineOptions } from "../src/engine/engine-config.ts";
import { SamplingParams, SamplingParamsError } from "../src/engine/sampling-params.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { AsyncEngine } from "../src/engine/async-engine.ts";
import { pack, packOutputs, PACK_MIN, unpackOutputs } from "../src/engine/output-codec.ts";
import type { RequestOutput } from "../src/engine/request.ts";
import { FAST_MODEL, SERVER_MODEL, tinyModel } from "./helpers.ts";
import { variant } from "./checkpoint-variant.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { BlockManager } from "../src/engine/block-manager.ts";
import { Scheduler } from "../src/engine/scheduler.ts";
import { Sequence, SequenceStatus } from "../src/engine/sequence.ts";

const model = tinyModel(FAST_MODEL);
const quiet = { log: () => {} };
const make = (o: EngineOptions = {}) => new LLM({ model, blockSize: 4, maxModelLen: 256, ...quiet, ...o });

function workload(seed: number, count: number) {
  const rng = new SeededRandom(seed);
  const prefixes = Array.from({ length: 3 }, () => Array.from({ length: rng.int(8, 30) }, () => rng.int(3, 500)));
  const prompts: number[][] = [], params: SamplingParams[] = [];
  for (let i = 0; i < count; i++) {
    const pre = rng.next() < 0.75 ? prefixes[rng.int(0, 2)]! : [];
    prompts.push([...pre, ...Array.from({ length: rng.int(1, 30) }, () => rng.int(3, 500))]);
    params.push(new SamplingParams({ temperature: 0, max_tokens: rng.int(4, 20), ignore_eos: true }));
  }
  return { prompts, params };
}

function outputs(llm: LLM, w: ReturnType<typeof workload>): number[][] {
  const copies = w.params.map((p) => new SamplingParams({ temperature: p.temperature, max_tokens: p.max_tokens, ignore_eos: true }));
  return llm.generate(w.prompts, copies, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
}

describe("greedy outputs are identical across scheduling mechanisms", () => {
  const w = workload(5, 24);
  const baseline = make({ maxNumBatchedTokens: 512, maxNumSeqs: 64, enablePrefixCaching: false });
  const expected = outputs(baseline, w);

  test("the workload generates varied tokens", () => {
    expect(new Set(expected.flat()).size).toBeGreaterThan(20);
  });
  test("(a) prefix caching on vs off", () => {
    const llm = make({ maxNumBatchedTokens: 512, maxNumSeqs: 64, enablePrefixCaching: true });
    expect(outputs(llm, w)).toEqual(expected);
    expect(llm.engine.blockManager.prefixCacheHits).toBeGreaterThan(0);
  });
  test("(b) chunked prefill with a tiny token budget", () => {
    const llm = make({ maxNumBatchedTokens: 7, maxNumSeqs: 64 });
    expect(outputs(llm, w)).toEqual(expected);
    expect(llm.engine.scheduler.numPartialPrefills).toBeGreaterThan(1);
  });
  test("(c) a KV cache so small that preemption happens many times", () => {
    const llm = make({ maxNumBatchedTokens: 512, maxNumSeqs: 64, numGpuBlocksOverride: 20 });
    expect(outputs(llm, w)).toEqual(expected);
    expect(llm.engine.scheduler.numPreemptions).toBeGreaterThan(5);
    expect(llm.engine.blockManager.numFreeBlocks).toBe(20);
  });
  test("(d) max_num_seqs 1", () => {
    const llm = make({ maxNumBatchedTokens: 512, maxNumSeqs: 1 });
    expect(outputs(llm, w)).toEqual(expected);
  });
});

describe("sampling", () => {
  const llm = make();
  const prompt = [10, 20, 30, 40, 50];

  test("same seed → same tokens alone or in a batch of 32", () => {
    const p = { temperature: 0.9, top_p: 0.95, top_k: 50, seed: 1234, max_tokens: 16, ignore_eos: true };
    const alone = llm.generate([prompt], p, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    const rng = new SeededRandom(3);
    const others = Array.from({ length: 31 }, () => Array.from({ length: rng.int(2, 40) }, () => rng.int(3, 500)));
    const batch = [...others.slice(0, 13), prompt, ...others.slice(13)];
    const params = batch.map((_, i) => (i === 13 ? p : { temperature: 1, max_tokens: 8 + (i % 9), ignore_eos: true }));
    const together = llm.generate(batch, params, { useTqdm: false })[13]!.outputs[0]!.tokenIds;
    expect(together).toEqual(alone);
    const other = llm.generate([prompt], { ...p, seed: 4321 }, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    expect(other).not.toEqual(alone);
  });

  test("n > 1 gives n different samples sharing the prompt blocks", () => {
    const [out] = llm.generate([prompt], { n: 4, temperature: 1, seed: 7, max_tokens: 12, ignore_eos: true }, { useTqdm: false });
    expect(out!.outputs.map((o) => o.index)).toEqual([0, 1, 2, 3]);
    expect(new Set(out!.outputs.map((o) => o.tokenIds.join(","))).size).toBeGreaterThan(1);
  });

  test("top_k=1 equals greedy", () => {
    const greedy = llm.generate([prompt], { temperature: 0, max_tokens: 10, ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    const k1 = llm.generate([prompt], { temperature: 1.5, top_k: 1, seed: 3, max_tokens: 10, ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    expect(k1).toEqual(greedy);
  });

  test("logit_bias forces a token; logprobs report top-N", () => {
    const [out] = llm.generate([prompt], { temperature: 0, max_tokens: 3, logit_bias: { 77: 100 }, logprobs: 3, ignore_eos: true }, { useTqdm: false });
    const o = out!.outputs[0]!;
    expect(o.tokenIds).toEqual([77, 77, 77]);
    expect(o.logprobs!.length).toBe(3);
    for (const lp of o.logprobs!) {
      expect(lp.top.length).toBe(3);
      expect(lp.top[0]!.logprob).toBeGreaterThanOrEqual(lp.top[1]!.logprob);
      expect(lp.logprob).toBeLessThanOrEqual(0);
    }
    const [plain] = llm.generate([prompt], { temperature: 0, max_tokens: 1, logprobs: 0, ignore_eos: true }, { useTqdm: false });
    // Greedy picks the most likely token: its logprob is the maximum.
    expect(plain!.outputs[0]!.logprobs![0]!.top).toEqual([]);
    expect(plain!.outputs[0]!.cumulativeLogprob).toBeCloseTo(plain!.outputs[0]!.logprobs![0]!.logprob, 9);
  });

  test("repetition penalty changes a repetitive greedy output", () => {
    const a = llm.generate([prompt], { temperature: 0, max_tokens: 24, ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    const b = llm.generate([prompt], { temperature: 0, max_tokens: 24, ignore_eos: true, repetition_penalty: 5, presence_penalty: 2 }, { useTqdm: false })[0]!.outputs[0]!.tokenIds;
    expect(new Set(b).size).toBeGreaterThanOrEqual(new Set(a).size);
    expect(b).not.toEqual(a);
  });
});

describe("stops and limits", () => {
  const llm = make();
  const tok = llm.tokenizer;
  const prompt = [101, 102, 103];
  const full = llm.generate([prompt], { temperature: 0, max_tokens: 24, ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!;

  test("a stop string spanning a token boundary ends the text before it", () => {
    // Choose a stop string made of the end of one token's text and the start of the next.
    const texts = full.tokenIds.map((id) => tok.decode([id]));
    const i = texts.findIndex((t, k) => k > 2 && t.length >= 1 && (texts[k + 1] ?? "").length >= 1);
    const stop = texts[i]!.slice(-1) + texts[i + 1]!.slice(0, 1);
    const at = full.text.indexOf(stop);
    const [out] = llm.generate([prompt], { temperature: 0, max_tokens: 24, ignore_eos: true, stop: [stop] }, { useTqdm: false });
    expect(out!.outputs[0]!.finishReason).toBe("stop");
    expect(out!.outputs[0]!.stopReason).toBe(stop);
    expect(out!.outputs[0]!.text).toBe(full.text.slice(0, at));
    const [inc] = llm.generate([prompt], { temperature: 0, max_tokens: 24, ignore_eos: true, stop: [stop], include_stop_str_in_output: true }, { useTqdm: false });
    expect(inc!.outputs[0]!.text).toBe(full.text.slice(0, at + stop.length));
  });

  test("stop_token_ids and min_tokens", () => {
    const target = full.tokenIds[3]!;
    const [out] = llm.generate([prompt], { temperature: 0, max_tokens: 24, stop_token_ids: [target] }, { useTqdm: false });
    const o = out!.outputs[0]!;
    expect(o.finishReason).toBe("stop");
    expect(o.stopReason).toBe(target);
    expect(o.tokenIds[o.tokenIds.length - 1]).toBe(target);
    const [late] = llm.generate([prompt], { temperature: 0, max_tokens: 24, stop_token_ids: [target], min_tokens: 10 }, { useTqdm: false });
    expect(late!.outputs[0]!.tokenIds.length).toBeGreaterThanOrEqual(10);
    expect(late!.outputs[0]!.tokenIds.slice(0, 9)).not.toContain(target);
  });

  test("max_tokens gives finish_reason length", () => {
    expect(full.finishReason).toBe("length");
    expect(full.tokenIds.length).toBe(24);
  });

  test("requests that can never fit are rejected up front", () => {
    expect(() => llm.engine.addRequest("too-long", new Array(250).fill(5), new SamplingParams({ max_tokens: 10 }))).toThrow(/maximum context length is 256 tokens/);
    expect(() => llm.engine.addRequest("oov", [5, 9999], new SamplingParams())).toThrow(InvalidRequestError);
    expect(() => llm.engine.addRequest("empty", [], new SamplingParams())).toThrow(/prompt is empty/);
    const small = make({ numGpuBlocksOverride: 4 });
    expect(() => small.engine.addRequest("kv", [1, 2, 3], new SamplingParams({ max_tokens: 20 }))).toThrow(/whole cache holds 16/);
    expect(llm.engine.hasUnfinishedRequests()).toBe(false);
  });

  test("abort frees blocks immediately", () => {
    const e = llm.engine;
    e.addRequest("a1", prompt, new SamplingParams({ max_tokens: 50, ignore_eos: true }));
    e.addRequest("a2", [...prompt, 7], new SamplingParams({ max_tokens: 50, ignore_eos: true, n: 2 }));
    e.step(); e.step();
    expect(e.blockManager.numUsedBlocks).toBeGreaterThan(0);
    const out = e.abort("a2")!;
    expect(out.finished).toBe(true);
    expect(out.outputs.every((o) => o.finishReason === "abort")).toBe(true);
    e.abort("a1");
    expect(e.blockManager.numUsedBlocks).toBe(0);
    expect(e.hasUnfinishedRequests()).toBe(false);
    expect(e.abort("unknown")).toBeNull();
  });
});

describe("SamplingParams validation names the field", () => {
  const bad: [object, string][] = [
    [{ temperature: -1 }, "temperature"], [{ top_p: 0 }, "top_p"], [{ top_p: 1.5 }, "top_p"], [{ top_k: -2 }, "top_k"],
    [{ min_p: 2 }, "min_p"], [{ max_tokens: 0 }, "max_tokens"], [{ n: 0 }, "n"], [{ n: 2 ** 31 }, "n"], [{ min_tokens: 5, max_tokens: 2 }, "min_tokens"],
    [{ stop: [""] }, "stop"], [{ presence_penalty: 3 }, "presence_penalty"], [{ repetition_penalty: 0 }, "repetition_penalty"],
    [{ logprobs: 50 }, "logprobs"], [{ logit_bias: { x: 1 } }, "logit_bias"], [{ seed: 1.5 }, "seed"], [{ bogus: 1 }, "bogus"],
  ];
  for (const [init, field] of bad)
    test(field + " " + JSON.stringify(init), () => {
      let err: unknown;
      try { new SamplingParams(init as never); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(SamplingParamsError);
      expect((err as SamplingParamsError).field).toBe(field);
    });
});

test("engine options are checked", () => {
  expect(() => LLMEngine.create({ model, ...quiet, maxModelLen: 100000 })).toThrow(/--max-model-len: 100000 exceeds/);
  expect(() => LLMEngine.create({ model, ...quiet, blockSize: 0 })).toThrow(/--block-size: must be a positive integer/);
  expect(() => LLMEngine.create({ model: "/nonexistent", ...quiet })).toThrow(/config\.json: not found/);
});

test("Phi-3 / Phi-4 checkpoints (Phi3ForCausalLM: fused qkv_proj and gate_up_proj) give the Llama decoder's outputs for the same weights, also under TP = 2", () => {
  // The same draws as a Llama checkpoint; Phi-3's config differs in rope_theta only (10000).
  const fused = tinyModel({ ...FAST_MODEL, arch: "phi3" });
  const split = variant(tinyModel({ ...FAST_MODEL, ropeScaling: null }), "llama-theta-1e4", { config: (c) => { c.rope_theta = 10000; } });
  const greedy = (m: string, tp = 1) => {
    const llm = new LLM({ model: m, maxModelLen: 64, tensorParallelSize: tp, ...quiet });
    try { return llm.generate([[1, 2, 3, 4, 5], [9, 8, 7]], { max_tokens: 12, temperature: 0, logprobs: 0 }).map((o) => [o.outputs[0]!.tokenIds.join(), o.outputs[0]!.logprobs!.map((l) => l.logprob).join()]); } finally { llm.close(); }
  };
  expect(new Checkpoint(fused).has("model.layers.0.self_attn.qkv_proj.weight")).toBe(true);
  expect(greedy(fused)).toEqual(greedy(split));
  expect(greedy(fused, 2).map((o) => o[0])).toEqual(greedy(split).map((o) => o[0]));
  // Phi-4-mini's partial rotary embedding (the dense reference checks its values: model-forward.test.ts) changes
  // the tokens, and shards by heads as any model does.
  const partial = variant(fused, "phi3-partial", { config: (c) => { c.partial_rotary_factor = 0.5; } });
  expect(greedy(partial)).not.toEqual(greedy(fused));
  expect(greedy(partial, 2).map((o) => o[0])).toEqual(greedy(partial).map((o) => o[0]));
  // A factor that leaves an odd number of rotary dimensions (8 × 0.25 = 2 is fine; 8 × 0.375 = 3 is not) is refused, naming the field.
  const odd = variant(fused, "phi3-odd-rotary", { config: (c) => { c.partial_rotary_factor = 0.375; } });
  expect(() => new LLM({ model: odd, ...quiet })).toThrow("partial_rotary_factor 0.375 gives 3 rotary dimensions of head_dim 8: RoPE needs an even number");
}, 60_000);

test("checkpoints saved by transformers 5 (RoPE in rope_parameters, Gemma 3's per layer type) give the same outputs as their older saves", () => {
  // transformers 5 moves rope_theta, rope_scaling (as rope_type + its fields), partial_rotary_factor and Gemma's
  // rope_local_base_freq into rope_parameters and leaves none at the top level.
  const toV5 = (c: Record<string, unknown>) => {
    const scaling = (c.rope_scaling ?? {}) as Record<string, unknown>;
    const { type, ...fields } = scaling;
    const global = { rope_type: type ?? fields.rope_type ?? "default", ...fields, rope_theta: c.rope_theta, ...(c.partial_rotary_factor ? { partial_rotary_factor: c.partial_rotary_factor } : {}) };
    c.rope_parameters = c.rope_local_base_freq ? { full_attention: global, sliding_attention: { rope_type: "default", rope_theta: c.rope_local_base_freq } } : global;
    for (const key of ["rope_theta", "rope_scaling", "partial_rotary_factor", "rope_local_base_freq"]) delete c[key];
  };
  const longrope = { type: "longrope", short_factor: [1, 1.25, 1.5, 2, 3, 5], long_factor: [1.1, 2, 4, 8, 16, 40] };
  const greedy = (m: string) => {
    const llm = new LLM({ model: m, maxModelLen: 64, ...quiet });
    try { return llm.generate([[1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 8, 7]], { max_tokens: 6, temperature: 0, logprobs: 0 }).map((o) => [o.outputs[0]!.tokenIds.join(), o.outputs[0]!.logprobs!.map((l) => l.logprob).join()]); } finally { llm.close(); }
  };
  for (const [name, opts] of [
    ["qwen3-yarn", { arch: "qwen3", seed: 5, vocabSize: 512, ropeScaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 16 } }],
    ["llama3", { arch: "llama", seed: 2, vocabSize: 512 }],
    ["gemma3", { arch: "gemma3", seed: 13, vocabSize: 512, numLayers: 2 }],
    ["phi3-longrope", { arch: "phi3", seed: 16, vocabSize: 512, partialRotaryFactor: 0.75, originalMaxPositionEmbeddings: 32, ropeScaling: longrope }],
  ] as const) {
    // Gemma's sliding layers on a base other than the default (10000) a reader might fall back to.
    const old = name === "gemma3" ? variant(tinyModel(opts), "gemma3-local-base", { config: (c) => { c.rope_local_base_freq = 50000; } }) : tinyModel(opts);
    const v5 = variant(old, `${name}-transformers5`, { config: toV5 });
    const raw = JSON.parse(readFileSync(join(v5, "config.json"), "utf8"));
    expect(raw.rope_theta).toBeUndefined();
    expect(greedy(v5)).toEqual(greedy(old));
  }
}, 60_000);

test("the stop token that ends a sequence (EOS, stop_token_ids) adds no text unless include_stop_str_in_output, special tokens kept or not (vLLM)", () => {
  const llm = new LLM({ model, ...quiet });
  try {
    const base = { temperature: 0, max_tokens: 10, ignore_eos: true };
    const free = llm.generate([[1, 2, 3]], base)[0]!.outputs[0]!;
    const stopId = free.tokenIds[6]!, at = free.tokenIds.indexOf(stopId);
    const run = (p: object) => llm.generate([[1, 2, 3]], { ...base, ...p })[0]!.outputs[0]!;
    for (const skip of [true, false]) {
      for (const include of [false, true]) {
        const o = run({ stop_token_ids: [stopId], include_stop_str_in_output: include, skip_special_tokens: skip });
        expect([o.tokenIds, o.finishReason, o.stopReason]).toEqual([free.tokenIds.slice(0, at + 1), "stop", stopId]);
        expect(o.text).toBe(llm.tokenizer.decode(free.tokenIds.slice(0, include ? at + 1 : at), skip));
      }
    }
    // The same token as an EOS id: the sequence ends there, its text left out.
    llm.engine.addEosTokenIds([stopId]);
    const eos = run({ ignore_eos: false, skip_special_tokens: false });
    expect([eos.tokenIds.length, eos.stopReason, eos.text]).toEqual([at + 1, null, llm.tokenizer.decode(free.tokenIds.slice(0, at), false)]);
  } finally {
    llm.close();
  }
}, 60_000);

test("Mistral checkpoints (MistralForCausalLM) run as the Llama decoder, with sliding-window attention", () => {
  const mistral = (window: number | null) => variant(model, `mistral-${window}`, { config: (c) => { c.architectures = ["MistralForCausalLM"]; c.model_type = "mistral"; c.sliding_window = window; } });
  const prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [9, 8, 7]];
  const greedy = (m: string, opts: Record<string, unknown> = {}) => {
    const llm = new LLM({ model: m, ...quiet, ...opts });
    try { return llm.generate(prompts, { max_tokens: 8, temperature: 0 }).map((o) => o.outputs[0]!.tokenIds); } finally { llm.close(); }
  };
  const llama = greedy(model);
  expect(greedy(mistral(null))).toEqual(llama);
  expect(greedy(mistral(4096))).toEqual(llama); // a window as long as the context changes nothing
  // A window no longer bounds the context (it used to be the default --max-model-len).
  const windowed = new LLM({ model: mistral(64), ...quiet });
  expect(windowed.engine.options.maxModelLen).toBe(4096);
  windowed.close();
  // A 4-position window changes the tokens; prefilled in chunks of 3 (cached K/V beyond the window) the same.
  const short = greedy(mistral(4));
  expect(short[0]).not.toEqual(llama[0]);
  expect(greedy(mistral(4), { maxNumBatchedTokens: 3, maxNumSeqs: 2, maxModelLen: 32 })).toEqual(short);
}, 60_000);

/** Greedy tokens and logprobs of two prompts: a multimodal checkpoint's must equal its text model's. */
function run(model: string): { tokens: number[]; logprobs: number[] }[] {
  const llm = new LLM({ model, ...quiet });
  try {
    return llm.generate([[1, 2, 3, 4, 5, 6, 7], [9, 8, 7]], { max_tokens: 8, temperature: 0, logprobs: 0 })
      .map((o) => ({ tokens: o.outputs[0]!.tokenIds, logprobs: o.outputs[0]!.logprobs!.map((l) => l.logprob) }));
  } finally {
    llm.close();
  }
}

/** A small tensor standing for a vision tower's, which the text model never reads. */
const extra = (name: string) => ({ name, dtype: "BF16" as const, shape: [4], bytes: new Uint8Array(8) });

test("a multimodal Gemma 3 checkpoint (Gemma3ForConditionalGeneration) serves its language model: the text model's outputs", () => {
  const opts = { arch: "gemma3" as const, seed: 14, vocabSize: 2048, numLayers: 3 };
  const multimodal = tinyModel({ ...opts, multimodalLayout: true });
  expect(JSON.parse(readFileSync(join(multimodal, "config.json"), "utf8")).text_config.num_hidden_layers).toBe(3);
  expect(run(multimodal)).toEqual(run(tinyModel(opts)));
  // A text_config-less config is named.
  expect(() => parseModelConfig({ architectures: ["Gemma3ForConditionalGeneration"] }, "x/config.json")).toThrow("x/config.json: Gemma3ForConditionalGeneration needs a 'text_config' object");
  // Transformers' defaults fill what text_config leaves out (Gemma-3-4B's lists no heads or vocabulary).
  const g4 = parseModelConfig({ architectures: ["Gemma3ForConditionalGeneration"], torch_dtype: "bfloat16", text_config: { hidden_size: 2560, intermediate_size: 10240, num_hidden_layers: 34, rope_scaling: { factor: 8.0, rope_type: "linear" }, sliding_window: 1024 } });
  expect([g4.numHeads, g4.numKvHeads, g4.headDim, g4.vocabSize, g4.localRopeTheta, g4.ropeTheta, g4.ropeScaling, g4.layerWindows.filter((w) => w === 0).length]).toEqual([8, 4, 256, 262208, 10000, 1000000, { type: "linear", factor: 8 }, 5]);
}, 60_000);

test("Qwen vision-language checkpoints (Qwen2.5-VL, Qwen3-VL) serve their language model: the text model's outputs", () => {
  // Qwen2.5-VL as first saved: text fields at the top level, M-RoPE sections, the vision tower under visual.
  const qwen2 = tinyModel({ arch: "qwen2", seed: 16, vocabSize: 2048 });
  const vl25 = variant(qwen2, "qwen2.5-vl", {
    config: (c) => { c.architectures = ["Qwen2_5_VLForConditionalGeneration"]; c.model_type = "qwen2_5_vl"; c.rope_scaling = { type: "mrope", mrope_section: [2, 3, 3] }; c.vision_config = { depth: 1 }; },
    add: [extra("visual.blocks.0.norm1.weight")],
  });
  expect(run(vl25)).toEqual(run(qwen2));
  // Qwen3-VL: the text model's fields in text_config, its tensors under model.language_model.
  const qwen3 = tinyModel({ arch: "qwen3", seed: 17, vocabSize: 2048, tieWordEmbeddings: false });
  const vl3 = variant(qwen3, "qwen3-vl", {
    config: (c) => {
      const { architectures: _a, model_type: _m, ...text } = c;
      for (const k of Object.keys(c)) delete c[k];
      Object.assign(c, { architectures: ["Qwen3VLForConditionalGeneration"], model_type: "qwen3_vl", text_config: { ...text, model_type: "qwen3_vl_text", rope_scaling: { rope_type: "default", mrope_section: [2, 3, 3], mrope_interleaved: true } }, vision_config: { depth: 1 } });
    },
    rename: (n) => n.replace(/^model\./, "model.language_model."),
    add: [extra("model.visual.patch_embed.proj.weight")],
  });
  expect(run(vl3)).toEqual(run(qwen3));
  expect(() => parseModelConfig({ architectures: ["Qwen2_5_VLForConditionalGeneration"], hidden_size: 8, num_attention_heads: 2, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10, rope_scaling: { rope_type: "yarn", factor: 4, mrope_section: [1, 1, 2] } }, "x/config.json"))
    .toThrow(`x/config.json: rope_scaling "yarn" with mrope_section is not supported`);
}, 60_000);

test("Mistral Small 3.1 checkpoints (Mistral3ForConditionalGeneration) serve their Mistral language model, as first saved and as transformers saves them now", () => {
  const mistral = tinyModel({ arch: "mistral", seed: 18, vocabSize: 2048 });
  const mistral3 = (layout: "first" | "now") => variant(mistral, `mistral3-${layout}`, {
    config: (c) => {
      const { architectures: _a, model_type: _m, torch_dtype, ...text } = c;
      for (const k of Object.keys(c)) delete c[k];
      Object.assign(c, { architectures: ["Mistral3ForConditionalGeneration"], model_type: "mistral3", torch_dtype, image_token_index: 10, text_config: { ...text, model_type: "mistral" }, vision_config: { model_type: "pixtral" } });
    },
    // As first saved: language_model.model.* and language_model.lm_head; now: model.language_model.* and lm_head.
    rename: (n) => (layout === "first" ? (n === "lm_head.weight" ? "language_model.lm_head.weight" : n.replace(/^model\./, "language_model.model.")) : n.replace(/^model\./, "model.language_model.")),
    add: [extra(layout === "first" ? "vision_tower.transformer.layers.0.attention_norm.weight" : "model.vision_tower.transformer.layers.0.attention_norm.weight")],
  });
  const want = run(mistral);
  expect(run(mistral3("first"))).toEqual(want);
  expect(run(mistral3("now"))).toEqual(want);
  // MistralConfig's defaults fill what text_config leaves out — its 4096-token sliding window too; other language models are refused.
  const parsed = parseModelConfig({ architectures: ["Mistral3ForConditionalGeneration"], text_config: { hidden_size: 5120, intermediate_size: 32768, num_hidden_layers: 2, head_dim: 128, vocab_size: 131072, rope_theta: 1e9 } });
  expect([parsed.numHeads, parsed.numKvHeads, parsed.headDim, parsed.ropeTheta, parsed.slidingWindow, parsed.tieWordEmbeddings]).toEqual([32, 8, 128, 1e9, 4096, false]);
  expect(parseModelConfig({ architectures: ["Mistral3ForConditionalGeneration"], text_config: { sliding_window: null } }).slidingWindow).toBeNull();
  expect(() => parseModelConfig({ architectures: ["Mistral3ForConditionalGeneration"], text_config: { model_type: "ministral3" } }, "x/config.json"))
    .toThrow("x/config.json: text_config.model_type 'ministral3' is not supported (Mistral3ForConditionalGeneration is served as its Mistral language model)");
  expect(() => parseModelConfig({ architectures: ["Mistral3ForConditionalGeneration"] }, "x/config.json")).toThrow("Mistral3ForConditionalGeneration needs a 'text_config' object");
}, 60_000);

test("Aya Vision checkpoints (AyaVisionForConditionalGeneration) serve their Cohere language model, as first saved and as transformers saves them now", () => {
  const cohere2 = tinyModel({ arch: "cohere2", seed: 34, vocabSize: 2048, numLayers: 4, slidingWindow: 5 });
  const aya = (layout: "first" | "now") => variant(cohere2, `aya-vision-${layout}`, {
    config: (c) => {
      const { architectures: _a, model_type: _m, torch_dtype, ...text } = c;
      for (const k of Object.keys(c)) delete c[k];
      Object.assign(c, { architectures: ["AyaVisionForConditionalGeneration"], model_type: "aya_vision", torch_dtype, image_token_index: 10, text_config: { ...text, model_type: "cohere2" }, vision_config: { model_type: "siglip_vision_model" } });
    },
    // As first saved: language_model.model.*; now: model.language_model.* (the LM head is tied to the embedding).
    rename: (n) => (layout === "first" ? n.replace(/^model\./, "language_model.model.") : n.replace(/^model\./, "model.language_model.")),
    add: [extra(layout === "first" ? "vision_tower.vision_model.post_layernorm.weight" : "model.vision_tower.vision_model.post_layernorm.weight")],
  });
  const want = run(cohere2);
  expect(run(aya("first"))).toEqual(want);
  expect(run(aya("now"))).toEqual(want);
  // Cohere's defaults fill what text_config leaves out; a Cohere (v1) text model reads as one; others are refused.
  const parsed = parseModelConfig({ architectures: ["AyaVisionForConditionalGeneration"], text_config: { model_type: "cohere", num_hidden_layers: 2 } });
  expect([parsed.hiddenSize, parsed.numHeads, parsed.numKvHeads, parsed.layerNorm, parsed.parallelBlock, parsed.slidingWindow, parsed.tieWordEmbeddings, parsed.scales.logitsScaling]).toEqual([8192, 64, 64, true, true, null, true, 16]);
  expect(parseModelConfig({ architectures: ["AyaVisionForConditionalGeneration"], text_config: { num_hidden_layers: 4 } }).layerWindows).toEqual([4096, 4096, 4096, 0]);
  expect(() => parseModelConfig({ architectures: ["AyaVisionForConditionalGeneration"], text_config: { model_type: "llama" } }, "x/config.json"))
    .toThrow("x/config.json: text_config.model_type 'llama' is not supported (AyaVisionForConditionalGeneration is served as its Cohere language model)");
  expect(() => parseModelConfig({ architectures: ["AyaVisionForConditionalGeneration"] }, "x/config.json")).toThrow("AyaVisionForConditionalGeneration needs a 'text_config' object");
}, 60_000);

test("InternVL checkpoints (OpenGVLab's InternVLChatModel, transformers' InternVLForConditionalGeneration) serve their language model", () => {
  const qwen2 = tinyModel({ arch: "qwen2", seed: 3, vocabSize: 2048, tieWordEmbeddings: false });
  const internvl = (layout: "chat" | "hf") => variant(qwen2, `internvl-${layout}`, {
    config: (c) => {
      const { torch_dtype, ...text } = c;
      for (const k of Object.keys(c)) delete c[k];
      if (layout === "chat") Object.assign(c, { architectures: ["InternVLChatModel"], model_type: "internvl_chat", torch_dtype, llm_config: text, vision_config: { model_type: "intern_vit_6b" }, template: "internvl2_5" });
      else Object.assign(c, { architectures: ["InternVLForConditionalGeneration"], model_type: "internvl", torch_dtype, text_config: { ...text, architectures: undefined }, vision_config: { model_type: "internvl_vision" } });
    },
    // OpenGVLab's: language_model.model.* and language_model.lm_head; transformers': model.language_model.* and lm_head.
    rename: (n) => (layout === "chat" ? (n === "lm_head.weight" ? "language_model.lm_head.weight" : n.replace(/^model\./, "language_model.model.")) : n.replace(/^model\./, "model.language_model.")),
    add: [extra(layout === "chat" ? "vision_model.embeddings.class_embedding" : "model.vision_tower.embeddings.cls_token")],
  });
  const want = run(qwen2);
  expect(run(internvl("chat"))).toEqual(want);
  expect(run(internvl("hf"))).toEqual(want);
  expect(() => parseModelConfig({ architectures: ["InternVLChatModel"], llm_config: { architectures: ["InternLM2ForCausalLM"] } }, "x/config.json"))
    .toThrow("x/config.json: llm_config architecture 'InternLM2ForCausalLM' is not supported (InternVL is served as its Qwen2, Qwen3, Qwen3-MoE or Llama language model)");
  expect(() => parseModelConfig({ architectures: ["InternVLForConditionalGeneration"], text_config: { model_type: "phi3" } }, "x/config.json"))
    .toThrow("x/config.json: text_config model_type 'phi3' is not supported");
  expect(() => parseModelConfig({ architectures: ["InternVLForConditionalGeneration"] }, "x/config.json")).toThrow("InternVLForConditionalGeneration needs a 'text_config' object");
}, 60_000);

test("a bad CUDA switch is a start-up error naming it, not a silent fall back to the CPU", () => {
  for (const [k, v, allowed] of [["VBUN_GEMM", "fast", "cublas or cublaslt"], ["VBUN_GEMV", "yes", "off or on"], ["VBUN_DECODE_KERNEL", "x", "groups or simple"], ["VBUN_PREFILL_KERNEL", "x", "mma or simple"]] as const) {
    process.env[k] = v;
    try {
      expect(() => LLMEngine.create({ model, ...quiet, device: "auto" })).toThrow(new RegExp(`${k}: must be ${allowed}, got '${v}'`));
      LLMEngine.create({ model, ...quiet, device: "cpu" }).close(); // the CPU backend does not read them
    } finally {
      delete process.env[k];
    }
  }
}, 60_000); // eight engine starts (tokenizer loads) on a busy 2-core machine

describe("prompt_logprobs", () => {
  test("score every prompt token like a direct forward pass, also in chunks and after a cache-warm request", async () => {
    const { CpuBackend } = await import("../src/backend/cpu/cpu-backend.ts");
    const { CausalLM } = await import("../src/model/causal-lm.ts");
    const { Checkpoint } = await import("../src/loader/checkpoint.ts");
    const { tokenLogprobs } = await import("../src/engine/logprobs.ts");
    const prompt = Array.from({ length: 30 }, (_, i) => (i * 53 + 7) % 500);
    const lm = new CausalLM(make().engine.modelConfig, new CpuBackend({ threads: 1 }), 64);
    lm.load(new Checkpoint(model));
    lm.allocKvCache(8, 16);
    const n = prompt.length;
    const b = lm.backend as InstanceType<typeof CpuBackend>;
    const logits = b.toHost(lm.forward(b.uploadStep({
      tokenIds: Int32Array.from(prompt), positions: Int32Array.from(prompt, (_, i) => i), slotMapping: Int32Array.from(prompt, (_, i) => i),
      queryStart: Int32Array.from([0, n]), seqLens: Int32Array.from([n]), blockTables: Int32Array.from([0, 1]), maxBlocksPerSeq: 2, logitsRows: Int32Array.from(prompt, (_, i) => i),
    }) as never));
    const V = lm.cfg.vocabSize;
    const expected = prompt.map((_, i) => (i === 0 ? null : tokenLogprobs(logits.subarray((i - 1) * V, i * V), prompt[i]!, 2)));
    for (const llm of [make(), make({ maxNumBatchedTokens: 7 })]) {
      llm.generate([prompt], { max_tokens: 2, temperature: 0 }, { useTqdm: false }); // warms the prefix cache
      const [out] = llm.generate([prompt], { max_tokens: 2, temperature: 0, prompt_logprobs: 2 }, { useTqdm: false });
      const got = out!.promptLogprobs!;
      expect(got.length).toBe(n);
      expect(got[0]).toBeNull();
      for (let i = 1; i < n; i++) {
        expect(got[i]!.logprob).toBeCloseTo(expected[i]!.logprob, 4);
        expect(got[i]!.rank).toBe(expected[i]!.rank!);
        expect(got[i]!.top.map((t) => t.tokenId)).toEqual(expected[i]!.top.map((t) => t.tokenId));
      }
    }
  });
});

describe("output kinds (what each step's RequestOutput carries)", () => {
  const prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
  // Chunked prefill over 4-token chunks: the request's first outputs come before any output token.
  const run = (kind: "cumulative" | "delta" | "final_only") => {
    const llm = make({ maxNumBatchedTokens: 4, enableChunkedPrefill: true });
    llm.engine.addRequest("r", prompt, new SamplingParams({ n: 2, temperature: 1, seed: 3, max_tokens: 9, ignore_eos: true, logprobs: 2, prompt_logprobs: 1 }), performance.now(), kind);
    const outs = [];
    while (llm.engine.hasUnfinishedRequests()) outs.push(...llm.engine.step());
    return outs;
  };

  test("cumulative: every output has everything so far; final_only: one output equal to cumulative's last", () => {
    const cum = run("cumulative");
    expect(cum.length).toBeGreaterThan(9);
    for (const o of cum) {
      expect(o.promptTokenIds).toEqual(prompt);
      for (const c of o.outputs) expect(c.tokenIds.length).toBe(c.numTokens);
    }
    const fin = run("final_only");
    expect(fin.length).toBe(1);
    expect(fin[0]!.finished).toBe(true);
    const last = cum.at(-1)!;
    expect(fin[0]!.promptTokenIds).toEqual(last.promptTokenIds);
    expect(fin[0]!.promptLogprobs).toEqual(last.promptLogprobs);
    fin[0]!.outputs.forEach((c, i) => {
      const want = last.outputs[i]!;
      for (const k of ["text", "tokenIds", "logprobs", "cumulativeLogprob", "numTokens", "finishReason"] as const) expect(c[k]).toEqual(want[k]);
      // Its deltas are everything: nothing went out before.
      expect(c.tokenIdsDelta).toEqual(want.tokenIds);
      expect(c.textDelta).toBe(want.text);
    });
  });

  test("delta: the deltas add up to the final output, which alone carries the whole text, ids and logprobs", () => {
    const cumLast = run("cumulative").at(-1)!;
    const outs = run("delta");
    const ids: number[][] = [[], []], texts = ["", ""], lps: unknown[][] = [[], []];
    let sawTokens = false;
    for (const o of outs) {
      expect(o.numPromptTokens).toBe(prompt.length);
      // The prompt fields ride along until the first output with tokens, and on the final one.
      if (!sawTokens || o.finished) {
        expect(o.promptTokenIds).toEqual(prompt);
        expect(o.promptLogprobs).not.toBeNull();
      } else {
        expect(o.promptTokenIds).toEqual([]);
        expect(o.promptLogprobs).toBeNull();
      }
      for (const c of o.outputs) {
        ids[c.index]!.push(...c.tokenIdsDelta);
        texts[c.index] += c.textDelta;
        lps[c.index]!.push(...c.logprobsDelta!);
        expect(c.numTokens).toBe(ids[c.index]!.length);
        if (!o.finished) {
          expect(c.tokenIds).toEqual([]);
          expect(c.text).toBe("");
          expect(c.logprobs).toEqual([]);
        }
      }
      if (o.outputs.some((c) => c.numTokens > 0)) sawTokens = true;
    }
    const last = outs.at(-1)!;
    expect(last.finished).toBe(true);
    for (const c of last.outputs) {
      expect(c.tokenIds).toEqual(ids[c.index]!);
      expect(c.text).toBe(texts[c.index]!);
      expect(c.logprobs).toEqual(lps[c.index]! as typeof c.logprobs);
    }
    // Same request, same seed: the same results as a cumulative run (whose last deltas are the same too).
    expect(last).toEqual(cumLast);
  });
});

describe("server start-up", () => {
  test("the server's thread loads its tokenizer while the engine worker loads the model, not after", async () => {
    const logs: string[] = [];
    const engine = await AsyncEngine.start({ model: tinyModel(SERVER_MODEL), device: "cpu", maxModelLen: 128, log: (m) => logs.push(m) });
    try {
      // Worker messages are handled in order: the tokenizer is loaded on "model-dir", which the worker posts
      // before it loads anything, so its line comes before the worker's later start-up lines.
      const tok = logs.findIndex((l) => /^tokenizer loaded in \d+\.\d\ds$/.test(l)), kv = logs.findIndex((l) => l.startsWith("KV cache:"));
      expect(tok).toBeGreaterThanOrEqual(0);
      expect(kv).toBeGreaterThan(tok);
      expect(engine.tokenizer.encode("hello world").length).toBeGreaterThan(0);
    } finally {
      await engine.shutdown(1000);
    }
  });

  test("no bound on waiting requests by default (as vLLM); --max-waiting-requests counts each prompt, freed as outputs arrive or requests end", async () => {
    const unbounded = await AsyncEngine.start({ model: tinyModel(SERVER_MODEL), device: "cpu", maxModelLen: 128, log: () => {} });
    try {
      expect(unbounded.maxWaitingRequests).toBe(Infinity);
      // 1,500 prompts queued at once (one batch request's worth): all accepted, all served.
      const params = () => new SamplingParams({ max_tokens: 1, ignore_eos: true, temperature: 0 });
      const streams = Array.from({ length: 1500 }, (_, i) => unbounded.generate(`b${i}`, [1, 2, 3, (i % 50) + 4], params()));
      let done = 0;
      await Promise.all(streams.map(async (st) => { for await (const o of st) if (o.finished) done++; }));
      expect(done).toBe(1500);
    } finally {
      await unbounded.shutdown(1000);
    }
    const bounded = await AsyncEngine.start({ model: tinyModel(SERVER_MODEL), device: "cpu", maxModelLen: 128, maxWaitingRequests: 3, log: () => {} });
    try {
      const long = () => new SamplingParams({ max_tokens: 100, ignore_eos: true });
      const first = [0, 1, 2].map((i) => bounded.generate(`w${i}`, [1, 2, 3], long()));
      expect(() => bounded.generate("w3", [1, 2, 3], long())).toThrow(/overloaded: 3 requests are already waiting/);
      bounded.abort("w0"); // an aborted request no longer waits
      const again = bounded.generate("w4", [1, 2, 3], long());
      // Once the queued ones have their first outputs, they no longer count.
      await Promise.all([...first.slice(1), again].map((st) => st.next()));
      const more = [5, 6, 7].map((i) => bounded.generate(`w${i}`, [1, 2, 3], long()));
      for (const id of ["w1", "w2", "w4", "w5", "w6", "w7"]) bounded.abort(id);
      expect(more.length).toBe(3);
    } finally {
      await bounded.shutdown(1000);
    }
  }, 120_000);

  test("a tokenizer that cannot be loaded fails the start with its error and ends the worker", async () => {
    const { cpSync, mkdtempSync, writeFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(join(tmpdir(), "vbun-badtok-"));
    cpSync(tinyModel(SERVER_MODEL), dir, { recursive: true });
    writeFileSync(join(dir, "tokenizer.json"), "{ not json");
    await expect(AsyncEngine.start({ model: dir, device: "cpu", maxModelLen: 128, log: () => {} })).rejects.toThrow(/tokenizer\.json/);
  });
});

describe("outputs crossing from the engine worker (output-codec)", () => {
  test("unpack(pack(step outputs)) equals the outputs, in order, for every kind of output a run produces", () => {
    const llm = make({ maxNumBatchedTokens: 16, enableChunkedPrefill: true });
    const e = llm.engine;
    // Plain streaming requests (compact), n = 2, logprobs and prompt logprobs, stop strings and stop tokens, a long prompt.
    const kinds: [string, ConstructorParameters<typeof SamplingParams>[0], string | number[]][] = [
      ["plain", { temperature: 0, max_tokens: 12, ignore_eos: true }, [5, 6, 7, 8, 9]],
      ["n2", { n: 2, temperature: 1, seed: 4, max_tokens: 7, ignore_eos: true }, [11, 12, 13]],
      ["logprobs", { temperature: 1, seed: 2, max_tokens: 5, ignore_eos: true, logprobs: 2, prompt_logprobs: 1 }, [20, 21, 22, 23]],
      ["more", { temperature: 0, max_tokens: 9, ignore_eos: true, skip_special_tokens: false }, [400, 401, 402]],
      ["stops", { temperature: 1, seed: 9, max_tokens: 30, stop: ["e", "a"], stop_token_ids: [7] }, [30, 31, 32]],
      ["long", { temperature: 0, max_tokens: 4, ignore_eos: true }, Array.from({ length: 40 }, (_, i) => 40 + i)],
    ];
    for (const [id, p, prompt] of kinds) e.addRequest(id, prompt, new SamplingParams(p), performance.now(), "delta");
    let steps = 0, compactSteps = 0;
    while (e.hasUnfinishedRequests()) {
      const outs = e.step();
      const packed = structuredClone(pack(outs));
      if (packed.idLengths.length > 0) compactSteps++;
      expect(unpackOutputs(packed)).toEqual(outs);
      steps++;
    }
    expect(steps).toBeGreaterThan(5);
    expect(compactSteps).toBeGreaterThan(3); // the compact form was used, not only the fallback
  });

  test("edge cases: empty and multi-token deltas, surrogate pairs, n > 1, mixed with full outputs", () => {
    const compact = (id: string, deltas: [number[], string][]): RequestOutput => ({
      requestId: id, prompt: null, promptTokenIds: [], numPromptTokens: 3, numCachedTokens: 1, promptLogprobs: null, finished: false, pooled: null,
      outputs: deltas.map(([toks, text], index) => ({ index, text: "", textDelta: text, tokenIds: [], tokenIdsDelta: toks, numTokens: 4 + index, cumulativeLogprob: null, logprobs: null, logprobsDelta: null, finishReason: null, stopReason: null })),
    });
    const fullOne: RequestOutput = { ...compact("done", [[[9], "x"]]), finished: true };
    fullOne.outputs[0] = { ...fullOne.outputs[0]!, text: "abcx", tokenIds: [1, 2, 3, 9], finishReason: "stop", stopReason: "\n" };
    const outs = [compact("a", [[[], ""]]), fullOne, compact("é😀", [[[1, 2, 3], "😀 e\u0301"], [[7], ""]]), compact("", [[[2147483647, 0], "z"]])];
    const packed = structuredClone(pack(outs));
    expect(packed.full.length).toBe(1);
    expect(Array.from(packed.fullAt)).toEqual([1]);
    expect(unpackOutputs(packed)).toEqual(outs);
    expect(unpackOutputs(pack([]))).toEqual([]);
    // What the worker sends: small steps as they are (cheaper), larger ones packed.
    const many = Array.from({ length: PACK_MIN }, (_, i) => compact(`r${i}`, [[[i], `t${i}`]]));
    expect("plain" in packOutputs(many.slice(1))).toBe(true);
    expect("plain" in packOutputs(many)).toBe(false);
    expect(unpackOutputs(structuredClone(packOutputs(many)))).toEqual(many);
    expect(unpackOutputs(structuredClone(packOutputs(many.slice(1))))).toEqual(many.slice(1));
  });
});

test("cache_salt: only requests with the same salt share cached prompt blocks; outputs do not change", () => {
  const llm = make({ enablePrefixCaching: true });
  const prompt = Array.from({ length: 21 }, (_, i) => 30 + i);
  const run = (salt: string | null) => llm.generate([prompt], { temperature: 0, max_tokens: 4, cache_salt: salt }, { useTqdm: false })[0]!;
  const first = run("alice");
  expect(first.numCachedTokens).toBe(0);
  const again = run("alice");
  expect(again.numCachedTokens).toBe(20); // five full blocks of 4 (never the last token)
  expect(run("bob").numCachedTokens).toBe(0);
  expect(run(null).numCachedTokens).toBe(0);
  expect(run(null).numCachedTokens).toBe(20);
  expect(run("bob").outputs[0]!.tokenIds).toEqual(first.outputs[0]!.tokenIds);
  expect(() => new SamplingParams({ cache_salt: "" })).toThrow("cache_salt: must be a non-empty string");
  llm.close();
});

describe("--scheduling-policy priority", () => {
  test("the scheduler admits by (priority, arrival), and preempts the last in that order — even one it already scheduled this step", () => {
    const bm = new BlockManager(3, 4, false);
    const sched = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, maxModelLen: 64, enableChunkedPrefill: true, policy: "priority" }, bm);
    const seq = (id: number, priority: number, arrival: number, prompt: number[]) => new Sequence(id, `r${id}`, 0, prompt, new SamplingParams({ max_tokens: 8, priority }), 0, arrival);
    const low = seq(0, 5, 0, [1, 2, 3, 4]), high = seq(1, 0, 1, [5, 6, 7, 8]), mid = seq(2, 1, 2, [9]);
    for (const s of [low, high, mid]) sched.add(s);
    expect(sched.waiting.map((s) => s.seqId)).toEqual([1, 2, 0]);
    // All three fit (a block each of the three).
    let out = sched.schedule(0);
    expect(out.scheduled.map((s) => s.seq.seqId)).toEqual([1, 2, 0]);
    sched.postprocess(out, [11, 12, 13]);
    // high's next token needs a second block and none is free: low, the last by priority, is preempted.
    out = sched.schedule(1);
    expect(low.status).toBe(SequenceStatus.WAITING);
    expect(out.scheduled.map((s) => s.seq.seqId)).toEqual([1, 2]);
    expect(out.numPreempted).toBe(1);

    // The victim may have been scheduled earlier in the same step: it leaves the step, its tokens back in the budget.
    const bm2 = new BlockManager(3, 4, false);
    const s2 = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, maxModelLen: 64, enableChunkedPrefill: true, policy: "priority" }, bm2);
    const early = seq(10, 9, 0, [1, 2, 3, 4]), vip = seq(11, 0, 1, [5, 6, 7, 8]);
    s2.add(early);
    s2.postprocess(s2.schedule(0), [21]); // early: 5 tokens, 1 block
    s2.add(vip);
    s2.postprocess(s2.schedule(1), [22, 23]); // early takes a 2nd block, vip its 1st: all 3 used
    out = s2.schedule(2); // early (first in running order) fits its block; then vip needs a block: early goes
    expect(out.scheduled.map((r) => r.seq.seqId)).toEqual([11]);
    expect(out.numPreempted).toBe(1);
    expect(out.numBatchedTokens).toBe(1);
    expect(early.status).toBe(SequenceStatus.WAITING);
    expect(s2.running.map((x) => x.seqId)).toEqual([11]);
    bm2.checkInvariants(s2.running);
  });

  test("the engine serves lower priority values first; priorities need the policy", () => {
    const llm = make({ schedulingPolicy: "priority", maxNumSeqs: 1 });
    const e = llm.engine, done: string[] = [];
    for (const [id, priority] of [["a", 2], ["b", 0], ["c", 1], ["d", 0]] as const) e.addRequest(id, [1, 2, 3], new SamplingParams({ temperature: 0, max_tokens: 3, ignore_eos: true, priority }));
    while (e.hasUnfinishedRequests()) for (const o of e.step()) if (o.finished) done.push(o.requestId);
    expect(done).toEqual(["b", "d", "c", "a"]);
    llm.close();
    const fcfs = make();
    expect(() => fcfs.generate([[1, 2]], { priority: 1 })).toThrow("priority 1 needs --scheduling-policy priority");
    fcfs.close();
    expect(() => make({ schedulingPolicy: "lifo" as never })).toThrow("--scheduling-policy: must be fcfs or priority, got 'lifo'");
  });
});

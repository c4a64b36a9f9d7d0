/**
 * N-gram speculative decoding (--speculative-config): draft tokens from earlier occurrences of a sequence's
 * last tokens, verified in one step. Each token kept is the one a step without drafts would have sampled
 * (same logits, same seeded stream step, same penalties and bans), so every output must equal the engine's
 * without speculation — greedy and seeded sampling alike — while drafts really are proposed and confirmed.
 */
import { describe, expect, test } from "bun:test";
import { engineStats } from "../src/engine/engine-stats.ts";
import type { EngineOptions } from "../src/engine/engine-config.ts";
import { LLM } from "../src/engine/llm.ts";
import { SamplingParams, type SamplingParamsInit } from "../src/engine/sampling-params.ts";
import { Sampler } from "../src/engine/sampler.ts";
import { Sequence } from "../src/engine/sequence.ts";
import { renderMetrics } from "../src/server/metrics.ts";
import { NgramProposer } from "../src/speculative/ngram-proposer.ts";
import { parseSpeculativeConfig, type SpeculativeConfig } from "../src/speculative/speculative-config.ts";
import { frequentTokens, generate, results, workload } from "./engine-workload.ts";
import { FAST_MODEL, tinyModel } from "./helpers.ts";

const ENGINE_MS = 60_000;
const model = tinyModel(FAST_MODEL);
const SPEC = { method: "ngram", num_speculative_tokens: 4, prompt_lookup_min: 1, prompt_lookup_max: 3 };
const make = (o: EngineOptions = {}) => new LLM({ model, blockSize: 4, maxModelLen: 128, log: () => {}, ...o });

describe("--speculative-config", () => {
  test("vLLM's fields and defaults; errors name the field", () => {
    expect(parseSpeculativeConfig({ method: "ngram", num_speculative_tokens: 5, prompt_lookup_max: 4 })).toEqual({ method: "ngram", numSpeculativeTokens: 5, promptLookupMin: 4, promptLookupMax: 4, disableByBatchSize: null });
    expect(parseSpeculativeConfig({ num_speculative_tokens: 3 })).toEqual({ method: "ngram", numSpeculativeTokens: 3, promptLookupMin: 5, promptLookupMax: 5, disableByBatchSize: null });
    expect(parseSpeculativeConfig({ num_speculative_tokens: 2, prompt_lookup_min: 2, disable_by_batch_size: 8 })).toEqual({ method: "ngram", numSpeculativeTokens: 2, promptLookupMin: 2, promptLookupMax: 2, disableByBatchSize: 8 });
    const bad: [Record<string, unknown>, string][] = [
      [{ method: "eagle", num_speculative_tokens: 3 }, `method "eagle" is not supported`],
      [{ method: "ngram" }, "num_speculative_tokens is required"],
      [{ num_speculative_tokens: 0 }, "num_speculative_tokens must be a positive integer, got 0"],
      [{ num_speculative_tokens: 2.5 }, "num_speculative_tokens must be a positive integer"],
      [{ num_speculative_tokens: 64 }, "num_speculative_tokens must be at most 32, got 64"],
      [{ num_speculative_tokens: 2, prompt_lookup_min: 4, prompt_lookup_max: 2 }, "prompt_lookup_min (4) must not exceed prompt_lookup_max (2)"],
      [{ num_speculative_tokens: 2, model: "x/y" }, "unknown field 'model'"],
      [{ num_speculative_tokens: 2, disable_by_batch_size: -1 }, "disable_by_batch_size must be a positive integer, got -1"],
    ];
    for (const [obj, message] of bad) expect(() => parseSpeculativeConfig(obj)).toThrow(`--speculative-config: ${message}`);
    expect(() => make({ speculativeConfig: { method: "medusa", num_speculative_tokens: 2 } })).toThrow("--speculative-config");
  });
});

describe("the n-gram proposer", () => {
  const config = (min: number, max: number, k = 3): SpeculativeConfig => ({ method: "ngram", numSpeculativeTokens: k, promptLookupMin: min, promptLookupMax: max, disableByBatchSize: null });
  const seq = (tokens: number[]) => new Sequence(0, "r", 0, tokens, new SamplingParams({ max_tokens: 32 }), 0, 0);
  const drafts = (s: Sequence) => Array.from(s.tokens.subarray(s.numTokens, s.numTokens + s.numDrafts));

  test("proposes what followed the longest match of the sequence's end (then the one with most tokens after it, then the latest)", () => {
    const p = new NgramProposer(config(2, 3));
    // "2 3" occurs at 1 and 5; only the one at 1 extends to "1 2 3": it wins over the later, shorter one.
    const a = seq([1, 2, 3, 7, 9, 2, 3, 8, 1, 2, 3]);
    expect(p.propose(a, 3)).toBe(3);
    expect(drafts(a)).toEqual([7, 9, 2]);
    // Equal lengths: the latest occurrence.
    const b = seq([5, 6, 7, 5, 6, 8, 5, 6]);
    expect(p.propose(b, 3)).toBe(3);
    expect(drafts(b)).toEqual([8, 5, 6]);
    // At most maxDrafts, and never past the known tokens.
    expect(p.propose(b, 1)).toBe(1);
    expect(drafts(b)).toEqual([8]);
    // In a short loop the latest occurrence has few tokens after it: an equally long earlier one proposes more.
    const loop = seq([9, 1, 2, 1, 2, 1, 2]);
    expect(new NgramProposer(config(1, 2)).propose(loop, 4)).toBe(4);
    expect(drafts(loop)).toEqual([1, 2, 1, 2]);
    const c = seq([4, 4, 4]);
    expect(new NgramProposer(config(1, 2)).propose(c, 3)).toBe(1);
    expect(drafts(c)).toEqual([4]);
  });

  test("no match, too short, or no room: no drafts (and earlier drafts are cleared)", () => {
    const p = new NgramProposer(config(2, 2));
    const s = seq([1, 2, 3, 1, 2]);
    expect(p.propose(s, 3)).toBe(3); // 3 1 2
    s.appendToken(9); // … 1 2 9: "2 9" never occurred
    expect(p.propose(s, 3)).toBe(0);
    expect(s.numDrafts).toBe(0);
    expect(p.propose(seq([1, 2]), 3)).toBe(0);
    expect(p.propose(seq([1, 2, 1, 2]), 0)).toBe(0);
  });

  test("the index grows with the sequence: matches against tokens added since the last proposal are found", () => {
    const p = new NgramProposer(config(3, 3));
    const s = seq([10, 11, 12, 13]);
    expect(p.propose(s, 4)).toBe(0);
    for (const t of [20, 21, 22, 23, 24, 20, 21, 22]) s.appendToken(t);
    expect(p.propose(s, 4)).toBe(4);
    expect(drafts(s)).toEqual([23, 24, 20, 21]);
    // Drafts are stored after the known tokens without disturbing them.
    expect(Array.from(s.tokenIds)).toEqual([10, 11, 12, 13, 20, 21, 22, 23, 24, 20, 21, 22]);
  });
});

describe("the sampling rows of a sequence with drafts", () => {
  test("row j counts the first j drafts: seeded stream step, penalties, min_tokens and bad words", () => {
    const params = new SamplingParams({ max_tokens: 16, seed: 1, frequency_penalty: 0.5, min_tokens: 3, stop_token_ids: [9], bad_words_token_ids: [[6, 8], [5]] });
    const seq = new Sequence(0, "r", 0, [1, 2, 3], params, 1, 0);
    seq.appendToken(4);
    seq.appendToken(5);
    seq.setDrafts(Int32Array.from([6, 7]), 0, 2);
    const b = new Sampler([0]).build([{ seq, start: 4, numNewTokens: 3, samples: true }]);
    expect(b.numRows).toBe(3);
    expect(Array.from(b.step.subarray(0, 3))).toEqual([2, 3, 4]);
    expect([0, 1, 2].map((r) => Array.from(b.penalties[r]!.outputTokens))).toEqual([[4, 5], [4, 5, 6], [4, 5, 6, 7]]);
    // min_tokens 3: only the first row (2 outputs so far) bans the EOS and stop token ids; "6 8" bans 8 after the draft 6.
    expect([0, 1, 2].map((r) => b.banned[r])).toEqual([[0, 9, 5], [8, 5], [5]]);
  });
});

describe("outputs equal the engine's without speculation", () => {
  const frequent = frequentTokens(make({}));
  const w = workload(5, 40, frequent);
  // Longer greedy and seeded runs on prompts that repeat themselves, where n-grams match often.
  // (Sampling from the best two tokens keeps both the randomness and the drafts' chances high.)
  for (let i = 0; i < 16; i++) {
    const motif = [30 + i, 60 + 2 * i, 90 + 3 * i];
    w.prompts.push([...motif, 7, ...motif, 8, ...motif]);
    w.params.push({ max_tokens: 40, ignore_eos: true, ...(i % 2 ? { temperature: 1, top_k: 2, seed: i } : { temperature: 0 }), ...(i === 3 ? { logprobs: 3 } : {}), ...(i === 5 ? { repetition_penalty: 1.2, frequency_penalty: 0.3 } : {}) });
  }
  const configs: [string, EngineOptions][] = [
    ["prefix caching, room for all", { maxNumBatchedTokens: 256, maxNumSeqs: 64 }],
    ["chunked prefill with a tiny token budget (drafts trimmed to it)", { maxNumBatchedTokens: 9, maxNumSeqs: 64 }],
    ["a KV cache small enough to preempt often", { maxNumBatchedTokens: 256, maxNumSeqs: 64, numGpuBlocksOverride: 30 }],
    ["max_num_seqs 1, no prefix caching", { maxNumBatchedTokens: 256, maxNumSeqs: 1, enablePrefixCaching: false }],
  ];
  for (const [name, opts] of configs) {
    test(name, () => {
      const plain = make(opts), spec = make({ ...opts, speculativeConfig: SPEC });
      const expected = generate(plain, w);
      expect(generate(spec, w)).toEqual(expected);
      const m = spec.engine.metrics;
      // Speculation happened: drafts were verified, many confirmed, and it took fewer steps.
      expect(m.specDraftTokens).toBeGreaterThan(100);
      expect(m.specAcceptedTokens).toBeGreaterThan(m.specDraftTokens / 10);
      expect(m.specAcceptedPerPosition[0]!).toBeGreaterThanOrEqual(m.specAcceptedPerPosition[1]!);
      expect(m.generationTokens).toBe(plain.engine.metrics.generationTokens);
      if (opts.numGpuBlocksOverride) expect(spec.engine.scheduler.numPreemptions).toBeGreaterThan(2);
      expect(spec.engine.blockManager.numFreeBlocks).toBe(spec.engine.blockManager.numBlocks);
      plain.close();
      spec.close();
    }, ENGINE_MS);
  }

  test("step by step: drafts never pass max_tokens or max_model_len, the cache stays consistent, delta outputs add up", () => {
    const spec = make({ speculativeConfig: SPEC, maxModelLen: 40 }), plain = make({ maxModelLen: 40 });
    const prompt = [30, 60, 90, 7, 30, 60, 90, 8, 30, 60, 90];
    const cases: SamplingParamsInit[] = [{ temperature: 0, max_tokens: 13, ignore_eos: true }, { temperature: 0, max_tokens: null, ignore_eos: true }, { temperature: 0.5, seed: 2, max_tokens: 20, min_tokens: 6, stop_token_ids: frequent.slice(0, 3) }];
    for (const params of cases) {
      const e = spec.engine;
      e.addRequest("x", prompt, new SamplingParams(params), performance.now(), "delta");
      const tokens: number[] = [];
      let last = null, steps = 0;
      for (; e.hasUnfinishedRequests(); steps++) {
        for (const s of e.scheduler.running) expect(s.numDrafts).toBe(0);
        for (const o of e.step()) { tokens.push(...o.outputs[0]!.tokenIdsDelta); last = o.outputs[0]!; }
        e.blockManager.checkInvariants(e.scheduler.running);
        for (const s of e.scheduler.running) expect(s.numComputedTokens).toBe(s.numTokens - 1);
      }
      const [ref] = plain.generate([prompt], params, { useTqdm: false });
      expect(tokens).toEqual(ref!.outputs[0]!.tokenIds);
      expect(last!.finishReason).toBe(ref!.outputs[0]!.finishReason);
      // Greedy on a repetitive prompt: confirmed drafts save steps (one step per token without them).
      if (params.temperature === 0) expect(steps).toBeLessThan(tokens.length);
    }
    expect(spec.engine.metrics.specAcceptedTokens).toBeGreaterThan(0);
    spec.close();
    plain.close();
  }, ENGINE_MS);

  test("bad words of several tokens are checked against the drafts before each row", () => {
    const plain = make(), spec = make({ speculativeConfig: SPEC });
    const prompts = Array.from({ length: 6 }, (_, i) => [40 + i, 80, 120 + i, 7, 40 + i, 80, 120 + i]);
    const free = plain.generate(prompts, { temperature: 0, max_tokens: 32, ignore_eos: true }, { useTqdm: false });
    // Ban a pair each output really contains, so the ban changes what is sampled.
    const words = free.map((o) => { const t = o.outputs[0]!.tokenIds; return [t[10]!, t[11]!]; });
    const params = () => words.map((wd) => new SamplingParams({ temperature: 0, max_tokens: 32, ignore_eos: true, bad_words_token_ids: [wd] }));
    const expected = results(plain.generate(prompts, params(), { useTqdm: false }));
    expect(results(spec.generate(prompts, params(), { useTqdm: false }))).toEqual(expected);
    expect(expected.map((r) => r[0]!.tokens)).not.toEqual(free.map((o) => o.outputs[0]!.tokenIds));
    expect(spec.engine.metrics.specAcceptedTokens).toBeGreaterThan(0);
    plain.close();
    spec.close();
  }, ENGINE_MS);

  test("disable_by_batch_size: no drafts while more sequences than that run, drafts again once fewer do", () => {
    const prompts = Array.from({ length: 4 }, (_, i) => [40 + i, 80, 120 + i, 7, 40 + i, 80, 120 + i]);
    const spec = make({ speculativeConfig: { ...SPEC, disable_by_batch_size: 2 } });
    const e = spec.engine;
    prompts.forEach((p, i) => e.addRequest(`r${i}`, p, new SamplingParams({ temperature: 0, max_tokens: 8 + 8 * i, ignore_eos: true })));
    let draftedWithMore = 0, draftedWithFew = 0;
    while (e.hasUnfinishedRequests()) {
      const before = e.metrics.specDrafts, running = e.scheduler.running.length;
      e.step();
      if (e.metrics.specDrafts > before) (running > 2 ? draftedWithMore++ : draftedWithFew++);
    }
    expect(draftedWithMore).toBe(0);
    expect(draftedWithFew).toBeGreaterThan(0);
    spec.close();
  }, ENGINE_MS);

  test("with async scheduling asked for too, speculation wins (async scheduling is turned off and says so)", () => {
    const logs: string[] = [];
    const spec = make({ speculativeConfig: SPEC, asyncScheduling: true, log: (m) => logs.push(m) });
    expect(logs.some((m) => m.includes("async scheduling is off with speculative decoding"))).toBe(true);
    expect(logs.some((m) => m.includes("speculative decoding: ngram, 4 draft tokens, n-grams of 1–3 tokens"))).toBe(true);
    expect(spec.engine.options.asyncScheduling).toBe(false);
    spec.close();
  });

  test("tensor parallelism (CPU ranks): TP = 2 with drafts gives TP = 1's tokens", () => {
    const prompts = Array.from({ length: 4 }, (_, i) => [40 + i, 80, 120 + i, 7, 40 + i, 80, 120 + i]);
    const params = { temperature: 0, max_tokens: 24, ignore_eos: true };
    const opts = { maxNumSeqs: 4, maxNumBatchedTokens: 64, blockSize: 8 };
    const ref = make(opts).generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
    const tp = make({ ...opts, tensorParallelSize: 2, speculativeConfig: SPEC });
    expect(tp.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds)).toEqual(ref);
    expect(tp.engine.metrics.specAcceptedTokens).toBeGreaterThan(0);
    tp.close();
  }, ENGINE_MS);

  test("/metrics has vLLM's spec_decode counters (only when speculation is on)", () => {
    const spec = make({ speculativeConfig: SPEC });
    spec.generate([[30, 60, 90, 7, 30, 60, 90]], { temperature: 0, max_tokens: 16, ignore_eos: true }, { useTqdm: false });
    const m = spec.engine.metrics;
    const text = renderMetrics(engineStats(spec.engine), "m");
    expect(text).toContain(`vllm:spec_decode_num_drafts_total{model_name="m"} ${m.specDrafts}`);
    expect(text).toContain(`vllm:spec_decode_num_draft_tokens_total{model_name="m"} ${m.specDraftTokens}`);
    expect(text).toContain(`vllm:spec_decode_num_accepted_tokens_total{model_name="m"} ${m.specAcceptedTokens}`);
    for (let j = 0; j < 4; j++) expect(text).toContain(`vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="${j}"} ${m.specAcceptedPerPosition[j] ?? 0}`);
    expect(m.specDrafts).toBeGreaterThan(0);
    spec.close();
    const plain = make();
    expect(renderMetrics(engineStats(plain.engine), "m")).not.toContain("spec_decode");
    plain.close();
  });
});

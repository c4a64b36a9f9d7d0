/**
 * The server's split (vLLM V1): its engine worker runs without a tokenizer and the server's
 * OutputProcessor detokenizes and checks stop strings, telling the engine late to stop a sequence. What a
 * client sees must be what an engine with a tokenizer gives: every delta, the final text, token ids,
 * reasons and logprobs — with stop strings across token boundaries, held-back text, n > 1, min_tokens,
 * include_stop_str_in_output, and the engine running on for a step or two after a stop.
 */
import { describe, expect, test } from "bun:test";
import { LLM } from "../src/engine/llm.ts";
import type { LLMEngine } from "../src/engine/llm-engine.ts";
import { OutputProcessor } from "../src/engine/output-processor.ts";
import type { RequestOutput } from "../src/engine/request.ts";
import { SamplingParams, type SamplingParamsInit } from "../src/engine/sampling-params.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { FAST_MODEL, tinyModel } from "./helpers.ts";

const model = tinyModel(FAST_MODEL);
const make = (o = {}) => new LLM({ model, blockSize: 4, maxModelLen: 128, maxNumSeqs: 16, log: () => {}, ...o });

/** Every output of every request, as "delta" outputs, in order. */
type Streams = Map<string, RequestOutput[]>;

function withTokenizer(prompts: number[][], params: SamplingParamsInit[]): Streams {
  const e = make().engine, seen: Streams = new Map();
  prompts.forEach((p, i) => e.addRequest(`r${i}`, p, new SamplingParams(params[i]!), performance.now(), "delta"));
  while (e.hasUnfinishedRequests()) for (const o of e.step()) seen.set(o.requestId, [...(seen.get(o.requestId) ?? []), o]);
  return seen;
}

/** As the server runs it: the engine without a tokenizer, stops reaching it `lag` steps late. */
function split(prompts: number[][], params: SamplingParamsInit[], lag: number, engineOpts = {}): { seen: Streams; engine: LLMEngine; stopsSent: number } {
  const llm = make({ skipTokenizerInit: true, ...engineOpts });
  const e = llm.engine, tok = make().tokenizer, processor = new OutputProcessor(tok), seen: Streams = new Map();
  e.addEosTokenIds(tok.eosTokenIds);
  const open = new Set<string>();
  prompts.forEach((p, i) => {
    const sp = new SamplingParams(params[i]!);
    e.addRequest(`r${i}`, p, sp, performance.now(), "delta");
    processor.add(`r${i}`, p, sp);
    open.add(`r${i}`);
  });
  const inFlight: { requestId: string; indices: number[] }[][] = [];
  let stopsSent = 0;
  while (e.hasUnfinishedRequests()) {
    const due = inFlight.length >= lag ? inFlight.shift() ?? [] : [];
    for (const m of due) e.stopSequences(m.requestId, m.indices);
    const stops: { requestId: string; indices: number[] }[] = [];
    for (const o of e.step()) {
      if (!open.has(o.requestId)) continue;
      expect(o.outputs.every((c) => c.text === "" && c.textDelta === "")).toBe(true);
      const { output, stop } = processor.process(o);
      if (stop.length > 0) { stops.push({ requestId: o.requestId, indices: stop }); stopsSent += stop.length; }
      if (!output) continue;
      seen.set(o.requestId, [...(seen.get(o.requestId) ?? []), output]);
      if (output.finished) open.delete(o.requestId);
    }
    inFlight.push(stops);
  }
  expect(open.size).toBe(0);
  return { seen, engine: e, stopsSent };
}

/** What a client assembles from a stream: text and ids from the deltas, and the final output's fields. */
function assembled(outs: RequestOutput[]) {
  const last = outs.at(-1)!;
  return {
    finished: last.finished,
    promptTokenIds: outs[0]!.promptTokenIds,
    seqs: last.outputs.map((c, i) => ({
      streamedText: outs.map((o) => o.outputs[i]!.textDelta).join(""),
      streamedIds: outs.flatMap((o) => o.outputs[i]!.tokenIdsDelta),
      streamedLogprobs: c.logprobs ? outs.flatMap((o) => o.outputs[i]!.logprobsDelta!.map((l) => l.logprob)) : null,
      text: c.text, tokenIds: c.tokenIds, numTokens: c.numTokens, finish: c.finishReason, stop: c.stopReason,
      logprobs: c.logprobs?.map((l) => l.logprob) ?? null, cumulative: c.cumulativeLogprob,
    })),
  };
}

describe("the server's split gives what an engine with a tokenizer gives", () => {
  // Stop strings made of text the model really produces: pieces across token boundaries.
  const probe = make();
  const prompts = Array.from({ length: 12 }, (_, i) => [5 + i, 40 + 3 * i, 300 - i, 7]);
  const freeOutputs = probe.generate(prompts, new SamplingParams({ temperature: 0, max_tokens: 30, ignore_eos: true }), { useTqdm: false });
  const free = freeOutputs.map((o) => o.outputs[0]!.text);
  const rng = new SeededRandom(17);
  const params: SamplingParamsInit[] = prompts.map((_, i) => {
    const text = free[i]!;
    const at = rng.int(3, Math.max(4, text.length - 6));
    const p: SamplingParamsInit = { temperature: 0, max_tokens: 30, ignore_eos: true, stop: [text.slice(at, at + rng.int(2, 5))] };
    if (i % 3 === 1) p.include_stop_str_in_output = true;
    if (i % 4 === 2) p.logprobs = 1;
    if (i % 5 === 3) p.min_tokens = 20;
    if (i % 6 === 4) Object.assign(p, { n: 3, temperature: 0.9, seed: 5 });
    if (i === 11) p.stop = [];
    // A stop token the model produces: its text stays out unless include_stop_str_in_output (10), also where special tokens are kept (9).
    if (i === 9 || i === 10) Object.assign(p, { stop: [], stop_token_ids: [freeOutputs[i]!.outputs[0]!.tokenIds[8]!], skip_special_tokens: i === 10 });
    return p;
  });

  for (const lag of [0, 1, 2]) {
    test(`stops reach the engine ${lag} step${lag === 1 ? "" : "s"} late`, () => {
      const expected = withTokenizer(prompts, params);
      const { seen, engine, stopsSent } = split(prompts, params, lag);
      for (const [id, outs] of expected) expect(assembled(seen.get(id)!)).toEqual(assembled(outs));
      // Stop strings really ended sequences here, and the engine freed everything once told.
      const reasons = [...expected.values()].flatMap((o) => o.at(-1)!.outputs.map((c) => c.stopReason));
      expect(reasons.filter((r) => typeof r === "string").length).toBeGreaterThan(5);
      expect(stopsSent).toBeGreaterThan(5);
      expect(engine.blockManager.numFreeBlocks).toBe(engine.blockManager.numBlocks);
      expect(engine.metrics.requestSuccess.get("stop")).toBeGreaterThan(5);
    });
  }

  test("with async scheduling in the engine too", () => {
    const expected = withTokenizer(prompts, params);
    const { seen } = split(prompts, params, 1, { asyncScheduling: true });
    for (const [id, outs] of expected) expect(assembled(seen.get(id)!)).toEqual(assembled(outs));
  });
});

test("an engine without a tokenizer takes token ids only, and says so for text", () => {
  const llm = make({ skipTokenizerInit: true });
  expect(llm.engine.tokenizer).toBeNull();
  expect(() => llm.engine.addRequest("a", "hello", new SamplingParams())).toThrow(/no tokenizer .*token ids/);
  expect(() => llm.tokenizer).toThrow(/without a tokenizer/);
  const [out] = llm.generate([[1, 2, 3]], new SamplingParams({ max_tokens: 4, ignore_eos: true }), { useTqdm: false });
  expect(out!.outputs[0]!.tokenIds.length).toBe(4);
  expect(out!.outputs[0]!.text).toBe("");
});

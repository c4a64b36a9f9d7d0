/**
 * Beam search (LLM.beamSearch, the server's use_beam_search) against a beam search over the dense float64
 * reference's full next-token distributions: the same beams, tokens and cumulative log-probabilities.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { toFloat32 } from "../src/loader/dtype.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { referenceLogits, type W } from "./dense-reference.ts";
import { FAST_MODEL, SERVER_MODEL, startServer, tinyModel, type RunningServer } from "./helpers.ts";

const ENGINE_MS = 60_000;
const model = tinyModel(FAST_MODEL);
const quiet = { log: () => {} };

/** Beam search over every token (not just each beam's best 2·W), in float64, no end-of-sequence token. */
function referenceBeams(prompt: number[], width: number, steps: number): { tokens: number[]; cum: number }[] {
  const cfg = loadModelConfig(model), ckpt = new Checkpoint(model);
  const cache = new Map<string, Float64Array>();
  const w: W = (n) => {
    let v = cache.get(n);
    if (!v) { const t = ckpt.tensor(n); v = Float64Array.from(toFloat32(t.bytes, t.dtype)); cache.set(n, v); }
    return v;
  };
  let beams = [{ tokens: [] as number[], cum: 0 }];
  for (let s = 0; s < steps; s++) {
    const all: { tokens: number[]; cum: number }[] = [];
    for (const b of beams) {
      const logits = referenceLogits(cfg, w, [...prompt, ...b.tokens]).at(-1)!;
      const max = Math.max(...logits);
      const lse = max + Math.log(logits.reduce((a, x) => a + Math.exp(x - max), 0));
      logits.forEach((x, t) => all.push({ tokens: [...b.tokens, t], cum: b.cum + x - lse }));
    }
    beams = all.sort((a, b) => b.cum - a.cum).slice(0, width);
  }
  return beams;
}

describe("beam search", () => {
  test("the beams of a full-vocabulary float64 beam search: tokens, cumulative logprobs, order", async () => {
    const llm = new LLM({ model, blockSize: 4, maxModelLen: 64, ...quiet });
    const prompts = [[5, 6, 7, 8, 9], [100, 200, 300]];
    for (const width of [1, 3]) {
      const out = await llm.beamSearch(prompts, { beam_width: width, max_tokens: 4, ignore_eos: true, length_penalty: 0 });
      out.forEach((o, i) => {
        const ref = referenceBeams(prompts[i]!, width, 4);
        expect(o.sequences.map((s) => s.tokenIds)).toEqual(ref.map((r) => r.tokens));
        o.sequences.forEach((s, k) => {
          expect(Math.abs(s.cumulativeLogprob - ref[k]!.cum)).toBeLessThan(1e-4);
          expect(Math.abs(s.logprobs.reduce((a, b) => a + b, 0) - s.cumulativeLogprob)).toBeLessThan(1e-9);
          expect(s.finishReason).toBe("length");
        });
      });
    }
    // Width 1 is greedy.
    const greedy = llm.generate(prompts, { temperature: 0, max_tokens: 4, ignore_eos: true }, { useTqdm: false });
    const one = await llm.beamSearch(prompts, { beam_width: 1, max_tokens: 4, ignore_eos: true });
    expect(one.map((o) => o.sequences[0]!.tokenIds)).toEqual(greedy.map((g) => g.outputs[0]!.tokenIds));
    // Every step's beams share the prompt's blocks in the prefix cache.
    expect(llm.engine.blockManager.prefixCacheHits).toBeGreaterThan(0);
    llm.close();
  }, ENGINE_MS);

  test("a beam that samples an end-of-sequence token is complete; length penalty and the length limit", async () => {
    const llm = new LLM({ model, blockSize: 4, maxModelLen: 12, ...quiet });
    const prompt = [5, 6, 7, 8, 9];
    const free = await llm.beamSearch([prompt], { beam_width: 2, max_tokens: 3, ignore_eos: true });
    // Make the best first token an end-of-sequence token: that beam completes after one token.
    const first = free[0]!.sequences[0]!.tokenIds[0]!;
    llm.engine.addEosTokenIds([first]);
    const out = await llm.beamSearch([prompt], { beam_width: 2, max_tokens: 3, length_penalty: 1 });
    const ended = out[0]!.sequences.filter((s) => s.finishReason === "stop");
    expect(ended.length).toBeGreaterThan(0);
    for (const s of ended) expect(s.tokenIds.at(-1)).toBe(first);
    for (const s of out[0]!.sequences) {
      // Score = cumulative logprob / length^1, the length counting the prompt and not the ending EOS.
      const len = prompt.length + s.tokenIds.length - (s.finishReason === "stop" ? 1 : 0);
      expect(Math.abs(s.score - s.cumulativeLogprob / len)).toBeLessThan(1e-12);
      if (s.finishReason === "length") expect(s.tokenIds).not.toContain(first);
    }
    const scores = out[0]!.sequences.map((s) => s.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    // max_model_len 12 leaves room for 7 tokens after a 5-token prompt.
    const long = await llm.beamSearch([prompt], { beam_width: 2, max_tokens: 20, ignore_eos: true });
    for (const s of long[0]!.sequences) expect({ n: s.tokenIds.length, why: s.finishReason }).toEqual({ n: 7, why: "length" });
    await expect(llm.beamSearch([prompt], { beam_width: 11, max_tokens: 3 })).rejects.toThrow("beam width (n) in [1, 10], got 11");
    await expect(llm.beamSearch([prompt], { beam_width: 2, max_tokens: 0 })).rejects.toThrow("max_tokens >= 1");
    llm.close();
  }, ENGINE_MS);
});

describe("use_beam_search over HTTP", () => {
  let srv: RunningServer;
  const serverModel = tinyModel(SERVER_MODEL);
  beforeAll(async () => { srv = await startServer([serverModel]); });
  afterAll(async () => { await srv?.stop(); });
  const post = (path: string, body: unknown) => fetch(`${srv.url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

  test("completions and chat: n beams, the offline LLM.beamSearch's, best first", async () => {
    const llm = new LLM({ model: serverModel, ...quiet });
    const ids = llm.tokenizer.encode("The cat");
    const [expected] = await llm.beamSearch([ids], { beam_width: 3, max_tokens: 5 });
    const res = await post("/v1/completions", { prompt: "The cat", use_beam_search: true, n: 3, max_tokens: 5 });
    expect(res.status).toBe(200);
    const j = await res.json() as { choices: { index: number; text: string; finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    expect(j.choices.map((ch) => [ch.index, ch.text, ch.finish_reason])).toEqual(expected!.sequences.map((s, k) => [k, s.text, s.finishReason]));
    expect(j.usage).toMatchObject({ prompt_tokens: ids.length, completion_tokens: expected!.sequences.reduce((a, s) => a + s.tokenIds.length, 0) });
    // truncate_prompt_tokens: the search starts from the prompt's last tokens.
    const longIds = llm.tokenizer.encode("The cat sat on the mat and looked at the dog");
    const [cut] = await llm.beamSearch([longIds.slice(-3)], { beam_width: 2, max_tokens: 3 });
    const truncated = await (await post("/v1/completions", { prompt: longIds, use_beam_search: true, n: 2, max_tokens: 3, truncate_prompt_tokens: 3 })).json() as typeof j;
    expect(truncated.choices.map((ch) => ch.text)).toEqual(cut!.sequences.map((s) => s.text));
    expect(truncated.usage.prompt_tokens).toBe(3);
    const chatIds = llm.tokenizer.encode(llm.tokenizer.applyChatTemplate([{ role: "user", content: "Hi" }]), false);
    const [chatExpected] = await llm.beamSearch([chatIds], { beam_width: 2, max_tokens: 4 });
    const chat = await (await post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], use_beam_search: true, n: 2, max_tokens: 4 })).json() as { choices: { message: { content: string } }[] };
    expect(chat.choices.map((ch) => ch.message.content)).toEqual(chatExpected!.sequences.map((s) => s.text));
    llm.close();
  }, ENGINE_MS);

  test("what beam search cannot do is a 400 naming the field", async () => {
    const cases: [unknown, string, string][] = [
      [{ prompt: "x", use_beam_search: true, n: 11 }, "n", "beam width (n) in [1, 10]"],
      [{ prompt: "x", use_beam_search: true, stream: true }, "stream", "does not stream"],
      [{ prompt: "x", use_beam_search: true, logprobs: 2 }, "logprobs", "not returned with use_beam_search"],
      [{ prompt: "x", use_beam_search: true, structured_outputs: { regex: "[a-z]+" } }, "use_beam_search", "structured outputs"],
    ];
    for (const [body, param, message] of cases) {
      const res = await post("/v1/completions", body);
      const j = await res.json() as { error: { message: string; param: string } };
      expect({ status: res.status, param: j.error.param, has: j.error.message.includes(message) }).toEqual({ status: 400, param, has: true });
    }
  }, ENGINE_MS);
});

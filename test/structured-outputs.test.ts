/**
 * Structured outputs (vLLM's structured_outputs / guided decoding, xgrammar): the request shapes, the
 * grammar vocabulary read from tokenizer.json, the logit mask, and the engine — outputs that match their
 * constraint, greedy tokens that are the best allowed ones, requests without a constraint untouched, async
 * scheduling, preemption, aborts and failures.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import type { EngineOptions } from "../src/engine/engine-config.ts";
import { maskDisallowedTokens } from "../src/engine/sampling-batch.ts";
import { SamplingParams, SamplingParamsError, type SamplingParamsInit } from "../src/engine/sampling-params.ts";
import { QWEN3_TOKENIZER_FILES } from "../src/model/tiny-model.ts";
import { grammarVocab } from "../src/structured/grammar-vocab.ts";
import { choiceGrammar, normalizeStructuredOutputs } from "../src/structured/structured-outputs.ts";
import { StructuredOutputManager } from "../src/structured/structured-output-manager.ts";
import { buildGrammar, checkGrammar, GrammarError, loadXGrammar } from "../src/structured/xgrammar.ts";
import { FAST_MODEL, SERVER_MODEL, STORIES_DIR, tinyModel } from "./helpers.ts";

const fastModel = tinyModel(FAST_MODEL);

describe("the constraint's shape", () => {
  test("exactly one constraint, normalised to plain data; errors name the field", () => {
    expect(normalizeStructuredOutputs({ json: { type: "integer" } })).toEqual({ json: '{"type":"integer"}', disable_any_whitespace: false });
    expect(normalizeStructuredOutputs({ json: '{"type": "string"}', disable_any_whitespace: true })).toEqual({ json: '{"type":"string"}', disable_any_whitespace: true });
    expect(normalizeStructuredOutputs({ choice: ["a", "b"], json_object: false })).toEqual({ choice: ["a", "b"] });
    const bad: [unknown, string][] = [
      [{}, "structured_outputs: give one of json, regex, choice, grammar, json_object, structural_tag"],
      [{ regex: "a", choice: ["b"] }, "give only one of"],
      [{ choice: [] }, "structured_outputs.choice: must be a non-empty list"],
      [{ json: "{nope" }, "structured_outputs.json: is not valid JSON"],
      [{ regex: "a", whitespace_pattern: " " }, "structured_outputs.whitespace_pattern: is not supported"],
      [{ regex: "a", colour: 1 }, "structured_outputs.colour: unknown field"],
      [{ grammar: "  " }, "structured_outputs.grammar: must be a non-empty EBNF grammar"],
    ];
    for (const [init, message] of bad) expect(() => normalizeStructuredOutputs(init as never)).toThrow(message);
  });

  test("SamplingParams carries it across threads unchanged, and names the field when it is wrong", () => {
    const p = new SamplingParams({ structured_outputs: { json: { type: "object", properties: { a: { type: "number" } } } } });
    expect(new SamplingParams(p.toInit())).toEqual(p);
    expect(new SamplingParams(structuredClone(p.toInit()))).toEqual(p);
    expect(p.clone().structured_outputs).not.toBe(p.structured_outputs);
    try {
      new SamplingParams({ structured_outputs: { choice: [1] } as never });
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(SamplingParamsError);
      expect((e as SamplingParamsError).field).toBe("structured_outputs.choice");
    }
  });

  test("a choice's grammar accepts exactly its strings, quotes, backslashes, control characters and all", async () => {
    const xg = await loadXGrammar();
    const choices = ['say "hi"', "back\\slash", "two\nlines\ttab", "été ✓", "plain"];
    const g = await xg.Grammar.fromEBNF(choiceGrammar(choices));
    for (const c of choices) expect(await xg.Testings.isGrammarAcceptString(g, c)).toBe(true);
    for (const c of ["say hi", "back\\\\slash", "two lines", "plain!", ""]) expect(await xg.Testings.isGrammarAcceptString(g, c)).toBe(false);
    g.dispose();
  });

  test("a bad schema, regex or grammar is a GrammarError with the library's reason; hundreds of them leave checking and compiling working", async () => {
    const cases: [Parameters<typeof checkGrammar>[0], string, string][] = [
      [{ json: '{"type":"nope"}', disable_any_whitespace: false }, "structured_outputs.json", 'Unsupported type "nope"'],
      [{ regex: "[0-9" }, "structured_outputs.regex", "Unclosed '['"],
      [{ grammar: 'root ::= "a" |' }, "structured_outputs.grammar", "EBNF parser error"],
      [{ grammar: 'start ::= "a"' }, "structured_outputs.grammar", 'The root rule with name "root" is not found'],
    ];
    // Each failure aborts a WebAssembly call; one instance is corrupt after a few dozen (so each gets a fresh one).
    for (let round = 0; round < 60; round++) {
      for (const [s, field, reason] of cases) {
        const err = await checkGrammar(s).then(() => null, (e) => e);
        expect(err).toBeInstanceOf(GrammarError);
        expect(err.field).toBe(field);
        expect(err.message).toContain(reason);
      }
    }
    const xg = await loadXGrammar();
    const ok = await buildGrammar(xg, { regex: "[0-9]{2}" });
    expect(await xg.Testings.isGrammarAcceptString(ok, "42")).toBe(true);
    expect(await xg.Testings.isGrammarAcceptString(ok, "4")).toBe(false);
    ok.dispose();
    // The engine's compiler is checked first too: bad constraints never reach (or corrupt) its instance.
    const logs: string[] = [];
    const manager = new StructuredOutputManager(fastModel, 512, () => [], (m) => logs.push(m));
    for (let i = 0; i < 60; i++) await expect(manager.matcher({ json: '{"type":"nope"}', disable_any_whitespace: false })).rejects.toThrow('Unsupported type "nope"');
    const g = await manager.matcher({ regex: "ab" });
    await g.refresh();
    expect(g.accept(64)).toBe("advanced");
    g.dispose();
    // Failures in the checker do not cost the engine's instance (its vocabulary table is built once).
    expect(logs.filter((m) => m.includes("xgrammar ready")).length).toBe(1);
  }, 60_000);
});

describe("the grammar vocabulary from tokenizer.json", () => {
  test("Qwen3: byte-level, special tokens blank, other added tokens kept, padded to the model's vocabulary", () => {
    const tj = JSON.parse(readFileSync(QWEN3_TOKENIZER_FILES["tokenizer.json"], "utf8"));
    const v = grammarVocab(tj, 151936);
    expect(v.vocabType).toBe("BYTE_LEVEL");
    expect(v.prependSpace).toBe(false);
    expect(v.encodedVocab.length).toBe(151936);
    expect(v.encodedVocab[0]).toBe("!");
    expect(v.encodedVocab[tj.model.vocab["Ġhello"]]).toBe("Ġhello");
    const added = (content: string) => tj.added_tokens.find((t: { content: string }) => t.content === content);
    expect(added("<|im_end|>").special).toBe(true);
    expect(v.encodedVocab[added("<|im_end|>").id]).toBe("");
    expect(added("<think>").special).toBe(false);
    expect(v.encodedVocab[added("<think>").id]).toBe("<think>");
    expect(v.encodedVocab[151935]).toBe("");
    // A model with fewer ids than the tokenizer: only its own.
    expect(grammarVocab(tj, 512).encodedVocab.length).toBe(512);
  });

  test("SentencePiece styles: byte fallback with a prepended space (Llama 2), Unigram with Metaspace", () => {
    if (existsSync(join(STORIES_DIR, "tokenizer.json"))) {
      const v = grammarVocab(JSON.parse(readFileSync(join(STORIES_DIR, "tokenizer.json"), "utf8")), 512);
      expect(v.vocabType).toBe("BYTE_FALLBACK");
      expect(v.prependSpace).toBe(true);
      expect(v.encodedVocab[3]).toBe("<0x00>");
      expect(v.encodedVocab[2]).toBe(""); // </s>, special
    } else console.log(`skipped the stories260K half: ${STORIES_DIR} is not here`);
    const unigram = grammarVocab({
      model: { vocab: [["<unk>", 0], ["▁a", -1], ["b", -2]] },
      added_tokens: [{ id: 0, content: "<unk>", special: true }],
      decoder: { type: "Metaspace" },
      pre_tokenizer: { type: "Metaspace", prepend_scheme: "always" },
    }, 4);
    expect(unigram).toEqual({ encodedVocab: ["", "▁a", "b", ""], vocabType: "RAW", prependSpace: true });
    expect(() => grammarVocab({}, 4, "x/tokenizer.json")).toThrow("x/tokenizer.json: model.vocab is missing");
  });
});

test("the mask leaves allowed logits alone and sets the rest (ids past the mask too) to -inf", () => {
  const row = Float32Array.from({ length: 70 }, (_, i) => i);
  const mask = new Int32Array(2);
  mask[0] = (1 << 0) | (1 << 31);
  mask[1] = -1;
  maskDisallowedTokens(row, mask);
  const kept = [...row.keys()].filter((i) => row[i] !== -Infinity);
  expect(kept).toEqual([0, 31, ...Array.from({ length: 32 }, (_, i) => 32 + i)]);
  expect(row[31]).toBe(31);
});

/** Engine tests run whole workloads (several engines each) on the CPU: more than bun's 5 s on a loaded 2-core machine. */
const ENGINE_MS = 60_000;

const make = (o: EngineOptions = {}) => new LLM({ model: fastModel, blockSize: 4, maxModelLen: 128, log: () => {}, ...o });
const prompts = [[5, 6, 7, 8, 9], [11, 12, 13], [21, 22, 23, 24, 25, 26, 27, 28, 29], [40, 41], [100, 90, 80, 70]];
/** Token ids of "0" … "9" in the Qwen3 vocabulary (byte-level: 0 = "!", so "0" = 15). */
const DIGITS = Array.from({ length: 10 }, (_, i) => 15 + i);
const SCHEMA = { type: "object", properties: { colour: { enum: ["red", "green", "blue"] }, ok: { type: "boolean" }, n: { type: "integer", minimum: 0, maximum: 9 } }, required: ["colour", "ok", "n"] };
const texts = (outs: { outputs: { text: string }[] }[]) => outs.map((o) => o.outputs.map((c) => c.text));

describe("the engine under grammars (CPU)", () => {
  test("greedy under a grammar takes the best allowed token: the same as a logit bias that lifts only those tokens", async () => {
    const llm = make();
    const guided = await llm.generateAsync(prompts, { temperature: 0, max_tokens: 4, structured_outputs: { regex: "[0-9]" } }, { useTqdm: false });
    const biased = llm.generate(prompts, { temperature: 0, max_tokens: 1, logit_bias: Object.fromEntries(DIGITS.map((t) => [t, 100])) }, { useTqdm: false });
    const first = guided.map((o) => o.outputs[0]!.tokenIds[0]);
    expect(first).toEqual(biased.map((o) => o.outputs[0]!.tokenIds[0]));
    // Without the grammar the model would have said something else for most prompts.
    const free = llm.generate(prompts, { temperature: 0, max_tokens: 1 }, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds[0]);
    expect(free.filter((t, i) => t !== first[i]).length).toBeGreaterThan(2);
    // This model samples no end-of-sequence id (its vocabulary is cut at 512), so a grammar ends by itself.
    for (const o of guided) expect({ text: /^[0-9]$/.test(o.outputs[0]!.text), finish: o.outputs[0]!.finishReason }).toEqual({ text: true, finish: "stop" });
    llm.close();
  }, ENGINE_MS);

  test("sampled outputs match their regex, choice or schema; n = 2 and seeds repeat", async () => {
    const llm = make();
    const params: SamplingParamsInit[] = [
      { temperature: 1, seed: 1, n: 2, max_tokens: 30, structured_outputs: { regex: "(ab|cd)[0-9]{2,3}-(yes|no)" } },
      { temperature: 1, seed: 2, max_tokens: 30, structured_outputs: { choice: ["stop", "go", "wait a bit"] } },
      { temperature: 1, seed: 3, max_tokens: 60, structured_outputs: { json: SCHEMA, disable_any_whitespace: true } },
      { temperature: 0.8, seed: 4, max_tokens: 60, structured_outputs: { grammar: 'root ::= "(" item ("," item)* ")"\nitem ::= [a-c] | "[" [0-9] "]"' } },
      { temperature: 1, seed: 5, max_tokens: 60, structured_outputs: { json_object: true, disable_any_whitespace: true } },
    ];
    const outs = await llm.generateAsync(prompts, params, { useTqdm: false });
    const t = texts(outs);
    for (const s of t[0]!) expect(s).toMatch(/^(ab|cd)[0-9]{2,3}-(yes|no)$/);
    expect(["stop", "go", "wait a bit"]).toContain(t[1]![0]!);
    const json = JSON.parse(t[2]![0]!);
    expect(Object.keys(json).sort()).toEqual(["colour", "n", "ok"]);
    expect(["red", "green", "blue"]).toContain(json.colour);
    expect(typeof json.ok).toBe("boolean");
    expect(json.n >= 0 && json.n <= 9 && Number.isInteger(json.n)).toBe(true);
    expect(t[3]![0]!).toMatch(/^\(([a-c]|\[[0-9]\])(,([a-c]|\[[0-9]\]))*$|^\(([a-c]|\[[0-9]\])(,([a-c]|\[[0-9]\]))*\)$/);
    // json_object may run to max_tokens on a random model; what it wrote is an object's start.
    expect(t[4]![0]!.startsWith("{")).toBe(true);
    for (const o of outs.slice(0, 3)) for (const c of o.outputs) expect(c.finishReason).toBe("stop");
    expect(texts(await llm.generateAsync(prompts, params, { useTqdm: false }))).toEqual(t);
    llm.close();
  }, ENGINE_MS);

  test("requests without a constraint get exactly what they get alone; async scheduling and preemption change nothing", async () => {
    const free: SamplingParamsInit = { temperature: 0.9, seed: 11, max_tokens: 12 };
    const mixed = prompts.map((_, i): SamplingParamsInit => (i % 2 === 0 ? free : { temperature: 0.7, seed: i, max_tokens: 20, structured_outputs: { regex: "[a-z]{3,6}(, [a-z]{3,6})*\\." } }));
    const alone = texts(make().generate(prompts.filter((_, i) => i % 2 === 0), free, { useTqdm: false }));
    const reference = texts(await make().generateAsync(prompts, mixed, { useTqdm: false }));
    expect(reference.filter((_, i) => i % 2 === 0)).toEqual(alone);
    for (const [i, t] of reference.entries()) if (i % 2 === 1) expect(t[0]!).toMatch(/^[a-z]{3,6}(, [a-z]{3,6})*\.?$|^[a-z]{0,6}/);
    for (const opts of [{ asyncScheduling: true }, { numGpuBlocksOverride: 12 }, { asyncScheduling: true, numGpuBlocksOverride: 12, maxNumBatchedTokens: 7 }] as EngineOptions[]) {
      const llm = make(opts);
      expect(texts(await llm.generateAsync(prompts, mixed, { useTqdm: false }))).toEqual(reference);
      if (opts.numGpuBlocksOverride) expect(llm.engine.scheduler.numPreemptions).toBeGreaterThan(0);
      expect(llm.engine.blockManager.numFreeBlocks).toBe(llm.engine.blockManager.numBlocks);
      llm.close();
    }
  }, ENGINE_MS);

  test("aborts before and after the grammar is ready free the matchers; a bad constraint fails only its request", async () => {
    const llm = make(), e = llm.engine;
    const p = (s: SamplingParamsInit["structured_outputs"]) => new SamplingParams({ temperature: 0, max_tokens: 8, structured_outputs: s });
    e.addRequest("early", prompts[0]!, p({ choice: ["aaa", "bbb"] }));
    e.addRequest("late", prompts[1]!, p({ regex: "[a-z]{8}" }));
    e.addRequest("bad", prompts[2]!, p({ json: { type: "nope" } }));
    e.addRequest("free", prompts[3]!, new SamplingParams({ temperature: 0, max_tokens: 8 }));
    expect(e.needsPrepare()).toBe(true);
    expect(e.numWaitingForGrammar).toBe(3); // counted as waiting (/metrics), outside the scheduler
    expect(e.scheduler.waiting.length).toBe(1);
    expect(e.abort("early")!.outputs[0]!.finishReason).toBe("abort");
    const rejected = await e.prepare();
    expect(rejected.map((r) => r.requestId)).toEqual(["bad"]);
    expect(rejected[0]!.message).toContain('Unsupported type "nope"');
    const late = e.scheduler.running.concat(e.scheduler.waiting).find((s) => s.requestId === "late")!;
    expect(late.grammar?.nextMask()).toBeInstanceOf(Int32Array);
    e.step();
    // The next mask is made by prepare(): a step without it is refused, not run unmasked.
    expect(() => e.step()).toThrow("await prepare()");
    await e.prepare();
    e.step();
    e.abort("late");
    expect(late.grammar).toBeNull();
    expect(e.needsPrepare()).toBe(false);
    while (e.hasUnfinishedRequests()) {
      if (e.needsPrepare()) await e.prepare();
      e.step();
    }
    expect(e.blockManager.numFreeBlocks).toBe(e.blockManager.numBlocks);
    // generate() refuses constraints (their grammars compile asynchronously); generateAsync reports bad ones.
    expect(() => llm.generate([[1, 2]], { structured_outputs: { choice: ["x"] } })).toThrow("generateAsync");
    expect(llm.generateAsync([[1, 2]], { structured_outputs: { regex: "(" } })).rejects.toThrow("generateAsync:");
    llm.close();
  }, ENGINE_MS);
});

describe("a reasoning block before the constrained answer (--reasoning-parser)", () => {
  const allows = (m: Int32Array | null, t: number) => m === null || ((m[t >> 5]! >>> (t & 31)) & 1) === 1;
  const [OPEN, CLOSE, A, B] = [300, 301, 64, 65]; // stand-ins for <think>, </think>; "a" and "b" in the Qwen3 vocabulary

  test("the first token may open the block (or start the answer); inside it anything goes; after its end, the grammar", async () => {
    const manager = new StructuredOutputManager(fastModel, 512, () => [], () => {});
    const spec = normalizeStructuredOutputs({ regex: "ab", after_reasoning: { start_token_id: OPEN, end_token_id: CLOSE } });
    const g = await manager.matcher(spec);
    await g.refresh();
    let m = g.nextMask();
    expect([allows(m, OPEN), allows(m, A), allows(m, B), allows(m, CLOSE)]).toEqual([true, true, false, false]);
    expect(g.accept(OPEN)).toBe("unchanged");
    expect(g.nextMask()).toBeNull();
    expect([g.accept(B), g.accept(OPEN), g.accept(7)]).toEqual(["unchanged", "unchanged", "unchanged"]);
    expect(g.accept(CLOSE)).toBe("unchanged");
    m = g.nextMask();
    expect([allows(m, OPEN), allows(m, A), allows(m, B), allows(m, CLOSE)]).toEqual([false, true, false, false]);
    expect(g.accept(A)).toBe("advanced");
    expect(() => g.nextMask()).toThrow("LLMEngine.prepare");
    await g.refresh();
    expect(allows(g.nextMask(), B)).toBe(true);
    expect(g.accept(A)).toBe("rejected");
    g.dispose();
    // Answering at once: the first token starts the grammar, and the block can no longer open.
    const h = await manager.matcher(spec);
    await h.refresh();
    expect(h.accept(A)).toBe("advanced");
    await h.refresh();
    expect(allows(h.nextMask(), OPEN)).toBe(false);
    h.dispose();
    // DeepSeek-R1 style: the output begins inside the block.
    const r1 = await manager.matcher(normalizeStructuredOutputs({ regex: "ab", after_reasoning: { start_token_id: null, end_token_id: CLOSE } }));
    await r1.refresh();
    expect(r1.nextMask()).toBeNull();
    expect(r1.accept(CLOSE)).toBe("unchanged");
    expect(allows(r1.nextMask(), A) && !allows(r1.nextMask(), B)).toBe(true);
    r1.dispose();
  }, ENGINE_MS);

  test("in the engine: free tokens until the block's end token, then the grammar's", async () => {
    const llm = make();
    const lift = { [CLOSE]: 100 }; // the model ends its "reasoning" at once
    const params = (after: boolean): SamplingParamsInit => ({
      temperature: 0, max_tokens: 12, logit_bias: lift,
      structured_outputs: { choice: ["yes", "no"], ...(after ? { after_reasoning: { start_token_id: null, end_token_id: CLOSE } } : {}) },
    });
    const [withBlock, without] = await llm.generateAsync([prompts[0]!, prompts[0]!], [params(true), params(false)], { useTqdm: false });
    const closeText = llm.tokenizer.decode([CLOSE]);
    expect(withBlock!.outputs[0]!.tokenIds[0]).toBe(CLOSE);
    expect(["yes", "no"].map((c) => closeText + c)).toContain(withBlock!.outputs[0]!.text);
    expect(["yes", "no"]).toContain(without!.outputs[0]!.text);
    llm.close();
  }, ENGINE_MS);
});

describe("the engine under grammars, with the real end-of-sequence token", () => {
  const model = tinyModel(SERVER_MODEL);
  const llm = new LLM({ model, maxModelLen: 256, log: () => {} });
  const prompt = [9707, 11, 1879, 0];

  test("a complete grammar ends with EOS (finish 'stop'); logprobs are over the allowed tokens", async () => {
    const [o] = await llm.generateAsync([prompt], { temperature: 0, max_tokens: 40, logprobs: 3, structured_outputs: { json: SCHEMA, disable_any_whitespace: true } }, { useTqdm: false });
    const c = o!.outputs[0]!;
    expect(c.finishReason).toBe("stop");
    expect(JSON.parse(c.text)).toHaveProperty("colour");
    expect(llm.engine.eosTokenIds).toContain(c.tokenIds.at(-1)!);
    // The first token must open the object: every top candidate with a probability does (the rest were masked
    // out: -inf), and the sampled one is the likeliest of them.
    const first = c.logprobs![0]!;
    const possible = first.top.filter((t) => t.logprob > -Infinity);
    expect(possible.length).toBeGreaterThan(1);
    expect(possible.every((t) => llm.tokenizer.decode([t.tokenId]).startsWith("{"))).toBe(true);
    expect(first.top.slice(possible.length).every((t) => t.logprob === -Infinity)).toBe(true);
    expect(possible.reduce((a, t) => a + Math.exp(t.logprob), 0)).toBeCloseTo(1, 4);
    expect(first.logprob).toBe(possible[0]!.logprob);
  }, ENGINE_MS);

  test("ignore_eos: the sequence still ends when its grammar is complete; min_tokens past the grammar ends it as 'abort'", async () => {
    const [a, b] = await llm.generateAsync([prompt, prompt], [
      { temperature: 0, max_tokens: 20, ignore_eos: true, structured_outputs: { choice: ["yes", "no"] } },
      { temperature: 0, max_tokens: 20, min_tokens: 10, structured_outputs: { choice: ["yes", "no"] } },
    ], { useTqdm: false });
    expect(["yes", "no"]).toContain(a!.outputs[0]!.text);
    expect(a!.outputs[0]!.finishReason).toBe("stop");
    expect(b!.outputs[0]!.finishReason).toBe("abort");
    expect(b!.outputs[0]!.tokenIds.length).toBeLessThan(10);
  }, ENGINE_MS);
});

describe("vLLM's other token restrictions: allowed_token_ids, bad_words, truncate_prompt_tokens", () => {
  test("allowed_token_ids: greedy picks the best allowed token every step (as a logit bias lifting only them); with a grammar, both apply", async () => {
    const llm = make();
    const allowed = [17, 40, 77, 150, 300, 301, 511];
    const onlyThese = llm.generate(prompts, { temperature: 0, max_tokens: 10, allowed_token_ids: allowed }, { useTqdm: false });
    const lifted = llm.generate(prompts, { temperature: 0, max_tokens: 10, logit_bias: Object.fromEntries(allowed.map((t) => [t, 100])) }, { useTqdm: false });
    expect(onlyThese.map((o) => o.outputs[0]!.tokenIds)).toEqual(lifted.map((o) => o.outputs[0]!.tokenIds));
    for (const o of onlyThese) expect(o.outputs[0]!.tokenIds.every((t) => allowed.includes(t))).toBe(true);
    const seeded = llm.generate(prompts, { temperature: 1, seed: 3, max_tokens: 10, allowed_token_ids: allowed }, { useTqdm: false });
    for (const o of seeded) expect(o.outputs[0]!.tokenIds.every((t) => allowed.includes(t))).toBe(true);
    // "[0-9]" allows ten digits; allowed_token_ids three of them ("1", "2", "3").
    const both = await llm.generateAsync(prompts, { temperature: 1, seed: 5, max_tokens: 4, allowed_token_ids: [16, 17, 18, 300], structured_outputs: { regex: "[0-9]" } }, { useTqdm: false });
    for (const o of both) expect(["1", "2", "3"]).toContain(o.outputs[0]!.text);
    expect(() => llm.generate([[1]], { allowed_token_ids: [512] })).toThrow("allowed_token_ids: token id 512 is out of vocabulary");
    llm.close();
  }, ENGINE_MS);

  test("bad words never appear, at the text's start or after a space; async scheduling gives the same tokens", () => {
    const llm = make();
    const free = llm.generate(prompts, { temperature: 0, max_tokens: 16, ignore_eos: true }, { useTqdm: false });
    // Two-token "words" the model does produce: each output's first two tokens.
    const pairs = free.map((o) => o.outputs[0]!.tokenIds.slice(0, 2));
    const banned = llm.generate(prompts, new SamplingParams({ temperature: 0, max_tokens: 16, ignore_eos: true, bad_words_token_ids: pairs }), { useTqdm: false });
    const has = (ids: number[], w: number[]) => ids.some((_, i) => w.every((t, k) => ids[i + k] === t));
    for (const o of banned) for (const w of pairs) expect(has(o.outputs[0]!.tokenIds, w)).toBe(false);
    expect(banned.map((o) => o.outputs[0]!.tokenIds)).not.toEqual(free.map((o) => o.outputs[0]!.tokenIds));
    const async = make({ asyncScheduling: true }).generate(prompts, new SamplingParams({ temperature: 0, max_tokens: 16, ignore_eos: true, bad_words_token_ids: pairs }), { useTqdm: false });
    expect(async.map((o) => o.outputs[0]!.tokenIds)).toEqual(banned.map((o) => o.outputs[0]!.tokenIds));
    // As strings (the engine's tokenizer turns them into ids, with and without a leading space).
    const p = new SamplingParams({ bad_words: ["hello", " world"] });
    p.tokenizeBadWords((t) => llm.tokenizer.encode(t, false));
    expect(p.bad_words_token_ids).toEqual([llm.tokenizer.encode("hello", false), llm.tokenizer.encode(" hello", false), llm.tokenizer.encode("world", false), llm.tokenizer.encode(" world", false)]);
    llm.close();
  }, ENGINE_MS);

  test("truncate_prompt_tokens keeps the prompt's last tokens", () => {
    const llm = make();
    const long = Array.from({ length: 30 }, (_, i) => 10 + i * 7);
    const [cut] = llm.generate([long], { temperature: 0, max_tokens: 6, truncate_prompt_tokens: 5 }, { useTqdm: false });
    const [tail] = llm.generate([long.slice(-5)], { temperature: 0, max_tokens: 6 }, { useTqdm: false });
    expect(cut!.promptTokenIds).toEqual(long.slice(-5));
    expect(cut!.outputs[0]!.tokenIds).toEqual(tail!.outputs[0]!.tokenIds);
    const [all] = llm.generate([long], { temperature: 0, max_tokens: 2, truncate_prompt_tokens: -1 }, { useTqdm: false });
    expect(all!.promptTokenIds.length).toBe(30);
    expect(() => new SamplingParams({ truncate_prompt_tokens: 0 })).toThrow("truncate_prompt_tokens: must be -1 or an integer >= 1");
    llm.close();
  }, ENGINE_MS);
});

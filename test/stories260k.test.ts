/** The external anchor: llama2.c's own greedy output for Karpathy's trained stories260K Llama. */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { STORIES_DIR } from "./helpers.ts";

const present = existsSync(join(STORIES_DIR, "expected.json"));
if (!present) console.log(`skipping stories260K tests: ${STORIES_DIR} not found`);

describe.skipIf(!present)("stories260K reproduces llama2.c", () => {
  const expected = present ? JSON.parse(readFileSync(join(STORIES_DIR, "expected.json"), "utf8")) : { cases: [] };
  const llm = present ? new LLM({ model: STORIES_DIR, log: () => {}, blockSize: 16 }) : null;

  for (const c of expected.cases as { name: string; prompt_token_ids: number[]; max_tokens: number; expected_token_ids: number[]; expected_text?: string }[]) {
    test(c.name, () => {
      const [out] = llm!.generate(c.prompt_token_ids, { temperature: 0, max_tokens: c.max_tokens }, { useTqdm: false });
      expect(out!.outputs[0]!.tokenIds).toEqual(c.expected_token_ids);
      if (c.expected_text !== undefined) expect(out!.outputs[0]!.text).toBe(c.expected_text);
    });
  }

  test("the tokenizer encodes the prompt as llama2.c does", () => {
    expect(llm!.tokenizer.encode("Once upon a time")).toEqual([1, 403, 407, 261, 378]);
  });
});

describe.skipIf(!present)("stories260K with n-gram speculative decoding still reproduces llama2.c", () => {
  const expected = present ? JSON.parse(readFileSync(join(STORIES_DIR, "expected.json"), "utf8")) : { cases: [] };
  test("every case's greedy tokens, in fewer steps than tokens (its stories repeat themselves)", () => {
    const llm = new LLM({ model: STORIES_DIR, log: () => {}, blockSize: 16, speculativeConfig: { method: "ngram", num_speculative_tokens: 4, prompt_lookup_min: 2, prompt_lookup_max: 4 } });
    let tokens = 0;
    for (const c of expected.cases as { prompt_token_ids: number[]; max_tokens: number; expected_token_ids: number[] }[]) {
      const [out] = llm.generate(c.prompt_token_ids, { temperature: 0, max_tokens: c.max_tokens }, { useTqdm: false });
      expect(out!.outputs[0]!.tokenIds).toEqual(c.expected_token_ids);
      tokens += c.expected_token_ids.length;
    }
    const m = llm.engine.metrics;
    expect(m.specAcceptedTokens).toBeGreaterThan(0);
    expect(m.numSteps).toBeLessThan(tokens);
    llm.close();
  });
});

import { describe, expect, test } from "bun:test";
import { IncrementalDetokenizer } from "../src/tokenizer/detokenizer.ts";
import { TextTokenizer } from "../src/tokenizer/tokenizer.ts";
import { qwen3TokenizerDir } from "../src/model/tiny-model.ts";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { STORIES_DIR, tempDir } from "./helpers.ts";

const tok = TextTokenizer.load(qwen3TokenizerDir());
const TEXTS = [
  "Hello, world! The quick brown fox jumps over the lazy dog.",
  "  leading spaces, tabs\tand\nnewlines  ",
  "你好，世界。今天天气很好，我们去公园散步吧。",
  "日本語のテキストと한국어 텍스트",
  "Emoji: 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵, math ∑∫√",
  "mixed: naïve café — “quotes” and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
];

function streamed(ids: number[], promptTail: number[] = []): string {
  const d = new IncrementalDetokenizer(tok, true, promptTail);
  let out = "";
  for (const id of ids) out += d.push(id);
  return out + d.flush();
}

describe("Qwen3 tokenizer", () => {
  for (const text of TEXTS) {
    test(`round trip: ${JSON.stringify(text).slice(0, 30)}`, () => {
      const ids = tok.encode(text);
      expect(ids.length).toBeGreaterThan(0);
      expect(tok.decode(ids)).toBe(text);
    });
  }

  test("known ids", () => {
    expect(tok.encode("Hello world")).toEqual([9707, 1879]);
    expect(tok.tokenToId("<|im_end|>")).toBe(151645);
    expect(tok.eosTokenIds).toEqual([151645]);
  });

  test("special tokens are skipped on request", () => {
    const ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false);
    expect(ids[0]).toBe(151644);
    expect(tok.decode(ids, false)).toBe("<|im_start|>user\nhi<|im_end|>");
    expect(tok.decode(ids, true)).toBe("user\nhi");
  });
});

describe("incremental detokenizer", () => {
  for (const text of TEXTS) {
    test(`streamed equals one-shot: ${JSON.stringify(text).slice(0, 30)}`, () => {
      const ids = tok.encode(text);
      expect(streamed(ids)).toBe(tok.decode(ids));
    });
  }

  test("never releases a split UTF-8 character", () => {
    // An emoji is several byte-level tokens: nothing may come out until the character is complete.
    const char = ["🦩", "𝔘", "龘", "🪐"].find((c) => tok.encode(c).length > 1)!;
    const ids = tok.encode(char);
    expect(ids.length).toBeGreaterThan(1);
    const d = new IncrementalDetokenizer(tok);
    const chunks = ids.map((id) => d.push(id));
    for (const c of chunks) expect(c.includes("\uFFFD")).toBe(false);
    expect(chunks.join("")).toBe(char);
    expect(chunks.slice(0, -1).join("")).toBe("");
  });

  test("random token streams: streamed equals one-shot", () => {
    let x = 12345;
    const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) % 151643);
    for (let trial = 0; trial < 20; trial++) {
      const ids = Array.from({ length: 40 }, rnd);
      expect(streamed(ids)).toBe(tok.decode(ids));
    }
  });

  test("with prompt context, streamed text equals decode(prompt + output) minus decode(prompt)", () => {
    const prompt = tok.encode("The answer is");
    const output = tok.encode(" forty-two 🎉 done");
    expect(streamed(output, prompt)).toBe(tok.decode([...prompt, ...output]).slice(tok.decode(prompt).length));
  });

  test.skipIf(!existsSync(STORIES_DIR))("sentencepiece-style tokenizer (stories260K)", () => {
    const sp = TextTokenizer.load(STORIES_DIR);
    const ids = sp.encode("Once upon a time, there was a cat.");
    const d = new IncrementalDetokenizer(sp, true, ids.slice(0, 1));
    let out = "";
    for (const id of ids.slice(1)) out += d.push(id);
    expect(out + d.flush()).toBe("Once upon a time, there was a cat.");
  });
});

describe("Qwen3 chat template", () => {
  test("system + user with a generation prompt", () => {
    const text = tok.applyChatTemplate([{ role: "system", content: "You are helpful." }, { role: "user", content: "Hi!" }]);
    expect(text).toBe("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  });

  test("enable_thinking=false adds an empty think block", () => {
    const text = tok.applyChatTemplate([{ role: "user", content: "Hi!" }], { kwargs: { enable_thinking: false } });
    expect(text).toBe("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  });

  test("multi-turn: earlier reasoning is dropped from history", () => {
    const text = tok.applyChatTemplate([
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "<think>\nadd\n</think>\n\n4" },
      { role: "user", content: "and 3+3?" },
    ]);
    expect(text).toBe("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n<|im_start|>assistant\n");
  });

  test("no generation prompt", () => {
    expect(tok.applyChatTemplate([{ role: "user", content: "x" }], { addGenerationPrompt: false })).toBe("<|im_start|>user\nx<|im_end|>\n");
  });
});

describe("building a tokenizer once", () => {
  // A copy of Qwen3's tokenizer files in a fresh folder.
  const copy = () => {
    const dir = tempDir("tokenizer");
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(qwen3TokenizerDir(), f), join(dir, f));
    return dir;
  };
  const inner = (t: TextTokenizer) => (t as unknown as { tok: object }).tok;

  test("the same files (in any folder) share the tokenizer built first; edited ones are built afresh", () => {
    const a = copy(), b = copy();
    const first = TextTokenizer.load(a), again = TextTokenizer.load(b);
    expect(inner(again)).toBe(inner(first));
    expect(again.encode("Hello world")).toEqual([9707, 1879]);

    // One more special token in tokenizer.json: the next load sees it.
    const json = JSON.parse(readFileSync(join(b, "tokenizer.json"), "utf8"));
    json.added_tokens.push({ id: 151669, content: "<|vbun|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    writeFileSync(join(b, "tokenizer.json"), JSON.stringify(json));
    const edited = TextTokenizer.load(b);
    expect(inner(edited)).not.toBe(inner(first));
    expect(edited.encode("<|vbun|>")).toEqual([151669]);
    expect(first.encode("<|vbun|>").length).toBeGreaterThan(1);
    expect(TextTokenizer.load(a).encode("<|vbun|>").length).toBeGreaterThan(1);

    // A different tokenizer_config.json (what the tokenizer is built with too) is another tokenizer.
    const config = JSON.parse(readFileSync(join(a, "tokenizer_config.json"), "utf8"));
    writeFileSync(join(a, "tokenizer_config.json"), JSON.stringify({ ...config, eos_token: "<|endoftext|>" }));
    const otherConfig = TextTokenizer.load(a);
    expect(otherConfig.eosTokenIds).toEqual([151643]);
    expect(inner(otherConfig)).not.toBe(inner(TextTokenizer.load(copy())));
  });
});

/**
 * The CPU backend against Hugging Face's own float32 outputs for the tiny checkpoints, recorded on a device
 * run by scripts/gpu-check (step 5) into test/fixtures/hf-tiny-<name>/: transformers' causal LMs, and its
 * sequence classifier, PEFT's LoRA and sentence-transformers' embeddings. Until a device run has produced
 * them, those comparisons skip and say so.
 */
import { describe, expect, test } from "bun:test";
import { loadLoraAdapter } from "../src/lora/lora-adapter.ts";
import { REFERENCE_ADAPTER, REFERENCE_PROMPTS, REFERENCE_TEXTS, writeReferenceCheckpoints } from "../src/model/reference-checkpoints.ts";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { prefillInputs } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig } from "../src/model/config.ts";
import type { TinyArch } from "../src/model/tiny-model.ts";
import { tempDir, tinyModel } from "./helpers.ts";

/** The tiny checkpoints scripts/gpu-check records transformers' outputs for: name → tinyModel's options (make-tiny-model's flags there). */
const YARN = { rope_type: "yarn", factor: 4.0, original_max_position_embeddings: 1024 };
const LONGROPE = { type: "longrope", short_factor: [1, 1.25, 1.5, 2, 3, 5], long_factor: [1.1, 2, 4, 8, 16, 40] };
const HF_TINY: [string, TinyArch, Record<string, unknown>][] = [["qwen3", "qwen3", {}], ["llama", "llama", {}], ["qwen2", "qwen2", {}], ["granite", "granite", {}], ["smollm3", "smollm3", {}], ["phi3", "phi3", {}], ["qwen3-yarn", "qwen3", { ropeScaling: YARN }],
  ["phi3-longrope", "phi3", { partialRotaryFactor: 0.75, originalMaxPositionEmbeddings: 3, ropeScaling: LONGROPE }],
  ["qwen3_moe", "qwen3_moe", {}], ["qwen2_moe", "qwen2_moe", {}], ["mixtral", "mixtral", {}], ["gemma3", "gemma3", {}], ["gemma2", "gemma2", {}], ["granitemoe", "granitemoe", {}],
  ["glm", "glm", {}], ["glm4", "glm4", {}], ["olmo2", "olmo2", {}], ["olmo3", "olmo3", { numLayers: 4 }], ["exaone4", "exaone4", { numLayers: 4 }], ["glm4_moe", "glm4_moe", { numLayers: 3 }], ["ernie4_5", "ernie4_5", {}], ["seed_oss", "seed_oss", {}],
  ["gpt_oss", "gpt_oss", { numLayers: 4 }], ["deepseek_v3", "deepseek_v3", { numLayers: 3 }], ["deepseek_v2", "deepseek_v2", { numLayers: 3 }], ["deepseek_v2-grouped", "deepseek_v2", { numLayers: 3, groupLimited: { numGroups: 4, topKGroups: 1 } }], ["minimax_m2", "minimax_m2", {}], ["ernie4_5_moe", "ernie4_5_moe", {}],
  ["cohere", "cohere", {}], ["cohere2", "cohere2", { numLayers: 4 }], ["olmoe", "olmoe", {}], ["cohere-qknorm", "cohere", { qkNorm: true }]];

for (const [name, arch, extra] of HF_TINY) {
  const dir = join(import.meta.dir, "fixtures", `hf-tiny-${name}`);
  const present = existsSync(join(dir, "hf.json"));
  if (!present) console.log(`skipping HF fixture comparison for ${name}: ${dir}/hf.json not recorded yet (a device run of scripts/gpu-check writes it)`);
  describe.skipIf(!present)(`CPU backend vs Hugging Face float32 (${name})`, () => {
    test("last-position logits (rel. error ≤ 1e-4) and greedy tokens", () => {
      // The same options as `scripts/make-tiny-model DIR --arch ARCH --seed 3 --vocab 2048 --dtype F32` (+ the RoPE flags).
      const model = tinyModel({ arch, seed: 3, vocabSize: 2048, dtype: "F32", ...extra });
      expect(existsSync(model)).toBe(true);
      const hf = JSON.parse(readFileSync(join(dir, "hf.json"), "utf8")) as { results: { prompt: number[]; greedy: number[]; logits_file: string }[] };
      const cfg = loadModelConfig(model);
      const backend = new CpuBackend();
      const lm = new CausalLM(cfg, backend, 64);
      lm.load(new Checkpoint(model));
      lm.allocKvCache(8, 16);
      for (const r of hf.results) {
        const step = backend.uploadStep(prefillInputs(r.prompt, 4));
        const ours = backend.toHost(lm.forward(step));
        const ref = new Float32Array(readFileSync(join(dir, r.logits_file)).buffer.slice(0));
        let diff = 0, mag = 0;
        for (let i = 0; i < ref.length; i++) { diff = Math.max(diff, Math.abs(ours[i]! - ref[i]!)); mag = Math.max(mag, Math.abs(ref[i]!)); }
        expect(diff / mag).toBeLessThanOrEqual(1e-4);
      }
      const llm = new LLM({ model, maxModelLen: 64, log: () => {} });
      const outs = llm.generate(hf.results.map((r) => r.prompt), hf.results.map((r) => ({ temperature: 0, max_tokens: r.greedy.length, ignore_eos: true })), { useTqdm: false });
      outs.forEach((o, i) => expect(o.outputs[0]!.tokenIds).toEqual(hf.results[i]!.greedy));
    });
  });
}

// Hugging Face's libraries on the pooling and adapter paths (scripts/hf-pooling-reference.py, on a device run),
// for the checkpoints of src/model/reference-checkpoints.ts, rebuilt here byte for byte.
const refDir = join(tempDir("reference-checkpoints"), "ref");
writeReferenceCheckpoints(refDir);
const quiet = { log: () => {} };
const relErr = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0, mag = 0;
  for (let i = 0; i < b.length; i++) { diff = Math.max(diff, Math.abs(a[i]! - b[i]!)); mag = Math.max(mag, Math.abs(b[i]!)); }
  return diff / mag;
};

test("the reference checkpoints (scripts/make-reference-models) load and run: classifier, LoRA adapter, sentence-transformers embedding model", () => {
  // The device step's script writes the same files as writeReferenceCheckpoints, and the inputs.
  const scripted = join(tempDir("reference-script"), "ref");
  const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "..", "scripts", "make-reference-models"), scripted], { stderr: "pipe" });
  expect(p.exitCode).toBe(0);
  expect(JSON.parse(readFileSync(join(scripted, "inputs.json"), "utf8"))).toEqual({ prompts: REFERENCE_PROMPTS, texts: REFERENCE_TEXTS });
  for (const f of ["seqcls/model.safetensors", "lora-adapter/adapter_model.safetensors", "embed/1_Pooling/config.json"])
    expect(Bun.hash(readFileSync(join(scripted, f)))).toBe(Bun.hash(readFileSync(join(refDir, f))));
  const cls = new LLM({ model: join(refDir, "seqcls"), ...quiet });
  expect(cls.classify(REFERENCE_PROMPTS).every((o) => o.outputs.probs.length === 3 && o.outputs.probs.every(Number.isFinite))).toBe(true);
  cls.close();
  const lora = new LLM({ model: join(refDir, "lora-base"), loraModules: { ref: join(refDir, "lora-adapter") }, maxLoraRank: REFERENCE_ADAPTER.rank, ...quiet });
  const [a, b] = [lora.generate(REFERENCE_PROMPTS, { temperature: 0, max_tokens: 4 }, { lora: "ref" }), lora.generate(REFERENCE_PROMPTS, { temperature: 0, max_tokens: 4 })];
  expect(a.map((o) => o.outputs[0]!.tokenIds)).not.toEqual(b.map((o) => o.outputs[0]!.tokenIds)); // the adapter matters
  lora.close();
  const emb = new LLM({ model: join(refDir, "embed"), runner: "pooling", ...quiet });
  expect(emb.engine.info.pooler).toMatchObject({ task: "embed", normalize: true }); // read from its modules.json
  expect(emb.embed(REFERENCE_TEXTS).every((o) => o.outputs.embedding.length === 64)).toBe(true);
  emb.close();
}, 60_000);

const fixture = (name: string) => {
  const file = join(import.meta.dir, "fixtures", name, "hf.json");
  if (!existsSync(file)) console.log(`skipping the ${name} comparison: ${file} not recorded yet (a device run of scripts/gpu-check writes it)`);
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : null;
};
const seqcls = fixture("hf-tiny-seqcls"), loraRef = fixture("hf-tiny-lora"), embedRef = fixture("hf-tiny-embed");

describe.skipIf(!seqcls)("CPU backend vs transformers' AutoModelForSequenceClassification (float32)", () => {
  test("each prompt's logits (rel. error ≤ 1e-4)", () => {
    const llm = new LLM({ model: join(refDir, "seqcls"), ...quiet });
    const ours = llm.classify(seqcls.results.map((r: { prompt: number[] }) => r.prompt), { useActivation: false });
    seqcls.results.forEach((r: { logits: number[] }, i: number) => expect(relErr(ours[i]!.outputs.probs, r.logits)).toBeLessThanOrEqual(1e-4));
    llm.close();
  });
});

describe.skipIf(!loraRef)("CPU backend with a LoRA adapter vs PEFT's PeftModel (float32)", () => {
  test("last-position logits (rel. error ≤ 1e-4)", () => {
    const dir = join(refDir, "lora-base"), cfg = loadModelConfig(dir), backend = new CpuBackend();
    const lm = new CausalLM(cfg, backend, 64);
    lm.load(new Checkpoint(dir));
    lm.loadLora([loadLoraAdapter("ref", join(refDir, "lora-adapter"), cfg, REFERENCE_ADAPTER.rank)], REFERENCE_ADAPTER.rank);
    lm.allocKvCache(8, 16);
    for (const r of loraRef.results as { prompt: number[]; logits: number[] }[]) {
      // Every token with the adapter (slot 0).
      const step = backend.uploadStep({ ...prefillInputs(r.prompt, 4), loraSlots: new Int32Array(r.prompt.length) });
      expect(relErr(backend.toHost(lm.forward(step)), r.logits)).toBeLessThanOrEqual(1e-4);
    }
  });
});

describe.skipIf(!embedRef)("CPU backend vs sentence-transformers (float32; last-token pooling and Normalize from modules.json)", () => {
  test("the same token ids, and embeddings within 1e-4", () => {
    const llm = new LLM({ model: join(refDir, "embed"), runner: "pooling", ...quiet });
    for (const r of embedRef.results as { text: string; input_ids: number[]; embedding: number[] }[]) {
      expect(llm.tokenizer.encode(r.text)).toEqual(r.input_ids);
      const ours = llm.embed([r.text])[0]!.outputs.embedding;
      expect(Math.max(...ours.map((x, i) => Math.abs(x - r.embedding[i]!)))).toBeLessThanOrEqual(1e-4);
    }
    llm.close();
  });
});

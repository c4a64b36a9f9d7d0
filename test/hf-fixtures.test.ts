/**
 * The CPU backend against Hugging Face transformers' own float32 outputs for the tiny checkpoints,
 * recorded on a device run by scripts/gpu-check (step 4) into test/fixtures/hf-tiny-<arch>/.
 * Until a device run has produced them, this suite skips and says so.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { prefillInputs } from "../src/backend/backend.ts";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig } from "../src/model/config.ts";
import type { TinyArch } from "../src/model/tiny-model.ts";
import { tinyModel } from "./helpers.ts";

for (const arch of ["qwen3", "llama", "qwen2"] as TinyArch[]) {
  const dir = join(import.meta.dir, "fixtures", `hf-tiny-${arch}`);
  const present = existsSync(join(dir, "hf.json"));
  if (!present) console.log(`skipping HF fixture comparison for ${arch}: ${dir}/hf.json not recorded yet (a device run of scripts/gpu-check writes it)`);
  describe.skipIf(!present)(`CPU backend vs Hugging Face float32 (${arch})`, () => {
    test("last-position logits (rel. error ≤ 1e-4) and greedy tokens", () => {
      // The same options as `scripts/make-tiny-model DIR --arch ARCH --seed 3 --vocab 2048 --dtype F32`.
      const model = tinyModel({ arch, seed: 3, vocabSize: 2048, dtype: "F32" });
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

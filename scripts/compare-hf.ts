#!/usr/bin/env bun
// Runs vbun on the checkpoint and prompts that scripts/hf-reference.py saw, and compares:
// last-position logits (‖a − b‖ / ‖b‖ per prompt) and greedy continuations (token-identical count).
//   scripts/compare-hf.ts MODEL_DIR HF_OUT_DIR [--device cuda|cpu] [--max-rel 1e-2] [--min-identical 14] [--enforce-eager]
//                         [--f32-ref HF_F32_DIR]
// --f32-ref: HF's float32 logits for the same prompts (hf-reference.py --dtype float32 --max-new-tokens 0);
// the summary then also gives vbun's and HF-bf16's distances from them — how much of vbun's difference
// from HF is bfloat16 itself. The pass/fail bounds stay those against HF_OUT_DIR.
// Prints a JSON summary line; exits 1 when a bound is missed.
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import type { Device } from "../src/engine/engine-config.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { selectBackend } from "../src/backend/select-backend.ts";
import { prefillInputs, type Tensor } from "../src/backend/backend.ts";

const { values, positionals } = parseArgs({ args: process.argv.slice(2), allowPositionals: true, options: {
  device: { type: "string", default: "cuda" }, "max-rel": { type: "string", default: "1e-2" }, "min-identical": { type: "string" },
  "enforce-eager": { type: "boolean" }, "f32-ref": { type: "string" },
} });
const [modelDir, hfDir] = positionals as [string, string];
const hf = JSON.parse(readFileSync(join(hfDir, "hf.json"), "utf8")) as { results: { prompt: number[]; greedy: number[]; logits_file: string }[] };
const device = values.device as Device;
const log = (m: string) => process.stderr.write(`[compare-hf] ${m}\n`);

// Last-position logits through the model directly (one prompt per step, fresh KV).
const cfg = loadModelConfig(modelDir);
const { backend } = selectBackend(device, log);
const maxLen = Math.max(...hf.results.map((r) => r.prompt.length)) + 64;
const model = new CausalLM<Tensor>(cfg, backend, maxLen);
model.load(new Checkpoint(modelDir));
const bs = 16, blocks = Math.ceil(maxLen / bs);
model.allocKvCache(blocks, bs);
const relErr = (a: Float32Array, b: Float32Array) => {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
};
const readLogits = (dir: string, file: string) => new Float32Array(readFileSync(join(dir, file)).buffer.slice(0));
const f32 = values["f32-ref"] ? (JSON.parse(readFileSync(join(values["f32-ref"], "hf.json"), "utf8")) as typeof hf) : null;
if (f32 && f32.results.map((r) => r.prompt.join()).join("|") !== hf.results.map((r) => r.prompt.join()).join("|")) throw new Error("--f32-ref: not the same prompts as HF_OUT_DIR");
const rel: number[] = [], relF32: number[] = [], hfRelF32: number[] = [];
for (const [idx, r] of hf.results.entries()) {
  const step = backend.uploadStep(prefillInputs(r.prompt, blocks));
  const ours = backend.toHost(model.forward(step));
  const ref = readLogits(hfDir, r.logits_file);
  rel.push(relErr(ours, ref));
  if (f32) {
    const exact = readLogits(values["f32-ref"]!, f32.results[idx]!.logits_file);
    relF32.push(relErr(ours, exact));
    hfRelF32.push(relErr(ref, exact));
  }
}
const stats = (v: number[]) => (v.length ? { max: Math.max(...v), mean: v.reduce((a, b) => a + b, 0) / v.length } : null);

const llm = new LLM({ model: modelDir, device, maxModelLen: maxLen, enforceEager: values["enforce-eager"], log });
const outs = llm.generate(hf.results.map((r) => r.prompt), hf.results.map((r) => ({ temperature: 0, max_tokens: r.greedy.length, ignore_eos: true })), { useTqdm: false });
const identical = outs.filter((o, i) => o.outputs[0]!.tokenIds.join() === hf.results[i]!.greedy.join()).length;
const maxRel = Math.max(...rel);
const minIdentical = Number(values["min-identical"] ?? Math.ceil(hf.results.length * 14 / 16));
const ok = maxRel <= Number(values["max-rel"]) && identical >= minIdentical;
console.log(JSON.stringify({
  model: modelDir, device, prompts: hf.results.length, max_logits_rel_err: maxRel, mean_logits_rel_err: rel.reduce((a, b) => a + b, 0) / rel.length, greedy_identical: identical,
  ...(f32 ? { vbun_vs_f32_rel_err: stats(relF32), hf_bf16_vs_f32_rel_err: stats(hfRelF32) } : {}), ok,
}));
process.exit(ok ? 0 : 1);

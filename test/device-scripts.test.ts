/**
 * The device-only scripts of scripts/gpu-check, rehearsed on a machine without a GPU: each runs as its own
 * Bun process with the C-ABI shim preloaded (test/gpu-sim/shim-preload.ts), so its GPU path goes through
 * vbun's real library search and bindings to simulated GPUs. A script that crashes, or prints no result,
 * here would have wasted part of a device session. Tiny models and small sizes: the simulator interprets
 * every kernel thread. Not a GPU run; the numbers mean nothing.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { prefillInputs } from "../src/backend/backend.ts";
import { tinyModel } from "./helpers.ts";
import { buildShimLibraries } from "./gpu-sim/c-shim.ts";

const root = join(import.meta.dir, "..");
const built = buildShimLibraries();
const why = "why" in built ? built.why : "";
if (why) console.log(`skipping the device-script rehearsals: ${why}`);
// Prompt ids up to 10,000 (scripts/bench's decode workload): the vocabulary must hold them.
const MODEL = { arch: "qwen3" as const, seed: 11, vocabSize: 10240, hiddenSize: 64, intermediateSize: 128, numHeads: 4, numKvHeads: 2, headDim: 16, numLayers: 2 };

/** Runs a script through the shim; returns its stdout's last line (parsed as JSON unless `raw`). */
function runScript(args: string[], timeoutMs: number): Record<string, unknown>;
function runScript(args: string[], timeoutMs: number, raw: true): string;
function runScript(args: string[], timeoutMs: number, raw = false): Record<string, unknown> | string {
  const p = Bun.spawnSync([process.execPath, ...args], {
    cwd: root, stdout: "pipe", stderr: "pipe", timeout: timeoutMs,
    env: { ...process.env, BUN_OPTIONS: `--preload ${join(import.meta.dir, "gpu-sim", "shim-preload.ts")}` },
  });
  const out = p.stdout.toString().trim(), err = p.stderr.toString();
  if (p.exitCode !== 0) throw new Error(`${args.join(" ")} exited with ${p.exitCode}:\n${err.slice(-3000)}`);
  expect(err).not.toMatch(/shim-preload: \d+ calls failed/);
  const last = out.split("\n").pop()!;
  return raw ? last : (JSON.parse(last) as Record<string, unknown>);
}

describe.skipIf(!!why)("device-only scripts, through vbun's FFI layer on a simulated GPU", () => {
  test("scripts/nccl-check.ts: NCCL initialised, an all-reduce checked, destroyed, and aborted", () => {
    const r = runScript(["scripts/nccl-check.ts"], 60_000);
    expect(r).toMatchObject({ ranks: 1, ok: true, abort: "ok", version: 22203 });
  }, 70_000);

  test("scripts/bench-gemm: every weight shape at each batch, each cuBLASLt candidate checked against cublasGemmEx", () => {
    const r = runScript(["scripts/bench-gemm", "--model", tinyModel(MODEL), "--batches", "1,8", "--reps", "2"], 60_000) as { rows: { maxRelDiff: number; candidates: number }[] };
    expect(r.rows.length).toBe(10);
    for (const row of r.rows) {
      expect(row.candidates).toBe(3);
      expect(row.maxRelDiff).toBe(0);
    }
  }, 70_000);

  test("scripts/compare-hf.ts: last-position logits and greedy continuations against a reference in hf-reference.py's format", () => {
    // The reference here is vbun's own CPU backend (float32 activations), written as hf-reference.py
    // writes Hugging Face's: hf.json + raw little-endian float32 logits per prompt.
    const model = tinyModel(MODEL), ref = mkdtempSync(join(tmpdir(), "vbun-hfref-"));
    const prompts = [[1, 2, 3, 4, 5], [100, 200, 300], [7, 8, 9, 10, 11, 12, 13], [5000, 17, 2]];
    const greedy = new LLM({ model, device: "cpu", maxModelLen: 128, log: () => {} }).generate(prompts, { temperature: 0, max_tokens: 6, ignore_eos: true }, { useTqdm: false });
    const cpu = new CpuBackend(), cfg = loadModelConfig(model), m = new CausalLM(cfg, cpu, 128);
    m.load(new Checkpoint(model));
    m.allocKvCache(8, 16);
    const results = prompts.map((p, i) => {
      const logits = cpu.toHost(m.forward(cpu.uploadStep(prefillInputs(p, 8))));
      writeFileSync(join(ref, `logits-${i}.f32`), new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength));
      return { prompt: p, greedy: greedy[i]!.outputs[0]!.tokenIds, logits_file: `logits-${i}.f32` };
    });
    writeFileSync(join(ref, "hf.json"), JSON.stringify({ model, dtype: "float32 (vbun CPU)", results }));
    // bf16 on the GPU against float32 activations: a few per cent on this tiny model, hence --max-rel.
    const r = runScript(["scripts/compare-hf.ts", model, ref, "--device", "cuda", "--enforce-eager", "--max-rel", "0.05", "--min-identical", "3", "--f32-ref", ref], 120_000) as {
      prompts: number; max_logits_rel_err: number; greedy_identical: number; vbun_vs_f32_rel_err: { max: number }; hf_bf16_vs_f32_rel_err: { max: number }; ok: boolean;
    };
    expect(r.prompts).toBe(4);
    expect(r.ok).toBe(true);
    expect(r.max_logits_rel_err).toBeGreaterThan(0); // bf16 is not float32: a zero would mean the GPU path was not compared
    expect(r.vbun_vs_f32_rel_err.max).toBe(r.max_logits_rel_err);
    expect(r.hf_bf16_vs_f32_rel_err.max).toBe(0);
  }, 130_000);

  test("scripts/bench --only decode,profile: decode graphs timed per batch; a per-kernel breakdown of eager steps", () => {
    const r = runScript(["scripts/bench", "--model", tinyModel(MODEL), "--device", "cuda", "--only", "decode,profile", "--batches", "1,2", "--decode-steps", "2", "--profile-batch", "2"], 120_000) as {
      decode: Record<string, number>; profile: { decode: { kernels: { name: string }[] } };
    };
    expect(Object.keys(r.decode)).toEqual(["batch_1_ms_per_step", "batch_2_ms_per_step"]);
    const kernels = r.profile.decode.kernels.map((k) => k.name);
    for (const k of ["paged_attention_split_bf16", "sample_f32", "add_rmsnorm_bf16"]) expect(kernels).toContain(k);
    expect(kernels.filter((k) => k.startsWith("gemm ")).length).toBe(5);
  }, 130_000);

  // GPTQ and FP8 copies (scripts/make-quantized-model), and the bf16 model with --quantization fp8 (online).
  for (const [method, kernel] of [["gptq", "gemv_int4_bf16"], ["fp8", "gemv_fp8_bf16"], ["online-fp8", "gemv_fp8_bf16"]] as const) {
    test(`${method === "online-fp8" ? "scripts/bench --quantization fp8" : `scripts/make-quantized-model --method ${method}, then scripts/bench on it`}: the projections run packed (${kernel} at batch 2; only the LM head on cuBLAS)`, () => {
      const dir = method === "online-fp8" ? tinyModel(MODEL) : join(mkdtempSync(join(tmpdir(), "vbun-quantized-")), method);
      if (method !== "online-fp8") runScript(["scripts/make-quantized-model", tinyModel(MODEL), dir, "--method", method, "--group-size", "32"], 60_000, true);
      const online = method === "online-fp8" ? ["--quantization", "fp8"] : [];
      const r = runScript(["scripts/bench", "--model", dir, "--device", "cuda", ...online, "--only", "decode,profile", "--batches", "1", "--decode-steps", "2", "--profile-batch", "2"], 120_000) as {
        decode: Record<string, number>; profile: { decode: { kernels: { name: string }[] } };
      };
      expect(Object.keys(r.decode)).toEqual(["batch_1_ms_per_step"]);
      const kernels = r.profile.decode.kernels.map((k) => k.name);
      expect(kernels).toContain(kernel);
      expect(kernels.filter((k) => k.startsWith("gemm "))).toEqual([`gemm ${MODEL.vocabSize}x${MODEL.hiddenSize}`]);
    }, 190_000);
  }

  test("vbun generate and scripts/bench-serve on the GPU: their engines run in the engine worker thread", () => {
    const small = ["--device", "cuda", "--max-model-len", "64", "--max-num-seqs", "4", "--async-scheduling"];
    const text = runScript(["src/cli.ts", "generate", tinyModel(MODEL), "--prompt", "Hello", "--max-tokens", "4", ...small], 120_000, true);
    expect(text.length).toBeGreaterThan(0);
    const r = runScript(["scripts/bench-serve", "--model", tinyModel(MODEL), "--requests", "4", "--rate", "64", "--input-len", "16", "--output-len", "3", "--", ...small], 120_000) as { output_tok_s: number; ttft_ms_mean: number };
    expect(r.output_tok_s).toBeGreaterThan(0);
    expect(r.ttft_ms_mean).toBeGreaterThan(0);
  }, 250_000);

  test("scripts/bench --only decode --async-scheduling: decode steps launched before the previous step's tokens are read", () => {
    const r = runScript(["scripts/bench", "--model", tinyModel(MODEL), "--device", "cuda", "--only", "decode", "--batches", "1", "--decode-steps", "4", "--async-scheduling"], 120_000) as {
      async_scheduling: boolean; decode: Record<string, number>; decode_overlapped_steps: number;
    };
    expect(r.async_scheduling).toBe(true);
    expect(Object.keys(r.decode)).toEqual(["batch_1_ms_per_step"]);
    expect(r.decode_overlapped_steps).toBeGreaterThanOrEqual(4);
  }, 130_000);

  test("scripts/bench-spec: plain and speculative decoding on the same greedy prompts, with identical outputs", () => {
    // (Whether this random model repeats itself enough for drafts is luck: the engine tests show they work.)
    const r = runScript(["scripts/bench-spec", "--model", tinyModel(MODEL), "--device", "cuda", "--batches", "2", "--max-tokens", "8", "--lookup-min", "1"], 120_000) as {
      batch_2: { plain: { steps: number }; speculative: { steps: number; acceptance: number }; identical_outputs: boolean };
    };
    expect(r.batch_2.plain.steps).toBe(8);
    expect(r.batch_2.speculative.acceptance).toBeGreaterThanOrEqual(0);
    expect(r.batch_2.identical_outputs).toBe(true);
  }, 130_000);
});

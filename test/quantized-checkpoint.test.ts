/**
 * 8-bit quantized checkpoints (config.json quantization_config: fp8, compressed-tensors): each quantized weight
 * is read as W · S, so a quantized tiny model gives exactly what the same model with those products as its
 * float32 weights gives — per-tensor, per-row and per-block scales, FP8 (E4M3) and INT8 — and unknown schemes or
 * weights without scales are refused, naming the file. (Packed 4-bit integers: test/packed-checkpoint.test.ts.)
 */
import { describe, expect, test } from "bun:test";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { fromFloat32, toFloat32, type QuantizedDType } from "../src/loader/dtype.ts";
import { FAST_MODEL, tempDir, tinyModel, withoutTensors, withQuantizationConfig } from "./helpers.ts";
import { SafetensorsFile } from "../src/loader/safetensors.ts";
import { onlineFp8Reference, scaledPair, type ScaledScheme } from "./packed-models.ts";
import { dequantizeMxfp4, FP4_VALUES, quantizeFp8Rows } from "../src/loader/quantization.ts";
import { snapToMxfp4 } from "../src/model/tiny-model.ts";

const ENGINE_MS = 60_000;
const quiet = { log: () => {} };
const base = tinyModel(FAST_MODEL);

const ct = (type: "float" | "int", strategy: string, extra: Record<string, unknown> = {}) => ({
  quant_method: "compressed-tensors", format: type === "float" ? "float-quantized" : "int-quantized",
  config_groups: { group_0: { targets: ["Linear"], weights: { num_bits: 8, type, strategy, symmetric: true, ...extra }, input_activations: { num_bits: 8, type, dynamic: true } } },
});
const SCHEMES: ScaledScheme[] = [
  { name: "fp8 blocks (weight_block_size, 128×128 in Qwen3-FP8), partial edge blocks", dtype: "F8_E4M3", layout: { kind: "block", rows: 12, cols: 24 }, scaleSuffix: "_scale_inv", config: { quant_method: "fp8", fmt: "e4m3", activation_scheme: "dynamic", weight_block_size: [12, 24] } },
  { name: "fp8, one scale per tensor", dtype: "F8_E4M3", layout: { kind: "tensor" }, scaleSuffix: "_scale_inv", config: { quant_method: "fp8", activation_scheme: "dynamic" } },
  { name: "compressed-tensors FP8, per channel", dtype: "F8_E4M3", layout: { kind: "row" }, scaleSuffix: "_scale", config: ct("float", "channel") },
  { name: "compressed-tensors INT8 (W8A8), per channel", dtype: "I8", layout: { kind: "row" }, scaleSuffix: "_scale", config: ct("int", "channel") },
];
const PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7], [40, 41, 42, 43, 44]];
const PARAMS = { max_tokens: 10, temperature: 0, logprobs: 0, ignore_eos: true };

function run(model: string, opts: Record<string, unknown> = {}) {
  const llm = new LLM({ model, maxModelLen: 64, ...quiet, ...opts });
  try { return llm.generate(PROMPTS, PARAMS).map((r) => ({ tokens: [...r.outputs[0]!.tokenIds], logprobs: r.outputs[0]!.logprobs!.map((l) => l.logprob) })); } finally { llm.close(); }
}

describe("8-bit quantized checkpoints are dequantized as they load", () => {
  test("the 8-bit formats' values: E4M3 (max 448, subnormals), E5M2, INT8", () => {
    const bytes = (dtype: QuantizedDType, list: number[]) => Array.from(toFloat32(Uint8Array.from(list), dtype));
    expect(bytes("F8_E4M3", [0x38, 0x7e, 0xfe, 0x08, 0x01, 0x00, 0x44])).toEqual([1, 448, -448, 2 ** -6, 2 ** -9, 0, 3]);
    expect(bytes("F8_E4M3", [0x7f])[0]).toBeNaN();
    expect(bytes("F8_E5M2", [0x3c, 0x7b, 0x7c, 0x01])).toEqual([1, 57344, Infinity, 2 ** -16]);
    expect(bytes("I8", [0x00, 0x7f, 0x80, 0xff])).toEqual([0, 127, -128, -1]);
    // Encoding rounds to the nearest value (ties to even) and saturates.
    expect(Array.from(fromFloat32(Float32Array.of(1.0625, 1.1875, 1000, -0.3), "F8_E4M3"), (b) => toFloat32(Uint8Array.of(b), "F8_E4M3")[0])).toEqual([1, 1.25, 448, -0.3125]);
  });

  for (const scheme of SCHEMES) {
    test(`${scheme.name}: the same outputs as the model with W · S as its weights`, () => {
      const { quantized, reference } = scaledPair(base, scheme);
      const want = run(reference), got = run(quantized);
      expect(got).toEqual(want);
      // Quantization changed the model a little (else this would prove little): the float weights' outputs differ in logprobs.
      const original = run(base);
      expect(original.flatMap((o) => o.logprobs)).not.toEqual(want.flatMap((o) => o.logprobs));
    }, ENGINE_MS);
  }

  test("--quantization fp8 on an unquantized checkpoint: E4M3 per row as the weights load — the outputs of the FP8-rounded model, also under tensor parallelism", () => {
    // The fast encoder (quantizeFp8Rows) against dtype.ts's search over all 256 patterns: every magnitude, ties, subnormals, saturation.
    // amax 448: scale 1, so that the ties below stay ties (1.0625 → 1, 1.1875 → 1.25, 2^-9 · 2.5 → 2^-9 · 2).
    const x = Float32Array.from({ length: 4096 }, (_, i) => (i % 2 ? -1 : 1) * (i < 64 ? i * 2 ** -10 : i < 128 ? (i - 64) * 2 ** -4 + 2 ** -7 : Math.min(440, Math.exp((i - 3000) / 170))));
    x[0] = 448; x[1] = -447.5; x[2] = 1.0625; x[3] = 1.1875; x[4] = 5 * 2 ** -10; x[5] = -447.75;
    const m = quantizeFp8Rows({ name: "w", file: "test", dtype: "F32", shape: [1, 4096], bytes: new Uint8Array(x.buffer) });
    expect(m.scales[0]).toBe(Math.fround(Math.max(...x.map(Math.abs)) / 448));
    // (The same values; a negative one that rounds to zero keeps its sign here, as the hardware's conversion does: −0 == 0.)
    const values = (b: Uint8Array) => Array.from(toFloat32(b, "F8_E4M3"), (v) => v + 0);
    expect(values(new Uint8Array(m.words.buffer))).toEqual(values(fromFloat32(x.map((v) => Math.fround(v / m.scales[0]!)), "F8_E4M3")));
    const want = run(onlineFp8Reference(base));
    expect(run(base, { quantization: "fp8" })).toEqual(want);
    // Each rank quantizes its shard: o_proj's and down_proj's rows in halves of their inputs, a scale each.
    const halves = run(onlineFp8Reference(base, 2));
    expect(run(base, { quantization: "fp8", tensorParallelSize: 2 }).map((o) => o.tokens)).toEqual(halves.map((o) => o.tokens));
    expect(halves.flatMap((o) => o.logprobs)).not.toEqual(want.flatMap((o) => o.logprobs));
    expect(run(base).flatMap((o) => o.logprobs)).not.toEqual(want.flatMap((o) => o.logprobs)); // FP8 changed the model
  }, ENGINE_MS);

  test("DeepSeek-V3 in FP8 blocks (MLA's projections reordered and sliced packed, the experts packed): the outputs of W · S, also under tensor parallelism", () => {
    const ds = tinyModel({ arch: "deepseek_v3", seed: 18, vocabSize: 512, numLayers: 3 });
    const { quantized, reference } = scaledPair(ds, { name: "deepseek-fp8", dtype: "F8_E4M3", layout: { kind: "block", rows: 16, cols: 16 }, scaleSuffix: "_scale_inv", experts: true, config: { quant_method: "fp8", fmt: "e4m3", weight_block_size: [16, 16] } });
    const ck = new Checkpoint(quantized);
    for (const n of ["model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "model.layers.1.mlp.experts.2.up_proj.weight"]) expect(SafetensorsFile.open(join(quantized, "model.safetensors")).tensor(n).dtype).toBe("F8_E4M3");
    expect(ck.linearWeight("model.layers.1.mlp.experts.2.up_proj.weight", ck.tensor("model.layers.1.mlp.experts.2.up_proj.weight").shape as number[])).toHaveProperty("packed", true);
    const want = run(reference);
    expect(run(quantized)).toEqual(want);
    expect(run(quantized, { tensorParallelSize: 2 }).map((o) => o.tokens)).toEqual(want.map((o) => o.tokens));
  }, ENGINE_MS);

  test("vLLM's --quantization names the checkpoint's own method (checked), --kv-cache-dtype auto only", () => {
    const { quantized } = scaledPair(base, SCHEMES[0]!);
    new LLM({ model: quantized, maxModelLen: 32, quantization: "fp8", kvCacheDtype: "auto", ...quiet }).close();
    expect(() => new LLM({ model: quantized, quantization: "awq", ...quiet })).toThrow("--quantization: 'awq', but the checkpoint is quantized with fp8");
    expect(() => new LLM({ model: base, quantization: "awq", ...quiet })).toThrow("--quantization: 'awq', but the checkpoint is not quantized: vbun reads");
    expect(() => new LLM({ model: base, kvCacheDtype: "fp8", ...quiet })).toThrow("--kv-cache-dtype: 'fp8' is not supported");
  }, ENGINE_MS);

  test("under tensor parallelism each rank dequantizes, then takes its shard", () => {
    const { quantized, reference } = scaledPair(base, SCHEMES[0]!);
    expect(run(quantized, { tensorParallelSize: 2 }).map((o) => o.tokens)).toEqual(run(reference).map((o) => o.tokens));
  }, ENGINE_MS);

  test("unknown methods, 4-bit compressed-tensors bytes, weights without a scale or with a scale of the wrong shape are refused, naming the file", () => {
    const { quantized } = scaledPair(base, SCHEMES[0]!);
    const withConfig = (qc: unknown) => withQuantizationConfig(quantized, qc, "quantized-bad");
    const load = (d: string) => () => new Checkpoint(d);
    const gguf = withConfig({ quant_method: "gguf" });
    expect(load(gguf)).toThrow(`${gguf}/config.json: quantization_config: quant_method "gguf" is not supported`);
    // 4-bit compressed-tensors only packed into words (test/packed-checkpoint.test.ts), not as int-quantized bytes.
    expect(load(withConfig(ct("int", "group", { num_bits: 4 })))).toThrow('config_groups.group_0: 4-bit weights are supported in format pack-quantized only, not "int-quantized"');
    expect(load(withConfig({ quant_method: "fp8", fmt: "e5m2" }))).toThrow('fmt "e5m2" is not supported');
    expect(load(withConfig({ quant_method: "fp8", weight_block_size: [0, 128] }))).toThrow("weight_block_size must be [rows, columns]");
    // No quantization_config: an 8-bit tensor cannot be read.
    const bare = withConfig(undefined);
    expect(() => new Checkpoint(bare).tensor("model.layers.0.self_attn.q_proj.weight")).toThrow("tensor 'model.layers.0.self_attn.q_proj.weight' is F8_E4M3, a quantized weight, but");
    // Blocks of another size than the scales were made for.
    expect(() => new Checkpoint(withConfig({ quant_method: "fp8", weight_block_size: [128, 128] })).tensor("model.layers.0.self_attn.q_proj.weight"))
      .toThrow("has a scale 'model.layers.0.self_attn.q_proj.weight_scale_inv' of shape [3,2], which is neither one value, one per row, nor one per 128×128 block");
    // The scale missing.
    const noScale = withoutTensors(withConfig(SCHEMES[0]!.config), /^model\.layers\.0\.mlp\.down_proj\.weight_scale_inv$/);
    expect(() => new LLM({ model: noScale, maxModelLen: 64, ...quiet })).toThrow("tensor 'model.layers.0.mlp.down_proj.weight' is F8_E4M3, a quantized weight, but no scale for it (model.layers.0.mlp.down_proj.weight_scale_inv or model.layers.0.mlp.down_proj.weight_scale) is in the checkpoint");
  }, ENGINE_MS);
});

describe("MXFP4 (GPT-OSS's experts): packed FP4 pairs with a power-of-two scale per 32 values", () => {
  const view = (name: string, dtype: "U8", shape: number[], bytes: Uint8Array) => ({ name, file: "x.safetensors", dtype, shape, bytes });
  test("dequantized exactly to bf16: the low nibble first, sign in bit 3, scale 2^(s − 127)", () => {
    expect(Array.from(FP4_VALUES)).toEqual([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6]);
    // Two groups of one row: bytes 0x21 (0.5, then 1) and 0xF7 (6, then −6); scales 2¹ and 2⁻¹²⁷ (a bf16 subnormal).
    const blocks = new Uint8Array(32), scales = Uint8Array.of(128, 0);
    blocks[0] = 0x21; blocks[1] = 0xf7; blocks[16] = 0x07;
    const t = dequantizeMxfp4(view("w_blocks", "U8", [1, 2, 16], blocks), view("w_scales", "U8", [1, 2], scales), "w");
    expect([t.dtype, t.shape]).toEqual(["BF16", [1, 64]]);
    const v = toFloat32(t.bytes, "BF16");
    expect(Array.from(v.subarray(0, 5))).toEqual([1, 2, 12, -12, 0]);
    expect(v[32]).toBe(6 * 2 ** -127);
    expect(v.subarray(34).every((x) => x === 0)).toBe(true);
    expect(() => dequantizeMxfp4(view("w_blocks", "U8", [1, 2, 16], blocks), view("w_scales", "U8", [2], scales), "w")).toThrow("MXFP4 weight 'w' needs U8 blocks [..., G, 16] and U8 scales [..., G], got U8 [1,2,16] and U8 [2]");
  });

  test("the tiny model's values snap onto the grid: quantizing them again changes nothing, and their blocks decode to them", () => {
    const v = new Float32Array(128).map((_, i) => Math.sin(i * 1.7) * (i % 32 === 5 ? 40 : 3));
    const q = snapToMxfp4(v);
    const back = toFloat32(dequantizeMxfp4(view("b", "U8", [4, 16], q.blocks), view("s", "U8", [4], q.scales), "w").bytes, "BF16");
    expect(Array.from(back)).toEqual(Array.from(q.values));
    expect(Array.from(snapToMxfp4(q.values).values)).toEqual(Array.from(q.values));
    // Each value moved by at most half the grid's widest step (4 → 6) times its group's scale, which keeps the group within ±6 of it.
    for (let i = 0; i < v.length; i++) {
      const k = 2 ** (q.scales[i >> 5]! - 127);
      expect(Math.abs(q.values[i]! - v[i]!)).toBeLessThanOrEqual(k);
      expect(Math.abs(v[i]!)).toBeLessThanOrEqual(6 * k);
    }
  });

  test("a checkpoint's MXFP4 experts need quant_method mxfp4; its packed bytes are never read as a plain weight", () => {
    const oss = tinyModel({ arch: "gpt_oss", seed: 26, vocabSize: 2048, numLayers: 4, slidingWindow: 5, mxfp4: true });
    const name = "model.layers.0.mlp.experts.gate_up_proj";
    const ck = new Checkpoint(oss);
    expect(ck.quantization?.method).toBe("mxfp4");
    expect(ck.hasMxfp4(name)).toBe(true);
    expect(ck.mxfp4(name, [8, 64, 64]).shape).toEqual([8, 64, 64]);
    expect(() => ck.mxfp4(name, [8, 64, 32])).toThrow(`MXFP4 weight '${name}' has shape [8,64,64] but the config implies [8,64,32]`);
    expect(() => ck.tensor(`${name}_blocks`)).toThrow(`tensor '${name}_blocks' is U8 (packed bytes, such as MXFP4 blocks): it is read only as part of its quantized weight`);
    const d = join(tempDir("mxfp4-noconfig"), "m");
    cpSync(oss, d, { recursive: true });
    const { quantization_config: _, ...cfg } = JSON.parse(readFileSync(join(d, "config.json"), "utf8"));
    writeFileSync(join(d, "config.json"), JSON.stringify(cfg));
    expect(() => new LLM({ model: d, maxModelLen: 32, ...quiet })).toThrow(`'${name}' is stored as MXFP4 (${name}_blocks, ${name}_scales), but config.json's quantization_config does not say quant_method "mxfp4"`);
    // vLLM's --quantization names the method (checked), and the engine generates.
    const llm = new LLM({ model: oss, maxModelLen: 32, quantization: "mxfp4", ...quiet });
    expect(llm.generate([[1, 2, 3]], { temperature: 0, max_tokens: 4, ignore_eos: true }, { useTqdm: false })[0]!.outputs[0]!.tokenIds.length).toBe(4);
    llm.close();
  }, ENGINE_MS);
});


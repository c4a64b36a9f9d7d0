/**
 * Integer weights packed into I32 words — GPTQ (desc_act's group order, both zero-point formats), AWQ (its
 * interleaved columns) and compressed-tensors' pack-quantized — load into one packed layout, which the CPU backend
 * dequantizes: a tiny model quantized each way (test/packed-models.ts) gives exactly what the same model with
 * scale · (q − zero) as its float32 weights gives.
 */
import { describe, expect, test } from "bun:test";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { dequantizePacked, type PackedIntegers } from "../src/loader/packed-weights.ts";
import { FAST_MODEL, tinyModel, withoutTensors, withQuantizationConfig } from "./helpers.ts";
import { ct, quantizedPair, randomPacked, type Scheme } from "./packed-models.ts";
import { concatPacked, dequantizeMatrix, isPacked, packedCols, packedPermuteRows, packedRows, packedScaled, type PackedMatrix } from "../src/loader/packed-matrix.ts";
import { sliceCols } from "../src/parallel/shard.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";

const ENGINE_MS = 60_000;
const quiet = { log: () => {} };
const base = tinyModel(FAST_MODEL);

const SCHEMES: Scheme[] = [
  { name: "GPTQ 4-bit, groups of 16, desc_act (g_idx), checkpoint_format gptq (zeros − 1)", format: "gptq", bits: 4, group: 16, actOrder: true, zerosMinusOne: true, config: { quant_method: "gptq", bits: 4, group_size: 16, desc_act: true, sym: false, checkpoint_format: "gptq" } },
  { name: "GPTQ 8-bit per channel (group_size −1), gptq_v2 zeros, from quantize_config.json", format: "gptq", bits: 8, group: null, zerosMinusOne: false, config: { bits: 8, group_size: -1, desc_act: false, sym: true, checkpoint_format: "gptq_v2" }, configFile: "quantize_config.json" },
  { name: "AWQ 4-bit gemm, groups of 16", format: "awq", bits: 4, group: 16, config: { quant_method: "awq", bits: 4, group_size: 16, zero_point: true, version: "gemm" } },
  { name: "compressed-tensors pack-quantized W4A16, groups of 16, actorder (weight_g_idx)", format: "compressed-tensors", bits: 4, group: 16, actOrder: true, config: ct(4, "group", 16) },
  { name: "compressed-tensors pack-quantized W8A16, per channel", format: "compressed-tensors", bits: 8, group: null, config: ct(8, "channel", null) },
];

const PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7], [40, 41, 42, 43, 44]];
const PARAMS = { max_tokens: 10, temperature: 0, logprobs: 0, ignore_eos: true };

function run(model: string, opts: Record<string, unknown> = {}) {
  const llm = new LLM({ model, maxModelLen: 64, ...quiet, ...opts });
  try { return llm.generate(PROMPTS, PARAMS, { useTqdm: false }).map((r) => ({ tokens: [...r.outputs[0]!.tokenIds], logprobs: r.outputs[0]!.logprobs!.map((l) => l.logprob) })); } finally { llm.close(); }
}

describe("packed integer checkpoints (GPTQ, AWQ, pack-quantized) load into one packed layout", () => {
  test("the layouts on hand-made words: GPTQ along the input, AWQ's interleaved columns, pack-quantized's offset", () => {
    // (I32 words written as they are: float32 would round them.)
    const view = (name: string, dtype: "I32" | "F16", shape: number[], values: number[]) => ({ name, file: "m.safetensors", dtype, shape, bytes: dtype === "I32" ? new Uint8Array(Int32Array.from(values).buffer) : fromFloat32(Float32Array.from(values), dtype) });
    const word = 0x76543210; // nibble k holds k
    // GPTQ: one word is inputs 0..7 of output 0; zero stored 2 (+1 in the first format), scale 0.5.
    const gptq: PackedIntegers = { format: "gptq", bits: 4, groupSize: null, zeroOffset: 1 };
    const g = dequantizePacked(gptq, "x.weight", { values: view("x.qweight", "I32", [1, 1], [word]), scales: view("x.scales", "F16", [1, 1], [0.5]), zeros: view("x.qzeros", "I32", [1, 1], [2]), groups: null, shape: null });
    expect([g.shape, Array.from(toFloat32(g.bytes, "F32"))]).toEqual([[1, 8], [0, 1, 2, 3, 4, 5, 6, 7].map((k) => 0.5 * (k - 3))]);
    // AWQ: one word is outputs 0..7 of input 0, nibble k is output [0, 2, 4, 6, 1, 3, 5, 7][k]; zeros interleaved alike.
    const awq: PackedIntegers = { format: "awq", bits: 4, groupSize: null, zeroOffset: 0 };
    const a = dequantizePacked(awq, "x.weight", { values: view("x.qweight", "I32", [1, 1], [word]), scales: view("x.scales", "F16", [1, 8], [1, 1, 1, 1, 1, 1, 1, 1]), zeros: view("x.qzeros", "I32", [1, 1], [0x00000010]), groups: null, shape: null });
    expect([a.shape, Array.from(toFloat32(a.bytes, "F32"))]).toEqual([[8, 1], [0, 4, 1 - 1, 5, 2, 6, 3, 7]]);
    // pack-quantized: along the input, value − 8, 12 inputs in two words (weight_shape says 12).
    const ct: PackedIntegers = { format: "compressed-tensors", bits: 4, groupSize: null, zeroOffset: 0 };
    const shape = { name: "x.weight_shape", file: "m.safetensors", dtype: "I64" as const, shape: [2], bytes: fromFloat32(Float32Array.of(1, 12), "I64") };
    const c = dequantizePacked(ct, "x.weight", { values: view("x.weight_packed", "I32", [1, 2], [word, 0xfedcba98 | 0]), scales: view("x.weight_scale", "F16", [1, 1], [2]), zeros: null, groups: null, shape });
    expect([c.shape, Array.from(toFloat32(c.bytes, "F32"))]).toEqual([[1, 12], [-16, -14, -12, -10, -8, -6, -4, -2, 0, 2, 4, 6]]);
  });

  test("the packed layout's operations (rows, columns, reordered rows, a multiplier, stacking) are those of the dequantized weight", () => {
    const rng = new SeededRandom(3);
    const dense = (m: PackedMatrix) => Array.from(toFloat32(dequantizeMatrix(m).bytes, "F32"));
    const cols = (v: number[], width: number, a: number, b: number) => v.filter((_, i) => i % width >= a && i % width < b);
    // [bits, group size, desc_act order, whether columns 8…40 stay packed (they start on a word, and on a group or in the only one)]
    for (const [bits, group, actOrder, midPacked] of [[4, 16, false, false], [8, 8, true, true], [2, 64, false, false], [4, 64, false, true]] as const) {
      const m = randomPacked(rng, bits, 12, 64, group, actOrder), all = dense(m);
      expect(dense(packedRows(m, 3, 7))).toEqual(all.slice(3 * 64, 7 * 64));
      expect(dense(packedPermuteRows(m, 4, (j) => 11 - 2 * j, "x"))).toEqual([11, 9, 7, 5].flatMap((r) => all.slice(r * 64, (r + 1) * 64)));
      expect(dense(packedScaled(m, 0.5))).toEqual(all.map((v) => Math.fround(v * 0.5)));
      // Columns on word and group boundaries stay packed (by position: only the groups they touch); others dequantize.
      const half = packedCols(m, 32, 64)!;
      expect(dense(half)).toEqual(cols(all, 64, 32, 64));
      expect(half.numGroups).toBe(actOrder || group >= 64 ? m.numGroups : 32 / group);
      const mid = sliceCols(m, 8, 40);
      expect(isPacked(mid)).toBe(midPacked);
      expect(isPacked(mid) ? dense(mid) : Array.from(toFloat32(mid.bytes, mid.dtype))).toEqual(cols(all, 64, 8, 40));
      // Stacked with another of the same groups: rows of both.
      const other = { ...randomPacked(rng, bits, 5, 64, group, false), groupOf: m.groupOf };
      expect(dense(concatPacked([m, other])!)).toEqual([...all, ...dense(other)]);
    }
    // One group per row (per channel) keeps one group whatever the columns.
    const channel = randomPacked(rng, 4, 3, 64, 64, false);
    expect(packedCols(channel, 8, 24)?.groupSize).toBe(16);
    expect(dense(packedCols(channel, 8, 24)!)).toEqual(cols(dense(channel), 64, 8, 24));
  });

  for (const s of SCHEMES) {
    test(`${s.name}: the same outputs as the model with scale · (q − zero) as its weights`, () => {
      const { quantized, reference } = quantizedPair(base, s);
      expect(new Checkpoint(quantized).quantization?.packed?.bits).toBe(s.bits);
      const want = run(reference), got = run(quantized);
      expect(got).toEqual(want);
      // Quantization changed the model (else this would prove little): the float weights' logprobs differ.
      expect(run(base).flatMap((o) => o.logprobs)).not.toEqual(want.flatMap((o) => o.logprobs));
    }, ENGINE_MS);
  }

  test("a mixture of experts' experts (one tensor each) load packed too: the outputs of the dequantized model, also under tensor parallelism", () => {
    const moe = tinyModel({ arch: "qwen3_moe", seed: 7, vocabSize: 512, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1] });
    const { quantized, reference } = quantizedPair(moe, { name: "gptq-moe", format: "gptq", bits: 4, group: 16, experts: true, config: { quant_method: "gptq", bits: 4, group_size: 16, desc_act: false, checkpoint_format: "gptq_v2" } });
    expect(new Checkpoint(quantized).has("model.layers.0.mlp.experts.3.down_proj.weight")).toBe(true);
    const want = run(reference);
    expect(run(quantized)).toEqual(want);
    expect(run(quantized, { tensorParallelSize: 2 }).map((o) => o.tokens)).toEqual(want.map((o) => o.tokens));
  }, ENGINE_MS);

  test("under tensor parallelism each rank takes its shard of the packed weights (dequantized where a shard splits a group); --quantization names the method", () => {
    const { quantized, reference } = quantizedPair(base, SCHEMES[0]!);
    expect(run(quantized, { tensorParallelSize: 2, quantization: "gptq" }).map((o) => o.tokens)).toEqual(run(reference).map((o) => o.tokens));
    expect(() => new LLM({ model: quantized, quantization: "awq", ...quiet })).toThrow("--quantization: 'awq', but the checkpoint is quantized with gptq");
    new LLM({ model: quantized, maxModelLen: 32, quantization: "gptq_marlin", ...quiet }).close(); // vLLM's kernel's name for it
  }, ENGINE_MS);

  test("unsupported variants and broken parts are refused, naming the file and tensor", () => {
    const { quantized } = quantizedPair(base, SCHEMES[0]!);
    const withConfig = (qc: unknown) => withQuantizationConfig(quantized, qc, "packed-bad");
    const load = (d: string) => () => new Checkpoint(d);
    expect(load(withConfig({ quant_method: "gptq", bits: 3, group_size: 128 }))).toThrow("quantization_config: bits 3 is not supported (2, 4, 8)");
    expect(load(withConfig({ quant_method: "gptq", bits: 4, checkpoint_format: "marlin" }))).toThrow('checkpoint_format "marlin" is not supported');
    expect(load(withConfig({ quant_method: "awq", bits: 4, version: "gemv" }))).toThrow('version "gemv" is not supported');
    expect(load(withConfig({ ...ct(4, "group", 16), config_groups: { g: { weights: { num_bits: 4, type: "int", symmetric: false, strategy: "group", group_size: 16 } } } }))).toThrow("asymmetric pack-quantized weights (zero points) are not supported");
    expect(load(withConfig({ quant_method: "bitsandbytes" }))).toThrow('quant_method "bitsandbytes" is not supported');
    // The stored tensors are read only through their weight.
    const q = "model.layers.0.self_attn.q_proj";
    const ck = new Checkpoint(quantized);
    expect(ck.has(`${q}.weight`)).toBe(true);
    expect(() => ck.tensor(`${q}.qweight`)).toThrow(`tensor '${q}.qweight' is I32 (packed integers, such as GPTQ's qweight): it is read only as part of its quantized weight`);
    // Groups that do not fit: a group size that disagrees with the scales, a g_idx pointing past them.
    const badGroups = withConfig({ quant_method: "gptq", bits: 4, group_size: 8, checkpoint_format: "gptq" });
    withoutTensors(badGroups, /\.g_idx$/);
    expect(() => new Checkpoint(badGroups).tensor(`${q}.weight`)).toThrow(`gptq weight '${q}.weight': '${q}.scales' [2,32] has 2 groups, but 32 inputs in groups of 8 need 4`);
    const noZeros = withoutTensors(withConfig(SCHEMES[0]!.config), new RegExp(`^${q.replace(/\./g, "\\.")}\\.qzeros$`));
    expect(() => new LLM({ model: noZeros, maxModelLen: 32, ...quiet })).toThrow(`gptq weight '${q}.weight': no zero points '${q}.qzeros' in the checkpoint`);
    // Packed words without a config that says how they are packed.
    const bare = withConfig(undefined);
    expect(new Checkpoint(bare).has(`${q}.weight`)).toBe(false);
    expect(() => new LLM({ model: bare, maxModelLen: 32, ...quiet })).toThrow(`missing tensor '${q}.weight'`);
    expect(() => new LLM({ model: bare, maxModelLen: 32, ...quiet })).toThrow(`'${q}.qweight' is there, packed, but the quantization config does not say gptq, awq or pack-quantized`);
  }, ENGINE_MS);
});

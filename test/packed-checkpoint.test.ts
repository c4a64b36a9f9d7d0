/**
 * Integer weights packed into I32 words — GPTQ (desc_act's group order, both zero-point formats), AWQ (its
 * interleaved columns) and compressed-tensors' pack-quantized — are dequantized as they load: a tiny model
 * quantized each way gives exactly what the same model with scale · (q − zero) as its float32 weights gives.
 * The packing below is written from the formats' descriptions, independently of src/loader/packed-weights.ts.
 */
import { describe, expect, test } from "bun:test";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LLM } from "../src/engine/llm.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { dequantizePacked, type PackedIntegers } from "../src/loader/packed-weights.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/loader/safetensors.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { FAST_MODEL, tempDir, tinyModel, withoutTensors, withQuantizationConfig } from "./helpers.ts";

const ENGINE_MS = 60_000;
const quiet = { log: () => {} };
const base = tinyModel(FAST_MODEL);
const PROJECTION = /^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/;

interface Scheme {
  name: string;
  format: "gptq" | "awq" | "compressed-tensors";
  bits: 4 | 8;
  /** Inputs per group (null: one group, per channel). */
  group: number | null;
  /** GPTQ's desc_act: inputs assigned to groups in a shuffled order, told by g_idx. */
  actOrder?: boolean;
  /** GPTQ's first format: zeros stored minus one. */
  zerosMinusOne?: boolean;
  config: Record<string, unknown>;
  /** Where the config lives (AutoGPTQ's quantize_config.json instead of config.json's quantization_config). */
  configFile?: "quantize_config.json";
}

const SCHEMES: Scheme[] = [
  { name: "GPTQ 4-bit, groups of 16, desc_act (g_idx), checkpoint_format gptq (zeros − 1)", format: "gptq", bits: 4, group: 16, actOrder: true, zerosMinusOne: true, config: { quant_method: "gptq", bits: 4, group_size: 16, desc_act: true, sym: false, checkpoint_format: "gptq" } },
  { name: "GPTQ 8-bit per channel (group_size −1), gptq_v2 zeros, from quantize_config.json", format: "gptq", bits: 8, group: null, zerosMinusOne: false, config: { bits: 8, group_size: -1, desc_act: false, sym: true, checkpoint_format: "gptq_v2" }, configFile: "quantize_config.json" },
  { name: "AWQ 4-bit gemm, groups of 16", format: "awq", bits: 4, group: 16, config: { quant_method: "awq", bits: 4, group_size: 16, zero_point: true, version: "gemm" } },
  { name: "compressed-tensors pack-quantized W4A16, groups of 16, actorder (weight_g_idx)", format: "compressed-tensors", bits: 4, group: 16, actOrder: true, config: ct(4, "group", 16) },
  { name: "compressed-tensors pack-quantized W8A16, per channel", format: "compressed-tensors", bits: 8, group: null, config: ct(8, "channel", null) },
];

function ct(bits: number, strategy: string, group: number | null) {
  return { quant_method: "compressed-tensors", format: "pack-quantized", ignore: ["lm_head"], config_groups: { group_0: { targets: ["Linear"], weights: { num_bits: bits, type: "int", symmetric: true, strategy, group_size: group, actorder: group ? "group" : null } } } };
}

const AWQ_COLUMN_OF_NIBBLE = [0, 2, 4, 6, 1, 3, 5, 7];
const f16 = (x: Float32Array) => toFloat32(fromFloat32(x, "F16"), "F16");
const i32 = (name: string, shape: number[], words: Int32Array): TensorToWrite => ({ name, dtype: "I32", shape, bytes: new Uint8Array(words.buffer) });

/** Packs v[r][c] (rows × cols, values < 2^bits) into words along `dim` (0: rows, 1: columns), lowest bits first. */
function pack(v: Int32Array, rows: number, cols: number, bits: number, dim: 0 | 1, columnOfNibble?: number[]): Int32Array {
  const per = 32 / bits;
  const out = new Int32Array(dim === 0 ? Math.ceil(rows / per) * cols : rows * Math.ceil(cols / per));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (dim === 0) { out[Math.floor(r / per) * cols + c]! |= v[r * cols + c]! << (bits * (r % per)); continue; }
      const nibble = columnOfNibble ? columnOfNibble.indexOf(c % per) : c % per;
      out[r * Math.ceil(cols / per) + Math.floor(c / per)]! |= v[r * cols + c]! << (bits * nibble);
    }
  }
  return out;
}

/**
 * Quantizes W [out, in] by `s` (asymmetric min/max for GPTQ and AWQ, symmetric for compressed-tensors) and returns
 * the checkpoint's tensors for it and the float32 weight they stand for.
 */
function quantize(s: Scheme, name: string, w: Float32Array, out: number, inputs: number, rng: SeededRandom): { tensors: TensorToWrite[]; product: Float32Array } {
  const levels = 2 ** s.bits, size = s.group ?? inputs, groups = Math.ceil(inputs / size);
  // desc_act: input i belongs to the group of its place in a shuffled order.
  const order = Array.from({ length: inputs }, (_, i) => i);
  if (s.actOrder) for (let i = inputs - 1; i > 0; i--) { const j = rng.int(0, i); [order[i], order[j]] = [order[j]!, order[i]!]; }
  const groupOf = new Int32Array(inputs);
  order.forEach((input, place) => { groupOf[input] = Math.floor(place / size); });
  const scale = new Float32Array(groups * out), zero = new Int32Array(groups * out);
  for (let g = 0; g < groups; g++) {
    for (let o = 0; o < out; o++) {
      let lo = 0, hi = 0;
      for (let i = 0; i < inputs; i++) if (groupOf[i] === g) { lo = Math.min(lo, w[o * inputs + i]!); hi = Math.max(hi, w[o * inputs + i]!); }
      if (s.format === "compressed-tensors") { scale[g * out + o] = Math.max(-lo, hi) / (levels / 2 - 1) || 1; zero[g * out + o] = levels / 2; }
      else { scale[g * out + o] = (hi - lo) / (levels - 1) || 1; zero[g * out + o] = Math.min(levels - 1, Math.max(0, Math.round(-lo / scale[g * out + o]!))); }
    }
  }
  const scales = f16(scale);
  const q = new Int32Array(out * inputs), product = new Float32Array(out * inputs);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inputs; i++) {
      const k = groupOf[i]! * out + o;
      q[o * inputs + i] = Math.min(levels - 1, Math.max(0, Math.round(w[o * inputs + i]! / scales[k]!) + zero[k]!));
      product[o * inputs + i] = scales[k]! * (q[o * inputs + i]! - zero[k]!);
    }
  }
  const x = name.replace(/\.weight$/, "");
  const transposed = new Int32Array(inputs * out);
  for (let o = 0; o < out; o++) for (let i = 0; i < inputs; i++) transposed[i * out + o] = q[o * inputs + i]!;
  const per = 32 / s.bits, tensors: TensorToWrite[] = [];
  if (s.format === "compressed-tensors") {
    const byOutput = new Float32Array(out * groups);
    for (let g = 0; g < groups; g++) for (let o = 0; o < out; o++) byOutput[o * groups + g] = scales[g * out + o]!;
    tensors.push(i32(`${x}.weight_packed`, [out, inputs / per], pack(q, out, inputs, s.bits, 1)), { name: `${x}.weight_scale`, dtype: "BF16", shape: [out, groups], bytes: fromFloat32(byOutput, "BF16") },
      { name: `${x}.weight_shape`, dtype: "I64", shape: [2], bytes: fromFloat32(Float32Array.of(out, inputs), "I64") });
    // bf16 scales: the product must use them as stored.
    const stored = toFloat32(fromFloat32(byOutput, "BF16"), "BF16");
    for (let o = 0; o < out; o++) for (let i = 0; i < inputs; i++) product[o * inputs + i] = stored[o * groups + groupOf[i]!]! * (q[o * inputs + i]! - levels / 2);
    if (s.actOrder) tensors.push(i32(`${x}.weight_g_idx`, [inputs], groupOf));
    return { tensors, product };
  }
  const storedZero = zero.map((z) => z - (s.zerosMinusOne ? 1 : 0));
  const qweight = s.format === "gptq" ? pack(transposed, inputs, out, s.bits, 0) : pack(transposed, inputs, out, s.bits, 1, AWQ_COLUMN_OF_NIBBLE);
  tensors.push(i32(`${x}.qweight`, s.format === "gptq" ? [inputs / per, out] : [inputs, out / per], qweight), i32(`${x}.qzeros`, [groups, out / per], pack(storedZero, groups, out, s.bits, 1, s.format === "awq" ? AWQ_COLUMN_OF_NIBBLE : undefined)),
    { name: `${x}.scales`, dtype: "F16", shape: [groups, out], bytes: fromFloat32(scales, "F16") });
  if (s.format === "gptq") tensors.push(i32(`${x}.g_idx`, [inputs], groupOf));
  return { tensors, product };
}

/** `base` quantized by `s`, and the same model with the dequantized products as float32 weights. */
function quantizedPair(s: Scheme): { quantized: string; reference: string } {
  const dir = tempDir(`packed-${s.format}-${s.bits}`), quantized = join(dir, "q"), reference = join(dir, "ref");
  for (const d of [quantized, reference]) cpSync(base, d, { recursive: true });
  const st = SafetensorsFile.open(join(base, "model.safetensors")), rng = new SeededRandom(5);
  const q: TensorToWrite[] = [], ref: TensorToWrite[] = [];
  for (const name of st.names()) {
    const t = st.tensor(name), copy = { name, dtype: t.dtype, shape: [...t.shape], bytes: Uint8Array.from(t.bytes) };
    if (!PROJECTION.test(name)) { q.push(copy); ref.push(copy); continue; }
    const [out, inputs] = t.shape as [number, number];
    const { tensors, product } = quantize(s, name, toFloat32(t.bytes, t.dtype), out, inputs, rng);
    q.push(...tensors);
    ref.push({ name, dtype: "F32", shape: [out, inputs], bytes: fromFloat32(product, "F32") });
  }
  for (const [d, tensors] of [[quantized, q], [reference, ref]] as const) {
    rmSync(join(d, "model.safetensors"));
    writeSafetensors(join(d, "model.safetensors"), tensors);
  }
  if (s.configFile) writeFileSync(join(quantized, s.configFile), JSON.stringify(s.config));
  else {
    const cfg = JSON.parse(readFileSync(join(quantized, "config.json"), "utf8"));
    writeFileSync(join(quantized, "config.json"), JSON.stringify({ ...cfg, quantization_config: s.config }));
  }
  return { quantized, reference };
}

const PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7], [40, 41, 42, 43, 44]];
const PARAMS = { max_tokens: 10, temperature: 0, logprobs: 0, ignore_eos: true };

function run(model: string, opts: Record<string, unknown> = {}) {
  const llm = new LLM({ model, maxModelLen: 64, ...quiet, ...opts });
  try { return llm.generate(PROMPTS, PARAMS, { useTqdm: false }).map((r) => ({ tokens: [...r.outputs[0]!.tokenIds], logprobs: r.outputs[0]!.logprobs!.map((l) => l.logprob) })); } finally { llm.close(); }
}

describe("packed integer checkpoints (GPTQ, AWQ, pack-quantized) are dequantized as they load", () => {
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

  for (const s of SCHEMES) {
    test(`${s.name}: the same outputs as the model with scale · (q − zero) as its weights`, () => {
      const { quantized, reference } = quantizedPair(s);
      expect(new Checkpoint(quantized).quantization?.packed?.bits).toBe(s.bits);
      const want = run(reference), got = run(quantized);
      expect(got).toEqual(want);
      // Quantization changed the model (else this would prove little): the float weights' logprobs differ.
      expect(run(base).flatMap((o) => o.logprobs)).not.toEqual(want.flatMap((o) => o.logprobs));
    }, ENGINE_MS);
  }

  test("under tensor parallelism each rank dequantizes, then takes its shard; --quantization names the method", () => {
    const { quantized, reference } = quantizedPair(SCHEMES[0]!);
    expect(run(quantized, { tensorParallelSize: 2, quantization: "gptq" }).map((o) => o.tokens)).toEqual(run(reference).map((o) => o.tokens));
    expect(() => new LLM({ model: quantized, quantization: "awq", ...quiet })).toThrow("--quantization: 'awq', but the checkpoint is quantized with gptq");
    new LLM({ model: quantized, maxModelLen: 32, quantization: "gptq_marlin", ...quiet }).close(); // vLLM's kernel's name for it
  }, ENGINE_MS);

  test("unsupported variants and broken parts are refused, naming the file and tensor", () => {
    const { quantized } = quantizedPair(SCHEMES[0]!);
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

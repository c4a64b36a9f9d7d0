import { describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { f32ToBf16Bits, f32ToF16Bits, fromFloat32, toFloat32, type DType } from "../src/loader/dtype.ts";
import { SafetensorsFile, writeSafetensors } from "../src/loader/safetensors.ts";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig, maxSupportedPositions, parseModelConfig, ropeAttentionFactor, ropeInvFreq } from "../src/model/config.ts";
import { LLM } from "../src/engine/llm.ts";
import { tempDir, tinyModel } from "./helpers.ts";
import { checkShardable } from "../src/parallel/shard.ts";

const values = Float32Array.from([0, 1, -2.5, 3.140625, 65504, 1e-7, -0.0001, 123456.789, Infinity, -Infinity]);

describe("dtype conversion", () => {
  test("bf16 rounds to nearest even", () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
  });
  test("f16 handles normals, subnormals, overflow", () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(70000)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
  });
});

describe("safetensors round trip", () => {
  for (const dtype of ["F32", "F16", "BF16"] as DType[]) {
    test(dtype, () => {
      const dir = tempDir("st");
      const file = join(dir, "a.safetensors");
      const bytes = fromFloat32(values, dtype);
      writeSafetensors(file, [{ name: "w", dtype, shape: [2, 5], bytes }, { name: "b", dtype, shape: [0], bytes: new Uint8Array(0) }]);
      const st = SafetensorsFile.open(file);
      const t = st.tensor("w");
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2, 5]);
      const back = toFloat32(t.bytes, t.dtype);
      // Re-encoding what we read gives the same bytes: the conversion is exact for representable values.
      expect(fromFloat32(back, dtype)).toEqual(bytes);
      if (dtype === "F32") expect(back).toEqual(values);
      else for (const [i, v] of [[1, 1], [2, -2.5], [3, 3.140625], [8, Infinity]] as const) expect(back[i]).toBe(v);
      expect(st.tensor("b").shape).toEqual([0]);
    });
  }
});

function corrupt(mutate: (bytes: Uint8Array) => Uint8Array): string {
  const dir = tempDir("bad");
  const file = join(dir, "model.safetensors");
  writeSafetensors(file, [{ name: "w", dtype: "F32", shape: [4], bytes: fromFloat32(Float32Array.from([1, 2, 3, 4]), "F32") }]);
  writeFileSync(file, mutate(new Uint8Array(readFileSync(file))));
  return file;
}

function header(obj: unknown, data = new Uint8Array(16)): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe("safetensors corruption gives a specific error naming the file and tensor", () => {
  test("file shorter than the length prefix", () => {
    expect(() => SafetensorsFile.open(corrupt((b) => b.slice(0, 5)))).toThrow(/model\.safetensors: truncated: 5 bytes/);
  });
  test("header longer than the file", () => {
    expect(() => SafetensorsFile.open(corrupt((b) => b.slice(0, 20)))).toThrow(/model\.safetensors: truncated: header needs/);
  });
  test("data truncated", () => {
    expect(() => SafetensorsFile.open(corrupt((b) => b.slice(0, b.length - 4)))).toThrow(/tensor 'w': data_offsets \[0, 16\] out of range .*truncated/);
  });
  test("header is not JSON", () => {
    expect(() => SafetensorsFile.open(corrupt((b) => { b[8] = 0x78; return b; }))).toThrow(/bad header: not valid JSON/);
  });
  test("absurd header length", () => {
    expect(() => SafetensorsFile.open(corrupt((b) => { b[7] = 0x7f; return b; }))).toThrow(/bad header: length .* implausibly large/);
  });
  test("offsets out of range", () => {
    expect(() => SafetensorsFile.open(corrupt(() => header({ w: { dtype: "F32", shape: [8], data_offsets: [0, 32] } })))).toThrow(/tensor 'w': data_offsets \[0, 32\] out of range/);
  });
  test("offsets inconsistent with shape", () => {
    expect(() => SafetensorsFile.open(corrupt(() => header({ w: { dtype: "F32", shape: [3], data_offsets: [0, 16] } })))).toThrow(/tensor 'w': data_offsets span 16 bytes but F32\[3\] needs 12/);
  });
  test("unsupported dtype", () => {
    expect(() => SafetensorsFile.open(corrupt(() => header({ w: { dtype: "F64", shape: [2], data_offsets: [0, 16] } })))).toThrow(/tensor 'w': unsupported dtype F64/);
  });
  test("bad shape", () => {
    expect(() => SafetensorsFile.open(corrupt(() => header({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 16] } })))).toThrow(/tensor 'w': bad shape/);
  });
  test("missing file", () => {
    expect(() => SafetensorsFile.open("/nonexistent/x.safetensors")).toThrow(/x\.safetensors: file not found/);
  });
});

describe("checkpoints", () => {
  test("sharded checkpoint via model.safetensors.index.json", () => {
    const dir = tempDir("shard");
    const a = fromFloat32(Float32Array.from([1, 2]), "BF16"), b = fromFloat32(Float32Array.from([3, 4, 5]), "F16");
    writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), [{ name: "x", dtype: "BF16", shape: [2], bytes: a }]);
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), [{ name: "y", dtype: "F16", shape: [3], bytes: b }]);
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: { x: "model-00001-of-00002.safetensors", y: "model-00002-of-00002.safetensors" } }));
    const ck = new Checkpoint(dir);
    expect(Array.from(toFloat32(ck.tensor("x").bytes, "BF16"))).toEqual([1, 2]);
    expect(Array.from(toFloat32(ck.tensor("y", [3]).bytes, "F16"))).toEqual([3, 4, 5]);
    expect(() => ck.tensor("y", [4])).toThrow(/model-00002-of-00002\.safetensors: tensor 'y' has shape \[3\] but the config implies \[4\]/);
    expect(() => ck.tensor("z")).toThrow(/missing tensor 'z'/);
  });

  function brokenModel(mutate: (dir: string) => void): string {
    const src = tinyModel({ arch: "qwen3", seed: 11, vocabSize: 256 });
    const dir = tempDir("broken");
    for (const f of ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(src, f), join(dir, f));
    mutate(dir);
    return dir;
  }
  const load = (dir: string) => new CausalLM(loadModelConfig(dir), new CpuBackend(), 64).load(new Checkpoint(dir));

  test("a missing tensor is named with the directory", () => {
    const dir = brokenModel((d) => {
      const st = SafetensorsFile.open(join(d, "model.safetensors"));
      const keep = st.names().filter((n) => n !== "model.layers.1.mlp.up_proj.weight").map((n) => { const t = st.tensor(n); return { name: n, dtype: t.dtype, shape: t.shape, bytes: t.bytes.slice() }; });
      writeSafetensors(join(d, "model.safetensors"), keep);
    });
    expect(() => load(dir)).toThrow(/broken-.*: missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'/);
  });
  test("a shape mismatch names file and tensor", () => {
    const dir = brokenModel((d) => {
      const cfg = JSON.parse(readFileSync(join(d, "config.json"), "utf8"));
      cfg.intermediate_size = 96;
      writeFileSync(join(d, "config.json"), JSON.stringify(cfg));
    });
    expect(() => load(dir)).toThrow(/model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[128,64\] but the config implies \[96,64\]/);
  });
  test("an unknown architecture is named", () => {
    expect(() => parseModelConfig({ architectures: ["GPT2LMHeadModel"], hidden_size: 8 }, "x/config.json")).toThrow(/x\/config\.json: unsupported architecture 'GPT2LMHeadModel'/);
  });
  test("a bad config field is named", () => {
    expect(() => parseModelConfig({ architectures: ["LlamaForCausalLM"], hidden_size: 64, num_attention_heads: 6, num_key_value_heads: 4, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10 })).toThrow(/num_attention_heads \(6\) must be a multiple of num_key_value_heads \(4\)/);
    expect(() => parseModelConfig({ architectures: ["LlamaForCausalLM"], hidden_size: "64" })).toThrow(/field 'hidden_size' must be a positive integer/);
  });
  test("YaRN rope scaling (Qwen's long-context recipe): parsed with its defaults; the context may grow to original × factor", () => {
    const qwen = { architectures: ["Qwen3ForCausalLM"], hidden_size: 8, num_attention_heads: 2, head_dim: 8, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10, max_position_embeddings: 40960 };
    const yarn = (r: Record<string, unknown>) => parseModelConfig({ ...qwen, rope_scaling: { rope_type: "yarn", ...r } }, "x/config.json");
    const c = yarn({ factor: 4, original_max_position_embeddings: 32768 });
    expect(c.ropeScaling).toEqual({ type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32768, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(4) + 1, truncate: true });
    expect(maxSupportedPositions(c)).toBe(131072);
    expect(ropeAttentionFactor(c, 4096)).toBeCloseTo(1.138629, 6);
    // attention_factor given; DeepSeek's mscale / mscale_all_dim ratio; no original length: max_position_embeddings.
    expect(ropeAttentionFactor(yarn({ factor: 4, attention_factor: 1.5 }), 4096)).toBe(1.5);
    expect(ropeAttentionFactor(yarn({ factor: 40, mscale: 1, mscale_all_dim: 1 }), 4096)).toBe(1);
    expect((yarn({ factor: 2 }).ropeScaling as { originalMaxPositionEmbeddings: number }).originalMaxPositionEmbeddings).toBe(40960);
    expect(maxSupportedPositions(yarn({ factor: 2 }))).toBe(81920);
    expect(() => yarn({ factor: 4, beta_fast: "fast" })).toThrow('x/config.json: rope_scaling.beta_fast must be a number, got "fast"');
    expect(() => parseModelConfig({ ...qwen, rope_scaling: { rope_type: "dynamic", factor: 2 } }, "x/config.json")).toThrow("unsupported rope_scaling type 'dynamic' (supported: default, linear, llama3, yarn, longrope)");
    // The engine's context: by default the scaled length, and no more.
    const dir = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 2048, maxPositionEmbeddings: 128, ropeScaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64 } });
    const llm = new LLM({ model: dir, log: () => {} });
    expect(llm.engine.options.maxModelLen).toBe(256);
    llm.close();
    expect(() => new LLM({ model: dir, maxModelLen: 300, log: () => {} })).toThrow("--max-model-len: 300 exceeds the model's positions with its rope_scaling (original_max_position_embeddings × factor) (256)");
  }, 60_000);

  test("LongRoPE (Phi-3.5, Phi-4-mini) and partial rotary: factors per rotated frequency, the default mscale, the long factors past the pretrained length", () => {
    // Phi-4-mini's shape: head_dim 128, ¾ rotary (48 frequencies), 4k pretrained, 128k positions.
    const phi = { architectures: ["Phi3ForCausalLM"], hidden_size: 3072, num_attention_heads: 24, num_key_value_heads: 8, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10, max_position_embeddings: 131072, original_max_position_embeddings: 4096, partial_rotary_factor: 0.75 };
    const short = Array.from({ length: 48 }, (_, i) => 1 + i / 10), long = short.map((f) => 2 * f);
    const c = parseModelConfig({ ...phi, rope_scaling: { type: "longrope", short_factor: short, long_factor: long } }, "x/config.json");
    const mscale = Math.sqrt(1 + Math.log(32) / Math.log(4096));
    expect(c.rotaryDim).toBe(96);
    expect(c.ropeScaling).toEqual({ type: "longrope", shortFactor: short, longFactor: long, originalMaxPositionEmbeddings: 4096, shortMscale: mscale, longMscale: mscale });
    const base = (i: number) => 1 / 10000 ** ((2 * i) / 96);
    expect(ropeInvFreq(c, 4096)[47]).toBeCloseTo(base(47) / short[47]!, 15);
    expect(ropeInvFreq(c, 4097)[47]).toBeCloseTo(base(47) / long[47]!, 15);
    expect(ropeInvFreq(c, 4096).length).toBe(48);
    expect(ropeAttentionFactor(c, 131072)).toBeCloseTo(1.1902380714238083, 12);
    // Phi-3's first name for it; the original length inside the scaling object; vLLM's mscales; attention_factor.
    const su = parseModelConfig({ ...phi, original_max_position_embeddings: undefined, rope_scaling: { type: "su", short_factor: short, long_factor: long, original_max_position_embeddings: 8192, short_mscale: 1, long_mscale: 1.5 } });
    expect(su.ropeScaling).toMatchObject({ type: "longrope", originalMaxPositionEmbeddings: 8192, shortMscale: 1, longMscale: 1.5 });
    expect([ropeAttentionFactor(su, 8192), ropeAttentionFactor(su, 8193)]).toEqual([1, 1.5]);
    expect(parseModelConfig({ ...phi, rope_scaling: { type: "longrope", short_factor: short, long_factor: long, attention_factor: 1.25 } }).ropeScaling).toMatchObject({ shortMscale: 1.25, longMscale: 1.25 });
    // No longer than the pretrained length: mscale 1.
    expect(parseModelConfig({ ...phi, max_position_embeddings: 4096, rope_scaling: { type: "longrope", short_factor: short, long_factor: long } }).ropeScaling).toMatchObject({ shortMscale: 1, longMscale: 1 });
    // Factors must match the rotated frequencies: Phi-3.5's 48 for a full 96-wide head here would be 48 of 64.
    expect(() => parseModelConfig({ ...phi, partial_rotary_factor: 1, rope_scaling: { type: "longrope", short_factor: short, long_factor: long } }, "x/config.json"))
      .toThrow("x/config.json: rope_scaling.short_factor must list 64 positive numbers (one per rotated frequency: rotary dimensions / 2)");
    expect(() => parseModelConfig({ ...phi, rope_scaling: { type: "longrope", short_factor: short, long_factor: [...long.slice(1), -1] } }, "x/config.json")).toThrow("rope_scaling.long_factor must list 48 positive numbers");
    expect(() => parseModelConfig({ ...phi, original_max_position_embeddings: "4k", rope_scaling: { type: "longrope", short_factor: short, long_factor: long } }, "x/config.json")).toThrow("field 'original_max_position_embeddings' must be a positive integer, got \"4k\"");
    expect(() => parseModelConfig({ ...phi, partial_rotary_factor: 0 }, "x/config.json")).toThrow("field 'partial_rotary_factor' must be a number in (0, 1], got 0");
    expect(() => parseModelConfig({ ...phi, partial_rotary_factor: 1.5 }, "x/config.json")).toThrow("field 'partial_rotary_factor' must be a number in (0, 1], got 1.5");
  });

  test("GLM: RoPE over half of each head by default (GlmConfig's partial_rotary_factor), pairs interleaved; attention_bias covers q/k/v, not o_proj", () => {
    const glm = { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10, attention_bias: true };
    const g = parseModelConfig({ architectures: ["GlmForCausalLM"], ...glm });
    expect([g.rotaryDim, g.ropeInterleaved, g.qkvBias, g.oBias, g.outputNorms]).toEqual([8, true, true, false, null]);
    const g4 = parseModelConfig({ architectures: ["Glm4ForCausalLM"], ...glm, partial_rotary_factor: 0.25 });
    expect([g4.rotaryDim, g4.outputNorms]).toEqual([4, { attention: "post_self_attn_layernorm", mlpInput: "post_attention_layernorm", mlp: "post_mlp_layernorm" }]);
    expect(parseModelConfig({ architectures: ["LlamaForCausalLM"], ...glm })).toMatchObject({ rotaryDim: 16, ropeInterleaved: false, oBias: true });
    // ERNIE 4.5: interleaved pairs over the whole head; its use_bias (every projection, the MLP's too) is refused.
    expect(parseModelConfig({ ...glm, architectures: ["Ernie4_5ForCausalLM"], attention_bias: false, use_bias: false })).toMatchObject({ rotaryDim: 16, ropeInterleaved: true, qkvBias: false, oBias: false });
    expect(() => parseModelConfig({ ...glm, architectures: ["Ernie4_5ForCausalLM"], use_bias: true }, "x/config.json")).toThrow("x/config.json: use_bias=true (biases on every projection, the MLP's too) is not supported");
  });

  test("OLMo 2 / 3 and EXAONE 4.0: norms after each sublayer only; OLMo 3's and EXAONE's default layer types; EXAONE's global layers without RoPE", () => {
    const shape = { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 8, num_hidden_layers: 8, vocab_size: 10 };
    const o2 = parseModelConfig({ architectures: ["Olmo2ForCausalLM"], ...shape });
    expect([o2.inputNorms, o2.qkNorm, o2.qkNormAcrossHeads, o2.rmsNormEps, o2.slidingWindow, o2.outputNorms]).toEqual([false, true, true, 1e-5, null, { attention: "post_attention_layernorm", mlpInput: null, mlp: "post_feedforward_layernorm" }]);
    // Olmo3Config: window 4096, every fourth layer global; rope_scaling for the global layers only (the sliding ones: the same base, unscaled).
    const o3 = parseModelConfig({ architectures: ["Olmo3ForCausalLM"], ...shape, rope_theta: 500000, rope_scaling: { rope_type: "yarn", factor: 8, original_max_position_embeddings: 8192 }, max_position_embeddings: 65536 });
    expect([o3.layerWindows, o3.localRopeTheta]).toEqual([[4096, 4096, 4096, 0, 4096, 4096, 4096, 0], 500000]);
    expect(parseModelConfig({ architectures: ["Olmo3ForCausalLM"], ...shape }).localRopeTheta).toBeNull();
    const ex = (extra: Record<string, unknown>) => parseModelConfig({ architectures: ["Exaone4ForCausalLM"], ...shape, ...extra }, "x/config.json");
    const e = ex({ sliding_window: 16 });
    expect([e.inputNorms, e.qkNorm, e.qkNormAcrossHeads, e.layerWindows, e.ropeLayers]).toEqual([false, true, false, [16, 16, 16, 0, 16, 16, 16, 0], [true, true, true, false, true, true, true, false]]);
    // A pattern string repeats from layer 0; the last layer is global whatever it says.
    expect(ex({ sliding_window: 16, sliding_window_pattern: "LLG" }).layerWindows).toEqual([16, 16, 0, 16, 16, 0, 16, 0]);
    expect(ex({}).layerWindows).toEqual([4096, 4096, 4096, 0, 4096, 4096, 4096, 0]); // Exaone4Config's defaults
    // No window (EXAONE 4.0 1.2B): every layer global, and every layer rotates.
    expect(ex({ sliding_window: null })).toMatchObject({ layerWindows: [0, 0, 0, 0, 0, 0, 0, 0], ropeLayers: null });
    expect(() => ex({ sliding_window: 16, sliding_window_pattern: "LXG" })).toThrow("x/config.json: field 'sliding_window_pattern' must be a positive integer or a string of L and G, got \"LXG\"");
  });

  test("OLMoE: pre-norms with q/k norms over whole projections, every layer experts (intermediate_size an expert's, not renormalized by default); clip_qkv refused", () => {
    const shape = { hidden_size: 64, num_attention_heads: 4, intermediate_size: 32, num_hidden_layers: 3, vocab_size: 10, num_experts: 8, num_experts_per_tok: 2 };
    const o = parseModelConfig({ architectures: ["OlmoeForCausalLM"], ...shape, clip_qkv: null });
    expect(o).toMatchObject({ inputNorms: true, qkNorm: true, qkNormAcrossHeads: true, rmsNormEps: 1e-5, numKvHeads: 4, tieWordEmbeddings: false });
    expect(o.moe).toMatchObject({ numExperts: 8, topK: 2, intermediateSize: 32, normTopK: false, sparseLayers: [true, true, true], naming: "qwen" });
    expect(parseModelConfig({ architectures: ["OlmoeForCausalLM"], ...shape, norm_topk_prob: true }).moe!.normTopK).toBe(true);
    expect(() => parseModelConfig({ architectures: ["OlmoeForCausalLM"], ...shape, clip_qkv: 8 }, "x/config.json")).toThrow("x/config.json: clip_qkv=8 is not supported (q, k and v clamped before the norms)");
  });

  test("Cohere (Command R, R+, Aya) and Cohere 2 (Command R7B, Command A): LayerNorms, the parallel block, interleaved RoPE, logit_scale, R+'s per-head q/k norms; R7B's sliding layers the only rotating ones", () => {
    const shape = { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 8, num_hidden_layers: 8, vocab_size: 10 };
    const c = parseModelConfig({ architectures: ["CohereForCausalLM"], ...shape, layer_norm_eps: 1e-5, logit_scale: 0.125, use_qk_norm: false });
    expect(c).toMatchObject({ layerNorm: true, parallelBlock: true, ropeInterleaved: true, rotaryDim: 16, rmsNormEps: 1e-5, tieWordEmbeddings: true, qkNorm: false, slidingWindow: null, ropeLayers: null });
    expect(c.scales.logitsScaling).toBe(8); // logits × 0.125
    // CohereConfig's defaults: logit_scale 0.0625, layer_norm_eps 1e-5, tied embeddings.
    expect(parseModelConfig({ architectures: ["CohereForCausalLM"], ...shape })).toMatchObject({ rmsNormEps: 1e-5, tieWordEmbeddings: true, scales: { logitsScaling: 16 } });
    expect(parseModelConfig({ architectures: ["CohereForCausalLM"], ...shape, tie_word_embeddings: false }).tieWordEmbeddings).toBe(false);
    // Command R+: q and k LayerNorms with a weight per head.
    expect(parseModelConfig({ architectures: ["CohereForCausalLM"], ...shape, use_qk_norm: true })).toMatchObject({ qkNorm: true, qkNormWeightPerHead: true, qkNormAcrossHeads: false });
    expect(c).toMatchObject({ qkNorm: false, qkNormWeightPerHead: false });
    // Command R7B's config.json: sliding_window_pattern 4 (every fourth layer global), no layer_types; Cohere2Config's window 4096.
    const c2 = parseModelConfig({ architectures: ["Cohere2ForCausalLM"], ...shape, sliding_window_pattern: 4 });
    expect(c2).toMatchObject({ layerNorm: true, parallelBlock: true, slidingWindow: 4096, layerWindows: [4096, 4096, 4096, 0, 4096, 4096, 4096, 0], ropeLayers: [true, true, true, false, true, true, true, false] });
    // layer_types as newer saves write them.
    const typed = parseModelConfig({ architectures: ["Cohere2ForCausalLM"], ...shape, sliding_window: 32, layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"] });
    expect([typed.layerWindows, typed.ropeLayers]).toEqual([[32, 0, 32, 0, 32, 32, 32, 0], [true, false, true, false, true, true, true, false]]);
    // The other architectures keep RMSNorm and the sequential block.
    expect(parseModelConfig({ architectures: ["LlamaForCausalLM"], ...shape })).toMatchObject({ layerNorm: false, parallelBlock: false });
  });

  test("transformers 5's rope_parameters (rope_theta, rope_type and the scaling's fields in one object; Gemma 3's per layer type) read as the older fields", () => {
    const qwen = { architectures: ["Qwen3ForCausalLM"], hidden_size: 8, num_attention_heads: 2, head_dim: 8, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10, max_position_embeddings: 40960 };
    const parse = (f: Record<string, unknown>) => parseModelConfig({ ...qwen, ...f }, "x/config.json");
    // Without rope_theta at the top level a reader that missed rope_parameters would run with 10000.
    expect(parse({ rope_parameters: { rope_theta: 1000000, rope_type: "default" } })).toMatchObject({ ropeTheta: 1000000, ropeScaling: null, rotaryDim: 8 });
    const yarn = parse({ rope_parameters: { rope_theta: 5000000, rope_type: "yarn", factor: 4, original_max_position_embeddings: 32768 } });
    expect(yarn).toMatchObject({ ropeTheta: 5000000, ropeScaling: { type: "yarn", factor: 4, originalMaxPositionEmbeddings: 32768 } });
    expect(maxSupportedPositions(yarn)).toBe(131072);
    expect(parse({ rope_parameters: { rope_theta: 1e6, partial_rotary_factor: 0.5 } }).rotaryDim).toBe(4);
    // A field set at the top level (an older save, or --hf-overrides) wins.
    expect(parse({ rope_theta: 10000, rope_parameters: { rope_theta: 1e6 } }).ropeTheta).toBe(10000);
    expect(parse({ rope_scaling: { rope_type: "linear", factor: 2 }, rope_parameters: { rope_theta: 1e6, rope_type: "yarn", factor: 4 } })).toMatchObject({ ropeTheta: 1e6, ropeScaling: { type: "linear", factor: 2 } });
    // Errors name the field as the file spells it.
    expect(() => parse({ rope_parameters: "default" })).toThrow("x/config.json: field 'rope_parameters' must be an object, got \"default\"");
    expect(() => parse({ rope_parameters: { rope_theta: -1 } })).toThrow("field 'rope_parameters.rope_theta' must be a positive number, got -1");
    expect(() => parse({ rope_parameters: { rope_theta: 1e6, rope_type: "yarn", factor: 4, beta_fast: "x" } })).toThrow('rope_parameters.beta_fast must be a number, got "x"');
    expect(() => parse({ rope_parameters: { rope_theta: 1e6, rope_type: "dynamic", factor: 4 } })).toThrow("unsupported rope_parameters type 'dynamic'");
    // Gemma 3: one object per layer type; the sliding layers' base is their rope_theta.
    const gemma = { ...qwen, architectures: ["Gemma3ForCausalLM"], model_type: "gemma3_text", num_hidden_layers: 2, sliding_window: 4, layer_types: ["sliding_attention", "full_attention"] };
    const perType = (full: Record<string, unknown>, sliding: Record<string, unknown>) =>
      parseModelConfig({ ...gemma, rope_parameters: { full_attention: full, sliding_attention: sliding } }, "x/config.json");
    expect(perType({ rope_type: "linear", factor: 8, rope_theta: 1e6 }, { rope_type: "default", rope_theta: 10000 })).toMatchObject({ ropeTheta: 1e6, ropeScaling: { type: "linear", factor: 8 }, localRopeTheta: 10000 });
    expect(() => perType({ rope_theta: 1e6 }, { rope_type: "yarn", factor: 2, rope_theta: 1e4 })).toThrow("rope_parameters.sliding_attention.rope_type 'yarn' is not supported (the sliding-window layers' RoPE is unscaled)");
    expect(() => perType({ rope_theta: 1e6, partial_rotary_factor: 0.5 }, { rope_theta: 1e4 })).toThrow("rope_parameters.sliding_attention.partial_rotary_factor differs from the full-attention layers'");
    // Gemma 3 4B+ (text_config over transformers' defaults) and Qwen3-VL (M-RoPE reads as plain RoPE for text) saved by transformers 5.
    const mm = parseModelConfig({ architectures: ["Gemma3ForConditionalGeneration"], text_config: { rope_parameters: { full_attention: { rope_type: "linear", factor: 8, rope_theta: 2e6 }, sliding_attention: { rope_type: "default", rope_theta: 20000 } } } });
    expect(mm).toMatchObject({ ropeTheta: 2e6, ropeScaling: { type: "linear", factor: 8 }, localRopeTheta: 20000 });
    const vl = { ...qwen, architectures: ["Qwen3VLForConditionalGeneration"] };
    expect(parseModelConfig({ ...vl, rope_parameters: { rope_type: "default", rope_theta: 5e6, mrope_section: [24, 20, 20], mrope_interleaved: true } })).toMatchObject({ ropeTheta: 5e6, ropeScaling: null });
    expect(() => parseModelConfig({ ...vl, rope_parameters: { rope_type: "yarn", factor: 4, rope_theta: 5e6, mrope_section: [24, 20, 20] } }, "x/config.json")).toThrow('rope_parameters "yarn" with mrope_section is not supported');
  });

  test("llama3 rope scaling and Qwen2 bias flags are parsed", () => {
    const l = loadModelConfig(tinyModel({ arch: "llama", seed: 2, vocabSize: 2048 }));
    expect(l.ropeScaling).toEqual({ type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 256 });
    expect(l.tieWordEmbeddings).toBe(false);
    const q2 = parseModelConfig({ architectures: ["Qwen2ForCausalLM"], hidden_size: 8, num_attention_heads: 2, intermediate_size: 8, num_hidden_layers: 1, vocab_size: 10 });
    expect([q2.qkvBias, q2.oBias, q2.qkNorm]).toEqual([true, false, false]);
  });
  test("sliding windows per layer, as transformers reads them: Mistral every layer, Qwen's switch from max_window_layers, layer_types", () => {
    const base = { hidden_size: 8, num_attention_heads: 2, head_dim: 8, intermediate_size: 8, num_hidden_layers: 4, vocab_size: 10 };
    const windows = (arch: string, f: Record<string, unknown>) => parseModelConfig({ architectures: [arch], ...base, ...f }, "x/config.json").layerWindows;
    expect(windows("MistralForCausalLM", { sliding_window: 4096 })).toEqual([4096, 4096, 4096, 4096]);
    expect(windows("MistralForCausalLM", { sliding_window: null })).toEqual([0, 0, 0, 0]);
    // Qwen2.5 / Qwen3 ship a window with the switch off.
    expect(windows("Qwen2ForCausalLM", { use_sliding_window: false, sliding_window: 32768, max_window_layers: 2 })).toEqual([0, 0, 0, 0]);
    expect(windows("Qwen2ForCausalLM", { use_sliding_window: true, sliding_window: 64, max_window_layers: 2 })).toEqual([0, 0, 64, 64]);
    expect(windows("Qwen3ForCausalLM", { sliding_window: 64, layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"] })).toEqual([64, 0, 64, 0]);
    expect(windows("Qwen3ForCausalLM", { use_sliding_window: false, sliding_window: 64, layer_types: ["sliding_attention", "full_attention", "full_attention", "full_attention"] })).toEqual([0, 0, 0, 0]);
    expect(parseModelConfig({ architectures: ["MistralForCausalLM"], ...base, sliding_window: 4096 }).slidingWindow).toBe(4096);
    expect(() => windows("Qwen3ForCausalLM", { sliding_window: 64, layer_types: ["sliding_attention"] })).toThrow(`x/config.json: layer_types must list "sliding_attention" or "full_attention" for each of the 4 layers, got ["sliding_attention"]`);
    expect(() => windows("MistralForCausalLM", { sliding_window: -1 })).toThrow("field 'sliding_window' must be a positive integer, got -1");
  });
  test("Gemma 3 and 2: sliding_window_pattern, the local RoPE base, query_pre_attn_scalar, √H embeddings in the checkpoint's dtype, Gemma 2's soft-capping", () => {
    // Gemma-3-1B's fields (a smaller body), as its config.json has them before transformers wrote layer_types.
    const g3 = { architectures: ["Gemma3ForCausalLM"], hidden_size: 1152, num_attention_heads: 4, num_key_value_heads: 1, head_dim: 256, intermediate_size: 64, num_hidden_layers: 7, vocab_size: 10,
      hidden_activation: "gelu_pytorch_tanh", query_pre_attn_scalar: 256, rope_theta: 1000000, rope_local_base_freq: 10000, sliding_window: 512, sliding_window_pattern: 6,
      final_logit_softcapping: null, attn_logit_softcapping: null, torch_dtype: "bfloat16" };
    const c = parseModelConfig(g3, "x/config.json");
    expect([c.architecture, c.activation, c.gemmaNorms, c.qkNorm, c.localRopeTheta, c.scales.attention]).toEqual(["gemma3", "gelu_tanh", true, true, 10000, 1 / 16]);
    expect(c.layerWindows).toEqual([512, 512, 512, 512, 512, 0, 512]);
    // √1152 = 33.941…, which bfloat16 holds as 34 (transformers multiplies by the embedding dtype's value).
    expect(c.scales.embedding).toBe(34);
    expect(parseModelConfig({ ...g3, torch_dtype: "float32" }).scales.embedding).toBe(Math.fround(Math.sqrt(1152)));
    // Gemma 2 (gemma-2-9b's fields): soft-capping, layers alternating from a sliding first, no q/k norms, one RoPE base.
    const g2 = parseModelConfig({ ...g3, architectures: ["Gemma2ForCausalLM"], sliding_window_pattern: undefined, rope_local_base_freq: undefined, sliding_window: 4096, attn_logit_softcapping: 50, final_logit_softcapping: 30 });
    expect([g2.architecture, g2.qkNorm, g2.gemmaNorms, g2.localRopeTheta, g2.attnLogitSoftcap, g2.finalLogitSoftcap]).toEqual(["gemma2", false, true, null, 50, 30]);
    expect(g2.layerWindows).toEqual([4096, 0, 4096, 0, 4096, 0, 4096]);
    expect(() => parseModelConfig({ ...g3, attn_logit_softcapping: -1 }, "x/config.json")).toThrow("field 'attn_logit_softcapping' must be a positive number, got -1");
    expect(() => parseModelConfig({ ...g3, hidden_activation: "gelu" }, "x/config.json")).toThrow("unsupported hidden_act 'gelu' (silu, or gelu_pytorch_tanh)");
    // The other architectures keep SiLU and plain norms.
    expect(parseModelConfig({ ...g3, architectures: ["LlamaForCausalLM"], hidden_activation: undefined, sliding_window: null }).gemmaNorms).toBe(false);
  });
  test("GLM-4.5 (Glm4MoeForCausalLM): grouped sigmoid routing, shared experts, dense first layers, rotate-half RoPE over half of each head; bad fields named", () => {
    // GLM-4.5-Air's fields on a smaller body.
    const air = { architectures: ["Glm4MoeForCausalLM"], hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 96, num_hidden_layers: 4, vocab_size: 10,
      attention_bias: true, partial_rotary_factor: 0.5, n_routed_experts: 128, num_experts_per_tok: 8, n_shared_experts: 1, moe_intermediate_size: 32, first_k_dense_replace: 1,
      n_group: 1, topk_group: 1, norm_topk_prob: true, routed_scaling_factor: 1.0, use_qk_norm: false };
    const c = parseModelConfig(air, "x/config.json");
    expect([c.rotaryDim, c.ropeInterleaved, c.qkvBias, c.oBias, c.qkNorm]).toEqual([8, false, true, false, false]);
    expect(c.moe).toEqual({ numExperts: 128, topK: 8, intermediateSize: 32, normTopK: true, sparseLayers: [false, true, true, true], sharedExpertIntermediateSize: 0,
      grouped: { numGroups: 1, topKGroups: 1, routedScalingFactor: 1 }, numSharedExperts: 1, naming: "glm4_moe", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    expect(parseModelConfig({ ...air, use_qk_norm: true }).qkNorm).toBe(true);
    const bad = (extra: Record<string, unknown>) => () => parseModelConfig({ ...air, ...extra }, "x/config.json");
    expect(bad({ n_group: 3 })).toThrow("x/config.json: n_group (3) must divide n_routed_experts (128)");
    expect(bad({ n_group: 8, topk_group: 9 })).toThrow("topk_group (9) exceeds n_group (8)");
    expect(bad({ n_group: 64, topk_group: 2 })).toThrow("num_experts_per_tok (8) exceeds the experts of topk_group (2) groups");
    expect(bad({ routed_scaling_factor: 0 })).toThrow("field 'routed_scaling_factor' must be a positive number, got 0");
    expect(bad({ n_shared_experts: -1 })).toThrow("n_shared_experts (-1): non-negative integers");
  });

  test("GPT-OSS (GptOssForCausalLM): alternating sliding and global layers, YaRN without rounding, biases and sinks, experts with a clamped SwiGLU; GptOssConfig's defaults", () => {
    // gpt-oss-20b's fields on a smaller body.
    const oss = { architectures: ["GptOssForCausalLM"], hidden_size: 64, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 16, intermediate_size: 32, num_hidden_layers: 4, vocab_size: 10,
      num_local_experts: 32, num_experts_per_tok: 4, experts_per_token: 4, attention_bias: true, sliding_window: 128, rope_theta: 150000, swiglu_limit: 7.0, max_position_embeddings: 131072,
      layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"], quantization_config: { quant_method: "mxfp4" },
      rope_scaling: { beta_fast: 32.0, beta_slow: 1.0, factor: 32.0, original_max_position_embeddings: 4096, rope_type: "yarn", truncate: false } };
    const c = parseModelConfig(oss, "x/config.json");
    expect([c.architecture, c.qkvBias, c.oBias, c.qkNorm, c.attentionSinks, c.layerWindows, c.ropeTheta, c.rmsNormEps, c.tieWordEmbeddings]).toEqual(["llama", true, true, false, true, [128, 0, 128, 0], 150000, 1e-5, false]);
    expect(c.ropeScaling).toEqual({ type: "yarn", factor: 32, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, attentionFactor: 0.1 * Math.log(32) + 1, truncate: false });
    expect(c.moe).toEqual({ numExperts: 32, topK: 4, intermediateSize: 32, normTopK: true, sparseLayers: [true, true, true, true], sharedExpertIntermediateSize: 0, grouped: null, numSharedExperts: 0,
      naming: "gpt_oss", routedOutputScale: 1, routerBias: true, expertBiases: true, swiglu: { alpha: 1.702, limit: 7 } });
    // What GptOssConfig fills in: layer types from the first layer sliding, window 128, base 150000 and the YaRN above, biases on.
    const { layer_types, sliding_window, rope_theta, rope_scaling, attention_bias, ...bare } = oss;
    const d = parseModelConfig({ ...bare, num_hidden_layers: 3 }, "x/config.json");
    expect([d.layerWindows, d.ropeTheta, d.qkvBias, d.oBias, d.ropeScaling?.type, d.ropeScaling?.type === "yarn" && d.ropeScaling.truncate]).toEqual([[128, 0, 128], 150000, true, true, "yarn", false]);
    // transformers 5's rope_parameters are read instead of the defaults.
    const t5 = parseModelConfig({ ...bare, rope_parameters: { rope_type: "yarn", rope_theta: 5000, factor: 8, original_max_position_embeddings: 1024, truncate: false } });
    expect([t5.ropeTheta, t5.ropeScaling?.type === "yarn" && t5.ropeScaling.factor]).toEqual([5000, 8]);
    expect(() => parseModelConfig({ ...oss, swiglu_limit: 0 }, "x/config.json")).toThrow("x/config.json: field 'swiglu_limit' must be a positive number, got 0");
    expect(() => parseModelConfig({ ...oss, num_experts_per_tok: 33 }, "x/config.json")).toThrow("num_experts_per_tok (33) exceeds num_local_experts (32)");
  });

  test("DeepSeek-V3 / V2 (DeepseekV3ForCausalLM, DeepseekV2ForCausalLM): multi-head latent attention's shapes and scale, V3's GLM-4.5-style experts with its defaults, V2's softmax ones; what is not supported is named", () => {
    // DeepSeek-V3's fields on a smaller body.
    const v3 = { architectures: ["DeepseekV3ForCausalLM"], hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 4, intermediate_size: 96, num_hidden_layers: 5, vocab_size: 10,
      q_lora_rank: 24, kv_lora_rank: 32, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, n_routed_experts: 16, num_experts_per_tok: 4, n_shared_experts: 1,
      moe_intermediate_size: 32, first_k_dense_replace: 3, n_group: 4, topk_group: 2, norm_topk_prob: true, routed_scaling_factor: 2.5, topk_method: "noaux_tc", scoring_func: "sigmoid",
      rope_theta: 10000, max_position_embeddings: 163840, rope_scaling: { type: "yarn", factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 1.0 } };
    const c = parseModelConfig(v3, "x/config.json");
    const ms = 0.1 * Math.log(40) + 1;
    expect(c.mla).toEqual({ qLoraRank: 24, kvLoraRank: 32, qkNopeHeadDim: 16, qkRopeHeadDim: 8, vHeadDim: 16, scale: ms * ms });
    expect([c.headDim, c.rotaryDim, c.numKvHeads, c.scales.attention, c.qkvBias, c.qkNorm]).toEqual([24, 8, 4, (ms * ms) / Math.sqrt(24), false, false]);
    // Both mscales 1: cos and sin unscaled (their ratio).
    expect(c.ropeScaling?.type === "yarn" && c.ropeScaling.attentionFactor).toBe(1);
    expect(c.moe).toEqual({ numExperts: 16, topK: 4, intermediateSize: 32, normTopK: true, sparseLayers: [false, false, false, true, true], sharedExpertIntermediateSize: 0,
      grouped: { numGroups: 4, topKGroups: 2, routedScalingFactor: 2.5 }, numSharedExperts: 1, naming: "glm4_moe", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    // DeepseekV3Config's defaults for what the file leaves out.
    const { n_group, topk_group, first_k_dense_replace, routed_scaling_factor, ...bare } = v3;
    const d = parseModelConfig({ ...bare, n_routed_experts: 64 }, "x/config.json");
    expect([d.moe!.grouped, d.moe!.sparseLayers]).toEqual([{ numGroups: 8, topKGroups: 4, routedScalingFactor: 2.5 }, [false, false, false, true, true]]);
    expect(parseModelConfig({ ...v3, q_lora_rank: null }).mla!.qLoraRank).toBeNull();
    const bad = (extra: Record<string, unknown>) => () => parseModelConfig({ ...v3, ...extra }, "x/config.json");
    expect(bad({ topk_method: "group_limited_greedy" })).toThrow("x/config.json: topk_method 'group_limited_greedy' is not supported (noaux_tc: DeepSeek-V3's)");
    expect(bad({ scoring_func: "softmax" })).toThrow("scoring_func 'softmax' is not supported");
    expect(bad({ rope_interleave: false })).toThrow("rope_interleave=false is not supported");
    expect(bad({ v_head_dim: 32 })).toThrow("v_head_dim (32) exceeds qk_nope_head_dim + qk_rope_head_dim (24)");
    expect(bad({ moe_layer_freq: 2 })).toThrow("moe_layer_freq 2 is not supported");
    // DeepSeek-V2 (V2-Lite's fields): the same attention, softmax ("greedy") routing, shared experts, the routed scale folded.
    const v2 = parseModelConfig({ ...v3, architectures: ["DeepseekV2ForCausalLM"], q_lora_rank: null, topk_method: "greedy", scoring_func: undefined, n_group: 1, topk_group: 1,
      n_shared_experts: 2, first_k_dense_replace: 1, norm_topk_prob: false, routed_scaling_factor: 1.0, rope_scaling: null }, "x/config.json");
    expect([v2.mla!.qLoraRank, v2.mla!.scale, v2.headDim, v2.scales.attention]).toEqual([null, 1, 24, 1 / Math.sqrt(24)]);
    expect(v2.moe).toEqual({ numExperts: 16, topK: 4, intermediateSize: 32, normTopK: false, sparseLayers: [false, true, true, true, true], sharedExpertIntermediateSize: 0,
      grouped: null, numSharedExperts: 2, naming: "glm4_moe", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    // DeepSeek-V2 / V2.5 / Coder-V2: group_limited_greedy (16 experts in 4 groups, 2 kept) through the grouped routing kernel, its scale there.
    const limited = parseModelConfig({ ...v3, architectures: ["DeepseekV2ForCausalLM"], q_lora_rank: null, topk_method: "group_limited_greedy", scoring_func: undefined, n_group: 4, topk_group: 2,
      n_shared_experts: 2, first_k_dense_replace: 1, norm_topk_prob: false, routed_scaling_factor: 16.0, rope_scaling: null }, "x/config.json");
    expect([limited.moe!.grouped, limited.moe!.routedOutputScale]).toEqual([{ numGroups: 4, topKGroups: 2, routedScalingFactor: 16, scoring: "softmax", groupScore: "max", correctionBias: false }, 1]);
    expect(() => parseModelConfig({ ...v3, architectures: ["DeepseekV2ForCausalLM"], topk_method: "noaux_tc" }, "x/config.json"))
      .toThrow("topk_method 'noaux_tc' is not supported for DeepSeek-V2 (greedy, or group_limited_greedy)");
    expect(() => parseModelConfig({ ...v3, architectures: ["DeepseekV2ForCausalLM"], topk_method: "group_limited_greedy", scoring_func: undefined, n_group: 3, topk_group: 1 }, "x/config.json"))
      .toThrow("n_group (3) must divide n_routed_experts (16)");
  });

  test("MiniMax-M2 (MiniMaxM2ForCausalLM): q/k norms across heads, rotary_dim, one-group sigmoid routing; what is not supported is named", () => {
    // MiniMax-M2's fields on a smaller body.
    const m2 = { architectures: ["MiniMaxM2ForCausalLM"], hidden_size: 64, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 16, intermediate_size: 32, num_hidden_layers: 2, vocab_size: 10,
      rotary_dim: 8, use_qk_norm: true, qk_norm_type: "per_layer", num_local_experts: 16, num_experts_per_tok: 4, scoring_func: "sigmoid", use_routing_bias: true };
    const c = parseModelConfig(m2, "x/config.json");
    expect([c.rotaryDim, c.qkNorm, c.qkNormAcrossHeads, c.inputNorms, c.ropeTheta, c.qkvBias, c.oBias]).toEqual([8, true, true, true, 5e6, false, false]);
    expect(c.moe).toEqual({ numExperts: 16, topK: 4, intermediateSize: 32, normTopK: true, sparseLayers: [true, true], sharedExpertIntermediateSize: 0,
      grouped: { numGroups: 1, topKGroups: 1, routedScalingFactor: 1 }, numSharedExperts: 0, naming: "minimax", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    const bad = (extra: Record<string, unknown>) => () => parseModelConfig({ ...m2, ...extra }, "x/config.json");
    expect(bad({ scoring_func: "softmax" })).toThrow("x/config.json: scoring_func 'softmax' is not supported (sigmoid: MiniMax-M2's)");
    expect(bad({ use_routing_bias: false })).toThrow("use_routing_bias=false is not supported");
    expect(bad({ use_qk_norm: false })).toThrow("use_qk_norm=false is not supported for MiniMax-M2");
  });

  test("ERNIE 4.5 MoE (Ernie4_5_MoeForCausalLM): its MoE layers' range and interval, softmax scores with a correction bias, shared experts; defaults; what is not supported is named", () => {
    // ERNIE-4.5-21B-A3B's fields on a smaller body (6 layers; MoE layers 1 … 4 at interval 1, then 2).
    const e = { architectures: ["Ernie4_5_MoeForCausalLM"], hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 96, num_hidden_layers: 6, vocab_size: 10,
      moe_num_experts: 64, moe_k: 6, moe_intermediate_size: 32, moe_num_shared_experts: 2, moe_layer_start_index: 1, moe_layer_end_index: 4, moe_layer_interval: 1, use_bias: false };
    const c = parseModelConfig(e, "x/config.json");
    expect([c.ropeInterleaved, c.ropeTheta, c.tieWordEmbeddings]).toEqual([true, 500000, true]);
    expect(c.moe).toEqual({ numExperts: 64, topK: 6, intermediateSize: 32, normTopK: true, sparseLayers: [false, true, true, true, true, false], sharedExpertIntermediateSize: 0,
      grouped: { numGroups: 1, topKGroups: 1, routedScalingFactor: 1, scoring: "softmax" }, numSharedExperts: 2, naming: "ernie", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    expect(parseModelConfig({ ...e, moe_layer_end_index: -1, moe_layer_interval: 2, tie_word_embeddings: false }, "x/config.json").moe!.sparseLayers).toEqual([false, true, false, true, false, true]);
    const bad = (extra: Record<string, unknown>) => () => parseModelConfig({ ...e, ...extra }, "x/config.json");
    expect(bad({ moe_k: 65 })).toThrow("x/config.json: moe_k (65) must be between 1 and moe_num_experts (64)");
    expect(bad({ moe_num_experts: [64, 64], moe_k: [6, 6] })).toThrow("multimodal expert groups");
    expect(bad({ moe_use_aux_free: false })).toThrow("moe_use_aux_free=false is not supported");
    expect(bad({ moe_layer_start_index: -2 })).toThrow("field 'moe_layer_start_index' must be a layer index (or -1), got -2");
    expect(bad({ use_bias: true })).toThrow("use_bias=true (biases on every projection, the MLP's too) is not supported");
  });

  test("mixtures of experts: Qwen3-MoE, Qwen2-MoE and Mixtral configs are parsed; bad MoE fields are named", () => {
    // Qwen3-30B-A3B's MoE fields (a smaller body).
    const base = { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, intermediate_size: 96, num_hidden_layers: 4, vocab_size: 10 };
    const q3 = { architectures: ["Qwen3MoeForCausalLM"], ...base, num_experts: 128, num_experts_per_tok: 8, moe_intermediate_size: 32, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [] };
    const c = parseModelConfig(q3, "x/config.json");
    expect(c.architecture).toBe("qwen3");
    expect(c.moe).toEqual({ numExperts: 128, topK: 8, intermediateSize: 32, normTopK: true, sparseLayers: [true, true, true, true], sharedExpertIntermediateSize: 0, grouped: null, numSharedExperts: 0, naming: "qwen", routedOutputScale: 1, routerBias: false, expertBiases: false, swiglu: null });
    // Transformers' rule: sparse unless in mlp_only_layers, when (layer + 1) is a multiple of decoder_sparse_step.
    expect(parseModelConfig({ ...q3, decoder_sparse_step: 2, mlp_only_layers: [3] }).moe!.sparseLayers).toEqual([false, true, false, false]);
    const q2 = parseModelConfig({ architectures: ["Qwen2MoeForCausalLM"], ...base, num_experts: 60, num_experts_per_tok: 4, moe_intermediate_size: 16, shared_expert_intermediate_size: 48 });
    expect([q2.qkvBias, q2.moe!.normTopK, q2.moe!.sharedExpertIntermediateSize]).toEqual([true, false, 48]);
    const mx = parseModelConfig({ architectures: ["MixtralForCausalLM"], ...base, num_local_experts: 8, num_experts_per_tok: 2, sliding_window: null });
    expect([mx.architecture, mx.moe!.intermediateSize, mx.moe!.normTopK, mx.moe!.naming, mx.slidingWindow]).toEqual(["llama", 96, true, "mixtral", null]);
    expect(parseModelConfig({ architectures: ["LlamaForCausalLM"], ...base }).moe).toBeNull();
    const gm = parseModelConfig({ architectures: ["GraniteMoeForCausalLM"], ...base, num_local_experts: 32, num_experts_per_tok: 8, residual_multiplier: 0.22 });
    expect([gm.moe!.numExperts, gm.moe!.topK, gm.moe!.intermediateSize, gm.moe!.normTopK, gm.moe!.naming, gm.scales.residual]).toEqual([32, 8, 96, true, "granite", 0.22]);
    const bad = (fields: Record<string, unknown>, arch = "Qwen3MoeForCausalLM") => () => parseModelConfig({ ...q3, architectures: [arch], ...fields }, "x/config.json");
    expect(bad({ num_experts_per_tok: 129 })).toThrow("x/config.json: num_experts_per_tok (129) exceeds the number of experts (128)");
    expect(bad({ num_experts: 2048, num_experts_per_tok: 2 })).toThrow("x/config.json: num_experts 2048 exceeds the 1024 experts supported");
    expect(bad({ mlp_only_layers: [4] })).toThrow("mlp_only_layers must list layer indices below num_hidden_layers (4), got [4]");
    expect(bad({ norm_topk_prob: "yes" })).toThrow(`field 'norm_topk_prob' must be a boolean, got "yes"`);
    expect(bad({ moe_intermediate_size: undefined })).toThrow("field 'moe_intermediate_size' must be a positive integer");
    expect(bad({}, "Qwen3ForCausalLM")).toThrow("x/config.json: architecture 'Qwen3ForCausalLM' is dense, but the config names experts");
  });
  test("a mixture of experts: a missing expert tensor is named; tensor parallelism must divide the experts' intermediate size", () => {
    const src = tinyModel({ arch: "mixtral", seed: 12, vocabSize: 256 });
    const dir = tempDir("broken-moe");
    for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(src, f), join(dir, f));
    const st = SafetensorsFile.open(join(src, "model.safetensors"));
    writeSafetensors(join(dir, "model.safetensors"), st.names().filter((n) => n !== "model.layers.1.block_sparse_moe.experts.3.w3.weight").map((n) => { const t = st.tensor(n); return { name: n, dtype: t.dtype, shape: t.shape, bytes: t.bytes.slice() }; }));
    expect(() => new CausalLM(loadModelConfig(dir), new CpuBackend(), 64).load(new Checkpoint(dir))).toThrow(/missing tensor 'model\.layers\.1\.block_sparse_moe\.experts\.3\.w3\.weight'/);
    const cfg = parseModelConfig({ architectures: ["Qwen2MoeForCausalLM"], hidden_size: 64, num_attention_heads: 4, intermediate_size: 96, num_hidden_layers: 1, vocab_size: 10, num_experts: 4, moe_intermediate_size: 18, shared_expert_intermediate_size: 42 });
    expect(() => checkShardable(cfg, 4)).toThrow("--tensor-parallel-size 4 does not divide the experts' intermediate size (18)");
    expect(() => checkShardable({ ...cfg, moe: { ...cfg.moe!, intermediateSize: 32 } }, 4)).toThrow("--tensor-parallel-size 4 does not divide shared_expert_intermediate_size (42)");
  });
});

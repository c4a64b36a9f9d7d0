/**
 * The CPU backend's paged, batched forward pass against an independent dense float64 reference
 * (plain causal attention over the whole sequence, no paging, no caching: test/dense-reference.ts).
 */
import { describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import type { StepInputs } from "../src/backend/backend.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { toFloat32 } from "../src/loader/dtype.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig } from "../src/model/config.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tinyModel } from "./helpers.ts";
import { referenceLogits, type W } from "./dense-reference.ts";
import type { TinyModelOptions } from "../src/model/tiny-model.ts";

function relError(a: Float32Array, b: Float64Array): number {
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return maxDiff / maxRef;
}

// ---------- the paged engine path ----------
interface SeqPlan { tokens: number[]; blocks: number[] }

/** Builds StepInputs for (seq, computed-before, new tokens) triples; logits for every token row. */
function stepInputs(parts: { seq: SeqPlan; start: number; count: number }[], blockSize: number): StepInputs {
  const tokenIds: number[] = [], positions: number[] = [], slots: number[] = [], queryStart = [0], seqLens: number[] = [];
  const width = Math.max(...parts.map((p) => p.seq.blocks.length));
  const tables = new Int32Array(parts.length * width);
  parts.forEach(({ seq, start, count }, i) => {
    for (let j = start; j < start + count; j++) {
      tokenIds.push(seq.tokens[j]!);
      positions.push(j);
      slots.push(seq.blocks[Math.floor(j / blockSize)]! * blockSize + (j % blockSize));
    }
    queryStart.push(tokenIds.length);
    seqLens.push(start + count);
    tables.set(seq.blocks, i * width);
  });
  return {
    tokenIds: Int32Array.from(tokenIds), positions: Int32Array.from(positions), slotMapping: Int32Array.from(slots),
    queryStart: Int32Array.from(queryStart), seqLens: Int32Array.from(seqLens), blockTables: tables, maxBlocksPerSeq: width,
    logitsRows: Int32Array.from(tokenIds.map((_, i) => i)),
  };
}

const LONGROPE = { type: "longrope", short_factor: [1, 1.25, 1.5, 2, 3, 5], long_factor: [1.1, 2, 4, 8, 16, 40] };

const CASES: [string, TinyModelOptions][] = [
  ["qwen3 (q/k norm, tied embeddings)", { arch: "qwen3", seed: 1, vocabSize: 2048 }],
  ["llama (llama3 rope scaling, GQA, untied)", { arch: "llama", seed: 2, vocabSize: 2048 }],
  ["qwen2 (qkv bias)", { arch: "qwen2", seed: 3, vocabSize: 2048, dtype: "F16" }],
  ["qwen3 full vocabulary", { arch: "qwen3", seed: 4, numLayers: 1 }],
  // Qwen's long-context recipe, scaled down: head_dim 16 and a 64-token original context put the ramp mid-way.
  ["granite (embedding, residual and attention multipliers, logits scaling; tied head)", { arch: "granite", seed: 6, vocabSize: 2048 }],
  ["smollm3 (layers without RoPE)", { arch: "smollm3", seed: 7, vocabSize: 2048, numLayers: 3 }],
  // Mixtures of experts: a dense layer among sparse ones, 8 experts (top 2 renormalized), a shared expert, all-sparse Mixtral.
  ["qwen3_moe (8 experts, top 2 renormalized; layer 1 dense)", { arch: "qwen3_moe", seed: 8, vocabSize: 2048, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1] }],
  ["qwen3_moe as transformers 5 stores it (experts fused per layer)", { arch: "qwen3_moe", seed: 8, vocabSize: 2048, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1], fusedExperts: true }],
  ["qwen2_moe (top 4 of 6 unnormalized, gated shared expert, qkv bias)", { arch: "qwen2_moe", seed: 9, vocabSize: 2048, numExperts: 6, topK: 4 }],
  ["mixtral (every layer sparse, top 2 of 4)", { arch: "mixtral", seed: 10, vocabSize: 2048 }],
  ["mixtral as transformers 5 stores it (mlp.gate, experts fused per layer)", { arch: "mixtral", seed: 10, vocabSize: 2048, fusedExperts: true }],
  ["granitemoe (Granite's multipliers; experts fused per layer, the residual multiplier folded into them)", { arch: "granitemoe", seed: 18, vocabSize: 2048 }],
  // Sliding windows shorter than the sequences (A and C reach 9 positions, B 10), across KV blocks of 4.
  ["mistral (sliding window 5 on every layer)", { arch: "mistral", seed: 11, vocabSize: 2048, slidingWindow: 5 }],
  ["qwen2 with use_sliding_window (window 3 from layer 1 on: max_window_layers)", { arch: "qwen2", seed: 12, vocabSize: 2048, slidingWindow: 3, maxWindowLayers: 1 }],
  ["gemma3 (sandwich norms, GELU-tanh, sliding layers with their own RoPE base, √H embeddings)", { arch: "gemma3", seed: 13, vocabSize: 2048, numLayers: 3 }],
  ["gemma2 (soft-capped attention scores and logits, alternating sliding layers)", { arch: "gemma2", seed: 15, vocabSize: 2048, numLayers: 3 }],
  ["qwen3 with YaRN rope scaling", { arch: "qwen3", seed: 5, vocabSize: 2048, ropeScaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64 } }],
  // Phi-4-mini's rotary embedding, scaled down: ¾ of each head rotates (12 of 16 dimensions), LongRoPE with a
  // factor per rotated frequency — the long ones where max-model-len (256) passes the pretrained length, else the short.
  ["phi3 with partial RoPE (¾) and LongRoPE, long factors", { arch: "phi3", seed: 16, vocabSize: 2048, partialRotaryFactor: 0.75, originalMaxPositionEmbeddings: 64, ropeScaling: LONGROPE }],
  // GLM: RoPE over half of each head, its pairs interleaved (loaded as rotate-half pairs); GLM-4-0414's output norms.
  ["glm (interleaved partial RoPE, q/k/v bias, fused gate/up)", { arch: "glm", seed: 17, vocabSize: 2048 }],
  ["glm4 (GLM-4-0414: norms of the attention and MLP outputs)", { arch: "glm4", seed: 19, vocabSize: 2048, numLayers: 3 }],
  // OLMo 2: norms after the attention and the MLP only, q/k norms over all heads; OLMo 3: three sliding layers of
  // four (window 5), YaRN on the global layer only.
  ["olmo2 (post-norms, q/k norms across heads)", { arch: "olmo2", seed: 20, vocabSize: 2048, numLayers: 3 }],
  ["seed_oss (q/k/v bias, o_proj bias by attention_out_bias)", { arch: "seed_oss", seed: 25, vocabSize: 2048 }],
  ["ernie4_5 (interleaved RoPE pairs over the whole head, tied embeddings)", { arch: "ernie4_5", seed: 24, vocabSize: 2048 }],
  // GLM-4.5: sigmoid routing with a correction bias, one of two groups of 4 experts kept, top 2 × 2.5, a shared expert; layer 0 dense.
  ["glm4_moe (GLM-4.5: grouped sigmoid routing, shared expert, dense first layer, half-head rotate-half RoPE)", { arch: "glm4_moe", seed: 23, vocabSize: 2048, numLayers: 3 }],
  // EXAONE 4.0: OLMo 2's norms, per-head q/k norms, three sliding layers of four and RoPE on them only.
  ["exaone4 (post-norms, per-head q/k norms, global layers without RoPE)", { arch: "exaone4", seed: 22, vocabSize: 2048, numLayers: 4 }],
  ["olmo3 (sliding layers, YaRN on the global one)", { arch: "olmo3", seed: 21, vocabSize: 2048, numLayers: 4, slidingWindow: 5, ropeScaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64 } }],
  // GPT-OSS: sinks, q/k/v/o biases, sliding (window 5) and global layers alternating, YaRN unrounded; 8 experts with a
  // router bias, top 2, expert biases and the clamped SwiGLU — as bf16 parameters and as MXFP4 blocks of the same values.
  ["gpt_oss (attention sinks, alternating sliding layers, experts with biases and a clamped SwiGLU)", { arch: "gpt_oss", seed: 26, vocabSize: 2048, numLayers: 4, slidingWindow: 5 }],
  ["gpt_oss with MXFP4 experts (the same values as blocks and scales)", { arch: "gpt_oss", seed: 26, vocabSize: 2048, numLayers: 4, slidingWindow: 5, mxfp4: true }],
  // DeepSeek-V3: multi-head latent attention (q through a q_lora, or one q_proj), interleaved RoPE on the rotary parts,
  // YaRN with both mscales (cos/sin and the scores' scale); layer 0 dense, then grouped sigmoid routing with a shared expert.
  ["deepseek_v3 (multi-head latent attention with a q_lora; YaRN mscales; GLM-4.5-style experts)", { arch: "deepseek_v3", seed: 27, vocabSize: 2048, numLayers: 3 }],
  ["deepseek_v3 without a q_lora (DeepSeek-V2-Lite's q_proj)", { arch: "deepseek_v3", seed: 28, vocabSize: 2048, numLayers: 3, qLoraRank: null }],
  // DeepSeek-V2: the same attention, softmax routing (top 2 of 8, × 2.0 folded into the routed experts), two shared experts.
  ["deepseek_v2 (MLA; softmax top-k × routed_scaling_factor beside two shared experts)", { arch: "deepseek_v2", seed: 29, vocabSize: 2048, numLayers: 3 }],
  // MiniMax-M2: q/k norms over whole projections, RoPE over half of each head, sigmoid routing with a correction bias.
  ["minimax_m2 (q/k norms across heads, partial RoPE, sigmoid routing with a correction bias)", { arch: "minimax_m2", seed: 30, vocabSize: 2048, numLayers: 2 }],
  // One group kept of four: both experts come from the group of the most probable one (keeping two groups could not differ from greedy top-2).
  ["deepseek_v2 with group_limited_greedy (8 experts in 4 groups, the one with the best single probability kept)", { arch: "deepseek_v2", seed: 32, vocabSize: 2048, numLayers: 3, groupLimited: { numGroups: 4, topKGroups: 1 } }],
  ["ernie4_5_moe (softmax routing with a correction bias, shared experts; layer 0 dense)", { arch: "ernie4_5_moe", seed: 31, vocabSize: 2048, numLayers: 3 }],
  // Cohere: the parallel block (attention and MLP on one LayerNorm's output), interleaved RoPE, logits × logit_scale.
  ["cohere (Command R: parallel block, LayerNorms without bias, interleaved RoPE, logit_scale; tied head)", { arch: "cohere", seed: 33, vocabSize: 2048 }],
  ["cohere with use_qk_norm (Command R+: q and k LayerNorms with a weight per head, before the interleaved RoPE)", { arch: "cohere", seed: 36, vocabSize: 2048, qkNorm: true }],
  ["cohere2 (Command R7B: three sliding layers of four with RoPE, the global one without)", { arch: "cohere2", seed: 34, vocabSize: 2048, numLayers: 4, slidingWindow: 5 }],
  ["olmoe (q/k norms across heads after pre-norms; softmax top 2 of 8 not renormalized, every layer)", { arch: "olmoe", seed: 35, vocabSize: 2048 }],
  ["phi3 with partial RoPE (¾) and LongRoPE, short factors", { arch: "phi3", seed: 16, vocabSize: 2048, partialRotaryFactor: 0.75, originalMaxPositionEmbeddings: 1024, ropeScaling: LONGROPE }],
];

describe("paged CPU forward matches a dense float64 reference", () => {
  for (const [name, opts] of CASES) {
    test(name, () => {
      const dir = tinyModel(opts);
      const cfg = loadModelConfig(dir);
      const rawConfig = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
      // The fused-experts (or MXFP4) checkpoint holds the same draws as its per-expert (bf16) twin, which the reference reads.
      const ckpt = new Checkpoint(opts.fusedExperts || opts.mxfp4 ? tinyModel({ ...opts, fusedExperts: false, mxfp4: false }) : dir);
      const cache = new Map<string, Float64Array>();
      const w: W = (n) => {
        let v = cache.get(n);
        if (!v) { const t = ckpt.tensor(n); v = Float64Array.from(toFloat32(t.bytes, t.dtype)); cache.set(n, v); }
        return v;
      };
      const backend = new CpuBackend();
      const model = new CausalLM(cfg, backend, 256);
      model.load(new Checkpoint(dir));
      const blockSize = 4;
      model.allocKvCache(32, blockSize);
      const rnd = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % cfg.vocabSize);
      // A: fresh 7-token prompt then one decode step. B: a 10-token prompt in two chunks (8 + 2).
      // C: shares A's first block (prefix cache) and adds 5 tokens. D: a 1-token prompt.
      const A: SeqPlan = { tokens: [...rnd(7, 1), 42], blocks: [3, 9] };
      const B: SeqPlan = { tokens: rnd(10, 2), blocks: [0, 5, 12] };
      const C: SeqPlan = { tokens: [...A.tokens.slice(0, 4), ...rnd(5, 3)], blocks: [3, 7, 8] };
      const D: SeqPlan = { tokens: rnd(1, 4), blocks: [20] };
      const steps = [
        [{ seq: A, start: 0, count: 7 }, { seq: B, start: 0, count: 8 }],
        [{ seq: B, start: 8, count: 2 }, { seq: A, start: 7, count: 1 }, { seq: C, start: 4, count: 5 }, { seq: D, start: 0, count: 1 }],
      ];
      const refs = new Map<SeqPlan, Float64Array[]>();
      let worst = 0;
      for (const parts of steps) {
        const step = backend.uploadStep(stepInputs(parts, blockSize));
        const logits = backend.toHost(model.forward(step));
        let row = 0;
        for (const { seq, start, count } of parts) {
          if (!refs.has(seq)) refs.set(seq, referenceLogits(cfg, w, seq.tokens, rawConfig));
          for (let j = start; j < start + count; j++, row++) {
            const err = relError(logits.subarray(row * cfg.vocabSize, (row + 1) * cfg.vocabSize), refs.get(seq)![j]!);
            worst = Math.max(worst, err);
          }
        }
      }
      expect(worst).toBeLessThanOrEqual(1e-4);
    }, 60_000); // the full-vocabulary float64 reference takes seconds on a busy 2-core machine
  }
});

test("LoRA adapters are refused on multi-head latent attention (its projections are not q_proj / k_proj / v_proj), naming why", () => {
  const dir = tinyModel({ arch: "deepseek_v3", seed: 27, vocabSize: 2048, numLayers: 3 });
  const model = new CausalLM(loadModelConfig(dir), new CpuBackend(), 64);
  model.load(new Checkpoint(dir));
  expect(() => model.enableLora(1, 8, "all")).toThrow("LoRA adapters are not supported with multi-head latent attention (DeepSeek)");
});

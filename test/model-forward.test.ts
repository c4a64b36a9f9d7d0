/**
 * The CPU backend's paged, batched forward pass against an independent dense float64 reference
 * (plain causal attention over the whole sequence, no paging, no caching), written here separately.
 */
import { describe, expect, test } from "bun:test";
import { CpuBackend } from "../src/backend/cpu/cpu-backend.ts";
import type { StepInputs } from "../src/backend/backend.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { toFloat32 } from "../src/loader/dtype.ts";
import { CausalLM } from "../src/model/causal-lm.ts";
import { loadModelConfig, type ModelConfig } from "../src/model/config.ts";
import { tinyModel } from "./helpers.ts";
import type { TinyModelOptions } from "../src/model/tiny-model.ts";

// ---------- dense float64 reference ----------
type W = (name: string) => Float64Array;

function refInvFreq(cfg: ModelConfig): number[] {
  const D = cfg.headDim;
  const out: number[] = [];
  for (let i = 0; i < D / 2; i++) {
    let f = Math.pow(cfg.ropeTheta, -(2 * i) / D);
    const s = cfg.ropeScaling;
    if (s && s.type === "llama3") {
      const wl = (2 * Math.PI) / f;
      const lowWl = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highWl = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      if (wl > lowWl) f = f / s.factor;
      else if (wl >= highWl) {
        const t = (s.originalMaxPositionEmbeddings / wl - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - t) * (f / s.factor) + t * f;
      }
    }
    out.push(Math.fround(f));
  }
  return out;
}

function rms(x: Float64Array, w: Float64Array, eps: number): Float64Array<ArrayBufferLike> {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

function matvec(W: Float64Array, x: Float64Array, outF: number, bias?: Float64Array): Float64Array {
  const inF = x.length;
  const y = new Float64Array(outF);
  for (let o = 0; o < outF; o++) {
    let s = bias ? bias[o]! : 0;
    for (let i = 0; i < inF; i++) s += W[o * inF + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

/** Logits at every position of `tokens`, computed densely in float64. */
function referenceLogits(cfg: ModelConfig, w: W, tokens: number[]): Float64Array[] {
  const H = cfg.hiddenSize, D = cfg.headDim, nH = cfg.numHeads, nKv = cfg.numKvHeads, I = cfg.intermediateSize, V = cfg.vocabSize;
  const emb = w("model.embed_tokens.weight");
  let xs = tokens.map((t) => emb.slice(t * H, (t + 1) * H));
  const inv = refInvFreq(cfg);
  const rope = (v: Float64Array, pos: number) => {
    const half = D / 2, out = v.slice();
    for (let i = 0; i < half; i++) {
      const a = Math.fround(pos * inv[i]!);
      out[i] = v[i]! * Math.cos(a) - v[i + half]! * Math.sin(a);
      out[i + half] = v[i + half]! * Math.cos(a) + v[i]! * Math.sin(a);
    }
    return out;
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const qs: Float64Array[][] = [], ks: Float64Array[][] = [], vs: Float64Array[][] = [];
    xs.forEach((x, pos) => {
      const h = rms(x, w(`${p}input_layernorm.weight`), cfg.rmsNormEps);
      const q = matvec(w(`${p}self_attn.q_proj.weight`), h, nH * D, cfg.qkvBias ? w(`${p}self_attn.q_proj.bias`) : undefined);
      const k = matvec(w(`${p}self_attn.k_proj.weight`), h, nKv * D, cfg.qkvBias ? w(`${p}self_attn.k_proj.bias`) : undefined);
      const v = matvec(w(`${p}self_attn.v_proj.weight`), h, nKv * D, cfg.qkvBias ? w(`${p}self_attn.v_proj.bias`) : undefined);
      const head = (a: Float64Array, i: number, norm?: string) => {
        let x: Float64Array = a.slice(i * D, (i + 1) * D);
        if (norm) x = rms(x, w(norm), cfg.rmsNormEps);
        return x;
      };
      qs.push(Array.from({ length: nH }, (_, i) => rope(head(q, i, cfg.qkNorm ? `${p}self_attn.q_norm.weight` : undefined), pos)));
      ks.push(Array.from({ length: nKv }, (_, i) => rope(head(k, i, cfg.qkNorm ? `${p}self_attn.k_norm.weight` : undefined), pos)));
      vs.push(Array.from({ length: nKv }, (_, i) => head(v, i)));
    });
    xs = xs.map((x, pos) => {
      const attn = new Float64Array(nH * D);
      for (let h = 0; h < nH; h++) {
        const kvh = Math.floor(h / (nH / nKv));
        const scores = [];
        for (let j = 0; j <= pos; j++) {
          let s = 0;
          for (let d = 0; d < D; d++) s += qs[pos]![h]![d]! * ks[j]![kvh]![d]!;
          scores.push(s / Math.sqrt(D));
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= pos; j++) for (let d = 0; d < D; d++) attn[h * D + d] += (e[j]! / z) * vs[j]![kvh]![d]!;
      }
      const o = matvec(w(`${p}self_attn.o_proj.weight`), attn, H, cfg.oBias ? w(`${p}self_attn.o_proj.bias`) : undefined);
      const x1 = x.map((v, i) => v + o[i]!);
      const h2 = rms(x1, w(`${p}post_attention_layernorm.weight`), cfg.rmsNormEps);
      const g = matvec(w(`${p}mlp.gate_proj.weight`), h2, I);
      const u = matvec(w(`${p}mlp.up_proj.weight`), h2, I);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const d = matvec(w(`${p}mlp.down_proj.weight`), a, H);
      return x1.map((v, i) => v + d[i]!);
    });
  }
  const head = cfg.tieWordEmbeddings ? emb : w("lm_head.weight");
  return xs.map((x) => matvec(head, rms(x, w("model.norm.weight"), cfg.rmsNormEps), V));
}

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

const CASES: [string, TinyModelOptions][] = [
  ["qwen3 (q/k norm, tied embeddings)", { arch: "qwen3", seed: 1, vocabSize: 2048 }],
  ["llama (llama3 rope scaling, GQA, untied)", { arch: "llama", seed: 2, vocabSize: 2048 }],
  ["qwen2 (qkv bias)", { arch: "qwen2", seed: 3, vocabSize: 2048, dtype: "F16" }],
  ["qwen3 full vocabulary", { arch: "qwen3", seed: 4, numLayers: 1 }],
];

describe("paged CPU forward matches a dense float64 reference", () => {
  for (const [name, opts] of CASES) {
    test(name, () => {
      const dir = tinyModel(opts);
      const cfg = loadModelConfig(dir);
      const ckpt = new Checkpoint(dir);
      const cache = new Map<string, Float64Array>();
      const w: W = (n) => {
        let v = cache.get(n);
        if (!v) { const t = ckpt.tensor(n); v = Float64Array.from(toFloat32(t.bytes, t.dtype)); cache.set(n, v); }
        return v;
      };
      const backend = new CpuBackend();
      const model = new CausalLM(cfg, backend, 256);
      model.load(ckpt);
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
          if (!refs.has(seq)) refs.set(seq, referenceLogits(cfg, w, seq.tokens));
          for (let j = start; j < start + count; j++, row++) {
            const err = relError(logits.subarray(row * cfg.vocabSize, (row + 1) * cfg.vocabSize), refs.get(seq)![j]!);
            worst = Math.max(worst, err);
          }
        }
      }
      expect(worst).toBeLessThanOrEqual(1e-4);
    });
  }
});

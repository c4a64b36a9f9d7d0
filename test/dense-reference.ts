/**
 * An independent dense float64 forward pass of the decoder (plain causal attention over the whole sequence,
 * no paging, no caching), written separately from src/model for the tests to check it against.
 */
import type { ModelConfig } from "../src/model/config.ts";

export type W = (name: string) => Float64Array;

function refInvFreq(cfg: ModelConfig): number[] {
  const D = cfg.headDim;
  const s = cfg.ropeScaling;
  // YaRN, as HF's _compute_yarn_parameters writes it: a ramp over dimensions between the correction range's ends.
  let yarnLow = 0, yarnHigh = 0;
  if (s && s.type === "yarn") {
    const corr = (rot: number) => (D * Math.log(s.originalMaxPositionEmbeddings / (rot * 2 * Math.PI))) / (2 * Math.log(cfg.ropeTheta));
    yarnLow = Math.max(s.truncate ? Math.floor(corr(s.betaFast)) : corr(s.betaFast), 0);
    yarnHigh = Math.min(s.truncate ? Math.ceil(corr(s.betaSlow)) : corr(s.betaSlow), D - 1);
    if (yarnLow === yarnHigh) yarnHigh += 0.001;
  }
  const out: number[] = [];
  for (let i = 0; i < D / 2; i++) {
    let f = Math.pow(cfg.ropeTheta, -(2 * i) / D);
    if (s && s.type === "llama3") {
      const wl = (2 * Math.PI) / f;
      const lowWl = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highWl = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      if (wl > lowWl) f = f / s.factor;
      else if (wl >= highWl) {
        const t = (s.originalMaxPositionEmbeddings / wl - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - t) * (f / s.factor) + t * f;
      }
    } else if (s && s.type === "linear") f = f / s.factor;
    else if (s && s.type === "yarn") {
      const ramp = Math.min(Math.max((i - yarnLow) / (yarnHigh - yarnLow), 0), 1);
      const extrapolation = 1 - ramp;
      f = (f / s.factor) * (1 - extrapolation) + f * extrapolation;
    }
    out.push(Math.fround(f));
  }
  return out;
}

/** YaRN's multiplier of cos and sin: 0.1·ln(factor) + 1 unless the config gives attention_factor. */
function refRopeScale(cfg: ModelConfig): number {
  const s = cfg.ropeScaling;
  return s && s.type === "yarn" ? s.attentionFactor : 1;
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

/** The final-norm hidden state at every position of `tokens`, computed densely in float64. */
export function referenceHidden(cfg: ModelConfig, w: W, tokens: number[], raw: Record<string, unknown> = {}): Float64Array[] {
  const H = cfg.hiddenSize, D = cfg.headDim, nH = cfg.numHeads, nKv = cfg.numKvHeads, I = cfg.intermediateSize;
  // Granite's multipliers, applied where HF's GraniteModel applies them (vbun folds them into weights).
  const mult = { embedding: 1, residual: 1, attention: 1 / Math.sqrt(D), ...graniteMultipliers(raw) };
  const emb = w("model.embed_tokens.weight");
  let xs = tokens.map((t) => emb.slice(t * H, (t + 1) * H).map((v) => v * mult.embedding));
  const inv = refInvFreq(cfg), m = refRopeScale(cfg);
  const rope = (v: Float64Array, pos: number) => {
    const half = D / 2, out = v.slice();
    for (let i = 0; i < half; i++) {
      const a = Math.fround(pos * inv[i]!), c = m * Math.cos(a), sn = m * Math.sin(a);
      out[i] = v[i]! * c - v[i + half]! * sn;
      out[i + half] = v[i + half]! * c + v[i]! * sn;
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
      // SmolLM3 (HF's use_rope = no_rope_layers[layer]): 0 leaves q and k unrotated.
      const rot = Array.isArray(raw.no_rope_layers) && raw.no_rope_layers[l] === 0 ? (x: Float64Array) => x : rope;
      qs.push(Array.from({ length: nH }, (_, i) => rot(head(q, i, cfg.qkNorm ? `${p}self_attn.q_norm.weight` : undefined), pos)));
      ks.push(Array.from({ length: nKv }, (_, i) => rot(head(k, i, cfg.qkNorm ? `${p}self_attn.k_norm.weight` : undefined), pos)));
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
          scores.push(s * mult.attention);
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= pos; j++) for (let d = 0; d < D; d++) attn[h * D + d] += (e[j]! / z) * vs[j]![kvh]![d]!;
      }
      const o = matvec(w(`${p}self_attn.o_proj.weight`), attn, H, cfg.oBias ? w(`${p}self_attn.o_proj.bias`) : undefined);
      const x1 = x.map((v, i) => v + o[i]! * mult.residual);
      const h2 = rms(x1, w(`${p}post_attention_layernorm.weight`), cfg.rmsNormEps);
      const g = matvec(w(`${p}mlp.gate_proj.weight`), h2, I);
      const u = matvec(w(`${p}mlp.up_proj.weight`), h2, I);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const d = matvec(w(`${p}mlp.down_proj.weight`), a, H);
      return x1.map((v, i) => v + d[i]! * mult.residual);
    });
  }
  return xs.map((x) => rms(x, w("model.norm.weight"), cfg.rmsNormEps));
}

/** Logits at every position of `tokens`, computed densely in float64. */
export function referenceLogits(cfg: ModelConfig, w: W, tokens: number[], raw: Record<string, unknown> = {}): Float64Array[] {
  const head = cfg.tieWordEmbeddings ? w("model.embed_tokens.weight") : w("lm_head.weight");
  const logitsScaling = typeof raw.logits_scaling === "number" ? raw.logits_scaling : 1;
  return referenceHidden(cfg, w, tokens, raw).map((h) => matvec(head, h, cfg.vocabSize).map((v) => v / logitsScaling));
}

/** Granite's multipliers as HF's config.json names them (`raw`: the file itself, not vbun's parse of it). */
function graniteMultipliers(raw: Record<string, unknown>): { embedding?: number; residual?: number; attention?: number } {
  const out: { embedding?: number; residual?: number; attention?: number } = {};
  if (typeof raw.embedding_multiplier === "number") out.embedding = raw.embedding_multiplier;
  if (typeof raw.residual_multiplier === "number") out.residual = raw.residual_multiplier;
  if (typeof raw.attention_multiplier === "number") out.attention = raw.attention_multiplier;
  return out;
}

/**
 * An independent dense float64 forward pass of the decoder (plain causal attention over the whole sequence,
 * no paging, no caching), written separately from src/model for the tests to check it against.
 */
import type { ModelConfig } from "../src/model/config.ts";

export type W = (name: string) => Float64Array;

/** Rotated dimensions per head: transformers' int(head_dim × partial_rotary_factor). */
function refRotaryDim(cfg: ModelConfig, raw: Record<string, unknown>): number {
  const glm = raw.model_type === "glm" || raw.model_type === "glm4";
  return Math.trunc(cfg.headDim * ((raw.partial_rotary_factor as number | undefined) ?? (glm ? 0.5 : 1)));
}

/**
 * LongRoPE as transformers' _compute_longrope_parameters writes it, read from config.json itself: frequency
 * 1 / (ext_i · θ^(2i/R)) with ext the long factors when the context passes the pretrained length (vLLM's
 * choice by max-model-len), and cos/sin scaled by √(1 + ln(max / original) / ln(original)).
 */
function refLongRope(raw: Record<string, unknown>, R: number, theta: number, maxModelLen: number): { inv: number[]; scale: number } | null {
  const rs = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (!rs || (rs.type ?? rs.rope_type) !== "longrope") return null;
  const original = raw.original_max_position_embeddings as number, max = raw.max_position_embeddings as number;
  const ext = (maxModelLen > original ? rs.long_factor : rs.short_factor) as number[];
  const inv = Array.from({ length: R / 2 }, (_, i) => Math.fround(1 / (ext[i]! * Math.pow(theta, (2 * i) / R))));
  return { inv, scale: max / original <= 1 ? 1 : Math.sqrt(1 + Math.log(max / original) / Math.log(original)) };
}

function refInvFreq(cfg: ModelConfig, D = cfg.headDim): number[] {
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

/** LayerNorm without a bias (HF's CohereLayerNorm): (x − mean) / √(mean of (x − mean)² + eps) · w. */
function layerNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array<ArrayBufferLike> {
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  const variance = x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length;
  return x.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * w[i]!);
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
export function referenceHidden(cfg: ModelConfig, weights: W, tokens: number[], raw: Record<string, unknown> = {}, maxModelLen = 256): Float64Array[] {
  const H = cfg.hiddenSize, D = cfg.headDim, nH = cfg.numHeads, nKv = cfg.numKvHeads, I = cfg.intermediateSize;
  // Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj (GLM: gate/up only): HF splits their outputs by rows.
  const fusedGateUp = raw.model_type === "phi3" || raw.model_type === "glm" || raw.model_type === "glm4";
  const w: W = !fusedGateUp ? weights : (name) => {
    const m = /^(.*)\.(self_attn\.(q|k|v)_proj|mlp\.(gate|up)_proj)\.weight$/.exec(name);
    if (!m || (m[3] && raw.model_type !== "phi3")) return weights(name);
    const rows = m[3] ? { q: [0, nH * D], k: [nH * D, nKv * D], v: [(nH + nKv) * D, nKv * D] }[m[3]]! : m[4] === "gate" ? [0, I] : [I, I];
    const fused = weights(`${m[1]}.${m[3] ? "self_attn.qkv_proj" : "mlp.gate_up_proj"}.weight`);
    return fused.subarray(rows[0]! * H, (rows[0]! + rows[1]!) * H);
  };
  // Gemma 3 (HF's Gemma3TextModel): (1 + w) norms, √H embeddings, query_pre_attn_scalar, sandwich norms,
  // GELU-tanh, and rope_local_base_freq on its sliding layers.
  const gemma = raw.model_type === "gemma3_text" || raw.model_type === "gemma2";
  // Gemma 2 soft-caps the scaled attention scores: cap · tanh(s / cap).
  const cap = typeof raw.attn_logit_softcapping === "number" ? raw.attn_logit_softcapping : 0;
  const softcap = (s: number) => (cap ? cap * Math.tanh(s / cap) : s);
  // Cohere (HF's CohereDecoderLayer / Cohere2DecoderLayer): LayerNorms without bias of layer_norm_eps; the attention and
  // the MLP both on the layer's one normed input, their outputs added to the stream together.
  const cohere = raw.model_type === "cohere" || raw.model_type === "cohere2";
  const norm = (x: Float64Array, name: string) => cohere ? layerNorm(x, w(name), (raw.layer_norm_eps ?? 1e-5) as number)
    : rms(x, gemma ? w(name).map((v) => 1 + v) : w(name), cfg.rmsNormEps);
  // Granite's multipliers, applied where HF's GraniteModel applies them (vbun folds them into weights).
  const mult = { embedding: 1, residual: 1, attention: 1 / Math.sqrt(D), ...graniteMultipliers(raw), ...(gemma ? { embedding: Math.sqrt(H), attention: 1 / Math.sqrt(raw.query_pre_attn_scalar as number) } : {}) };
  const emb = w("model.embed_tokens.weight");
  let xs = tokens.map((t) => emb.slice(t * H, (t + 1) * H).map((v) => v * mult.embedding));
  // Partial RoPE (Phi-4-mini): the first R dimensions rotate, i with i + R / 2; the rest pass through.
  const R = refRotaryDim(cfg, raw);
  // GLM (HF's rotate_half_llm): frequency i turns the pair (2i, 2i + 1) instead of (i, i + R / 2).
  // ERNIE 4.5 too (HF's Ernie4_5 apply_rotary_pos_emb: GLM's rotate_half with cos/sin repeated pairwise), over the whole head.
  // Cohere too (its rotate_half and repeat_interleave'd cos/sin).
  const interleaved = raw.model_type === "glm" || raw.model_type === "glm4" || raw.model_type === "ernie4_5" || raw.model_type === "ernie4_5_moe" || cohere;
  const ropeWith = (inv: number[], m: number) => (v: Float64Array, pos: number) => {
    const half = R / 2, out = v.slice();
    for (let i = 0; i < half; i++) {
      const a = Math.fround(pos * inv[i]!), c = m * Math.cos(a), sn = m * Math.sin(a);
      const [x, y] = interleaved ? [2 * i, 2 * i + 1] : [i, i + half];
      out[x] = v[x]! * c - v[y]! * sn;
      out[y] = v[y]! * c + v[x]! * sn;
    }
    return out;
  };
  const longRope = refLongRope(raw, R, cfg.ropeTheta, maxModelLen);
  const globalRope = longRope ? ropeWith(longRope.inv, longRope.scale) : ropeWith(refInvFreq(cfg, R), refRopeScale(cfg));
  // OLMo 2 / 3 (HF's Olmo2DecoderLayer): no norm before the attention or the MLP, their outputs normed instead;
  // q_norm / k_norm over the whole q and k projections. OLMo 3's sliding layers rotate unscaled (vLLM's reading).
  // Seed-OSS (HF's SeedOssAttention): o_proj's bias by attention_out_bias, apart from q/k/v's attention_bias.
  const oBias = raw.model_type === "seed_oss" ? raw.attention_out_bias === true : cfg.oBias;
  const olmo = raw.model_type === "olmo2" || raw.model_type === "olmo3";
  // EXAONE 4.0 (HF's Exaone4Attention / Olmo2DecoderLayer): OLMo 2's norms after each sublayer, per-head q/k norms,
  // RoPE only on the sliding layers when there are any ("global NoPE").
  const exaone4 = raw.model_type === "exaone4", postNorms = olmo || exaone4;
  const exaoneHybrid = exaone4 && raw.sliding_window != null;
  const localRope = typeof raw.rope_local_base_freq === "number" ? ropeWith(refInvFreq({ ...cfg, ropeTheta: raw.rope_local_base_freq as number, ropeScaling: null }, R), 1)
    : raw.model_type === "olmo3" ? ropeWith(refInvFreq({ ...cfg, ropeScaling: null }, R), 1) : globalRope;
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const qs: Float64Array[][] = [], ks: Float64Array[][] = [], vs: Float64Array[][] = [], hs: Float64Array[] = [];
    // GPT-OSS (HF's eager_attention_forward with s_aux): each head's sink joins its softmax as one more logit, then is dropped.
    const sinks = raw.model_type === "gpt_oss" ? w(`${p}self_attn.sinks`) : null;
    const window = refWindow(raw, l);
    const rope = window > 0 ? localRope : globalRope;
    xs.forEach((x, pos) => {
      const h = postNorms ? x : norm(x, `${p}input_layernorm.weight`);
      hs.push(h);
      if (raw.model_type === "deepseek_v3" || raw.model_type === "deepseek_v2") {
        const r = refMlaHeads(w, raw, p, h, H, nH, pos, cfg);
        qs.push(r.q); ks.push(r.k); vs.push(r.v);
        return;
      }
      let q = matvec(w(`${p}self_attn.q_proj.weight`), h, nH * D, cfg.qkvBias ? w(`${p}self_attn.q_proj.bias`) : undefined);
      let k = matvec(w(`${p}self_attn.k_proj.weight`), h, nKv * D, cfg.qkvBias ? w(`${p}self_attn.k_proj.bias`) : undefined);
      // OLMo 2 / 3's and MiniMax-M2's q/k norms span the whole projections.
      // OLMoE's too (HF's OlmoeAttention), after pre-norms.
      if (olmo || raw.model_type === "minimax_m2" || raw.model_type === "olmoe") {
        q = norm(q, `${p}self_attn.q_norm.weight`);
        k = norm(k, `${p}self_attn.k_norm.weight`);
      }
      const v = matvec(w(`${p}self_attn.v_proj.weight`), h, nKv * D, cfg.qkvBias ? w(`${p}self_attn.v_proj.bias`) : undefined);
      const head = (a: Float64Array, i: number, normName?: string) => {
        let x: Float64Array = a.slice(i * D, (i + 1) * D);
        // Cohere's q/k LayerNorms (use_qk_norm) have a weight row per head.
        if (normName && cohere) x = layerNorm(x, w(normName).subarray(i * D, (i + 1) * D), (raw.layer_norm_eps ?? 1e-5) as number);
        else if (normName) x = norm(x, normName);
        return x;
      };
      // SmolLM3 (HF's use_rope = no_rope_layers[layer]): 0 leaves q and k unrotated.
      // Cohere 2 (HF's Cohere2Attention): RoPE only where the layer has a sliding window.
      const rot = (Array.isArray(raw.no_rope_layers) && raw.no_rope_layers[l] === 0) || (exaoneHybrid && window === 0) || (raw.model_type === "cohere2" && window === 0) ? (x: Float64Array) => x : rope;
      const perHead = cfg.qkNorm && !olmo && raw.model_type !== "minimax_m2" && raw.model_type !== "olmoe";
      qs.push(Array.from({ length: nH }, (_, i) => rot(head(q, i, perHead ? `${p}self_attn.q_norm.weight` : undefined), pos)));
      ks.push(Array.from({ length: nKv }, (_, i) => rot(head(k, i, perHead ? `${p}self_attn.k_norm.weight` : undefined), pos)));
      vs.push(Array.from({ length: nKv }, (_, i) => head(v, i)));
    });
    // MLA: query / key heads of qk_nope + qk_rope, values of v_head_dim (HF's own widths).
    const Dq = qs[0]![0]!.length, Dv = vs[0]![0]!.length;
    const scaling = raw.model_type === "deepseek_v3" || raw.model_type === "deepseek_v2" ? refMlaScaling(raw, Dq) : mult.attention;
    xs = xs.map((x, pos) => {
      const attn = new Float64Array(nH * Dv);
      for (let h = 0; h < nH; h++) {
        const kvh = Math.floor(h / (nH / nKv));
        const scores: number[] = [];
        // A sliding window W: positions pos − W < j ≤ pos (their scores stay at the same index j).
        const lo = window > 0 ? Math.max(0, pos - window + 1) : 0;
        for (let j = 0; j < lo; j++) scores.push(-Infinity);
        for (let j = lo; j <= pos; j++) {
          let s = 0;
          for (let d = 0; d < Dq; d++) s += qs[pos]![h]![d]! * ks[j]![kvh]![d]!;
          scores.push(softcap(s * scaling));
        }
        const sink = sinks ? sinks[h]! : -Infinity;
        const m = Math.max(...scores, sink);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0) + Math.exp(sink - m);
        for (let j = 0; j <= pos; j++) for (let d = 0; d < Dv; d++) attn[h * Dv + d] += (e[j]! / z) * vs[j]![kvh]![d]!;
      }
      const o = matvec(w(`${p}self_attn.o_proj.weight`), attn, H, oBias ? w(`${p}self_attn.o_proj.bias`) : undefined);
      if (cohere) {
        const d = refMlp(w, `${p}mlp.`, hs[pos]!, I, H);
        return x.map((v, i) => v + o[i]! + d[i]!);
      }
      if (gemma) {
        const x1 = x.map((v, i) => v + norm(o, `${p}post_attention_layernorm.weight`)[i]!);
        const d = norm(refMlp(w, `${p}mlp.`, norm(x1, `${p}pre_feedforward_layernorm.weight`), I, H, undefined, geluTanh), `${p}post_feedforward_layernorm.weight`);
        return x1.map((v, i) => v + d[i]!);
      }
      if (postNorms) {
        const x1 = x.map((v, i) => v + norm(o, `${p}post_attention_layernorm.weight`)[i]!);
        const d = norm(refMlp(w, `${p}mlp.`, x1, I, H), `${p}post_feedforward_layernorm.weight`);
        return x1.map((v, i) => v + d[i]!);
      }
      if (raw.model_type === "glm4") {
        // HF's Glm4DecoderLayer: post_self_attn_layernorm on the attention output, post_attention_layernorm before the MLP, post_mlp_layernorm after it.
        const x1 = x.map((v, i) => v + norm(o, `${p}post_self_attn_layernorm.weight`)[i]!);
        const d = norm(refMlp(w, `${p}mlp.`, norm(x1, `${p}post_attention_layernorm.weight`), I, H), `${p}post_mlp_layernorm.weight`);
        return x1.map((v, i) => v + d[i]!);
      }
      const x1 = x.map((v, i) => v + o[i]! * mult.residual);
      const h2 = norm(x1, `${p}post_attention_layernorm.weight`);
      const d = sparseLayer(raw, l) ? refSparseMlp(w, raw, p, h2, H) : refMlp(w, `${p}mlp.`, h2, I, H);
      return x1.map((v, i) => v + d[i]! * mult.residual);
    });
  }
  return xs.map((x) => norm(x, "model.norm.weight"));
}

/** YaRN's mscale as HF's yarn_get_mscale. */
const yarnMscale = (factor: number, m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);

/** HF's DeepseekV3Attention.scaling: 1/√(qk head dim), × yarn_get_mscale(factor, mscale_all_dim)² when rope_scaling sets mscale_all_dim. */
function refMlaScaling(raw: Record<string, unknown>, qkHeadDim: number): number {
  const rs = raw.rope_scaling as Record<string, number> | null | undefined;
  const m = rs?.mscale_all_dim ? yarnMscale(rs.factor!, rs.mscale_all_dim) : 1;
  return qkHeadDim ** -0.5 * m * m;
}

/**
 * DeepSeek-V3's attention inputs at one position, as HF's DeepseekV3Attention computes them from config.json: q from
 * q_proj, or q_b_proj(q_a_layernorm(q_a_proj(h))) (norms of eps 1e-6); the latent and the shared rotary key from
 * kv_a_proj_with_mqa, each head's nope key and value from kv_b_proj(kv_a_layernorm(latent)); RoPE on the rotary parts
 * with interleaved pairs (apply_rotary_pos_emb_interleave) and cos/sin × mscale(factor, mscale) / mscale(factor,
 * mscale_all_dim). Heads are [nope | rope] (HF's concatenation), values v_head_dim wide.
 */
function refMlaHeads(w: W, raw: Record<string, unknown>, p: string, h: Float64Array, H: number, nH: number, pos: number, cfg: ModelConfig) {
  const a = `${p}self_attn.`, qL = raw.q_lora_rank as number | null, kvL = raw.kv_lora_rank as number, R = raw.qk_rope_head_dim as number;
  const N = raw.qk_nope_head_dim as number, V = raw.v_head_dim as number, Dq = N + R;
  const norm6 = (x: Float64Array, name: string) => rms(x, w(name), 1e-6);
  const q = qL == null ? matvec(w(`${a}q_proj.weight`), h, nH * Dq) : matvec(w(`${a}q_b_proj.weight`), norm6(matvec(w(`${a}q_a_proj.weight`), h, qL), `${a}q_a_layernorm.weight`), nH * Dq);
  const ckv = matvec(w(`${a}kv_a_proj_with_mqa.weight`), h, kvL + R);
  const kv = matvec(w(`${a}kv_b_proj.weight`), norm6(ckv.slice(0, kvL), `${a}kv_a_layernorm.weight`), nH * (N + V));
  const rs = raw.rope_scaling as Record<string, number> | null | undefined;
  const attnFactor = rs?.mscale && rs.mscale_all_dim ? yarnMscale(rs.factor!, rs.mscale) / yarnMscale(rs.factor!, rs.mscale_all_dim) : rs ? yarnMscale(rs.factor!, 1) : 1;
  const inv = refInvFreq(cfg, R);
  // Interleaved pairs (2i, 2i + 1) turn by frequency i.
  const rope = (x: Float64Array) => {
    const out = new Float64Array(R);
    for (let i = 0; i < R / 2; i++) {
      const ang = Math.fround(pos * inv[i]!), c = attnFactor * Math.cos(ang), sn = attnFactor * Math.sin(ang);
      out[i] = x[2 * i]! * c - x[2 * i + 1]! * sn;
      out[i + R / 2] = x[2 * i + 1]! * c + x[2 * i]! * sn;
    }
    return out;
  };
  const kRot = rope(ckv.slice(kvL, kvL + R));
  const cat = (x: Float64Array, y: Float64Array) => { const o = new Float64Array(x.length + y.length); o.set(x); o.set(y, x.length); return o; };
  return {
    q: Array.from({ length: nH }, (_, i) => cat(q.slice(i * Dq, i * Dq + N), rope(q.slice(i * Dq + N, (i + 1) * Dq)))),
    k: Array.from({ length: nH }, (_, i) => cat(kv.slice(i * (N + V), i * (N + V) + N), kRot)),
    v: Array.from({ length: nH }, (_, i) => kv.slice(i * (N + V) + N, (i + 1) * (N + V))),
  };
}

/**
 * Layer l's sliding window from config.json as transformers reads it (0: full attention): layer_types where
 * given; Qwen's use_sliding_window from max_window_layers on; otherwise (Mistral) a non-null sliding_window.
 */
function refWindow(raw: Record<string, unknown>, l: number): number {
  const w = raw.sliding_window as number | null | undefined;
  if (!w || raw.use_sliding_window === false) return 0;
  if (Array.isArray(raw.layer_types)) return raw.layer_types[l] === "sliding_attention" ? w : 0;
  // Cohere 2 as its checkpoints were first saved: every sliding_window_pattern-th layer global.
  if (raw.model_type === "cohere2") return (l + 1) % ((raw.sliding_window_pattern ?? 4) as number) !== 0 ? w : 0;
  if (raw.use_sliding_window === true) return l >= ((raw.max_window_layers as number | undefined) ?? 0) ? w : 0;
  return w;
}

/** down(silu(gate · x) · (up · x)) with the projections under `prefix` (gate_proj, up_proj, down_proj). */
const silu = (x: number) => x / (1 + Math.exp(-x));
/** PyTorch's gelu(approximate="tanh"). */
const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

function refMlp(w: W, prefix: string, x: Float64Array, I: number, H: number, names = ["gate_proj", "up_proj", "down_proj"], act = silu): Float64Array {
  const g = matvec(w(`${prefix}${names[0]}.weight`), x, I);
  const u = matvec(w(`${prefix}${names[1]}.weight`), x, I);
  const a = g.map((gv, i) => act(gv) * u[i]!);
  return matvec(w(`${prefix}${names[2]}.weight`), a, H);
}

/** Whether layer l of a mixture-of-experts config.json (`raw`) routes to experts (transformers' rule). */
function sparseLayer(raw: Record<string, unknown>, l: number): boolean {
  if (raw.model_type === "glm4_moe" || raw.model_type === "deepseek_v3" || raw.model_type === "deepseek_v2") return l >= ((raw.first_k_dense_replace ?? 1) as number);
  if (raw.model_type === "ernie4_5_moe") {
    const end = (raw.moe_layer_end_index ?? -1) === -1 ? Infinity : (raw.moe_layer_end_index as number);
    return (l + 1) % ((raw.moe_layer_interval ?? 1) as number) === 0 && l >= ((raw.moe_layer_start_index ?? 1) as number) && l <= end;
  }
  if (raw.num_local_experts) return true;
  if (!raw.num_experts) return false;
  const only = (raw.mlp_only_layers ?? []) as number[], step = (raw.decoder_sparse_step ?? 1) as number;
  return !only.includes(l) && (l + 1) % step === 0;
}

/**
 * A sparse MLP as transformers writes it, read from config.json's own fields: softmax over the router's
 * logits, the top k, renormalized (Mixtral; Qwen when norm_topk_prob), the weighted sum of those experts'
 * MLPs — plus Qwen2-MoE's shared expert times sigmoid(its gate).
 */
function refSparseMlp(w: W, raw: Record<string, unknown>, p: string, x: Float64Array, H: number): Float64Array {
  // DeepSeek-V3's DeepseekV3MoE is GLM-4.5's (GLM's was written after it).
  if (raw.model_type === "glm4_moe" || raw.model_type === "deepseek_v3") return refGlm4MoeMlp(w, raw, `${p}mlp.`, x, H);
  if (raw.model_type === "gpt_oss") return refGptOssMlp(w, raw, `${p}mlp.`, x, H);
  if (raw.model_type === "deepseek_v2") return refDeepseekV2Mlp(w, raw, `${p}mlp.`, x, H);
  if (raw.model_type === "minimax_m2") return refMinimaxM2Mlp(w, raw, `${p}block_sparse_moe.`, x, H);
  if (raw.model_type === "ernie4_5_moe") return refErnieMoeMlp(w, raw, `${p}mlp.`, x, H);
  const mixtral = raw.num_local_experts != null, m = mixtral ? `${p}block_sparse_moe.` : `${p}mlp.`;
  const E = (mixtral ? raw.num_local_experts : raw.num_experts) as number, k = raw.num_experts_per_tok as number;
  // (OLMoE's intermediate_size is an expert's, as Mixtral's.)
  const I = (mixtral || raw.model_type === "olmoe" ? raw.intermediate_size : raw.moe_intermediate_size) as number;
  // Granite: router.layer, experts fused as input_linear [E, 2I, H] and output_linear [E, H, I].
  const granite = raw.model_type === "granitemoe";
  const logits = matvec(w(granite ? `${m}router.layer.weight` : `${m}gate.weight`), x, E);
  const top = Math.max(...logits), ex = logits.map((v) => Math.exp(v - top)), z = ex.reduce((a, b) => a + b, 0);
  const chosen = [...ex.keys()].sort((a, b) => ex[b]! - ex[a]! || a - b).slice(0, k);
  const probs = chosen.map((e) => ex[e]! / z), sum = probs.reduce((a, b) => a + b, 0);
  const scale = mixtral || raw.norm_topk_prob === true ? 1 / sum : 1;
  const out = new Float64Array(H);
  chosen.forEach((e, j) => {
    const y = granite ? fusedExpert(w(`${m}input_linear.weight`), w(`${m}output_linear.weight`), e, x, I, H) : refMlp(w, `${m}experts.${e}.`, x, I, H, mixtral ? ["w1", "w3", "w2"] : undefined);
    for (let i = 0; i < H; i++) out[i]! += probs[j]! * scale * y[i]!;
  });
  const S = raw.shared_expert_intermediate_size as number | undefined;
  if (S) {
    const y = refMlp(w, `${m}shared_expert.`, x, S, H), gate = matvec(w(`${m}shared_expert_gate.weight`), x, 1)[0]!;
    for (let i = 0; i < H; i++) out[i]! += y[i]! / (1 + Math.exp(-gate));
  }
  return out;
}

/**
 * GLM-4.5's sparse MLP as HF's Glm4MoeMoE writes it: sigmoid scores of the router's logits; experts chosen by score +
 * e_score_correction_bias among the topk_group groups whose two best choices sum highest (the others' experts count
 * as 0); their scores, renormalized (+1e-20) when norm_topk_prob, × routed_scaling_factor, weigh their MLPs; the
 * shared experts' MLP (n_shared_experts × moe_intermediate_size rows) is added.
 */
function refGlm4MoeMlp(w: W, raw: Record<string, unknown>, m: string, x: Float64Array, H: number): Float64Array {
  const E = raw.n_routed_experts as number, k = raw.num_experts_per_tok as number, I = raw.moe_intermediate_size as number;
  const G = (raw.n_group ?? 1) as number, TG = (raw.topk_group ?? 1) as number, per = E / G;
  const score = matvec(w(`${m}gate.weight`), x, E).map((v) => 1 / (1 + Math.exp(-v)));
  const bias = w(`${m}gate.e_score_correction_bias`);
  const choice = score.map((v, e) => v + bias[e]!);
  const groupScore = Array.from({ length: G }, (_, g) => {
    const best = Array.from(choice.subarray(g * per, (g + 1) * per)).sort((a, b) => b - a);
    return best[0]! + (per > 1 ? best[1]! : 0);
  });
  const kept = new Set([...groupScore.keys()].sort((a, b) => groupScore[b]! - groupScore[a]! || a - b).slice(0, TG));
  const masked = choice.map((v, e) => (kept.has(Math.floor(e / per)) ? v : 0));
  const chosen = [...masked.keys()].sort((a, b) => masked[b]! - masked[a]! || a - b).slice(0, k);
  const sum = chosen.reduce((a, e) => a + score[e]!, 0);
  const factor = ((raw.norm_topk_prob ?? true) ? 1 / (sum + 1e-20) : 1) * ((raw.routed_scaling_factor ?? 1) as number);
  const out = refMlp(w, `${m}shared_experts.`, x, I * ((raw.n_shared_experts ?? 1) as number), H);
  for (const e of chosen) {
    const y = refMlp(w, `${m}experts.${e}.`, x, I, H);
    for (let i = 0; i < H; i++) out[i]! += score[e]! * factor * y[i]!;
  }
  return out;
}

/**
 * GPT-OSS's MLP as HF's GptOssMLP writes it, on transformers' bf16 parameters: router logits W·x + b, the top k of
 * them, softmax over those; each expert's x · gate_up_proj[e] + bias (gate and up interleaved), the gate capped at
 * swiglu_limit and up clamped to ±limit, (up + 1) · gate · sigmoid(1.702 · gate), then · down_proj[e] + bias.
 */
function refGptOssMlp(w: W, raw: Record<string, unknown>, m: string, x: Float64Array, H: number): Float64Array {
  const E = raw.num_local_experts as number, k = raw.num_experts_per_tok as number, I = raw.intermediate_size as number;
  const limit = (raw.swiglu_limit ?? 7) as number, alpha = (raw.swiglu_alpha ?? 1.702) as number;
  const logits = matvec(w(`${m}router.weight`), x, E, w(`${m}router.bias`));
  const chosen = [...logits.keys()].sort((a, b) => logits[b]! - logits[a]! || a - b).slice(0, k);
  const top = logits[chosen[0]!]!, ex = chosen.map((e) => Math.exp(logits[e]! - top)), z = ex.reduce((a, b) => a + b, 0);
  const gu = w(`${m}experts.gate_up_proj`), gb = w(`${m}experts.gate_up_proj_bias`), dn = w(`${m}experts.down_proj`), db = w(`${m}experts.down_proj_bias`);
  const out = new Float64Array(H);
  chosen.forEach((e, j) => {
    const a = new Float64Array(I);
    for (let i = 0; i < I; i++) {
      let gate = gb[e * 2 * I + 2 * i]!, up = gb[e * 2 * I + 2 * i + 1]!;
      for (let h = 0; h < H; h++) {
        gate += x[h]! * gu[(e * H + h) * 2 * I + 2 * i]!;
        up += x[h]! * gu[(e * H + h) * 2 * I + 2 * i + 1]!;
      }
      gate = Math.min(gate, limit);
      up = Math.min(Math.max(up, -limit), limit);
      a[i] = (up + 1) * gate / (1 + Math.exp(-alpha * gate));
    }
    for (let o = 0; o < H; o++) {
      let y = db[e * H + o]!;
      for (let i = 0; i < I; i++) y += a[i]! * dn[(e * I + i) * H + o]!;
      out[o]! += (ex[j]! / z) * y;
    }
  });
  return out;
}

/**
 * DeepSeek-V2's MLP as HF's DeepseekV2Moe writes it: softmax of the f32 router logits, the top k ("greedy"; with
 * "group_limited_greedy" among the topk_group groups whose best probability is highest, the others counted as 0), their
 * probabilities × routed_scaling_factor (renormalized first where norm_topk_prob says so, as vLLM reads it) weigh
 * their MLPs, and the shared experts' MLP (n_shared_experts × moe_intermediate_size rows) is added.
 */
function refDeepseekV2Mlp(w: W, raw: Record<string, unknown>, m: string, x: Float64Array, H: number): Float64Array {
  const E = raw.n_routed_experts as number, k = raw.num_experts_per_tok as number, I = raw.moe_intermediate_size as number;
  const logits = matvec(w(`${m}gate.weight`), x, E), top = Math.max(...logits);
  const ex = logits.map((v) => Math.exp(v - top)), z = ex.reduce((a, b) => a + b, 0);
  // group_limited_greedy: only the topk_group groups with the best single probability compete (the rest count as 0).
  const G = (raw.n_group ?? 1) as number, per = E / G;
  const groupBest = Array.from({ length: G }, (_, g) => Math.max(...ex.subarray(g * per, (g + 1) * per)));
  const kept = new Set([...groupBest.keys()].sort((a, b) => groupBest[b]! - groupBest[a]! || a - b).slice(0, raw.topk_method === "group_limited_greedy" ? (raw.topk_group as number) : G));
  const competing = ex.map((v, e) => (kept.has(Math.floor(e / per)) ? v : 0));
  const chosen = [...competing.keys()].sort((a, b) => competing[b]! - competing[a]! || a - b).slice(0, k);
  const sum = chosen.reduce((a, e) => a + ex[e]! / z, 0);
  const factor = (raw.norm_topk_prob === true ? 1 / sum : 1) * ((raw.routed_scaling_factor ?? 1) as number);
  const out = refMlp(w, `${m}shared_experts.`, x, I * ((raw.n_shared_experts ?? 1) as number), H);
  for (const e of chosen) {
    const y = refMlp(w, `${m}experts.${e}.`, x, I, H);
    for (let i = 0; i < H; i++) out[i]! += (ex[e]! / z) * factor * y[i]!;
  }
  return out;
}

/**
 * MiniMax-M2's MLP as HF's MiniMaxM2SparseMoeBlock writes it: sigmoid of the router's logits, the top k by score +
 * e_score_correction_bias, weighted by their scores over their sum; experts in Mixtral's names (w1, w3, w2).
 */
function refMinimaxM2Mlp(w: W, raw: Record<string, unknown>, m: string, x: Float64Array, H: number): Float64Array {
  const E = raw.num_local_experts as number, k = raw.num_experts_per_tok as number, I = raw.intermediate_size as number;
  const score = matvec(w(`${m}gate.weight`), x, E).map((v) => 1 / (1 + Math.exp(-v))), bias = w(`${m}e_score_correction_bias`);
  const chosen = [...score.keys()].sort((a, b) => score[b]! + bias[b]! - (score[a]! + bias[a]!) || a - b).slice(0, k);
  const sum = chosen.reduce((a, e) => a + score[e]!, 0);
  const out = new Float64Array(H);
  for (const e of chosen) {
    const y = refMlp(w, `${m}experts.${e}.`, x, I, H, ["w1", "w3", "w2"]);
    for (let i = 0; i < H; i++) out[i]! += (score[e]! / sum) * y[i]!;
  }
  return out;
}

/**
 * ERNIE 4.5's MLP as HF's Ernie4_5_MoeSparseMoeBlock writes it: softmax of the router's logits; the top moe_k by
 * probability + moe_statics.e_score_correction_bias; their probabilities over max(their sum, moe_norm_min) weigh their
 * MLPs; the shared experts' MLP (moe_num_shared_experts × moe_intermediate_size rows) is added.
 */
function refErnieMoeMlp(w: W, raw: Record<string, unknown>, m: string, x: Float64Array, H: number): Float64Array {
  const E = raw.moe_num_experts as number, k = raw.moe_k as number, I = raw.moe_intermediate_size as number;
  const logits = matvec(w(`${m}gate.weight`), x, E), top = Math.max(...logits);
  const ex = logits.map((v) => Math.exp(v - top)), z = ex.reduce((a, b) => a + b, 0), prob = ex.map((v) => v / z);
  const bias = w(`${m}moe_statics.e_score_correction_bias`);
  const chosen = [...prob.keys()].sort((a, b) => prob[b]! + bias[b]! - (prob[a]! + bias[a]!) || a - b).slice(0, k);
  const sum = Math.max(chosen.reduce((a, e) => a + prob[e]!, 0), (raw.moe_norm_min ?? 1e-12) as number);
  const out = refMlp(w, `${m}shared_experts.`, x, I * ((raw.moe_num_shared_experts ?? 2) as number), H);
  for (const e of chosen) {
    const y = refMlp(w, `${m}experts.${e}.`, x, I, H);
    for (let i = 0; i < H; i++) out[i]! += (prob[e]! / sum) * y[i]!;
  }
  return out;
}

/** Expert e of experts fused per layer: gate and up rows of gu [E, 2I, H], down of dn [E, H, I]. */
function fusedExpert(gu: Float64Array, dn: Float64Array, e: number, x: Float64Array, I: number, H: number): Float64Array {
  const g = matvec(gu.subarray(e * 2 * I * H, (e * 2 + 1) * I * H), x, I), u = matvec(gu.subarray((e * 2 + 1) * I * H, (e + 1) * 2 * I * H), x, I);
  return matvec(dn.subarray(e * H * I, (e + 1) * H * I), g.map((gv, i) => silu(gv) * u[i]!), H);
}

/** Logits at every position of `tokens`, computed densely in float64. */
export function referenceLogits(cfg: ModelConfig, w: W, tokens: number[], raw: Record<string, unknown> = {}, maxModelLen = 256): Float64Array[] {
  const head = cfg.tieWordEmbeddings ? w("model.embed_tokens.weight") : w("lm_head.weight");
  // Granite divides the logits by logits_scaling; Cohere multiplies them by logit_scale.
  const logitsScaling = typeof raw.logits_scaling === "number" ? raw.logits_scaling : typeof raw.logit_scale === "number" ? 1 / raw.logit_scale : 1;
  const cap = typeof raw.final_logit_softcapping === "number" ? raw.final_logit_softcapping : 0;
  return referenceHidden(cfg, w, tokens, raw, maxModelLen).map((h) => matvec(head, h, cfg.vocabSize).map((v) => (cap ? cap * Math.tanh(v / logitsScaling / cap) : v / logitsScaling)));
}

/** Granite's multipliers as HF's config.json names them (`raw`: the file itself, not vbun's parse of it). */
function graniteMultipliers(raw: Record<string, unknown>): { embedding?: number; residual?: number; attention?: number } {
  const out: { embedding?: number; residual?: number; attention?: number } = {};
  if (typeof raw.embedding_multiplier === "number") out.embedding = raw.embedding_multiplier;
  if (typeof raw.residual_multiplier === "number") out.residual = raw.residual_multiplier;
  if (typeof raw.attention_multiplier === "number") out.attention = raw.attention_multiplier;
  return out;
}

/** f32 reference kernels of the CPU backend. Each has a CUDA twin in ptx/src. */
import type { AttentionShape } from "../backend.ts";

/** out[t, o] = Σ_i x[t, i] · w[o, i] + bias[o], for t < n */
export function matmulTransposed(x: Float32Array, n: number, inF: number, w: Float32Array, outF: number, bias: Float32Array | null, out: Float32Array, oStart = 0, oEnd = outF): void {
  for (let o = oStart; o < oEnd; o++) {
    const wo = o * inF;
    const b = bias ? bias[o]! : 0;
    let t = 0;
    // Four token rows at a time: each weight element is loaded once for four dot products.
    for (; t + 3 < n; t += 4) {
      const x0 = t * inF, x1 = x0 + inF, x2 = x1 + inF, x3 = x2 + inF;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < inF; i++) {
        const wi = w[wo + i]!;
        s0 += x[x0 + i]! * wi;
        s1 += x[x1 + i]! * wi;
        s2 += x[x2 + i]! * wi;
        s3 += x[x3 + i]! * wi;
      }
      out[t * outF + o] = s0 + b;
      out[(t + 1) * outF + o] = s1 + b;
      out[(t + 2) * outF + o] = s2 + b;
      out[(t + 3) * outF + o] = s3 + b;
    }
    // Same summation order as above, so a row's result never depends on the batch it is in.
    for (; t < n; t++) {
      const xo = t * inF;
      let s0 = 0;
      for (let i = 0; i < inF; i++) s0 += x[xo + i]! * w[wo + i]!;
      out[t * outF + o] = s0 + b;
    }
  }
}

/** out[t] = table[ids[t] − vocabStart] · scale, zeros outside the table's `rows` (a vocab-parallel shard). */
export function embedding(ids: Int32Array, n: number, table: Float32Array, hidden: number, rows: number, out: Float32Array, vocabStart = 0, scale = 1): void {
  for (let t = 0; t < n; t++) {
    const id = ids[t]! - vocabStart;
    if (id < 0 || id >= rows) out.fill(0, t * hidden, (t + 1) * hidden);
    else if (scale === 1) out.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden);
    else for (let i = 0; i < hidden; i++) out[t * hidden + i] = table[id * hidden + i]! * scale;
  }
}

/** The sum of squares of a[off … off + width). */
function sumOfSquares(a: Float32Array, off: number, width: number): number {
  let ss = 0;
  for (let i = 0; i < width; i++) { const v = a[off + i]!; ss += v * v; }
  return ss;
}

/** dst[dstOff + i] = src[srcOff + i] · inv (rounded to f32) · w[i]: a row scaled by its 1/rms (src may equal dst). */
function scaleRow(src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, width: number, w: Float32Array, inv: number): void {
  for (let i = 0; i < width; i++) dst[dstOff + i] = Math.fround(src[srcOff + i]! * inv) * w[i]!;
}

/** dst[dstOff + i] = src[srcOff + i] / rms(src row) * w[i] for one row of `width` (src may equal dst). */
export function rmsNormRow(src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, width: number, w: Float32Array, eps: number): void {
  scaleRow(src, srcOff, dst, dstOff, width, w, 1 / Math.sqrt(sumOfSquares(src, srcOff, width) / width + eps));
}

/** Cohere's LayerNorm without a bias, one row: dst = (src − mean) / √(mean of (src − mean)² + eps) · w (src may equal dst). */
export function layerNormRow(src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number, width: number, w: Float32Array, eps: number): void {
  let sum = 0;
  for (let i = 0; i < width; i++) sum += src[srcOff + i]!;
  const mean = sum / width;
  let ss = 0;
  for (let i = 0; i < width; i++) { const d = src[srcOff + i]! - mean; ss += d * d; }
  const inv = 1 / Math.sqrt(ss / width + eps);
  for (let i = 0; i < width; i++) dst[dstOff + i] = (src[srcOff + i]! - mean) * inv * w[i]!;
}

/** Row by row: rmsNormRow, or `centered` layerNormRow. */
export function rmsNorm(x: Float32Array, rows: number, width: number, w: Float32Array, eps: number, out: Float32Array, centered = false): void {
  const row = centered ? layerNormRow : rmsNormRow;
  for (let r = 0; r < rows; r++) row(x, r * width, out, r * width, width, w, eps);
}

/** residual += rmsnorm(x) · w, row by row (OLMo 2 / 3's norm after a sublayer). */
export function rmsNormAdd(x: Float32Array, rows: number, width: number, w: Float32Array, eps: number, residual: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const o = r * width, inv = 1 / Math.sqrt(sumOfSquares(x, o, width) / width + eps);
    for (let i = 0; i < width; i++) residual[o + i] = residual[o + i]! + Math.fround(x[o + i]! * inv) * w[i]!;
  }
}

/**
 * OLMo 2 / 3: in place, each row's q part (its first qWidth values) and k part (the kWidth after) RMS-normed as
 * wholes; with `sums` (tensor parallelism) their means of squares are sums[2r], sums[2r + 1] over ranks × width.
 */
export function qkNormAcrossHeads(qkv: Float32Array, rows: number, qWidth: number, kWidth: number, qw: Float32Array, kw: Float32Array, eps: number, sums: Float32Array | null = null, ranks = 1): void {
  const row = qWidth + 2 * kWidth;
  const part = (o: number, width: number, w: Float32Array, ss: number | null) => {
    if (ss === null) return rmsNormRow(qkv, o, qkv, o, width, w, eps);
    scaleRow(qkv, o, qkv, o, width, w, 1 / Math.sqrt(ss / (width * ranks) + eps));
  };
  for (let r = 0; r < rows; r++) {
    part(r * row, qWidth, qw, sums ? sums[2 * r]! : null);
    part(r * row + qWidth, kWidth, kw, sums ? sums[2 * r + 1]! : null);
  }
}

/** Each row's sums of squares of its q part and its k part: sums[2r], sums[2r + 1]. */
export function qkSquareSums(qkv: Float32Array, rows: number, qWidth: number, kWidth: number, sums: Float32Array): void {
  const row = qWidth + 2 * kWidth;
  for (let r = 0; r < rows; r++) {
    sums[2 * r] = sumOfSquares(qkv, r * row, qWidth);
    sums[2 * r + 1] = sumOfSquares(qkv, r * row + qWidth, kWidth);
  }
}

export function addRmsNorm(x: Float32Array, residual: Float32Array, rows: number, width: number, w: Float32Array, eps: number, out: Float32Array, centered = false): void {
  const n = rows * width;
  for (let i = 0; i < n; i++) residual[i] = residual[i]! + x[i]!;
  rmsNorm(residual, rows, width, w, eps, out, centered);
}

/**
 * In-place per-head RMSNorm (optional; a weight of D for all heads, or heads · D: one per head; `centered`: LayerNorms)
 * then rotate-half RoPE on the q and k heads of packed qkv rows: over each head's first rotaryDim dimensions (the
 * whole head unless the shape says otherwise).
 */
export function qkNormRope(qkv: Float32Array, n: number, positions: Int32Array, cos: Float32Array, sin: Float32Array, qNorm: Float32Array | null, kNorm: Float32Array | null, eps: number, s: AttentionShape, centered = false): void {
  const D = s.headDim, half = (s.rotaryDim ?? D) / 2;
  const stride = (s.numHeads + 2 * s.numKvHeads) * D;
  const maxPos = cos.length / half;
  for (let t = 0; t < n; t++) {
    const pos = positions[t]!;
    if (pos < 0 || pos >= maxPos) throw new RangeError(`position ${pos} out of range [0, ${maxPos})`);
    const base = t * stride;
    for (let h = 0; h < s.numHeads + s.numKvHeads; h++) {
      const ho = base + h * D;
      const norm = h < s.numHeads ? qNorm : kNorm, local = h < s.numHeads ? h : h - s.numHeads;
      if (norm) (centered ? layerNormRow : rmsNormRow)(qkv, ho, qkv, ho, D, norm.length > D ? norm.subarray(local * D, (local + 1) * D) : norm, eps);
      for (let i = 0; i < half; i++) {
        const c = cos[pos * half + i]!, sn = sin[pos * half + i]!;
        const x1 = qkv[ho + i]!, x2 = qkv[ho + half + i]!;
        qkv[ho + i] = x1 * c - x2 * sn;
        qkv[ho + half + i] = x2 * c + x1 * sn;
      }
    }
  }
}

export function storeKv(qkv: Float32Array, n: number, slots: Int32Array, kCache: Float32Array, vCache: Float32Array, s: AttentionShape): void {
  const D = s.headDim, kvWidth = s.numKvHeads * D;
  const stride = (s.numHeads + 2 * s.numKvHeads) * D;
  const numSlots = kCache.length / kvWidth;
  for (let t = 0; t < n; t++) {
    const slot = slots[t]!;
    if (slot < 0) continue;
    if (slot >= numSlots) throw new RangeError(`KV slot ${slot} out of range [0, ${numSlots})`);
    const ko = t * stride + s.numHeads * D;
    kCache.set(qkv.subarray(ko, ko + kvWidth), slot * kvWidth);
    vCache.set(qkv.subarray(ko + kvWidth, ko + 2 * kvWidth), slot * kvWidth);
  }
}

export interface PagedAttentionArgs {
  numSeqs: number;
  queryStart: Int32Array;
  seqLens: Int32Array;
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  blockSize: number;
}

/**
 * For each sequence, its query tokens are the last qLen positions of its seqLen context; token i attends
 * causally to context positions [0, seqLen − qLen + i] (with a sliding window W: the last W of them), read
 * from the paged cache through the block table. `sinks` (GPT-OSS's attention sinks: a logit per query head)
 * join each head's softmax as one more score whose value is zero: they only take a share of the weight.
 */
export function pagedAttention(qkv: Float32Array, kCache: Float32Array, vCache: Float32Array, a: PagedAttentionArgs, s: AttentionShape, out: Float32Array, seqStart = 0, seqEnd = a.numSeqs, sinks: Float32Array | null = null): void {
  const D = s.headDim, H = s.numHeads, Hkv = s.numKvHeads, group = H / Hkv;
  const stride = (H + 2 * Hkv) * D;
  const kvWidth = Hkv * D;
  let scores = new Float64Array(256);
  const acc = new Float64Array(D);
  for (let sq = seqStart; sq < seqEnd; sq++) {
    const q0 = a.queryStart[sq]!, q1 = a.queryStart[sq + 1]!;
    const seqLen = a.seqLens[sq]!;
    const qLen = q1 - q0;
    if (seqLen > scores.length) scores = new Float64Array(Math.max(seqLen, scores.length * 2));
    const table = sq * a.maxBlocksPerSeq;
    for (let i = 0; i < qLen; i++) {
      // A sliding window W leaves the last W positions.
      const ctx = seqLen - qLen + i + 1, lo = s.window ? Math.max(0, ctx - s.window) : 0;
      const qRow = (q0 + i) * stride;
      for (let h = 0; h < H; h++) {
        const qo = qRow + h * D;
        const kvh = Math.floor(h / group);
        const sink = sinks ? sinks[h]! : -Infinity;
        let max = sink;
        for (let j = lo; j < ctx; j++) {
          const slot = a.blockTables[table + Math.floor(j / a.blockSize)]! * a.blockSize + (j % a.blockSize);
          const ko = slot * kvWidth + kvh * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qkv[qo + d]! * kCache[ko + d]!;
          // Gemma 2's soft-capping of the scaled score.
          const sc = s.softcap ? s.softcap * Math.tanh((dot * s.scale) / s.softcap) : dot * s.scale;
          scores[j] = sc;
          if (sc > max) max = sc;
        }
        acc.fill(0);
        let sum = sinks ? Math.exp(sink - max) : 0;
        for (let j = lo; j < ctx; j++) {
          const p = Math.exp(scores[j]! - max);
          sum += p;
          const slot = a.blockTables[table + Math.floor(j / a.blockSize)]! * a.blockSize + (j % a.blockSize);
          const vo = slot * kvWidth + kvh * D;
          for (let d = 0; d < D; d++) acc[d] = acc[d]! + p * vCache[vo + d]!;
        }
        const oo = (q0 + i) * H * D + h * D;
        for (let d = 0; d < D; d++) out[oo + d] = acc[d]! / sum;
      }
    }
  }
}

export function siluMul(x: Float32Array, n: number, inter: number, out: Float32Array): void {
  for (let t = 0; t < n; t++) {
    const xo = t * 2 * inter, oo = t * inter;
    for (let i = 0; i < inter; i++) {
      const g = x[xo + i]!;
      out[oo + i] = (g / (1 + Math.exp(-g))) * x[xo + inter + i]!;
    }
  }
}

/**
 * GPT-OSS's clamped SwiGLU for rows [gate | up] of width 2·inter: g = min(gate, limit), u = clamp(up, −limit, limit),
 * out = (u + 1) · g · sigmoid(alpha · g).
 */
export function swigluClampMul(x: Float32Array, n: number, inter: number, alpha: number, limit: number, out: Float32Array): void {
  for (let t = 0; t < n; t++) {
    const xo = t * 2 * inter, oo = t * inter;
    for (let i = 0; i < inter; i++) {
      const g = Math.min(x[xo + i]!, limit), u = Math.min(Math.max(x[xo + inter + i]!, -limit), limit);
      out[oo + i] = (u + 1) * (g / (1 + Math.exp(-alpha * g)));
    }
  }
}

/** out = gelu_tanh(gate) · up for rows [gate | up] of width 2·inter: GELU's tanh approximation (PyTorch's approximate="tanh"). */
export function geluTanhMul(x: Float32Array, n: number, inter: number, out: Float32Array): void {
  const k = Math.sqrt(2 / Math.PI);
  for (let t = 0; t < n; t++) {
    const xo = t * 2 * inter, oo = t * inter;
    for (let i = 0; i < inter; i++) {
      const g = x[xo + i]!;
      out[oo + i] = 0.5 * g * (1 + Math.tanh(k * (g + 0.044715 * g * g * g))) * x[xo + inter + i]!;
    }
  }
}

/**
 * GLM-4.5 / DeepSeek-V3 routing of `n` rows of f32 router logits over E experts: s = sigmoid(logit) (ERNIE 4.5, with
 * `softmax`: the row's softmax, in f64 rounded to f32); with `groupMax` a group's score is its best (DeepSeek-V2's); the topK
 * experts by s + bias among the topKGroups best of numGroups equal groups (a group's score: its two best; other
 * groups' experts count as 0, as transformers masks them; ties: the lower id); weights s, over their sum (+1e-20)
 * when renormalize, × scale; then numShared entries for the shared experts (ids E …, weight 1). ids / weights are
 * [n, topK + numShared].
 */
export function moeRouteGrouped(logits: Float32Array, bias: Float32Array, n: number, E: number, topK: number, numGroups: number, topKGroups: number, renormalize: boolean, scale: number, numShared: number, ids: Int32Array, weights: Float32Array, softmax = false, groupMax = false): void {
  const s = new Float32Array(E), c = new Float32Array(E), perGroup = E / numGroups, width = topK + numShared;
  for (let t = 0; t < n; t++) {
    let max = -Infinity, z = 0;
    if (softmax) {
      for (let e = 0; e < E; e++) max = Math.max(max, logits[t * E + e]!);
      for (let e = 0; e < E; e++) z += Math.exp(logits[t * E + e]! - max);
    }
    for (let e = 0; e < E; e++) {
      s[e] = Math.fround(softmax ? Math.exp(logits[t * E + e]! - max) / z : 1 / (1 + Math.exp(-logits[t * E + e]!)));
      c[e] = Math.fround(s[e]! + bias[e]!);
    }
    if (topKGroups < numGroups) {
      const score = Array.from({ length: numGroups }, (_, g) => {
        const v = Array.from(c.subarray(g * perGroup, (g + 1) * perGroup)).sort((a, b) => b - a);
        return perGroup > 1 && !groupMax ? v[0]! + v[1]! : v[0]!;
      });
      const keep = new Uint8Array(numGroups);
      for (let j = 0; j < topKGroups; j++) {
        let best = -1;
        for (let g = 0; g < numGroups; g++) if (!keep[g] && (best < 0 || score[g]! > score[best]!)) best = g;
        keep[best] = 1;
      }
      for (let e = 0; e < E; e++) if (!keep[Math.floor(e / perGroup)]) c[e] = 0;
    }
    let sum = 0;
    for (let j = 0; j < topK; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (c[e] !== -Infinity && (best < 0 || c[e]! > c[best]!)) best = e;
      c[best] = -Infinity;
      ids[t * width + j] = best;
      weights[t * width + j] = s[best]!;
      sum += s[best]!;
    }
    const k = renormalize ? scale / (sum + 1e-20) : scale;
    for (let j = 0; j < topK; j++) weights[t * width + j] = weights[t * width + j]! * k;
    for (let j = 0; j < numShared; j++) {
      ids[t * width + topK + j] = E + j;
      weights[t * width + topK + j] = 1;
    }
  }
}

/**
 * Mixture-of-experts routing of `n` rows of router logits over E experts: softmax, the topK largest
 * (descending; ties: the lower id), renormalized to sum 1 when asked; then numShared entries for shared experts
 * (ids E …, weight 1). ids and weights are [n, topK + numShared].
 */
export function moeRoute(logits: Float32Array, n: number, E: number, topK: number, renormalize: boolean, ids: Int32Array, weights: Float32Array, numShared = 0): void {
  const p = new Float64Array(E), taken = new Uint8Array(E), width = topK + numShared;
  for (let t = 0; t < n; t++) {
    let max = -Infinity;
    for (let e = 0; e < E; e++) max = Math.max(max, logits[t * E + e]!);
    let z = 0;
    for (let e = 0; e < E; e++) z += p[e] = Math.exp(logits[t * E + e]! - max);
    taken.fill(0);
    let sum = 0;
    for (let j = 0; j < topK; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (!taken[e] && (best < 0 || p[e]! > p[best]!)) best = e;
      taken[best] = 1;
      ids[t * width + j] = best;
      weights[t * width + j] = Math.fround(p[best]! / z);
      sum += weights[t * width + j]!;
    }
    if (renormalize) for (let j = 0; j < topK; j++) weights[t * width + j] = weights[t * width + j]! / sum;
    for (let j = 0; j < numShared; j++) {
      ids[t * width + topK + j] = E + j;
      weights[t * width + topK + j] = 1;
    }
  }
}

/** Multi-head latent attention's packed rows (Backend.mlaAssemble): q copied, keys [kpe | nope key], values [value | 0]. */
export function mlaAssemble(q: Float32Array, kv: Float32Array, kpe: Float32Array, n: number, s: { numHeads: number; nope: number; rope: number; v: number }, qkv: Float32Array): void {
  const H = s.numHeads, D = s.nope + s.rope, kvW = s.nope + s.v, row = 3 * H * D;
  for (let t = 0; t < n; t++) {
    const o = t * row;
    qkv.set(q.subarray(t * H * D, (t + 1) * H * D), o);
    for (let h = 0; h < H; h++) {
      const k = o + H * D + h * D, v = o + 2 * H * D + h * D, src = t * H * kvW + h * kvW;
      qkv.set(kpe.subarray(t * s.rope, (t + 1) * s.rope), k);
      qkv.set(kv.subarray(src, src + s.nope), k + s.rope);
      qkv.set(kv.subarray(src + s.nope, src + kvW), v);
      qkv.fill(0, v + s.v, v + D);
    }
  }
}

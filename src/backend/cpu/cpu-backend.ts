/** The reference backend: f32 host arrays, weights converted at load. Runs the whole engine without a GPU. */
import { stepExtents, type MoeScratch, type ExpertWeights, type MlaShape, type MoeGrouping, type AttentionShape, type Backend, type KvCacheSpec, type PendingSample, type StepInputs, type StepTensors, type Tensor } from "../backend.ts";
import { plainWeight, type LinearWeight } from "../../loader/packed-matrix.ts";
import { toFloat32 } from "../../loader/dtype.ts";
import { fp8Quantizable, quantizeFp8Rows } from "../../loader/quantization.ts";
import type { TensorView } from "../../loader/safetensors.ts";
import type { SamplingBatch, SamplerOutput } from "../../engine/sampling-batch.ts";
import * as k from "./kernels.ts";
import { sampleRows } from "./sampling.ts";
import { defaultCpuThreads, MatmulPool } from "./matmul-pool.ts";

export class CpuTensor implements Tensor {
  constructor(readonly data: Float32Array, readonly shape: readonly number[]) {}
  get width(): number {
    return this.shape.length > 1 ? this.shape[this.shape.length - 1]! : 1;
  }
  get numRows(): number {
    return this.shape.length > 1 ? this.data.length / this.width : 1;
  }
}

/** Integer inputs (token ids, positions, slots, block tables) keep their Int32Array. */
export class CpuIntTensor implements Tensor {
  constructor(readonly data: Int32Array, readonly shape: readonly number[]) {}
}

type T = CpuTensor | CpuIntTensor;

function f32(t: T): Float32Array {
  if (!(t instanceof CpuTensor)) throw new TypeError("expected a float tensor");
  return t.data;
}
function i32(t: T): Int32Array {
  if (!(t instanceof CpuIntTensor)) throw new TypeError("expected an int tensor");
  return t.data;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** f32 storage in a SharedArrayBuffer, so the matmul helper thread can read and write it. */
const sharedF32 = (n: number) => new Float32Array(new SharedArrayBuffer(Math.max(n, 1) * 4), 0, n);

export interface CpuBackendOptions {
  /** Threads for large matrix products (the caller's and threads − 1 helpers); default defaultCpuThreads(). */
  threads?: number;
}

export class CpuBackend implements Backend<T> {
  readonly name = "cpu" as const;
  private readonly pool: MatmulPool | null;
  /** The last sampled ids (async scheduling feeds pending tokens from them). */
  private lastSampled: Int32Array | null = null;
  /** LoRA: the B product before it is added (grown to the largest step). */
  private loraScratch = new Float32Array(0);

  constructor(opts: CpuBackendOptions = {}) {
    const threads = opts.threads ?? defaultCpuThreads();
    this.pool = threads >= 2 ? new MatmulPool(threads - 1) : null;
  }

  /** Stops the helper thread. */
  close(): void {
    this.pool?.close();
  }

  loadWeight(parts: LinearWeight[], shape: number[], _use?: "linear" | "experts", quantize: "fp8" | null = null): CpuTensor {
    const out = sharedF32(numel(shape));
    let off = 0;
    // Online FP8: each part's rows rounded to E4M3 with their own scale (by rows, as the whole weight would be).
    const fp8 = quantize === "fp8" && fp8Quantizable(parts, shape);
    for (const p of parts.map((t) => plainWeight(fp8 ? quantizeFp8Rows(t as TensorView) : t))) {
      const n = numel(p.shape);
      if (off + n > out.length) throw new Error(`${p.file}: tensor '${p.name}' does not fit the packed weight of shape [${shape}]`);
      toFloat32(p.bytes, p.dtype, out.subarray(off, off + n));
      off += n;
    }
    if (off !== out.length) throw new Error(`packed weight [${shape}] got ${off} of ${out.length} values from ${parts.map((p) => p.name).join(", ")}`);
    return new CpuTensor(out, shape);
  }

  fromHost(values: Float32Array, shape: number[]): CpuTensor {
    return new CpuTensor(values, shape);
  }

  empty(shape: number[], dtype: "act" | "f32" | "i32" = "act"): T {
    if (dtype === "i32") return new CpuIntTensor(new Int32Array(numel(shape)), shape);
    return new CpuTensor(sharedF32(numel(shape)), shape);
  }

  rowRange(t: T, start: number, rows: number): T {
    const width = numel(t.shape.slice(1)), shape = [rows, ...t.shape.slice(1)];
    if ((start + rows) * width > t.data.length) throw new RangeError(`rowRange: rows ${start}…${start + rows} of a tensor of shape [${t.shape}]`);
    const data = t.data.subarray(start * width, (start + rows) * width);
    return t instanceof CpuTensor ? new CpuTensor(data as Float32Array, shape) : new CpuIntTensor(data as Int32Array, shape);
  }

  rows(t: T, rows: number): T {
    const width = numel(t.shape.slice(1));
    const shape = [rows, ...t.shape.slice(1)];
    return t instanceof CpuTensor ? new CpuTensor(t.data.subarray(0, rows * width), shape) : new CpuIntTensor(t.data.subarray(0, rows * width), shape);
  }

  allocKvCache(spec: KvCacheSpec): { k: CpuTensor; v: CpuTensor } {
    // The KV cache never enters a matrix product: plain (lazily zeroed) memory.
    const shape = [spec.numBlocks, spec.blockSize, spec.numKvHeads, spec.headDim];
    return { k: new CpuTensor(new Float32Array(numel(shape)), shape), v: new CpuTensor(new Float32Array(numel(shape)), shape) };
  }

  uploadStep(s: StepInputs): StepTensors<T> {
    const from = s.tokensFromSampled;
    if (from && from.length > 0) {
      const sampled = this.lastSampled;
      for (let i = 0; i < from.length; i += 2) {
        const row = from[i + 1]!;
        if (!sampled || row >= sampled.length) throw new Error(`uploadStep: token ${from[i]} wants sampled row ${row}, but the last sampling gave ${sampled?.length ?? 0}`);
        s.tokenIds[from[i]!] = sampled[row]!;
      }
    }
    const numSeqs = s.seqLens.length;
    const { maxQueryLen, maxSeqLen } = stepExtents(s);
    const t = (a: Int32Array, shape = [a.length]) => new CpuIntTensor(a, shape);
    return {
      numTokens: s.tokenIds.length, numSeqs,
      tokenIds: t(s.tokenIds), positions: t(s.positions), slotMapping: t(s.slotMapping),
      queryStart: t(s.queryStart), seqLens: t(s.seqLens),
      blockTables: t(s.blockTables, [numSeqs, s.maxBlocksPerSeq]), maxBlocksPerSeq: s.maxBlocksPerSeq,
      logitsRows: t(s.logitsRows), numLogitsRows: s.logitsRows.length,
      maxQueryLen, maxSeqLen, loraSlots: s.loraSlots ? t(s.loraSlots) : null,
      kvGroups: (s.kvGroups ?? []).map((g) => ({ slotMapping: t(g.slotMapping), blockTables: t(g.blockTables, [numSeqs, s.maxBlocksPerSeq]) })),
    };
  }

  embedding(tokenIds: T, table: T, out: T, vocabStart = 0, scale = 1): void {
    const tab = table as CpuTensor;
    k.embedding(i32(tokenIds), tokenIds.shape[0]!, f32(tab), tab.shape[1]!, tab.shape[0]!, f32(out), vocabStart, scale);
  }

  rmsNorm(x: T, weight: T, eps: number, out: T, centered = false): void {
    const t = x as CpuTensor;
    k.rmsNorm(t.data, t.numRows, t.width, f32(weight), eps, f32(out), centered);
  }

  add(x: T, out: T): void {
    const a = f32(x), o = f32(out);
    for (let i = 0; i < o.length; i++) o[i] = o[i]! + a[i]!;
  }

  rmsNormAdd(x: T, weight: T, eps: number, residual: T): void {
    const t = x as CpuTensor;
    k.rmsNormAdd(t.data, t.numRows, t.width, f32(weight), eps, f32(residual));
  }

  qkNormAcrossHeads(qkv: T, qNorm: T, kNorm: T, eps: number, shape: AttentionShape, sums: T | null = null, ranks = 1): void {
    const q = qkv as CpuTensor;
    k.qkNormAcrossHeads(q.data, q.numRows, shape.numHeads * shape.headDim, shape.numKvHeads * shape.headDim, f32(qNorm), f32(kNorm), eps, sums ? f32(sums) : null, ranks);
  }

  qkSquareSums(qkv: T, shape: AttentionShape, sums: T): void {
    const q = qkv as CpuTensor;
    k.qkSquareSums(q.data, q.numRows, shape.numHeads * shape.headDim, shape.numKvHeads * shape.headDim, f32(sums));
  }

  addRmsNorm(x: T, residual: T, weight: T, eps: number, out: T, centered = false): void {
    const t = x as CpuTensor;
    k.addRmsNorm(t.data, f32(residual), t.numRows, t.width, f32(weight), eps, f32(out), centered);
  }

  linear(x: T, weight: T, bias: T | null, out: T): void {
    const xt = x as CpuTensor, w = weight as CpuTensor;
    const [outF, inF] = w.shape as [number, number];
    if (xt.width !== inF) throw new Error(`linear: input width ${xt.width} != weight in-features ${inF}`);
    const b = bias ? f32(bias) : null, o = f32(out);
    if (this.pool?.accepts(xt.data, xt.numRows, inF, outF, w.data, b, o)) this.pool.linear(xt.data, xt.numRows, inF, w.data, outF, b, o);
    else k.matmulTransposed(xt.data, xt.numRows, inF, w.data, outF, b, o);
  }

  loraAdd(x: T, a: T, bT: T, slots: T, scales: T, numSlots: number, u: T, out: T): void {
    this.linear(x, a, null, u);
    const ut = u as CpuTensor, ud = ut.data, width = ut.width, w = width / numSlots, slot = i32(slots), scale = f32(scales);
    const o = f32(out), b = f32(bT), outF = (bT as CpuTensor).shape[1]!;
    if (this.loraScratch.length < outF) this.loraScratch = new Float32Array(outF);
    const delta = this.loraScratch.subarray(0, outF);
    for (let r = 0; r < ut.numRows; r++) {
      const s = slot[r]!;
      for (let c = 0; c < width; c++) ud[r * width + c] = s >= 0 && Math.floor(c / w) === s ? ud[r * width + c]! * scale[s]! : 0;
      if (s < 0) continue;
      // Only the row's own slot's columns of u are non-zero: delta = u[r, slot] · bT[slot rows].
      delta.fill(0);
      for (let c = s * w; c < (s + 1) * w; c++) {
        const uc = ud[r * width + c]!, row = c * outF;
        if (uc !== 0) for (let j = 0; j < outF; j++) delta[j]! += uc * b[row + j]!;
      }
      for (let j = 0; j < outF; j++) o[r * outF + j]! += delta[j]!;
    }
  }

  writeRows(t: T, firstRow: number, values: Float32Array): void {
    const c = t as CpuTensor;
    if (firstRow * c.width + values.length > c.data.length) throw new Error(`writeRows: rows ${firstRow}… of ${values.length / c.width} overrun a tensor of shape [${c.shape}]`);
    c.data.set(values, firstRow * c.width);
  }

  qkNormRopeStoreKv(qkv: T, positions: T, slotMapping: T, cos: T, sin: T, qNorm: T | null, kNorm: T | null, eps: number, shape: AttentionShape, kCache: T, vCache: T, centered = false): void {
    const q = qkv as CpuTensor;
    k.qkNormRope(q.data, q.numRows, i32(positions), f32(cos), f32(sin), qNorm ? f32(qNorm) : null, kNorm ? f32(kNorm) : null, eps, shape, centered);
    k.storeKv(q.data, q.numRows, i32(slotMapping), f32(kCache), f32(vCache), shape);
  }

  pagedAttention(qkv: T, kCache: T, vCache: T, step: StepTensors<T>, blockSize: number, shape: AttentionShape, out: T, sinks: T | null = null): void {
    if (sinks && f32(sinks).length !== shape.numHeads) throw new Error(`pagedAttention: attention sinks must be [${shape.numHeads}] (one per query head), got [${sinks.shape}]`);
    k.pagedAttention(f32(qkv), f32(kCache), f32(vCache), {
      numSeqs: step.numSeqs, queryStart: i32(step.queryStart), seqLens: i32(step.seqLens),
      blockTables: i32(step.blockTables), maxBlocksPerSeq: step.maxBlocksPerSeq, blockSize,
    }, shape, f32(out), 0, step.numSeqs, sinks ? f32(sinks) : null);
  }

  mlaAssemble(q: T, kv: T, kpe: T, qkv: T, s: MlaShape): void {
    const n = (q as CpuTensor).numRows, D = s.nope + s.rope;
    if ((q as CpuTensor).width !== s.numHeads * D || (kv as CpuTensor).width !== s.numHeads * (s.nope + s.v) || (kpe as CpuTensor).width !== s.rope || (qkv as CpuTensor).width !== 3 * s.numHeads * D)
      throw new Error(`mlaAssemble: widths q ${(q as CpuTensor).width}, kv ${(kv as CpuTensor).width}, kpe ${(kpe as CpuTensor).width}, qkv ${(qkv as CpuTensor).width} do not fit ${s.numHeads} heads of ${s.rope} + ${s.nope} (v ${s.v})`);
    k.mlaAssemble(f32(q), f32(kv), f32(kpe), n, s, f32(qkv));
  }

  siluMul(x: T, out: T): void {
    const t = x as CpuTensor;
    k.siluMul(t.data, t.numRows, t.width / 2, f32(out));
  }

  moeRoute(logits: T, topK: number, renormalize: boolean, ids: T, weights: T, numShared = 0): void {
    const l = logits as CpuTensor;
    k.moeRoute(l.data, l.numRows, l.width, topK, renormalize, i32(ids), f32(weights), numShared);
  }

  moeRouteGrouped(logits: T, bias: T, topK: number, g: MoeGrouping, renormalize: boolean, numShared: number, ids: T, weights: T): void {
    const l = logits as CpuTensor;
    k.moeRouteGrouped(l.data, f32(bias), l.numRows, l.width, topK, g.numGroups, g.topKGroups, renormalize, g.scale, numShared, i32(ids), f32(weights), g.scoring === "softmax", g.groupScore === "max");
  }

  /**
   * Hugging Face's order: the experts one after another (ascending id), each over its tokens (ascending),
   * and every token's output summed in that order. One matrix product per expert and projection.
   */
  moeExperts(x: T, ids: T, weights: T, experts: ExpertWeights<T>, numExperts: number, scratch: MoeScratch<T>, out: T): void {
    const xt = x as CpuTensor, n = xt.numRows, H = xt.width, id = i32(ids), wt = f32(weights), topK = ids.shape[1]!;
    const w13t = experts.w13 as CpuTensor, w2t = experts.w2 as CpuTensor, I = w2t.width, entries = n * topK;
    const b13 = experts.b13 ? f32(experts.b13) : null, b2 = experts.b2 ? f32(experts.b2) : null;
    if ((b13 && b13.length !== numExperts * 2 * I) || (b2 && b2.length !== numExperts * H)) throw new Error(`moeExperts: expert biases of ${b13?.length ?? "-"} and ${b2?.length ?? "-"} values do not fit ${numExperts} experts of [${2 * I}, ${H}]`);
    if (w13t.shape[0] !== numExperts * 2 * I || w13t.width !== H || w2t.shape[0] !== numExperts * H) throw new Error(`moeExperts: expert weights [${w13t.shape}] and [${w2t.shape}] do not fit ${numExperts} experts of hidden ${H}`);
    // Entries (t·topK + j) grouped by expert, tokens ascending within each: a counting sort.
    const start = new Int32Array(numExperts + 1);
    for (let i = 0; i < entries; i++) start[id[i]! + 1]!++;
    for (let e = 0; e < numExperts; e++) start[e + 1]! += start[e]!;
    const sorted = new Int32Array(entries), fill = start.slice(0, numExperts);
    for (let i = 0; i < entries; i++) sorted[fill[id[i]!]!++] = i;
    const xs = f32(scratch.expertOut), gu = f32(scratch.gateUp), act = f32(scratch.act), o = f32(out);
    for (let s = 0; s < entries; s++) { const t = Math.floor(sorted[s]! / topK); xs.set(xt.data.subarray(t * H, (t + 1) * H), s * H); }
    const view = (a: Float32Array, row: number, rows: number, width: number) => new CpuTensor(a.subarray(row * width, (row + rows) * width), [rows, width]);
    for (let e = 0; e < numExperts; e++) {
      const m = start[e + 1]! - start[e]!;
      if (m > 0) this.linear(view(xs, start[e]!, m, H), view(w13t.data, e * 2 * I, 2 * I, H), b13 && view(b13, e, 1, 2 * I), view(gu, start[e]!, m, 2 * I));
    }
    if (experts.swiglu) k.swigluClampMul(gu, entries, I, experts.swiglu.alpha, experts.swiglu.limit, act);
    else k.siluMul(gu, entries, I, act);
    for (let e = 0; e < numExperts; e++) {
      const m = start[e + 1]! - start[e]!;
      if (m > 0) this.linear(view(act, start[e]!, m, I), view(w2t.data, e * H, H, I), b2 && view(b2, e, 1, H), view(xs, start[e]!, m, H));
    }
    o.fill(0, 0, n * H);
    for (let s = 0; s < entries; s++) {
      const i = sorted[s]!, t = Math.floor(i / topK), w = wt[i]!;
      for (let c = 0; c < H; c++) o[t * H + c]! += w * xs[s * H + c]!;
    }
  }

  sigmoidGatedAdd(x: T, gate: T, out: T): void {
    const xt = x as CpuTensor, g = f32(gate), o = f32(out), H = xt.width;
    for (let t = 0; t < xt.numRows; t++) {
      const s = 1 / (1 + Math.exp(-g[t]!));
      for (let c = 0; c < H; c++) o[t * H + c]! += s * xt.data[t * H + c]!;
    }
  }

  softcap(x: T, cap: number): void {
    const d = f32(x);
    for (let i = 0; i < d.length; i++) d[i] = cap * Math.tanh(d[i]! / cap);
  }

  geluTanhMul(x: T, out: T): void {
    const t = x as CpuTensor;
    k.geluTanhMul(t.data, t.numRows, t.width / 2, f32(out));
  }

  gatherRows(x: T, rows: T, numRows: number, out: T): void {
    const src = x as CpuTensor, dst = f32(out), idx = i32(rows);
    const w = src.width;
    for (let i = 0; i < numRows; i++) dst.set(src.data.subarray(idx[i]! * w, (idx[i]! + 1) * w), i * w);
  }

  sample(logits: T, batch: SamplingBatch): SamplerOutput {
    const l = logits as CpuTensor;
    // A pending output token (async scheduling) is the last sampling's: its penalties count it.
    for (let r = 0; r < batch.numRows; r++) {
      const pen = batch.penalties[r];
      if (!pen || (pen.pendingRow ?? -1) < 0) continue;
      const t = this.lastSampled?.[pen.pendingRow!];
      if (t === undefined) throw new Error(`sample: row ${r} wants pending token ${pen.pendingRow}, but the last sampling gave ${this.lastSampled?.length ?? 0}`);
      batch.penalties[r] = { ...pen, outputTokens: [...Array.from(pen.outputTokens), t], pendingRow: -1 };
    }
    const out = sampleRows(l.data, l.width, batch);
    this.lastSampled = out.tokenIds;
    return out;
  }

  /** Samples at once (the CPU runs synchronously); the next uploadStep may take tokens from it. */
  sampleAsync(logits: T, batch: SamplingBatch): PendingSample {
    const out = this.sample(logits, batch);
    return { wait: () => out };
  }

  toHost(t: T): Float32Array {
    return t instanceof CpuTensor ? t.data.slice() : Float32Array.from(t.data);
  }
}

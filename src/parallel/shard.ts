/**
 * Megatron-style tensor-parallel sharding: which slice of each weight rank r of N holds.
 * Column-parallel (split output rows): q/k/v by heads, gate/up by rows, embedding and LM head by vocab.
 * Row-parallel (split input columns, partial sums all-reduced): o_proj and down_proj.
 * With more ranks than KV heads, each rank keeps the one KV head its query heads use (replicated).
 */
import { DTYPE_BYTES } from "../loader/dtype.ts";
import type { TensorView } from "../loader/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { dequantizeMatrix, isPacked, packedCols, packedRows, type LinearWeight } from "../loader/packed-matrix.ts";

export interface ShardSpec {
  rank: number;
  size: number;
}

export class ShardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ShardError";
  }
}

/** Checks that the model can be split N ways; throws naming the dimension that does not divide. */
export function checkShardable(cfg: ModelConfig, size: number): void {
  if (!Number.isInteger(size) || size < 1) throw new ShardError(`--tensor-parallel-size must be a positive integer, got ${size}`);
  if (cfg.numHeads % size !== 0) throw new ShardError(`--tensor-parallel-size ${size} does not divide num_attention_heads (${cfg.numHeads})`);
  if (cfg.numKvHeads % size !== 0 && size % cfg.numKvHeads !== 0) throw new ShardError(`--tensor-parallel-size ${size} and num_key_value_heads (${cfg.numKvHeads}): one must divide the other`);
  if (cfg.intermediateSize % size !== 0) throw new ShardError(`--tensor-parallel-size ${size} does not divide intermediate_size (${cfg.intermediateSize})`);
  // Experts are split like the dense MLP: every rank holds a slice of each expert's intermediate rows.
  const moe = cfg.moe;
  if (moe && moe.intermediateSize % size !== 0) throw new ShardError(`--tensor-parallel-size ${size} does not divide the experts' intermediate size (${moe.intermediateSize})`);
  if (moe && moe.sharedExpertIntermediateSize % size !== 0) throw new ShardError(`--tensor-parallel-size ${size} does not divide shared_expert_intermediate_size (${moe.sharedExpertIntermediateSize})`);
}

/** The dimensions one rank holds. */
export function localDims(cfg: ModelConfig, s: ShardSpec) {
  const numHeads = cfg.numHeads / s.size;
  const numKvHeads = cfg.numKvHeads >= s.size ? cfg.numKvHeads / s.size : 1;
  // KV heads: a contiguous block, or (replicated) the head that this rank's query heads map to.
  const kvHeadStart = cfg.numKvHeads >= s.size ? s.rank * numKvHeads : Math.floor((s.rank * numHeads) / (cfg.numHeads / cfg.numKvHeads));
  const vocabPerRank = Math.ceil(cfg.vocabSize / s.size);
  const vocabStart = Math.min(cfg.vocabSize, s.rank * vocabPerRank);
  const vocabRows = Math.min(cfg.vocabSize, vocabStart + vocabPerRank) - vocabStart;
  const moeIntermediate = cfg.moe ? cfg.moe.intermediateSize / s.size : 0, sharedIntermediate = cfg.moe ? cfg.moe.sharedExpertIntermediateSize / s.size : 0;
  return { numHeads, numKvHeads, kvHeadStart, intermediate: cfg.intermediateSize / s.size, moeIntermediate, sharedIntermediate, vocabStart, vocabRows, vocabPerRank };
}

/** Rows [start, end) of a 1-D or 2-D tensor (no copy; a packed weight's rows are copied). */
export function sliceRows(t: TensorView, start: number, end: number): TensorView;
export function sliceRows(t: LinearWeight, start: number, end: number): LinearWeight;
export function sliceRows(t: LinearWeight, start: number, end: number): LinearWeight {
  if (isPacked(t)) return packedRows(t, start, end);
  const rowElems = t.shape.slice(1).reduce((a, b) => a * b, 1);
  const rowBytes = rowElems * DTYPE_BYTES[t.dtype];
  return { ...t, name: `${t.name}[${start}:${end}]`, shape: [end - start, ...t.shape.slice(1)], bytes: t.bytes.subarray(start * rowBytes, end * rowBytes) };
}

/** Columns [start, end) of a 2-D tensor (a strided copy); of a packed weight, dequantized where they split its words or groups. */
export function sliceCols(t: TensorView, start: number, end: number): TensorView;
export function sliceCols(t: LinearWeight, start: number, end: number): LinearWeight;
export function sliceCols(t: LinearWeight, start: number, end: number): LinearWeight {
  if (isPacked(t)) return packedCols(t, start, end) ?? sliceCols(dequantizeMatrix(t), start, end);
  const [rows, cols] = t.shape as [number, number];
  const e = DTYPE_BYTES[t.dtype], w = (end - start) * e;
  const out = new Uint8Array(rows * w);
  for (let r = 0; r < rows; r++) out.set(t.bytes.subarray((r * cols + start) * e, (r * cols + end) * e), r * w);
  return { ...t, name: `${t.name}[:, ${start}:${end}]`, shape: [rows, end - start], bytes: out };
}

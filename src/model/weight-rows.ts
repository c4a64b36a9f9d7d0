/** Checkpoint tensors with their rows reordered as they load (RoPE layouts, interleaved projections). */
import type { TensorView } from "../loader/safetensors.ts";
import { isPacked, packedPermuteRows, type LinearWeight } from "../loader/packed-matrix.ts";

/**
 * Interleaved RoPE (GLM, DeepSeek: pairs (2i, 2i + 1) of each head's first R dimensions) in the rotate-half form the
 * kernels apply (pairs (i, i + R/2)): row j of a q or k projection (or its bias, or a LoRA B) takes the
 * checkpoint's row interleavedRopeSource(j). q and k are permuted alike, so q·k — the attention — is unchanged;
 * the dimensions past R stay in place.
 */
export function interleavedRopeSource(j: number, D: number, R: number): number {
  const head = Math.floor(j / D), x = j % D, half = R / 2;
  return head * D + (x < half ? 2 * x : x < R ? 2 * (x - half) + 1 : x);
}

/** `count` rows of a 1-D or 2-D tensor, row j being `t`'s row source(j) (a copy); `what` names the order in the result's name. */
export function permuteRows(t: TensorView, count: number, source: (j: number) => number, what: string): TensorView;
export function permuteRows(t: LinearWeight, count: number, source: (j: number) => number, what: string): LinearWeight;
export function permuteRows(t: LinearWeight, count: number, source: (j: number) => number, what: string): LinearWeight {
  if (isPacked(t)) return packedPermuteRows(t, count, source, `${t.name} (${what})`);
  const rowBytes = t.bytes.length / t.shape[0]!, out = new Uint8Array(count * rowBytes);
  for (let j = 0; j < count; j++) out.set(t.bytes.subarray(source(j) * rowBytes, (source(j) + 1) * rowBytes), j * rowBytes);
  return { ...t, name: `${t.name} (${what})`, shape: [count, ...t.shape.slice(1)], bytes: out };
}

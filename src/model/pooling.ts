/**
 * Pooling (vLLM's --runner pooling, for embedding models such as Qwen3-Embedding): a prompt's embedding is
 * the final-norm hidden state of its last token (LAST), the mean of all its tokens' (MEAN: stella, gte-style
 * models) or its first token's (CLS), L2-normalised unless the model says otherwise. The
 * settings come from the sentence-transformers files an embedding checkpoint ships (modules.json and the
 * Pooling module's config.json), then vLLM's --pooler-config on top.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EngineConfigError } from "../engine/engine-config.ts";
import type { ModelConfig } from "./config.ts";

export type PoolingType = "LAST" | "MEAN" | "CLS";
const POOLING_TYPES: readonly string[] = ["LAST", "MEAN", "CLS"];

export interface PoolerConfig {
  /** What the pooled state is for: an embedding, or a sequence classifier's scores (its score head on top). */
  task: "embed" | "classify";
  /**
   * Which tokens' hidden states make the embedding: the last (decoder embedding models; classifiers always),
   * the mean over the prompt, or the first. MEAN and CLS need every prompt token computed: no prefix caching.
   */
  poolingType: PoolingType;
  /** embed: L2-normalise the embeddings. */
  normalize: boolean;
  /** classify: turn logits into probabilities (softmax / sigmoid, see classifierScores) unless a request says not to. */
  useActivation: boolean;
}

const POOLING_MODES: Record<string, string> = {
  pooling_mode_lasttoken: "LAST", pooling_mode_mean_tokens: "MEAN", pooling_mode_cls_token: "CLS", pooling_mode_max_tokens: "MAX",
  pooling_mode_mean_sqrt_len_tokens: "MEAN_SQRT_LEN", pooling_mode_weightedmean_tokens: "WEIGHTED_MEAN",
};

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new EngineConfigError("--runner pooling", `${file}: ${(e as Error).message}`);
  }
}

/** The pooling the model's sentence-transformers files describe (LAST + normalize when there are none). */
function fromSentenceTransformers(modelDir: string): { poolingType: string; normalize: boolean } {
  const modulesFile = join(modelDir, "modules.json");
  if (!existsSync(modulesFile)) return { poolingType: "LAST", normalize: true };
  const modules = readJson(modulesFile);
  if (!Array.isArray(modules)) throw new EngineConfigError("--runner pooling", `${modulesFile}: expected a list of modules`);
  let poolingType = "LAST";
  const pooling = modules.find((m) => typeof m?.type === "string" && m.type.endsWith("models.Pooling"));
  if (pooling) {
    const file = join(modelDir, String(pooling.path ?? ""), "config.json");
    const cfg = existsSync(file) ? readJson(file) as Record<string, unknown> : {};
    const on = Object.keys(POOLING_MODES).filter((k) => cfg[k] === true);
    if (on.length > 0) poolingType = POOLING_MODES[on[0]!]!;
    if (on.length > 1) throw new EngineConfigError("--runner pooling", `${file}: several pooling modes are on (${on.join(", ")})`);
  }
  const normalize = modules.some((m) => typeof m?.type === "string" && m.type.endsWith("models.Normalize"));
  return { poolingType, normalize };
}

/**
 * The model's pooling with vLLM's --pooler-config fields on top: pooling_type, and normalize (embedding
 * models) or use_activation (classifiers, `classify`).
 */
export function loadPoolerConfig(modelDir: string, override: Record<string, unknown> = {}, classify = false): PoolerConfig {
  const fields = classify ? ["pooling_type", "use_activation"] : ["pooling_type", "normalize"];
  for (const key of Object.keys(override))
    if (!fields.includes(key)) throw new EngineConfigError("--pooler-config", `unknown field '${key}' (for ${classify ? "a classifier" : "an embedding model"} vbun has ${fields.join(" and ")})`);
  // A classifier's head sits on the last token (HF's …ForSequenceClassification); sentence-transformers files describe embeddings.
  const base = classify ? { poolingType: "LAST", normalize: false } : fromSentenceTransformers(modelDir);
  const requested = override.pooling_type ?? base.poolingType;
  const poolingType = typeof requested === "string" ? requested.toUpperCase() : "";
  const where = override.pooling_type !== undefined ? "--pooler-config" : "--runner pooling";
  if (!POOLING_TYPES.includes(poolingType)) throw new EngineConfigError(where, `${JSON.stringify(requested)} pooling is not supported (LAST, MEAN or CLS)`);
  if (classify && poolingType !== "LAST") throw new EngineConfigError(where, `a sequence classifier's score head reads the last token: pooling_type must be LAST, got ${JSON.stringify(requested)}`);
  const normalize = override.normalize ?? base.normalize;
  if (typeof normalize !== "boolean") throw new EngineConfigError("--pooler-config", `normalize must be true or false, got ${JSON.stringify(normalize)}`);
  const useActivation = override.use_activation ?? true;
  if (typeof useActivation !== "boolean") throw new EngineConfigError("--pooler-config", `use_activation must be true or false, got ${JSON.stringify(useActivation)}`);
  return { task: classify ? "classify" : "embed", poolingType: poolingType as PoolingType, normalize, useActivation };
}

/** The embedding of one pooled hidden state: L2-normalised when asked, then cut to `dimensions` (Matryoshka: cut, then normalised). */
export function embedding(hidden: Float32Array, normalize: boolean, dimensions: number | null = null): Float32Array {
  const v = dimensions === null ? Float32Array.from(hidden) : hidden.slice(0, dimensions);
  if (!normalize) return v;
  let ss = 0;
  for (let i = 0; i < v.length; i++) ss += v[i]! * v[i]!;
  const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
  for (let i = 0; i < v.length; i++) v[i]! *= inv;
  return v;
}

/** Why a request may not cut its embeddings to `dims` dimensions (null: it may, or it did not ask). */
export function dimensionsError(cfg: ModelConfig, dims: number | null): string | null {
  if (dims === null) return null;
  const m = cfg.matryoshkaDimensions;
  if (m === null) return `dimensions: this model does not support Matryoshka embeddings (its config.json has no is_matryoshka or matryoshka_dimensions), so its embeddings cannot be shortened`;
  if (!Number.isInteger(dims) || dims < 1 || dims > cfg.hiddenSize) return `dimensions must be an integer in [1, ${cfg.hiddenSize}], got ${dims}`;
  if (m !== "any" && !m.includes(dims)) return `dimensions must be one of the model's Matryoshka sizes (${m.join(", ")}), got ${dims}`;
  return null;
}

/**
 * A bi-encoder's pair scores: `vectors` holds the queries' embeddings (one for every document, or one per
 * document), then the documents'; each document's cosine similarity with its query.
 */
export function pairCosines(vectors: ArrayLike<number>[], numQueries: number): number[] {
  return vectors.slice(numQueries).map((doc, i) => cosine(vectors[numQueries === 1 ? 0 : i]!, doc));
}

/** Cosine similarity of two vectors (how /score, /rerank and LLM.score compare embeddings). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! * a[i]!; nb += b[i]! * b[i]!; }
  return dot / Math.max(Math.sqrt(na * nb), 1e-12);
}

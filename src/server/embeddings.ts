/**
 * The endpoints of pooling models (--runner pooling): POST /v1/embeddings (OpenAI's shape) and /pooling for an
 * embedding model, POST /classify for a sequence classifier.
 */
import type { Context } from "hono";
import { Buffer } from "node:buffer";
import { dimensionsError, embedding } from "../model/pooling.ts";
import { SamplingParams } from "../engine/sampling-params.ts";
import { promptList } from "../engine/llm-engine.ts";
import { ApiError } from "./errors.ts";
import { collect, submit } from "./generation.ts";
import { ClassificationRequest, EmbeddingRequest } from "./protocol.ts";
import { classifierScores, topLabel } from "../model/classifier.ts";
import { chatPromptIds } from "./chat.ts";
import type { ServerState } from "./state.ts";

/** A float32 vector as OpenAI's base64 encoding_format sends it: its little-endian bytes. */
function base64(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
}

/** Options every endpoint built on pooling takes (vLLM's names). */
export interface PoolFields {
  /** The LoRA adapter to run with (state.checkModel's answer for the request's model). */
  lora?: string | null;
  truncate_prompt_tokens?: number | null;
  add_special_tokens?: boolean | null;
  priority?: number | null;
}

/** Options every embedding-based endpoint takes (vLLM's names). */
export interface EmbedFields extends PoolFields {
  dimensions?: number | null;
}

type PoolingApi = "Embeddings" | "Pooling" | "Score" | "Rerank" | "Classification";

/**
 * What a pooling model gives for each of `inputs` (texts or token ids) through the engine, in order: the
 * pooled hidden state of an embedding model (`task` "embed"), a classifier's logits ("classify"); with the
 * prompt tokens they took. Every endpoint built on pooling shares it: the model must pool for `task`.
 */
export async function poolInputs(c: Context, state: ServerState, inputs: (string | number[])[], api: PoolingApi, task: "embed" | "classify", f: PoolFields): Promise<{ id: string; pooled: Float32Array[]; promptTokens: number }> {
  const engine = state.engine();
  const pooler = engine.info.pooler;
  if (!pooler) throw new ApiError(400, `this model generates text and does not support the ${api} API, which needs ${task === "embed" ? "embeddings (serve an embedding model, or this one with --runner pooling)" : "a sequence classifier (…ForSequenceClassification)"}`, "model");
  if (pooler.task !== task)
    throw new ApiError(400, task === "embed" ? `this model is a sequence classifier: it makes scores (/classify, /score, /rerank), not the embeddings the ${api} API returns` : `this is an embedding model: the ${api} API needs a sequence classifier (…ForSequenceClassification)`, "model");
  const prompts = inputs.map((x) => {
    const ids = typeof x === "string" ? engine.tokenizer.encode(x, f.add_special_tokens ?? true) : x;
    if (ids.length === 0) throw new ApiError(400, "input must not be empty", "input");
    return ids;
  });
  const params = new SamplingParams({ max_tokens: 1, truncate_prompt_tokens: f.truncate_prompt_tokens ?? null, priority: f.priority ?? 0 });
  const id = `${{ Embeddings: "embd", Pooling: "pool", Score: "score", Rerank: "rerank", Classification: "classify" }[api]}-${crypto.randomUUID().replaceAll("-", "")}`;
  state.logRequest(id, inputs, { truncate_prompt_tokens: params.truncate_prompt_tokens });
  const finals = await collect(submit(engine, id, prompts, params, c.req.raw.signal, f.lora ?? null));
  const pooled = finals.map((o, index) => {
    if (!o.pooled) throw new ApiError(500, `input ${index} ended without a pooled output (${o.outputs[0]?.finishReason ?? "no output"})`);
    return o.pooled;
  });
  return { id, pooled, promptTokens: finals.reduce((a, o) => a + o.numPromptTokens, 0) };
}

/** The embeddings of `inputs` (normalised as the model's pooler says, cut to `dimensions`): /v1/embeddings, /pooling, and /score and /rerank for a bi-encoder. */
export async function embedInputs(c: Context, state: ServerState, inputs: (string | number[])[], api: "Embeddings" | "Pooling" | "Score" | "Rerank", f: EmbedFields): Promise<{ id: string; vectors: Float32Array[]; promptTokens: number }> {
  const engine = state.engine();
  const dims = f.dimensions ?? null;
  const bad = engine.info.pooler?.task === "embed" ? dimensionsError(engine.modelConfig, dims) : null;
  if (bad) throw new ApiError(400, bad, "dimensions");
  const { id, pooled, promptTokens } = await poolInputs(c, state, inputs, api, "embed", f);
  return { id, vectors: pooled.map((h) => embedding(h, engine.info.pooler!.normalize, dims)), promptTokens };
}

/** POST /pooling (vLLM's): the same inputs as /v1/embeddings; each pooled output as `data`, never base64. */
export async function pooling(c: Context, state: ServerState): Promise<Response> {
  const body = EmbeddingRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  if (body.encoding_format === "base64") throw new ApiError(400, "/pooling returns float arrays (encoding_format float)", "encoding_format");
  const { id, vectors, promptTokens } = await embedInputs(c, state, pooledRequestInputs(state, body), "Pooling", { ...body, lora });
  const data = vectors.map((v, index) => ({ object: "pooling", index, data: Array.from(v) }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

/** A pooling request's inputs (/v1/embeddings, /pooling, /classify): its texts or token ids, or the chat template's token ids for `messages`. */
export function pooledRequestInputs(state: ServerState, body: EmbeddingRequest | ClassificationRequest): (string | number[])[] {
  if ("messages" in body) {
    // vLLM's chat form: the template's text, tokenized as it stands (add_special_tokens false unless asked).
    return [chatPromptIds(state, { ...body, add_generation_prompt: body.add_generation_prompt ?? false, add_special_tokens: body.add_special_tokens ?? false }).ids];
  }
  return promptList(body.input);
}

export async function embeddings(c: Context, state: ServerState): Promise<Response> {
  const body = EmbeddingRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  const { id, vectors, promptTokens } = await embedInputs(c, state, pooledRequestInputs(state, body), "Embeddings", { ...body, lora });
  const data = vectors.map((v, index) => ({ object: "embedding", index, embedding: body.encoding_format === "base64" ? base64(v) : Array.from(v) }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

/**
 * POST /classify (vLLM's), for a sequence classifier: each input's label probabilities (`probs`; the raw
 * logits with use_activation false), its most likely label, and the number of classes.
 */
export async function classify(c: Context, state: ServerState): Promise<Response> {
  const body = ClassificationRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  const { id, pooled, promptTokens } = await poolInputs(c, state, pooledRequestInputs(state, body), "Classification", "classify", { ...body, lora });
  const engine = state.engine(), classifier = engine.modelConfig.classifier!;
  const useActivation = body.use_activation ?? engine.info.pooler!.useActivation;
  const data = pooled.map((logits, index) => ({
    index, label: topLabel(classifier, logits), probs: classifierScores(classifier, logits, useActivation), num_classes: classifier.numLabels,
  }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens, completion_tokens: 0, prompt_tokens_details: null } });
}

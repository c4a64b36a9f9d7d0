/** POST /v1/embeddings, for a pooling model (--runner pooling): one embedding per input, OpenAI's response shape. */
import type { Context } from "hono";
import { Buffer } from "node:buffer";
import { dimensionsError, embedding } from "../model/pooling.ts";
import { SamplingParams } from "../engine/sampling-params.ts";
import { promptList } from "../engine/llm-engine.ts";
import { ApiError } from "./errors.ts";
import { collect, submit } from "./generation.ts";
import { EmbeddingRequest } from "./protocol.ts";
import { chatPromptIds } from "./chat.ts";
import type { ServerState } from "./state.ts";

/** A float32 vector as OpenAI's base64 encoding_format sends it: its little-endian bytes. */
function base64(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
}

/** Options every embedding-based endpoint takes (vLLM's names). */
export interface EmbedFields {
  dimensions?: number | null;
  truncate_prompt_tokens?: number | null;
  add_special_tokens?: boolean | null;
  priority?: number | null;
}

/**
 * The embeddings of `inputs` (texts or token ids) through the engine, in order, with the prompt tokens they
 * took. The endpoints built on embeddings (this one, /score, /rerank) share it: the model must pool.
 */
export async function embedInputs(c: Context, state: ServerState, inputs: (string | number[])[], api: "Embeddings" | "Pooling" | "Score" | "Rerank", f: EmbedFields): Promise<{ id: string; vectors: Float32Array[]; promptTokens: number }> {
  const engine = state.engine();
  const pooler = engine.info.pooler;
  if (!pooler) throw new ApiError(400, `this model generates text and does not support the ${api} API, which needs embeddings (serve an embedding model, or this one with --runner pooling)`, "model");
  const dims = f.dimensions ?? null;
  const bad = dimensionsError(engine.modelConfig, dims);
  if (bad) throw new ApiError(400, bad, "dimensions");
  const prompts = inputs.map((x) => {
    const ids = typeof x === "string" ? engine.tokenizer.encode(x, f.add_special_tokens ?? true) : x;
    if (ids.length === 0) throw new ApiError(400, "input must not be empty", "input");
    return ids;
  });
  const params = new SamplingParams({ max_tokens: 1, truncate_prompt_tokens: f.truncate_prompt_tokens ?? null, priority: f.priority ?? 0 });
  const id = `${{ Embeddings: "embd", Pooling: "pool", Score: "score", Rerank: "rerank" }[api]}-${crypto.randomUUID().replaceAll("-", "")}`;
  state.logRequest(id, inputs, { truncate_prompt_tokens: params.truncate_prompt_tokens });
  const finals = await collect(submit(engine, id, prompts, params, c.req.raw.signal));
  const vectors = finals.map((o, index) => {
    if (!o.pooled) throw new ApiError(500, `input ${index} ended without an embedding (${o.outputs[0]?.finishReason ?? "no output"})`);
    return embedding(o.pooled, pooler.normalize, dims);
  });
  return { id, vectors, promptTokens: finals.reduce((a, o) => a + o.numPromptTokens, 0) };
}

/** POST /pooling (vLLM's): the same inputs as /v1/embeddings; each pooled output as `data`, never base64. */
export async function pooling(c: Context, state: ServerState): Promise<Response> {
  const body = EmbeddingRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  if (body.encoding_format === "base64") throw new ApiError(400, "/pooling returns float arrays (encoding_format float)", "encoding_format");
  const { id, vectors, promptTokens } = await embedInputs(c, state, embeddingInputs(state, body), "Pooling", body);
  const data = vectors.map((v, index) => ({ object: "pooling", index, data: Array.from(v) }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

/** An embedding request's inputs: its texts or token ids, or the chat template's token ids for `messages`. */
function embeddingInputs(state: ServerState, body: EmbeddingRequest): (string | number[])[] {
  if ("messages" in body) {
    // vLLM's chat form: the template's text, tokenized as it stands (add_special_tokens false unless asked).
    return [chatPromptIds(state, { ...body, add_generation_prompt: body.add_generation_prompt ?? false, add_special_tokens: body.add_special_tokens ?? false }).ids];
  }
  return promptList(body.input);
}

export async function embeddings(c: Context, state: ServerState): Promise<Response> {
  const body = EmbeddingRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  const { id, vectors, promptTokens } = await embedInputs(c, state, embeddingInputs(state, body), "Embeddings", body);
  const data = vectors.map((v, index) => ({ object: "embedding", index, embedding: body.encoding_format === "base64" ? base64(v) : Array.from(v) }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

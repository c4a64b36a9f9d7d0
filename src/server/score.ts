/**
 * vLLM's scoring endpoints for an embedding model (a bi-encoder): POST /score (/v1/score) scores text pairs,
 * POST /rerank (/v1/rerank, /v2/rerank; Jina's and Cohere's shape) orders documents for a query — both by the
 * cosine similarity of the texts' embeddings, as vLLM scores with embedding models.
 */
import type { Context } from "hono";
import { cosine } from "../model/pooling.ts";
import { promptList } from "../engine/llm-engine.ts";
import { ApiError } from "./errors.ts";
import { embedInputs } from "./embeddings.ts";
import { RerankRequest, ScoreRequest } from "./protocol.ts";
import type { ServerState } from "./state.ts";

export async function score(c: Context, state: ServerState): Promise<Response> {
  const body = ScoreRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  const queries = body.queries ?? body.text_1, documents = body.documents ?? body.text_2;
  if (queries == null) throw new ApiError(400, "give the texts to score: queries (or text_1)", "queries");
  if (documents == null) throw new ApiError(400, "give the texts to score against: documents (or text_2)", "documents");
  const q = promptList(queries), d = promptList(documents);
  if (q.length === 0 || d.length === 0) throw new ApiError(400, "queries and documents must not be empty", q.length === 0 ? "queries" : "documents");
  // One query against every document, or pairs.
  if (q.length !== 1 && q.length !== d.length) throw new ApiError(400, `queries has ${q.length} texts and documents ${d.length}: give one query, or as many as documents`, "queries");
  const { vectors, promptTokens, id } = await embedInputs(c, state, [...q, ...d], "Score", body);
  const data = d.map((_, i) => ({ index: i, object: "score", score: cosine(vectors[q.length === 1 ? 0 : i]!, vectors[q.length + i]!) }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

export async function rerank(c: Context, state: ServerState): Promise<Response> {
  const body = RerankRequest.parse(await state.readJson(c));
  state.checkModel(body.model);
  const docs = body.documents;
  if (docs.length === 0) throw new ApiError(400, "documents must not be empty", "documents");
  const topN = body.top_n ?? docs.length;
  if (topN < 1) throw new ApiError(400, `top_n must be at least 1, got ${topN}`, "top_n");
  const { vectors, promptTokens, id } = await embedInputs(c, state, [body.query, ...docs], "Rerank", body);
  const results = docs.map((text, index) => ({ index, document: { text }, relevance_score: cosine(vectors[0]!, vectors[index + 1]!) }))
    .sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index)
    .slice(0, topN)
    .map((r) => (body.return_documents === false ? { index: r.index, relevance_score: r.relevance_score } : r));
  return c.json({ id, model: state.servedModelName, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens }, results });
}

/**
 * vLLM's scoring endpoints: POST /score (/v1/score) scores text pairs, POST /rerank (/v1/rerank, /v2/rerank;
 * Jina's and Cohere's shape) orders documents for a query. An embedding model (a bi-encoder) scores a pair by
 * the cosine similarity of the two texts' embeddings; a sequence classifier with one label (a cross-encoder,
 * e.g. a reranker) reads the pair as one input — the tokenizer's pair encoding — and scores it by its label's
 * activated logit (sigmoid), as vLLM does.
 */
import type { Context } from "hono";
import { pairCosines } from "../model/pooling.ts";
import { classifierScores, crossEncoderInput } from "../model/classifier.ts";
import { promptList } from "../engine/llm-engine.ts";
import { ApiError } from "./errors.ts";
import { embedInputs, poolInputs, type EmbedFields } from "./embeddings.ts";
import { RerankRequest, ScoreRequest } from "./protocol.ts";
import type { ServerState } from "./state.ts";

type Text = string | number[];

/**
 * The score of each (query, document) pair — queries holds one text for all documents, or one per document —
 * with the prompt tokens they took. `useActivation` false: a cross-encoder's raw logits.
 */
async function pairScores(c: Context, state: ServerState, queries: Text[], documents: Text[], api: "Score" | "Rerank", f: EmbedFields & { use_activation?: boolean | null }): Promise<{ id: string; scores: number[]; promptTokens: number }> {
  const engine = state.engine();
  const classifier = engine.info.pooler?.task === "classify" ? engine.modelConfig.classifier! : null;
  const queryOf = (i: number) => queries[queries.length === 1 ? 0 : i]!;
  if (!classifier) {
    const { id, vectors, promptTokens } = await embedInputs(c, state, [...queries, ...documents], api, f);
    return { id, scores: pairCosines(vectors, queries.length), promptTokens };
  }
  if (classifier.numLabels !== 1) throw new ApiError(400, `the ${api} API needs a classifier with one label (a cross-encoder's relevance); this one has ${classifier.numLabels} (${classifier.labels.join(", ")}): use /classify`, "model");
  const pairs = documents.map((doc, i) => {
    try { return crossEncoderInput(engine.tokenizer, queryOf(i), doc, f.add_special_tokens ?? true); } catch (e) { throw new ApiError(400, (e as Error).message, "documents"); }
  });
  const { id, pooled, promptTokens } = await poolInputs(c, state, pairs, api, "classify", f);
  const useActivation = f.use_activation ?? engine.info.pooler!.useActivation;
  return { id, scores: pooled.map((l) => classifierScores(classifier, l, useActivation)[0]!), promptTokens };
}

export async function score(c: Context, state: ServerState): Promise<Response> {
  const body = ScoreRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  const queries = body.queries ?? body.text_1, documents = body.documents ?? body.text_2;
  if (queries == null) throw new ApiError(400, "give the texts to score: queries (or text_1)", "queries");
  if (documents == null) throw new ApiError(400, "give the texts to score against: documents (or text_2)", "documents");
  const q = promptList(queries), d = promptList(documents);
  if (q.length === 0 || d.length === 0) throw new ApiError(400, "queries and documents must not be empty", q.length === 0 ? "queries" : "documents");
  // One query against every document, or pairs.
  if (q.length !== 1 && q.length !== d.length) throw new ApiError(400, `queries has ${q.length} texts and documents ${d.length}: give one query, or as many as documents`, "queries");
  const { scores, promptTokens, id } = await pairScores(c, state, q, d, "Score", { ...body, lora });
  const data = scores.map((s, index) => ({ index, object: "score", score: s }));
  return c.json({ id, object: "list", created: Math.floor(Date.now() / 1000), model: state.servedModelName, data, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } });
}

export async function rerank(c: Context, state: ServerState): Promise<Response> {
  const body = RerankRequest.parse(await state.readJson(c));
  const lora = state.checkModel(body.model);
  const docs = body.documents;
  if (docs.length === 0) throw new ApiError(400, "documents must not be empty", "documents");
  const topN = body.top_n ?? docs.length;
  if (topN < 1) throw new ApiError(400, `top_n must be at least 1, got ${topN}`, "top_n");
  const { scores, promptTokens, id } = await pairScores(c, state, [body.query], docs, "Rerank", { ...body, lora });
  const results = docs.map((text, index) => ({ index, document: { text }, relevance_score: scores[index]! }))
    .sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index)
    .slice(0, topN)
    .map((r) => (body.return_documents === false ? { index: r.index, relevance_score: r.relevance_score } : r));
  return c.json({ id, model: state.servedModelName, usage: { prompt_tokens: promptTokens, total_tokens: promptTokens }, results });
}

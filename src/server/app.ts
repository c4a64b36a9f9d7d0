/** The HTTP routes (hono). Every error is an OpenAI-style body; the server keeps serving. */
import { Hono, type Context } from "hono";
import { chatCompletions, chatPromptIds } from "./chat.ts";
import { responses } from "./responses.ts";
import { completions } from "./completions.ts";
import { classify, embeddings, pooling } from "./embeddings.ts";
import { rerank, score } from "./score.ts";
import { ApiError, errorBody, toErrorResponse } from "./errors.ts";
import { renderMetrics } from "./metrics.ts";
import { DetokenizeRequest, LoadLoraAdapterRequest, TokenizeRequest, UnloadLoraAdapterRequest } from "./protocol.ts";
import type { ServerState } from "./state.ts";
import { VERSION } from "../version.ts";

const PUBLIC = new Set(["/health", "/version", "/metrics", "/ping"]);
const GENERATION = new Set(["/v1/completions", "/v1/chat/completions", "/v1/responses"]);

export function buildApp(state: ServerState): Hono {
  const app = new Hono();

  app.onError((e, c) => {
    const { status, body } = toErrorResponse(e);
    return c.json(body, status as 400);
  });
  app.notFound((c) => c.json(errorBody(404, `no route for ${c.req.method} ${c.req.path}`), 404));

  app.use("*", async (c, next) => {
    if (state.apiKey !== null && !PUBLIC.has(c.req.path)) {
      const auth = c.req.header("authorization") ?? "";
      if (auth !== `Bearer ${state.apiKey}`) return c.json(errorBody(401, "invalid or missing API key"), 401);
    }
    await next();
  });

  const health = (c: Context) => {
    if (state.asyncEngine?.isHealthy) return c.body(null, 200);
    const why = state.loadError ? `model failed to load: ${state.loadError.message}` : state.asyncEngine ? "engine failed" : "model is loading";
    return c.json(errorBody(503, why), 503);
  };
  app.get("/health", health);
  app.get("/ping", health);
  app.get("/version", (c) => c.json({ version: VERSION }));

  app.get("/v1/models", (c) => {
    const e = state.engine();
    return c.json({
      object: "list",
      data: [
        // One card per served name (vLLM's --served-model-name a b …).
        ...state.servedModelNames.map((id) => ({ id, object: "model", created: state.startedAt, owned_by: "vbun", root: e.info.modelDir, parent: null, max_model_len: e.maxModelLen })),
        // LoRA adapters, as vLLM lists them: their own ids, the base model as parent.
        ...e.info.loraModules.map((m) => ({ id: m.name, object: "model", created: state.startedAt, owned_by: "vbun", root: m.dir, parent: state.servedModelName, max_model_len: e.maxModelLen })),
      ],
    });
  });

  app.get("/metrics", (c) => {
    if (!state.asyncEngine) return c.text("", 200, { "Content-Type": "text/plain; version=0.0.4" });
    return c.text(renderMetrics(state.asyncEngine.stats, state.servedModelName), 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  // A pooling model (embeddings, classifiers) generates no text: the generation endpoints say so.
  app.use("/v1/*", async (c, next) => {
    const pooler = state.asyncEngine?.info.pooler;
    if (c.req.method === "POST" && GENERATION.has(c.req.path) && pooler)
      return c.json(errorBody(400, pooler.task === "embed" ? `this is an embedding model (--runner pooling): it does not support ${c.req.path}; use /v1/embeddings` : `this is a sequence classifier (--runner pooling): it does not support ${c.req.path}; use /classify, /score or /rerank`, "model"), 400);
    await next();
  });
  app.post("/v1/completions", (c) => completions(c, state));
  app.post("/v1/chat/completions", (c) => chatCompletions(c, state));
  app.post("/v1/responses", (c) => responses(c, state));
  const storedResponse = (c: Context) => {
    if (!state.responseStore) throw new ApiError(404, "this server stores no responses (start it with --responses-store-size N)");
    return c.req.param("id")!;
  };
  app.get("/v1/responses/:id", (c) => {
    const id = storedResponse(c);
    const stored = state.responseStore!.get(id);
    if (!stored) throw new ApiError(404, `Response with id '${id}' not found`);
    return c.json(stored.response);
  });
  app.delete("/v1/responses/:id", (c) => {
    const id = storedResponse(c);
    if (!state.responseStore!.delete(id)) throw new ApiError(404, `Response with id '${id}' not found`);
    return c.json({ id, object: "response", deleted: true });
  });
  app.post("/v1/embeddings", (c) => embeddings(c, state));
  app.post("/pooling", (c) => pooling(c, state));
  for (const path of ["/classify", "/v1/classify"]) app.post(path, (c) => classify(c, state));
  for (const path of ["/score", "/v1/score"]) app.post(path, (c) => score(c, state));
  for (const path of ["/rerank", "/v1/rerank", "/v2/rerank"]) app.post(path, (c) => rerank(c, state));

  app.post("/tokenize", async (c) => {
    const body = TokenizeRequest.parse(await state.readJson(c));
    state.checkModel(body.model);
    const e = state.engine();
    const tokens = "prompt" in body ? e.tokenizer.encode(body.prompt, body.add_special_tokens ?? true) : chatPromptIds(state, body).ids;
    return c.json({ count: tokens.length, max_model_len: e.maxModelLen, tokens });
  });

  app.post("/detokenize", async (c) => {
    const body = DetokenizeRequest.parse(await state.readJson(c));
    state.checkModel(body.model);
    const e = state.engine();
    const V = e.modelConfig.vocabSize;
    for (const t of body.tokens) if (t >= V) throw new ApiError(400, `token id ${t} is out of vocabulary (size ${V})`, "tokens");
    return c.json({ prompt: e.tokenizer.decode(body.tokens, false) });
  });

  // vLLM's run-time LoRA loading, served only with VLLM_ALLOW_RUNTIME_LORA_UPDATING (as in vLLM: anyone who
  // can call it makes the server read a directory of its choosing).
  if (state.runtimeLoraUpdating) {
    app.post("/v1/load_lora_adapter", async (c) => {
      const body = LoadLoraAdapterRequest.parse(await state.readJson(c));
      const e = state.engine();
      if (!e.info.lora) throw new ApiError(400, "LoRA is not enabled on this server (start it with --enable-lora)", "lora_name");
      if (state.servedModelNames.includes(body.lora_name)) throw new ApiError(400, `'${body.lora_name}' is the served model's name`, "lora_name");
      if (e.info.loraModules.some((m) => m.name === body.lora_name)) throw new ApiError(400, `The lora adapter '${body.lora_name}' has already been loaded.`, "lora_name");
      await e.addLora(body.lora_name, body.lora_path);
      return c.text(`Success: LoRA adapter '${body.lora_name}' added successfully.`);
    });
    app.post("/v1/unload_lora_adapter", async (c) => {
      const body = UnloadLoraAdapterRequest.parse(await state.readJson(c));
      const e = state.engine();
      if (!(await e.removeLora(body.lora_name))) throw new ApiError(404, `The lora adapter '${body.lora_name}' cannot be found.`, "lora_name");
      return c.text(`Success: LoRA adapter '${body.lora_name}' removed successfully.`);
    });
  }

  for (const path of ["/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/tokenize", "/detokenize"])
    app.on(["GET", "PUT", "DELETE", "PATCH"], path, (c) => c.json(errorBody(405, `method ${c.req.method} not allowed on ${path}`), 405));
  for (const path of ["/v1/audio/transcriptions", "/v1/responses"])
    app.all(path, (c) => c.json(errorBody(501, `${path} is not implemented by vbun`), 501));
  return app;
}

/** What the HTTP handlers share: the engine (once ready), the served name, helpers. */
import type { Context } from "hono";
import type { AsyncEngine } from "../engine/async-engine.ts";
import { ApiError } from "./errors.ts";
import { resolveReasoningParser, type AnswerParserName, type ReasoningParserName } from "./reasoning.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ToolCallParserName } from "./tool-calls.ts";
import type { ResponseStore } from "./response-store.ts";

export const MAX_BODY_BYTES = 32 * 1024 * 1024;

export class ServerState {
  asyncEngine: AsyncEngine | null = null;
  /** Set when loading failed: /health answers 503 with it. */
  loadError: Error | null = null;
  readonly startedAt = Math.floor(Date.now() / 1000);
  /** --return-tokens-as-token-ids: logprobs name tokens "token_id:N" unless a request says otherwise. */
  returnTokensAsTokenIds = false;
  /** VLLM_ALLOW_RUNTIME_LORA_UPDATING: /v1/load_lora_adapter and /v1/unload_lora_adapter are served. */
  runtimeLoraUpdating = false;
  private readonly tokenTexts = new Map<number, string>();

  /** The names requests may give as `model` (--served-model-name); responses carry the first. */
  readonly servedModelNames: readonly string[];

  get servedModelName(): string {
    return this.servedModelNames[0]!;
  }

  constructor(
    servedModelNames: string | readonly string[],
    readonly apiKey: string | null,
    /** Log each request (at --log-level debug), showing at most maxLogLen prompt characters or ids. */
    readonly logRequests = false,
    readonly maxLogLen: number | null = null,
    /** --reasoning-parser: split <think> blocks into reasoning_content (chat). */
    readonly reasoningParser: ReasoningParserName | null = null,
    /** --enable-auto-tool-choice --tool-call-parser: parse tool calls out of chat answers. */
    readonly toolCallParser: ToolCallParserName | null = null,
    /** --enable-prompt-tokens-details: usage.prompt_tokens_details.cached_tokens. */
    readonly promptTokensDetails = false,
    /** --responses-store-size N: stored Responses (previous_response_id, GET /v1/responses/{id}); null: none. */
    readonly responseStore: ResponseStore | null = null,
  ) {
    this.servedModelNames = typeof servedModelNames === "string" ? [servedModelNames] : [...servedModelNames];
    if (this.servedModelNames.length === 0) throw new Error("ServerState: no served model name");
  }

  /**
   * The reasoning parser for a request: --reasoning-parser (deepseek_v3 resolved by the request's
   * chat_template_kwargs), or for a model that answers in Harmony's channels (GPT-OSS) openai_gptoss — vLLM reads
   * those answers so without a flag.
   */
  reasoningParserFor(model: Pick<ModelConfig, "harmony">, kwargs?: Record<string, unknown> | null): AnswerParserName | null {
    return this.reasoningParser ? resolveReasoningParser(this.reasoningParser, kwargs) : model.harmony ? "openai_gptoss" : null;
  }

  logRequest(id: string, prompts: (string | number[])[], params: object): void {
    if (!this.logRequests) return;
    const cut = (p: string | number[]) => {
      const shown = this.maxLogLen === null ? p : p.slice(0, this.maxLogLen);
      return JSON.stringify(shown) + (shown.length < p.length ? `…(+${p.length - shown.length})` : "");
    };
    process.stderr.write(`[vbun] request ${id}: prompts=[${prompts.map(cut).join(", ")}] params=${JSON.stringify(params)}\n`);
  }

  engine(): AsyncEngine {
    if (!this.asyncEngine) throw new ApiError(503, this.loadError ? `the model failed to load: ${this.loadError.message}` : "the model is still loading");
    if (!this.asyncEngine.isHealthy) throw new ApiError(503, "the engine has failed; restart the server");
    return this.asyncEngine;
  }

  /**
   * A request's `model`: the served model (or none given: null), a LoRA adapter's name (returned), else 404.
   * Adapters are known once the engine is up: before that, any other name gets the engine's 503.
   */
  checkModel(model: string | null | undefined): string | null {
    if (model == null || this.servedModelNames.includes(model)) return null;
    if (this.engine().info.loraModules.some((m) => m.name === model)) return model;
    throw new ApiError(404, `The model \`${model}\` does not exist.`, "model");
  }

  async readJson(c: Context): Promise<unknown> {
    const len = Number(c.req.header("content-length") ?? 0);
    if (len > MAX_BODY_BYTES) throw new ApiError(413, `request body of ${len} bytes exceeds the limit of ${MAX_BODY_BYTES}`);
    const text = await c.req.text();
    if (text.length > MAX_BODY_BYTES) throw new ApiError(413, `request body exceeds the limit of ${MAX_BODY_BYTES} bytes`);
    try {
      const v = JSON.parse(text);
      if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("expected a JSON object");
      return v;
    } catch (e) {
      throw new ApiError(400, `invalid JSON body: ${(e as Error).message}`);
    }
  }

  /** The text of one token (special tokens included), cached. */
  /** How a request's logprobs name a token: its text, or "token_id:N" (return_tokens_as_token_ids, or the server's default). */
  logprobToken(asIds: boolean | null | undefined): (id: number) => string {
    return (asIds ?? this.returnTokensAsTokenIds) ? (id) => `token_id:${id}` : (id) => this.tokenText(id);
  }

  tokenText(id: number): string {
    let t = this.tokenTexts.get(id);
    if (t === undefined) {
      t = this.engine().tokenizer.decode([id], false);
      if (this.tokenTexts.size < 200_000) this.tokenTexts.set(id, t);
    }
    return t;
  }
}

/** Request bodies of the OpenAI-compatible endpoints (zod). Unknown fields are accepted and ignored. */
import { z } from "zod";
import { structuredFields } from "./structured-request.ts";

const int = () => z.number().int();
const stop = z.union([z.string(), z.array(z.string())]).nullish();

/** Sampling fields shared by completions and chat (OpenAI's plus vLLM's extras). */
const sampling = {
  model: z.string().nullish(),
  temperature: z.number().nullish(),
  top_p: z.number().nullish(),
  top_k: int().nullish(),
  min_p: z.number().nullish(),
  n: int().nullish(),
  seed: int().nullish(),
  stop,
  stop_token_ids: z.array(int().nonnegative()).nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  repetition_penalty: z.number().nullish(),
  logit_bias: z.record(z.string(), z.number()).nullish(),
  ignore_eos: z.boolean().nullish(),
  min_tokens: int().nullish(),
  include_stop_str_in_output: z.boolean().nullish(),
  skip_special_tokens: z.boolean().nullish(),
  allowed_token_ids: z.array(int().nonnegative()).nullish(),
  bad_words: z.array(z.string()).nullish(),
  truncate_prompt_tokens: int().nullish(),
  cache_salt: z.string().nullish(),
  priority: int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish(), continuous_usage_stats: z.boolean().nullish() }).nullish(),
  user: z.string().nullish(),
  use_beam_search: z.boolean().nullish(),
  length_penalty: z.number().nullish(),
  /** vLLM's: logprobs name tokens "token_id:N" (RL trainers match them by id; some tokens are not valid text). */
  return_tokens_as_token_ids: z.boolean().nullish(),
  ...structuredFields,
};

const tokenIds = z.array(int().min(0, "token ids must be >= 0"));

export const CompletionRequest = z.object({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()), tokenIds, z.array(tokenIds)]),
  max_tokens: int().nullish(),
  logprobs: int().nullish(),
  prompt_logprobs: int().nullish(),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
  add_special_tokens: z.boolean().nullish(),
  return_token_ids: z.boolean().nullish(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

const contentPart = z.object({ type: z.string(), text: z.string().optional() }).passthrough();
export const ChatMessage = z.object({
  role: z.string(),
  content: z.union([z.string(), z.array(contentPart)]).nullish(),
  name: z.string().nullish(),
  tool_calls: z.array(z.unknown()).nullish(),
  tool_call_id: z.string().nullish(),
  reasoning_content: z.string().nullish(),
}).passthrough();

export const ChatCompletionRequest = z.object({
  ...sampling,
  messages: z.array(ChatMessage).min(1, "messages must not be empty"),
  max_tokens: int().nullish(),
  max_completion_tokens: int().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: int().nullish(),
  tools: z.array(z.unknown()).nullish(),
  tool_choice: z.unknown().optional(),
  add_generation_prompt: z.boolean().nullish(),
  continue_final_message: z.boolean().nullish(),
  chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
  /** OpenAI's: how hard a reasoning model thinks; the chat template reads it (GPT-OSS's says "Reasoning: high"). */
  reasoning_effort: z.enum(["minimal", "low", "medium", "high"]).nullish(),
  echo: z.boolean().nullish(),
  add_special_tokens: z.boolean().nullish(),
  /** vLLM's: false leaves the reasoning out of the answer (with --reasoning-parser). */
  include_reasoning: z.boolean().nullish(),
  /** vLLM's: the prompt's token ids (prompt_token_ids) and each choice's (token_ids) come with the answer. */
  return_token_ids: z.boolean().nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const TokenizeRequest = z.union([
  z.object({ model: z.string().nullish(), prompt: z.string(), add_special_tokens: z.boolean().nullish() }),
  z.object({ model: z.string().nullish(), messages: z.array(ChatMessage).min(1), add_generation_prompt: z.boolean().nullish(), add_special_tokens: z.boolean().nullish(), chat_template_kwargs: z.record(z.string(), z.unknown()).nullish() }),
]);

export const DetokenizeRequest = z.object({ model: z.string().nullish(), tokens: tokenIds });

/** vLLM's run-time LoRA endpoints (VLLM_ALLOW_RUNTIME_LORA_UPDATING). */
export const LoadLoraAdapterRequest = z.object({ lora_name: z.string().min(1), lora_path: z.string().min(1) });
export const UnloadLoraAdapterRequest = z.object({ lora_name: z.string().min(1), lora_int_id: z.number().int().nullish() });

const responseContentPart = z.object({ type: z.string(), text: z.string().optional() }).passthrough();
const responseInputItem = z.object({
  type: z.string().optional(),
  role: z.string().optional(),
  content: z.union([z.string(), z.array(responseContentPart)]).nullish(),
  call_id: z.string().optional(),
  name: z.string().optional(),
  arguments: z.string().optional(),
  output: z.unknown().optional(),
}).passthrough();

/** POST /v1/responses (OpenAI's Responses API; the sampling fields and vLLM's extras as in chat). */
export const ResponsesRequest = z.object({
  ...sampling,
  input: z.union([z.string(), z.array(responseInputItem)]),
  instructions: z.string().nullish(),
  max_output_tokens: int().nullish(),
  text: z.object({ format: z.object({ type: z.string(), name: z.string().optional(), schema: z.unknown().optional(), strict: z.boolean().nullish() }).passthrough().nullish() }).passthrough().nullish(),
  tools: z.array(z.object({ type: z.string(), name: z.string().optional(), description: z.string().nullish(), parameters: z.record(z.string(), z.unknown()).nullish(), strict: z.boolean().nullish() }).passthrough()).nullish(),
  tool_choice: z.unknown().optional(),
  previous_response_id: z.string().nullish(),
  store: z.boolean().nullish(),
  background: z.boolean().nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  reasoning: z.object({ effort: z.enum(["minimal", "low", "medium", "high"]).nullish(), summary: z.string().nullish() }).passthrough().nullish(),
  truncation: z.string().nullish(),
  include: z.array(z.string()).nullish(),
});

/** What every endpoint built on embeddings takes besides its texts (vLLM's extras, and OpenAI's user). */
const embedFields = { truncate_prompt_tokens: int().nullish(), add_special_tokens: z.boolean().nullish(), priority: int().nullish(), user: z.string().nullish() };
const embeddingFields = { model: z.string().nullish(), encoding_format: z.enum(["float", "base64"]).nullish(), dimensions: int().nullish(), ...embedFields };

/** The inputs of a pooling request: texts or token ids, or (vLLM's chat form) `messages` — one input, the chat template's tokens. */
function pooledInputs<F extends z.ZodRawShape>(fields: F) {
  return z.union([
    z.object({ ...fields, input: z.union([z.string(), z.array(z.string()).min(1), tokenIds.min(1), z.array(tokenIds.min(1)).min(1)]) }),
    z.object({
      ...fields, messages: z.array(ChatMessage).min(1), add_generation_prompt: z.boolean().nullish(), continue_final_message: z.boolean().nullish(),
      chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
    }),
  ]);
}

/** POST /v1/embeddings: OpenAI's fields, plus vLLM's truncate_prompt_tokens, add_special_tokens and priority; or chat `messages`. */
export const EmbeddingRequest = pooledInputs(embeddingFields);
export type EmbeddingRequest = z.infer<typeof EmbeddingRequest>;

const scoreTexts = z.union([z.string(), z.array(z.string()), tokenIds.min(1), z.array(tokenIds.min(1))]);

/** POST /classify (vLLM's): a classifier's label probabilities per input; use_activation false returns the raw logits. */
export const ClassificationRequest = pooledInputs({ model: z.string().nullish(), use_activation: z.boolean().nullish(), ...embedFields });
export type ClassificationRequest = z.infer<typeof ClassificationRequest>;

/** POST /score: vLLM's queries/documents (or the older text_1/text_2): one query against each document, or pairs. */
export const ScoreRequest = z.object({ model: z.string().nullish(), queries: scoreTexts.nullish(), documents: scoreTexts.nullish(), text_1: scoreTexts.nullish(), text_2: scoreTexts.nullish(), use_activation: z.boolean().nullish(), ...embedFields });

/** POST /rerank: Jina's and Cohere's shape, as vLLM takes it. */
export const RerankRequest = z.object({ model: z.string().nullish(), query: z.string(), documents: z.array(z.string()), top_n: int().nullish(), return_documents: z.boolean().nullish(), use_activation: z.boolean().nullish(), ...embedFields });

/**
 * The tiny checkpoints Hugging Face's own libraries score on a device run (scripts/gpu-check, step 5) —
 * transformers' sequence classifier, PEFT's LoRA, sentence-transformers' embeddings — and the CPU tests
 * check vbun against those recorded outputs (test/hf-fixtures.test.ts). Both sides make them from here,
 * so they are the same bytes.
 */
import { join } from "node:path";
import { LORA_TARGETS } from "../lora/lora-adapter.ts";
import { writeTinyLoraAdapter, type TinyAdapterSpec } from "../lora/tiny-adapter.ts";
import { writeTinyModel, type TinyModelOptions } from "./tiny-model.ts";

export const REFERENCE_MODELS = {
  /** Qwen3ForSequenceClassification with 3 labels: transformers' AutoModelForSequenceClassification logits. */
  seqcls: { arch: "qwen3", seed: 3, vocabSize: 2048, dtype: "F32", numLabels: 3 },
  /** A Llama base for a LoRA adapter on every projection: PEFT's PeftModel logits. */
  loraBase: { arch: "llama", seed: 3, vocabSize: 2048, dtype: "F32" },
  /** Qwen3 with sentence-transformers files (last token, Normalize), the whole Qwen3 vocabulary (texts go in). */
  embed: { arch: "qwen3", seed: 4, dtype: "F32", sentenceTransformers: true },
} satisfies Record<string, TinyModelOptions>;

export const REFERENCE_ADAPTER: TinyAdapterSpec = { rank: 8, alpha: 16, targets: LORA_TARGETS, seed: 5 };

/** Token-id prompts (the tiny checkpoints' 2048-token vocabulary) and texts (for sentence-transformers). */
export const REFERENCE_PROMPTS = [[1, 2, 3, 4, 5], [100, 200, 300, 400, 500, 600, 700, 800, 900], [2047, 5, 17, 1000]];
export const REFERENCE_TEXTS = ["Hello world", "The capital of France is Paris.", "A vbun serves LLMs from one TypeScript process."];

/** Writes the reference checkpoints into `out`: seqcls/, lora-base/ with lora-adapter/, embed/. */
export function writeReferenceCheckpoints(out: string): void {
  writeTinyModel(join(out, "seqcls"), REFERENCE_MODELS.seqcls);
  writeTinyModel(join(out, "lora-base"), REFERENCE_MODELS.loraBase);
  writeTinyLoraAdapter(join(out, "lora-adapter"), join(out, "lora-base"), REFERENCE_ADAPTER);
  writeTinyModel(join(out, "embed"), REFERENCE_MODELS.embed);
}

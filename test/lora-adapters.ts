/** Random PEFT LoRA adapters for the tiny test models, in the test run's temp folder (test/lora.test.ts, the CUDA suite). */
import { join } from "node:path";
import { writeTinyLoraAdapter, type TinyAdapterSpec } from "../src/lora/tiny-adapter.ts";
import { tempDir } from "./helpers.ts";

export type AdapterSpec = TinyAdapterSpec;

/** A PEFT adapter directory for `model` with random A and B of the given rank on the given targets. */
export function writeAdapter(model: string, spec: AdapterSpec, name: string): string {
  return writeTinyLoraAdapter(join(tempDir("lora"), name), model, spec);
}

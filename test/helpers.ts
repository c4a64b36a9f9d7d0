/** Shared test fixtures: tiny random-weight checkpoints written once per test run into a temp folder. */
import { existsSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeTinyModel, type TinyModelOptions } from "../src/model/tiny-model.ts";

const root = mkdtempSync(join(tmpdir(), "vbun-test-"));
process.on("exit", () => rmSync(root, { recursive: true, force: true }));

export function tempDir(name: string): string {
  return mkdtempSync(join(root, `${name}-`));
}

/** A tiny checkpoint directory for these options (created on first request). */
export function tinyModel(opts: TinyModelOptions): string {
  const dir = join(root, "models", Buffer.from(JSON.stringify(opts)).toString("hex").slice(0, 120));
  if (!existsSync(dir)) {
    const tmp = `${dir}.tmp`;
    writeTinyModel(tmp, opts);
    renameSync(tmp, dir);
  }
  return dir;
}

/** A small-vocabulary model for engine tests: fast on CPU, still the real architecture and tokenizer. */
export const FAST_MODEL: TinyModelOptions = { arch: "llama", seed: 7, vocabSize: 512, hiddenSize: 32, intermediateSize: 64, numHeads: 4, numKvHeads: 2, headDim: 8, numLayers: 2 };

export const STORIES_DIR = join(import.meta.dir, "..", "..", "shared", "models", "stories260K");

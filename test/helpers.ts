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

/** ../shared/models/stories260K, or $VBUN_STORIES_DIR (device runs carry a copy). */
export const STORIES_DIR = process.env.VBUN_STORIES_DIR ?? join(import.meta.dir, "..", "..", "shared", "models", "stories260K");

/** A full-vocabulary (real Qwen3 tokenizer) model small enough for server tests. */
export const SERVER_MODEL: TinyModelOptions = { arch: "qwen3", seed: 21, hiddenSize: 32, intermediateSize: 64, numHeads: 2, numKvHeads: 1, headDim: 16, numLayers: 1 };

export interface RunningServer {
  url: string;
  proc: import("bun").Subprocess<"ignore", "pipe", "pipe">;
  stderr: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number>;
}

/** Starts `vbun serve` as a real process on 127.0.0.1 and a free port; resolves once it is ready. */
export async function startServer(args: string[], env: Record<string, string> = {}, cmd?: string[]): Promise<RunningServer> {
  const proc = Bun.spawn(cmd ?? [process.execPath, join(import.meta.dir, "..", "src", "cli.ts"), "serve", ...args, "--port", "0"], {
    stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, cwd: env.VBUN_TEST_CWD,
  });
  let err = "";
  const reader = proc.stderr.getReader();
  const dec = new TextDecoder();
  const deadline = Date.now() + 60_000;
  let url = "";
  while (!/ready in/.test(err)) {
    const { value, done } = await reader.read();
    if (done || Date.now() > deadline) throw new Error(`server did not start:\n${err}`);
    err += dec.decode(value);
    const m = err.match(/listening on (http:\/\/[\d.]+:\d+)/);
    if (m) url = m[1]!;
  }
  // Keep draining stderr so the process never blocks on a full pipe.
  void (async () => { for (;;) { const { value, done } = await reader.read(); if (done) break; err += dec.decode(value); } })();
  return {
    url, proc, stderr: () => err,
    stop: async (signal = "SIGTERM") => { proc.kill(signal); return await proc.exited; },
  };
}

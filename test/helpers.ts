/** Shared test fixtures: tiny random-weight checkpoints written once per test run into a temp folder. */
import { serveCommand, spawnServer, type RunningServer } from "../src/server/spawn-server.ts";
import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeTinyModel, type TinyModelOptions } from "../src/model/tiny-model.ts";
import { SafetensorsFile, writeSafetensors } from "../src/loader/safetensors.ts";

const root = mkdtempSync(join(tmpdir(), "vbun-test-"));
process.on("exit", () => rmSync(root, { recursive: true, force: true }));

export function tempDir(name: string): string {
  return mkdtempSync(join(root, `${name}-`));
}

/** A copy of checkpoint `dir` (in a fresh folder under tempDir(`tag`)) whose config.json says `qc` as its quantization_config (undefined: none). */
export function withQuantizationConfig(dir: string, qc: unknown, tag: string): string {
  const d = join(tempDir(tag), `m${Math.random()}`);
  cpSync(dir, d, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(d, "config.json"), "utf8"));
  writeFileSync(join(d, "config.json"), JSON.stringify({ ...cfg, quantization_config: qc }));
  return d;
}

/** Rewrites `dir`/model.safetensors without the tensors whose names match `drop`; returns `dir`. */
export function withoutTensors(dir: string, drop: RegExp): string {
  const st = SafetensorsFile.open(join(dir, "model.safetensors"));
  const kept = st.names().filter((n) => !drop.test(n)).map((n) => { const t = st.tensor(n); return { name: n, dtype: t.dtype, shape: [...t.shape], bytes: Uint8Array.from(t.bytes) }; });
  rmSync(join(dir, "model.safetensors"));
  writeSafetensors(join(dir, "model.safetensors"), kept);
  return dir;
}

/** A tiny checkpoint directory for these options (created on first request). */
export function tinyModel(opts: TinyModelOptions): string {
  // Keyed by all of the options (a prefix of them could name two different models).
  const key = JSON.stringify(opts);
  const dir = join(root, "models", `${opts.arch ?? "qwen3"}-${Bun.hash(key).toString(16)}-${key.length}`);
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

/** Whether every thread of a closed tensor-parallel group has exited within `ms`. */
export async function exitsWithin(group: { exited: Promise<void> }, ms: number): Promise<boolean> {
  return Promise.race([group.exited.then(() => true), Bun.sleep(ms).then(() => false)]);
}

export type { RunningServer } from "../src/server/spawn-server.ts";

/** Starts `vbun serve` as a real process on 127.0.0.1 and a free port; resolves once it is ready. */
export function startServer(args: string[], env: Record<string, string> = {}, cmd?: string[]): Promise<RunningServer> {
  return spawnServer(cmd ?? serveCommand(args), { env: { ...process.env, ...env }, cwd: env.VBUN_TEST_CWD, timeoutMs: 60_000 });
}

/** A sampling configuration and the distribution vLLM's filters leave (float64, computed here independently). */
export interface SamplingCase { name: string; temperature: number; topK: number; topP: number; minP: number }

export const SAMPLING_CASES: SamplingCase[] = [
  { name: "temperature 0.8", temperature: 0.8, topK: 0, topP: 1, minP: 0 },
  { name: "top-k 5", temperature: 1, topK: 5, topP: 1, minP: 0 },
  { name: "top-p 0.8", temperature: 0.7, topK: 0, topP: 0.8, minP: 0 },
  { name: "min-p 0.1, then top-p 0.9", temperature: 1.2, topK: 0, topP: 0.9, minP: 0.1 },
];

/** Token → probability after temperature, min-p, top-k, then top-p over the survivors (vLLM's order). */
export function filteredDistribution(row: Float32Array, c: SamplingCase): Map<number, number> {
  const scaled = Array.from(row, (x) => x / c.temperature);
  const order = scaled.map((_, i) => i).sort((a, b) => scaled[b]! - scaled[a]! || a - b);
  const max = scaled[order[0]!]!;
  let kept = order.filter((i) => c.minP === 0 || Math.exp(scaled[i]! - max) >= c.minP);
  if (c.topK > 0) kept = kept.slice(0, c.topK);
  const w = kept.map((i) => Math.exp(scaled[i]! - max));
  const z = w.reduce((a, b) => a + b, 0);
  let n = kept.length;
  if (c.topP < 1) {
    let cum = 0;
    for (let j = 0; j < kept.length; j++) { cum += w[j]! / z; if (cum >= c.topP) { n = j + 1; break; } }
  }
  const zk = w.slice(0, n).reduce((a, b) => a + b, 0);
  return new Map(kept.slice(0, n).map((i, j) => [i, w[j]! / zk]));
}

/** Checks draws against a distribution: none outside its support, and each count within 4σ (+2) of expected. */
export function checkDraws(draws: ArrayLike<number>, dist: Map<number, number>): string | null {
  const counts = new Map<number, number>();
  for (let k = 0; k < draws.length; k++) {
    const t = draws[k]!;
    if (!dist.has(t)) return `drew token ${t}, which the filters remove`;
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  const N = draws.length;
  for (const [t, p] of dist) {
    const want = N * p, got = counts.get(t) ?? 0;
    if (Math.abs(got - want) > 4 * Math.sqrt(want * (1 - p)) + 2) return `token ${t}: ${got} draws, expected ${want.toFixed(1)}`;
  }
  return null;
}

/**
 * Hugging Face model ids (`org/name`): downloaded with @huggingface/hub into the usual HF cache
 * ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), only the files vbun needs.
 * $HF_ENDPOINT selects the hub (tests point it at a local stub); $HF_TOKEN authenticates.
 */
import { downloadFileToCacheDir, listFiles } from "@huggingface/hub";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

const WANTED = /^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|chat_template\.jinja|model\.safetensors\.index\.json|[^/]*\.safetensors)$/;

export function looksLikeHubId(spec: string): boolean {
  return !existsSync(spec) && /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(spec);
}

export function hubCacheDir(): string {
  return process.env.HF_HUB_CACHE ?? join(process.env.HF_HOME ?? join(homedir(), ".cache", "huggingface"), "hub");
}

export interface DownloadOptions {
  hubUrl?: string;
  cacheDir?: string;
  revision?: string;
  log?: (msg: string) => void;
  /** Called with (bytesDone, bytesTotal) while downloading. */
  onProgress?: (done: number, total: number) => void;
}

/** Downloads (or finds in the cache) a hub model; returns its snapshot directory. */
export async function downloadModel(repo: string, o: DownloadOptions = {}): Promise<string> {
  const hubUrl = o.hubUrl ?? process.env.HF_ENDPOINT ?? "https://huggingface.co";
  const cacheDir = o.cacheDir ?? hubCacheDir();
  const accessToken = process.env.HF_TOKEN || undefined;
  const revision = o.revision ?? "main";
  const log = o.log ?? (() => {});
  let done = 0, total = 0;
  const countingFetch: typeof fetch = Object.assign(async (input: string | URL | Request, init?: RequestInit) => {
    const res = await fetch(input, init);
    const range = new Headers(init?.headers).get("range");
    if (!res.body || range === "bytes=0-0" || !res.ok) return res;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        done += chunk.byteLength;
        o.onProgress?.(done, total);
        ctl.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(counter), { status: res.status, statusText: res.statusText, headers: res.headers });
  }, { preconnect: fetch.preconnect });

  const files: { path: string; size: number }[] = [];
  try {
    for await (const f of listFiles({ repo, revision, recursive: true, hubUrl, accessToken, fetch: countingFetch }))
      if (f.type === "file" && WANTED.test(f.path)) files.push({ path: f.path, size: f.lfs?.size ?? f.size });
  } catch (e) {
    throw new Error(`cannot download model '${repo}' from ${hubUrl}: ${(e as Error).message}. If this machine is offline, pass a local model directory instead.`);
  }
  if (!files.some((f) => f.path === "config.json")) throw new Error(`model '${repo}' on ${hubUrl} has no config.json`);
  total = files.reduce((a, f) => a + f.size, 0);
  log(`downloading ${repo} (${files.length} files, ${(total / 1e6).toFixed(1)} MB) into ${cacheDir}`);
  let snapshot = "";
  const debug = console.debug;
  console.debug = () => {}; // the library announces each file on stdout
  try {
    for (const f of files) {
      const p = await downloadFileToCacheDir({ repo, path: f.path, revision, hubUrl, cacheDir, accessToken, fetch: countingFetch });
      if (f.path === "config.json") snapshot = dirname(p);
    }
  } catch (e) {
    throw new Error(`cannot download model '${repo}' from ${hubUrl}: ${(e as Error).message}`);
  } finally {
    console.debug = debug;
  }
  return snapshot;
}

/** A one-line progress bar on stderr (TTY only). */
export function progressPrinter(label: string): (done: number, total: number) => void {
  let last = 0;
  return (done, total) => {
    if (!process.stderr.isTTY) return;
    const now = performance.now();
    if (now - last < 100 && done < total) return;
    last = now;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30, filled = Math.round(frac * width);
    process.stderr.write(`\r${label} ${"█".repeat(filled)}${" ".repeat(width - filled)} ${(done / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB${done >= total ? "\n" : ""}`);
  };
}

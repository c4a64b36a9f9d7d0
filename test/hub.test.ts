/** Hugging Face ids are downloaded with @huggingface/hub; here against a local stub of the hub's HTTP API. */
import { afterAll, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { downloadModel, looksLikeHubId } from "../src/server/hub.ts";
import { SERVER_MODEL, startServer, tempDir, tinyModel } from "./helpers.ts";

const modelDir = tinyModel(SERVER_MODEL);
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const requests: string[] = [];

/** Serves modelDir as repo "acme/tiny" through the hub's tree, paths-info and resolve routes. */
const hub = Bun.serve({
  port: 0, hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    requests.push(`${req.method} ${url.pathname}`);
    const files = readdirSync(modelDir);
    const info = (f: string) => ({ type: "file", path: f, size: statSync(join(modelDir, f)).size, oid: Bun.hash.xxHash64(readFileSync(join(modelDir, f))).toString(16).padStart(40, "0"), lastCommit: { id: COMMIT, title: "init", date: "2026-01-01T00:00:00Z" } });
    if (url.pathname === "/api/models/acme/tiny/tree/main") return Response.json(files.map(info));
    if (url.pathname === "/api/models/acme/tiny/paths-info/main") {
      const body = (await req.json()) as { paths: string[] };
      return Response.json(body.paths.filter((p) => files.includes(p)).map(info));
    }
    const m = url.pathname.match(/^\/acme\/tiny\/resolve\/main\/(.+)$/);
    if (m && files.includes(m[1]!)) {
      const data = readFileSync(join(modelDir, m[1]!));
      const headers = { ETag: `"${info(m[1]!).oid}"`, "Accept-Ranges": "bytes" };
      const range = req.headers.get("range")?.match(/bytes=(\d+)-(\d*)/);
      if (range) {
        const start = Number(range[1]), end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
        return new Response(data.subarray(start, end + 1), { status: 206, headers: { ...headers, "Content-Range": `bytes ${start}-${end}/${data.length}` } });
      }
      return new Response(data, { headers });
    }
    return Response.json({ error: "Repository not found" }, { status: 404, headers: { "X-Error-Code": "RepoNotFound" } });
  },
});
afterAll(() => hub.stop(true));

test("hub ids are recognised; local paths are not", () => {
  expect(looksLikeHubId("Qwen/Qwen3-0.6B")).toBe(true);
  expect(looksLikeHubId(modelDir)).toBe(false);
  expect(looksLikeHubId("./relative/dir/x")).toBe(false);
});

test("downloadModel fetches only the needed files into the HF cache layout", async () => {
  const cache = tempDir("hfcache");
  let progress = 0;
  const dir = await downloadModel("acme/tiny", { hubUrl: hub.url.origin, cacheDir: cache, onProgress: (d) => (progress = d) });
  expect(dir).toBe(join(cache, "models--acme--tiny", "snapshots", COMMIT));
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"])
    expect(readFileSync(join(dir, f))).toEqual(readFileSync(join(modelDir, f)));
  expect(readdirSync(dir)).not.toContain("README.md");
  expect(progress).toBeGreaterThan(statSync(join(modelDir, "model.safetensors")).size);
});

test("vbun serve ORG/NAME downloads then serves", async () => {
  const cache = tempDir("hfcache2");
  const s = await startServer(["acme/tiny", "--max-model-len", "64"], { HF_ENDPOINT: hub.url.origin, HF_HUB_CACHE: cache });
  try {
    const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: "acme/tiny", prompt: "Hi", max_tokens: 2 }) });
    expect(res.status).toBe(200);
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 60_000);

test("an unreachable hub gives a clear error and exit code 1", async () => {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "..", "src", "cli.ts"), "serve", "acme/missing", "--port", "0"], {
    env: { ...process.env, HF_ENDPOINT: "http://127.0.0.1:9", HF_HUB_CACHE: tempDir("hfcache3") }, stderr: "pipe", stdout: "ignore",
  });
  expect(await p.exited).toBe(1);
  const err = await new Response(p.stderr).text();
  expect(err).toContain("cannot download model 'acme/missing' from http://127.0.0.1:9");
  expect(err).toContain("offline");
}, 60_000);

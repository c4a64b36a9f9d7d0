/** `bun run build` → a single binary that serves without node_modules, from a folder outside the repo. */
import { expect, test } from "bun:test";
import { cpSync } from "node:fs";
import { join } from "node:path";
import { SERVER_MODEL, startServer, tempDir, tinyModel } from "./helpers.ts";

test("the compiled binary serves a completion from a directory outside the repo", async () => {
  const out = tempDir("bin");
  const repo = join(import.meta.dir, "..");
  // The same command as `bun run build`, with another output path.
  const script: string = (await Bun.file(join(repo, "package.json")).json()).scripts.build;
  const args = script.replace(/^bun /, "").replace("dist/vbun", join(out, "vbun")).split(" ");
  const build = Bun.spawnSync([process.execPath, ...args], { cwd: repo, stderr: "pipe", stdout: "pipe" });
  expect(build.exitCode).toBe(0);
  const modelDir = join(tempDir("binmodel"), "model");
  cpSync(tinyModel(SERVER_MODEL), modelDir, { recursive: true });
  const workDir = tempDir("binwork");
  // The binary runs from a folder with no node_modules and no sources, with an empty cache.
  const s = await startServer([], { VBUN_CACHE: join(workDir, "cache"), VBUN_TEST_CWD: workDir }, [join(out, "vbun"), "serve", modelDir, "--port", "0", "--max-model-len", "128"].map(String));
  try {
    const res = await fetch(`${s.url}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: "Hello", max_tokens: 4, temperature: 0 }) });
    expect(res.status).toBe(200);
    const json: any = await res.json();
    expect(json.usage.completion_tokens).toBe(4);
    expect(typeof json.choices[0].text).toBe("string");
  } finally {
    expect(await s.stop()).toBe(0);
  }
}, 120_000);

// Preloaded by bun test (bunfig.toml). Engines in tests default to the CPU reference backend, also on a
// machine with a GPU; GPU tests ask for device "cuda" explicitly. Spawned servers inherit this.
import { afterAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Every temporary file of the run — tiny checkpoints, compiled binaries, simulator shims, kernel caches, what
// spawned servers write — goes under one folder, removed after the last test (TMPDIR is inherited too).
// (An exit handler alone proved unreliable: runs left gigabytes behind in /tmp.)
const runRoot = mkdtempSync(join(tmpdir(), "vbun-run-"));
process.env.TMPDIR = runRoot;
afterAll(() => rmSync(runRoot, { recursive: true, force: true }));

process.env.VBUN_DEVICE ??= "cpu";
// Compiled-kernel cache (src/backend/cuda/module-cache.ts): a fresh folder per test run, never ~/.cache.
process.env.VBUN_KERNEL_CACHE ??= mkdtempSync(join(tmpdir(), "vbun-test-kernels-"));

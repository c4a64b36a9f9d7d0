// Preloaded by bun test (bunfig.toml). Engines in tests default to the CPU reference backend, also on a
// machine with a GPU; GPU tests ask for device "cuda" explicitly. Spawned servers inherit this.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

process.env.VBUN_DEVICE ??= "cpu";
// Compiled-kernel cache (src/backend/cuda/module-cache.ts): a fresh folder per test run, never ~/.cache.
process.env.VBUN_KERNEL_CACHE ??= mkdtempSync(join(tmpdir(), "vbun-test-kernels-"));

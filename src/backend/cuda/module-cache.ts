/**
 * Kernel modules compiled once per GPU architecture and driver: the committed PTX is JIT-compiled with
 * cuLink* on first use and the cubin kept in $VBUN_KERNEL_CACHE (default: kernels/ in vbun's cache folder,
 * ~/.cache/vbun), so later starts load machine code without JIT. A cache that cannot be written, or a
 * cached file the driver rejects, falls back to compiling (never to an error). VBUN_KERNEL_CACHE=off disables it.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cacheDir } from "../../util/cache-dir.ts";
import type { DeviceDriver } from "./driver.ts";

export interface ModuleLoadStats { compiled: number; cached: number; seconds: number; dir: string | null }

export function kernelCacheDir(): string | null {
  const env = process.env.VBUN_KERNEL_CACHE;
  if (env === "off") return null;
  return env ?? join(cacheDir(), "kernels");
}

export class ModuleCache {
  readonly stats: ModuleLoadStats;

  /** `target` names what the machine code is for: compute capability and driver version. */
  constructor(private readonly driver: DeviceDriver, private readonly target: string) {
    let dir = kernelCacheDir();
    if (dir) {
      try { mkdirSync(dir, { recursive: true }); } catch { dir = null; }
    }
    this.stats = { compiled: 0, cached: 0, seconds: 0, dir };
  }

  /** The module for `ptx` (named `name` in logs and file names). */
  load(name: string, ptx: string): bigint {
    const t0 = performance.now();
    try {
      const dir = this.stats.dir;
      if (!dir) {
        this.stats.compiled++;
        return this.driver.loadModule(ptx);
      }
      const key = createHash("sha256").update(this.target).update("\0").update(ptx).digest("hex").slice(0, 20);
      const file = join(dir, `${name}-${key}.cubin`);
      if (existsSync(file)) {
        try {
          const module = this.driver.loadImage(new Uint8Array(readFileSync(file)));
          this.stats.cached++;
          return module;
        } catch {
          rmSync(file, { force: true }); // stale or damaged: compile afresh
        }
      }
      const cubin = this.driver.compilePtx(ptx, name);
      this.stats.compiled++;
      try {
        const tmp = `${file}.${process.pid}.tmp`;
        writeFileSync(tmp, cubin);
        renameSync(tmp, file);
      } catch {
        // read-only or full: run without caching
      }
      return this.driver.loadImage(cubin);
    } finally {
      this.stats.seconds += (performance.now() - t0) / 1000;
    }
  }
}

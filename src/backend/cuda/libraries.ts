/**
 * Finding the NVIDIA libraries: an environment override first, then the soname through the dynamic
 * linker, then the usual driver folders, $CUDA_HOME/lib64, and the pip-wheel folders of `python3`'s
 * `nvidia` package. The toolkit's stub libcuda is never used.
 */
import { dlopen, type FFIFunction, type Library } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";

export type NvLibrary = "cuda" | "cublas" | "cublasLt" | "nccl";

const SONAMES: Record<NvLibrary, string[]> = {
  cuda: ["libcuda.so.1"],
  cublas: ["libcublas.so.13", "libcublas.so.12"],
  cublasLt: ["libcublasLt.so.13", "libcublasLt.so.12"],
  nccl: ["libnccl.so.2"],
};

const ENV: Record<NvLibrary, string> = { cuda: "VBUN_LIBCUDA", cublas: "VBUN_CUBLAS_DIR", cublasLt: "VBUN_CUBLAS_DIR", nccl: "VBUN_NCCL_DIR" };

const DRIVER_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64", "/usr/lib/wsl/lib", "/usr/lib/aarch64-linux-gnu"];

let wheelDirs: string[] | null = null;

/** lib folders of the CUDA pip wheels visible to python3 (nvidia/cu13/lib, nvidia/cublas/lib, nvidia/nccl/lib, …). */
function pipWheelDirs(): string[] {
  if (wheelDirs) return wheelDirs;
  wheelDirs = [];
  try {
    const p = Bun.spawnSync(["python3", "-c", "import nvidia, os; print(os.pathsep.join(nvidia.__path__))"], { stdout: "pipe", stderr: "ignore" });
    if (p.exitCode === 0)
      for (const root of p.stdout.toString().trim().split(":").filter(Boolean))
        for (const sub of ["cu13/lib", "cu12/lib", "cublas/lib", "nccl/lib", "cuda_runtime/lib"]) if (existsSync(join(root, sub))) wheelDirs.push(join(root, sub));
  } catch {
    // no python3: nothing to add
  }
  return wheelDirs;
}

/** Candidate paths for a library, in search order. */
export function candidatePaths(lib: NvLibrary): string[] {
  const out: string[] = [];
  const env = process.env[ENV[lib]];
  if (env) {
    if (lib === "cuda") out.push(env);
    else for (const so of SONAMES[lib]) out.push(join(env, so));
  }
  out.push(...SONAMES[lib]);
  const dirs = [...DRIVER_DIRS];
  for (const home of [process.env.CUDA_HOME, process.env.CUDA_PATH, "/usr/local/cuda"]) if (home) dirs.push(join(home, "lib64"), join(home, "lib"));
  if (lib !== "cuda") dirs.push(...pipWheelDirs());
  for (const d of dirs) for (const so of SONAMES[lib]) out.push(join(d, so));
  return out.filter((p) => !p.includes("/stubs/"));
}

export class LibraryNotFoundError extends Error {
  constructor(readonly lib: NvLibrary, readonly tried: string[], readonly lastError: string) {
    super(`cannot load ${SONAMES[lib][0]} (tried ${tried.length} locations; last error: ${lastError}). Set ${ENV[lib]} to override.`);
    this.name = "LibraryNotFoundError";
  }
}

/** dlopens the first loadable candidate with these symbols. */
export function openLibrary<S extends Record<string, FFIFunction>>(lib: NvLibrary, symbols: S): { path: string; library: Library<S> } {
  let last = "not found";
  const tried = candidatePaths(lib);
  for (const path of tried) {
    if (path.includes("/") && !existsSync(path)) continue;
    try {
      return { path, library: dlopen(path, symbols as never) as Library<S> };
    } catch (e) {
      last = (e as Error).message;
    }
  }
  throw new LibraryNotFoundError(lib, tried, last);
}

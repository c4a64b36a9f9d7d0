/** --device auto|cpu|cuda → a backend. `auto` takes the GPU when a driver and a GPU are there, else the CPU and says why. */
import type { Backend, Tensor } from "./backend.ts";
import { CpuBackend } from "./cpu/cpu-backend.ts";
import { defaultCpuThreads } from "./cpu/matmul-pool.ts";
import type { CudaBackend } from "./cuda/cuda-backend.ts";
import { DEFAULT_CUDA, type CudaProvider } from "./cuda/provider.ts";
import { CudaOptionError, cudaOptionsFromEnv } from "./cuda/cuda-options.ts";
import { EngineConfigError, type Device } from "../engine/engine-config.ts";

export interface SelectedBackend {
  backend: Backend<Tensor>;
  kind: "cpu" | "cuda";
  /** The CUDA backend itself (for memory queries), when chosen. */
  cuda: CudaBackend | null;
}

export function selectBackend(device: Device, log: (m: string) => void, provider: CudaProvider = DEFAULT_CUDA): SelectedBackend {
  if (device !== "auto" && device !== "cpu" && device !== "cuda") throw new EngineConfigError("--device", `must be auto, cpu or cuda, got '${device}'`);
  if (device !== "cpu") {
    // The CUDA switches are checked first: a bad one is the user's error, not "no usable GPU".
    try {
      cudaOptionsFromEnv();
    } catch (e) {
      if (e instanceof CudaOptionError) throw new EngineConfigError(e.variable, e.message);
      throw e;
    }
    try {
      const cuda = provider.open(0);
      log(`device ${device}: ${cuda.info.name} (compute ${cuda.info.computeCapability}, driver ${cuda.info.driverVersion}, ${(cuda.info.totalMemory / 2 ** 30).toFixed(1)} GiB) via ${cuda.info.libcuda}; GEMMs via ${cuda.info.gemm}`);
      const k = cuda.info.kernels;
      log(`kernels: ${k.cached} modules from the cache, ${k.compiled} JIT-compiled, in ${k.seconds.toFixed(2)}s${k.dir ? ` (cache ${k.dir})` : " (cache off)"}`);
      return { backend: cuda as unknown as Backend<Tensor>, kind: "cuda", cuda };
    } catch (e) {
      if (device === "cuda") throw new EngineConfigError("--device", `cuda requested but unavailable: ${(e as Error).message}`);
      log(`device auto: using the CPU backend (no usable GPU: ${(e as Error).message})`);
    }
  }
  const threads = defaultCpuThreads();
  log(`device cpu: ${threads} thread${threads === 1 ? "" : "s"} for large matrix products (VBUN_CPU_THREADS)`);
  return { backend: new CpuBackend({ threads }) as unknown as Backend<Tensor>, kind: "cpu", cuda: null };
}

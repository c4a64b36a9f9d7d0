/**
 * The CUDA backend's environment switches, read and checked in one place. A bad value is a start-up error
 * naming the variable — also under `--device auto`, where it must not read as "no usable GPU".
 */
export type GemmLibrary = "cublas" | "cublaslt";

export interface CudaOptions {
  /** VBUN_GEMM: cublas (cublasGemmEx, the default) or cublaslt (cuBLASLt's first heuristic algorithm per shape). */
  gemm: GemmLibrary;
  /** VBUN_GEMV: on = vbun's GEMV kernels for linear layers of ≤ 8 rows; off (the default) = cuBLAS throughout. */
  smallBatchGemv: boolean;
  /** VBUN_PREFILL_KERNEL: mma (tensor cores, the default) or simple (f32 FMA). */
  prefillKernel: "mma" | "simple";
  /** VBUN_DECODE_KERNEL: groups (16-thread groups, the default) or simple (split-KV, any shape). */
  decodeKernel: "groups" | "simple";
}

export class CudaOptionError extends Error {
  constructor(readonly variable: string, message: string) {
    super(message);
    this.name = "CudaOptionError";
  }
}

function choice<T extends string>(env: Record<string, string | undefined>, variable: string, allowed: readonly T[]): T {
  const v = env[variable];
  if (v === undefined || v === "") return allowed[0]!;
  if (!(allowed as readonly string[]).includes(v)) throw new CudaOptionError(variable, `must be ${allowed.join(" or ")}, got '${v}'`);
  return v as T;
}

export function cudaOptionsFromEnv(env: Record<string, string | undefined> = process.env): CudaOptions {
  return {
    gemm: choice(env, "VBUN_GEMM", ["cublas", "cublaslt"] as const),
    smallBatchGemv: choice(env, "VBUN_GEMV", ["off", "on"] as const) === "on",
    prefillKernel: choice(env, "VBUN_PREFILL_KERNEL", ["mma", "simple"] as const),
    decodeKernel: choice(env, "VBUN_DECODE_KERNEL", ["groups", "simple"] as const),
  };
}

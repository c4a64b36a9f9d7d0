/**
 * cuBLAS through bun:ffi: one handle on our stream with our own workspace, and bf16 GEMMs with f32
 * accumulation (cublasGemmEx). Row-major Y[n, out] = X[n, in] · W[out, in]ᵀ is the column-major product
 * Yᵀ = op_T(W) · X, so W goes first with OP_T.
 */
import { openLibrary } from "./libraries.ts";

const i32 = "i32", u64 = "u64", p = "ptr";
/** The cuBLAS entry points vbun binds (test/ffi-signatures.test.ts checks them against cublas_api.h). */
export const CUBLAS_SYMBOLS = {
  cublasCreate_v2: { args: [p], returns: i32 },
  cublasDestroy_v2: { args: [u64], returns: i32 },
  cublasSetStream_v2: { args: [u64, u64], returns: i32 },
  cublasSetWorkspace_v2: { args: [u64, u64, u64], returns: i32 },
  cublasSetMathMode: { args: [u64, i32], returns: i32 },
  cublasGemmEx: { args: [u64, i32, i32, i32, i32, i32, p, u64, i32, i32, u64, i32, i32, p, u64, i32, i32, i32, i32], returns: i32 },
} as const;
const SYMBOLS = CUBLAS_SYMBOLS;

export const CUDA_R_32F = 0;
export const CUDA_R_16BF = 14;
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_GEMM_DEFAULT = -1;
export const CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
export const CUBLAS_DEFAULT_MATH = 0;

const STATUS: Record<number, string> = {
  1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
  11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
};

export class CublasError extends Error {
  constructor(readonly call: string, readonly status: number) {
    super(`${call} failed: ${STATUS[status] ?? "unknown cuBLAS status"} (${status})`);
    this.name = "CublasError";
  }
}

type Fns = Record<keyof typeof SYMBOLS, (...a: unknown[]) => number>;
/** The cuBLAS entry points the backend calls: the real library's, or the test suite's GPU simulator's. */
export interface CublasLibrary { path: string; symbols: Fns }

export function openCublas(): CublasLibrary {
  const { path, library } = openLibrary("cublas", SYMBOLS as never);
  return { path, symbols: (library as unknown as { symbols: Fns }).symbols };
}

export class Cublas {
  readonly path: string;
  private readonly fn: Fns;
  readonly handle: bigint;
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);

  constructor(stream: bigint, workspace: bigint, workspaceBytes: number, lib: CublasLibrary = openCublas()) {
    this.path = lib.path;
    this.fn = lib.symbols;
    const h = new BigUint64Array(1);
    this.check("cublasCreate_v2", this.fn.cublasCreate_v2(h));
    this.handle = h[0]!;
    // SetStream resets the workspace, so it goes first (this matters for graph capture).
    this.check("cublasSetStream_v2", this.fn.cublasSetStream_v2(this.handle, stream));
    this.check("cublasSetWorkspace_v2", this.fn.cublasSetWorkspace_v2(this.handle, workspace, BigInt(workspaceBytes)));
    this.check("cublasSetMathMode", this.fn.cublasSetMathMode(this.handle, CUBLAS_DEFAULT_MATH));
  }

  private check(call: string, status: number): void {
    if (status !== 0) throw new CublasError(call, status);
  }

  destroy(): void {
    this.check("cublasDestroy_v2", this.fn.cublasDestroy_v2(this.handle));
  }

  /**
   * y[n, out] (bf16 or f32) = x[n, in] (bf16) · w[out, in]ᵀ (bf16), f32 accumulation; `accumulate`: y += instead;
   * `weightInOut`: w is stored [in, out] instead (not transposed: LoRA's Bᵀ).
   */
  linear(x: bigint, w: bigint, y: bigint, n: number, inF: number, outF: number, yType: number, accumulate = false, weightInOut = false): void {
    this.check("cublasGemmEx", this.fn.cublasGemmEx(
      this.handle, weightInOut ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, outF, n, inF,
      this.one, w, CUDA_R_16BF, weightInOut ? outF : inF,
      x, CUDA_R_16BF, inF,
      accumulate ? this.one : this.zero, y, yType, outF,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

/**
 * cuBLASLt through bun:ffi: the same bf16 GEMM as cublas.ts (y[n, out] = x[n, in] · w[out, in]ᵀ, f32
 * accumulation, bf16 or f32 output), with the algorithm chosen by us. For each shape a plan holds the
 * operation and matrix-layout descriptors and cuBLASLt's heuristic candidates (up to MAX_CANDIDATES,
 * best first; each result is 96 bytes with the algorithm in the first 64). Plans are made outside graph
 * capture — the engine's eager warm-up of each decode bucket runs the same shapes first — and the chosen
 * algorithm is passed to every cublasLtMatmul, with our own workspace.
 */
import { openLibrary } from "./libraries.ts";
import { CublasError, CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_16BF, CUDA_R_32F } from "./cublas.ts";

const i32 = "i32", i64 = "i64", u64 = "u64", p = "ptr";
/** The cuBLASLt entry points vbun binds (test/ffi-signatures.test.ts checks them against cublasLt.h). */
export const CUBLASLT_SYMBOLS = {
  cublasLtCreate: { args: [p], returns: i32 },
  cublasLtDestroy: { args: [u64], returns: i32 },
  cublasLtMatmulDescCreate: { args: [p, i32, i32], returns: i32 },
  cublasLtMatmulDescSetAttribute: { args: [u64, i32, p, u64], returns: i32 },
  cublasLtMatmulDescDestroy: { args: [u64], returns: i32 },
  cublasLtMatrixLayoutCreate: { args: [p, i32, u64, u64, i64], returns: i32 },
  cublasLtMatrixLayoutDestroy: { args: [u64], returns: i32 },
  cublasLtMatmulPreferenceCreate: { args: [p], returns: i32 },
  cublasLtMatmulPreferenceSetAttribute: { args: [u64, i32, p, u64], returns: i32 },
  cublasLtMatmulPreferenceDestroy: { args: [u64], returns: i32 },
  cublasLtMatmulAlgoGetHeuristic: { args: [u64, u64, u64, u64, u64, u64, u64, i32, p, p], returns: i32 },
  cublasLtMatmul: { args: [u64, u64, p, u64, u64, u64, u64, p, u64, u64, u64, u64, p, u64, u64, u64], returns: i32 },
} as const;
const SYMBOLS = CUBLASLT_SYMBOLS;

export const CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4;
export const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
/** sizeof(cublasLtMatmulHeuristicResult_t): algo (64 bytes), workspaceSize (size_t), state, wavesCount, reserved[4]. */
export const HEURISTIC_RESULT_BYTES = 96;
/** sizeof(cublasLtMatmulAlgo_t), at the start of each heuristic result. */
export const ALGO_BYTES = 64;
export const MAX_CANDIDATES = 8;

type Fns = Record<keyof typeof SYMBOLS, (...a: unknown[]) => number>;
/** The cuBLASLt entry points the backend calls: the real library's, or the test suite's GPU simulator's. */
export interface CublasLtLibrary { path: string; symbols: Fns }

export function openCublasLt(): CublasLtLibrary {
  const { path, library } = openLibrary("cublasLt", SYMBOLS as never);
  return { path, symbols: (library as unknown as { symbols: Fns }).symbols };
}

/** One GEMM shape's descriptors and heuristic candidates. */
export interface GemmPlan {
  readonly key: string;
  readonly desc: bigint;
  readonly layouts: [a: bigint, b: bigint, d: bigint];
  /** The heuristic results, MAX_CANDIDATES × 96 bytes (the first `count` are filled), best first. */
  readonly results: Uint8Array;
  readonly count: number;
  /** Index of the candidate every call uses (0 = cuBLASLt's first choice, unless tuned). */
  chosen: number;
}

export class CublasLt {
  readonly path: string;
  private readonly fn: Fns;
  private readonly handle: bigint;
  private readonly preference: bigint;
  private readonly plans = new Map<string, GemmPlan>();
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);
  private readonly out64 = new BigUint64Array(1);

  constructor(private readonly stream: bigint, private readonly workspace: bigint, private readonly workspaceBytes: number, lib: CublasLtLibrary = openCublasLt()) {
    this.path = lib.path;
    this.fn = lib.symbols;
    this.handle = this.create("cublasLtCreate", (out) => this.fn.cublasLtCreate(out));
    this.preference = this.create("cublasLtMatmulPreferenceCreate", (out) => this.fn.cublasLtMatmulPreferenceCreate(out));
    this.check("cublasLtMatmulPreferenceSetAttribute", this.fn.cublasLtMatmulPreferenceSetAttribute(this.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(workspaceBytes)]), 8n));
  }

  private check(call: string, status: number): void {
    if (status !== 0) throw new CublasError(call, status);
  }

  private create(call: string, f: (out: BigUint64Array) => number): bigint {
    this.check(call, f(this.out64));
    return this.out64[0]!;
  }

  /** The plan for y[n, outF] = x[n, inF] · w[outF, inF]ᵀ with a bf16 or f32 (`yType`) output; made once per shape. */
  plan(n: number, inF: number, outF: number, yType: number): GemmPlan {
    const key = `${n}x${inF}x${outF}:${yType}`;
    const cached = this.plans.get(key);
    if (cached) return cached;
    const desc = this.create("cublasLtMatmulDescCreate", (out) => this.fn.cublasLtMatmulDescCreate(out, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    this.check("cublasLtMatmulDescSetAttribute(TRANSA)", this.fn.cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, new Int32Array([CUBLAS_OP_T]), 4n));
    this.check("cublasLtMatmulDescSetAttribute(TRANSB)", this.fn.cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, new Int32Array([CUBLAS_OP_N]), 4n));
    // Column-major views: W is inF × outF (ld inF), used transposed; X is inF × n (ld inF); Y is outF × n (ld outF).
    const layout = (type: number, rows: number, cols: number, ld: number) =>
      this.create("cublasLtMatrixLayoutCreate", (out) => this.fn.cublasLtMatrixLayoutCreate(out, type, BigInt(rows), BigInt(cols), BigInt(ld)));
    const a = layout(CUDA_R_16BF, inF, outF, inF), b = layout(CUDA_R_16BF, inF, n, inF), d = layout(yType, outF, n, outF);
    const results = new Uint8Array(MAX_CANDIDATES * HEURISTIC_RESULT_BYTES);
    const count = new Int32Array(1);
    this.check("cublasLtMatmulAlgoGetHeuristic", this.fn.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, d, d, this.preference, MAX_CANDIDATES, results, count));
    if (count[0]! < 1) throw new CublasError(`cublasLtMatmulAlgoGetHeuristic (no algorithm for ${key})`, 15);
    const plan: GemmPlan = { key, desc, layouts: [a, b, d], results, count: count[0]!, chosen: 0 };
    this.plans.set(key, plan);
    return plan;
  }

  /** Frees every plan's descriptors, the preference and the handle. */
  destroy(): void {
    for (const p of this.plans.values()) {
      this.check("cublasLtMatmulDescDestroy", this.fn.cublasLtMatmulDescDestroy(p.desc));
      for (const l of p.layouts) this.check("cublasLtMatrixLayoutDestroy", this.fn.cublasLtMatrixLayoutDestroy(l));
    }
    this.plans.clear();
    this.check("cublasLtMatmulPreferenceDestroy", this.fn.cublasLtMatmulPreferenceDestroy(this.preference));
    this.check("cublasLtDestroy", this.fn.cublasLtDestroy(this.handle));
  }

  /** y[n, outF] = x[n, inF] · w[outF, inF]ᵀ with the plan's chosen algorithm (or candidate `candidate`). */
  linear(x: bigint, w: bigint, y: bigint, n: number, inF: number, outF: number, yType: number, candidate?: number): void {
    const plan = this.plan(n, inF, outF, yType);
    const c = candidate ?? plan.chosen;
    if (c < 0 || c >= plan.count) throw new RangeError(`GEMM ${plan.key} has ${plan.count} candidate algorithms, not ${c + 1}`);
    const algo = plan.results.subarray(c * HEURISTIC_RESULT_BYTES, c * HEURISTIC_RESULT_BYTES + ALGO_BYTES);
    const [a, b, d] = plan.layouts;
    this.check("cublasLtMatmul", this.fn.cublasLtMatmul(
      this.handle, plan.desc, this.one, w, a, x, b, this.zero, y, d, y, d,
      algo, this.workspace, BigInt(this.workspaceBytes), this.stream));
  }
}

/**
 * vbun's bun:ffi symbol tables and constants against the real CUDA headers. Each header goes through the C
 * preprocessor (so `cuMemAlloc` becomes the `cuMemAlloc_v2` we bind, and CUDAAPI disappears); every bound
 * function's argument count and each argument's width are checked — an i32 where C takes a size_t, or a
 * missing argument, would pass garbage on the first GPU. The enum values and struct sizes we hard-code
 * are compiled and printed by the C compiler and compared. cuda.h comes with the toolkit on these
 * machines; cublas_api.h / cublasLt.h only where a full toolkit (or $VBUN_CUBLAS_INCLUDE) has them, and
 * nccl.h where NCCL's development files are installed (or $VBUN_NCCL_INCLUDE). A header that is missing
 * skips its part, saying why.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as driver from "../src/backend/cuda/driver.ts";
import * as cublas from "../src/backend/cuda/cublas.ts";
import * as lt from "../src/backend/cuda/cublaslt.ts";
import * as nccl from "../src/backend/cuda/nccl.ts";

const toolkitIncludes = [process.env.CUDA_HOME, process.env.CUDA_PATH, "/usr/local/cuda"].filter((d): d is string => !!d).map((d) => join(d, "include"));
const findHeader = (name: string, extra: string[] = []) => [...extra, ...toolkitIncludes].find((d) => existsSync(join(d, name))) ?? null;
const cudaInclude = findHeader("cuda.h");
const cublasInclude = findHeader("cublasLt.h", process.env.VBUN_CUBLAS_INCLUDE ? [process.env.VBUN_CUBLAS_INCLUDE] : []);
const ncclInclude = findHeader("nccl.h", [...(process.env.VBUN_NCCL_INCLUDE ? [process.env.VBUN_NCCL_INCLUDE] : []), "/usr/include"]);
const includeFlags = [cublasInclude, ncclInclude, cudaInclude].filter((d): d is string => !!d).flatMap((d) => ["-I", d]);

function run(cmd: string[], stdin?: string): string | null {
  try {
    const r = Bun.spawnSync(cmd, { stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin), stdout: "pipe", stderr: "pipe" });
    return r.exitCode === 0 ? r.stdout.toString() : null;
  } catch {
    return null;
  }
}
const preprocess = (header: string): string | null => run(["gcc", "-E", "-P", "-x", "c", ...includeFlags, "-"], `#include <${header}>\n`);

/** How C passes an argument: an 8-byte pointer, an 8-byte integer, a 4-byte integer (enums too), a float, a struct by value. */
type CClass = "ptr" | "int64" | "int32" | "f32" | "f64" | "struct";
const ACCEPTS: Record<CClass, string[]> = {
  ptr: ["ptr", "u64", "i64", "function"],
  int64: ["u64", "i64"],
  int32: ["i32", "u32"],
  f32: ["f32"],
  f64: ["f64"],
  struct: [],
};

/** Function prototypes and a classifier for parameter types, from preprocessed C. */
function parseHeader(text: string) {
  // A ';' ends each declaration; an inline function's closing brace may lead the next one.
  const decls = text.replace(/\s+/g, " ").split(";").map((d) => d.trim().replace(/^(\}\s*)+/, ""));
  const typedefs = new Map<string, CClass>();
  const functions = new Map<string, { ret: string; params: string[] }>();
  const classify = (type: string): CClass => {
    if (type.includes("*") || type.includes("(") || type.includes("[")) return "ptr";
    const t = type.replace(/\b(const|volatile|struct|enum|signed)\b/g, " ").replace(/\s+/g, " ").trim();
    if (/^(unsigned )?long long( int)?$|^(unsigned )?long( int)?$|^size_t$|^u?int64_t$|^cuuint64_t$/.test(t)) return "int64";
    if (/^(unsigned )?(int|short|char)$|^unsigned$|^u?int(32|16|8)_t$|^cuuint32_t$/.test(t)) return "int32";
    if (t === "float") return "f32";
    if (t === "double") return "f64";
    const known = typedefs.get(t);
    if (known) return known;
    throw new Error(`cannot classify C type '${type}'`);
  };
  for (const d of decls) {
    if (d.startsWith("typedef ")) {
      const body = d.slice(8);
      const fnPtr = /\(\s*\*\s*(\w+)\s*\)/.exec(body);
      if (fnPtr) { typedefs.set(fnPtr[1]!, "ptr"); continue; }
      const name = /(\w+)\s*(\[[^\]]*\])?$/.exec(body)?.[1];
      if (!name) continue;
      const before = body.slice(0, body.lastIndexOf(name)).trim();
      if (/^enum\b/.test(before)) typedefs.set(name, "int32");
      else if (before.includes("*")) typedefs.set(name, "ptr");
      else if (/^(struct|union)\b/.test(before)) typedefs.set(name, "struct");
      else {
        try { typedefs.set(name, classify(before)); } catch { /* a type nothing we bind uses */ }
      }
      continue;
    }
    const m = /^(?:extern "C" \{ )?(?:__attribute__\(\(.*?\)\) )?((?:const )?\w+(?: ?\*)*) ?\b(\w+) ?\((.*)\)$/.exec(d);
    if (m && !functions.has(m[2]!)) functions.set(m[2]!, { ret: m[1]!.replace(/\s*\*/g, "*"), params: m[3]!.trim() === "void" ? [] : splitParams(m[3]!) });
  }
  // A parameter is a type and a name; an array parameter (T name[]) is a pointer.
  return { functions, classifyParam: (p: string) => (/\[\s*\w*\s*\]\s*$/.test(p) ? "ptr" as CClass : classify(p.replace(/\s*\w+\s*$/, "").trim() || p)) };
}

function splitParams(list: string): string[] {
  const out: string[] = [];
  let depth = 0, cur = "";
  for (const ch of list) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) { out.push(cur.trim()); cur = ""; } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

type Table = Record<string, { args: readonly string[]; returns: string }>;

function defineSignatureSuite(label: string, header: string, include: string | null, ret: string, table: Table, aliases: Record<string, string[]> = {}) {
  const source = include ? preprocess(header) : null;
  const why = !include ? `no ${header} (a full CUDA toolkit, $VBUN_CUBLAS_INCLUDE or $VBUN_NCCL_INCLUDE)` : !source ? `gcc -E could not preprocess ${header}` : "";
  if (why) console.log(`skipping ${label} FFI signature checks: ${why}`);
  test.skipIf(!!why)(`${label} FFI signatures match ${header} (${Object.keys(table).length} functions)`, () => {
    const { functions, classifyParam } = parseHeader(source ?? "");
    const problems: string[] = [];
    for (const [name, sig] of Object.entries(table)) {
      const proto = [name, ...(aliases[name] ?? [])].map((n) => functions.get(n)).find((f) => f);
      if (!proto) { problems.push(`${name}: not declared in ${header} (renamed or versioned?)`); continue; }
      // The status type comes back as an i32; a C string (an error text) as a pointer.
      const retOk = proto.ret === ret ? sig.returns === "i32" : proto.ret.endsWith("*") && sig.returns === "ptr";
      if (!retOk) problems.push(`${name}: returns ${proto.ret}, bound as ${sig.returns}`);
      const classes = proto.params.map(classifyParam);
      if (sig.args.length !== classes.length) { problems.push(`${name}: ${sig.args.length} FFI arguments for C (${proto.params.join(", ")})`); continue; }
      classes.forEach((c, i) => {
        if (!ACCEPTS[c].includes(sig.args[i]!)) problems.push(`${name} argument ${i} (${proto.params[i]}) is C ${c}, bound as ${sig.args[i]}`);
      });
    }
    expect(problems).toEqual([]);
  });
}

defineSignatureSuite("libcuda", "cuda.h", cudaInclude, "CUresult",
  { ...driver.DRIVER_SYMBOLS, cuEventElapsedTime: driver.EVENT_ELAPSED_SIGNATURE, cuEventElapsedTime_v2: driver.EVENT_ELAPSED_SIGNATURE },
  // A header declares one of the two timing names (13.x maps the plain one to _v2).
  { cuEventElapsedTime: ["cuEventElapsedTime_v2"], cuEventElapsedTime_v2: ["cuEventElapsedTime"] });
defineSignatureSuite("cuBLAS", "cublas_v2.h", cublasInclude, "cublasStatus_t", cublas.CUBLAS_SYMBOLS);
defineSignatureSuite("cuBLASLt", "cublasLt.h", cublasInclude, "cublasStatus_t", lt.CUBLASLT_SYMBOLS);
defineSignatureSuite("NCCL", "nccl.h", ncclInclude, "ncclResult_t", nccl.NCCL_SYMBOLS);

/**
 * Compiles a C (or C++) program printing each expression's value; null when there is no compiler or a header
 * is missing. nccl.h declares ncclBfloat16 only where cuda_bf16.h has the type: for C++ compilers.
 */
function cValues(headers: string[], exprs: Record<string, string>, cxx = false): Map<string, number> | null {
  const dir = mkdtempSync(join(tmpdir(), "vbun-ffi-"));
  const src = [...headers.map((h) => `#include <${h}>`), "#include <stdio.h>", "#include <stddef.h>", "int main(void) {",
    ...Object.entries(exprs).map(([k, e]) => `  printf("%s %lld\\n", "${k}", (long long)(${e}));`), "  return 0;", "}"].join("\n");
  const file = join(dir, cxx ? "c.cpp" : "c.c");
  writeFileSync(file, src);
  if (run([cxx ? "g++" : "gcc", ...includeFlags, "-o", join(dir, "c"), file]) === null) return null;
  const out = run([join(dir, "c")]);
  if (out === null) return null;
  return new Map(out.trim().split("\n").map((l) => { const [k, v] = l.split(" "); return [k!, Number(v)] as const; }));
}

const DRIVER_CONSTANTS: Record<string, [string, number]> = {
  CUDA_ERROR_NOT_READY: ["CUDA_ERROR_NOT_READY", driver.CUDA_ERROR_NOT_READY],
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: ["CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT", driver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT],
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: ["CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR", driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR],
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: ["CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR", driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR],
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: ["CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES],
  CU_STREAM_NON_BLOCKING: ["CU_STREAM_NON_BLOCKING", driver.CU_STREAM_NON_BLOCKING],
  CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: ["CU_STREAM_CAPTURE_MODE_THREAD_LOCAL", driver.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL],
  CU_JIT_ERROR_LOG_BUFFER: ["CU_JIT_ERROR_LOG_BUFFER", driver.CU_JIT_ERROR_LOG_BUFFER],
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: ["CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES", driver.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES],
  CU_JIT_INPUT_PTX: ["CU_JIT_INPUT_PTX", driver.CU_JIT_INPUT_PTX],
};
const CUBLAS_CONSTANTS: Record<string, [string, number]> = {
  CUDA_R_32F: ["CUDA_R_32F", cublas.CUDA_R_32F],
  CUDA_R_16BF: ["CUDA_R_16BF", cublas.CUDA_R_16BF],
  CUBLAS_COMPUTE_32F: ["CUBLAS_COMPUTE_32F", cublas.CUBLAS_COMPUTE_32F],
  CUBLAS_GEMM_DEFAULT: ["CUBLAS_GEMM_DEFAULT", cublas.CUBLAS_GEMM_DEFAULT],
  CUBLAS_OP_N: ["CUBLAS_OP_N", cublas.CUBLAS_OP_N],
  CUBLAS_OP_T: ["CUBLAS_OP_T", cublas.CUBLAS_OP_T],
  CUBLAS_DEFAULT_MATH: ["CUBLAS_DEFAULT_MATH", cublas.CUBLAS_DEFAULT_MATH],
  CUBLASLT_MATMUL_DESC_TRANSA: ["CUBLASLT_MATMUL_DESC_TRANSA", lt.CUBLASLT_MATMUL_DESC_TRANSA],
  CUBLASLT_MATMUL_DESC_TRANSB: ["CUBLASLT_MATMUL_DESC_TRANSB", lt.CUBLASLT_MATMUL_DESC_TRANSB],
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ["CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES", lt.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES],
  heuristic_result_bytes: ["sizeof(cublasLtMatmulHeuristicResult_t)", lt.HEURISTIC_RESULT_BYTES],
  algo_bytes: ["sizeof(cublasLtMatmulAlgo_t)", lt.ALGO_BYTES],
  heuristic_workspace_offset: ["offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize)", lt.ALGO_BYTES],
};

const NCCL_CONSTANTS: Record<string, [string, number]> = {
  NCCL_FLOAT32: ["ncclFloat32", nccl.NCCL_FLOAT32],
  NCCL_BFLOAT16: ["ncclBfloat16", nccl.NCCL_BFLOAT16],
  NCCL_SUM: ["ncclSum", nccl.NCCL_SUM],
};

for (const [label, headers, include, constants, cxx] of [
  ["cuda.h", ["cuda.h"], cudaInclude, DRIVER_CONSTANTS, false],
  ["cublas_v2.h and cublasLt.h", ["cublas_v2.h", "cublasLt.h"], cublasInclude, CUBLAS_CONSTANTS, false],
  ["nccl.h", ["nccl.h"], ncclInclude, NCCL_CONSTANTS, true],
] as const) {
  const values = include ? cValues([...headers], Object.fromEntries(Object.entries(constants).map(([k, [e]]) => [k, e])), cxx) : null;
  if (!values) console.log(`skipping the ${label} constant checks: ${include ? "the C compiler could not build the check" : `no ${headers.join(" / ")}`}`);
  test.skipIf(!values)(`constants and struct layouts vbun hard-codes match ${label}`, () => {
    for (const [k, [expr, ours]] of Object.entries(constants)) expect(values!.get(k), `${expr}`).toBe(ours);
  });
}

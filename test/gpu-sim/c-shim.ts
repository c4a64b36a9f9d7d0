/**
 * Shared libraries with the C ABI of libcuda, cuBLAS, cuBLASLt and NCCL — every function vbun binds, with
 * the argument kinds of vbun's own symbol tables — whose every call is forwarded, as raw 64-bit values, to
 * a JavaScript handler (./c-abi.ts, which carries it out on simulated GPUs). Loaded through the same
 * library search and bun:ffi bindings as the real libraries, they let the test suite run vbun's FFI layer
 * itself (src/backend/cuda/driver.ts, cublas.ts, cublaslt.ts, nccl.ts): the conversions bun:ffi makes of
 * the values vbun passes, the order and meaning of every argument, and out-parameters written by C.
 *
 * Not NVIDIA's libraries, and no check of their symbol tables (test/ffi-signatures.test.ts compares the
 * tables with the real headers; a device run loads the real libraries). Built with the C compiler at test
 * time. Each thread installs its own handler (a JSCallback of that thread's VM; tensor-parallel ranks are
 * Worker threads); a call from a thread that installed none fails with 999.
 */
import { dlopen, JSCallback, toArrayBuffer, type FFIFunction, type Pointer } from "bun:ffi";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DRIVER_SYMBOLS, EVENT_ELAPSED_SIGNATURE } from "../../src/backend/cuda/driver.ts";
import { CUBLAS_SYMBOLS } from "../../src/backend/cuda/cublas.ts";
import { CUBLASLT_SYMBOLS } from "../../src/backend/cuda/cublaslt.ts";
import { NCCL_SYMBOLS } from "../../src/backend/cuda/nccl.ts";

type Table = Record<string, { readonly args: readonly string[]; readonly returns: string }>;

/** Each shim library: the file name the library search looks for, and the functions it exports. */
export const SHIM_LIBRARIES = {
  cuda: { file: "libcuda.so.1", table: { ...DRIVER_SYMBOLS, cuEventElapsedTime_v2: EVENT_ELAPSED_SIGNATURE, cuEventElapsedTime: EVENT_ELAPSED_SIGNATURE } as Table },
  cublas: { file: "libcublas.so.13", table: CUBLAS_SYMBOLS as Table },
  cublasLt: { file: "libcublasLt.so.13", table: CUBLASLT_SYMBOLS as Table },
  nccl: { file: "libnccl.so.2", table: NCCL_SYMBOLS as Table },
} as const;
export type ShimLibrary = keyof typeof SHIM_LIBRARIES;

/** A call as C received it: the function's name and its arguments widened to 64 bits (i32 sign-extended). */
export type ShimHandler = (name: string, args: bigint[]) => number | bigint;

const C_TYPE: Record<string, string> = { i32: "int32_t", u32: "uint32_t", u64: "uint64_t", i64: "int64_t", ptr: "void*" };

/** The C source of one shim library. */
export function shimSource(table: Table): string {
  const lines = [
    "#include <stdint.h>",
    "typedef uint64_t (*vbun_shim_handler)(int32_t id, const uint64_t* args);",
    "static __thread vbun_shim_handler handler = 0;",
    "void vbun_shim_install(vbun_shim_handler h) { handler = h; }",
    // 999 is CUDA_ERROR_UNKNOWN; for the other libraries an error status all the same.
    "static uint64_t forward(int32_t id, const uint64_t* args) {",
    "  if (!handler) return 999;",
    "  return handler(id, args);",
    "}",
  ];
  Object.entries(table).forEach(([name, sig], id) => {
    const params = sig.args.map((k, i) => `${C_TYPE[k] ?? fail(name, k)} a${i}`).join(", ") || "void";
    const widen = sig.args.map((k, i) => (k === "ptr" ? `(uint64_t)(uintptr_t)a${i}` : k === "i32" ? `(uint64_t)(int64_t)a${i}` : `(uint64_t)a${i}`));
    const ret = sig.returns === "ptr" ? "void*" : C_TYPE[sig.returns] ?? fail(name, sig.returns);
    const cast = sig.returns === "ptr" ? "(void*)(uintptr_t)" : `(${ret})`;
    lines.push(`${ret} ${name}(${params}) {`, `  const uint64_t args[${Math.max(widen.length, 1)}] = { ${widen.join(", ") || "0"} };`, `  return ${cast}forward(${id}, args);`, "}");
  });
  return lines.join("\n") + "\n";
}

function fail(name: string, kind: string): never {
  throw new Error(`c-shim: ${name} has an argument kind '${kind}' the shim cannot forward`);
}

/** Compiles the four shim libraries into a fresh folder; returns it, or the reason it could not. */
export function buildShimLibraries(): { dir: string } | { why: string } {
  const dir = mkdtempSync(join(tmpdir(), "vbun-c-shim-"));
  for (const { file, table } of Object.values(SHIM_LIBRARIES)) {
    const src = join(dir, `${file}.c`);
    writeFileSync(src, shimSource(table));
    let r: { exitCode: number | null; stderr?: unknown };
    try {
      r = Bun.spawnSync(["cc", "-shared", "-fPIC", "-O1", "-o", join(dir, file), src], { stdout: "pipe", stderr: "pipe" });
    } catch (e) {
      return { why: `no C compiler (cc): ${(e as Error).message}` };
    }
    if (r.exitCode !== 0) return { why: `cc could not build ${file}: ${String(r.stderr ?? "").slice(0, 500)}` };
  }
  return { dir };
}

/**
 * Sends every call into the shim libraries in `dir` to `handler` (from this thread). Returns the
 * environment that makes vbun's library search find them.
 */
export function installShim(dir: string, handler: ShimHandler): { env: Record<string, string>; callbacks: JSCallback[] } {
  const callbacks: JSCallback[] = [];
  for (const { file, table } of Object.values(SHIM_LIBRARIES)) {
    const names = Object.keys(table);
    const cb = new JSCallback((id: number, argsPtr: Pointer) => {
      const name = names[id]!;
      const n = table[name]!.args.length;
      const args = n === 0 ? [] : Array.from(new BigUint64Array(toArrayBuffer(argsPtr, 0, n * 8)));
      const r = handler(name, args);
      return typeof r === "bigint" ? r : BigInt.asUintN(64, BigInt(r));
    }, { args: ["i32", "ptr"], returns: "u64" });
    const lib = dlopen(join(dir, file), { vbun_shim_install: { args: ["ptr"], returns: "void" } } satisfies Record<string, FFIFunction>);
    lib.symbols.vbun_shim_install(cb.ptr);
    callbacks.push(cb);
  }
  return { env: { VBUN_LIBCUDA: join(dir, SHIM_LIBRARIES.cuda.file), VBUN_CUBLAS_DIR: dir, VBUN_NCCL_DIR: dir, VBUN_SHIM_DIR: dir }, callbacks };
}

/** vbun's PTX kernels: modules loaded once from the committed PTX (embedded in the binary), typed launches. */
import attentionPtx from "../../../ptx/attention.ptx" with { type: "text" };
import elementwisePtx from "../../../ptx/elementwise.ptx" with { type: "text" };
import normPtx from "../../../ptx/norm.ptx" with { type: "text" };
import ropePtx from "../../../ptx/rope.ptx" with { type: "text" };
import samplingPtx from "../../../ptx/sampling.ptx" with { type: "text" };
import prefillMmaPtx from "../../../ptx/prefill_mma.ptx" with { type: "text" };
import decodePtx from "../../../ptx/decode.ptx" with { type: "text" };
import gemvPtx from "../../../ptx/gemv.ptx" with { type: "text" };
import moePtx from "../../../ptx/moe.ptx" with { type: "text" };
import quantPtx from "../../../ptx/quant.ptx" with { type: "text" };
import { hostAddress, type DeviceDriver } from "./driver.ts";
import type { KernelProfiler } from "./kernel-profiler.ts";

/** (head_dim, query heads per KV head) pairs with a compiled paged_decode kernel (ptx/src/decode.cu). */
export const DECODE_SHAPES: readonly (readonly [number, number])[] = [[64, 1], [64, 2], [64, 4], [64, 8], [128, 1], [128, 2], [128, 4], [128, 8], [256, 1], [256, 2], [256, 4]];

const MODULES: Record<string, { ptx: string; kernels: string[] }> = {
  norm: { ptx: normPtx, kernels: ["rmsnorm_bf16", "add_rmsnorm_bf16", "rmsnorm_add_bf16", "qk_norm_across_heads_bf16", "qk_square_sums_f32"] },
  rope: { ptx: ropePtx, kernels: ["qk_norm_rope_store_bf16"] },
  elementwise: { ptx: elementwisePtx, kernels: ["embedding_bf16", "silu_mul_bf16", "gelu_tanh_mul_bf16", "swiglu_clamp_mul_bf16", "mla_assemble_bf16", "softcap_f32", "gather_rows_bf16", "add_bias_bf16", "add_bf16", "unshard_vocab_f32", "take_sampled_tokens_i32", "scatter_i32", "lora_mask_bf16"] },
  attention: { ptx: attentionPtx, kernels: ["paged_attention_bf16", "paged_attention_split_bf16", "paged_attention_combine_bf16"] },
  sampling: { ptx: samplingPtx, kernels: ["logprobs_f32", "mask_tokens_f32", "apply_edits_f32", "pending_penalty_f32", "sample_f32", "sampled_logit_f32"] },
  prefill_mma: { ptx: prefillMmaPtx, kernels: ["paged_prefill_mma_d64_bf16", "paged_prefill_mma_d128_bf16"] },
  decode: { ptx: decodePtx, kernels: DECODE_SHAPES.map(([d, g]) => `paged_decode_d${d}_g${g}_bf16`) },
  gemv: { ptx: gemvPtx, kernels: ["gemv_bf16", "gemv_silu_mul_bf16"] },
  quant: { ptx: quantPtx, kernels: ["gemv_int4_bf16", "gemv_int8_bf16", "gemv_fp8_bf16", "dequant_packed_bf16", "quantize_fp8_rows_bf16", "quantize_fp8_rows_f16", "quantize_fp8_rows_f32"] },
  moe: { ptx: moePtx, kernels: ["moe_route_bf16", "moe_route_grouped_f32", "moe_align_i32", "moe_gemm_bf16", "moe_gemm_packed_bf16", "moe_combine_bf16", "sigmoid_gated_add_bf16"] },
};

export type KernelName = "rmsnorm_bf16" | "add_rmsnorm_bf16" | "rmsnorm_add_bf16" | "qk_norm_across_heads_bf16" | "qk_square_sums_f32" | "qk_norm_rope_store_bf16" | "embedding_bf16" | "silu_mul_bf16"
  | "gather_rows_bf16" | "add_bias_bf16" | "add_bf16" | "unshard_vocab_f32" | "paged_attention_bf16" | "paged_attention_split_bf16" | "paged_attention_combine_bf16"
  | "paged_prefill_mma_d64_bf16" | "paged_prefill_mma_d128_bf16" | `paged_decode_d${64 | 128 | 256}_g${1 | 2 | 4 | 8}_bf16` | "logprobs_f32" | "mask_tokens_f32" | "apply_edits_f32" | "sample_f32" | "sampled_logit_f32" | "pending_penalty_f32"
  | "gemv_bf16" | "gemv_silu_mul_bf16" | "take_sampled_tokens_i32" | "scatter_i32" | "lora_mask_bf16"
  | "gelu_tanh_mul_bf16" | "swiglu_clamp_mul_bf16" | "mla_assemble_bf16" | "softcap_f32" | "moe_route_bf16" | "moe_route_grouped_f32" | "moe_align_i32" | "moe_gemm_bf16" | "moe_gemm_packed_bf16" | "moe_combine_bf16" | "sigmoid_gated_add_bf16"
  | "gemv_int4_bf16" | "gemv_int8_bf16" | "gemv_fp8_bf16" | "dequant_packed_bf16" | "quantize_fp8_rows_bf16" | "quantize_fp8_rows_f16" | "quantize_fp8_rows_f32";

/** A kernel argument: a device pointer (bigint, or null), an i32, or an f32. */
export type Arg = { p: bigint | null } | { i: number } | { f: number };

const MAX_ARGS = 32;

/** Each kernel's parameter kinds as its PTX declares them: p (.u64 pointer), i (.u32), f (.f32). */
export function kernelSignatures(ptx: string): Map<string, ("p" | "i" | "f")[]> {
  const out = new Map<string, ("p" | "i" | "f")[]>();
  for (const m of ptx.matchAll(/\.entry\s+(\w+)\(([^)]*)\)/g)) {
    const kinds = [...m[2]!.matchAll(/\.param\s+\.(\w+)/g)].map((p) => {
      const t = p[1]!;
      if (t === "u64") return "p" as const;
      if (t === "u32" || t === "s32") return "i" as const;
      if (t === "f32") return "f" as const;
      throw new Error(`kernel ${m[1]}: parameter type .${t} has no launch argument kind`);
    });
    out.set(m[1]!, kinds);
  }
  return out;
}

export class Kernels {
  private readonly fns = new Map<string, bigint>();
  private readonly signatures = new Map<string, ("p" | "i" | "f")[]>();
  // Parameter block for cuLaunchKernel: slot k holds argument k's value; params[k] points at slot k.
  // The driver copies the values at launch, so one block serves every launch.
  private readonly values = new ArrayBuffer(MAX_ARGS * 8);
  private readonly view = new DataView(this.values);
  private readonly params = new BigUint64Array(MAX_ARGS);
  /** When set, every launch is timed (see KernelProfiler). */
  profiler: KernelProfiler | null = null;

  private readonly modules: bigint[] = [];

  /** Loads every module through `modules` (compiled once per GPU, then cached: see module-cache.ts). */
  constructor(private readonly driver: DeviceDriver, private readonly stream: bigint, modules: { load(name: string, ptx: string): bigint }) {
    for (const [moduleName, { ptx, kernels }] of Object.entries(MODULES)) {
      const mod = modules.load(moduleName, ptx);
      this.modules.push(mod);
      const sigs = kernelSignatures(ptx);
      for (const k of kernels) {
        this.fns.set(k, driver.getFunction(mod, k));
        this.signatures.set(k, sigs.get(k)!);
      }
    }
    const base = hostAddress(new Uint8Array(this.values));
    for (let k = 0; k < MAX_ARGS; k++) this.params[k] = base + BigInt(k * 8);
  }

  /** Unloads the modules (the backend is closing: no launch may follow). */
  close(): void {
    for (const m of this.modules.splice(0)) this.driver.unloadModule(m);
    this.fns.clear();
  }

  launch(name: KernelName, grid: [number, number?, number?], block: number, args: Arg[], sharedBytes = 0): void {
    if (grid[0] === 0 || (grid[1] ?? 1) === 0) return;
    // A launch whose arguments disagree with the PTX signature would read garbage: refuse it.
    const sig = this.signatures.get(name)!;
    if (args.length !== sig.length) throw new Error(`${name}: ${args.length} launch arguments for ${sig.length} kernel parameters`);
    args.forEach((a, k) => {
      if (!(sig[k]! in a)) throw new Error(`${name}: argument ${k} is ${Object.keys(a)[0]}, the kernel declares ${sig[k]}`);
    });
    args.forEach((a, k) => {
      if ("p" in a) this.view.setBigUint64(k * 8, a.p ?? 0n, true);
      else if ("i" in a) this.view.setInt32(k * 8, a.i, true);
      else this.view.setFloat32(k * 8, a.f, true);
    });
    const start = this.profiler?.begin(this.stream);
    this.driver.launch(this.fns.get(name)!, [grid[0], grid[1] ?? 1, grid[2] ?? 1], [block, 1, 1], sharedBytes, this.stream, this.params, name);
    if (start !== undefined) this.profiler!.end(name, start, this.stream);
  }
}

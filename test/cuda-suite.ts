/**
 * The CUDA backend's tests against its CPU twin, written once and run on two targets: a real GPU
 * (test/cuda.test.ts, full sizes, only where a driver and a GPU exist) and the GPU simulator
 * (test/gpu-sim.test.ts, smaller sizes, everywhere). Outputs are poisoned first (NaN), so an element a
 * kernel does not write fails the check.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CpuBackend, CpuIntTensor, CpuTensor } from "../src/backend/cpu/cpu-backend.ts";
import type { CudaBackend, CudaTensor } from "../src/backend/cuda/cuda-backend.ts";
import type { CudaProvider } from "../src/backend/cuda/provider.ts";
import { moeRoutingInts, type AttentionShape, type StepInputs } from "../src/backend/backend.ts";
import { emptySamplingBatch } from "../src/engine/sampling-batch.ts";
import { fromFloat32, toFloat32 } from "../src/loader/dtype.ts";
import { LLM } from "../src/engine/llm.ts";
import { SeededRandom } from "../src/model/tiny-model.ts";
import { checkDraws, exitsWithin, FAST_MODEL, filteredDistribution, SAMPLING_CASES, tinyModel } from "./helpers.ts";
import { SamplingParams } from "../src/engine/sampling-params.ts";
import { writeAdapter } from "./lora-adapters.ts";
import { LORA_TARGETS } from "../src/lora/lora-adapter.ts";
import { dequantizeMatrix } from "../src/loader/packed-matrix.ts";
import { quantizeFp8Rows } from "../src/loader/quantization.ts";
import { gptOssExpertParts } from "../src/model/gpt-oss-experts.ts";
import { Checkpoint } from "../src/loader/checkpoint.ts";
import { loadModelConfig } from "../src/model/config.ts";
import type { TinyModelOptions } from "../src/model/tiny-model.ts";
import { onlineFp8Reference, quantizedPair, randomPacked, scaledPair, type Scheme } from "./packed-models.ts";

export interface CudaSuiteSizes {
  /** Rows, hidden size, vocabulary and MLP width of the elementwise/GEMM test. */
  rows: number; hidden: number; vocab: number; intermediate: number;
  /** Length of the fresh prefill in the attention step (a cached-prefix chunk and a decode ride along). */
  prefillLen: number;
  /** Context lengths and table width of the split-KV decode test (width × 16 keys must exceed 512 for several splits). */
  decodeLens: number[]; decodeTableWidth: number;
  /** Vocabulary of the sampling test, and seeded draws per configuration of the distribution test. */
  samplingVocab: number; samplingDraws: number;
  /** Graph test: sequences and decode steps; engine test: max tokens. */
  graphSeqs: number; graphSteps: number; engineTokens: number;
}

export const GPU_SIZES: CudaSuiteSizes = {
  rows: 37, hidden: 1024, vocab: 3000, intermediate: 3072, prefillLen: 300, decodeLens: [1, 17, 600, 1500, 2048], decodeTableWidth: 128,
  samplingVocab: 151936, samplingDraws: 4000, graphSeqs: 64, graphSteps: 64, engineTokens: 16,
};

export interface CudaTarget {
  /** Shown in the describe names: "GPU" or "simulated GPU". */
  label: string;
  backend: CudaBackend | null;
  /** How the engine tests reach this target's GPUs (and NCCL, for tensor parallelism). */
  provider: CudaProvider;
  sizes: CudaSuiteSizes;
  /** Per-test time limit in ms (the simulator interprets every thread). */
  timeoutMs: number;
  /** The simulator's count of NCCL communicators destroyed or aborted in the latest group (real NCCL keeps none). */
  ncclCommsClosed?: () => number;
  /** Device memory a closed engine may leave behind: 0 on the simulator; a real driver may keep some for itself. */
  memorySlackBytes: number;
}

/**
 * More models for the engine tests: mixtures of experts (a dense layer between sparse ones; a gated shared
 * expert), sliding-window attention shorter than the prompts, Gemma 3's norms, activation and RoPE, and
 * Phi-4-mini's partial LongRoPE, GLM-4's interleaved one, OLMo 3's norms, GPT-OSS's sinks and experts.
 */
const MORE_MODELS = [
  { arch: "qwen3_moe" as const, seed: 7, vocabSize: 4096, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1] },
  { arch: "qwen2_moe" as const, seed: 8, vocabSize: 4096, numExperts: 6, topK: 4 },
  { arch: "mistral" as const, seed: 9, vocabSize: 4096, slidingWindow: 4 },
  { arch: "gemma3" as const, seed: 10, vocabSize: 4096, numLayers: 3 },
  { arch: "gemma2" as const, seed: 11, vocabSize: 4096, numLayers: 3 },
  // Phi-4-mini's rotary embedding: ¾ of each head, LongRoPE's long factors (max-model-len 256 > 64).
  // GLM-4-0414: interleaved RoPE over half of each head, norms of the attention and MLP outputs, q/k/v bias.
  { arch: "glm4" as const, seed: 13, vocabSize: 4096 },
  // OLMo 3: norms after each sublayer only (rmsnorm_add), q/k norms across heads, three sliding layers of four.
  { arch: "olmo3" as const, seed: 14, vocabSize: 4096, numLayers: 4 },
  // GLM-4.5: f32 router logits, grouped sigmoid routing with a correction bias, a shared expert run as an extra expert.
  { arch: "glm4_moe" as const, seed: 16, vocabSize: 4096, numLayers: 3 },
  // EXAONE 4.0: the same norms with per-head q/k norms; the global layer without RoPE.
  { arch: "exaone4" as const, seed: 15, vocabSize: 4096, numLayers: 4 },
  // GPT-OSS: attention sinks, q/k/v/o biases, alternating sliding layers; experts with a router bias, expert biases and the clamped SwiGLU.
  // Its large expert activations (gate/up drawn to reach the clamp) and near-tied router logits make bf16's rounding
  // flip a greedy token or an expert choice more often than the others' (16 of 24 sequences of seeds 30–37 stay
  // equal over 8 tokens, each difference at a near-tie): a seed whose sequences have no such tie.
  { arch: "gpt_oss" as const, seed: 30, vocabSize: 4096, numLayers: 4 },
  // DeepSeek-V3: multi-head latent attention (mla_assemble, heads of 24 with 8 rotary dimensions), then GLM-4.5's experts.
  { arch: "deepseek_v3" as const, seed: 18, vocabSize: 4096, numLayers: 3 },
  // MiniMax-M2: q/k norms across heads, RoPE over half of each head, one-group sigmoid routing with a correction bias.
  { arch: "minimax_m2" as const, seed: 20, vocabSize: 4096 },
  // DeepSeek-V2: softmax routing with two shared experts appended by the routing kernel.
  { arch: "deepseek_v2" as const, seed: 19, vocabSize: 4096, numLayers: 3 },
  // ERNIE 4.5 MoE: softmax scores with a correction bias (the grouped routing kernel's softmax), two shared experts.
  { arch: "ernie4_5_moe" as const, seed: 21, vocabSize: 4096, numLayers: 3 },
  // Cohere's Command R and R7B: the parallel block (add_bf16), LayerNorms (the norm kernels centered), interleaved RoPE;
  // R7B's global layer without RoPE.
  { arch: "cohere" as const, seed: 22, vocabSize: 4096 },
  // Command R+: per-head q/k LayerNorm weights (the fused kernel's strides and centered norms).
  { arch: "cohere" as const, seed: 25, vocabSize: 4096, qkNorm: true },
  // OLMoE: q/k norms across heads, then experts on every layer.
  { arch: "olmoe" as const, seed: 24, vocabSize: 4096 },
  { arch: "cohere2" as const, seed: 23, vocabSize: 4096, numLayers: 4 },
  { arch: "phi3" as const, seed: 12, vocabSize: 4096, partialRotaryFactor: 0.75, originalMaxPositionEmbeddings: 64, ropeScaling: { type: "longrope", short_factor: [1, 1.25, 1.5, 2, 3, 5], long_factor: [1.1, 2, 4, 8, 16, 40] } },
];

const bf16Round = (v: Float32Array) => toFloat32(fromFloat32(v, "BF16"), "BF16");
export function relErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / den);
}
function noNaN(a: Float32Array): boolean {
  for (const v of a) if (Number.isNaN(v)) return false;
  return true;
}
function argmaxRow(x: Float32Array, r: number, V: number): number {
  let best = 0;
  for (let i = 1; i < V; i++) if (x[r * V + i]! > x[r * V + best]!) best = i;
  return best;
}

export function defineCudaSuites(target: CudaTarget): void {
  const { label, sizes: Z, timeoutMs } = target;
  // Every engine a test starts on the GPU is closed after the test: it holds most of the GPU's memory (its
  // KV cache takes what --gpu-memory-utilization allows), and the next engine needs it back.
  const started: LLM[] = [];
  const gpuLLM = (o: ConstructorParameters<typeof LLM>[0]) => {
    const llm = new LLM(o);
    started.push(llm);
    return llm;
  };
  afterEach(() => {
    for (const llm of started.splice(0)) llm.close();
  });
  const skip = target.backend === null;
  const rng = new SeededRandom(42);
  const randn = (n: number, std = 1) => bf16Round(rng.normal(new Float32Array(n), std));

  // Tensor parallelism first: a worker thread that ends waits for the JIT compilations of its code still in flight, and
  // later in a long test process (after the kernel and engine tests) JavaScriptCore's compiler threads are far behind —
  // a first group's exit took 13–58 s there, under 0.5 s with concurrent JIT off (BUN_JSC_useConcurrentJIT=0; slower overall).
  const gpus = skip ? 0 : target.provider.deviceCount(target.backend!);
  if (!skip && gpus < 2) console.log(`skipping GPU tensor-parallel tests: ${gpus} GPU visible, 2 needed`);
  describe.skipIf(gpus < 2)(`tensor parallelism over NCCL on the ${label}`, () => {
    test("TP = 2 gives TP = 1's greedy tokens, with decode graphs and with chunked prefill", () => {
      const model = tinyModel({ arch: "qwen3", seed: 11, vocabSize: 4096 });
      const rng = new SeededRandom(12);
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], Array.from({ length: 60 }, () => rng.int(0, 4095)), [300, 200, 100, 7, 7]];
      const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true };
      const common = { model, device: "cuda" as const, maxModelLen: 256, maxNumSeqs: 4, maxNumBatchedTokens: 32, cuda: target.provider, log: () => {} };
      const one = gpuLLM(common);
      const two = gpuLLM({ ...common, tensorParallelSize: 2 });
      try {
        const a = one.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
        const b = two.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
        console.log(`TP = 1 vs TP = 2 on the ${label}: ${a.filter((x, i) => x === b[i]).length} of ${prompts.length} prompts token-identical over ${Z.engineTokens} tokens`);
        expect(two.engine.runner.graphSteps).toBeGreaterThan(0);
        // bf16 all-reduces round partial sums once more than TP = 1 does: a near-tie may flip one prompt.
        expect(a.filter((x, i) => x === b[i]).length).toBeGreaterThanOrEqual(prompts.length - 1);
      } finally {
        one.engine.close();
        two.engine.close();
      }
      // A clean shutdown destroys both ranks' communicators.
      if (target.ncclCommsClosed) expect(target.ncclCommsClosed()).toBe(2);
    }, timeoutMs);

    test("TP = 2 gives TP = 1's tokens for OLMo 3 (q/k sums of squares all-reduced in f32) and Gemma 2 (hybrid KV cache groups on every rank)", () => {
      const rng = new SeededRandom(13);
      const prompts = [[1, 2, 3, 4, 5, 6, 7], Array.from({ length: 40 }, () => rng.int(0, 4095)), [300, 200, 100, 7, 7]];
      const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true };
      for (const opts of [{ arch: "olmo3" as const, seed: 14, vocabSize: 4096, numLayers: 4 }, { arch: "gemma2" as const, seed: 11, vocabSize: 4096, numLayers: 4 }]) {
        const common = { model: tinyModel(opts), device: "cuda" as const, maxModelLen: 128, maxNumSeqs: 4, maxNumBatchedTokens: 32, blockSize: 4, cuda: target.provider, log: () => {} };
        const one = gpuLLM(common), two = gpuLLM({ ...common, tensorParallelSize: 2 });
        try {
          const a = one.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
          const b = two.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
          console.log(`${opts.arch}: TP = 1 vs TP = 2 on the ${label}: ${a.filter((x, i) => x === b[i]).length} of ${prompts.length} prompts token-identical over ${Z.engineTokens} tokens`);
          expect(two.engine.runner.graphSteps).toBeGreaterThan(0);
          expect(a.filter((x, i) => x === b[i]).length).toBeGreaterThanOrEqual(prompts.length - 1);
        } finally {
          one.engine.close();
          two.engine.close();
        }
      }
    }, timeoutMs);

    // "1:2": rank 1 throws before issuing step 2. "1:2:late": it throws after step 2's barrier, so its
    // collectives never run while the leader's wait for them on its stream (as after a kernel fault).
    // "1:2:hang": rank 1 stops responding; the leader gives up after VBUN_TP_TIMEOUT (3 s here: it also bounds
    // each rank's load of its shard, which on a loaded 2-core machine can pass 1 s on the simulator).
    for (const [failAt, message] of [
      ["1:2", "tensor-parallel rank 1 failed: injected failure at step 2"],
      ["1:2:late", "tensor-parallel rank 1 failed: injected failure after step 2's barrier"],
      ["1:2:hang", "tensor parallelism: a rank did not arrive within 3 s \\(VBUN_TP_TIMEOUT\\); the group is stopped"],
      // Hangs after its barrier: the leader's stream waits for rank 1's collectives, polled, until the timeout.
      ["1:2:late-hang", "tensor parallelism: a step's GPU work \\(its collectives wait for the other ranks'\\) did not finish within 3 s"],
    ] as const) {
      test(`a failing GPU rank (VBUN_TP_FAIL_AT=${failAt}) makes the engine fail with that rank's error, without hanging; close() ends the workers`, async () => {
        process.env.VBUN_TP_FAIL_AT = failAt;
        if (failAt.endsWith("hang")) process.env.VBUN_TP_TIMEOUT = "3";
        let llm: LLM | null = null;
        try {
          llm = gpuLLM({ model: tinyModel(FAST_MODEL), device: "cuda", tensorParallelSize: 2, maxModelLen: 64, maxNumSeqs: 4, cuda: target.provider, log: () => {} });
          const group = llm.engine.runner.tpGroup!;
          expect(() => llm!.generate([[1, 2, 3], [4, 5]], { temperature: 0, max_tokens: 8 }, { useTqdm: false })).toThrow(new RegExp(message));
          // The communicators were aborted, which is what lets collectives waiting for rank 1 give up (a hung
          // rank cannot abort its own: only the leader's then).
          if (target.ncclCommsClosed) expect(target.ncclCommsClosed()).toBe(failAt.endsWith("hang") ? 1 : 2);
          llm.close();
          // Generous: a simulated rank's thread frees half a GiB of simulated device memory on its way out, and the
          // first failing group's threads take long to stop on a loaded 2-core machine (17–24 s measured for "1:2"
          // in the whole gpu-sim file, before and after 2026-11-29's kernels; under 1 s for the later cases; past
          // 30 s in the whole suite) — not understood yet. A hang never ends: this still catches one.
          expect(await exitsWithin(group, 90_000)).toBe(true);
        } finally {
          delete process.env.VBUN_TP_FAIL_AT;
          delete process.env.VBUN_TP_TIMEOUT;
        }
      }, timeoutMs);
    }

    test("more ranks than GPUs is a clear start-up error", () => {
      const model = tinyModel(FAST_MODEL);
      expect(() => new LLM({ model, device: "cuda", tensorParallelSize: 2 * gpus, cuda: target.provider, log: () => {} })).toThrow(new RegExp(`--tensor-parallel-size: ${2 * gpus} ranks need ${2 * gpus} GPUs but only ${gpus} are visible`));
    }, timeoutMs);
  });

  describe.skipIf(skip)(`CUDA kernels on the ${label} match their CPU twins (bf16 rel. error ≤ 1e-2, every output written)`, () => {
    const cpu = new CpuBackend();
    const g = target.backend!;
    const up = (values: Float32Array, shape: number[]) => g.loadWeight([{ name: "t", file: "test", dtype: "F32", shape, bytes: new Uint8Array(values.buffer.slice(0)) }], shape);
    const out = (shape: number[], dtype: "act" | "f32" | "i32" = "act") => { const t = g.empty(shape, dtype); g.poison(t); return t; };
    const check = (gpuOut: CudaTensor, cpuOut: Float32Array, tol = 1e-2) => {
      const h = g.toHost(gpuOut);
      expect(noNaN(h)).toBe(true);
      expect(relErr(h, cpuOut)).toBeLessThanOrEqual(tol);
    };

    test("embedding, rmsnorm, add_rmsnorm, rmsnorm_add (and centered: LayerNorm), add, qk_norm_across_heads, silu_mul, gelu_tanh_mul, linear (+bias), gather", () => {
      const n = Z.rows, H = Z.hidden, V = Z.vocab, I = Z.intermediate;
      const table = randn(V * H), w = randn(H, 0.1).map((x) => x + 1), ids = Int32Array.from({ length: n }, () => rng.int(0, V - 1));
      const step = g.uploadStep({ tokenIds: ids, positions: new Int32Array(n), slotMapping: new Int32Array(n), queryStart: Int32Array.from([0, n]), seqLens: Int32Array.from([n]), blockTables: new Int32Array(1), maxBlocksPerSeq: 1, logitsRows: Int32Array.from([3, 0, n - 1]) });
      const emb = out([n, H]);
      g.embedding(step.tokenIds, up(table, [V, H]), emb);
      const cEmb = new CpuTensor(new Float32Array(n * H), [n, H]);
      cpu.embedding(new CpuIntTensor(ids, [n]), new CpuTensor(table, [V, H]), cEmb);
      check(emb, cEmb.data, 0);
      // Scaled as the model's embedding multiplier asks (Gemma's √hidden): a bf16 product.
      const scaledEmb = out([n, H]);
      g.embedding(step.tokenIds, up(table, [V, H]), scaledEmb, 0, 33.75);
      const cScaled = new CpuTensor(new Float32Array(n * H), [n, H]);
      cpu.embedding(new CpuIntTensor(ids, [n]), new CpuTensor(table, [V, H]), cScaled, 0, 33.75);
      check(scaledEmb, bf16Round(cScaled.data), 0);
      const normed = out([n, H]);
      g.rmsNorm(emb, up(w, [H]), 1e-6, normed);
      const cNormed = new CpuTensor(new Float32Array(n * H), [n, H]);
      cpu.rmsNorm(cEmb, new CpuTensor(w, [H]), 1e-6, cNormed);
      check(normed, cNormed.data);
      const x = randn(n * H), resid = randn(n * H);
      const gRes = up(resid, [n, H]), gOut = out([n, H]);
      g.addRmsNorm(up(x, [n, H]), gRes, up(w, [H]), 1e-6, gOut);
      const cRes = new CpuTensor(resid.slice(), [n, H]), cOut = new CpuTensor(new Float32Array(n * H), [n, H]);
      cpu.addRmsNorm(new CpuTensor(x, [n, H]), cRes, new CpuTensor(w, [H]), 1e-6, cOut);
      check(gOut, cOut.data);
      check(gRes, cRes.data);
      // OLMo 2 / 3: the norm of a sublayer's output added to the residual stream.
      const gRes2 = up(resid, [n, H]), cRes2 = new CpuTensor(resid.slice(), [n, H]);
      g.rmsNormAdd(up(x, [n, H]), up(w, [H]), 1e-6, gRes2);
      cpu.rmsNormAdd(new CpuTensor(x, [n, H]), new CpuTensor(w, [H]), 1e-6, cRes2);
      check(gRes2, cRes2.data);
      expect(relErr(g.toHost(gRes2), resid)).toBeGreaterThan(0.1); // it did add something
      // Cohere's LayerNorm without bias (centered), alone and after the residual add, on rows of mean ≈ 3 (which an RMSNorm
      // would keep); then the parallel block's add.
      const shifted = bf16Round(randn(n * H).map((v) => v + 3)), cShifted = new CpuTensor(shifted, [n, H]);
      const lnOut = out([n, H]), cLn = new CpuTensor(new Float32Array(n * H), [n, H]), cRmsOfShifted = new CpuTensor(new Float32Array(n * H), [n, H]);
      g.rmsNorm(up(shifted, [n, H]), up(w, [H]), 1e-5, lnOut, true);
      cpu.rmsNorm(cShifted, new CpuTensor(w, [H]), 1e-5, cLn, true);
      check(lnOut, cLn.data);
      cpu.rmsNorm(cShifted, new CpuTensor(w, [H]), 1e-5, cRmsOfShifted);
      expect(relErr(g.toHost(lnOut), cRmsOfShifted.data)).toBeGreaterThan(0.5);
      const gRes3 = up(resid, [n, H]), gOut3 = out([n, H]), cRes3 = new CpuTensor(resid.slice(), [n, H]), cOut3 = new CpuTensor(new Float32Array(n * H), [n, H]);
      g.addRmsNorm(up(shifted, [n, H]), gRes3, up(w, [H]), 1e-5, gOut3, true);
      cpu.addRmsNorm(cShifted, cRes3, new CpuTensor(w, [H]), 1e-5, cOut3, true);
      check(gOut3, cOut3.data);
      check(gRes3, bf16Round(cRes3.data), 0);
      const gSum = up(resid, [n, H]);
      g.add(up(x, [n, H]), gSum);
      check(gSum, bf16Round(resid.map((v, i) => v + x[i]!)), 0); // one bf16 rounding of the f32 sum
      // OLMo 2 / 3's q/k norms over whole projections, in place; v passes through. Heads as Qwen3-0.6B's, and odd ones.
      for (const [Hq, Hk, D] of [[16, 8, 128], [3, 1, 16]] as const) {
        const W = (Hq + 2 * Hk) * D, qkv = randn(n * W), qw = randn(Hq * D, 0.1).map((v) => v + 1), kw = randn(Hk * D, 0.1).map((v) => v + 1);
        const shape = { numHeads: Hq, numKvHeads: Hk, headDim: D, scale: 1 };
        const gq = up(qkv, [n, W]), cq = new CpuTensor(qkv.slice(), [n, W]);
        g.qkNormAcrossHeads(gq, up(qw, [Hq * D]), up(kw, [Hk * D]), 1e-6, shape);
        cpu.qkNormAcrossHeads(cq, new CpuTensor(qw, [Hq * D]), new CpuTensor(kw, [Hk * D]), 1e-6, shape);
        check(gq, cq.data);
        const h = g.toHost(gq);
        for (let r = 0; r < n; r++) for (let i = (Hq + Hk) * D; i < W; i++) expect(h[r * W + i]).toBe(qkv[r * W + i]!);
        // Tensor parallelism's path: the sums of squares (as if added up over 2 ranks: doubled), then the norm from them.
        const gSums = out([n, 2], "f32"), cSums = new CpuTensor(new Float32Array(2 * n), [n, 2]);
        g.qkSquareSums(up(qkv, [n, W]), shape, gSums);
        cpu.qkSquareSums(new CpuTensor(qkv.slice(), [n, W]), shape, cSums);
        check(gSums, cSums.data, 1e-5);
        const doubled = cSums.data.map((v) => 2 * v), gq2 = up(qkv, [n, W]), cq2 = new CpuTensor(qkv.slice(), [n, W]);
        g.qkNormAcrossHeads(gq2, up(qw, [Hq * D]), up(kw, [Hk * D]), 1e-6, shape, g.fromHost(doubled, [n, 2]), 2);
        cpu.qkNormAcrossHeads(cq2, new CpuTensor(qw, [Hq * D]), new CpuTensor(kw, [Hk * D]), 1e-6, shape, new CpuTensor(doubled, [n, 2]), 2);
        check(gq2, cq2.data);
        check(gq2, cq.data); // the same means as one rank's own
      }
      const gu = randn(n * 2 * I), act = out([n, I]);
      g.siluMul(up(gu, [n, 2 * I]), act);
      const cAct = new CpuTensor(new Float32Array(n * I), [n, I]);
      cpu.siluMul(new CpuTensor(gu, [n, 2 * I]), cAct);
      check(act, cAct.data);
      // Gemma 2's final logit soft-capping, in place on f32 logits.
      const cappedF32 = out([n, 2 * I], "f32");
      g.linear(normed, up(randn(2 * I * H, 1 / 4), [2 * I, H]), null, cappedF32);
      const beforeCap = g.toHost(cappedF32);
      g.softcap(cappedF32, 3);
      const cCapped = new CpuTensor(beforeCap.slice(), [n, 2 * I]);
      cpu.softcap(cCapped, 3);
      check(cappedF32, cCapped.data, 1e-5);
      expect(Math.max(...beforeCap.map(Math.abs))).toBeGreaterThan(3); // the cap binds
      const gelu = out([n, I]);
      g.geluTanhMul(up(gu, [n, 2 * I]), gelu);
      const cGelu = new CpuTensor(new Float32Array(n * I), [n, I]);
      cpu.geluTanhMul(new CpuTensor(gu, [n, 2 * I]), cGelu);
      check(gelu, cGelu.data);
      const W = randn(I * H, 1 / 32), b = randn(I, 0.1), y = out([n, I]);
      g.linear(normed, up(W, [I, H]), up(b, [I]), y);
      const cY = new CpuTensor(new Float32Array(n * I), [n, I]);
      cpu.linear(new CpuTensor(g.toHost(normed), [n, H]), new CpuTensor(W, [I, H]), new CpuTensor(b, [I]), cY);
      check(y, cY.data);
      const logits = out([n, V], "f32");
      g.linear(normed, up(table, [V, H]), null, logits);
      const cL = new CpuTensor(new Float32Array(n * V), [n, V]);
      cpu.linear(new CpuTensor(g.toHost(normed), [n, H]), new CpuTensor(table, [V, H]), null, cL);
      check(logits, cL.data);
      const gathered = out([3, H]);
      g.gatherRows(normed, step.logitsRows, 3, gathered);
      const hn = g.toHost(normed);
      check(gathered, Float32Array.from([...hn.subarray(3 * H, 4 * H), ...hn.subarray(0, H), ...hn.subarray((n - 1) * H, n * H)]), 0);
    }, timeoutMs);

    test("LoRA (loraAdd: A GEMM, slot mask, accumulating B GEMM) matches the CPU twin, rows of several adapters and none", () => {
      const n = Z.rows, H = Z.hidden, O = Z.intermediate, S = 3, R = 8, width = S * R;
      const slots = Int32Array.from({ length: n }, (_, i) => (i % (S + 1)) - 1); // −1, 0, 1, 2, −1, …
      const step = g.uploadStep({ tokenIds: new Int32Array(n), positions: new Int32Array(n), slotMapping: new Int32Array(n), queryStart: Int32Array.from([0, n]), seqLens: Int32Array.from([n]), blockTables: new Int32Array(1), maxBlocksPerSeq: 1, logitsRows: Int32Array.from([0]), loraSlots: slots });
      const x = randn(n * H), a = randn(width * H, 1 / 16), b = randn(width * O, 1 / 4), base = randn(n * O), scales = Float32Array.from([2, 0.5, 1.25]);
      const y = up(base, [n, O]), u = out([n, width]);
      g.loraAdd(up(x, [n, H]), up(a, [width, H]), up(b, [width, O]), step.loraSlots!, g.fromHost(scales, [S]), S, u, y);
      const cY = new CpuTensor(base.slice(), [n, O]);
      cpu.loraAdd(new CpuTensor(x, [n, H]), new CpuTensor(a, [width, H]), new CpuTensor(b, [width, O]), new CpuIntTensor(slots, [n]), new CpuTensor(scales, [S]), S, new CpuTensor(new Float32Array(n * width), [n, width]), cY);
      check(y, cY.data);
      // Rows of the base model (slot −1) are left exactly as they were.
      const h = g.toHost(y);
      for (let r = 0; r < n; r++) if (slots[r] === -1) expect(Array.from(h.subarray(r * O, (r + 1) * O))).toEqual(Array.from(base.subarray(r * O, (r + 1) * O)));
    }, timeoutMs);

    // Expert counts past one per lane of the routing warp (40) and past one per thread of the grouping block (300).
    // GPT-OSS's experts (32, top 4): biases on both projections and the clamped SwiGLU, its limit low enough to clamp often.
    for (const [E, K, gptOss] of [[6, 2, false], [40, 8, false], [300, 4, false], [32, 4, true]] as const) {
      test(`mixture of experts, ${E} experts, top ${K}${gptOss ? ", expert biases and clamped SwiGLU" : ""}: routing (softmax, top-k, renormalized or not, shared entries after), the grouped expert GEMMs and the weighted sum match the CPU twin`, () => {
        // Every row favours expert 2 (more than a 16-row tile of it: two tiles), the other choices random.
        const n = 2 * Z.rows + 3, H = Z.hidden, I = 48, entries = n * K;
        const logits = bf16Round(randn(n * E).map((v, i) => (i % E === 2 ? v + 4 : v))), x = randn(n * H), w13 = randn(E * 2 * I * H, 1 / Math.sqrt(H)), w2 = randn(E * H * I, 1 / Math.sqrt(I));
        const b13 = gptOss ? randn(E * 2 * I, 0.5) : null, b2 = gptOss ? randn(E * H, 0.5) : null, swiglu = gptOss ? { alpha: 1.702, limit: 1.25 } : null;
        const gExperts = { w13: up(w13, [E * 2 * I, H]), w2: up(w2, [E * H, I]), b13: b13 && up(b13, [E * 2 * I]), b2: b2 && up(b2, [E * H]), swiglu };
        const cExperts = { w13: new CpuTensor(w13, [E * 2 * I, H]), w2: new CpuTensor(w2, [E * H, I]), b13: b13 && new CpuTensor(b13, [E * 2 * I]), b2: b2 && new CpuTensor(b2, [E * H]), swiglu };
        // DeepSeek-V2's shared experts: two entries of weight 1 (experts E, E + 1) after each row's routed ones.
        const W = K + 2, sIds = out([n, W], "i32"), sWeights = out([n, W], "f32");
        g.moeRoute(up(logits, [n, E]), K, false, sIds, sWeights, 2);
        const cSIds = new CpuIntTensor(new Int32Array(n * W), [n, W]), cSW = new CpuTensor(new Float32Array(n * W), [n, W]);
        cpu.moeRoute(new CpuTensor(logits, [n, E]), K, false, cSIds, cSW, 2);
        expect(Array.from(g.toHost(sIds))).toEqual(Array.from(cSIds.data));
        check(sWeights, cSW.data, 1e-5);
        for (let t = 0; t < n; t++) expect([...cSIds.data.subarray(t * W + K, (t + 1) * W), ...cSW.data.subarray(t * W + K, (t + 1) * W)]).toEqual([E, E + 1, 1, 1]);
        for (const renormalize of [true, false]) {
          const ids = out([n, K], "i32"), weights = out([n, K], "f32");
          g.moeRoute(up(logits, [n, E]), K, renormalize, ids, weights);
          const cIds = new CpuIntTensor(new Int32Array(n * K), [n, K]), cW = new CpuTensor(new Float32Array(n * K), [n, K]);
          cpu.moeRoute(new CpuTensor(logits, [n, E]), K, renormalize, cIds, cW);
          expect(Array.from(g.toHost(ids))).toEqual(Array.from(cIds.data));
          check(weights, cW.data, 1e-5);
          const y = out([n, H]);
          const scratch = { gateUp: out([entries, 2 * I]), act: out([entries, I]), expertOut: out([entries, H]), routing: out([moeRoutingInts(entries, E)], "i32") };
          g.moeExperts(up(x, [n, H]), ids, weights, gExperts, E, scratch, y);
          const cY = new CpuTensor(new Float32Array(n * H), [n, H]);
          const cScratch = { gateUp: cpu.empty([entries, 2 * I]), act: cpu.empty([entries, I]), expertOut: cpu.empty([entries, H]), routing: cpu.empty([1], "i32") };
          cpu.moeExperts(new CpuTensor(x, [n, H]), cIds, cW, cExperts, E, cScratch, cY);
          check(y, cY.data, 2e-2);
        }
      }, timeoutMs);
    }

    test("packed experts (4-bit and 8-bit integers by groups, FP8 by blocks) give exactly what their dequantized bf16 experts give", () => {
      const n = 2 * Z.rows + 3, E = 6, K = 2, H = Z.hidden, I = 64, entries = n * K;
      const logits = randn(n * E), x = up(randn(n * H), [n, H]), ids = out([n, K], "i32"), weights = out([n, K], "f32");
      g.moeRoute(up(logits, [n, E]), K, true, ids, weights);
      const scratch = () => ({ gateUp: out([entries, 2 * I]), act: out([entries, I]), expertOut: out([entries, H]), routing: out([moeRoutingInts(entries, E)], "i32") });
      for (const [bits, group, code] of [[4, 32, "uint"], [8, 16, "uint"], [8, 64, "e4m3"], [4, 0, "uint"]] as const) {
        // The experts one by one, as the checkpoint has them, then stacked: packed (the model's loadWeight "experts") or dequantized.
        const w13 = Array.from({ length: E }, () => randomPacked(rng, bits, 2 * I, H, group || H, false, code));
        const w2 = Array.from({ length: E }, () => randomPacked(rng, bits, H, I, group || I, false, code));
        const packed = { w13: g.loadWeight(w13, [E * 2 * I, H], "experts"), w2: g.loadWeight(w2, [E * H, I], "experts"), b13: null, b2: null, swiglu: null };
        expect([packed.w13.packed !== null, packed.w2.packed !== null]).toEqual([true, true]);
        const plain = { w13: g.loadWeight(w13.map(dequantizeMatrix), [E * 2 * I, H]), w2: g.loadWeight(w2.map(dequantizeMatrix), [E * H, I]), b13: null, b2: null, swiglu: null };
        const y = out([n, H]), want = out([n, H]);
        g.moeExperts(x, ids, weights, packed, E, scratch(), y);
        g.moeExperts(x, ids, weights, plain, E, scratch(), want);
        const got = g.toHost(y);
        expect(noNaN(got)).toBe(true);
        expect(Array.from(got)).toEqual(Array.from(g.toHost(want)));
      }
      // desc_act's groups (g_idx) are not read by the expert GEMM: such experts load dequantized.
      const actOrder = Array.from({ length: E }, () => randomPacked(rng, 4, 2 * I, H, 32, true));
      expect(g.loadWeight(actOrder, [E * 2 * I, H], "experts").packed).toBeNull();
    }, timeoutMs);

    // GLM-4.5 / DeepSeek-V3 routing: one group (GLM-4.5's), 8 groups keeping 4 (DeepSeek-V3's), groups past one per lane
    // (40 of 5); ERNIE 4.5's softmax scores (64 experts, top 6, 2 shared; its bias is on the scale of the probabilities).
    // DeepSeek-V2's group_limited_greedy: softmax scores, a group's score its best one, no bias (160 experts in 8 groups keeping 3).
    for (const [E, K, G, TG, S, scoring, groupScore] of [[16, 4, 1, 1, 1, "sigmoid", "top2"], [64, 6, 8, 4, 2, "sigmoid", "top2"], [200, 8, 40, 5, 1, "sigmoid", "top2"], [64, 6, 1, 1, 2, "softmax", "top2"],
      [200, 8, 40, 5, 1, "softmax", "top2"], [160, 6, 8, 3, 2, "softmax", "max"]] as const) {
      test(`grouped ${scoring} routing, ${E} experts in ${G} groups keeping ${TG} (group score: ${groupScore}), top ${K}, ${S} shared: ids and weights match the CPU twin`, () => {
        const n = 2 * Z.rows + 3, W = K + S;
        const logits = rng.normal(new Float32Array(n * E), 2), bias = groupScore === "max" ? new Float32Array(E) : rng.normal(new Float32Array(E), scoring === "softmax" ? 0.02 : 0.5);
        for (const renormalize of [true, false]) {
          const ids = out([n, W], "i32"), weights = out([n, W], "f32");
          const grouping = { numGroups: G, topKGroups: TG, scale: 2.5, scoring, groupScore };
          g.moeRouteGrouped(g.fromHost(logits, [n, E]), g.fromHost(bias, [E]), K, grouping, renormalize, S, ids, weights);
          const cIds = new CpuIntTensor(new Int32Array(n * W), [n, W]), cW = new CpuTensor(new Float32Array(n * W), [n, W]);
          cpu.moeRouteGrouped(new CpuTensor(logits, [n, E]), new CpuTensor(bias, [E]), K, grouping, renormalize, S, cIds, cW);
          expect(Array.from(g.toHost(ids))).toEqual(Array.from(cIds.data));
          check(weights, cW.data, 1e-5);
          // The chosen experts lie in kept groups only, and the shared ones come last with weight 1.
          const h = g.toHost(ids), hw = g.toHost(weights);
          for (let t = 0; t < n; t++) {
            expect(new Set(Array.from(h.subarray(t * W, t * W + K), (e) => Math.floor(e / (E / G)))).size).toBeLessThanOrEqual(TG);
            for (let j = 0; j < S; j++) expect([h[t * W + K + j], hw[t * W + K + j]]).toEqual([E + j, 1]);
          }
        }
      }, timeoutMs);
    }

    test("multi-head latent attention's packed rows (mla_assemble) equal the CPU twin's exactly, value padding zeroed", () => {
      const n = Z.rows, s = { numHeads: 3, nope: 48, rope: 16, v: 40 }, D = s.nope + s.rope;
      const q = bf16Round(randn(n * s.numHeads * D)), kv = bf16Round(randn(n * s.numHeads * (s.nope + s.v))), kpe = bf16Round(randn(n * s.rope));
      const qkv = out([n, 3 * s.numHeads * D]);
      g.mlaAssemble(up(q, [n, s.numHeads * D]), up(kv, [n, s.numHeads * (s.nope + s.v)]), up(kpe, [n, s.rope]), qkv, s);
      const c = new CpuTensor(new Float32Array(n * 3 * s.numHeads * D).fill(NaN), [n, 3 * s.numHeads * D]);
      cpu.mlaAssemble(new CpuTensor(q, [n, s.numHeads * D]), new CpuTensor(kv, [n, s.numHeads * (s.nope + s.v)]), new CpuTensor(kpe, [n, s.rope]), c, s);
      check(qkv, c.data, 0);
    }, timeoutMs);

    test("the gated shared-expert add (Qwen2-MoE) matches the CPU twin", () => {
      const n = Z.rows, H = Z.hidden;
      const shared = randn(n * H), gate = randn(n), base = randn(n * H);
      const gOut = up(base, [n, H]);
      g.sigmoidGatedAdd(up(shared, [n, H]), up(gate, [n, 1]), gOut);
      const cOut = new CpuTensor(base.slice(), [n, H]);
      cpu.sigmoidGatedAdd(new CpuTensor(shared, [n, H]), new CpuTensor(gate, [n, 1]), cOut);
      check(gOut, cOut.data);
    }, timeoutMs);

    test("writeRows rewrites a weight's rows in place (bf16 and f32), after the queued work that reads them", () => {
      const rows = 6, W = Z.hidden, old = randn(rows * W), fresh = randn(2 * W);
      const w = up(old, [rows, W]), scale = g.fromHost(Float32Array.of(1, 2, 3), [3]);
      // A GEMM that reads the old rows is queued first: it must see them (the simulator's stream runs it as late as CUDA may).
      const x = randn(2 * W), before = out([2, rows]);
      g.linear(up(x, [2, W]), w, null, before);
      g.writeRows(w, 3, fresh);
      g.writeRows(scale, 1, Float32Array.of(7.5));
      const cw = new CpuTensor(old.slice(), [rows, W]);
      const cBefore = new CpuTensor(new Float32Array(2 * rows), [2, rows]);
      cpu.linear(new CpuTensor(x, [2, W]), cw, null, cBefore);
      check(before, cBefore.data);
      cpu.writeRows(cw, 3, fresh);
      check(w, cw.data);
      expect(Array.from(g.toHost(scale))).toEqual([1, 7.5, 3]);
      expect(() => g.writeRows(w, 5, fresh)).toThrow(/overrun/);
    }, timeoutMs);

    test("cuBLASLt GEMMs (every heuristic candidate, bf16 and f32 outputs) match the CPU and cublasGemmEx", () => {
      const n = Z.rows, H = Z.hidden, I = Z.intermediate;
      const xh = randn(n * H), Wh = randn(I * H, 1 / 32);
      const x = up(xh, [n, H]), W = up(Wh, [I, H]);
      const cY = new CpuTensor(new Float32Array(n * I), [n, I]);
      cpu.linear(new CpuTensor(xh, [n, H]), new CpuTensor(Wh, [I, H]), null, cY);
      const viaCublas = out([n, I], "f32");
      g.linear(x, W, null, viaCublas);
      const reference = g.toHost(viaCublas);
      const lt = g.cublasLt();
      for (const [dtype, yType] of [["act", 14], ["f32", 0]] as const) {
        const plan = lt.plan(n, H, I, yType);
        expect(plan.count).toBeGreaterThan(0);
        for (let c = 0; c < plan.count; c++) {
          const y = out([n, I], dtype);
          lt.linear(x.ptr, W.ptr, y.ptr, n, H, I, yType, c);
          check(y, cY.data);
          if (dtype === "f32") expect(relErr(g.toHost(y), reference)).toBeLessThanOrEqual(1e-5);
        }
        console.log(`cuBLASLt ${I}x${H} GEMM of ${n} rows (${dtype}) on the ${label}: ${plan.count} candidate algorithms, all match`);
      }
      // Through the backend's linear(), as the engine calls it.
      g.useGemm("cublaslt");
      try {
        const y = out([n, I]);
        g.linear(x, W, null, y);
        check(y, cY.data);
      } finally {
        g.useGemm("cublas");
      }
    }, timeoutMs);

    test("GEMV kernels for ≤ 8 rows (VBUN_GEMV=on), and the down projection fused with SiLU-and-mul, match the CPU and cuBLAS", () => {
      const H = Z.hidden, I = Z.intermediate;
      const Wh = randn(I * H, 1 / 32), Dh = randn(H * I, 1 / 32);
      const W = up(Wh, [I, H]), D = up(Dh, [H, I]);
      try {
        for (const n of [1, 2, 3, 8]) {
          const xh = randn(n * H), x = up(xh, [n, H]);
          const cY = new CpuTensor(new Float32Array(n * I), [n, I]);
          cpu.linear(new CpuTensor(xh, [n, H]), new CpuTensor(Wh, [I, H]), null, cY);
          g.useSmallBatchGemv(false);
          const viaCublas = out([n, I]);
          g.linear(x, W, null, viaCublas);
          g.useSmallBatchGemv(true);
          const viaGemv = out([n, I]);
          g.linear(x, W, null, viaGemv);
          check(viaGemv, cY.data);
          expect(relErr(g.toHost(viaGemv), g.toHost(viaCublas))).toBeLessThanOrEqual(1e-2);
          // SiLU-and-mul then down: fused for n ≤ 2, unfused (silu_mul + GEMV) above.
          const guh = randn(n * 2 * I), gu = up(guh, [n, 2 * I]);
          const cAct = new CpuTensor(new Float32Array(n * I), [n, I]), cDown = new CpuTensor(new Float32Array(n * H), [n, H]);
          cpu.siluMul(new CpuTensor(guh, [n, 2 * I]), cAct);
          cpu.linear(new CpuTensor(bf16Round(cAct.data), [n, I]), new CpuTensor(Dh, [H, I]), null, cDown);
          const down = out([n, H]);
          g.siluMulLinear(gu, D, out([n, I]), down);
          check(down, cDown.data);
        }
        // A long row (257 chunks of 8: two full rounds of 32 lanes × 4 chunks and a partial one), few outputs.
        const K = 2056, O = 24;
        const Lh = randn(O * K, 1 / 32), Lw = up(Lh, [O, K]);
        for (const n of [1, 2, 5]) {
          const xh = randn(n * K), y = out([n, O]);
          g.linear(up(xh, [n, K]), Lw, null, y);
          const cY = new CpuTensor(new Float32Array(n * O), [n, O]);
          cpu.linear(new CpuTensor(xh, [n, K]), new CpuTensor(Lh, [O, K]), null, cY);
          check(y, cY.data);
          if (n > 2) continue;
          const guh = randn(n * 2 * K), d = out([n, O]);
          g.siluMulLinear(up(guh, [n, 2 * K]), Lw, out([n, K]), d);
          const cAct = new CpuTensor(new Float32Array(n * K), [n, K]), cD = new CpuTensor(new Float32Array(n * O), [n, O]);
          cpu.siluMul(new CpuTensor(guh, [n, 2 * K]), cAct);
          cpu.linear(new CpuTensor(bf16Round(cAct.data), [n, K]), new CpuTensor(Lh, [O, K]), null, cD);
          check(d, cD.data);
        }
      } finally {
        g.useSmallBatchGemv(false);
      }
    }, timeoutMs);

    test("packed weights (GPTQ, AWQ, pack-quantized, FP8, INT8) stay packed: the packed GEMV for ≤ 8 rows and dequantization + cuBLAS beyond match the CPU twin", () => {
      const H = Z.hidden, O = Z.intermediate;
      // [bits, group size (0: one group per row), desc_act order, code]: GEMV by groups, by g_idx, per channel; FP8 (E4M3)
      // by blocks and per channel; groups smaller than a GEMV chunk and 2 bits take the dequantized path at every size.
      const cases = [[4, 32, false, "uint"], [4, 64, true, "uint"], [8, 0, false, "uint"], [8, 16, true, "uint"], [8, 32, false, "e4m3"], [8, 0, false, "e4m3"],
        [4, 16, false, "uint"], [2, 32, false, "uint"]] as const;
      for (const [bits, group, actOrder, code] of cases) {
        const m = randomPacked(rng, bits, O, H, group || H, actOrder, code), dense = dequantizeMatrix(m), denseValues = toFloat32(dense.bytes, "F32");
        const W = g.loadWeight([m], [O, H]);
        expect(W.packed).not.toBeNull();
        check(W, bf16Round(denseValues), 0); // toHost dequantizes on the GPU: exactly the CPU's values (every E4M3 pattern), rounded to bf16
        for (const n of [1, 3, 8, Z.rows + 8]) {
          const xh = randn(n * H), y = out([n, O]);
          g.linear(up(xh, [n, H]), W, null, y);
          const cY = new CpuTensor(new Float32Array(n * O), [n, O]);
          cpu.linear(new CpuTensor(xh, [n, H]), new CpuTensor(denseValues, [O, H]), null, cY);
          check(y, cY.data);
        }
      }
      // Parts stacked into one GEMM (q, k, v) stay packed when they share their groups; parts with orders of their own
      // (a checkpoint whose q and k saw different desc_act orders) load dequantized, with the same result.
      const a = randomPacked(rng, 4, 96, H, 32, true), b = { ...randomPacked(rng, 4, 64, H, 32, false), groupOf: a.groupOf };
      const c = randomPacked(rng, 4, 64, H, 32, true);
      for (const [parts, packed] of [[[a, b], true], [[a, c], false]] as const) {
        const W = g.loadWeight([...parts], [160, H]), n = 2, xh = randn(n * H), y = out([n, 160]);
        expect(W.packed !== null).toBe(packed);
        g.linear(up(xh, [n, H]), W, null, y);
        const stacked = new Float32Array(160 * H);
        stacked.set(toFloat32(dequantizeMatrix(parts[0]).bytes, "F32"));
        stacked.set(toFloat32(dequantizeMatrix(parts[1]).bytes, "F32"), 96 * H);
        const cY = new CpuTensor(new Float32Array(n * 160), [n, 160]);
        cpu.linear(new CpuTensor(xh, [n, H]), new CpuTensor(stacked, [160, H]), null, cY);
        check(y, cY.data);
      }
    }, timeoutMs);

    test("online FP8: loadWeight's quantize 'fp8' writes, on the GPU, exactly quantizeFp8Rows' E4M3 bytes and row scales (bf16, f16 and f32 parts, rows staged in chunks)", () => {
      const cols = Z.hidden;
      // Rows of zeros, with a NaN (skipped by amax, saturating), of powers of two from 1 down to 2^-29 (E4M3's subnormals
      // and zero after scaling), of ties between E4M3 values, and random rows of magnitudes from 10^-3 to 10^2.
      const row = (r: number, i: number) => r % 6 === 0 ? 0 : r % 6 === 1 ? (i === 3 ? NaN : (rng.next() - 0.5) * 6) : r % 6 === 2 ? (i % 2 ? -1 : 1) * 2 ** -(i % 30)
        : r % 6 === 3 ? (i === 0 ? 448 : (i % 2 ? -1 : 1) * (1 + (2 * (i % 8) + 1) / 16) * 2 ** ((i % 10) - 5)) : (rng.next() - 0.5) * 10 ** ((r % 6) - 3);
      const values = (rows: number) => Float32Array.from({ length: rows * cols }, (_, k) => row(Math.floor(k / cols), k % cols));
      const parts = ([[7, "BF16"], [5, "F16"], [9, "F32"]] as const).map(([rows, dtype], j) =>
        ({ name: `part${j}`, file: "test", dtype, shape: [rows, cols], bytes: fromFloat32(values(rows), dtype) }));
      const rows = 21, want = parts.map(quantizeFp8Rows);
      const bytesOf = (w: CudaTensor) => {
        const words = new Uint8Array(rows * cols), scales = new Float32Array(rows);
        g.driver.copyToHost(words, w.packed!.words);
        g.driver.copyToHost(scales, w.packed!.scales);
        return { words, scales };
      };
      const staging = g.fp8StagingBytes;
      try {
        // Two f32 rows (four bf16 ones) a chunk, then the whole weight at once.
        for (const bytes of [2 * 4 * cols, staging]) {
          g.fp8StagingBytes = bytes;
          const w = g.loadWeight(parts, [rows, cols], "linear", "fp8");
          expect(w.packed).toMatchObject({ bits: 8, code: "e4m3", zeros: null, groupOf: null, numGroups: 1, groupSize: cols });
          const got = bytesOf(w);
          let r = 0;
          for (const m of want) {
            expect([...got.words.subarray(r * cols, (r + m.shape[0]) * cols)]).toEqual([...new Uint8Array(m.words.buffer)]);
            expect([...got.scales.subarray(r, r + m.shape[0])]).toEqual([...m.scales]);
            r += m.shape[0];
          }
          // And the weight computes: linear() with it matches the CPU backend's own FP8 rounding of the same parts.
          const n = 3, xh = randn(n * cols), y = out([n, rows]), cY = new CpuTensor(new Float32Array(n * rows), [n, rows]);
          g.linear(up(xh, [n, cols]), w, null, y);
          // (check() also finds no NaN: the NaN weight became 448, as on the CPU.)
          cpu.linear(new CpuTensor(xh, [n, cols]), cpu.loadWeight(parts, [rows, cols], "linear", "fp8"), null, cY);
          check(y, cY.data);
        }
      } finally {
        g.fp8StagingBytes = staging;
      }
      // A weight it cannot take by rows (a width not a multiple of 4) loads as bf16.
      const odd = g.loadWeight([{ name: "odd", file: "test", dtype: "BF16", shape: [2, 6], bytes: fromFloat32(randn(12), "BF16") }], [2, 6], "linear", "fp8");
      expect(odd.packed).toBeNull();
    }, timeoutMs);

    test("with a wait check (tensor-parallel ranks), synchronize polls the stream (cuStreamQuery) and sees the same results", () => {
      const n = Z.rows, H = Z.hidden, I = Z.intermediate;
      const x = up(randn(n * H), [n, H]), W = up(randn(I * H, 1 / 32), [I, H]);
      const blocking = out([n, I]), polled = out([n, I]);
      g.linear(x, W, null, blocking);
      const want = g.toHost(blocking);
      let polls = 0;
      g.setWaitCheck(() => { polls++; });
      try {
        for (let i = 0; i < 4; i++) g.linear(x, W, null, polled);
        expect(g.toHost(polled)).toEqual(want);
        console.log(`polling synchronize on the ${label}: ${polls} polls before four ${I}x${H} GEMMs of ${n} rows finished`);
        // A check that throws ends the wait with its error once work is pending (a failed peer).
        g.setWaitCheck(() => { throw new Error("a peer failed"); });
        for (let i = 0; i < 64; i++) g.linear(x, W, null, polled);
        let threw = false;
        try { g.synchronize(); } catch (e) { threw = true; expect((e as Error).message).toBe("a peer failed"); }
        g.setWaitCheck(null);
        g.synchronize();
        console.log(`a throwing wait check ${threw ? "ended the wait" : "was not reached (the GEMMs had finished)"}`);
        expect(g.toHost(polled)).toEqual(want);
      } finally {
        g.setWaitCheck(null);
      }
    }, timeoutMs);

    type AttentionCase = readonly [string, Omit<AttentionShape, "scale"> & { noQkNorm?: boolean; sinks?: boolean; cohereNorms?: boolean }, "simple" | "mma"];
    const attentionCases: readonly AttentionCase[] = [
      ["Qwen3-0.6B heads (16/8 × 128)", { numHeads: 16, numKvHeads: 8, headDim: 128 }, "simple"],
      ["tiny heads (4/2 × 16)", { numHeads: 4, numKvHeads: 2, headDim: 16 }, "simple"],
      ["MHA 8/8 × 64", { numHeads: 8, numKvHeads: 8, headDim: 64 }, "simple"],
      ["Qwen3-0.6B heads, tensor-core prefill", { numHeads: 16, numKvHeads: 8, headDim: 128 }, "mma"],
      ["GQA 8/2 × 64, tensor-core prefill", { numHeads: 8, numKvHeads: 2, headDim: 64 }, "mma"],
      // Sliding windows shorter than the prefill, the cached prefix and the decode's context.
      ["tiny heads, sliding window 24", { numHeads: 4, numKvHeads: 2, headDim: 16, window: 24 }, "simple"],
      ["GQA 8/2 × 64, tensor-core prefill, sliding window 20", { numHeads: 8, numKvHeads: 2, headDim: 64, window: 20 }, "mma"],
      // Gemma 2's soft-capped scores (a cap the random scores exceed).
      ["tiny heads, soft-capped scores", { numHeads: 4, numKvHeads: 2, headDim: 16, softcap: 1.5 }, "simple"],
      ["GQA 8/2 × 64, tensor-core prefill, soft-capped scores and a sliding window", { numHeads: 8, numKvHeads: 2, headDim: 64, softcap: 1.5, window: 20 }, "mma"],
      // Partial RoPE (Phi-4-mini's ¾ of each head), with q/k norms (their values go through memory) and without.
      ["tiny heads, partial RoPE (12 of 16 dimensions)", { numHeads: 4, numKvHeads: 2, headDim: 16, rotaryDim: 12 }, "simple"],
      ["Phi-4-mini heads (24/8 × 128), partial RoPE (96 of 128), no q/k norms, tensor-core prefill", { numHeads: 24, numKvHeads: 8, headDim: 128, rotaryDim: 96, noQkNorm: true }, "mma"],
      // GPT-OSS's attention sinks (a logit per query head), on its sliding layers' window and without one.
      ["GPT-OSS heads (8/1 × 64), attention sinks, sliding window 20", { numHeads: 8, numKvHeads: 1, headDim: 64, window: 20, noQkNorm: true, sinks: true }, "simple"],
      ["GPT-OSS heads (8/1 × 64), attention sinks, tensor-core prefill", { numHeads: 8, numKvHeads: 1, headDim: 64, noQkNorm: true, sinks: true }, "mma"],
      ["GQA 8/2 × 64, attention sinks, tensor-core prefill, sliding window 20", { numHeads: 8, numKvHeads: 2, headDim: 64, window: 20, noQkNorm: true, sinks: true }, "mma"],
      // Command R+'s q/k norms: LayerNorms (centered) with a weight per head, on values of mean 2 (which they remove).
      ["GQA 8/2 × 64, q/k LayerNorms with a weight per head (Command R+)", { numHeads: 8, numKvHeads: 2, headDim: 64, cohereNorms: true }, "simple"],
    ];
    /** Attention sinks for H query heads: logits around the scores' own scale, so they take a real share of the weight. */
    const randomSinks = (H: number) => rng.normal(new Float32Array(H), 1.5);
    for (const [name, { noQkNorm, sinks: withSinks, cohereNorms, ...s }, kernel] of attentionCases) {
      test(`fused q/k norm + RoPE + KV store, and paged attention: ${name}`, () => {
        g.prefillKernel = kernel;
        const shape: AttentionShape = { ...s, scale: 1 / Math.sqrt(s.headDim) };
        const D = s.headDim, W = (s.numHeads + 2 * s.numKvHeads) * D, bs = 16, numBlocks = 64;
        // Step: seq 0 a fresh prefill, seq 1 decode at position 70, seq 2 a 5-token chunk after 40 cached.
        const L = Z.prefillLen;
        const plan = [{ start: 0, len: L, blocks: Array.from({ length: Math.ceil(L / bs) }, (_, i) => i) }, { start: 70, len: 1, blocks: [30, 31, 32, 33, 34] }, { start: 40, len: 5, blocks: [40, 41, 42] }];
        const ids: number[] = [], pos: number[] = [], slots: number[] = [], qs = [0], lens: number[] = [];
        const width = 19, tables = new Int32Array(3 * width);
        plan.forEach((p, i) => {
          for (let j = p.start; j < p.start + p.len; j++) { ids.push(1); pos.push(j); slots.push(p.blocks[Math.floor(j / bs)]! * bs + (j % bs)); }
          qs.push(pos.length); lens.push(p.start + p.len); tables.set(p.blocks, i * width);
        });
        const n = pos.length;
        const inputs: StepInputs = { tokenIds: Int32Array.from(ids), positions: Int32Array.from(pos), slotMapping: Int32Array.from(slots), queryStart: Int32Array.from(qs), seqLens: Int32Array.from(lens), blockTables: tables, maxBlocksPerSeq: width, logitsRows: new Int32Array(0) };
        const R = s.rotaryDim ?? D, cosT = new Float32Array(512 * R / 2), sinT = new Float32Array(512 * R / 2);
        for (let p = 0; p < 512; p++) for (let i = 0; i < R / 2; i++) { const a = p / 10000 ** ((2 * i) / R); cosT[p * R / 2 + i] = Math.cos(a); sinT[p * R / 2 + i] = Math.sin(a); }
        const qkv = cohereNorms ? bf16Round(randn(n * W).map((v) => v + 2)) : randn(n * W);
        const qnLen = cohereNorms ? s.numHeads * D : D, knLen = cohereNorms ? s.numKvHeads * D : D;
        const qn = bf16Round(randn(qnLen, 0.1).map((v) => v + 1)), kn = bf16Round(randn(knLen, 0.1).map((v) => v + 1));
        // The cache already holds the cached prefixes' K/V (random): same contents on both sides.
        const kc = randn(numBlocks * bs * s.numKvHeads * D), vc = randn(numBlocks * bs * s.numKvHeads * D);
        const step = g.uploadStep(inputs);
        const gq = up(qkv, [n, W]), gk = up(kc, [numBlocks, bs, s.numKvHeads, D]), gv = up(vc, [numBlocks, bs, s.numKvHeads, D]);
        g.qkNormRopeStoreKv(gq, step.positions, step.slotMapping, g.fromHost(cosT, [512, R / 2]), g.fromHost(sinT, [512, R / 2]), noQkNorm ? null : up(qn, [qnLen]), noQkNorm ? null : up(kn, [knLen]), 1e-6, shape, gk, gv, cohereNorms);
        const gOut = out([n, s.numHeads * D]);
        const sinks = withSinks ? randomSinks(s.numHeads) : null;
        g.pagedAttention(gq, gk, gv, step, bs, shape, gOut, sinks && g.fromHost(sinks, [s.numHeads]));
        const cq = new CpuTensor(qkv.slice(), [n, W]), ck = new CpuTensor(kc.slice(), [numBlocks, bs, s.numKvHeads, D]), cv = new CpuTensor(vc.slice(), [numBlocks, bs, s.numKvHeads, D]);
        const cstep = cpu.uploadStep(inputs);
        cpu.qkNormRopeStoreKv(cq, cstep.positions, cstep.slotMapping, new CpuTensor(cosT, [512, R / 2]), new CpuTensor(sinT, [512, R / 2]), noQkNorm ? null : new CpuTensor(qn, [qnLen]), noQkNorm ? null : new CpuTensor(kn, [knLen]), 1e-6, shape, ck, cv, cohereNorms);
        check(gq, cq.data);
        // The whole caches: the slots written, and the cached prefixes' slots left as they were.
        check(gk, ck.data);
        check(gv, cv.data, 0);
        const cOut = new CpuTensor(new Float32Array(n * s.numHeads * D), [n, s.numHeads * D]);
        // The CPU attends with the GPU's q/k/v, so the check isolates the attention kernel.
        cpu.pagedAttention(new CpuTensor(g.toHost(gq), [n, W]), new CpuTensor(g.toHost(gk), ck.shape), new CpuTensor(g.toHost(gv), cv.shape), cstep, bs, shape, cOut, sinks && new CpuTensor(sinks, [s.numHeads]));
        g.prefillKernel = "simple";
        check(gOut, cOut.data);
      }, timeoutMs);
    }

    const decodeCases = [
      ["Qwen3-0.6B heads (16/8 × 128), 16-thread groups", { numHeads: 16, numKvHeads: 8, headDim: 128 }, "groups"],
      ["GQA 8/1 × 128, 16-thread groups", { numHeads: 8, numKvHeads: 1, headDim: 128 }, "groups"],
      ["GQA 8/2 × 64, 16-thread groups", { numHeads: 8, numKvHeads: 2, headDim: 64 }, "groups"],
      ["MHA 2/2 × 256, 16-thread groups", { numHeads: 2, numKvHeads: 2, headDim: 256 }, "groups"],
      ["Qwen3-0.6B heads, simple kernel", { numHeads: 16, numKvHeads: 8, headDim: 128 }, "simple"],
      ["GQA 6/2 × 128 (no group kernel: simple)", { numHeads: 6, numKvHeads: 2, headDim: 128 }, "groups"],
      // A sliding window: the splits cover the window's keys (the longest contexts only their last 700 / 600).
      ["GQA 8/2 × 64, 16-thread groups, sliding window 700", { numHeads: 8, numKvHeads: 2, headDim: 64, window: 700 }, "groups"],
      ["Qwen3-0.6B heads, simple kernel, sliding window 600", { numHeads: 16, numKvHeads: 8, headDim: 128, window: 600 }, "simple"],
      ["GQA 8/2 × 64, 16-thread groups, soft-capped scores", { numHeads: 8, numKvHeads: 2, headDim: 64, softcap: 1.5 }, "groups"],
      ["tiny heads, simple kernel, soft-capped scores", { numHeads: 4, numKvHeads: 2, headDim: 16, softcap: 1.5 }, "simple"],
      // Attention sinks, added once over all splits by the combine.
      ["GPT-OSS heads (8/1 × 64), 16-thread groups, attention sinks", { numHeads: 8, numKvHeads: 1, headDim: 64, sinks: true }, "groups"],
      ["GQA 8/2 × 64, simple kernel, attention sinks, sliding window 700", { numHeads: 8, numKvHeads: 2, headDim: 64, window: 700, sinks: true }, "simple"],
    ] as const;
    for (const [name, { sinks: withSinks, ...shape }, kernel] of decodeCases as readonly (readonly [string, Omit<AttentionShape, "scale"> & { sinks?: boolean }, "groups" | "simple"])[]) {
      test(`split-KV decode attention (long contexts, several splits): ${name}`, () => {
        g.decodeKernel = kernel;
        const s: AttentionShape = { ...shape, scale: 1 / Math.sqrt(shape.headDim) };
        const D = s.headDim, Hq = s.numHeads, Hkv = s.numKvHeads, W = (Hq + 2 * Hkv) * D, bs = 16, width = Z.decodeTableWidth, lens = Z.decodeLens, n = lens.length;
        const numBlocks = n * width;
        // Each sequence's blocks in a shuffled order, so the block table matters.
        const order = Array.from({ length: numBlocks }, (_, i) => i);
        for (let i = numBlocks - 1; i > 0; i--) { const j = rng.int(0, i); [order[i], order[j]] = [order[j]!, order[i]!]; }
        const tables = Int32Array.from(order);
        const inputs: StepInputs = { tokenIds: new Int32Array(n), positions: Int32Array.from(lens, (l) => l - 1), slotMapping: new Int32Array(n).fill(-1),
          queryStart: Int32Array.from({ length: n + 1 }, (_, i) => i), seqLens: Int32Array.from(lens), blockTables: tables, maxBlocksPerSeq: width, logitsRows: new Int32Array(0) };
        const qkv = randn(n * W), kc = randn(numBlocks * bs * Hkv * D), vc = randn(numBlocks * bs * Hkv * D);
        const step = g.uploadStep(inputs);
        const gOut = out([n, Hq * D]);
        const sinks = withSinks ? randomSinks(Hq) : null;
        g.pagedAttention(up(qkv, [n, W]), up(kc, [numBlocks, bs, Hkv, D]), up(vc, [numBlocks, bs, Hkv, D]), step, bs, s, gOut, sinks && g.fromHost(sinks, [Hq]));
        g.decodeKernel = "groups";
        const cOut = new CpuTensor(new Float32Array(n * Hq * D), [n, Hq * D]);
        cpu.pagedAttention(new CpuTensor(qkv, [n, W]), new CpuTensor(kc, [numBlocks, bs, Hkv, D]), new CpuTensor(vc, [numBlocks, bs, Hkv, D]), cpu.uploadStep(inputs), bs, s, cOut, sinks && new CpuTensor(sinks, [Hq]));
        check(gOut, cOut.data);
      }, timeoutMs);
    }

    test("penalties, logit bias and banned tokens change the same logits as on the CPU (greedy tokens, raw logprobs)", () => {
      const n = 5, V = 500;
      const logitsHost = rng.normal(new Float32Array(n * V), 2);
      const top = (r: number) => argmaxRow(logitsHost, r, V);
      const b = emptySamplingBatch(n);
      for (let r = 0; r < n; r++) b.numLogprobs[r] = 3;
      // Each row's edit targets its own winner, so every edit must act for the CPU's choice to be matched.
      b.penalties[0] = { presence: 0, frequency: 0, repetition: 50, outputTokens: [], promptTokens: [top(0), 3, 3] };
      b.penalties[1] = { presence: 10, frequency: 0, repetition: 1, outputTokens: [top(1)], promptTokens: [] };
      b.penalties[2] = { presence: 0, frequency: 4, repetition: 1, outputTokens: [top(2), top(2), 9], promptTokens: [] };
      b.logitBias[3] = new Map([[top(3), -100], [11, 5]]);
      b.banned[4] = [top(4)];
      const t = g.empty([n, V], "f32");
      g.driver.copyToDevice(t.ptr, logitsHost);
      const a = g.sample(t, b);
      const c = new CpuBackend().sample(new CpuTensor(logitsHost.slice(), [n, V]), b);
      expect(Array.from(a.tokenIds)).toEqual(Array.from(c.tokenIds));
      for (let r = 0; r < n; r++) {
        expect(a.tokenIds[r]).not.toBe(top(r));
        expect(Math.abs(a.logprobs[r]!.logprob - c.logprobs[r]!.logprob)).toBeLessThan(1e-3);
        expect(a.logprobs[r]!.top.map((x) => x.tokenId)).toEqual(c.logprobs[r]!.top.map((x) => x.tokenId));
      }
    }, timeoutMs);

    test("structured outputs: grammar bitmasks leave the same tokens and logprobs as on the CPU (greedy, seeded, with edits)", () => {
      const n = 6, V = Z.samplingVocab, W = Math.ceil(V / 32);
      const logitsHost = rng.normal(new Float32Array(n * V), 2);
      const b = emptySamplingBatch(n);
      const masks: (Int32Array | null)[] = [];
      for (let r = 0; r < n; r++) {
        b.numLogprobs[r] = 4;
        if (r >= 3) { b.temperature[r] = 0.9; b.seed[r] = 77 + r; b.step[r] = r; }
        // Row 0: a few tokens, never the row's winner; 1: all but one word allowed; 2: none (free text); 3-5: random sparse.
        const m = new Int32Array(W);
        if (r === 0) for (const t of [3, 40, V - 1]) m[t >> 5]! |= 1 << (t & 31);
        else if (r === 1) { m.fill(-1); m[argmaxRow(logitsHost, r, V) >> 5] = 0; }
        else for (let w = 0; w < W; w++) m[w] = rng.next() < 0.3 ? (rng.nextU32() | 0) : 0;
        masks.push(r === 2 ? null : m);
        b.allowedTokens[r] = masks[r]!;
      }
      b.logitBias[4] = new Map([[argmaxRow(logitsHost, 4, V), 50]]); // an edit on a token the mask may forbid: stays forbidden
      const t = g.empty([n, V], "f32");
      g.driver.copyToDevice(t.ptr, logitsHost);
      const a = g.sample(t, b);
      const c = new CpuBackend().sample(new CpuTensor(logitsHost.slice(), [n, V]), b);
      // Greedy rows: the CPU's tokens. Seeded rows draw differently (Gumbel-max on the GPU): allowed tokens only.
      expect(Array.from(a.tokenIds.subarray(0, 3))).toEqual(Array.from(c.tokenIds.subarray(0, 3)));
      const allowed = (r: number, tok: number) => !masks[r] || ((masks[r]![tok >> 5]! >>> (tok & 31)) & 1) === 1;
      for (let r = 0; r < n; r++) {
        const tok = a.tokenIds[r]!;
        expect(allowed(r, tok)).toBe(true);
        // Logprobs are over the allowed tokens (as vLLM): the top ones are allowed, and match the CPU's.
        expect(a.logprobs[r]!.top.every((x) => allowed(r, x.tokenId) || x.logprob === -Infinity)).toBe(true);
        expect(a.logprobs[r]!.top.map((x) => x.tokenId)).toEqual(c.logprobs[r]!.top.map((x) => x.tokenId));
        let max = -Infinity, sum = 0;
        for (let i = 0; i < V; i++) if (allowed(r, i)) max = Math.max(max, logitsHost[r * V + i]!);
        for (let i = 0; i < V; i++) if (allowed(r, i)) sum += Math.exp(logitsHost[r * V + i]! - max);
        expect(Math.abs(a.logprobs[r]!.logprob - (logitsHost[r * V + tok]! - max - Math.log(sum)))).toBeLessThan(1e-3);
      }
      expect(a.tokenIds[1]).not.toBe(argmaxRow(logitsHost, 1, V));
    }, timeoutMs);

    test("structured outputs end to end: a choice, a regex and a JSON schema give the CPU backend's greedy tokens", async () => {
      const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
      const params = [
        { temperature: 0, max_tokens: Z.engineTokens, structured_outputs: { choice: ["alpha", "beta", "gamma delta"] } },
        { temperature: 0, max_tokens: Z.engineTokens, structured_outputs: { regex: "[a-f]{2,3}-[0-9]" } },
        { temperature: 0, max_tokens: Z.engineTokens, logprobs: 2, structured_outputs: { json: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"] }, disable_any_whitespace: true } },
      ];
      const onGpu = await gpuLLM({ model, device: "cuda", maxModelLen: 256, maxNumSeqs: 8, cuda: target.provider, log: () => {} }).generateAsync(prompts, params, { useTqdm: false });
      const onCpu = await new LLM({ model, device: "cpu", maxModelLen: 256, log: () => {} }).generateAsync(prompts, params, { useTqdm: false });
      const texts = onGpu.map((o) => o.outputs[0]!.text);
      expect(["alpha", "beta", "gamma delta"].some((c) => c.startsWith(texts[0]!))).toBe(true);
      expect(/^[a-f]{0,3}(-[0-9]?)?$/.test(texts[1]!)).toBe(true);
      expect(texts[2]!.startsWith("{")).toBe(true);
      let same = 0;
      onGpu.forEach((o, i) => { if (o.outputs[0]!.tokenIds.join() === onCpu[i]!.outputs[0]!.tokenIds.join()) same++; });
      expect(same).toBeGreaterThanOrEqual(prompts.length - 1);
    }, timeoutMs);

    test("a queued sampling's results do not depend on its batch after the call (the sampler rebuilds it for the next step)", () => {
      const n = 4, V = 300;
      const logitsHost = rng.normal(new Float32Array(n * V), 2);
      const t = g.empty([n, V], "f32");
      g.driver.copyToDevice(t.ptr, logitsHost);
      const b = emptySamplingBatch(n);
      b.numLogprobs.set([3, -1, 5, 0]);
      const expected = g.sample(t, b);
      const pending = g.sampleAsync(t, b);
      b.numLogprobs.fill(-1); // the next step's batch, in the same object
      b.temperature.fill(1);
      const got = pending.wait();
      expect(Array.from(got.tokenIds)).toEqual(Array.from(expected.tokenIds));
      expect(got.logprobs.map((l) => l?.top.length ?? null)).toEqual([3, null, 5, 0]);
      expect(got.logprobs).toEqual(expected.logprobs);
    }, timeoutMs);

    test("async scheduling: penalties of a pending token (the previous sampling's, still on the GPU) act as on the CPU", () => {
      const n = 7, V = 500, cpu = new CpuBackend();
      const logitsHost = rng.normal(new Float32Array(n * V), 2);
      const up = (h: Float32Array) => { const t = g.empty([n, V], "f32"); g.driver.copyToDevice(t.ptr, h); return t; };
      // The previous step: greedy rows whose winners become this step's pending tokens (in reversed row order).
      const prev = emptySamplingBatch(n);
      const prevIds = g.sample(up(logitsHost), prev).tokenIds;
      expect(Array.from(cpu.sample(new CpuTensor(logitsHost.slice(), [n, V]), prev).tokenIds)).toEqual(Array.from(prevIds));
      // This step: each row's winner is made the pending token, so only its pending penalty can dethrone it.
      const next = logitsHost.slice();
      const pending = (r: number) => prevIds[n - 1 - r]!;
      // (Row 2's by 3: the host's presence penalty of 2 for the known output must leave it winning.)
      for (let r = 0; r < n; r++) next[r * V + pending(r)] = Math.max(...next.subarray(r * V, (r + 1) * V)) + (r === 2 ? 3 : 0.5);
      const b = emptySamplingBatch(n);
      for (let r = 0; r < n; r++) b.numLogprobs[r] = 2;
      const pen = (r: number, presence: number, frequency: number, repetition: number, outputTokens: number[], promptTokens: number[]) =>
        (b.penalties[r] = { presence, frequency, repetition, outputTokens, promptTokens, pendingRow: n - 1 - r });
      pen(0, 2, 0, 1, [], []); // presence: the pending token is new among the outputs
      pen(1, 0, 2, 1, [pending(1)], []); // frequency: one more occurrence of a known output
      pen(2, 2, 0, 1, [pending(2), 7], []); // presence already counted: nothing more (the winner stays)
      pen(3, 0, 0, 30, [], [4, 5]); // repetition: not yet applied to it
      pen(4, 0, 0, 30, [], [pending(4), 4]); // repetition already applied (a prompt token): not twice
      pen(5, 1, 1, 1, [9, 9], [8]); // a row whose pending token has none of its history
      b.banned[5] = [pending(5)]; // … but is banned: stays banned
      pen(6, 0.1, 0, 1, [], []); // a small penalty: the pending token still wins, and its logprob is the raw logit's
      const a = g.sample(up(next), b), c = cpu.sample(new CpuTensor(next.slice(), [n, V]), b);
      expect(Array.from(a.tokenIds)).toEqual(Array.from(c.tokenIds));
      expect([0, 1, 3, 5].every((r) => a.tokenIds[r] !== pending(r))).toBe(true);
      expect(a.tokenIds[2]).toBe(pending(2));
      expect(a.tokenIds[6]).toBe(pending(6));
      for (let r = 0; r < n; r++) expect(Math.abs(a.logprobs[r]!.logprob - c.logprobs[r]!.logprob)).toBeLessThan(1e-3);
    }, timeoutMs);

    for (const c of SAMPLING_CASES) {
      test(`seeded sampling, ${c.name}: ${Z.samplingDraws} draws stay in the filtered set and follow its probabilities`, () => {
        const V = 64, N = Z.samplingDraws;
        const row = new SeededRandom(31).normal(new Float32Array(V), 2);
        const logits = new Float32Array(N * V);
        for (let r = 0; r < N; r++) logits.set(row, r * V);
        const b = emptySamplingBatch(N);
        for (let r = 0; r < N; r++) { b.temperature[r] = c.temperature; b.topK[r] = c.topK; b.topP[r] = c.topP; b.minP[r] = c.minP; b.seed[r] = 5000 + r; b.stream[r] = 0; b.step[r] = 0; b.numLogprobs[r] = -1; }
        const t = g.empty([N, V], "f32");
        g.driver.copyToDevice(t.ptr, logits);
        expect(checkDraws(g.sample(t, b).tokenIds, filteredDistribution(row, c))).toBeNull();
      }, timeoutMs);
    }

    test("decode of a full batch (one split per sequence: the group kernel writes the output itself), without and with attention sinks", () => {
      const s: AttentionShape = { numHeads: 16, numKvHeads: 8, headDim: 128, scale: 1 / Math.sqrt(128) };
      const D = 128, W = 32 * D, bs = 16, width = 20, n = 48;
      const lens = Array.from({ length: n }, () => rng.int(1, width * bs));
      const numBlocks = n * width;
      const inputs: StepInputs = { tokenIds: new Int32Array(n), positions: Int32Array.from(lens, (l) => l - 1), slotMapping: new Int32Array(n).fill(-1),
        queryStart: Int32Array.from({ length: n + 1 }, (_, i) => i), seqLens: Int32Array.from(lens), blockTables: Int32Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i), maxBlocksPerSeq: width, logitsRows: new Int32Array(0) };
      const qkv = randn(n * W), kc = randn(numBlocks * bs * 8 * D), vc = randn(numBlocks * bs * 8 * D);
      const gOut = out([n, 16 * D]), gq = up(qkv, [n, W]), gk = up(kc, [numBlocks, bs, 8, D]), gv = up(vc, [numBlocks, bs, 8, D]);
      const step = g.uploadStep(inputs);
      for (const sinks of [null, randomSinks(16)]) {
        g.poison(gOut);
        g.enableProfiling();
        g.kernelTimes(true);
        g.pagedAttention(gq, gk, gv, step, bs, s, gOut, sinks && g.fromHost(sinks, [16]));
        const launched = g.kernelTimes(true).map((k) => k.name);
        g.enableProfiling(false);
        expect(launched).toEqual(["paged_decode_d128_g2_bf16"]);
        const cOut = new CpuTensor(new Float32Array(n * 16 * D), [n, 16 * D]);
        cpu.pagedAttention(new CpuTensor(qkv, [n, W]), new CpuTensor(kc, [numBlocks, bs, 8, D]), new CpuTensor(vc, [numBlocks, bs, 8, D]), cpu.uploadStep(inputs), bs, s, cOut, sinks && new CpuTensor(sinks, [16]));
        check(gOut, cOut.data);
      }
    }, timeoutMs);

    test("sampling: greedy equals argmax, top_k=1 equals greedy, seeded draws repeat, logprobs match", () => {
      const n = 6, V = Z.samplingVocab;
      const logitsHost = rng.normal(new Float32Array(n * V), 3);
      const upload = () => { const t = g.empty([n, V], "f32"); g.driver.copyToDevice(t.ptr, logitsHost); return t; };
      const b = emptySamplingBatch(n);
      for (let r = 0; r < n; r++) { b.temperature[r] = r < 2 ? 0 : 0.8; b.topK[r] = r === 2 ? 1 : r === 3 ? 50 : 0; b.topP[r] = r === 4 ? 0.9 : 1; b.minP[r] = r === 5 ? 0.1 : 0; b.seed[r] = 1000 + r; b.stream[r] = 0; b.step[r] = 3; b.numLogprobs[r] = 5; }
      b.logitBias[1] = new Map([[7, 100]]);
      const a = g.sample(upload(), b), again = g.sample(upload(), b);
      const c = new CpuBackend().sample(new CpuTensor(logitsHost.slice(), [n, V]), b);
      expect(a.tokenIds[0]).toBe(c.tokenIds[0]!);
      expect(a.tokenIds[1]).toBe(7);
      expect(a.tokenIds[2]).toBe(argmaxRow(logitsHost, 2, V));
      expect(Array.from(again.tokenIds)).toEqual(Array.from(a.tokenIds));
      for (let r = 0; r < n; r++) {
        expect(a.logprobs[r]!.top.map((t) => t.tokenId)).toEqual(c.logprobs[r]!.top.map((t) => t.tokenId));
        expect(Math.abs(a.logprobs[r]!.top[0]!.logprob - c.logprobs[r]!.top[0]!.logprob)).toBeLessThan(1e-3);
      }
    }, timeoutMs);
  });

  describe.skipIf(skip)(`the engine on the ${label}`, () => {
    test("greedy tokens and logits match the CPU backend on tiny models", () => {
      for (const opts of [FAST_MODEL, { arch: "qwen3" as const, seed: 5, vocabSize: 4096 }, { arch: "qwen2" as const, seed: 6, vocabSize: 4096 }, ...MORE_MODELS]) {
        const model = tinyModel(opts);
        const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
        const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true, logprobs: 1 };
        // Each engine gives its GPU memory back before the next model's starts (afterEach closes it again: a no-op).
        const gpu = gpuLLM({ model, device: "cuda", maxModelLen: 256, maxNumSeqs: 8, cuda: target.provider, log: () => {} });
        const onGpu = gpu.generate(prompts, params, { useTqdm: false });
        gpu.close();
        const onCpu = new LLM({ model, device: "cpu", maxModelLen: 256, log: () => {} }).generate(prompts, params, { useTqdm: false });
        let same = 0;
        onGpu.forEach((o, i) => {
          if (o.outputs[0]!.tokenIds.join() === onCpu[i]!.outputs[0]!.tokenIds.join()) same++;
          expect(Math.abs(o.outputs[0]!.logprobs![0]!.logprob - onCpu[i]!.outputs[0]!.logprobs![0]!.logprob)).toBeLessThan(0.1);
        });
        expect(same).toBeGreaterThanOrEqual(prompts.length - 1);
      }
    }, timeoutMs);

    test("--quantization fp8 quantizes experts as well (GPT-OSS's bf16 experts, Qwen3-MoE's): quantizeFp8Rows' bytes and scales on the GPU; the FP8 model runs close to the CPU backend's", () => {
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
      const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true, logprobs: 1 };
      // GPT-OSS: q/k/v and o, and w13 / w2 of the experts, on each of 4 layers; Qwen3-MoE: those of 3 layers, gate/up and down of its dense one.
      const cases: [TinyModelOptions, number][] = [[{ arch: "gpt_oss", seed: 30, vocabSize: 4096, numLayers: 4 }, 16], [{ arch: "qwen3_moe", seed: 7, vocabSize: 4096, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1] }, 12]];
      for (const [opts, packed] of cases) {
        const model = tinyModel(opts);
        const gpu = gpuLLM({ model, device: "cuda", quantization: "fp8", maxModelLen: 256, maxNumSeqs: 8, cuda: target.provider, log: () => {} });
        const g2 = gpu.engine.runner.backend as unknown as CudaBackend;
        expect(g2.packedWeights.count).toBe(packed);
        if (opts.arch === "gpt_oss") {
          // Layer 0's gate/up experts as GPT-OSS's loader cuts them (gate and up rows of each expert), quantized by rows.
          const cfg = loadModelConfig(model), E = cfg.moe!.numExperts, I = cfg.moe!.intermediateSize, H = cfg.hiddenSize;
          const want = gptOssExpertParts(new Checkpoint(model), "model.layers.0.mlp.", E, H, I, 0, 1, I).w13.map(quantizeFp8Rows);
          const w13 = (gpu.engine.runner.model as unknown as { layers: { moe: { experts: { w13: CudaTensor } } }[] }).layers[0]!.moe.experts.w13;
          const words = new Uint8Array(E * 2 * I * H), scales = new Float32Array(E * 2 * I);
          g2.driver.copyToHost(words, w13.packed!.words);
          g2.driver.copyToHost(scales, w13.packed!.scales);
          expect([...words]).toEqual(want.flatMap((m) => [...new Uint8Array(m.words.buffer)]));
          expect([...scales]).toEqual(want.flatMap((m) => [...m.scales]));
        }
        const onGpu = gpu.generate(prompts, params, { useTqdm: false });
        gpu.close();
        // (Greedy tokens of these near-flat random models follow small differences — the GPU rounds each dequantized
        // weight to bf16 where the CPU multiplies in f32 — so the first token's log-probability is what is compared.)
        const onCpu = new LLM({ model, device: "cpu", quantization: "fp8", maxModelLen: 256, log: () => {} }).generate(prompts, params, { useTqdm: false });
        onGpu.forEach((o, i) => {
          expect(o.outputs[0]!.tokenIds.length).toBe(Z.engineTokens);
          expect(Math.abs(o.outputs[0]!.logprobs![0]!.logprob - onCpu[i]!.outputs[0]!.logprobs![0]!.logprob)).toBeLessThan(0.1);
        });
      }
    }, timeoutMs);

    // The loaders' layouts (AWQ's, pack-quantized's, INT8's …) are checked exactly on the CPU (test/packed-checkpoint.test.ts,
    // test/quantized-checkpoint.test.ts), which reads them into the same packed layout; here two of them run end to end.
    test("packed checkpoints (GPTQ 4-bit with desc_act, FP8 blocks, GPTQ experts, --quantization fp8) run packed: the tokens of their dequantized weights, decode graphs on", () => {
      const base = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const gptq: Scheme = { name: "gptq", format: "gptq", bits: 4, group: 32, actOrder: true, config: { quant_method: "gptq", bits: 4, group_size: 32, desc_act: true, checkpoint_format: "gptq" }, zerosMinusOne: true };
      // A mixture of experts (3 layers, the middle one dense): experts in groups of 16 by position, read by moe_gemm_packed_bf16.
      const moe = tinyModel({ arch: "qwen3_moe", seed: 7, vocabSize: 4096, numLayers: 3, numExperts: 8, topK: 2, mlpOnlyLayers: [1] });
      const gptqExperts: Scheme = { name: "gptq-moe", format: "gptq", bits: 4, group: 16, experts: true, config: { quant_method: "gptq", bits: 4, group_size: 16, desc_act: false, checkpoint_format: "gptq_v2" } };
      const schemes: { name: string; packed: number; smaller: number; pair: () => { quantized: string; reference: string }; options?: { quantization: string } }[] = [
        { name: "gptq", packed: 8, smaller: 2.5, pair: () => quantizedPair(base, gptq) },
        // vLLM's online FP8: the bf16 checkpoint's projections quantized as they load (E4M3, a scale per row).
        { name: "online-fp8", packed: 8, smaller: 1.8, pair: () => ({ quantized: base, reference: onlineFp8Reference(base) }), options: { quantization: "fp8" } },
        // attention (qkv, o) × 3, the dense layer's gate/up and down, each sparse layer's w13 and w2.
        { name: "gptq-moe", packed: 12, smaller: 1.9, pair: () => quantizedPair(moe, gptqExperts) },
        // Qwen3-FP8's layout: E4M3 with a scale per block (32 × 32 here, 128 × 128 there).
        { name: "fp8", packed: 8, smaller: 1.7, pair: () => scaledPair(base, { name: "fp8-blocks", dtype: "F8_E4M3", layout: { kind: "block", rows: 32, cols: 32 }, scaleSuffix: "_scale_inv", config: { quant_method: "fp8", fmt: "e4m3", weight_block_size: [32, 32] } }) },
      ];
      const rng = new SeededRandom(9);
      // Twelve sequences: a decode step of 12 (dequantization + cuBLAS), then two of 8 (the packed GEMV), all from graphs.
      const prompts = Array.from({ length: 12 }, (_, i) => Array.from({ length: 3 + i }, () => rng.int(0, 4095)));
      const params = prompts.map((_, i) => ({ temperature: 0, max_tokens: i < 4 ? 2 : 4, ignore_eos: true, logprobs: 2 }));
      for (const scheme of schemes) {
        const { quantized, reference } = scheme.pair();
        const gpu = gpuLLM({ model: quantized, device: "cuda", maxModelLen: 128, maxNumSeqs: 16, maxNumBatchedTokens: 256, cuda: target.provider, log: () => {}, ...scheme.options });
        const backend = gpu.engine.runner.backend as unknown as CudaBackend;
        // Every projection (qkv, o, gate/up, down) and expert stack stays packed.
        expect(backend.packedWeights.count).toBe(scheme.packed);
        // Words plus f32 scales and zeros per group (FP8: no zeros): 2.67× (4 bits, groups of 32), 2× (groups of 16) and
        // 1.78× (FP8, blocks of 32) less than bf16 here.
        expect(backend.packedWeights.bytes).toBeLessThan(backend.packedWeights.bf16Bytes / scheme.smaller);
        const packed = gpu.generate(prompts, params, { useTqdm: false });
        expect(gpu.engine.runner.graphSteps).toBeGreaterThan(0);
        gpu.close();
        // The same model with scale · (q − zero) as plain weights, on the GPU too.
        // (Eager: graph replays give exactly the eager outputs — "decode CUDA graphs" below — and capturing costs the simulator.)
        const plain = gpuLLM({ model: reference, device: "cuda", maxModelLen: 128, maxNumSeqs: 16, maxNumBatchedTokens: 256, enforceEager: true, cuda: target.provider, log: () => {} });
        const want = plain.generate(prompts, params, { useTqdm: false });
        plain.close();
        let same = 0;
        packed.forEach((o, i) => {
          const got = o.outputs[0]!, ref = want[i]!.outputs[0]!;
          // The prefill of all twelve ran on the dequantized bf16 weights, the plain model's: the same logits, bit for bit.
          expect(got.logprobs![0]!.logprob).toBe(ref.logprobs![0]!.logprob);
          const k = got.tokenIds.findIndex((t, j) => t !== ref.tokenIds[j]);
          if (k < 0) { same++; return; }
          // Decode at ≤ 8 rows sums in another order (the packed GEMV): a token may flip only where two were all but tied.
          const top = got.logprobs![k]!.top, other = top.find((e) => e.tokenId === ref.tokenIds[k]);
          expect(other).toBeDefined();
          expect(top[0]!.logprob - other!.logprob).toBeLessThan(0.02);
        });
        console.log(`${scheme.name}: ${same} of ${prompts.length} sequences token-identical to the dequantized model's on the ${label}`);
        // (On this random model's flat logits such ties are common: the differences seen were 0.002–0.012 nats apart.)
        expect(same).toBeGreaterThanOrEqual(Math.ceil((prompts.length * 3) / 4));
      }
    }, timeoutMs);

    test("sliding-window layers in KV groups of their own (the hybrid layout) give the tokens of one table for all layers, decode graphs on", () => {
      // Gemma 2: alternating sliding (window 4) and global layers, so 2 groups; 4-token blocks leave the window quickly.
      const model = tinyModel({ arch: "gemma2", seed: 11, vocabSize: 4096, numLayers: 4 });
      const rng = new SeededRandom(8);
      const shared = Array.from({ length: 40 }, () => rng.int(0, 4095));
      const prompts = [[...shared, 1, 2], [...shared, 3], Array.from({ length: 30 }, () => rng.int(0, 4095))];
      const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true };
      const run = (o: { disableHybridKvCacheManager?: boolean }) => {
        const llm = gpuLLM({ model, device: "cuda", maxModelLen: 128, maxNumSeqs: 4, blockSize: 4, maxNumBatchedTokens: 32, cuda: target.provider, log: () => {}, ...o });
        try {
          // Twice: the second round takes the shared prefix from the cache (in both groups).
          const out = [0, 1].map(() => llm.generate(prompts, params, { useTqdm: false }).map((r) => r.outputs[0]!.tokenIds.join()));
          const bm = llm.engine.blockManager;
          return { out, groups: bm.numGroups, hits: bm.prefixCacheHits, graphSteps: llm.engine.runner.graphSteps, free: bm.numFreeBlocks === bm.numUsableBlocks };
        } finally {
          llm.close();
        }
      };
      const whole = run({ disableHybridKvCacheManager: true }), hybrid = run({});
      expect([whole.groups, hybrid.groups]).toEqual([1, 2]);
      expect(hybrid.graphSteps).toBeGreaterThan(0);
      expect(hybrid.hits).toBeGreaterThan(0);
      expect(hybrid.free).toBe(true);
      // The same keys are read, from other blocks: the same arithmetic, so the same tokens (bf16 included).
      expect(hybrid.out).toEqual(whole.out);
      expect(hybrid.out[1]).toEqual(hybrid.out[0]!);
    }, timeoutMs);

    // cuBLASLt: plans made by the warm-up before each graph capture. GEMV: the 1/2/4/8 buckets' graphs hold GEMV kernels.
    for (const [env, value, what, check] of [
      ["VBUN_GEMM", "cublaslt", "cuBLASLt", (b: CudaBackend) => b.info.gemm === "cublaslt"],
      ["VBUN_GEMV", "on", "the GEMV kernels", (b: CudaBackend) => b.info.smallBatchGemv],
    ] as const) {
      test(`with ${env}=${value} (${what}) the greedy tokens are the defaults' (decode graphs on)`, () => {
        const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
        const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [100, 200, 300, 400, 250, 12]];
        const params = { temperature: 0, max_tokens: Z.engineTokens, ignore_eos: true };
        const run = () => gpuLLM({ model, device: "cuda", maxModelLen: 128, maxNumSeqs: 4, cuda: target.provider, log: () => {} });
        const viaDefault = run().generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
        process.env[env] = value;
        let llm: LLM;
        try {
          llm = run();
        } finally {
          delete process.env[env];
        }
        expect(check(llm.engine.runner.backend as unknown as CudaBackend)).toBe(true);
        const viaVariant = llm.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds.join());
        expect(llm.engine.runner.graphSteps).toBeGreaterThan(0);
        const same = viaVariant.filter((t, i) => t === viaDefault[i]).length;
        console.log(`${what} vs the default on the ${label}: ${same} of ${prompts.length} prompts token-identical over ${Z.engineTokens} tokens`);
        // Another summation order may round bf16 activations differently: a near-tie may flip one prompt on a GPU.
        expect(same).toBeGreaterThanOrEqual(prompts.length - 1);
      }, timeoutMs);
    }

    test("close() gives the GPU memory back (weights, KV cache, buffers, graphs), and the KV cache is capped at 4× what max_num_seqs can use", () => {
      const probe = target.provider.open(0); // reads the device's free memory
      try {
        const before = probe.driver.memInfo().free;
        const llm = gpuLLM({ model: tinyModel(FAST_MODEL), device: "cuda", maxModelLen: 64, maxNumSeqs: 4, cuda: target.provider, log: () => {} });
        expect(llm.engine.info.numBlocks).toBe(4 * 4 * Math.ceil(64 / 16));
        llm.generate([[1, 2, 3], [4, 5, 6, 7]], { temperature: 0, max_tokens: 6, ignore_eos: true }, { useTqdm: false });
        expect(probe.driver.memInfo().free).toBeLessThan(before);
        llm.close();
        const after = probe.driver.memInfo().free;
        console.log(`GPU memory on the ${label}: ${((before - after) / 2 ** 20).toFixed(1)} MiB not given back after close()`);
        expect(after).toBeGreaterThanOrEqual(before - target.memorySlackBytes);
      } finally {
        probe.close();
      }
    }, timeoutMs);

    test("kernel profiling times every kernel and GEMM a step runs, and graph replays as a whole", () => {
      const model = tinyModel(FAST_MODEL);
      const run = (enforceEager: boolean) => {
        const llm = gpuLLM({ model, device: "cuda", maxModelLen: 64, maxNumSeqs: 4, enforceEager, profileKernels: true, cuda: target.provider, log: () => {} });
        const gpu = llm.engine.runner.backend as unknown as CudaBackend;
        gpu.kernelTimes(true); // drop the start-up warm-up
        llm.generate([[1, 2, 3, 4], [5, 6]], { temperature: 0, max_tokens: 4, ignore_eos: true }, { useTqdm: false });
        return gpu.kernelTimes();
      };
      const eager = run(true), names = eager.map((k) => k.name);
      for (const k of ["embedding_bf16", "rmsnorm_bf16", "add_rmsnorm_bf16", "qk_norm_rope_store_bf16", "paged_attention_bf16", "paged_attention_split_bf16", "silu_mul_bf16", "gather_rows_bf16", "sample_f32"]) expect(names).toContain(k);
      expect(names.filter((n) => n.startsWith("gemm ")).length).toBe(5); // qkv, o, gate/up, down, lm head
      // 2 layers × 4 GEMMs per step + the LM head, over 1 prefill step and 3 decode steps.
      expect(eager.filter((k) => k.name.startsWith("gemm ")).reduce((a, k) => a + k.calls, 0)).toBe(4 * (2 * 4 + 1));
      for (const k of eager) expect(Number.isFinite(k.ms) && k.ms >= 0).toBe(true);
      const graphs = run(false).map((k) => k.name);
      expect(graphs.some((n) => /^decode graph \(\d+ seqs\)$/.test(n))).toBe(true);
    }, timeoutMs);

    test("a prompt prefilled in chunks (steps that sample nothing) gives the CPU backend's tokens", () => {
      const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const rng = new SeededRandom(3);
      const prompt = Array.from({ length: 100 }, () => rng.int(0, 4095));
      const params = { temperature: 0, max_tokens: 4, ignore_eos: true };
      const opts = { model, maxModelLen: 256, maxNumSeqs: 4, maxNumBatchedTokens: 24, log: () => {} };
      const onGpu = gpuLLM({ ...opts, device: "cuda", cuda: target.provider }).generate([prompt], params, { useTqdm: false });
      const onCpu = new LLM({ ...opts, device: "cpu" }).generate([prompt], params, { useTqdm: false });
      expect(onGpu[0]!.outputs[0]!.tokenIds).toEqual(onCpu[0]!.outputs[0]!.tokenIds);
    }, timeoutMs);
  });


  describe.skipIf(skip)(`decode CUDA graphs on the ${label}`, () => {
    test(`graph replay gives exactly the eager outputs (greedy, ${Z.graphSeqs} sequences, ${Z.graphSteps} steps)`, () => {
      // head_dim 64: the tensor-core prefill and the group decode kernel (with split counts that vary by bucket).
      const model = tinyModel({ arch: "qwen3", seed: 8, vocabSize: 4096, hiddenSize: 128, intermediateSize: 256, numHeads: 4, numKvHeads: 2, headDim: 64 });
      const rng = new SeededRandom(64);
      const prompts = Array.from({ length: Z.graphSeqs }, () => Array.from({ length: rng.int(4, 40) }, () => rng.int(0, 4095)));
      const params = { temperature: 0, max_tokens: Z.graphSteps, ignore_eos: true };
      const common = { model, device: "cuda" as const, maxModelLen: 256, maxNumSeqs: Z.graphSeqs, cuda: target.provider, log: () => {} };
      const eager = gpuLLM({ ...common, enforceEager: true });
      const graphs = gpuLLM(common);
      const a = eager.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
      const b = graphs.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
      expect(eager.engine.runner.graphSteps).toBe(0);
      expect(graphs.engine.runner.graphSteps).toBeGreaterThan(Z.graphSteps - 4);
      expect(graphs.engine.info.graphSeconds).not.toBeNull();
      expect(b).toEqual(a);
    }, timeoutMs);

    test("async scheduling under preemption (blocks of preempted sequences reused while their last step runs) gives the synchronous engine's tokens", () => {
      const model = tinyModel(FAST_MODEL);
      const rng = new SeededRandom(66);
      const prompts = Array.from({ length: 6 }, () => Array.from({ length: rng.int(10, 28) }, () => rng.int(3, 500)));
      const params = prompts.map((_, i) => ({ max_tokens: Z.engineTokens, ignore_eos: true, ...(i % 2 ? { temperature: 0.8, seed: i } : { temperature: 0 }) }));
      const common = { model, device: "cuda" as const, maxModelLen: 64, maxNumSeqs: 8, blockSize: 4, numGpuBlocksOverride: 24, cuda: target.provider, log: () => {} };
      const sync = gpuLLM(common), overlapped = gpuLLM({ ...common, asyncScheduling: true });
      const a = sync.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
      const b = overlapped.generate(prompts, params, { useTqdm: false }).map((o) => o.outputs[0]!.tokenIds);
      expect(b).toEqual(a);
      expect(overlapped.engine.scheduler.numPreemptions).toBeGreaterThan(0);
      expect(overlapped.engine.overlappedSteps).toBeGreaterThan(0);
      expect(overlapped.engine.blockManager.numFreeBlocks).toBe(24);
    }, timeoutMs);

    test("async scheduling gives exactly the synchronous engine's outputs (graphs and eager; seeded sampling, stop tokens, logprobs, logit bias, penalties)", () => {
      const model = tinyModel(FAST_MODEL);
      const rng = new SeededRandom(65);
      const prompts = Array.from({ length: 6 }, () => Array.from({ length: rng.int(3, 20) }, () => rng.int(3, 500)));
      const base = prompts.map((_, i) => ({
        max_tokens: Z.engineTokens, ignore_eos: true, ...(i % 2 ? { temperature: 0.8, seed: i } : { temperature: 0 }),
        ...(i % 3 === 0 ? { logprobs: 2 } : {}), ...(i === 4 ? { logit_bias: { 7: 3 } } : {}),
        // Penalties over the pending token (pending_penalty_f32): with and without logprobs of the sampled token.
        ...(i === 2 || i === 3 ? { presence_penalty: 1.5, frequency_penalty: 1, repetition_penalty: 2 } : {}),
      }));
      const common = { model, device: "cuda" as const, maxModelLen: 128, maxNumSeqs: 8, cuda: target.provider, log: () => {} };
      const run = (o: { enforceEager?: boolean; asyncScheduling?: boolean }, params: object[]) => {
        const llm = gpuLLM({ ...common, ...o });
        const outs = llm.generate(prompts, params, { useTqdm: false }).map((r) => r.outputs.map((c) => ({ tokens: c.tokenIds, finish: c.finishReason, stop: c.stopReason, logprobs: c.logprobs?.map((l) => [l.logprob, l.top.map((t) => t.tokenId)]) ?? null })));
        return { llm, outs };
      };
      // Half the requests stop on a token they reach mid-way (found one step late with async scheduling).
      const first = run({}, base).outs;
      const params = base.map((p, i) => (i % 2 ? { ...p, stop_token_ids: [first[i]![0]!.tokens[Math.floor(Z.engineTokens / 2)]!] } : p));
      for (const enforceEager of [false, true]) {
        const sync = run({ enforceEager }, params), async = run({ enforceEager, asyncScheduling: true }, params);
        expect(async.outs).toEqual(sync.outs);
        expect(sync.outs.filter((r) => typeof r[0]!.stop === "number").length).toBeGreaterThan(0);
        expect(async.llm.engine.overlappedSteps).toBeGreaterThan(Z.engineTokens / 2);
        if (!enforceEager) expect(async.llm.engine.runner.graphSteps).toBeGreaterThan(Z.engineTokens / 2);
      }
    }, timeoutMs);

    test("speculative decoding: n-gram drafts verified in eager steps keep the tokens of the engine without them (greedy, seeded, penalties)", () => {
      const model = tinyModel(FAST_MODEL);
      // Prompts that repeat themselves, so drafts are proposed; sampling from the best two keeps seeded rows random.
      const prompts = Array.from({ length: 6 }, (_, i) => { const m = [30 + i, 60 + 2 * i, 90 + 3 * i]; return [...m, 7, ...m, 8, ...m]; });
      const params = prompts.map((_, i) => ({
        max_tokens: 2 * Z.engineTokens, ignore_eos: true, ...(i % 2 ? { temperature: 1, top_k: 2, seed: i } : { temperature: 0 }),
        ...(i === 2 ? { frequency_penalty: 0.3, logprobs: 2 } : {}),
      }));
      const common = { model, device: "cuda" as const, maxModelLen: 128, maxNumSeqs: 8, cuda: target.provider, log: () => {} };
      const tokens = (llm: LLM) => llm.generate(prompts, params, { useTqdm: false }).map((r) => r.outputs[0]!.tokenIds.join());
      const plain = tokens(gpuLLM(common));
      const specLLM = gpuLLM({ ...common, speculativeConfig: { method: "ngram", num_speculative_tokens: 3, prompt_lookup_min: 1, prompt_lookup_max: 3 } });
      const spec = tokens(specLLM);
      // A verify step computes a sequence's positions together (the prefill attention kernel) where steps
      // without drafts compute one (the decode kernel, in a graph): bf16 rounding may flip one near-tie.
      expect(spec.filter((t, i) => t === plain[i]).length).toBeGreaterThanOrEqual(prompts.length - 1);
      expect(specLLM.engine.metrics.specAcceptedTokens).toBeGreaterThan(0);
    }, timeoutMs);

    test("a pooling model (embeddings, LAST and MEAN): each prompt's embedding matches the CPU backend's (cosine ≥ 0.999: a whole bf16 forward pass)", () => {
      const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], Array.from({ length: 40 }, (_, i) => (i * 37) % 4096), [42]];
      // The last token's hidden state, and MEAN pooling's mean over every prompt token (in chunks of up to 32 rows read back).
      for (const poolerConfig of [{}, { pooling_type: "MEAN" }]) {
        const opts = { model, runner: "pooling" as const, poolerConfig, maxModelLen: 128, maxNumSeqs: 8, maxNumBatchedTokens: 32, log: () => {} };
        const gpu = gpuLLM({ ...opts, device: "cuda", cuda: target.provider });
        const onGpu = gpu.embed(prompts);
        gpu.close();
        const onCpu = new LLM({ ...opts, device: "cpu" }).embed(prompts);
        onGpu.forEach((o, i) => {
          const g = Float32Array.from(o.outputs.embedding), c = Float32Array.from(onCpu[i]!.outputs.embedding);
          expect(noNaN(g)).toBe(true);
          // Both are unit vectors: their dot product is the cosine similarity (how embeddings are compared).
          expect(g.reduce((a, x, k) => a + x * c[k]!, 0)).toBeGreaterThanOrEqual(0.999);
          expect(relErr(g, c)).toBeLessThanOrEqual(3e-2);
        });
      }
    }, timeoutMs);

    test("LoRA adapters: a batch mixing the base model and two adapters (--max-loras 2), or taking turns in one slot (1), gives the CPU backend's greedy tokens (decode graphs on)", () => {
      const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const loraModules = {
        all: writeAdapter(model, { rank: 8, alpha: 16, targets: LORA_TARGETS, seed: 1 }, "cuda-all"),
        attn: writeAdapter(model, { rank: 4, alpha: 8, targets: ["q_proj", "v_proj"], seed: 2 }, "cuda-attn"),
      };
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], Array.from({ length: 40 }, (_, i) => (i * 37) % 4096), [42, 43]];
      const opts = { model, loraModules, maxModelLen: 128, maxNumSeqs: 8, maxNumBatchedTokens: 64, log: () => {} };
      const run = (llm: LLM) => {
        const e = llm.engine, params = new SamplingParams({ max_tokens: Z.engineTokens, temperature: 0, ignore_eos: true });
        const loras = [null, "all", "attn", "attn"];
        prompts.forEach((p, i) => e.addRequest(`r${i}`, p, params.clone(), performance.now(), "final_only", loras[i]!));
        const done = new Map<string, string>();
        while (e.hasUnfinishedRequests()) for (const o of e.step()) if (o.finished) done.set(o.requestId, o.outputs[0]!.tokenIds.join());
        return prompts.map((_, i) => done.get(`r${i}`)!);
      };
      const cpu = run(new LLM({ ...opts, maxLoras: 2, device: "cpu" }));
      for (const maxLoras of [2, 1]) {
        const onGpu = gpuLLM({ ...opts, maxLoras, device: "cuda", cuda: target.provider });
        const gpu = run(onGpu);
        expect(onGpu.engine.runner.graphSteps).toBeGreaterThan(0);
        // bf16 against f32: a near-tie may flip one prompt's path.
        expect(gpu.filter((t, i) => t === cpu[i]).length).toBeGreaterThanOrEqual(prompts.length - 1);
      }
    }, timeoutMs);

    test("a sequence classifier (a causal LM as a reranker, classifier_from_token): its logits match the CPU backend's", () => {
      const model = tinyModel({ arch: "qwen3", seed: 5, vocabSize: 4096 });
      const prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], Array.from({ length: 40 }, (_, i) => (i * 37) % 4096), [42]];
      const hfOverrides = { architectures: ["Qwen3ForSequenceClassification"], classifier_from_token: ["a", "b", "c"], method: "no_post_processing" };
      const opts = { model, hfOverrides, maxModelLen: 128, maxNumSeqs: 8, maxNumBatchedTokens: 32, log: () => {} };
      const onGpu = gpuLLM({ ...opts, device: "cuda", cuda: target.provider }).classify(prompts, { useActivation: false });
      const onCpu = new LLM({ ...opts, device: "cpu" }).classify(prompts, { useActivation: false });
      onGpu.forEach((o, i) => {
        const g = Float32Array.from(o.outputs.probs), c = Float32Array.from(onCpu[i]!.outputs.probs);
        expect(noNaN(g)).toBe(true);
        expect(relErr(g, c)).toBeLessThanOrEqual(3e-2);
      });
    }, timeoutMs);
  });
}

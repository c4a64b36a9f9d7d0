/** Runs scheduled steps on a backend: builds inputs, runs the model, samples. Same for CPU and CUDA. */
import { decodeGraphInputs, type Backend, type PendingSample, type StepInputs, type Tensor } from "../backend/backend.ts";
import type { CausalLM } from "../model/causal-lm.ts";
import type { PoolingType } from "../model/pooling.ts";
import type { SamplerOutput } from "./sampling-batch.ts";
import { Sampler } from "./sampler.ts";
import { tokenLogprobs } from "./logprobs.ts";
import type { SchedulerOutput } from "./scheduler.ts";
import { StepInputBuilder } from "./step-inputs.ts";
import type { TensorParallelGroup } from "../parallel/tp-group.ts";
import type { LoraRequest } from "../lora/lora-manager.ts";

/** Decode batch sizes that get a CUDA graph: 1, 2, 4, 8, then every 16 up to max_num_seqs, and max_num_seqs. */
export function graphBuckets(maxNumSeqs: number): number[] {
  const b = [1, 2, 4, 8].filter((x) => x < maxNumSeqs);
  for (let x = 16; x < maxNumSeqs; x += 16) b.push(x);
  b.push(maxNumSeqs);
  return b;
}

/** A step whose work is queued: its sampled tokens arrive through `sample`. */
export interface LaunchedStep {
  sample: PendingSample;
  /**
   * True when the next step may be launched before this one's tokens are read (async scheduling): no
   * row scores prompt tokens (prompt_logprobs reads logits back), none combines a repetition penalty with
   * a logit bias, none samples under a grammar (its next mask needs this token) or with bad words of several
   * tokens, none verifies draft tokens, and no tensor-parallel worker waits for host token ids.
   */
  overlappable: boolean;
}

const NO_TOKENS: PendingSample = { wait: () => ({ tokenIds: new Int32Array(0), logprobs: [] }) };

export class ModelRunner<T extends Tensor = Tensor> {
  readonly inputs: StepInputBuilder;
  readonly sampler: Sampler;
  /** Full-width inputs for graph replays, the captured buckets (ascending) and each one's logits tensor. */
  private graphInputs: StepInputBuilder | null = null;
  private buckets: number[] = [];
  private readonly graphLogits = new Map<number, T>();
  /** Steps run by graph replay (tests check that graphs are used). */
  graphSteps = 0;
  /** A pooling model's pooling (LAST: the sampling rows' hidden states; MEAN / CLS: every prompt token's, reduced here). */
  private readonly poolingType: PoolingType;
  private readonly limits: { maxNumBatchedTokens: number; maxNumSeqs: number; maxModelLen: number; blockSize: number; numKvGroups: number };

  constructor(
    readonly backend: Backend<T>,
    readonly model: CausalLM<T>,
    opts: { maxNumBatchedTokens: number; maxNumSeqs: number; maxModelLen: number; blockSize: number; eosTokenIds: number[]; numKvGroups?: number; pooling?: PoolingType },
    /** With tensor parallelism: the group whose workers receive each step's inputs. */
    readonly tpGroup: TensorParallelGroup | null = null,
  ) {
    const numKvGroups = opts.numKvGroups ?? 1;
    this.poolingType = opts.pooling ?? "LAST";
    this.inputs = new StepInputBuilder(opts.maxNumBatchedTokens, opts.maxNumSeqs, opts.maxModelLen, opts.blockSize, false, model.hasLora, numKvGroups, this.poolingType !== "LAST");
    this.sampler = new Sampler(opts.eosTokenIds);
    this.limits = { ...opts, numKvGroups };
  }

  /**
   * Captures one decode graph per bucket (largest first), each after an eager warm-up of the same shape.
   * Nothing per step is baked in: inputs live in the backend's fixed step buffers, refilled before replay.
   * Returns the seconds spent.
   */
  captureDecodeGraphs(buckets: number[]): number {
    return this.withGroup(() => this.capture(buckets));
  }

  /**
   * Runs `f`; with tensor parallelism, a failure in the leader's own part stops the whole group (the
   * workers would otherwise wait in a command, or their collectives for the leader's, forever).
   */
  private withGroup<R>(f: () => R): R {
    if (!this.tpGroup) return f();
    try {
      return f();
    } catch (e) {
      this.tpGroup.fail(e);
      throw e;
    }
  }

  private capture(buckets: number[]): number {
    const b = this.backend;
    if (!b.captureGraph || !b.launchGraph) throw new Error(`the ${b.name} backend has no graphs`);
    const t0 = performance.now();
    const L = this.limits;
    this.graphInputs = new StepInputBuilder(Math.max(...buckets), L.maxNumSeqs, L.maxModelLen, L.blockSize, true, this.model.hasLora, L.numKvGroups);
    const width = this.graphInputs.maxBlocksPerSeq;
    for (const n of [...buckets].sort((x, y) => y - x)) {
      // Tensor-parallel workers warm up and capture the same bucket alongside (their collectives meet ours).
      this.tpGroup?.captureGraph(n, width);
      const step = b.uploadStep(decodeGraphInputs(n, width, this.model.hasLora, L.numKvGroups));
      this.model.forward(step);
      let logits: T | null = null;
      b.captureGraph(n, () => { logits = this.model.forward(step); });
      this.graphLogits.set(n, logits!);
      this.tpGroup?.endCommand();
    }
    this.buckets = [...buckets].sort((x, y) => x - y);
    return (performance.now() - t0) / 1000;
  }

  /** The graph bucket for this step, or null when it runs eagerly (prefill or mixed, or too large). */
  private bucketFor(out: SchedulerOutput): number | null {
    if (this.buckets.length === 0) return null;
    const n = out.scheduled.length;
    for (const s of out.scheduled) if (s.numNewTokens !== 1 || !s.samples) return null;
    for (const b of this.buckets) if (b >= n) return b;
    return null;
  }

  /** Puts a LoRA adapter in a model slot, on every tensor-parallel rank too (before the step that uses it). */
  setLoraSlot(slot: number, lora: LoraRequest): void {
    this.withGroup(() => {
      this.tpGroup?.setLoraSlot(slot, lora.name, lora.dir);
      this.model.setLoraSlot(slot, lora.adapter);
      this.tpGroup?.endCommand();
    });
  }

  /** Runs a step and waits for its sampled tokens. */
  execute(out: SchedulerOutput): SamplerOutput {
    return this.launch(out).sample.wait();
  }

  /** Queues a step's work and its sampling; returns without waiting for the GPU where it can. */
  launch(out: SchedulerOutput): LaunchedStep {
    const launched = this.withGroup(() => this.run(out));
    if (!this.tpGroup) return launched;
    // The wait for the tokens is where a failed rank shows (its collective never completes): it stops the group too.
    const sample = launched.sample;
    return { ...launched, sample: { wait: () => this.withGroup(() => sample.wait()) } };
  }

  private run(out: SchedulerOutput): LaunchedStep {
    const bucket = this.bucketFor(out);
    if (bucket !== null) {
      const padded = this.graphInputs!.buildPadded(out, bucket);
      this.tpGroup?.broadcastStep(padded, bucket);
      this.backend.uploadStep(padded);
      this.backend.launchGraph!(bucket);
      this.tpGroup?.endCommand();
      this.graphSteps++;
      return { sample: this.backend.sampleAsync(this.graphLogits.get(bucket)!, this.sampler.build(out.scheduled)), overlappable: this.overlappable(out, 0) };
    }
    const host = this.inputs.build(out);
    if (this.model.pooling) return this.pool(host, out);
    this.tpGroup?.broadcastStep(host);
    const step = this.backend.uploadStep(host);
    const batch = this.sampler.build(out.scheduled);
    const logits = this.model.forward(step);
    this.tpGroup?.endCommand();
    const sample = batch.numRows === 0 ? NO_TOKENS : this.backend.sampleAsync(logits, batch);
    const promptRows = this.inputs.numPromptRows;
    if (promptRows > 0) this.recordPromptLogprobs(out, logits, batch.numRows);
    return { sample, overlappable: this.overlappable(out, promptRows) };
  }

  /**
   * A pooling model's step: the hidden states of the rows that would sample, read back (no tokens). MEAN / CLS:
   * every token's row comes back, each sequence adds its rows to its running sum (or keeps its first token's),
   * and a sequence whose prompt this step completes gets its pooled state as its row.
   */
  private pool(host: StepInputs, out: SchedulerOutput): LaunchedStep {
    this.tpGroup?.broadcastStep(host);
    const hidden = this.model.forward(this.backend.uploadStep(host));
    this.tpGroup?.endCommand();
    const rows = host.logitsRows.length;
    let read = rows > 0 ? this.backend.toHost(hidden) : new Float32Array(0);
    if (this.poolingType !== "LAST") read = this.reducePooled(read, out);
    const n = read.length / this.model.cfg.hiddenSize;
    return { sample: { wait: () => ({ tokenIds: new Int32Array(n), logprobs: [], hidden: read }) }, overlappable: false };
  }

  /** MEAN / CLS: from every scheduled token's hidden state (in token order) to one pooled row per sequence that completes its prompt. */
  private reducePooled(rows: Float32Array, out: SchedulerOutput): Float32Array {
    const H = this.model.cfg.hiddenSize, mean = this.poolingType === "MEAN";
    const done: Float32Array[] = [];
    let r = 0;
    for (const s of out.scheduled) {
      const seq = s.seq;
      // From the first token (a preempted sequence starts over: no prefix caching with these poolings).
      if (s.start === 0) seq.poolState = new Float64Array(H);
      const state = seq.poolState!;
      for (let j = 0; j < s.numNewTokens; j++, r++) {
        if (mean) for (let i = 0; i < H; i++) state[i]! += rows[r * H + i]!;
        else if (s.start + j === 0) for (let i = 0; i < H; i++) state[i] = rows[r * H + i]!;
      }
      if (!s.samples) continue;
      const pooled = new Float32Array(H);
      for (let i = 0; i < H; i++) pooled[i] = mean ? state[i]! / seq.numPromptTokens : state[i]!;
      seq.poolState = null;
      done.push(pooled);
    }
    const result = new Float32Array(done.length * H);
    done.forEach((v, k) => result.set(v, k * H));
    return result;
  }

  private overlappable(out: SchedulerOutput, promptRows: number): boolean {
    if (this.tpGroup || promptRows > 0) return false;
    // The GPU adds a pending token's repetition penalty after the host's edits, so a logit bias on the same
    // token would come first, not after: such rows wait (rare).
    for (const s of out.scheduled) {
      const p = s.seq.params;
      if (s.samples && p.structured_outputs) return false;
      // Draft tokens: which of them the samples confirm decides the next step's inputs.
      if (s.samples && s.seq.numDrafts > 0) return false;
      // Bad words longer than a token are matched against the latest tokens, which must be known.
      if (s.samples && p.bad_words_token_ids?.some((w) => w.length > 1)) return false;
      if (s.samples && p.needsPenalties && p.repetition_penalty !== 1 && p.logit_bias !== null && p.logit_bias.size > 0) return false;
    }
    return true;
  }

  /** Scores prompt tokens from the rows after the sampling rows (prompt_logprobs), onto their sequences. */
  private recordPromptLogprobs(out: SchedulerOutput, logits: T, firstRow: number): void {
    const host = this.backend.toHost(logits);
    const V = this.model.cfg.vocabSize, inputs = this.inputs;
    for (let k = 0; k < inputs.numPromptRows; k++) {
      const seq = out.scheduled[inputs.promptRowSeq[k]!]!.seq, pos = inputs.promptRowPos[k]!;
      const row = host.subarray((firstRow + k) * V, (firstRow + k + 1) * V);
      seq.promptLogprobs![pos + 1] = tokenLogprobs(row, seq.tokens[pos + 1]!, seq.params.prompt_logprobs!);
    }
  }
}

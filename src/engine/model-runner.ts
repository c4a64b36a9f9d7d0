/** Runs scheduled steps on a backend: builds inputs, runs the model, samples. Same for CPU and CUDA. */
import type { Backend, Tensor } from "../backend/backend.ts";
import type { CausalLM } from "../model/causal-lm.ts";
import type { SamplerOutput } from "./sampling-batch.ts";
import { Sampler } from "./sampler.ts";
import type { SchedulerOutput } from "./scheduler.ts";
import { StepInputBuilder } from "./step-inputs.ts";
import type { TensorParallelGroup } from "../parallel/tp-group.ts";

export class ModelRunner<T extends Tensor = Tensor> {
  readonly inputs: StepInputBuilder;
  readonly sampler: Sampler;

  constructor(
    readonly backend: Backend<T>,
    readonly model: CausalLM<T>,
    opts: { maxNumBatchedTokens: number; maxNumSeqs: number; maxModelLen: number; blockSize: number; eosTokenIds: number[] },
    /** With tensor parallelism: the group whose workers receive each step's inputs. */
    readonly tpGroup: TensorParallelGroup | null = null,
  ) {
    this.inputs = new StepInputBuilder(opts.maxNumBatchedTokens, opts.maxNumSeqs, opts.maxModelLen, opts.blockSize);
    this.sampler = new Sampler(opts.eosTokenIds);
  }

  execute(out: SchedulerOutput): SamplerOutput {
    const host = this.inputs.build(out);
    this.tpGroup?.broadcastStep(host);
    const step = this.backend.uploadStep(host);
    const batch = this.sampler.build(out.scheduled);
    const logits = this.model.forward(step);
    if (step.numLogitsRows === 0) return { tokenIds: new Int32Array(0), logprobs: [] };
    return this.backend.sample(logits, batch);
  }
}

/**
 * Tensor parallelism across GPUs: the model's collectives as NCCL calls on each rank's stream (so they are
 * ordered with its kernels and captured into its decode graphs). All-reduce sums bf16 activations in place;
 * the logits gather is an all-gather of each rank's vocabulary slice followed, on rank 0, by a kernel that
 * puts the slices back in vocabulary order.
 */
import type { CudaBackend, CudaTensor } from "../backend/cuda/cuda-backend.ts";
import { NCCL_BFLOAT16, NCCL_FLOAT32, type NcclApi } from "../backend/cuda/nccl.ts";
import type { Collective } from "../model/causal-lm.ts";

export class NcclCollective implements Collective<CudaTensor> {
  /** Send and receive buffers of the logits all-gather, sized for `maxRows` rows once (never during capture). */
  private readonly send: bigint;
  private readonly recv: bigint;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly comm: bigint,
    private readonly nccl: NcclApi,
    private readonly backend: CudaBackend,
    /** Vocabulary rows per rank (the last rank may hold fewer). */
    private readonly vocabPerRank: number,
    private readonly maxRows: number,
  ) {
    this.send = backend.deviceAlloc(maxRows * vocabPerRank * 4);
    this.recv = backend.deviceAlloc(size * maxRows * vocabPerRank * 4);
  }

  private ended = false;

  /**
   * Ends this rank's communicator once: destroyed after a clean shutdown, aborted when a rank failed (which
   * also makes this rank's collectives still waiting on the GPU give up, so its stream drains).
   */
  end(how: "destroy" | "abort"): void {
    if (this.ended) return;
    this.ended = true;
    if (how === "destroy") this.nccl.destroy(this.comm);
    else this.nccl.abort(this.comm);
  }

  allReduce(t: CudaTensor): void {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count === 0) return;
    this.nccl.allReduce([{ send: t.ptr, recv: t.ptr, count, dtype: t.dtype === "bf16" ? NCCL_BFLOAT16 : NCCL_FLOAT32, comm: this.comm, stream: this.backend.stream }]);
  }

  gatherLogits(local: CudaTensor, full: CudaTensor, numRows: number): void {
    if (numRows === 0) return; // every rank runs the same step, so all skip together
    if (numRows > this.maxRows) throw new Error(`logits gather of ${numRows} rows exceeds the ${this.maxRows} reserved`);
    const count = numRows * this.vocabPerRank;
    this.backend.copyOnDevice(this.send, local.ptr, numRows * local.width * 4);
    this.nccl.allGather({ send: this.send, recv: this.recv, count, dtype: NCCL_FLOAT32, comm: this.comm, stream: this.backend.stream });
    if (this.rank === 0) this.backend.unshardVocab(this.recv, full, numRows, this.vocabPerRank);
  }
}

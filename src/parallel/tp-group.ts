/**
 * The leader side of CPU tensor parallelism: rank 0 runs in the engine's thread, ranks 1…N−1 in Bun
 * Workers (src/tp-worker.ts). The leader writes each step's inputs into shared arrays and bumps the command
 * sequence number; all ranks then run the same forward pass, meeting in the shared-memory collectives,
 * and rank 0 samples from the gathered logits.
 */
import { CpuBackend, type CpuTensor } from "../backend/cpu/cpu-backend.ts";
import type { StepInputs } from "../backend/backend.ts";
import { Checkpoint } from "../loader/checkpoint.ts";
import { CausalLM } from "../model/causal-lm.ts";
import type { ModelConfig } from "../model/config.ts";
import { TP_WORKER_URL } from "../worker-url.ts";
import { localDims } from "./shard.ts";
import { ARG0, CMD, CMD_ALLOC_KV, CMD_RESERVE, CMD_SEQ, CMD_SHUTDOWN, CMD_STEP, createSharedBuffers, inputViews, READY, SharedCollective, type SharedSizes } from "./shared-collective.ts";

export interface TpWorkerInit {
  rank: number;
  modelDir: string;
  maxModelLen: number;
  sizes: SharedSizes;
  buffers: ReturnType<typeof createSharedBuffers>;
  /** Fault injection for tests ("RANK:STEP" from $VBUN_TP_FAIL_AT, read by the leader). */
  failAt: string | null;
}

export class TensorParallelGroup {
  readonly model: CausalLM<CpuTensor>;
  readonly collective: SharedCollective;
  private readonly workers: Worker[] = [];
  private readonly inputs: ReturnType<typeof inputViews>;
  private closed = false;
  /** Resolves once every worker thread has exited (after close()). */
  readonly exited: Promise<void>;

  constructor(cfg: ModelConfig, modelDir: string, size: number, maxModelLen: number, limits: { maxTokens: number; maxSeqs: number; maxBlocksPerSeq: number }) {
    const sizes: SharedSizes = {
      size, maxReduce: limits.maxTokens * cfg.hiddenSize, maxLogitsRows: limits.maxSeqs, vocabSize: cfg.vocabSize,
      vocabPerRank: localDims(cfg, { rank: 0, size }).vocabPerRank,
      maxTokens: limits.maxTokens, maxSeqs: limits.maxSeqs, maxBlocksPerSeq: limits.maxBlocksPerSeq,
    };
    const buffers = createSharedBuffers(sizes);
    this.collective = new SharedCollective(0, sizes, buffers);
    this.inputs = inputViews(buffers, sizes);
    const exits: Promise<void>[] = [];
    for (let rank = 1; rank < size; rank++) {
      const w = new Worker(TP_WORKER_URL);
      exits.push(new Promise((resolve) => w.addEventListener("close", () => resolve())));
      w.addEventListener("error", (e) => this.collective.abort(new Error(`worker for rank ${rank} crashed: ${(e as ErrorEvent).message}`)));
      w.postMessage({ rank, modelDir, maxModelLen, sizes, buffers, failAt: process.env.VBUN_TP_FAIL_AT ?? null } satisfies TpWorkerInit);
      this.workers.push(w);
    }
    this.exited = Promise.all(exits).then(() => {});
    try {
      // One thread per rank: the ranks already use the cores.
      this.model = new CausalLM<CpuTensor>(cfg, new CpuBackend({ threads: 1 }) as never, maxModelLen, this.collective);
      this.model.load(new Checkpoint(modelDir));
      // Wait for every worker to load its shard (or fail).
      const ctl = this.collective.ctl;
      for (let ready = Atomics.load(ctl, READY); ready < size - 1; ready = Atomics.load(ctl, READY)) this.collective.waitChange(READY, ready);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get size(): number {
    return this.collective.size;
  }

  private command(cmd: number, args: number[] = []): void {
    const ctl = this.collective.ctl;
    this.collective.checkAbort();
    args.forEach((a, i) => Atomics.store(ctl, ARG0 + i, a));
    Atomics.store(ctl, CMD, cmd);
    Atomics.add(ctl, CMD_SEQ, 1);
    Atomics.notify(ctl, CMD_SEQ);
  }

  reserve(tokens: number, rows: number): void {
    this.command(CMD_RESERVE, [tokens, rows]);
    this.model.reserve(tokens, rows);
    this.collective.barrier();
  }

  allocKvCache(numBlocks: number, blockSize: number): void {
    this.command(CMD_ALLOC_KV, [numBlocks, blockSize]);
    this.model.allocKvCache(numBlocks, blockSize);
    this.collective.barrier();
  }

  /** Publishes a step's inputs to the workers; the leader's forward pass follows. */
  broadcastStep(s: StepInputs): void {
    const v = this.inputs;
    v.tokenIds.set(s.tokenIds);
    v.positions.set(s.positions);
    v.slotMapping.set(s.slotMapping);
    v.queryStart.set(s.queryStart);
    v.seqLens.set(s.seqLens);
    v.blockTables.set(s.blockTables);
    v.logitsRows.set(s.logitsRows);
    this.command(CMD_STEP, [s.tokenIds.length, s.seqLens.length, s.maxBlocksPerSeq, s.logitsRows.length]);
  }

  /** Stops the workers (they leave their loops) and terminates their threads. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try { this.command(CMD_SHUTDOWN); } catch { /* a rank already failed: terminate anyway */ }
    for (const w of this.workers) w.terminate();
  }
}

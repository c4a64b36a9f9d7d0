/**
 * The leader side of tensor parallelism: rank 0 runs in the engine's thread, ranks 1…N−1 in Bun Workers
 * (src/parallel/tp-rank.ts). The leader writes each step's inputs into shared arrays and bumps the command
 * sequence number; all ranks then run the same forward pass, meeting in the model's collectives, and rank 0
 * samples from the gathered logits. Every command ends with a barrier over the shared control block, so the
 * leader never gets ahead of a worker by more than one command.
 *
 * On the CPU the collectives are shared-memory ones (SharedCollective); on GPUs they are NCCL calls on each
 * rank's stream (NcclCollective), the communicators created here with ncclCommInitAll, and decode graphs
 * are captured and replayed on every rank.
 */
import { CpuBackend } from "../backend/cpu/cpu-backend.ts";
import type { Backend, StepInputs, Tensor } from "../backend/backend.ts";
import type { CudaBackend } from "../backend/cuda/cuda-backend.ts";
import type { CudaProvider } from "../backend/cuda/provider.ts";
import { Checkpoint } from "../loader/checkpoint.ts";
import type { LoraCoverage } from "../lora/lora-adapter.ts";
import { CausalLM, type Collective } from "../model/causal-lm.ts";
import type { ModelConfig } from "../model/config.ts";
import type { KvCacheLayout } from "../model/kv-cache-layout.ts";
import { TP_WORKER_URL, workerOptions } from "../worker-url.ts";
import { NcclCollective } from "./nccl-collective.ts";
import { localDims } from "./shard.ts";
import { ARG0, CMD, CMD_ALLOC_KV, CMD_CAPTURE, CMD_LORA_SLOT, CMD_RESERVE, CMD_SEQ, CMD_SHUTDOWN, CMD_STEP, createSharedBuffers, inputViews, READY, SharedCollective, STARTED, TEXT_BYTES, type SharedSizes } from "./shared-collective.ts";

/** How long close() waits for the workers to shut down cleanly before aborting the group. */
const SHUTDOWN_WAIT_MS = 10_000;

/**
 * How long the leader waits for the other ranks within a step — at the step's barrier, and (GPUs) for its
 * stream, whose collectives wait for theirs — before it declares the group hung and stops it:
 * $VBUN_TP_TIMEOUT seconds, default 600 (NCCL's own watchdogs elsewhere default to minutes too).
 */
export function tpTimeoutMs(env: Record<string, string | undefined> = process.env, name = "VBUN_TP_TIMEOUT", defaultSeconds = 600): number {
  const v = env[name];
  if (v === undefined || v === "") return defaultSeconds * 1000;
  const s = Number(v);
  if (!(s > 0)) throw new Error(`${name} must be a positive number of seconds, got '${v}'`);
  return s * 1000;
}

export interface TpWorkerInit {
  rank: number;
  modelDir: string;
  maxModelLen: number;
  sizes: SharedSizes;
  buffers: ReturnType<typeof createSharedBuffers>;
  /** Fault injection for tests ("RANK:STEP" from $VBUN_TP_FAIL_AT, read by the leader). */
  failAt: string | null;
  /** GPU ranks: this rank's NCCL communicator, what the worker's NCCL needs, and the logits rows to reserve. */
  cuda: { comm: bigint; ncclData: unknown; maxRows: number } | null;
  /** A pooling model (embeddings, classifiers): every rank's forward stops at the (replicated) hidden states. */
  pooling: boolean;
  /** --hf-overrides: the config every rank reads is the leader's. */
  hfOverrides: Record<string, unknown>;
  /** LoRA's model slots (CausalLM.enableLora), filled by CMD_LORA_SLOT; null without LoRA. */
  lora: LoraSlots | null;
  /** --quantization fp8 on an unquantized checkpoint (Checkpoint's onlineQuantization). */
  onlineQuantization: "fp8" | null;
}

/** The LoRA slots every rank makes: how many, the rank they are padded to (--max-lora-rank), the projections covered. */
export interface LoraSlots {
  slots: number;
  maxRank: number;
  coverage: LoraCoverage;
}

/** Where the ranks run: CPU threads, or one GPU each (rank r on GPU r). */
export type TpDevice = { kind: "cpu" } | { kind: "cuda"; leader: CudaBackend; provider: CudaProvider };

export class TensorParallelGroup {
  readonly model: CausalLM<Tensor>;
  /** The shared control block: commands, barriers, and a failing rank's error. */
  readonly control: SharedCollective;
  private readonly workers: Worker[] = [];
  private readonly inputs: ReturnType<typeof inputViews>;
  /** GPU ranks: the leader's NCCL communicator and its backend (whose waits check on the other ranks). */
  private readonly nccl: NcclCollective | null = null;
  private readonly leader: CudaBackend | null = null;
  /** A command was issued and its barrier not yet passed. */
  private inFlight = false;
  private closed = false;
  /** Resolves once every worker thread has exited (after close()). */
  readonly exited: Promise<void>;

  constructor(cfg: ModelConfig, modelDir: string, size: number, maxModelLen: number, limits: { maxTokens: number; maxSeqs: number; maxBlocksPerSeq: number; maxLogitsRows: number; numKvGroups?: number }, device: TpDevice = { kind: "cpu" }, pooling = false, hfOverrides: Record<string, unknown> = {}, lora: LoraSlots | null = null, onlineQuantization: "fp8" | null = null) {
    const onGpu = device.kind === "cuda";
    const vocabPerRank = localDims(cfg, { rank: 0, size }).vocabPerRank;
    const sizes: SharedSizes = {
      // The shared-memory reduce and gather buffers serve CPU ranks only.
      size, maxReduce: onGpu ? 0 : limits.maxTokens * cfg.hiddenSize, maxLogitsRows: onGpu ? 0 : limits.maxLogitsRows, maxRows: limits.maxLogitsRows, vocabSize: cfg.vocabSize, vocabPerRank,
      maxTokens: limits.maxTokens, maxSeqs: limits.maxSeqs, maxBlocksPerSeq: limits.maxBlocksPerSeq, numKvGroups: limits.numKvGroups ?? 1,
    };
    const buffers = createSharedBuffers(sizes);
    this.control = new SharedCollective(0, sizes, buffers);
    this.control.timeoutMs = tpTimeoutMs();
    this.inputs = inputViews(buffers, sizes);
    let comms: bigint[] = [];
    let ncclData: unknown = null;
    let collective: Collective<Tensor> = this.control as unknown as Collective<Tensor>;
    if (device.kind === "cuda") {
      const nccl = device.provider.nccl();
      comms = nccl.initAll(Array.from({ length: size }, (_, r) => r));
      device.leader.makeCurrent(); // NCCL's set-up leaves the last GPU current
      ncclData = nccl.workerData;
      this.nccl = new NcclCollective(0, size, comms[0]!, nccl, device.leader, vocabPerRank, limits.maxLogitsRows);
      collective = this.nccl as unknown as Collective<Tensor>;
      // The leader's stream may wait in a collective for a rank that has failed (or hung): poll, and give
      // up then. Whoever catches the error stops the group (ModelRunner → fail(), or close()), which aborts
      // the leader's communicator so its queued collectives give up too.
      this.leader = device.leader;
      this.leader.setWaitCheck((waitedMs) => {
        this.control.checkAbort();
        if (waitedMs > this.control.timeoutMs) {
          throw new Error(`tensor parallelism: a step's GPU work (its collectives wait for the other ranks') did not finish within ${this.control.timeoutMs / 1000} s (VBUN_TP_TIMEOUT); the group is stopped`);
        }
      });
    }
    const exits: Promise<void>[] = [];
    for (let rank = 1; rank < size; rank++) {
      const w = new Worker(device.kind === "cuda" ? device.provider.tpWorkerUrl : TP_WORKER_URL, workerOptions());
      exits.push(new Promise((resolve) => w.addEventListener("close", () => resolve())));
      w.addEventListener("error", (e) => this.control.abort(new Error(`worker for rank ${rank} crashed: ${(e as ErrorEvent).message}`)));
      w.postMessage({
        rank, modelDir, maxModelLen, sizes, buffers, failAt: process.env.VBUN_TP_FAIL_AT ?? null,
        cuda: onGpu ? { comm: comms[rank]!, ncclData, maxRows: limits.maxLogitsRows } : null, pooling, hfOverrides, lora, onlineQuantization,
      } satisfies TpWorkerInit);
      this.workers.push(w);
    }
    this.exited = Promise.all(exits).then(() => {});
    try {
      // CPU: one thread per rank (the ranks already use the cores).
      const backend = device.kind === "cuda" ? device.leader : new CpuBackend({ threads: 1 });
      this.model = new CausalLM<Tensor>(cfg, backend as unknown as Backend<Tensor>, maxModelLen, collective, { pooling });
      this.model.load(new Checkpoint(modelDir, { onlineQuantization }));
      if (lora) this.model.enableLora(lora.slots, lora.maxRank, lora.coverage);
      // Wait for every worker to start — one whose module fails to load never does, and its error event
      // cannot reach this blocked thread: give up after VBUN_TP_START_TIMEOUT (60 s) — then to load its
      // shard (or fail), for at most VBUN_TP_TIMEOUT.
      const startMs = tpTimeoutMs(process.env, "VBUN_TP_START_TIMEOUT", 60);
      this.control.waitCount(STARTED, size - 1, startMs, (started) => `tensor parallelism: ${size - 1 - started} of ${size - 1} rank workers did not start within ${startMs / 1000} s (VBUN_TP_START_TIMEOUT): a worker's module failed to load`);
      this.control.waitCount(READY, size - 1, this.control.timeoutMs);
    } catch (e) {
      // A group that never became usable is aborted, not shut down (a shutdown would wait for workers
      // that may never have started).
      try { this.fail(e); } catch { /* the start's error is the one to report */ }
      this.close();
      throw e;
    }
  }

  get size(): number {
    return this.control.size;
  }

  private command(cmd: number, args: number[] = []): void {
    const ctl = this.control.ctl;
    this.control.checkAbort();
    args.forEach((a, i) => Atomics.store(ctl, ARG0 + i, a));
    Atomics.store(ctl, CMD, cmd);
    this.inFlight = true;
    Atomics.add(ctl, CMD_SEQ, 1);
    Atomics.notify(ctl, CMD_SEQ);
  }

  /** Ends the current command: waits until every rank has issued its part (and raises a rank's failure). */
  endCommand(): void {
    this.control.barrier();
    this.inFlight = false;
  }

  /**
   * A command failed — in the leader's own part, or because a rank failed or hung: record it (as rank 0's
   * failure unless a rank's is recorded already), so that the workers stop and abort their communicators,
   * and abort the leader's, so that collectives queued on its stream give up instead of blocking it. Every
   * error out of a command reaches here (ModelRunner, or close()). The group is unusable afterwards.
   */
  fail(error: unknown): void {
    this.control.abort(error);
    this.nccl?.end("abort");
  }

  /** Activation buffers on every rank (and fixed step buffers on GPU ranks). */
  reserve(tokens: number, rows: number, blockSize = 0): void {
    this.command(CMD_RESERVE, [tokens, rows, this.control.sizes.maxBlocksPerSeq, this.control.sizes.maxSeqs, this.control.sizes.numKvGroups, blockSize]);
    this.model.reserve(tokens, rows);
    this.endCommand();
  }

  /** Allocates every rank's KV cache; the workers derive the same layout from the config (hybrid or not). */
  allocKvCache(numBlocks: number, blockSize: number, layout: KvCacheLayout): void {
    if (layout.groups.length !== this.control.sizes.numKvGroups) throw new Error(`tensor parallelism: a KV cache layout of ${layout.groups.length} groups, but the step buffers were made for ${this.control.sizes.numKvGroups}`);
    const hybrid = layout.groups.length > 1 || layout.groups[0]!.window > 0;
    this.command(CMD_ALLOC_KV, [numBlocks, blockSize, hybrid ? 1 : 0]);
    this.model.allocKvCache(numBlocks, blockSize, layout);
    this.endCommand();
  }

  /**
   * Publishes a step's inputs to the workers, who run it eagerly or, with `graph` ≥ 0, replay their decode
   * graph for that bucket. The leader runs its own part, then calls endCommand().
   */
  broadcastStep(s: StepInputs, graph = -1): void {
    const v = this.inputs;
    v.tokenIds.set(s.tokenIds);
    v.positions.set(s.positions);
    v.slotMapping.set(s.slotMapping);
    v.queryStart.set(s.queryStart);
    v.seqLens.set(s.seqLens);
    v.blockTables.set(s.blockTables);
    v.logitsRows.set(s.logitsRows);
    if (s.loraSlots) v.loraSlots.set(s.loraSlots);
    const groups = s.kvGroups ?? [];
    if (groups.length !== v.kvGroups.length) throw new Error(`tensor parallelism: a step with ${groups.length + 1} KV cache groups, the shared buffers hold ${v.kvGroups.length + 1}`);
    groups.forEach((g, i) => {
      v.kvGroups[i]!.slotMapping.set(g.slotMapping);
      v.kvGroups[i]!.blockTables.set(g.blockTables);
    });
    this.command(CMD_STEP, [s.tokenIds.length, s.seqLens.length, s.maxBlocksPerSeq, s.logitsRows.length, graph, s.loraSlots ? 1 : 0]);
  }

  /**
   * Has every worker put the adapter in `dir` (re-read there, each rank taking its shard) in LoRA slot `slot`;
   * the leader does its own, then endCommand().
   */
  setLoraSlot(slot: number, name: string, dir: string): void {
    const text = new TextEncoder().encode(JSON.stringify({ name, dir }));
    if (text.length > TEXT_BYTES) throw new Error(`tensor parallelism: the LoRA adapter path is longer than ${TEXT_BYTES} bytes: ${dir}`);
    new Uint8Array(this.control.buffers.text).set(text);
    this.command(CMD_LORA_SLOT, [slot, text.length]);
  }

  /** Has every worker warm up and capture the decode graph of `bucket` sequences; the leader does its own, then endCommand(). */
  captureGraph(bucket: number, width: number): void {
    this.command(CMD_CAPTURE, [bucket, width]);
  }

  /**
   * Stops the workers and terminates their threads. After a clean run every rank destroys its NCCL
   * communicator; after a failure (or with a command left unfinished) the group is aborted instead.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.inFlight) throw new Error("the engine shut down during a tensor-parallel command");
      this.command(CMD_SHUTDOWN);
      // The workers destroy their communicators and meet us; a worker that never comes (a hung GPU) must
      // not hang the shutdown: after SHUTDOWN_WAIT_MS the group is aborted instead.
      this.control.barrier(SHUTDOWN_WAIT_MS);
      this.inFlight = false;
      this.nccl?.end("destroy");
    } catch (e) {
      this.fail(e);
    }
    this.leader?.setWaitCheck(null);
    for (const w of this.workers) w.terminate();
  }
}

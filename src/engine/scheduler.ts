/**
 * Continuous batching, vLLM V1 style: each step gives every running sequence the tokens it needs next
 * (1 for decode, a chunk for a prefill in progress) and admits waiting sequences FCFS, all under a token
 * budget, so prefill chunks and decodes share a step. When the KV cache runs out, the newest running
 * sequence is preempted (its blocks freed, recomputed later). With the priority policy, waiting sequences
 * are admitted by (priority, arrival) instead, and the last in that order is preempted first. With LoRA, a
 * waiting sequence is admitted only when its adapter is in a model slot or one is free (--max-loras); while
 * one waits for a slot, only base-model sequences behind it go ahead (so it is never starved).
 */
import { BlockManager } from "./block-manager.ts";
import { Sequence, SequenceStatus } from "./sequence.ts";
import type { LoraManager } from "../lora/lora-manager.ts";

export interface SchedulerConfig {
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxModelLen: number;
  /** When false, a prompt must fit the budget whole (no chunked prefill). */
  enableChunkedPrefill: boolean;
  /** "priority": waiting sequences in (priority, arrival) order, and the last of that order is preempted first. */
  policy?: "fcfs" | "priority";
}

/** Priority order: lower priority value first, then earlier arrival, then earlier sequence. */
function before(a: Sequence, b: Sequence): boolean {
  const pa = a.params.priority, pb = b.params.priority;
  return pa !== pb ? pa < pb : a.arrivalTime !== b.arrivalTime ? a.arrivalTime < b.arrivalTime : a.seqId < b.seqId;
}

export interface ScheduledSeq {
  seq: Sequence;
  /** Tokens computed this step: tokenIds[start, start + numNewTokens). */
  start: number;
  numNewTokens: number;
  /** True when this step completes the sequence's known tokens, so it samples the next one. */
  samples: boolean;
}

export interface SchedulerOutput {
  scheduled: ScheduledSeq[];
  numBatchedTokens: number;
  numPreempted: number;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  /** Sequences preempted since start (vLLM's num_preemptions). */
  numPreemptions = 0;
  /** Prefill chunks that did not finish their prompt (chunked prefill at work). */
  numPartialPrefills = 0;
  private readonly out: ScheduledSeq[] = [];
  /** Reused ScheduledSeq records (no per-step allocation). */
  private readonly pool: ScheduledSeq[] = [];

  constructor(readonly config: SchedulerConfig, readonly blockManager: BlockManager, readonly loras: LoraManager | null = null) {}

  add(seq: Sequence): void {
    seq.status = SequenceStatus.WAITING;
    if (this.config.policy === "priority") this.insertByPriority(seq);
    else this.waiting.push(seq);
  }

  private insertByPriority(seq: Sequence): void {
    let i = this.waiting.length;
    while (i > 0 && before(seq, this.waiting[i - 1]!)) i--;
    this.waiting.splice(i, 0, seq);
  }

  /** The running sequence to preempt: the newest (FCFS), or the last in priority order. */
  private victim(): Sequence {
    const r = this.running;
    if (this.config.policy !== "priority") return r[r.length - 1]!;
    let v = r[0]!;
    for (const s of r) if (before(v, s)) v = s;
    return v;
  }

  get numUnfinished(): number {
    return this.waiting.length + this.running.length;
  }

  schedule(now = performance.now()): SchedulerOutput {
    const cfg = this.config, bm = this.blockManager;
    let budget = cfg.maxNumBatchedTokens;
    const scheduled = this.out;
    scheduled.length = 0;
    let numPreempted = 0;

    // 1. Running sequences, oldest first; preempt from the newest end when blocks run out.
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i]!;
      // Async scheduling: a sequence whose pending token is its last allowed one ends when that token
      // arrives; it has nothing more to compute.
      if (seq.numPlaceholders > 0 && this.atLengthLimit(seq)) continue;
      const needed = seq.numTokensWithPlaceholders - seq.numComputedTokens;
      // Speculative decoding: a decoding sequence's draft tokens are computed too, as many as the budget allows.
      let num = Math.min(needed + seq.numDrafts, budget);
      if (num <= 0) continue;
      seq.numDrafts = Math.max(0, num - needed);
      let ok = bm.allocateSlots(seq, num);
      // Out of blocks: the drafts go first, before anyone is preempted.
      if (!ok && seq.numDrafts > 0) {
        seq.numDrafts = 0;
        num = needed;
        ok = bm.allocateSlots(seq, num);
      }
      while (!ok) {
        const victim = this.victim();
        // Priority order may pick one scheduled earlier in this step: it leaves the step, its tokens back in the budget.
        if (this.running.indexOf(victim) < i) {
          budget += this.unrecord(victim);
          i--;
        }
        this.preempt(victim);
        numPreempted++;
        if (victim === seq) break;
        ok = bm.allocateSlots(seq, num);
      }
      if (!ok) break;
      this.record(seq, num);
      budget -= num;
    }

    // 2. Waiting sequences, FCFS, unless this step had to preempt. (A sequence preempted with a token
    // pending gets it before the next schedule: the engine resolves the running step in between.)
    // LoRA: a sequence whose adapter has no slot (and none is free) waits until running sequences free one;
    // behind it only base-model sequences go ahead — they hold no slot, whereas more users of a resident
    // adapter could keep its slot busy forever.
    let slotBlocked = false;
    for (let i = 0; numPreempted === 0 && i < this.waiting.length && budget > 0 && this.running.length < cfg.maxNumSeqs;) {
      const seq = this.waiting[i]!;
      if (this.loras && seq.lora !== null && (slotBlocked || !this.loras.canAcquire(seq.lora))) {
        slotBlocked = true;
        i++;
        continue;
      }
      // A prompt_logprobs request needs logits for every prompt position: none may come from the cache.
      const prefix = seq.params.prompt_logprobs === null ? bm.findCachedPrefix(seq) : bm.noCachedPrefix;
      const cachedTokens = prefix.numBlocks * bm.blockSize;
      const remaining = seq.numTokens - cachedTokens;
      if (!cfg.enableChunkedPrefill && remaining > budget) break;
      const num = Math.min(remaining, budget);
      if (!bm.allocateSlots(seq, num, prefix)) break;
      this.waiting.splice(i, 1);
      this.loras?.acquire(seq);
      seq.status = SequenceStatus.RUNNING;
      seq.firstScheduledTime ??= now;
      this.running.push(seq);
      this.record(seq, num);
      budget -= num;
    }
    for (const s of scheduled) if (!s.samples) this.numPartialPrefills++;
    return { scheduled, numBatchedTokens: cfg.maxNumBatchedTokens - budget, numPreempted };
  }

  private record(seq: Sequence, num: number): void {
    const i = this.out.length;
    let r = this.pool[i];
    if (!r) this.pool.push((r = { seq, start: 0, numNewTokens: 0, samples: false }));
    r.seq = seq;
    r.start = seq.numComputedTokens;
    r.numNewTokens = num;
    r.samples = seq.numComputedTokens + num === seq.numTokensWithPlaceholders + seq.numDrafts;
    this.out.push(r);
  }

  /** Takes a sequence out of this step's records; returns the tokens it had. */
  private unrecord(seq: Sequence): number {
    const k = this.out.findIndex((r) => r.seq === seq);
    const [r] = this.out.splice(k, 1);
    // Keep pool[j] === out[j]: the record object goes to the pool's end.
    this.pool.splice(k, 1);
    this.pool.push(r!);
    return r!.numNewTokens;
  }

  /** True when a sequence's tokens, pending ones included, reach max_tokens or the model length. */
  private atLengthLimit(seq: Sequence): boolean {
    const total = seq.numTokensWithPlaceholders;
    return total - seq.numPromptTokens >= seq.params.max_tokens! || total >= this.config.maxModelLen;
  }

  private preempt(seq: Sequence): void {
    const i = this.running.lastIndexOf(seq);
    if (i >= 0) this.running.splice(i, 1);
    this.blockManager.free(seq);
    this.loras?.release(seq);
    seq.status = SequenceStatus.WAITING;
    seq.numDrafts = 0;
    seq.numPreemptions++;
    this.numPreemptions++;
    if (this.config.policy === "priority") this.insertByPriority(seq);
    else this.waiting.unshift(seq);
  }

  /**
   * Records that the step was launched: computed tokens advance, and each sampling sequence gets a
   * placeholder for the token the step samples (row r of its sampled ids, in scheduled order; a sequence
   * with draft tokens has a row after each of them as well, and its placeholder is its first row).
   */
  advance(out: SchedulerOutput): void {
    const sched = out.scheduled;
    let r = 0;
    for (let i = 0; i < sched.length; i++) {
      const s = sched[i]!, seq = s.seq;
      seq.numComputedTokens = s.start + s.numNewTokens;
      if (s.samples) {
        seq.numPlaceholders++;
        seq.placeholderRow = r;
        r += 1 + seq.numDrafts;
      }
    }
  }

  /** advance(), then the sampled tokens in at once (a step run synchronously, without draft tokens; tests). */
  postprocess(out: SchedulerOutput, sampled: ArrayLike<number>): void {
    if (out.scheduled.some((s) => s.seq.numDrafts > 0)) throw new Error("Scheduler.postprocess: draft tokens are verified by LLMEngine, not here");
    this.advance(out);
    let r = 0;
    for (const s of out.scheduled) if (s.samples) s.seq.resolvePlaceholder(sampled[r++]!);
  }

  /** Removes a finished or aborted sequence and frees its blocks at once. */
  finish(seq: Sequence): void {
    if (seq.status === SequenceStatus.RUNNING) {
      const i = this.running.indexOf(seq);
      if (i >= 0) this.running.splice(i, 1);
    } else if (seq.status === SequenceStatus.WAITING) {
      const i = this.waiting.indexOf(seq);
      if (i >= 0) this.waiting.splice(i, 1);
    }
    this.blockManager.free(seq);
    this.loras?.release(seq);
    seq.status = SequenceStatus.FINISHED;
  }
}

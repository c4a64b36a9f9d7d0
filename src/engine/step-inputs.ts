/**
 * Turns a scheduled step into the flat int32 arrays every backend consumes. Buffers are allocated once at
 * their maximum size; each step fills a prefix of them (no allocation that grows with context length).
 */
import type { StepInputs } from "../backend/backend.ts";
import type { SchedulerOutput } from "./scheduler.ts";

export class StepInputBuilder {
  private readonly tokenIds: Int32Array;
  private readonly positions: Int32Array;
  private readonly queryStart: Int32Array;
  private readonly seqLens: Int32Array;
  private readonly logitsRows: Int32Array;
  /** (token index, previous step's sampled row) of tokens still pending on the device (async scheduling). */
  private readonly fromSampled: Int32Array;
  /** LoRA: each token's adapter slot (−1: the base model); null for an engine without adapters. */
  private readonly loraSlots: Int32Array | null;
  /** Block-table row width: the max for the model length (static shapes, for CUDA graphs) or per step. */
  readonly maxBlocksPerSeq: number;
  // Which sequence (id, preemption count) each block-table row holds, so a decode step only writes what
  // changed in it since the previous step.
  private readonly rowSeq: Int32Array;
  private readonly rowEpoch: Int32Array;
  /**
   * Per KV cache group (one, unless the layout is hybrid): each token's slot, the block tables, and per row how
   * many blocks are written and how many leading entries a sliding window had given back when it was written.
   */
  private readonly groups: { slotMapping: Int32Array; blockTables: Int32Array; rowBlocks: Int32Array; rowOutside: Int32Array }[];
  private rowWidth = 0;
  /** For the last build: index (into scheduled) and position of the token each prompt-logprob row predicts from. */
  readonly promptRowSeq: Int32Array;
  readonly promptRowPos: Int32Array;
  numPromptRows = 0;

  /**
   * `allRows`: every token's row is an output row (MEAN / CLS pooling, which read each prompt token's hidden
   * state), in token order, instead of one sampling row per sequence.
   */
  constructor(maxNumBatchedTokens: number, maxNumSeqs: number, maxModelLen: number, readonly blockSize: number, readonly fullWidthBlockTables = false, lora = false, readonly numKvGroups = 1, readonly allRows = false) {
    this.maxBlocksPerSeq = Math.ceil(maxModelLen / blockSize);
    this.tokenIds = new Int32Array(maxNumBatchedTokens);
    this.positions = new Int32Array(maxNumBatchedTokens);
    this.queryStart = new Int32Array(maxNumSeqs + 1);
    this.seqLens = new Int32Array(maxNumSeqs);
    // Sampling rows first, then rows whose logits score prompt tokens (prompt_logprobs).
    this.logitsRows = new Int32Array(maxNumSeqs + maxNumBatchedTokens);
    this.fromSampled = new Int32Array(2 * maxNumSeqs);
    this.loraSlots = lora ? new Int32Array(maxNumBatchedTokens) : null;
    this.promptRowSeq = new Int32Array(maxNumBatchedTokens);
    this.promptRowPos = new Int32Array(maxNumBatchedTokens);
    this.rowSeq = new Int32Array(maxNumSeqs).fill(-1);
    this.rowEpoch = new Int32Array(maxNumSeqs);
    this.groups = Array.from({ length: numKvGroups }, () => ({
      slotMapping: new Int32Array(maxNumBatchedTokens), blockTables: new Int32Array(maxNumSeqs * this.maxBlocksPerSeq),
      rowBlocks: new Int32Array(maxNumSeqs), rowOutside: new Int32Array(maxNumSeqs),
    }));
  }

  /**
   * Like build, for a CUDA-graph replay of a pure decode step padded to `slots` sequences: padding rows
   * get token 0 at position 0, KV slot −1 (not stored), context length 1 and block 0, and ask for logits
   * that nobody reads. Requires full-width block tables (the graph's shapes are fixed).
   */
  buildPadded(out: SchedulerOutput, slots: number): StepInputs {
    const real = this.build(out);
    const b = real.seqLens.length;
    if (this.numPromptRows > 0) throw new Error("buildPadded: a decode step has no prompt rows");
    if (!this.fullWidthBlockTables) throw new Error("buildPadded needs full-width block tables");
    if (real.tokenIds.length !== b) throw new Error("buildPadded is for decode steps (one token per sequence)");
    for (let i = b; i < slots; i++) {
      this.tokenIds[i] = 0;
      this.positions[i] = 0;
      this.queryStart[i + 1] = i + 1;
      this.seqLens[i] = 1;
      for (const g of this.groups) {
        g.slotMapping[i] = -1;
        g.blockTables[i * this.maxBlocksPerSeq] = 0;
      }
      this.logitsRows[i] = i;
      this.rowSeq[i] = -1;
      if (this.loraSlots) this.loraSlots[i] = -1;
    }
    return {
      tokenIds: this.tokenIds.subarray(0, slots), positions: this.positions.subarray(0, slots),
      queryStart: this.queryStart.subarray(0, slots + 1), seqLens: this.seqLens.subarray(0, slots),
      ...this.groupInputs(slots, slots, this.maxBlocksPerSeq),
      logitsRows: this.logitsRows.subarray(0, slots), tokensFromSampled: real.tokensFromSampled,
      ...(this.loraSlots ? { loraSlots: this.loraSlots.subarray(0, slots) } : {}),
    };
  }

  /** The groups' slot mappings (`tokens`) and block tables (`rows` of `width`): the first group's as the step's own, the others as kvGroups. */
  private groupInputs(tokens: number, rows: number, width: number): Pick<StepInputs, "slotMapping" | "blockTables" | "maxBlocksPerSeq" | "kvGroups"> {
    const [first, ...rest] = this.groups.map((g) => ({ slotMapping: g.slotMapping.subarray(0, tokens), blockTables: g.blockTables.subarray(0, rows * width) }));
    return { ...first!, maxBlocksPerSeq: width, ...(rest.length > 0 ? { kvGroups: rest } : {}) };
  }

  build(out: SchedulerOutput): StepInputs {
    const bs = this.blockSize;
    const sched = out.scheduled;
    let width = this.maxBlocksPerSeq;
    if (!this.fullWidthBlockTables) {
      let most = 1;
      for (let i = 0; i < sched.length; i++) most = Math.max(most, sched[i]!.seq.blockTable.length);
      // Rounded up so the width (and with it every row's offset) changes rarely.
      width = Math.min(this.maxBlocksPerSeq, Math.ceil(most / 16) * 16);
    }
    if (width !== this.rowWidth) {
      this.rowSeq.fill(-1);
      this.rowWidth = width;
    }
    let t = 0, rows = 0, pending = 0, anyPromptLogprobs = false;
    const groups = this.groups;
    for (let i = 0; i < sched.length; i++) {
      const { seq, start, numNewTokens, samples } = sched[i]!;
      if (seq.params.prompt_logprobs !== null && start < seq.numPromptTokens - 1) anyPromptLogprobs = true;
      const ids = seq.tokens, tables = seq.blockTables;
      // Known tokens, then draft tokens (speculative decoding), which the sequence keeps after its known ones.
      const stored = seq.numTokens + seq.numDrafts;
      this.queryStart[i] = t;
      for (let j = 0; j < numNewTokens; j++, t++) {
        const pos = start + j;
        if (pos < stored) this.tokenIds[t] = ids[pos]!;
        else {
          // The token the running step samples for this sequence: only that one can be pending here.
          if (pos !== seq.numTokens || seq.numPlaceholders !== 1) throw new Error(`sequence ${seq.seqId}: position ${pos} is not its one pending token (${seq.numTokens} known, ${seq.numPlaceholders} pending)`);
          this.tokenIds[t] = 0;
          this.fromSampled[2 * pending] = t;
          this.fromSampled[2 * pending + 1] = seq.placeholderRow;
          pending++;
        }
        this.positions[t] = pos;
        if (this.allRows) this.logitsRows[rows++] = t;
        const block = (pos / bs) | 0, offset = pos % bs;
        for (let g = 0; g < groups.length; g++) groups[g]!.slotMapping[t] = tables[g]![block]! * bs + offset;
        if (this.loraSlots) this.loraSlots[t] = seq.loraSlot;
      }
      this.seqLens[i] = start + numNewTokens;
      const row = i * width;
      const same = this.rowSeq[i] === seq.seqId && this.rowEpoch[i] === seq.numPreemptions;
      for (let g = 0; g < groups.length; g++) {
        const G = groups[g]!;
        writeRow(G.blockTables, row, tables[g]!, same, G.rowBlocks, G.rowOutside, i, seq.blocksOutsideWindow[g] ?? 0);
      }
      this.rowSeq[i] = seq.seqId;
      this.rowEpoch[i] = seq.numPreemptions;
      // The last token's logits sample the next one; with drafts, each draft's previous token's logits check it.
      if (samples && !this.allRows) for (let d = seq.numDrafts; d >= 0; d--) this.logitsRows[rows++] = t - 1 - d;
    }
    this.queryStart[sched.length] = t;
    // prompt_logprobs: every computed prompt position except the last predicts the next prompt token.
    let k = 0;
    for (let i = 0; anyPromptLogprobs && i < sched.length; i++) {
      const { seq, start, numNewTokens } = sched[i]!;
      if (seq.params.prompt_logprobs === null) continue;
      const last = Math.min(start + numNewTokens, seq.numPromptTokens - 1);
      for (let pos = start; pos < last; pos++, k++) {
        this.logitsRows[rows++] = this.queryStart[i]! + (pos - start);
        this.promptRowSeq[k] = i;
        this.promptRowPos[k] = pos;
      }
    }
    this.numPromptRows = k;
    return {
      tokenIds: this.tokenIds.subarray(0, t),
      positions: this.positions.subarray(0, t),
      queryStart: this.queryStart.subarray(0, sched.length + 1),
      seqLens: this.seqLens.subarray(0, sched.length),
      ...this.groupInputs(t, sched.length, width),
      logitsRows: this.logitsRows.subarray(0, rows),
      tokensFromSampled: this.fromSampled.subarray(0, 2 * pending),
      ...(this.loraSlots ? { loraSlots: this.loraSlots.subarray(0, t) } : {}),
    };
  }
}

/**
 * Writes a sequence's block table into its row: only what changed since the row was last written for the
 * same sequence (`same`) — blocks added since, and entries a sliding window has given back since.
 */
function writeRow(dst: Int32Array, row: number, table: readonly number[], same: boolean, rowBlocks: Int32Array, rowOutside: Int32Array, i: number, outside: number): void {
  let from = 0;
  if (same && rowBlocks[i]! <= table.length) {
    from = rowBlocks[i]!;
    for (let b = rowOutside[i]!; b < Math.min(outside, from); b++) dst[row + b] = table[b]!;
  }
  for (let b = from; b < table.length; b++) dst[row + b] = table[b]!;
  rowBlocks[i] = table.length;
  rowOutside[i] = outside;
}

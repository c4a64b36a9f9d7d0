/**
 * Sampling on the GPU: per-row parameters and logit edits in, sampled ids (and logprobs) out, through two
 * scratch sets used in turn. With async scheduling a step samples into one while the previous step's ids,
 * in the other, still feed this step's inputs (CudaBackend.uploadStep) and travel to the host; wait()
 * blocks only on this sampling's copy (an event), never on the whole stream.
 */
import type { PendingSample } from "../backend.ts";
import { rowLogitEdits, type SamplingBatch, type SamplerOutput, type TokenLogprobs } from "../../engine/sampling-batch.ts";
import type { CudaTensor } from "./cuda-backend.ts";
import type { DeviceDriver } from "./driver.ts";
import type { Kernels } from "./kernels.ts";
import type { PinnedBuffer } from "./pinned-buffer.ts";

const MAX_TOP_LOGPROBS = 20;
const I = (i: number) => ({ i });

/** What the sampler uses of its backend: the stream, kernels, and memory it owns (freed by its close()). */
export interface SamplerDevice {
  readonly driver: DeviceDriver;
  readonly stream: bigint;
  readonly kernels: Kernels;
  deviceAlloc(bytes: number): bigint;
  deviceFree(p: bigint): void;
  pinnedBuffer(bytes: number): PinnedBuffer;
  freePinned(b: PinnedBuffer): void;
  synchronize(): void;
  /** Waits for the work queued before the event's record (or more: see CudaBackend). */
  waitForEvent(event: bigint): void;
}

/**
 * The rows whose last output token is pending (async scheduling) and has penalties to add, laid out for
 * pending_penalty_f32: per fix 6 ints (row, sampled row, offset/length of its sorted distinct output
 * tokens and of its prompt tokens in `tokens`) and 3 floats (presence, frequency, repetition).
 */
function pendingPenaltyFixes(b: SamplingBatch): { rows: number[]; ints: number[]; floats: number[]; tokens: number[] } {
  const rows: number[] = [], ints: number[] = [], floats: number[] = [], tokens: number[] = [];
  const sortedDistinct = (a: ArrayLike<number>) => [...new Set(Array.from(a))].sort((x, y) => x - y);
  for (let r = 0; r < b.numRows; r++) {
    const pen = b.penalties[r];
    if (!pen || (pen.pendingRow ?? -1) < 0) continue;
    const outs = sortedDistinct(pen.outputTokens), prompt = pen.repetition !== 1 ? sortedDistinct(pen.promptTokens) : [];
    rows.push(r);
    ints.push(r, pen.pendingRow!, tokens.length, outs.length, tokens.length + outs.length, prompt.length);
    for (const t of outs) tokens.push(t);
    for (const t of prompt) tokens.push(t);
    floats.push(pen.presence, pen.frequency, pen.repetition);
  }
  return { rows, ints, floats, tokens };
}

/** One sampling scratch set: device and page-locked buffers, and the event after its results' copy. */
interface SamplingScratch {
  dev: bigint;
  host: PinnedBuffer;
  capacity: number;
  done: bigint;
}

export class CudaSampler {
  private readonly scratch: (SamplingScratch | null)[] = [null, null];
  private turn = 0;
  /** Device address of the last sampling's ids (0n: none yet). */
  lastSampledIds = 0n;

  constructor(private readonly device: SamplerDevice) {}

  /** Forgets the scratch sets (their memory was freed with the backend's). */
  reset(): void {
    this.scratch[0] = this.scratch[1] = null;
    this.lastSampledIds = 0n;
  }

  /** The next scratch set (in turn), grown to hold `rows` rows, `edits` logit edits and `extraBytes` more. */
  private buffers(rows: number, edits: number, extraBytes: number): SamplingScratch {
    const need = 16 * 1024 + rows * (4 * 10 + MAX_TOP_LOGPROBS * 8 + 16) + edits * 20 + extraBytes;
    const turn = this.turn;
    this.turn ^= 1;
    const old = this.scratch[turn];
    if (old && old.capacity >= need) return old;
    this.device.synchronize(); // queued work may still use the old set
    if (old) {
      this.device.deviceFree(old.dev);
      this.device.freePinned(old.host);
    }
    const capacity = Math.max(need, (old?.capacity ?? 0) * 2);
    const set = { dev: this.device.deviceAlloc(capacity), host: this.device.pinnedBuffer(capacity), capacity, done: old?.done ?? this.device.driver.createEvent() };
    this.scratch[turn] = set;
    return set;
  }

  /**
   * Queues the logit edits, logprobs and sampling kernels and the copy of their results to the host.
   * wait() blocks only on this sampling's copy, so the host can prepare and queue the next step meanwhile
   * (the logits may be overwritten by then: everything wait() reads is copied out with the ids).
   */
  sample(logits: CudaTensor, b: SamplingBatch): PendingSample {
    const n = b.numRows, V = logits.width;
    // Sparse logit edits (penalties, bias, banned tokens): one per (row, token), keyed row · V + token.
    const edits = new Map<number, { row: number; token: number; rep: number; add: number }>();
    for (let r = 0; r < n; r++) {
      if (!b.penalties[r] && !b.logitBias[r] && !b.banned[r]) continue;
      for (const e of rowLogitEdits(b, r, V).values()) edits.set(r * V + e.token, { row: r, ...e });
    }
    const E = edits.size;
    const fixes = pendingPenaltyFixes(b), F = fixes.rows.length, T = fixes.tokens.length;
    if (F > 0 && this.lastSampledIds === 0n) throw new Error("sample: a pending token's penalties, but nothing was sampled yet");
    // Structured outputs: the rows with a grammar and their bitmasks of allowed tokens.
    const W = Math.ceil(V / 32), maskRows: number[] = [];
    for (let r = 0; r < n; r++) if (b.allowedTokens[r]) maskRows.push(r);
    const M = maskRows.length;
    const scratch = this.buffers(n, E, 4 * (11 * F + T) + 4 * M * (W + 1) + 128), { dev, host } = scratch;
    // Layout (byte offsets, 16-aligned): rows | temperature | topK | topP | minP | seeds(2×u32) | streams | steps |
    // out ids | lse | top ids | top lp | sampled token's logit | edit rows | edit tokens | edit rep | edit add |
    // fix ints | fix floats | fix token lists | edit original | fix token | fix original | mask rows | masks
    let off = 0;
    const seg = (bytes: number) => { const o = off; off += Math.ceil(bytes / 16) * 16; return o; };
    const oRows = seg(4 * n), oTemp = seg(4 * n), oTopK = seg(4 * n), oTopP = seg(4 * n), oMinP = seg(4 * n), oSeed = seg(8 * n), oStream = seg(4 * n), oStep = seg(4 * n);
    const inputBytes = off;
    const oOut = seg(4 * n), oLse = seg(4 * n), oTopIds = seg(4 * n * MAX_TOP_LOGPROBS), oTopLp = seg(4 * n * MAX_TOP_LOGPROBS), oTokLogit = seg(4 * n);
    const oER = seg(4 * E), oET = seg(4 * E), oERep = seg(4 * E), oEAdd = seg(4 * E);
    const oFI = seg(24 * F), oFF = seg(12 * F), oFT = seg(4 * T), oEOrig = seg(4 * E), oFTok = seg(4 * F), oFOrig = seg(4 * F);
    const oMR = seg(4 * M), oMasks = seg(4 * M * W);
    const buf = host.bytes.buffer, base = host.bytes.byteOffset;
    const i32 = (o: number, len: number) => new Int32Array(buf, base + o, len);
    const f32 = (o: number, len: number) => new Float32Array(buf, base + o, len);
    const rowsArr = i32(oRows, n);
    for (let r = 0; r < n; r++) rowsArr[r] = r;
    f32(oTemp, n).set(b.temperature.subarray(0, n));
    i32(oTopK, n).set(b.topK.subarray(0, n));
    f32(oTopP, n).set(b.topP.subarray(0, n));
    f32(oMinP, n).set(b.minP.subarray(0, n));
    const seeds = new Uint32Array(buf, base + oSeed, 2 * n);
    for (let r = 0; r < n; r++) { const s = b.seed[r]!; seeds[2 * r] = s >>> 0; seeds[2 * r + 1] = Math.floor(s / 4294967296) >>> 0; }
    i32(oStream, n).set(b.stream.subarray(0, n));
    i32(oStep, n).set(b.step.subarray(0, n));
    const er = i32(oER, E), et = i32(oET, E), erep = f32(oERep, E), eadd = f32(oEAdd, E);
    let e = 0;
    for (const v of edits.values()) { er[e] = v.row; et[e] = v.token; erep[e] = v.rep; eadd[e] = v.add; e++; }
    i32(oFI, 6 * F).set(fixes.ints);
    f32(oFF, 3 * F).set(fixes.floats);
    i32(oFT, T).set(fixes.tokens);
    this.device.driver.copyToDeviceAsync(dev, host.addr, inputBytes, this.device.stream);
    if (E + F > 0) this.device.driver.copyToDeviceAsync(dev + BigInt(oER), host.addr + BigInt(oER), oEOrig - oER, this.device.stream);
    if (M > 0) {
      const mr = i32(oMR, M), masks = i32(oMasks, M * W);
      for (let m = 0; m < M; m++) {
        const mask = b.allowedTokens[maskRows[m]!]!;
        mr[m] = maskRows[m]!;
        const row = masks.subarray(m * W, (m + 1) * W);
        row.set(mask.length > W ? mask.subarray(0, W) : mask);
        if (mask.length < W) row.fill(0, mask.length); // ids past the grammar's vocabulary: never allowed
      }
      this.device.driver.copyToDeviceAsync(dev + BigInt(oMR), host.addr + BigInt(oMR), oMasks + 4 * M * W - oMR, this.device.stream);
    }

    // Raw logprobs first (vLLM's default), for the rows that asked for them.
    // Rows that want logprobs and how many top ones, taken now: the batch is the sampler's, rebuilt for the
    // next step before wait() reads these results (async scheduling).
    let maxTop = -1;
    const lpRows: number[] = [], lpTop: number[] = [];
    for (let r = 0; r < n; r++) if (b.numLogprobs[r]! >= 0) { lpRows.push(r); lpTop.push(b.numLogprobs[r]!); maxTop = Math.max(maxTop, b.numLogprobs[r]!); }
    const d = (o: number) => ({ p: dev + BigInt(o) });
    // The grammar's mask first: logprobs, edits and sampling all see only the allowed tokens (as vLLM).
    if (M > 0) this.device.kernels.launch("mask_tokens_f32", [M, Math.ceil(W / 256)], 256, [{ p: logits.ptr }, I(V), d(oMR), d(oMasks), I(W)]);
    if (lpRows.length > 0) {
      // logprobs_f32 reads row ids from the rows segment: all rows, filtered on the host afterwards.
      this.device.kernels.launch("logprobs_f32", [n], 1024, [{ p: logits.ptr }, I(V), d(oRows), d(oLse), d(oTopIds), d(oTopLp), I(Math.min(maxTop, MAX_TOP_LOGPROBS))]);
    }
    if (E > 0) this.device.kernels.launch("apply_edits_f32", [Math.ceil(E / 256)], 256, [{ p: logits.ptr }, I(V), d(oER), d(oET), d(oERep), d(oEAdd), d(oEOrig), I(E)]);
    // Penalties of pending tokens (async scheduling), from the last sampling's ids: after the known history's.
    if (F > 0) this.device.kernels.launch("pending_penalty_f32", [Math.ceil(F / 256)], 256, [{ p: logits.ptr }, I(V), d(oFI), d(oFF), d(oFT), { p: this.lastSampledIds }, d(oFTok), d(oFOrig), I(F)]);
    this.device.kernels.launch("sample_f32", [n], 1024, [{ p: logits.ptr }, I(V), d(oRows), d(oTemp), d(oTopK), d(oTopP), d(oMinP), d(oSeed), d(oStream), d(oStep), d(oOut)]);
    // The sampled token's logit before any edit, for its logprob: the saved original if it was edited, else this.
    if (lpRows.length > 0) this.device.kernels.launch("sampled_logit_f32", [Math.ceil(n / 256)], 256, [{ p: logits.ptr }, I(V), d(oOut), d(oTokLogit), I(n)]);
    this.lastSampledIds = dev + BigInt(oOut);
    const outEnd = lpRows.length > 0 ? oTokLogit + 4 * n : oOut + 4 * n;
    this.device.driver.copyToHostAsync(host.addr + BigInt(oOut), dev + BigInt(oOut), outEnd - oOut, this.device.stream);
    if (lpRows.length > 0 && E + F > 0) this.device.driver.copyToHostAsync(host.addr + BigInt(oEOrig), dev + BigInt(oEOrig), oFOrig + 4 * F - oEOrig, this.device.stream);
    this.device.driver.record(scratch.done, this.device.stream);

    const read = (): SamplerOutput => {
      const tokenIds = i32(oOut, n).slice();
      const logprobs: (TokenLogprobs | null)[] = new Array(n).fill(null);
      if (lpRows.length === 0) return { tokenIds, logprobs };
      const lse = f32(oLse, n), topIds = i32(oTopIds, n * MAX_TOP_LOGPROBS), topLp = f32(oTopLp, n * MAX_TOP_LOGPROBS);
      const tokLogit = f32(oTokLogit, n), orig = f32(oEOrig, E), fixTok = i32(oFTok, F), fixOrig = f32(oFOrig, F);
      const editIndex = new Map<number, number>();
      let q = 0;
      for (const key of edits.keys()) editIndex.set(key, q++);
      for (let i = 0; i < lpRows.length; i++) {
        const r = lpRows[i]!;
        // The raw logit: saved by the edit or the pending-token fix that changed it, else as sampled.
        const tok = tokenIds[r]!, ei = editIndex.get(r * V + tok), fi = fixes.rows.indexOf(r);
        const raw = ei !== undefined ? orig[ei]! : fi >= 0 && fixTok[fi] === tok ? fixOrig[fi]! : tokLogit[r]!;
        const top: { tokenId: number; logprob: number }[] = [];
        for (let k = 0; k < lpTop[i]!; k++) top.push({ tokenId: topIds[r * MAX_TOP_LOGPROBS + k]!, logprob: topLp[r * MAX_TOP_LOGPROBS + k]! });
        logprobs[r] = { logprob: raw - lse[r]!, top };
      }
      return { tokenIds, logprobs };
    };
    let result: SamplerOutput | null = null;
    return {
      wait: () => {
        if (!result) {
          this.device.waitForEvent(scratch.done);
          result = read();
        }
        return result;
      },
    };
  }
}

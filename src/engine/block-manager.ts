/**
 * Paged KV-cache blocks: reference counts, an LRU free list whose blocks keep their cached content until
 * reused, and prefix caching by chained hashes of full blocks (a hit also requires equal token ids).
 *
 * With a hybrid layout (kv-cache-layout.ts) each sequence has one block table per group of layers, all
 * of the same length and drawing on this one pool; a sliding-window group's table gives back the blocks
 * that left the window (their entries become NULL_BLOCK, block 0, which is then never handed out).
 */
import type { KvCacheLayout } from "../model/kv-cache-layout.ts";
import type { Sequence } from "./sequence.ts";

const NONE = -1;
/** The entry of a block that fell out of a sliding window: reserved, never written, read only under a mask. */
export const NULL_BLOCK = 0;

export interface CachedPrefix {
  /** Full blocks found at the start of the sequence: their tokens count as computed. */
  numBlocks: number;
  /** Their chained hashes. */
  hashes: number[];
  /** Per group, the blocks to share (NULL_BLOCK where a sliding window no longer needs one). */
  blocks: number[][];
}

export class BlockManager {
  private readonly refCount: Int32Array;
  /** Hash under which a block is registered in `cached`, or null. */
  private readonly blockHash: (number | null)[];
  /** Token ids of each registered block (numBlocks × blockSize), to verify hits. */
  private readonly blockTokens: Int32Array;
  /** Per group: hash → registered block. */
  private readonly cached: Map<number, number>[];
  /** The group a registered block is registered in. */
  private readonly blockGroup: Int32Array;
  /** Each group's sliding window (0: full attention). */
  readonly windows: number[];
  /** Blocks that are never handed out: the null block when a group slides. */
  readonly numReserved: number;
  private readonly slides: boolean;
  /** The groups with a sliding window. */
  private readonly slidingGroups: number[];
  /** Prefix found for no block (prompt_logprobs requests, or prefix caching off). */
  readonly noCachedPrefix: CachedPrefix;
  // Free list: doubly linked, head is evicted first.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NONE;
  private tail = NONE;
  private numFree = 0;
  /** Prompt tokens looked up / found in the prefix cache (vLLM's prefix_cache_queries / hits). */
  prefixCacheQueries = 0;
  prefixCacheHits = 0;

  constructor(readonly numBlocks: number, readonly blockSize: number, readonly enablePrefixCaching = true, layout: KvCacheLayout | null = null) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new Error(`number of KV blocks must be a positive integer, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`block size must be a positive integer, got ${blockSize}`);
    this.windows = layout ? layout.groups.map((g) => g.window) : [0];
    this.slidingGroups = this.windows.flatMap((w, g) => (w > 0 ? [g] : []));
    this.slides = this.slidingGroups.length > 0;
    this.numReserved = this.slides ? 1 : 0;
    if (numBlocks <= this.numReserved) throw new Error(`a KV cache with sliding-window groups needs at least 2 blocks (one is the null block), got ${numBlocks}`);
    this.cached = this.windows.map(() => new Map());
    this.noCachedPrefix = { numBlocks: 0, hashes: [], blocks: this.windows.map(() => []) };
    this.refCount = new Int32Array(numBlocks);
    this.blockHash = new Array(numBlocks).fill(null);
    this.blockGroup = new Int32Array(numBlocks);
    this.blockTokens = new Int32Array(enablePrefixCaching ? numBlocks * blockSize : 0);
    this.prev = new Int32Array(numBlocks);
    this.next = new Int32Array(numBlocks);
    for (let b = this.numReserved; b < numBlocks; b++) this.pushTail(b);
  }

  get numGroups(): number {
    return this.windows.length;
  }

  get numFreeBlocks(): number {
    return this.numFree;
  }

  /** Blocks that can be handed out (all but the reserved null block). */
  get numUsableBlocks(): number {
    return this.numBlocks - this.numReserved;
  }

  get numUsedBlocks(): number {
    return this.numUsableBlocks - this.numFree;
  }

  /** Fraction of blocks in use (vLLM's kv_cache_usage_perc). */
  get usage(): number {
    return this.numUsedBlocks / this.numUsableBlocks;
  }

  private pushTail(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = NONE;
    if (this.tail !== NONE) this.next[this.tail] = b;
    else this.head = b;
    this.tail = b;
    this.numFree++;
  }

  private pushHead(b: number): void {
    this.next[b] = this.head;
    this.prev[b] = NONE;
    if (this.head !== NONE) this.prev[this.head] = b;
    else this.tail = b;
    this.head = b;
    this.numFree++;
  }

  private unlink(b: number): void {
    const p = this.prev[b]!, n = this.next[b]!;
    if (p !== NONE) this.next[p] = n;
    else this.head = n;
    if (n !== NONE) this.prev[n] = p;
    else this.tail = p;
    this.numFree--;
  }

  /** The hash of one full block, chained to its parent's. */
  private hashBlock(tokens: Int32Array, start: number, parent: number): number {
    return chainHash(tokens.subarray(start, start + this.blockSize), parent);
  }

  /**
   * Where a sequence's chain of block hashes starts: 0, or its request's cache_salt and LoRA adapter hashed
   * (never 0), so requests with different salts (vLLM's cache_salt) or adapters (whose K/V differ) never
   * share cached blocks.
   */
  private chainRoot(seq: Sequence): number {
    const salt = seq.params.cache_salt;
    const root = salt === null ? 0 : chainHash(salt, 0) || 1;
    return seq.lora === null ? root : chainHash(`lora ${seq.lora.id}`, root) || 1;
  }

  private sameTokens(block: number, tokens: Int32Array, start: number): boolean {
    const o = block * this.blockSize;
    for (let i = 0; i < this.blockSize; i++) if (this.blockTokens[o + i] !== tokens[start + i]) return false;
    return true;
  }

  /** The block registered for hash `h` in group `g` that holds tokens[start …] (a verified hit), or −1. */
  private lookup(g: number, h: number, tokens: Int32Array, start: number): number {
    const b = this.cached[g]!.get(h);
    return b === undefined || !this.sameTokens(b, tokens, start) ? -1 : b;
  }

  /**
   * The longest run of cached full blocks at the start of `seq`, never covering its last token (at least
   * one token is always computed so the step produces logits). A full-attention group needs every block of
   * the run cached; a sliding group only those its window still sees from the first token after the run.
   */
  findCachedPrefix(seq: Sequence): CachedPrefix {
    if (!this.enablePrefixCaching) return this.noCachedPrefix;
    const G = this.windows.length, bs = this.blockSize, tokens = seq.tokens;
    const maxBlocks = Math.floor((seq.numTokens - 1) / bs);
    const hashes: number[] = [];
    const found: number[][] = this.windows.map(() => []);
    let parent = this.chainRoot(seq);
    chain: for (let i = 0; i < maxBlocks; i++) {
      const h = this.hashBlock(tokens, i * bs, parent);
      for (let g = 0; g < G; g++) {
        const b = this.lookup(g, h, tokens, i * bs);
        if (b < 0 && this.windows[g] === 0) break chain;
        found[g]!.push(b);
      }
      hashes.push(h);
      parent = h;
    }
    let n = hashes.length;
    if (this.slides) {
      // Each sliding group: the hits that end at block i without a gap (run[i]); the run must reach back to the window's start.
      const runs = this.windows.map((w, g) => {
        if (w === 0) return null;
        const run = new Int32Array(n);
        for (let i = 0; i < n; i++) run[i] = found[g]![i]! < 0 ? 0 : (i > 0 ? run[i - 1]! : 0) + 1;
        return run;
      });
      for (; n > 0; n--) if (this.windows.every((w, g) => w === 0 || runs[g]![n - 1]! >= n - this.firstInWindow(n * bs, w))) break;
    }
    if (n === 0) return this.noCachedPrefix;
    const blocks = found.map((f, g) => {
      const first = this.windows[g]! > 0 ? this.firstInWindow(n * bs, this.windows[g]!) : 0;
      const out = f.slice(0, n);
      out.fill(NULL_BLOCK, 0, first);
      return out;
    });
    hashes.length = n;
    return { numBlocks: n, hashes, blocks };
  }

  /** The first block a query at position `pos` sees through a window of `w` (the blocks before it are unneeded). */
  private firstInWindow(pos: number, w: number): number {
    return Math.floor(Math.max(0, pos - w + 1) / this.blockSize);
  }

  /** Blocks needed to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /**
   * Makes room for `numNewTokens` more tokens of `seq` (after its computed ones). On first admission pass
   * the cached prefix from findCachedPrefix: its blocks are shared and count as computed. Returns false,
   * changing nothing, when there are not enough free blocks (blocks that left a sliding window are given
   * back either way: nothing reads them again).
   */
  allocateSlots(seq: Sequence, numNewTokens: number, prefix?: CachedPrefix): boolean {
    const G = this.windows.length, tables = seq.blockTables;
    while (tables.length < G) tables.push([]);
    while (seq.blocksOutsideWindow.length < G) seq.blocksOutsideWindow.push(0);
    if (prefix === undefined && this.slides) this.freeOutsideWindow(seq, seq.numComputedTokens);
    const table0 = tables[0]!;
    if (prefix === undefined) {
      // Fast path (every decode step): no new block needed, at most a block became full.
      const total = seq.numComputedTokens + numNewTokens;
      if (total <= table0.length * this.blockSize) {
        if (this.enablePrefixCaching && Math.floor(total / this.blockSize) > seq.blockHashes.length) this.registerFullBlocks(seq, Math.min(total, seq.numTokens));
        return true;
      }
    }
    const numCached = prefix?.numBlocks ?? 0;
    const computed = seq.numComputedTokens + numCached * this.blockSize;
    // Every group's table has the same length: the new blocks are the same count in each.
    const perGroup = this.blocksFor(computed + numNewTokens) - table0.length - numCached;
    let reclaimed = 0;
    if (prefix) prefix.blocks.forEach((blocks, g) => { for (const b of blocks) if (!this.isNull(g, b) && this.refCount[b] === 0) reclaimed++; });
    if (perGroup * G > this.numFree - reclaimed) return false;

    if (prefix && numCached > 0) {
      for (let g = 0; g < G; g++) {
        const blocks = prefix.blocks[g]!, table = tables[g]!;
        let outside = 0;
        for (const b of blocks) {
          if (this.isNull(g, b)) outside++;
          else {
            if (this.refCount[b] === 0) this.unlink(b);
            this.refCount[b]!++;
          }
          table.push(b);
        }
        seq.blocksOutsideWindow[g] = outside;
      }
      for (const h of prefix.hashes) seq.blockHashes.push(h);
      seq.numComputedTokens = computed;
    }
    if (prefix) {
      const queried = seq.numTokens;
      this.prefixCacheQueries += queried;
      this.prefixCacheHits += numCached * this.blockSize;
      seq.numCachedTokens = numCached * this.blockSize;
    }
    for (let g = 0; g < G; g++) for (let i = 0; i < perGroup; i++) tables[g]!.push(this.takeFreeBlock());
    if (this.enablePrefixCaching) this.registerFullBlocks(seq, Math.min(computed + numNewTokens, seq.numTokens));
    return true;
  }

  /**
   * Sliding groups: gives back the blocks no query from position `computed` on can see (every key in them
   * is at least a window behind); their table entries become NULL_BLOCK.
   */
  private freeOutsideWindow(seq: Sequence, computed: number): void {
    const outside = seq.blocksOutsideWindow;
    for (const g of this.slidingGroups) {
      const table = seq.blockTables[g]!;
      const end = Math.min(this.firstInWindow(computed, this.windows[g]!), table.length);
      if (end <= outside[g]!) continue; // the usual decode step: no block left the window
      for (let i = outside[g]!; i < end; i++) {
        this.release(table[i]!);
        table[i] = NULL_BLOCK;
      }
      outside[g] = end;
    }
  }

  /** True for the null block in a sliding group's table (in a full group's, block 0 is a block like any other). */
  private isNull(g: number, b: number): boolean {
    return b === NULL_BLOCK && this.windows[g]! > 0;
  }

  /** Drops one reference to `b`; at none it goes on the free list (registered blocks at the tail: evicted last). */
  private release(b: number): void {
    const rc = --this.refCount[b]!;
    if (rc < 0) throw new Error(`BlockManager: block ${b} freed twice`);
    if (rc === 0) {
      if (this.blockHash[b] !== null) this.pushTail(b);
      else this.pushHead(b);
    }
  }

  private takeFreeBlock(): number {
    const b = this.head;
    if (b === NONE) throw new Error("BlockManager: no free block (allocateSlots checked capacity; this is a bug)");
    this.unlink(b);
    const h = this.blockHash[b];
    if (h !== null) {
      const cached = this.cached[this.blockGroup[b]!]!;
      if (cached.get(h!) === b) cached.delete(h!);
      this.blockHash[b] = null;
    }
    this.refCount[b] = 1;
    return b;
  }

  /**
   * Registers the blocks of `seq` that are full once its first `numTokens` tokens are computed. Callers
   * pass at most the known tokens: a block holding a placeholder (async scheduling) waits for a later step.
   */
  private registerFullBlocks(seq: Sequence, numTokens: number): void {
    const full = Math.floor(numTokens / this.blockSize);
    for (let i = seq.blockHashes.length; i < full; i++) {
      const parent = i === 0 ? this.chainRoot(seq) : seq.blockHashes[i - 1]!;
      const h = this.hashBlock(seq.tokens, i * this.blockSize, parent);
      seq.blockHashes.push(h);
      for (let g = 0; g < this.windows.length; g++) {
        const b = seq.blockTables[g]![i]!;
        // A block a sliding window gave back before it was registered (async scheduling's lag) is gone.
        if (this.isNull(g, b)) continue;
        const cached = this.cached[g]!;
        if (cached.has(h) || this.blockHash[b] !== null) continue;
        cached.set(h, b);
        this.blockHash[b] = h;
        this.blockGroup[b] = g;
        this.blockTokens.set(seq.tokens.subarray(i * this.blockSize, (i + 1) * this.blockSize), b * this.blockSize);
      }
    }
  }

  /** Releases all blocks of `seq`. Cached blocks keep their content (tail blocks are evicted first). */
  free(seq: Sequence): void {
    for (let g = 0; g < seq.blockTables.length; g++) {
      const table = seq.blockTables[g]!;
      for (let i = table.length - 1; i >= (seq.blocksOutsideWindow[g] ?? 0); i--) this.release(table[i]!);
      table.length = 0;
      if (g < seq.blocksOutsideWindow.length) seq.blocksOutsideWindow[g] = 0;
    }
    seq.blockHashes.length = 0;
    seq.numComputedTokens = 0;
  }

  /** Throws if the bookkeeping is inconsistent with the block tables of `live` sequences. */
  checkInvariants(live: Iterable<Sequence>): void {
    const counts = new Int32Array(this.numBlocks);
    for (const s of live) {
      const seen = new Set<number>();
      const length = s.blockTables[0]!.length;
      s.blockTables.forEach((table, g) => {
        if (table.length !== length) throw new Error(`seq ${s.seqId}: group ${g}'s table has ${table.length} blocks, group 0's ${length}`);
        const outside = s.blocksOutsideWindow[g] ?? 0;
        table.forEach((b, i) => {
          if (i < outside) {
            if (b !== NULL_BLOCK) throw new Error(`seq ${s.seqId}: group ${g}'s block ${i} left the window but is ${b}, not the null block`);
            return;
          }
          if (this.slides && b === NULL_BLOCK) throw new Error(`seq ${s.seqId} holds the null block in group ${g} at ${i}`);
          if (seen.has(b)) throw new Error(`seq ${s.seqId} holds block ${b} twice`);
          seen.add(b);
          counts[b]!++;
        });
      });
      if (s.numComputedTokens > length * this.blockSize) throw new Error(`seq ${s.seqId}: ${s.numComputedTokens} computed tokens exceed its ${length} blocks`);
    }
    let free = 0;
    for (let b = this.head, prev = NONE; b !== NONE; prev = b, b = this.next[b]!) {
      if (this.prev[b] !== prev) throw new Error(`free list broken at block ${b}`);
      if (this.refCount[b] !== 0) throw new Error(`block ${b} is on the free list with ref count ${this.refCount[b]}`);
      if (b < this.numReserved) throw new Error(`the reserved block ${b} is on the free list`);
      if (++free > this.numBlocks) throw new Error("free list has a cycle");
    }
    if (free !== this.numFree) throw new Error(`free list holds ${free} blocks, counter says ${this.numFree}`);
    let used = 0;
    for (let b = 0; b < this.numBlocks; b++) {
      if (this.refCount[b] !== counts[b]) throw new Error(`block ${b}: ref count ${this.refCount[b]} but ${counts[b]} sequences hold it`);
      if (counts[b]! > 0) used++;
    }
    if (used + free + this.numReserved !== this.numBlocks) throw new Error(`used ${used} + free ${free} + reserved ${this.numReserved} != total ${this.numBlocks}`);
    this.cached.forEach((cached, g) => {
      for (const [h, b] of cached) if (this.blockHash[b] !== h || this.blockGroup[b] !== g) throw new Error(`cache entry for block ${b} does not match its hash or group`);
    });
  }
}

/**
 * A 53-bit hash of `data` chained to `parent` (two seeded xxHash32, a plain number: cheaper than a 64-bit
 * BigInt on the decode path). A collision can only cost a cache hit: hits also compare the token ids.
 */
function chainHash(data: Int32Array | string, parent: number): number {
  const lo = Bun.hash.xxHash32(data, parent >>> 0);
  const hi = Bun.hash.xxHash32(data, (Math.floor(parent / 4294967296) ^ 0x9e3779b9) >>> 0) & 0x1fffff;
  return hi * 4294967296 + lo;
}

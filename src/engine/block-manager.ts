/**
 * Paged KV-cache blocks: reference counts, an LRU free list whose blocks keep their cached content until
 * reused, and prefix caching by chained hashes of full blocks (a hit also requires equal token ids).
 */
import type { Sequence } from "./sequence.ts";

const NONE = -1;
const NO_BLOCKS: readonly number[] = [];

export interface CachedPrefix {
  blocks: number[];
  hashes: number[];
}

export class BlockManager {
  private readonly refCount: Int32Array;
  /** Hash under which a block is registered in `cached`, or null. */
  private readonly blockHash: (number | null)[];
  /** Token ids of each registered block (numBlocks × blockSize), to verify hits. */
  private readonly blockTokens: Int32Array;
  private readonly cached = new Map<number, number>();
  // Free list: doubly linked, head is evicted first.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NONE;
  private tail = NONE;
  private numFree = 0;
  /** Prompt tokens looked up / found in the prefix cache (vLLM's prefix_cache_queries / hits). */
  prefixCacheQueries = 0;
  prefixCacheHits = 0;

  constructor(readonly numBlocks: number, readonly blockSize: number, readonly enablePrefixCaching = true) {
    if (!Number.isInteger(numBlocks) || numBlocks < 1) throw new Error(`number of KV blocks must be a positive integer, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new Error(`block size must be a positive integer, got ${blockSize}`);
    this.refCount = new Int32Array(numBlocks);
    this.blockHash = new Array(numBlocks).fill(null);
    this.blockTokens = new Int32Array(enablePrefixCaching ? numBlocks * blockSize : 0);
    this.prev = new Int32Array(numBlocks);
    this.next = new Int32Array(numBlocks);
    for (let b = 0; b < numBlocks; b++) this.pushTail(b);
  }

  get numFreeBlocks(): number {
    return this.numFree;
  }

  get numUsedBlocks(): number {
    return this.numBlocks - this.numFree;
  }

  /** Fraction of blocks in use (vLLM's kv_cache_usage_perc). */
  get usage(): number {
    return this.numUsedBlocks / this.numBlocks;
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

  /**
   * The longest run of cached full blocks at the start of `seq`, never covering its last token (at least
   * one token is always computed so the step produces logits).
   */
  findCachedPrefix(seq: Sequence): CachedPrefix {
    const result: CachedPrefix = { blocks: [], hashes: [] };
    if (!this.enablePrefixCaching) return result;
    const maxBlocks = Math.floor((seq.numTokens - 1) / this.blockSize);
    let parent = this.chainRoot(seq);
    for (let i = 0; i < maxBlocks; i++) {
      const h = this.hashBlock(seq.tokens, i * this.blockSize, parent);
      const b = this.cached.get(h);
      if (b === undefined || !this.sameTokens(b, seq.tokens, i * this.blockSize)) break;
      result.blocks.push(b);
      result.hashes.push(h);
      parent = h;
    }
    return result;
  }

  /** Blocks needed to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /**
   * Makes room for `numNewTokens` more tokens of `seq` (after its computed ones). On first admission pass
   * the cached prefix from findCachedPrefix: its blocks are shared and count as computed. Returns false,
   * changing nothing, when there are not enough free blocks.
   */
  allocateSlots(seq: Sequence, numNewTokens: number, prefix?: CachedPrefix): boolean {
    if (prefix === undefined) {
      // Fast path (every decode step): no new block needed, at most a block became full.
      const total = seq.numComputedTokens + numNewTokens;
      if (total <= seq.blockTable.length * this.blockSize) {
        if (this.enablePrefixCaching && Math.floor(total / this.blockSize) > seq.blockHashes.length) this.registerFullBlocks(seq, Math.min(total, seq.numTokens));
        return true;
      }
    }
    const cachedBlocks = prefix?.blocks ?? NO_BLOCKS;
    const computed = seq.numComputedTokens + cachedBlocks.length * this.blockSize;
    const needed = this.blocksFor(computed + numNewTokens) - seq.blockTable.length - cachedBlocks.length;
    let reclaimed = 0;
    for (const b of cachedBlocks) if (this.refCount[b] === 0) reclaimed++;
    if (needed > this.numFree - reclaimed) return false;

    if (prefix && cachedBlocks.length > 0) {
      for (let i = 0; i < cachedBlocks.length; i++) {
        const b = cachedBlocks[i]!;
        if (this.refCount[b] === 0) this.unlink(b);
        this.refCount[b]!++;
        seq.blockTable.push(b);
        seq.blockHashes.push(prefix.hashes[i]!);
      }
      seq.numComputedTokens = computed;
    }
    if (prefix) {
      const queried = seq.numTokens;
      this.prefixCacheQueries += queried;
      this.prefixCacheHits += cachedBlocks.length * this.blockSize;
      seq.numCachedTokens = cachedBlocks.length * this.blockSize;
    }
    for (let i = 0; i < needed; i++) seq.blockTable.push(this.takeFreeBlock());
    if (this.enablePrefixCaching) this.registerFullBlocks(seq, Math.min(computed + numNewTokens, seq.numTokens));
    return true;
  }

  private takeFreeBlock(): number {
    const b = this.head;
    if (b === NONE) throw new Error("BlockManager: no free block (allocateSlots checked capacity; this is a bug)");
    this.unlink(b);
    const h = this.blockHash[b];
    if (h !== null) {
      if (this.cached.get(h!) === b) this.cached.delete(h!);
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
      const b = seq.blockTable[i]!;
      if (this.cached.has(h) || this.blockHash[b] !== null) continue;
      this.cached.set(h, b);
      this.blockHash[b] = h;
      this.blockTokens.set(seq.tokens.subarray(i * this.blockSize, (i + 1) * this.blockSize), b * this.blockSize);
    }
  }

  /** Releases all blocks of `seq`. Cached blocks keep their content (tail blocks are evicted first). */
  free(seq: Sequence): void {
    for (let i = seq.blockTable.length - 1; i >= 0; i--) {
      const b = seq.blockTable[i]!;
      const rc = --this.refCount[b]!;
      if (rc < 0) throw new Error(`BlockManager: block ${b} freed twice`);
      if (rc === 0) {
        if (this.blockHash[b] !== null) this.pushTail(b);
        else this.pushHead(b);
      }
    }
    seq.blockTable.length = 0;
    seq.blockHashes.length = 0;
    seq.numComputedTokens = 0;
  }

  /** Throws if the bookkeeping is inconsistent with the block tables of `live` sequences. */
  checkInvariants(live: Iterable<Sequence>): void {
    const counts = new Int32Array(this.numBlocks);
    for (const s of live) {
      const seen = new Set<number>();
      for (const b of s.blockTable) {
        if (seen.has(b)) throw new Error(`seq ${s.seqId} holds block ${b} twice`);
        seen.add(b);
        counts[b]!++;
      }
      if (s.numComputedTokens > s.blockTable.length * this.blockSize) throw new Error(`seq ${s.seqId}: ${s.numComputedTokens} computed tokens exceed its ${s.blockTable.length} blocks`);
    }
    let free = 0;
    for (let b = this.head, prev = NONE; b !== NONE; prev = b, b = this.next[b]!) {
      if (this.prev[b] !== prev) throw new Error(`free list broken at block ${b}`);
      if (this.refCount[b] !== 0) throw new Error(`block ${b} is on the free list with ref count ${this.refCount[b]}`);
      if (++free > this.numBlocks) throw new Error("free list has a cycle");
    }
    if (free !== this.numFree) throw new Error(`free list holds ${free} blocks, counter says ${this.numFree}`);
    let used = 0;
    for (let b = 0; b < this.numBlocks; b++) {
      if (this.refCount[b] !== counts[b]) throw new Error(`block ${b}: ref count ${this.refCount[b]} but ${counts[b]} sequences hold it`);
      if (counts[b]! > 0) used++;
    }
    if (used + free !== this.numBlocks) throw new Error(`used ${used} + free ${free} != total ${this.numBlocks}`);
    for (const [h, b] of this.cached) if (this.blockHash[b] !== h) throw new Error(`cache entry for block ${b} does not match its hash`);
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

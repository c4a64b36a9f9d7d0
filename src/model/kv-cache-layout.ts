/**
 * How the KV cache is shared between layers (vLLM's hybrid KV cache manager). Layers with the same
 * attention span form groups of equal size G; each group has its own block table per sequence, and all
 * groups draw their blocks from one pool of pages, where a page holds a block of G layers: layer j of
 * every group lives in cache tensor j. A group of sliding-window layers gives back the blocks that fell out
 * of its window, so a model whose layers mostly slide (Gemma 2 / 3, Mistral 7B v0.1) holds only a window's
 * worth of KV for them instead of the whole context.
 */

export interface KvCacheGroup {
  /** The layers whose K/V this group's blocks hold, ascending. */
  layers: number[];
  /** Their sliding window (a query sees the last `window` positions); 0: full attention. */
  window: number;
}

export interface KvCacheLayout {
  groups: KvCacheGroup[];
  /** The group of each layer. */
  groupOf: number[];
  /** The cache tensor each layer stores into (its index within its group). */
  tensorOf: number[];
  /** Cache tensors (pairs of K and V), each [numBlocks, blockSize, kvHeads, headDim]: the largest group's size. */
  numTensors: number;
}

/**
 * The layout for layers with these windows (0: full attention). `hybrid` false (vLLM's
 * --disable-hybrid-kv-cache-manager) puts every layer in one group that keeps the whole context, as does a
 * model without sliding layers; a model whose layers all slide by one window is one group that frees what
 * leaves it. Otherwise each kind of layer is cut into groups of as many layers as the rarest kind has (as
 * vLLM does), the last group of a kind possibly smaller (its pages' room for the missing layers unused).
 */
export function kvCacheLayout(layerWindows: readonly number[], hybrid = true): KvCacheLayout {
  const numLayers = layerWindows.length;
  if (numLayers === 0) throw new Error("kvCacheLayout: a model without layers");
  const all = Array.from({ length: numLayers }, (_, l) => l);
  const kinds = new Map<number, number[]>();
  for (const l of all) {
    const w = layerWindows[l]!;
    if (!Number.isInteger(w) || w < 0) throw new Error(`kvCacheLayout: layer ${l} has window ${w}`);
    let list = kinds.get(w);
    if (!list) kinds.set(w, (list = []));
    list.push(l);
  }
  if (!hybrid || (kinds.size === 1 && kinds.has(0))) return single(all, 0);
  if (kinds.size === 1) return single(all, layerWindows[0]!);
  const size = Math.min(...[...kinds.values()].map((l) => l.length));
  const groups: KvCacheGroup[] = [];
  // Full attention first: group 0 is then the one whose table covers the whole context.
  for (const w of [...kinds.keys()].sort((a, b) => a - b)) {
    const layers = kinds.get(w)!;
    for (let i = 0; i < layers.length; i += size) groups.push({ layers: layers.slice(i, i + size), window: w });
  }
  const groupOf = new Array<number>(numLayers), tensorOf = new Array<number>(numLayers);
  groups.forEach((g, gi) => g.layers.forEach((l, j) => { groupOf[l] = gi; tensorOf[l] = j; }));
  return { groups, groupOf, tensorOf, numTensors: size };
}

function single(layers: number[], window: number): KvCacheLayout {
  return { groups: [{ layers, window }], groupOf: layers.map(() => 0), tensorOf: layers.slice(), numTensors: layers.length };
}

/** True when some group frees blocks outside a sliding window (the block manager then keeps block 0 as the null block). */
export function layoutSlides(layout: KvCacheLayout): boolean {
  return layout.groups.some((g) => g.window > 0);
}

/**
 * Blocks one sequence of `tokens` tokens may hold at once, over all groups: the whole context in a
 * full-attention group; in a sliding one the window plus the largest chunk computed in one step (its new
 * tokens are stored before the window moves past the older ones) plus a partly filled block at each end.
 */
export function blocksForSequence(windows: readonly number[], tokens: number, blockSize: number, maxChunk: number): number {
  const whole = Math.ceil(tokens / blockSize);
  let n = 0;
  for (const w of windows) n += w > 0 ? Math.min(whole, Math.ceil((w - 1 + maxChunk) / blockSize) + 1) : whole;
  return n;
}

/** Tokens of whole context the cache holds: its usable blocks shared by the full-attention groups (by all groups where none is). */
export function kvCapacityTokens(windows: readonly number[], usableBlocks: number, blockSize: number): number {
  const full = windows.filter((w) => w === 0).length || windows.length;
  return Math.floor(usableBlocks / full) * blockSize;
}

/** The layout in words, for the start-up log. */
export function describeKvCacheLayout(layout: KvCacheLayout): string {
  if (layout.groups.length === 1) {
    const w = layout.groups[0]!.window;
    return w > 0 ? `every layer slides by ${w}: blocks that leave the window are given back` : "one block table for all layers";
  }
  const kinds = new Map<number, number>();
  for (const g of layout.groups) kinds.set(g.window, (kinds.get(g.window) ?? 0) + 1);
  const parts = [...kinds].map(([w, n]) => `${n} ${w > 0 ? `sliding (window ${w})` : "full-attention"}`);
  return `hybrid: ${layout.groups.length} groups of ${layout.numTensors} layers (${parts.join(", ")}); sliding groups give back blocks that leave the window`;
}

/** The longest end of `text` that is a proper beginning of one of `tags`: what a streaming reader holds back until the next delta decides. */
export function partialTagLength(text: string, tags: readonly string[]): number {
  let keep = 0;
  for (const t of tags)
    for (let k = Math.min(t.length - 1, text.length); k > keep; k--) if (t.startsWith(text.slice(text.length - k))) { keep = k; break; }
  return keep;
}

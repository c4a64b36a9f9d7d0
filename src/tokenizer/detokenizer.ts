/**
 * Incremental detokenization for streaming. Each step decodes only a short window of recent tokens:
 * the text of tokens[prefixOffset..] minus the text of tokens[prefixOffset..readOffset]. Text is released
 * only when it does not end in a partial UTF-8 character (U+FFFD), so streamed chunks join to exactly the
 * one-shot decode.
 */
import type { TextTokenizer } from "./tokenizer.ts";

/** Tokens of left context decoded with the window so that leading-space rules see a preceding token. */
const CONTEXT_TOKENS = 5;

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  /** All text released so far. */
  text = "";

  constructor(private readonly tok: TextTokenizer, private readonly skipSpecialTokens = true, promptTail: ArrayLike<number> = []) {
    const tail = Array.from(promptTail).slice(-CONTEXT_TOKENS);
    this.ids.push(...tail);
    this.prefixOffset = 0;
    this.readOffset = tail.length;
  }

  /** Adds one token; returns the newly released text (possibly ""). */
  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const newText = this.tok.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    if (newText.length > prefixText.length && !newText.endsWith("\uFFFD") && newText.startsWith(prefixText)) {
      const delta = newText.slice(prefixText.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      this.text += delta;
      return delta;
    }
    return "";
  }

  /** Releases whatever is still held back (a trailing partial character, as a one-shot decode would show it). */
  flush(): string {
    if (this.readOffset === this.ids.length) return "";
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const newText = this.tok.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    const delta = newText.startsWith(prefixText) ? newText.slice(prefixText.length) : "";
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.text += delta;
    return delta;
  }
}

/**
 * Incremental detokenization for streaming. Each step decodes only a short window of recent tokens:
 * the text of tokens[prefixOffset..] minus the text of tokens[prefixOffset..readOffset]. Text is released
 * only when it does not end in a partial UTF-8 character (U+FFFD), so streamed chunks join to exactly the
 * one-shot decode. ByteLevel tokenizers (Qwen, Llama 3) take a fast path: each token's bytes go through a
 * streaming UTF-8 decoder, which holds back exactly the bytes of an incomplete character.
 */
import type { TextTokenizer } from "./tokenizer.ts";

/** Tokens of left context decoded with the window so that leading-space rules see a preceding token. */
const CONTEXT_TOKENS = 5;

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private readonly utf8: TextDecoder | null;
  /** The UTF-8 decoder holds no partial character (the last byte it or the ASCII path saw was ASCII). */
  private utf8Clean = true;

  constructor(private readonly tok: TextTokenizer, private readonly skipSpecialTokens = true, promptTail: ArrayLike<number> = []) {
    this.utf8 = tok.byteLevel ? new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }) : null;
    for (let i = Math.max(0, promptTail.length - CONTEXT_TOKENS); i < promptTail.length; i++) this.ids.push(promptTail[i]!);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
  }

  /** Adds one token; returns the newly released text (possibly ""). */
  push(id: number): string {
    if (this.utf8) {
      if (this.skipSpecialTokens && this.tok.specialTokenIds.has(id)) return "";
      if (this.utf8Clean) {
        const ascii = this.tok.asciiText(id);
        if (ascii !== null) return ascii;
      }
      const bytes = this.tok.tokenBytes(id);
      if (bytes.length > 0) this.utf8Clean = bytes[bytes.length - 1]! < 0x80;
      return this.utf8.decode(bytes, { stream: true });
    }
    this.ids.push(id);
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const newText = this.tok.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    if (newText.length > prefixText.length && !newText.endsWith("\uFFFD") && newText.startsWith(prefixText)) {
      const delta = newText.slice(prefixText.length);
      this.prefixOffset = this.readOffset;
      this.readOffset = this.ids.length;
      return delta;
    }
    return "";
  }

  /** Releases whatever is still held back (a trailing partial character, as a one-shot decode would show it). */
  flush(): string {
    if (this.utf8) {
      this.utf8Clean = true;
      return this.utf8.decode();
    }
    if (this.readOffset === this.ids.length) return "";
    const prefixText = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset), this.skipSpecialTokens);
    const newText = this.tok.decode(this.ids.slice(this.prefixOffset), this.skipSpecialTokens);
    const delta = newText.startsWith(prefixText) ? newText.slice(prefixText.length) : "";
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return delta;
  }
}

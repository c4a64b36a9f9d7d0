/** tokenizer.json + tokenizer_config.json (via @huggingface/tokenizers) and the model's chat template (via @huggingface/jinja). */
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface ChatMessage {
  role: string;
  content: string | null;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** Extra variables for the template, e.g. { enable_thinking: false } for Qwen3. */
  kwargs?: Record<string, unknown>;
  tools?: unknown[];
}

function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return null;
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read JSON (${(e as Error).message})`);
  }
}

/**
 * The tokenizer last built, with the bytes of the tokenizer.json and the config it was built from. Building one
 * (parsing a 150k-token vocabulary and its merges) takes a third of a second; engines started one after another on
 * the same files (the LLM class, a test run's many tiny models that share Qwen3's tokenizer) build it once. Only
 * reads are made of it (encode, decode, lookups), so engines can share it.
 */
let lastBuilt: { bytes: Buffer; config: string; tok: Tokenizer; json: Record<string, unknown> } | null = null;

function buildTokenizer(file: string, config: Record<string, unknown>): { tok: Tokenizer; json: Record<string, unknown> } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new Error(`${file}: cannot read JSON (${(e as Error).message})`);
  }
  const configText = JSON.stringify(config);
  if (lastBuilt && lastBuilt.config === configText && lastBuilt.bytes.equals(bytes)) return lastBuilt;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read JSON (${(e as Error).message})`);
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new Error(`${file}: cannot build tokenizer (${(e as Error).message})`);
  }
  lastBuilt = { bytes, config: configText, tok, json };
  return lastBuilt;
}

/** GPT-2's byte ↔ printable-unicode table used by ByteLevel tokenizers: char code → byte. */
function byteLevelDecodeTable(): Map<number, number> {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const chars = bytes.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bytes.includes(b)) { bytes.push(b); chars.push(256 + n++); }
  const table = new Map<number, number>();
  bytes.forEach((b, i) => table.set(chars[i]!, b));
  return table;
}

export class TextTokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** EOS ids from tokenizer_config (the model config's ids are merged by the engine). */
  readonly eosTokenIds: number[];
  readonly specialTokenIds: Set<number>;
  private template: Template | null;
  readonly chatTemplateSource: string | null;
  /** True when decoding is plain byte concatenation (ByteLevel decoder): enables fast streaming. */
  readonly byteLevel: boolean;
  private readonly addedTokens = new Map<number, string>();
  private readonly bytesCache = new Map<number, Uint8Array>();
  private readonly asciiCache = new Map<number, string | null>();
  private byteTable: Map<number, number> | null = null;

  private constructor(private readonly tok: Tokenizer, config: Record<string, unknown>, chatTemplate: string | null, json: Record<string, unknown>) {
    const decoder = json.decoder as { type?: string } | null;
    this.byteLevel = decoder?.type === "ByteLevel";
    for (const t of (json.added_tokens ?? []) as { id: number; content: string }[]) this.addedTokens.set(t.id, t.content);
    this.bosToken = tokenContent(config.bos_token);
    this.eosToken = tokenContent(config.eos_token);
    this.eosTokenIds = [];
    if (this.eosToken !== null) {
      const id = tok.token_to_id(this.eosToken);
      if (id !== undefined) this.eosTokenIds.push(id);
    }
    this.specialTokenIds = new Set<number>();
    for (const [id, t] of tok.get_added_tokens_decoder()) if ((t as { special?: boolean }).special) this.specialTokenIds.add(id);
    this.chatTemplateSource = chatTemplate;
    this.template = null;
  }

  static load(dir: string, chatTemplateOverride?: string): TextTokenizer {
    const tokFile = join(dir, "tokenizer.json");
    if (!existsSync(tokFile)) throw new Error(`${tokFile}: not found (the model directory needs a tokenizer.json)`);
    const cfgFile = join(dir, "tokenizer_config.json");
    const config = existsSync(cfgFile) ? readJson(cfgFile) : {};
    const { tok, json } = buildTokenizer(tokFile, config);
    let chatTemplate: string | null = null;
    if (chatTemplateOverride !== undefined) chatTemplate = existsSync(chatTemplateOverride) ? readFileSync(chatTemplateOverride, "utf8") : chatTemplateOverride;
    else if (existsSync(join(dir, "chat_template.jinja"))) chatTemplate = readFileSync(join(dir, "chat_template.jinja"), "utf8");
    else if (typeof config.chat_template === "string") chatTemplate = config.chat_template;
    else if (Array.isArray(config.chat_template)) {
      const named = config.chat_template as { name: string; template: string }[];
      chatTemplate = (named.find((t) => t.name === "default") ?? named[0])?.template ?? null;
    }
    return new TextTokenizer(tok, config, chatTemplate, json);
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /**
   * The tokens of a text pair as one input (a cross-encoder's query and document): the tokenizer's pair
   * template when it has one (e.g. [CLS] a [SEP] b [SEP]), else the two texts' tokens one after the other.
   */
  encodePair(text: string, pair: string, addSpecialTokens = true): number[] {
    const ids = this.tok.encode(text, { text_pair: pair, add_special_tokens: addSpecialTokens }).ids;
    const first = this.encode(text, addSpecialTokens);
    // @huggingface/tokenizers' ByteLevel post-processor (Qwen's, GPT-2's) hands the pair back unmerged, so
    // encode() drops it; such a post-processor adds no special tokens, and the pair simply follows (as in HF's).
    if (ids.length === first.length) return [...first, ...this.encode(pair, false)];
    return ids;
  }

  /** A vocabulary entry's id (HF's convert_tokens_to_ids: the token as the vocabulary spells it), or undefined. */
  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token) ?? undefined;
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** The raw bytes of one token (ByteLevel tokenizers only), cached. */
  tokenBytes(id: number): Uint8Array {
    let b = this.bytesCache.get(id);
    if (b) return b;
    const added = this.addedTokens.get(id);
    if (added !== undefined) b = new TextEncoder().encode(added);
    else {
      const s = this.tok.id_to_token(id);
      if (s === undefined) b = new Uint8Array(0);
      else {
        this.byteTable ??= byteLevelDecodeTable();
        const out: number[] = [];
        for (const ch of s) {
          const v = this.byteTable.get(ch.codePointAt(0)!);
          if (v !== undefined) out.push(v);
          else out.push(...new TextEncoder().encode(ch));
        }
        b = Uint8Array.from(out);
      }
    }
    this.bytesCache.set(id, b);
    return b;
  }

  /** The token's text when its bytes are all ASCII (ByteLevel tokenizers), else null; cached. */
  asciiText(id: number): string | null {
    let t = this.asciiCache.get(id);
    if (t !== undefined) return t;
    const b = this.tokenBytes(id);
    t = b.every((x) => x < 0x80) ? String.fromCharCode(...b) : null;
    this.asciiCache.set(id, t);
    return t;
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplateSource !== null;
  }

  /** Renders the chat template to the prompt text. */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.chatTemplateSource === null) throw new Error("this model has no chat template (pass --chat-template)");
    if (!this.template) {
      try {
        this.template = new Template(this.chatTemplateSource);
      } catch (e) {
        throw new Error(`cannot parse the chat template: ${(e as Error).message}`);
      }
    }
    return this.template.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: this.bosToken ?? "",
      eos_token: this.eosToken ?? "",
      ...(opts.tools ? { tools: opts.tools } : {}),
      ...(opts.kwargs ?? {}),
    });
  }
}

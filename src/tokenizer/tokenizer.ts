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

export class TextTokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** EOS ids from tokenizer_config (the model config's ids are merged by the engine). */
  readonly eosTokenIds: number[];
  readonly specialTokenIds: Set<number>;
  private template: Template | null;
  readonly chatTemplateSource: string | null;

  private constructor(private readonly tok: Tokenizer, config: Record<string, unknown>, chatTemplate: string | null) {
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
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(readJson(tokFile), config);
    } catch (e) {
      throw new Error(`${tokFile}: cannot build tokenizer (${(e as Error).message})`);
    }
    let chatTemplate: string | null = null;
    if (chatTemplateOverride !== undefined) chatTemplate = existsSync(chatTemplateOverride) ? readFileSync(chatTemplateOverride, "utf8") : chatTemplateOverride;
    else if (existsSync(join(dir, "chat_template.jinja"))) chatTemplate = readFileSync(join(dir, "chat_template.jinja"), "utf8");
    else if (typeof config.chat_template === "string") chatTemplate = config.chat_template;
    else if (Array.isArray(config.chat_template)) {
      const named = config.chat_template as { name: string; template: string }[];
      chatTemplate = (named.find((t) => t.name === "default") ?? named[0])?.template ?? null;
    }
    return new TextTokenizer(tok, config, chatTemplate);
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: ArrayLike<number>, skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
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

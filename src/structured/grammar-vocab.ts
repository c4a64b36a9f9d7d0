/**
 * The vocabulary as the grammar library needs it: every token id's string as tokenizer.json spells it,
 * and how those strings map to bytes (byte-level BPE as in Qwen and Llama 3, byte-fallback SentencePiece as
 * in Llama 2, or raw text). Read straight from tokenizer.json, so the engine needs no tokenizer for it.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export type VocabType = "RAW" | "BYTE_FALLBACK" | "BYTE_LEVEL";

export interface GrammarVocab {
  /** Index = token id, for every id the model can sample; "" where no text may come from it. */
  encodedVocab: string[];
  vocabType: VocabType;
  /** The tokenizer prepends a space (SentencePiece's "▁") to the text it encodes. */
  prependSpace: boolean;
}

interface TokenizerJson {
  model?: { vocab?: Record<string, number> | [string, number][] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  decoder?: { type?: string; decoders?: { type?: string }[] } | null;
  normalizer?: { type?: string; prepend?: string; normalizers?: { type?: string; prepend?: string }[] } | null;
  pre_tokenizer?: { type?: string; prepend_scheme?: string; add_prefix_space?: boolean; pretokenizers?: { type?: string; prepend_scheme?: string; add_prefix_space?: boolean }[] } | null;
}

/** The parts of a Sequence (or the thing itself). */
const parts = <T extends { type?: string }>(x: T | null | undefined, inner: T[] | undefined): T[] => (!x ? [] : x.type === "Sequence" ? inner ?? [] : [x]);

/**
 * The grammar vocabulary of a parsed tokenizer.json, for a model that samples `vocabSize` ids (often more
 * than the tokenizer has: the extra ids get ""). Special added tokens (<|im_end|>, <s>, …) get "" too: a
 * grammar never produces them; the end-of-sequence ones are given to the library as stop tokens.
 */
export function grammarVocab(tj: TokenizerJson, vocabSize: number, source = "tokenizer.json"): GrammarVocab {
  const vocab = tj.model?.vocab;
  if (!vocab || typeof vocab !== "object") throw new Error(`${source}: model.vocab is missing`);
  const encodedVocab = new Array<string>(vocabSize).fill("");
  const put = (id: number, text: string) => {
    if (Number.isInteger(id) && id >= 0 && id < vocabSize) encodedVocab[id] = text;
  };
  if (Array.isArray(vocab)) vocab.forEach(([piece], id) => put(id, piece)); // Unigram: [piece, score] by id
  else for (const [piece, id] of Object.entries(vocab)) put(id, piece);
  for (const t of tj.added_tokens ?? []) put(t.id, t.special ? "" : t.content);

  const decoders = parts(tj.decoder, tj.decoder?.decoders).map((d) => d.type);
  const vocabType: VocabType = decoders.includes("ByteLevel") ? "BYTE_LEVEL" : decoders.includes("ByteFallback") ? "BYTE_FALLBACK" : "RAW";
  const normalizers = parts(tj.normalizer, tj.normalizer?.normalizers);
  const preTokenizers = parts(tj.pre_tokenizer, tj.pre_tokenizer?.pretokenizers);
  const prependSpace = normalizers.some((n) => n.type === "Prepend" && n.prepend === "▁")
    || preTokenizers.some((p) => p.type === "Metaspace" && (p.prepend_scheme === "always" || p.prepend_scheme === "first" || p.add_prefix_space === true));
  return { encodedVocab, vocabType, prependSpace };
}

/** The grammar vocabulary of a model directory's tokenizer.json. */
export function loadGrammarVocab(modelDir: string, vocabSize: number): GrammarVocab {
  const file = join(modelDir, "tokenizer.json");
  if (!existsSync(file)) throw new Error(`${file}: not found (structured outputs need the model's tokenizer.json)`);
  let tj: TokenizerJson;
  try {
    tj = JSON.parse(readFileSync(file, "utf8")) as TokenizerJson;
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  return grammarVocab(tj, vocabSize, file);
}

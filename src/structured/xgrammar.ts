/**
 * The grammar library: xgrammar (vLLM's default structured-output backend), as its WebAssembly build
 * @mlc-ai/web-xgrammar. Loaded on first use (≈ 80 ms), so a server that never sees a structured request
 * never pays for it.
 *
 * The library reports a bad schema, regex or grammar by printing "[FATAL] file.cc:line: message" through
 * console.error and aborting the WebAssembly call. Loading installs a console.error that, while a grammar
 * is being built here, keeps those lines instead of printing them, so the error can name the problem; the
 * module stays usable after such an abort (the parser's own objects leak: a few KB per bad request).
 */
import { choiceGrammar, type StructuredOutputs } from "./structured-outputs.ts";

export type XGrammar = typeof import("@mlc-ai/web-xgrammar");
export type Grammar = import("@mlc-ai/web-xgrammar").Grammar;

/** The request's schema, regex or grammar is not usable (maps to HTTP 400). */
export class GrammarError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "GrammarError";
  }
}

let loading: Promise<XGrammar> | null = null;
let captured: string[] | null = null;
/** Library calls run one at a time, so each error line reaches the call that printed it. */
let turn: Promise<unknown> = Promise.resolve();

/** The library, initialised (its WebAssembly instantiated). */
export function loadXGrammar(): Promise<XGrammar> {
  loading ??= (async () => {
    const print = console.error;
    // Installed before the module binds console.error (at instantiation below), and kept.
    console.error = (...args: unknown[]) => {
      if (captured) captured.push(args.map(String).join(" "));
      else print(...args);
    };
    const xg = await import("@mlc-ai/web-xgrammar");
    await xg.Grammar.builtinJSONGrammar(); // instantiates the module
    return xg;
  })();
  return loading;
}

/**
 * Runs a library call; an abort becomes a GrammarError with the library's message (e.g. `Unsupported type
 * "nope"`), naming `field`.
 */
export function withLibraryErrors<R>(field: string, f: () => Promise<R>): Promise<R> {
  const run = async () => {
    const mine: string[] = [];
    captured = mine;
    try {
      return await f();
    } catch (e) {
      const fatal = mine.find((l) => l.includes("[FATAL]"));
      const message = fatal ? fatal.replace(/^.*\[FATAL\]\s*\S+:\d+:\s*/, "") : (e as Error)?.message ?? String(e);
      throw new GrammarError(field, message);
    } finally {
      captured = null;
    }
  };
  const result = turn.then(run, run);
  turn = result.catch(() => undefined);
  return result;
}

/** The request field a constraint came from, for errors. */
export function constraintField(s: StructuredOutputs): string {
  return `structured_outputs.${Object.keys(s).find((k) => k !== "disable_any_whitespace" && k !== "after_reasoning")}`;
}

/**
 * Builds the grammar of a constraint (no tokenizer needed): this checks the schema, regex or grammar.
 * Throws GrammarError naming the problem.
 */
export async function buildGrammar(s: StructuredOutputs): Promise<Grammar> {
  const xg = await loadXGrammar();
  return withLibraryErrors(constraintField(s), () => {
    // Indent -1: one line (the library's "no indent"); without any whitespace, separators ", " and ": ".
    if ("json" in s) return xg.Grammar.fromJSONSchema(s.json, !s.disable_any_whitespace, -1);
    // Any JSON object (OpenAI's json_object), keys and values free.
    if ("json_object" in s) return xg.Grammar.fromJSONSchema('{"type": "object"}', !s.disable_any_whitespace, -1, undefined, false);
    if ("regex" in s) return xg.Grammar.fromStructuralTag({ type: "structural_tag", format: { type: "regex", pattern: s.regex } });
    if ("choice" in s) return xg.Grammar.fromEBNF(choiceGrammar(s.choice));
    if ("grammar" in s) return xg.Grammar.fromEBNF(s.grammar);
    return xg.Grammar.fromStructuralTag(s.structural_tag);
  });
}

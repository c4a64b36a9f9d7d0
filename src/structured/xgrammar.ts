/**
 * The grammar library: xgrammar (vLLM's default structured-output backend), as its WebAssembly build
 * @mlc-ai/web-xgrammar, loaded on first use (≈ 0.1 s), so a server that never sees a structured request
 * never pays for it.
 *
 * The library reports a bad schema, regex or grammar by printing "[FATAL] file.cc:line: message" through
 * console.error and aborting the WebAssembly call. An abort leaves the module's stack where it was: after
 * a few dozen the module is corrupt. So this file evaluates the library's source as separate instances:
 * constraints are first checked in a checker instance, which is replaced after every abort, and only
 * then built where they are used (the engine's instance), where they no longer abort. A console.error
 * installed before the first instance keeps the "[FATAL]" lines while a call runs here, so the error can
 * name the problem.
 */
import { createRequire } from "node:module";
import librarySource from "@mlc-ai/web-xgrammar/lib/index.js" with { type: "text" };
import { choiceGrammar, type StructuredOutputs } from "./structured-outputs.ts";

/** The library's bundle as text (embedded in a compiled binary too), evaluated once per instance. */
const source = librarySource as unknown as string;

export type XGrammar = typeof import("@mlc-ai/web-xgrammar");
export type Grammar = import("@mlc-ai/web-xgrammar").Grammar;

/** The request's schema, regex or grammar is not usable (maps to HTTP 400). */
export class GrammarError extends Error {
  constructor(readonly field: string, message: string) {
    super(message);
    this.name = "GrammarError";
  }
}

let captured: string[] | null = null;
let consoleHooked = false;
/** Library calls run one at a time, so each error line reaches the call that printed it. */
let turn: Promise<unknown> = Promise.resolve();

/** A fresh, initialised instance of the library (its own WebAssembly module and memory). */
export async function createXGrammar(): Promise<XGrammar> {
  if (!consoleHooked) {
    // Installed before any instance binds console.error (at its instantiation), and kept.
    const print = console.error;
    console.error = (...args: unknown[]) => {
      if (captured) captured.push(args.map(String).join(" "));
      else print(...args);
    };
    consoleHooked = true;
  }
  const exports: Record<string, unknown> = {};
  const module = { exports };
  // The library is a UMD bundle: given CommonJS's exports, it fills them.
  new Function("exports", "module", "require", "__filename", "__dirname", source)(exports, module, createRequire(import.meta.url), import.meta.path, import.meta.dir);
  const xg = module.exports as unknown as XGrammar;
  await xg.Grammar.builtinJSONGrammar(); // instantiates the module
  return xg;
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

/** Builds the grammar of a constraint in `xg` (no tokenizer needed). Throws GrammarError naming the problem. */
export function buildGrammar(xg: XGrammar, s: StructuredOutputs): Promise<Grammar> {
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

let checker: Promise<XGrammar> | null = null;

/** The checker instance (also for tests' use of the library's Testings). */
export function loadXGrammar(): Promise<XGrammar> {
  checker ??= createXGrammar();
  checker.catch(() => (checker = null));
  return checker;
}

/**
 * Checks that a constraint's grammar builds (the schema, regex or grammar is valid), in the checker
 * instance, which a failure replaces. Throws GrammarError naming the problem.
 */
export async function checkGrammar(s: StructuredOutputs): Promise<void> {
  const xg = await loadXGrammar();
  try {
    (await buildGrammar(xg, s)).dispose();
  } catch (e) {
    if (checker && (await checker) === xg) checker = null; // aborted: a fresh instance for the next check
    throw e;
  }
}

/**
 * The engine's side of structured outputs (vLLM's StructuredOutputManager, xgrammar backend): compiles a
 * request's constraint against the model's vocabulary (cached), and gives each of its sequences a matcher
 * that says, before every sampled token, which tokens keep the output inside the grammar (a bitmask the
 * sampler applies to the logits) and then takes the token that was sampled.
 *
 * The library's calls are synchronous but its API is async (it awaits its own start-up), so the engine
 * compiles and refreshes masks in LLMEngine.prepare(), between steps, never inside one. Constraints are
 * checked in a separate instance before they are built in the engine's (see xgrammar.ts).
 */
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";
import { loadGrammarVocab } from "./grammar-vocab.ts";
import { describeStructuredOutputs, type AfterReasoning, type StructuredOutputs } from "./structured-outputs.ts";
import { buildGrammar, checkGrammar, constraintField, createXGrammar, withLibraryErrors, type XGrammar } from "./xgrammar.ts";

/** Compiled grammars kept for reuse (by constraint); the least recently used beyond this are dropped. */
const CACHE_SIZE = 64;

/** What a sampled token did to a sequence's grammar. */
export type GrammarStep = "advanced" | "unchanged" | "rejected";

/**
 * One sequence's place in its grammar. With `afterReasoning`, a reasoning block may come first, unconstrained:
 * when its start token is given, the first token may open it (or begin the grammar's output); without one,
 * the output begins inside it (the prompt opened it). The grammar applies from the token after its end.
 */
export class SequenceGrammar {
  /** The matcher's mask for its next token (bit t & 31 of word t >> 5 set: t allowed); null until refresh(). */
  private matcherMask: Int32Array | null = null;
  /** The first token's mask when it may also open the reasoning block. */
  private openingMask: Int32Array | null = null;
  private phase: "start" | "reasoning" | "grammar";
  private disposed = false;
  /** The reasoning block's last tokens, to spot its end_sequence. */
  private recent: number[] = [];

  constructor(private readonly matcher: GrammarMatcher, private readonly afterReasoning: AfterReasoning | null = null) {
    this.phase = !afterReasoning ? "grammar" : afterReasoning.start_token_id === null ? "reasoning" : "start";
  }

  /** Computes the matcher's mask for its next token. */
  async refresh(): Promise<void> {
    if (this.disposed) return;
    const mask = await this.matcher.getNextTokenBitmask();
    this.matcherMask = mask;
    const open = this.afterReasoning?.start_token_id;
    if (this.phase === "start" && open != null) {
      this.openingMask = mask.slice();
      this.openingMask[open >> 5]! |= 1 << (open & 31);
    }
  }

  /** The tokens allowed next: null = any (inside the reasoning block). Throws if refresh() is due. */
  nextMask(): Int32Array | null {
    if (this.phase === "reasoning") return null;
    const mask = this.phase === "start" ? this.openingMask : this.matcherMask;
    if (!mask) throw new Error("the grammar's next mask was not made (LLMEngine.prepare)");
    return mask;
  }

  /** Takes a sampled token. "advanced": the matcher moved (refresh() is due); "rejected": the grammar refuses it. */
  accept(token: number): GrammarStep {
    if (this.phase === "reasoning") {
      const seq = this.afterReasoning!.end_sequence;
      if (seq) {
        this.recent.push(token);
        if (this.recent.length > seq.length) this.recent.shift();
        if (this.recent.length === seq.length && this.recent.every((t, i) => t === seq[i])) this.phase = "grammar";
      } else if (token === this.afterReasoning!.end_token_id) this.phase = "grammar";
      return "unchanged";
    }
    if (this.phase === "start") {
      this.openingMask = null;
      this.phase = "grammar";
      if (token === this.afterReasoning!.start_token_id) {
        this.phase = "reasoning";
        return "unchanged";
      }
    }
    this.matcherMask = null;
    return this.matcher.acceptToken(token) ? "advanced" : "rejected";
  }

  /** The grammar is complete and its stop token taken: nothing may follow. */
  get isTerminated(): boolean {
    return this.phase === "grammar" && this.matcher.isTerminated();
  }

  /** Frees the matcher's WebAssembly memory (sequences call this when they finish). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcherMask = this.openingMask = null;
    this.matcher.dispose();
  }
}

/** The engine's library instance: its vocabulary table, compiler and compiled grammars. */
interface Library {
  xg: XGrammar;
  compiler: GrammarCompiler;
  /** Compiled grammars by constraint, least recently used first. */
  cache: Map<string, Promise<CompiledGrammar>>;
}

export class StructuredOutputManager {
  private library: Promise<Library> | null = null;
  /** No end-of-sequence id is a sampleable token (a test model's small vocabulary): a grammar ends on its own. */
  private noStopToken = false;

  constructor(
    private readonly modelDir: string,
    /** Ids the model can sample (the logits' width). */
    private readonly vocabSize: number,
    /** End-of-sequence ids: what a complete grammar allows next (read when the first grammar compiles). */
    private readonly stopTokenIds: () => readonly number[],
    private readonly log: (m: string) => void,
  ) {}

  /** A matcher for one sequence, at the start of the constraint's grammar. Throws GrammarError for bad constraints. */
  async matcher(s: StructuredOutputs): Promise<SequenceGrammar> {
    const lib = await this.loadLibrary();
    const compiled = await this.compile(lib, s);
    const matcher = await this.inInstance(lib, () => withLibraryErrors(constraintField(s), () => lib.xg.GrammarMatcher.createGrammarMatcher(compiled, undefined, this.noStopToken)));
    return new SequenceGrammar(matcher, s.after_reasoning ?? null);
  }

  /**
   * Runs library work in `lib`'s instance. A failure there may have left the instance unsound (see
   * xgrammar.ts): later grammars compile in a fresh one; matchers made here keep theirs.
   */
  private async inInstance<R>(lib: Library, f: () => Promise<R>): Promise<R> {
    try {
      return await f();
    } catch (e) {
      if (this.library && (await this.library) === lib) this.library = null;
      throw e;
    }
  }

  private compile(lib: Library, s: StructuredOutputs): Promise<CompiledGrammar> {
    const { after_reasoning: _, ...constraint } = s;
    const key = JSON.stringify(constraint);
    const hit = lib.cache.get(key);
    if (hit) {
      lib.cache.delete(key); // most recently used last
      lib.cache.set(key, hit);
      return hit;
    }
    const compiled = (async () => {
      await checkGrammar(s); // in the checker instance: a bad constraint aborts there, not here
      const grammar = await this.inInstance(lib, () => buildGrammar(lib.xg, s));
      try {
        const t0 = performance.now();
        const c = await this.inInstance(lib, () => withLibraryErrors(constraintField(s), () => lib.compiler.compileGrammar(grammar)));
        this.log(`compiled ${describeStructuredOutputs(s)} in ${((performance.now() - t0) / 1000).toFixed(3)}s`);
        return c;
      } finally {
        grammar.dispose();
      }
    })();
    compiled.catch(() => lib.cache.delete(key)); // a failure is not cached
    lib.cache.set(key, compiled);
    while (lib.cache.size > CACHE_SIZE) {
      const [oldKey, old] = lib.cache.entries().next().value!;
      lib.cache.delete(oldKey);
      // Matchers made from it keep what they need; the handle itself can go.
      old.then((c) => c.dispose(), () => undefined);
    }
    return compiled;
  }

  private loadLibrary(): Promise<Library> {
    this.library ??= (async () => {
      const t0 = performance.now();
      const xg = await createXGrammar();
      const v = loadGrammarVocab(this.modelDir, this.vocabSize);
      const stops = this.stopTokenIds().filter((t) => t < this.vocabSize);
      this.noStopToken = stops.length === 0;
      const info = await xg.TokenizerInfo.createTokenizerInfo(v.encodedVocab, v.vocabType, v.prependSpace, this.vocabSize, stops);
      // The library's own cache would grow without bound: ours is bounded.
      const compiler = await xg.GrammarCompiler.createGrammarCompiler(info, false);
      this.log(`structured outputs: xgrammar ready (${v.vocabType} vocabulary of ${this.vocabSize} ids) in ${((performance.now() - t0) / 1000).toFixed(2)}s`);
      return { xg, compiler, cache: new Map() };
    })();
    this.library.catch(() => (this.library = null));
    return this.library;
  }
}

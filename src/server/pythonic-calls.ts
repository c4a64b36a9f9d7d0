/**
 * Tool calls written as a Python list of calls (Llama 3.2 / Llama 4, vLLM's `pythonic` parser):
 * [get_weather(city="Paris", units=["c"]), now()] — keyword arguments whose values are Python literals
 * (strings, numbers, True/False/None, lists, tuples, dicts). A small recursive-descent reader of exactly
 * that subset; anything else is not a call list.
 */

/** One call: its (possibly dotted) name and its keyword arguments as JSON values. */
export interface PythonicCall {
  name: string;
  args: Record<string, unknown>;
}

class NotACallList extends Error {}

/** The calls of `text` when it is one Python list of calls (surrounding blanks allowed), else null. */
export function parsePythonicCalls(text: string): PythonicCall[] | null {
  try {
    const r = new Reader(text.trim());
    const calls = r.list(() => r.call());
    if (!r.atEnd()) return null;
    return calls;
  } catch (e) {
    if (e instanceof NotACallList) return null;
    throw e;
  }
}

/** A Python literal (strings, numbers, True/False/None, lists, tuples, dicts) as a JSON value; undefined when `text` is not one. */
export function parsePythonLiteral(text: string): unknown {
  try {
    const r = new Reader(text.trim());
    const v = r.literal();
    return r.atEnd() ? v : undefined;
  } catch (e) {
    if (e instanceof NotACallList) return undefined;
    throw e;
  }
}

const ESCAPES: Record<string, string> = { n: "\n", t: "\t", r: "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0", b: "\b", f: "\f" };

class Reader {
  private pos = 0;
  constructor(private readonly s: string) {}

  atEnd(): boolean {
    this.blank();
    return this.pos === this.s.length;
  }

  private fail(): never {
    throw new NotACallList();
  }

  private blank(): void {
    while (this.pos < this.s.length && /\s/.test(this.s[this.pos]!)) this.pos++;
  }

  private eat(ch: string): boolean {
    this.blank();
    if (this.s[this.pos] !== ch) return false;
    this.pos++;
    return true;
  }

  private expect(ch: string): void {
    if (!this.eat(ch)) this.fail();
  }

  /** `open` items separated by commas (a trailing one allowed) up to `close`. */
  private items<T>(open: string, close: string, item: () => T): T[] {
    this.expect(open);
    const out: T[] = [];
    while (!this.eat(close)) {
      out.push(item());
      if (!this.eat(",")) { this.expect(close); break; }
    }
    return out;
  }

  list<T>(item: () => T): T[] {
    return this.items("[", "]", item);
  }

  private ident(): string {
    this.blank();
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.s.slice(this.pos));
    if (!m) this.fail();
    this.pos += m![0].length;
    return m![0];
  }

  call(): PythonicCall {
    let name = this.ident();
    while (this.s[this.pos] === ".") { this.pos++; name += `.${this.ident()}`; }
    const args: Record<string, unknown> = {};
    this.items("(", ")", () => {
      const key = this.ident();
      this.expect("=");
      args[key] = this.value();
    });
    return { name, args };
  }

  /** One literal value (parsePythonLiteral). */
  literal(): unknown {
    return this.value();
  }

  private value(): unknown {
    this.blank();
    const c = this.s[this.pos];
    if (c === "[") return this.list(() => this.value());
    if (c === "(") return this.items("(", ")", () => this.value());
    if (c === "{") {
      const obj: Record<string, unknown> = {};
      this.items("{", "}", () => {
        const key = this.value();
        if (typeof key !== "string" && typeof key !== "number") this.fail();
        this.expect(":");
        obj[String(key)] = this.value();
      });
      return obj;
    }
    if (c === "'" || c === '"') return this.string(c);
    const num = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/.exec(this.s.slice(this.pos));
    if (num) { this.pos += num[0].length; return Number(num[0]); }
    const word = this.ident();
    if (word === "True") return true;
    if (word === "False") return false;
    if (word === "None") return null;
    return this.fail();
  }

  private string(quote: string): string {
    this.pos++;
    let out = "";
    while (this.pos < this.s.length) {
      const ch = this.s[this.pos++]!;
      if (ch === quote) return out;
      if (ch === "\n") this.fail();
      if (ch !== "\\") { out += ch; continue; }
      const e = this.s[this.pos++];
      if (e === undefined) this.fail();
      if (e === "u" || e === "x") {
        const n = e === "u" ? 4 : 2, hex = this.s.slice(this.pos, this.pos + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.fail();
        out += String.fromCharCode(parseInt(hex, 16));
        this.pos += n;
      } else out += ESCAPES[e!] ?? `\\${e}`;
    }
    return this.fail();
  }
}

/**
 * vLLM's StructuredOutputsParams: what a request's output must match — a JSON schema, any JSON object, a
 * regular expression, one of a list of strings, an EBNF grammar, or an xgrammar structural tag. Exactly
 * one of those; checked here for shape only (the grammar library checks the content, see xgrammar.ts).
 */

/** As requests give it (vLLM's field names). */
export interface StructuredOutputsInit {
  json?: string | Record<string, unknown> | null;
  regex?: string | null;
  choice?: string[] | null;
  grammar?: string | null;
  json_object?: boolean | null;
  structural_tag?: string | Record<string, unknown> | null;
  /** JSON without whitespace between tokens (vLLM's disable_any_whitespace). */
  disable_any_whitespace?: boolean | null;
  /** vLLM's flag; xgrammar's JSON schemas are strict already: no properties beyond the schema's. */
  disable_additional_properties?: boolean | null;
  whitespace_pattern?: string | null;
  disable_fallback?: boolean | null;
  /** vbun: the grammar applies after a reasoning block (the server sets this with --reasoning-parser). */
  after_reasoning?: AfterReasoning | null;
}

/**
 * A reasoning block before the constrained output, delimited by single tokens (<think> … </think>):
 * start_token_id null means the output begins inside it (the prompt opened it, as DeepSeek-R1's does);
 * otherwise the first token may open it, or begin the constrained output.
 */
export interface AfterReasoning {
  start_token_id: number | null;
  end_token_id: number;
  /** The block ends with these tokens in a row (the last being end_token_id), e.g. Harmony's <|channel|>final<|message|>; absent: end_token_id alone. */
  end_sequence?: number[];
}

/** Normalised: exactly one constraint, JSON given as text; plain data (crosses to the engine worker). */
export type StructuredOutputs = (
  | { json: string; disable_any_whitespace: boolean }
  | { json_object: true; disable_any_whitespace: boolean }
  | { regex: string }
  | { choice: string[] }
  | { grammar: string }
  | { structural_tag: string }
) & { after_reasoning?: AfterReasoning };

export class StructuredOutputsError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "StructuredOutputsError";
  }
}

const KINDS = ["json", "regex", "choice", "grammar", "json_object", "structural_tag"] as const;

/** The constraints `init` gives (set, not null, not false); options alone give none. */
export function constraintsIn(init: StructuredOutputsInit): (typeof KINDS)[number][] {
  return KINDS.filter((k) => init[k] !== undefined && init[k] !== null && init[k] !== false);
}
const FLAGS = ["disable_any_whitespace", "disable_additional_properties", "whitespace_pattern", "disable_fallback", "after_reasoning"];

/** Checks and normalises `init` (field: the request field it came from, for errors). */
export function normalizeStructuredOutputs(init: StructuredOutputsInit, field = "structured_outputs"): StructuredOutputs {
  if (typeof init !== "object" || init === null || Array.isArray(init)) throw new StructuredOutputsError(field, "must be an object");
  for (const k of Object.keys(init)) {
    if (!(KINDS as readonly string[]).includes(k) && !FLAGS.includes(k)) throw new StructuredOutputsError(`${field}.${k}`, "unknown field");
  }
  const given = constraintsIn(init);
  if (given.length !== 1) {
    throw new StructuredOutputsError(field, given.length === 0
      ? `give one of ${KINDS.join(", ")}`
      : `give only one of ${KINDS.join(", ")}, got ${given.join(" and ")}`);
  }
  if (init.whitespace_pattern != null) throw new StructuredOutputsError(`${field}.whitespace_pattern`, "is not supported (the xgrammar backend takes disable_any_whitespace instead)");
  for (const f of ["disable_any_whitespace", "disable_additional_properties", "disable_fallback"] as const) {
    if (init[f] != null && typeof init[f] !== "boolean") throw new StructuredOutputsError(`${field}.${f}`, "must be a boolean");
  }
  const compact = init.disable_any_whitespace === true;
  const after = init.after_reasoning == null ? {} : { after_reasoning: afterReasoning(init.after_reasoning, `${field}.after_reasoning`) };
  return { ...constraint(init, given[0]!, field, compact), ...after };
}

function afterReasoning(a: AfterReasoning, field: string): AfterReasoning {
  const id = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0;
  if (typeof a !== "object" || !id(a.end_token_id) || !(a.start_token_id === null || id(a.start_token_id)))
    throw new StructuredOutputsError(field, "must be {start_token_id: a token id or null, end_token_id: a token id}");
  const seq = a.end_sequence;
  if (seq !== undefined && !(Array.isArray(seq) && seq.length > 0 && seq.every(id) && seq[seq.length - 1] === a.end_token_id))
    throw new StructuredOutputsError(field, "end_sequence must be token ids ending with end_token_id");
  return { start_token_id: a.start_token_id, end_token_id: a.end_token_id, ...(seq ? { end_sequence: [...seq] } : {}) };
}

function constraint(init: StructuredOutputsInit, kind: (typeof KINDS)[number], field: string, compact: boolean): StructuredOutputs {
  const at = `${field}.${kind}`;
  switch (kind) {
    case "json": {
      const schema = typeof init.json === "string" ? parseJson(init.json, at) : init.json;
      if (typeof schema !== "object" && typeof schema !== "boolean") throw new StructuredOutputsError(at, "must be a JSON schema (an object, or its JSON text)");
      return { json: JSON.stringify(schema), disable_any_whitespace: compact };
    }
    case "json_object":
      if (init.json_object !== true) throw new StructuredOutputsError(at, "must be true");
      return { json_object: true, disable_any_whitespace: compact };
    case "regex":
      if (typeof init.regex !== "string" || init.regex.length === 0) throw new StructuredOutputsError(at, "must be a non-empty string");
      return { regex: init.regex };
    case "choice":
      if (!Array.isArray(init.choice) || init.choice.length === 0 || !init.choice.every((c) => typeof c === "string" && c.length > 0))
        throw new StructuredOutputsError(at, "must be a non-empty list of non-empty strings");
      return { choice: [...init.choice] };
    case "grammar":
      if (typeof init.grammar !== "string" || init.grammar.trim().length === 0) throw new StructuredOutputsError(at, "must be a non-empty EBNF grammar");
      return { grammar: init.grammar };
    case "structural_tag": {
      const tag = typeof init.structural_tag === "string" ? parseJson(init.structural_tag, at) : init.structural_tag;
      if (typeof tag !== "object" || tag === null || Array.isArray(tag)) throw new StructuredOutputsError(at, "must be a structural tag (an object, or its JSON text)");
      return { structural_tag: JSON.stringify(tag) };
    }
  }
}

function parseJson(text: string, field: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new StructuredOutputsError(field, `is not valid JSON: ${(e as Error).message}`);
  }
}

/** One line saying what a constraint is (logs). */
export function describeStructuredOutputs(s: StructuredOutputs): string {
  if ("json" in s) return `json schema (${s.json.length} chars)`;
  if ("json_object" in s) return "json object";
  if ("regex" in s) return `regex ${JSON.stringify(s.regex)}`;
  if ("choice" in s) return `choice of ${s.choice.length}`;
  if ("grammar" in s) return `EBNF grammar (${s.grammar.length} chars)`;
  return "structural tag";
}

/** An EBNF string literal (xgrammar's syntax: double quotes, C-style and \u escapes). */
export function ebnfString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (c < 0x20 || c === 0x7f) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += ch;
  }
  return out + '"';
}

/** The grammar of a choice: exactly one of the strings. */
export function choiceGrammar(choices: readonly string[]): string {
  return `root ::= ${choices.map(ebnfString).join(" | ")}`;
}

/**
 * A request's structured-output constraint, from whichever of the accepted spellings it uses: OpenAI's
 * `response_format` (json_object, json_schema), vLLM's `structured_outputs`, or vLLM's older `guided_json` /
 * `guided_regex` / `guided_choice` / `guided_grammar`. The constraint is checked here, before the request
 * reaches the engine (by building its grammar, which needs no tokenizer), so a bad schema is a 400.
 */
import { z } from "zod";
import { constraintsIn, normalizeStructuredOutputs, StructuredOutputsError, type StructuredOutputs, type StructuredOutputsInit } from "../structured/structured-outputs.ts";
import { checkGrammar, GrammarError } from "../structured/xgrammar.ts";
import { ApiError } from "./errors.ts";

/** Request fields for structured outputs (completions and chat). */
export const structuredFields = {
  response_format: z.object({ type: z.string() }).passthrough().nullish(),
  structured_outputs: z.record(z.string(), z.unknown()).nullish(),
  guided_json: z.union([z.string(), z.record(z.string(), z.unknown())]).nullish(),
  guided_regex: z.string().nullish(),
  guided_choice: z.array(z.string()).nullish(),
  guided_grammar: z.string().nullish(),
  guided_whitespace_pattern: z.string().nullish(),
  guided_decoding_backend: z.string().nullish(),
};

export interface StructuredFields {
  response_format?: ({ type: string } & Record<string, unknown>) | null;
  structured_outputs?: Record<string, unknown> | null;
  guided_json?: string | Record<string, unknown> | null;
  guided_regex?: string | null;
  guided_choice?: string[] | null;
  guided_grammar?: string | null;
  guided_whitespace_pattern?: string | null;
  guided_decoding_backend?: string | null;
}

/** Constraints already checked, by their normalised JSON (recently seen ones are not rebuilt). */
const checked = new Set<string>();
const CHECKED_MAX = 256;

/** The request's constraint, checked; null when it has none. Throws ApiError 400 naming the field. */
export async function structuredOutputsFrom(b: StructuredFields, reportAs?: string): Promise<StructuredOutputs | null> {
  const given: { field: string; init: StructuredOutputsInit }[] = [];
  // structured_outputs with options only (e.g. disable_any_whitespace) applies them to the other spelling's constraint.
  const so = b.structured_outputs as StructuredOutputsInit | null | undefined;
  const optionsOnly = so && constraintsIn(so).length === 0;
  const options: StructuredOutputsInit = optionsOnly ? so : {};
  const rf = b.response_format;
  if (rf && rf.type !== "text") given.push({ field: "response_format", init: { ...options, ...fromResponseFormat(rf) } });
  if (so && !optionsOnly) given.push({ field: "structured_outputs", init: so });
  const compact = b.guided_whitespace_pattern != null ? guidedWhitespace(b.guided_whitespace_pattern) : undefined;
  if (b.guided_json != null) given.push({ field: "guided_json", init: { ...options, json: b.guided_json, ...(compact ? { disable_any_whitespace: true } : {}) } });
  if (b.guided_regex != null) given.push({ field: "guided_regex", init: { ...options, regex: b.guided_regex } });
  if (b.guided_choice != null) given.push({ field: "guided_choice", init: { ...options, choice: b.guided_choice } });
  if (b.guided_grammar != null) given.push({ field: "guided_grammar", init: { ...options, grammar: b.guided_grammar } });
  if (given.length === 0) {
    if (optionsOnly) throw new ApiError(400, "structured_outputs has options but no constraint (json, regex, choice, grammar, json_object or structural_tag)", "structured_outputs");
    return null;
  }
  if (given.length > 1) throw new ApiError(400, `give one structured-output constraint, got ${given.map((g) => g.field).join(" and ")}`, given[1]!.field);
  const { init } = given[0]!;
  const field = reportAs ?? given[0]!.field;
  let s: StructuredOutputs;
  try {
    s = normalizeStructuredOutputs(init, field);
  } catch (e) {
    if (e instanceof StructuredOutputsError) throw new ApiError(400, e.message, e.field);
    throw e;
  }
  const key = JSON.stringify(s);
  if (!checked.has(key)) {
    try {
      await checkGrammar(s);
    } catch (e) {
      if (e instanceof GrammarError) throw new ApiError(400, `${field}: ${e.message}`, field);
      throw e;
    }
    if (checked.size >= CHECKED_MAX) checked.delete(checked.values().next().value!);
    checked.add(key);
  }
  return s;
}

function fromResponseFormat(rf: { type: string } & Record<string, unknown>): StructuredOutputsInit {
  if (rf.type === "json_object") return { json_object: true };
  if (rf.type === "json_schema") {
    const js = rf.json_schema as { schema?: unknown } | undefined;
    if (typeof js !== "object" || js === null) throw new ApiError(400, "response_format.json_schema is required with type 'json_schema'", "response_format.json_schema");
    if (js.schema === undefined || js.schema === null) throw new ApiError(400, "response_format.json_schema.schema is required", "response_format.json_schema.schema");
    return { json: js.schema as Record<string, unknown> };
  }
  if (rf.type === "structural_tag") {
    if (typeof rf.format !== "object" || rf.format === null) throw new ApiError(400, "response_format of type 'structural_tag' needs a 'format' object (xgrammar's structural tag)", "response_format.format");
    return { structural_tag: { type: "structural_tag", format: rf.format } };
  }
  throw new ApiError(400, `response_format type '${rf.type}' is not supported (text, json_object, json_schema or structural_tag)`, "response_format.type");
}

/** vLLM's guided_whitespace_pattern, as far as xgrammar goes: "" means no whitespace; others are refused. */
function guidedWhitespace(pattern: string): boolean {
  if (pattern === "") return true;
  throw new ApiError(400, "guided_whitespace_pattern is not supported (xgrammar): use structured_outputs.disable_any_whitespace", "guided_whitespace_pattern");
}

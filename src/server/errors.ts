/** OpenAI-style error bodies: {"error": {message, type, param, code}}. */
import { ZodError } from "zod";
import { SamplingParamsError } from "../engine/sampling-params.ts";
import { InvalidRequestError } from "../engine/llm-engine.ts";
import { EngineOverloadedError, EngineUnavailableError } from "../engine/async-engine.ts";

const TYPES: Record<number, string> = {
  400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowedError",
  413: "RequestTooLargeError", 501: "NotImplementedError", 503: "ServiceUnavailableError", 500: "InternalServerError",
};

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null) {
    super(message);
  }
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

export function errorBody(status: number, message: string, param: string | null = null): ErrorBody {
  return { error: { message, type: TYPES[status] ?? "Error", param, code: status } };
}

/** Maps any thrown value to a status and body; unexpected errors become 500 and are logged. */
export function toErrorResponse(e: unknown): { status: number; body: ErrorBody } {
  if (e instanceof ApiError) return { status: e.status, body: errorBody(e.status, e.message, e.param) };
  if (e instanceof SamplingParamsError) return { status: 400, body: errorBody(400, e.message, e.field) };
  if (e instanceof InvalidRequestError) return { status: 400, body: errorBody(400, e.message, e.param) };
  if (e instanceof EngineOverloadedError || e instanceof EngineUnavailableError) return { status: 503, body: errorBody(503, e.message) };
  if (e instanceof ZodError) {
    const issue = e.issues[0]!;
    const param = issue.path.join(".") || null;
    return { status: 400, body: errorBody(400, `${param ?? "body"}: ${issue.message}`, param) };
  }
  process.stderr.write(`[vbun] internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return { status: 500, body: errorBody(500, `internal error: ${(e as Error)?.message ?? String(e)}`) };
}

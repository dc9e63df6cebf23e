/**
 * One error shape for every answer that is not a success:
 * `{ "error": { "code", "message", "details"? } }`, with the code and status from the table in
 * src/errors.ts. Bad input is a 4xx naming the field; a 500 is a bug and is logged with its
 * request id.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ERROR_TABLE, isSwarmError, SwarmError, type ErrorCode } from "../errors.js";

interface ValidationIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** "body.bid_sats", "querystring.limit", "body.capabilities.2": the field a client got wrong. */
function fieldOf(issue: ValidationIssue, location: string): string {
  const path = issue.instancePath.split("/").filter(Boolean);
  const property = issue.params.missingProperty ?? issue.params.additionalProperty;
  if (typeof property === "string") path.push(property);
  return [location, ...path].join(".");
}

function describeIssue(issue: ValidationIssue, location: string): string {
  if (issue.keyword === "additionalProperties") {
    // A query's own message names what the route takes (app.ts); a body's field is just unknown.
    return location === "querystring" && issue.message !== undefined ? issue.message : "is not a known field";
  }
  if (issue.keyword === "required") return "is required";
  return issue.message ?? "is invalid";
}

/**
 * A query parameter a route does not take, or `type` given with its alias: the filter asked for
 * cannot be the one the caller meant, which INVALID_FILTER says (a malformed value of a known
 * parameter stays VALIDATION_FAILED).
 */
function isFilterIssue(issue: ValidationIssue, location: string): boolean {
  return (
    location === "querystring" && (issue.keyword === "additionalProperties" || issue.keyword === "typeAlias")
  );
}

/** Fastify's own 4xx errors, by their codes, in the table's terms. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "BODY_TOO_LARGE",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "INVALID_BODY",
  FST_ERR_CTP_EMPTY_JSON_BODY: "INVALID_BODY",
  FST_ERR_CTP_INVALID_JSON_BODY: "INVALID_BODY",
  FST_ERR_CTP_INVALID_TYPE: "INVALID_BODY",
  FST_ERR_MAX_PARAM_LENGTH: "URI_TOO_LONG",
  FST_ERR_BAD_URL: "VALIDATION_FAILED",
};

export function toSwarmError(error: FastifyError | SwarmError | Error): SwarmError | undefined {
  if (isSwarmError(error)) return error;
  const fastifyError = error as FastifyError & { validation?: ValidationIssue[]; validationContext?: string };
  if (Array.isArray(fastifyError.validation) && fastifyError.validation.length > 0) {
    const location = fastifyError.validationContext ?? "request";
    const issues = fastifyError.validation.map((issue) => ({
      field: fieldOf(issue, location),
      problem: describeIssue(issue, location),
    }));
    const first = issues[0] as { field: string; problem: string };
    const code = fastifyError.validation.some((issue) => isFilterIssue(issue, location))
      ? "INVALID_FILTER"
      : "VALIDATION_FAILED";
    return new SwarmError(code, `${first.field}: ${first.problem}`, {
      field: first.field,
      issues,
    });
  }
  const mapped = fastifyError.code === undefined ? undefined : FASTIFY_CODES[fastifyError.code];
  if (mapped !== undefined) return new SwarmError(mapped, fastifyError.message);
  if (error instanceof SyntaxError)
    return new SwarmError("INVALID_BODY", `the body is not valid JSON: ${error.message}`);
  const status = fastifyError.statusCode;
  if (status === 429) return new SwarmError("RATE_LIMITED", fastifyError.message);
  if (status !== undefined && status >= 400 && status < 500) {
    const code =
      (Object.keys(ERROR_TABLE) as ErrorCode[]).find((key) => ERROR_TABLE[key].status === status) ??
      "VALIDATION_FAILED";
    return new SwarmError(code, fastifyError.message);
  }
  return undefined;
}

export function sendError(reply: FastifyReply, error: SwarmError): FastifyReply {
  const body: { error: { code: string; message: string; details?: unknown } } = {
    error: { code: error.code, message: error.message },
  };
  if (error.details !== undefined) body.error.details = error.details;
  // A refusal that knows when it will lift (an agent's hourly byte budget) says so the standard way.
  const retryAfter = error.details?.retry_after_seconds;
  if (typeof retryAfter === "number") reply.header("retry-after", String(retryAfter));
  return reply.code(error.status).type("application/json; charset=utf-8").send(body);
}

/** A browser asking for a page (not the API) gets HTML. */
function wantsHtml(request: FastifyRequest): boolean {
  return (
    (request.method === "GET" || request.method === "HEAD") &&
    !request.url.startsWith("/api/") &&
    (request.headers.accept ?? "").includes("text/html")
  );
}

export function installErrorHandling(
  app: FastifyInstance,
  htmlNotFound?: (request: FastifyRequest, reply: FastifyReply) => FastifyReply | undefined,
): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const known = toSwarmError(error);
    if (known !== undefined && known.status < 500) return sendError(reply, known);
    if (known !== undefined && known.code !== "INTERNAL") {
      request.log.warn({ err: error, code: known.code }, "request failed: service unavailable");
      return sendError(reply, known);
    }
    request.log.error({ err: error, reqId: request.id }, "unhandled error");
    return sendError(
      reply,
      new SwarmError("INTERNAL", `internal error; quote request id ${request.id}`, {
        request_id: request.id,
      }),
    );
  });
  app.setNotFoundHandler(
    (request, reply) =>
      (wantsHtml(request) ? htmlNotFound?.(request, reply) : undefined) ??
      sendError(
        reply,
        new SwarmError("NOT_FOUND", `no route ${request.method} ${request.url.split("?")[0] ?? ""}`),
      ),
  );
}

/** A websocket close reason: at most 123 bytes of UTF-8 (the protocol's limit), cut between characters. */
export function closeReason(text: string): string {
  let bytes = 0;
  let cut = 0;
  for (const char of text.toWellFormed()) {
    bytes += Buffer.byteLength(char);
    if (bytes > 123) break;
    cut += char.length;
  }
  return text.toWellFormed().slice(0, cut);
}

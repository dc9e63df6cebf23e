/**
 * Operational logs: how the service itself is doing (a prune ran, a listener threw, a write
 * was refused). They go to pino on stdout and never into `event_log`, which records only
 * what happened to tasks and agents.
 *
 * Credentials never reach them: the stream takes its token in the query (`?token=swarm_…`),
 * and Fastify logs every request's URL, so credential-looking query values are masked in every
 * URL and error text pino writes, and credential headers in any header object.
 */
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger };

const REDACTED = "[REDACTED]";

/**
 * Query parameter names whose values are credentials: token, key, api_key, access_token,
 * password, secret and their kin, alone or as the last part of a longer name
 * (`refresh_token`, `X-Amz-Signature`). Over-matching only masks a harmless value.
 */
const CREDENTIAL_NAME =
  /(?:^|[_.-])(?:access_?token|api_?key|key|token|secret|password|passwd|pwd|auth|authorization|credentials?|signature|sig|session(?:_?id)?)$/i;

/** `?name=value` or `&name=value`, as Fastify's query parser splits them (on `&` only). */
const QUERY_PARAMETER = /([?&])([^=&#\s?]*)=([^&#\s]*)/g;

function isCredentialName(name: string): boolean {
  let decoded = name;
  try {
    // The parser decodes names, so `%74oken` is the stream's `token` too.
    decoded = decodeURIComponent(name.replaceAll("+", " "));
  } catch {
    // A malformed escape: judge the name as written.
  }
  return CREDENTIAL_NAME.test(decoded.trim());
}

/**
 * `text` with the value of every credential-looking query parameter masked: a URL, or a message
 * that quotes one. Everything else is left as it was, so the line still says what was asked.
 */
export function redactQueryCredentials(text: string): string {
  return text.replace(QUERY_PARAMETER, (_match, separator: string, name: string, value: string) =>
    isCredentialName(name)
      ? `${separator}${name}=${REDACTED}`
      : // A value may hide another `?name=` (`?a=b?token=…`): look inside it too.
        `${separator}${name}=${redactQueryCredentials(value)}`,
  );
}

const CREDENTIAL_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"];
/** Where pino output carries a URL or text that may quote one (`req.url` from Fastify's serializer). */
const TEXT_PATHS = ["url", "*.url", "err.message", "err.stack"];

/** pino's redaction: applied to every line, after the serializers (Fastify's `req` included). */
export const LOG_REDACTION: NonNullable<LoggerOptions["redact"]> = {
  paths: [
    ...TEXT_PATHS,
    ...CREDENTIAL_HEADERS.flatMap((name) => [`headers["${name}"]`, `*.headers["${name}"]`]),
  ],
  censor: (value: unknown, path: string[]) => {
    if (path.includes("headers")) return REDACTED;
    return typeof value === "string" ? redactQueryCredentials(value) : value;
  },
};

/** A pino logger at `level`, writing to `destination` (stdout by default), with credentials masked. */
export function createLogger(
  level: string = process.env.LOG_LEVEL ?? "info",
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = { level, base: { service: "swarm-coordinator" }, redact: LOG_REDACTION };
  return destination === undefined ? pino(options) : pino(options, destination);
}

let rootLogger: Logger | undefined;

/** The process-wide logger, created on first use so that importing a module has no side effect. */
export function getLogger(): Logger {
  rootLogger ??= createLogger();
  return rootLogger;
}

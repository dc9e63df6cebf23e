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
const LOG_REDACTION: NonNullable<LoggerOptions["redact"]> = {
  paths: [
    ...TEXT_PATHS,
    ...CREDENTIAL_HEADERS.flatMap((name) => [`headers["${name}"]`, `*.headers["${name}"]`]),
  ],
  censor: (value: unknown, path: string[]) => {
    if (path.includes("headers")) return REDACTED;
    return typeof value === "string" ? redactQueryCredentials(value) : value;
  },
};

/** Lines held in memory while stdout does not take them; beyond this they are dropped. */
const STDOUT_BUFFER_BYTES = 16 * 1024 * 1024;

/**
 * stdout as pino writes it by default (sonic-boom, asynchronous), made safe for a server whose
 * log reader may die or stall. An error on the pipe (EPIPE once the reader has died, ENOSPC on a
 * full disk) stops logging for good instead of crashing the process. And at exit sonic-boom
 * flushes what it still holds synchronously, retrying a failed write for ever, so `close` lets
 * the last lines out for a bounded time and then lets go of the pipe: exiting cannot hang on it.
 */
class StdoutDestination implements DestinationStream {
  private readonly stream = pino.destination({ dest: 1, sync: false, maxLength: STDOUT_BUFFER_BYTES });
  private open = true;
  private closing: Promise<void> | undefined;

  constructor() {
    this.stream.on("error", () => this.abandon());
  }

  write(line: string): void {
    if (this.open) this.stream.write(line);
  }

  /** Let the lines written so far out within `withinMs`; nothing is written after. */
  close(withinMs: number): Promise<void> {
    this.closing ??= !this.open // abandoned already: nothing will be written
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          this.open = false;
          const done = () => {
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(() => {
            this.abandon();
            done();
          }, withinMs);
          this.stream.once("close", done);
          this.stream.once("error", done);
          this.stream.end();
        });
    return this.closing;
  }

  /** Stop for good, dropping what is held, so that no exit-time flush waits on the pipe. */
  private abandon(): void {
    this.open = false;
    // Destroying twice is harmless, and after an EPIPE pino has made it a no-op (with the
    // exit-time flush) already.
    this.stream.destroy();
  }
}

let stdout: StdoutDestination | undefined;

/** One for the process: loggers share it, so their lines cannot interleave mid-line. */
function stdoutDestination(): StdoutDestination {
  stdout ??= new StdoutDestination();
  return stdout;
}

/**
 * Let the log lines written to stdout so far out, for at most `withinMs`, then stop writing to
 * it. Call it last before `process.exit`, which would otherwise wait on the pipe for ever.
 */
export function closeStdoutLog(withinMs: number): Promise<void> {
  return stdout?.close(withinMs) ?? Promise.resolve();
}

/** A pino logger at `level`, writing to `destination` (stdout by default), with credentials masked. */
export function createLogger(
  level: string = process.env.LOG_LEVEL ?? "info",
  destination: DestinationStream = stdoutDestination(),
): Logger {
  return pino({ level, base: { service: "swarm-coordinator" }, redact: LOG_REDACTION }, destination);
}

let rootLogger: Logger | undefined;

/** The process-wide logger, created on first use so that importing a module has no side effect. */
export function getLogger(): Logger {
  rootLogger ??= createLogger();
  return rootLogger;
}

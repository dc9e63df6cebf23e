/**
 * Operational logs: how the service itself is doing (a prune ran, a listener threw, a write
 * was refused). They go to pino on stdout and never into `event_log`, which records only
 * what happened to tasks and agents.
 *
 * Credentials never reach them: the stream takes its token in the query (`?token=swarm_…`),
 * and Fastify logs every request's URL, so credential-looking query values are masked in every
 * URL and error text pino writes, and credential headers in any header object.
 */
import { createRequire } from "node:module";
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger };

/** LOG_FORMAT: `auto` (the default) is pretty on a terminal, JSON otherwise. */
export type LogFormatSetting = "auto" | "json" | "pretty";
export const LOG_FORMATS: readonly LogFormatSetting[] = ["auto", "json", "pretty"];

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

/**
 * Write `line` to stdout whatever the log level, in order with the log lines (through the same
 * destination, so that neither is cut into the other): what a person starting the server must see.
 */
export function writeStdoutLine(line: string): void {
  stdoutDestination().write(`${line}\n`);
}

/**
 * The format to write in, decided from the setting, whether stdout is a terminal and whether
 * pino-pretty (a dev dependency, absent from a production install) can be loaded. `auto` falls
 * back to JSON quietly; `pretty` asked for and not to be had falls back too, and says so.
 */
export function chooseLogFormat(
  setting: LogFormatSetting,
  isTerminal: boolean,
  prettyAvailable: boolean,
): { format: "json" | "pretty"; warning?: string } {
  const wanted = setting === "auto" ? (isTerminal ? "pretty" : "json") : setting;
  if (wanted === "json" || prettyAvailable) return { format: wanted };
  if (setting === "auto") return { format: "json" };
  return {
    format: "json",
    warning: "LOG_FORMAT=pretty, but pino-pretty is not installed (a dev dependency): logging JSON",
  };
}

type Prettifier = (line: string) => string;
const requireFromHere = createRequire(import.meta.url);

/** pino-pretty's line formatter, or undefined when it is not installed. */
function loadPrettifier(colorize: boolean): Prettifier | undefined {
  let prettyFactory: (options: object) => Prettifier;
  try {
    ({ prettyFactory } = requireFromHere("pino-pretty") as { prettyFactory: typeof prettyFactory });
  } catch {
    return undefined;
  }
  return prettyFactory({
    colorize,
    translateTime: "SYS:HH:MM:ss.l",
    // The same for every line of this process; and a request line's message says what its req,
    // res and responseTime do (see web/request-log.ts), which JSON keeps for machines.
    ignore: "pid,hostname,service,req,res,responseTime",
  });
}

/** Each JSON line pino writes, made human by `prettify` on its way to `destination`. */
function prettyDestination(prettify: Prettifier, destination: DestinationStream): DestinationStream {
  return { write: (line: string) => destination.write(prettify(line)) };
}

/**
 * A pino logger at `level`, writing to `destination` (stdout by default), with credentials
 * masked; as JSON, or pretty (see chooseLogFormat). Masking happens before formatting, so
 * pretty lines are masked too.
 */
export function createLogger(
  level: string = process.env.LOG_LEVEL ?? "info",
  destination: DestinationStream = stdoutDestination(),
  format: LogFormatSetting = "json",
  isTerminal: boolean = process.stdout.isTTY === true,
): Logger {
  const wantsPretty = format === "pretty" || (format === "auto" && isTerminal);
  const prettify = wantsPretty ? loadPrettifier(isTerminal) : undefined;
  const chosen = chooseLogFormat(format, isTerminal, prettify !== undefined);
  const logger = pino(
    { level, base: { service: "swarm-coordinator" }, redact: LOG_REDACTION },
    chosen.format === "pretty" && prettify !== undefined
      ? prettyDestination(prettify, destination)
      : destination,
  );
  if (chosen.warning !== undefined) logger.warn(chosen.warning);
  return logger;
}

let rootLogger: Logger | undefined;

/** The process-wide logger, created on first use so that importing a module has no side effect. */
export function getLogger(): Logger {
  rootLogger ??= createLogger();
  return rootLogger;
}

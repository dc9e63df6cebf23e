/**
 * `swarm-agent`: run one agent against a coordinator, from any machine that can reach it.
 * With --exec, each won task runs a shell command; without it, a simulated worker.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { shortId } from "../ids.js";
import { delay, isTransient, SwarmAgent, type TaskContext, type TaskHandler } from "./agent.js";
import type { TaskView } from "./client.js";
import { adaptiveStrategy, matchStrategy } from "./strategies.js";

export const HELP = `swarm-agent: join a swarm coordinator as an agent, bid on tasks, run the ones it wins.

Usage: swarm-agent [options]

  --server URL          coordinator to join (default $SWARM_SERVER or http://127.0.0.1:3000)
  --name NAME           the agent's name on the dashboard (default <hostname>-<pid>)
  --capabilities LIST   comma-separated, e.g. search,summarize (lower-case a-z 0-9 _ . -)
  --max-concurrent N    tasks it runs at once, 1-100 (default 1)
  --bid-base N          its price in sats for a task that fits it (default 100)
  --keywords LIST       words in a task's description that make it fit (default: its capabilities)
  --adaptive            move the price with its own win and success rates
  --exec COMMAND        run COMMAND in a shell for each won task; the task's text is in
                        $SWARM_TASK_DESCRIPTION and its id in $SWARM_TASK_ID (never spliced
                        into the command line); the results of the tasks it depended on
                        are in the file $SWARM_TASK_DEPENDENCIES_FILE, JSON
                        [{"id","result"}] (and, up to 32 KiB, in $SWARM_TASK_DEPENDENCIES). The
                        command is stopped (SIGTERM) if the task times out or is cancelled.
                        Exit 0 completes the task with its stdout;
                        any other exit fails it with the exit code and stderr.
  --exec-timeout S      seconds before a command is killed and its task failed (default 600)
  --work-ms N           without --exec: how long a simulated task takes (default 1500)
  --fail-rate P         without --exec: share of simulated tasks that fail, 0-1 (default 0)
  --heartbeat-ms N      how often to tell the coordinator it is alive (default 10000); keep it
                        well under the server's SWARM_HEARTBEAT_TIMEOUT_MS
  --grace-ms N          on SIGINT or SIGTERM, how long tasks in hand may take to finish
                        (default 10000); then they are handed back and auctioned again
  --key KEY             operator key, to register (default $SWARM_API_KEY)
  --identity-file PATH  keep the agent's id and token here and reuse them next time
  --log-level LEVEL     fatal, error, warn, info, debug, trace or silent (default info)
  --help                show this

Stops cleanly on SIGINT or SIGTERM: bids no more, lets tasks in hand finish within --grace-ms,
hands back to the coordinator those that do not (auctioned again, not failed; with --exec their
commands are stopped with SIGTERM), then leaves. A second signal ends the grace at once.
`;

export class UsageError extends Error {}

export interface AgentCommand {
  server: string;
  name: string;
  capabilities: string[];
  maxConcurrent: number;
  bidBase: number;
  keywords: string[] | undefined;
  adaptive: boolean;
  exec: string | undefined;
  execTimeoutMs: number;
  workMs: number;
  failRate: number;
  heartbeatMs: number;
  graceMs: number;
  apiKey: string | undefined;
  identityFile: string | undefined;
  logLevel: string;
}

function list(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function number(
  flag: string,
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
  integer = true,
): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (
    value.trim() === "" ||
    !Number.isFinite(parsed) ||
    parsed < min ||
    parsed > max ||
    (integer && !Number.isInteger(parsed))
  ) {
    throw new UsageError(
      `--${flag} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}, got ${JSON.stringify(value)}`,
    );
  }
  return parsed;
}

/** The command line as options; a bad flag is a UsageError that says which and why. */
export function parseCommand(
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
): AgentCommand | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        server: { type: "string" },
        name: { type: "string" },
        capabilities: { type: "string" },
        "max-concurrent": { type: "string" },
        "bid-base": { type: "string" },
        keywords: { type: "string" },
        adaptive: { type: "boolean" },
        exec: { type: "string" },
        "exec-timeout": { type: "string" },
        "work-ms": { type: "string" },
        "fail-rate": { type: "string" },
        "heartbeat-ms": { type: "string" },
        "grace-ms": { type: "string" },
        key: { type: "string" },
        "identity-file": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  if (values.help === true) return "help";
  const server = values.server ?? env.SWARM_SERVER ?? "http://127.0.0.1:3000";
  let parsedServer: URL;
  try {
    parsedServer = new URL(server);
  } catch {
    throw new UsageError(`--server must be a URL like http://127.0.0.1:3000, got ${JSON.stringify(server)}`);
  }
  if (parsedServer.protocol !== "http:" && parsedServer.protocol !== "https:") {
    throw new UsageError(`--server must be an http:// or https:// URL, got ${JSON.stringify(server)}`);
  }
  const capabilities = list(values.capabilities) ?? [];
  for (const capability of capabilities) {
    if (!/^[a-z0-9][a-z0-9_.-]{0,49}$/.test(capability)) {
      throw new UsageError(
        `--capabilities: ${JSON.stringify(capability)} must be 1-50 characters of a-z, 0-9, '_', '.', '-'`,
      );
    }
  }
  const name = values.name ?? `${hostname()}-${process.pid}`;
  if (name.trim() === "" || name.length > 100) throw new UsageError("--name must be 1-100 characters");
  if (values.exec !== undefined && values.exec.trim() === "") throw new UsageError("--exec needs a command");
  const logLevel = values["log-level"] ?? "info";
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(logLevel)) {
    throw new UsageError(`--log-level must be one of fatal, error, warn, info, debug, trace, silent`);
  }
  return {
    server: parsedServer.toString().replace(/\/+$/, ""),
    name,
    capabilities,
    maxConcurrent: number("max-concurrent", values["max-concurrent"], 1, 1, 100),
    bidBase: number("bid-base", values["bid-base"], 100, 1, 1_000_000),
    keywords: list(values.keywords),
    adaptive: values.adaptive === true,
    exec: values.exec,
    execTimeoutMs: number("exec-timeout", values["exec-timeout"], 600, 1, 86_400) * 1000,
    workMs: number("work-ms", values["work-ms"], 1500, 0, 3_600_000),
    failRate: number("fail-rate", values["fail-rate"], 0, 0, 1, false),
    heartbeatMs: number("heartbeat-ms", values["heartbeat-ms"], 10_000, 100, 3_600_000),
    graceMs: number("grace-ms", values["grace-ms"], 10_000, 0, 3_600_000),
    apiKey: values.key ?? env.SWARM_API_KEY,
    identityFile: values["identity-file"],
    logLevel,
  };
}

const MAX_OUTPUT = 100_000;

/** Process groups of commands still running, by their leader's pid. */
const liveGroups = new Set<number>();
let exitHookInstalled = false;

/** An agent that exits (normally, or on an uncaught error) takes its commands with it. */
function killGroupsOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const pid of liveGroups) {
      try {
        process.kill(-pid, "SIGTERM");
      } catch {
        // Already gone.
      }
    }
  });
}

/**
 * Run the command for a task: stdout is the result; a non-zero exit is an error with stderr.
 *
 * The command runs in a process group of its own. Ctrl-C in a terminal signals the whole
 * foreground group, and a command sharing the agent's would die at once and fail its task; in
 * its own group it runs on through the agent's grace. When the task's signal aborts (the grace
 * ran out, or the task was cancelled) or the timeout passes, the whole group gets SIGTERM, so
 * that what the shell started goes too.
 */
/** Inline dependency results up to this size; past it, the file alone (an environment string is capped at 128 KiB). */
const INLINE_DEPENDENCIES_BYTES = 32 * 1024;

/**
 * What the tasks this one depended on produced, as JSON `[{ "id", "result" }]`: in
 * $SWARM_TASK_DEPENDENCIES when small, and always in the file $SWARM_TASK_DEPENDENCIES_FILE names
 * (removed when the command ends).
 */
function dependencyInputs(dependencies: readonly TaskView[]): {
  env: Record<string, string>;
  cleanUp(): void;
} {
  if (dependencies.length === 0) return { env: { SWARM_TASK_DEPENDENCIES: "[]" }, cleanUp: () => undefined };
  const json = JSON.stringify(dependencies.map(({ id, result }) => ({ id, result: result ?? null })));
  const dir = mkdtempSync(join(tmpdir(), "swarm-task-"));
  const file = join(dir, "dependencies.json");
  writeFileSync(file, json, { mode: 0o600 });
  return {
    env: {
      SWARM_TASK_DEPENDENCIES_FILE: file,
      ...(Buffer.byteLength(json) <= INLINE_DEPENDENCIES_BYTES ? { SWARM_TASK_DEPENDENCIES: json } : {}),
    },
    cleanUp: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function execHandler(command: string, timeoutMs: number): TaskHandler {
  killGroupsOnExit();
  return ({ task, tool, signal, dependencies }: TaskContext) =>
    tool(
      "shell.exec",
      { command },
      () =>
        new Promise<string>((resolve, reject) => {
          if (signal.aborted) {
            reject(new Error("stopped before the command ran"));
            return;
          }
          const inputs = dependencyInputs(dependencies);
          const child = spawn(command, {
            shell: true,
            detached: true,
            env: {
              ...process.env,
              SWARM_TASK_ID: task.id,
              SWARM_TASK_DESCRIPTION: task.description,
              ...inputs.env,
            },
            stdio: ["ignore", "pipe", "pipe"],
          });
          let stopped: string | undefined;
          const stopGroup = (why: string) => {
            stopped ??= why;
            try {
              if (child.pid !== undefined) process.kill(-child.pid, "SIGTERM");
            } catch {
              // The group has already gone.
            }
          };
          const timer = setTimeout(() => stopGroup(`timed out after ${timeoutMs / 1000} s`), timeoutMs);
          const onAbort = () => stopGroup("stopped");
          signal.addEventListener("abort", onAbort, { once: true });
          if (child.pid !== undefined) liveGroups.add(child.pid);
          let stdout = "";
          let stderr = "";
          child.stdout.on("data", (chunk: Buffer) => {
            if (stdout.length < MAX_OUTPUT) stdout += chunk.toString();
          });
          child.stderr.on("data", (chunk: Buffer) => {
            if (stderr.length < MAX_OUTPUT) stderr += chunk.toString();
          });
          child.on("error", (error) => {
            inputs.cleanUp();
            reject(error);
          });
          child.on("close", (code, killedBy) => {
            clearTimeout(timer);
            inputs.cleanUp();
            signal.removeEventListener("abort", onAbort);
            if (child.pid !== undefined) liveGroups.delete(child.pid);
            if (code === 0 && stopped === undefined) return resolve(stdout.trimEnd().slice(0, MAX_OUTPUT));
            const how = killedBy !== null ? `killed by ${killedBy}` : `exit code ${code}`;
            const why = stopped === undefined ? how : `${stopped} (${how})`;
            reject(new Error(`${why}: ${stderr.trim().slice(0, 9000) || "(no stderr)"}`));
          });
        }),
    );
}

/** A stand-in worker: pretends to search and write, and fails a given share of tasks. */
export function simulatedHandler(
  workMs: number,
  failRate: number,
  random: () => number = Math.random,
): TaskHandler {
  return async ({ task, tool, signal }) => {
    const words = task.description.split(/\s+/).filter(Boolean);
    await tool("web.search", { query: words.slice(0, 6).join(" ") }, () =>
      delay(workMs * (0.3 + 0.4 * random()), signal),
    );
    if (random() < failRate) throw new Error("the simulated worker gave up");
    await tool("text.write", { words: words.length }, () => delay(workMs * (0.2 + 0.3 * random()), signal));
    return `simulated result for: ${words.slice(0, 12).join(" ")}`;
  };
}

export async function main(argv: readonly string[]): Promise<number> {
  let command: AgentCommand | "help";
  try {
    command = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`swarm-agent: ${error.message}\nRun swarm-agent --help for the options.\n`);
    return 2;
  }
  if (command === "help") {
    process.stdout.write(HELP);
    return 0;
  }
  const logger = pino({ level: command.logLevel, base: { agent: command.name } }, pino.destination(2));
  const strategyOptions = { baseSats: command.bidBase, keywords: command.keywords ?? command.capabilities };
  const agent = new SwarmAgent({
    server: command.server,
    name: command.name,
    capabilities: command.capabilities,
    maxConcurrent: command.maxConcurrent,
    heartbeatMs: command.heartbeatMs,
    stopGraceMs: command.graceMs,
    apiKey: command.apiKey,
    identityFile: command.identityFile,
    strategy: command.adaptive ? adaptiveStrategy(strategyOptions) : matchStrategy(strategyOptions),
    handler:
      command.exec === undefined
        ? simulatedHandler(command.workMs, command.failRate)
        : execHandler(command.exec, command.execTimeoutMs),
    logger,
  });
  // A worker may well start before its coordinator: wait for it, but give up on a refusal
  // (a wrong key, a bad name), which waiting cannot fix.
  for (let attempt = 0; ; attempt += 1) {
    try {
      await agent.start();
      break;
    } catch (error) {
      if (!isTransient(error)) {
        logger.fatal({ err: error }, `could not join ${command.server}`);
        return 1;
      }
      const wait = Math.min(15_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
      logger.warn(
        { err: error, retry_in_ms: Math.round(wait) },
        `cannot reach ${command.server} yet; retrying`,
      );
      await delay(wait);
    }
  }
  logger.info(
    { agent_id: agent.id, server: command.server },
    `joined ${command.server} as ${command.name} (${shortId(agent.id)}); waiting for auctions`,
  );
  await new Promise<void>((resolve) => {
    let signals = 0;
    const leave = (signal: string) => {
      signals += 1;
      if (signals === 1) {
        logger.info(
          { signal, grace_ms: command.graceMs },
          "leaving: tasks in hand may finish within the grace",
        );
        void agent.stop().then(resolve);
      } else {
        logger.info({ signal }, "leaving now: tasks still in hand are handed back");
        void agent.stop({ graceMs: 0 });
      }
    };
    process.on("SIGINT", () => leave("SIGINT"));
    process.on("SIGTERM", () => leave("SIGTERM"));
  });
  return 0;
}

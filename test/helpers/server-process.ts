/**
 * The server as `npm start` runs it, in a child process of the test: its JSON log lines parsed
 * as they come, its stderr kept. Killed after the test, whatever happened.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach } from "vitest";

export const SERVER = fileURLToPath(new URL("../../src/server.ts", import.meta.url));
/** tsx's loader, found from here, so that the server may run in any folder. */
export const TSX = import.meta.resolve("tsx");

export interface LogLine {
  msg?: string;
  [key: string]: unknown;
}

/** Processes a test started, killed after it whatever happened. */
export const spawned: ChildProcess[] = [];
afterEach(() => {
  for (const started of spawned.splice(0)) started.kill("SIGKILL");
});

/** A JSON log line, or any other line (the start line, pretty logs) as its text in `msg`. */
export function parseLine(text: string): LogLine {
  try {
    return JSON.parse(text) as LogLine;
  } catch {
    return { msg: text };
  }
}

/** The server as `npm start` runs it, in `cwd` (where relative paths land); `nodeArgs` go before it (a preload). */
export function startServer(env: Record<string, string>, cwd?: string, nodeArgs: readonly string[] = []) {
  const child = spawn(process.execPath, [...nodeArgs, "--import", TSX, SERVER], {
    cwd,
    env: { ...process.env, HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  spawned.push(child);
  const lines: LogLine[] = [];
  const waiters: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  createInterface({ input: child.stdout }).on("line", (text) => {
    const line = parseLine(text);
    lines.push(line);
    for (const waiter of waiters.filter((w) => w.match(line))) waiter.resolve(line);
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    child,
    lines,
    exited,
    stderr: () => stderr,
    waitFor(match: (line: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out; stderr: ${stderr}`)), timeoutMs);
        waiters.push({ match, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      });
    },
  };
}

import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { openTestLog } from "./helpers/event-log.js";
import { eventually } from "./helpers/stack.js";
import { tempDir } from "./helpers/temp-dir.js";

const SERVER = fileURLToPath(new URL("../src/server.ts", import.meta.url));
/** tsx's loader, found from here, so that the server may run in any folder. */
const TSX = import.meta.resolve("tsx");

interface LogLine {
  msg?: string;
  [key: string]: unknown;
}

/** The server as `npm start` runs it, in `cwd` (where relative paths land). */
function startServer(env: Record<string, string>, cwd?: string) {
  const child = spawn(process.execPath, ["--import", TSX, SERVER], {
    cwd,
    env: { ...process.env, HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: LogLine[] = [];
  const waiters: { match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  createInterface({ input: child.stdout }).on("line", (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text };
    }
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

describe("the server process", () => {
  it("starts on its own database, answers /healthz, and stops cleanly on SIGTERM", async () => {
    const db = join(tempDir(), "data", "swarm.db");
    const server = startServer({ SWARM_DB: db });
    try {
      const listening = await server.waitFor((line) => String(line.msg).startsWith("Server listening at"));
      const url = /http:\/\/[\d.]+:\d+/.exec(String(listening.msg))?.[0];
      const ready = await server.waitFor((line) => line.msg === "swarm coordinator ready");
      expect(ready).toMatchObject({ db, retention_days: 30 });
      const health = await fetch(`${url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: "ok", latest_seq: 0 });
      server.child.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      expect(server.lines.map((l) => l.msg)).toContain("stopped");
      // The file is left consistent and reopens cleanly.
      const log = openTestLog({ path: db });
      expect(log.db.pragma("integrity_check", { simple: true })).toBe("ok");
    } finally {
      server.child.kill("SIGKILL");
    }
  });

  it.each([
    [{ SWARM_PRUNE_CRON: "whenever" }, "SWARM_PRUNE_CRON"],
    [{ HOST: "0.0.0.0" }, "SWARM_API_KEY"],
    [{ SWARM_DB: "postgres://swarm:pw@127.0.0.1:5432/swarm" }, "SWARM_DB"],
  ])("refuses to start on bad configuration %j, naming %s", async (env, variable) => {
    const dir = tempDir();
    const server = startServer({ SWARM_DB: join(dir, "x.db"), ...env }, dir);
    expect(await server.exited).not.toBe(0);
    expect(server.stderr()).toContain(variable);
    expect(server.stderr()).toMatch(/^swarm coordinator cannot start: /);
    // A URL is not taken for a path: no folder named after its scheme.
    expect(readdirSync(dir)).not.toContain("postgres:");
  });

  it(
    "refuses a second server on the same file, naming it, while the first keeps serving; after kill -9 a new one starts at once",
    { timeout: 60_000 },
    async () => {
      const dir = tempDir();
      const db = join(dir, "swarm.db");
      const first = startServer({ SWARM_DB: db });
      const servers = [first];
      try {
        const ready = await first.waitFor((line) => line.msg === "swarm coordinator ready");
        const url = String(ready.url);
        const post = (description: string) =>
          fetch(`${url}/api/tasks`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            // An auction that stays open: nothing is due while the second server tries to start.
            body: JSON.stringify({ description, auction_ms: 600_000 }),
          });
        const posted = await post("before the second server");
        expect(posted.status).toBe(201);
        const { task } = (await posted.json()) as { task: { id: string } };
        const health = async () => (await (await fetch(`${url}/healthz`)).json()) as { latest_seq: number };
        const seqBefore = (await health()).latest_seq;

        // The same file by another name: relative, from the folder it is in.
        const second = startServer({ SWARM_DB: "./swarm.db" }, dir);
        servers.push(second);
        expect(await withinGuard(second.exited, "the second server", 20_000)).toBe(1);
        const refusal = second.stderr().trim();
        expect(refusal.split("\n"), "one line, no stack trace").toHaveLength(1);
        expect(refusal).toMatch(
          /^swarm coordinator cannot start: SWARM_DB \.\/swarm\.db is in use by another/,
        );
        expect(refusal).toContain(`${db}.lock`);
        expect(refusal).toContain("PostgreSQL");
        expect(second.lines.map((line) => line.msg)).not.toContain("swarm coordinator ready");

        // The first is untouched (the second wrote nothing: no recovery ran) and still takes writes.
        expect((await health()).latest_seq).toBe(seqBefore);
        expect((await post("after the second server was refused")).status).toBe(201);
        expect((await fetch(`${url}/api/tasks/${task.id}`)).status).toBe(200);

        // A holder killed with SIGKILL leaves no lock behind: a restart at once takes the file.
        first.child.kill("SIGKILL");
        await first.exited;
        const third = startServer({ SWARM_DB: db });
        servers.push(third);
        const thirdReady = await third.waitFor((line) => line.msg === "swarm coordinator ready");
        const again = await fetch(`${String(thirdReady.url)}/api/tasks/${task.id}`);
        expect(again.status).toBe(200);
        third.child.kill("SIGTERM");
        expect(await third.exited).toBe(0);
      } finally {
        for (const server of servers) server.child.kill("SIGKILL");
      }
    },
  );

  it("closes stream clients with 1001 on SIGTERM and keeps what was acknowledged", async () => {
    const db = join(tempDir(), "swarm.db");
    const server = startServer({ SWARM_DB: db });
    try {
      const listening = await server.waitFor((line) => String(line.msg).startsWith("Server listening at"));
      const url = /http:\/\/[\d.]+:\d+/.exec(String(listening.msg))?.[0] ?? "";
      const posted = await fetch(`${url}/api/tasks`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ description: "survives the restart" }),
      });
      expect(posted.status).toBe(201);
      const { task } = (await posted.json()) as { task: { id: string } };
      const socket = new WebSocket(`${url.replace("http", "ws")}/api/stream?after_seq=0`);
      const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
      await new Promise((resolve) => socket.once("open", resolve));
      server.child.kill("SIGTERM");
      expect(await closed).toBe(1001);
      expect(await server.exited).toBe(0);
      const log = openTestLog({ path: db });
      expect(log.getTaskEvents(task.id).map((e) => e.event_type)).toEqual(["task.created", "task.bidding"]);
    } finally {
      server.child.kill("SIGKILL");
    }
  });
});

/**
 * The server with its stdout going to a separate reader process, as under `npm start | shipper`.
 * The reader copies the log to the test until the server is ready; then, unless told to go on,
 * it stops reading (keeping the pipe open) until it is killed.
 */
const spawned: ChildProcess[] = [];
afterEach(() => {
  for (const started of spawned.splice(0)) started.kill("SIGKILL");
});

async function startServerLoggingToReader(env: Record<string, string>, { keepReading = false } = {}) {
  const script = keepReading ? "exec cat" : 'sed "/swarm coordinator ready/q"; exec sleep 600 >/dev/null';
  const reader = spawn("sh", ["-c", script], { stdio: ["pipe", "pipe", "ignore"] });
  const child = spawn(process.execPath, ["--import", "tsx", SERVER], {
    env: { ...process.env, HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", reader.stdin, "pipe"],
  });
  spawned.push(reader, child);
  reader.stdin.destroy(); // the server holds the only writing end now
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const readerGone = new Promise((resolve) => reader.on("exit", resolve));
  let copied = "";
  const url = await new Promise<string>((resolve, reject) => {
    reader.stdout.on("data", (chunk: Buffer) => {
      copied += chunk.toString();
      const ready = /"url":"(http:\/\/[\d.]+:\d+)"[^\n]*"msg":"swarm coordinator ready"/.exec(copied);
      if (ready?.[1] !== undefined) resolve(ready[1]);
    });
    reader.stdout.once("end", () => reject(new Error(`the server did not get ready; stderr: ${stderr}`)));
  });
  return {
    child,
    url,
    exited,
    stderr: () => stderr,
    /** What the reader has copied, one parsed line each. */
    copied: () =>
      copied
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line) as LogLine),
    async killReader() {
      reader.kill("SIGKILL");
      await readerGone;
    },
  };
}

/** Fails the test if `exited` does not settle in time; only a guard against hanging for ever. */
function withinGuard<T>(exited: Promise<T>, what: string, guardMs = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not exit within ${guardMs} ms`)), guardMs);
  });
  return Promise.race([exited, guard]).finally(() => clearTimeout(timer));
}

describe("shutdown whatever the log pipe does", () => {
  it(
    "exits on SIGTERM after the process reading its stdout has been killed",
    { timeout: 60_000 },
    async () => {
      const server = await startServerLoggingToReader({ SWARM_DB: join(tempDir(), "swarm.db") });
      try {
        expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
        await server.killReader();
        // The shutdown's own lines are the first to meet the dead pipe.
        server.child.kill("SIGTERM");
        expect(await withinGuard(server.exited, "the server"), server.stderr()).toBe(0);
      } finally {
        server.child.kill("SIGKILL");
      }
    },
  );

  it(
    "exits on SIGTERM while the process reading its stdout has stopped reading",
    { timeout: 60_000 },
    async () => {
      const server = await startServerLoggingToReader({ SWARM_DB: join(tempDir(), "swarm.db") });
      try {
        // Fill the pipe and the logger's buffer behind it: 400 request lines of about 4 KB.
        const padding = "x".repeat(4000);
        for (let i = 0; i < 400; i += 1) await (await fetch(`${server.url}/healthz?pad=${padding}`)).text();
        server.child.kill("SIGTERM");
        expect(await withinGuard(server.exited, "the server"), server.stderr()).toBe(0);
      } finally {
        await server.killReader();
        server.child.kill("SIGKILL");
      }
    },
  );

  it(
    "exits with code 1 when its grace runs out, saying so, while a request never finishes",
    { timeout: 60_000 },
    async () => {
      const server = await startServerLoggingToReader(
        { SWARM_DB: join(tempDir(), "swarm.db"), SWARM_SHUTDOWN_GRACE_MS: "2000" },
        { keepReading: true },
      );
      // A body that is announced but never sent holds the HTTP server's close open.
      const { hostname, port } = new URL(server.url);
      const stalled = connect(Number(port), hostname);
      stalled.on("error", () => undefined);
      await new Promise((resolve) => stalled.once("connect", resolve));
      stalled.write(
        "POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
      );
      await eventually(
        () => server.copied().some((line) => line.msg === "incoming request"),
        (taken) => taken,
      );
      server.child.kill("SIGTERM");
      expect(await withinGuard(server.exited, "the server"), server.stderr()).toBe(1);
      stalled.destroy();
      const said = server.copied().map((line) => line.msg);
      expect(said).toContain("shutting down");
      expect(said).toContain("shutdown did not finish within its grace; exiting anyway");
    },
  );
});

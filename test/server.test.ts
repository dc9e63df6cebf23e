import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { openTestLog } from "./helpers/event-log.js";
import { tempDir } from "./helpers/temp-dir.js";

const SERVER = fileURLToPath(new URL("../src/server.ts", import.meta.url));

interface LogLine {
  msg?: string;
  [key: string]: unknown;
}

function startServer(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", SERVER], {
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
  ])("refuses to start on bad configuration %j, naming %s", async (env, variable) => {
    const server = startServer({ SWARM_DB: join(tempDir(), "x.db"), ...env });
    expect(await server.exited).not.toBe(0);
    expect(server.stderr()).toContain(variable);
    expect(server.stderr()).toMatch(/^swarm coordinator cannot start: /);
  });

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

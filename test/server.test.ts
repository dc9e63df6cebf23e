import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { openTestLog } from "./helpers/event-log.js";
import { parseLine, SERVER, spawned, startServer, TSX } from "./helpers/server-process.js";
import { eventually } from "./helpers/stack.js";
import { tempDir } from "./helpers/temp-dir.js";

describe("the server process", () => {
  it("starts on its own database, answers /healthz, and stops cleanly on SIGTERM", async () => {
    const db = join(tempDir(), "data", "swarm.db");
    const server = startServer({ SWARM_DB: db, SWARM_REPLICA_ID: "solo-1" });
    try {
      const listening = await server.waitFor((line) => String(line.msg).startsWith("Server listening at"));
      const url = /http:\/\/[\d.]+:\d+/.exec(String(listening.msg))?.[0];
      const ready = await server.waitFor((line) => line.msg === "swarm coordinator ready");
      expect(ready).toMatchObject({ db, retention_days: 30 });
      const health = await fetch(`${url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({
        status: "ok",
        storage: "sqlite",
        latest_seq: 0,
        search_indexed_through: 0,
        replica: { id: "solo-1", leader: true, lease_holder: "solo-1", peers: 0 },
      });
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

  it("says where it listens in one line at start, whatever LOG_LEVEL, and logs no line per request below debug", async () => {
    const server = startServer({ SWARM_DB: join(tempDir(), "swarm.db"), LOG_LEVEL: "warn" });
    try {
      const started = await server.waitFor((line) =>
        String(line.msg).startsWith("swarm coordinator listening on"),
      );
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(String(started.msg))?.[0];
      expect(started.msg).toMatch(/ on http:\/\/127\.0\.0\.1:\d+\/ .*database .*swarm\.db/);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await fetch(`${url}/api/events?limit=1`)).status).toBe(200);
      server.child.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      // Nothing at info (not even Fastify's "Server listening at"), and no request lines.
      expect(server.lines.filter((line) => line.level === 30 || line.req !== undefined)).toEqual([]);
    } finally {
      server.child.kill("SIGKILL");
    }
  });

  it("writes pretty lines with LOG_FORMAT=pretty, and one line per request at debug", async () => {
    const server = startServer({
      SWARM_DB: join(tempDir(), "swarm.db"),
      LOG_LEVEL: "debug",
      LOG_FORMAT: "pretty",
    });
    try {
      const started = await server.waitFor((line) =>
        String(line.msg).startsWith("swarm coordinator listening on"),
      );
      const url = /http:\/\/127\.0\.0\.1:\d+/.exec(String(started.msg))?.[0];
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      await server.waitFor((line) => /DEBUG: GET \/healthz 200 \(\d+ ms\)/.test(String(line.msg)));
      server.child.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      const said = server.lines.map((line) => String(line.msg));
      expect(said).toContainEqual(
        expect.stringMatching(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: swarm coordinator ready$/),
      );
      expect(said.filter((text) => text.includes("GET /healthz"))).toHaveLength(1);
      // Not one JSON line.
      expect(server.lines.filter((line) => line.level !== undefined)).toEqual([]);
    } finally {
      server.child.kill("SIGKILL");
    }
  });

  it.skipIf(!existsSync("/usr/bin/script") && !process.env.CI)(
    "writes pretty lines on a terminal by itself",
    { timeout: 60_000 },
    async () => {
      // util-linux's script runs the server on a pseudo-terminal; the shell says its pid first,
      // which exec then hands to node, so that the test can stop the very process it started.
      const command = `echo "pid $$"; exec ${process.execPath} --import ${TSX} ${SERVER}`;
      const child = spawn("script", ["-qfec", command, "/dev/null"], {
        env: {
          ...process.env,
          HOST: "127.0.0.1",
          PORT: "0",
          LOG_LEVEL: "info",
          SWARM_DB: join(tempDir(), "swarm.db"),
        },
        stdio: ["pipe", "pipe", "pipe"],
      });
      spawned.push(child);
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const exited = new Promise((resolve) => child.on("exit", resolve));
      let serverPid = 0;
      try {
        const said = await eventually(
          () => /pid (\d+)/.exec(output)?.[1],
          (pid) => pid !== undefined,
        );
        serverPid = Number(said);
        await eventually(
          () => output,
          (seen) => seen.includes("swarm coordinator listening on"),
          30_000,
        );
        process.kill(serverPid, "SIGTERM");
        await exited;
      } finally {
        if (serverPid > 0 && child.exitCode === null) process.kill(serverPid, "SIGKILL");
      }
      // eslint-disable-next-line no-control-regex
      const plain = output.replace(/\u001b\[[0-9;]*m/g, "");
      expect(plain).toMatch(/\[\d\d:\d\d:\d\d\.\d{3}\] INFO: swarm coordinator ready/);
      expect(plain).not.toMatch(/^\{"level"/m);
    },
  );

  it.each([
    [{ SWARM_PRUNE_CRON: "whenever" }, "SWARM_PRUNE_CRON"],
    [{ HOST: "0.0.0.0" }, "SWARM_API_KEY"],
    [{ SWARM_DB: "mysql://swarm:pw@127.0.0.1:3306/swarm" }, "SWARM_DB"],
    // Nothing listens on port 1: the server says which setting pointed there, without its password.
    [
      { SWARM_DB: "postgres://swarm:secret-pw@127.0.0.1:1/swarm" },
      "SWARM_DB postgres://swarm:***@127.0.0.1:1/swarm",
    ],
  ])("refuses to start on bad configuration %j, naming %s", async (env, variable) => {
    const dir = tempDir();
    const server = startServer({ SWARM_DB: join(dir, "x.db"), ...env }, dir);
    expect(await server.exited).not.toBe(0);
    expect(server.stderr()).toContain(variable);
    expect(server.stderr()).toMatch(/^swarm coordinator cannot start: /);
    // A URL is not taken for a path: no folder named after its scheme.
    expect(readdirSync(dir).filter((name) => name.includes(":"))).toEqual([]);
    expect(server.stderr()).not.toContain("secret-pw");
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
        .map((line) => parseLine(line)),
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
      // At debug every request is a line, which is what fills the pipe here.
      const server = await startServerLoggingToReader({
        SWARM_DB: join(tempDir(), "swarm.db"),
        LOG_LEVEL: "debug",
      });
      try {
        // Fill the pipe and the logger's buffer behind it: 400 request lines of about 8 KB.
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
        // At trace a request's arrival is logged, which is how the test knows it is in.
        { SWARM_DB: join(tempDir(), "swarm.db"), SWARM_SHUTDOWN_GRACE_MS: "2000", LOG_LEVEL: "trace" },
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
        () =>
          server.copied().some((line) => String(line.msg).startsWith("incoming request: POST /api/tasks")),
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

/**
 * The server process on PostgreSQL (`SWARM_DB=postgres://…`), on a private database server the
 * test halts and resumes: the whole lifecycle runs over HTTP; while the database is away writes
 * are answered 503 STORAGE_UNAVAILABLE and /healthz says so; once it is back the same process
 * serves again with no restart; after `kill -9` a new process finds everything it acknowledged.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { silentLogger } from "../helpers/event-log.js";
import { havePostgres, startPrivatePostgres, type PrivatePostgres } from "../helpers/postgres.js";
import { startServer } from "../helpers/server-process.js";
import { eventually } from "../helpers/stack.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";

const KEY = "operator-key-for-the-postgres-server-test";
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field

describe.skipIf(!havePostgres)("the server on PostgreSQL", () => {
  let database: PrivatePostgres;

  beforeAll(() => {
    database = startPrivatePostgres();
  }, 60_000);
  afterAll(() => database?.remove());

  const start = async () => {
    const server = startServer({
      SWARM_DB: database.url,
      SWARM_API_KEY: KEY,
      SWARM_AUCTION_MS: "300",
      SWARM_RATE_LIMIT: "0",
    });
    const ready = await server.waitFor((line) => line.msg === "swarm coordinator ready", 30_000);
    return { server, ready, url: String(ready.url) };
  };

  const call = async (base: string, method: string, path: string, body?: object, token = KEY) => {
    const response = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Json };
  };

  it(
    "runs a task's whole life, answers 503 while the database is away and serves again by itself, and keeps every acknowledged write across kill -9",
    { timeout: 120_000 },
    async () => {
      const { server, ready, url } = await start();
      expect(ready).toMatchObject({ storage: "postgres" });
      // The password never reaches the log; this URL has none, but the user and host are shown.
      expect(String(ready.db)).toContain("127.0.0.1");
      expect((await call(url, "GET", "/healthz")).body).toMatchObject({ status: "ok", storage: "postgres" });

      // A whole lifecycle over HTTP, the auction closed by the server's own clock.
      const registered = await call(url, "POST", "/api/agents", { name: "worker", capabilities: ["code"] });
      expect(registered.status).toBe(201);
      const agent = registered.body as { agent: { id: string }; token: string };
      const posted = await call(url, "POST", "/api/tasks", {
        description: "fix it",
        required_capabilities: ["code"],
      });
      expect(posted.status).toBe(201);
      const taskId = String(posted.body.task.id);
      expect(
        (await call(url, "POST", `/api/tasks/${taskId}/bids`, { bid_sats: 42 }, agent.token)).status,
      ).toBe(201);
      await eventually(
        async () => (await call(url, "GET", `/api/tasks/${taskId}`)).body.task.status,
        (status) => status === "assigned",
      );
      expect((await call(url, "POST", `/api/tasks/${taskId}/start`, {}, agent.token)).status).toBe(200);
      const completed = await call(
        url,
        "POST",
        `/api/tasks/${taskId}/complete`,
        { result: "fixed" },
        agent.token,
      );
      expect(completed.status).toBe(200);
      expect(completed.body.task).toMatchObject({ status: "completed", assigned_agent: agent.agent.id });

      // The database goes away: writes are refused, plainly, and the process stays up.
      const acknowledged = [taskId];
      database.halt();
      try {
        const refused = await call(url, "POST", "/api/tasks", { description: "in the gap" });
        expect(refused.status).toBe(503);
        expect(refused.body.error.code).toBe("STORAGE_UNAVAILABLE");
        const health = await call(url, "GET", "/healthz");
        expect(health.status).toBe(503);
        expect(health.body).toMatchObject({ storage: "postgres" });
        expect(["unavailable", "degraded"]).toContain(health.body.status);
        expect((await call(url, "GET", `/api/tasks/${taskId}`)).status).toBe(503);
      } finally {
        database.resume();
      }

      // Back by itself: the same process answers again, healthz first among them.
      await eventually(
        async () => (await call(url, "GET", "/healthz")).body.status as string,
        (status) => status === "ok",
        30_000,
      );
      const after = await eventually(
        () => call(url, "POST", "/api/tasks", { description: "after the gap" }),
        (response) => response.status === 201,
        30_000,
      );
      acknowledged.push(String(after.body.task.id));
      expect(server.child.exitCode).toBeNull();

      // kill -9, then a new process on the same database: everything acknowledged is there,
      // nothing refused is, and the log is gap-free.
      server.child.kill("SIGKILL");
      await server.exited;
      const second = await start();
      const tasks = (await call(second.url, "GET", "/api/tasks?limit=100")).body.tasks as {
        id: string;
        description: string;
      }[];
      expect(tasks.map((task) => task.id).sort()).toEqual([...acknowledged].sort());
      expect(tasks.some((task) => task.description === "in the gap")).toBe(false);
      expect((await call(second.url, "GET", `/api/tasks/${taskId}`)).body.task.status).toBe("completed");

      const log = new PostgresEventLog({ url: database.url, logger: silentLogger });
      try {
        const events = (await log.listEvents({ limit: 1000 })).events;
        expect(events.map((event) => event.seq)).toEqual(events.map((_, index) => index + 1));
      } finally {
        await log.close();
      }

      // The stream on the new process resumes from seq 0 and hears the whole log once, in order.
      const latest = (await call(second.url, "GET", "/healthz")).body.latest_seq as number;
      const socket = new WebSocket(`${second.url.replace("http", "ws")}/api/stream?after_seq=0`, {
        headers: { authorization: `Bearer ${KEY}` },
      });
      const seqs: number[] = [];
      await new Promise<void>((resolve, reject) => {
        socket.on("message", (data: Buffer) => {
          const message = JSON.parse(data.toString()) as { type: string; event?: { seq: number } };
          if (message.type === "event" && message.event !== undefined) seqs.push(message.event.seq);
          if (seqs.length >= latest) resolve();
        });
        socket.on("error", reject);
      });
      socket.close();
      expect(seqs.slice(0, latest)).toEqual(Array.from({ length: latest }, (_, index) => index + 1));
      second.server.child.kill("SIGTERM");
      expect(await second.server.exited).toBe(0);
    },
  );
});

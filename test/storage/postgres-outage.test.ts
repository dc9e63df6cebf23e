/**
 * PostgreSQL only: the database goes away and comes back. Writes and reads in the gap fail with
 * STORAGE_UNAVAILABLE (and the log says since when), nothing refused is stored, nothing
 * acknowledged is lost, and the same log instance writes again once the server is back, with
 * no reopening. (SQLite's counterparts, a full disk and a read-only file, are in
 * test/reliability/faults.test.ts.)
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredEvent } from "../../src/event-log/types.js";
import { withClient } from "../../src/storage/postgres/database.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { silentLogger } from "../helpers/event-log.js";
import { havePostgres, startPrivatePostgres, type PrivatePostgres } from "../helpers/postgres.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!havePostgres)("a PostgreSQL that goes away and comes back", () => {
  let server: PrivatePostgres;

  beforeAll(() => {
    server = startPrivatePostgres();
  }, 60_000);

  afterAll(() => server?.remove());

  it("refuses in the gap with STORAGE_UNAVAILABLE, keeps what it acknowledged, and writes again by itself", async () => {
    const log = new PostgresEventLog({ url: server.url, logger: silentLogger, connectTimeoutMs: 1000 });
    try {
      await log.whenReady();
      const before = await log.logEvents(
        Array.from({ length: 20 }, (_, i) => ({ event_type: "task.created", source: "test", data: { i } })),
      );
      const heard: number[] = [];
      log.subscribe((event) => heard.push(event.seq));

      server.halt();
      const refused = await Promise.allSettled([
        log.logEvent({ event_type: "task.created", source: "test", data: { during: 1 } }),
        log.logEvents([
          { event_type: "task.created", source: "test", data: { during: 2 } },
          { event_type: "task.created", source: "test", data: { during: 3 } },
        ]),
      ]);
      expect(refused.map((outcome) => outcome.status)).toEqual(["rejected", "rejected"]);
      expect(refused[0]).toMatchObject({ reason: { code: "STORAGE_UNAVAILABLE" } });
      expect(log.storageFailure).toMatchObject({ code: expect.any(String) as string });
      await expect(log.listEvents()).rejects.toMatchObject({ code: "STORAGE_UNAVAILABLE" });
      await expect(log.latestSeq()).rejects.toMatchObject({ code: "STORAGE_UNAVAILABLE" });
      await sleep(2000); // the gap lasts a while: the pool's dead connections are all tried and dropped

      server.resume();
      let after: StoredEvent | undefined;
      for (let attempt = 0; attempt < 50 && after === undefined; attempt += 1) {
        after = await log.logEvent({ event_type: "task.completed", source: "test" }).catch(async () => {
          await sleep(200);
          return undefined;
        });
      }
      expect(after).toBeDefined();
      expect(log.storageFailure).toBeUndefined();
      const stored = (await log.listEvents({ limit: 1000 })).events;
      // All acknowledged, none of the refused, and seq gap-free across the outage.
      expect(stored.map((event) => event.id)).toEqual([...before, after].map((event) => event?.id));
      expect(stored.map((event) => event.seq)).toEqual(stored.map((_, i) => i + 1));
      expect(stored.some((event) => "during" in event.data)).toBe(false);
      // Subscribers hear of what committed after the outage, once.
      for (let waited = 0; heard.length === 0 && waited < 2000; waited += 50) await sleep(50);
      await sleep(600); // a few more polls
      expect(heard).toEqual([after?.seq]);
    } finally {
      await log.close();
    }
  }, 60_000);

  it("opens while the database is down and starts working once it is up, with no reopening", async () => {
    server.halt();
    const log = new PostgresEventLog({ url: server.url, logger: silentLogger, connectTimeoutMs: 1000 });
    try {
      await expect(log.logEvent({ event_type: "task.created", source: "test" })).rejects.toMatchObject({
        code: "STORAGE_UNAVAILABLE",
      });
      await expect(log.listEvents()).rejects.toMatchObject({ code: "STORAGE_UNAVAILABLE" });
      await expect(log.getEventSummary(600)).rejects.toMatchObject({ code: "STORAGE_UNAVAILABLE" });
      server.resume();
      const stored = await log.logEvent({ event_type: "task.created", source: "test", data: { n: 1 } });
      expect((await log.getEvent(stored.id))?.data).toEqual({ n: 1 });
    } finally {
      await log.close();
    }
  }, 60_000);

  it("survives the server ending a connection the log holds (a restart, a terminated backend)", async () => {
    const pool = new pg.Pool({ connectionString: server.url, max: 2 });
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      const outcome = await withClient(pool, async (client) => {
        const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]?.pid;
        await admin.query("SELECT pg_terminate_backend($1)", [pid]);
        await sleep(200); // the client hears of it while it is out of the pool
        return client.query("SELECT 1").then(
          () => "answered",
          (error: unknown) => (error instanceof Error ? error.message : "failed"),
        );
      });
      // The process is still here to say so, and the pool hands out a working connection next.
      expect(outcome).not.toBe("answered");
      expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await admin.end();
      await pool.end();
    }
  });
});

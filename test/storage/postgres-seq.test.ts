/**
 * PostgreSQL only: seq is gap-free and in commit order with many writers on separate
 * connections, some of whose transactions commit late or roll back, so that a reader tailing
 * `seq > last` never passes over an event. (SQLite has one writer at a time by construction.)
 */
import { describe, expect, it } from "vitest";
import pg from "pg";
import type { StoredEvent } from "../../src/event-log/types.js";
import { prepareEvent } from "../../src/event-log/validate.js";
import { appendPrepared, PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { silentLogger } from "../helpers/event-log.js";
import { createTestDatabase, havePostgres } from "../helpers/postgres.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!havePostgres)("seq on PostgreSQL", () => {
  it("never lets a tailing reader see a seq after a higher one or miss one, whatever commits late or rolls back", async () => {
    const url = await createTestDatabase();
    const writerLogs = Array.from(
      { length: 6 },
      () => new PostgresEventLog({ url, logger: silentLogger, maxConnections: 3 }),
    );
    // Transactions held open after numbering, on connections of their own: the case a plain
    // sequence gets wrong (a low number that becomes visible after higher ones).
    const slowPool = new pg.Pool({ connectionString: url, max: 6 });
    const readerPool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      await Promise.all(writerLogs.map((log) => log.whenReady()));
      let writing = true;
      const acknowledged: StoredEvent[] = [];
      const rolledBack: number[] = [];

      const fastWriter = async (log: PostgresEventLog, w: number) => {
        for (let i = 0; i < 60; i += 1) {
          const batch = await Promise.all(
            Array.from({ length: 1 + (i % 4) }, (_, k) =>
              log.logEvent({ event_type: "tool.called", source: `w${w}`, data: { i, k } }),
            ),
          );
          acknowledged.push(...batch);
        }
      };
      const slowWriter = async (s: number) => {
        for (let i = 0; i < 12; i += 1) {
          const client = await slowPool.connect();
          try {
            await client.query("BEGIN");
            const events = [0, 1, 2].map((k) =>
              prepareEvent({ event_type: "task.created", source: `slow${s}`, data: { i, k } }, new Date()),
            );
            const stored = await appendPrepared(client, events);
            await sleep(5 + ((s * 7 + i * 13) % 25)); // other writers wait on the head meanwhile
            if ((s + i) % 5 === 0) {
              await client.query("ROLLBACK");
              rolledBack.push(...stored.map((e) => e.seq));
            } else {
              await client.query("COMMIT");
              acknowledged.push(...stored);
            }
          } finally {
            client.release();
          }
        }
      };

      const seen: number[] = [];
      const violations: string[] = [];
      const reader = (async () => {
        let last = 0;
        for (;;) {
          const done = !writing;
          const { rows } = await readerPool.query<{ seq: string }>(
            "SELECT seq FROM event_log WHERE seq > $1 ORDER BY seq LIMIT 200",
            [last],
          );
          for (const row of rows) {
            const seq = Number(row.seq);
            if (seq !== last + 1) violations.push(`after ${last} the reader saw ${seq}`);
            seen.push(seq);
            last = seq;
          }
          if (done && rows.length === 0) return;
          if (rows.length === 0) await sleep(1);
        }
      })();

      await Promise.all([
        ...writerLogs.map((log, w) => fastWriter(log, w)),
        ...[0, 1, 2, 3, 4, 5].map((s) => slowWriter(s)),
      ]);
      writing = false;
      await reader;

      expect(violations).toEqual([]);
      const total = acknowledged.length;
      expect(total).toBeGreaterThan(900);
      expect(rolledBack.length).toBeGreaterThan(0);
      // Every acknowledged event exactly once, numbered 1..total with nothing left by a rollback.
      expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      expect(acknowledged.map((e) => e.seq).sort((a, b) => a - b)).toEqual(seen);
      const { rows } = await readerPool.query<{ id: string; seq: string }>("SELECT id, seq FROM event_log");
      const stored = new Map(rows.map((row) => [row.id, Number(row.seq)]));
      for (const event of acknowledged) expect(stored.get(event.id)).toBe(event.seq);
    } finally {
      await Promise.all(writerLogs.map((log) => log.close()));
      await slowPool.end();
      await readerPool.end();
    }
  });

  it("feeds subscribers every event once and in seq order, whichever process wrote it", async () => {
    const url = await createTestDatabase();
    const listening = new PostgresEventLog({ url, logger: silentLogger, pollIntervalMs: 20 });
    const others = [0, 1, 2].map(() => new PostgresEventLog({ url, logger: silentLogger }));
    // Another process's transaction that numbers its events and then waits before committing:
    // the listening log's own commits queue behind it and follow its numbers, so its feed must
    // read that gap from the table rather than announce its own events first.
    const slowPool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      await Promise.all([listening, ...others].map((log) => log.whenReady()));
      const heard: number[] = [];
      listening.subscribe((event) => heard.push(event.seq));
      const held = (async () => {
        const client = await slowPool.connect();
        try {
          await client.query("BEGIN");
          const events = [0, 1, 2].map((k) =>
            prepareEvent({ event_type: "task.created", source: "slow", data: { k } }, new Date()),
          );
          const stored = await appendPrepared(client, events);
          await sleep(150);
          await client.query("COMMIT");
          return stored;
        } finally {
          client.release();
        }
      })();
      await sleep(20); // the slow transaction holds the head now
      const writes = [listening, ...others].flatMap((log, w) =>
        Array.from({ length: 40 }, (_, i) =>
          log.logEvent({ event_type: "tool.called", source: `w${w}`, data: { i } }),
        ),
      );
      const stored = [...(await held), ...(await Promise.all(writes))];
      const last = Math.max(...stored.map((e) => e.seq));
      for (let waited = 0; heard.at(-1) !== last && waited < 5000; waited += 20) await sleep(20);
      await sleep(100); // several more polls: nothing may be announced twice
      expect(heard).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1));
    } finally {
      await Promise.all([listening, ...others].map((log) => log.close()));
      await slowPool.end();
    }
  });
});

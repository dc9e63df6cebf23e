import { statSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { runRetention, scheduleRetention } from "../../src/event-log/retention.js";
import type { EventInput } from "../../src/event-log/types.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { ENGINES } from "../helpers/engines.js";
import { fakeClock, openTestLog, silentLogger } from "../helpers/event-log.js";
import { tempDir } from "../helpers/temp-dir.js";

const DAY = 86_400_000;

function eventsAt(
  count: number,
  start: number,
  stepMs: number,
  extra: Partial<EventInput> = {},
): EventInput[] {
  return Array.from({ length: count }, (_, i) => ({
    event_type: "tool.called",
    source: "coordinator",
    task_id: `t-${i % 50}`,
    timestamp: new Date(start + i * stepMs).toISOString(),
    ...extra,
  }));
}

describe.each(ENGINES)("retention on $name", (engine) => {
  describe("pruneEvents", () => {
    it("removes only events older than the cutoff, in several chunks", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      const now = clock.now().getTime();
      await log.logEvents(eventsAt(7000, now - 60 * DAY, 1000, { data: { old: true } }));
      await log.logEvents(eventsAt(300, now - 29 * DAY, 60_000, { data: { old: false } }));
      const report = await log.prune({ olderThanDays: 30 });
      expect(report).toMatchObject({ deleted: 7000, cutoff: new Date(now - 30 * DAY).toISOString() });
      expect(report.chunks).toBeGreaterThan(1);
      const left = (await log.listEvents({ limit: 1000 })).events;
      expect(left).toHaveLength(300);
      expect(left.every((e) => e.data.old === false)).toBe(true);
      expect(await log.pruneEvents(30)).toBe(0);
    });

    it("lets other work run between chunks", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(20_000, clock.now().getTime() - 90 * DAY, 100));
      let turns = 0;
      const ticker = setInterval(() => (turns += 1), 0);
      const report = await log.prune({ olderThanDays: 30, targetChunkMs: 2 });
      clearInterval(ticker);
      expect(report.deleted).toBe(20_000);
      expect(report.chunks).toBeGreaterThan(3);
      expect(turns).toBeGreaterThan(0);
    });

    it("keeps the hourly rollup, so long-term counts outlive the rows", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(120, clock.now().getTime() - 40 * DAY, 60_000));
      const before = await log.getHourlyCounts();
      await log.pruneEvents(30);
      expect(await log.latestSeq()).toBe(0);
      expect(await log.getHourlyCounts()).toEqual(before);
      expect(before.reduce((sum, row) => sum + row.count, 0)).toBe(120);
    });

    // A file that shrinks is SQLite's to show (its incremental vacuum); PostgreSQL's counterpart,
    // space reused rather than the table growing, is the next test.
    it.skipIf(engine.name !== "sqlite")("gives the disk back: the database file shrinks", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const path = join(tempDir(), "swarm.db");
      const log: SqliteEventLog = openTestLog({ path, clock: clock.now, synchronous: "NORMAL" });
      const padding = "x".repeat(600);
      await log.logEvents(eventsAt(4000, clock.now().getTime() - 45 * DAY, 1000, { data: { padding } }));
      await log.logEvents(eventsAt(100, clock.now().getTime() - DAY, 1000, { data: { padding } }));
      log.db.pragma("wal_checkpoint(TRUNCATE)");
      const before = statSync(path).size;
      const report = await log.prune({ olderThanDays: 30 });
      const after = statSync(path).size;
      expect(report.freed_pages).toBeGreaterThan(0);
      expect(after).toBeLessThan(before / 4);
      expect(log.db.pragma("freelist_count", { simple: true })).toBe(0);
      expect(log.listEvents({ limit: 1000 }).events).toHaveLength(100);
    });

    it.skipIf(engine.name !== "postgres")(
      "does not bloat: a prune's space is reused by the next events instead of the table growing",
      async () => {
        const clock = fakeClock("2026-06-01T00:00:00.000Z");
        const log = await engine.openLog({ clock: clock.now });
        const padding = "x".repeat(600);
        const pages = async () =>
          Number(
            (await engine.sql(log, "SELECT pg_relation_size('event_log') / 8192 AS pages"))[0]?.pages ?? 0,
          );
        await log.logEvents(eventsAt(4000, clock.now().getTime() - 45 * DAY, 1000, { data: { padding } }));
        const full = await pages();
        const report = await log.prune({ olderThanDays: 30 });
        expect(report.deleted).toBe(4000);
        expect(report.chunks).toBeGreaterThan(1);
        // The same volume again, now recent: it goes into the space the prune freed.
        await log.logEvents(eventsAt(4000, clock.now().getTime() - DAY, 10, { data: { padding } }));
        expect(await pages()).toBeLessThan(full * 1.2);
        expect(await log.latestSeq()).toBe(8000);
      },
    );

    it.each([0, 0.5, -3, Number.NaN])("refuses retention of %s days, deleting nothing", async (days) => {
      const clock = fakeClock();
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(10, clock.now().getTime() - 10 * DAY, 1000));
      await expect(log.pruneEvents(days)).rejects.toMatchObject({
        code: "RETENTION_TOO_SHORT",
        details: { field: "olderThanDays" },
      });
      expect(await log.latestSeq()).toBe(10);
    });
  });

  describe("scheduled retention", () => {
    it("logs what a run removed and records one system.info event with the counts", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(50, clock.now().getTime() - 31 * DAY, 1000));
      const lines: Record<string, unknown>[] = [];
      const logger = pino(
        { level: "info" },
        { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      );
      const report = await runRetention(log, { retentionDays: 30, logger });
      expect(report.deleted).toBe(50);
      expect(lines).toContainEqual(
        expect.objectContaining({ msg: "event log pruned", deleted: 50, retention_days: 30 }),
      );
      const events = (await log.listEvents()).events;
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        event_type: "system.info",
        source: "retention",
        data: { action: "prune", deleted: 50, retention_days: 30 },
      });
    });

    it("prunes the coordinator's finished work first, and reports it in the same log line and event", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(20, clock.now().getTime() - 31 * DAY, 1000));
      const lines: Record<string, unknown>[] = [];
      const logger = pino(
        { level: "info" },
        { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      );
      const order: string[] = [];
      const finished = { tasks_deleted: 4, agents_deleted: 1, task_cutoff: "2026-05-02T00:00:00.000Z" };
      const report = await runRetention(log, {
        retentionDays: 30,
        logger,
        pruneFinishedWork: async () => {
          // The events are still all there: finished work goes first.
          order.push(`finished work at ${(await log.listEvents({ limit: 1000 })).events.length} events`);
          return finished;
        },
      });
      expect(order).toEqual(["finished work at 20 events"]);
      expect(report).toMatchObject({ deleted: 20, finished_work: finished });
      expect(lines).toContainEqual(
        expect.objectContaining({ msg: "event log pruned", deleted: 20, finished_work: finished }),
      );
      expect((await log.listEvents()).events[0]).toMatchObject({
        event_type: "system.info",
        data: { action: "prune", deleted: 20, finished_work: finished },
      });
    });

    it("prunes the events all the same when pruning finished work fails, and logs why", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(20, clock.now().getTime() - 31 * DAY, 1000));
      const lines: Record<string, unknown>[] = [];
      const logger = pino(
        { level: "info" },
        { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      );
      const report = await runRetention(log, {
        retentionDays: 30,
        logger,
        pruneFinishedWork: () => Promise.reject(new Error("disk on fire")),
      });
      expect(report.deleted).toBe(20);
      expect(report).not.toHaveProperty("finished_work");
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 50,
          msg: expect.stringContaining("pruning finished work failed") as string,
        }),
      );
    });

    it("refuses a bad cron expression naming the setting", async () => {
      const log = await engine.openLog();
      expect(() =>
        scheduleRetention(log, { cron: "every night", retentionDays: 30, logger: silentLogger }),
      ).toThrow(expect.objectContaining({ code: "INVALID_CONFIG", details: { field: "SWARM_PRUNE_CRON" } }));
    });

    it("runs on its schedule", async () => {
      const log = await engine.openLog();
      let finishedRuns = 0;
      const schedule = scheduleRetention(log, {
        cron: "* * * * * *",
        retentionDays: 30,
        logger: silentLogger,
        pruneFinishedWork: async () => {
          finishedRuns += 1;
          return { tasks_deleted: 0 };
        },
      });
      try {
        expect(schedule.nextRun()).toBeInstanceOf(Date);
        const deadline = Date.now() + 10_000;
        while ((await log.latestSeq()) === 0 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 50));
        expect((await log.listEvents()).events[0]).toMatchObject({
          event_type: "system.info",
          data: { action: "prune", finished_work: { tasks_deleted: 0 } },
        });
        expect(finishedRuns).toBeGreaterThan(0);
      } finally {
        await schedule.stop();
      }
    });
  });

  describe("hourly rollup", () => {
    it("folds counted events into the rollup in chunks without changing what readers see", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(500, clock.now().getTime() - 3 * 3_600_000, 30_000));
      const before = await log.getHourlyCounts();
      expect(await engine.sql(log, "SELECT COUNT(*) AS n FROM event_counts_hourly")).toEqual([{ n: 0 }]);
      await expect(log.rollUp(120)).resolves.toBe(500);
      expect(await log.getHourlyCounts()).toEqual(before);
      expect(await engine.sql(log, "SELECT SUM(count) AS n FROM event_counts_hourly")).toEqual([{ n: 500 }]);
      // New events after the rollup are counted live until the next one, and never twice.
      await log.logEvents(eventsAt(7, clock.now().getTime() - 3 * 3_600_000, 1));
      await log.rollUp();
      await log.rollUp();
      expect((await log.getHourlyCounts()).reduce((sum, row) => sum + row.count, 0)).toBe(507);
    });

    it("never prunes an event the rollup has not counted", async () => {
      const clock = fakeClock("2026-06-01T00:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      await log.logEvents(eventsAt(50, clock.now().getTime() - 40 * DAY, 1000));
      await log.pruneEvents(30);
      expect((await log.getHourlyCounts()).reduce((sum, row) => sum + row.count, 0)).toBe(50);
    });
  });

  describe("scheduled rollup", () => {
    it("folds new events into the rollup on its schedule", async () => {
      const log = await engine.openLog();
      await log.logEvents(eventsAt(25, Date.now() - 60_000, 10));
      const schedule = scheduleRetention(log, {
        cron: "0 0 1 1 *",
        rollupCron: "* * * * * *",
        retentionDays: 30,
        logger: silentLogger,
      });
      try {
        const deadline = Date.now() + 10_000;
        const counted = async () =>
          Number(
            (await engine.sql(log, "SELECT COALESCE(SUM(count), 0) AS n FROM event_counts_hourly"))[0]?.n,
          );
        while ((await counted()) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        expect(await counted()).toBe(25);
      } finally {
        await schedule.stop();
      }
    });
  });
});

import { describe, expect, it } from "vitest";
import { EventType, KNOWN_EVENT_TYPES } from "../../src/event-log/event-types.js";
import type { EventLogTransaction } from "../../src/storage/sqlite/event-log.js";
import { buildListQuery } from "../../src/storage/sqlite/queries.js";
import { normalizeFilter } from "../../src/event-log/validate.js";
import type { EventInput, EventPage, StoredEvent } from "../../src/event-log/types.js";
import { attempt, ENGINES } from "../helpers/engines.js";
import { fakeClock, openTestLog } from "../helpers/event-log.js";

const base = { source: "coordinator" } as const;

describe.each(ENGINES)("the event log on $name", (engine) => {
  describe("logEvent round trip", () => {
    it("stores every known type and reads it back unchanged", async () => {
      const log = await engine.openLog();
      for (const type of KNOWN_EVENT_TYPES) {
        const stored = await log.logEvent({
          event_type: type,
          ...base,
          task_id: "t-1",
          agent_id: "a-1",
          data: { type },
        });
        expect(await log.getEvent(stored.id)).toEqual(stored);
        expect(stored).toMatchObject({
          event_type: type,
          source: "coordinator",
          task_id: "t-1",
          agent_id: "a-1",
        });
        expect(stored.id).toMatch(/^[0-9a-f-]{36}$/);
        expect(stored.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      }
      expect((await log.listEvents({ limit: 1000 })).events.map((e) => e.event_type)).toEqual(
        KNOWN_EVENT_TYPES,
      );
    });

    it("accepts custom dotted types and reads types it does not know", async () => {
      const log = await engine.openLog();
      const custom = await log.logEvent({ event_type: "deploy.pipeline.finished", ...base });
      expect((await log.getEvent(custom.id))?.event_type).toBe("deploy.pipeline.finished");
      // A row written by another tool with a type this code would refuse must still read back.
      // (On PostgreSQL such a tool numbers its row from the head, as every writer must.)
      await engine.sql(
        log,
        engine.name === "sqlite"
          ? "INSERT INTO event_log (id, event_type, source, data, timestamp) VALUES (?, ?, ?, ?, ?)"
          : "WITH head AS (UPDATE event_log_head SET last_seq = last_seq + 1 RETURNING last_seq) " +
              "INSERT INTO event_log (seq, id, event_type, source, data, timestamp) SELECT last_seq, ?, ?, ?, ?, ? FROM head",
        "00000000-0000-4000-8000-000000000001",
        "Legacy Type!",
        "python",
        '"not an object"',
        "2020-01-01T00:00:00.000Z",
      );
      expect(await log.getEvent("00000000-0000-4000-8000-000000000001")).toMatchObject({
        event_type: "Legacy Type!",
        data: { value: "not an object" },
      });
    });

    it("gives data back as the same object: nested, unicode, empty, and absent as {}", async () => {
      const log = await engine.openLog();
      const nested = { a: { b: [1, 2, { c: null, d: true }] }, text: 'héllo 🌍 \u0000 "q" <b>', n: -1.5e-7 };
      const cases: object[] = [nested, {}, { "": "", "key with spaces": [[]] }];
      for (const data of cases) {
        const stored = await log.logEvent({ event_type: EventType.SYSTEM_INFO, ...base, data });
        expect(stored.data).toEqual(data);
        expect((await log.getEvent(stored.id))?.data).toEqual(data);
      }
      const none = await log.logEvent({ event_type: EventType.SYSTEM_INFO, ...base });
      expect((await log.getEvent(none.id))?.data).toEqual({});
      expect(await engine.sql(log, "SELECT data FROM event_log WHERE id = ?", none.id)).toEqual([
        { data: "{}" },
      ]);
    });

    it("keeps a caller-chosen id and timestamp, normalized to UTC milliseconds", async () => {
      const log = await engine.openLog();
      const stored = await log.logEvent({
        event_type: "task.created",
        ...base,
        id: "5F0C0C8E-1111-4222-8333-444455556666",
        timestamp: "2026-01-02T03:04:05+02:00",
      });
      expect(stored.id).toBe("5f0c0c8e-1111-4222-8333-444455556666");
      expect(stored.timestamp).toBe("2026-01-02T01:04:05.000Z");
    });

    it("assigns seq in call order, strictly increasing, never reused after the newest rows go", async () => {
      const log = await engine.openLog();
      const first = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          log.logEvent({ event_type: "task.created", ...base, data: { i } }),
        ),
      );
      expect(first.map((e) => e.data.i)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      const seqs = first.map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(new Set(seqs).size).toBe(50);
      await engine.sql(log, "DELETE FROM event_log WHERE seq > 40");
      const next = await log.logEvent({ event_type: "task.created", ...base });
      expect(next.seq).toBe(51);
    });
  });

  describe("group commit", () => {
    it("commits concurrent calls together and resolves none before its commit", async () => {
      const log = await engine.openLog();
      const before = log.writeStats().transactions;
      const committedAtResolve: number[] = [];
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          log.logEvent({ event_type: "bid.submitted", ...base, data: { i } }).then(async (event) => {
            const rows = await engine.sql(log, "SELECT id FROM event_log WHERE seq = ?", event.seq);
            committedAtResolve.push(rows.length);
          }),
        ),
      );
      expect(log.writeStats().transactions - before).toBe(1);
      expect(committedAtResolve.every((n) => n === 1)).toBe(true);
    });

    it("commits sequential calls one by one", async () => {
      const log = await engine.openLog();
      for (let i = 0; i < 10; i += 1) await log.logEvent({ event_type: "bid.submitted", ...base });
      expect(log.writeStats()).toMatchObject({ transactions: 10, events: 10, queued: 0 });
    });

    it("splits a large queue into bounded transactions without reordering", async () => {
      const log = await engine.openLog({ maxBatchEvents: 100 });
      const stored = await Promise.all(
        Array.from({ length: 450 }, (_, i) =>
          log.logEvent({ event_type: "tool.called", ...base, data: { i } }),
        ),
      );
      expect(log.writeStats().transactions).toBe(5);
      expect(stored.map((e) => e.data.i)).toEqual(stored.map((_, i) => i));
      expect(stored.map((e) => e.seq)).toEqual(stored.map((_, i) => i + 1));
    });

    it("fails only the write whose id collides, not the others in its batch", async () => {
      const log = await engine.openLog();
      const id = "7d1e4d5a-0000-4000-8000-000000000042";
      await log.logEvent({ event_type: "task.created", ...base, id });
      const results = await Promise.allSettled([
        log.logEvent({ event_type: "task.created", ...base, data: { n: 1 } }),
        log.logEvent({ event_type: "task.created", ...base, id }),
        log.logEvents([
          { event_type: "task.created", ...base, data: { n: 2 } },
          { event_type: "task.bidding", ...base, data: { n: 3 } },
        ]),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(results[1]).toMatchObject({ reason: { code: "DUPLICATE_EVENT_ID" } });
      expect((await log.listEvents()).events.map((e) => e.data.n ?? null)).toEqual([null, 1, 2, 3]);
    });

    it("writes a batch atomically: one bad event and none is stored", async () => {
      const log = await engine.openLog();
      const batch: EventInput[] = [
        { event_type: "task.created", ...base },
        { event_type: "Task Created", ...base },
      ];
      await expect(log.logEvents(batch)).rejects.toMatchObject({
        code: "INVALID_EVENT",
        details: { field: "[1].event_type" },
      });
      expect(await log.latestSeq()).toBe(0);
    });

    it("flushes queued writes on close and refuses writes after it", async () => {
      const log = await engine.openLog();
      const pending = log.logEvent({ event_type: "task.created", ...base });
      await log.close();
      await expect(pending).resolves.toMatchObject({ seq: 1 });
      await expect(log.logEvent({ event_type: "task.created", ...base })).rejects.toMatchObject({
        code: "EVENT_LOG_CLOSED",
      });
      await expect(attempt(() => log.listEvents())).rejects.toMatchObject({ code: "EVENT_LOG_CLOSED" });
    });
  });

  describe("subscribe", () => {
    it("delivers committed events in seq order, filtered, until unsubscribed", async () => {
      const log = await engine.openLog();
      const all: number[] = [];
      const taskOnly: string[] = [];
      const stop = log.subscribe((e) => all.push(e.seq));
      log.subscribe((e) => taskOnly.push(e.event_type), {
        task_id: "t-1",
        types: ["task.assigned", "task.completed"],
      });
      await Promise.all([
        log.logEvent({ event_type: "task.created", ...base, task_id: "t-1" }),
        log.logEvent({ event_type: "task.assigned", ...base, task_id: "t-1" }),
        log.logEvent({ event_type: "task.assigned", ...base, task_id: "t-2" }),
        log.logEvent({ event_type: "task.completed", ...base, task_id: "t-1" }),
      ]);
      expect(all).toEqual([1, 2, 3, 4]);
      expect(taskOnly).toEqual(["task.assigned", "task.completed"]);
      stop();
      await log.logEvent({ event_type: "task.created", ...base });
      expect(all).toHaveLength(4);
    });

    it("keeps writing and notifying when a listener throws", async () => {
      const log = await engine.openLog();
      const heard: number[] = [];
      log.subscribe(() => {
        throw new Error("broken listener");
      });
      log.subscribe((e) => heard.push(e.seq));
      await expect(log.logEvent({ event_type: "task.created", ...base })).resolves.toMatchObject({ seq: 1 });
      expect(heard).toEqual([1]);
    });
  });

  describe("queries", () => {
    async function seed() {
      const clock = fakeClock("2026-03-01T12:00:00.000Z");
      const log = await engine.openLog({ clock: clock.now });
      const inputs: EventInput[] = [];
      for (let i = 0; i < 60; i += 1) {
        inputs.push({
          event_type: ["task.created", "bid.submitted", "task.assigned"][i % 3] as string,
          source: i % 2 === 0 ? "coordinator" : `agent-${i % 4}`,
          task_id: `task-${i % 5}`,
          agent_id: `agent-${i % 4}`,
          data: { i },
          timestamp: new Date(Date.parse("2026-03-01T11:00:00.000Z") + i * 60_000).toISOString(),
        });
      }
      await log.logEvents(inputs);
      return { log, clock, inputs };
    }

    function expected(inputs: EventInput[], keep: (input: EventInput, index: number) => boolean): number[] {
      return inputs.flatMap((input, index) => (keep(input, index) ? [index + 1] : []));
    }

    it("combines every filter with AND", async () => {
      const { log, inputs } = await seed();
      const page: EventPage = await log.listEvents({
        types: ["task.created", "task.assigned"],
        source: "coordinator",
        task_id: "task-2",
        since: "2026-03-01T11:10:00.000Z",
        until: "2026-03-01T11:50:00.000Z",
        limit: 1000,
      });
      const want = expected(
        inputs,
        (e, i) =>
          e.event_type !== "bid.submitted" &&
          e.source === "coordinator" &&
          e.task_id === "task-2" &&
          i >= 10 &&
          i < 50,
      );
      expect(want.length).toBeGreaterThan(0);
      expect(page.events.map((e) => e.seq)).toEqual(want);
      expect(
        (await log.listEvents({ agent_id: "agent-3", types: "bid.submitted", limit: 1000 })).events.map(
          (e) => e.seq,
        ),
      ).toEqual(expected(inputs, (e) => e.agent_id === "agent-3" && e.event_type === "bid.submitted"));
    });

    it("reads by source across agents' own events and everyone else's, paged both ways", async () => {
      // The source index leaves out an agent's own events (source = agent_id): a read by source
      // merges them back from the agent index. Every mix is here: own events, an agent's events
      // about another agent, events with no agent, and the coordinator's.
      const log = await engine.openLog();
      const inputs: EventInput[] = Array.from({ length: 90 }, (_, i) => ({
        event_type: ["bid.submitted", "tool.called", "task.created"][i % 3] as string,
        source: i % 5 === 0 ? "coordinator" : `agent-${i % 3}`,
        ...(i % 7 === 0 ? {} : { agent_id: `agent-${i % 2}` }),
        task_id: `task-${i % 4}`,
        data: { i, note: i % 2 === 0 ? "even needle" : "odd" },
      }));
      await log.logEvents(inputs);
      for (const source of ["coordinator", "agent-0", "agent-1", "agent-2", "nobody"]) {
        const extras: { types?: string; agent_id?: string; text?: string }[] = [
          {},
          { types: "tool.called" },
          { agent_id: "agent-1" },
          { text: "ne" },
        ];
        for (const extra of extras) {
          const want = expected(
            inputs,
            (e) =>
              e.source === source &&
              (extra.types === undefined || e.event_type === extra.types) &&
              (extra.agent_id === undefined || e.agent_id === extra.agent_id) &&
              (extra.text === undefined || JSON.stringify(e.data).includes(extra.text)),
          );
          for (const order of ["asc", "desc"] as const) {
            const seen: number[] = [];
            let cursor: number | null = null;
            do {
              const page: EventPage = await log.listEvents({
                source,
                ...extra,
                order,
                limit: 4,
                ...(cursor === null ? {} : order === "asc" ? { after_seq: cursor } : { before_seq: cursor }),
              });
              seen.push(...page.events.map((e) => e.seq));
              cursor = page.next_cursor;
            } while (cursor !== null);
            expect(seen, `${source} ${JSON.stringify(extra)} ${order}`).toEqual(
              order === "asc" ? want : [...want].reverse(),
            );
          }
        }
      }
      // Both halves come from an index, the agent's own events not from the source index (the
      // plan is SQLite's to show; PostgreSQL's planner picks by statistics).
      if (engine.name !== "sqlite") return;
      const query = buildListQuery(normalizeFilter({ source: "agent-1", limit: 10 }));
      const plan = (
        (await engine.sql(log, `EXPLAIN QUERY PLAN ${query.sql}`, ...query.params)) as { detail: string }[]
      ).map((row) => row.detail);
      expect(plan.join("\n")).toMatch(
        /SEARCH event_log USING INDEX idx_event_log_agent \(agent_id=\? AND seq>\? AND seq<\?\)/,
      );
      expect(plan.join("\n")).toMatch(
        /SEARCH event_log USING INDEX idx_event_log_source \(source=\? AND seq>\? AND seq<\?\)/,
      );
      const [index] = (await engine.sql(
        log,
        "SELECT sql FROM sqlite_master WHERE name = 'idx_event_log_source'",
      )) as { sql: string }[];
      expect(index?.sql).toContain("WHERE agent_id IS NULL OR source <> agent_id");
    });

    it("pages forwards and backwards by cursor with no gap and no duplicate", async () => {
      const { log } = await seed();
      const forward: number[] = [];
      let cursor: number | null = 0;
      while (cursor !== null) {
        const page: EventPage = await log.listEvents({ after_seq: cursor, limit: 7 });
        forward.push(...page.events.map((e) => e.seq));
        cursor = page.next_cursor;
      }
      expect(forward).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
      const backward: number[] = [];
      let before: number | null = 41;
      while (before !== null) {
        const page: EventPage = await log.listEvents({
          before_seq: before,
          order: "desc",
          limit: 9,
          task_id: "task-0",
        });
        backward.push(...page.events.map((e) => e.seq));
        before = page.next_cursor;
      }
      expect(backward).toEqual([36, 31, 26, 21, 16, 11, 6, 1]);
    });

    it("misses nothing and repeats nothing while writers keep inserting between pages", async () => {
      const log = await engine.openLog();
      await log.logEvents(
        Array.from({ length: 250 }, (_, i) => ({ event_type: "tool.called", ...base, data: { i } })),
      );
      const seen: number[] = [];
      let cursor = 0;
      for (let round = 0; round < 200; round += 1) {
        // Another writer appends while the reader is between pages.
        const writes = Promise.all([
          log.logEvent({ event_type: "tool.completed", ...base }),
          log.logEvent({ event_type: "tool.completed", ...base }),
        ]);
        const page: EventPage = await log.listEvents({ after_seq: cursor, limit: 10 });
        seen.push(...page.events.map((e) => e.seq));
        await writes;
        if (page.next_cursor === null) break;
        cursor = page.next_cursor;
      }
      const final = await log.latestSeq();
      const tail = (await log.listEvents({ after_seq: seen.at(-1) ?? 0, limit: 1000 })).events.map(
        (e) => e.seq,
      );
      expect([...seen, ...tail]).toEqual(Array.from({ length: final }, (_, i) => i + 1));
    });

    it("returns whole task and agent timelines oldest first, past 1000 events", async () => {
      const log = await engine.openLog();
      await log.logEvents(
        Array.from({ length: 2345 }, (_, i) => ({
          event_type: "tool.called",
          ...base,
          task_id: i % 2 === 0 ? "long-task" : "other",
          agent_id: i % 3 === 0 ? "busy-agent" : null,
        })),
      );
      const timeline = await log.getTaskEvents("long-task");
      expect(timeline).toHaveLength(1173);
      expect(timeline.map((e) => e.seq)).toEqual(Array.from({ length: 1173 }, (_, i) => i * 2 + 1));
      expect(await log.getAgentEvents("busy-agent")).toHaveLength(782);
      expect(await log.getTaskEvents("no-such-task")).toEqual([]);
    });

    it("summarizes and lists recent events over a sliding window", async () => {
      const { log, clock } = await seed(); // events at 11:00..11:59, clock at 12:00
      expect(await log.getEventSummary(10)).toEqual({
        minutes: 10,
        since: "2026-03-01T11:50:00.000Z",
        total: 10,
        counts: { "task.created": 3, "bid.submitted": 3, "task.assigned": 4 },
      });
      expect((await log.getEventSummary(60)).total).toBe(60);
      clock.advance(30 * 60_000);
      expect((await log.getEventSummary(60)).total).toBe(30);
      const recent = await log.getRecentEvents(35, 3);
      expect(recent.map((e) => e.data.i)).toEqual([59, 58, 57]);
      expect(await log.getRecentEvents(1)).toEqual([]);
    });

    it("rolls counts up per hour and type", async () => {
      const { log } = await seed();
      await log.logEvent({ event_type: "task.created", ...base, timestamp: "2026-03-01T13:30:00.000Z" });
      expect(await log.getHourlyCounts()).toEqual([
        { hour: "2026-03-01T11:00:00.000Z", event_type: "bid.submitted", count: 20 },
        { hour: "2026-03-01T11:00:00.000Z", event_type: "task.assigned", count: 20 },
        { hour: "2026-03-01T11:00:00.000Z", event_type: "task.created", count: 20 },
        { hour: "2026-03-01T13:00:00.000Z", event_type: "task.created", count: 1 },
      ]);
      expect(await log.getHourlyCounts({ since: "2026-03-01T12:15:00Z" })).toHaveLength(1);
    });

    it("refuses a bad filter with the field named", async () => {
      const log = await engine.openLog();
      await expect(attempt(() => log.listEvents({ limit: 1001 }))).rejects.toMatchObject({
        code: "INVALID_FILTER",
        details: { field: "limit" },
      });
      await expect(attempt(() => log.listEvents({ types: ["ok.type", "NOPE"] }))).rejects.toMatchObject({
        details: { field: "types[1]" },
      });
      await expect(attempt(() => log.listEvents({ since: "yesterday" }))).rejects.toMatchObject({
        details: { field: "since" },
      });
      await expect(attempt(() => log.listEvents({ after_seq: -1 }))).rejects.toMatchObject({
        details: { field: "after_seq" },
      });
      await expect(attempt(() => log.getEventSummary(0))).rejects.toMatchObject({
        details: { field: "minutes" },
      });
    });
  });

  describe("text search in data", () => {
    it("finds text literally, wildcards and quotes included, combined with other filters", async () => {
      const log = await engine.openLog();
      await log.logEvents([
        { event_type: "task.created", source: "a", data: { description: "Refactor the PARSER" } },
        { event_type: "task.created", source: "a", data: { description: "100% done_now" } },
        { event_type: "task.created", source: "a", data: { description: 'say "hi" \\ bye' } },
        { event_type: "tool.called", source: "b", data: { tool: "parser" } },
      ]);
      const find = async (text: string, extra = {}) =>
        (await log.listEvents({ text, ...extra })).events.map((e) => e.seq);
      expect(await find("parser")).toEqual([1, 4]);
      expect(await find("parser", { source: "a" })).toEqual([1]);
      expect(await find("100%")).toEqual([2]);
      expect(await find("%")).toEqual([2]);
      expect(await find("e_n")).toEqual([2]);
      expect(await find("_")).toEqual([2]);
      expect(await find('"hi" \\')).toEqual([3]);
      expect(await find("nothing like it")).toEqual([]);
      await expect(attempt(() => log.listEvents({ text: "" }))).rejects.toMatchObject({
        details: { field: "text" },
      });
    });
  });
});

// The synchronous transaction that other stores share is the SQLite adapter's own API (its body
// may not await); on PostgreSQL, stores share a transaction through the coordinator's port.
describe("transactions shared with other stores", () => {
  it("rolls back state rows and events together, announcing nothing", () => {
    const log = openTestLog();
    log.db.exec("CREATE TABLE widgets (name TEXT NOT NULL)");
    const heard: StoredEvent[] = [];
    log.subscribe((event) => heard.push(event));
    expect(() =>
      log.transaction((tx) => {
        log.db.prepare("INSERT INTO widgets VALUES ('a')").run();
        tx.append({ event_type: "system.info", ...base });
        throw new Error("injected failure in the middle of a command");
      }),
    ).toThrow("injected failure");
    expect(log.db.prepare("SELECT COUNT(*) FROM widgets").pluck().get()).toBe(0);
    expect(log.latestSeq()).toBe(0);
    expect(log.getHourlyCounts()).toEqual([]);
    expect(heard).toEqual([]);
  });

  it("announces after the outermost commit only, keeping what a caught inner savepoint did not undo", () => {
    const log = openTestLog();
    const heard: string[] = [];
    let seenInsideTransaction = -1;
    log.subscribe((event) => heard.push(event.data.step as string));
    log.transaction((tx) => {
      tx.append({ event_type: "system.info", ...base, data: { step: "outer-1" } });
      try {
        log.transaction((inner) => {
          inner.append({ event_type: "system.info", ...base, data: { step: "inner-rolled-back" } });
          throw new Error("inner fails");
        });
      } catch {
        // The outer command decides to carry on without the inner step.
      }
      log.transaction((inner) =>
        inner.append({ event_type: "system.info", ...base, data: { step: "inner-kept" } }),
      );
      seenInsideTransaction = heard.length;
    });
    expect(seenInsideTransaction).toBe(0);
    expect(heard).toEqual(["outer-1", "inner-kept"]);
    expect(log.listEvents().events.map((e) => e.data.step)).toEqual(["outer-1", "inner-kept"]);
    expect(log.getHourlyCounts().map((c) => c.count)).toEqual([2]);
  });

  it("refuses append outside a transaction body", () => {
    const log = openTestLog();
    let leaked: EventLogTransaction | undefined;
    log.transaction((tx) => {
      leaked = tx;
    });
    expect(() => leaked?.append({ event_type: "system.info", ...base })).toThrow(/only valid inside/);
  });
});

import { copyFileSync, existsSync, rmSync } from "node:fs";
import Database from "better-sqlite3";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { buildSearchPlan } from "../../src/storage/sqlite/queries.js";
import { searchIndexPath } from "../../src/storage/sqlite/search-index.js";
import type { EventFilter } from "../../src/event-log/types.js";
import { normalizeFilter } from "../../src/event-log/validate.js";
import { eventMatches, POSTGRES_TEXT } from "../../src/storage/event-queries.js";
import { numbered } from "../../src/storage/postgres/queries.js";
import type { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { POSTGRES } from "../helpers/engines.js";
import { fakeClock, openTestLog } from "../helpers/event-log.js";
import { havePostgres } from "../helpers/postgres.js";
import { tempDbPath } from "../helpers/temp-dir.js";

/** Pieces of text with everything a search must get right: case, JSON escapes, LIKE wildcards, non-ASCII. */
const PIECES = [
  "alpha",
  "Alpha",
  "ALPHA",
  "beta",
  'say "hi"',
  "back\\slash",
  "100%",
  "a_b",
  "été",
  "ÉTÉ",
  "straße",
  "🐝 bee",
  "tab\there",
  "x",
];
const TYPES = ["task.created", "tool.called", "tool.completed", "bid.submitted"];

async function waitForIndex(log: SqliteEventLog): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (log.searchIndexedThrough() !== log.latestSeq()) {
    if (Date.now() > deadline)
      throw new Error(`index stuck at ${log.searchIndexedThrough()} of ${log.latestSeq()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function seedEvents(count: number, seed: number) {
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) & 0x7fffffff);
  return Array.from({ length: count }, (_, i) => ({
    event_type: TYPES[next() % TYPES.length] as string,
    source: `agent-${next() % 5}`,
    task_id: `task-${next() % 7}`,
    agent_id: `agent-${next() % 5}`,
    data: {
      note: Array.from({ length: 1 + (next() % 4) }, () => PIECES[next() % PIECES.length]).join(" "),
      n: i,
    },
  }));
}

/** A file log searched through its index, and a second connection to the same file that scans. */
function indexedAndScanned() {
  const path = tempDbPath();
  const indexed = openTestLog({ path });
  const scanned = openTestLog({ path, searchIndex: false, checkpointIntervalMs: 0 });
  return { path, indexed, scanned };
}

const extraFilter: fc.Arbitrary<EventFilter> = fc.record(
  {
    order: fc.constantFrom("asc" as const, "desc" as const),
    limit: fc.integer({ min: 1, max: 40 }),
    types: fc.subarray(TYPES, { minLength: 1 }),
    agent_id: fc.constantFrom("agent-0", "agent-3"),
    after_seq: fc.integer({ min: 0, max: 400 }),
    before_seq: fc.integer({ min: 1, max: 450 }),
  },
  { requiredKeys: ["order", "limit"] },
);

describe("text search through the trigram index", () => {
  it("finds exactly what a scan of the log finds, for any text and filter, in both orders", async () => {
    const { indexed, scanned } = indexedAndScanned();
    await indexed.logEvents(seedEvents(400, 7));
    await waitForIndex(indexed);
    const term = fc.oneof(
      fc.constantFrom(
        ...PIECES,
        "lpha",
        "LPH",
        'y "h',
        "\\s",
        "0%",
        "_b",
        "TÉ",
        "ße",
        "🐝",
        "ee",
        "nope-not-there",
      ),
      fc.string({ unit: fc.constantFrom(...'aAlph% _\\"éÉ🐝xt'), minLength: 1, maxLength: 6 }),
    );
    fc.assert(
      fc.property(term, extraFilter, (text, extra) => {
        const filter = { ...extra, text };
        expect(indexed.listEvents(filter)).toEqual(scanned.listEvents(filter));
      }),
      { numRuns: 400 },
    );
    // The index was used: texts of three characters or more have a plan that goes through it.
    expect(buildSearchPlan(normalizeFilter({ text: "alpha" }))).toBeDefined();
  });

  it("finds events the indexer has not reached yet, without waiting for it", async () => {
    const { indexed, scanned } = indexedAndScanned();
    await indexed.logEvents(seedEvents(200, 3));
    await waitForIndex(indexed);
    await indexed.logEvents([
      { event_type: "tool.called", source: "agent-1", data: { note: "fresh-needle one" } },
      { event_type: "tool.called", source: "agent-1", data: { note: "Fresh-Needle two" } },
    ]);
    // Read in the same turn as the write: the worker looks for new events every 200 ms.
    const found = indexed.listEvents({ text: "fresh-needle" });
    expect(found.events.map((event) => event.data.note)).toEqual(["fresh-needle one", "Fresh-Needle two"]);
    expect(found).toEqual(scanned.listEvents({ text: "fresh-needle" }));
    const lastTwo = indexed.listEvents({ text: "needle", order: "desc", limit: 1 });
    expect(lastTwo.events[0]?.data.note).toBe("Fresh-Needle two");
  });

  it("answers listEventsAsync on the worker, off the event loop, with the same pages", async () => {
    const { path, indexed } = indexedAndScanned();
    await indexed.logEvents(seedEvents(300, 11));
    await waitForIndex(indexed);
    for (const filter of [
      { text: "alpha", limit: 7 },
      { text: "été", order: "desc" as const },
      { text: "bee", types: ["tool.called"], after_seq: 50 },
    ]) {
      expect(await indexed.listEventsAsync(filter)).toEqual(indexed.listEvents(filter));
    }
    // Stall the worker: it waits for the index file's write lock (held here) to index a new
    // event. A search answered on this thread would be settled at once; one on the worker waits.
    const blocker = new Database(searchIndexPath(path));
    blocker.exec("BEGIN IMMEDIATE");
    let settled = false;
    let pending: Promise<unknown> | undefined;
    try {
      await indexed.logEvent({ event_type: "tool.called", source: "s", data: { note: "alpha late" } });
      await new Promise((resolve) => setTimeout(resolve, 400)); // the indexer looks every 200 ms
      pending = indexed.listEventsAsync({ text: "alpha late" }).finally(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false);
    } finally {
      blocker.exec("ROLLBACK");
      blocker.close();
    }
    const page = (await pending) as { events: { data: { note?: unknown } }[] };
    expect(page.events.map((event) => event.data.note)).toEqual(["alpha late"]);
    // Refusals come back as for listEvents.
    await expect(indexed.listEventsAsync({ text: "" })).rejects.toMatchObject({ code: "INVALID_FILTER" });
  });

  it("knows how far a reopened log's index reaches before the worker has done anything", async () => {
    const path = tempDbPath();
    const first = openTestLog({ path });
    await first.logEvents(seedEvents(20, 2));
    await waitForIndex(first);
    first.close();
    await first.whenClosed();
    const reopened = openTestLog({ path });
    expect(reopened.searchIndexedThrough()).toBe(20);
  });

  it("lets pruned events leave the index", async () => {
    const clock = fakeClock("2026-01-01T00:00:00.000Z");
    const path = tempDbPath();
    const log = openTestLog({ path, clock: clock.now });
    await log.logEvents(seedEvents(150, 5));
    clock.advance(40 * 86_400_000);
    await log.logEvents(seedEvents(50, 6));
    await waitForIndex(log);
    expect(await log.pruneEvents(30)).toBe(150);
    const index = new Database(searchIndexPath(path), { readonly: true });
    try {
      const indexedRows = () =>
        (index.prepare("SELECT count(*) AS n FROM event_text").get() as { n: number }).n;
      const deadline = Date.now() + 20_000;
      while (indexedRows() !== 50 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(indexedRows()).toBe(50);
    } finally {
      index.close();
    }
  });

  it("rebuilds an index that is missing or belongs to another log", async () => {
    const first = tempDbPath();
    const second = tempDbPath();
    const a = openTestLog({ path: first });
    await a.logEvent({ event_type: "tool.called", source: "s", data: { note: "only-in-first" } });
    await waitForIndex(a);
    a.close();
    await a.whenClosed();
    const b = openTestLog({ path: second });
    await b.logEvent({ event_type: "tool.called", source: "s", data: { note: "only-in-second" } });
    await waitForIndex(b);
    b.close();
    await b.whenClosed();
    // The first log's index, under the second log's name: seq 1 there is another event.
    copyFileSync(searchIndexPath(first), searchIndexPath(second));
    rmSync(`${searchIndexPath(second)}-wal`, { force: true });
    rmSync(`${searchIndexPath(second)}-shm`, { force: true });
    const reopened = openTestLog({ path: second });
    await waitForIndex(reopened);
    expect(reopened.listEvents({ text: "only-in" }).events.map((e) => e.data.note)).toEqual([
      "only-in-second",
    ]);
    reopened.close();
    await reopened.whenClosed();
    rmSync(searchIndexPath(second));
    const rebuilt = openTestLog({ path: second });
    expect(existsSync(searchIndexPath(second))).toBe(true);
    await waitForIndex(rebuilt);
    expect(rebuilt.listEvents({ text: "second" }).events).toHaveLength(1);
  });
});

describe("summaries over days", () => {
  it("count from the rollup what a scan of the window counts, before and after the rollup moves", async () => {
    const clock = fakeClock("2026-03-01T00:00:00.000Z");
    const path = tempDbPath();
    const log = openTestLog({ path, clock: clock.now });
    const scanned = new Database(path, { readonly: true });
    const scan = (since: string) =>
      Object.fromEntries(
        (
          scanned
            .prepare(
              "SELECT event_type, COUNT(*) AS n FROM event_log WHERE timestamp >= ? GROUP BY event_type",
            )
            .all(since) as { event_type: string; n: number }[]
        ).map((row) => [row.event_type, row.n]),
      );
    try {
      for (let hour = 0; hour < 72; hour += 1) {
        await log.logEvents(seedEvents(1 + (hour % 4), hour).map((event) => ({ ...event, data: {} })));
        clock.advance(37 * 60_000 + (hour % 3) * 11 * 60_000);
        if (hour === 30) await log.rollUp();
      }
      for (const minutes of [121, 600, 1441, 3000, 100_000]) {
        const summary = log.getEventSummary(minutes);
        expect(summary.counts, `${minutes} minutes`).toEqual(scan(summary.since));
        expect(await log.getEventSummaryAsync(minutes)).toEqual(summary);
      }
      await log.rollUp();
      const after = log.getEventSummary(1441);
      expect(after.counts).toEqual(scan(after.since));
      expect(after.total).toBe(Object.values(after.counts).reduce((sum, n) => sum + n, 0));
    } finally {
      scanned.close();
    }
  });
});

describe.skipIf(!havePostgres)("text search and summaries on PostgreSQL", () => {
  it("finds exactly what the product's matching rule finds, for any text and filter, through the trigram index", async () => {
    const log = await POSTGRES.openLog();
    const stored = await log.logEvents(seedEvents(400, 7));
    const term = fc.oneof(
      fc.constantFrom(
        ...PIECES,
        "lpha",
        "LPH",
        'y "h',
        "\\s",
        "0%",
        "_b",
        "TÉ",
        "ße",
        "🐝",
        "ee",
        "nope-not-there",
      ),
      fc.string({ unit: fc.constantFrom(...'aAlph% _\\"éÉ🐝xt'), minLength: 1, maxLength: 6 }),
    );
    await fc.assert(
      fc.asyncProperty(term, extraFilter, async (text, extra) => {
        const filter = normalizeFilter({ ...extra, text });
        const matching = stored.filter((event) => eventMatches(event, filter));
        const ordered = filter.order === "desc" ? matching.reverse() : matching;
        const page = await log.listEvents({ ...extra, text });
        expect(page.events).toEqual(ordered.slice(0, filter.limit));
      }),
      { numRuns: 300 },
    );
    // The query's form is one the trigram index answers (the planner prefers a scan of 400 rows,
    // so it is told not to, to show that it can).
    const client = await (log as PostgresEventLog).pool.connect();
    try {
      await client.query("SET enable_seqscan = off");
      const condition = POSTGRES_TEXT("", "Alpha");
      const forced = await client.query(
        numbered(`EXPLAIN SELECT seq FROM event_log WHERE ${condition.where.join(" AND ")}`),
        condition.params,
      );
      expect(forced.rows.map((row: { "QUERY PLAN": string }) => row["QUERY PLAN"]).join("\n")).toMatch(
        /idx_event_log_text/,
      );
    } finally {
      client.release();
    }
  });

  it("count summaries over days from the rollup as a scan of the window counts them", async () => {
    const clock = fakeClock("2026-03-01T00:00:00.000Z");
    const log = await POSTGRES.openLog({ clock: clock.now });
    const scan = async (since: string) =>
      Object.fromEntries(
        (
          (await POSTGRES.sql(
            log,
            "SELECT event_type, COUNT(*) AS n FROM event_log WHERE timestamp >= ? GROUP BY event_type",
            since,
          )) as { event_type: string; n: number }[]
        ).map((row) => [row.event_type, row.n]),
      );
    for (let hour = 0; hour < 72; hour += 1) {
      await log.logEvents(seedEvents(1 + (hour % 4), hour).map((event) => ({ ...event, data: {} })));
      clock.advance(37 * 60_000 + (hour % 3) * 11 * 60_000);
      if (hour === 30) await log.rollUp();
    }
    for (const minutes of [121, 600, 1441, 3000, 100_000]) {
      const summary = await log.getEventSummary(minutes);
      expect(summary.counts, `${minutes} minutes`).toEqual(await scan(summary.since));
    }
    await log.rollUp();
    const after = await log.getEventSummary(1441);
    expect(after.counts).toEqual(await scan(after.since));
    expect(after.total).toBe(Object.values(after.counts).reduce((sum, n) => sum + n, 0));
  });
});

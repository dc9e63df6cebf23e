// SQLite only: SQLite's query plans. PostgreSQL's reads are timed in `npm run bench` (postgres).
import { describe, expect, it } from "vitest";
import { buildListQuery, buildSearchPlan, SQL } from "../../src/storage/sqlite/queries.js";
import { normalizeFilter } from "../../src/event-log/validate.js";
import type { EventFilter } from "../../src/event-log/types.js";
import { openTestLog } from "../helpers/event-log.js";
import { tempDbPath } from "../helpers/temp-dir.js";

/** Every combination of the list filters, in both orders: each is a shape the API can send. */
function everyFilterShape(): EventFilter[] {
  const parts: EventFilter[] = [
    { types: ["task.created"] },
    { types: ["task.created", "bid.submitted", "task.failed"] },
    { source: "coordinator" },
    { task_id: "t-1" },
    { agent_id: "a-1" },
    { since: "2026-01-01T00:00:00.000Z" },
    { text: "needle" },
    { until: "2026-02-01T00:00:00.000Z" },
    { after_seq: 10 },
    { before_seq: 1000 },
  ];
  const shapes: EventFilter[] = [];
  for (let mask = 0; mask < 1 << parts.length; mask += 1) {
    // One "types" part at a time: a filter holds either a single type or several.
    if ((mask & 0b11) === 0b11) continue;
    const combined = Object.assign({}, ...parts.filter((_, i) => mask & (1 << i))) as EventFilter;
    shapes.push({ ...combined, order: "asc" }, { ...combined, order: "desc" });
  }
  return shapes;
}

function plan(log: ReturnType<typeof openTestLog>, sql: string, params: unknown[]): string[] {
  return (log.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map(
    (row) => row.detail,
  );
}

function fullScans(details: string[]): string[] {
  // "SCAN event_log" reads every row; "SCAN ... USING COVERING INDEX" reads a whole index. Both fail.
  return details.filter((detail) => /^SCAN (event_log|event_counts_hourly)\b/.test(detail));
}

/** A log with varied rows and planner statistics, as a long-running install has after PRAGMA optimize. */
async function analyzedLog(path = ":memory:") {
  const log = openTestLog({ path });
  await log.logEvents(
    Array.from({ length: 3000 }, (_, i) => ({
      event_type: ["task.created", "bid.submitted", "tool.called", "task.failed"][i % 4] as string,
      source: i % 3 === 0 ? "coordinator" : `agent-${i % 20}`,
      task_id: `t-${i % 300}`,
      agent_id: `a-${i % 20}`,
      timestamp: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
    })),
  );
  log.db.exec("ANALYZE");
  return log;
}

describe.each([
  ["an empty log", () => Promise.resolve(openTestLog())],
  ["an analyzed log", analyzedLog],
])("query plans on %s", (_name, makeLog) => {
  it("has an index for every shape of listEvents", async () => {
    const log = await makeLog();
    const shapes = everyFilterShape();
    expect(shapes.length).toBeGreaterThan(500);
    for (const filter of shapes) {
      const query = buildListQuery(normalizeFilter(filter));
      const details = plan(log, query.sql, query.params);
      expect(fullScans(details), `${query.sql}\n${details.join("\n")}`).toEqual([]);
      expect(details.some((d) => d.startsWith("SEARCH event_log"))).toBe(true);
    }
  });

  it("has an index for every fixed query", async () => {
    const log = await makeLog();
    const params: Record<keyof typeof SQL, unknown[]> = {
      insert: [],
      rollUpRange: [0, 1000],
      rolledUpTo: [],
      setRolledUpTo: [5],
      liveHourly: [0],
      byId: ["x"],
      taskPage: ["t", 0, 1000],
      agentPage: ["a", 0, 1000],
      recent: ["2026-01-01T00:00:00.000Z", 100],
      summary: ["2026-01-01T00:00:00.000Z"],
      summaryRolledHours: ["2026-01-01T00:00:00.000Z"],
      summaryPartialHour: ["2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z"],
      summaryUnrolled: ["2026-01-01T00:00:00.000Z"],
      unrolled: [],
      minutely: ["2026-01-01T00:00:00.000Z"],
      hourly: ["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"],
      pruneChunk: ["2026-01-01T00:00:00.000Z", 5000, 1000],
      latestSeq: [],
      oldestSeq: [],
    };
    for (const [name, sql] of Object.entries(SQL) as [keyof typeof SQL, string][]) {
      if (name === "insert") continue;
      const details = plan(log, sql, params[name]);
      expect(fullScans(details), `${name}: ${details.join(" | ")}`).toEqual([]);
    }
    // The summary is answered from the covering index alone, without touching table rows.
    expect(plan(log, SQL.summary, params.summary).join(" ")).toMatch(/COVERING INDEX idx_event_log_time/);
    expect(plan(log, SQL.minutely, params.minutely).join(" ")).toMatch(/COVERING INDEX idx_event_log_time/);
  });
});

describe("query plans of text searches", () => {
  it("read the trigram index for the indexed part and the seq range for the tail", async () => {
    const log = await analyzedLog(tempDbPath());
    const shapes = everyFilterShape().filter(
      (filter) => filter.text !== undefined && filter.task_id === undefined,
    );
    expect(shapes.length).toBeGreaterThan(100);
    for (const filter of shapes) {
      const steps = buildSearchPlan(normalizeFilter(filter));
      expect(steps).toHaveLength(2);
      for (const step of steps ?? []) {
        const details = plan(log, step.sql, [...step.params, 100]);
        const text = `${step.sql}\n${details.join("\n")}`;
        expect(fullScans(details), text).toEqual([]);
        if (step.shape.startsWith("search-indexed")) {
          // The index drives; each match is one probe of the log by its seq.
          expect(details[0], text).toMatch(/^SCAN f VIRTUAL TABLE/);
          expect(
            details.some((d) =>
              /^SEARCH e USING (INTEGER PRIMARY KEY \(rowid=\?\)|INDEX \S+ \(.*seq=\?)/.test(d),
            ),
            text,
          ).toBe(true);
        } else {
          expect(
            details.some((d) => d.startsWith("SEARCH event_log")),
            text,
          ).toBe(true);
        }
      }
    }
    // One task's timeline is searched through its own index, never the text index.
    expect(buildSearchPlan(normalizeFilter({ text: "needle", task_id: "t-1" }))).toBeUndefined();
  });
});

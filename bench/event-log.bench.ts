/**
 * Event log benchmark: the raw SQLite insert limit, logEvent sequential and with 100
 * concurrent callers, query latency on a 1,000,000-event table, and the longest event-loop
 * block while pruning a million rows.
 */
import { randomUUID } from "node:crypto";
import { newId as timeOrderedUuid } from "../src/ids.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { pino } from "pino";
import { SqliteEventLog } from "../src/storage/sqlite/event-log.js";
import type { EventInput } from "../src/event-log/types.js";
import { SQL } from "../src/storage/sqlite/queries.js";
import { waitForSearchIndex } from "./harness.js";
import { percentile, round } from "./machine.js";

const logger = pino({ level: "silent" });
const DAY = 86_400_000;

export interface Row {
  id: string;
  event_type: string;
  source: string;
  task_id: string;
  agent_id: string;
  data: string;
  timestamp: string;
}

const TYPES = [
  "bid.submitted",
  "task.assigned",
  "task.started",
  "tool.called",
  "tool.completed",
  "task.completed",
];
const CALLERS = 100;
/** Five events of the populated table hold this word, whatever its size. */
const RARE_TERM = "zebra-crossing";

/**
 * Row k of the workload, shared by every write measurement so that all of them write the same
 * rows: 100 agents, each the source and agent of its own events, each on a task of its own
 * for about 20 events before moving to the next.
 */
export function makeRow(k: number, timestamp: string): Row {
  const agent = k % CALLERS;
  const round = Math.floor(k / CALLERS);
  return {
    id: timeOrderedUuid(),
    event_type: TYPES[round % TYPES.length] as string,
    source: `agent-${agent}`,
    task_id: `task-${agent}-${Math.floor(round / 20)}`,
    agent_id: `agent-${agent}`,
    data: JSON.stringify({ bid_sats: (k * 7) % 500 }),
    timestamp,
  };
}

function toInput(row: Row) {
  return {
    event_type: row.event_type,
    source: row.source,
    task_id: row.task_id,
    agent_id: row.agent_id,
    data: JSON.parse(row.data) as Record<string, number>,
  };
}

function freshPath(dir: string, name: string): string {
  return join(dir, `${name}-${randomUUID()}.db`);
}

function rate(count: number, ms: number): number {
  return Math.round((count / ms) * 1000);
}

/** Prepared INSERTs of ready rows in `batch`-row transactions: the ceiling for this schema and disk. */
export function rawLimit(path: string, rows: Row[], synchronous: "FULL" | "NORMAL", batch: number): number {
  const log = new SqliteEventLog({ path, logger, synchronous });
  const insert = log.db.prepare(SQL.insert);
  const write = log.db.transaction((chunk: Row[]) => {
    for (const r of chunk)
      insert.run(r.id, r.event_type, r.source, r.task_id, r.agent_id, r.data, r.timestamp);
  });
  const started = performance.now();
  for (let i = 0; i < rows.length; i += batch) write(rows.slice(i, i + batch));
  const elapsed = performance.now() - started;
  log.close();
  return rate(rows.length, elapsed);
}

async function sequential(path: string, rows: Row[], synchronous: "FULL" | "NORMAL"): Promise<number> {
  const log = new SqliteEventLog({ path, logger, synchronous });
  const inputs = rows.map(toInput);
  const started = performance.now();
  for (const input of inputs) await log.logEvent(input);
  const elapsed = performance.now() - started;
  log.close();
  return rate(rows.length, elapsed);
}

/** Caller c writes rows c, c+100, c+200…: each waits for its own commit before its next write. */
async function concurrent(path: string, rows: Row[], synchronous: "FULL" | "NORMAL") {
  const log = new SqliteEventLog({ path, logger, synchronous });
  const inputs = rows.map(toInput);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async (_, caller) => {
      for (let k = caller; k < inputs.length; k += CALLERS) await log.logEvent(inputs[k] as EventInput);
    }),
  );
  const elapsed = performance.now() - started;
  const stats = log.writeStats();
  log.close();
  return {
    perSecond: rate(rows.length, elapsed),
    eventsPerCommit: round(stats.events / stats.transactions, 1),
  };
}

/** A million events over the last 30 days, written raw for speed, with the rollup rebuilt after. */
function populate(path: string, total: number, now: number): void {
  const log = new SqliteEventLog({ path, logger, synchronous: "NORMAL" });
  const insert = log.db.prepare(SQL.insert);
  const span = 30 * DAY;
  const rareEvery = Math.max(1, Math.floor(total / 5));
  const write = log.db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i += 1) {
      const r = makeRow(i, new Date(now - span + Math.floor((i / total) * span)).toISOString());
      // A handful of events carry a rare word, for the text search measurements.
      const data = i % rareEvery === rareEvery - 1 ? JSON.stringify({ note: `${RARE_TERM} ${i}` }) : r.data;
      insert.run(r.id, r.event_type, r.source, r.task_id, r.agent_id, data, r.timestamp);
    }
  });
  for (let i = 0; i < total; i += 10_000) write(i, Math.min(total, i + 10_000));
  log.db.exec(
    "INSERT INTO event_counts_hourly (hour, event_type, count) " +
      "SELECT substr(timestamp, 1, 13) || ':00:00.000Z', event_type, COUNT(*) FROM event_log GROUP BY 1, 2",
  );
  log.db.exec(
    "UPDATE event_rollup_state SET rolled_up_to_seq = (SELECT MAX(seq) FROM event_log) WHERE id = 1",
  );
  log.db.exec("ANALYZE");
  log.close();
}

function timeEach(samples: number, run: (i: number) => void): { p50: number; p99: number } {
  const times: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    const started = performance.now();
    run(i);
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: round(percentile(times, 50), 3), p99: round(percentile(times, 99), 3) };
}

export interface EventLogBenchResult {
  raw_full: number;
  raw_normal: number;
  raw100_full: number;
  raw100_normal: number;
  raw1_full: number;
  raw1_normal: number;
  sequential_full: number;
  sequential_normal: number;
  concurrent_full: number;
  concurrent_full_events_per_commit: number;
  concurrent_normal: number;
  table_rows: number;
  task_events: { p50: number; p99: number; events_per_task: number };
  summary_60: { p50: number; p99: number; rows_in_window: number };
  summary_24h: { p50: number; p99: number; rows_in_window: number };
  summary_30d: { p50: number; p99: number; rows_in_window: number };
  summary_30d_scan: { p50: number; p99: number };
  search: {
    index_build_seconds: number;
    rare: { p50: number; p99: number; matches: number };
    rare_scan: { p50: number; p99: number };
    no_match_1000: { p50: number; p99: number };
    no_match_1000_scan: { p50: number; p99: number };
    common_100: { p50: number; p99: number };
    async_max_event_loop_block_ms: number;
    async_common_p50: number;
  };
  prune: {
    deleted: number;
    seconds: number;
    longest_delete_ms: number;
    longest_vacuum_ms: number;
    chunks: number;
    max_event_loop_block_ms: number;
    file_mb_before: number;
    file_mb_after: number;
  };
}

export async function benchEventLog(
  options: { rows?: number; writes?: number } = {},
): Promise<EventLogBenchResult> {
  const totalRows = options.rows ?? 1_000_000;
  const writes = options.writes ?? 100_000;
  const dir = mkdtempSync(join(tmpdir(), "swarm-bench-"));
  try {
    const now = Date.now();
    const rows = Array.from({ length: writes }, (_, i) => makeRow(i, new Date(now).toISOString()));
    const raw_full = rawLimit(freshPath(dir, "raw"), rows, "FULL", 1000);
    const raw_normal = rawLimit(freshPath(dir, "raw"), rows, "NORMAL", 1000);
    const raw100_full = rawLimit(freshPath(dir, "raw"), rows, "FULL", CALLERS);
    const raw100_normal = rawLimit(freshPath(dir, "raw"), rows, "NORMAL", CALLERS);
    const firstRows = rows.slice(0, 20_000);
    const raw1_full = rawLimit(freshPath(dir, "raw"), firstRows, "FULL", 1);
    const raw1_normal = rawLimit(freshPath(dir, "raw"), firstRows, "NORMAL", 1);
    const sequential_full = await sequential(freshPath(dir, "seq"), firstRows, "FULL");
    const sequential_normal = await sequential(freshPath(dir, "seq"), firstRows, "NORMAL");
    const concurrentFull = await concurrent(freshPath(dir, "conc"), rows, "FULL");
    const concurrentNormal = await concurrent(freshPath(dir, "conc"), rows, "NORMAL");

    const bigPath = freshPath(dir, "big");
    populate(bigPath, totalRows, now);
    const { statSync } = await import("node:fs");
    // The search worker starts indexing the file when the log opens, while the reads below run.
    const indexStarted = performance.now();
    const log = new SqliteEventLog({ path: bigPath, logger, clock: () => new Date(now) });
    const rounds = Math.floor(totalRows / CALLERS);
    const taskEvents = timeEach(2000, (i) =>
      log.getTaskEvents(`task-${(i * 31) % CALLERS}-${Math.floor(((i * 7919) % rounds) / 20)}`),
    );
    const summary60 = timeEach(200, () => log.getEventSummary(60));
    const summary24h = timeEach(50, () => log.getEventSummary(24 * 60));
    const rowsIn60 = log.getEventSummary(60).total;
    const rowsIn24h = log.getEventSummary(24 * 60).total;
    const summary30d = timeEach(50, () => log.getEventSummary(30 * 24 * 60));
    const rowsIn30d = log.getEventSummary(30 * 24 * 60).total;

    // Text search: the trigram index (built by the worker) against a scan of the same file.
    await waitForSearchIndex(log);
    const indexBuildSeconds = (performance.now() - indexStarted) / 1000;
    const scanner = new SqliteEventLog({
      path: bigPath,
      logger,
      searchIndex: false,
      checkpointIntervalMs: 0,
    });
    const rareMatches = log.listEvents({ text: RARE_TERM }).events.length;
    const rare = timeEach(200, () => log.listEvents({ text: RARE_TERM }));
    const rareScan = timeEach(5, () => scanner.listEvents({ text: RARE_TERM }));
    const noMatch = timeEach(200, () => log.listEvents({ text: "no-such-words", limit: 1000 }));
    const noMatchScan = timeEach(5, () => scanner.listEvents({ text: "no-such-words", limit: 1000 }));
    const common = timeEach(200, () => log.listEvents({ text: "bid_sats", order: "desc" }));
    const summary30dScan = timeEach(5, () => scanner.getEventSummary(60 * 24 * 30));
    scanner.close();
    // The server's form, on the worker: how long the event loop is held while it runs, with
    // the slowest kind of text (every event matches, so the index reads its longest lists).
    const searchDelay = monitorEventLoopDelay({ resolution: 1 });
    const searchTicker = setInterval(() => undefined, 1);
    searchDelay.enable();
    const asyncTimes: number[] = [];
    for (let i = 0; i < 50; i += 1) {
      const started = performance.now();
      await log.listEventsAsync({ text: i % 2 === 0 ? "bid_sats" : RARE_TERM, limit: 1000, order: "desc" });
      asyncTimes.push(performance.now() - started);
    }
    searchDelay.disable();
    clearInterval(searchTicker);
    asyncTimes.sort((a, b) => a - b);
    log.close();

    // Prune everything: move the clock past the newest event so all rows fall outside retention.
    const fileBefore = statSync(bigPath).size;
    const pruner = new SqliteEventLog({ path: bigPath, logger, clock: () => new Date(now + 2 * DAY) });
    const delay = monitorEventLoopDelay({ resolution: 1 });
    // A ticker keeps the loop busy-waiting for timers, so a long synchronous block shows as delay.
    const ticker = setInterval(() => undefined, 1);
    delay.enable();
    const started = performance.now();
    const report = await pruner.prune({ olderThanDays: 1 });
    const seconds = (performance.now() - started) / 1000;
    delay.disable();
    clearInterval(ticker);
    pruner.close();
    const fileAfter = statSync(bigPath).size;

    return {
      raw_full,
      raw_normal,
      raw100_full,
      raw100_normal,
      raw1_full,
      raw1_normal,
      sequential_full,
      sequential_normal,
      concurrent_full: concurrentFull.perSecond,
      concurrent_full_events_per_commit: concurrentFull.eventsPerCommit,
      concurrent_normal: concurrentNormal.perSecond,
      table_rows: totalRows,
      task_events: { ...taskEvents, events_per_task: 20 },
      summary_60: { ...summary60, rows_in_window: rowsIn60 },
      summary_24h: { ...summary24h, rows_in_window: rowsIn24h },
      summary_30d: { ...summary30d, rows_in_window: rowsIn30d },
      summary_30d_scan: summary30dScan,
      search: {
        index_build_seconds: round(indexBuildSeconds, 1),
        rare: { ...rare, matches: rareMatches },
        rare_scan: rareScan,
        no_match_1000: noMatch,
        no_match_1000_scan: noMatchScan,
        common_100: common,
        async_max_event_loop_block_ms: round(searchDelay.max / 1e6, 1),
        async_common_p50: round(percentile(asyncTimes, 50), 1),
      },
      prune: {
        deleted: report.deleted,
        seconds: round(seconds, 1),
        longest_delete_ms: report.longest_delete_ms,
        longest_vacuum_ms: report.longest_vacuum_ms,
        chunks: report.chunks,
        max_event_loop_block_ms: round(delay.max / 1e6, 1),
        file_mb_before: round(fileBefore / 2 ** 20, 1),
        file_mb_after: round(fileAfter / 2 ** 20, 1),
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

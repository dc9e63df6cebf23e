/**
 * The event log on PostgreSQL: ingest through the module API (one caller awaiting each write,
 * and 100 concurrent callers) beside raw multi-row INSERTs of the same batch sizes into the
 * same table on the same server in the same run, and a rare-term text search on 1,000,000
 * events. Uses SWARM_BENCH_POSTGRES_URL (a server it may create databases on), or starts a
 * private server with scripts/test-postgres.sh and removes it after.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { pino } from "pino";
import type { EventInput } from "../src/event-log/types.js";
import { migratePostgres } from "../src/storage/postgres/database.js";
import { PostgresEventLog } from "../src/storage/postgres/event-log.js";
import { measureBids, type BidsResult } from "./api.bench.js";
import { makeRow, type Row } from "./event-log.bench.js";
import { startProduct } from "./harness.js";
import { percentile, round } from "./machine.js";

const logger = pino({ level: "silent" });
const CALLERS = 100;
const RARE_TERM = "zebra-crossing";
const SCRIPT = fileURLToPath(new URL("../scripts/test-postgres.sh", import.meta.url));

export interface PostgresBenchResult {
  server: string;
  /** The whole server's bids per second on each engine, measured one after the other in this run. */
  bids: { sqlite: BidsResult; postgres: BidsResult };
  raw1: number;
  sequential: number;
  raw100: number;
  concurrent: number;
  concurrent_events_per_commit: number;
  search: {
    table_rows: number;
    populate_seconds: number;
    rare: { p50: number; p99: number; matches: number };
    no_match: { p50: number; p99: number };
    common_100: { p50: number; p99: number };
  };
}

function rate(count: number, ms: number): number {
  return Math.round((count / ms) * 1000);
}

function toInput(row: Row): EventInput {
  return {
    event_type: row.event_type,
    source: row.source,
    task_id: row.task_id,
    agent_id: row.agent_id,
    data: JSON.parse(row.data) as Record<string, number>,
  };
}

/** A PostgreSQL server to measure on: the given one, or a private one started for the run. */
export function benchPostgresServer(): { url: string; stop: () => void } {
  const given = process.env.SWARM_BENCH_POSTGRES_URL;
  if (given !== undefined && given !== "") return { url: given, stop: () => undefined };
  const state = join(mkdtempSync(join(tmpdir(), "swarm-bench-pg-")), "state.env");
  const env = { ...process.env, TEST_POSTGRES_STATE: state };
  const out = execFileSync("bash", [SCRIPT, "start"], { env, encoding: "utf8" });
  const url = /SWARM_TEST_POSTGRES_URL=(\S+)/.exec(out)?.[1];
  if (url === undefined) throw new Error("scripts/test-postgres.sh start printed no URL");
  return { url, stop: () => void execFileSync("bash", [SCRIPT, "stop"], { env }) };
}

/** Bids per second through the server started with `env` (SQLite in a temp folder unless SWARM_DB says otherwise). */
async function bidsOn(env: Record<string, string>, seconds: number): Promise<BidsResult> {
  const product = await startProduct("bids", {
    SWARM_AUCTION_MS: "600000",
    SWARM_HEARTBEAT_TIMEOUT_MS: "3600000",
    ...env,
  });
  try {
    return (await measureBids(product.url, seconds)).result;
  } finally {
    await product.close();
  }
}

let databases = 0;
/** A new database on the server, migrated to the product's schema; its URL. */
export async function freshDatabase(serverUrl: string): Promise<string> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  const name = `swarm_bench_${process.pid}_${(databases += 1)}`;
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 1 });
  await migratePostgres(pool);
  await pool.end();
  return url.toString();
}

/** Multi-row INSERTs of ready rows, `batch` per statement (each its own commit), numbered by the client. */
async function rawInserts(url: string, rows: Row[], batch: number): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const sql =
    "INSERT INTO event_log (seq, id, event_type, source, task_id, agent_id, data, timestamp) " +
    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])";
  const started = performance.now();
  for (let i = 0; i < rows.length; i += batch) {
    const chunk = rows.slice(i, i + batch);
    await pool.query(sql, [
      chunk.map((_, k) => i + k + 1),
      chunk.map((r) => r.id),
      chunk.map((r) => r.event_type),
      chunk.map((r) => r.source),
      chunk.map((r) => r.task_id),
      chunk.map((r) => r.agent_id),
      chunk.map((r) => r.data),
      chunk.map((r) => r.timestamp),
    ]);
  }
  const elapsed = performance.now() - started;
  await pool.end();
  return rate(rows.length, elapsed);
}

async function sequential(url: string, rows: Row[]): Promise<number> {
  const log = new PostgresEventLog({ url, logger });
  await log.whenReady();
  const inputs = rows.map(toInput);
  const started = performance.now();
  for (const input of inputs) await log.logEvent(input);
  const elapsed = performance.now() - started;
  await log.close();
  return rate(rows.length, elapsed);
}

async function concurrent(url: string, rows: Row[]): Promise<{ perSecond: number; eventsPerCommit: number }> {
  const log = new PostgresEventLog({ url, logger });
  await log.whenReady();
  const inputs = rows.map(toInput);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async (_, caller) => {
      for (let k = caller; k < inputs.length; k += CALLERS) await log.logEvent(inputs[k] as EventInput);
    }),
  );
  const elapsed = performance.now() - started;
  const stats = log.writeStats();
  await log.close();
  return {
    perSecond: rate(rows.length, elapsed),
    eventsPerCommit: round(stats.events / stats.transactions, 1),
  };
}

/** `total` events generated on the server (a handful holding the rare term), the text index built after. */
async function populate(url: string, total: number): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const started = performance.now();
  const rareEvery = Math.max(1, Math.floor(total / 5));
  await pool.query("DROP INDEX idx_event_log_text");
  await pool.query(
    `INSERT INTO event_log (seq, id, event_type, source, task_id, agent_id, data, timestamp)
     SELECT k, gen_random_uuid()::text,
       (ARRAY['bid.submitted','task.assigned','task.started','tool.called','tool.completed','task.completed'])[1 + (k / 100) % 6],
       'agent-' || (k % 100), 'task-' || (k % 100) || '-' || (k / 2000), 'agent-' || (k % 100),
       CASE WHEN k % $2 = $2 - 1 THEN '{"note":"' || $3 || ' ' || k || '"}' ELSE '{"bid_sats":' || ((k * 7) % 500) || '}' END,
       to_char(now() - interval '30 days' + (k::float / $1) * interval '30 days', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
     FROM generate_series(1, $1) AS k`,
    [total, rareEvery, RARE_TERM],
  );
  await pool.query("UPDATE event_log_head SET last_seq = $1", [total]);
  await pool.query(
    "CREATE INDEX idx_event_log_text ON event_log USING gin (swarm_ascii_lower(data) gin_trgm_ops)",
  );
  await pool.query("VACUUM ANALYZE event_log");
  await pool.end();
  return round((performance.now() - started) / 1000, 1);
}

async function timeEach(samples: number, run: () => Promise<unknown>): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < samples; i += 1) {
    const started = performance.now();
    await run();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return { p50: round(percentile(times, 50), 2), p99: round(percentile(times, 99), 2) };
}

export async function benchPostgres(
  options: { sequentialRows?: number; concurrentRows?: number; tableRows?: number; bidSeconds?: number } = {},
): Promise<PostgresBenchResult> {
  const server = benchPostgresServer();
  try {
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    const version = (await admin.query<{ server_version: string }>("SHOW server_version")).rows[0]
      ?.server_version;
    await admin.end();
    const now = new Date().toISOString();
    const sequentialRows = Array.from({ length: options.sequentialRows ?? 3000 }, (_, k) => makeRow(k, now));
    const concurrentRows = Array.from({ length: options.concurrentRows ?? 50_000 }, (_, k) =>
      makeRow(k, now),
    );
    // Alternated, each on a fresh database, so that neither side gets the warmer server.
    const raw1 = await rawInserts(await freshDatabase(server.url), sequentialRows, 1);
    const one = await sequential(await freshDatabase(server.url), sequentialRows);
    const raw100 = await rawInserts(await freshDatabase(server.url), concurrentRows, CALLERS);
    const many = await concurrent(await freshDatabase(server.url), concurrentRows);

    // The server on each engine, the same load (api.bench.ts, measureBids), one after the other.
    const bidSeconds = options.bidSeconds ?? 10;
    const bids = {
      sqlite: await bidsOn({}, bidSeconds),
      postgres: await bidsOn({ SWARM_DB: await freshDatabase(server.url) }, bidSeconds),
    };

    const tableRows = options.tableRows ?? 1_000_000;
    const searchUrl = await freshDatabase(server.url);
    const populateSeconds = await populate(searchUrl, tableRows);
    const log = new PostgresEventLog({ url: searchUrl, logger });
    await log.whenReady();
    let matches = 0;
    const rare = await timeEach(50, async () => {
      matches = (await log.listEvents({ text: RARE_TERM, limit: 100 })).events.length;
    });
    const noMatch = await timeEach(50, () => log.listEvents({ text: "no-such-words-anywhere", limit: 100 }));
    const common = await timeEach(50, () => log.listEvents({ text: "bid_sats", limit: 100, order: "desc" }));
    await log.close();
    return {
      server: `PostgreSQL ${version ?? "?"} on this machine (loopback), default durability (fsync on, synchronous_commit on)`,
      bids,
      raw1,
      sequential: one,
      raw100,
      concurrent: many.perSecond,
      concurrent_events_per_commit: many.eventsPerCommit,
      search: {
        table_rows: tableRows,
        populate_seconds: populateSeconds,
        rare: { ...rare, matches },
        no_match: noMatch,
        common_100: common,
      },
    };
  } finally {
    server.stop();
  }
}

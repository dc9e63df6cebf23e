/**
 * The storage engines a contract test runs on: SQLite always, PostgreSQL when the tests have one
 * (always under CI; see postgres.ts). A suite written once as
 * `describe.each(ENGINES)("… on $name", (engine) => …)` runs on each.
 */
import { afterEach } from "vitest";
import type { AnyEventLog } from "../../src/event-log/index.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { numbered } from "../../src/storage/postgres/queries.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { openTestLog, silentLogger } from "./event-log.js";
import { createTestDatabase, havePostgres } from "./postgres.js";

export interface TestLogOptions {
  clock?: () => Date;
  maxBatchEvents?: number;
}

export interface Engine {
  name: "sqlite" | "postgres";
  /** A new, empty event log on this engine, closed after the test. */
  openLog(options?: TestLogOptions): Promise<AnyEventLog>;
  /**
   * Run one statement on the log's own database, with `?` placeholders: for a test to reach
   * under the API (write a row another tool might, check what is stored). Returns the rows.
   */
  sql(log: AnyEventLog, statement: string, ...params: unknown[]): Promise<Record<string, unknown>[]>;
}

const openPostgres: PostgresEventLog[] = [];

afterEach(async () => {
  await Promise.all(openPostgres.splice(0).map((log) => log.close()));
});

export const SQLITE: Engine = {
  name: "sqlite",
  async openLog(options = {}) {
    return openTestLog(options);
  },
  async sql(log, statement, ...params) {
    const prepared = (log as SqliteEventLog).db.prepare(statement);
    if (prepared.reader) return prepared.all(...params) as Record<string, unknown>[];
    prepared.run(...params);
    return [];
  },
};

export const POSTGRES: Engine = {
  name: "postgres",
  async openLog(options = {}) {
    const log = new PostgresEventLog({
      url: await createTestDatabase(),
      logger: silentLogger,
      pollIntervalMs: 50,
      ...options,
    });
    openPostgres.push(log);
    await log.whenReady();
    return log;
  },
  async sql(log, statement, ...params) {
    return (await (log as PostgresEventLog).pool.query(numbered(statement), params)).rows as Record<
      string,
      unknown
    >[];
  },
};

export const ENGINES: Engine[] = havePostgres ? [SQLITE, POSTGRES] : [SQLITE];

/**
 * A call's refusal as a promise, whichever way the engine refuses (SQLite throws at the call, a
 * PostgreSQL read rejects): `await expect(attempt(() => log.listEvents(bad))).rejects…`.
 */
export function attempt<T>(call: () => T | Promise<T>): Promise<T> {
  return Promise.resolve().then(call);
}

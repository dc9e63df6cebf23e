/**
 * A coordinator on a storage engine, with no web app around it, for the coordinator's contract
 * tests: written once against CoordinatorPort (`submit`, awaited reads, `tick()`), they run on
 * both shells with `describe.each(ENGINES)` (engines.ts). Stopped and closed after the test.
 */
import { afterEach } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CommandResult, CoordinatorPort } from "../../src/coordinator/port.js";
import { PostgresCoordinator } from "../../src/coordinator/postgres-coordinator.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import type { EventLogPort } from "../../src/storage/port.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { POSTGRES, SQLITE, type Engine } from "./engines.js";
import { fakeClock, openTestLog, silentLogger } from "./event-log.js";
import { createTestDatabase } from "./postgres.js";
import { tempDbPath } from "./temp-dir.js";

export type EngineName = Engine["name"];
export type FakeClock = ReturnType<typeof fakeClock>;

const coordinators: CoordinatorPort[] = [];
const postgresLogs: PostgresEventLog[] = [];

afterEach(async () => {
  // Coordinators first: a PostgreSQL shell's stop waits for its batch in flight, which needs its log.
  for (const coordinator of coordinators.splice(0)) await coordinator.stop();
  await Promise.all(postgresLogs.splice(0).map((log) => log.close()));
});

/** Wall-clock time, for a test of the shell's own timer; it cannot be moved. */
const WALL_CLOCK: FakeClock = {
  now: () => new Date(),
  advance() {
    throw new Error("the wall clock does not move on command");
  },
  set() {
    throw new Error("the wall clock does not move on command");
  },
};

export interface CoordinatorOnOptions {
  rules?: Partial<CoordinatorRules>;
  /** A fake clock at 2026-03-01T12:00Z unless given (pass the first's to restart on its time), or the wall clock. */
  clock?: FakeClock | "wall";
  /** Storage an earlier coordinator left (its `where`), to open again as a restarted process would. */
  where?: string;
  /** New storage that outlives the coordinator: on SQLite a file rather than memory (PostgreSQL's always does). */
  durable?: boolean;
  tickIntervalMs?: number;
}

/**
 * A coordinator on `engine`, not started: it writes nothing by itself (no Recover, no timer)
 * until the test calls `start()`, and a test moves time with `clock.advance` and runs the Tick
 * with `tick()`.
 */
export async function coordinatorOn(engine: EngineName, options: CoordinatorOnOptions = {}) {
  const clock =
    options.clock === "wall" ? WALL_CLOCK : (options.clock ?? fakeClock("2026-03-01T12:00:00.000Z"));
  const { rules, tickIntervalMs } = options;
  const shell = { logger: silentLogger, clock: clock.now, rules, tickIntervalMs };
  let eventLog: SqliteEventLog | PostgresEventLog;
  let coordinator: CoordinatorPort;
  let tick: () => Promise<CommandResult | undefined>;
  let where: string;
  if (engine === "sqlite") {
    where = options.where ?? (options.durable === true ? tempDbPath() : ":memory:");
    const log = openTestLog({ path: where, clock: clock.now });
    const sqlite = new Coordinator({ eventLog: log, ...shell });
    eventLog = log;
    coordinator = sqlite;
    tick = async () => sqlite.tick();
  } else {
    where = options.where ?? (await createTestDatabase());
    const log = new PostgresEventLog({
      url: where,
      logger: silentLogger,
      clock: clock.now,
      pollIntervalMs: 50,
    });
    postgresLogs.push(log);
    await log.whenReady();
    const postgres = new PostgresCoordinator({ eventLog: log, ...shell });
    eventLog = log;
    coordinator = postgres;
    tick = () => postgres.tick();
  }
  coordinators.push(coordinator);
  const harness = engine === "sqlite" ? SQLITE : POSTGRES;
  return {
    engine,
    coordinator,
    eventLog: eventLog as EventLogPort,
    clock,
    /** The storage it is on, for a restart to open again: an SQLite path, or a PostgreSQL URL. */
    where,
    /** Run the core's Tick now (auctions due by the clock close, silent agents go offline). */
    tick,
    /** One statement on the coordinator's own database, `?` placeholders; the rows it returns. */
    sql: (statement: string, ...params: unknown[]) => harness.sql(eventLog, statement, ...params),
    /** Stop it and close its log, as a process that stops would; its storage stays, at `where`. */
    async close(): Promise<void> {
      await coordinator.stop();
      await eventLog.close();
    },
  };
}

export type TestCoordinator = Awaited<ReturnType<typeof coordinatorOn>>;

import { afterEach } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CoordinatorPort } from "../../src/coordinator/port.js";
import { PostgresCoordinator } from "../../src/coordinator/postgres-coordinator.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import type { EventLogPort } from "../../src/storage/port.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { buildApp, type App, type AppOptions } from "../../src/web/app.js";
import { POSTGRES, SQLITE, type Engine } from "./engines.js";
import { fakeClock, openTestLog, silentLogger } from "./event-log.js";
import { createTestDatabase } from "./postgres.js";

const apps: App[] = [];
const coordinators: CoordinatorPort[] = [];
const postgresLogs: PostgresEventLog[] = [];

afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
  for (const coordinator of coordinators.splice(0)) await coordinator.stop();
  await Promise.all(postgresLogs.splice(0).map((log) => log.close()));
});

export const OPERATOR_KEY = "operator-key-for-tests-0123456789";

export type EngineName = Engine["name"];

/**
 * The log and coordinator of a test app on `engine`, on a fake clock. The coordinator is not
 * started: it writes nothing by itself (no Recover, no timer), and a test moves time with
 * `clock.advance` and runs the Tick with `tick()`.
 */
async function storageFor(
  engine: EngineName,
  clock: ReturnType<typeof fakeClock>,
  rules: Partial<CoordinatorRules> | undefined,
  path: string | undefined,
  url: string | undefined,
): Promise<{
  eventLog: EventLogPort;
  coordinator: CoordinatorPort;
  tick: () => Promise<void>;
  url: string | undefined;
}> {
  if (engine === "sqlite") {
    const eventLog = openTestLog({ clock: clock.now, ...(path ? { path } : {}) });
    const coordinator = new Coordinator({ eventLog, logger: silentLogger, clock: clock.now, rules });
    return {
      eventLog,
      coordinator,
      tick: async () => {
        coordinator.tick();
      },
      url: undefined,
    };
  }
  const database = url ?? (await createTestDatabase());
  const eventLog = new PostgresEventLog({
    url: database,
    logger: silentLogger,
    clock: clock.now,
    pollIntervalMs: 50,
  });
  postgresLogs.push(eventLog);
  await eventLog.whenReady();
  const coordinator = new PostgresCoordinator({ eventLog, logger: silentLogger, clock: clock.now, rules });
  coordinators.push(coordinator);
  return {
    eventLog,
    coordinator,
    tick: async () => {
      await coordinator.tick();
    },
    url: database,
  };
}

/** On SQLite a test may reach the shell's own types (synchronous reads, the database handle). */
type LogOf<E extends EngineName> = E extends "sqlite" ? SqliteEventLog : EventLogPort;
type CoordinatorOf<E extends EngineName> = E extends "sqlite" ? Coordinator : CoordinatorPort;

/** An app on an empty database of `engine` (SQLite in memory by default) with a fake clock; closed after the test. */
export async function buildTestApp<E extends EngineName = "sqlite">(
  options: Partial<Omit<AppOptions, "eventLog" | "coordinator" | "logger">> & {
    rules?: Partial<CoordinatorRules>;
    path?: string;
    /** PostgreSQL: the URL of an existing database to open (another app's `url`) instead of a new one. */
    url?: string;
    engine?: E;
  } = {},
) {
  const { engine = "sqlite", rules, path, url, ...appOptions } = options;
  const clock = fakeClock("2026-03-01T12:00:00.000Z");
  const storage = await storageFor(engine, clock, rules, path, url);
  const { tick } = storage;
  const eventLog = storage.eventLog as LogOf<E>;
  const coordinator = storage.coordinator as CoordinatorOf<E>;
  const app = await buildApp({
    eventLog,
    coordinator,
    logger: silentLogger,
    rateLimitPerMinute: false,
    expensiveRateLimitPerMinute: false,
    apiKey: OPERATOR_KEY,
    ...appOptions,
  });
  apps.push(app);
  // In open mode (no key) the operator sends no credentials at all.
  const operator: Record<string, string> =
    "apiKey" in options && options.apiKey === undefined ? {} : { authorization: `Bearer ${OPERATOR_KEY}` };
  const engineHarness = engine === "sqlite" ? SQLITE : POSTGRES;
  return {
    app,
    engine,
    /** PostgreSQL: the URL of the app's database (a second app may open it); undefined on SQLite. */
    url: storage.url,
    eventLog,
    coordinator,
    clock,
    operator,
    /** Run the core's Tick now (auctions due by the fake clock close, silent agents go offline). */
    tick,
    /** One statement on the app's own database, `?` placeholders; the rows it returns. */
    sql: (statement: string, ...params: unknown[]) =>
      engineHarness.sql(storage.eventLog as SqliteEventLog | PostgresEventLog, statement, ...params),
    /** Register an agent through the API; returns its id and auth header. */
    async agent(name = "worker", body: Record<string, unknown> = {}) {
      const response = await app.inject({
        method: "POST",
        url: "/api/agents",
        headers: operator,
        payload: { name, ...body },
      });
      if (response.statusCode !== 201) throw new Error(`registration failed: ${response.body}`);
      const { agent, token } = response.json<{ agent: { id: string }; token: string }>();
      return { id: agent.id, token, auth: { authorization: `Bearer ${token}` } };
    },
    /** Bid through the API as `agent`; returns the response. */
    bid(agent: { auth: Record<string, string> }, taskId: string, bidSats: number) {
      return app.inject({
        method: "POST",
        url: `/api/tasks/${taskId}/bids`,
        headers: agent.auth,
        payload: { bid_sats: bidSats },
      });
    },
    async task(body: Record<string, unknown> = {}) {
      const response = await app.inject({
        method: "POST",
        url: "/api/tasks",
        headers: operator,
        payload: { description: "summarize the report", ...body },
      });
      if (response.statusCode !== 201) throw new Error(`post failed: ${response.body}`);
      return response.json<{ task: { id: string } }>().task.id;
    },
  };
}

export type TestApp<E extends EngineName = "sqlite"> = Awaited<ReturnType<typeof buildTestApp<E>>>;

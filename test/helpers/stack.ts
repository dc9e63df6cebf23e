import type { AddressInfo } from "node:net";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import type { CoordinatorPort } from "../../src/coordinator/port.js";
import { PostgresCoordinator } from "../../src/coordinator/postgres-coordinator.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import type { EventLogPort } from "../../src/storage/port.js";
import { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { buildApp, type App, type AppOptions } from "../../src/web/app.js";
import { silentLogger } from "./event-log.js";
import { createTestDatabase } from "./postgres.js";
import { tempDbPath } from "./temp-dir.js";

/**
 * The whole product on a database file with the real clock, listening on loopback, as
 * `npm start` runs it; `port` 0 picks a free one. Stop it with `stop()`.
 */
export async function startStack(path: string, port = 0, options: StackOptions = {}) {
  const eventLog = new SqliteEventLog({ path, logger: silentLogger });
  const coordinator = new Coordinator({ eventLog, logger: silentLogger, rules: options.rules });
  coordinator.start();
  return listening(eventLog, coordinator, port, options, async () => {
    coordinator.stop();
    if (!eventLog.isClosed) eventLog.close();
  });
}

/** `startStack` on the PostgreSQL database at `url`: the product as `SWARM_DB=<url> npm start` runs it. */
export async function startPostgresStack(url: string, port = 0, options: StackOptions = {}) {
  const eventLog = new PostgresEventLog({ url, logger: silentLogger, pollIntervalMs: 50 });
  await eventLog.whenReady();
  const coordinator = new PostgresCoordinator({ eventLog, logger: silentLogger, rules: options.rules });
  await coordinator.start();
  return listening(eventLog, coordinator, port, options, async () => {
    await coordinator.stop();
    await eventLog.close();
  });
}

export type StackEngine = "sqlite" | "postgres";

/**
 * A stack on `engine`, on new storage: a database file for SQLite, a new database for
 * PostgreSQL. `where` names it, for a restart to open the same storage again.
 */
export async function startStackOn(
  engine: StackEngine,
  port = 0,
  options: StackOptions = {},
  where?: string,
) {
  const place = where ?? (engine === "sqlite" ? tempDbPath() : await createTestDatabase());
  const stack: PortStack =
    engine === "sqlite"
      ? await startStack(place, port, options)
      : await startPostgresStack(place, port, options);
  return { ...stack, where: place };
}

interface StackOptions {
  rules?: Partial<CoordinatorRules>;
  apiKey?: string;
  app?: Partial<AppOptions>;
}

async function listening<L extends EventLogPort, C extends CoordinatorPort>(
  eventLog: L,
  coordinator: C,
  port: number,
  options: StackOptions,
  closeStorage: () => Promise<void>,
) {
  const app: App = await buildApp({
    eventLog,
    coordinator,
    logger: silentLogger,
    rateLimitPerMinute: false,
    expensiveRateLimitPerMinute: false,
    apiKey: options.apiKey,
    ...options.app,
  });
  await app.listen({ host: "127.0.0.1", port });
  const address = app.server.address() as AddressInfo;
  return {
    eventLog,
    coordinator,
    app,
    base: `http://127.0.0.1:${address.port}`,
    port: address.port,
    async stop() {
      await app.close();
      await closeStorage();
    },
  };
}

/** A stack on either engine, through the storage ports only. */
export type PortStack = Awaited<ReturnType<typeof listening<EventLogPort, CoordinatorPort>>>;
export type Stack = Awaited<ReturnType<typeof startStack>>;

/** Poll `read` until `done` says yes; fails with the last value after `timeoutMs`. */
export async function eventually<T>(
  read: () => T | Promise<T>,
  done: (value: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out; last value: ${JSON.stringify(value)?.slice(0, 1000)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

import type { AddressInfo } from "node:net";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import type { CoordinatorRules } from "../../src/coordinator/types.js";
import { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { buildApp, type App, type AppOptions } from "../../src/web/app.js";
import { silentLogger } from "./event-log.js";

/**
 * The whole product on a database file with the real clock, listening on loopback, as
 * `npm start` runs it; `port` 0 picks a free one. Stop it with `stop()`.
 */
export async function startStack(
  path: string,
  port = 0,
  options: { rules?: Partial<CoordinatorRules>; apiKey?: string; app?: Partial<AppOptions> } = {},
) {
  const eventLog = new SqliteEventLog({ path, logger: silentLogger });
  const coordinator = new Coordinator({ eventLog, logger: silentLogger, rules: options.rules });
  coordinator.start();
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
      coordinator.stop();
      if (!eventLog.isClosed) eventLog.close();
    },
  };
}

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

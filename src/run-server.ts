/**
 * Start the whole product from a configuration: on SQLite take the database file for this
 * process (one server per file), on PostgreSQL connect; open the event log, recover and start the
 * coordinator, schedule retention, build the app and listen. `shutdown` stops it in order.
 * `npm start` (server.ts) and `npm run demo` (demo.ts) both start it this way.
 */
import { hostname, networkInterfaces } from "node:os";
import type { Config } from "./config.js";
import { Coordinator } from "./coordinator/coordinator.js";
import type { CoordinatorPort } from "./coordinator/port.js";
import { PostgresCoordinator } from "./coordinator/postgres-coordinator.js";
import type { EventLogPort } from "./storage/port.js";
import { lockDatabase } from "./storage/sqlite/database-lock.js";
import { createEventLog, scheduleRetention, setDefaultEventLog } from "./event-log/index.js";
import { isSwarmError, SwarmError } from "./errors.js";
import { closeStdoutLog, type Logger } from "./logger.js";
import { buildApp, type App } from "./web/app.js";

export interface RunningServer {
  app: App;
  /** http://host:port, as clients on this machine reach it. */
  url: string;
  shutdown: () => Promise<void>;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const { database } = config;
  if (database.engine === "postgres") {
    // Many servers may share one PostgreSQL database: the database orders their writes.
    try {
      return await startOn(config, logger, openPostgres(config, database.url, logger), () => undefined);
    } catch (error) {
      if (!isSwarmError(error, "STORAGE_UNAVAILABLE")) throw error;
      // Say which setting pointed there: the operator's next step is to check it.
      throw new SwarmError(
        "STORAGE_UNAVAILABLE",
        `SWARM_DB ${redactedUrl(database.url)}: ${error.message}`,
        { field: "SWARM_DB" },
        { cause: error },
      );
    }
  }
  // Before anything opens the file: a second server must not even recover (Recover writes).
  const lock = lockDatabase(database.path);
  try {
    return await startOn(config, logger, openSqlite(config, database.path, logger), () => lock.release());
  } catch (error) {
    // Whatever had started was stopped and the file closed: another server may have it now.
    lock.release();
    throw error;
  }
}

/** The storage a server runs on: its event log and the coordinator shell over it. */
interface Storage {
  eventLog: EventLogPort;
  coordinator: CoordinatorPort;
  /** Where the data is, for the ready line (a URL without its password). */
  location: string;
}

function coordinatorRules(config: Config) {
  return {
    defaultAuctionMs: config.auctionMs,
    defaultAckMs: config.ackMs === false ? null : config.ackMs,
    maxRetryBackoffMs: config.maxRetryBackoffMs,
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    maxEventsPerTask: config.maxEventsPerTask,
    maxAgentBytesPerHour: config.maxAgentBytesPerHour,
  };
}

function openSqlite(config: Config, dbPath: string, logger: Logger): Storage {
  const eventLog = createEventLog({ path: dbPath, synchronous: config.dbSynchronous, logger });
  setDefaultEventLog(eventLog);
  const coordinator = new Coordinator({
    eventLog,
    logger,
    rules: coordinatorRules(config),
    ...(config.replicaId === undefined ? {} : { replicaId: config.replicaId }),
  });
  return { eventLog, coordinator, location: dbPath };
}

function openPostgres(config: Config, url: string, logger: Logger): Storage {
  // The doorbell brings other replicas' events to this one's streams at once, not at the next poll.
  const eventLog = createEventLog({ url, logger, doorbell: true });
  setDefaultEventLog(eventLog);
  const coordinator = new PostgresCoordinator({
    eventLog,
    logger,
    rules: coordinatorRules(config),
    leaseMs: config.leaseMs,
    ...(config.replicaId === undefined ? {} : { replicaId: config.replicaId }),
  });
  return { eventLog, coordinator, location: redactedUrl(url) };
}

/** The URL with its password, if any, taken out: it goes to the log. */
export function redactedUrl(url: string): string {
  const parsed = URL.parse(url);
  if (parsed === null) return "(a PostgreSQL URL)";
  if (parsed.password !== "") parsed.password = "***";
  return parsed.toString();
}

async function startOn(
  config: Config,
  logger: Logger,
  storage: Storage,
  releaseLock: () => void,
): Promise<RunningServer> {
  const { eventLog, coordinator } = storage;
  let retention;
  try {
    retention = scheduleRetention(eventLog, {
      cron: config.pruneCron,
      retentionDays: config.retentionDays,
      logger,
      // One replica at a time: the holder of the maintenance lease (always, on SQLite).
      shouldRun: () => coordinator.replica.leader,
      pruneFinishedWork: () =>
        coordinator.pruneFinished({
          taskRetentionDays: config.taskRetentionDays,
          idempotencyKeyHours: config.idempotencyKeyHours,
        }),
    });
  } catch (error) {
    await eventLog.close();
    throw error;
  }
  let app: App | undefined;
  const stopParts = async () => {
    try {
      await app?.close(); // stops accepting, lets in-flight requests finish
      await coordinator.stop();
      await retention.stop();
    } finally {
      await eventLog.close(); // writes anything still queued, then closes
    }
  };
  let address;
  try {
    await coordinator.start();
    app = await buildApp({
      eventLog,
      coordinator,
      logger,
      apiKey: config.apiKey,
      rateLimitPerMinute: config.rateLimitPerMinute,
      expensiveRateLimitPerMinute: config.expensiveRateLimitPerMinute,
      dashboardPublic: config.dashboardPublic,
      dashboardPublicDetails: config.dashboardPublicDetails,
      allowedHosts:
        config.allowedHosts === "any" ? "any" : [...config.allowedHosts, ...listenNames(config.host)],
      maxSockets: config.maxSockets,
      maxSocketsPerClient: config.maxSocketsPerClient,
      trustProxy: config.trustProxy,
      defaultMetrics: true,
      runSchedules: true,
    });
    await app.listen({ host: config.host, port: config.port });
    address = app.server.address();
  } catch (error) {
    // A port already taken, say: nothing may keep writing once the lock is let go.
    await stopParts().catch(() => undefined);
    throw error;
  }
  const started = app;

  let stopped: Promise<void> | undefined;
  const shutdown = () =>
    (stopped ??= (async () => {
      try {
        await stopParts();
      } finally {
        releaseLock();
        logger.info("stopped");
      }
    })());

  const port = typeof address === "object" && address !== null ? address.port : config.port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `http://${config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : host}:${port}`;
  logger.info(
    {
      url,
      storage: eventLog.engine,
      replica: coordinator.replica.id,
      db: storage.location,
      next_prune: retention.nextRun()?.toISOString(),
      retention_days: config.retentionDays,
      task_retention_days: config.taskRetentionDays,
    },
    "swarm coordinator ready",
  );
  return { app: started, url, shutdown };
}

/**
 * The names clients reach a server listening on `host` by, without being told: the address
 * itself, or, listening on every address, each of this machine's addresses and its host name.
 */
export function listenNames(host: string): string[] {
  if (host !== "0.0.0.0" && host !== "::") return [host];
  const addresses = Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .map((entry) => entry.address);
  return [hostname(), ...addresses];
}

/** The end of the shutdown grace kept for the last log lines to get out. */
const LOG_CLOSE_MS = 1000;

/**
 * Run until SIGTERM or SIGINT, then stop in order and exit, within `graceMs` whatever the parts
 * or the log pipe do: `stop` gets the grace less the last second (half, for a grace under two
 * seconds); if it has not finished by then the process says so and exits with code 1. Either
 * way the log then gets what is left to drain, and `process.exit` cannot wait on its pipe.
 */
export function stopOnSignals(logger: Logger, stop: () => Promise<void>, graceMs: number): void {
  const logCloseMs = Math.min(LOG_CLOSE_MS, graceMs / 2);
  let stopping = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, grace_ms: graceMs }, "shutting down");
      let exiting = false;
      const exit = (code: number) => {
        if (exiting) return;
        exiting = true;
        clearTimeout(deadline);
        void closeStdoutLog(logCloseMs).finally(() => process.exit(code));
      };
      const deadline = setTimeout(() => {
        logger.error({ grace_ms: graceMs }, "shutdown did not finish within its grace; exiting anyway");
        exit(1);
      }, graceMs - logCloseMs);
      stop().then(
        () => exit(0),
        (error: unknown) => {
          logger.error({ err: error }, "shutdown failed");
          exit(1);
        },
      );
    });
  }
}

/** Start-up failures are configuration or environment problems: say what is wrong, plainly. */
export function reportStartFailure(error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`swarm coordinator cannot start: ${message}\n`);
  process.exit(1);
}

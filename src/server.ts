/**
 * The server entry: read configuration, open the event log, recover and start the
 * coordinator, start the retention schedule, listen, and shut down in order on SIGTERM/SIGINT.
 */
import { loadConfig } from "./config.js";
import { Coordinator } from "./coordinator/coordinator.js";
import { createEventLog, scheduleRetention, setDefaultEventLog } from "./event-log/index.js";
import { createLogger } from "./logger.js";
import { buildApp } from "./web/app.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const eventLog = createEventLog({ path: config.dbPath, synchronous: config.dbSynchronous, logger });
  setDefaultEventLog(eventLog);
  let retention;
  try {
    retention = scheduleRetention(eventLog, {
      cron: config.pruneCron,
      retentionDays: config.retentionDays,
      logger,
    });
  } catch (error) {
    eventLog.close();
    throw error;
  }
  const coordinator = new Coordinator({
    eventLog,
    logger,
    rules: { defaultAuctionMs: config.auctionMs, heartbeatTimeoutMs: config.heartbeatTimeoutMs },
  });
  coordinator.start();
  const app = await buildApp({
    eventLog,
    coordinator,
    logger,
    apiKey: config.apiKey,
    rateLimitPerMinute: config.rateLimitPerMinute,
    dashboardPublic: config.dashboardPublic,
    defaultMetrics: true,
  });

  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    try {
      await app.close(); // stops accepting, lets in-flight requests finish
      coordinator.stop();
      await retention.stop();
    } finally {
      eventLog.close(); // writes anything still queued, then closes the file
      logger.info("stopped");
    }
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      shutdown(signal).then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
    });
  }

  await app.listen({ host: config.host, port: config.port });
  logger.info(
    {
      db: config.dbPath,
      next_prune: retention.nextRun()?.toISOString(),
      retention_days: config.retentionDays,
    },
    "swarm coordinator ready",
  );
}

main().catch((error: unknown) => {
  // Start-up failures are configuration or environment problems: say what is wrong, plainly.
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`swarm coordinator cannot start: ${message}\n`);
  process.exit(1);
});

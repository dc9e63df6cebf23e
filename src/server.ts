/**
 * The server entry (`npm start`): read configuration, start everything, and shut down in order
 * on SIGTERM/SIGINT.
 */
import { loadConfig } from "./config.js";
import { createLogger, writeStdoutLine } from "./logger.js";
import { reportStartFailure, startServer, stopOnSignals } from "./run-server.js";
import { describeDatabase } from "./storage/database-setting.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel, undefined, config.logFormat);
  const server = await startServer(config, logger);
  // Whatever LOG_LEVEL says (at warn, nothing else would say where the server is) and whatever
  // the format: one line for the person who started it.
  writeStdoutLine(
    `swarm coordinator listening on ${server.url}/ (dashboard, API and /docs), database ${describeDatabase(config.database)}; Ctrl-C stops it`,
  );
  stopOnSignals(logger, server.shutdown, config.shutdownGraceMs);
}

main().catch(reportStartFailure);

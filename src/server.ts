/**
 * The server entry (`npm start`): read configuration, start everything, and shut down in order
 * on SIGTERM/SIGINT.
 */
import { loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { reportStartFailure, startServer, stopOnSignals } from "./run-server.js";

async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const server = await startServer(config, logger);
  stopOnSignals(logger, server.shutdown, config.shutdownGraceMs);
}

main().catch(reportStartFailure);

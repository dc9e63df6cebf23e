/**
 * Operational logs: how the service itself is doing (a prune ran, a listener threw, a write
 * was refused). They go to pino on stdout and never into `event_log`, which records only
 * what happened to tasks and agents.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ level, base: { service: "swarm-coordinator" } });
}

let rootLogger: Logger | undefined;

/** The process-wide logger, created on first use so that importing a module has no side effect. */
export function getLogger(): Logger {
  rootLogger ??= createLogger();
  return rootLogger;
}

/**
 * The event log's module API.
 *
 * Two ways in: `createEventLog({ path })` for an instance you own (tests, embedding), or the
 * module-level functions below, bound to a default instance that opens on `SWARM_DB` at the
 * first call (never at import). The snake_case names are the Python-era API, kept for users
 * porting code; they are the same functions.
 */
import { loadConfig } from "../config.js";
import { SwarmError } from "../errors.js";
import { parseDatabaseSetting } from "../storage/database-setting.js";
import type { Awaitable } from "../storage/port.js";
import { PostgresEventLog, type PostgresEventLogOptions } from "../storage/postgres/event-log.js";
import { SqliteEventLog, type EventLogOptions } from "../storage/sqlite/event-log.js";
import type {
  EventFilter,
  EventInput,
  EventListener,
  EventPage,
  EventSummary,
  HourlyCount,
  StoredEvent,
  SubscriptionFilter,
} from "./types.js";

export { MIN_RETENTION_DAYS } from "./rows.js";
export { PostgresEventLog, type PostgresEventLogOptions } from "../storage/postgres/event-log.js";
export type { Awaitable, EventLogPort, StorageEngine } from "../storage/port.js";
export {
  SqliteEventLog,
  SqliteEventLog as EventLog,
  type EventLogOptions,
  type EventLogTransaction,
  type PruneOptions,
} from "../storage/sqlite/event-log.js";
export {
  EventType,
  KNOWN_EVENT_TYPES,
  EVENT_TYPE_PATTERN,
  isKnownEventType,
  isValidEventType,
} from "./event-types.js";
export type { EventTypeName, KnownEventType } from "./event-types.js";
export { EVENT_LIMITS } from "./validate.js";
export {
  scheduleRetention,
  runRetention,
  type FinishedWorkCounts,
  type RetentionReport,
  type RetentionSchedule,
} from "./retention.js";
export type * from "./types.js";

/** An event log on either engine: SQLite answers reads at once, PostgreSQL with promises. */
export type AnyEventLog = SqliteEventLog | PostgresEventLog;

/** `createEventLog`'s options: an SQLite `path`, or a PostgreSQL `url`, and either's own settings. */
export type CreateEventLogOptions =
  | (Partial<EventLogOptions> & { url?: undefined })
  | (Omit<PostgresEventLogOptions, "url"> & { url: string; path?: undefined });

/**
 * Open an event log you own: on PostgreSQL when given a `url` (postgres:// or postgresql://),
 * on the SQLite file `path` when given one, and otherwise on whatever `SWARM_DB` names
 * (./data/swarm.db by default). Awaiting any of its calls works on both engines.
 */
export function createEventLog(
  options: Omit<PostgresEventLogOptions, "url"> & { url: string },
): PostgresEventLog;
export function createEventLog(options: Partial<EventLogOptions> & { path: string }): SqliteEventLog;
export function createEventLog(options?: CreateEventLogOptions): AnyEventLog;
export function createEventLog(options: CreateEventLogOptions = {}): AnyEventLog {
  if (options.url !== undefined) {
    const setting = parseDatabaseSetting(options.url, "url");
    if (setting.engine !== "postgres") {
      throw new SwarmError("INVALID_CONFIG", "url: must be a postgres:// or postgresql:// URL", {
        field: "url",
      });
    }
    return new PostgresEventLog({ ...options, url: setting.url });
  }
  const sqlite = options as Partial<EventLogOptions>;
  const config = sqlite.path === undefined || sqlite.synchronous === undefined ? loadConfig() : undefined;
  if (sqlite.path === undefined && config?.database.engine === "postgres") {
    return new PostgresEventLog({ logger: sqlite.logger, clock: sqlite.clock, url: config.database.url });
  }
  const path = sqlite.path ?? (config?.database.engine === "sqlite" ? config.database.path : ":memory:");
  if (parseDatabaseSetting(path, "path").engine !== "sqlite") {
    throw new SwarmError("INVALID_CONFIG", "path: is a URL; pass a PostgreSQL database as `url`", {
      field: "path",
    });
  }
  return new SqliteEventLog({
    ...sqlite,
    path,
    synchronous: sqlite.synchronous ?? config?.dbSynchronous ?? "NORMAL",
  });
}

let defaultLog: AnyEventLog | undefined;

/** The instance behind the module-level functions, opened on first use. */
export function getDefaultEventLog(): AnyEventLog {
  if (defaultLog === undefined || defaultLog.isClosed) defaultLog = createEventLog();
  return defaultLog;
}

/**
 * Make `log` the instance behind the module-level functions, so that code calling `logEvent`
 * inside the server writes through the server's own connection.
 */
export function setDefaultEventLog(log: AnyEventLog): void {
  defaultLog = log;
}

/** Close the default instance (committing queued writes); the next call opens it again. */
export async function closeDefaultEventLog(): Promise<void> {
  const log = defaultLog;
  defaultLog = undefined;
  await log?.close();
}

// Reads return the answer at once on SQLite and a promise on PostgreSQL: `await` works on both.

export function logEvent(input: EventInput): Promise<StoredEvent> {
  return getDefaultEventLog().logEvent(input);
}

export function logEvents(inputs: readonly EventInput[]): Promise<StoredEvent[]> {
  return getDefaultEventLog().logEvents(inputs);
}

export function getEvent(id: string): Awaitable<StoredEvent | null> {
  return getDefaultEventLog().getEvent(id);
}

export function getTaskEvents(taskId: string): Awaitable<StoredEvent[]> {
  return getDefaultEventLog().getTaskEvents(taskId);
}

export function getAgentEvents(agentId: string): Awaitable<StoredEvent[]> {
  return getDefaultEventLog().getAgentEvents(agentId);
}

export function listEvents(filter: EventFilter = {}): Awaitable<EventPage> {
  return getDefaultEventLog().listEvents(filter);
}

export function getRecentEvents(minutes = 60, limit?: number): Awaitable<StoredEvent[]> {
  return getDefaultEventLog().getRecentEvents(minutes, limit);
}

export function getEventSummary(minutes = 60): Awaitable<EventSummary> {
  return getDefaultEventLog().getEventSummary(minutes);
}

export function getHourlyCounts(range?: {
  since?: string | Date;
  until?: string | Date;
}): Awaitable<HourlyCount[]> {
  return getDefaultEventLog().getHourlyCounts(range);
}

export function pruneEvents(olderThanDays: number): Promise<number> {
  return getDefaultEventLog().pruneEvents(olderThanDays);
}

export function subscribe(listener: EventListener, filter?: SubscriptionFilter): () => void {
  return getDefaultEventLog().subscribe(listener, filter);
}

// The Python-era names.
export {
  logEvent as log_event,
  logEvents as log_events,
  getEvent as get_event,
  getTaskEvents as get_task_events,
  getAgentEvents as get_agent_events,
  listEvents as list_events,
  getRecentEvents as get_recent_events,
  getEventSummary as get_event_summary,
  pruneEvents as prune_events,
};

/**
 * The event log's module API.
 *
 * Two ways in: `createEventLog({ path })` for an instance you own (tests, embedding), or the
 * module-level functions below, bound to a default instance that opens on `SWARM_DB` at the
 * first call (never at import). The snake_case names are the Python-era API, kept for users
 * porting code; they are the same functions.
 */
import { loadConfig } from "../config.js";
import { EventLog, type EventLogOptions } from "../storage/sqlite/event-log.js";
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

export {
  EventLog,
  MIN_RETENTION_DAYS,
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

/** Open an event log you own. `path` defaults to `SWARM_DB` (./data/swarm.db). */
export function createEventLog(options: Partial<EventLogOptions> = {}): EventLog {
  const config = options.path === undefined || options.synchronous === undefined ? loadConfig() : undefined;
  return new EventLog({
    ...options,
    path: options.path ?? config?.dbPath ?? ":memory:",
    synchronous: options.synchronous ?? config?.dbSynchronous ?? "NORMAL",
  });
}

let defaultLog: EventLog | undefined;

/** The instance behind the module-level functions, opened on first use. */
export function getDefaultEventLog(): EventLog {
  if (defaultLog === undefined || defaultLog.isClosed) defaultLog = createEventLog();
  return defaultLog;
}

/**
 * Make `log` the instance behind the module-level functions, so that code calling `logEvent`
 * inside the server writes through the server's own connection.
 */
export function setDefaultEventLog(log: EventLog): void {
  defaultLog = log;
}

/** Close the default instance (flushing queued writes); the next call opens it again. */
export function closeDefaultEventLog(): void {
  defaultLog?.close();
  defaultLog = undefined;
}

export function logEvent(input: EventInput): Promise<StoredEvent> {
  return getDefaultEventLog().logEvent(input);
}

export function logEvents(inputs: readonly EventInput[]): Promise<StoredEvent[]> {
  return getDefaultEventLog().logEvents(inputs);
}

export function getEvent(id: string): StoredEvent | null {
  return getDefaultEventLog().getEvent(id);
}

export function getTaskEvents(taskId: string): StoredEvent[] {
  return getDefaultEventLog().getTaskEvents(taskId);
}

export function getAgentEvents(agentId: string): StoredEvent[] {
  return getDefaultEventLog().getAgentEvents(agentId);
}

export function listEvents(filter: EventFilter = {}): EventPage {
  return getDefaultEventLog().listEvents(filter);
}

export function getRecentEvents(minutes = 60, limit?: number): StoredEvent[] {
  return getDefaultEventLog().getRecentEvents(minutes, limit);
}

export function getEventSummary(minutes = 60): EventSummary {
  return getDefaultEventLog().getEventSummary(minutes);
}

export function getHourlyCounts(range?: { since?: string | Date; until?: string | Date }): HourlyCount[] {
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

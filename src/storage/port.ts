/**
 * The storage port: what the rest of the product asks of a storage engine. Two adapters
 * implement it, side by side in this folder: `sqlite/` (the embedded default, one process per
 * file) and `postgres/` (one database that several replicas can share).
 *
 * Reads return `Awaitable<T>`: SQLite answers on the spot (a better-sqlite3 read is a function
 * call), PostgreSQL answers with a promise (a read is a round trip). Code that must run on both
 * awaits every call, which works on either; code written for SQLite alone may keep reading
 * synchronously from the SQLite adapter's own type.
 */
import type { Schedule } from "../coordinator/schedules.js";
import { SwarmError } from "../errors.js";
import type {
  EventFilter,
  EventInput,
  EventListener,
  EventPage,
  EventSummary,
  HourlyCount,
  MinuteCount,
  PruneReport,
  StoredEvent,
  SubscriptionFilter,
} from "../event-log/types.js";

export type StorageEngine = "sqlite" | "postgres";

export type Awaitable<T> = T | Promise<T>;

/** Writes the storage refused (disk full, read-only, database unreachable), since the first one. */
export interface StorageFailure {
  /** The engine's own code: an SQLite result code, a PostgreSQL SQLSTATE, or a connection error's code. */
  code: string;
  since: string;
}

export interface PruneOptions {
  olderThanDays: number;
  /** How long one delete step may take; chunks are resized to fit. Default 10 ms. */
  targetChunkMs?: number;
}

/** The event log as every engine offers it. */
export interface EventLogPort {
  readonly engine: StorageEngine;
  /** The clock that stamps events; the dashboard reads "now" from it too, so tests can move it. */
  readonly clock: () => Date;
  readonly isClosed: boolean;
  /** Set while writes are failing; cleared by the next commit that stores something. */
  readonly storageFailure: StorageFailure | undefined;

  /** Append one event; calls close together share one commit. Resolves once committed. */
  logEvent(input: EventInput): Promise<StoredEvent>;
  /** Append several events atomically, in order: all are stored or none. */
  logEvents(inputs: readonly EventInput[]): Promise<StoredEvent[]>;
  /** Hear of every committed event (or those matching `filter`), in seq order. Returns the unsubscribe. */
  subscribe(listener: EventListener, filter?: SubscriptionFilter): () => void;

  getEvent(id: string): Awaitable<StoredEvent | null>;
  getTaskEvents(taskId: string): Awaitable<StoredEvent[]>;
  getAgentEvents(agentId: string): Awaitable<StoredEvent[]>;
  listEvents(filter?: EventFilter): Awaitable<EventPage>;
  /** `listEvents` as a server should call it: a long search never holds the event loop. */
  listEventsAsync(filter?: EventFilter): Promise<EventPage>;
  getRecentEvents(minutes?: number, limit?: number): Awaitable<StoredEvent[]>;
  getEventSummary(minutes?: number): Awaitable<EventSummary>;
  /** `getEventSummary` as a server should call it, likewise. */
  getEventSummaryAsync(minutes?: number): Promise<EventSummary>;
  getMinuteCounts(minutes?: number): Awaitable<MinuteCount[]>;
  getHourlyCounts(range?: { since?: string | Date; until?: string | Date }): Awaitable<HourlyCount[]>;
  /** The newest seq, or 0 for an empty log. */
  latestSeq(): Awaitable<number>;
  /** The oldest seq retention kept, or null for an empty log. */
  oldestSeq(): Awaitable<number | null>;
  /** The newest seq the text-search index covers, where the engine indexes apart from the write. */
  searchIndexedThrough(): number | undefined;

  /** Fold every event not yet counted into the hourly rollup; resolves to the seq it reached. */
  rollUp(): Promise<number>;
  pruneEvents(olderThanDays: number): Promise<number>;
  prune(options: PruneOptions): Promise<PruneReport>;
  /** Counters since open, for metrics. */
  writeStats(): { transactions: number; events: number; queued: number };

  /** Write what is queued, then close. Later calls fail with EVENT_LOG_CLOSED. */
  close(): Awaitable<void>;
}

/**
 * Rows the web layer writes in a command's own transaction, as data (not a callback), so each
 * engine writes them its own way: a registered agent's token, a deregistered agent's tokens
 * revoked, the Idempotency-Key of a posted task.
 */
export type ExtraWrite =
  | { kind: "save_token"; token_hash: string; agent_id: string; created_at: string }
  | { kind: "revoke_tokens"; agent_id: string }
  | { kind: "idempotency_key"; key: string; task_id: string; request_digest: string; created_at: string }
  /**
   * A schedule's firing: its next_fire_at moves on from `expected_next_fire_at`, or, when it no
   * longer is that (another process fired it, or it was paused or deleted meanwhile), the write
   * throws SCHEDULE_FIRED_ELSEWHERE and the firing's task is not written either.
   */
  | {
      kind: "schedule_fired";
      schedule_id: string;
      expected_next_fire_at: string;
      next_fire_at: string;
      fired_at: string;
    };

/** An operator's change to a schedule, written with the event that says so. */
export type ScheduleWrite =
  | { kind: "create"; schedule: Schedule }
  | { kind: "set_paused"; schedule_id: string; paused: boolean; next_fire_at: string | null }
  | { kind: "delete"; schedule_id: string };

/** A schedule's row: the task body as JSON, paused as a number on SQLite and a boolean on PostgreSQL. */
export interface ScheduleRow extends Omit<Schedule, "task" | "paused"> {
  task: string;
  paused: number | boolean;
}

export const SCHEDULE_COLUMNS =
  "id, cron, timezone, task, paused, next_fire_at, last_fired_at, fired, created_at";

/** SCHEDULE_FIRED_ELSEWHERE: a firing whose compare-and-set found the schedule moved on. */
export function firedElsewhere(scheduleId: string): SwarmError {
  return new SwarmError(
    "SCHEDULE_FIRED_ELSEWHERE",
    `schedule ${scheduleId} was fired, paused or deleted meanwhile; this firing is dropped`,
    { schedule_id: scheduleId },
  );
}

export function scheduleNotFound(scheduleId: string): SwarmError {
  return new SwarmError("SCHEDULE_NOT_FOUND", `no schedule ${scheduleId}`, { schedule_id: scheduleId });
}

export function toSchedule(row: ScheduleRow): Schedule {
  return {
    ...row,
    task: JSON.parse(row.task) as Schedule["task"],
    paused: row.paused === true || row.paused === 1,
  };
}

/** The task an Idempotency-Key made, and the digest of the body it came with (null from before digests were kept). */
export interface IdempotencyRecord {
  task_id: string;
  request_digest: string | null;
}

/**
 * What the web server keeps beside the coordinator's records: agents' tokens, Idempotency-Keys,
 * dashboard sessions and the server's own secrets. Nothing here is cached in a way that could
 * disagree with the database, so replicas sharing one database agree.
 */
export interface ServerStorePort {
  agentForToken(tokenHash: string): Awaitable<string | undefined>;
  /**
   * Replace every token of the agent by one new token, and append the event that says so, in one
   * transaction; resolves to the event as stored.
   */
  rotateToken(
    agentId: string,
    tokenHash: string,
    event: EventInput & { timestamp: string },
  ): Promise<StoredEvent>;
  idempotencyKey(key: string): Awaitable<IdempotencyRecord | undefined>;
  /** The id of the tool report (`tool.<phase>`) with this call_id the agent already made on the task, if any. */
  toolReportId(
    taskId: string,
    agentId: string,
    eventType: string,
    callId: string,
  ): Awaitable<string | undefined>;
  /** Store a dashboard session (by the hash of its id), first dropping sessions expired by `now`. */
  saveSession(idHash: string, createdAt: string, expiresAt: string, now: string): Awaitable<void>;
  /** When the session ends, if it is still live at `now`. */
  liveSession(idHash: string, now: string): Awaitable<string | undefined>;
  removeSession(idHash: string): Awaitable<void>;
  /** The secret called `name`, made now if it does not exist yet; every replica gets the same one. */
  serverSecret(name: string, now: Date): Awaitable<string>;
  /**
   * Make, pause, resume or delete a schedule and append the event that says so, in one
   * transaction; SCHEDULE_NOT_FOUND (and nothing written) when there is no such schedule.
   */
  writeSchedule(write: ScheduleWrite, event: EventInput & { timestamp: string }): Promise<StoredEvent>;
  getSchedule(id: string): Awaitable<Schedule | undefined>;
  /** Every schedule, oldest first (a swarm has tens, not millions). */
  listSchedules(): Awaitable<Schedule[]>;
  /** Schedules due at `now`, soonest first, at most `limit`. */
  dueSchedules(now: string, limit: number): Awaitable<Schedule[]>;
}

/**
 * What both engines do alike with rows once read: turn them into events and pages, count them
 * into summaries, check a retention and a time window. Pure functions, no engine in sight.
 */
import { SwarmError } from "../errors.js";
import type { EventData, EventPage, EventSummary, StoredEvent } from "./types.js";

/** Retention below a day would let a routine prune erase the evidence of an incident in progress. */
export const MIN_RETENTION_DAYS = 1;

export const DAY_MS = 86_400_000;
export const HOUR_MS = 3_600_000;
/** Summaries up to this window scan the time index; longer ones use the hourly rollup. */
export const SUMMARY_SCAN_MINUTES = 120;

/** An event_log row as either engine returns it (`data` is the stored JSON text). */
export interface EventRow {
  seq: number;
  id: string;
  event_type: string;
  source: string;
  task_id: string | null;
  agent_id: string | null;
  data: string | null;
  timestamp: string;
}

export interface TypeCount {
  event_type: string;
  count: number;
}

export function rowToEvent(row: EventRow): StoredEvent {
  let data: EventData = {};
  if (row.data !== null && row.data !== "") {
    try {
      const parsed: unknown = JSON.parse(row.data);
      // A row written by other tools may hold a non-object; readers still get an object.
      data =
        parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
          ? (parsed as EventData)
          : { value: parsed as EventData[string] };
    } catch {
      data = { raw: row.data };
    }
  }
  return { ...row, event_type: row.event_type, data };
}

export function toPage(rows: EventRow[], limit: number): EventPage {
  const events = rows.map(rowToEvent);
  const last = events.at(-1);
  return { events, next_cursor: events.length === limit && last !== undefined ? last.seq : null };
}

export function summaryOf(minutes: number, since: string, rows: readonly TypeCount[]): EventSummary {
  const counts: Record<string, number> = {};
  let total = 0;
  for (const { event_type, count } of rows) {
    if (count === 0) continue;
    counts[event_type] = (counts[event_type] ?? 0) + count;
    total += count;
  }
  return { minutes, since, total, counts };
}

export function hourOf(timestamp: string): string {
  return `${timestamp.slice(0, 13)}:00:00.000Z`;
}

/** The first whole hour at or after `since`. */
export function firstWholeHour(since: string): string {
  return hourOf(since) === since ? since : new Date(Date.parse(hourOf(since)) + HOUR_MS).toISOString();
}

/** Newest first, as `getRecentEvents` answers on every engine. */
export function newestFirst(a: StoredEvent, b: StoredEvent): number {
  return a.timestamp === b.timestamp ? b.seq - a.seq : a.timestamp < b.timestamp ? 1 : -1;
}

/** The start of a window of `minutes` ending at `now`, refusing a window that is not one. */
export function windowStart(now: Date, minutes: number): string {
  if (typeof minutes !== "number" || !Number.isFinite(minutes) || minutes <= 0) {
    throw new SwarmError("INVALID_FILTER", "minutes: must be a positive number", { field: "minutes" });
  }
  return new Date(now.getTime() - minutes * 60_000).toISOString();
}

/** The refusal for a retention that is missing or too short; undefined when it is fine. */
export function retentionRefusal(olderThanDays: unknown): SwarmError | undefined {
  if (olderThanDays === undefined) {
    // The Python module pruned 30 days when called bare; deleting history is not done on a guess.
    return new SwarmError(
      "RETENTION_TOO_SHORT",
      `olderThanDays: is required: how many days of events to keep, at least ${MIN_RETENTION_DAYS} (SWARM_RETENTION_DAYS is the server's, 30 by default)`,
      { field: "olderThanDays" },
    );
  }
  if (
    typeof olderThanDays !== "number" ||
    !Number.isFinite(olderThanDays) ||
    olderThanDays < MIN_RETENTION_DAYS
  ) {
    return new SwarmError(
      "RETENTION_TOO_SHORT",
      `olderThanDays: must be at least ${MIN_RETENTION_DAYS} day, got ${typeof olderThanDays === "number" ? olderThanDays : typeof olderThanDays}`,
      { field: "olderThanDays" },
    );
  }
  return undefined;
}

/**
 * The next chunk size: aim for the target, growing by at most half and shrinking by at most half
 * in one step, so that one slow chunk (a cold cache, a checkpoint) cannot push the next far past
 * the budget.
 */
export function resizeChunk(
  current: number,
  elapsedMs: number,
  targetMs: number,
  bounds: { min: number; max: number },
): number {
  const ratio = Math.min(1.5, Math.max(0.5, targetMs / Math.max(elapsedMs, 0.1)));
  return Math.round(Math.min(bounds.max, Math.max(bounds.min, current * ratio)));
}

import type { EventTypeName } from "./event-types.js";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The payload of an event: always a JSON object on the way out, `{}` when none was given. */
export type EventData = { [key: string]: JsonValue };

/** What a caller hands to `logEvent`. */
export interface EventInput {
  event_type: EventTypeName;
  source: string;
  task_id?: string | null;
  agent_id?: string | null;
  /** Any JSON-able object; validated at run time, so typed interfaces are accepted as they are. */
  data?: object;
  /** A UUID chosen by the caller (the coordinator passes its own); one is generated otherwise. */
  id?: string;
  /** When it happened; defaults to the log's clock at the call. */
  timestamp?: string | Date;
}

/** One row of `event_log`, as every reader gets it back. */
export interface StoredEvent {
  seq: number;
  id: string;
  event_type: EventTypeName;
  source: string;
  task_id: string | null;
  agent_id: string | null;
  data: EventData;
  timestamp: string;
}

export type SortOrder = "asc" | "desc";

export interface EventFilter {
  /** One type or several (matched with OR); combined with every other filter by AND. */
  types?: readonly string[] | string;
  /** The Python-era name of `types`, for ported code; giving both is refused. */
  event_type?: readonly string[] | string;
  source?: string;
  task_id?: string;
  agent_id?: string;
  /** Text that must occur in the event's data (as JSON), matched case-insensitively for ASCII. */
  text?: string;
  /** Inclusive lower bound on `timestamp` (ISO-8601 or Date). */
  since?: string | Date;
  /** Exclusive upper bound on `timestamp`. */
  until?: string | Date;
  /** Only events with `seq` greater than this: the cursor for reading forwards. */
  after_seq?: number;
  /** Only events with `seq` less than this: the cursor for reading backwards. */
  before_seq?: number;
  /** 1 to 1000; default 100. */
  limit?: number;
  /** By `seq`; default `asc`. */
  order?: SortOrder;
}

export interface EventPage {
  events: StoredEvent[];
  /** Pass as `after_seq` (asc) or `before_seq` (desc) for the next page; null when this was the last. */
  next_cursor: number | null;
}

export interface EventSummary {
  minutes: number;
  since: string;
  total: number;
  counts: Record<string, number>;
}

export interface MinuteCount {
  /** The minute, `YYYY-MM-DDTHH:MM` (UTC). */
  minute: string;
  event_type: string;
  count: number;
}

export interface HourlyCount {
  /** The hour's start, `YYYY-MM-DDTHH:00:00.000Z`. */
  hour: string;
  event_type: string;
  count: number;
}

export interface PruneReport {
  cutoff: string;
  deleted: number;
  chunks: number;
  /** The longest single delete transaction: how long pruning held the event loop at once. */
  longest_delete_ms: number;
  /** The longest single incremental_vacuum step. */
  longest_vacuum_ms: number;
  freed_pages: number;
  duration_ms: number;
}

/** What a subscriber can narrow its feed to; every given field must match. */
export interface SubscriptionFilter {
  types?: readonly string[] | string;
  /** The Python-era name of `types`; giving both is refused. */
  event_type?: readonly string[] | string;
  source?: string;
  task_id?: string;
  agent_id?: string;
}

export type EventListener = (event: StoredEvent) => void;

/**
 * Input checks for the event log. Everything is checked before a transaction opens, so a
 * rejected event never leaves a row behind; each refusal names the field at fault.
 */
import { newId as timeOrderedUuid } from "../ids.js";
import { SwarmError, type ErrorCode } from "../errors.js";
import { isValidEventType, MAX_EVENT_TYPE_LENGTH } from "./event-types.js";
import type { EventData, EventFilter, EventInput, SortOrder, SubscriptionFilter } from "./types.js";

export const EVENT_LIMITS = {
  /** Serialized `data`, in UTF-8 bytes. */
  maxDataBytes: 64 * 1024,
  /** Nesting depth of `data`. */
  maxDataDepth: 32,
  /** `source`, `task_id` and `agent_id`, in characters. */
  maxIdLength: 200,
  maxEventTypeLength: MAX_EVENT_TYPE_LENGTH,
  /** Largest page a list query returns. */
  maxPageSize: 1000,
  defaultPageSize: 100,
} as const;

/** A validated event, serialized and ready to insert. */
export interface PreparedEvent {
  id: string;
  event_type: string;
  source: string;
  task_id: string | null;
  agent_id: string | null;
  data: EventData;
  dataJson: string;
  timestamp: string;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO_TIMESTAMP_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;
// C0 controls and DEL would corrupt logs and CSV exports; ids have no use for them.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

function refuse(code: ErrorCode, field: string, message: string): never {
  throw new SwarmError(code, `${field}: ${message}`, { field });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object") return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return `a ${value.constructor?.name ?? "object"}`;
  return `a ${typeof value}`;
}

export function checkIdentifier(code: ErrorCode, field: string, value: unknown): string {
  if (typeof value !== "string") refuse(code, field, `must be a string, got ${describe(value)}`);
  if (value.length === 0) refuse(code, field, "must not be empty");
  if (value.length > EVENT_LIMITS.maxIdLength) {
    refuse(code, field, `must be at most ${EVENT_LIMITS.maxIdLength} characters, got ${value.length}`);
  }
  if (!value.isWellFormed() || CONTROL_CHARACTERS.test(value)) {
    refuse(code, field, "must be well-formed text without control characters");
  }
  return value;
}

function checkOptionalIdentifier(field: string, value: unknown): string | null {
  return value === undefined || value === null ? null : checkIdentifier("INVALID_EVENT", field, value);
}

/** Any ISO-8601 instant or Date, normalized to UTC with milliseconds so that text order is time order. */
export function checkTimestamp(code: ErrorCode, field: string, value: unknown): string {
  let date: Date | undefined;
  if (value instanceof Date) date = value;
  else if (typeof value === "string" && ISO_TIMESTAMP_PATTERN.test(value)) date = new Date(value);
  if (date === undefined || Number.isNaN(date.getTime())) {
    refuse(code, field, "must be an ISO-8601 timestamp such as 2026-01-31T12:00:00.000Z");
  }
  return date.toISOString();
}

function checkJsonValue(value: unknown, field: string, depth: number, ancestors: Set<object>): void {
  if (value === null || typeof value === "string" || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) refuse("INVALID_EVENT", field, `${value} is not representable in JSON`);
    return;
  }
  if (typeof value !== "object") refuse("INVALID_EVENT", field, `${describe(value)} is not JSON`);
  if (depth > EVENT_LIMITS.maxDataDepth) {
    refuse("INVALID_EVENT", field, `nested deeper than ${EVENT_LIMITS.maxDataDepth} levels`);
  }
  if (ancestors.has(value)) refuse("INVALID_EVENT", field, "refers back to itself (circular)");
  ancestors.add(value);
  if (Array.isArray(value)) {
    value.forEach((item, index) => {
      if (item === undefined) refuse("INVALID_EVENT", `${field}[${index}]`, "undefined is not JSON");
      checkJsonValue(item, `${field}[${index}]`, depth + 1, ancestors);
    });
  } else if (isPlainObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      // An undefined property is an absent one, exactly as JSON.stringify treats it.
      if (item !== undefined) checkJsonValue(item, `${field}.${key}`, depth + 1, ancestors);
    }
  } else {
    refuse("INVALID_EVENT", field, `${describe(value)} is not plain JSON; convert it first`);
  }
  ancestors.delete(value);
}

function checkData(value: unknown, field: string): { data: EventData; dataJson: string } {
  if (value === undefined || value === null) return { data: {}, dataJson: "{}" };
  if (!isPlainObject(value)) refuse("INVALID_EVENT", field, `must be a JSON object, got ${describe(value)}`);
  checkJsonValue(value, field, 1, new Set());
  const dataJson = JSON.stringify(value);
  const bytes = Buffer.byteLength(dataJson, "utf8");
  if (bytes > EVENT_LIMITS.maxDataBytes) {
    refuse("INVALID_EVENT", field, `is ${bytes} bytes as JSON; the limit is ${EVENT_LIMITS.maxDataBytes}`);
  }
  // Parse back so the caller's copy and the stored copy are the same value (undefined keys gone).
  return { data: JSON.parse(dataJson) as EventData, dataJson };
}

/**
 * Check one event and fill in what the log supplies (id, timestamp).
 * `prefix` locates the event inside a batch in error messages, e.g. `[3].`.
 */
export function prepareEvent(input: unknown, now: Date, prefix = ""): PreparedEvent {
  if (!isPlainObject(input)) {
    refuse("INVALID_EVENT", prefix === "" ? "event" : prefix.slice(0, -1), "must be an object");
  }
  const event = input as Partial<Record<keyof EventInput, unknown>>;
  if (event.event_type === undefined) refuse("INVALID_EVENT", `${prefix}event_type`, "is required");
  if (!isValidEventType(event.event_type)) {
    refuse(
      "INVALID_EVENT",
      `${prefix}event_type`,
      `${JSON.stringify(event.event_type)} is neither a known type nor a dotted lower-case name like "deploy.finished"`,
    );
  }
  if (event.source === undefined) refuse("INVALID_EVENT", `${prefix}source`, "is required");
  const source = checkIdentifier("INVALID_EVENT", `${prefix}source`, event.source);
  let id: string;
  // Time-ordered (v7) ids land at the end of the id index instead of on a random page of it,
  // which triples insert throughput once the log holds a few hundred thousand events.
  if (event.id === undefined) id = timeOrderedUuid();
  else if (typeof event.id === "string" && UUID_PATTERN.test(event.id)) id = event.id.toLowerCase();
  else refuse("INVALID_EVENT", `${prefix}id`, "must be a UUID");
  const { data, dataJson } = checkData(event.data, `${prefix}data`);
  return {
    id,
    event_type: event.event_type,
    source,
    task_id: checkOptionalIdentifier(`${prefix}task_id`, event.task_id),
    agent_id: checkOptionalIdentifier(`${prefix}agent_id`, event.agent_id),
    data,
    dataJson,
    timestamp:
      event.timestamp === undefined
        ? now.toISOString()
        : checkTimestamp("INVALID_EVENT", `${prefix}timestamp`, event.timestamp),
  };
}

/** A filter with every field checked and defaulted; what the query builder works from. */
export interface NormalizedFilter {
  types: string[];
  source: string | undefined;
  task_id: string | undefined;
  agent_id: string | undefined;
  text: string | undefined;
  since: string | undefined;
  until: string | undefined;
  after_seq: number | undefined;
  before_seq: number | undefined;
  limit: number;
  order: SortOrder;
}

function checkSeq(field: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    refuse("INVALID_FILTER", field, "must be a non-negative integer");
  }
  return value;
}

function checkText(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length === 0 || value.length > 200 || !value.isWellFormed()) {
    refuse("INVALID_FILTER", "text", "must be 1 to 200 characters of well-formed text");
  }
  return value;
}

/**
 * The keys a list filter takes. Anything else is refused by name: a filter the log does not
 * know would otherwise be ignored, and the caller would get every event as if it matched.
 */
const FILTER_KEYS = new Set<string>([
  "types",
  "event_type",
  "source",
  "task_id",
  "agent_id",
  "text",
  "since",
  "until",
  "after_seq",
  "before_seq",
  "limit",
  "order",
]);

/** What a caller most likely meant by a key that is not a filter: other APIs' names for ours. */
const FILTER_KEY_HINTS: Record<string, string> = {
  offset: "pages go by cursor: pass next_cursor back as after_seq (order asc) or before_seq (order desc)",
  type: 'the filter by event type is "types" (or "event_type")',
  event_types: 'the filter by event type is "types" (or "event_type")',
  q: 'the text filter is "text"',
  start: 'the time filters are "since" (inclusive) and "until" (exclusive)',
  end: 'the time filters are "since" (inclusive) and "until" (exclusive)',
  taskId: 'the filter is "task_id"',
  agentId: 'the filter is "agent_id"',
};

/** Refuse the first key of `filter` that is not in `known`, naming it and what is. */
function refuseUnknownKeys(filter: object, known: ReadonlySet<string>): void {
  for (const key of Object.keys(filter)) {
    if (known.has(key)) continue;
    const hint = Object.hasOwn(FILTER_KEY_HINTS, key) ? FILTER_KEY_HINTS[key] : undefined;
    refuse(
      "INVALID_FILTER",
      key,
      `is not a filter${hint === undefined ? "" : `; ${hint}`} (the filters are ${[...known].join(", ")})`,
    );
  }
}

/**
 * The event types a filter asks for, from `types` or its Python-era name `event_type` (one
 * type, or several). Both at once are refused: they could mean "either" or "both", and a guess
 * would answer the wrong question without saying so.
 */
function checkTypes(filter: { types?: unknown; event_type?: unknown }): string[] {
  if (filter.types !== undefined && filter.event_type !== undefined) {
    refuse("INVALID_FILTER", "event_type", 'is the Python-era name of "types"; give one of them, not both');
  }
  const field = filter.event_type !== undefined ? "event_type" : "types";
  const given = filter.event_type ?? filter.types;
  const rawTypes: unknown = given === undefined ? [] : typeof given === "string" ? [given] : given;
  if (!Array.isArray(rawTypes)) refuse("INVALID_FILTER", field, "must be a string or an array of strings");
  const types = [...new Set(rawTypes as unknown[])];
  return types.map((type, index) => {
    if (!isValidEventType(type)) {
      refuse("INVALID_FILTER", `${field}[${index}]`, `${JSON.stringify(type)} is not a valid event type`);
    }
    return type;
  });
}

export function normalizeFilter(filter: EventFilter = {}): NormalizedFilter {
  const untrusted: unknown = filter;
  if (!isPlainObject(untrusted)) refuse("INVALID_FILTER", "filter", "must be an object");
  refuseUnknownKeys(untrusted, FILTER_KEYS);
  const checkedTypes = checkTypes(filter);
  const limit = filter.limit ?? EVENT_LIMITS.defaultPageSize;
  if (!Number.isInteger(limit) || limit < 1 || limit > EVENT_LIMITS.maxPageSize) {
    refuse("INVALID_FILTER", "limit", `must be an integer from 1 to ${EVENT_LIMITS.maxPageSize}`);
  }
  const order = filter.order ?? "asc";
  if (order !== "asc" && order !== "desc") refuse("INVALID_FILTER", "order", 'must be "asc" or "desc"');
  const optionalId = (field: "source" | "task_id" | "agent_id") =>
    filter[field] === undefined ? undefined : checkIdentifier("INVALID_FILTER", field, filter[field]);
  const optionalTime = (field: "since" | "until") =>
    filter[field] === undefined ? undefined : checkTimestamp("INVALID_FILTER", field, filter[field]);
  return {
    types: checkedTypes,
    source: optionalId("source"),
    task_id: optionalId("task_id"),
    agent_id: optionalId("agent_id"),
    text: checkText(filter.text),
    since: optionalTime("since"),
    until: optionalTime("until"),
    after_seq: checkSeq("after_seq", filter.after_seq),
    before_seq: checkSeq("before_seq", filter.before_seq),
    limit,
    order,
  };
}

const SUBSCRIPTION_KEYS = new Set<string>(["types", "event_type", "source", "task_id", "agent_id"]);

/** A subscriber's filter, checked like a list filter: unknown keys refused, `event_type` folded into `types`. */
export function normalizeSubscriptionFilter(
  filter: SubscriptionFilter | undefined,
): SubscriptionFilter | undefined {
  if (filter === undefined) return undefined;
  const untrusted: unknown = filter;
  if (!isPlainObject(untrusted)) refuse("INVALID_FILTER", "filter", "must be an object");
  refuseUnknownKeys(untrusted, SUBSCRIPTION_KEYS);
  const types = checkTypes(filter);
  const optionalId = (field: "source" | "task_id" | "agent_id") =>
    filter[field] === undefined ? {} : { [field]: checkIdentifier("INVALID_FILTER", field, filter[field]) };
  return {
    ...(types.length > 0 ? { types } : {}),
    ...optionalId("source"),
    ...optionalId("task_id"),
    ...optionalId("agent_id"),
  };
}

const RANGE_KEYS = new Set<string>(["since", "until"]);

/** A time range (`getHourlyCounts`): `since` and `until` only. */
export function checkRange(range: unknown): { since?: string | Date; until?: string | Date } {
  if (!isPlainObject(range)) refuse("INVALID_FILTER", "range", "must be an object with since and/or until");
  refuseUnknownKeys(range, RANGE_KEYS);
  return range;
}

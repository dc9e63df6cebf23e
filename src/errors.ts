/**
 * The one table of errors. Every error the product can answer with has a stable code,
 * a human title and the HTTP status the web layer maps it to. Callers throw `SwarmError`
 * with a code from this table; nothing else decides a status.
 */
export const ERROR_TABLE = {
  // The HTTP layer's own: malformed requests, credentials, limits.
  VALIDATION_FAILED: { status: 400, title: "The request does not match its schema" },
  INVALID_BODY: { status: 400, title: "The body is not valid JSON" },
  UNAUTHORIZED: { status: 401, title: "Missing or unknown credentials" },
  FORBIDDEN: { status: 403, title: "These credentials may not do that" },
  CROSS_SITE_REQUEST: { status: 403, title: "The request came from another site's page" },
  NOT_FOUND: { status: 404, title: "No such resource" },
  BODY_TOO_LARGE: { status: 413, title: "The body is too large" },
  URI_TOO_LONG: { status: 414, title: "The URL is too long" },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, title: "The body must be JSON" },
  HOST_NOT_ALLOWED: { status: 421, title: "The server does not answer to that host name" },
  IDEMPOTENCY_KEY_REUSED: {
    status: 422,
    title: "The idempotency key or call_id was already used with a different request",
  },
  RATE_LIMITED: { status: 429, title: "Too many requests" },
  AGENT_HOURLY_BYTES_EXCEEDED: {
    status: 429,
    title: "The agent's reports stored as many bytes this hour as SWARM_MAX_AGENT_BYTES_PER_HOUR allows",
  },
  INTERNAL: { status: 500, title: "An internal error; it has been logged" },
  INVALID_EVENT: { status: 400, title: "The event is invalid" },
  INVALID_FILTER: { status: 400, title: "A filter or query parameter is unknown or invalid" },
  RETENTION_TOO_SHORT: { status: 400, title: "Retention is shorter than the allowed minimum" },
  DUPLICATE_EVENT_ID: { status: 409, title: "An event with this id already exists" },
  EVENT_LOG_CLOSED: { status: 503, title: "The event log is closed" },
  STORAGE_UNAVAILABLE: { status: 503, title: "The database refused the write" },
  SCHEMA_TOO_NEW: { status: 500, title: "The database was written by a newer version" },
  INVALID_CONFIG: { status: 500, title: "The configuration is invalid" },
  DATABASE_IN_USE: { status: 500, title: "Another server holds the database file" },
  // The coordinator's refusals: illegal moves are coded, never silent overwrites.
  INVALID_COMMAND: { status: 400, title: "The command is invalid" },
  BID_OUT_OF_RANGE: { status: 400, title: "The bid is outside the allowed range" },
  NOT_ASSIGNED_AGENT: { status: 403, title: "The task is not assigned to this agent" },
  AGENT_NOT_FOUND: { status: 404, title: "No such agent" },
  TASK_NOT_FOUND: { status: 404, title: "No such task" },
  AGENT_LEFT: { status: 409, title: "The agent has deregistered" },
  AGENT_OFFLINE: { status: 409, title: "The agent is offline" },
  AGENT_NOT_ELIGIBLE: { status: 409, title: "The agent lacks a required capability" },
  AGENT_AT_CAPACITY: { status: 409, title: "The agent holds as many tasks as it may" },
  TASK_NOT_BIDDING: { status: 409, title: "The task is not open for bids" },
  AUCTION_CLOSED: { status: 409, title: "The auction has closed" },
  TASK_NOT_ASSIGNED: { status: 409, title: "The task is not waiting to start" },
  TASK_NOT_RUNNING: { status: 409, title: "The task is not running" },
  TASK_NOT_ACTIVE: { status: 409, title: "The task is not assigned or running" },
  TASK_FINAL: { status: 409, title: "The task has already ended" },
  TASK_NOT_RETRYABLE: { status: 409, title: "Only a failed or cancelled task can be run again" },
  TASK_ALREADY_RETRIED: { status: 409, title: "The task has already been run again" },
  DEPENDENCY_FAILED: { status: 409, title: "A task this one depends on failed or was cancelled" },
  SCHEDULE_NOT_FOUND: { status: 404, title: "No such schedule" },
  SCHEDULE_FIRED_ELSEWHERE: { status: 409, title: "The schedule's firing was made by another process" },
  TASK_EVENTS_CAP_REACHED: {
    status: 409,
    title: "The task holds as many agent-reported events as SWARM_MAX_EVENTS_PER_TASK allows",
  },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export interface ErrorDetails {
  /** The input field at fault, as a path such as `data.items[2]` or `[3].event_type`. */
  field?: string;
  [key: string]: unknown;
}

export class SwarmError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, message: string, details?: ErrorDetails, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SwarmError";
    this.code = code;
    this.status = ERROR_TABLE[code].status;
    this.details = details;
  }
}

export function isSwarmError(error: unknown, code?: ErrorCode): error is SwarmError {
  return error instanceof SwarmError && (code === undefined || error.code === code);
}

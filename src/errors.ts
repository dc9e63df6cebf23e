/**
 * The one table of errors. Every error the product can answer with has a stable code,
 * a human title and the HTTP status the web layer maps it to. Callers throw `SwarmError`
 * with a code from this table; nothing else decides a status.
 */
export const ERROR_TABLE = {
  INVALID_EVENT: { status: 400, title: "The event is invalid" },
  INVALID_FILTER: { status: 400, title: "The event filter is invalid" },
  RETENTION_TOO_SHORT: { status: 400, title: "Retention is shorter than the allowed minimum" },
  DUPLICATE_EVENT_ID: { status: 409, title: "An event with this id already exists" },
  EVENT_LOG_CLOSED: { status: 503, title: "The event log is closed" },
  STORAGE_UNAVAILABLE: { status: 503, title: "The database refused the write" },
  SCHEMA_TOO_NEW: { status: 500, title: "The database was written by a newer version" },
  INVALID_CONFIG: { status: 500, title: "The configuration is invalid" },
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

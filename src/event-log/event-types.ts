/**
 * The event types the product itself writes. Users may log their own dotted names too
 * (`deploy.finished`, `billing.invoice_sent`); readers must cope with types they do not know.
 */
export const EventType = {
  TASK_CREATED: "task.created",
  TASK_BIDDING: "task.bidding",
  TASK_ASSIGNED: "task.assigned",
  TASK_STARTED: "task.started",
  TASK_COMPLETED: "task.completed",
  TASK_FAILED: "task.failed",
  TASK_CANCELLED: "task.cancelled",
  /** The assigned agent handed the task back unfinished; a `task.bidding` for the next round follows. */
  TASK_RELEASED: "task.released",
  /** The winner did not start within the task's `ack_ms`: the award passes to the next bid, or a new round. */
  TASK_AWARD_EXPIRED: "task.award_expired",
  /** A running task passed its `timeout_ms`: the attempt failed; a retry or `task.failed` follows. */
  TASK_TIMED_OUT: "task.timed_out",
  /** An attempt failed (reported by its agent) with attempts left: a retry follows. */
  TASK_ATTEMPT_FAILED: "task.attempt_failed",
  /** A failed attempt's retry waits out its backoff: `task.bidding` follows at `opens_at`. */
  TASK_RETRY_SCHEDULED: "task.retry_scheduled",
  /** The operator re-ran a failed or cancelled task: `data.retry_task_id` names the new task. */
  TASK_RETRIED: "task.retried",
  /** A schedule was made, paused, resumed or deleted by the operator. */
  SCHEDULE_CREATED: "schedule.created",
  SCHEDULE_PAUSED: "schedule.paused",
  SCHEDULE_RESUMED: "schedule.resumed",
  SCHEDULE_DELETED: "schedule.deleted",
  /** A schedule fired: `task_id` is the task it posted, `data.scheduled_for` the time it stands for. */
  SCHEDULE_FIRED: "schedule.fired",
  AGENT_JOINED: "agent.joined",
  AGENT_LEFT: "agent.left",
  /** The agent's token was replaced; the old one no longer works. Written by the API, not the core. */
  AGENT_TOKEN_ROTATED: "agent.token_rotated",
  AGENT_STATUS_CHANGED: "agent.status_changed",
  BID_SUBMITTED: "bid.submitted",
  AUCTION_CLOSED: "auction.closed",
  TOOL_CALLED: "tool.called",
  TOOL_COMPLETED: "tool.completed",
  TOOL_FAILED: "tool.failed",
  SYSTEM_INFO: "system.info",
  SYSTEM_WARNING: "system.warning",
  SYSTEM_ERROR: "system.error",
} as const;

export type KnownEventType = (typeof EventType)[keyof typeof EventType];

/** A known type, or any custom dotted name; `string & {}` keeps editor completion for the known ones. */
export type EventTypeName = KnownEventType | (string & {});

export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = Object.values(EventType);

const knownSet = new Set<string>(KNOWN_EVENT_TYPES);

/** Lower-case dotted words, at least two of them: `noun.past_verb`, `app.deploy.finished`. */
export const EVENT_TYPE_PATTERN = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;

export const MAX_EVENT_TYPE_LENGTH = 100;

export function isKnownEventType(name: string): name is KnownEventType {
  return knownSet.has(name);
}

export function isValidEventType(name: unknown): name is EventTypeName {
  return (
    typeof name === "string" &&
    name.length <= MAX_EVENT_TYPE_LENGTH &&
    (knownSet.has(name) || EVENT_TYPE_PATTERN.test(name))
  );
}

/**
 * Schedules, the pure part: what a schedule is, the checks on what an operator asks for, and
 * when it fires. A firing is a PostTask carrying the schedule's id, written with a compare-and-set
 * of the schedule's `next_fire_at` in the same transaction (see Scheduler), so each firing posts
 * exactly one task whichever process, or how many, saw it due.
 *
 * `cron` takes the standard five fields (minute hour day-of-month month day-of-week) and
 * node-cron's six with seconds first, plus the usual aliases (`@daily`, `MON-FRI`); it is parsed
 * by cron-parser, in the schedule's IANA time zone (default UTC).
 */
import { CronExpressionParser } from "cron-parser";
import { checkTaskSpec, type TaskSpec } from "./decide.js";
import type { CoordinatorRules } from "./types.js";

export interface Schedule {
  id: string;
  cron: string;
  timezone: string;
  /** The body of the task each firing posts. */
  task: TaskSpec;
  paused: boolean;
  /** When it fires next; null while paused. */
  next_fire_at: string | null;
  last_fired_at: string | null;
  /** Firings so far. */
  fired: number;
  created_at: string;
}

/** A firing as the scheduler makes it: the time it stands for and the schedule's next one. */
export interface Firing {
  scheduled_for: string;
  next_fire_at: string;
  /** Firings that fell due while nobody could fire them (the coordinator was down): skipped. */
  missed: number;
}

/** What an operator's POST /api/schedules is, checked: its fields are named as in the body. */
export class ScheduleInputError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

const MAX_CRON_LENGTH = 200;
/** Missed firings counted at most: past it, the count says "at least". */
const MAX_MISSED_COUNTED = 1000;

function nextAfter(cron: string, timezone: string, afterMs: number): Date {
  return CronExpressionParser.parse(cron, { currentDate: new Date(afterMs), tz: timezone })
    .next()
    .toDate();
}

/** The cron expression and time zone, checked by parsing them (a bad one throws naming its field). */
export function checkCron(cron: unknown, timezone: unknown): { cron: string; timezone: string } {
  if (typeof cron !== "string" || cron.trim() === "")
    throw new ScheduleInputError("cron", "must be a cron expression");
  if (cron.length > MAX_CRON_LENGTH)
    throw new ScheduleInputError("cron", `must be at most ${MAX_CRON_LENGTH} characters`);
  const zone = timezone === undefined ? "UTC" : timezone;
  if (typeof zone !== "string" || !isTimeZone(zone))
    throw new ScheduleInputError("timezone", 'must be an IANA time zone such as "UTC" or "Europe/Paris"');
  const fields = cron.trim().split(/\s+/).length;
  if (!cron.trim().startsWith("@") && fields !== 5 && fields !== 6) {
    throw new ScheduleInputError(
      "cron",
      `must have 5 fields (minute hour day month weekday) or 6 (seconds first), not ${fields}`,
    );
  }
  try {
    nextAfter(cron.trim(), zone, Date.now());
  } catch (error) {
    throw new ScheduleInputError(
      "cron",
      `is not valid: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  return { cron: cron.trim(), timezone: zone };
}

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/**
 * The schedule an operator asks for, checked whole: the cron, the time zone, and the task body
 * as a post would be (its fields named `task.…`). A scheduled task may not depend on tasks (each
 * firing would wait on the same ones) nor name an agent (it may be gone by then).
 */
export function checkScheduleInput(
  body: { cron?: unknown; timezone?: unknown; task?: unknown },
  rules: CoordinatorRules,
): { cron: string; timezone: string; task: TaskSpec } {
  const { cron, timezone } = checkCron(body.cron, body.timezone);
  const task = body.task;
  if (typeof task !== "object" || task === null || Array.isArray(task))
    throw new ScheduleInputError("task", "must be the body of a task, as POST /api/tasks takes");
  for (const field of ["depends_on", "assign_to"])
    if (field in task) throw new ScheduleInputError(`task.${field}`, "is not taken by a schedule");
  const refused = checkTaskSpec(task as Record<string, unknown>, rules);
  if ("field" in refused) throw new ScheduleInputError(`task.${refused.field}`, refused.message);
  return { cron, timezone, task: refused.spec };
}

/** The first firing of a schedule made (or resumed) at `nowMs`. */
export function firstFiring(cron: string, timezone: string, nowMs: number): string {
  return nextAfter(cron, timezone, nowMs).toISOString();
}

/**
 * The firing of a schedule due at `nowMs`, or undefined when it is not due (or paused). A
 * firing stands for the time it was due; the next one is the first after now, so firings missed
 * while the coordinator was down are made up once, not one by one.
 */
export function firingAt(schedule: Schedule, nowMs: number): Firing | undefined {
  if (schedule.paused || schedule.next_fire_at === null) return undefined;
  const dueMs = Date.parse(schedule.next_fire_at);
  if (dueMs > nowMs) return undefined;
  let missed = 0;
  let next = nextAfter(schedule.cron, schedule.timezone, dueMs);
  while (next.getTime() <= nowMs && missed < MAX_MISSED_COUNTED) {
    missed += 1;
    next = nextAfter(schedule.cron, schedule.timezone, next.getTime());
  }
  if (next.getTime() <= nowMs) next = nextAfter(schedule.cron, schedule.timezone, nowMs);
  return { scheduled_for: schedule.next_fire_at, next_fire_at: next.toISOString(), missed };
}

/**
 * The retention of finished work, as both shells run it: its options checked and turned into
 * cutoffs the same way, whatever the engine deleting the rows.
 */
import { SwarmError } from "../errors.js";
import { MIN_RETENTION_DAYS } from "../event-log/rows.js";
import type { FinishedWorkRetention } from "./port.js";

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/** The cutoffs of a run at `nowMs`: tasks and left agents ended before `task`, keys first used before `key`. */
export function finishedWorkCutoffs(
  options: FinishedWorkRetention,
  nowMs: number,
): { task: string; key: string } {
  const { taskRetentionDays, idempotencyKeyHours } = options;
  if (!Number.isFinite(taskRetentionDays) || taskRetentionDays < MIN_RETENTION_DAYS) {
    throw new SwarmError(
      "RETENTION_TOO_SHORT",
      `taskRetentionDays: must be at least ${MIN_RETENTION_DAYS} day, got ${String(taskRetentionDays)}`,
      { field: "taskRetentionDays" },
    );
  }
  if (!Number.isFinite(idempotencyKeyHours) || idempotencyKeyHours < 1) {
    throw new SwarmError(
      "RETENTION_TOO_SHORT",
      `idempotencyKeyHours: must be at least 1 hour, got ${String(idempotencyKeyHours)}`,
      { field: "idempotencyKeyHours" },
    );
  }
  return {
    task: new Date(nowMs - taskRetentionDays * DAY_MS).toISOString(),
    key: new Date(nowMs - idempotencyKeyHours * HOUR_MS).toISOString(),
  };
}

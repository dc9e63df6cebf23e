/**
 * Scheduled retention: node-cron runs a chunked prune on `SWARM_PRUNE_CRON` (first the
 * coordinator's finished work when it is given, then the events), logs what it removed to pino in
 * one line, and records one `system.info` event so operators see it in the feed. A
 * second job folds new events into the hourly rollup every few minutes, so that reading the
 * long-term counts never has to aggregate more than a few minutes of raw events.
 */
import cron from "node-cron";
import { SwarmError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { EventLogPort } from "../storage/port.js";
import { EventType } from "./event-types.js";
import type { PruneReport } from "./types.js";

/** What pruning the coordinator's finished work reports: counts and cutoffs, by name. */
export type FinishedWorkCounts = { [key: string]: string | number };

export interface RetentionOptions {
  retentionDays: number;
  logger: Logger;
  /**
   * Pruned first on the same schedule: the coordinator's finished work (tasks, bids, agents that
   * left, Idempotency-Keys), whose report joins the events' under `finished_work`. Before the
   * events, so that the one vacuum after them returns the pages both freed.
   */
  pruneFinishedWork?: () => Promise<FinishedWorkCounts>;
  /**
   * Whether this process runs the scheduled jobs when they come due: among replicas on one
   * database, only the holder of the maintenance lease does, so they never run on all at once.
   * A run that finds no holder (a failover in progress) is skipped; the next one catches up,
   * since both jobs work from cutoffs and cursors, not from what the last run did. Default: always.
   */
  shouldRun?: () => boolean;
}

export interface RetentionReport extends PruneReport {
  /** Absent when no finished work was given, or when pruning it failed (that is logged apart). */
  finished_work?: FinishedWorkCounts;
}

export async function runRetention(
  eventLog: EventLogPort,
  { retentionDays, logger, pruneFinishedWork }: RetentionOptions,
): Promise<RetentionReport> {
  let finishedWork: FinishedWorkCounts | undefined;
  try {
    finishedWork = await pruneFinishedWork?.();
  } catch (error) {
    // The events are still pruned: one failing part must not let the whole log grow.
    logger.error({ err: error }, "pruning finished work failed; pruning the events all the same");
  }
  const report: RetentionReport = {
    ...(await eventLog.prune({ olderThanDays: retentionDays })),
    ...(finishedWork === undefined ? {} : { finished_work: finishedWork }),
  };
  logger.info({ retention_days: retentionDays, ...report }, "event log pruned");
  await eventLog.logEvent({
    event_type: EventType.SYSTEM_INFO,
    source: "retention",
    data: { action: "prune", retention_days: retentionDays, ...report },
  });
  return report;
}

export interface RetentionSchedule {
  /** When the next prune will run. */
  nextRun(): Date | null;
  stop(): Promise<void>;
}

/** Every five minutes, off the minute boundaries other jobs like. */
export const ROLLUP_CRON = "2-59/5 * * * *";

export function scheduleRetention(
  eventLog: EventLogPort,
  options: RetentionOptions & { cron: string; timezone?: string; rollupCron?: string },
): RetentionSchedule {
  const check = cron.validateDetailed(options.cron);
  if (!check.valid) {
    const reasons = check.errors.map((error) => error.message).join("; ");
    throw new SwarmError(
      "INVALID_CONFIG",
      `SWARM_PRUNE_CRON ${JSON.stringify(options.cron)} is not a cron expression: ${reasons}`,
      {
        field: "SWARM_PRUNE_CRON",
      },
    );
  }
  const task = cron.schedule(
    options.cron,
    async () => {
      if (options.shouldRun?.() === false) return;
      try {
        await runRetention(eventLog, options);
      } catch (error) {
        options.logger.error({ err: error }, "scheduled prune failed");
      }
    },
    { name: "event-log-retention", noOverlap: true, timezone: options.timezone, unref: true },
  );
  const rollup = cron.schedule(
    options.rollupCron ?? ROLLUP_CRON,
    async () => {
      if (options.shouldRun?.() === false) return;
      try {
        const reached = await eventLog.rollUp();
        options.logger.debug({ rolled_up_to_seq: reached }, "hourly rollup advanced");
      } catch (error) {
        options.logger.error({ err: error }, "hourly rollup failed");
      }
    },
    { name: "event-log-rollup", noOverlap: true, timezone: options.timezone, unref: true },
  );
  return {
    nextRun: () => task.getNextRun(),
    stop: async () => {
      await task.destroy();
      await rollup.destroy();
    },
  };
}

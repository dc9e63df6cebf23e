/**
 * Fires due schedules. Every process runs one (each replica of a cluster too): it reads the
 * schedules due by the coordinator's clock (the database's, on PostgreSQL) and posts each
 * firing's task through the coordinator, with the schedule's compare-and-set as an extra write of
 * the same transaction (ExtraWrite `schedule_fired`). Two processes that see one firing due both
 * try; the second's compare-and-set finds next_fire_at moved on and its whole transaction, task
 * included, is rolled back. Nothing is kept in memory between rounds: after a restart the stored
 * next_fire_at says what is due, and a firing missed meanwhile is made up once.
 */
import { isSwarmError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { ServerStorePort } from "../storage/port.js";
import type { CoordinatorPort } from "./port.js";
import { firingAt, type Schedule } from "./schedules.js";
import type { Command } from "./types.js";

/** Most firings one round makes: the rest are the next round's. */
const FIRINGS_PER_ROUND = 100;

export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<number> | undefined;

  constructor(
    private readonly options: {
      coordinator: CoordinatorPort;
      store: ServerStorePort;
      logger: Logger;
      intervalMs?: number;
    },
  ) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => void this.fireDue(), this.options.intervalMs ?? 250);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** Fire what is due now; resolves to the firings this process made. One round at a time. */
  fireDue(): Promise<number> {
    this.round ??= this.fireRound().finally(() => (this.round = undefined));
    return this.round;
  }

  private async fireRound(): Promise<number> {
    const { coordinator, store, logger } = this.options;
    let fired = 0;
    try {
      const now = await coordinator.now();
      for (const schedule of await store.dueSchedules(now.toISOString(), FIRINGS_PER_ROUND)) {
        if (await this.fire(schedule, now)) fired += 1;
      }
    } catch (error) {
      logger.warn({ err: error }, "could not fire the due schedules; trying again shortly");
    }
    return fired;
  }

  private async fire(schedule: Schedule, now: Date): Promise<boolean> {
    const firing = firingAt(schedule, now.getTime());
    if (firing === undefined || schedule.next_fire_at === null) return false;
    const expected = schedule.next_fire_at;
    const { task } = schedule;
    const command: Command = {
      type: "PostTask",
      description: task.description,
      required_capabilities: task.required_capabilities,
      auction_ms: task.auction_ms,
      ...(task.max_bid_sats === null ? {} : { max_bid_sats: task.max_bid_sats }),
      ...(task.ack_ms === null ? {} : { ack_ms: task.ack_ms }),
      ...(task.timeout_ms === null ? {} : { timeout_ms: task.timeout_ms }),
      max_attempts: task.max_attempts,
      retry_backoff_ms: task.retry_backoff_ms,
      award: task.award,
      schedule_id: schedule.id,
      scheduled_for: firing.scheduled_for,
      missed_firings: firing.missed,
    };
    try {
      await this.options.coordinator.submit(command, ({ task: posted }) => {
        // The next firing after the moment the task was posted at, on the decision's own clock.
        const at = posted === undefined ? now.getTime() : Date.parse(posted.created_at);
        return [
          {
            kind: "schedule_fired",
            schedule_id: schedule.id,
            expected_next_fire_at: expected,
            next_fire_at: (firingAt(schedule, Math.max(at, now.getTime())) ?? firing).next_fire_at,
            fired_at: posted?.created_at ?? now.toISOString(),
          },
        ];
      });
      return true;
    } catch (error) {
      if (isSwarmError(error, "SCHEDULE_FIRED_ELSEWHERE")) return false; // another process made it
      this.options.logger.warn(
        { err: error, schedule_id: schedule.id },
        `schedule ${schedule.id} could not fire; it is tried again shortly`,
      );
      return false;
    }
  }
}

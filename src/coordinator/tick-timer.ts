/**
 * The interval timer that drives the core's Tick, shared by both shells. A timer that fires late
 * means this process's event loop was held: the span goes into the stall ledger (stalls.ts) that
 * every Tick carries, so agents' silence during it is not held against them.
 */
import { performance } from "node:perf_hooks";
import type { Logger } from "../logger.js";
import { StallLedger } from "./stalls.js";

export class TickTimer {
  readonly stalls: StallLedger;
  private timer: NodeJS.Timeout | undefined;
  /** When the timer last ran, on the monotonic clock (a wall-clock jump is no stall). */
  private lastRunAt = 0;

  constructor(
    private readonly options: {
      intervalMs: number;
      heartbeatTimeoutMs: number;
      clock: () => Date;
      logger: Logger;
      onTick: () => void;
    },
  ) {
    this.stalls = new StallLedger(options.heartbeatTimeoutMs);
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.lastRunAt = performance.now();
    this.timer = setInterval(() => this.run(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private run(): void {
    const at = performance.now();
    const lateMs = at - this.lastRunAt - this.options.intervalMs;
    this.lastRunAt = at;
    const stall = this.stalls.note(lateMs, this.options.clock().getTime());
    if (stall !== undefined) {
      this.options.logger.warn(
        { stalled_ms: Math.round(lateMs), from: stall.from, until: stall.until },
        "the event loop was stalled; agents' silence during the stall is not held against them",
      );
    }
    this.options.onTick();
  }
}

/**
 * Which auction round is open on each task, as of a seq: kept from the event log itself (a
 * `task.bidding` opens a round, `auction.closed` or `task.cancelled` ends it), starting from a
 * snapshot of the bidding tasks taken at a known seq. Being a function of the log's prefix, it
 * never disagrees with the database about that prefix; `caughtUp(seq)` waits until it has read
 * as far as a page the caller is about to show, so a sealed bid is never shown as an open one,
 * whichever process wrote it.
 */
import { SwarmError } from "../errors.js";
import { EventType } from "../event-log/event-types.js";
import type { StoredEvent } from "../event-log/types.js";
import type { EventLogPort } from "../storage/port.js";

export interface OpenRoundSnapshot {
  /** The newest seq the snapshot reflects. */
  seq: number;
  rounds: readonly { task_id: string; attempt: number }[];
}

/** How long a read waits for the feed to reach its page before it is answered 503. */
const CATCH_UP_TIMEOUT_MS = 5000;

export class OpenRounds {
  private readonly rounds = new Map<string, number>();
  private through: number | undefined;
  private early: StoredEvent[] = [];
  private waiters: { seq: number; resolve: () => void }[] = [];
  private unsubscribe: (() => void) | undefined;
  private starting: Promise<void> | undefined;

  constructor(
    private readonly eventLog: EventLogPort,
    private readonly snapshot: () => Promise<OpenRoundSnapshot>,
  ) {}

  /**
   * Listen first, then read the snapshot: what the listener hears up to its seq is already in it.
   * Every caller waits for the same snapshot, so none is answered from a feed not yet loaded.
   */
  start(): Promise<void> {
    this.starting ??= this.load().catch((error: unknown) => {
      this.stop(); // the next call tries again
      throw error;
    });
    return this.starting;
  }

  private async load(): Promise<void> {
    this.unsubscribe = this.eventLog.subscribe((event) => this.hear(event));
    const { seq, rounds } = await this.snapshot();
    for (const { task_id, attempt } of rounds) this.rounds.set(task_id, attempt);
    this.through = seq;
    const early = this.early;
    this.early = [];
    for (const event of early) this.hear(event);
    this.wake();
  }

  /** Stop listening and forget: a later start reads a fresh snapshot. */
  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.starting = undefined;
    this.rounds.clear();
    this.through = undefined;
    this.early = [];
  }

  openRound(taskId: string): number | undefined {
    return this.rounds.get(taskId);
  }

  /** Resolves once every event up to `seq` has been read. */
  caughtUp(seq: number): Promise<void> {
    if (this.through !== undefined && this.through >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter.resolve !== done);
        reject(
          new SwarmError(
            "STORAGE_UNAVAILABLE",
            "the coordinator has not yet read the event log this far; try again",
          ),
        );
      }, CATCH_UP_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ seq, resolve: done });
    });
  }

  private hear(event: StoredEvent): void {
    if (this.through === undefined) {
      this.early.push(event);
      return;
    }
    if (event.seq <= this.through) return;
    this.through = event.seq;
    if (event.task_id !== null) {
      if (event.event_type === EventType.TASK_BIDDING && typeof event.data.attempt === "number") {
        this.rounds.set(event.task_id, event.data.attempt);
      } else if (
        event.event_type === EventType.AUCTION_CLOSED ||
        event.event_type === EventType.TASK_CANCELLED
      ) {
        this.rounds.delete(event.task_id);
      }
    }
    this.wake();
  }

  private wake(): void {
    const through = this.through ?? 0;
    const ready = this.waiters.filter((waiter) => waiter.seq <= through);
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((waiter) => waiter.seq > through);
    for (const waiter of ready) waiter.resolve();
  }
}

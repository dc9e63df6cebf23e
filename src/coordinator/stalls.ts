/**
 * The server's own stalls: spans in which its event loop did not run, so nothing an agent sent
 * could be heard (a long synchronous scan, a huge GC pause, the process stopped). While stalled
 * the server cannot tell a dead agent from one whose heartbeats wait unread in its socket
 * buffers, so the core does not count those spans as anyone's silence.
 *
 * The shell notices a stall by its tick timer running late, and keeps the recent ones in a
 * `StallLedger`; each Tick carries them into the pure core, which uses `stalledMs`.
 */
import type { ServerStall } from "./types.js";

/**
 * A tick later than this counts as a stall. Timers normally fire within a few ms, and GC pauses
 * and commits take tens; a delay past a quarter of a second is the loop being held. Counting a
 * smaller one would only postpone an offline verdict by as much, so the threshold need not be
 * tight: it keeps ordinary jitter out of the ledger.
 */
export const STALL_THRESHOLD_MS = 250;

/**
 * The most stalls kept. Each is at least STALL_THRESHOLD_MS long, so this covers minutes of a
 * loop that keeps stalling; the core walks the list only for agents already past the timeout.
 */
export const MAX_STALLS = 1000;

/** How much of [fromMs, toMs) the server spent stalled. Stalls never overlap one another. */
export function stalledMs(stalls: readonly ServerStall[], fromMs: number, toMs: number): number {
  let total = 0;
  for (const stall of stalls) {
    const start = Math.max(Date.parse(stall.from), fromMs);
    const end = Math.min(Date.parse(stall.until), toMs);
    if (end > start) total += end - start;
  }
  return total;
}

/**
 * The recent stalls, oldest first. A stall is kept until the server has since run un-stalled
 * for a whole heartbeat timeout: by then every agent last heard before it has been silent for
 * the timeout outside any stall, and is offline whether the stall is counted or not, so it can
 * no longer change a verdict. That is at least the heartbeat timeout, and longer while stalls
 * follow one another.
 */
export class StallLedger {
  private readonly entries: { stall: ServerStall; fromMs: number; untilMs: number }[] = [];

  constructor(private readonly keepMs: number) {}

  /**
   * The tick timer ran `lateMs` after it was due, at `nowMs`. Returns the stall this records,
   * if it was late enough to be one.
   */
  note(lateMs: number, nowMs: number): ServerStall | undefined {
    let recorded: ServerStall | undefined;
    if (lateMs > STALL_THRESHOLD_MS) {
      const fromMs = nowMs - lateMs;
      const previous = this.entries.at(-1);
      // A clock set back could make a new stall overlap the last one: keep them disjoint.
      const start = previous === undefined ? fromMs : Math.max(fromMs, previous.untilMs);
      if (nowMs > start) {
        recorded = { from: new Date(start).toISOString(), until: new Date(nowMs).toISOString() };
        this.entries.push({ stall: recorded, fromMs: start, untilMs: nowMs });
      }
    }
    this.prune(nowMs);
    return recorded;
  }

  get stalls(): ServerStall[] {
    return this.entries.map((entry) => entry.stall);
  }

  private prune(nowMs: number): void {
    while (this.entries.length > MAX_STALLS) this.entries.shift();
    while (this.entries.length > 0) {
      const oldest = this.entries[0]!;
      let stalledSince = 0;
      for (const entry of this.entries.slice(1))
        stalledSince += Math.min(entry.untilMs, nowMs) - entry.fromMs;
      if (nowMs - oldest.untilMs - stalledSince < this.keepMs) return;
      this.entries.shift();
    }
  }
}

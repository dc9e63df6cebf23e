import { afterEach } from "vitest";
import { pino } from "pino";
import { SqliteEventLog, type EventLogOptions } from "../../src/storage/sqlite/event-log.js";

const open: SqliteEventLog[] = [];

afterEach(() => {
  for (const log of open.splice(0)) log.close();
});

export const silentLogger = pino({ level: "silent" });

/** A controllable clock: starts at `start`, moves only when told. */
export function fakeClock(start = "2026-03-01T12:00:00.000Z") {
  let now = new Date(start).getTime();
  return {
    now: () => new Date(now),
    advance(ms: number) {
      now += ms;
    },
    set(iso: string) {
      now = new Date(iso).getTime();
    },
  };
}

/** An event log closed automatically after the test; in memory unless a path is given. */
export function openTestLog(options: Partial<EventLogOptions> = {}): SqliteEventLog {
  const log = new SqliteEventLog({ path: ":memory:", logger: silentLogger, ...options });
  open.push(log);
  return log;
}

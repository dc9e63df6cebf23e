// SQLite only: the lock file that keeps one server per SQLite file (PostgreSQL needs none).
import { symlinkSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { lockDatabase, type DatabaseLock } from "../src/storage/sqlite/database-lock.js";
import { isSwarmError } from "../src/errors.js";
import { openTestLog } from "./helpers/event-log.js";
import { eventually } from "./helpers/stack.js";
import { tempDir } from "./helpers/temp-dir.js";

const held: DatabaseLock[] = [];
afterEach(() => {
  for (const lock of held.splice(0)) lock.release();
});

function lock(path: string): DatabaseLock {
  const taken = lockDatabase(path);
  held.push(taken);
  return taken;
}

function refusal(path: string): unknown {
  try {
    lock(path);
  } catch (error) {
    return error;
  }
  return undefined;
}

describe("the one-server lock on a database file", () => {
  it("refuses a second holder at once, naming the file, and lets it in once released", () => {
    const path = join(tempDir(), "data", "swarm.db");
    const first = lock(path);
    expect(first.path).toBe(`${path}.lock`);
    const refused = refusal(path);
    expect(isSwarmError(refused, "DATABASE_IN_USE")).toBe(true);
    expect((refused as Error).message).toContain(`SWARM_DB ${path} is in use`);
    first.release();
    first.release(); // twice is harmless
    expect(lock(path).path).toBe(`${path}.lock`);
  });

  it("is one lock for every name of the file: relative, with dots, through a symbolic link", () => {
    const dir = tempDir();
    const path = join(dir, "swarm.db");
    openTestLog({ path }).close(); // the file exists, so the link below points at something
    symlinkSync(path, join(dir, "link.db"));
    lock(path);
    for (const other of [join(dir, ".", "swarm.db"), join(dir, "link.db")]) {
      expect(isSwarmError(refusal(other), "DATABASE_IN_USE"), other).toBe(true);
    }
  });

  it("leaves the database file itself open to event logs and their background checkpointer", async () => {
    const path = join(tempDir(), "swarm.db");
    lock(path);
    const writer = openTestLog({ path, checkpointIntervalMs: 10 });
    const reader = openTestLog({ path });
    await writer.logEvent({ event_type: "system.info", source: "test", data: { n: 1 } });
    expect(reader.latestSeq()).toBe(1);
    const stats = await eventually(
      () => writer.checkpointStats(),
      (now) => now !== undefined && now.runs > 0 && now.last !== undefined && now.last.busy === 0,
    );
    expect(stats?.last?.checkpointed).toBe(stats?.last?.log);
  });

  it("takes nothing for an in-memory database", () => {
    expect(lock(":memory:").path).toBe("");
    expect(lock(":memory:").path).toBe("");
  });
});

import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { createEventLog } from "../../src/event-log/index.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { ENGINES } from "../helpers/engines.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";
import { createTestDatabase } from "../helpers/postgres.js";
import { tempDir } from "../helpers/temp-dir.js";

const WRITER = fileURLToPath(new URL("../fixtures/crash-writer.ts", import.meta.url));

/** Run the writer until it has acknowledged at least `atLeast` events, plus a random extra moment, then SIGKILL it. */
async function runAndKill(where: string, atLeast: number): Promise<string[]> {
  const child = spawn(process.execPath, ["--import", "tsx", WRITER, where], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const acknowledged: string[] = [];
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  // "close" rather than "exit": it waits for stdout to drain, so every acknowledgement is read.
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
    child.on("close", (code, signal) => resolve(signal ?? code)),
  );
  const lines = createInterface({ input: child.stdout });
  let killTimer: NodeJS.Timeout | undefined;
  lines.on("line", (line) => {
    acknowledged.push(line);
    if (acknowledged.length >= atLeast && killTimer === undefined) {
      killTimer = setTimeout(() => child.kill("SIGKILL"), Math.floor(Math.random() * 40));
    }
  });
  const outcome = await exited;
  if (outcome !== "SIGKILL")
    throw new Error(`writer exited with ${String(outcome)} before the kill: ${stderr}`);
  return acknowledged;
}

describe.each(ENGINES)("crash safety on $name", (engine) => {
  it("keeps every acknowledged event through repeated SIGKILLs, with an intact database", async () => {
    const where = engine.name === "sqlite" ? join(tempDir(), "crash.db") : await createTestDatabase();
    const acknowledged: string[] = [];
    for (let round = 0; round < 3; round += 1) {
      acknowledged.push(...(await runAndKill(where, 300 + round * 200)));
      const log =
        engine.name === "sqlite"
          ? openTestLog({ path: where })
          : createEventLog({ url: where, logger: silentLogger });
      if (engine.name === "sqlite") {
        expect(await engine.sql(log, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
      }
      const stored = (await engine.sql(log, "SELECT id, seq FROM event_log ORDER BY seq")) as {
        id: string;
        seq: number | string;
      }[];
      const ids = new Set(stored.map((row) => row.id));
      const missing = acknowledged.filter((id) => !ids.has(id));
      expect(missing).toEqual([]);
      expect(ids.size).toBe(stored.length);
      // No rollback happens in the writer, so surviving rows are gap-free from 1; on PostgreSQL a
      // write cut off by the kill took its numbers back with it.
      expect(stored.map((row) => Number(row.seq))).toEqual(stored.map((_, i) => i + 1));
      await log.close();
      // Its search worker closes its own files a moment later; the next writer reopens them.
      if (engine.name === "sqlite") await (log as SqliteEventLog).whenClosed();
    }
    expect(acknowledged.length).toBeGreaterThanOrEqual(1200);
  }, 60_000);
});

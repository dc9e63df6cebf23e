import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { coordinatorOn } from "../helpers/coordinator.js";
import { ENGINES } from "../helpers/engines.js";
import { fakeClock } from "../helpers/event-log.js";
import { createTestDatabase } from "../helpers/postgres.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const PROCESS = fileURLToPath(new URL("../fixtures/coordinator-process.ts", import.meta.url));

interface Ids {
  a: string;
  b: string;
  running: string;
  open: string;
}

async function runAndKill(where: string): Promise<Ids> {
  const child = spawn(process.execPath, ["--import", "tsx", PROCESS, where], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const closed = new Promise<string | number | null>((resolve) =>
    child.on("close", (code, signal) => resolve(signal ?? code)),
  );
  const ids = await new Promise<Ids>((resolve, reject) => {
    createInterface({ input: child.stdout }).once("line", (line) => resolve(JSON.parse(line) as Ids));
    void closed.then((outcome) =>
      reject(new Error(`coordinator exited early (${String(outcome)}): ${stderr}`)),
    );
  });
  await new Promise((resolve) => setTimeout(resolve, 150)); // let a few heartbeats and ticks happen
  child.kill("SIGKILL");
  expect(await closed).toBe("SIGKILL");
  return ids;
}

describe.each(ENGINES)("recovery after kill -9 on $name", ({ name: engine }) => {
  it("closes the interrupted auction with its recorded bids and keeps the running task", async () => {
    const where = engine === "sqlite" ? tempDbPath() : await createTestDatabase();
    const ids = await runAndKill(where);
    // Restart 11 minutes later: the 10-minute auction came due while the process was dead.
    const later = fakeClock(new Date(Date.now() + 11 * 60_000).toISOString());
    const { coordinator, eventLog } = await coordinatorOn(engine, { where, clock: later });
    // The file survived the kill whole (PostgreSQL's own crash recovery is the server's, not ours to check).
    if (engine === "sqlite")
      expect((eventLog as SqliteEventLog).db.pragma("integrity_check", { simple: true })).toBe("ok");
    await coordinator.start();
    await coordinator.stop();

    expect(await coordinator.getTask(ids.open)).toMatchObject({
      status: "assigned",
      assigned_agent: ids.b,
      winning_bid_sats: 10,
    });
    const closed = (await eventLog.getTaskEvents(ids.open)).find((e) => e.event_type === "auction.closed");
    expect(closed?.data).toMatchObject({ bids: 2, winner: ids.b, winning_bid_sats: 10, reason: "deadline" });
    expect(await coordinator.getTask(ids.running)).toMatchObject({
      status: "running",
      assigned_agent: ids.a,
    });
    expect((await eventLog.getTaskEvents(ids.running)).map((e) => e.event_type)).toEqual([
      "task.created",
      "task.bidding",
      "bid.submitted",
      "auction.closed",
      "task.assigned",
      "task.started",
      "tool.called",
    ]);
    expect((await coordinator.getAgent(ids.a))?.status).toBe("offline");
    // The agent reconnects and finishes its task.
    await coordinator.submit({ type: "Heartbeat", agent_id: ids.a });
    await coordinator.submit({
      type: "CompleteTask",
      task_id: ids.running,
      agent_id: ids.a,
      result: "built",
    });
    expect((await coordinator.getTask(ids.running))?.status).toBe("completed");
  });
});

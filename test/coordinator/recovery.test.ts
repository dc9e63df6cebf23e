import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Coordinator } from "../../src/coordinator/coordinator.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";
import { tempDir } from "../helpers/temp-dir.js";

const PROCESS = fileURLToPath(new URL("../fixtures/coordinator-process.ts", import.meta.url));

interface Ids {
  a: string;
  b: string;
  running: string;
  open: string;
}

async function runAndKill(dbPath: string): Promise<Ids> {
  const child = spawn(process.execPath, ["--import", "tsx", PROCESS, dbPath], {
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

describe("recovery after kill -9", () => {
  it("closes the interrupted auction with its recorded bids and keeps the running task", async () => {
    const path = join(tempDir(), "swarm.db");
    const ids = await runAndKill(path);
    // Restart 11 minutes later: the 10-minute auction came due while the process was dead.
    const later = new Date(Date.now() + 11 * 60_000);
    const eventLog = openTestLog({ path, clock: () => later });
    expect(eventLog.db.pragma("integrity_check", { simple: true })).toBe("ok");
    const coordinator = new Coordinator({ eventLog, logger: silentLogger, clock: () => later });
    coordinator.start();
    coordinator.stop();

    expect(coordinator.getTask(ids.open)).toMatchObject({
      status: "assigned",
      assigned_agent: ids.b,
      winning_bid_sats: 10,
    });
    const closed = eventLog.getTaskEvents(ids.open).find((e) => e.event_type === "auction.closed");
    expect(closed?.data).toMatchObject({ bids: 2, winner: ids.b, winning_bid_sats: 10, reason: "deadline" });
    expect(coordinator.getTask(ids.running)).toMatchObject({ status: "running", assigned_agent: ids.a });
    expect(eventLog.getTaskEvents(ids.running).map((e) => e.event_type)).toEqual([
      "task.created",
      "task.bidding",
      "bid.submitted",
      "auction.closed",
      "task.assigned",
      "task.started",
      "tool.called",
    ]);
    expect(coordinator.getAgent(ids.a)?.status).toBe("offline");
    // The agent reconnects and finishes its task.
    coordinator.execute({ type: "Heartbeat", agent_id: ids.a });
    coordinator.execute({ type: "CompleteTask", task_id: ids.running, agent_id: ids.a, result: "built" });
    expect(coordinator.getTask(ids.running)?.status).toBe("completed");
  });
});

import { describe, expect, it } from "vitest";
import { CoordinatorStore, STORE_SQL } from "../../src/coordinator/store.js";
import { openTestLog } from "../helpers/event-log.js";

describe("coordinator store query plans", () => {
  it("reads tasks and bids through indexes; only loading every agent at start and the dashboard counters scan", () => {
    const log = openTestLog();
    const params: Partial<Record<keyof typeof STORE_SQL, unknown[]>> = {
      taskById: ["t"],
      agentById: ["a"],
      bidsOfTask: ["t"],
      agentBidStats: ["a"],
      agentTaskStats: ["a"],
      recentAuctions: [20],
      finishedTasksBefore: ["2026-01-01T00:00:00.000Z", 500],
      deleteTaskBids: ["t"],
      deleteTaskKeys: ["t"],
      deleteTask: ["t"],
      leftAgentsBefore: ["2026-01-01T00:00:00.000Z", "", "", 500],
      agentIsNamed: [{ id: "a" }],
      deleteAgentTokens: ["a"],
      deleteAgentUsage: ["a"],
      deleteAgent: ["a"],
      expiredKeys: ["2026-01-01T00:00:00.000Z", 500],
      countTaskReports: [1, "t"],
      countAgentBytes: [{ agent_id: "a", hour: "2026-01-01T00", bytes: 1 }],
    };
    for (const [name, sql] of Object.entries(STORE_SQL) as [keyof typeof STORE_SQL, string][]) {
      if (name.startsWith("upsert") || name === "allAgents") continue;
      // Counting every task by status is what the dashboard's counters ask for, at a bounded rate,
      // and reads the status index only. The newest auctions walk rowids backwards and stop at the limit.
      if (name === "taskCounts" || name === "recentAuctions") continue;
      const details = (
        log.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(params[name] ?? [])) as { detail: string }[]
      ).map((row) => row.detail);
      expect(
        details.filter((detail) =>
          /^SCAN (tasks|bids|agents|agent_tokens|idempotency_keys|t|b)\b/.test(detail),
        ),
        `${name}: ${details.join(" | ")}`,
      ).toEqual([]);
      // Retention takes its oldest rows a chunk at a time from an index, never sorting them all.
      if (name === "finishedTasksBefore" || name === "leftAgentsBefore" || name === "expiredKeys") {
        expect(
          details.filter((detail) => detail.includes("TEMP B-TREE")),
          `${name}: ${details.join(" | ")}`,
        ).toEqual([]);
      }
    }
  });
});

describe("coordinator store dashboard reads", () => {
  it("counts tasks by status and reads the newest auctions with their bid counts, including none", () => {
    const log = openTestLog();
    const now = "2026-01-01T00:00:00.000Z";
    log.db.exec(
      "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES " +
        `('a1', 'one', '[]', 1, 'idle', '${now}', '${now}'), ('a2', 'two', '[]', 1, 'idle', '${now}', '${now}')`,
    );
    const store = new CoordinatorStore(log.db);
    const task = (id: string, status: string, attempt = 1) =>
      log.db
        .prepare(
          "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, attempt, created_at) VALUES (?, ?, ?, '[]', 1000, ?, ?)",
        )
        .run(id, `task ${id}`, status, attempt, now);
    task("t1", "completed");
    task("t2", "bidding", 2);
    task("t3", "bidding");
    const bid = log.db.prepare(
      "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at) VALUES (?, ?, ?, 10, 1, ?)",
    );
    bid.run("t1", 1, "a1", now);
    bid.run("t1", 1, "a2", now);
    bid.run("t2", 1, "a1", now); // an earlier round: not counted for the current one
    bid.run("t2", 2, "a2", now);

    expect(store.taskCounts()).toEqual({
      bidding: 2,
      assigned: 0,
      running: 0,
      completed: 1,
      failed: 0,
      cancelled: 0,
    });
    expect(store.recentAuctions(2).map((a) => [a.task_id, a.bids])).toEqual([
      ["t2", 1],
      ["t3", 0],
    ]);
    expect(store.recentAuctions(10).map((a) => a.task_id)).toEqual(["t1", "t2", "t3"]);
  });
});

import { describe, expect, it } from "vitest";
import { STORE_SQL, taskListSql } from "../../src/storage/sqlite/coordinator-store.js";
import { coordinatorOn } from "../helpers/coordinator.js";
import { ENGINES } from "../helpers/engines.js";
import { openTestLog } from "../helpers/event-log.js";

// SQLite only: these are SQLite's planner's plans of SQLite's statements (PostgreSQL's own
// statements and indexes are in src/storage/postgres/coordinator-store.ts and its migration 002).
describe("coordinator store query plans", () => {
  it("reads tasks and bids through indexes; only loading every agent at start scans", () => {
    const log = openTestLog();
    const params: Partial<Record<keyof typeof STORE_SQL, unknown[]>> = {
      taskById: ["t"],
      agentById: ["a"],
      bidsOfTask: ["t"],
      bidPage: ["t", 1, "a", 2, 101],
      bidCountsByRound: ["t"],
      lowestBids: ["t", 1, 20],
      ownBid: ["t", 1, "a"],
      agentStats: ["a"],
      agentPage: [100, 51],
      agentPageByStatus: ["idle", 100, 51],
      boardPage: [{ status: "idle", name: "m", rowid: 5, limit: 51 }],
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
      // The newest auctions walk rowids backwards and stop at the limit.
      if (name === "recentAuctions") continue;
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

describe.each(ENGINES)("coordinator store dashboard reads on $name", ({ name: engine }) => {
  it("counts tasks by status and reads the newest auctions with their bid counts, including none", async () => {
    const { sql, coordinator } = await coordinatorOn(engine);
    const { store } = coordinator;
    const now = "2026-01-01T00:00:00.000Z";
    await sql(
      "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES " +
        `('a1', 'one', '[]', 1, 'idle', '${now}', '${now}'), ('a2', 'two', '[]', 1, 'idle', '${now}', '${now}')`,
    );
    const task = (id: string, status: string, attempt = 1) =>
      sql(
        "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, attempt, created_at) VALUES (?, ?, ?, '[]', 1000, ?, ?)",
        id,
        `task ${id}`,
        status,
        attempt,
        now,
      );
    await task("t1", "completed");
    await task("t2", "bidding", 2);
    await task("t3", "bidding");
    const bid = (taskId: string, attempt: number, agentId: string) =>
      sql(
        "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at) VALUES (?, ?, ?, 10, 1, ?)",
        taskId,
        attempt,
        agentId,
        now,
      );
    await bid("t1", 1, "a1");
    await bid("t1", 1, "a2");
    await bid("t2", 1, "a1"); // an earlier round: not counted for the current one
    await bid("t2", 2, "a2");

    expect(await store.taskCounts()).toEqual({
      waiting: 0,
      bidding: 2,
      assigned: 0,
      running: 0,
      completed: 1,
      failed: 0,
      cancelled: 0,
    });
    expect((await store.recentAuctions(2)).map((a) => [a.task_id, a.bids])).toEqual([
      ["t2", 1],
      ["t3", 0],
    ]);
    expect((await store.recentAuctions(10)).map((a) => a.task_id)).toEqual(["t1", "t2", "t3"]);
  });
});

// SQLite only: SQLite's plans again, on an empty database and on one with planner statistics.
describe("list queries at depth", () => {
  /** A database with varied rows and planner statistics, as a long-running install has after PRAGMA optimize. */
  function analyzedDatabase() {
    const log = openTestLog();
    const now = "2026-01-01T00:00:00.000Z";
    const db = log.db;
    const agent = db.prepare(
      "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen, left_at) VALUES (?, ?, '[]', 1, ?, ?, ?, ?)",
    );
    const task = db.prepare(
      "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, attempt, assigned_agent, created_at) VALUES (?, 'x', ?, '[]', 1000, 1, ?, ?)",
    );
    const bid = db.prepare(
      "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    db.transaction(() => {
      for (let i = 0; i < 400; i += 1) {
        const status = ["idle", "busy", "offline", "offline"][i % 4] as string;
        agent.run(`a-${i}`, `name-${(i * 7) % 400}`, status, now, now, i % 10 === 0 ? now : null);
      }
      for (let i = 0; i < 3000; i += 1) {
        const status = ["completed", "completed", "failed", "bidding", "running", "cancelled"][
          i % 6
        ] as string;
        task.run(`t-${i}`, status, status === "bidding" ? null : `a-${i % 40}`, now);
      }
      for (let i = 0; i < 400; i += 1) bid.run("t-3", 1 + (i % 2), `a-${i}`, 10 + i, i, now);
    })();
    db.exec("ANALYZE");
    return log;
  }

  /** Each list query, its parameters with a cursor deep in the list, and the range its cursor must seek. */
  const lists: [string, string, unknown[], string][] = [
    ["tasks", taskListSql({ status: false, agent: false }), [100, 51], "rowid<?"],
    ["tasks by status", taskListSql({ status: true, agent: false }), [100, "completed", 51], "rowid<?"],
    ["tasks by agent", taskListSql({ status: false, agent: true }), [100, "a-3", 51], "rowid<?"],
    [
      "tasks by status and agent",
      taskListSql({ status: true, agent: true }),
      [100, "completed", "a-3", 51],
      "rowid<?",
    ],
    ["agents", STORE_SQL.agentPage, [350, 51], "rowid>?"],
    ["agents by status", STORE_SQL.agentPageByStatus, ["offline", 350, 51], "rowid>?"],
    [
      "the dashboard's agents",
      STORE_SQL.boardPage,
      [{ status: "offline", name: "name-350", rowid: 350, limit: 51 }],
      "name>?",
    ],
    ["a task's bids", STORE_SQL.bidPage, ["t-3", 1, "a-350", 3, 101], "(attempt,agent_id)>(?,?)"],
  ];

  it.each([
    ["an empty database", () => openTestLog()],
    ["an analyzed one", analyzedDatabase],
  ])("seek their cursor in an index on %s, never scanning or sorting the rows before it", (_name, open) => {
    const log = open();
    for (const [name, sql, params, range] of lists) {
      const details = (
        log.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]
      ).map((row) => row.detail);
      const plan = `${name}: ${details.join(" | ")}`;
      expect(details, plan).toHaveLength(1);
      expect(details[0], plan).toMatch(/^SEARCH (tasks|agents|bids) USING /);
      expect(details[0], plan).toContain(range);
    }
  });
});

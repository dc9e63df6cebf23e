/**
 * The counts that /metrics, the overview and every agent's stats read are kept by triggers in
 * the same transaction as the rows (migration 006), so that reading them costs one row whatever
 * the size of the tables. They must say exactly what counting the rows would.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CoordinatorStore, STORE_SQL, type AgentStats } from "../../src/storage/sqlite/coordinator-store.js";
import { TASK_STATUSES, type Bid, type Task, type TaskStatus } from "../../src/coordinator/types.js";
import { loadMigrations, openDatabase, type SqliteDatabase } from "../../src/storage/sqlite/database.js";
import { openTestLog } from "../helpers/event-log.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const NOW = "2026-01-01T00:00:00.000Z";
const AGENTS = ["a1", "a2", "a3"];
const TASKS = ["t1", "t2", "t3", "t4"];

function addAgents(db: SqliteDatabase): void {
  const insert = db.prepare(
    "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES (?, ?, '[]', 1, 'idle', ?, ?)",
  );
  for (const id of AGENTS) insert.run(id, `agent ${id}`, NOW, NOW);
}

/** What counting the rows says: the queries store.ts ran on every read before migration 006. */
function countedStats(db: SqliteDatabase, agentId: string): AgentStats {
  const bids = db
    .prepare<[string], { bids: number; wins: number; won_sats: number | null }>(
      "SELECT COUNT(outcome) AS bids, COALESCE(SUM(outcome = 'won'), 0) AS wins, " +
        "SUM(CASE WHEN outcome = 'won' THEN bid_sats END) AS won_sats FROM bids WHERE agent_id = ?",
    )
    .get(agentId)!;
  const tasks = db
    .prepare<[string], { completed: number; failed: number; earned: number | null }>(
      "SELECT COALESCE(SUM(status = 'completed'), 0) AS completed, COALESCE(SUM(status = 'failed'), 0) AS failed, " +
        "SUM(CASE WHEN status = 'completed' THEN winning_bid_sats END) AS earned FROM tasks WHERE assigned_agent = ?",
    )
    .get(agentId)!;
  return {
    bids: bids.bids,
    wins: bids.wins,
    tasks_completed: tasks.completed,
    tasks_failed: tasks.failed,
    earned_sats: tasks.earned ?? 0,
    win_rate: bids.bids === 0 ? 0 : Math.round((bids.wins / bids.bids) * 1000) / 1000,
    average_winning_bid_sats:
      bids.wins === 0 || bids.won_sats === null ? null : Math.round(bids.won_sats / bids.wins),
  };
}

function countedStatuses(db: SqliteDatabase): Record<TaskStatus, number> {
  const counts = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0])) as Record<TaskStatus, number>;
  const rows = db
    .prepare<[], { status: TaskStatus; count: number }>(
      "SELECT status, COUNT(*) AS count FROM tasks GROUP BY status",
    )
    .all();
  for (const { status, count } of rows) counts[status] = count;
  return counts;
}

function expectCountsToMatchRows(db: SqliteDatabase, store: CoordinatorStore): void {
  expect(store.taskCounts()).toEqual(countedStatuses(db));
  for (const agent of AGENTS) expect(store.agentStats(agent), agent).toEqual(countedStats(db, agent));
}

const taskWrite = fc.record({
  kind: fc.constant("task" as const),
  id: fc.constantFrom(...TASKS),
  status: fc.constantFrom(...TASK_STATUSES),
  assigned_agent: fc.option(fc.constantFrom(...AGENTS), { nil: null }),
  winning_bid_sats: fc.option(fc.integer({ min: 1, max: 1000 }), { nil: null }),
});
const bidWrite = fc.record({
  kind: fc.constant("bid" as const),
  task_id: fc.constantFrom(...TASKS),
  attempt: fc.integer({ min: 1, max: 2 }),
  agent_id: fc.constantFrom(...AGENTS),
  bid_sats: fc.integer({ min: 1, max: 1000 }),
  outcome: fc.constantFrom(null, "won" as const, "lost" as const),
});

function task(write: Pick<Task, "id" | "status" | "assigned_agent" | "winning_bid_sats">): Task {
  return {
    id: write.id,
    description: `task ${write.id}`,
    status: write.status,
    required_capabilities: [],
    auction_ms: 1000,
    max_bid_sats: null,
    releases: 0,
    attempt: 1,
    assigned_agent: write.assigned_agent,
    winning_bid_sats: write.winning_bid_sats,
    result: null,
    error: null,
    created_at: NOW,
    auction_closes_at: null,
    assigned_at: null,
    started_at: null,
    completed_at: null,
  };
}

describe("counts kept beside the rows", () => {
  it("say what counting the rows says, after any sequence of task and bid writes", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(taskWrite, bidWrite), { maxLength: 40 }), (writes) => {
        const log = openTestLog();
        addAgents(log.db);
        const store = new CoordinatorStore(log.db);
        const known = new Set<string>();
        for (const write of writes) {
          log.transaction(() => {
            if (write.kind === "task") {
              store.apply({ agents: [], tasks: [task(write)], bids: [] });
              known.add(write.id);
              return;
            }
            // A bid needs its task's row; a write the coordinator would make in the same transaction.
            if (!known.has(write.task_id)) {
              store.apply({
                agents: [],
                tasks: [
                  task({
                    id: write.task_id,
                    status: "bidding",
                    assigned_agent: null,
                    winning_bid_sats: null,
                  }),
                ],
                bids: [],
              });
              known.add(write.task_id);
            }
            const bid: Bid = { ...write, bid_order: 1, placed_at: NOW };
            store.apply({ agents: [], tasks: [], bids: [bid] });
          });
        }
        expectCountsToMatchRows(log.db, store);
        log.close();
      }),
      { numRuns: 100 },
    );
  });

  it("are counted from the rows already there when a database older than them is opened", () => {
    const path = tempDbPath();
    const old = openDatabase({ path, migrations: loadMigrations().slice(0, 5) });
    addAgents(old);
    const insertTask = old.prepare(
      "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, attempt, assigned_agent, winning_bid_sats, created_at) " +
        "VALUES (?, 'old', ?, '[]', 1000, 1, ?, ?, ?)",
    );
    insertTask.run("t1", "completed", "a1", 40, NOW);
    insertTask.run("t2", "failed", "a1", 30, NOW);
    insertTask.run("t3", "completed", "a2", 25, NOW);
    insertTask.run("t4", "bidding", null, null, NOW);
    const insertBid = old.prepare(
      "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at, outcome) VALUES (?, 1, ?, ?, 1, ?, ?)",
    );
    insertBid.run("t1", "a1", 40, NOW, "won");
    insertBid.run("t1", "a2", 50, NOW, "lost");
    insertBid.run("t3", "a2", 25, NOW, "won");
    insertBid.run("t4", "a3", 10, NOW, null); // an open round: not counted
    old.close();

    const log = openTestLog({ path });
    const store = new CoordinatorStore(log.db);
    expect(store.agentStats("a1")).toMatchObject({
      bids: 1,
      wins: 1,
      tasks_completed: 1,
      tasks_failed: 1,
      earned_sats: 40,
    });
    expect(store.agentStats("a3")).toMatchObject({ bids: 0, wins: 0 });
    expectCountsToMatchRows(log.db, store);
  });

  it("are read from their own small tables, never by counting tasks or bids", () => {
    const log = openTestLog();
    const plan = (sql: string, ...params: unknown[]) =>
      (log.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[])
        .map((row) => row.detail)
        .join(" | ");
    expect(plan(STORE_SQL.taskCounts)).toBe("SCAN task_status_counts");
    expect(plan(STORE_SQL.agentStats, "a1")).toBe("SEARCH agent_stats USING PRIMARY KEY (agent_id=?)");
  });
});

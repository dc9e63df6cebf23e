/**
 * The counts that /metrics, the overview and every agent's stats read are kept by triggers in
 * the same transaction as the rows (SQLite's migration 008, PostgreSQL's 002), so that reading
 * them costs one row whatever the size of the tables. They must say exactly what counting the
 * rows would.
 */
import fc from "fast-check";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { CoordinatorStore, STORE_SQL, type AgentStats } from "../../src/storage/sqlite/coordinator-store.js";
import {
  TASK_STATUSES,
  type Bid,
  type StateChanges,
  type Task,
  type TaskStatus,
} from "../../src/coordinator/types.js";
import { PostgresCoordinatorStore } from "../../src/storage/postgres/coordinator-store.js";
import { openPool } from "../../src/storage/postgres/database.js";
import { numbered } from "../../src/storage/postgres/queries.js";
import { loadMigrations, openDatabase } from "../../src/storage/sqlite/database.js";
import type { SqliteEventLog } from "../../src/storage/sqlite/event-log.js";
import { ENGINES, SQLITE } from "../helpers/engines.js";
import { openTestLog, silentLogger } from "../helpers/event-log.js";
import { createTestDatabase } from "../helpers/postgres.js";
import { tempDbPath } from "../helpers/temp-dir.js";

const NOW = "2026-01-01T00:00:00.000Z";
const AGENTS = ["a1", "a2", "a3"];
const TASKS = ["t1", "t2", "t3", "t4"];

/** A coordinator store on one engine, as much of it as the counts need. */
interface CountedStore {
  sql(statement: string, ...params: unknown[]): Promise<Record<string, unknown>[]>;
  /** Apply the changes in order, in one transaction. */
  write(changes: readonly StateChanges[]): Promise<void>;
  taskCounts(): Promise<Record<TaskStatus, number>>;
  agentStats(agentId: string): Promise<AgentStats>;
  close(): Promise<void>;
}

function sqliteStore(log: SqliteEventLog): CountedStore {
  const store = new CoordinatorStore(log.db);
  return {
    sql: (statement, ...params) => SQLITE.sql(log, statement, ...params),
    write: async (changes) => log.transaction(() => changes.forEach((change) => store.apply(change))),
    taskCounts: async () => store.taskCounts(),
    agentStats: async (agentId) => store.agentStats(agentId),
    close: async () => log.close(),
  };
}

/**
 * PostgreSQL: stores on one database, each run of a property inside one transaction rolled back
 * at its end, so that every run starts from the migrated, empty tables (a database of its own
 * for each of a hundred runs would take longer to make and drop than the runs themselves). The
 * triggers fire on each statement, so counts inside the transaction are what commits would give.
 */
async function postgresStores(): Promise<{ open(): Promise<CountedStore>; end(): Promise<void> }> {
  const pool = openPool({ url: await createTestDatabase(), maxConnections: 1, logger: silentLogger });
  return {
    async open() {
      const client = await pool.connect();
      await client.query("BEGIN");
      // The store reads through what it is given; given the run's connection, its reads see the
      // run's uncommitted writes. It calls nothing but `query`, which a client has as a pool does.
      const store = new PostgresCoordinatorStore(client as unknown as pg.Pool);
      const sql = async (statement: string, ...params: unknown[]) =>
        (await client.query(numbered(statement), params)).rows;
      return {
        sql,
        async write(changes) {
          await client.query("SAVEPOINT write");
          for (const change of changes) await store.apply(client, change);
          await client.query("RELEASE SAVEPOINT write");
        },
        taskCounts: () => store.taskCounts(),
        agentStats: (agentId) => store.agentStats(agentId),
        async close() {
          await client.query("ROLLBACK");
          client.release();
        },
      };
    },
    end: () => pool.end(),
  };
}

async function addAgents(store: CountedStore): Promise<void> {
  for (const id of AGENTS)
    await store.sql(
      "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES (?, ?, '[]', 1, 'idle', ?, ?)",
      id,
      `agent ${id}`,
      NOW,
      NOW,
    );
}

/**
 * What counting the rows says: the queries SQLite's store ran on every read before migration
 * 008, with the booleans summed as CASE so that PostgreSQL runs them too.
 */
async function countedStats(store: CountedStore, agentId: string): Promise<AgentStats> {
  const [bids] = (await store.sql(
    "SELECT COUNT(outcome) AS bids, COUNT(CASE WHEN outcome = 'won' THEN 1 END) AS wins, " +
      "SUM(CASE WHEN outcome = 'won' THEN bid_sats END) AS won_sats FROM bids WHERE agent_id = ?",
    agentId,
  )) as [{ bids: number; wins: number; won_sats: number | null }];
  const [tasks] = (await store.sql(
    "SELECT COUNT(CASE WHEN status = 'completed' THEN 1 END) AS completed, COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed, " +
      "SUM(CASE WHEN status = 'completed' THEN winning_bid_sats END) AS earned FROM tasks WHERE assigned_agent = ?",
    agentId,
  )) as [{ completed: number; failed: number; earned: number | null }];
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

async function countedStatuses(store: CountedStore): Promise<Record<TaskStatus, number>> {
  const counts = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0])) as Record<TaskStatus, number>;
  const rows = (await store.sql("SELECT status, COUNT(*) AS count FROM tasks GROUP BY status")) as {
    status: TaskStatus;
    count: number;
  }[];
  for (const { status, count } of rows) counts[status] = count;
  return counts;
}

async function expectCountsToMatchRows(store: CountedStore): Promise<void> {
  expect(await store.taskCounts()).toEqual(await countedStatuses(store));
  for (const agent of AGENTS)
    expect(await store.agentStats(agent), agent).toEqual(await countedStats(store, agent));
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
    ack_ms: null,
    timeout_ms: null,
    max_attempts: 1,
    retry_backoff_ms: 0,
    failures: 0,
    failed_agents: [],
    declined_agents: [],
    opens_at: null,
    due_at: null,
    retry_of: null,
    retried_by: null,
    depends_on: [],
    waiting_on: [],
    schedule_id: null,
    award: "lowest",
  };
}

describe.each(ENGINES)("counts kept beside the rows on $name", ({ name: engine }) => {
  it("say what counting the rows says, after any sequence of task and bid writes", async () => {
    const postgres = engine === "postgres" ? await postgresStores() : undefined;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.oneof(taskWrite, bidWrite), { maxLength: 40 }), async (writes) => {
          const store = postgres === undefined ? sqliteStore(openTestLog()) : await postgres.open();
          try {
            await addAgents(store);
            const known = new Set<string>();
            for (const write of writes) {
              if (write.kind === "task") {
                await store.write([{ agents: [], tasks: [task(write)], bids: [] }]);
                known.add(write.id);
                continue;
              }
              // A bid needs its task's row; a write the coordinator would make in the same transaction.
              const changes: StateChanges[] = [];
              if (!known.has(write.task_id)) {
                changes.push({
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
              changes.push({ agents: [], tasks: [], bids: [bid] });
              await store.write(changes);
            }
            await expectCountsToMatchRows(store);
          } finally {
            await store.close();
          }
        }),
        { numRuns: 100 },
      );
    } finally {
      await postgres?.end();
    }
  });
});

// SQLite only: PostgreSQL's schema has kept these counts since its first coordinator migration
// (002), so no PostgreSQL database older than them exists; and the plans are SQLite's planner's.
describe("counts kept beside the rows on SQLite", () => {
  it("are counted from the rows already there when a database older than them is opened", async () => {
    const path = tempDbPath();
    const old = openDatabase({ path, migrations: loadMigrations().slice(0, 5) });
    const addAgent = old.prepare(
      "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES (?, ?, '[]', 1, 'idle', ?, ?)",
    );
    for (const id of AGENTS) addAgent.run(id, `agent ${id}`, NOW, NOW);
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
    const store = sqliteStore(log);
    expect(await store.agentStats("a1")).toMatchObject({
      bids: 1,
      wins: 1,
      tasks_completed: 1,
      tasks_failed: 1,
      earned_sats: 40,
    });
    expect(await store.agentStats("a3")).toMatchObject({ bids: 0, wins: 0 });
    await expectCountsToMatchRows(store);
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

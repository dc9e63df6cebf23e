/**
 * The counters kept beside the tasks and bids on PostgreSQL are append-only deltas folded into
 * their totals in the background (db/migrations/postgres/004): a read says the same before and
 * after a fold, folds running at once (from two replicas) count nothing twice, and a fold while
 * tasks keep changing loses nothing.
 */
import { TASK_STATUSES } from "../../src/coordinator/types.js";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { openPool } from "../../src/storage/postgres/database.js";
import { PostgresCoordinatorStore } from "../../src/storage/postgres/coordinator-store.js";
import { PostgresEventLog } from "../../src/storage/postgres/event-log.js";
import { silentLogger } from "../helpers/event-log.js";
import { createTestDatabase, havePostgres } from "../helpers/postgres.js";

const NOW = "2026-01-01T00:00:00.000Z";
const STATUSES = ["bidding", "assigned", "running", "completed", "failed", "cancelled"] as const;

describe.skipIf(!havePostgres)("the counters on PostgreSQL", () => {
  it("read the same before and after folds, however many run at once, while tasks keep changing", async () => {
    const url = await createTestDatabase();
    const log = new PostgresEventLog({ url, logger: silentLogger });
    await log.whenReady();
    // A second process's pool, as the product opens it (with its error handling: a connection the
    // server ends while idle must not become an uncaught error).
    const other = openPool({ url, maxConnections: 4, logger: silentLogger });
    try {
      const store = new PostgresCoordinatorStore(log.pool);
      const sql = (text: string, params: unknown[] = []) => log.pool.query(text, params);
      await sql(
        "INSERT INTO agents (id, name, capabilities, max_concurrent, status, registered_at, last_seen) VALUES " +
          "('a1', 'one', '[]', 5, 'idle', $1, $1), ('a2', 'two', '[]', 5, 'idle', $1, $1)",
        [NOW],
      );
      const change = async (i: number) => {
        const id = `t${i}`;
        await sql(
          "INSERT INTO tasks (id, description, status, required_capabilities, auction_ms, attempt, created_at) " +
            "VALUES ($1, $1, 'bidding', '[]', 1000, 1, $2)",
          [id, NOW],
        );
        await sql(
          "INSERT INTO bids (task_id, attempt, agent_id, bid_sats, bid_order, placed_at, outcome) VALUES " +
            "($1, 1, 'a1', 10, 1, $2, 'won'), ($1, 1, 'a2', 20, 2, $2, 'lost')",
          [id, NOW],
        );
        const status = STATUSES[i % STATUSES.length] as string;
        await sql(
          "UPDATE tasks SET status = $2, assigned_agent = 'a1', winning_bid_sats = 10 WHERE id = $1",
          [id, status],
        );
      };
      for (let i = 0; i < 30; i += 1) await change(i);

      const truth = async () => {
        const counts = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0]));
        for (const row of (await sql("SELECT status, COUNT(*)::int AS n FROM tasks GROUP BY status")).rows)
          counts[row.status as string] = row.n as number;
        return counts;
      };
      const before = { counts: await store.taskCounts(), a1: await store.agentStats("a1") };
      expect(before.counts).toEqual(await truth());
      expect(before.a1).toMatchObject({ bids: 30, wins: 30, tasks_completed: 5, tasks_failed: 5 });

      // Two replicas' folds at once, and more tasks changing meanwhile.
      const fold = (pool: pg.Pool) => pool.query("SELECT swarm_fold_counters()");
      await Promise.all([
        fold(log.pool),
        fold(other),
        fold(other),
        (async () => {
          for (let i = 30; i < 42; i += 1) await change(i);
        })(),
      ]);
      await fold(other);
      const deltas = await sql(
        "SELECT (SELECT COUNT(*) FROM task_status_count_deltas)::int AS tasks, (SELECT COUNT(*) FROM agent_stats_deltas)::int AS agents",
      );
      expect(deltas.rows[0]).toEqual({ tasks: 0, agents: 0 });
      expect(await store.taskCounts()).toEqual(await truth());
      expect(await store.agentStats("a1")).toMatchObject({
        bids: 42,
        wins: 42,
        tasks_completed: 7,
        tasks_failed: 7,
      });
      expect(await store.agentStats("a2")).toMatchObject({ bids: 42, wins: 0 });
      // Removing tasks counts down through the deltas too.
      await sql("DELETE FROM bids");
      await sql("DELETE FROM tasks WHERE status = 'completed'");
      expect(await store.taskCounts()).toEqual(await truth());
      expect(await store.agentStats("a1")).toMatchObject({
        bids: 0,
        wins: 0,
        tasks_completed: 0,
        tasks_failed: 7,
      });
    } finally {
      await other.end();
      await log.close();
    }
  });
});

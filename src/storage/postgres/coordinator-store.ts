/**
 * The coordinator's tables on PostgreSQL: a decision's records written inside the caller's
 * transaction (so they commit with its events), the working set, and every read the API and
 * dashboard make, answering exactly as the SQLite store does (test/storage/coordinator-store.test.ts
 * holds them side by side). `pos` stands in for SQLite's rowid as the paging cursor.
 */
import type pg from "pg";
import type { Agent, AgentStatus, Bid, StateChanges, Task, TaskStatus } from "../../coordinator/types.js";
import {
  AGENT_COLUMN_LIST,
  AGENT_COLUMNS,
  AGENT_UPSERT_SET,
  BID_COLUMNS,
  BOARD_ORDER,
  countsByStatus,
  statsOf,
  TASK_COLUMN_LIST,
  TASK_COLUMNS,
  TASK_UPSERT_SET,
  toAgent,
  toTask,
  toTaskRow,
  type AgentRow,
  type AgentStats,
  type AgentStatsRow,
  type AuctionSize,
  type BidCursor,
  type BoardCursor,
  type SealedRound,
  type TaskListFilter,
  type TaskPruneChunk,
  type TaskRow,
} from "../coordinator-records.js";
import { inTransaction } from "./database.js";

type Queryable = pg.Pool | pg.PoolClient;

const placeholders = (count: number, from = 1) =>
  Array.from({ length: count }, (_, i) => `$${i + from}`).join(", ");

export const PG_STORE_SQL = {
  upsertAgent:
    `INSERT INTO agents (${AGENT_COLUMNS}) VALUES (${placeholders(AGENT_COLUMN_LIST.length)}) ` +
    `ON CONFLICT (id) DO UPDATE SET ${AGENT_UPSERT_SET}`,
  upsertTask:
    `INSERT INTO tasks (${TASK_COLUMNS}) VALUES (${placeholders(TASK_COLUMN_LIST.length)}) ` +
    `ON CONFLICT (id) DO UPDATE SET ${TASK_UPSERT_SET}`,
  upsertBid:
    `INSERT INTO bids (${BID_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ` +
    "ON CONFLICT (task_id, attempt, agent_id) DO UPDATE SET bid_sats = excluded.bid_sats, " +
    "bid_order = excluded.bid_order, placed_at = excluded.placed_at, outcome = excluded.outcome",
  upsertBids:
    `INSERT INTO bids (${BID_COLUMNS}) SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], ` +
    "$5::int[], $6::text[], $7::text[]) " +
    "ON CONFLICT (task_id, attempt, agent_id) DO UPDATE SET bid_sats = excluded.bid_sats, " +
    "bid_order = excluded.bid_order, placed_at = excluded.placed_at, outcome = excluded.outcome",
  // Registration order, so both engines hand decide the same working set.
  allAgents: `SELECT ${AGENT_COLUMNS} FROM agents ORDER BY pos`,
  activeTasks: `SELECT ${TASK_COLUMNS} FROM tasks WHERE status IN ('waiting', 'bidding', 'assigned', 'running') ORDER BY pos`,
  // The current round's bids of tasks in their auction or awarded (an award may pass on).
  openBids:
    `SELECT ${BID_COLUMNS.split(", ")
      .map((c) => `b.${c}`)
      .join(", ")} FROM tasks t ` +
    "JOIN bids b ON b.task_id = t.id AND b.attempt = t.attempt WHERE t.status IN ('bidding', 'assigned') " +
    "ORDER BY b.task_id, b.bid_order",
  // Every task holding an agent (for loads), and the other active tasks the batch names.
  tasksInScope:
    `SELECT ${TASK_COLUMNS} FROM tasks WHERE status IN ('assigned', 'running') ` +
    "OR (status IN ('waiting', 'bidding') AND id = ANY($1)) ORDER BY pos",
  openBidsOf:
    `SELECT ${BID_COLUMNS.split(", ")
      .map((c) => `b.${c}`)
      .join(", ")} FROM tasks t ` +
    "JOIN bids b ON b.task_id = t.id AND b.attempt = t.attempt WHERE t.status IN ('bidding', 'assigned') " +
    "AND t.id = ANY($1) ORDER BY b.task_id, b.bid_order",
  taskById: `SELECT ${TASK_COLUMNS} FROM tasks WHERE id = $1`,
  agentById: `SELECT ${AGENT_COLUMNS} FROM agents WHERE id = $1`,
  bidsOfTask: `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = $1 ORDER BY attempt, bid_order`,
  bidPage:
    `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = $1 AND (attempt, agent_id) > ($2, $3) AND attempt < $4::bigint ` +
    "ORDER BY attempt, agent_id LIMIT $5",
  bidCountsByRound: "SELECT attempt, COUNT(*) AS count FROM bids WHERE task_id = $1 GROUP BY attempt",
  lowestBids:
    `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = $1 AND attempt = $2 ` +
    "ORDER BY outcome IS NOT DISTINCT FROM 'won' DESC, bid_sats, bid_order LIMIT $3",
  ownBid: `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = $1 AND attempt = $2 AND agent_id = $3`,
  // The totals plus the deltas not yet folded into them (db/migrations/postgres/004). No row:
  // SUM over nothing is NULL, read as no record yet.
  agentStats:
    "SELECT SUM(bids) AS bids, SUM(wins) AS wins, SUM(won_sats) AS won_sats, SUM(tasks_completed) AS tasks_completed, " +
    "SUM(tasks_failed) AS tasks_failed, SUM(earned_sats) AS earned_sats FROM (" +
    "SELECT bids, wins, won_sats, tasks_completed, tasks_failed, earned_sats FROM agent_stats WHERE agent_id = $1 " +
    "UNION ALL SELECT bids, wins, won_sats, tasks_completed, tasks_failed, earned_sats FROM agent_stats_deltas WHERE agent_id = $1" +
    ") AS rows HAVING COUNT(*) > 0",
  taskCounts:
    "SELECT status, SUM(count) AS count FROM (SELECT status, count FROM task_status_counts " +
    "UNION ALL SELECT status, delta FROM task_status_count_deltas) AS rows GROUP BY status",
  foldCounters: "SELECT swarm_fold_counters()",
  agentPage: `SELECT pos AS cursor, ${AGENT_COLUMNS} FROM agents WHERE pos > $1 ORDER BY pos LIMIT $2`,
  agentPageByStatus: `SELECT pos AS cursor, ${AGENT_COLUMNS} FROM agents WHERE status = $1 AND pos > $2 ORDER BY pos LIMIT $3`,
  // SQLite's `name COLLATE NOCASE`: ASCII letters folded, then byte order, then registration.
  boardPage:
    `SELECT pos AS cursor, ${AGENT_COLUMNS} FROM agents WHERE status = $1 AND left_at IS NULL ` +
    `AND (swarm_ascii_lower(name) COLLATE "C", pos) > (swarm_ascii_lower($2) COLLATE "C", $3) ` +
    `ORDER BY swarm_ascii_lower(name) COLLATE "C", pos LIMIT $4`,
  recentAuctions:
    "SELECT t.id AS task_id, t.description, t.status, t.attempt, t.winning_bid_sats, " +
    "(SELECT COUNT(*) FROM bids b WHERE b.task_id = t.id AND b.attempt = t.attempt) AS bids " +
    "FROM (SELECT pos, id, description, status, attempt, winning_bid_sats FROM tasks ORDER BY pos DESC LIMIT $1) t " +
    "ORDER BY t.pos",
  finishedTasksBefore:
    "SELECT id FROM tasks WHERE completed_at < $1 AND status IN ('completed', 'failed', 'cancelled') " +
    "ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
  deleteTaskBids: "DELETE FROM bids WHERE task_id = ANY($1::text[])",
  deleteTaskKeys: "DELETE FROM idempotency_keys WHERE task_id = ANY($1::text[])",
  deleteTasks: "DELETE FROM tasks WHERE id = ANY($1::text[])",
  leftAgentsBefore:
    "SELECT id, left_at FROM agents WHERE left_at < $1 AND (left_at, id) > ($2, $3) ORDER BY left_at, id LIMIT $4",
  agentIsNamed:
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE assigned_agent = $1) OR EXISTS (SELECT 1 FROM bids WHERE agent_id = $1) AS named",
  deleteAgentTokens: "DELETE FROM agent_tokens WHERE agent_id = $1",
  deleteAgentUsage: "DELETE FROM agent_report_usage WHERE agent_id = $1",
  deleteAgent: "DELETE FROM agents WHERE id = $1",
  expiredKeys:
    "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
  taskReports: "SELECT id, reported_events FROM tasks WHERE id = ANY($1)",
  agentBytes:
    "SELECT agent_id, CASE WHEN hour = $2 THEN bytes ELSE 0 END AS bytes FROM agent_report_usage WHERE agent_id = ANY($1)",
  addTaskReports:
    "UPDATE tasks t SET reported_events = t.reported_events + d.n " +
    "FROM unnest($1::text[], $2::int[]) AS d (id, n) WHERE t.id = d.id",
  addAgentBytes:
    "INSERT INTO agent_report_usage (agent_id, hour, bytes) SELECT d.agent_id, $3, d.bytes " +
    "FROM unnest($1::text[], $2::bigint[]) AS d (agent_id, bytes) ON CONFLICT (agent_id) DO UPDATE SET " +
    "bytes = CASE WHEN agent_report_usage.hour = excluded.hour THEN agent_report_usage.bytes + excluded.bytes " +
    "ELSE excluded.bytes END, hour = excluded.hour",
} as const;

/** The task list's SQL for a filter shape: newest first from a cursor, by status, agent, both or neither. */
function taskListSql(filter: { status: boolean; agent: boolean }): string {
  const where = ["pos < $1"];
  if (filter.status) where.push(`status = $${where.length + 1}`);
  if (filter.agent) where.push(`assigned_agent = $${where.length + 1}`);
  return `SELECT pos AS cursor, ${TASK_COLUMNS} FROM tasks WHERE ${where.join(" AND ")} ORDER BY pos DESC LIMIT $${where.length + 1}`;
}

async function rows<R extends pg.QueryResultRow>(
  db: Queryable,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  return (await db.query<R>(sql, params)).rows;
}

export class PostgresCoordinatorStore {
  constructor(readonly pool: pg.Pool) {}

  /** Write a decision's records, inside the caller's transaction (`client`). */
  async apply(client: Queryable, changes: StateChanges): Promise<void> {
    for (const agent of changes.agents) {
      await client.query(
        PG_STORE_SQL.upsertAgent,
        AGENT_COLUMN_LIST.map((column) =>
          column === "capabilities" ? JSON.stringify(agent.capabilities) : agent[column],
        ),
      );
    }
    for (const task of changes.tasks) {
      const row = toTaskRow(task);
      await client.query(
        PG_STORE_SQL.upsertTask,
        TASK_COLUMN_LIST.map((column) => row[column]),
      );
    }
    for (const bid of changes.bids) {
      await client.query(PG_STORE_SQL.upsertBid, [
        bid.task_id,
        bid.attempt,
        bid.agent_id,
        bid.bid_sats,
        bid.bid_order,
        bid.placed_at,
        bid.outcome,
      ]);
    }
  }

  /** As `apply`, the bids in one statement: a batch's flush (command-runner.ts). */
  async applyMany(client: Queryable, changes: StateChanges): Promise<void> {
    await this.apply(client, { ...changes, bids: [] });
    const { bids } = changes;
    if (bids.length === 0) return;
    await client.query(PG_STORE_SQL.upsertBids, [
      bids.map((bid) => bid.task_id),
      bids.map((bid) => bid.attempt),
      bids.map((bid) => bid.agent_id),
      bids.map((bid) => bid.bid_sats),
      bids.map((bid) => bid.bid_order),
      bids.map((bid) => bid.placed_at),
      bids.map((bid) => bid.outcome),
    ]);
  }

  /** The report counters of these tasks and agents, this hour's bytes (see ReportLedger in command-runner.ts). */
  async reportCounters(
    client: Queryable,
    taskIds: readonly string[],
    agentIds: readonly string[],
    hour: string,
  ): Promise<{ tasks: Map<string, number>; agents: Map<string, number> }> {
    const tasks = new Map<string, number>();
    const agents = new Map<string, number>();
    for (const row of await rows<{ id: string; reported_events: number }>(client, PG_STORE_SQL.taskReports, [
      taskIds,
    ]))
      tasks.set(row.id, row.reported_events);
    for (const row of await rows<{ agent_id: string; bytes: string }>(client, PG_STORE_SQL.agentBytes, [
      agentIds,
      hour,
    ]))
      agents.set(row.agent_id, Number(row.bytes)); // bigint arrives as a string
    return { tasks, agents };
  }

  /** Add to the report counters: events per task, bytes per agent in `hour`. */
  async addReports(
    client: Queryable,
    tasks: ReadonlyMap<string, number>,
    agents: ReadonlyMap<string, number>,
    hour: string,
  ): Promise<void> {
    if (tasks.size > 0)
      await client.query(PG_STORE_SQL.addTaskReports, [[...tasks.keys()], [...tasks.values()]]);
    if (agents.size > 0)
      await client.query(PG_STORE_SQL.addAgentBytes, [[...agents.keys()], [...agents.values()], hour]);
  }

  /**
   * Delete up to `limit` tasks that ended before `cutoff`, oldest first, with their bids and
   * Idempotency-Keys, inside the caller's transaction. Rows another process is deleting are
   * passed over (SKIP LOCKED), not waited for.
   */
  async deleteFinishedTasks(client: Queryable, cutoff: string, limit: number): Promise<TaskPruneChunk> {
    const ids = (await rows<{ id: string }>(client, PG_STORE_SQL.finishedTasksBefore, [cutoff, limit])).map(
      (row) => row.id,
    );
    if (ids.length === 0) return { tasks: 0, bids: 0, idempotency_keys: 0 };
    const bids = (await client.query(PG_STORE_SQL.deleteTaskBids, [ids])).rowCount ?? 0;
    const keys = (await client.query(PG_STORE_SQL.deleteTaskKeys, [ids])).rowCount ?? 0;
    const tasks = (await client.query(PG_STORE_SQL.deleteTasks, [ids])).rowCount ?? 0;
    return { tasks, bids, idempotency_keys: keys };
  }

  /** As the SQLite store's: agents that left before `cutoff` and that nothing kept names any more. */
  async deleteLeftAgents(
    client: Queryable,
    cutoff: string,
    after: { left_at: string; id: string },
    limit: number,
  ): Promise<{ deleted: string[]; examined: number; next: { left_at: string; id: string } }> {
    const candidates = await rows<{ id: string; left_at: string }>(client, PG_STORE_SQL.leftAgentsBefore, [
      cutoff,
      after.left_at,
      after.id,
      limit,
    ]);
    const deleted: string[] = [];
    for (const { id } of candidates) {
      const named = (await rows<{ named: boolean }>(client, PG_STORE_SQL.agentIsNamed, [id]))[0]?.named;
      if (named === true) continue;
      await client.query(PG_STORE_SQL.deleteAgentTokens, [id]);
      await client.query(PG_STORE_SQL.deleteAgentUsage, [id]);
      await client.query(PG_STORE_SQL.deleteAgent, [id]);
      deleted.push(id);
    }
    return { deleted, examined: candidates.length, next: candidates.at(-1) ?? after };
  }

  async deleteExpiredKeys(client: Queryable, cutoff: string, limit: number): Promise<number> {
    return (await client.query(PG_STORE_SQL.expiredKeys, [cutoff, limit])).rowCount ?? 0;
  }

  /**
   * The open auction rounds and the newest seq, from one snapshot: the rounds are exactly those
   * the log up to that seq leaves open (see OpenRounds).
   */
  async openRoundSnapshot(
    pool: pg.Pool,
  ): Promise<{ seq: number; rounds: { task_id: string; attempt: number }[] }> {
    return inTransaction(
      pool,
      async (client) => {
        const head = await rows<{ last_seq: number }>(
          client,
          "SELECT last_seq FROM event_log_head WHERE id = 1",
          [],
        );
        const open = await rows<{ task_id: string; attempt: number }>(
          client,
          "SELECT id AS task_id, attempt FROM tasks WHERE status = 'bidding'",
          [],
        );
        return { seq: head[0]?.last_seq ?? 0, rounds: open };
      },
      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    );
  }

  /** Everything the core needs in memory: all agents, the live tasks, the bids of open auctions. */
  async loadWorkingSet(db: Queryable = this.pool): Promise<StateChanges> {
    return {
      agents: (await rows<AgentRow>(db, PG_STORE_SQL.allAgents)).map(toAgent),
      tasks: (await rows<TaskRow>(db, PG_STORE_SQL.activeTasks)).map(toTask),
      bids: await rows<Bid>(db, PG_STORE_SQL.openBids),
    };
  }

  /**
   * The part of the working set a batch of commands can read (see bidsReadBy in
   * command-runner.ts): every agent, every task an agent holds (its load), the open auctions the
   * batch locked (those it names, or a Tick's claimed), and the bids of only the rounds `bidsOf`
   * picks from them. Reading every open auction and its bids per batch cost tens of thousands of
   * rows with a few thousand auctions open.
   */
  async loadWorkingSetScoped(
    db: Queryable,
    taskIds: readonly string[],
    bidsOf: (tasks: readonly Task[]) => readonly string[],
  ): Promise<StateChanges> {
    const agents = (await rows<AgentRow>(db, PG_STORE_SQL.allAgents)).map(toAgent);
    const tasks = (await rows<TaskRow>(db, PG_STORE_SQL.tasksInScope, [taskIds])).map(toTask);
    const ids = bidsOf(tasks);
    const bids = ids.length === 0 ? [] : await rows<Bid>(db, PG_STORE_SQL.openBidsOf, [ids]);
    return { agents, tasks, bids };
  }

  async getTask(id: string, db: Queryable = this.pool): Promise<Task | undefined> {
    const row = (await rows<TaskRow>(db, PG_STORE_SQL.taskById, [id]))[0];
    return row === undefined ? undefined : toTask(row);
  }

  async getAgent(id: string): Promise<Agent | undefined> {
    const row = (await rows<AgentRow>(this.pool, PG_STORE_SQL.agentById, [id]))[0];
    return row === undefined ? undefined : toAgent(row);
  }

  /** Every bid the task received, all rounds, in the order placed. */
  getBids(taskId: string): Promise<Bid[]> {
    return rows<Bid>(this.pool, PG_STORE_SQL.bidsOfTask, [taskId]);
  }

  /** A page of the task's bids by round, then agent id (see the SQLite store's for `sealed`). */
  async listBids(filter: {
    task_id: string;
    after?: BidCursor;
    sealed?: SealedRound;
    limit: number;
  }): Promise<{
    bids: Bid[];
    next_cursor: BidCursor | null;
  }> {
    const after = filter.after ?? { attempt: 0, agent_id: "" };
    const sealed = filter.sealed;
    const found = await rows<Bid>(this.pool, PG_STORE_SQL.bidPage, [
      filter.task_id,
      after.attempt,
      after.agent_id,
      sealed?.attempt ?? Number.MAX_SAFE_INTEGER,
      filter.limit + 1,
    ]);
    if (found.length <= filter.limit && sealed !== undefined && sealed.ownAgent !== null) {
      const own = (
        await rows<Bid>(this.pool, PG_STORE_SQL.ownBid, [filter.task_id, sealed.attempt, sealed.ownAgent])
      )[0];
      const isAfter =
        own !== undefined &&
        (own.attempt > after.attempt || (own.attempt === after.attempt && own.agent_id > after.agent_id));
      if (own !== undefined && isAfter) found.push(own);
    }
    const bids = found.slice(0, filter.limit);
    const last = bids.at(-1);
    return {
      bids,
      next_cursor:
        found.length > filter.limit && last !== undefined
          ? { attempt: last.attempt, agent_id: last.agent_id }
          : null,
    };
  }

  /** Each round of the task, newest first, with its winner and lowest `limit` bids and how many it drew. */
  async bidRounds(
    taskId: string,
    limit: number,
    sealed?: SealedRound,
  ): Promise<{ attempt: number; count: number; bids: Bid[] }[]> {
    const rounds = (
      await rows<{ attempt: number; count: number }>(this.pool, PG_STORE_SQL.bidCountsByRound, [taskId])
    ).sort((a, b) => b.attempt - a.attempt);
    const result: { attempt: number; count: number; bids: Bid[] }[] = [];
    for (const { attempt, count } of rounds) {
      if (sealed?.attempt !== attempt) {
        result.push({
          attempt,
          count,
          bids: await rows<Bid>(this.pool, PG_STORE_SQL.lowestBids, [taskId, attempt, limit]),
        });
        continue;
      }
      const own =
        sealed.ownAgent === null
          ? undefined
          : (await rows<Bid>(this.pool, PG_STORE_SQL.ownBid, [taskId, attempt, sealed.ownAgent]))[0];
      result.push({ attempt, count, bids: own === undefined ? [] : [own] });
    }
    return result;
  }

  /** A page of agents in registration order after the `after` cursor; the cursor is null on the last page. */
  async listAgents(filter: { status?: AgentStatus; after?: number; limit: number }): Promise<{
    agents: Agent[];
    next_cursor: string | null;
  }> {
    const after = filter.after ?? 0;
    const found =
      filter.status === undefined
        ? await rows<AgentRow & { cursor: number }>(this.pool, PG_STORE_SQL.agentPage, [
            after,
            filter.limit + 1,
          ])
        : await rows<AgentRow & { cursor: number }>(this.pool, PG_STORE_SQL.agentPageByStatus, [
            filter.status,
            after,
            filter.limit + 1,
          ]);
    const shown = found.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      agents: shown.map(({ cursor: _cursor, ...row }) => toAgent(row)),
      next_cursor: found.length > filter.limit && last !== undefined ? String(last.cursor) : null,
    };
  }

  /** A page of the dashboard's agent list: busy, then idle, then offline, by name (ASCII case folded). */
  async boardAgents(filter: { after?: BoardCursor; limit: number }): Promise<{
    agents: Agent[];
    next_cursor: BoardCursor | null;
  }> {
    const found: (AgentRow & { cursor: number })[] = [];
    const start = filter.after === undefined ? 0 : BOARD_ORDER.indexOf(filter.after.status);
    for (let i = start; i < BOARD_ORDER.length && found.length <= filter.limit; i += 1) {
      const status = BOARD_ORDER[i] as AgentStatus;
      const from = filter.after !== undefined && i === start ? filter.after : { name: "", rowid: 0 };
      found.push(
        ...(await rows<AgentRow & { cursor: number }>(this.pool, PG_STORE_SQL.boardPage, [
          status,
          from.name,
          from.rowid,
          filter.limit + 1 - found.length,
        ])),
      );
    }
    const shown = found.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      agents: shown.map(({ cursor: _cursor, ...row }) => toAgent(row)),
      next_cursor:
        found.length > filter.limit && last !== undefined
          ? { status: last.status, name: last.name, rowid: last.cursor }
          : null,
    };
  }

  /** A page of tasks, newest first, and the cursor for the next page (null on the last). */
  async listTasks(filter: TaskListFilter): Promise<{ tasks: Task[]; next_cursor: string | null }> {
    const params: (string | number)[] = [filter.before ?? Number.MAX_SAFE_INTEGER];
    if (filter.status !== undefined) params.push(filter.status);
    if (filter.agent_id !== undefined) params.push(filter.agent_id);
    const sql = taskListSql({ status: filter.status !== undefined, agent: filter.agent_id !== undefined });
    const found = await rows<TaskRow & { cursor: number }>(this.pool, sql, [...params, filter.limit + 1]);
    const shown = found.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      tasks: shown.map(({ cursor: _cursor, ...row }) => toTask(row)),
      next_cursor: found.length > filter.limit && last !== undefined ? String(last.cursor) : null,
    };
  }

  /** Move the counters' deltas into their totals (db/migrations/postgres/004); safe at any time. */
  async foldCounters(): Promise<void> {
    await this.pool.query(PG_STORE_SQL.foldCounters);
  }

  async taskCounts(): Promise<Record<TaskStatus, number>> {
    return countsByStatus(
      await rows<{ status: TaskStatus; count: number }>(this.pool, PG_STORE_SQL.taskCounts),
    );
  }

  recentAuctions(limit: number): Promise<AuctionSize[]> {
    return rows<AuctionSize>(this.pool, PG_STORE_SQL.recentAuctions, [limit]);
  }

  async agentStats(agentId: string): Promise<AgentStats> {
    return statsOf((await rows<AgentStatsRow>(this.pool, PG_STORE_SQL.agentStats, [agentId]))[0]);
  }
}

/**
 * The coordinator's tables: prepared once, written only inside the event log's transactions
 * (so a command's records and its events commit together), read to load the working set at
 * start and to answer queries about finished tasks and agent stats.
 */
import type { Statement } from "better-sqlite3";
import type { SqliteDatabase } from "./database.js";
import type { AgentStatus, Bid, StateChanges, Task, TaskStatus, Agent } from "../../coordinator/types.js";
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

export {
  BOARD_ORDER,
  type AgentStats,
  type AuctionSize,
  type BidCursor,
  type BoardCursor,
  type SealedRound,
  type TaskListFilter,
  type TaskPruneChunk,
} from "../coordinator-records.js";

/** Every statement the store runs, in one place so the query-plan test can check them all. */
export const STORE_SQL = {
  upsertAgent:
    `INSERT INTO agents (${AGENT_COLUMNS}) VALUES (${AGENT_COLUMN_LIST.map((column) => `@${column}`).join(", ")}) ` +
    `ON CONFLICT (id) DO UPDATE SET ${AGENT_UPSERT_SET}`,
  upsertTask:
    `INSERT INTO tasks (${TASK_COLUMNS}) VALUES (${TASK_COLUMN_LIST.map((column) => `@${column}`).join(", ")}) ` +
    `ON CONFLICT (id) DO UPDATE SET ${TASK_UPSERT_SET}`,
  // A bid placed or replaced in an open round: its outcome is still NULL and stays so. Leaving
  // outcome out of the SET spares every replaced bid a rewrite of idx_bids_agent (SQLite
  // updates each index holding a column the SET names, changed or not).
  upsertOpenBid:
    `INSERT INTO bids (${BID_COLUMNS}) VALUES (@task_id, @attempt, @agent_id, @bid_sats, @bid_order, @placed_at, NULL) ` +
    "ON CONFLICT (task_id, attempt, agent_id) DO UPDATE SET bid_sats = excluded.bid_sats, " +
    "bid_order = excluded.bid_order, placed_at = excluded.placed_at",
  // A bid as its round closed, with its outcome.
  upsertBid:
    `INSERT INTO bids (${BID_COLUMNS}) VALUES (@task_id, @attempt, @agent_id, @bid_sats, @bid_order, @placed_at, @outcome) ` +
    "ON CONFLICT (task_id, attempt, agent_id) DO UPDATE SET bid_sats = excluded.bid_sats, " +
    "bid_order = excluded.bid_order, placed_at = excluded.placed_at, outcome = excluded.outcome",
  // Registration order, so both engines hand decide the same working set.
  allAgents: `SELECT ${AGENT_COLUMNS} FROM agents ORDER BY rowid`,
  activeTasks: `SELECT ${TASK_COLUMNS} FROM tasks WHERE status IN ('waiting', 'bidding', 'assigned', 'running') ORDER BY rowid`,
  // The current round's bids of tasks in their auction or awarded (an award may pass on).
  openBids:
    `SELECT ${BID_COLUMNS.split(", ")
      .map((c) => `b.${c}`)
      .join(", ")} FROM tasks t ` +
    "JOIN bids b ON b.task_id = t.id AND b.attempt = t.attempt WHERE t.status IN ('bidding', 'assigned') " +
    "ORDER BY b.task_id, b.bid_order",
  taskById: `SELECT ${TASK_COLUMNS} FROM tasks WHERE id = ?`,
  agentById: `SELECT ${AGENT_COLUMNS} FROM agents WHERE id = ?`,
  bidsOfTask: `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = ? ORDER BY attempt, bid_order`,
  // A page of a task's bids in primary-key order (round, then agent): a replaced bid keeps its
  // place, so a walk sees each agent's bid in a round once. Rounds from the fourth parameter on
  // are left out (a sealed round is always the task's last), so a page is one range of the key.
  bidPage:
    `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = ? AND (attempt, agent_id) > (?, ?) AND attempt < ? ` +
    "ORDER BY attempt, agent_id LIMIT ?",
  bidCountsByRound: "SELECT attempt, COUNT(*) AS count FROM bids WHERE task_id = ? GROUP BY attempt",
  // The winner first, then the lowest bids, earliest first among equals: what a round's panel shows.
  lowestBids:
    `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = ? AND attempt = ? ` +
    "ORDER BY outcome IS 'won' DESC, bid_sats, bid_order LIMIT ?",
  ownBid: `SELECT ${BID_COLUMNS} FROM bids WHERE task_id = ? AND attempt = ? AND agent_id = ?`,
  // Kept by triggers in the same transaction as the bids and tasks they count (migration 006):
  // one row, whatever the agent's history. Bids of open rounds are not counted until they close.
  agentStats:
    "SELECT bids, wins, won_sats, tasks_completed, tasks_failed, earned_sats FROM agent_stats WHERE agent_id = ?",
  taskCounts: "SELECT status, count FROM task_status_counts",
  // Agents in registration order, from a cursor (a rowid), optionally of one status.
  agentPage: `SELECT rowid AS cursor, ${AGENT_COLUMNS} FROM agents WHERE rowid > ? ORDER BY rowid LIMIT ?`,
  agentPageByStatus:
    `SELECT rowid AS cursor, ${AGENT_COLUMNS} FROM agents WHERE status = ? AND rowid > ? ` +
    "ORDER BY rowid LIMIT ?",
  // The dashboard's order within one status: by name, then rowid, after a cursor; those who left
  // are not listed. (name, rowid) > (?, ?) spelled out, as the planner turns only this form into a
  // range of the index instead of a walk from the start of the status.
  boardPage:
    `SELECT rowid AS cursor, ${AGENT_COLUMNS} FROM agents WHERE status = @status AND left_at IS NULL ` +
    "AND name >= @name COLLATE NOCASE AND (name > @name COLLATE NOCASE OR rowid > @rowid) " +
    "ORDER BY name COLLATE NOCASE, rowid LIMIT @limit",
  // The newest auctions with how many bids their current round drew, counted on the primary key
  // per task (a join grouped afterwards sorted every bid of a crowded auction first).
  recentAuctions:
    "SELECT t.id AS task_id, t.description, t.status, t.attempt, t.winning_bid_sats, " +
    "(SELECT COUNT(*) FROM bids b WHERE b.task_id = t.id AND b.attempt = t.attempt) AS bids " +
    "FROM (SELECT rowid, id, description, status, attempt, winning_bid_sats FROM tasks ORDER BY rowid DESC LIMIT ?) t " +
    "ORDER BY t.rowid",
  // ---- retention of finished work (see Coordinator.pruneFinished), a chunk at a time
  // Named index: given the status, the planner would read every final task by status and sort.
  // Only a final task has completed_at; the status is checked all the same.
  finishedTasksBefore:
    "SELECT id FROM tasks INDEXED BY idx_tasks_finished WHERE completed_at < ? " +
    "AND status IN ('completed', 'failed', 'cancelled') ORDER BY completed_at LIMIT ?",
  deleteTaskBids: "DELETE FROM bids WHERE task_id = ?",
  // The API's Idempotency-Keys reference their task, so they go with it.
  deleteTaskKeys: "DELETE FROM idempotency_keys WHERE task_id = ?",
  deleteTask: "DELETE FROM tasks WHERE id = ?",
  // After a (left_at, id) cursor, so agents passed over (still named by kept tasks or bids) are
  // not read again by every chunk.
  leftAgentsBefore:
    "SELECT id, left_at FROM agents WHERE left_at < ? AND (left_at, id) > (?, ?) ORDER BY left_at, id LIMIT ?",
  agentIsNamed:
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE assigned_agent = @id) OR EXISTS (SELECT 1 FROM bids WHERE agent_id = @id)",
  // Tokens are revoked when an agent leaves; any left by older versions go with it.
  deleteAgentTokens: "DELETE FROM agent_tokens WHERE agent_id = ?",
  deleteAgentUsage: "DELETE FROM agent_report_usage WHERE agent_id = ?",
  deleteAgent: "DELETE FROM agents WHERE id = ?",
  expiredKeys:
    "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
  // ---- counters for the caps on what agents report (see limits.ts)
  countTaskReports:
    "UPDATE tasks SET reported_events = reported_events + ? WHERE id = ? RETURNING reported_events",
  countAgentBytes:
    "INSERT INTO agent_report_usage (agent_id, hour, bytes) VALUES (@agent_id, @hour, @bytes) " +
    "ON CONFLICT (agent_id) DO UPDATE SET bytes = CASE WHEN hour = excluded.hour THEN bytes + excluded.bytes " +
    "ELSE excluded.bytes END, hour = excluded.hour RETURNING bytes",
} as const;

/**
 * A page of tasks newest first, from a cursor (a rowid), by status, agent, both or neither:
 * parameters in that order, then the limit. Each shape is a range of one index.
 */
export function taskListSql(filter: { status: boolean; agent: boolean }): string {
  const where = ["rowid < ?"];
  if (filter.status) where.push("status = ?");
  if (filter.agent) where.push("assigned_agent = ?");
  return `SELECT rowid AS cursor, ${TASK_COLUMNS} FROM tasks WHERE ${where.join(" AND ")} ORDER BY rowid DESC LIMIT ?`;
}

export class CoordinatorStore {
  private readonly statements: {
    upsertAgent: Statement;
    upsertTask: Statement;
    upsertBid: Statement;
    upsertOpenBid: Statement;
    allAgents: Statement<[], AgentRow>;
    activeTasks: Statement<[], TaskRow>;
    openBids: Statement<[], Bid>;
    taskById: Statement<[string], TaskRow>;
    agentById: Statement<[string], AgentRow>;
    bidsOfTask: Statement<[string], Bid>;
    bidPage: Statement<[string, number, string, number, number], Bid>;
    bidCountsByRound: Statement<[string], { attempt: number; count: number }>;
    lowestBids: Statement<[string, number, number], Bid>;
    ownBid: Statement<[string, number, string], Bid>;
    agentStats: Statement<[string], AgentStatsRow>;
    taskCounts: Statement<[], { status: TaskStatus; count: number }>;
    agentPage: Statement<[number, number], AgentRow & { cursor: number }>;
    agentPageByStatus: Statement<[string, number, number], AgentRow & { cursor: number }>;
    boardPage: Statement<
      [{ status: string; name: string; rowid: number; limit: number }],
      AgentRow & { cursor: number }
    >;
    recentAuctions: Statement<[number], AuctionSize>;
    finishedTasksBefore: Statement<[string, number], string>;
    deleteTaskBids: Statement<[string]>;
    deleteTaskKeys: Statement<[string]>;
    deleteTask: Statement<[string]>;
    leftAgentsBefore: Statement<[string, string, string, number], { id: string; left_at: string }>;
    agentIsNamed: Statement<[{ id: string }], number>;
    deleteAgentTokens: Statement<[string]>;
    deleteAgentUsage: Statement<[string]>;
    deleteAgent: Statement<[string]>;
    expiredKeys: Statement<[string, number]>;
    countTaskReports: Statement<[number, string], number>;
    countAgentBytes: Statement<[{ agent_id: string; hour: string; bytes: number }], number>;
  };

  private readonly listStatements = new Map<string, Statement<unknown[], TaskRow & { cursor: number }>>();

  constructor(readonly db: SqliteDatabase) {
    this.statements = {
      upsertAgent: db.prepare(STORE_SQL.upsertAgent),
      upsertTask: db.prepare(STORE_SQL.upsertTask),
      upsertBid: db.prepare(STORE_SQL.upsertBid),
      upsertOpenBid: db.prepare(STORE_SQL.upsertOpenBid),
      allAgents: db.prepare(STORE_SQL.allAgents),
      activeTasks: db.prepare(STORE_SQL.activeTasks),
      openBids: db.prepare(STORE_SQL.openBids),
      taskById: db.prepare(STORE_SQL.taskById),
      agentById: db.prepare(STORE_SQL.agentById),
      bidsOfTask: db.prepare(STORE_SQL.bidsOfTask),
      bidPage: db.prepare(STORE_SQL.bidPage),
      bidCountsByRound: db.prepare(STORE_SQL.bidCountsByRound),
      lowestBids: db.prepare(STORE_SQL.lowestBids),
      ownBid: db.prepare(STORE_SQL.ownBid),
      agentStats: db.prepare(STORE_SQL.agentStats),
      taskCounts: db.prepare(STORE_SQL.taskCounts),
      agentPage: db.prepare(STORE_SQL.agentPage),
      agentPageByStatus: db.prepare(STORE_SQL.agentPageByStatus),
      boardPage: db.prepare(STORE_SQL.boardPage),
      recentAuctions: db.prepare(STORE_SQL.recentAuctions),
      finishedTasksBefore: db.prepare<[string, number], string>(STORE_SQL.finishedTasksBefore).pluck(),
      deleteTaskBids: db.prepare(STORE_SQL.deleteTaskBids),
      deleteTaskKeys: db.prepare(STORE_SQL.deleteTaskKeys),
      deleteTask: db.prepare(STORE_SQL.deleteTask),
      leftAgentsBefore: db.prepare(STORE_SQL.leftAgentsBefore),
      agentIsNamed: db.prepare<[{ id: string }], number>(STORE_SQL.agentIsNamed).pluck(),
      deleteAgentTokens: db.prepare(STORE_SQL.deleteAgentTokens),
      deleteAgentUsage: db.prepare(STORE_SQL.deleteAgentUsage),
      deleteAgent: db.prepare(STORE_SQL.deleteAgent),
      expiredKeys: db.prepare(STORE_SQL.expiredKeys),
      countTaskReports: db.prepare<[number, string], number>(STORE_SQL.countTaskReports).pluck(),
      countAgentBytes: db
        .prepare<[{ agent_id: string; hour: string; bytes: number }], number>(STORE_SQL.countAgentBytes)
        .pluck(),
    };
  }

  /** Write a decision's records. Must run inside the event log's transaction. */
  apply(changes: StateChanges): void {
    for (const agent of changes.agents) {
      this.statements.upsertAgent.run({ ...agent, capabilities: JSON.stringify(agent.capabilities) });
    }
    for (const task of changes.tasks) {
      this.statements.upsertTask.run(toTaskRow(task));
    }
    for (const bid of changes.bids) {
      if (bid.outcome === null) this.statements.upsertOpenBid.run(bid);
      else this.statements.upsertBid.run(bid);
    }
  }

  /**
   * Count `events` more agent reports on the task and `bytes` more for the agent in `hour`
   * (YYYY-MM-DDTHH); returns both totals as they now stand. Must run inside the command's
   * transaction, so that a refusal on these totals takes the counts back with everything else.
   */
  countReports(
    taskId: string | undefined,
    agentId: string,
    hour: string,
    events: number,
    bytes: number,
  ): { taskEvents: number | undefined; agentBytes: number } {
    return {
      taskEvents: taskId === undefined ? undefined : this.statements.countTaskReports.get(events, taskId),
      agentBytes: this.statements.countAgentBytes.get({ agent_id: agentId, hour, bytes }) ?? bytes,
    };
  }

  /**
   * Delete up to `limit` tasks that ended before `cutoff`, oldest first, with their bids and
   * Idempotency-Keys. Must run inside a transaction, so a task never goes without its bids.
   */
  deleteFinishedTasks(cutoff: string, limit: number): TaskPruneChunk {
    const removed: TaskPruneChunk = { tasks: 0, bids: 0, idempotency_keys: 0 };
    for (const id of this.statements.finishedTasksBefore.all(cutoff, limit)) {
      removed.bids += this.statements.deleteTaskBids.run(id).changes;
      removed.idempotency_keys += this.statements.deleteTaskKeys.run(id).changes;
      removed.tasks += this.statements.deleteTask.run(id).changes;
    }
    return removed;
  }

  /**
   * Go through up to `limit` agents that left before `cutoff`, after the cursor, and delete those
   * no task or bid names any more; the others wait until their last task is pruned. Returns the
   * agents deleted, how many were gone through, and the cursor to carry on from. Must run inside a
   * transaction.
   */
  deleteLeftAgents(
    cutoff: string,
    after: { left_at: string; id: string },
    limit: number,
  ): { deleted: string[]; examined: number; next: { left_at: string; id: string } } {
    const candidates = this.statements.leftAgentsBefore.all(cutoff, after.left_at, after.id, limit);
    const deleted: string[] = [];
    for (const { id } of candidates) {
      if (this.statements.agentIsNamed.get({ id }) === 1) continue;
      this.statements.deleteAgentTokens.run(id);
      this.statements.deleteAgentUsage.run(id);
      this.statements.deleteAgent.run(id);
      deleted.push(id);
    }
    return { deleted, examined: candidates.length, next: candidates.at(-1) ?? after };
  }

  /** Delete up to `limit` Idempotency-Keys stored before `cutoff`; returns how many. */
  deleteExpiredKeys(cutoff: string, limit: number): number {
    return this.statements.expiredKeys.run(cutoff, limit).changes;
  }

  /** Everything the core needs in memory: all agents, the live tasks, the bids of open auctions. */
  loadWorkingSet(): StateChanges {
    return {
      agents: this.statements.allAgents.all().map(toAgent),
      tasks: this.statements.activeTasks.all().map(toTask),
      bids: this.statements.openBids.all(),
    };
  }

  getTask(id: string): Task | undefined {
    const row = this.statements.taskById.get(id);
    return row === undefined ? undefined : toTask(row);
  }

  getAgent(id: string): Agent | undefined {
    const row = this.statements.agentById.get(id);
    return row === undefined ? undefined : toAgent(row);
  }

  /** Every bid the task received, all rounds, in the order placed. Unbounded: for tests and tools, not requests. */
  getBids(taskId: string): Bid[] {
    return this.statements.bidsOfTask.all(taskId);
  }

  /**
   * A page of the task's bids by round, then agent id, after `after`; `sealed` leaves out the
   * bids of that round but for its own agent's. The cursor is the last bid's, null on the last page.
   */
  listBids(filter: { task_id: string; after?: BidCursor; sealed?: SealedRound; limit: number }): {
    bids: Bid[];
    next_cursor: BidCursor | null;
  } {
    // One more than asked for says whether another page follows.
    const after = filter.after ?? { attempt: 0, agent_id: "" };
    const sealed = filter.sealed;
    const rows = this.statements.bidPage.all(
      filter.task_id,
      after.attempt,
      after.agent_id,
      sealed?.attempt ?? Number.MAX_SAFE_INTEGER,
      filter.limit + 1,
    );
    // The sealed round comes last in the order; of it, only the reader's own bid is shown.
    if (rows.length <= filter.limit && sealed !== undefined && sealed.ownAgent !== null) {
      const own = this.statements.ownBid.get(filter.task_id, sealed.attempt, sealed.ownAgent);
      const isAfter =
        own !== undefined &&
        (own.attempt > after.attempt || (own.attempt === after.attempt && own.agent_id > after.agent_id));
      if (own !== undefined && isAfter) rows.push(own);
    }
    const bids = rows.slice(0, filter.limit);
    const last = bids.at(-1);
    return {
      bids,
      next_cursor:
        rows.length > filter.limit && last !== undefined
          ? { attempt: last.attempt, agent_id: last.agent_id }
          : null,
    };
  }

  /**
   * Each round of the task, newest first, with its winner and lowest `limit` bids and how many it
   * drew; of a sealed round only its agent's own bid, if any.
   */
  bidRounds(
    taskId: string,
    limit: number,
    sealed?: SealedRound,
  ): { attempt: number; count: number; bids: Bid[] }[] {
    return this.statements.bidCountsByRound
      .all(taskId)
      .sort((a, b) => b.attempt - a.attempt)
      .map(({ attempt, count }) => {
        if (sealed?.attempt !== attempt) {
          return { attempt, count, bids: this.statements.lowestBids.all(taskId, attempt, limit) };
        }
        const own =
          sealed.ownAgent === null ? undefined : this.statements.ownBid.get(taskId, attempt, sealed.ownAgent);
        return { attempt, count, bids: own === undefined ? [] : [own] };
      });
  }

  /** A page of agents in registration order after the `after` rowid; the cursor is null on the last page. */
  listAgents(filter: { status?: AgentStatus; after?: number; limit: number }): {
    agents: Agent[];
    next_cursor: string | null;
  } {
    const after = filter.after ?? 0;
    const rows =
      filter.status === undefined
        ? this.statements.agentPage.all(after, filter.limit + 1)
        : this.statements.agentPageByStatus.all(filter.status, after, filter.limit + 1);
    const shown = rows.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      agents: shown.map(({ cursor: _cursor, ...row }) => toAgent(row)),
      next_cursor: rows.length > filter.limit && last !== undefined ? String(last.cursor) : null,
    };
  }

  /**
   * A page of the dashboard's agent list: busy, then idle, then offline, by name (ignoring case)
   * within each, without those who left; each status is an index range, walked from the cursor on.
   */
  boardAgents(filter: { after?: BoardCursor; limit: number }): {
    agents: Agent[];
    next_cursor: BoardCursor | null;
  } {
    const rows: (AgentRow & { cursor: number })[] = [];
    const start = filter.after === undefined ? 0 : BOARD_ORDER.indexOf(filter.after.status);
    for (let i = start; i < BOARD_ORDER.length && rows.length <= filter.limit; i += 1) {
      const status = BOARD_ORDER[i] as AgentStatus;
      const from = filter.after !== undefined && i === start ? filter.after : { name: "", rowid: 0 };
      rows.push(
        ...this.statements.boardPage.all({
          status,
          name: from.name,
          rowid: from.rowid,
          limit: filter.limit + 1 - rows.length,
        }),
      );
    }
    const shown = rows.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      agents: shown.map(({ cursor: _cursor, ...row }) => toAgent(row)),
      next_cursor:
        rows.length > filter.limit && last !== undefined
          ? { status: last.status, name: last.name, rowid: last.cursor }
          : null,
    };
  }

  /** A page of tasks, newest first, and the cursor for the next page (null on the last). */
  listTasks(filter: TaskListFilter): { tasks: Task[]; next_cursor: string | null } {
    const params: (string | number)[] = [filter.before ?? Number.MAX_SAFE_INTEGER];
    if (filter.status !== undefined) params.push(filter.status);
    if (filter.agent_id !== undefined) params.push(filter.agent_id);
    const shape = { status: filter.status !== undefined, agent: filter.agent_id !== undefined };
    const key = `${shape.status}|${shape.agent}`;
    let statement = this.listStatements.get(key);
    if (statement === undefined) {
      statement = this.db.prepare<unknown[], TaskRow & { cursor: number }>(taskListSql(shape));
      this.listStatements.set(key, statement);
    }
    // One more than asked for says whether another page follows: the last page's cursor is null.
    const rows = statement.all(...params, filter.limit + 1);
    const shown = rows.slice(0, filter.limit);
    const last = shown.at(-1);
    return {
      tasks: shown.map(({ cursor: _cursor, ...row }) => toTask(row)),
      next_cursor: rows.length > filter.limit && last !== undefined ? String(last.cursor) : null,
    };
  }

  /** How many tasks are in each status (every status present, zero when none). */
  taskCounts(): Record<TaskStatus, number> {
    return countsByStatus(this.statements.taskCounts.all());
  }

  /** The `limit` newest tasks' auctions, oldest first, with the number of bids in their current round. */
  recentAuctions(limit: number): AuctionSize[] {
    return this.statements.recentAuctions.all(limit);
  }

  agentStats(agentId: string): AgentStats {
    return statsOf(this.statements.agentStats.get(agentId));
  }
}

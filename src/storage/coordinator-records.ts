/**
 * The coordinator's records as both storage engines hand them over: the row shapes and their
 * conversion, the columns, the cursors and result types of the store's reads, and the stats
 * arithmetic. The engines differ in their SQL, not in what their answers look like.
 */
import {
  TASK_STATUSES,
  type Agent,
  type AgentStatus,
  type Task,
  type TaskStatus,
} from "../coordinator/types.js";

export interface AgentRow extends Omit<Agent, "capabilities"> {
  capabilities: string;
}

/** The task's list columns, held as JSON arrays of strings. */
const TASK_LIST_COLUMNS = [
  "required_capabilities",
  "failed_agents",
  "declined_agents",
  "depends_on",
  "waiting_on",
] as const;
type TaskListColumn = (typeof TASK_LIST_COLUMNS)[number];

export type TaskRow = Omit<Task, TaskListColumn> & Record<TaskListColumn, string>;

export interface AgentStats {
  bids: number;
  wins: number;
  tasks_completed: number;
  tasks_failed: number;
  earned_sats: number;
  win_rate: number;
  average_winning_bid_sats: number | null;
}

export interface AgentStatsRow {
  bids: number;
  wins: number;
  won_sats: number;
  tasks_completed: number;
  tasks_failed: number;
  earned_sats: number;
}

export const NO_STATS: AgentStatsRow = {
  bids: 0,
  wins: 0,
  won_sats: 0,
  tasks_completed: 0,
  tasks_failed: 0,
  earned_sats: 0,
};

/** The dashboard's agent list: those at work first, then those waiting for work, then the silent. */
export const BOARD_ORDER: readonly AgentStatus[] = ["busy", "idle", "offline"];

export function toAgent(row: AgentRow): Agent {
  return { ...row, capabilities: JSON.parse(row.capabilities) as string[] };
}

export function toTask(row: TaskRow): Task {
  const task = { ...row } as unknown as Task;
  for (const column of TASK_LIST_COLUMNS) task[column] = JSON.parse(row[column]) as string[];
  return task;
}

export function toTaskRow(task: Task): TaskRow {
  const row = { ...task } as unknown as TaskRow;
  for (const column of TASK_LIST_COLUMNS) row[column] = JSON.stringify(task[column]);
  return row;
}

/** What a task is when posted, never written again. */
const TASK_FIXED_COLUMNS = [
  "id",
  "description",
  "required_capabilities",
  "auction_ms",
  "max_bid_sats",
  "award",
  "ack_ms",
  "timeout_ms",
  "max_attempts",
  "retry_backoff_ms",
  "created_at",
  "retry_of",
  "depends_on",
  "schedule_id",
] as const;
/** What a decision may change in a task row: what an upsert of an existing task sets. */
export const TASK_CHANGING_COLUMNS = [
  "status",
  "attempt",
  "releases",
  "failures",
  "failed_agents",
  "declined_agents",
  "assigned_agent",
  "winning_bid_sats",
  "result",
  "error",
  "auction_closes_at",
  "assigned_at",
  "started_at",
  "completed_at",
  "opens_at",
  "due_at",
  "waiting_on",
  "retried_by",
] as const satisfies readonly (keyof Task)[];
// Every field of a task is stored, once.
const _everyColumn: Exclude<
  keyof Task,
  (typeof TASK_FIXED_COLUMNS)[number] | (typeof TASK_CHANGING_COLUMNS)[number]
> extends never
  ? true
  : never = true;

export const TASK_COLUMN_LIST: readonly (keyof Task)[] = [...TASK_FIXED_COLUMNS, ...TASK_CHANGING_COLUMNS];
export const TASK_COLUMNS = TASK_COLUMN_LIST.join(", ");
/** The SET clause of a task upsert: every changing column from the row offered. */
export const TASK_UPSERT_SET = upsertSet(TASK_CHANGING_COLUMNS);
/** What a decision may change in an agent row: what an upsert of an existing agent sets. */
export const AGENT_CHANGING_COLUMNS = [
  "name",
  "capabilities",
  "max_concurrent",
  "status",
  "last_seen",
  "grace_until",
  "left_at",
  "runs_completed",
  "runs_failed",
  "runs_timed_out",
  "stream_until",
] as const satisfies readonly (keyof Agent)[];
// Every field of an agent is stored, once.
const _everyAgentColumn: Exclude<
  keyof Agent,
  "id" | "registered_at" | (typeof AGENT_CHANGING_COLUMNS)[number]
> extends never
  ? true
  : never = true;
export const AGENT_COLUMN_LIST: readonly (keyof Agent)[] = ["id", "registered_at", ...AGENT_CHANGING_COLUMNS];
export const AGENT_COLUMNS = AGENT_COLUMN_LIST.join(", ");
export const AGENT_UPSERT_SET = upsertSet(AGENT_CHANGING_COLUMNS);

/** An upsert's SET clause: each column taken from the row offered. */
function upsertSet(columns: readonly string[]): string {
  return columns.map((column) => `${column} = excluded.${column}`).join(", ");
}
export const BID_COLUMNS = "task_id, attempt, agent_id, bid_sats, bid_order, placed_at, outcome";

/** What one chunk of the retention of finished tasks removed. */
export interface TaskPruneChunk {
  tasks: number;
  bids: number;
  idempotency_keys: number;
}

export interface AuctionSize {
  task_id: string;
  description: string;
  status: TaskStatus;
  attempt: number;
  winning_bid_sats: number | null;
  bids: number;
}

/** Where a walk of the dashboard's agent list stands: the last agent shown, by the list's order. */
export interface BoardCursor {
  status: AgentStatus;
  name: string;
  rowid: number;
}

/** Which of a task's bids a reader may not see: those of the open round, but for its own. */
export interface SealedRound {
  attempt: number;
  ownAgent: string | null;
}

export interface BidCursor {
  attempt: number;
  agent_id: string;
}

export interface TaskListFilter {
  status?: string;
  agent_id?: string;
  /** Only tasks older than this cursor (a task's `rowid`, newest first). */
  before?: number;
  limit: number;
}

/** An agent's record from its stats row (or none). */
export function statsOf(row: AgentStatsRow | undefined): AgentStats {
  const stats = row ?? NO_STATS;
  return {
    bids: stats.bids,
    wins: stats.wins,
    tasks_completed: stats.tasks_completed,
    tasks_failed: stats.tasks_failed,
    earned_sats: stats.earned_sats,
    win_rate: stats.bids === 0 ? 0 : Math.round((stats.wins / stats.bids) * 1000) / 1000,
    average_winning_bid_sats: stats.wins === 0 ? null : Math.round(stats.won_sats / stats.wins),
  };
}

/** Every status with its count, zero when none. */
export function countsByStatus(
  rows: readonly { status: TaskStatus; count: number }[],
): Record<TaskStatus, number> {
  const counts = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0])) as Record<TaskStatus, number>;
  for (const { status, count } of rows) counts[status] = count;
  return counts;
}

/**
 * The coordinator as the web layer, the server and the tools see it, whichever engine keeps its
 * records: commands go in through `submit`, reads come back `Awaitable` (at once on SQLite, a
 * promise on PostgreSQL; await them and either works). Two shells implement it: `Coordinator`
 * (SQLite: one process, the working set in memory) and `PostgresCoordinator` (no state between
 * commands: each batch reads what it decides on inside its own transaction).
 */
import type { StoredEvent } from "../event-log/types.js";
import type {
  AgentStats,
  AuctionSize,
  BidCursor,
  BoardCursor,
  SealedRound,
  TaskListFilter,
} from "../storage/coordinator-records.js";
import type { Awaitable, ExtraWrite, StorageEngine } from "../storage/port.js";
import type { Logger } from "../logger.js";
import type {
  Accepted,
  Agent,
  AgentStatus,
  Bid,
  Command,
  CoordinatorRules,
  Task,
  TaskStatus,
} from "./types.js";

/** The record a command is about (the new agent, the posted task, the bid…). */
export type CommandSubject = Omit<Accepted["subject"], "tool_event_id">;

export interface CommandResult extends CommandSubject {
  /** The events the command wrote, as stored (with their seq). */
  events: StoredEvent[];
}

/**
 * Rows to write in the command's own transaction, worked out from what it decided (a registered
 * agent's token, a posted task's Idempotency-Key). If one cannot be written (a key already
 * taken), the command is refused with nothing of it kept; the rest of its batch goes on.
 */
export type Extras = (subject: CommandSubject) => readonly ExtraWrite[];

export interface FinishedWorkRetention {
  /** Tasks that ended (completed, failed, cancelled) this many days ago go, with their bids; so do agents that left as long ago. */
  taskRetentionDays: number;
  /** Idempotency-Keys go this many hours after their first use (and always with their task). */
  idempotencyKeyHours: number;
  /** How long one delete transaction may take; chunks are resized to fit. Default 10 ms. */
  targetChunkMs?: number;
}

/**
 * What one run of the retention of finished work removed, for its log line and its system.info
 * event (a type, not an interface, so that it passes as plain counts by name).
 */
export type FinishedWorkReport = {
  task_cutoff: string;
  tasks_deleted: number;
  bids_deleted: number;
  agents_deleted: number;
  idempotency_key_cutoff: string;
  idempotency_keys_deleted: number;
  chunks: number;
  /** The longest single delete transaction: how long this pruning held the database (or, on SQLite, the event loop) at once. */
  longest_delete_ms: number;
  duration_ms: number;
};

/** The pages and counts the API and the dashboard read; both engines' stores answer them alike. */
export interface CoordinatorReads {
  getTask(id: string): Awaitable<Task | undefined>;
  listTasks(filter: TaskListFilter): Awaitable<{ tasks: Task[]; next_cursor: string | null }>;
  listBids(filter: { task_id: string; after?: BidCursor; sealed?: SealedRound; limit: number }): Awaitable<{
    bids: Bid[];
    next_cursor: BidCursor | null;
  }>;
  bidRounds(
    taskId: string,
    limit: number,
    sealed?: SealedRound,
  ): Awaitable<{ attempt: number; count: number; bids: Bid[] }[]>;
  listAgents(filter: { status?: AgentStatus; after?: number; limit: number }): Awaitable<{
    agents: Agent[];
    next_cursor: string | null;
  }>;
  boardAgents(filter: { after?: BoardCursor; limit: number }): Awaitable<{
    agents: Agent[];
    next_cursor: BoardCursor | null;
  }>;
  taskCounts(): Awaitable<Record<TaskStatus, number>>;
  recentAuctions(limit: number): Awaitable<AuctionSize[]>;
  agentStats(agentId: string): Awaitable<AgentStats>;
}

/**
 * This process as one replica of the coordinator: on SQLite always the only one (and so the lease
 * holder); on PostgreSQL one of any number on the database (storage/postgres/cluster.ts).
 */
export interface ReplicaStatus {
  /** This replica's name: SWARM_REPLICA_ID, or host name, pid and a random suffix. */
  readonly id: string;
  /** Whether this replica holds the lease the singleton jobs (retention, rollups) run under. */
  readonly leader: boolean;
  /** Who holds that lease as this replica last saw it; null when nobody does. */
  readonly leaseHolder: string | null;
  /** Other replicas running on the same database, as last counted. */
  readonly peers: number;
}

export interface CoordinatorPort {
  readonly engine: StorageEngine;
  readonly replica: ReplicaStatus;
  readonly rules: CoordinatorRules;
  readonly store: CoordinatorReads;
  /** Recover (agents that were online get a grace period, overdue auctions close), then keep time. */
  start(): Awaitable<void>;
  /** Stop keeping time; resolves once no command of this shell is in flight. */
  stop(): Awaitable<void>;
  /**
   * Decide and persist one command; commands submitted close together share one transaction
   * (group commit). Rejects with the core's code when the command is refused, or
   * STORAGE_UNAVAILABLE when the write fails; in both cases nothing of it was written.
   */
  submit(command: Command, extras?: Extras): Promise<CommandResult>;
  /** The time decisions are taken at: this process's clock on SQLite, the database's on PostgreSQL. */
  now(): Awaitable<Date>;
  getTask(id: string): Awaitable<Task | undefined>;
  getAgent(id: string): Awaitable<Agent | undefined>;
  listAgents(): Awaitable<Agent[]>;
  /** Every bid the task received, all auction rounds, in the order placed. */
  getBids(taskId: string): Awaitable<Bid[]>;
  agentStats(agentId: string): Awaitable<AgentStats>;
  /** The bids of the task's open auction, if it has one. */
  openBids(taskId: string): Awaitable<readonly Bid[]>;
  /**
   * The round whose auction is open on the task, answered at once (bids of an open round are
   * sealed from other readers, event by event on the stream): on SQLite from memory, on
   * PostgreSQL as far as this process has read the event log, with `caughtUp` to wait for a seq.
   */
  openRound(taskId: string): number | undefined;
  caughtUp?(seq: number): Promise<void>;
  /**
   * Start reading the log for `openRound`, where it is kept from the log (PostgreSQL). The app
   * awaits it before it serves, so no reader is ever judged by a feed not yet started.
   */
  followLog?(): Promise<void>;
  pruneFinished(options: FinishedWorkRetention): Promise<FinishedWorkReport>;
  /** The names of these agents (those that left too), by id; unknown ids are left out. */
  agentNames(ids: readonly string[]): Awaitable<ReadonlyMap<string, string>>;
  /** The descriptions of these tasks, by id; unknown ids are left out. */
  taskDescriptions(ids: readonly string[]): Awaitable<ReadonlyMap<string, string>>;
}

/** What either shell is built with, on its engine's event log `L`. */
export interface ShellOptions<L> {
  eventLog: L;
  rules?: Partial<CoordinatorRules>;
  logger?: Logger;
  clock?: () => Date;
  newId?: () => string;
  /** How often the Tick runs: auctions close at most this late. Default 100 ms. */
  tickIntervalMs?: number;
  /** Most commands one transaction carries. Default 500. */
  maxBatchCommands?: number;
  /** This replica's name (SWARM_REPLICA_ID). */
  replicaId?: string;
}

/** A command waiting for its shell's next batch, with whoever awaits it. */
export interface QueuedCommand {
  command: Command;
  extras: Extras | undefined;
  resolve: (result: CommandResult) => void;
  reject: (error: unknown) => void;
}

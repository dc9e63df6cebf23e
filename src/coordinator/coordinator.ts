/**
 * The imperative shell around the pure core. For each command: load what the core needs to
 * see, decide, write the decision's records and events in one transaction, and only after
 * the commit fold the records into the in-memory state (subscribers hear of the events from
 * the event log, also after the commit). One interval timer drives the core's Tick, which
 * closes due auctions and expires silent agents.
 */
import { performance } from "node:perf_hooks";
import { newId as timeOrderedUuid } from "../ids.js";
import { SwarmError } from "../errors.js";
import type { SqliteEventLog, EventLogTransaction } from "../storage/sqlite/event-log.js";
import type { StoredEvent } from "../event-log/types.js";
import { getLogger, type Logger } from "../logger.js";
import { decide, isEmpty } from "./decide.js";
import { CoordinatorState, dependenciesRead, withTask } from "./state.js";
import { agentReports, budgetHour, limitRefusal, reportingAgent, storedBytes } from "./limits.js";
import { finishedWorkCutoffs } from "./retention.js";
import { TickTimer } from "./tick-timer.js";
import { defaultReplicaId } from "./replica-id.js";
import { CoordinatorStore } from "../storage/sqlite/coordinator-store.js";
import type { AgentStats } from "../storage/coordinator-records.js";
import { writeExtra } from "../storage/sqlite/server-store.js";
import type {
  CommandResult,
  CoordinatorPort,
  Extras,
  FinishedWorkReport,
  FinishedWorkRetention,
  QueuedCommand,
  ReplicaStatus,
  ShellOptions,
} from "./port.js";

export type { CommandResult, Extras, FinishedWorkReport, FinishedWorkRetention } from "./port.js";
import {
  DEFAULT_RULES,
  type Agent,
  type Bid,
  type Command,
  type CoordinatorRules,
  type Task,
} from "./types.js";

export type CoordinatorOptions = ShellOptions<SqliteEventLog>;

export class Coordinator implements CoordinatorPort {
  readonly engine = "sqlite" as const;
  readonly rules: CoordinatorRules;
  readonly store: CoordinatorStore;
  /** One process owns the file (its lock file sees to it): the only replica, and the lease's holder. */
  readonly replica: ReplicaStatus;
  private readonly eventLog: SqliteEventLog;
  private readonly logger: Logger;
  private readonly clock: () => Date;
  private readonly newId: () => string;
  private readonly tickIntervalMs: number;
  private state: CoordinatorState;
  private queue: QueuedCommand[] = [];
  private flushScheduled = false;
  private readonly maxBatchCommands: number;
  /** Set once memory holds changes of a transaction that has not committed yet. */
  private memoryAhead = false;
  /** Drives the Tick, and keeps the spans in which this process's event loop was stalled. */
  private readonly ticks: TickTimer;

  constructor(options: CoordinatorOptions) {
    this.eventLog = options.eventLog;
    this.rules = { ...DEFAULT_RULES, ...options.rules };
    this.logger = (options.logger ?? getLogger()).child({ component: "coordinator" });
    this.clock = options.clock ?? (() => new Date());
    this.newId = options.newId ?? timeOrderedUuid;
    this.tickIntervalMs = options.tickIntervalMs ?? 100;
    this.maxBatchCommands = options.maxBatchCommands ?? 500;
    this.ticks = new TickTimer({
      intervalMs: this.tickIntervalMs,
      heartbeatTimeoutMs: this.rules.heartbeatTimeoutMs,
      clock: this.clock,
      logger: this.logger,
      onTick: () => this.tick(),
    });
    this.store = new CoordinatorStore(this.eventLog.db);
    const id = options.replicaId ?? defaultReplicaId();
    this.replica = { id, leader: true, leaseHolder: id, peers: 0 };
    this.state = CoordinatorState.from(this.store.loadWorkingSet());
  }

  /**
   * Recover, then keep time. Agents that were online are set offline with a grace period to
   * reconnect; auctions whose deadline passed while the process was down close at once among
   * the bids already recorded.
   */
  start(): void {
    if (this.ticks.running) return;
    const recovered = this.execute({ type: "Recover" });
    const caughtUp = this.tick();
    const { agents, activeTasks, openBids } = this.state.counts;
    this.logger.info(
      {
        agents,
        active_tasks: activeTasks,
        open_bids: openBids,
        events_written: recovered.events.length + (caughtUp?.events.length ?? 0),
      },
      "coordinator recovered its state",
    );
    this.ticks.start();
  }

  stop(): void {
    this.ticks.stop();
  }

  /** Run the core's Tick now; storage failures are logged and retried on the next tick. */
  tick(): CommandResult | undefined {
    try {
      return this.execute({ type: "Tick", stalls: this.ticks.stalls.stalls });
    } catch (error) {
      this.logger.error({ err: error }, "tick failed; retrying on the next one");
      return undefined;
    }
  }

  /**
   * Decide and persist one command. Throws SwarmError with the core's code when the command is
   * refused, or STORAGE_UNAVAILABLE when the write fails; in both cases nothing was written and
   * the in-memory state is unchanged.
   */
  execute(command: Command, extras?: Extras): CommandResult {
    this.memoryAhead = false;
    try {
      return this.eventLog.transaction((tx) => this.decideAndWrite(command, extras, tx));
    } catch (error) {
      // The commit itself failed after memory took the change: start again from the tables.
      if (this.memoryAhead) this.reloadState();
      throw error;
    }
  }

  private reloadState(): void {
    this.state = CoordinatorState.from(this.store.loadWorkingSet());
    this.memoryAhead = false;
  }

  /**
   * The same as `execute`, but commands submitted in the same turn of the event loop share one
   * transaction (group commit), each deciding against the state its predecessors left. The
   * promise settles after the commit. One command's refusal or failed extra write rejects only
   * that command; a failed commit rejects the whole batch and reloads the state from the tables.
   */
  submit(command: Command, extras?: Extras): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ command, extras, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue.splice(0, this.maxBatchCommands);
    this.memoryAhead = false;
    if (this.queue.length > 0) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    if (batch.length === 0) return;
    let outcomes: ({ ok: true; result: CommandResult } | { ok: false; error: unknown })[];
    try {
      outcomes = this.eventLog.transaction((tx) =>
        batch.map((item) => {
          try {
            // A savepoint per command: its own failure undoes only its own rows.
            return {
              ok: true as const,
              result: this.eventLog.transaction(() => this.decideAndWrite(item.command, item.extras, tx)),
            };
          } catch (error) {
            return { ok: false as const, error };
          }
        }),
      );
    } catch (error) {
      // Memory already holds the batch's changes; the tables do not. Start again from the tables.
      this.reloadState();
      this.logger.error({ err: error, commands: batch.length }, "a command batch failed to commit");
      for (const item of batch) item.reject(error);
      return;
    }
    outcomes.forEach((outcome, index) => {
      const item = batch[index] as QueuedCommand;
      if (outcome.ok) item.resolve(outcome.result);
      else item.reject(outcome.error);
    });
  }

  /**
   * Decide, write the records, events and extras inside the caller's transaction, and fold the
   * records into memory. Memory is updated inside the transaction so that the next command of a
   * batch sees this one; `execute` and `submit` undo it if the transaction does not commit.
   */
  private decideAndWrite(
    command: Command,
    extras: Extras | undefined,
    tx: EventLogTransaction,
  ): CommandResult {
    const taskId = "task_id" in command ? command.task_id : undefined;
    // A final task has left the working set: load it so the core can say why it refuses, and
    // so the dependencies a post (or a re-run) names.
    const named =
      taskId === undefined ? undefined : (this.state.getTask(taskId) ?? this.store.getTask(taskId));
    const finals = dependenciesRead(command, named)
      .filter((id) => this.state.getTask(id) === undefined)
      .map((id) => this.store.getTask(id));
    const view = withTask(this.state, named, ...finals);
    const now = this.clock();
    const decision = decide(view, command, { now, newId: this.newId, rules: this.rules });
    if (!decision.ok) throw new SwarmError(decision.code, decision.message, decision.details);
    const { tool_event_id: _toolEventId, ...subject } = decision.subject;
    if (isEmpty(decision)) return { ...subject, events: [] };
    this.store.apply(decision.changes);
    const result = { ...subject, events: tx.appendMany(decision.events) };
    this.countReports(command, result.events, now);
    for (const write of extras?.(subject) ?? []) writeExtra(this.eventLog.db, write);
    this.state.apply(decision.changes);
    this.memoryAhead = true;
    return result;
  }

  /**
   * Count an agent's report against the caps on what agents report (limits.ts), in the command's
   * transaction; throws the refusal when the report goes past one, which rolls the command back.
   */
  private countReports(command: Command, events: readonly StoredEvent[], now: Date): void {
    const agentId = reportingAgent(command);
    if (agentId === undefined) return;
    const reports = agentReports(events, agentId);
    if (reports.length === 0) return;
    const report = { events: reports.length, bytes: reports.reduce((sum, e) => sum + storedBytes(e), 0) };
    const taskId = "task_id" in command ? command.task_id : undefined;
    const totals = this.store.countReports(taskId, agentId, budgetHour(now), report.events, report.bytes);
    const refusal = limitRefusal(command, report, totals, this.rules, now);
    if (refusal !== undefined) throw new SwarmError(refusal.code, refusal.message, refusal.details);
  }

  // ------------------------------------------------------------ retention

  /**
   * Delete finished work older than its retention, in chunks that each hold the event loop for
   * about `targetChunkMs` (as the event prune does): tasks that ended, with their bids and
   * Idempotency-Keys; then agents that left, once no kept task or bid names them (until then they
   * stay, so every kept task still shows who did it); then Idempotency-Keys past their own, much
   * shorter, retention. Nothing in the working set is touched: active tasks are never final, and
   * only agents that left and hold nothing leave memory, in the step that deletes their rows.
   */
  async pruneFinished(options: FinishedWorkRetention): Promise<FinishedWorkReport> {
    const { task: taskCutoff, key: keyCutoff } = finishedWorkCutoffs(options, this.clock().getTime());
    const started = performance.now();
    // A task takes its bids, keys and a dozen index entries with it, an agent a few reference
    // checks: measured at up to 1 ms a task on a cold 200,000-task backlog, so chunks start small
    // and may shrink to a few rows to stay within the target.
    const sizing = { targetChunkMs: options.targetChunkMs ?? 10, initialChunk: 20, minChunk: 2 };
    const removed = { tasks: 0, bids: 0, idempotency_keys: 0, agents: 0 };

    const tasks = await this.eventLog.deleteInChunks((limit) => {
      const chunk = this.eventLog.transaction(() => this.store.deleteFinishedTasks(taskCutoff, limit));
      removed.tasks += chunk.tasks;
      removed.bids += chunk.bids;
      removed.idempotency_keys += chunk.idempotency_keys;
      return chunk.tasks;
    }, sizing);
    let cursor = { left_at: "", id: "" };
    const agents = await this.eventLog.deleteInChunks((limit) => {
      const chunk = this.eventLog.transaction(() => this.store.deleteLeftAgents(taskCutoff, cursor, limit));
      // Committed: now memory may let them go too, before anything else runs.
      this.state.forgetAgents(chunk.deleted);
      removed.agents += chunk.deleted.length;
      cursor = chunk.next;
      return chunk.examined;
    }, sizing);
    const keys = await this.eventLog.deleteInChunks(
      (limit) => {
        const deleted = this.eventLog.transaction(() => this.store.deleteExpiredKeys(keyCutoff, limit));
        removed.idempotency_keys += deleted;
        return deleted;
      },
      { targetChunkMs: sizing.targetChunkMs },
    );

    return {
      task_cutoff: taskCutoff,
      tasks_deleted: removed.tasks,
      bids_deleted: removed.bids,
      agents_deleted: removed.agents,
      idempotency_key_cutoff: keyCutoff,
      idempotency_keys_deleted: removed.idempotency_keys,
      chunks: tasks.chunks + agents.chunks + keys.chunks,
      longest_delete_ms: Math.max(tasks.longest_ms, agents.longest_ms, keys.longest_ms),
      duration_ms: Math.round(performance.now() - started),
    };
  }

  // ------------------------------------------------------------ reads

  now(): Date {
    return this.clock();
  }

  getTask(id: string): Task | undefined {
    return this.state.getTask(id) ?? this.store.getTask(id);
  }

  getAgent(id: string): Agent | undefined {
    return this.state.getAgent(id);
  }

  listAgents(): Agent[] {
    return [...this.state.agents()];
  }

  /** Every bid the task received, all auction rounds, in the order placed. */
  getBids(taskId: string): Bid[] {
    return this.store.getBids(taskId);
  }

  agentStats(agentId: string): AgentStats {
    return this.store.agentStats(agentId);
  }

  /** The round (attempt) whose auction is open on the task, if one is; read from memory. */
  openRound(taskId: string): number | undefined {
    const task = this.state.getTask(taskId);
    return task?.status === "bidding" ? task.attempt : undefined;
  }

  /** The bids of the task's open auction, if it has one. */
  openBids(taskId: string): readonly Bid[] {
    return this.state.bidsFor(taskId);
  }

  agentNames(ids: readonly string[]): Map<string, string> {
    const names = new Map<string, string>();
    for (const id of ids) {
      const name = this.state.getAgent(id)?.name;
      if (name !== undefined) names.set(id, name);
    }
    return names;
  }

  taskDescriptions(ids: readonly string[]): Map<string, string> {
    const descriptions = new Map<string, string>();
    for (const id of ids) {
      const description = this.getTask(id)?.description;
      if (description !== undefined) descriptions.set(id, description);
    }
    return descriptions;
  }
}

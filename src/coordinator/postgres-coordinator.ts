/**
 * The coordinator shell on PostgreSQL, one replica of any number on the same database. It keeps
 * no state between commands that could disagree with the database: every batch of commands is
 * decided by PostgresCommandRunner over the working set read inside its own transaction, after
 * locking the rows it changes, and every read goes to the tables. What it does keep: the queue
 * of commands waiting for the next batch (group commit: a few batches in flight, the next one
 * gathering meanwhile), the tick timer with this process's own stalls, this replica's membership
 * and lease (ClusterMembership), and which auction round is open on each task as the event log
 * says (OpenRounds, for sealing bids from other readers).
 */
import { performance } from "node:perf_hooks";
import { newId as timeOrderedUuid } from "../ids.js";
import { getLogger, type Logger } from "../logger.js";
import type { AgentStats } from "../storage/coordinator-records.js";
import { PostgresCommandRunner } from "../storage/postgres/command-runner.js";
import { PostgresCoordinatorStore } from "../storage/postgres/coordinator-store.js";
import { ClusterMembership } from "../storage/postgres/cluster.js";
import { inTransaction } from "../storage/postgres/database.js";
import type { PostgresEventLog } from "../storage/postgres/event-log.js";
import { OpenRounds } from "./open-rounds.js";
import type {
  CommandResult,
  CoordinatorPort,
  CoordinatorReads,
  Extras,
  FinishedWorkReport,
  FinishedWorkRetention,
  QueuedCommand,
  ReplicaStatus,
  ShellOptions,
} from "./port.js";
import { finishedWorkCutoffs } from "./retention.js";
import { TickTimer } from "./tick-timer.js";
import {
  DEFAULT_RULES,
  type Agent,
  type Bid,
  type Command,
  type CoordinatorRules,
  type Task,
} from "./types.js";

/** Rows one retention transaction deletes: small enough that no lock is held for long. */
const RETENTION_CHUNK = 200;
/** How often the lease holder folds the counters' deltas into their totals. */
const COUNTER_FOLD_MS = 1000;

export interface PostgresCoordinatorOptions extends ShellOptions<PostgresEventLog> {
  /** How long the maintenance lease lasts unrenewed (SWARM_LEASE_MS). Default 10 s. */
  leaseMs?: number;
  /**
   * Batches of this process in the database at once. Default 3: one deciding, one waiting for
   * its locks, one committing; more only adds connections on a database this size.
   */
  maxBatchesInFlight?: number;
}

export class PostgresCoordinator implements CoordinatorPort {
  readonly engine = "postgres" as const;
  readonly rules: CoordinatorRules;
  readonly store: CoordinatorReads;
  private readonly eventLog: PostgresEventLog;
  private readonly tables: PostgresCoordinatorStore;
  private readonly runner: PostgresCommandRunner;
  private readonly logger: Logger;
  private readonly clock: () => Date;
  private readonly givenClock: boolean;
  private readonly ticks: TickTimer;
  private readonly rounds: OpenRounds;
  private readonly maxBatchCommands: number;
  private readonly maxBatchesInFlight: number;
  private readonly membership: ClusterMembership;
  private queue: QueuedCommand[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** A launch is waiting for this turn of the event loop's commands to join its batch. */
  private gathering = false;
  private ticking = false;
  private foldTimer: NodeJS.Timeout | undefined;
  private folding = false;
  private started = false;

  constructor(options: PostgresCoordinatorOptions) {
    this.eventLog = options.eventLog;
    this.rules = { ...DEFAULT_RULES, ...options.rules };
    this.logger = (options.logger ?? getLogger()).child({ component: "coordinator" });
    this.clock = options.clock ?? (() => new Date());
    this.givenClock = options.clock !== undefined;
    this.maxBatchCommands = options.maxBatchCommands ?? 500;
    this.maxBatchesInFlight = options.maxBatchesInFlight ?? 3;
    this.tables = new PostgresCoordinatorStore(this.eventLog.pool);
    this.runner = new PostgresCommandRunner({
      eventLog: this.eventLog,
      store: this.tables,
      rules: this.rules,
      // Deadlines are judged on the database's clock, the one every replica shares; a test's
      // fake clock stands in for it.
      clock: options.clock,
      newId: options.newId ?? timeOrderedUuid,
    });
    this.membership = new ClusterMembership({
      pool: this.eventLog.pool,
      logger: this.logger,
      replicaId: options.replicaId,
      leaseMs: options.leaseMs,
      // Seen within a lease (three beats), and never longer than half the agents' timeout.
      liveWithinMs: Math.min(options.leaseMs ?? 10_000, this.rules.heartbeatTimeoutMs / 2),
      clock: options.clock,
    });
    this.ticks = new TickTimer({
      intervalMs: options.tickIntervalMs ?? 100,
      heartbeatTimeoutMs: this.rules.heartbeatTimeoutMs,
      clock: this.clock,
      logger: this.logger,
      onTick: () => void this.tick(),
    });
    this.rounds = new OpenRounds(this.eventLog, () =>
      this.eventLog.readWith((pool) => this.tables.openRoundSnapshot(pool)),
    );
    this.store = this.guardedReads();
  }

  get replica(): ReplicaStatus {
    return this.membership;
  }

  /** Every read of the tables, answered 503 (STORAGE_UNAVAILABLE) while the database is down. */
  private guardedReads(): CoordinatorReads {
    const tables = this.tables;
    const read = <T>(body: () => Promise<T>) => this.eventLog.readWith(body);
    return {
      getTask: (id) => read(() => tables.getTask(id)),
      listTasks: (filter) => read(() => tables.listTasks(filter)),
      listBids: (filter) => read(() => tables.listBids(filter)),
      bidRounds: (taskId, limit, sealed) => read(() => tables.bidRounds(taskId, limit, sealed)),
      listAgents: (filter) => read(() => tables.listAgents(filter)),
      boardAgents: (filter) => read(() => tables.boardAgents(filter)),
      taskCounts: () => read(() => tables.taskCounts()),
      recentAuctions: (limit) => read(() => tables.recentAuctions(limit)),
      agentStats: (agentId) => read(() => tables.agentStats(agentId)),
    };
  }

  /**
   * Join the cluster, then keep time. A replica that finds no other running had the whole
   * cluster down before it: agents that were online get a grace period to reconnect (Recover).
   * One that joins running replicas changes nobody's status: agents could reach the others
   * meanwhile. Either way, auctions whose deadline passed close at once among the bids recorded.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.eventLog.whenReady();
    await this.rounds.start();
    const { livePeers } = await this.membership.join();
    const recovered = livePeers === 0 ? await this.submit({ type: "Recover" }) : undefined;
    this.membership.start();
    const caughtUp = await this.tick();
    const set = await this.runner.workingSet();
    this.logger.info(
      {
        ...set.counts,
        replica: this.membership.id,
        live_peers: livePeers,
        // What this start wrote (a recovery, auctions that came due while no replica ran).
        events_written: (recovered?.events.length ?? 0) + (caughtUp?.events.length ?? 0),
      },
      livePeers === 0 ? "coordinator recovered its state" : "replica joined a running cluster",
    );
    this.ticks.start();
    this.foldTimer = setInterval(() => void this.foldCounters(), COUNTER_FOLD_MS);
    this.foldTimer.unref();
  }

  /**
   * On the lease holder: fold the counters' deltas into their totals, so that reads of them sum
   * a few seconds of deltas at most. Any replica may fold safely; one doing it saves the work.
   */
  private async foldCounters(): Promise<void> {
    if (this.folding || !this.membership.leader) return;
    this.folding = true;
    try {
      await this.tables.foldCounters();
    } catch (error) {
      this.logger.warn({ err: error }, "folding the counters failed; retrying on the next");
    } finally {
      this.folding = false;
    }
  }

  async stop(): Promise<void> {
    this.ticks.stop();
    clearInterval(this.foldTimer);
    this.rounds.stop();
    const wasStarted = this.started;
    this.started = false;
    await this.drained();
    if (wasStarted) await this.membership.stop();
  }

  /** Resolves once no command of this shell is queued or in the database. */
  private async drained(): Promise<void> {
    while (this.inFlight.size > 0 || this.queue.length > 0 || this.gathering) {
      await Promise.all([...this.inFlight, new Promise((resolve) => setImmediate(resolve))]);
    }
  }

  /** Run the core's Tick now, unless one is still running; failures are logged and retried on the next. */
  async tick(): Promise<CommandResult | undefined> {
    if (this.ticking) return undefined;
    this.ticking = true;
    try {
      return await this.submit({ type: "Tick", stalls: this.ticks.stalls.stalls });
    } catch (error) {
      this.logger.error({ err: error }, "tick failed; retrying on the next one");
      return undefined;
    } finally {
      this.ticking = false;
    }
  }

  submit(command: Command, extras?: Extras): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ command, extras, resolve, reject });
      if (this.gathering) return;
      this.gathering = true;
      // Let the commands of this turn of the event loop join the batch.
      setImmediate(() => {
        this.gathering = false;
        this.launch();
      });
    });
  }

  /**
   * Start batches while fewer than maxBatchesInFlight are in the database: the next one gathers
   * meanwhile. Batches about different rows run side by side; those about the same rows wait
   * for each other's locks in the database.
   */
  private launch(): void {
    while (this.queue.length > 0 && this.inFlight.size < this.maxBatchesInFlight) {
      const batch = this.queue.splice(0, this.maxBatchCommands);
      const run: Promise<void> = this.runBatch(batch).finally(() => {
        this.inFlight.delete(run);
        this.launch();
      });
      this.inFlight.add(run);
    }
  }

  private async runBatch(batch: QueuedCommand[]): Promise<void> {
    try {
      const outcomes = await this.runner.run(batch);
      outcomes.forEach((outcome, index) => {
        const item = batch[index] as QueuedCommand;
        if (outcome.ok) item.resolve(outcome.result);
        else item.reject(outcome.error);
      });
    } catch (error) {
      this.logger.error({ err: error, commands: batch.length }, "a command batch failed to commit");
      for (const item of batch) item.reject(error);
    }
  }

  // ------------------------------------------------------------ reads

  now(): Promise<Date> {
    return this.givenClock ? Promise.resolve(this.clock()) : this.eventLog.databaseNow();
  }

  getTask(id: string): Promise<Task | undefined> {
    return this.store.getTask(id) as Promise<Task | undefined>;
  }

  getAgent(id: string): Promise<Agent | undefined> {
    return this.eventLog.readWith(() => this.tables.getAgent(id));
  }

  async listAgents(): Promise<Agent[]> {
    return (await this.eventLog.readWith(() => this.tables.loadWorkingSet())).agents;
  }

  getBids(taskId: string): Promise<Bid[]> {
    return this.eventLog.readWith(() => this.tables.getBids(taskId));
  }

  agentStats(agentId: string): Promise<AgentStats> {
    return this.store.agentStats(agentId) as Promise<AgentStats>;
  }

  async openBids(taskId: string): Promise<readonly Bid[]> {
    const task = await this.getTask(taskId);
    if (task?.status !== "bidding") return [];
    return (await this.getBids(taskId)).filter((bid) => bid.attempt === task.attempt);
  }

  async agentNames(ids: readonly string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const rows = await this.eventLog.readWith(
      async (pool) =>
        (
          await pool.query<{ id: string; name: string }>("SELECT id, name FROM agents WHERE id = ANY($1)", [
            ids,
          ])
        ).rows,
    );
    return new Map(rows.map((row) => [row.id, row.name]));
  }

  async taskDescriptions(ids: readonly string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map();
    const rows = await this.eventLog.readWith(
      async (pool) =>
        (
          await pool.query<{ id: string; description: string }>(
            "SELECT id, description FROM tasks WHERE id = ANY($1)",
            [ids],
          )
        ).rows,
    );
    return new Map(rows.map((row) => [row.id, row.description]));
  }

  /** The round open on the task as far as this process has read the log (see OpenRounds). */
  openRound(taskId: string): number | undefined {
    return this.rounds.openRound(taskId);
  }

  /** Start the open rounds' feed (start() does; a shell driven without it needs it to serve reads). */
  followLog(): Promise<void> {
    return this.rounds.start();
  }

  /** Resolves once `openRound` answers for every event up to `seq`. */
  async caughtUp(seq: number): Promise<void> {
    await this.followLog();
    return this.rounds.caughtUp(seq);
  }

  // ------------------------------------------------------------ retention

  /**
   * As on SQLite: finished tasks past their retention with their bids and keys, then agents that
   * left and that nothing kept names, then expired Idempotency-Keys; each in transactions of at
   * most RETENTION_CHUNK rows, passing over rows another process is deleting.
   */
  async pruneFinished(options: FinishedWorkRetention): Promise<FinishedWorkReport> {
    // The database's clock (a test's fake one when given): the lease holder's own may be off.
    const now = await this.now();
    const { task: taskCutoff, key: keyCutoff } = finishedWorkCutoffs(options, now.getTime());
    const started = performance.now();
    const removed = { tasks: 0, bids: 0, idempotency_keys: 0, agents: 0, chunks: 0, longest_ms: 0 };
    const chunk = async <T>(
      body: (client: Parameters<Parameters<typeof inTransaction>[1]>[0]) => Promise<T>,
    ) => {
      const at = performance.now();
      const result = await this.eventLog.readWith((pool) => inTransaction(pool, body));
      removed.chunks += 1;
      removed.longest_ms = Math.max(removed.longest_ms, performance.now() - at);
      return result;
    };
    for (;;) {
      const done = await chunk((client) =>
        this.tables.deleteFinishedTasks(client, taskCutoff, RETENTION_CHUNK),
      );
      removed.tasks += done.tasks;
      removed.bids += done.bids;
      removed.idempotency_keys += done.idempotency_keys;
      if (done.tasks < RETENTION_CHUNK) break;
    }
    let cursor = { left_at: "", id: "" };
    for (;;) {
      const done = await chunk((client) =>
        this.tables.deleteLeftAgents(client, taskCutoff, cursor, RETENTION_CHUNK),
      );
      removed.agents += done.deleted.length;
      cursor = done.next;
      if (done.examined < RETENTION_CHUNK) break;
    }
    for (;;) {
      const deleted = await chunk((client) =>
        this.tables.deleteExpiredKeys(client, keyCutoff, RETENTION_CHUNK),
      );
      removed.idempotency_keys += deleted;
      if (deleted < RETENTION_CHUNK) break;
    }
    return {
      task_cutoff: taskCutoff,
      tasks_deleted: removed.tasks,
      bids_deleted: removed.bids,
      agents_deleted: removed.agents,
      idempotency_key_cutoff: keyCutoff,
      idempotency_keys_deleted: removed.idempotency_keys,
      chunks: removed.chunks,
      longest_delete_ms: Math.round(removed.longest_ms),
      duration_ms: Math.round(performance.now() - started),
    };
  }
}

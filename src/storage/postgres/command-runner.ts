/**
 * The coordinator's commands on PostgreSQL, stateless between batches: each batch is one
 * transaction that locks the rows its commands change, reads the working set it decides on
 * inside that transaction, decides every command with the pure core, writes each command's
 * records (those with rows of their own under a savepoint, so a refusal takes back only its own
 * rows), appends the batch's events last (numbered from the head row), and commits. Nothing is
 * kept in memory from one batch to the next, so replicas on one database never decide on
 * different states.
 *
 * Locks (lock-plan.ts): the batch's tasks first, then its agents, each set in id order, then the
 * head row as the events are appended; every transaction takes them in that order, so batches
 * about different tasks and agents run side by side and two batches never wait on each other in
 * a cycle. A decision that would change a row the plan did not lock is not written: the batch
 * is tried again with that row in the plan (PlanMissed). A deadlock or serialisation failure the
 * database reports anyway is retried the same way.
 *
 * Time: `now` is the database's clock, read once per batch after its locks, unless the runner
 * was given a clock (tests drive a fake one), so that replicas with skewed clocks agree on every
 * deadline. The Tick is a transaction of its own: it claims the due auctions and the silent
 * agents with SKIP LOCKED, so replicas ticking at once share the due work rather than queue
 * for it, and the core's Tick is scoped to what was claimed.
 *
 * A batch reads only the part of the working set its commands can read: every agent, the tasks
 * agents hold, the auctions it names or claimed, and the bids of the rounds it bids on or
 * closes (bidsReadBy); a read outside that fails the batch rather than deciding on less.
 */
import type pg from "pg";
import { decide, isEmpty } from "../../coordinator/decide.js";
import {
  agentReports,
  budgetHour,
  limitRefusal,
  reportingAgent,
  storedBytes,
} from "../../coordinator/limits.js";
import {
  CoordinatorState,
  dependenciesRead,
  keepsBids,
  viewWith,
  withTask,
  type StateView,
} from "../../coordinator/state.js";
import type { CommandResult, CommandSubject, Extras } from "../../coordinator/port.js";
import type { ReportTotals } from "../../coordinator/limits.js";
import type {
  Accepted,
  Agent,
  Bid,
  Command,
  CoordinatorRules,
  ServerStall,
  StateChanges,
  Task,
} from "../../coordinator/types.js";
import { SwarmError } from "../../errors.js";
import type { StoredEvent } from "../../event-log/types.js";
import { prepareEvent, type PreparedEvent } from "../../event-log/validate.js";
import { databaseNow, inTransaction, postgresErrorCode, withClient } from "./database.js";
import type { PostgresCoordinatorStore } from "./coordinator-store.js";
import { appendPrepared, type PostgresEventLog } from "./event-log.js";
import { claimTick, lockPlan, PlanMissed, type LockedRows, type PlanHints } from "./lock-plan.js";
import { writeExtra } from "./server-store.js";

/**
 * Tries of one batch that learned nothing new: a deadlock, or a miss of rows already in the plan.
 * A retry whose plan grew is not counted (a batch of many closing bids may reach several winners
 * outside its plan, one command at a time), up to MAX_ATTEMPTS in all.
 */
const MAX_TRIES = 5;
const MAX_ATTEMPTS = 50;
/** Database errors after which the whole transaction may simply be tried again. */
const RETRYABLE = new Set(["40P01", "40001"]); // deadlock_detected, serialization_failure

export type CommandOutcome = { ok: true; result: CommandResult } | { ok: false; error: unknown };

export interface CommandRunnerOptions {
  eventLog: PostgresEventLog;
  store: PostgresCoordinatorStore;
  rules: CoordinatorRules;
  /** Stands in for the database's clock (tests); without it, `now` is the database's. */
  clock?: (() => Date) | undefined;
  newId: () => string;
}

type BatchItem = { command: Command; extras?: Extras | undefined };

/** What every command of a batch is decided against. */
interface BatchContext {
  client: pg.PoolClient;
  state: CoordinatorState;
  /** The state as decide reads it (see guardBids). */
  view: StateView;
  now: Date;
  ledger: ReportLedger;
  locked: LockedRows;
  /** What the working set held before the batch: a change to one of these must be locked. */
  loaded: { agents: ReadonlySet<string>; tasks: ReadonlySet<string> };
  /**
   * The tasks the batch has ended so far: they have left `state`, and their rows may not be
   * written yet (PendingWrites), so a later command of the batch reads them here, not stale
   * from the table.
   */
  ended: Map<string, Task>;
}

interface Decided {
  subject: CommandSubject;
  prepared: PreparedEvent[];
}

export class PostgresCommandRunner {
  constructor(private readonly options: CommandRunnerOptions) {}

  /**
   * Decide and persist a batch of commands, each Tick in a transaction of its own and the rest in
   * one. Each outcome is the command's result or its own refusal; a transaction that does not
   * commit rejects every command in it, with nothing of it written.
   */
  async run(batch: readonly BatchItem[]): Promise<CommandOutcome[]> {
    const outcomes: CommandOutcome[] = [];
    let from = 0;
    while (from < batch.length) {
      const item = batch[from] as BatchItem;
      if (item.command.type === "Tick") {
        outcomes.push(await this.runTick(item.command.stalls ?? []));
        from += 1;
        continue;
      }
      let to = from;
      while (to < batch.length && batch[to]?.command.type !== "Tick") to += 1;
      outcomes.push(...(await this.runCommands(batch.slice(from, to))));
      from = to;
    }
    return outcomes;
  }

  /**
   * The Tick as one replica of several runs it: claim the due auctions and the silent agents
   * nobody else is handling (SKIP LOCKED), then decide the core's Tick over just those.
   */
  private async runTick(stalls: readonly ServerStall[]): Promise<CommandOutcome> {
    const { store, rules } = this.options;
    try {
      const { results } = await this.transact([], async (client, hints) => {
        const claimed = await claimTick(client, await this.now(client), rules.heartbeatTimeoutMs, hints);
        if (claimed.tasks.size === 0 && claimed.scopeAgents.length === 0)
          return { decided: [{ subject: {}, prepared: [] }], events: [] };
        const now = await this.now(client);
        const command: Command = {
          type: "Tick",
          stalls: this.onDatabaseClock(stalls, now),
          scope: { agent_ids: claimed.scopeAgents, task_ids: [...claimed.tasks] },
        };
        const context = await this.context(client, [command], claimed, now);
        const decided = await this.decideAndKeep(context, command, (changes) =>
          store.applyMany(client, changes),
        );
        return { decided: [decided], events: decided.prepared };
      });
      return { ok: true, result: results[0] as CommandResult };
    } catch (error) {
      return { ok: false, error };
    }
  }

  /** The stalls were timed on this process's clock; the Tick judges silence on the database's. */
  private onDatabaseClock(stalls: readonly ServerStall[], now: Date): ServerStall[] {
    const skewMs = this.options.clock === undefined ? now.getTime() - Date.now() : 0;
    const shift = (at: string) => new Date(Date.parse(at) + skewMs).toISOString();
    return stalls.map((stall) => ({ from: shift(stall.from), until: shift(stall.until) }));
  }

  private async runCommands(batch: readonly BatchItem[]): Promise<CommandOutcome[]> {
    const { eventLog, store } = this.options;
    const commands = batch.map((item) => item.command);
    const { results } = await this.transact(commands, async (client, hints) => {
      const locked = await lockPlan(client, commands, hints);
      const now = await this.now(client);
      const context = await this.context(client, commands, locked, now);
      const pending = new PendingWrites();
      const decided: (CommandOutcome | Decided)[] = [];
      for (const item of batch) {
        if (item.extras === undefined) {
          // No rows but its own records, counted reports checked in memory: nothing of it is
          // written until the batch's flush, so a refusal has nothing to take back.
          try {
            decided.push(
              await this.decideAndKeep(context, item.command, async (changes) => pending.add(changes)),
            );
          } catch (error) {
            if (error instanceof PlanMissed) throw error;
            decided.push({ ok: false, error: eventLog.noteFailure(error) });
          }
          continue;
        }
        // Rows of its own besides (a token, a key): written now, under a savepoint, after
        // everything decided before it.
        await pending.flush(client, store);
        await client.query("SAVEPOINT command");
        try {
          const { extras } = item;
          decided.push(
            await this.decideAndKeep(context, item.command, async (changes, subject) => {
              await store.apply(client, changes);
              for (const write of extras(subject)) await writeExtra(client, write);
            }),
          );
          await client.query("RELEASE SAVEPOINT command");
        } catch (error) {
          if (error instanceof PlanMissed) throw error;
          await client.query("ROLLBACK TO SAVEPOINT command");
          // A write the database itself refused (read-only, disk full, a statement timeout)
          // is STORAGE_UNAVAILABLE, and noted as the log's failure, as on SQLite; a refusal
          // of the core passes as it is.
          decided.push({ ok: false, error: eventLog.noteFailure(error) });
        }
      }
      await pending.flush(client, store);
      await context.ledger.flush(client, store);
      return { decided, events: decided.flatMap((d) => ("prepared" in d ? d.prepared : [])) };
    });
    return results.map((r) => ("ok" in r ? r : { ok: true, result: r }));
  }

  /**
   * One transaction, tried again with a fuller lock plan when a decision reached past it, or
   * after a deadlock: `body` decides and writes the records, then the events are appended last
   * (the head row's lock is then held from numbering to commit only) and announced after commit.
   */
  private async transact(
    commands: readonly Command[],
    body: (
      client: pg.PoolClient,
      hints: PlanHints,
    ) => Promise<{ decided: (CommandOutcome | Decided)[]; events: PreparedEvent[] }>,
  ): Promise<{ results: (CommandOutcome | CommandResult)[] }> {
    const { eventLog } = this.options;
    await eventLog.whenReady();
    const hints: PlanHints = { tasks: new Set(), agents: new Set() };
    for (let attempt = 1, counted = 1; ; attempt += 1) {
      let stored: StoredEvent[] = [];
      try {
        const results = await inTransaction(eventLog.pool, async (client) => {
          const { decided, events } = await body(client, hints);
          stored = await appendPrepared(client, events);
          let offset = 0;
          return decided.map((d): CommandOutcome | CommandResult => {
            if (!("prepared" in d)) return d;
            const slice = stored.slice(offset, offset + d.prepared.length);
            offset += d.prepared.length;
            return { ...d.subject, events: slice };
          });
        });
        await eventLog.committed(stored);
        return { results };
      } catch (error) {
        if (error instanceof PlanMissed && attempt < MAX_ATTEMPTS) {
          const known = hints.tasks.size + hints.agents.size;
          for (const id of error.tasks) hints.tasks.add(id);
          for (const id of error.agents) hints.agents.add(id);
          const grew = hints.tasks.size + hints.agents.size > known;
          if (grew || counted < MAX_TRIES) {
            if (!grew) counted += 1;
            continue;
          }
        }
        if (counted < MAX_TRIES && RETRYABLE.has(postgresErrorCode(error) ?? "")) {
          counted += 1;
          continue;
        }
        if (error instanceof PlanMissed)
          throw new Error(
            `a batch of ${commands.map((c) => c.type).join(", ")} kept reaching past its locks: ${error.message}`,
          );
        throw eventLog.noteFailure(error);
      }
    }
  }

  private async now(client: pg.PoolClient): Promise<Date> {
    return this.options.clock?.() ?? databaseNow(client);
  }

  /** Read the batch's working set (after its locks) and the report counters of its commands. */
  private async context(
    client: pg.PoolClient,
    commands: readonly Command[],
    locked: LockedRows,
    now: Date,
  ): Promise<BatchContext> {
    const { store } = this.options;
    let scope = new Set<string>();
    const records = await store.loadWorkingSetScoped(client, [...locked.tasks], (tasks) => {
      scope = bidsReadBy(commands, tasks, now.getTime());
      return [...scope];
    });
    const state = CoordinatorState.from(records);
    const view = guardBids(state, records.tasks, scope);
    const ledger = await ReportLedger.load(client, store, commands, budgetHour(now));
    const loaded = {
      agents: new Set(records.agents.map((agent) => agent.id)),
      tasks: new Set(records.tasks.map((task) => task.id)),
    };
    return { client, state, view, now, ledger, locked, loaded, ended: new Map() };
  }
  /** Decide one command against the batch's state; its records and counted reports are checked, not yet written. */
  private async decide(
    context: BatchContext,
    command: Command,
  ): Promise<{
    decision: Accepted;
    subject: CommandSubject;
    prepared: PreparedEvent[];
    report: Report | undefined;
  }> {
    const { store, rules, newId } = this.options;
    const { client, state, view: batchView, now, ledger, ended } = context;
    const read = async (id: string) =>
      batchView.getTask(id) ?? ended.get(id) ?? (await store.getTask(id, client));
    const taskId = "task_id" in command ? command.task_id : undefined;
    // A final task is not in the working set: read it so the core can say why it refuses, and
    // so the dependencies a post (or a re-run) names. Any of them still active was locked.
    const named = taskId === undefined ? undefined : await read(taskId);
    const finals: (Task | undefined)[] = [];
    for (const id of dependenciesRead(command, named))
      if (batchView.getTask(id) === undefined) finals.push(await read(id));
    const view = withTask(batchView, named, ...finals);
    const decision = decide(view, command, { now, newId, rules });
    if (!decision.ok) throw new SwarmError(decision.code, decision.message, decision.details);
    const { tool_event_id: _toolEventId, ...subject } = decision.subject;
    const prepared = isEmpty(decision) ? [] : decision.events.map((event) => prepareEvent(event, now));
    const report = reportOf(command, prepared);
    if (report !== undefined) {
      const totals = ledger.totals(report, state);
      const refusal = limitRefusal(command, report, totals, rules, now);
      if (refusal !== undefined) throw new SwarmError(refusal.code, refusal.message, refusal.details);
    }
    return { decision, subject, prepared, report };
  }

  /**
   * Decide one command and keep it: `keep` writes its records (or sets them aside for the
   * batch's flush), then its counted reports and its records join the batch's state.
   */
  private async decideAndKeep(
    context: BatchContext,
    command: Command,
    keep: (changes: StateChanges, subject: CommandSubject) => Promise<void>,
  ): Promise<Decided> {
    const { decision, subject, prepared, report } = await this.decide(context, command);
    if (isEmpty(decision)) return { subject, prepared: [] };
    checkLocked(context, decision.changes);
    await keep(decision.changes, subject);
    // Only once every row of it is kept: a refused extra takes back nothing counted.
    if (report !== undefined) context.ledger.add(report);
    context.state.apply(decision.changes);
    for (const task of decision.changes.tasks)
      if (context.state.getTask(task.id) === undefined) context.ended.set(task.id, task);
    return { subject, prepared };
  }

  /** The working set as a fresh read would give it: for tests and tools, not for deciding. */
  async workingSet(): Promise<CoordinatorState> {
    return withClient(this.options.eventLog.pool, async (client) =>
      CoordinatorState.from(await this.options.store.loadWorkingSet(client)),
    );
  }
}

/**
 * A decision may change only rows the batch locked, or rows it creates: anything else would be
 * written over another transaction's work. Reaching past the plan is no error of the command's;
 * the batch is tried again with those rows locked too.
 *
 * An agent counts as changed when the tasks it holds change, even if its own row is written
 * unchanged (an idle agent given one task of several it has room for, an offline one in its
 * grace period): its load was read, and another replica may be giving it a task or taking its
 * leave at the same moment. Every miss is reported at once, so that one retry takes them all.
 */
function checkLocked({ locked, loaded, state }: BatchContext, changes: StateChanges): void {
  const tasks = changes.tasks.filter((task) => loaded.tasks.has(task.id) && !locked.tasks.has(task.id));
  const agents = new Set(changes.agents.map((agent) => agent.id));
  for (const task of changes.tasks) {
    const holder = state.getTask(task.id)?.assigned_agent ?? null;
    if (holder !== task.assigned_agent) {
      if (holder !== null) agents.add(holder);
      if (task.assigned_agent !== null) agents.add(task.assigned_agent);
    }
  }
  const missedAgents = [...agents].filter((id) => loaded.agents.has(id) && !locked.agents.has(id));
  if (tasks.length + missedAgents.length > 0)
    throw new PlanMissed(
      tasks.map((task) => task.id),
      missedAgents,
    );
}

/**
 * The tasks whose open-round bids the batch's commands read (decide reads bids only to place
 * one, and to close an auction): those bid on or closed by name, and for a Tick every auction
 * due at `nowMs`. A task that opens a round within the batch has no bids but the batch's own.
 */
function bidsReadBy(commands: readonly Command[], tasks: readonly Task[], nowMs: number): Set<string> {
  const scope = new Set<string>();
  for (const command of commands) {
    if (command.type === "SubmitBid" || command.type === "CloseAuction" || command.type === "AssignTask")
      scope.add(command.task_id);
    else if (command.type === "Tick") {
      for (const task of tasks)
        if (keepsBids(task) && task.due_at !== null && Date.parse(task.due_at) <= nowMs) scope.add(task.id);
    }
  }
  return scope;
}

/**
 * The batch's state as decide sees it, refusing to answer for bids it did not read: a round
 * open at the load whose bids are out of scope would look empty, and an auction closed on it
 * would go to the wrong winner. That is a bug in `bidsReadBy`, and fails the batch instead.
 */
function guardBids(state: CoordinatorState, loaded: readonly Task[], scope: ReadonlySet<string>): StateView {
  const unread = new Map<string, number>();
  for (const task of loaded) if (keepsBids(task) && !scope.has(task.id)) unread.set(task.id, task.attempt);
  return viewWith(state, {
    bidsFor: (id) => {
      const round = unread.get(id);
      if (round !== undefined && state.getTask(id)?.attempt === round)
        throw new Error(`the bids of task ${id} were not read for this batch`);
      return state.bidsFor(id);
    },
  });
}

/** What a command reports as its agent (limits.ts): the events it stores, their bytes. */
interface Report {
  taskId: string | undefined;
  agentId: string;
  events: number;
  bytes: number;
}

function reportOf(command: Command, prepared: readonly PreparedEvent[]): Report | undefined {
  const agentId = reportingAgent(command);
  if (agentId === undefined) return undefined;
  const reports = agentReports(
    prepared.map((event) => ({ ...event, seq: 0 })),
    agentId,
  );
  if (reports.length === 0) return undefined;
  return {
    taskId: "task_id" in command ? command.task_id : undefined,
    agentId,
    events: reports.length,
    bytes: reports.reduce((sum, event) => sum + storedBytes(event), 0),
  };
}

/**
 * The report counters of a batch (events per task, bytes per agent this hour): read once for the
 * batch's tasks and agents, counted in memory command by command (the batch holds those tasks'
 * and agents' rows locked, so nothing else moves them), written once at its end.
 */
class ReportLedger {
  private readonly added = { tasks: new Map<string, number>(), agents: new Map<string, number>() };

  private constructor(
    private readonly hour: string,
    private readonly taskEvents: Map<string, number>,
    private readonly agentBytes: Map<string, number>,
  ) {}

  static async load(
    client: pg.PoolClient,
    store: PostgresCoordinatorStore,
    commands: readonly Command[],
    hour: string,
  ): Promise<ReportLedger> {
    const taskIds = new Set<string>();
    const agentIds = new Set<string>();
    for (const command of commands) {
      const agentId = reportingAgent(command);
      if (agentId === undefined) continue;
      agentIds.add(agentId);
      if ("task_id" in command) taskIds.add(command.task_id);
    }
    if (agentIds.size === 0) return new ReportLedger(hour, new Map(), new Map());
    const { tasks, agents } = await store.reportCounters(client, [...taskIds], [...agentIds], hour);
    return new ReportLedger(hour, tasks, agents);
  }

  /** The counters as they would stand with `report` counted (as the stored counters do on SQLite). */
  totals(report: Report, state: CoordinatorState): ReportTotals {
    const { taskId } = report;
    // A task posted earlier in this batch is not in the table yet: it starts from nothing.
    const stored =
      taskId === undefined
        ? undefined
        : (this.taskEvents.get(taskId) ?? (state.getTask(taskId) !== undefined ? 0 : undefined));
    return {
      taskEvents:
        stored === undefined || taskId === undefined
          ? undefined
          : stored + (this.added.tasks.get(taskId) ?? 0) + report.events,
      agentBytes:
        (this.agentBytes.get(report.agentId) ?? 0) +
        (this.added.agents.get(report.agentId) ?? 0) +
        report.bytes,
    };
  }

  add(report: Report): void {
    if (report.taskId !== undefined)
      this.added.tasks.set(report.taskId, (this.added.tasks.get(report.taskId) ?? 0) + report.events);
    this.added.agents.set(report.agentId, (this.added.agents.get(report.agentId) ?? 0) + report.bytes);
  }

  /** Write the batch's counts, after its rows (a task posted in the batch exists by then). */
  async flush(client: pg.PoolClient, store: PostgresCoordinatorStore): Promise<void> {
    await store.addReports(client, this.added.tasks, this.added.agents, this.hour);
    this.added.tasks.clear();
    this.added.agents.clear();
  }
}

/**
 * Records decided but not yet written, the newest version of each row: written at once before
 * anything that writes rows of its own, and at the batch's end, the bids in one statement.
 */
class PendingWrites {
  private agents = new Map<string, Agent>();
  private tasks = new Map<string, Task>();
  private bids = new Map<string, Bid>();

  add(changes: StateChanges): void {
    for (const agent of changes.agents) this.agents.set(agent.id, agent);
    for (const task of changes.tasks) this.tasks.set(task.id, task);
    for (const bid of changes.bids) this.bids.set(`${bid.task_id}|${bid.attempt}|${bid.agent_id}`, bid);
  }

  async flush(client: pg.PoolClient, store: PostgresCoordinatorStore): Promise<void> {
    if (this.agents.size + this.tasks.size + this.bids.size === 0) return;
    const changes: StateChanges = {
      agents: [...this.agents.values()],
      tasks: [...this.tasks.values()],
      bids: [...this.bids.values()],
    };
    this.agents = new Map();
    this.tasks = new Map();
    this.bids = new Map();
    await store.applyMany(client, changes);
  }
}

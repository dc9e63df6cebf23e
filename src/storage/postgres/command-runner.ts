/**
 * The coordinator's commands on PostgreSQL, stateless between batches: each batch is one
 * transaction that reads the working set it decides on inside that transaction, decides every
 * command with the pure core, writes each command's records under a savepoint of its own (so a
 * refusal takes back only its own rows), appends the batch's events last (numbered from the head
 * row), and commits. Nothing is kept in memory from one batch to the next, so two processes on
 * one database never decide on different states.
 *
 * A batch reads only the part of the working set its commands can read: every agent, the tasks
 * agents hold, the auctions it names or finds due, and the bids of the rounds it bids on or
 * closes (bidsReadBy); a read outside that fails the batch rather than deciding on less.
 *
 * Batches are serialised across every process on the database by a transaction-scoped advisory
 * lock taken first: the working set is read after it, so each batch sees every earlier one's
 * commit. That is the simple, always-correct form; row locks per command (FOR UPDATE, SKIP LOCKED
 * for due auctions), which let batches about different tasks run side by side, are the next step.
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
import { CoordinatorState, viewWith, withTask, type StateView } from "../../coordinator/state.js";
import type { CommandResult, CommandSubject, Extras } from "../../coordinator/port.js";
import type { ReportTotals } from "../../coordinator/limits.js";
import type {
  Accepted,
  Agent,
  Bid,
  Command,
  CoordinatorRules,
  StateChanges,
  Task,
} from "../../coordinator/types.js";
import { SwarmError } from "../../errors.js";
import type { StoredEvent } from "../../event-log/types.js";
import { prepareEvent, type PreparedEvent } from "../../event-log/validate.js";
import { inTransaction, withClient } from "./database.js";
import type { PostgresCoordinatorStore } from "./coordinator-store.js";
import { appendPrepared, type PostgresEventLog } from "./event-log.js";
import { writeExtra } from "./server-store.js";

/** Any two processes' batches on one database run one after the other. */
const COMMAND_LOCK_KEY = 0x5377_436d; // "SwCm"

export type CommandOutcome = { ok: true; result: CommandResult } | { ok: false; error: unknown };

export interface CommandRunnerOptions {
  eventLog: PostgresEventLog;
  store: PostgresCoordinatorStore;
  rules: CoordinatorRules;
  clock: () => Date;
  newId: () => string;
}

/** What every command of a batch is decided against. */
interface BatchContext {
  client: pg.PoolClient;
  state: CoordinatorState;
  /** The state as decide reads it (see guardBids). */
  view: StateView;
  now: Date;
  ledger: ReportLedger;
}

interface Decided {
  subject: CommandSubject;
  prepared: PreparedEvent[];
}

export class PostgresCommandRunner {
  constructor(private readonly options: CommandRunnerOptions) {}

  /**
   * Decide and persist a batch of commands in one transaction. Each outcome is the command's
   * result or its own refusal; a transaction that does not commit rejects the whole batch, with
   * nothing of it written.
   */
  async run(batch: readonly { command: Command; extras?: Extras | undefined }[]): Promise<CommandOutcome[]> {
    const { eventLog, store } = this.options;
    await eventLog.whenReady();
    let stored: StoredEvent[] = [];
    let outcomes: (CommandOutcome | Decided)[];
    try {
      outcomes = await inTransaction(eventLog.pool, async (client) => {
        await client.query("SELECT pg_advisory_xact_lock($1)", [COMMAND_LOCK_KEY]);
        // One instant for the whole batch: the auctions a Tick finds due are those whose bids
        // were read for it.
        const now = this.options.clock();
        const commands = batch.map((item) => item.command);
        let scope = new Set<string>();
        const named = commands.flatMap((command) => ("task_id" in command ? [command.task_id] : []));
        const ticks = commands.some((command) => command.type === "Tick");
        const records = await store.loadWorkingSetScoped(
          client,
          { taskIds: named, dueBy: ticks ? now.toISOString() : null },
          (tasks) => {
            scope = bidsReadBy(commands, tasks, now.getTime());
            return [...scope];
          },
        );
        const state = CoordinatorState.from(records);
        const view = guardBids(state, records.tasks, scope);
        const ledger = await ReportLedger.load(client, store, commands, budgetHour(now));
        const context: BatchContext = { client, state, view, now, ledger };
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
            await client.query("ROLLBACK TO SAVEPOINT command");
            // A write the database itself refused (read-only, disk full, a statement timeout)
            // is STORAGE_UNAVAILABLE, and noted as the log's failure, as on SQLite; a refusal
            // of the core passes as it is.
            decided.push({ ok: false, error: eventLog.noteFailure(error) });
          }
        }
        await pending.flush(client, store);
        await ledger.flush(client, store);
        // The events last: the head row's lock is then held from numbering to commit only.
        const all = decided.flatMap((d) => ("prepared" in d ? d.prepared : []));
        stored = await appendPrepared(client, all);
        let offset = 0;
        const results = decided.map((d): CommandOutcome | Decided => {
          if (!("prepared" in d)) return d;
          const events = stored.slice(offset, offset + d.prepared.length);
          offset += d.prepared.length;
          return { ok: true, result: { ...d.subject, events } };
        });
        return results;
      });
    } catch (error) {
      throw eventLog.noteFailure(error);
    }
    await eventLog.committed(stored);
    return outcomes as CommandOutcome[];
  }

  /** Decide one command against the batch's state; its records and counted reports are checked, not yet written. */
  private async decide(
    { client, state, view: batchView, now, ledger }: BatchContext,
    command: Command,
  ): Promise<{
    decision: Accepted;
    subject: CommandSubject;
    prepared: PreparedEvent[];
    report: Report | undefined;
  }> {
    const { store, rules, newId } = this.options;
    const taskId = "task_id" in command ? command.task_id : undefined;
    // A final task is not in the working set: read it so the core can say why it refuses.
    const view =
      taskId !== undefined && state.getTask(taskId) === undefined
        ? withTask(batchView, await store.getTask(taskId, client))
        : batchView;
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
    await keep(decision.changes, subject);
    // Only once every row of it is kept: a refused extra takes back nothing counted.
    if (report !== undefined) context.ledger.add(report);
    context.state.apply(decision.changes);
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
 * The tasks whose open-round bids the batch's commands read (decide reads bids only to place
 * one, and to close an auction): those bid on or closed by name, and for a Tick every auction
 * due at `nowMs`. A task that opens a round within the batch has no bids but the batch's own.
 */
function bidsReadBy(commands: readonly Command[], tasks: readonly Task[], nowMs: number): Set<string> {
  const scope = new Set<string>();
  for (const command of commands) {
    if (command.type === "SubmitBid" || command.type === "CloseAuction") scope.add(command.task_id);
    else if (command.type === "Tick") {
      for (const task of tasks) {
        if (
          task.status === "bidding" &&
          task.auction_closes_at !== null &&
          Date.parse(task.auction_closes_at) <= nowMs
        )
          scope.add(task.id);
      }
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
  for (const task of loaded)
    if (task.status === "bidding" && !scope.has(task.id)) unread.set(task.id, task.attempt);
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
 * batch's tasks and agents, counted in memory command by command (the batch holds the command
 * lock, so nothing else moves them), written once at its end.
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

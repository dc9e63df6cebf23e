/**
 * The coordinator's commands on PostgreSQL, stateless between batches: each batch is one
 * transaction that reads the working set it decides on inside that transaction, decides every
 * command with the pure core, writes each command's records under a savepoint of its own (so a
 * refusal takes back only its own rows), appends the batch's events last (numbered from the head
 * row), and commits. Nothing is kept in memory from one batch to the next, so two processes on
 * one database never decide on different states.
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
import { CoordinatorState, withTask } from "../../coordinator/state.js";
import type { CommandResult, CommandSubject, Extras } from "../../coordinator/port.js";
import type { Command, CoordinatorRules } from "../../coordinator/types.js";
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
        const state = CoordinatorState.from(await store.loadWorkingSet(client));
        const decided: (CommandOutcome | Decided)[] = [];
        for (const item of batch) {
          await client.query("SAVEPOINT command");
          try {
            decided.push(await this.decideAndWrite(client, state, item.command, item.extras));
            await client.query("RELEASE SAVEPOINT command");
          } catch (error) {
            await client.query("ROLLBACK TO SAVEPOINT command");
            decided.push({ ok: false, error });
          }
        }
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

  /** Decide one command against the batch's state, write its records, and fold them into that state. */
  private async decideAndWrite(
    client: pg.PoolClient,
    state: CoordinatorState,
    command: Command,
    extras: Extras | undefined,
  ): Promise<Decided> {
    const { store, rules, clock, newId } = this.options;
    const taskId = "task_id" in command ? command.task_id : undefined;
    // A final task is not in the working set: read it so the core can say why it refuses.
    const view =
      taskId !== undefined && state.getTask(taskId) === undefined
        ? withTask(state, await store.getTask(taskId, client))
        : state;
    const now = clock();
    const decision = decide(view, command, { now, newId, rules });
    if (!decision.ok) throw new SwarmError(decision.code, decision.message, decision.details);
    const { tool_event_id: _toolEventId, ...subject } = decision.subject;
    if (isEmpty(decision)) return { subject, prepared: [] };
    await store.apply(client, decision.changes);
    const prepared = decision.events.map((event) => prepareEvent(event, now));
    await this.countReports(client, command, prepared, now);
    for (const write of extras?.(subject) ?? []) await writeExtra(client, write);
    state.apply(decision.changes);
    return { subject, prepared };
  }

  /** The caps on what agents report (limits.ts), counted in the command's savepoint. */
  private async countReports(
    client: pg.PoolClient,
    command: Command,
    prepared: readonly PreparedEvent[],
    now: Date,
  ): Promise<void> {
    const agentId = reportingAgent(command);
    if (agentId === undefined) return;
    const events: StoredEvent[] = prepared.map((event) => ({ ...event, seq: 0 }));
    const reports = agentReports(events, agentId);
    if (reports.length === 0) return;
    const report = { events: reports.length, bytes: reports.reduce((sum, e) => sum + storedBytes(e), 0) };
    const taskId = "task_id" in command ? command.task_id : undefined;
    const totals = await this.options.store.countReports(
      client,
      taskId,
      agentId,
      budgetHour(now),
      report.events,
      report.bytes,
    );
    const refusal = limitRefusal(command, report, totals, this.options.rules, now);
    if (refusal !== undefined) throw new SwarmError(refusal.code, refusal.message, refusal.details);
  }

  /** The working set as a fresh read would give it: for tests and tools, not for deciding. */
  async workingSet(): Promise<CoordinatorState> {
    return withClient(this.options.eventLog.pool, async (client) =>
      CoordinatorState.from(await this.options.store.loadWorkingSet(client)),
    );
  }
}

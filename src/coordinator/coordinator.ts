/**
 * The imperative shell around the pure core. For each command: load what the core needs to
 * see, decide, write the decision's records and events in one transaction, and only after
 * the commit fold the records into the in-memory state (subscribers hear of the events from
 * the event log, also after the commit). One interval timer drives the core's Tick, which
 * closes due auctions and expires silent agents.
 */
import { newId as timeOrderedUuid } from "../ids.js";
import { SwarmError } from "../errors.js";
import type { EventLog } from "../event-log/event-log.js";
import type { StoredEvent } from "../event-log/types.js";
import { getLogger, type Logger } from "../logger.js";
import { decide, isEmpty } from "./decide.js";
import { CoordinatorState, withTask } from "./state.js";
import { CoordinatorStore, type AgentStats } from "./store.js";
import {
  DEFAULT_RULES,
  type Accepted,
  type Agent,
  type Bid,
  type Command,
  type CoordinatorRules,
  type Task,
} from "./types.js";

export interface CoordinatorOptions {
  eventLog: EventLog;
  rules?: Partial<CoordinatorRules>;
  logger?: Logger;
  clock?: () => Date;
  newId?: () => string;
  /** How often the Tick runs: auctions close at most this late. Default 100 ms. */
  tickIntervalMs?: number;
}

export interface CommandResult extends Omit<Accepted["subject"], "tool_event_id"> {
  /** The events the command wrote, as stored (with their seq). */
  events: StoredEvent[];
}

export class Coordinator {
  readonly rules: CoordinatorRules;
  readonly store: CoordinatorStore;
  private readonly eventLog: EventLog;
  private readonly logger: Logger;
  private readonly clock: () => Date;
  private readonly newId: () => string;
  private readonly tickIntervalMs: number;
  private readonly state: CoordinatorState;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: CoordinatorOptions) {
    this.eventLog = options.eventLog;
    this.rules = { ...DEFAULT_RULES, ...options.rules };
    this.logger = (options.logger ?? getLogger()).child({ component: "coordinator" });
    this.clock = options.clock ?? (() => new Date());
    this.newId = options.newId ?? timeOrderedUuid;
    this.tickIntervalMs = options.tickIntervalMs ?? 100;
    this.store = new CoordinatorStore(this.eventLog.db);
    this.state = CoordinatorState.from(this.store.loadWorkingSet());
  }

  /**
   * Recover, then keep time. Agents that were online are set offline with a grace period to
   * reconnect; auctions whose deadline passed while the process was down close at once among
   * the bids already recorded.
   */
  start(): void {
    if (this.timer !== undefined) return;
    const recovered = this.execute({ type: "Recover" });
    const caughtUp = this.tick();
    const { agents, activeTasks, openBids } = this.state.counts;
    this.logger.info(
      {
        agents,
        active_tasks: activeTasks,
        open_bids: openBids,
        events: recovered.events.length + (caughtUp?.events.length ?? 0),
      },
      "coordinator recovered its state",
    );
    this.timer = setInterval(() => this.tick(), this.tickIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Run the core's Tick now; storage failures are logged and retried on the next tick. */
  tick(): CommandResult | undefined {
    try {
      return this.execute({ type: "Tick" });
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
  execute(command: Command): CommandResult {
    const taskId = "task_id" in command ? command.task_id : undefined;
    // A final task has left the working set: load it so the core can say why it refuses.
    const view =
      taskId !== undefined && this.state.getTask(taskId) === undefined
        ? withTask(this.state, this.store.getTask(taskId))
        : this.state;
    const decision = decide(view, command, { now: this.clock(), newId: this.newId, rules: this.rules });
    if (!decision.ok) throw new SwarmError(decision.code, decision.message, decision.details);
    const { tool_event_id: _toolEventId, ...subject } = decision.subject;
    if (isEmpty(decision)) return { ...subject, events: [] };
    const events = this.eventLog.transaction((tx) => {
      this.store.apply(decision.changes);
      return tx.appendMany(decision.events);
    });
    this.state.apply(decision.changes);
    return { ...subject, events };
  }

  // ------------------------------------------------------------ reads

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

  /** The bids of the task's open auction, if it has one. */
  openBids(taskId: string): readonly Bid[] {
    return this.state.bidsFor(taskId);
  }
}

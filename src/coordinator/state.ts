/**
 * The coordinator's working state in memory: every agent, every task that is not final, and
 * the bids of open auctions, with the indexes the rules need (an agent's load, its tasks).
 * Plain data and no I/O: the pure core reads it, the shell loads it from the tables at start
 * and applies each committed decision's changes to it.
 */
import {
  FINAL_TASK_STATUSES,
  type Agent,
  type Bid,
  type Command,
  type StateChanges,
  type Task,
} from "./types.js";

/** What `decide` may read. */
export interface StateView {
  getAgent(id: string): Agent | undefined;
  getTask(id: string): Task | undefined;
  /** Bids of the task's current round while it is bidding or awarded, in the order they were placed. */
  bidsFor(taskId: string): readonly Bid[];
  /** Tasks assigned to or running on the agent. */
  tasksHeldBy(agentId: string): readonly Task[];
  /** Waiting tasks with `taskId` among the dependencies they still wait on. */
  dependentsOf(taskId: string): readonly Task[];
  agents(): Iterable<Agent>;
  /** Tasks whose next timed step (`due_at`) is at or before `nowMs`, earliest first. */
  dueTasks(nowMs: number): readonly Task[];
}

/** Agents by status: `online` is idle plus busy, `left` those deregistered (counted nowhere else). */
export function countAgents(agents: Iterable<Agent>) {
  const counts = { idle: 0, busy: 0, offline: 0, online: 0, left: 0, total: 0 };
  for (const agent of agents) {
    counts.total += 1;
    if (agent.left_at !== null) counts.left += 1;
    else counts[agent.status] += 1;
  }
  counts.online = counts.idle + counts.busy;
  return counts;
}

export function isFinal(task: Task): boolean {
  return FINAL_TASK_STATUSES.includes(task.status);
}

function holdsAgent(task: Task): boolean {
  return (task.status === "assigned" || task.status === "running") && task.assigned_agent !== null;
}

export class CoordinatorState implements StateView {
  private readonly agentsById = new Map<string, Agent>();
  private readonly activeTasks = new Map<string, Task>();
  private readonly bidsByTask = new Map<string, Bid[]>();
  private readonly heldByAgent = new Map<string, Map<string, Task>>();
  /** Dependency id → the waiting tasks still waiting on it. */
  private readonly waitingOn = new Map<string, Set<string>>();
  private readonly deadlines = new DeadlineHeap();

  static from(records: Partial<StateChanges>): CoordinatorState {
    const state = new CoordinatorState();
    state.apply({ agents: records.agents ?? [], tasks: records.tasks ?? [], bids: records.bids ?? [] });
    return state;
  }

  getAgent(id: string): Agent | undefined {
    return this.agentsById.get(id);
  }

  getTask(id: string): Task | undefined {
    return this.activeTasks.get(id);
  }

  bidsFor(taskId: string): readonly Bid[] {
    return this.bidsByTask.get(taskId) ?? [];
  }

  tasksHeldBy(agentId: string): readonly Task[] {
    const held = this.heldByAgent.get(agentId);
    return held === undefined ? [] : [...held.values()];
  }

  agents(): Iterable<Agent> {
    return this.agentsById.values();
  }

  dependentsOf(taskId: string): readonly Task[] {
    const ids = this.waitingOn.get(taskId);
    if (ids === undefined) return [];
    return [...ids].flatMap((id) => {
      const task = this.activeTasks.get(id);
      return task === undefined ? [] : [task];
    });
  }

  dueTasks(nowMs: number): readonly Task[] {
    return this.deadlines.due(nowMs, (id) => this.activeTasks.get(id));
  }

  get counts(): { agents: number; activeTasks: number; openBids: number } {
    let openBids = 0;
    for (const bids of this.bidsByTask.values()) openBids += bids.length;
    return { agents: this.agentsById.size, activeTasks: this.activeTasks.size, openBids };
  }

  /**
   * Drop agents that retention deleted from the tables. Only an agent that has left and holds no
   * task may go: memory never loses what the coordinator still works with.
   */
  forgetAgents(ids: readonly string[]): void {
    for (const id of ids) {
      const agent = this.agentsById.get(id);
      if (agent === undefined || agent.left_at === null || this.tasksHeldBy(id).length > 0) continue;
      this.agentsById.delete(id);
      this.heldByAgent.delete(id);
    }
  }

  /** Fold in a committed decision's records. Final tasks and closed auctions leave memory. */
  apply(changes: StateChanges): void {
    for (const agent of changes.agents) this.agentsById.set(agent.id, agent);
    for (const task of changes.tasks) {
      const previous = this.activeTasks.get(task.id);
      if (previous !== undefined && previous.assigned_agent !== null) {
        this.heldByAgent.get(previous.assigned_agent)?.delete(task.id);
      }
      // Only waiting tasks are indexed by what they wait on (the check keeps the hot path bare).
      if (previous !== undefined && previous.status === "waiting") {
        for (const dependency of previous.waiting_on) {
          const waiting = this.waitingOn.get(dependency);
          waiting?.delete(task.id);
          if (waiting?.size === 0) this.waitingOn.delete(dependency);
        }
      }
      if (task.status === "waiting") {
        for (const dependency of task.waiting_on) {
          let waiting = this.waitingOn.get(dependency);
          if (waiting === undefined) this.waitingOn.set(dependency, (waiting = new Set<string>()));
          waiting.add(task.id);
        }
      }
      if (isFinal(task)) {
        this.activeTasks.delete(task.id);
      } else {
        this.activeTasks.set(task.id, task);
        this.deadlines.track(task);
        if (holdsAgent(task) && task.assigned_agent !== null) {
          let held = this.heldByAgent.get(task.assigned_agent);
          if (held === undefined) this.heldByAgent.set(task.assigned_agent, (held = new Map<string, Task>()));
          held.set(task.id, task);
        }
      }
      // Only the current round's bids are kept, while it is open or its award may still pass to
      // the next bid; a new round starts with none.
      const bids = this.bidsByTask.get(task.id);
      if (
        !keepsBids(task) ||
        (bids !== undefined && bids[0] !== undefined && bids[0].attempt !== task.attempt)
      ) {
        this.bidsByTask.delete(task.id);
      }
    }
    for (const bid of changes.bids) {
      const task = this.activeTasks.get(bid.task_id);
      if (task === undefined || !keepsBids(task) || task.attempt !== bid.attempt) continue;
      const bids = (this.bidsByTask.get(bid.task_id) ?? []).filter(
        (other) => other.agent_id !== bid.agent_id,
      );
      bids.push(bid);
      bids.sort((a, b) => a.bid_order - b.bid_order);
      this.bidsByTask.set(bid.task_id, bids);
    }
  }
}

/** A view that also knows tasks outside the working set (final ones loaded from the tables). */
export function withTask(view: StateView, ...tasks: (Task | undefined)[]): StateView {
  const known = new Map(tasks.flatMap((task) => (task === undefined ? [] : [[task.id, task] as const])));
  if (known.size === 0) return view;
  return viewWith(view, { getTask: (id) => view.getTask(id) ?? known.get(id) });
}

/**
 * The tasks a command reads besides the working set, given the final task it names (if any):
 * the dependencies of a task posted, or of a task run again. A shell loads those not in memory.
 */
export function dependenciesRead(command: Command, named: Task | undefined): readonly string[] {
  if (command.type === "PostTask")
    return Array.isArray(command.depends_on) ? command.depends_on.filter((id) => typeof id === "string") : [];
  if (command.type === "RetryTask") return named?.depends_on ?? [];
  return [];
}

/** `view` read through, but for the reads `overrides` answers. */
export function viewWith(view: StateView, overrides: Partial<StateView>): StateView {
  return {
    getAgent: (id) => view.getAgent(id),
    getTask: (id) => view.getTask(id),
    bidsFor: (id) => view.bidsFor(id),
    tasksHeldBy: (id) => view.tasksHeldBy(id),
    dependentsOf: (id) => view.dependentsOf(id),
    agents: () => view.agents(),
    dueTasks: (nowMs) => view.dueTasks(nowMs),
    ...overrides,
  };
}

/** A task whose round's bids still matter: its auction is open, or its award may still pass on. */
export function keepsBids(task: Task): boolean {
  return task.status === "bidding" || task.status === "assigned";
}

/**
 * When the task's next timed step is due, as the core judges it: its auction closes, its award
 * lapses, its run times out, its retry opens. Null: nothing is due by time.
 */
export function dueAt(task: Task): string | null {
  switch (task.status) {
    case "waiting":
      return task.opens_at;
    case "bidding":
      return task.auction_closes_at;
    case "assigned":
      return later(task.assigned_at, task.ack_ms);
    case "running":
      return later(task.started_at, task.timeout_ms);
    case "completed":
    case "failed":
    case "cancelled":
      return null;
  }
}

/** `ms` after `from`, or null without either. (A named function: closures made per call cost on the hot path.) */
function later(from: string | null, ms: number | null): string | null {
  return from === null || ms === null ? null : new Date(Date.parse(from) + ms).toISOString();
}

function dueAtMs(task: Task): number | undefined {
  return task.due_at === null ? undefined : Date.parse(task.due_at);
}

/**
 * Tasks by `due_at`, so that a Tick looks at the tasks due rather than at every active one
 * (2,000 open auctions cost each Tick about a millisecond). A min-heap with lazy removal: an
 * entry stands for a task's due time as it was pushed, and counts only while the task is still
 * due then; stale entries are dropped when they reach the top.
 */
class DeadlineHeap {
  private readonly heap: { ms: number; taskId: string }[] = [];
  /** Each task's newest entry, so that a task written again with the same deadline adds none. */
  private readonly newest = new Map<string, number>();

  /** Note the task's due time, if it has one (a changed one is pushed anew). */
  track(task: Task): void {
    const ms = dueAtMs(task);
    if (ms === undefined || this.newest.get(task.id) === ms) return;
    this.newest.set(task.id, ms);
    this.push({ ms, taskId: task.id });
  }

  /**
   * The tasks due at or before `nowMs`, each once, earliest first. They stay in the heap until
   * their due time changes: a Tick whose write fails (or that leaves one waiting) finds them again.
   */
  due(nowMs: number, lookup: (taskId: string) => Task | undefined): Task[] {
    const due: Task[] = [];
    const kept: { ms: number; taskId: string }[] = [];
    const seen = new Set<string>();
    while (this.heap.length > 0 && this.heap[0]!.ms <= nowMs) {
      const entry = this.pop();
      if (seen.has(entry.taskId)) continue; // a duplicate of an entry kept just now
      const task = lookup(entry.taskId);
      if (task === undefined || dueAtMs(task) !== entry.ms) {
        if (this.newest.get(entry.taskId) === entry.ms) this.newest.delete(entry.taskId);
        continue;
      }
      seen.add(task.id);
      due.push(task);
      kept.push(entry);
    }
    for (const entry of kept) this.push(entry);
    return due;
  }

  private push(entry: { ms: number; taskId: string }): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.ms <= entry.ms) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  private pop(): { ms: number; taskId: string } {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= heap.length) break;
        const right = left + 1;
        const child = right < heap.length && heap[right]!.ms < heap[left]!.ms ? right : left;
        if (heap[child]!.ms >= last.ms) break;
        heap[i] = heap[child]!;
        i = child;
      }
      heap[i] = last;
    }
    return top;
  }
}

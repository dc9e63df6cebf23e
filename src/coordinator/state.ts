/**
 * The coordinator's working state in memory: every agent, every task that is not final, and
 * the bids of open auctions, with the indexes the rules need (an agent's load, its tasks).
 * Plain data and no I/O: the pure core reads it, the shell loads it from the tables at start
 * and applies each committed decision's changes to it.
 */
import { FINAL_TASK_STATUSES, type Agent, type Bid, type StateChanges, type Task } from "./types.js";

/** What `decide` may read. */
export interface StateView {
  getAgent(id: string): Agent | undefined;
  getTask(id: string): Task | undefined;
  /** Bids of the task's current auction round, in the order they were placed. */
  bidsFor(taskId: string): readonly Bid[];
  /** Tasks assigned to or running on the agent. */
  tasksHeldBy(agentId: string): readonly Task[];
  agents(): Iterable<Agent>;
  /** Tasks in an open auction whose deadline is at or before `nowMs`, earliest deadline first. */
  dueAuctions(nowMs: number): readonly Task[];
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

  dueAuctions(nowMs: number): readonly Task[] {
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
      // Only an open auction's bids are kept; a new round starts with none.
      const bids = this.bidsByTask.get(task.id);
      if (
        task.status !== "bidding" ||
        (bids !== undefined && bids[0] !== undefined && bids[0].attempt !== task.attempt)
      ) {
        this.bidsByTask.delete(task.id);
      }
    }
    for (const bid of changes.bids) {
      const task = this.activeTasks.get(bid.task_id);
      if (task === undefined || task.status !== "bidding" || task.attempt !== bid.attempt) continue;
      const bids = (this.bidsByTask.get(bid.task_id) ?? []).filter(
        (other) => other.agent_id !== bid.agent_id,
      );
      bids.push(bid);
      bids.sort((a, b) => a.bid_order - b.bid_order);
      this.bidsByTask.set(bid.task_id, bids);
    }
  }
}

/** A view that also knows one task outside the working set (a final one loaded from the tables). */
export function withTask(view: StateView, task: Task | undefined): StateView {
  if (task === undefined) return view;
  return viewWith(view, {
    getTask: (id) => (id === task.id ? (view.getTask(id) ?? task) : view.getTask(id)),
  });
}

/** `view` read through, but for the reads `overrides` answers. */
export function viewWith(view: StateView, overrides: Partial<StateView>): StateView {
  return {
    getAgent: (id) => view.getAgent(id),
    getTask: (id) => view.getTask(id),
    bidsFor: (id) => view.bidsFor(id),
    tasksHeldBy: (id) => view.tasksHeldBy(id),
    agents: () => view.agents(),
    dueAuctions: (nowMs) => view.dueAuctions(nowMs),
    ...overrides,
  };
}

/** When the task's open auction closes, in ms; undefined when it is not in one. */
function closesAtMs(task: Task): number | undefined {
  return task.status === "bidding" && task.auction_closes_at !== null
    ? Date.parse(task.auction_closes_at)
    : undefined;
}

/**
 * Open auctions by deadline, so that a Tick looks at the auctions due rather than at every open
 * one (2,000 open auctions cost each Tick about a millisecond). A min-heap with lazy removal: an
 * entry stands for a task's deadline as it was pushed, and counts only while the task is still
 * in that auction; stale entries are dropped when they reach the top.
 */
class DeadlineHeap {
  private readonly heap: { ms: number; taskId: string }[] = [];
  /** Each task's newest entry, so that a task written again with the same deadline adds none. */
  private readonly newest = new Map<string, number>();

  /** Note the task's deadline if it is in an open auction (a new round's deadline is pushed anew). */
  track(task: Task): void {
    const ms = closesAtMs(task);
    if (ms === undefined || this.newest.get(task.id) === ms) return;
    this.newest.set(task.id, ms);
    this.push({ ms, taskId: task.id });
  }

  /**
   * The tasks whose deadline is at or before `nowMs`, each once, earliest first. They stay in the
   * heap until their auction closes: a Tick whose write fails finds them again on the next one.
   */
  due(nowMs: number, lookup: (taskId: string) => Task | undefined): Task[] {
    const due: Task[] = [];
    const kept: { ms: number; taskId: string }[] = [];
    const seen = new Set<string>();
    while (this.heap.length > 0 && this.heap[0]!.ms <= nowMs) {
      const entry = this.pop();
      if (seen.has(entry.taskId)) continue; // a duplicate of an entry kept just now
      const task = lookup(entry.taskId);
      if (task === undefined || closesAtMs(task) !== entry.ms) {
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

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
  biddingTasks(): Iterable<Task>;
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

  *biddingTasks(): Iterable<Task> {
    for (const task of this.activeTasks.values()) if (task.status === "bidding") yield task;
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
  return {
    getAgent: (id) => view.getAgent(id),
    getTask: (id) => (id === task.id ? (view.getTask(id) ?? task) : view.getTask(id)),
    bidsFor: (id) => view.bidsFor(id),
    tasksHeldBy: (id) => view.tasksHeldBy(id),
    agents: () => view.agents(),
    biddingTasks: () => view.biddingTasks(),
  };
}

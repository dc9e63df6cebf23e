/**
 * The pure core: `decide(state, command, ctx)` turns a command into the records to write and
 * the events that say what happened, or a coded refusal. No I/O, no clock, no randomness:
 * time and ids come from `ctx`, so every decision can be replayed and tested without a
 * database.
 */
import { EventType } from "../event-log/event-types.js";
import type { EventInput, JsonValue } from "../event-log/types.js";
import { dueAt, isFinal, type StateView } from "./state.js";
import { stalledMs } from "./stalls.js";
import {
  AWARD_RULES,
  type Accepted,
  type Agent,
  type AwardRule,
  type AgentStatus,
  type Bid,
  type Command,
  type CoordinatorErrorCode,
  type Decision,
  type DecisionContext,
  type Refused,
  type ServerStall,
  type Task,
} from "./types.js";

export const COORDINATOR_SOURCE = "coordinator";
const PREVIEW_LENGTH = 200;
const CAPABILITY_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,49}$/;
const MAX_CAPABILITIES = 50;
/** The shortest `ack_ms` or `timeout_ms`: under it, a Tick's own period decides more than the task. */
const MIN_TASK_TIMER_MS = 100;
const MAX_DEPENDENCIES = 100;

/** A refusal, thrown inside a decision and returned as data by `decide`. */
class Refusal extends Error {
  constructor(
    readonly code: CoordinatorErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function refuse(code: CoordinatorErrorCode, message: string, details?: Record<string, unknown>): never {
  throw new Refusal(code, message, details);
}

function invalid(field: string, message: string): never {
  refuse("INVALID_COMMAND", `${field}: ${message}`, { field });
}

export function preview(value: unknown, length = PREVIEW_LENGTH): string | null {
  if (value === undefined || value === null) return null;
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

/**
 * What a tool report's event records of its body: the tool's name, and previews of its input,
 * output and error. A report repeating a call_id is compared with its first copy in these terms.
 */
export function toolReportData(report: { tool: string; input?: unknown; output?: unknown; error?: string }) {
  return {
    tool: report.tool.trim(),
    input: preview(report.input),
    output: preview(report.output),
    error: report.error === undefined ? null : preview(report.error.trim()),
  };
}

/** Holds the records a decision changes and the events it emits; reads see its own writes. */
class Draft {
  readonly events: EventInput[] = [];
  private readonly agents = new Map<string, Agent>();
  private readonly tasks = new Map<string, Task>();
  private readonly bids = new Map<string, Bid>();
  /** Agents whose load may have changed, with their status before the decision. */
  private readonly touched = new Map<string, AgentStatus>();

  readonly nowIso: string;
  readonly nowMs: number;

  constructor(
    private readonly state: StateView,
    readonly ctx: DecisionContext,
  ) {
    this.nowIso = ctx.now.toISOString();
    this.nowMs = ctx.now.getTime();
  }

  agent(id: string): Agent | undefined {
    return this.agents.get(id) ?? this.state.getAgent(id);
  }

  task(id: string): Task | undefined {
    return this.tasks.get(id) ?? this.state.getTask(id);
  }

  bidsFor(task: Task): Bid[] {
    const byAgent = new Map<string, Bid>();
    for (const bid of this.state.bidsFor(task.id))
      if (bid.attempt === task.attempt) byAgent.set(bid.agent_id, bid);
    for (const bid of this.bids.values()) {
      if (bid.task_id === task.id && bid.attempt === task.attempt) byAgent.set(bid.agent_id, bid);
    }
    return [...byAgent.values()].sort((a, b) => a.bid_order - b.bid_order);
  }

  /** Tasks the agent holds (assigned or running), as this decision leaves them. */
  held(agentId: string): Task[] {
    const result = new Map<string, Task>();
    for (const task of this.state.tasksHeldBy(agentId)) result.set(task.id, this.task(task.id) ?? task);
    for (const task of this.tasks.values()) result.set(task.id, task);
    return [...result.values()].filter(
      (task) => task.assigned_agent === agentId && (task.status === "assigned" || task.status === "running"),
    );
  }

  load(agentId: string): number {
    return this.held(agentId).length;
  }

  *allAgents(): Iterable<Agent> {
    const seen = new Set<string>();
    for (const agent of this.agents.values()) {
      seen.add(agent.id);
      yield agent;
    }
    for (const agent of this.state.agents()) if (!seen.has(agent.id)) yield agent;
  }

  /** Tasks with a step due at this decision's time, as this decision leaves them, earliest first. */
  dueTasks(): Task[] {
    const due = new Map<string, Task>();
    for (const task of this.state.dueTasks(this.nowMs)) due.set(task.id, this.task(task.id) ?? task);
    for (const task of this.tasks.values()) due.set(task.id, task);
    return [...due.values()].filter(
      (task) => !isFinal(task) && task.due_at !== null && Date.parse(task.due_at) <= this.nowMs,
    );
  }

  putAgent(agent: Agent): void {
    this.touch(agent.id);
    this.agents.set(agent.id, agent);
  }

  /** Write the task, its `due_at` derived here, so that no rule can leave it stale. */
  putTask(task: Task): Task {
    const before = this.task(task.id);
    if (before?.assigned_agent) this.touch(before.assigned_agent);
    if (task.assigned_agent) this.touch(task.assigned_agent);
    const due = dueAt(task);
    const written = task.due_at === due ? task : { ...task, due_at: due };
    this.tasks.set(task.id, written);
    // Its dependents learn of its end before the decision is handed back (settleDependents).
    if (isFinal(written) && (before === undefined || !isFinal(before))) this.ended.push(written);
    return written;
  }

  /** Tasks this decision ended, whose dependents have yet to hear of it. */
  readonly ended: Task[] = [];

  /** Waiting tasks still waiting on `taskId`, as this decision leaves them. */
  dependentsOf(taskId: string): Task[] {
    const found: Task[] = [];
    for (const task of this.state.dependentsOf(taskId))
      if (!this.tasks.has(task.id) && task.waiting_on.includes(taskId)) found.push(task);
    for (const task of this.tasks.values())
      if (task.status === "waiting" && task.waiting_on.includes(taskId)) found.push(task);
    return found;
  }

  putBid(bid: Bid): void {
    this.bids.set(`${bid.task_id}|${bid.attempt}|${bid.agent_id}`, bid);
  }

  emit(
    event_type: string,
    fields: {
      source?: string;
      task_id?: string | null;
      agent_id?: string | null;
      data?: Record<string, JsonValue>;
    },
  ): EventInput {
    const event: EventInput = {
      id: this.ctx.newId(),
      event_type,
      source: fields.source ?? COORDINATOR_SOURCE,
      task_id: fields.task_id ?? null,
      agent_id: fields.agent_id ?? null,
      data: fields.data ?? {},
      timestamp: this.nowIso,
    };
    this.events.push(event);
    return event;
  }

  private touch(agentId: string): void {
    if (this.touched.has(agentId)) return;
    const agent = this.agent(agentId);
    if (agent !== undefined) this.touched.set(agentId, agent.status);
  }

  /** Bring every touched agent's idle/busy status in line with its load, announcing changes. */
  settleStatuses(): void {
    for (const [agentId, statusBefore] of this.touched) {
      const agent = this.agent(agentId);
      if (agent === undefined) continue;
      let status = agent.status;
      if (status !== "offline") status = this.load(agentId) >= agent.max_concurrent ? "busy" : "idle";
      if (status !== agent.status) this.agents.set(agentId, { ...agent, status });
      if (status !== statusBefore) {
        this.emit(EventType.AGENT_STATUS_CHANGED, {
          agent_id: agentId,
          data: { from: statusBefore, to: status, reason: this.statusReasons.get(agentId) ?? "load changed" },
        });
      }
    }
  }

  /** Why an agent's status is changing, for the event that will announce it. */
  readonly statusReasons = new Map<string, string>();

  accepted(subject: Accepted["subject"] = {}): Accepted {
    // Each ending may end or open more (a cancelled dependency cancels its dependents, theirs…).
    for (let task = this.ended.shift(); task !== undefined; task = this.ended.shift())
      settleDependents(this, task);
    this.settleStatuses();
    return {
      ok: true,
      changes: {
        agents: [...this.agents.values()],
        tasks: [...this.tasks.values()],
        bids: [...this.bids.values()],
      },
      events: this.events,
      subject: {
        ...subject,
        // Hand back the record as the decision leaves it, statuses settled.
        ...(subject.agent ? { agent: this.agent(subject.agent.id) } : {}),
        ...(subject.task ? { task: this.task(subject.task.id) } : {}),
      },
    };
  }
}

// ------------------------------------------------------------------ input checks

function checkText(field: string, value: unknown, max: number): string {
  if (typeof value !== "string") invalid(field, "must be a string");
  const text = value.trim();
  if (text.length === 0) invalid(field, "must not be empty");
  if (text.length > max) invalid(field, `must be at most ${max} characters`);
  return text;
}

function checkInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    invalid(field, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

function checkCapabilities(field: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) invalid(field, "must be an array of strings");
  if (value.length > MAX_CAPABILITIES) invalid(field, `must hold at most ${MAX_CAPABILITIES} entries`);
  const capabilities = value.map((item: unknown, index) => {
    const name = typeof item === "string" ? item.trim().toLowerCase() : "";
    if (!CAPABILITY_PATTERN.test(name)) {
      invalid(`${field}[${index}]`, "must be 1-50 characters of a-z, 0-9, '_', '.', '-'");
    }
    return name;
  });
  return [...new Set(capabilities)];
}

// ------------------------------------------------------------------ rules

function missingCapabilities(agent: Agent, task: Task): string[] {
  return task.required_capabilities.filter((capability) => !agent.capabilities.includes(capability));
}

/**
 * An agent the coordinator still counts on: not gone, and either online or offline only
 * because the coordinator restarted and its grace period has not run out.
 */
export function isReachable(agent: Agent, nowMs: number): boolean {
  if (agent.left_at !== null) return false;
  if (agent.status !== "offline") return true;
  return agent.grace_until !== null && nowMs < Date.parse(agent.grace_until);
}

function requireTask(draft: Draft, taskId: string): Task {
  const task = draft.task(taskId);
  if (task === undefined) refuse("TASK_NOT_FOUND", `no task ${taskId}`, { task_id: taskId });
  return task;
}

function requireAgent(draft: Draft, agentId: string): Agent {
  const agent = draft.agent(agentId);
  if (agent === undefined) refuse("AGENT_NOT_FOUND", `no agent ${agentId}`, { agent_id: agentId });
  if (agent.left_at !== null)
    refuse("AGENT_LEFT", `agent ${agentId} has deregistered`, { agent_id: agentId });
  return agent;
}

/** An agent the operator names in a field: unknown or departed, refused naming that field. */
function requireAgentIn(draft: Draft, agentId: string, field: string): Agent {
  const agent = draft.agent(agentId);
  if (agent === undefined)
    refuse("AGENT_NOT_FOUND", `${field}: no agent ${agentId}`, { field, agent_id: agentId });
  if (agent.left_at !== null)
    refuse("AGENT_LEFT", `${field}: agent ${agentId} has deregistered`, { field, agent_id: agentId });
  return agent;
}

/** The assigned agent reporting on its task: it must hold the task, and it counts as contact. */
function requireAssignee(draft: Draft, task: Task, agentId: string): Agent {
  const agent = requireAgent(draft, agentId);
  if (isFinal(task))
    refuse("TASK_FINAL", `task ${task.id} is already ${task.status}`, { status: task.status });
  if (task.assigned_agent !== agentId) {
    refuse("NOT_ASSIGNED_AGENT", `task ${task.id} is not assigned to agent ${agentId}`, {
      task_id: task.id,
      agent_id: agentId,
    });
  }
  if (!isReachable(agent, draft.nowMs))
    refuse("AGENT_OFFLINE", `agent ${agentId} is offline; send a heartbeat first`);
  return markContact(draft, agent, "reported on its task");
}

/** Any word from an agent refreshes last_seen; one offline after a restart comes back online. */
function markContact(draft: Draft, agent: Agent, reason: string): Agent {
  const updated: Agent = { ...agent, last_seen: draft.nowIso, grace_until: null };
  if (agent.status === "offline") {
    updated.status = "idle"; // settleStatuses makes it busy if its load says so
    draft.statusReasons.set(agent.id, reason);
  }
  draft.putAgent(updated);
  return updated;
}

/** Why an agent cannot take the task now, as a refusal; undefined when it can. */
function unableToTake(draft: Draft, agent: Agent, task: Task): Refused | undefined {
  if (agent.left_at !== null)
    return { ok: false, code: "AGENT_LEFT", message: `agent ${agent.id} has deregistered` };
  if (agent.status === "offline")
    return { ok: false, code: "AGENT_OFFLINE", message: `agent ${agent.id} is offline` };
  const missing = missingCapabilities(agent, task);
  if (missing.length > 0) {
    return {
      ok: false,
      code: "AGENT_NOT_ELIGIBLE",
      message: `agent ${agent.id} lacks ${missing.join(", ")}`,
      details: { missing_capabilities: missing },
    };
  }
  if (draft.load(agent.id) >= agent.max_concurrent) {
    return {
      ok: false,
      code: "AGENT_AT_CAPACITY",
      message: `agent ${agent.id} already holds ${agent.max_concurrent} task(s)`,
    };
  }
  return undefined;
}

/** The bid's agent can still take the task now (offline during a restart's grace counts). */
function canWin(draft: Draft, bid: Bid, task: Task): boolean {
  const agent = draft.agent(bid.agent_id);
  return (
    agent !== undefined &&
    isReachable(agent, draft.nowMs) &&
    missingCapabilities(agent, task).length === 0 &&
    draft.load(agent.id) < agent.max_concurrent
  );
}

/**
 * The round's bids in the order the award goes down them: the lowest bid first, the earliest
 * among equals, except that agents which failed an earlier attempt of the task come after every
 * other (they may still win, when nobody else can). Agents whose award of this round lapsed are
 * out.
 */
function awardOrder(draft: Draft, task: Task, bids: readonly Bid[]): Bid[] {
  // Today's rule on a first attempt, the common case: by price alone, without the extra keys.
  if (task.award === "lowest" && task.failed_agents.length === 0 && task.declined_agents.length === 0)
    return [...bids].sort(byPriceThenOrder);
  const keyed = bids
    .filter((bid) => !task.declined_agents.includes(bid.agent_id))
    .map((bid) => ({
      bid,
      failedBefore: task.failed_agents.includes(bid.agent_id) ? 1 : 0,
      price: task.award === "best_value" ? bidScore(draft, bid) : bid.bid_sats,
    }));
  keyed.sort(
    (a, b) => a.failedBefore - b.failedBefore || a.price - b.price || a.bid.bid_order - b.bid.bid_order,
  );
  return keyed.map((entry) => entry.bid);
}

function byPriceThenOrder(a: Bid, b: Bid): number {
  return a.bid_sats - b.bid_sats || a.bid_order - b.bid_order;
}

/**
 * How far an agent's record says it can be counted on, from 0 to 1: its completed runs against
 * its failed ones and (counted twice: they hold a slot for the whole timeout) timed-out ones,
 * smoothed as if every agent had started with four runs completed and one failed, so a new agent
 * (0.8) is not shut out by one with a long clean record (at most 1), and a few failures do not
 * sink anyone at once.
 *
 *   reliability = (completed + 4) / (completed + failed + 2 × timed_out + 5)
 */
export function reliability(agent: Pick<Agent, "runs_completed" | "runs_failed" | "runs_timed_out">): number {
  return (
    (agent.runs_completed + 4) / (agent.runs_completed + agent.runs_failed + 2 * agent.runs_timed_out + 5)
  );
}

/** `best_value`'s price of a bid: what it costs per unit of reliability. Lower wins. */
function bidScore(draft: Draft, bid: Bid): number {
  const agent = draft.agent(bid.agent_id);
  return (
    bid.bid_sats /
    (agent === undefined
      ? reliability({ runs_completed: 0, runs_failed: 0, runs_timed_out: 0 })
      : reliability(agent))
  );
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

/** Count a run's end against the agent that ran it. */
function countRun(draft: Draft, agentId: string | null, outcome: "completed" | "failed" | "timed_out"): void {
  const agent = agentId === null ? undefined : draft.agent(agentId);
  if (agent === undefined) return;
  // Spelled out: a computed key would build each agent record the slow way, on the hot path.
  if (outcome === "completed") draft.putAgent({ ...agent, runs_completed: agent.runs_completed + 1 });
  else if (outcome === "failed") draft.putAgent({ ...agent, runs_failed: agent.runs_failed + 1 });
  else draft.putAgent({ ...agent, runs_timed_out: agent.runs_timed_out + 1 });
}

function award(
  draft: Draft,
  task: Task,
  agentId: string,
  bidSats: number | null,
  data: Record<string, JsonValue> = {},
): void {
  const awarded = draft.putTask({
    ...task,
    status: "assigned",
    assigned_agent: agentId,
    winning_bid_sats: bidSats,
    assigned_at: draft.nowIso,
  });
  draft.emit(EventType.TASK_ASSIGNED, {
    task_id: task.id,
    agent_id: agentId,
    data: { bid_sats: bidSats, attempt: task.attempt, ack_by: awarded.due_at, ...data },
  });
}

function closeAuction(
  draft: Draft,
  task: Task,
  reason: "deadline" | "all bids in" | "operator" | "assigned by the operator",
  assignee?: string,
): void {
  const bids = draft.bidsFor(task);
  const winner =
    assignee === undefined
      ? awardOrder(draft, task, bids).find((bid) => canWin(draft, bid, task))
      : bids.find((bid) => bid.agent_id === assignee);
  for (const bid of bids) draft.putBid({ ...bid, outcome: bid === winner ? "won" : "lost" });
  const winnerId = assignee ?? winner?.agent_id ?? null;
  draft.emit(EventType.AUCTION_CLOSED, {
    task_id: task.id,
    agent_id: winnerId,
    data: {
      attempt: task.attempt,
      reason,
      bids: bids.length,
      winner: winnerId,
      winning_bid_sats: winner?.bid_sats ?? null,
      award: task.award,
      // Why the winner won, under best_value: every bid with its bidder's reliability and score.
      ...(task.award === "best_value"
        ? {
            scores: awardOrder(draft, task, bids).map((bid) => ({
              agent_id: bid.agent_id,
              bid_sats: bid.bid_sats,
              reliability: round3(
                reliability(
                  draft.agent(bid.agent_id) ?? { runs_completed: 0, runs_failed: 0, runs_timed_out: 0 },
                ),
              ),
              score: round3(bidScore(draft, bid)),
            })),
          }
        : {}),
    },
  });
  if (winnerId !== null) {
    award(draft, task, winnerId, winner?.bid_sats ?? null, assignee === undefined ? {} : { by: "operator" });
  } else {
    const failure = bids.length === 0 ? "no bids" : "no eligible bids";
    draft.putTask({ ...task, status: "failed", error: failure, completed_at: draft.nowIso });
    draft.emit(EventType.TASK_FAILED, { task_id: task.id, data: { reason: failure, attempt: task.attempt } });
  }
}

/** An agent whose stream was seen but no longer is: it heartbeats, and hears nothing. */
export function isZombie(agent: Agent, nowMs: number): boolean {
  return agent.stream_until !== null && Date.parse(agent.stream_until) <= nowMs;
}

/** Every eligible online agent has bid: nobody is left to wait for. */
function everyoneHasBid(draft: Draft, task: Task): boolean {
  const bidders = new Set(draft.bidsFor(task).map((bid) => bid.agent_id));
  let eligible = 0;
  for (const agent of draft.allAgents()) {
    if (agent.status === "offline" || agent.left_at !== null) continue;
    if (missingCapabilities(agent, task).length > 0) continue;
    if (!bidders.has(agent.id) && draft.load(agent.id) >= agent.max_concurrent) continue;
    // Heartbeating with its stream gone (a zombie): it hears of no auction, so none waits for it.
    if (!bidders.has(agent.id) && isZombie(agent, draft.nowMs)) continue;
    eligible += 1;
    if (!bidders.has(agent.id)) return false;
  }
  return eligible > 0;
}

/** Put the task up for auction in a new round, its award and run cleared. */
function openRound(draft: Draft, task: Task, why: string, previousAgent: string | null): void {
  const closesAt = new Date(draft.nowMs + task.auction_ms).toISOString();
  draft.putTask({
    ...task,
    status: "bidding",
    attempt: task.attempt + 1,
    assigned_agent: null,
    winning_bid_sats: null,
    assigned_at: null,
    started_at: null,
    opens_at: null,
    declined_agents: [],
    auction_closes_at: closesAt,
  });
  draft.emit(EventType.TASK_BIDDING, {
    task_id: task.id,
    agent_id: previousAgent,
    data: { attempt: task.attempt + 1, closes_at: closesAt, reason: why, previous_agent: previousAgent },
  });
}

/** The delay before retry number `failures` (1 for the first): doubling from the task's backoff, capped. */
export function retryDelayMs(task: Pick<Task, "retry_backoff_ms">, failures: number, capMs: number): number {
  if (task.retry_backoff_ms === 0) return 0;
  return Math.min(capMs, task.retry_backoff_ms * 2 ** Math.min(failures - 1, 40));
}

/**
 * The task's attempt ended without a result: retry it (after its backoff) while it has attempts
 * left, or fail it for good. `charged` says whose doing it was: the task's run (a reported
 * failure, a timeout), limited by the task's `max_attempts`; or its agent vanishing (silence,
 * departure, an award nobody acknowledged), which the task is allowed at least
 * `maxAuctionAttempts` of. The agent it was with ranks last in the task's later auctions.
 */
function failAttempt(
  draft: Draft,
  task: Task,
  why: string,
  charged: "run" | "agent",
  finalEvent: { source?: string; data?: Record<string, JsonValue> } = {},
): void {
  const { rules } = draft.ctx;
  const previousAgent = task.assigned_agent;
  const failures = task.failures + 1;
  const allowed =
    charged === "agent" ? Math.max(task.max_attempts, rules.maxAuctionAttempts) : task.max_attempts;
  const failedAgents =
    previousAgent === null || task.failed_agents.includes(previousAgent)
      ? task.failed_agents
      : [...task.failed_agents, previousAgent];
  const charge = { ...task, failures, failed_agents: failedAgents };
  if (failures >= allowed) {
    const reason = charged === "agent" ? `${why}; no auction attempts left` : why;
    draft.putTask({ ...charge, status: "failed", error: reason, completed_at: draft.nowIso });
    draft.emit(EventType.TASK_FAILED, {
      source: finalEvent.source ?? COORDINATOR_SOURCE,
      task_id: task.id,
      agent_id: previousAgent,
      data: { reason: preview(reason), attempt: task.attempt, ...finalEvent.data },
    });
    return;
  }
  const delayMs = retryDelayMs(task, failures, rules.maxRetryBackoffMs);
  if (delayMs === 0) return openRound(draft, charge, why, previousAgent);
  const opensAt = new Date(draft.nowMs + delayMs).toISOString();
  draft.putTask({
    ...charge,
    status: "waiting",
    assigned_agent: null,
    winning_bid_sats: null,
    assigned_at: null,
    started_at: null,
    declined_agents: [],
    opens_at: opensAt,
  });
  draft.emit(EventType.TASK_RETRY_SCHEDULED, {
    task_id: task.id,
    agent_id: previousAgent,
    data: {
      attempt: task.attempt + 1,
      failures,
      max_attempts: allowed,
      reason: why,
      backoff_ms: delayMs,
      opens_at: opensAt,
      previous_agent: previousAgent,
    },
  });
}

/**
 * The winner did not start within `ack_ms`: the award passes down the round's bids to the next
 * agent that can take the task, or, with none left, the task goes up in a new round (charged as
 * an agent lost). An agent offline only because the coordinator restarted is given its grace.
 */
function expireAward(draft: Draft, task: Task): void {
  const expired = task.assigned_agent;
  if (expired === null) return;
  const holder = draft.agent(expired);
  if (holder !== undefined && holder.status === "offline" && isReachable(holder, draft.nowMs)) return;
  const declined = { ...task, declined_agents: [...task.declined_agents, expired] };
  const bids = draft.bidsFor(task);
  const next = awardOrder(draft, declined, bids).find((bid) => canWin(draft, bid, declined));
  for (const bid of bids) {
    if (bid.agent_id === expired && bid.outcome !== "lost") draft.putBid({ ...bid, outcome: "lost" });
    if (bid === next) draft.putBid({ ...bid, outcome: "won" });
  }
  draft.emit(EventType.TASK_AWARD_EXPIRED, {
    task_id: task.id,
    agent_id: expired,
    data: {
      attempt: task.attempt,
      ack_ms: task.ack_ms,
      expired_agent: expired,
      next_agent: next?.agent_id ?? null,
      next_bid_sats: next?.bid_sats ?? null,
    },
  });
  countRun(draft, expired, "failed");
  const why = `award not acknowledged within ${task.ack_ms ?? 0} ms`;
  if (next !== undefined) award(draft, declined, next.agent_id, next.bid_sats, { passed_from: expired });
  else failAttempt(draft, declined, why, "agent");
}

/** A run past its `timeout_ms`: the attempt fails, and the retry rule decides what follows. */
function timeOut(draft: Draft, task: Task): void {
  draft.emit(EventType.TASK_TIMED_OUT, {
    task_id: task.id,
    agent_id: task.assigned_agent,
    data: { attempt: task.attempt, timeout_ms: task.timeout_ms, started_at: task.started_at },
  });
  countRun(draft, task.assigned_agent, "timed_out");
  failAttempt(draft, task, `timed out after ${task.timeout_ms ?? 0} ms`, "run");
}

/**
 * `dependency` has ended: each task waiting on it opens its auction once its last dependency has
 * completed, or is cancelled, naming it, when it failed or was cancelled (a dependency that
 * failed for good: a retry is no ending).
 */
function settleDependents(draft: Draft, dependency: Task): void {
  for (const dependent of draft.dependentsOf(dependency.id)) {
    if (dependency.status !== "completed") {
      const reason = `dependency ${dependency.id} ${dependency.status}`;
      draft.putTask({ ...dependent, status: "cancelled", error: reason, completed_at: draft.nowIso });
      draft.emit(EventType.TASK_CANCELLED, {
        task_id: dependent.id,
        data: { reason, previous_status: "waiting", dependency: dependency.id },
      });
      continue;
    }
    const waitingOn = dependent.waiting_on.filter((id) => id !== dependency.id);
    if (waitingOn.length > 0) {
      draft.putTask({ ...dependent, waiting_on: waitingOn });
      continue;
    }
    const closesAt = new Date(draft.nowMs + dependent.auction_ms).toISOString();
    draft.putTask({ ...dependent, status: "bidding", waiting_on: [], auction_closes_at: closesAt });
    draft.emit(EventType.TASK_BIDDING, {
      task_id: dependent.id,
      data: { attempt: dependent.attempt, closes_at: closesAt, reason: "dependencies completed" },
    });
  }
}

/** What the Tick does with a task whose step is due. */
function runDueStep(draft: Draft, task: Task): void {
  switch (task.status) {
    case "bidding":
      return closeAuction(draft, task, "deadline");
    case "assigned":
      return expireAward(draft, task);
    case "running":
      return timeOut(draft, task);
    case "waiting":
      return openRound(draft, task, "retry", null);
    case "completed":
    case "failed":
    case "cancelled":
      return;
  }
}

/**
 * Whether the agent has been silent for the heartbeat timeout, not counting the time the server
 * itself was stalled: a heartbeat that waited unread in the server's buffers meanwhile is not
 * the agent's fault.
 */
function silentTooLong(
  agent: Agent,
  nowMs: number,
  timeoutMs: number,
  stalls: readonly ServerStall[] = [],
): boolean {
  const lastSeenMs = Date.parse(agent.last_seen);
  const silence = nowMs - lastSeenMs;
  // Only an agent already past the timeout needs the stalls walked.
  return silence >= timeoutMs && silence - stalledMs(stalls, lastSeenMs, nowMs) >= timeoutMs;
}

function loseAgent(draft: Draft, agent: Agent, why: string): void {
  for (const task of draft.held(agent.id)) {
    countRun(draft, agent.id, "failed");
    failAttempt(draft, task, why, "agent");
  }
}

// ------------------------------------------------------------------ commands

/** What a task is asked to be, checked: the body a post gives, a re-run copies, a schedule keeps. */
export type TaskSpec = Pick<
  Task,
  | "description"
  | "required_capabilities"
  | "auction_ms"
  | "max_bid_sats"
  | "ack_ms"
  | "timeout_ms"
  | "max_attempts"
  | "retry_backoff_ms"
  | "depends_on"
  | "award"
>;

type TaskBody = Omit<Extract<Command, { type: "PostTask" }>, "type">;

/** A task body checked as a post checks it: its spec, or the field at fault and why. */
export function checkTaskSpec(
  body: Record<string, unknown>,
  rules: DecisionContext["rules"],
): { spec: TaskSpec } | { field: string; message: string } {
  try {
    return { spec: taskSpec(body as unknown as TaskBody, rules) };
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    const field = typeof error.details?.field === "string" ? error.details.field : "task";
    return { field, message: error.message.replace(`${field}: `, "") };
  }
}

function taskSpec(command: TaskBody, rules: DecisionContext["rules"]): TaskSpec {
  return {
    description: checkText("description", command.description, rules.maxDescriptionLength),
    required_capabilities: checkCapabilities("required_capabilities", command.required_capabilities),
    auction_ms:
      optional("auction_ms", command.auction_ms, rules.minAuctionMs, rules.maxAuctionMs) ??
      rules.defaultAuctionMs,
    max_bid_sats: optional("max_bid_sats", command.max_bid_sats, 1, rules.maxBidSats) ?? null,
    ack_ms: optional("ack_ms", command.ack_ms, MIN_TASK_TIMER_MS, rules.maxTaskTimerMs) ?? rules.defaultAckMs,
    timeout_ms: optional("timeout_ms", command.timeout_ms, MIN_TASK_TIMER_MS, rules.maxTaskTimerMs) ?? null,
    max_attempts: optional("max_attempts", command.max_attempts, 1, rules.maxAttempts) ?? 1,
    retry_backoff_ms: optional("retry_backoff_ms", command.retry_backoff_ms, 0, rules.maxRetryBackoffMs) ?? 0,
    depends_on: checkDependencies(command.depends_on),
    award: checkAward(command.award),
  };
}

function checkAward(value: unknown): AwardRule {
  if (value === undefined) return "lowest";
  if (typeof value !== "string" || !(AWARD_RULES as readonly string[]).includes(value))
    invalid("award", `must be one of ${AWARD_RULES.map((rule) => `"${rule}"`).join(", ")}`);
  return value as AwardRule;
}

/** An optional integer field: undefined when absent, else checked. */
function optional(field: string, value: unknown, min: number, max: number): number | undefined {
  return value === undefined ? undefined : checkInteger(field, value, min, max);
}

function checkDependencies(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) invalid("depends_on", "must be an array of task ids");
  if (value.length > MAX_DEPENDENCIES)
    invalid("depends_on", `must hold at most ${MAX_DEPENDENCIES} task ids`);
  const ids = value.map((item: unknown, index) => checkText(`depends_on[${index}]`, item, 200));
  const repeated = ids.findIndex((id, index) => ids.indexOf(id) !== index);
  if (repeated >= 0) invalid(`depends_on[${repeated}]`, `names task ${ids[repeated]} twice`);
  return ids;
}

/**
 * The dependencies not completed yet, each checked: an unknown one is refused naming its place
 * in the list, and so is one that failed or was cancelled (the task could never run). A cycle
 * cannot be posted: a task may depend only on tasks that exist, and nothing yet depends on it.
 */
function pendingDependencies(draft: Draft, dependsOn: readonly string[]): string[] {
  if (dependsOn.length === 0) return [];
  return dependsOn.filter((id, index) => {
    const field = `depends_on[${index}]`;
    const dependency = draft.task(id);
    if (dependency === undefined) invalid(field, `no task ${id}`);
    if (dependency.status === "failed" || dependency.status === "cancelled") {
      refuse("DEPENDENCY_FAILED", `${field}: task ${id} is ${dependency.status}; this task could never run`, {
        field,
        dependency: id,
        status: dependency.status,
      });
    }
    return dependency.status !== "completed";
  });
}

/** A new task from its spec, in its first auction round, or waiting for its dependencies. */
function openTask(draft: Draft, spec: TaskSpec, links: Pick<Task, "retry_of" | "schedule_id">): Task {
  const waitingOn = pendingDependencies(draft, spec.depends_on);
  const waiting = waitingOn.length > 0;
  const task = draft.putTask({
    id: draft.ctx.newId(),
    description: spec.description,
    status: waiting ? "waiting" : "bidding",
    required_capabilities: spec.required_capabilities,
    auction_ms: spec.auction_ms,
    max_bid_sats: spec.max_bid_sats,
    award: spec.award,
    ack_ms: spec.ack_ms,
    timeout_ms: spec.timeout_ms,
    max_attempts: spec.max_attempts,
    retry_backoff_ms: spec.retry_backoff_ms,
    attempt: 1,
    releases: 0,
    failures: 0,
    failed_agents: [],
    declined_agents: [],
    assigned_agent: null,
    winning_bid_sats: null,
    result: null,
    error: null,
    created_at: draft.nowIso,
    auction_closes_at: waiting ? null : new Date(draft.nowMs + spec.auction_ms).toISOString(),
    assigned_at: null,
    started_at: null,
    completed_at: null,
    opens_at: null,
    due_at: null,
    depends_on: spec.depends_on,
    waiting_on: waitingOn,
    retry_of: links.retry_of,
    retried_by: null,
    schedule_id: links.schedule_id,
  });
  draft.emit(EventType.TASK_CREATED, {
    task_id: task.id,
    data: {
      description: preview(task.description),
      required_capabilities: task.required_capabilities,
      max_bid_sats: task.max_bid_sats,
      auction_ms: task.auction_ms,
      award: task.award,
      ack_ms: task.ack_ms,
      timeout_ms: task.timeout_ms,
      max_attempts: task.max_attempts,
      retry_backoff_ms: task.retry_backoff_ms,
      retry_of: task.retry_of,
      depends_on: task.depends_on,
      waiting_on: task.waiting_on,
      schedule_id: task.schedule_id,
    },
  });
  if (!waiting) {
    draft.emit(EventType.TASK_BIDDING, {
      task_id: task.id,
      data: { attempt: 1, closes_at: task.auction_closes_at },
    });
  }
  return task;
}

function decideCommand(draft: Draft, command: Command): Accepted {
  const { rules } = draft.ctx;
  switch (command.type) {
    case "RegisterAgent": {
      const agent: Agent = {
        id: draft.ctx.newId(),
        name: checkText("name", command.name, 100),
        capabilities: checkCapabilities("capabilities", command.capabilities),
        max_concurrent:
          command.max_concurrent === undefined
            ? 1
            : checkInteger("max_concurrent", command.max_concurrent, 1, 100),
        status: "idle",
        registered_at: draft.nowIso,
        last_seen: draft.nowIso,
        grace_until: null,
        left_at: null,
        runs_completed: 0,
        runs_failed: 0,
        runs_timed_out: 0,
        stream_until: null,
      };
      draft.putAgent(agent);
      draft.emit(EventType.AGENT_JOINED, {
        agent_id: agent.id,
        data: { name: agent.name, capabilities: agent.capabilities, max_concurrent: agent.max_concurrent },
      });
      return draft.accepted({ agent });
    }

    case "Heartbeat": {
      const agent = markContact(draft, requireAgent(draft, command.agent_id), "heartbeat");
      return draft.accepted({ agent });
    }

    case "StreamSeen": {
      const agent = requireAgent(draft, command.agent_id);
      draft.putAgent({ ...agent, stream_until: new Date(draft.nowMs + rules.streamLeaseMs).toISOString() });
      return draft.accepted({ agent: draft.agent(agent.id) });
    }

    case "StreamClosed": {
      const agent = requireAgent(draft, command.agent_id);
      if (agent.stream_until === null || Date.parse(agent.stream_until) <= draft.nowMs)
        return draft.accepted({ agent });
      draft.putAgent({ ...agent, stream_until: draft.nowIso });
      return draft.accepted({ agent: draft.agent(agent.id) });
    }

    case "DeregisterAgent": {
      const agent = requireAgent(draft, command.agent_id);
      const gone: Agent = { ...agent, status: "offline", grace_until: null, left_at: draft.nowIso };
      draft.putAgent(gone);
      draft.statusReasons.set(agent.id, "deregistered");
      draft.emit(EventType.AGENT_LEFT, { agent_id: agent.id, data: { name: agent.name } });
      loseAgent(draft, gone, "agent left");
      return draft.accepted({ agent: gone });
    }

    case "PostTask": {
      const spec = taskSpec(command, rules);
      const assignee =
        command.assign_to === undefined
          ? undefined
          : requireAgentIn(draft, checkText("assign_to", command.assign_to, 200), "assign_to");
      const scheduleId =
        command.schedule_id === undefined ? null : checkText("schedule_id", command.schedule_id, 200);
      const task = openTask(draft, spec, { retry_of: null, schedule_id: scheduleId });
      if (scheduleId !== null) {
        draft.emit(EventType.SCHEDULE_FIRED, {
          task_id: task.id,
          data: {
            schedule_id: scheduleId,
            scheduled_for: command.scheduled_for ?? draft.nowIso,
            missed_firings: command.missed_firings ?? 0,
          },
        });
      }
      if (assignee !== undefined && task.status === "waiting")
        invalid("assign_to", "cannot be combined with depends_on while a dependency has not completed");
      if (assignee !== undefined) {
        const refusal = unableToTake(draft, assignee, task);
        if (refusal !== undefined)
          refuse(refusal.code, refusal.message, { field: "assign_to", ...refusal.details });
        award(draft, task, assignee.id, null, { by: "operator" });
      }
      return draft.accepted({ task });
    }

    case "AssignTask": {
      const task = requireTask(draft, command.task_id);
      if (task.status !== "bidding") {
        refuse(
          "TASK_NOT_BIDDING",
          `task ${task.id} is ${task.status}; only a task in its auction can be assigned`,
          {
            status: task.status,
          },
        );
      }
      const agent = requireAgentIn(draft, command.agent_id, "agent_id");
      const refusal = unableToTake(draft, agent, task);
      if (refusal !== undefined)
        refuse(refusal.code, refusal.message, { field: "agent_id", ...refusal.details });
      closeAuction(draft, task, "assigned by the operator", agent.id);
      return draft.accepted({ task });
    }

    case "RetryTask": {
      const original = requireTask(draft, command.task_id);
      if (original.status !== "failed" && original.status !== "cancelled") {
        refuse(
          "TASK_NOT_RETRYABLE",
          `task ${original.id} is ${original.status}; only a failed or cancelled task can be run again`,
          { status: original.status },
        );
      }
      if (original.retried_by !== null) {
        refuse(
          "TASK_ALREADY_RETRIED",
          `task ${original.id} was already run again as ${original.retried_by}`,
          {
            retry_task_id: original.retried_by,
          },
        );
      }
      const task = openTask(draft, original, { retry_of: original.id, schedule_id: null });
      draft.putTask({ ...original, retried_by: task.id });
      draft.emit(EventType.TASK_RETRIED, {
        task_id: original.id,
        data: { retry_task_id: task.id, previous_status: original.status },
      });
      return draft.accepted({ task });
    }

    case "SubmitBid": {
      const task = requireTask(draft, command.task_id);
      const agent = requireAgent(draft, command.agent_id);
      if (agent.status === "offline")
        refuse("AGENT_OFFLINE", `agent ${agent.id} is offline; send a heartbeat first`);
      if (task.status !== "bidding") {
        refuse("TASK_NOT_BIDDING", `task ${task.id} is ${task.status}, not open for bids`, {
          status: task.status,
        });
      }
      if (task.auction_closes_at !== null && draft.nowMs >= Date.parse(task.auction_closes_at)) {
        refuse("AUCTION_CLOSED", `the auction for task ${task.id} closed at ${task.auction_closes_at}`);
      }
      const missing = missingCapabilities(agent, task);
      if (missing.length > 0) {
        refuse("AGENT_NOT_ELIGIBLE", `agent ${agent.id} lacks ${missing.join(", ")}`, {
          missing_capabilities: missing,
        });
      }
      if (draft.load(agent.id) >= agent.max_concurrent) {
        refuse("AGENT_AT_CAPACITY", `agent ${agent.id} already holds ${agent.max_concurrent} task(s)`);
      }
      const cap = task.max_bid_sats ?? rules.maxBidSats;
      if (typeof command.bid_sats !== "number" || !Number.isInteger(command.bid_sats)) {
        invalid("bid_sats", "must be an integer");
      }
      if (command.bid_sats < 1 || command.bid_sats > cap) {
        refuse("BID_OUT_OF_RANGE", `bid_sats must be from 1 to ${cap}`, {
          field: "bid_sats",
          max_bid_sats: cap,
        });
      }
      const bids = draft.bidsFor(task);
      const previous = bids.find((bid) => bid.agent_id === agent.id);
      // The same amount again is a retry (an answer lost on the way), not a new bid: it changes
      // nothing, keeps the bid's place in the order of bids, and writes no event.
      if (previous?.bid_sats === command.bid_sats) return draft.accepted({ task, bid: previous });
      const bid: Bid = {
        task_id: task.id,
        attempt: task.attempt,
        agent_id: agent.id,
        bid_sats: command.bid_sats,
        bid_order: bids.reduce((max, other) => Math.max(max, other.bid_order), 0) + 1,
        placed_at: draft.nowIso,
        outcome: null,
      };
      // A bid is not a heartbeat: bids are the hottest write, and liveness has its own signal.
      draft.putBid(bid);
      draft.emit(EventType.BID_SUBMITTED, {
        source: agent.id,
        task_id: task.id,
        agent_id: agent.id,
        data: {
          bid_sats: bid.bid_sats,
          attempt: task.attempt,
          replaced_bid_sats: previous?.bid_sats ?? null,
        },
      });
      if (rules.closeWhenAllBid && everyoneHasBid(draft, task)) closeAuction(draft, task, "all bids in");
      return draft.accepted({ task, bid });
    }

    case "CloseAuction": {
      const task = requireTask(draft, command.task_id);
      if (task.status !== "bidding") {
        refuse("TASK_NOT_BIDDING", `task ${task.id} is ${task.status}; there is no open auction`, {
          status: task.status,
        });
      }
      closeAuction(draft, task, "operator");
      return draft.accepted({ task });
    }

    case "StartTask": {
      const task = requireTask(draft, command.task_id);
      requireAssignee(draft, task, command.agent_id);
      if (task.status !== "assigned") {
        refuse("TASK_NOT_ASSIGNED", `task ${task.id} is ${task.status}; only an assigned task can start`, {
          status: task.status,
        });
      }
      draft.putTask({ ...task, status: "running", started_at: draft.nowIso });
      draft.emit(EventType.TASK_STARTED, {
        source: command.agent_id,
        task_id: task.id,
        agent_id: command.agent_id,
      });
      return draft.accepted({ task });
    }

    case "CompleteTask": {
      const task = requireTask(draft, command.task_id);
      if (task.status === "bidding" || task.status === "waiting") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is ${task.status}; it cannot complete`, {
          status: task.status,
        });
      }
      requireAssignee(draft, task, command.agent_id);
      const result =
        command.result === undefined ? null : checkText("result", command.result, rules.maxResultLength);
      const since = task.started_at ?? task.assigned_at;
      countRun(draft, command.agent_id, "completed");
      draft.putTask({ ...task, status: "completed", result, completed_at: draft.nowIso });
      draft.emit(EventType.TASK_COMPLETED, {
        source: command.agent_id,
        task_id: task.id,
        agent_id: command.agent_id,
        data: {
          result: preview(result),
          bid_sats: task.winning_bid_sats,
          duration_ms: since === null ? null : draft.nowMs - Date.parse(since),
        },
      });
      return draft.accepted({ task });
    }

    case "FailTask": {
      const task = requireTask(draft, command.task_id);
      if (isFinal(task))
        refuse("TASK_FINAL", `task ${task.id} is already ${task.status}`, { status: task.status });
      if (task.status === "bidding" || task.status === "waiting") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is ${task.status}, not at work; cancel it instead`, {
          status: task.status,
        });
      }
      if (command.agent_id !== undefined) requireAssignee(draft, task, command.agent_id);
      const reason =
        command.reason === undefined
          ? `failed by ${command.agent_id === undefined ? "the operator" : "its agent"}`
          : checkText("reason", command.reason, rules.maxResultLength);
      if (command.agent_id === undefined) {
        // The operator's word is final: no retry.
        draft.putTask({ ...task, status: "failed", error: reason, completed_at: draft.nowIso });
        draft.emit(EventType.TASK_FAILED, {
          task_id: task.id,
          agent_id: task.assigned_agent,
          data: { reason: preview(reason), by: "operator" },
        });
        return draft.accepted({ task });
      }
      countRun(draft, command.agent_id, "failed");
      if (task.failures + 1 < task.max_attempts) {
        draft.emit(EventType.TASK_ATTEMPT_FAILED, {
          source: command.agent_id,
          task_id: task.id,
          agent_id: command.agent_id,
          data: { reason: preview(reason), attempt: task.attempt, by: "agent" },
        });
      }
      failAttempt(draft, task, reason, "run", { source: command.agent_id, data: { by: "agent" } });
      return draft.accepted({ task });
    }

    case "CancelTask": {
      const task = requireTask(draft, command.task_id);
      if (isFinal(task))
        refuse("TASK_FINAL", `task ${task.id} is already ${task.status}`, { status: task.status });
      const reason =
        command.reason === undefined
          ? "cancelled by the operator"
          : checkText("reason", command.reason, 1000);
      draft.putTask({ ...task, status: "cancelled", error: reason, completed_at: draft.nowIso });
      draft.emit(EventType.TASK_CANCELLED, {
        task_id: task.id,
        agent_id: task.assigned_agent,
        data: { reason, previous_status: task.status },
      });
      return draft.accepted({ task });
    }

    case "ReleaseTask": {
      const task = requireTask(draft, command.task_id);
      if (task.status === "bidding" || task.status === "waiting") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is ${task.status}; there is nothing to hand back`, {
          status: task.status,
        });
      }
      requireAssignee(draft, task, command.agent_id);
      const reason =
        command.reason === undefined ? "handed back by its agent" : checkText("reason", command.reason, 1000);
      draft.emit(EventType.TASK_RELEASED, {
        source: command.agent_id,
        task_id: task.id,
        agent_id: command.agent_id,
        data: { reason, attempt: task.attempt, previous_status: task.status },
      });
      openRound(
        draft,
        { ...task, releases: task.releases + 1 },
        "handed back by its agent",
        command.agent_id,
      );
      return draft.accepted({ task });
    }

    case "RecordToolCall": {
      const task = requireTask(draft, command.task_id);
      requireAssignee(draft, task, command.agent_id);
      if (task.status !== "running") {
        refuse(
          "TASK_NOT_RUNNING",
          `task ${task.id} is ${task.status}; start it before reporting tool calls`,
          {
            status: task.status,
          },
        );
      }
      checkText("tool", command.tool, 100);
      if (command.phase !== "called" && command.phase !== "completed" && command.phase !== "failed") {
        invalid("phase", 'must be "called", "completed" or "failed"');
      }
      const callId =
        command.call_id === undefined
          ? command.phase === "called"
            ? draft.ctx.newId()
            : null
          : checkText("call_id", command.call_id, 200);
      if (command.error !== undefined) checkText("error", command.error, 10_000);
      const { tool, ...recorded } = toolReportData(command);
      const types = {
        called: EventType.TOOL_CALLED,
        completed: EventType.TOOL_COMPLETED,
        failed: EventType.TOOL_FAILED,
      };
      const event = draft.emit(types[command.phase], {
        source: command.agent_id,
        task_id: task.id,
        agent_id: command.agent_id,
        data: { tool, call_id: callId, ...recorded },
      });
      return draft.accepted({ task, tool_event_id: event.id });
    }

    case "Tick": {
      // Agents first, so that an agent found silent cannot win an auction closing in this tick.
      const { scope } = command;
      const agentsInScope = scope === undefined ? undefined : new Set(scope.agent_ids);
      const tasksInScope = scope === undefined ? undefined : new Set(scope.task_ids);
      for (const agent of draft.allAgents()) {
        if (agent.left_at !== null) continue;
        if (agentsInScope !== undefined && !agentsInScope.has(agent.id)) continue;
        if (
          agent.status !== "offline" &&
          silentTooLong(agent, draft.nowMs, rules.heartbeatTimeoutMs, command.stalls)
        ) {
          const offline: Agent = { ...agent, status: "offline", grace_until: null };
          draft.putAgent(offline);
          draft.statusReasons.set(agent.id, "heartbeat timeout");
          loseAgent(draft, offline, "agent went silent");
        } else if (
          agent.status === "offline" &&
          !isReachable(agent, draft.nowMs) &&
          draft.held(agent.id).length > 0
        ) {
          // Offline since a restart and never came back within its grace period.
          draft.putAgent({ ...agent, grace_until: null });
          loseAgent(draft, agent, "agent did not come back after a restart");
        }
      }
      for (const task of draft.dueTasks())
        if (tasksInScope === undefined || tasksInScope.has(task.id)) runDueStep(draft, task);
      return draft.accepted();
    }

    case "Recover": {
      const graceUntil = new Date(draft.nowMs + rules.heartbeatTimeoutMs).toISOString();
      for (const agent of draft.allAgents()) {
        if (agent.left_at !== null || agent.status === "offline") continue;
        draft.putAgent({ ...agent, status: "offline", grace_until: graceUntil });
        draft.statusReasons.set(agent.id, "coordinator restarted");
      }
      return draft.accepted();
    }
  }
}

/** Decide what `command` does to `state` at `ctx.now`: records and events, or a refusal. */
export function decide(state: StateView, command: Command, ctx: DecisionContext): Decision {
  const draft = new Draft(state, ctx);
  try {
    return decideCommand(draft, command);
  } catch (error) {
    if (error instanceof Refusal) {
      const refused: Refused = { ok: false, code: error.code, message: error.message };
      if (error.details !== undefined) refused.details = error.details;
      return refused;
    }
    throw error;
  }
}

/** True when the decision changes nothing and says nothing: the shell can skip the write. */
export function isEmpty(decision: Accepted): boolean {
  const { agents, tasks, bids } = decision.changes;
  return agents.length + tasks.length + bids.length + decision.events.length === 0;
}

/**
 * The pure core: `decide(state, command, ctx)` turns a command into the records to write and
 * the events that say what happened, or a coded refusal. No I/O, no clock, no randomness:
 * time and ids come from `ctx`, so every decision can be replayed and tested without a
 * database.
 */
import { EventType } from "../event-log/event-types.js";
import type { EventInput, JsonValue } from "../event-log/types.js";
import { isFinal, type StateView } from "./state.js";
import { stalledMs } from "./stalls.js";
import type {
  Accepted,
  Agent,
  AgentStatus,
  Bid,
  Command,
  CoordinatorErrorCode,
  Decision,
  DecisionContext,
  Refused,
  ServerStall,
  Task,
} from "./types.js";

export const COORDINATOR_SOURCE = "coordinator";
const PREVIEW_LENGTH = 200;
const CAPABILITY_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,49}$/;
const MAX_CAPABILITIES = 50;

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

  /** Open auctions due at this decision's time, as this decision leaves them, earliest first. */
  dueAuctions(): Task[] {
    const due = new Map<string, Task>();
    for (const task of this.state.dueAuctions(this.nowMs)) due.set(task.id, this.task(task.id) ?? task);
    for (const task of this.tasks.values()) due.set(task.id, task);
    return [...due.values()].filter(
      (task) =>
        task.status === "bidding" &&
        task.auction_closes_at !== null &&
        Date.parse(task.auction_closes_at) <= this.nowMs,
    );
  }

  putAgent(agent: Agent): void {
    this.touch(agent.id);
    this.agents.set(agent.id, agent);
  }

  putTask(task: Task): void {
    const before = this.task(task.id);
    if (before?.assigned_agent) this.touch(before.assigned_agent);
    if (task.assigned_agent) this.touch(task.assigned_agent);
    this.tasks.set(task.id, task);
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

function closeAuction(draft: Draft, task: Task, reason: "deadline" | "all bids in" | "operator"): void {
  const bids = draft.bidsFor(task);
  const ranked = [...bids].sort((a, b) => a.bid_sats - b.bid_sats || a.bid_order - b.bid_order);
  // The lowest bid wins, but only from an agent that can still take the task now.
  const winner = ranked.find((bid) => {
    const agent = draft.agent(bid.agent_id);
    return (
      agent !== undefined &&
      isReachable(agent, draft.nowMs) &&
      missingCapabilities(agent, task).length === 0 &&
      draft.load(agent.id) < agent.max_concurrent
    );
  });
  for (const bid of bids) draft.putBid({ ...bid, outcome: bid === winner ? "won" : "lost" });
  draft.emit(EventType.AUCTION_CLOSED, {
    task_id: task.id,
    agent_id: winner?.agent_id ?? null,
    data: {
      attempt: task.attempt,
      reason,
      bids: bids.length,
      winner: winner?.agent_id ?? null,
      winning_bid_sats: winner?.bid_sats ?? null,
    },
  });
  if (winner !== undefined) {
    draft.putTask({
      ...task,
      status: "assigned",
      assigned_agent: winner.agent_id,
      winning_bid_sats: winner.bid_sats,
      assigned_at: draft.nowIso,
    });
    draft.emit(EventType.TASK_ASSIGNED, {
      task_id: task.id,
      agent_id: winner.agent_id,
      data: { bid_sats: winner.bid_sats, attempt: task.attempt },
    });
  } else {
    const failure = bids.length === 0 ? "no bids" : "no eligible bids";
    draft.putTask({ ...task, status: "failed", error: failure, completed_at: draft.nowIso });
    draft.emit(EventType.TASK_FAILED, { task_id: task.id, data: { reason: failure, attempt: task.attempt } });
  }
}

/** Every eligible online agent has bid: nobody is left to wait for. */
function everyoneHasBid(draft: Draft, task: Task): boolean {
  const bidders = new Set(draft.bidsFor(task).map((bid) => bid.agent_id));
  let eligible = 0;
  for (const agent of draft.allAgents()) {
    if (agent.status === "offline" || agent.left_at !== null) continue;
    if (missingCapabilities(agent, task).length > 0) continue;
    if (!bidders.has(agent.id) && draft.load(agent.id) >= agent.max_concurrent) continue;
    eligible += 1;
    if (!bidders.has(agent.id)) return false;
  }
  return eligible > 0;
}

/**
 * The agent holding `task` is gone: put the task up again, or fail it when out of rounds. A task
 * its agent handed back (`handedBack`) always goes up again, and that round is not counted: a
 * graceful stop says nothing against the task, while losing agent after agent to silence may
 * (a task that crashes whoever runs it), which is what the limit is for.
 */
function reauction(draft: Draft, task: Task, why: string, { handedBack = false } = {}): void {
  const previousAgent = task.assigned_agent;
  const roundsLost = task.attempt - task.releases;
  if (!handedBack && roundsLost >= draft.ctx.rules.maxAuctionAttempts) {
    const reason = `${why}; no auction attempts left`;
    draft.putTask({ ...task, status: "failed", error: reason, completed_at: draft.nowIso });
    draft.emit(EventType.TASK_FAILED, {
      task_id: task.id,
      agent_id: previousAgent,
      data: { reason, attempt: task.attempt },
    });
    return;
  }
  const closesAt = new Date(draft.nowMs + task.auction_ms).toISOString();
  draft.putTask({
    ...task,
    status: "bidding",
    attempt: task.attempt + 1,
    releases: task.releases + (handedBack ? 1 : 0),
    assigned_agent: null,
    winning_bid_sats: null,
    assigned_at: null,
    started_at: null,
    auction_closes_at: closesAt,
  });
  draft.emit(EventType.TASK_BIDDING, {
    task_id: task.id,
    agent_id: previousAgent,
    data: { attempt: task.attempt + 1, closes_at: closesAt, reason: why, previous_agent: previousAgent },
  });
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
  for (const task of draft.held(agent.id)) reauction(draft, task, why);
}

// ------------------------------------------------------------------ commands

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
      const auctionMs =
        command.auction_ms === undefined
          ? rules.defaultAuctionMs
          : checkInteger("auction_ms", command.auction_ms, rules.minAuctionMs, rules.maxAuctionMs);
      const task: Task = {
        id: draft.ctx.newId(),
        description: checkText("description", command.description, rules.maxDescriptionLength),
        status: "bidding",
        required_capabilities: checkCapabilities("required_capabilities", command.required_capabilities),
        auction_ms: auctionMs,
        max_bid_sats:
          command.max_bid_sats === undefined
            ? null
            : checkInteger("max_bid_sats", command.max_bid_sats, 1, rules.maxBidSats),
        attempt: 1,
        releases: 0,
        assigned_agent: null,
        winning_bid_sats: null,
        result: null,
        error: null,
        created_at: draft.nowIso,
        auction_closes_at: new Date(draft.nowMs + auctionMs).toISOString(),
        assigned_at: null,
        started_at: null,
        completed_at: null,
      };
      draft.putTask(task);
      draft.emit(EventType.TASK_CREATED, {
        task_id: task.id,
        data: {
          description: preview(task.description),
          required_capabilities: task.required_capabilities,
          max_bid_sats: task.max_bid_sats,
          auction_ms: task.auction_ms,
        },
      });
      draft.emit(EventType.TASK_BIDDING, {
        task_id: task.id,
        data: { attempt: 1, closes_at: task.auction_closes_at },
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
      if (task.status === "bidding") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is still in its auction; it cannot complete`, {
          status: task.status,
        });
      }
      requireAssignee(draft, task, command.agent_id);
      const result =
        command.result === undefined ? null : checkText("result", command.result, rules.maxResultLength);
      const since = task.started_at ?? task.assigned_at;
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
      if (task.status === "bidding") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is still in its auction; cancel it instead`, {
          status: task.status,
        });
      }
      if (command.agent_id !== undefined) requireAssignee(draft, task, command.agent_id);
      const reason =
        command.reason === undefined
          ? `failed by ${command.agent_id === undefined ? "the operator" : "its agent"}`
          : checkText("reason", command.reason, rules.maxResultLength);
      draft.putTask({ ...task, status: "failed", error: reason, completed_at: draft.nowIso });
      draft.emit(EventType.TASK_FAILED, {
        source: command.agent_id ?? COORDINATOR_SOURCE,
        task_id: task.id,
        agent_id: task.assigned_agent,
        data: { reason: preview(reason), by: command.agent_id === undefined ? "operator" : "agent" },
      });
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
      if (task.status === "bidding") {
        refuse("TASK_NOT_ACTIVE", `task ${task.id} is in its auction; there is nothing to hand back`, {
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
      reauction(draft, task, "handed back by its agent", { handedBack: true });
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
      for (const task of draft.dueAuctions())
        if (tasksInScope === undefined || tasksInScope.has(task.id)) closeAuction(draft, task, "deadline");
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

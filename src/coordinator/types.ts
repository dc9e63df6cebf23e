/**
 * The coordinator's vocabulary: records, commands (imperative), the context a decision gets,
 * and what a decision returns. Everything here is plain data.
 */
import type { EventInput } from "../event-log/types.js";

export const TASK_STATUSES = ["bidding", "assigned", "running", "completed", "failed", "cancelled"] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const FINAL_TASK_STATUSES: readonly TaskStatus[] = ["completed", "failed", "cancelled"];

export const AGENT_STATUSES = ["idle", "busy", "offline"] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

export interface Agent {
  id: string;
  name: string;
  capabilities: string[];
  max_concurrent: number;
  status: AgentStatus;
  registered_at: string;
  last_seen: string;
  /**
   * Set when the coordinator restarted while the agent was online: until then the agent is
   * offline but not yet lost, so its tasks and bids stand while it reconnects.
   */
  grace_until: string | null;
  /** Set when the agent deregistered: it can no longer act, and is kept for history and stats. */
  left_at: string | null;
}

export interface Task {
  id: string;
  description: string;
  status: TaskStatus;
  required_capabilities: string[];
  auction_ms: number;
  /** The task's own cap on bids; null means the global cap. */
  max_bid_sats: number | null;
  /** Auction round: 1 at post, one more each time the task is re-auctioned. */
  attempt: number;
  /**
   * Rounds that ended because the agent handed the task back (a graceful stop): they are not
   * the task's fault, so they do not count towards `maxAuctionAttempts`.
   */
  releases: number;
  assigned_agent: string | null;
  winning_bid_sats: number | null;
  result: string | null;
  error: string | null;
  created_at: string;
  auction_closes_at: string | null;
  assigned_at: string | null;
  started_at: string | null;
  completed_at: string | null;
}

export type BidOutcome = "won" | "lost";

export interface Bid {
  task_id: string;
  attempt: number;
  agent_id: string;
  bid_sats: number;
  /** Order in which bids were placed in this auction round: the tie-break, earliest wins. */
  bid_order: number;
  placed_at: string;
  outcome: BidOutcome | null;
}

export type ToolPhase = "called" | "completed" | "failed";

/** A span in which the server's event loop did not run (see stalls.ts), in the coordinator's clock. */
export interface ServerStall {
  from: string;
  until: string;
}

export type Command =
  | { type: "RegisterAgent"; name: string; capabilities?: string[]; max_concurrent?: number }
  | { type: "Heartbeat"; agent_id: string }
  | { type: "DeregisterAgent"; agent_id: string }
  | {
      type: "PostTask";
      description: string;
      required_capabilities?: string[];
      auction_ms?: number;
      max_bid_sats?: number;
    }
  | { type: "SubmitBid"; task_id: string; agent_id: string; bid_sats: number }
  | { type: "CloseAuction"; task_id: string }
  | { type: "StartTask"; task_id: string; agent_id: string }
  | { type: "CompleteTask"; task_id: string; agent_id: string; result?: string }
  /** `agent_id` absent: the operator fails the task. */
  | { type: "FailTask"; task_id: string; agent_id?: string; reason?: string }
  | { type: "CancelTask"; task_id: string; reason?: string }
  /**
   * The assigned agent hands its task back unfinished (it is stopping): the task goes up for
   * auction again, neither failed nor charged a round.
   */
  | { type: "ReleaseTask"; task_id: string; agent_id: string; reason?: string }
  | {
      type: "RecordToolCall";
      task_id: string;
      agent_id: string;
      tool: string;
      phase: ToolPhase;
      call_id?: string;
      input?: unknown;
      output?: unknown;
      error?: string;
    }
  /**
   * Closes due auctions and expires silent agents. `stalls`: recent spans in which the server
   * itself was stalled; they do not count as any agent's silence. `scope`: a Tick over part of
   * the swarm, as one replica of several runs it over the work it claimed: only these agents are
   * checked for silence and only these auctions closed (all are still read, for eligibility).
   */
  | { type: "Tick"; stalls?: readonly ServerStall[]; scope?: TickScope }
  /** At start: every agent that was online is now offline, with a grace period to come back. */
  | { type: "Recover" };

export interface TickScope {
  agent_ids: readonly string[];
  task_ids: readonly string[];
}

export type CommandType = Command["type"];

export interface CoordinatorRules {
  /** Auction window when a task names none. */
  defaultAuctionMs: number;
  minAuctionMs: number;
  maxAuctionMs: number;
  /** The global cap on a bid, and the most a task may set as its own cap. */
  maxBidSats: number;
  /** Close an auction as soon as every eligible online agent has bid. */
  closeWhenAllBid: boolean;
  heartbeatTimeoutMs: number;
  /**
   * Auction rounds a task gets before losing its agent fails it for good. Rounds its agent
   * handed back (ReleaseTask) are not counted.
   */
  maxAuctionAttempts: number;
  maxDescriptionLength: number;
  maxResultLength: number;
  /**
   * Events agents may report on one task (bids, start, tool reports, complete, fail); past it,
   * bids and tool reports are refused. False: no cap. Enforced by the shell on a counter in the
   * task row (limits.ts), not by `decide`.
   */
  maxEventsPerTask: number | false;
  /**
   * Bytes of events one agent's reports may store per clock hour (UTC); past it, its bids and
   * tool reports are refused until the hour turns. False: no cap. Enforced by the shell, likewise.
   */
  maxAgentBytesPerHour: number | false;
}

export const DEFAULT_RULES: CoordinatorRules = {
  defaultAuctionMs: 5000,
  minAuctionMs: 100,
  maxAuctionMs: 600_000,
  maxBidSats: 1_000_000,
  closeWhenAllBid: true,
  heartbeatTimeoutMs: 30_000,
  maxAuctionAttempts: 3,
  maxDescriptionLength: 10_000,
  maxResultLength: 100_000,
  maxEventsPerTask: 10_000,
  maxAgentBytesPerHour: 16 * 1024 * 1024,
};

/** What a decision may use besides the state: the time, fresh ids, the rules. */
export interface DecisionContext {
  now: Date;
  newId: () => string;
  rules: CoordinatorRules;
}

/** The records a decision creates or changes: the shell upserts them, all in one transaction. */
export interface StateChanges {
  agents: Agent[];
  tasks: Task[];
  bids: Bid[];
}

export interface Accepted {
  ok: true;
  changes: StateChanges;
  events: EventInput[];
  /** The record the command is about (the new agent, the posted task, the bid…), for the caller. */
  subject: { agent?: Agent; task?: Task; bid?: Bid; tool_event_id?: string };
}

export interface Refused {
  ok: false;
  code: CoordinatorErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export type Decision = Accepted | Refused;

export const COORDINATOR_ERROR_CODES = [
  "INVALID_COMMAND",
  "AGENT_NOT_FOUND",
  "AGENT_LEFT",
  "AGENT_OFFLINE",
  "AGENT_NOT_ELIGIBLE",
  "AGENT_AT_CAPACITY",
  "TASK_NOT_FOUND",
  "TASK_NOT_BIDDING",
  "AUCTION_CLOSED",
  "BID_OUT_OF_RANGE",
  "NOT_ASSIGNED_AGENT",
  "TASK_NOT_ASSIGNED",
  "TASK_NOT_RUNNING",
  "TASK_NOT_ACTIVE",
  "TASK_FINAL",
] as const;
export type CoordinatorErrorCode = (typeof COORDINATOR_ERROR_CODES)[number];

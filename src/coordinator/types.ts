/**
 * The coordinator's vocabulary: records, commands (imperative), the context a decision gets,
 * and what a decision returns. Everything here is plain data.
 */
import type { EventInput } from "../event-log/types.js";

/**
 * `waiting`: not yet open for bids (a retry's backoff, later its dependencies). `bidding`: in its
 * auction. `assigned`: awarded, not yet acknowledged by a start. Then `running`, and a final one.
 */
export const TASK_STATUSES = [
  "waiting",
  "bidding",
  "assigned",
  "running",
  "completed",
  "failed",
  "cancelled",
] as const;
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
  /**
   * What its runs came to: completed, failed (reported, its awards lapsed, lost with it) and
   * timed out. The award rule `best_value` weighs them (see `reliability` in decide.ts).
   */
  runs_completed: number;
  runs_failed: number;
  runs_timed_out: number;
  /**
   * Until when its stream connection counts as open: renewed by the server while it is, so a
   * replica that dies stops vouching for it. Null: it never opened one (an agent that polls).
   * Past while the agent still heartbeats: a zombie, not waited for by an auction's early close.
   */
  stream_until: string | null;
}

export interface Task {
  id: string;
  description: string;
  status: TaskStatus;
  required_capabilities: string[];
  auction_ms: number;
  /** The task's own cap on bids; null means the global cap. */
  max_bid_sats: number | null;
  /**
   * Auction round: 1 at post, one more each time the task goes up for auction again (a retry, a
   * lost or departed agent, an award nobody acknowledged). Bids and awards are per round.
   */
  attempt: number;
  /** Rounds that ended because the agent handed the task back (a graceful stop): never charged. */
  releases: number;
  /** How the auction picks its winner: the lowest bid, or the best price for the bidder's record. */
  award: AwardRule;
  /** How long the winner has to start after `task.assigned`; null: no limit (tasks from before it). */
  ack_ms: number | null;
  /** How long a run may take after `task.started`; null: no limit. */
  timeout_ms: number | null;
  /** Attempts the task gets: a failed one (reported, timed out, agent lost) is retried until then. */
  max_attempts: number;
  /** The first retry's delay; each further one doubles it, up to `maxRetryBackoffMs`. 0: at once. */
  retry_backoff_ms: number;
  /** Attempts charged so far: failures reported by the agent, timeouts, agents lost, awards lapsed. */
  failures: number;
  /** Agents that failed or timed out an attempt of this task: their bids rank after everyone else's. */
  failed_agents: string[];
  /** Agents whose award of the current round lapsed unacknowledged; a new round clears it. */
  declined_agents: string[];
  /** When a waiting task's retry opens its auction. */
  opens_at: string | null;
  /**
   * When the task's next timed step is due, whatever it is: its auction closing, its award
   * lapsing, its run timing out, its retry opening. Derived from the rest (see `dueAt`), stored so
   * that every replica finds due work with one indexed read.
   */
  due_at: string | null;
  /** Tasks that must complete before this one opens its auction, as posted. */
  depends_on: string[];
  /** Those of `depends_on` not completed yet: the task is `waiting` while any is left. */
  waiting_on: string[];
  /** The failed or cancelled task this one re-runs, and the task that re-ran this one. */
  retry_of: string | null;
  retried_by: string | null;
  /** The schedule whose firing posted this task. */
  schedule_id: string | null;
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

/** `lost` also marks a winner whose award lapsed unacknowledged (`declined_agents`). */
export type BidOutcome = "won" | "lost";

export const AWARD_RULES = ["lowest", "best_value"] as const;
export type AwardRule = (typeof AWARD_RULES)[number];

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
      award?: AwardRule;
      ack_ms?: number;
      timeout_ms?: number;
      max_attempts?: number;
      retry_backoff_ms?: number;
      /** Skip the auction: the task goes straight to this agent, if it can take it now. */
      assign_to?: string;
      /** Tasks that must complete first; the task waits (status `waiting`) until they have. */
      depends_on?: string[];
      /** A schedule's firing (the scheduler's, never a user's): the schedule, and the time it stands for. */
      schedule_id?: string;
      scheduled_for?: string;
      missed_firings?: number;
    }
  /** The server saw the agent's stream open, or still open: it counts as listening a while longer. */
  | { type: "StreamSeen"; agent_id: string }
  /** The agent's stream closed (on this server): it no longer counts as listening. */
  | { type: "StreamClosed"; agent_id: string }
  /** The operator hands a task in its auction to an agent, ending the auction. */
  | { type: "AssignTask"; task_id: string; agent_id: string }
  /** The operator runs a failed or cancelled task again: a new task with the same body. */
  | { type: "RetryTask"; task_id: string }
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
   * Does what is due: closes auctions, passes on lapsed awards, times out runs, opens retries,
   * and expires silent agents. `stalls`: recent spans in which the server
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
   * Attempts a task gets when it is its agents that vanish (silence, departure, a lapsed award),
   * whatever its own `max_attempts` says, if that is fewer: losing an agent says little against
   * the task. Rounds its agent handed back (ReleaseTask) are never charged.
   */
  maxAuctionAttempts: number;
  /** `ack_ms` when a task names none; null: awards never lapse. */
  defaultAckMs: number | null;
  /** The longest `ack_ms` and `timeout_ms` a task may set. */
  maxTaskTimerMs: number;
  /** The most attempts a task may ask for. */
  maxAttempts: number;
  /** The cap on a retry's exponential backoff. */
  maxRetryBackoffMs: number;
  /** How long a stream seen open vouches for its agent; the server renews it at a third of this. */
  streamLeaseMs: number;
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
  defaultAckMs: 10_000,
  maxTaskTimerMs: 7 * 86_400_000,
  maxAttempts: 100,
  maxRetryBackoffMs: 300_000,
  streamLeaseMs: 30_000,
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
  "TASK_NOT_RETRYABLE",
  "TASK_ALREADY_RETRIED",
  "DEPENDENCY_FAILED",
] as const;
export type CoordinatorErrorCode = (typeof COORDINATOR_ERROR_CODES)[number];

/**
 * The caps on what agents report: events per task (SWARM_MAX_EVENTS_PER_TASK) and stored bytes
 * per agent per clock hour (SWARM_MAX_AGENT_BYTES_PER_HOUR). The counters live in the database
 * (the task row, agent_report_usage) and move in the command's own transaction, so every replica
 * of a cluster counts the same and a refusal takes its counts back with everything else; this
 * module decides on the totals, without I/O.
 *
 * What counts is an agent's own events (source = the agent): bids, start, tool reports, complete
 * and fail. What may be refused is only what an agent can repeat at will, bids and tool reports:
 * start happens once a round and complete or fail once a task, so a task at its cap can still
 * end. What the coordinator writes (auction closes, status changes, re-auctions) is never counted
 * and never refused.
 */
import type { ErrorCode } from "../errors.js";
import type { StoredEvent } from "../event-log/types.js";
import type { Command, CoordinatorRules } from "./types.js";

/** The commands that are an agent's report on a task, with the agent that sent them. */
export function reportingAgent(command: Command): string | undefined {
  switch (command.type) {
    case "SubmitBid":
    case "StartTask":
    case "RecordToolCall":
    case "CompleteTask":
    case "FailTask":
    case "ReleaseTask":
      return command.agent_id;
    // The operator's commands, the agent's own standing (no task to report on), the timer's.
    case "RegisterAgent":
    case "Heartbeat":
    case "StreamSeen":
    case "StreamClosed":
    case "DeregisterAgent":
    case "PostTask":
    case "AssignTask":
    case "RetryTask":
    case "CloseAuction":
    case "CancelTask":
    case "Tick":
    case "Recover":
      return undefined;
  }
}

const REFUSABLE: ReadonlySet<Command["type"]> = new Set(["SubmitBid", "RecordToolCall"]);

/**
 * The bytes an event's text takes as stored: every column's UTF-8, `data` as the JSON written.
 * Not SQLite's per-row and index overhead, which grows with the same text.
 */
export function storedBytes(event: StoredEvent): number {
  let bytes = Buffer.byteLength(JSON.stringify(event.data));
  for (const text of [
    event.id,
    event.event_type,
    event.source,
    event.task_id,
    event.agent_id,
    event.timestamp,
  ]) {
    if (text !== null) bytes += Buffer.byteLength(text);
  }
  return bytes;
}

/** The clock hour an agent's byte budget is counted in: `YYYY-MM-DDTHH`, UTC. */
export function budgetHour(now: Date): string {
  return now.toISOString().slice(0, 13);
}

/** Whole seconds until the next clock hour starts (at least 1): when a spent budget is new again. */
export function secondsToNextHour(now: Date): number {
  const hourMs = 3_600_000;
  return Math.max(1, Math.ceil((hourMs - (now.getTime() % hourMs)) / 1000));
}

/** The agent's own events among those a command wrote. */
export function agentReports(events: readonly StoredEvent[], agentId: string): StoredEvent[] {
  return events.filter((event) => event.source === agentId);
}

export interface ReportTotals {
  /** Agent-reported events the task holds, this report included; undefined without a task. */
  taskEvents: number | undefined;
  /** Bytes the agent's reports stored this hour, this report included. */
  agentBytes: number;
}

export interface LimitRefusal {
  code: Extract<ErrorCode, "TASK_EVENTS_CAP_REACHED" | "AGENT_HOURLY_BYTES_EXCEEDED">;
  message: string;
  details: Record<string, string | number>;
}

/**
 * Whether the report `command` made (`report`: its agent events and their bytes), which brought
 * the counters to `totals`, goes past a cap; the refusal says which cap, its value, and for the
 * hourly budget when to retry. A cap of false is off.
 */
export function limitRefusal(
  command: Command,
  report: { events: number; bytes: number },
  totals: ReportTotals,
  rules: Pick<CoordinatorRules, "maxEventsPerTask" | "maxAgentBytesPerHour">,
  now: Date,
): LimitRefusal | undefined {
  const agentId = reportingAgent(command);
  if (agentId === undefined || !REFUSABLE.has(command.type) || report.events === 0) return undefined;
  const taskId = "task_id" in command ? command.task_id : undefined;
  const maxEvents = rules.maxEventsPerTask;
  if (maxEvents !== false && totals.taskEvents !== undefined && totals.taskEvents > maxEvents) {
    return {
      code: "TASK_EVENTS_CAP_REACHED",
      message:
        `task ${taskId ?? ""} holds its limit of ${maxEvents} events reported by agents ` +
        `(SWARM_MAX_EVENTS_PER_TASK=${maxEvents}): it takes no more bids or tool reports, but can still be completed or failed`,
      details: {
        limit: "SWARM_MAX_EVENTS_PER_TASK",
        max_events_per_task: maxEvents,
        task_id: taskId ?? "",
      },
    };
  }
  const maxBytes = rules.maxAgentBytesPerHour;
  if (maxBytes !== false && totals.agentBytes > maxBytes) {
    const retryAfter = secondsToNextHour(now);
    const used = totals.agentBytes - report.bytes;
    return {
      code: "AGENT_HOURLY_BYTES_EXCEEDED",
      message:
        `agent ${agentId} has stored ${used} of its ${maxBytes} bytes for this hour ` +
        `(SWARM_MAX_AGENT_BYTES_PER_HOUR=${maxBytes}); this report's ${report.bytes} bytes would pass it. ` +
        `Retry in ${retryAfter} s, when the next hour (UTC) starts`,
      details: {
        limit: "SWARM_MAX_AGENT_BYTES_PER_HOUR",
        max_bytes_per_hour: maxBytes,
        used_bytes: used,
        report_bytes: report.bytes,
        retry_after_seconds: retryAfter,
      },
    };
  }
  return undefined;
}

/**
 * Text the dashboard shows for records and events. Everything here returns plain text: the
 * templates escape it (autoescape is on), so nothing in this file builds HTML.
 */
import type { StoredEvent } from "../../event-log/types.js";
import { shortId } from "../../ids.js";

/** "just now", "12s ago", "5m ago", "3h ago", "2d ago"; "in 4s" for a time still to come. */
export function relativeTime(iso: string | null | undefined, now: Date): string {
  if (iso === null || iso === undefined) return "";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((now.getTime() - then) / 1000);
  const future = seconds < 0;
  const size = Math.abs(seconds);
  if (size < 2) return "just now";
  const text =
    size < 60
      ? `${size}s`
      : size < 3600
        ? `${Math.floor(size / 60)}m`
        : size < 86_400
          ? `${Math.floor(size / 3600)}h`
          : `${Math.floor(size / 86_400)}d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** The exact time for a hover title: `2026-11-22 05:47:35.120 UTC`. */
export function exactUtc(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return "";
  const time = new Date(iso);
  if (Number.isNaN(time.getTime())) return iso;
  return `${time.toISOString().replace("T", " ").replace("Z", "")} UTC`;
}

// Made once, when the server starts: toLocaleString builds a formatter on every call, and the
// first one loads ICU's data (about 25 ms, on the event loop, in the first page's request).
const DIGITS = new Intl.NumberFormat("en-US");

/** 1234567 → "1,234,567" whatever the server's locale. */
export function groupDigits(value: number | null | undefined): string {
  if (value === null || value === undefined) return "";
  return DIGITS.format(value);
}

/** The first characters of a long text, with an ellipsis when cut. */
export function truncate(text: string | null | undefined, length: number): string {
  if (text === null || text === undefined) return "";
  return text.length <= length ? text : `${text.slice(0, Math.max(0, length - 1))}…`;
}

/** Agent id → name, answered one id at a time (a Map serves, and so does the coordinator's registry). */
export interface AgentNames {
  get(id: string): string | undefined;
}

function field(event: StoredEvent, name: string): unknown {
  return event.data[name];
}

function text(value: unknown): string {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** One line saying what an event means, for feeds and timelines. */
export function describeEvent(event: StoredEvent, names: AgentNames): string {
  const agent = event.agent_id === null ? "" : (names.get(event.agent_id) ?? shortId(event.agent_id));
  const sats = (value: unknown) => (typeof value === "number" ? `${groupDigits(value)} sats` : "");
  switch (event.event_type) {
    case "task.created":
      return truncate(text(field(event, "description")), 160);
    case "task.bidding": {
      // A round after the first says why the task is up again (silence, a hand-back, …).
      const reason = field(event, "reason");
      return `auction round ${text(field(event, "attempt"))} open${typeof reason === "string" ? ` (${truncate(reason, 80)})` : ""}`;
    }
    case "bid.submitted":
      return `${agent} bid ${sats(field(event, "bid_sats"))}`;
    case "auction.closed": {
      const winner = field(event, "winner");
      // Under best_value, why the winner won: each bid's price over its bidder's reliability.
      const scores = field(event, "scores");
      const scored = Array.isArray(scores)
        ? `; best value: ${scores
            .slice(0, 5)
            .map((entry) => {
              const { agent_id, bid_sats, reliability, score } = (entry ?? {}) as Record<string, unknown>;
              const who = typeof agent_id === "string" ? (names.get(agent_id) ?? shortId(agent_id)) : "?";
              return `${who} ${text(bid_sats)} sats ÷ ${text(reliability)} = ${text(score)}`;
            })
            .join(", ")}`
        : "";
      return `${text(field(event, "bids"))} bid(s), ${
        typeof winner === "string" ? `won by ${names.get(winner) ?? shortId(winner)}` : "no winner"
      } (${text(field(event, "reason"))})${scored}`;
    }
    case "task.assigned": {
      const price = field(event, "bid_sats");
      const passedFrom = field(event, "passed_from");
      return `assigned to ${agent}${typeof price === "number" ? ` for ${sats(price)}` : ""}${
        field(event, "by") === "operator" ? " by the operator" : ""
      }${typeof passedFrom === "string" ? ` (passed on from ${names.get(passedFrom) ?? shortId(passedFrom)})` : ""}`;
    }
    case "task.award_expired": {
      const next = field(event, "next_agent");
      return `${agent} did not start within ${text(field(event, "ack_ms"))} ms; ${
        typeof next === "string"
          ? `award passes to ${names.get(next) ?? shortId(next)}`
          : "no bid left, auctioned again"
      }`;
    }
    case "task.timed_out":
      return `timed out after ${text(field(event, "timeout_ms"))} ms${agent ? ` on ${agent}` : ""}`;
    case "task.attempt_failed":
      return `attempt failed: ${truncate(text(field(event, "reason")), 140)}`;
    case "task.retry_scheduled":
      return `retry ${text(field(event, "attempt"))} in ${text(field(event, "backoff_ms"))} ms (${text(field(event, "failures"))} of ${text(field(event, "max_attempts"))} attempts failed)`;
    case "schedule.created":
    case "schedule.paused":
    case "schedule.resumed":
    case "schedule.deleted": {
      const next = field(event, "next_fire_at");
      return `schedule ${text(field(event, "cron"))} (${text(field(event, "timezone"))}) ${event.event_type.slice(9)}${
        typeof next === "string" ? `; next firing ${next}` : ""
      }`;
    }
    case "schedule.fired": {
      const missed = field(event, "missed_firings");
      return `schedule fired for ${text(field(event, "scheduled_for"))}${
        typeof missed === "number" && missed > 0 ? ` (${missed} missed firing(s) skipped)` : ""
      }`;
    }
    case "task.retried":
      return `run again as ${shortId(text(field(event, "retry_task_id")))}`;
    case "task.started":
      return `${agent} started`;
    case "task.completed":
      return `completed by ${agent}: ${truncate(text(field(event, "result")), 120)}`;
    case "task.failed":
    case "task.cancelled":
      return truncate(text(field(event, "reason")), 160);
    case "task.released": {
      // Not a failure: the agent stopped and the task goes up for auction again.
      const reason = field(event, "reason");
      return `handed back by ${agent}${typeof reason === "string" ? `: ${truncate(reason, 120)}` : ""}; auctioned again`;
    }
    case "tool.called":
    case "tool.completed":
    case "tool.failed": {
      const error = field(event, "error");
      return `${text(field(event, "tool"))}${typeof error === "string" ? `: ${truncate(error, 120)}` : ""}`;
    }
    case "agent.joined":
      return `${text(field(event, "name"))} joined`;
    case "agent.left":
      return `${text(field(event, "name")) || agent} left`;
    case "agent.token_rotated":
      return `${agent}: token rotated by the ${text(field(event, "by"))}`;
    case "agent.status_changed":
      return `${agent}: ${text(field(event, "from"))} → ${text(field(event, "to"))} (${text(field(event, "reason"))})`;
    case "system.info":
    case "system.warning":
    case "system.error":
    default: {
      const message = field(event, "message");
      if (typeof message === "string") return truncate(message, 160);
      const json = JSON.stringify(event.data);
      return json === "{}" ? "" : truncate(json, 160);
    }
  }
}

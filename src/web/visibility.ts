/**
 * Who reads what. Every event, task and bid that leaves the server through the API, the stream,
 * an export or a dashboard page passes through here first, so the rules live in one place:
 *
 * - The operator sees everything.
 * - Bids are sealed: while a task's auction round is open, a bid is seen only by the agent that
 *   placed it (and the operator). Once the round closes the bids are revealed to every reader.
 * - What an agent or its tools produced (tool input, output and error; a task's result; the
 *   reason an agent gave for failing or handing a task back) is seen by that agent and the operator. Other agents see
 *   that it happened, not what it said; so do anonymous viewers of a public dashboard unless
 *   SWARM_DASHBOARD_PUBLIC_DETAILS allows them the contents.
 *
 * Withheld fields are removed and named in `withheld` (`data.input`, `result`, …), so a reader
 * can tell "withheld" from "empty".
 */
import type { SealedRound } from "../storage/coordinator-records.js";
import type { Bid, Task } from "../coordinator/types.js";
import { SwarmError } from "../errors.js";
import type { EventFilter, EventPage, StoredEvent } from "../event-log/types.js";
import { normalizeFilter } from "../event-log/validate.js";
import type { Caller } from "./auth.js";

export type Reader =
  | { kind: "operator" }
  | { kind: "agent"; agentId: string }
  /** An anonymous viewer of a public dashboard; `details`: SWARM_DASHBOARD_PUBLIC_DETAILS. */
  | { kind: "public"; details: boolean };

export const OPERATOR: Reader = { kind: "operator" };

/**
 * The reader an API caller is. Without SWARM_API_KEY a caller with no credentials is the
 * operator (the server then listens on loopback only, and refuses other sites' pages); an agent
 * is an agent whatever the key.
 */
export function readerOf(caller: Caller, keyless: boolean): Reader {
  if (caller.kind === "operator") return OPERATOR;
  if (caller.kind === "agent") return { kind: "agent", agentId: caller.agentId };
  return keyless && caller.kind === "anonymous" ? OPERATOR : { kind: "public", details: false };
}

export type VisibleEvent = StoredEvent & { withheld?: string[] };
export type VisibleTask = Task & { withheld?: string[] };

/** Where the auction of each task stands; the coordinator answers from memory. */
export interface AuctionRounds {
  /** The round (attempt) whose auction is open on this task, if one is, as far as the log has been read. */
  openRound(taskId: string): number | undefined;
  /**
   * Resolves once `openRound` has read the log up to `seq` (where it is kept from the log, as on
   * PostgreSQL); absent where it is always current.
   */
  caughtUp?(seq: number): Promise<void>;
}

/** The round a task's record says is open: for reads that have the record at hand. */
function openRoundOf(task: Task): number | undefined {
  return task.status === "bidding" ? task.attempt : undefined;
}

/** Data fields holding what an agent or its tools produced, by event type. */
const PRODUCED_FIELDS: Readonly<Record<string, readonly string[]>> = {
  "tool.called": ["input", "output", "error"],
  "tool.completed": ["input", "output", "error"],
  "tool.failed": ["input", "output", "error"],
  "task.completed": ["result"],
  "task.failed": ["reason"],
  "task.released": ["reason"],
};

/** Task fields holding what its agent produced. */
const PRODUCED_TASK_FIELDS = ["result", "error"] as const;

function producedFields(event: StoredEvent): readonly string[] {
  // A failure the coordinator itself recorded ("no bids", "agent went silent") says nothing private.
  if (event.event_type === "task.failed" && event.data.by !== "agent") return [];
  return PRODUCED_FIELDS[event.event_type] ?? [];
}

export class Visibility {
  /** One withheld copy per event however many readers it goes to (the stream fans out). */
  private readonly withheldCopies = new WeakMap<StoredEvent, VisibleEvent>();

  constructor(private readonly rounds: AuctionRounds) {}

  /** The event as `reader` may see it, or null when it must not see it at all (a sealed bid). */
  event(event: StoredEvent, reader: Reader): VisibleEvent | null {
    if (reader.kind === "operator") return event;
    if (reader.kind === "agent" && event.agent_id === reader.agentId) return event;
    if (event.event_type === "bid.submitted" && this.isSealed(event)) return null;
    if (reader.kind === "public" && reader.details) return event;
    return this.withholdProduced(event);
  }

  events(events: readonly StoredEvent[], reader: Reader): VisibleEvent[] {
    if (reader.kind === "operator") return events as VisibleEvent[];
    const visible: VisibleEvent[] = [];
    for (const event of events) {
      const shown = this.event(event, reader);
      if (shown !== null) visible.push(shown);
    }
    return visible;
  }

  task(task: Task, reader: Reader): VisibleTask {
    if (reader.kind === "operator" || (reader.kind === "public" && reader.details)) return task;
    if (reader.kind === "agent" && task.assigned_agent === reader.agentId) return task;
    const withheld = PRODUCED_TASK_FIELDS.filter((field) => task[field] !== null);
    if (withheld.length === 0) return task;
    return { ...task, result: null, error: null, withheld: [...withheld] };
  }

  /** The bids `reader` may see, and how many of the open round's bids are sealed from it. */
  bids(task: Task, bids: readonly Bid[], reader: Reader): { bids: Bid[]; sealed: number } {
    if (reader.kind === "operator") return { bids: [...bids], sealed: 0 };
    const open = openRoundOf(task);
    const own = reader.kind === "agent" ? reader.agentId : undefined;
    const shown = bids.filter((bid) => bid.attempt !== open || bid.agent_id === own);
    return { bids: shown, sealed: bids.length - shown.length };
  }

  /**
   * The round of the task's bids that `reader` may not see, when one is open: all of its bids
   * but the reader's own. Pages of bids read from the tables leave it out (see CoordinatorStore).
   */
  sealedRound(task: Task, reader: Reader): SealedRound | undefined {
    if (reader.kind === "operator") return undefined;
    const open = openRoundOf(task);
    if (open === undefined) return undefined;
    return { attempt: open, ownAgent: reader.kind === "agent" ? reader.agentId : null };
  }

  /**
   * A page of the events `reader` may see. Sealed bids are left out before the page is cut, and
   * the cursor is the last *shown* event's, so neither the page's length nor its cursor says
   * whether anything was left out (a cursor taken from the raw page would: "is there a bid by B
   * on T?" answered by next_cursor).
   */
  listEvents(list: (filter: EventFilter) => EventPage, reader: Reader, filter: EventFilter): EventPage {
    const pages = this.visiblePage(reader, filter);
    for (let step = pages.next(); ;) {
      if (step.done === true) return step.value;
      step = pages.next(list(step.value));
    }
  }

  /** `listEvents` over a source that answers later (a search on the worker). */
  async listEventsAsync(
    list: (filter: EventFilter) => Promise<EventPage>,
    reader: Reader,
    filter: EventFilter,
  ): Promise<EventPage> {
    const pages = this.visiblePage(reader, filter);
    for (let step = pages.next(); ;) {
      if (step.done === true) return step.value;
      const page = await list(step.value);
      if (reader.kind !== "operator") await this.ready(page.events);
      step = pages.next(page);
    }
  }

  /**
   * Wait until events read from the tables can be judged (sealed or not) as of their own seqs.
   * Undefined when there is nothing to wait for (always on SQLite), so a caller can go on in the
   * same tick: a stream's backfill then holds only one page in memory at a time.
   */
  ready(events: readonly StoredEvent[]): Promise<void> | undefined {
    if (this.rounds.caughtUp === undefined) return undefined;
    let newest = 0;
    for (const event of events)
      if (event.event_type === "bid.submitted") newest = Math.max(newest, event.seq);
    return newest > 0 ? this.rounds.caughtUp(newest) : undefined;
  }

  /** The paging both forms share: yields the raw pages it needs, returns the visible one. */
  private *visiblePage(reader: Reader, filter: EventFilter): Generator<EventFilter, EventPage, EventPage> {
    this.checkFilter(reader, filter);
    if (reader.kind === "operator") return yield filter;
    const { limit, order } = normalizeFilter(filter);
    const shown: VisibleEvent[] = [];
    let cursor: Pick<EventFilter, "after_seq" | "before_seq"> = {};
    for (;;) {
      const page: EventPage = yield { ...filter, ...cursor, limit };
      for (const event of this.events(page.events, reader)) {
        if (shown.push(event) === limit) break;
      }
      if (shown.length === limit || page.next_cursor === null) break;
      cursor = order === "desc" ? { before_seq: page.next_cursor } : { after_seq: page.next_cursor };
    }
    const last = shown.at(-1);
    return { events: shown, next_cursor: shown.length === limit && last !== undefined ? last.seq : null };
  }

  /**
   * Refuses a text search to readers who may not see every event's contents: it matches the
   * whole of each event's data, so its answers would tell them what was withheld.
   */
  checkFilter(reader: Reader, filter: EventFilter): void {
    if (
      filter.text === undefined ||
      reader.kind === "operator" ||
      (reader.kind === "public" && reader.details)
    )
      return;
    throw new SwarmError(
      "FORBIDDEN",
      "q: a text search reads every event's contents, which these credentials may not see; it is for the operator",
      { field: "querystring.q" },
    );
  }

  private isSealed(event: StoredEvent): boolean {
    if (event.task_id === null) return false;
    const open = this.rounds.openRound(event.task_id);
    if (open === undefined) return false;
    // A bid event logged without its round (through the module API) is taken to be the open one's.
    const attempt = event.data.attempt;
    return typeof attempt !== "number" || attempt === open;
  }

  private withholdProduced(event: StoredEvent): VisibleEvent {
    const fields = producedFields(event).filter(
      (field) => event.data[field] !== null && event.data[field] !== undefined,
    );
    if (fields.length === 0) return event;
    let copy = this.withheldCopies.get(event);
    if (copy === undefined) {
      const data = { ...event.data };
      for (const field of fields) delete data[field];
      copy = { ...event, data, withheld: fields.map((field) => `data.${field}`) };
      this.withheldCopies.set(event, copy);
    }
    return copy;
  }
}

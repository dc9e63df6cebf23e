/**
 * What each dashboard component shows, read from the coordinator and the event log. Pages and
 * live pushes both build their components from here, so a page and its update cannot drift.
 */
import type { Coordinator } from "../../coordinator/coordinator.js";
import type { BoardCursor } from "../../storage/sqlite/coordinator-store.js";
import {
  TASK_STATUSES,
  type Agent,
  type AgentStatus,
  type Bid,
  type Task,
  type TaskStatus,
} from "../../coordinator/types.js";
import type { SqliteEventLog } from "../../storage/sqlite/event-log.js";
import type { EventFilter, EventPage, MinuteCount, StoredEvent } from "../../event-log/types.js";
import { bidsPerAuctionChart, eventsPerMinuteChart, familyOf, taskOutcomeChart } from "./charts.js";
import type { Reader, Visibility } from "../visibility.js";
import { describeEvent, truncate, type AgentNames } from "./format.js";

/** Rows the overview's feed keeps; older ones are dropped as new ones arrive. */
export const FEED_CAP = 50;
/**
 * Events a task page shows at once: the newest (kept at this many as events arrive), or a window
 * paged to by cursor. A task with 100,000 events is never rendered in one piece.
 */
export const TIMELINE_WINDOW = 100;
export const PAGE_SIZE = 50;
/** Bids a task page shows per round (the winner and the lowest); the rest are counted. */
export const ROUND_BIDS_SHOWN = 20;
/** Bids the overview shows per open auction (the lowest); the rest are counted. */
export const AUCTION_BIDS_SHOWN = 5;

/** The dashboard's agent cursor as text for a URL: status, rowid, then the name, which may hold dots. */
export function boardCursorText(cursor: BoardCursor): string {
  return `${cursor.status}.${cursor.rowid}.${cursor.name}`;
}

/** What boardCursorText writes (agent names are 1-100 characters). */
export const BOARD_CURSOR_PATTERN = "^(busy|idle|offline)\\.[0-9]{1,15}\\.[\\s\\S]{1,100}$";

/** The cursor back from text that matched BOARD_CURSOR_PATTERN. */
export function parseBoardCursor(text: string): BoardCursor {
  const [status, rowid] = text.split(".", 2) as [AgentStatus, string];
  return { status, rowid: Number(rowid), name: text.slice(status.length + rowid.length + 2) };
}

/** A window of a task's timeline, oldest first, and where the windows before and after it start. */
export interface TimelineWindow {
  rows: EventRow[];
  /** Older events exist: page to them with before_seq set to this (the first row's seq). */
  olderThan: number | null;
  /** Newer events exist: page to them with after_seq set to this (the last row's seq). */
  newerThan: number | null;
  /** A window paged to by cursor; the newest window (false) is the one that grows live. */
  paged: boolean;
  /** The most rows a window holds, and keeps as it grows live. */
  size: number;
}

export interface EventRow {
  seq: number;
  id: string;
  event_type: string;
  family: string;
  source: string;
  task_id: string | null;
  agent_id: string | null;
  agent_name: string | null;
  /** What the row calls its task: the description, cut; null when unknown or said by the summary. */
  task_label: string | null;
  timestamp: string;
  summary: string;
}

/** A task named in a row of events: enough of its description to tell it from its neighbours. */
const TASK_LABEL_LENGTH = 32;

export interface TaskRow extends Task {
  agent_name: string | null;
}

export interface AuctionView {
  task: TaskRow;
  /** The lowest few, lowest first. */
  bids: (Bid & { agent_name: string; leading: boolean })[];
  /** Bids this viewer may see beyond those shown. */
  moreBids: number;
  /** Bids this viewer may not see until the auction closes. */
  sealed: number;
}

/** Who the model renders for: the operator, or an anonymous viewer of a public dashboard. */
export interface ModelAudience {
  visibility: Visibility;
  reader: Reader;
}

/**
 * Counts per minute over the last hour, kept in memory: seeded from the log once, then counted
 * as events commit, so charts at any event rate cost no query.
 */
export class MinuteCounter {
  private readonly minutes = new Map<string, Map<string, number>>();

  constructor(
    seed: readonly MinuteCount[],
    private readonly clock: () => Date,
    private readonly windowMinutes = 60,
  ) {
    for (const { minute, event_type, count } of seed) this.bump(minute, event_type, count);
  }

  add(event: StoredEvent): void {
    this.bump(event.timestamp.slice(0, 16), event.event_type, 1);
  }

  private bump(minute: string, eventType: string, count: number): void {
    let types = this.minutes.get(minute);
    if (types === undefined) this.minutes.set(minute, (types = new Map<string, number>()));
    types.set(eventType, (types.get(eventType) ?? 0) + count);
  }

  /** The window's counts; minutes that have left the window are forgotten on the way. */
  counts(): MinuteCount[] {
    const oldest = new Date(this.clock().getTime() - (this.windowMinutes - 1) * 60_000)
      .toISOString()
      .slice(0, 16);
    const rows: MinuteCount[] = [];
    for (const [minute, types] of this.minutes) {
      if (minute < oldest) {
        this.minutes.delete(minute);
        continue;
      }
      for (const [event_type, count] of types) rows.push({ minute, event_type, count });
    }
    return rows;
  }

  total(): number {
    return this.counts().reduce((sum, row) => sum + row.count, 0);
  }
}

/** The lowest `count` bids, earliest first among equals, without sorting them all (an auction may hold thousands). */
function lowestBids(bids: readonly Bid[], count: number): Bid[] {
  const lowest: Bid[] = [];
  const before = (a: Bid, b: Bid) =>
    a.bid_sats < b.bid_sats || (a.bid_sats === b.bid_sats && a.bid_order < b.bid_order);
  for (const bid of bids) {
    if (lowest.length === count && !before(bid, lowest[count - 1] as Bid)) continue;
    let at = lowest.length;
    while (at > 0 && before(bid, lowest[at - 1] as Bid)) at -= 1;
    lowest.splice(at, 0, bid);
    if (lowest.length > count) lowest.pop();
  }
  return lowest;
}

export class DashboardModel {
  constructor(
    readonly coordinator: Coordinator,
    readonly eventLog: SqliteEventLog,
    readonly clock: () => Date,
    /** Shared by the models of every audience: counted once as events commit. */
    readonly minuteCounts: MinuteCounter,
    private readonly audience: ModelAudience,
  ) {}

  /** Pages and pushes that look the same to every viewer of this model share this key. */
  get audienceKey(): string {
    const { reader } = this.audience;
    return reader.kind === "public" ? `public${reader.details ? "+details" : ""}` : reader.kind;
  }

  /**
   * Agent id → name, for every agent the coordinator knows (including those that left), looked up
   * one at a time: copying ten thousand names into a Map for every fragment cost more than the fragment.
   */
  agentNames(): AgentNames {
    return { get: (id) => this.coordinator.getAgent(id)?.name };
  }

  /** The events this viewer may see: sealed bids left out, private contents withheld. */
  visibleEvents(events: readonly StoredEvent[]): StoredEvent[] {
    return this.audience.visibility.events(events, this.audience.reader);
  }

  /** A page of the events this viewer may see (see Visibility.listEvents). */
  listEvents(filter: EventFilter): EventPage {
    return this.audience.visibility.listEvents(
      (page) => this.eventLog.listEvents(page),
      this.audience.reader,
      filter,
    );
  }

  /** `listEvents` with a text search run off the event loop (see SqliteEventLog.listEventsAsync). */
  listEventsAsync(filter: EventFilter): Promise<EventPage> {
    return this.audience.visibility.listEventsAsync(
      (page) => this.eventLog.listEventsAsync(page),
      this.audience.reader,
      filter,
    );
  }

  /** Refuses what this viewer may not filter by (a text search over contents it may not see). */
  checkFilter(filter: EventFilter): void {
    this.audience.visibility.checkFilter(this.audience.reader, filter);
  }

  eventRows(events: readonly StoredEvent[], names = this.agentNames()): EventRow[] {
    // Looked up once per task however many of its events are shown (a timeline is one task).
    const labels = new Map<string, string | null>();
    const labelOf = (taskId: string) => {
      let label = labels.get(taskId);
      if (label === undefined) {
        const description = this.coordinator.getTask(taskId)?.description;
        label = description === undefined ? null : truncate(description, TASK_LABEL_LENGTH);
        labels.set(taskId, label);
      }
      return label;
    };
    return this.visibleEvents(events).map((event) => ({
      seq: event.seq,
      id: event.id,
      event_type: event.event_type,
      family: familyOf(event.event_type),
      source: event.source,
      task_id: event.task_id,
      agent_id: event.agent_id,
      agent_name: event.agent_id === null ? null : (names.get(event.agent_id) ?? null),
      // task.created's summary is the description already; its link goes by the short id.
      task_label:
        event.task_id === null || event.event_type === "task.created" ? null : labelOf(event.task_id),
      timestamp: event.timestamp,
      summary: describeEvent(event, names),
    }));
  }

  taskRow(task: Task, names = this.agentNames()): TaskRow {
    return {
      ...this.audience.visibility.task(task, this.audience.reader),
      agent_name: task.assigned_agent === null ? null : (names.get(task.assigned_agent) ?? null),
    };
  }

  /** Tasks in each status; the overview reads it once and hands it to its counters and charts. */
  taskCounts(): Record<TaskStatus, number> {
    return this.coordinator.store.taskCounts();
  }

  /** Tasks by status from their counts table, agents by status from memory: no read grows with history. */
  counters(tasks: Record<TaskStatus, number>) {
    const agents = { idle: 0, busy: 0, offline: 0, online: 0, left: 0 };
    for (const agent of this.coordinator.listAgents()) {
      if (agent.left_at !== null) agents.left += 1;
      else agents[agent.status] += 1;
    }
    agents.online = agents.idle + agents.busy;
    return {
      agents,
      tasks,
      taskTotal: TASK_STATUSES.reduce((sum, status) => sum + tasks[status], 0),
      openAuctions: tasks.bidding,
      eventsLastHour: this.minuteCounts.total(),
    };
  }

  /**
   * Open auctions, soonest to close first, each with its lowest bids (the leading one marked) and
   * how many more it has.
   */
  auctions(limit = 12): { auctions: AuctionView[]; more: number } {
    const names = this.agentNames();
    const { tasks } = this.coordinator.store.listTasks({ status: "bidding", limit: 200 });
    tasks.sort((a, b) => ((a.auction_closes_at ?? "") < (b.auction_closes_at ?? "") ? -1 : 1));
    const auctions = tasks.slice(0, limit).map((task) => {
      const { bids, sealed } = this.visibleBids(task.id, this.coordinator.openBids(task.id));
      const shown = lowestBids(bids, AUCTION_BIDS_SHOWN);
      return {
        task: this.taskRow(task, names),
        bids: shown.map((bid, i) => ({
          ...bid,
          agent_name: names.get(bid.agent_id) ?? bid.agent_id,
          // Who leads is known only to those who see every bid.
          leading: i === 0 && sealed === 0,
        })),
        moreBids: bids.length - shown.length,
        sealed,
      };
    });
    return { auctions, more: Math.max(0, tasks.length - limit) };
  }

  /**
   * A page of the agents still registered, busy first, then idle, then offline; by name (ignoring
   * case) within each; from `after` (a cursor from boardCursorText) on.
   */
  agents(options: { after?: BoardCursor; limit?: number; includeStats?: boolean } = {}) {
    const page = this.coordinator.store.boardAgents({
      after: options.after,
      limit: options.limit ?? PAGE_SIZE,
    });
    return {
      agents: page.agents.map((agent) => this.agentRow(agent, options.includeStats ?? false)),
      next_cursor: page.next_cursor === null ? null : boardCursorText(page.next_cursor),
    };
  }

  agentRow(agent: Agent, includeStats = true) {
    return { ...agent, stats: includeStats ? this.coordinator.agentStats(agent.id) : null };
  }

  /** Events of the last hour by type, most frequent first. */
  typeCounts() {
    const counts = new Map<string, number>();
    for (const { event_type, count } of this.minuteCounts.counts()) {
      counts.set(event_type, (counts.get(event_type) ?? 0) + count);
    }
    const items = [...counts.entries()]
      .map(([type, count]) => ({ type, count }))
      .sort((a, b) => b.count - a.count || (a.type < b.type ? -1 : 1));
    return { total: items.reduce((sum, item) => sum + item.count, 0), items };
  }

  charts(taskCounts: Record<TaskStatus, number>) {
    const now = this.clock();
    return {
      perMinute: eventsPerMinuteChart(this.minuteCounts.counts(), now),
      outcomes: taskOutcomeChart(taskCounts),
      bidsPerAuction: bidsPerAuctionChart(this.coordinator.store.recentAuctions(20)),
    };
  }

  /** The newest events matching `filter`, newest first. */
  recentEvents(filter: EventFilter, limit: number): EventRow[] {
    return this.eventRows(this.listEvents({ ...filter, order: "desc", limit }).events);
  }

  /** `recentEvents` for a filter that may search text: read off the event loop. */
  async recentEventsAsync(filter: EventFilter, limit: number): Promise<EventRow[]> {
    return this.eventRows((await this.listEventsAsync({ ...filter, order: "desc", limit })).events);
  }

  tasks(filter: { status?: TaskStatus; before?: number }) {
    const names = this.agentNames();
    const page = this.coordinator.store.listTasks({ ...filter, limit: PAGE_SIZE });
    return { tasks: page.tasks.map((task) => this.taskRow(task, names)), next_cursor: page.next_cursor };
  }

  /**
   * Everything the task page shows: the task, its bids by round (newest round first, each with its
   * winner and lowest bids, and how many more), and its tool calls.
   */
  taskDetail(task: Task) {
    const names = this.agentNames();
    const { visibility, reader } = this.audience;
    const sealedRound = visibility.sealedRound(task.id, reader);
    const { sealed } = this.visibleBids(task.id, this.coordinator.openBids(task.id));
    const bidRounds = this.coordinator.store
      .bidRounds(task.id, ROUND_BIDS_SHOWN, sealedRound)
      .filter((round) => round.bids.length > 0)
      .map((round) => ({
        attempt: round.attempt,
        bids: round.bids.map((bid) => ({ ...bid, agent_name: names.get(bid.agent_id) ?? bid.agent_id })),
        // Of a sealed round only the reader's own bid shows, and the sealed count says the rest.
        more: round.attempt === sealedRound?.attempt ? 0 : round.count - round.bids.length,
      }));
    return {
      task: this.taskRow(task, names),
      bidRounds,
      sealedBids: sealed,
      toolCalls: this.toolCalls(task.id, names),
    };
  }

  private visibleBids(taskId: string, bids: readonly Bid[]) {
    return this.audience.visibility.bids(taskId, bids, this.audience.reader);
  }

  /**
   * A window of at most TIMELINE_WINDOW of the task's events, oldest first: the newest, those
   * before `before_seq`, or those after `after_seq`; and whether there are more either side.
   */
  timeline(taskId: string, at: { before_seq?: number; after_seq?: number } = {}): TimelineWindow {
    const forward = at.after_seq !== undefined;
    const page = this.listEvents(
      forward
        ? { task_id: taskId, after_seq: at.after_seq, order: "asc", limit: TIMELINE_WINDOW }
        : { task_id: taskId, before_seq: at.before_seq, order: "desc", limit: TIMELINE_WINDOW },
    );
    const events = forward ? page.events : [...page.events].reverse();
    const first = events[0]?.seq;
    const last = events.at(-1)?.seq;
    // One event either side, as this viewer may see them, says whether a link leads anywhere.
    const exists = (filter: EventFilter) =>
      this.listEvents({ task_id: taskId, ...filter, limit: 1 }).events.length > 0;
    return {
      rows: this.eventRows(events),
      olderThan: first !== undefined && exists({ before_seq: first, order: "desc" }) ? first : null,
      newerThan: last !== undefined && exists({ after_seq: last, order: "asc" }) ? last : null,
      paged: at.before_seq !== undefined || at.after_seq !== undefined,
      size: TIMELINE_WINDOW,
    };
  }

  /** Tool calls of a task, one row per call id, with the latest phase. */
  toolCalls(taskId: string, names = this.agentNames()) {
    const calls = new Map<
      string,
      {
        call_id: string;
        tool: string;
        agent_name: string;
        phase: string;
        started: string;
        finished: string | null;
        error: string | null;
      }
    >();
    const { visibility, reader } = this.audience;
    const events = visibility.events(
      this.eventLog
        .listEvents({
          task_id: taskId,
          types: ["tool.called", "tool.completed", "tool.failed"],
          order: "desc",
          limit: 200,
        })
        .events.reverse(),
      reader,
    );
    for (const event of events) {
      const callId = typeof event.data.call_id === "string" ? event.data.call_id : event.id;
      const phase = event.event_type.slice("tool.".length);
      const known = calls.get(callId);
      if (known === undefined) {
        calls.set(callId, {
          call_id: callId,
          tool: typeof event.data.tool === "string" ? event.data.tool : "?",
          agent_name: event.agent_id === null ? "" : (names.get(event.agent_id) ?? event.agent_id),
          phase,
          started: event.timestamp,
          finished: phase === "called" ? null : event.timestamp,
          error: typeof event.data.error === "string" ? event.data.error : null,
        });
      } else {
        known.phase = phase;
        if (phase !== "called") known.finished = event.timestamp;
        if (typeof event.data.error === "string") known.error = event.data.error;
      }
    }
    return [...calls.values()].reverse();
  }

  agentDetail(agent: Agent) {
    const names = this.agentNames();
    const tasks = this.coordinator.store.listTasks({ agent_id: agent.id, limit: 20 }).tasks;
    return {
      agent: this.agentRow(agent),
      tasks: tasks.map((task) => this.taskRow(task, names)),
    };
  }
}

/**
 * What each dashboard component shows, read from the coordinator and the event log. Pages and
 * live pushes both build their components from here, so a page and its update cannot drift.
 */
import type { CoordinatorPort } from "../../coordinator/port.js";
import { countAgents } from "../../coordinator/state.js";
import { reliability } from "../../coordinator/decide.js";
import { streamState } from "../views.js";
import type { BoardCursor } from "../../storage/coordinator-records.js";
import {
  TASK_STATUSES,
  type Agent,
  type AgentStatus,
  type Bid,
  type Task,
  type TaskStatus,
} from "../../coordinator/types.js";
import type { EventLogPort } from "../../storage/port.js";
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

/** Agent ids an event names: its agent, and the winner an auction.closed records. */
function namedAgents(event: StoredEvent): string[] {
  const ids = event.agent_id === null ? [] : [event.agent_id];
  if (typeof event.data.winner === "string") ids.push(event.data.winner);
  return ids;
}

export class DashboardModel {
  constructor(
    readonly coordinator: CoordinatorPort,
    readonly eventLog: EventLogPort,
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
   * The names of the agents a fragment shows, read in one go for those ids only: copying ten
   * thousand names for every fragment cost more than the fragment.
   */
  async agentNames(ids: Iterable<string | null | undefined>): Promise<AgentNames> {
    const wanted = new Set<string>();
    for (const id of ids) if (id !== null && id !== undefined) wanted.add(id);
    return this.coordinator.agentNames([...wanted]);
  }

  /** The events this viewer may see: sealed bids left out, private contents withheld. */
  async visibleEvents(events: readonly StoredEvent[]): Promise<StoredEvent[]> {
    await this.audience.visibility.ready(events);
    return this.audience.visibility.events(events, this.audience.reader);
  }

  /**
   * Resolves once `isVisible` can judge these events (on PostgreSQL the open rounds follow the
   * log on their own and may not have read as far as events just heard); undefined when it
   * already can.
   */
  visibilityReady(events: readonly StoredEvent[]): Promise<void> | undefined {
    return this.audience.visibility.ready(events);
  }

  /**
   * Whether this viewer may see the event at all (a sealed bid of another agent is not). Await
   * `visibilityReady` for events just heard first.
   */
  isVisible(event: StoredEvent): boolean {
    return this.audience.visibility.event(event, this.audience.reader) !== null;
  }

  /** A page of the events this viewer may see (see Visibility.listEvents). */
  listEvents(filter: EventFilter): Promise<EventPage> {
    return this.audience.visibility.listEventsAsync(
      async (page) => this.eventLog.listEvents(page),
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

  async eventRows(events: readonly StoredEvent[]): Promise<EventRow[]> {
    const visible = await this.visibleEvents(events);
    const names = await this.agentNames(visible.flatMap(namedAgents));
    // Looked up once per task however many of its events are shown (a timeline is one task).
    const descriptions = await this.coordinator.taskDescriptions([
      ...new Set(visible.flatMap((event) => (event.task_id === null ? [] : [event.task_id]))),
    ]);
    const labelOf = (taskId: string) => {
      const description = descriptions.get(taskId);
      return description === undefined ? null : truncate(description, TASK_LABEL_LENGTH);
    };
    return visible.map((event) => ({
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

  /** Rows for these tasks, with the names of the agents they are assigned to. */
  async taskRows(tasks: readonly Task[]): Promise<TaskRow[]> {
    const names = await this.agentNames(tasks.map((task) => task.assigned_agent));
    return tasks.map((task) => this.taskRow(task, names));
  }

  taskRow(task: Task, names: AgentNames): TaskRow {
    return {
      ...this.audience.visibility.task(task, this.audience.reader),
      agent_name: task.assigned_agent === null ? null : (names.get(task.assigned_agent) ?? null),
    };
  }

  /** Tasks in each status; the overview reads it once and hands it to its counters and charts. */
  async taskCounts(): Promise<Record<TaskStatus, number>> {
    return this.coordinator.store.taskCounts();
  }

  /** Tasks by status from their counts table, agents by status from the working set: no read grows with history. */
  async counters(tasks: Record<TaskStatus, number>) {
    const agents = countAgents(await this.coordinator.listAgents());
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
  async auctions(limit = 12): Promise<{ auctions: AuctionView[]; more: number }> {
    const { tasks } = await this.coordinator.store.listTasks({ status: "bidding", limit: 200 });
    tasks.sort((a, b) => ((a.auction_closes_at ?? "") < (b.auction_closes_at ?? "") ? -1 : 1));
    const open = await Promise.all(
      tasks.slice(0, limit).map(async (task) => {
        const { bids, sealed } = this.visibleBids(task, await this.coordinator.openBids(task.id));
        return { task, bids, sealed, shown: lowestBids(bids, AUCTION_BIDS_SHOWN) };
      }),
    );
    const names = await this.agentNames(
      open.flatMap(({ task, shown }) => [task.assigned_agent, ...shown.map((bid) => bid.agent_id)]),
    );
    const auctions = open.map(({ task, bids, sealed, shown }) => ({
      task: this.taskRow(task, names),
      bids: shown.map((bid, i) => ({
        ...bid,
        agent_name: names.get(bid.agent_id) ?? bid.agent_id,
        // Who leads is known only to those who see every bid.
        leading: i === 0 && sealed === 0,
      })),
      moreBids: bids.length - shown.length,
      sealed,
    }));
    return { auctions, more: Math.max(0, tasks.length - limit) };
  }

  /**
   * A page of the agents still registered, busy first, then idle, then offline; by name (ignoring
   * case) within each; from `after` (a cursor from boardCursorText) on.
   */
  async agents(options: { after?: BoardCursor; limit?: number; includeStats?: boolean } = {}) {
    const page = await this.coordinator.store.boardAgents({
      after: options.after,
      limit: options.limit ?? PAGE_SIZE,
    });
    const nowMs = (await this.coordinator.now()).getTime(); // once for the page
    return {
      agents: await Promise.all(
        page.agents.map((agent) => this.agentRow(agent, options.includeStats ?? false, nowMs)),
      ),
      next_cursor: page.next_cursor === null ? null : boardCursorText(page.next_cursor),
    };
  }

  /** `nowMs`: the time to judge its stream by, read once for a whole list. */
  async agentRow(agent: Agent, includeStats = true, nowMs?: number) {
    const at = nowMs ?? (await this.coordinator.now()).getTime();
    return {
      ...agent,
      stats: includeStats ? await this.coordinator.agentStats(agent.id) : null,
      // A zombie: online by its heartbeats, its stream gone; auctions do not wait for it.
      zombie: agent.status !== "offline" && streamState(agent, at) === "lost",
      reliability: Math.round(reliability(agent) * 100),
    };
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

  async charts(taskCounts: Record<TaskStatus, number>) {
    const now = this.clock();
    return {
      perMinute: eventsPerMinuteChart(this.minuteCounts.counts(), now),
      outcomes: taskOutcomeChart(taskCounts),
      bidsPerAuction: bidsPerAuctionChart(await this.coordinator.store.recentAuctions(20)),
    };
  }

  /** The newest events matching `filter`, newest first. */
  async recentEvents(filter: EventFilter, limit: number): Promise<EventRow[]> {
    return this.eventRows((await this.listEvents({ ...filter, order: "desc", limit })).events);
  }

  /** `recentEvents` for a filter that may search text: read off the event loop. */
  async recentEventsAsync(filter: EventFilter, limit: number): Promise<EventRow[]> {
    return this.eventRows((await this.listEventsAsync({ ...filter, order: "desc", limit })).events);
  }

  async tasks(filter: { status?: TaskStatus; before?: number }) {
    const page = await this.coordinator.store.listTasks({ ...filter, limit: PAGE_SIZE });
    return { tasks: await this.taskRows(page.tasks), next_cursor: page.next_cursor };
  }

  /**
   * Everything the task page shows: the task, its bids by round (newest round first, each with its
   * winner and lowest bids, and how many more), and its tool calls.
   */
  async taskDetail(task: Task) {
    const { visibility, reader } = this.audience;
    const sealedRound = visibility.sealedRound(task, reader);
    const { sealed } =
      task.status === "bidding"
        ? this.visibleBids(task, await this.coordinator.openBids(task.id))
        : { sealed: 0 };
    const rounds = (await this.coordinator.store.bidRounds(task.id, ROUND_BIDS_SHOWN, sealedRound)).filter(
      (round) => round.bids.length > 0,
    );
    const calls = await this.toolCallEvents(task.id);
    const names = await this.agentNames([
      task.assigned_agent,
      ...rounds.flatMap((round) => round.bids.map((bid) => bid.agent_id)),
      ...calls.map((event) => event.agent_id),
    ]);
    const bidRounds = rounds.map((round) => ({
      attempt: round.attempt,
      bids: round.bids.map((bid) => ({ ...bid, agent_name: names.get(bid.agent_id) ?? bid.agent_id })),
      // Of a sealed round only the reader's own bid shows, and the sealed count says the rest.
      more: round.attempt === sealedRound?.attempt ? 0 : round.count - round.bids.length,
    }));
    return {
      task: this.taskRow(task, names),
      bidRounds,
      sealedBids: sealed,
      toolCalls: toolCalls(calls, names),
    };
  }

  private visibleBids(task: Task, bids: readonly Bid[]) {
    return this.audience.visibility.bids(task, bids, this.audience.reader);
  }

  /**
   * A window of at most TIMELINE_WINDOW of the task's events, oldest first: the newest, those
   * before `before_seq`, or those after `after_seq`; and whether there are more either side.
   */
  async timeline(
    taskId: string,
    at: { before_seq?: number; after_seq?: number } = {},
  ): Promise<TimelineWindow> {
    const forward = at.after_seq !== undefined;
    const page = await this.listEvents(
      forward
        ? { task_id: taskId, after_seq: at.after_seq, order: "asc", limit: TIMELINE_WINDOW }
        : { task_id: taskId, before_seq: at.before_seq, order: "desc", limit: TIMELINE_WINDOW },
    );
    const events = forward ? page.events : [...page.events].reverse();
    const first = events[0]?.seq;
    const last = events.at(-1)?.seq;
    // One event either side, as this viewer may see them, says whether a link leads anywhere.
    const exists = async (filter: EventFilter) =>
      (await this.listEvents({ task_id: taskId, ...filter, limit: 1 })).events.length > 0;
    return {
      rows: await this.eventRows(events),
      olderThan: first !== undefined && (await exists({ before_seq: first, order: "desc" })) ? first : null,
      newerThan: last !== undefined && (await exists({ after_seq: last, order: "asc" })) ? last : null,
      paged: at.before_seq !== undefined || at.after_seq !== undefined,
      size: TIMELINE_WINDOW,
    };
  }

  /** The newest tool-call events of a task that this viewer may see, oldest first. */
  private async toolCallEvents(taskId: string): Promise<StoredEvent[]> {
    const page = await this.eventLog.listEvents({
      task_id: taskId,
      types: ["tool.called", "tool.completed", "tool.failed"],
      order: "desc",
      limit: 200,
    });
    return this.visibleEvents([...page.events].reverse());
  }

  async agentDetail(agent: Agent) {
    const { tasks } = await this.coordinator.store.listTasks({ agent_id: agent.id, limit: 20 });
    return {
      agent: await this.agentRow(agent),
      tasks: await this.taskRows(tasks),
    };
  }
}

/** Tool calls of a task, one row per call id, with the latest phase. */
function toolCalls(events: readonly StoredEvent[], names: AgentNames) {
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

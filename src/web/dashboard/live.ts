/**
 * Live pages. Each open page holds one websocket; the hub hears every committed event once,
 * batches them, and pushes each page's channel one message of rendered HTML per batch: the
 * rows to add and the components to replace, each carrying `hx-swap-oob` and a stable id, which
 * htmx's websocket extension swaps in.
 *
 * - Rate: at most one message per `flushIntervalMs` per client, and summaries (counters,
 *   charts) at most once per `summaryIntervalMs`, whatever the event rate.
 * - Exactly once: a page renders with the seq it reflects and every push moves that marker
 *   (`#live-seq`). On (re)connect the page sends it back as `after_seq`; the hub replays what
 *   came after from the log, and a batch already in flight skips what the replay covered.
 */
import type { WebSocket } from "ws";
import type { EventLogPort } from "../../storage/port.js";
import type { EventFilter, StoredEvent } from "../../event-log/types.js";
import { EventType } from "../../event-log/event-types.js";
import { EVENT_LIMITS } from "../../event-log/validate.js";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Metrics } from "../metrics.js";
import type { Renderer } from "./render.js";

export interface LiveView {
  /** Pages with equal keys show the same thing and share every rendered message. */
  key: string;
  matches(event: StoredEvent): boolean;
  /** Fragments for events that match, oldest first. */
  update(events: StoredEvent[]): Promise<string>;
  /**
   * The page's state components, whole; with `lists`, its event lists too (rendered afresh).
   * A view whose lists come from a text search renders them later, off the event loop.
   */
  snapshot(lists: boolean): string | Promise<string>;
  /** Summaries that change with every event but are pushed at a bounded rate. */
  summary?: () => Promise<string>;
  /**
   * How a reconnecting page catches up: the events to replay and how many are worth replaying
   * before re-rendering its lists is cheaper. Null: it always re-renders (its lists are state).
   */
  catchUp: { filter: EventFilter; limit: number } | null;
}

export interface LiveOptions {
  flushIntervalMs: number;
  summaryIntervalMs: number;
  /** Summaries are refreshed this often even without events (last-seen times, agents timing out). */
  idleRefreshMs: number;
  /** A client with more than this unsent is dropped with 1013 and catches up when it reconnects. */
  maxBufferedBytes: number;
  pingIntervalMs: number;
}

export const LIVE_DEFAULTS: LiveOptions = {
  flushIntervalMs: 50,
  summaryIntervalMs: 500,
  idleRefreshMs: 5000,
  // Beyond the kernel's own buffers, which a page that reads at all keeps draining: several
  // pushes behind (a push is tens of kilobytes) is a page better re-rendered when it comes
  // back, and a bound on what one that stopped reading costs.
  maxBufferedBytes: 512 * 1024,
  pingIntervalMs: 30_000,
};

/** Close codes htmx's websocket extension reconnects after (it gives up on any other). */
export const LIVE_CLOSE = { SERVICE_RESTART: 1012, TRY_AGAIN_LATER: 1013 } as const;

interface Client {
  socket: WebSocket;
  /** The replay at connect covered the log up to here; batches skip events at or below it. */
  seenThrough: number;
  alive: boolean;
  /** While its catch-up is being read, pushes for it wait here, to follow the catch-up in order. */
  held: string[] | undefined;
  /** Stop pushing to it and forget it (idempotent). */
  leave: () => void;
}

interface Channel {
  view: LiveView;
  clients: Set<Client>;
  summaryDirty: boolean;
  lastSummaryAt: number;
}

export class LiveHub {
  private pending: StoredEvent[] = [];
  private readonly channels = new Map<string, Channel>();
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlushAt = 0;
  private flushAt = 0;
  /** The last seq a flush has taken in; every message tells its page this seq. */
  private flushedSeq = 0;
  /**
   * The highest seq heard from the log. A page that connects replays up to here: what commits
   * after it is heard later and pushed (on PostgreSQL the log's head can be ahead of what this
   * process has heard, so the head would be the wrong line to draw).
   */
  private heardSeq = 0;
  /** Flushes run one after another: a batch renders (awaiting reads) before the next one starts. */
  private flushing: Promise<void> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  /** Messages sent, for /metrics and the benchmark. */
  messagesSent = 0;

  constructor(
    private readonly eventLog: EventLogPort,
    private readonly renderer: Renderer,
    private readonly options: LiveOptions,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {}

  async start(): Promise<void> {
    // Subscribe before reading the head, so nothing commits between the two unheard.
    this.unsubscribe = this.eventLog.subscribe((event) => {
      this.renderer.model.minuteCounts.add(event);
      this.pending.push(event);
      if (event.seq > this.heardSeq) this.heardSeq = event.seq;
      this.schedule(this.lastFlushAt + this.options.flushIntervalMs);
    });
    const head = await this.eventLog.latestSeq();
    this.heardSeq = Math.max(this.heardSeq, head);
    this.flushedSeq = Math.max(this.flushedSeq, head);
    const refresh = setInterval(() => {
      for (const channel of this.channels.values()) if (channel.view.summary) channel.summaryDirty = true;
      this.schedule(0);
    }, this.options.idleRefreshMs);
    const ping = setInterval(() => this.ping(), this.options.pingIntervalMs);
    refresh.unref();
    ping.unref();
    this.timers.push(refresh, ping);
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.flushing;
  }

  get clientCount(): number {
    let count = 0;
    for (const channel of this.channels.values()) count += channel.clients.size;
    return count;
  }

  /** Close every live page with a code that makes htmx reconnect (and so catch up). */
  closeAll(code: number, reason: string): void {
    for (const channel of this.channels.values()) {
      for (const client of channel.clients) client.socket.close(code, reason);
    }
  }

  /**
   * A page connected: replay what it missed after `afterSeq`, then keep it live. It joins its
   * channel at once, so nothing that commits while the replay is read (a text search runs on
   * the worker) is missed: those pushes are held and sent after the replay.
   */
  async connect(socket: WebSocket, view: LiveView, afterSeq: number | undefined): Promise<void> {
    const latest = this.heardSeq;
    let channel = this.channels.get(view.key);
    if (channel === undefined) {
      channel = { view, clients: new Set(), summaryDirty: false, lastSummaryAt: 0 };
      this.channels.set(view.key, channel);
    }
    const joined = channel;
    let gone = false;
    const client: Client = {
      socket,
      seenThrough: latest,
      alive: true,
      held: [],
      leave: () => {
        if (gone) return;
        gone = true;
        joined.clients.delete(client);
        if (joined.clients.size === 0 && this.channels.get(view.key) === joined)
          this.channels.delete(view.key);
        this.metrics?.openWebsockets.dec({ kind: "dashboard" });
      },
    };
    channel.clients.add(client);
    this.metrics?.openWebsockets.inc({ kind: "dashboard" });
    socket.on("close", client.leave);
    socket.on("error", client.leave);
    socket.on("pong", () => (client.alive = true));
    // Pages have nothing to say; whatever they send is ignored, never parsed.
    socket.on("message", () => undefined);

    let message: string;
    try {
      message = await this.catchUp(view, afterSeq, latest);
    } catch (error) {
      // A catch-up that cannot be served is no reason to leave the page stale: it gets its
      // view whole, as a page that missed too much does.
      this.logger.warn({ err: error, view: view.key }, "live catch-up failed; sending the view whole");
      try {
        message = await view.snapshot(true);
      } catch (snapshotError) {
        this.logger.error({ err: snapshotError, view: view.key }, "live view failed to render");
        client.leave();
        socket.close(1011, "the page failed to render; reconnecting");
        return;
      }
    }
    const held = client.held ?? [];
    client.held = undefined;
    if (gone) return;
    this.sendTo(socket, message + this.renderer.liveSeq(latest));
    for (const push of held) this.send(client, push);
  }

  private async catchUp(view: LiveView, afterSeq: number | undefined, latest: number): Promise<string> {
    // No marker, a marker from another database (ahead of this log), or a view whose lists are
    // state: render everything afresh.
    if (afterSeq === undefined || afterSeq > latest || view.catchUp === null) return view.snapshot(true);
    if (afterSeq === latest) return view.snapshot(false);
    const { filter, limit } = view.catchUp;
    // One page of at most `limit` (itself within the log's page limit); a full page may have
    // more behind it, and then re-rendering the lists is what the page needs.
    const page = await this.eventLog.listEventsAsync({
      ...filter,
      after_seq: afterSeq,
      before_seq: latest + 1,
      order: "asc",
      limit: Math.min(limit, EVENT_LIMITS.maxPageSize),
    });
    if (page.next_cursor !== null) return view.snapshot(true);
    const missed = page.events;
    return (await view.snapshot(false)) + (missed.length > 0 ? await view.update(missed) : "");
  }

  /** Flush at `at` (ms since epoch), or sooner if a flush is already due sooner. */
  private schedule(at: number): void {
    if (this.flushTimer !== undefined) {
      if (at >= this.flushAt) return;
      clearTimeout(this.flushTimer);
    }
    this.flushAt = at;
    this.flushTimer = setTimeout(() => void this.flush(), Math.max(0, at - Date.now()));
  }

  /** Push one message per channel for everything heard since the last flush (after any flush still rendering). */
  flush(): Promise<void> {
    this.flushTimer = undefined;
    this.flushing = this.flushing.then(() => this.flushPending());
    return this.flushing;
  }

  private async flushPending(): Promise<void> {
    const now = Date.now();
    this.lastFlushAt = now;
    const events = this.pending;
    this.pending = [];
    this.flushedSeq = events.at(-1)?.seq ?? this.flushedSeq;
    // A sealed bid must not move a page: wait until the batch can be judged before matching it.
    let batch = events;
    try {
      await this.renderer.model.visibilityReady(events);
    } catch (error) {
      // The open rounds could not read this far (the database is away): leave the bids out of
      // this batch rather than risk showing a sealed one. Pages have them again when they reload.
      batch = events.filter((event) => event.event_type !== EventType.BID_SUBMITTED);
      this.logger.warn({ err: error }, "live batch sent without its bids: open rounds not caught up");
    }
    let summaryWaiting = false;
    for (const channel of this.channels.values()) {
      try {
        if (await this.flushChannel(channel, batch, now)) summaryWaiting = true;
      } catch (error) {
        this.logger.error({ err: error, view: channel.view.key }, "live update failed to render");
      }
    }
    if (summaryWaiting) this.schedule(now + this.options.summaryIntervalMs);
  }

  /** Returns whether a summary is still owed (it was sent too recently to send again). */
  private async flushChannel(channel: Channel, events: StoredEvent[], now: number): Promise<boolean> {
    const { view } = channel;
    const matching = events.filter((event) => view.matches(event));
    if (matching.length > 0 && view.summary) channel.summaryDirty = true;
    let summary = "";
    if (channel.summaryDirty && view.summary) {
      if (now - channel.lastSummaryAt < this.options.summaryIntervalMs) {
        if (matching.length === 0) return true;
      } else {
        summary = await view.summary();
        channel.summaryDirty = false;
        channel.lastSummaryAt = now;
      }
    }
    const owed = channel.summaryDirty;
    if (matching.length === 0 && summary === "") return owed;
    const flushedSeq = this.flushedSeq;
    const marker = this.renderer.liveSeq(flushedSeq);
    const first = matching[0]?.seq ?? Number.POSITIVE_INFINITY;
    // The clients as they stand now: one that connects while this batch renders replays past
    // it, so it is rightly left out.
    const clients = [...channel.clients];
    const updates = new Map<number, Promise<string>>();
    const updateFor = (seenThrough: number): Promise<string> => {
      // Clients that connected during this batch already replayed part of it: render theirs apart.
      const key = seenThrough < first ? -1 : seenThrough;
      let update = updates.get(key);
      if (update === undefined) {
        const unseen = key === -1 ? matching : matching.filter((event) => event.seq > seenThrough);
        update = unseen.length > 0 ? view.update(unseen) : Promise.resolve("");
        updates.set(key, update);
      }
      return update;
    };
    const rendered = await Promise.all(clients.map((client) => updateFor(client.seenThrough)));
    clients.forEach((client, index) => {
      const update = rendered[index] ?? "";
      if (update === "" && summary === "") return;
      // A page that connected after this batch was taken in has replayed further than it.
      const mark = client.seenThrough > flushedSeq ? this.renderer.liveSeq(client.seenThrough) : marker;
      this.send(client, update + summary + mark);
    });
    return owed;
  }

  private send(client: Client, message: string): void {
    if (client.held !== undefined) {
      client.held.push(message);
      return;
    }
    if (client.socket.bufferedAmount > this.options.maxBufferedBytes) {
      client.socket.close(LIVE_CLOSE.TRY_AGAIN_LATER, "too far behind; reconnect to catch up");
      // A page that is not reading will not read the close frame either, and ws waits 30 s
      // for its answer: the hub lets go now rather than keep rendering for it until then.
      client.leave();
      return;
    }
    this.sendTo(client.socket, message);
  }

  private sendTo(socket: WebSocket, message: string): void {
    if (socket.readyState !== socket.OPEN) return;
    socket.send(message);
    this.messagesSent += 1;
    this.metrics?.liveMessages.inc();
  }

  private ping(): void {
    for (const channel of this.channels.values()) {
      for (const client of channel.clients) {
        if (!client.alive) {
          client.socket.terminate();
          continue;
        }
        client.alive = false;
        client.socket.ping();
      }
    }
  }
}
